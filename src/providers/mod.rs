//! Delivery providers behind one small trait. A provider is built from its row in
//! `mysmshook.providers` (kind + JSON settings) on the backend thread, then used from worker
//! threads: implementations hold only owned data and never touch Postgres.

mod log;
mod webhook;

use crate::http::{self, Failure};
use crate::job::Channel;
use crate::render::Message;
use serde_json::Value;
use std::time::Duration;

/// What one provider made of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted. `note` is written to the server log by the backend (the log provider's output).
    Sent {
        message_id: Option<String>,
        note: Option<String>,
    },
    /// Temporary: timeouts, connection failures, 5xx, 429. Retried later with backoff.
    Retryable {
        error: String,
        retry_after: Option<Duration>,
    },
    /// This provider cannot deliver (bad credentials, refused request): try the next one.
    ProviderFailed { error: String },
    /// The recipient is unusable (invalid number, unsubscribed): no provider will do better.
    RecipientRejected { error: String },
}

/// Everything a provider needs besides the message.
pub struct Context<'a> {
    pub http: &'a http::Client,
    /// The job id: idempotency key and webhook-id, so a repeated request is recognisable.
    pub job_id: &'a str,
}

pub trait Provider: Send + Sync {
    /// The channel its messages travel on, when it differs from the job's (WhatsApp for an
    /// SMS job); None for providers that carry whatever they are given.
    fn delivers_on(&self) -> Option<Channel> {
        None
    }
    fn send(&self, message: &Message, ctx: &Context) -> Outcome;
}

/// The kinds this build knows, with the channel each serves.
pub const KINDS: &[&str] = &["log", "webhook"];

/// Builds a provider from its configuration row; the error says what is wrong with it.
pub fn build(kind: &str, settings: &Value) -> Result<Box<dyn Provider>, String> {
    match kind {
        "log" => Ok(Box::new(log::LogProvider::from_settings(settings)?)),
        "webhook" => Ok(Box::new(webhook::WebhookProvider::from_settings(settings)?)),
        other => Err(format!(
            "unknown provider kind {other:?} (known: {})",
            KINDS.join(", ")
        )),
    }
}

/// Builds a provider, or one that fails every send with the configuration error, so that a
/// broken row is reported on each job (and the next provider in the chain still gets its turn)
/// instead of stopping the batch. Retryable: fixing the row rescues the queued jobs.
pub fn build_or_unusable(name: &str, kind: &str, settings: &Value) -> std::sync::Arc<dyn Provider> {
    match build(kind, settings) {
        Ok(provider) => provider.into(),
        Err(error) => std::sync::Arc::new(Unusable(format!(
            "provider {name} is misconfigured: {error}"
        ))),
    }
}

struct Unusable(String);

impl Provider for Unusable {
    fn send(&self, _message: &Message, _ctx: &Context) -> Outcome {
        Outcome::Retryable {
            error: self.0.clone(),
            retry_after: None,
        }
    }
}

/// Maps an HTTP answer that the provider's own error format did not explain.
pub fn classify_status(status: u16, retry_after: Option<Duration>, detail: &str) -> Outcome {
    let error = if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    };
    match status {
        408 | 425 | 429 | 500..=599 => Outcome::Retryable { error, retry_after },
        401 | 403 => Outcome::ProviderFailed {
            error: format!("authentication failed ({error}): check the provider's credentials"),
        },
        _ => Outcome::ProviderFailed { error },
    }
}

/// Maps a request that got no answer.
pub fn classify_failure(failure: Failure) -> Outcome {
    match failure {
        Failure::Timeout | Failure::Transport(_) => Outcome::Retryable {
            error: failure.to_string(),
            retry_after: None,
        },
        Failure::Invalid(error) => Outcome::ProviderFailed { error },
    }
}

/// A string setting, required or optional, with a clear error naming it.
fn setting<'a>(settings: &'a Value, key: &str) -> Result<Option<&'a str>, String> {
    match settings.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("setting {key:?} must be a string")),
    }
}

fn required_setting<'a>(settings: &'a Value, key: &str) -> Result<&'a str, String> {
    setting(settings, key)?.ok_or_else(|| format!("setting {key:?} is required"))
}

/// Short, single-line excerpt of a provider's answer for error messages.
fn excerpt(body: &str) -> String {
    let flat: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    flat.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert!(matches!(
            classify_status(503, None, ""),
            Outcome::Retryable { .. }
        ));
        assert!(
            matches!(classify_status(429, Some(Duration::from_secs(3)), ""),
            Outcome::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(3))
        );
        assert!(
            matches!(classify_status(401, None, ""), Outcome::ProviderFailed { error } if error.contains("authentication"))
        );
        assert!(matches!(
            classify_status(400, None, ""),
            Outcome::ProviderFailed { .. }
        ));
    }

    #[test]
    fn unknown_kind_is_named() {
        let err = build("carrier-pigeon", &Value::Null).err().unwrap();
        assert!(
            err.contains("carrier-pigeon") && err.contains("webhook"),
            "{err}"
        );
    }

    #[test]
    fn excerpt_is_one_short_line() {
        assert_eq!(
            excerpt("<html>\r\n<b>502</b>\n</html>"),
            "<html>  <b>502</b> </html>"
        );
        assert_eq!(excerpt(&"x".repeat(500)).len(), 200);
    }
}
