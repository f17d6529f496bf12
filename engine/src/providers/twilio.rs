//! Twilio Programmable Messaging: kinds `twilio` (SMS) and `twilio_whatsapp`. Both POST the same
//! form to `{base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json`; WhatsApp differs only in
//! `whatsapp:` addressing and in approved content templates (`ContentSid` + `ContentVariables`),
//! which WhatsApp requires outside a 24-hour conversation window.
//!
//! Settings: `account_sid`; `auth_token`, or `api_key_sid` + `api_key_secret`; `from` or
//! `messaging_service_sid`; optional `status_callback`, `validity_period` (seconds), `base_url`;
//! WhatsApp only: `content_sid` and `content_variables` (an object whose values are templates,
//! default `{"1": "{{ code }}"}`).

use super::{
    classify_status, excerpt, exchange, required_setting, setting, unreadable, Context, Outcome,
    Provider,
};
use crate::http::{basic_auth, Response};
use crate::job::Channel;
use crate::render::Message;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::time::SystemTime;

const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// Twilio error codes that mean the recipient itself is unusable: no other provider will do
/// better, so the job fails at once.
const RECIPIENT_ERRORS: &[i64] = &[
    21211, // invalid 'To' phone number
    21217, // phone number does not appear to be valid
    21401, // invalid phone number
    21421, // PhoneNumber is invalid
    21610, // recipient unsubscribed (replied STOP)
    21614, // 'To' number is not a valid mobile number
];

/// Twilio error codes that mean the number cannot be reached on WhatsApp, not that the number is
/// unusable: an SMS provider later in the chain gets its turn.
const WHATSAPP_RECIPIENT_ERRORS: &[i64] = &[
    63003, // the channel could not find the To address
    63024, // invalid message recipient (not a WhatsApp user)
];

enum Sender {
    From(String),
    MessagingService(String),
}

struct ContentTemplate {
    sid: String,
    variables: Map<String, Value>,
}

pub struct TwilioProvider {
    whatsapp: bool,
    messages_url: String,
    authorization: String,
    sender: Sender,
    status_callback: Option<String>,
    validity_period: Option<u64>,
    content: Option<ContentTemplate>,
}

/// `account_sid` and Basic authorization from `auth_token`, or `api_key_sid` + `api_key_secret`:
/// the same for Programmable Messaging and Verify.
pub(super) fn credentials(settings: &Value) -> Result<(&str, String), String> {
    let account_sid = required_setting(settings, "account_sid")?;
    check_sid(settings, "account_sid", "AC")?;
    let authorization = match (
        setting(settings, "api_key_sid")?,
        setting(settings, "api_key_secret")?,
    ) {
        (Some(key), Some(secret)) => basic_auth(key, secret),
        (None, None) => basic_auth(account_sid, required_setting(settings, "auth_token")?),
        _ => return Err("settings \"api_key_sid\" and \"api_key_secret\" go together".into()),
    };
    Ok((account_sid, authorization))
}

/// A Twilio SID setting: its two-letter prefix and 32 hex digits (the API descriptions' pattern).
pub(super) fn check_sid(settings: &Value, key: &str, prefix: &str) -> Result<(), String> {
    let sid = required_setting(settings, key)?;
    let hex = sid.strip_prefix(prefix).unwrap_or_default();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "setting {key:?} must be {prefix} followed by 32 hexadecimal digits"
        ));
    }
    Ok(())
}

