//! Delivery receipts: what a provider reports after it accepted a message, verified as that
//! provider signs it and read into one shape. Pure: the SQL side (sql/receipts.sql) finds the
//! job and applies the receipt.
//!
//! - Twilio (`twilio`, `twilio_whatsapp`) status callbacks: a form, `X-Twilio-Signature` =
//!   base64 HMAC-SHA1 (auth token) of the URL followed by every parameter, sorted by name.
//! - Resend webhooks, signed by Svix: `svix-id`, `svix-timestamp`, `svix-signature`.
//! - The webhook gateway's callbacks, Standard Webhooks: `webhook-id`, `webhook-timestamp`,
//!   `webhook-signature` (the Svix scheme under other header names), signed with the provider's
//!   own `secret`.

use crate::http::sign_webhook;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

/// Signed callbacks older or newer than this are refused (replays, clocks far apart).
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

/// What a receipt says about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not final: queued, sent to the carrier, delayed, complained about.
    Progress,
    Delivered,
    /// Final: the message will not arrive.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Progress => "progress",
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    /// The provider's id of the message (what the job recorded as provider_message_id).
    pub message_id: String,
    /// The provider's id of this event, when it has one: a replay of it is ignored.
    pub event_id: String,
    /// The provider's own word for the status (`undelivered`, `email.bounced`, …).
    pub status: String,
    pub outcome: Outcome,
    pub error: Option<String>,
}

#[derive(Debug, PartialEq)]
pub enum Refused {
    /// The signature is missing, wrong or stale: not from the provider.
    Forged(String),
    /// Signed correctly but not a receipt this version reads, or the provider's configuration
    /// lacks the secret.
    Unreadable(String),
}

/// A callback as the endpoint received it. Header names are lower case.
pub struct Callback<'a> {
    pub url: &'a str,
    pub headers: &'a HashMap<String, String>,
    pub body: &'a str,
    /// Unix time now.
    pub now: i64,
}

/// Header names in lower case, as `Callback` takes them (HTTP's are case-insensitive).
pub fn header_map<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> HashMap<String, String> {
    headers
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
        .collect()
}

/// Verifies and reads a callback for a provider of `kind` configured with `settings`.
pub fn read(kind: &str, settings: &Value, callback: &Callback) -> Result<Receipt, Refused> {
    let secret = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| settings.get(*k).and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Refused::Unreadable(format!(
                    "the provider's setting {:?} is needed to verify its callbacks",
                    keys[0]
                ))
            })
    };
    match kind {
        "twilio" | "twilio_whatsapp" => {
            let token = secret(&["callback_auth_token", "auth_token"])?;
            verify_twilio(token, callback)?;
            read_twilio(callback.body)
        }
        "resend" => {
            verify_standard(secret(&["webhook_secret"])?, "svix", callback)?;
            read_resend(callback)
        }
        "webhook" => {
            verify_standard(secret(&["secret"])?, "webhook", callback)?;
            read_gateway(callback)
        }
        other => Err(Refused::Unreadable(format!(
            "receipts from {other} providers are not read by this version"
        ))),
    }
}

fn header<'a>(callback: &'a Callback, name: &str) -> Result<&'a str, Refused> {
    callback
        .headers
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| Refused::Forged(format!("header {name} is missing")))
}

/// Twilio's scheme: the URL it called, then each form parameter's name and value, sorted.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    BASE64.encode(mac.finalize().into_bytes())
}

