//! Plivo SMS (`plivo`): `POST {base_url}/v1/Account/{auth_id}/Message/`, JSON, Basic auth;
//! success is 202 with `message_uuid` (one per destination).
//!
//! Settings: `auth_id`, `auth_token`; `src` (a number or sender id) or `powerpack_uuid`;
//! optional `status_callback` (`url`, POSTed), `dlt_entity_id`, `dlt_template_id`,
//! `dlt_template_category` (India), `base_url`. The code's remaining life goes as
//! `message_expiry`. Plivo takes no reference or idempotency key.

use super::{
    classify_status, excerpt, json_answer, post_json, required_setting, seconds_left, setting,
    Context, Outcome, Provider,
};
use crate::http::{basic_auth, Response};
use crate::job::Channel;
use crate::render::Message;
use serde::Deserialize;
use serde_json::{json, Map, Value};

const DEFAULT_BASE_URL: &str = "https://api.plivo.com";
const OPTIONAL: &[&str] = &["dlt_entity_id", "dlt_template_id", "dlt_template_category"];

pub struct PlivoProvider {
    url: String,
    authorization: String,
    /// `src` or `powerpack_uuid`, and the optional DLT fields, as sent.
    fixed: Map<String, Value>,
    callback: Option<String>,
}

impl PlivoProvider {
    pub fn from_settings(settings: &Value) -> Result<PlivoProvider, String> {
        let auth_id = required_setting(settings, "auth_id")?;
        if !auth_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("setting \"auth_id\" must be letters and digits".into());
        }
        let base_url = setting(settings, "base_url")?.unwrap_or(DEFAULT_BASE_URL);
        let mut fixed = Map::new();
        match (
            setting(settings, "src")?,
            setting(settings, "powerpack_uuid")?,
        ) {
            (Some(src), None) => fixed.insert("src".into(), json!(src)),
            (None, Some(uuid)) => fixed.insert("powerpack_uuid".into(), json!(uuid)),
            _ => {
                return Err(
                    "exactly one of settings \"src\" and \"powerpack_uuid\" is required".into(),
                )
            }
        };
        for key in OPTIONAL {
            if let Some(value) = setting(settings, key)? {
                fixed.insert((*key).into(), json!(value));
            }
        }
        Ok(PlivoProvider {
            url: format!(
                "{}/v1/Account/{auth_id}/Message/",
                base_url.trim_end_matches('/')
            ),
            authorization: basic_auth(auth_id, required_setting(settings, "auth_token")?),
            fixed,
            callback: setting(settings, "status_callback")?.map(str::to_owned),
        })
    }
}

#[derive(Deserialize)]
struct Queued {
    #[serde(default)]
    message_uuid: Vec<String>,
}

#[derive(Deserialize)]
struct PlivoError {
    error: Value,
}

fn interpret(response: &Response) -> Outcome {
    if (200..300).contains(&response.status) {
        let id = json_answer::<Queued>(response).and_then(|q| q.message_uuid.into_iter().next());
        return Outcome::Sent {
            message_id: id,
            note: None,
        };
    }
    let detail = match json_answer::<PlivoError>(response).map(|e| e.error) {
        Some(Value::String(text)) => text,
        Some(other) => other.to_string(),
        None => response.body.clone(),
    };
    let error = format!("Plivo: {}", excerpt(&detail));
    // Plivo names the refused destination in a 400's text ("… is not a valid phone number").
    let lower = detail.to_ascii_lowercase();
    if response.status == 400 && (lower.contains("dst") || lower.contains("valid phone number")) {
        return Outcome::RecipientRejected { error };
    }
    classify_status(response.status, response.retry_after, &error)
}

impl Provider for PlivoProvider {
    fn delivers_on(&self) -> Option<Channel> {
        Some(Channel::Sms)
    }

    fn send(&self, message: &Message, ctx: &Context) -> Outcome {
        let mut body = self.fixed.clone();
        body.insert("dst".into(), json!(message.to));
        body.insert("text".into(), json!(message.text));
        body.insert("type".into(), json!("sms"));
        if let Some(seconds) = seconds_left(message.expires_at) {
            // Plivo takes 5 to 10,799 seconds.
            body.insert("message_expiry".into(), json!(seconds.clamp(5, 10_799)));
        }
        if let Some(url) = &self.callback {
            body.insert("url".into(), json!(url));
            body.insert("method".into(), json!("POST"));
        }
        let headers = vec![("authorization", self.authorization.clone())];
        post_json(ctx, &self.url, headers, &Value::Object(body), interpret)
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
                202,
                r#"{"message": "message(s) queued", "message_uuid": ["db3ce55a"], "api_id": "a"}"#
            ),
            Outcome::Sent {
                message_id: Some("db3ce55a".into()),
                note: None
            }
        );
        assert!(matches!(
            answer(
                400,
                r#"{"api_id": "a", "error": "'1111111' is not a valid phone number."}"#
            ),
            Outcome::RecipientRejected { .. }
        ));
        assert!(matches!(
            answer(
                400,
                r#"{"api_id": "a", "error": "src parameter not present"}"#
            ),
            Outcome::ProviderFailed { .. }
        ));
        assert!(matches!(
            answer(401, r#"{"api_id": "a", "error": "authentication failed"}"#),
            Outcome::ProviderFailed { error } if error.starts_with("authentication")
        ));
        assert!(matches!(
            answer(429, r#"{"error": "too many requests"}"#),
            Outcome::Retryable { .. }
        ));
    }

    #[test]
    fn settings() {
        let build = |s: Value| PlivoProvider::from_settings(&s);
        assert!(build(json!({"auth_id": "MA1", "auth_token": "t"})).is_err());
        assert!(build(
            json!({"auth_id": "MA1", "auth_token": "t", "src": "a", "powerpack_uuid": "b"})
        )
        .is_err());
        assert!(build(json!({"auth_id": "../x", "auth_token": "t", "src": "a"})).is_err());
        let p = build(
            json!({"auth_id": "MA1", "auth_token": "t", "src": "ACME", "dlt_template_id": "17"}),
        )
        .unwrap();
        assert_eq!(p.url, "https://api.plivo.com/v1/Account/MA1/Message/");
        assert_eq!(
            p.fixed,
            json!({"src": "ACME", "dlt_template_id": "17"})
                .as_object()
                .unwrap()
                .clone()
        );
    }
}
