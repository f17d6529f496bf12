//! MessageBird SMS (`messagebird`, Supabase Auth's built-in): `POST {base_url}/messages`, JSON,
//! `Authorization: AccessKey …`; success is 201 with the message `id`.
//!
//! Settings: `access_key`, `originator`; optional `status_callback` (`reportUrl`), `base_url`.
//! The job id goes as `reference` (MessageBird sends status reports only for messages that have
//! one; it does not deduplicate), the code's remaining life as `validity`.

use super::{
    classify_status, excerpt, international_digits, json_answer, post_json, required_setting,
    seconds_left, setting, unreadable, Context, Outcome, Provider,
};
use crate::http::Response;
use crate::job::Channel;
use crate::render::Message;
use serde::Deserialize;
use serde_json::{json, Value};

const DEFAULT_BASE_URL: &str = "https://rest.messagebird.com";

pub struct MessageBirdProvider {
    url: String,
    authorization: String,
    originator: String,
    report_url: Option<String>,
}

impl MessageBirdProvider {
    pub fn from_settings(settings: &Value) -> Result<MessageBirdProvider, String> {
        let base_url = setting(settings, "base_url")?.unwrap_or(DEFAULT_BASE_URL);
        Ok(MessageBirdProvider {
            url: format!("{}/messages", base_url.trim_end_matches('/')),
            authorization: format!("AccessKey {}", required_setting(settings, "access_key")?),
            originator: required_setting(settings, "originator")?.to_owned(),
            report_url: setting(settings, "status_callback")?.map(str::to_owned),
        })
    }
}

#[derive(Deserialize)]
struct Created {
    id: Option<String>,
    recipients: Option<Recipients>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recipients {
    total_sent_count: Option<u64>,
}

#[derive(Deserialize)]
struct Errors {
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
struct ErrorItem {
    code: Option<i64>,
    description: Option<String>,
    parameter: Option<String>,
}

fn interpret(response: &Response) -> Outcome {
    if (200..300).contains(&response.status) {
        let created = json_answer::<Created>(response);
        let sent_count = created
            .as_ref()
            .and_then(|c| c.recipients.as_ref())
            .and_then(|r| r.total_sent_count);
        if sent_count == Some(0) {
            return Outcome::RecipientRejected {
                error: "MessageBird accepted the request but sent to no recipient".into(),
            };
        }
        return Outcome::Sent {
            message_id: created.and_then(|c| c.id),
            note: None,
        };
    }
    let Some(first) = json_answer::<Errors>(response).and_then(|e| e.errors.into_iter().next())
    else {
        return unreadable(response);
    };
    let code = first.code.unwrap_or_default();
    let parameter = first.parameter.unwrap_or_default();
    let error = format!(
        "MessageBird error {code}: {} ({parameter})",
        excerpt(first.description.as_deref().unwrap_or_default())
    );
    match code {
        2 => Outcome::ProviderFailed {
            error: format!("authentication failed: {error}"),
        },
        // "no (correct) recipients found"
        9 | 10 if parameter.starts_with("recipient") => Outcome::RecipientRejected { error },
        // Not enough balance, an originator refused, any other request error.
        _ => classify_status(response.status, response.retry_after, &error),
    }
}

impl Provider for MessageBirdProvider {
    fn delivers_on(&self) -> Option<Channel> {
        Some(Channel::Sms)
    }

    fn send(&self, message: &Message, ctx: &Context) -> Outcome {
        let mut body = json!({
            "originator": self.originator,
            "recipients": [international_digits(&message.to)],
            "body": message.text,
            "reference": ctx.job_id,
            // GSM-7 when the text allows it, UCS-2 otherwise (not always UCS-2 as Auth does).
            "datacoding": "auto",
        });
        if let Some(seconds) = seconds_left(message.expires_at) {
            body["validity"] = json!(seconds);
        }
        if let Some(url) = &self.report_url {
            body["reportUrl"] = json!(url);
        }
        let headers = vec![("authorization", self.authorization.clone())];
        post_json(ctx, &self.url, headers, &body, interpret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Outcome {
        super::super::answer(interpret, status, body)
    }

    fn error(status: u16, code: i64, parameter: &str) -> Outcome {
        answer(
            status,
            &format!(
                r#"{{"errors": [{{"code": {code}, "description": "d", "parameter": "{parameter}"}}]}}"#
            ),
        )
    }

    #[test]
    fn answers() {
        assert_eq!(
            answer(
                201,
                r#"{"id": "c3cd", "recipients": {"totalCount": 1, "totalSentCount": 1}}"#
            ),
            Outcome::Sent {
                message_id: Some("c3cd".into()),
                note: None
            }
        );
        assert!(matches!(
            answer(
                201,
                r#"{"id": "c3cd", "recipients": {"totalCount": 1, "totalSentCount": 0}}"#
            ),
            Outcome::RecipientRejected { .. }
        ));
        assert!(
            matches!(error(401, 2, "access_key"), Outcome::ProviderFailed { error } if error.starts_with("authentication"))
        );
        assert!(matches!(
            error(422, 9, "recipient"),
            Outcome::RecipientRejected { .. }
        ));
        assert!(matches!(
            error(422, 10, "originator"),
            Outcome::ProviderFailed { .. }
        ));
        assert!(matches!(error(422, 25, ""), Outcome::ProviderFailed { .. }));
        assert!(matches!(error(500, 99, ""), Outcome::Retryable { .. }));
        assert!(matches!(answer(503, "<html>"), Outcome::Retryable { .. }));
    }
}
