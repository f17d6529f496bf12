//! Resend email: `POST {base_url}/emails` with a Bearer key and a JSON body; the job id is the
//! `Idempotency-Key`, so a request repeated after a crash sends one email.
//!
//! Settings: `api_key`, `from` (e.g. `"Acme <auth@acme.com>"`), optional `reply_to`, `base_url`.

use super::{
    classify_status, excerpt, post_json, required_setting, setting, unreadable, Context, Outcome,
    Provider,
};
use crate::http::Response;
use crate::render::Message;
use serde::Deserialize;
use serde_json::{json, Value};

const DEFAULT_BASE_URL: &str = "https://api.resend.com";

pub struct ResendProvider {
    emails_url: String,
    authorization: String,
    from: String,
    reply_to: Option<String>,
    /// A webhook secret is configured: its receipts can be verified.
    receipts: bool,
}

impl ResendProvider {
    pub fn from_settings(settings: &Value) -> Result<ResendProvider, String> {
        let base_url = setting(settings, "base_url")?.unwrap_or(DEFAULT_BASE_URL);
        Ok(ResendProvider {
            emails_url: format!("{}/emails", base_url.trim_end_matches('/')),
            authorization: format!("Bearer {}", required_setting(settings, "api_key")?),
            from: required_setting(settings, "from")?.to_owned(),
            reply_to: setting(settings, "reply_to")?.map(str::to_owned),
            receipts: setting(settings, "webhook_secret")?.is_some(),
        })
    }

    fn body(&self, message: &Message) -> Value {
        let mut body = json!({
            "from": self.from,
            "to": [message.to],
            "subject": message.subject.as_deref().unwrap_or_default(),
            "text": message.text,
            // Resend tag values allow letters, digits, '_' and '-': template names qualify.
            "tags": [{"name": "category", "value": message.template_name}],
        });
        if let Some(html) = &message.html {
            body["html"] = json!(html);
        }
        if let Some(reply_to) = &self.reply_to {
            body["reply_to"] = json!(reply_to);
        }
        body
    }
}

#[derive(Deserialize)]
struct Sent {
    id: String,
}

#[derive(Deserialize)]
struct ResendError {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn interpret(response: &Response) -> Outcome {
    if (200..300).contains(&response.status) {
        let id = serde_json::from_str::<Sent>(&response.body)
            .ok()
            .map(|s| s.id);
        return Outcome::Sent {
            message_id: id,
            note: None,
        };
    }
    let Ok(error) = serde_json::from_str::<ResendError>(&response.body) else {
        return unreadable(response);
    };
    let name = error.name.unwrap_or_default();
    let text = format!(
        "Resend {name}: {}",
        excerpt(error.message.as_deref().unwrap_or(""))
    );
    match (response.status, name.as_str()) {
        // Another request with this key is still being processed: ask again later.
        (409, "concurrent_idempotent_requests") => Outcome::Retryable {
            error: text,
            retry_after: response.retry_after,
        },
        (401 | 403, "missing_api_key" | "invalid_api_key" | "restricted_api_key") => {
            Outcome::ProviderFailed {
                error: format!("authentication failed: {text}"),
            }
        }
        _ => classify_status(response.status, response.retry_after, &text),
    }
}

impl Provider for ResendProvider {
    fn reports_receipts(&self) -> bool {
        self.receipts
    }

    fn send(&self, message: &Message, ctx: &Context) -> Outcome {
        let headers = vec![
            ("authorization", self.authorization.clone()),
            ("idempotency-key", ctx.job_id.to_owned()),
        ];
        post_json(
            ctx,
            &self.emails_url,
            headers,
            &self.body(message),
            interpret,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Outcome {
        super::super::answer(interpret, status, body)
    }

    #[test]
    fn error_mapping() {
        assert_eq!(
            answer(200, r#"{"id": "re_1"}"#),
            Outcome::Sent {
                message_id: Some("re_1".into()),
                note: None
            }
        );
        let err = |status: u16, name: &str| {
            answer(
                status,
                &format!(r#"{{"statusCode": {status}, "message": "m", "name": "{name}"}}"#),
            )
        };
        assert!(matches!(
            err(429, "rate_limit_exceeded"),
            Outcome::Retryable {
                retry_after: Some(_),
                ..
            }
        ));
        assert!(matches!(
            err(409, "concurrent_idempotent_requests"),
            Outcome::Retryable { .. }
        ));
        assert!(matches!(
            err(409, "invalid_idempotent_request"),
            Outcome::ProviderFailed { .. }
        ));
        assert!(matches!(
            err(422, "validation_error"),
            Outcome::ProviderFailed { .. }
        ));
        assert!(matches!(
            err(403, "validation_error"),
            Outcome::ProviderFailed { .. }
        ));
        assert!(
            matches!(err(401, "missing_api_key"), Outcome::ProviderFailed { error } if error.starts_with("authentication"))
        );
        assert!(matches!(
            err(500, "internal_server_error"),
            Outcome::Retryable { .. }
        ));
    }

    #[test]
    fn settings_are_required() {
        assert!(ResendProvider::from_settings(&json!({"from": "a@b.io"})).is_err());
        assert!(ResendProvider::from_settings(&json!({"api_key": "re_x"})).is_err());
        let p = ResendProvider::from_settings(
            &json!({"api_key": "re_x", "from": "A <a@b.io>", "base_url": "http://127.0.0.1:9/"}),
        )
        .unwrap();
        assert_eq!(p.emails_url, "http://127.0.0.1:9/emails");
    }
}
