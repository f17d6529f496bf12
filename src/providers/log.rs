//! The built-in `log` provider: writes the message to the server log and reports success. It
//! makes a fresh install work end to end with no account anywhere; it is a development sink
//! (the log line contains the code).

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
        let subject = message
            .subject
            .as_deref()
            .map(|s| format!(" subject={s:?}"))
            .unwrap_or_default();
        Outcome::Sent {
            message_id: Some(format!("log-{}", ctx.job_id)),
            note: Some(format!(
                "mysmshook log provider: job {} to {}{subject} body={:?}",
                ctx.job_id, message.to, message.text
            )),
        }
    }
}
