//! The signed `webhook` provider: POSTs the message as JSON to any gateway, in the shape of
//! Authgear's custom SMS gateway (`to`, `body`, `app_id`, `template_name`, `language_tag`,
//! `template_variables`; email adds `subject` and `html`), signed with Standard Webhooks headers.
//!
//! Settings: `url` (required), `secret` (`whsec_...` or `v1,whsec_...`, required), `app_id`.
//! The gateway answers `{"code": "ok" | "invalid_phone_number" | "rate_limited" |
//! "authentication_failed" | "unsupported_request" | "delivery_rejected" | "timeout" |
//! "unknown_error", "description"?, "info"?: {"provider_error_code"?}}`; any 2xx that is not
//! such JSON counts as delivered.

use super::{
    classify_status, excerpt, exchange, required_setting, setting, Context, Outcome, Provider,
};
use crate::http::{sign_webhook, Response};
use crate::render::Message;
use serde::Deserialize;
use serde_json::{json, Value};

pub struct WebhookProvider {
    url: String,
    secret: String,
    app_id: String,
}

impl WebhookProvider {
    pub fn from_settings(settings: &Value) -> Result<WebhookProvider, String> {
        let provider = WebhookProvider {
            url: required_setting(settings, "url")?.to_owned(),
            secret: required_setting(settings, "secret")?.to_owned(),
            app_id: setting(settings, "app_id")?
                .unwrap_or("mysmshook")
                .to_owned(),
        };
        // Refuse a malformed secret now rather than on every send.
        sign_webhook(&provider.secret, "check", 0, b"")?;
        Ok(provider)
    }

    fn payload(&self, message: &Message) -> Value {
        let mut payload = json!({
            "to": message.to,
            "body": message.text,
            "app_id": self.app_id,
            "template_name": message.template_name,
            "language_tag": message.language,
            "template_variables": message.variables,
        });
        if let Some(subject) = &message.subject {
            payload["subject"] = json!(subject);
            payload["html"] = json!(message.html);
        }
        payload
    }
}

#[derive(Deserialize)]
struct GatewayInfo {
    #[serde(default)]
    provider_error_code: Option<Value>,
}

#[derive(Deserialize)]
struct GatewayAnswer {
    code: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    info: Option<GatewayInfo>,
    #[serde(default)]
    message_id: Option<String>,
}

/// Maps the gateway's answer to an outcome.
fn interpret(response: &Response) -> Outcome {
    let answer: Option<GatewayAnswer> = serde_json::from_str(&response.body).ok();
    let success = (200..300).contains(&response.status);
    let Some(answer) = answer else {
        return if success {
            Outcome::Sent {
                message_id: None,
                note: None,
            }
        } else {
            classify_status(
                response.status,
                response.retry_after,
                &excerpt(&response.body),
            )
        };
    };
    let mut error = answer.code.clone();
    if let Some(description) = answer.description.as_deref().filter(|d| !d.is_empty()) {
        error = format!("{error}: {}", excerpt(description));
    }
    if let Some(code) = answer.info.and_then(|i| i.provider_error_code) {
        let code = code
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| code.to_string());
        error = format!("{error} (provider error {})", excerpt(&code));
    }
    match answer.code.as_str() {
        "ok" if success => Outcome::Sent {
            message_id: answer.message_id,
            note: None,
        },
        "invalid_phone_number" => Outcome::RecipientRejected { error },
        "rate_limited" | "timeout" | "unknown_error" => Outcome::Retryable {
            error,
            retry_after: response.retry_after,
        },
        "authentication_failed" | "unsupported_request" | "delivery_rejected" => {
            Outcome::ProviderFailed { error }
        }
        _ if success => Outcome::Sent {
            message_id: answer.message_id,
            note: None,
        },
        _ => classify_status(response.status, response.retry_after, &error),
    }
}

impl Provider for WebhookProvider {
    fn reports_receipts(&self) -> bool {
        true // its message.status callbacks, signed with the same secret
    }

    fn send(&self, message: &Message, ctx: &Context) -> Outcome {
        let body = self.payload(message).to_string();
        let timestamp = chrono::Utc::now().timestamp();
        let signature = match sign_webhook(&self.secret, ctx.job_id, timestamp, body.as_bytes()) {
            Ok(signature) => signature,
            Err(error) => return Outcome::ProviderFailed { error },
        };
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("webhook-id", ctx.job_id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ];
        exchange(ctx, &self.url, &headers, body.as_bytes(), interpret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Outcome {
        super::super::answer(interpret, status, body)
    }

    #[test]
    fn gateway_codes() {
        assert!(matches!(
            answer(200, r#"{"code":"ok"}"#),
            Outcome::Sent { .. }
        ));
        assert!(matches!(answer(200, "OK"), Outcome::Sent { .. }));
        assert!(matches!(answer(204, ""), Outcome::Sent { .. }));
        assert!(matches!(
            answer(200, r#"{"code":"invalid_phone_number"}"#),
            Outcome::RecipientRejected { .. }
        ));
        assert!(matches!(answer(429, r#"{"code":"rate_limited"}"#),
            Outcome::Retryable { retry_after: Some(d), .. } if d == super::super::TEST_RETRY_AFTER));
        assert!(matches!(
            answer(200, r#"{"code":"timeout"}"#),
            Outcome::Retryable { .. }
        ));
        assert!(matches!(
            answer(500, r#"{"code":"unknown_error"}"#),
            Outcome::Retryable { .. }
        ));
        for code in [
            "authentication_failed",
            "unsupported_request",
            "delivery_rejected",
        ] {
            assert!(
                matches!(
                    answer(400, &format!(r#"{{"code":"{code}"}}"#)),
                    Outcome::ProviderFailed { .. }
                ),
                "{code}"
            );
        }
        assert!(matches!(
            answer(502, "<html>bad gateway</html>"),
            Outcome::Retryable { .. }
        ));
        assert!(matches!(
            answer(404, "nope"),
            Outcome::ProviderFailed { .. }
        ));
    }

    #[test]
    fn error_text_carries_description_and_provider_code() {
        let Outcome::ProviderFailed { error } = answer(
            400,
            r#"{"code":"delivery_rejected","description":"blocked","info":{"provider_error_code":"30007"}}"#,
        ) else {
            panic!("expected ProviderFailed")
        };
        assert_eq!(error, "delivery_rejected: blocked (provider error 30007)");
    }

    #[test]
    fn settings_are_checked() {
        assert!(WebhookProvider::from_settings(&json!({"url": "https://x"})).is_err());
        assert!(
            WebhookProvider::from_settings(&json!({"url": "https://x", "secret": "whsec_%%"}))
                .is_err()
        );
        assert!(WebhookProvider::from_settings(
            &json!({"url": "https://x", "secret": "v1,whsec_c2VjcmV0"})
        )
        .is_ok());
    }
}