impl TwilioProvider {
    pub fn from_settings(settings: &Value, whatsapp: bool) -> Result<TwilioProvider, String> {
        let (account_sid, authorization) = credentials(settings)?;
        let sender =
            match (
                setting(settings, "from")?,
                setting(settings, "messaging_service_sid")?,
            ) {
                (Some(from), None) => Sender::From(from.to_owned()),
                (None, Some(service)) => Sender::MessagingService(service.to_owned()),
                _ => return Err(
                    "exactly one of settings \"from\" and \"messaging_service_sid\" is required"
                        .into(),
                ),
            };
        let validity_period = match settings.get("validity_period") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|s| (1..=36_000).contains(s))
                    .ok_or("setting \"validity_period\" must be 1 to 36000 seconds")?,
            ),
        };
        let content = match setting(settings, "content_sid")? {
            None => None,
            Some(_) if !whatsapp => return Err("content templates are for twilio_whatsapp".into()),
            Some(sid) => Some(ContentTemplate {
                sid: sid.to_owned(),
                variables: match settings.get("content_variables") {
                    None | Some(Value::Null) => {
                        Map::from_iter([("1".to_owned(), Value::from("{{ code }}"))])
                    }
                    Some(Value::Object(map)) if map.values().all(Value::is_string) => map.clone(),
                    Some(_) => {
                        return Err(
                            "setting \"content_variables\" must be an object of strings".into()
                        )
                    }
                },
            }),
        };
        if let Some(content) = &content {
            for template in content.variables.values().filter_map(Value::as_str) {
                crate::render::check_source(template)?;
            }
        }
        let base_url = setting(settings, "base_url")?.unwrap_or(DEFAULT_BASE_URL);
        Ok(TwilioProvider {
            whatsapp,
            messages_url: format!(
                "{}/2010-04-01/Accounts/{account_sid}/Messages.json",
                base_url.trim_end_matches('/')
            ),
            authorization,
            sender,
            status_callback: setting(settings, "status_callback")?.map(str::to_owned),
            validity_period,
            content,
        })
    }

    fn address(&self, number: &str) -> String {
        match self.whatsapp && !number.starts_with("whatsapp:") {
            true => format!("whatsapp:{number}"),
            false => number.to_owned(),
        }
    }

    fn form(&self, message: &Message) -> Result<String, String> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("To", &self.address(&message.to));
        match &self.sender {
            Sender::From(from) => form.append_pair("From", &self.address(from)),
            Sender::MessagingService(sid) => form.append_pair("MessagingServiceSid", sid),
        };
        match &self.content {
            Some(content) => {
                let mut variables = Map::new();
                for (key, template) in &content.variables {
                    let value = crate::render::render_fragment(
                        template.as_str().unwrap_or(""),
                        &message.variables,
                    )?;
                    variables.insert(key.clone(), Value::from(value));
                }
                form.append_pair("ContentSid", &content.sid);
                form.append_pair("ContentVariables", &Value::Object(variables).to_string());
            }
            None => {
                form.append_pair("Body", &message.text);
            }
        }
        if let Some(callback) = &self.status_callback {
            form.append_pair("StatusCallback", callback);
        }
        if let Some(seconds) = validity_period(self.validity_period, message.expires_at) {
            form.append_pair("ValidityPeriod", &seconds.to_string());
        }
        Ok(form.finish())
    }
}

/// How long Twilio may keep the message queued: what is left of the code's life (Twilio drops
/// a message still queued after that, so a late code is never delivered), or the configured
/// period if shorter. Twilio takes 1 to 36000 seconds.
fn validity_period(configured: Option<u64>, expires_at: Option<SystemTime>) -> Option<u64> {
    let remaining = super::seconds_left(expires_at);
    let seconds = match (configured, remaining) {
        (Some(c), Some(r)) => c.min(r),
        (c, r) => c.or(r)?,
    };
    Some(seconds.clamp(1, 36_000))
}

#[derive(Deserialize)]
struct Created {
    sid: String,
}

#[derive(Deserialize)]
struct TwilioError {
    code: Option<i64>,
    message: Option<String>,
    more_info: Option<String>,
}

fn interpret(response: &Response) -> Outcome {
    interpret_with(response, |code, text, response| match code {
        c if RECIPIENT_ERRORS.contains(&c) => Some(Outcome::RecipientRejected { error: text }),
        c if WHATSAPP_RECIPIENT_ERRORS.contains(&c) => {
            Some(Outcome::ChannelRejected { error: text })
        }
        20429 => Some(Outcome::Retryable {
            error: text,
            retry_after: response.retry_after,
        }),
        _ => None,
    })
}

/// Reads an answer in Twilio's format: 2xx with a `sid`, or an error object whose code
/// `classify` may map; what it leaves goes by the HTTP status. Shared with Verify.
pub(super) fn interpret_with(
    response: &Response,
    classify: impl Fn(i64, String, &Response) -> Option<Outcome>,
) -> Outcome {
    if (200..300).contains(&response.status) {
        // Accepted but unreadable is still accepted: retrying would send it twice.
        let id = super::json_answer::<Created>(response).map(|created| created.sid);
        return Outcome::Sent {
            message_id: id,
            note: None,
        };
    }
    let Some(error) = super::json_answer::<TwilioError>(response) else {
        return unreadable(response);
    };
    let code = error.code.unwrap_or_default();
    let mut text = format!(
        "Twilio error {code}: {}",
        excerpt(error.message.as_deref().unwrap_or(""))
    );
    if let Some(info) = error.more_info.as_deref().filter(|i| !i.is_empty()) {
        text = format!("{text} ({})", excerpt(info));
    }
    if code == 20003 {
        return Outcome::ProviderFailed {
            error: format!("authentication failed: {text}"),
        };
    }
    classify(code, text.clone(), response)
        .unwrap_or_else(|| classify_status(response.status, response.retry_after, &text))
}

impl Provider for TwilioProvider {
    fn delivers_on(&self) -> Option<Channel> {
        Some(if self.whatsapp {
            Channel::WhatsApp
        } else {
            Channel::Sms
        })
    }

    fn reports_receipts(&self) -> bool {
        self.status_callback.is_some()
    }

