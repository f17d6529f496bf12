//! Delivery providers behind one small trait. A provider is built from its row in
//! `mysmshook.providers` (kind + JSON settings) on the backend thread, then used from worker
//! threads: implementations hold only owned data and never touch Postgres.

mod africastalking;
mod log;
mod messagebird;
mod msg91;
mod plivo;
mod resend;
mod smtp;
mod textlocal;
mod twilio;
mod twilio_verify;
mod vonage;
mod webhook;

use crate::http::{self, Failure};
use crate::job::Channel;
use crate::render::Message;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// The recipient cannot be reached on this provider's channel (a number without WhatsApp):
    /// a provider of another channel may still reach it.
    ChannelRejected { error: String },
    /// No request was made: it could not start in time to end inside the worker's lease.
    Deferred { reason: String },
}

impl Outcome {
    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::Sent { .. } => None,
            Outcome::Retryable { error, .. }
            | Outcome::ProviderFailed { error }
            | Outcome::RecipientRejected { error }
            | Outcome::ChannelRejected { error }
            | Outcome::Deferred { reason: error } => Some(error),
        }
    }
}

/// Everything a provider needs besides the message.
pub struct Context<'a> {
    pub http: &'a http::Client,
    /// The job id: idempotency key and webhook-id, so a repeated request is recognisable.
    pub job_id: &'a str,
    /// Whether a request that starts after this wait still ends inside the worker's lease.
    pub may_start_after: &'a dyn Fn(Duration) -> bool,
    /// mysmshook.log_sink: whether the log provider may complete jobs.
    pub log_sink: bool,
}

pub trait Provider: Send + Sync {
    /// The channel its messages travel on, when it differs from the job's (WhatsApp for an
    /// SMS job); None for providers that carry whatever they are given.
    fn delivers_on(&self) -> Option<Channel> {
        None
    }
    fn send(&self, message: &Message, ctx: &Context) -> Outcome;
    /// Whether this provider, as configured, calls back with receipts mysmshook can verify
    /// (src/receipts.rs). Only then is a sent code kept for a fallback (sql/receipts.sql).
    fn reports_receipts(&self) -> bool {
        false
    }
}

/// The kinds this build knows.
pub const KINDS: &[&str] = &[
    "log",
    "webhook",
    "twilio",
    "twilio_whatsapp",
    "resend",
    "smtp",
    "vonage",
    "messagebird",
    "textlocal",
    "msg91",
    "africastalking",
    "plivo",
    "twilio_verify",
];

/// Builds a provider from its configuration row; the error says what is wrong with it.
/// Any kind accepts `rate_limit`: at most that many requests a second from one worker.
pub fn build(kind: &str, settings: &Value) -> Result<Box<dyn Provider>, String> {
    let provider = build_kind(kind, settings)?;
    match settings.get("rate_limit") {
        None | Some(Value::Null) => Ok(provider),
        Some(limit) => {
            let per_second = limit
                .as_f64()
                .filter(|r| *r > 0.0 && *r <= 10_000.0)
                .ok_or(
                    "setting \"rate_limit\" must be a number of requests per second (0 to 10000)",
                )?;
            Ok(Box::new(RateLimited {
                inner: provider,
                interval: Duration::from_secs_f64(1.0 / per_second),
                next_start: Mutex::new(Instant::now()),
            }))
        }
    }
}

fn build_kind(kind: &str, settings: &Value) -> Result<Box<dyn Provider>, String> {
    match kind {
        "log" => Ok(Box::new(log::LogProvider::from_settings(settings)?)),
        "webhook" => Ok(Box::new(webhook::WebhookProvider::from_settings(settings)?)),
        "twilio" => Ok(Box::new(twilio::TwilioProvider::from_settings(
            settings, false,
        )?)),
        "twilio_whatsapp" => Ok(Box::new(twilio::TwilioProvider::from_settings(
            settings, true,
        )?)),
        "resend" => Ok(Box::new(resend::ResendProvider::from_settings(settings)?)),
        "smtp" => Ok(Box::new(smtp::SmtpProvider::from_settings(settings)?)),
        "vonage" => Ok(Box::new(vonage::VonageProvider::from_settings(settings)?)),
        "messagebird" => Ok(Box::new(messagebird::MessageBirdProvider::from_settings(
            settings,
        )?)),
        "textlocal" => Ok(Box::new(textlocal::TextlocalProvider::from_settings(
            settings,
        )?)),
        "msg91" => Ok(Box::new(msg91::Msg91Provider::from_settings(settings)?)),
        "africastalking" => Ok(Box::new(
            africastalking::AfricasTalkingProvider::from_settings(settings)?,
        )),
        "plivo" => Ok(Box::new(plivo::PlivoProvider::from_settings(settings)?)),
        "twilio_verify" => Ok(Box::new(
            twilio_verify::TwilioVerifyProvider::from_settings(settings)?,
        )),
        other => Err(format!(
            "unknown provider kind {other:?} (known: {})",
            KINDS.join(", ")
        )),
    }
}

