//! The built-in `log` provider: writes the message to the server log and reports success. It
//! makes a fresh install work end to end with no account anywhere; it is a development sink
//! (the log line contains the code), so it works only while `mysmshook.log_sink` is on: a
//! production install that nobody configured must not mark codes delivered that nobody got.

use super::{Context, Outcome, Provider};
use crate::render::Message;
use serde_json::Value;

pub struct LogProvider;

impl LogProvider {
    pub fn from_settings(_settings: &Value) -> Result<LogProvider, String> {
        Ok(LogProvider)
    }
}

impl Provider for LogProvider {
    fn send(&self, message: &Message, ctx: &Context) -> Outcome {
        if !ctx.log_sink {
            // Retryable: configuring a provider (or the setting) rescues the waiting jobs.
            return Outcome::Retryable {
                error: "not delivered: the log provider only writes to the server log and mysmshook.log_sink is off; \
                        route this channel to a real provider (mysmshook.providers, mysmshook.routes), \
                        or set mysmshook.log_sink = on for development"
                    .into(),
                retry_after: None,
            };
        }
        let subject = message
            .subject
            .as_deref()
            .map(|s| format!(" subject={s:?}"))
            .unwrap_or_default();
        Outcome::Sent {
            message_id: Some(format!("log-{}", ctx.job_id)),
            note: Some(format!(
                "mysmshook log provider (mysmshook.log_sink is on; nobody received this): job {} to {}{subject} body={:?}",
                ctx.job_id, message.to, message.text
            )),
        }
    }
}