    fn send(&self, message: &Message, ctx: &Context) -> Outcome {
        let form = match self.form(message) {
            Ok(form) => form,
            Err(error) => return Outcome::ProviderFailed { error },
        };
        let headers = [
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("authorization", self.authorization.clone()),
        ];
        exchange(
            ctx,
            &self.messages_url,
            &headers,
            form.as_bytes(),
            interpret,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";

    fn message() -> Message {
        Message {
            to: "+525512345678".into(),
            subject: None,
            text: "Your code is 123456".into(),
            html: None,
            template_name: "sms_sms".into(),
            language: "en".into(),
            variables: json!({"code": "123456"}),
            sms: None,
            warnings: vec![],
            expires_at: None,
        }
    }

    #[test]
    fn validity_period_is_the_codes_remaining_life() {
        use std::time::Duration;
        let in_secs = |s: u64| Some(SystemTime::now() + Duration::from_millis(s * 1000 - 300));
        assert_eq!(validity_period(None, None), None);
        assert_eq!(validity_period(Some(600), None), Some(600));
        assert_eq!(validity_period(None, in_secs(42)), Some(42));
        assert_eq!(validity_period(Some(30), in_secs(42)), Some(30));
        let past = Some(SystemTime::now() - Duration::from_secs(5));
        assert_eq!(validity_period(None, past), Some(1));
        assert_eq!(validity_period(None, in_secs(100_000)), Some(36_000));
    }

    fn decoded(form: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(form.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn sms_form_and_auth() {
        let p = TwilioProvider::from_settings(
            &json!({"account_sid": SID, "auth_token": "tok", "from": "+15005550006", "validity_period": 600}),
            false,
        )
        .unwrap();
        assert_eq!(
            p.messages_url,
            format!("https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages.json")
        );
        assert_eq!(p.authorization, basic_auth(SID, "tok"));
        assert_eq!(
            decoded(&p.form(&message()).unwrap()),
            [
                ("To", "+525512345678"),
                ("From", "+15005550006"),
                ("Body", "Your code is 123456"),
                ("ValidityPeriod", "600")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn whatsapp_content_template() {
        let p = TwilioProvider::from_settings(
            &json!({"account_sid": SID, "api_key_sid": "SK1", "api_key_secret": "s", "messaging_service_sid": "MG1",
                    "content_sid": "HX1", "content_variables": {"1": "{{ code }}", "2": "10"}}),
            true,
        )
        .unwrap();
        assert_eq!(p.authorization, basic_auth("SK1", "s"));
        let form = decoded(&p.form(&message()).unwrap());
        assert_eq!(form[0], ("To".into(), "whatsapp:+525512345678".into()));
        assert_eq!(form[1], ("MessagingServiceSid".into(), "MG1".into()));
        assert_eq!(form[2], ("ContentSid".into(), "HX1".into()));
        let vars: Value = serde_json::from_str(&form[3].1).unwrap();
        assert_eq!(vars, json!({"1": "123456", "2": "10"}));
        assert!(!form.iter().any(|(k, _)| k == "Body"));
    }

    #[test]
    fn settings_errors() {
        for (settings, whatsapp) in [
            (json!({"auth_token": "t", "from": "+1"}), false),
            (json!({"account_sid": SID, "from": "+1"}), false),
            (json!({"account_sid": SID, "auth_token": "t"}), false),
            (
                json!({"account_sid": SID, "auth_token": "t", "from": "+1", "messaging_service_sid": "MG"}),
                false,
            ),
            (
                json!({"account_sid": SID, "auth_token": "t", "from": "+1", "content_sid": "HX"}),
                false,
            ),
            (
                json!({"account_sid": SID, "auth_token": "t", "from": "+1", "content_sid": "HX", "content_variables": {"1": "{{"}}),
                true,
            ),
            (
                json!({"account_sid": "AC/../x", "auth_token": "t", "from": "+1"}),
                false,
            ),
        ] {
            assert!(
                TwilioProvider::from_settings(&settings, whatsapp).is_err(),
                "{settings}"
            );
        }
    }

    fn answer(status: u16, body: &str) -> Outcome {
        super::super::answer(interpret, status, body)
    }

    #[test]
    fn error_mapping() {
        assert_eq!(
            answer(201, r#"{"sid": "SM1", "status": "queued"}"#),
            Outcome::Sent {
                message_id: Some("SM1".into()),
                note: None
            }
        );
        let err = |code: i64, status: u16| {
            answer(
                status,
                &format!(
                    r#"{{"code": {code}, "message": "m", "more_info": "https://www.twilio.com/docs/errors/{code}", "status": {status}}}"#
                ),
            )
        };
        assert!(matches!(err(21211, 400), Outcome::RecipientRejected { .. }));
        assert!(matches!(err(21610, 400), Outcome::RecipientRejected { .. }));
        assert!(
            matches!(err(20003, 401), Outcome::ProviderFailed { error } if error.starts_with("authentication failed"))
        );
        assert!(matches!(
            err(20429, 429),
            Outcome::Retryable {
                retry_after: Some(_),
                ..
            }
        ));
        assert!(matches!(err(20500, 500), Outcome::Retryable { .. }));
        assert!(matches!(err(21408, 400), Outcome::ProviderFailed { .. }));
        assert!(matches!(
            answer(503, "<html>down</html>"),
            Outcome::Retryable { .. }
        ));
    }
}
