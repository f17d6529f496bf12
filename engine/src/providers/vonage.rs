//! Vonage SMS API (`vonage`, Supabase Auth's built-in): `POST {base_url}/sms/json`, a form with
//! the credentials in it. Every answer is HTTP 200 with one `status` per message part.
//!
//! Settings: `api_key`, `api_secret`, `from`; optional `status_callback` (delivery receipts),
//! `base_url`. The job id goes as `client-ref` (echoed in receipts; Vonage does not deduplicate),
//! the code's remaining life as `ttl`.

use super::{
    excerpt, international_digits, is_unicode, json_answer, post_form, required_setting,
    seconds_left, setting, unreadable, Context, Outcome, Provider,
};
use crate::http::Response;
use crate::job::Channel;
use crate::render::Message;
use serde::Deserialize;
use serde_json::Value;

const DEFAULT_BASE_URL: &str = "https://rest.nexmo.com";

pub struct VonageProvider {
    url: String,
    api_key: String,
    api_secret: String,
    from: String,
    callback: Option<String>,
}

impl VonageProvider {
    pub fn from_settings(settings: &Value) -> Result<VonageProvider, String> {
        let base_url = setting(settings, "base_url")?.unwrap_or(DEFAULT_BASE_URL);
        Ok(VonageProvider {
            url: format!("{}/sms/json", base_url.trim_end_matches('/')),
            api_key: required_setting(settings, "api_key")?.to_owned(),
            api_secret: required_setting(settings, "api_secret")?.to_owned(),
            from: required_setting(settings, "from")?.to_owned(),
            callback: setting(settings, "status_callback")?.map(str::to_owned),
        })
    }
}

#[derive(Deserialize)]
struct Answer {
    messages: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    status: String,
    #[serde(rename = "message-id")]
    message_id: Option<String>,
    #[serde(rename = "error-text")]
    error_text: Option<String>,
}

fn interpret(response: &Response) -> Outcome {
    let answer = match json_answer::<Answer>(response) {
        Some(answer) if response.status == 200 && !answer.messages.is_empty() => answer,
        _ => return unreadable(response),
    };
    let failed = answer.messages.iter().find(|part| part.status != "0");
    let sent = answer.messages.iter().find(|part| part.status == "0");
    match (sent, failed) {
        (Some(first), None) => Outcome::Sent {
            message_id: first.message_id.clone(),
            note: None,
        },
        // Some parts went out: sending again would repeat them.
        (Some(first), Some(part)) => Outcome::Sent {
            message_id: first.message_id.clone(),
            note: Some(format!("Vonage refused a part: {}", describe(part))),
        },
        (None, Some(part)) => classify(part),
        (None, None) => unreachable!("messages is not empty"),
    }
}

fn describe(part: &Part) -> String {
    format!(
        "Vonage status {}: {}",
        part.status,
        excerpt(part.error_text.as_deref().unwrap_or_default())
    )
}

/// Vonage's per-part status codes (its API description's error table).
fn classify(part: &Part) -> Outcome {
    let error = describe(part);
    match part.status.as_str() {
        // Throttled, internal error, too many binds.
        "1" | "5" | "10" => Outcome::Retryable {
            error,
            retry_after: None,
        },
        // Unroutable prefix, barred number, deactivated number.
        "6" | "7" | "33" => Outcome::RecipientRejected { error },
        "4" | "14" | "32" => Outcome::ProviderFailed {
            error: format!("authentication failed: {error}"),
        },
        // Missing or invalid parameters, suspended account, no credit, sender not allowed,
        // demo account (29: the number is not whitelisted), message too long.
        _ => Outcome::ProviderFailed { error },
    }
}

impl Provider for VonageProvider {
    fn delivers_on(&self) -> Option<Channel> {
        Some(Channel::Sms)
    }

    fn send(&self, message: &Message, ctx: &Context) -> Outcome {
        // Vonage takes 20 s to 7 days, in milliseconds.
        let ttl = seconds_left(message.expires_at)
            .map(|s| (s * 1000).clamp(20_000, 604_800_000).to_string());
        let mut pairs = vec![
            ("api_key", self.api_key.as_str()),
            ("api_secret", self.api_secret.as_str()),
            ("from", self.from.as_str()),
            ("to", international_digits(&message.to)),
            ("text", message.text.as_str()),
            ("client-ref", ctx.job_id),
        ];
        if is_unicode(message) {
            pairs.push(("type", "unicode"));
        }
        if let Some(ttl) = &ttl {
            pairs.push(("ttl", ttl));
        }
        if let Some(callback) = &self.callback {
            pairs.push(("callback", callback));
        }
        post_form(ctx, &self.url, vec![], &pairs, interpret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Outcome {
        super::super::answer(interpret, status, body)
    }

    #[test]
    fn answers() {
        let parts = |statuses: &[&str]| {
            let parts: Vec<String> = statuses
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    format!(r#"{{"status": "{s}", "message-id": "id{i}", "error-text": "t"}}"#)
                })
                .collect();
            answer(
                200,
                &format!(
                    r#"{{"message-count": "1", "messages": [{}]}}"#,
                    parts.join(",")
                ),
            )
        };
        assert_eq!(
            parts(&["0", "0"]),
            Outcome::Sent {
                message_id: Some("id0".into()),
                note: None
            }
        );
        assert!(matches!(
            parts(&["0", "1"]),
            Outcome::Sent { note: Some(_), .. }
        ));
        assert!(matches!(parts(&["1"]), Outcome::Retryable { .. }));
        assert!(matches!(parts(&["5"]), Outcome::Retryable { .. }));
        assert!(matches!(parts(&["7"]), Outcome::RecipientRejected { .. }));
        assert!(matches!(parts(&["33"]), Outcome::RecipientRejected { .. }));
        assert!(
            matches!(parts(&["4"]), Outcome::ProviderFailed { error } if error.starts_with("authentication"))
        );
        assert!(matches!(parts(&["9"]), Outcome::ProviderFailed { .. }));
        assert!(matches!(parts(&["15"]), Outcome::ProviderFailed { .. }));
        assert!(matches!(answer(502, "<html>"), Outcome::Retryable { .. }));
        assert!(matches!(
            answer(200, "<html>"),
            Outcome::Sent {
                message_id: None,
                note: Some(_)
            }
        ));
    }
}
