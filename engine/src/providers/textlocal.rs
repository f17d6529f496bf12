//! Textlocal (`textlocal`, Supabase Auth's built-in): `POST {base_url}/send/`, a form with the
//! API key in it; the answer's `status` is `success` or `failure` with error codes.
//!
//! Settings: `api_key`, `sender` (in India the DLT-approved header); optional `status_callback`
//! (`receipt_url`), `base_url` (default the India host `https://api.textlocal.in`; the UK
//! account's is `https://api.txtlocal.com`). The job id goes as `custom` (echoed in receipts;
//! Textlocal does not deduplicate), the code's expiry as `validity`.

use super::{
    excerpt, international_digits, is_unicode, json_answer, post_form, required_setting,
    seconds_left, setting, unreadable, Context, Outcome, Provider,
};
use crate::http::Response;
use crate::job::Channel;
use crate::render::Message;
use serde::Deserialize;
use serde_json::Value;

const DEFAULT_BASE_URL: &str = "https://api.textlocal.in";

pub struct TextlocalProvider {
    url: String,
    api_key: String,
    sender: String,
    receipt_url: Option<String>,
}

impl TextlocalProvider {
    pub fn from_settings(settings: &Value) -> Result<TextlocalProvider, String> {
        let base_url = setting(settings, "base_url")?.unwrap_or(DEFAULT_BASE_URL);
        Ok(TextlocalProvider {
            url: format!("{}/send/", base_url.trim_end_matches('/')),
            api_key: required_setting(settings, "api_key")?.to_owned(),
            sender: required_setting(settings, "sender")?.to_owned(),
            receipt_url: setting(settings, "status_callback")?.map(str::to_owned),
        })
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    messages: Vec<Sent>,
    #[serde(default)]
    errors: Vec<Problem>,
}

#[derive(Deserialize)]
struct Sent {
    id: Value,
}

#[derive(Deserialize)]
struct Problem {
    code: Option<i64>,
    message: Option<String>,
}

fn interpret(response: &Response) -> Outcome {
    let Some(answer) = json_answer::<Answer>(response).filter(|_| response.status == 200) else {
        return unreadable(response);
    };
    if answer.status == "success" {
        let id = answer.messages.first().map(|m| match &m.id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        return Outcome::Sent {
            message_id: id,
            note: None,
        };
    }
    let problem = answer.errors.first();
    let code = problem.and_then(|p| p.code).unwrap_or_default();
    let error = format!(
        "Textlocal error {code}: {}",
        excerpt(
            problem
                .and_then(|p| p.message.as_deref())
                .unwrap_or_default()
        )
    );
    match code {
        // Invalid number format; no valid numbers (also every number on DND or opted out).
        32 | 51 => Outcome::RecipientRejected { error },
        3 => Outcome::ProviderFailed {
            error: format!("authentication failed: {error}"),
        },
        // "You cannot send message at this time" (India's sending window).
        192 => Outcome::Retryable {
            error,
            retry_after: None,
        },
        // Credits, sender name, template (80), message content: the account's, not the user's.
        _ => Outcome::ProviderFailed { error },
    }
}

impl Provider for TextlocalProvider {
    fn delivers_on(&self) -> Option<Channel> {
        Some(Channel::Sms)
    }

    fn send(&self, message: &Message, ctx: &Context) -> Outcome {
        // A Unix time at most 72 hours ahead.
        let validity = seconds_left(message.expires_at).map(|left| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            (now + left.min(72 * 3600)).to_string()
        });
        let mut pairs = vec![
            ("apikey", self.api_key.as_str()),
            ("numbers", international_digits(&message.to)),
            ("sender", self.sender.as_str()),
            ("message", message.text.as_str()),
            ("custom", ctx.job_id),
        ];
        if is_unicode(message) {
            pairs.push(("unicode", "true"));
        }
        if let Some(validity) = &validity {
            pairs.push(("validity", validity));
        }
        if let Some(url) = &self.receipt_url {
            pairs.push(("receipt_url", url));
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

    fn failure(code: i64) -> Outcome {
        answer(
            200,
            &format!(r#"{{"errors": [{{"code": {code}, "message": "m"}}], "status": "failure"}}"#),
        )
    }

    #[test]
    fn answers() {
        assert_eq!(
            answer(
                200,
                r#"{"balance": 995, "batch_id": 244712728, "messages": [{"id": "119713472", "recipient": 918801933344}], "status": "success"}"#
            ),
            Outcome::Sent {
                message_id: Some("119713472".into()),
                note: None
            }
        );
        assert!(matches!(failure(51), Outcome::RecipientRejected { .. }));
        assert!(matches!(failure(32), Outcome::RecipientRejected { .. }));
        assert!(
            matches!(failure(3), Outcome::ProviderFailed { error } if error.starts_with("authentication"))
        );
        assert!(matches!(failure(7), Outcome::ProviderFailed { .. }));
        assert!(matches!(failure(192), Outcome::Retryable { .. }));
        assert!(matches!(answer(502, "<html>"), Outcome::Retryable { .. }));
    }
}
