//! MSG91 (`msg91`, India): the Flow API, `POST {base_url}/api/v5/flow`, JSON, header `authkey`.
//! India's DLT rules let only registered templates through, so the text is MSG91's template, not
//! ours: the code goes in the recipient's template variable. The DLT template id is attached to
//! that MSG91 template (MSG91's panel), and the DLT-registered header is the `sender`.
//!
//! Settings: `auth_key`, `template_id` (the MSG91 template mapped to the DLT template); optional
//! `sender` (the DLT header, when the template takes it from the API), `code_variable` (default
//! `OTP`: the template's placeholder for the code), `base_url`.

use super::{
    classify_status, code_of, excerpt, international_digits, json_answer, post_json,
    required_setting, setting, unreadable, Context, Outcome, Provider,
};
use crate::http::Response;
use crate::job::Channel;
use crate::render::Message;
use serde::Deserialize;
use serde_json::{json, Map, Value};

const DEFAULT_BASE_URL: &str = "https://control.msg91.com";

pub struct Msg91Provider {
    url: String,
    auth_key: String,
    template_id: String,
    sender: Option<String>,
    code_variable: String,
}

impl Msg91Provider {
    pub fn from_settings(settings: &Value) -> Result<Msg91Provider, String> {
        let base_url = setting(settings, "base_url")?.unwrap_or(DEFAULT_BASE_URL);
        let code_variable = setting(settings, "code_variable")?.unwrap_or("OTP");
        if code_variable == "mobiles" {
            return Err("setting \"code_variable\" cannot be \"mobiles\"".into());
        }
        Ok(Msg91Provider {
            url: format!("{}/api/v5/flow", base_url.trim_end_matches('/')),
            auth_key: required_setting(settings, "auth_key")?.to_owned(),
            template_id: required_setting(settings, "template_id")?.to_owned(),
            sender: setting(settings, "sender")?.map(str::to_owned),
            code_variable: code_variable.to_owned(),
        })
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
    code: Option<Value>,
}

fn interpret(response: &Response) -> Outcome {
    let Some(answer) = json_answer::<Answer>(response) else {
        return unreadable(response);
    };
    let message = answer.message.unwrap_or_default();
    if answer.kind.as_deref() == Some("success") && (200..300).contains(&response.status) {
        return Outcome::Sent {
            // The request id, which delivery reports carry.
            message_id: Some(message).filter(|m| !m.is_empty()),
            note: None,
        };
    }
    let code = match answer.code {
        Some(Value::String(s)) => s.parse().unwrap_or_default(),
        Some(Value::Number(n)) => n.as_i64().unwrap_or_default(),
        _ => 0,
    };
    let error = format!("MSG91 error {code}: {}", excerpt(&message));
    match code {
        // Invalid mobile number; no correct number.
        202 | 604 => Outcome::RecipientRejected { error },
        // The same request within 10 seconds: MSG91 sent the first one and dropped this one.
        311 => Outcome::Sent {
            message_id: None,
            note: Some(error),
        },
        106 | 207 | 208 | 418 => Outcome::ProviderFailed {
            error: format!(
                "authentication failed (418: whitelist the server's IP for the authkey): {error}"
            ),
        },
        // Route unavailable, internal error.
        306 | 506 => Outcome::Retryable {
            error,
            retry_after: None,
        },
        // Sender or DLT ids, balance, account, template not approved or disabled.
        _ if (200..300).contains(&response.status) => Outcome::ProviderFailed { error },
        _ => classify_status(response.status, response.retry_after, &error),
    }
}

impl Provider for Msg91Provider {
    fn delivers_on(&self) -> Option<Channel> {
        Some(Channel::Sms)
    }

    fn send(&self, message: &Message, ctx: &Context) -> Outcome {
        let Some(code) = code_of(message) else {
            return Outcome::ProviderFailed {
                error: "msg91 sends codes through a DLT template: this message carries none".into(),
            };
        };
        let mut recipient = Map::new();
        recipient.insert("mobiles".into(), json!(international_digits(&message.to)));
        recipient.insert(self.code_variable.clone(), json!(code));
        let mut body = json!({
            "template_id": self.template_id,
            "short_url": "0",
            "recipients": [recipient],
        });
        if let Some(sender) = &self.sender {
            body["sender"] = json!(sender);
        }
        let headers = vec![("authkey", self.auth_key.clone())];
        post_json(ctx, &self.url, headers, &body, interpret)
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
        assert_eq!(
            answer(
                200,
                r#"{"type": "success", "message": "5762846b4f8d285d378b4567"}"#
            ),
            Outcome::Sent {
                message_id: Some("5762846b4f8d285d378b4567".into()),
                note: None
            }
        );
        let error = |code: &str| {
            answer(
                200,
                &format!(r#"{{"type": "error", "message": "m", "code": "{code}"}}"#),
            )
        };
        assert!(matches!(error("202"), Outcome::RecipientRejected { .. }));
        assert!(matches!(error("311"), Outcome::Sent { note: Some(_), .. }));
        assert!(
            matches!(error("418"), Outcome::ProviderFailed { error } if error.starts_with("authentication"))
        );
        assert!(matches!(error("301"), Outcome::ProviderFailed { .. }));
        assert!(matches!(error("506"), Outcome::Retryable { .. }));
        assert!(matches!(
            answer(
                401,
                r#"{"type": "error", "message": "Authentication failure"}"#
            ),
            Outcome::ProviderFailed { .. }
        ));
        assert!(matches!(answer(503, "<html>"), Outcome::Retryable { .. }));
    }
}