fn form(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

fn verify_twilio(auth_token: &str, callback: &Callback) -> Result<(), Refused> {
    let given = header(callback, "x-twilio-signature")?;
    let expected = twilio_signature(auth_token, callback.url, &form(callback.body));
    if !constant_time_eq(given.trim().as_bytes(), expected.as_bytes()) {
        return Err(Refused::Forged(
            "X-Twilio-Signature does not match (is the URL exactly the one Twilio called?)".into(),
        ));
    }
    Ok(())
}

/// Svix and Standard Webhooks: `{prefix}-id`, `{prefix}-timestamp`, `{prefix}-signature` (one
/// or more space-separated `v1,<base64>`).
fn verify_standard(secret: &str, prefix: &str, callback: &Callback) -> Result<(), Refused> {
    let id = header(callback, &format!("{prefix}-id"))?;
    let timestamp = header(callback, &format!("{prefix}-timestamp"))?;
    let signatures = header(callback, &format!("{prefix}-signature"))?;
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Refused::Forged(format!("{prefix}-timestamp is not a Unix time")))?;
    if (callback.now - at).abs() > TOLERANCE_SECONDS {
        return Err(Refused::Forged(format!(
            "{prefix}-timestamp is {} seconds away from now (at most {TOLERANCE_SECONDS})",
            callback.now - at
        )));
    }
    let expected = sign_webhook(secret, id, at, callback.body.as_bytes())
        .map_err(|e| Refused::Unreadable(format!("the provider's secret: {e}")))?;
    let matches = signatures
        .split_whitespace()
        .any(|given| constant_time_eq(given.as_bytes(), expected.as_bytes()));
    if !matches {
        return Err(Refused::Forged(format!(
            "{prefix}-signature does not match"
        )));
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn read_twilio(body: &str) -> Result<Receipt, Refused> {
    let params: HashMap<String, String> = form(body).into_iter().collect();
    let get = |k: &str| params.get(k).filter(|v| !v.is_empty()).cloned();
    let message_id = get("MessageSid")
        .or_else(|| get("SmsSid"))
        .ok_or_else(|| Refused::Unreadable("no MessageSid: not a status callback".into()))?;
    let status = get("MessageStatus")
        .or_else(|| get("SmsStatus"))
        .ok_or_else(|| Refused::Unreadable("no MessageStatus: not a status callback".into()))?;
    let outcome = match status.as_str() {
        "delivered" | "read" => Outcome::Delivered,
        "undelivered" | "failed" | "canceled" => Outcome::Failed,
        _ => Outcome::Progress,
    };
    let error = get("ErrorCode").map(|code| match get("ErrorMessage") {
        Some(message) => format!("Twilio error {code}: {message}"),
        None => format!("Twilio error {code}"),
    });
    Ok(Receipt {
        event_id: format!("{message_id}/{status}"),
        message_id,
        status,
        outcome,
        error,
    })
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    data: Value,
}

fn event(callback: &Callback, prefix: &str) -> Result<(Event, String), Refused> {
    let event: Event = serde_json::from_str(callback.body)
        .map_err(|e| Refused::Unreadable(format!("the event is not the expected JSON: {e}")))?;
    let id = header(callback, &format!("{prefix}-id"))?.to_owned();
    Ok((event, id))
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn read_resend(callback: &Callback) -> Result<Receipt, Refused> {
    let (event, event_id) = event(callback, "svix")?;
    let message_id = text(&event.data, "/email_id")
        .ok_or_else(|| Refused::Unreadable("no data.email_id: not an email event".into()))?;
    let outcome = match event.kind.as_str() {
        "email.delivered" => Outcome::Delivered,
        "email.bounced" | "email.failed" => Outcome::Failed,
        _ => Outcome::Progress,
    };
    let error = text(&event.data, "/bounce/message")
        .or_else(|| text(&event.data, "/failed/reason"))
        .map(|m| match text(&event.data, "/bounce/type") {
            Some(kind) => format!("{kind} bounce: {m}"),
            None => m,
        });
    Ok(Receipt {
        message_id,
        event_id,
        status: event.kind,
        outcome,
        error,
    })
}

/// The gateway's callback (README, "The webhook wire format"): `{"type": "message.status",
/// "data": {"message_id", "status": "delivered" | "failed" | …, "error"}}`.
fn read_gateway(callback: &Callback) -> Result<Receipt, Refused> {
    let (event, event_id) = event(callback, "webhook")?;
    if event.kind != "message.status" {
        return Err(Refused::Unreadable(format!(
            "event type {:?} is not message.status",
            event.kind
        )));
    }
    let message_id = text(&event.data, "/message_id")
        .ok_or_else(|| Refused::Unreadable("no data.message_id".into()))?;
    let status =
        text(&event.data, "/status").ok_or_else(|| Refused::Unreadable("no data.status".into()))?;
    let outcome = match status.as_str() {
        "delivered" | "read" => Outcome::Delivered,
        "failed" | "undelivered" | "rejected" | "expired" => Outcome::Failed,
        _ => Outcome::Progress,
    };
    Ok(Receipt {
        message_id,
        event_id,
        status,
        outcome,
        error: text(&event.data, "/error"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_767_000_000;

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn twilio_signature_matches_twilios_documented_example() {
        // The example of Twilio's "Validating signatures" page (auth token 12345), as Twilio's own
        // library computes it.
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            twilio_signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    #[test]
    fn twilio_callbacks() {
        let body = "MessageSid=SM1&MessageStatus=undelivered&ErrorCode=30003&To=%2B12125550123";
        let url = "https://hooks.acme.test/receipts/twilio";
        let signature = twilio_signature("token", url, &form(body));
        let settings = json!({"auth_token": "token"});
        let h = headers(&[("x-twilio-signature", &signature)]);
        let callback = Callback {
            url,
            headers: &h,
            body,
            now: NOW,
        };
        let receipt = read("twilio", &settings, &callback).unwrap();
        assert_eq!(
            (
                receipt.message_id.as_str(),
                receipt.outcome,
                receipt.error.as_deref()
            ),
            ("SM1", Outcome::Failed, Some("Twilio error 30003"))
        );
        let tampered = Callback {
            body: "MessageSid=SM1&MessageStatus=delivered&ErrorCode=30003&To=%2B12125550123",
            ..callback
        };
        assert!(matches!(
            read("twilio", &settings, &tampered),
            Err(Refused::Forged(_))
        ));
        let other_url = Callback {
            url: "https://evil.test/",
            ..callback
        };
        assert!(matches!(
            read("twilio", &settings, &other_url),
            Err(Refused::Forged(_))
        ));
        assert!(matches!(
            read("twilio", &json!({"api_key_sid": "SK1"}), &callback),
            Err(Refused::Unreadable(_))
        ));
    }

    fn svix(secret: &str, id: &str, at: i64, body: &str) -> HashMap<String, String> {
        let signature = sign_webhook(secret, id, at, body.as_bytes()).unwrap();
        headers(&[
            ("svix-id", id),
            ("svix-timestamp", &at.to_string()),
            ("svix-signature", &format!("v1,bm90IGl0 {signature}")),
        ])
    }

    #[test]
    fn resend_webhooks() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let settings = json!({"api_key": "re_1", "webhook_secret": secret});
        let body = json!({"type": "email.bounced", "created_at": "2026-11-28T10:00:00Z", "data": {
            "email_id": "4ef9a417", "bounce": {"message": "mailbox does not exist", "type": "Permanent"}}})
        .to_string();
        let h = svix(secret, "msg_1", NOW - 10, &body);
        let callback = Callback {
            url: "",
            headers: &h,
            body: &body,
            now: NOW,
        };
        let receipt = read("resend", &settings, &callback).unwrap();
        assert_eq!(receipt.outcome, Outcome::Failed);
        assert_eq!(receipt.message_id, "4ef9a417");
        assert_eq!(receipt.event_id, "msg_1");
        assert_eq!(
            receipt.error.as_deref(),
            Some("Permanent bounce: mailbox does not exist")
        );
        let stale = Callback {
            now: NOW + 600,
            ..callback
        };
        assert!(
            matches!(read("resend", &settings, &stale), Err(Refused::Forged(e)) if e.contains("seconds"))
        );
        let other = svix("whsec_bm90IHRoZSBzZWNyZXQ=", "msg_1", NOW, &body);
        let forged = Callback {
            headers: &other,
            ..callback
        };
        assert!(matches!(
            read("resend", &settings, &forged),
            Err(Refused::Forged(_))
        ));
    }

    #[test]
    fn gateway_callbacks() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = json!({"type": "message.status", "data": {"message_id": "gw-1", "status": "delivered"}})
            .to_string();
        let signature = sign_webhook(secret, "evt_1", NOW, body.as_bytes()).unwrap();
        let h = headers(&[
            ("webhook-id", "evt_1"),
            ("webhook-timestamp", &NOW.to_string()),
            ("webhook-signature", &signature),
        ]);
        let callback = Callback {
            url: "",
            headers: &h,
            body: &body,
            now: NOW,
        };
        let receipt = read("webhook", &json!({"secret": secret}), &callback).unwrap();
        assert_eq!(
            (receipt.message_id.as_str(), receipt.outcome),
            ("gw-1", Outcome::Delivered)
        );
        assert!(matches!(
            read("vonage", &json!({}), &callback),
            Err(Refused::Unreadable(e)) if e.contains("vonage")
        ));
    }
}