/// Builds a provider, or one that fails every send with the configuration error, so that a
/// broken row is reported on each job (and the next provider in the chain still gets its turn)
/// instead of stopping the batch. Retryable: fixing the row rescues the queued jobs.
pub fn build_or_unusable(name: &str, kind: &str, settings: &Value) -> Arc<dyn Provider> {
    match build(kind, settings) {
        Ok(provider) => provider.into(),
        Err(error) => unusable(format!("provider {name} is misconfigured: {error}")),
    }
}

/// A provider that fails every send with `error` (retryable: configuration can be fixed).
pub fn unusable(error: String) -> Arc<dyn Provider> {
    Arc::new(Unusable(error))
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

/// Spaces the starts of requests evenly, shared by the batch's worker threads.
struct RateLimited {
    inner: Box<dyn Provider>,
    interval: Duration,
    next_start: Mutex<Instant>,
}

impl Provider for RateLimited {
    fn delivers_on(&self) -> Option<Channel> {
        self.inner.delivers_on()
    }

    fn reports_receipts(&self) -> bool {
        self.inner.reports_receipts()
    }

    fn send(&self, message: &Message, ctx: &Context) -> Outcome {
        let wait = {
            let mut next = self.next_start.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = (*next).max(now);
            // A slot the lease cannot cover is not taken: the job goes back in line.
            if !(ctx.may_start_after)(start - now) {
                return Outcome::Deferred {
                    reason: "the rate limit's queue runs past the worker's lease".into(),
                };
            }
            *next = start + self.interval;
            start - now
        };
        std::thread::sleep(wait);
        self.inner.send(message, ctx)
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

/// POSTs a provider request and reads the answer with the provider's own error format: the one
/// exchange every HTTP provider makes.
fn exchange(
    ctx: &Context,
    url: &str,
    headers: &[(&str, String)],
    body: &[u8],
    interpret: fn(&http::Response) -> Outcome,
) -> Outcome {
    match ctx.http.post(url, headers, body) {
        Ok(response) => interpret(&response),
        Err(failure) => classify_failure(failure),
    }
}

/// Test helper: what `interpret` makes of an answer (with a Retry-After of `RETRY_AFTER`).
#[cfg(test)]
fn answer(interpret: fn(&http::Response) -> Outcome, status: u16, body: &str) -> Outcome {
    interpret(&http::Response {
        status,
        body: body.into(),
        retry_after: Some(TEST_RETRY_AFTER),
    })
}

#[cfg(test)]
const TEST_RETRY_AFTER: Duration = Duration::from_secs(9);

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

/// POSTs a form: the shape of Twilio, Vonage, Textlocal and Africa's Talking.
fn post_form(
    ctx: &Context,
    url: &str,
    mut headers: Vec<(&str, String)>,
    pairs: &[(&str, &str)],
    interpret: fn(&http::Response) -> Outcome,
) -> Outcome {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    headers.push((
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    ));
    exchange(ctx, url, &headers, body.as_bytes(), interpret)
}

/// POSTs a JSON body: the shape of Resend, MessageBird, Plivo and MSG91.
fn post_json(
    ctx: &Context,
    url: &str,
    mut headers: Vec<(&str, String)>,
    body: &Value,
    interpret: fn(&http::Response) -> Outcome,
) -> Outcome {
    headers.push(("content-type", "application/json".to_owned()));
    headers.push(("accept", "application/json".to_owned()));
    exchange(ctx, url, &headers, body.to_string().as_bytes(), interpret)
}

/// An E.164 number without its `+`: what Vonage, MessageBird, Textlocal and MSG91 take.
fn international_digits(e164: &str) -> &str {
    e164.trim_start_matches('+')
}

/// Whole seconds left of a code's life (at least 1), for providers that can drop a message
/// they could not deliver in time; None for messages without a code.
fn seconds_left(expires_at: Option<std::time::SystemTime>) -> Option<u64> {
    expires_at.map(|at| {
        let left = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        (left.as_secs_f64().ceil() as u64).max(1)
    })
}

/// The code a message carries, for providers that send it into a template of their own.
fn code_of(message: &Message) -> Option<&str> {
    message.variables.get("code").and_then(Value::as_str)
}

/// Whether the message needs UCS-2 (a character outside the GSM 7-bit alphabet).
fn is_unicode(message: &Message) -> bool {
    message
        .sms
        .as_ref()
        .is_some_and(|sms| sms.encoding != "GSM-7")
}

/// An answer in none of the provider's formats (an HTML error page, a truncated body): a 2xx
/// counts as sent, since the provider took the request and sending it through another provider
/// could deliver it twice; any other status decides by itself.
fn unreadable(response: &http::Response) -> Outcome {
    if (200..300).contains(&response.status) {
        return Outcome::Sent {
            message_id: None,
            note: Some(format!(
                "HTTP {} with an answer that could not be read: {}",
                response.status,
                excerpt(&response.body)
            )),
        };
    }
    classify_status(
        response.status,
        response.retry_after,
        &excerpt(&response.body),
    )
}

/// The answer as JSON of type T, or None (an HTML error page, a truncated body).
fn json_answer<T: serde::de::DeserializeOwned>(response: &http::Response) -> Option<T> {
    serde_json::from_str(&response.body).ok()
}

/// A string setting, required or optional, with a clear error naming it.
fn setting<'a>(settings: &'a Value, key: &str) -> Result<Option<&'a str>, String> {
    match settings.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        // Settings end up in URLs and headers: a line break would be a header injection.
        Some(Value::String(s)) if s.chars().any(char::is_control) => {
            Err(format!("setting {key:?} contains a control character"))
        }
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

    fn sms_message() -> Message {
        crate::render::render(
            &Default::default(),
            Channel::Sms,
            "sms",
            &crate::job::JobData {
                to: "+1".into(),
                code: Some("1".into()),
                ..Default::default()
            },
            None,
        )
        .unwrap()
    }

    #[test]
    fn rate_limit_spaces_requests() {
        let provider = build("log", &serde_json::json!({"rate_limit": 50})).unwrap();
        let http = http::Client::new(Duration::from_secs(1), false, 1);
        let message = sms_message();
        let started = Instant::now();
        for _ in 0..6 {
            provider.send(
                &message,
                &Context {
                    http: &http,
                    job_id: "j",
                    may_start_after: &|_| true,
                    log_sink: true,
                },
            );
        }
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
        assert!(build("log", &serde_json::json!({"rate_limit": "fast"})).is_err());
    }

    #[test]
    fn rate_limit_takes_no_slot_the_lease_cannot_cover() {
        let provider = build("log", &serde_json::json!({"rate_limit": 1})).unwrap();
        let http = http::Client::new(Duration::from_secs(1), false, 1);
        let message = sms_message();
        let within = |limit: Duration| move |wait: Duration| wait < limit;
        let send = |may_start_after: &dyn Fn(Duration) -> bool| {
            provider.send(
                &message,
                &Context {
                    http: &http,
                    job_id: "j",
                    may_start_after,
                    log_sink: true,
                },
            )
        };
        assert!(matches!(
            send(&within(Duration::from_secs(5))),
            Outcome::Sent { .. }
        ));
        // The next slot is a second away: refused without waiting, and the slot stays free.
        let started = Instant::now();
        assert!(matches!(
            send(&within(Duration::from_millis(500))),
            Outcome::Deferred { .. }
        ));
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(matches!(
            send(&within(Duration::from_secs(5))),
            Outcome::Sent { .. }
        ));
        assert!(started.elapsed() >= Duration::from_millis(800));
    }

    #[test]
    fn line_breaks_in_settings_are_refused() {
        let settings = serde_json::json!({"api_key": "re_x\r\nX-Injected: 1", "from": "a@b.io"});
        let err = build("resend", &settings).err().unwrap();
        assert!(err.contains("control character"), "{err}");
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
