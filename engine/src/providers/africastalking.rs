//! Africa's Talking SMS (`africastalking`): `POST {base_url}/version1/messaging`, a form, header
//! `apiKey`; success is 201 with a per-recipient `statusCode` (100–102 accepted).
//!
//! Settings: `username`, `api_key`; optional `from` (a registered sender id or short code),
//! `base_url` (default the live API, or the sandbox's when `username` is `sandbox`). Africa's
//! Talking takes no reference or idempotency key for SMS.

use super::{
    excerpt, json_answer, post_form, required_setting, setting, unreadable, Context, Outcome,
    Provider,
};
use crate::http::Response;
use crate::job::Channel;
use crate::render::Message;
use serde::Deserialize;
use serde_json::Value;

pub struct AfricasTalkingProvider {
    url: String,
    username: String,
    api_key: String,
    from: Option<String>,
}

impl AfricasTalkingProvider {
    pub fn from_settings(settings: &Value) -> Result<AfricasTalkingProvider, String> {
        let username = required_setting(settings, "username")?;
        let base_url = setting(settings, "base_url")?.unwrap_or(match username {
            "sandbox" => "https://api.sandbox.africastalking.com",
            _ => "https://api.africastalking.com",
        });
        Ok(AfricasTalkingProvider {
            url: format!("{}/version1/messaging", base_url.trim_end_matches('/')),
            username: username.to_owned(),
            api_key: required_setting(settings, "api_key")?.to_owned(),
            from: setting(settings, "from")?.map(str::to_owned),
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    #[serde(rename = "SMSMessageData")]
    data: MessageData,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MessageData {
    message: Option<String>,
    #[serde(default)]
    recipients: Vec<Recipient>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recipient {
    status_code: i64,
    status: Option<String>,
    message_id: Option<String>,
}

fn interpret(response: &Response) -> Outcome {
    let answer = match json_answer::<Answer>(response) {
        Some(answer) if (200..300).contains(&response.status) => answer,
        // 401 comes as plain text ("The supplied authentication is invalid").
        _ => return unreadable(response),
    };
    let Some(recipient) = answer.data.recipients.first() else {
        // The whole request was refused (an unknown sender id, say): the reason is in Message.
        return Outcome::ProviderFailed {
            error: format!(
                "Africa's Talking: {}",
                excerpt(
                    answer
                        .data
                        .message
                        .as_deref()
                        .unwrap_or("no recipient accepted")
                )
            ),
        };
    };
    let error = format!(
        "Africa's Talking status {} {}",
        recipient.status_code,
        excerpt(recipient.status.as_deref().unwrap_or_default())
    );
    match recipient.status_code {
        // Processed, sent, queued.
        100..=102 => Outcome::Sent {
            message_id: recipient.message_id.clone(),
            note: None,
        },
        // Invalid number, unsupported number type, blacklisted, do-not-disturb.
        403 | 404 | 406 | 409 => Outcome::RecipientRejected { error },
        // Internal server error, gateway error.
        500 | 501 => Outcome::Retryable {
            error,
            retry_after: None,
        },
        // Risk hold, invalid sender id, insufficient balance, could not route, rejected.
        _ => Outcome::ProviderFailed { error },
    }
}

impl Provider for AfricasTalkingProvider {
    fn delivers_on(&self) -> Option<Channel> {
        Some(Channel::Sms)
    }

    fn send(&self, message: &Message, ctx: &Context) -> Outcome {
        let mut pairs = vec![
            ("username", self.username.as_str()),
            ("to", message.to.as_str()),
            ("message", message.text.as_str()),
        ];
        if let Some(from) = &self.from {
            pairs.push(("from", from));
        }
        let headers = vec![
            ("apikey", self.api_key.clone()),
            ("accept", "application/json".to_owned()),
        ];
        post_form(ctx, &self.url, headers, &pairs, interpret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Outcome {
        super::super::answer(interpret, status, body)
    }

    fn recipient(code: i64) -> Outcome {
        answer(
            201,
            &format!(
                r#"{{"SMSMessageData": {{"Message": "Sent to 1/1", "Recipients": [{{"statusCode": {code}, "number": "+254711000000", "status": "S", "cost": "KES 0.8", "messageId": "ATXid_1"}}]}}}}"#
            ),
        )
    }

    #[test]
    fn answers() {
        assert_eq!(
            recipient(101),
            Outcome::Sent {
                message_id: Some("ATXid_1".into()),
                note: None
            }
        );
        assert!(matches!(recipient(102), Outcome::Sent { .. }));
        assert!(matches!(recipient(403), Outcome::RecipientRejected { .. }));
        assert!(matches!(recipient(406), Outcome::RecipientRejected { .. }));
        assert!(matches!(recipient(405), Outcome::ProviderFailed { .. }));
        assert!(matches!(recipient(500), Outcome::Retryable { .. }));
        assert!(matches!(
            answer(201, r#"{"SMSMessageData": {"Message": "InvalidSenderId", "Recipients": []}}"#),
            Outcome::ProviderFailed { error } if error.contains("InvalidSenderId")
        ));
        assert!(matches!(
            answer(401, "The supplied authentication is invalid"),
            Outcome::ProviderFailed { error } if error.starts_with("authentication")
        ));
    }

    #[test]
    fn sandbox_host() {
        let p = AfricasTalkingProvider::from_settings(
            &serde_json::json!({"username": "sandbox", "api_key": "k"}),
        )
        .unwrap();
        assert_eq!(
            p.url,
            "https://api.sandbox.africastalking.com/version1/messaging"
        );
    }
}
