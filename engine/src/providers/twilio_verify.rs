//! Twilio Verify with the code Auth generated (`twilio_verify`): `POST {base_url}/v2/Services/
//! {ServiceSid}/Verifications` with `CustomCode`, so Verify's delivery (and its fraud checks)
//! carry the code Auth will check. Verify writes the text from its own template: mysmshook's
//! templates do not apply. The service needs "custom verification codes" turned on
//! (`CustomCodeEnabled`), or every request fails with 60204.
//!
//! Settings: `account_sid`; `auth_token`, or `api_key_sid` + `api_key_secret`; `service_sid`;
//! optional `locale` (default: the message's language), `base_url`.

use super::twilio::{check_sid, credentials, interpret_with};
use super::{code_of, post_form, required_setting, setting, Context, Outcome, Provider};
use crate::http::Response;
use crate::job::Channel;
use crate::render::Message;
use serde_json::Value;

const DEFAULT_BASE_URL: &str = "https://verify.twilio.com";

pub struct TwilioVerifyProvider {
    url: String,
    authorization: String,
    locale: Option<String>,
}

impl TwilioVerifyProvider {
    pub fn from_settings(settings: &Value) -> Result<TwilioVerifyProvider, String> {
        let (_, authorization) = credentials(settings)?;
        check_sid(settings, "service_sid", "VA")?;
        let base_url = setting(settings, "base_url")?.unwrap_or(DEFAULT_BASE_URL);
        Ok(TwilioVerifyProvider {
            url: format!(
                "{}/v2/Services/{}/Verifications",
                base_url.trim_end_matches('/'),
                required_setting(settings, "service_sid")?
            ),
            authorization,
            locale: setting(settings, "locale")?.map(str::to_owned),
        })
    }
}

fn interpret(response: &Response) -> Outcome {
    interpret_with(response, |code, text, response| match code {
        // The number is invalid, or a landline.
        60200 if text.contains("To") => Some(Outcome::RecipientRejected { error: text }),
        60006 | 60205 => Some(Outcome::RecipientRejected { error: text }),
        60204 => Some(Outcome::ProviderFailed {
            error: format!("{text}: turn on custom verification codes on the Verify service"),
        }),
        // Too many concurrent requests for this number.
        60212 => Some(Outcome::Retryable {
            error: text,
            retry_after: response.retry_after,
        }),
        // Five sends in ten minutes, Fraud Guard blocked the prefix, geo permissions: Verify
        // will not send it for a while (a retry would outlive the code); the chain's next
        // provider may.
        60203 | 60410 | 60605 => Some(Outcome::ProviderFailed { error: text }),
        _ => None,
    })
}

impl Provider for TwilioVerifyProvider {
    fn delivers_on(&self) -> Option<Channel> {
        Some(Channel::Sms)
    }

    fn send(&self, message: &Message, ctx: &Context) -> Outcome {
        let Some(code) = code_of(message) else {
            return Outcome::ProviderFailed {
                error: "twilio_verify sends codes: this message carries none".into(),
            };
        };
        let locale = self.locale.as_deref().unwrap_or(&message.language);
        let pairs = [
            ("To", message.to.as_str()),
            ("Channel", "sms"),
            ("CustomCode", code),
            ("Locale", locale),
        ];
        let headers = vec![("authorization", self.authorization.clone())];
        post_form(ctx, &self.url, headers, &pairs, interpret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Outcome {
        super::super::answer(interpret, status, body)
    }

    fn error(status: u16, code: i64, message: &str) -> Outcome {
        answer(
            status,
            &format!(
                r#"{{"code": {code}, "message": "{message}", "more_info": "", "status": {status}}}"#
            ),
        )
    }

    #[test]
    fn answers() {
        assert_eq!(
            answer(201, r#"{"sid": "VE123", "status": "pending"}"#),
            Outcome::Sent {
                message_id: Some("VE123".into()),
                note: None
            }
        );
        assert!(matches!(
            error(400, 60200, "Invalid parameter: To"),
            Outcome::RecipientRejected { .. }
        ));
        assert!(matches!(
            error(400, 60200, "Invalid parameter: CustomCode"),
            Outcome::ProviderFailed { .. }
        ));
        assert!(matches!(
            error(403, 60205, "SMS is not supported by landline phone number"),
            Outcome::RecipientRejected { .. }
        ));
        assert!(
            matches!(error(403, 60204, "Service does not support this feature"), Outcome::ProviderFailed { error } if error.contains("custom verification codes"))
        );
        assert!(matches!(
            error(429, 60203, "Max send attempts reached"),
            Outcome::ProviderFailed { .. }
        ));
        assert!(matches!(
            error(429, 60212, "Too many concurrent requests"),
            Outcome::Retryable { .. }
        ));
        assert!(
            matches!(error(401, 20003, "Authenticate"), Outcome::ProviderFailed { error } if error.starts_with("authentication"))
        );
    }

    #[test]
    fn settings() {
        let sid = "AC0123456789abcdef0123456789abcdef";
        let service = "VA0123456789abcdef0123456789abcdef";
        assert!(TwilioVerifyProvider::from_settings(
            &serde_json::json!({"account_sid": sid, "auth_token": "t"})
        )
        .is_err());
        assert!(TwilioVerifyProvider::from_settings(
            &serde_json::json!({"account_sid": sid, "auth_token": "t", "service_sid": "VA1"})
        )
        .is_err());
        let p = TwilioVerifyProvider::from_settings(
            &serde_json::json!({"account_sid": sid, "auth_token": "t", "service_sid": service}),
        )
        .unwrap();
        assert_eq!(
            p.url,
            format!("https://verify.twilio.com/v2/Services/{service}/Verifications")
        );
    }
}
