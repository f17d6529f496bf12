//! Supabase Auth's Send SMS / Send Email hook events, typed, and their validation. Pure.
//!
//! Unknown fields are ignored (Auth adds fields over time); a known field of the wrong type, a
//! missing required field or an unusable value is a [`HookError`], which the hook returns to the
//! auth server as an HTTP 400 error object.

use serde::Deserialize;
use std::fmt;

/// Why an event was refused. Rendered as `{"error": {"http_code": 400, "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookError(pub String);

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! invalid {
    ($($arg:tt)*) => { HookError(format!($($arg)*)) };
}

#[derive(Debug, Default, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub uuid: Option<String>,
    /// The client's address as Auth saw it: what the per-IP limits count.
    #[serde(default)]
    pub ip_address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct User {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub new_email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub user_metadata: Option<crate::job::UserMetadata>,
}

#[derive(Debug, Deserialize)]
pub struct SmsData {
    pub otp: String,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub sms_type: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SmsEvent {
    #[serde(default)]
    pub metadata: Option<Metadata>,
    pub user: User,
    pub sms: SmsData,
}

/// `email_data`: every field is a string, often empty rather than absent.
#[derive(Debug, Default, Deserialize)]
pub struct EmailData {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_hash: Option<String>,
    #[serde(default)]
    pub redirect_to: Option<String>,
    pub email_action_type: String,
    #[serde(default)]
    pub site_url: Option<String>,
    #[serde(default)]
    pub token_new: Option<String>,
    #[serde(default)]
    pub token_hash_new: Option<String>,
    #[serde(default)]
    pub old_email: Option<String>,
    #[serde(default)]
    pub old_phone: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub factor_type: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct EmailEvent {
    #[serde(default)]
    pub metadata: Option<Metadata>,
    pub user: User,
    pub email_data: EmailData,
}

/// Email action types that carry a code or confirmation link.
pub const CODE_ACTIONS: &[&str] = &[
    "signup",
    "invite",
    "magiclink",
    "recovery",
    "email_change",
    "reauthentication",
    "email",
];

/// Email action types that only notify (no code, never expire).
pub const NOTIFICATION_ACTIONS: &[&str] = &[
    "password_changed_notification",
    "email_changed_notification",
    "phone_changed_notification",
    "identity_linked_notification",
    "identity_unlinked_notification",
    "mfa_factor_enrolled_notification",
    "mfa_factor_unenrolled_notification",
];

/// An action type this version has wording for.
pub fn is_known_action(action: &str) -> bool {
    CODE_ACTIONS.contains(&action) || NOTIFICATION_ACTIONS.contains(&action)
}

/// Notifications carry no code; a later Auth release's `*_notification` types included.
pub fn is_notification(action: &str) -> bool {
    NOTIFICATION_ACTIONS.contains(&action) || action.ends_with("_notification")
}

/// Reads the event from its JSON text, with the JSON path of the first problem in the message
/// ("sms.otp: ..."). Only the fields the hook uses are built; the rest is skipped unread, so a
/// document PostgreSQL accepts is never refused for parts the hook does not look at.
pub fn parse<T: for<'de> Deserialize<'de>>(event: &str) -> Result<T, HookError> {
    if !event.trim_start().starts_with('{') {
        return Err(invalid!("event must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_str(event);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            HookError(format!("invalid event: {inner}"))
        } else {
            HookError(format!("invalid event at {path}: {inner}"))
        }
    })
}

/// A present, non-empty string (Auth sends "" for absent values).
pub fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|s| !s.is_empty())
}

/// A phone number as E.164 with the `+`, from Auth's digits-only form or a `+` form.
/// Only shape is checked here; the number plan is checked by routing.
pub fn normalize_phone(raw: &str) -> Result<String, HookError> {
    let digits = raw.strip_prefix('+').unwrap_or(raw);
    let shape_ok = (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if shape_ok {
        Ok(format!("+{digits}"))
    } else {
        Err(invalid!(
            "phone number {:?} is not an international number (E.164: country code and 7 to 15 digits)",
            truncate(raw, 40)
        ))
    }
}

/// A one-time code as Auth generates them: short, letters and digits only.
pub fn validate_code(field: &str, code: &str) -> Result<(), HookError> {
    if code.is_empty() || code.len() > 64 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid!("{field} must be 1 to 64 letters or digits"));
    }
    Ok(())
}

/// A token hash as Auth computes them: hex of SHA-224, possibly prefixed `pkce_`.
pub fn validate_token_hash(field: &str, hash: &str) -> Result<(), HookError> {
    let ok = hash.len() <= 128
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(invalid!("{field} is not a token hash"));
    }
    Ok(())
}

pub fn validate_email(field: &str, address: &str) -> Result<(), HookError> {
    let plain = address.len() <= 254
        && !address
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>' || c == ',');
    if plain && email_address::EmailAddress::is_valid(address) {
        Ok(())
    } else {
        Err(invalid!(
            "{field} {:?} is not a valid email address",
            truncate(address, 80)
        ))
    }
}

/// An email action type: what Auth sends, or a name shaped like one (a later release's type).
pub fn validate_action_type(action: &str) -> Result<(), HookError> {
    let ok = (1..=64).contains(&action.len())
        && action.starts_with(|c: char| c.is_ascii_lowercase())
        && action
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid!(
            "email_data.email_action_type {:?} is not an action type",
            truncate(action, 60)
        ))
    }
}

/// Where Auth sends the user after a link: any URL the project allow-lists, custom schemes of
/// mobile apps (`io.supabase.app://login-callback`) and universal links included. Refused only
/// what would break the link: control characters, whitespace, absurd length, no scheme.
pub fn validate_redirect(field: &str, link: &str) -> Result<(), HookError> {
    let scheme_ok = link.split_once(':').is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let ok = link.len() <= 2048
        && scheme_ok
        && !link.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(invalid!(
            "{field} must be a URL of at most 2048 characters without spaces or control characters"
        ))
    }
}

/// A URL we will put into a link: http(s) only, no control characters.
pub fn validate_url(field: &str, url: &str) -> Result<(), HookError> {
    let lower = url.to_ascii_lowercase();
    let ok = url.len() <= 2048
        && (lower.starts_with("https://") || lower.starts_with("http://"))
        && !url.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(invalid!("{field} must be an http(s) URL"))
    }
}

/// The user's preferred language, if the application stored one in user_metadata.
pub fn locale(user: &User) -> Option<String> {
    user.user_metadata.as_ref()?.locale()
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_the_hook_does_not_read_can_be_anything_postgres_accepts() {
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        let event = format!(
            r#"{{"metadata": {{"uuid": "e1", "x": {deep}, "n": 1e309}},
                 "user": {{"id": "u1", "app_metadata": {deep}, "user_metadata": {{"a": {deep}, "b": 1e309}}}},
                 "sms": {{"otp": "123456", "phone": "15551234567", "extra": 1e309}}}}"#
        );
        let parsed: SmsEvent = parse(&event).unwrap();
        assert_eq!(parsed.sms.otp, "123456");
        assert!(parsed.user.user_metadata.is_some());
    }

    #[test]
    fn wrong_type_names_the_path() {
        let err = parse::<SmsEvent>(r#"{"user": {}, "sms": {"otp": 123456}}"#).unwrap_err();
        assert!(err.0.contains("sms.otp"), "{err}");
    }

    #[test]
    fn missing_section_is_reported() {
        let err = parse::<SmsEvent>(r#"{"user": {}}"#).unwrap_err();
        assert!(err.0.contains("sms"), "{err}");
        let err = parse::<SmsEvent>("[1, 2]").unwrap_err();
        assert_eq!(err.0, "event must be a JSON object");
    }

    #[test]
    fn phones_are_normalized_to_e164() {
        assert_eq!(normalize_phone("525512345678").unwrap(), "+525512345678");
        assert_eq!(normalize_phone("+1333363128").unwrap(), "+1333363128");
        for bad in [
            "",
            "+",
            "12345",
            "0123456789",
            "+1 333 363 128",
            "+1333363128x",
            "1234567890123456",
        ] {
            assert!(normalize_phone(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn codes_and_hashes() {
        assert!(validate_code("sms.otp", "561166").is_ok());
        assert!(validate_code("sms.otp", "").is_err());
        assert!(validate_code("sms.otp", "12 34").is_err());
        assert!(validate_token_hash(
            "h",
            "pkce_7d5b7b1964cf5d388340a7f04f1dbb5eeb6c7b52ef8270e1737a58d0"
        )
        .is_ok());
        assert!(validate_token_hash("h", "abc\r\nX-Injected: 1").is_err());
    }

    #[test]
    fn emails() {
        assert!(validate_email("user.email", "john@soupbase.io").is_ok());
        for bad in [
            "",
            "john",
            "a@b@c",
            "john@soupbase.io\r\nBcc: x@y.z",
            "Jo <j@x.io>",
            "a,b@x.io",
        ] {
            assert!(
                validate_email("user.email", bad).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn redirects_take_what_auth_allow_lists() {
        for ok in [
            "io.supabase.app://login-callback",
            "com.example.app:/oauth2redirect",
            "https://app.example.com/.well-known/apple-app-site-association?x=1",
            "http://localhost:3000/welcome",
            "exp+my-app://expo-development-client/?url=http%3A%2F%2F10.0.2.2%3A8081",
        ] {
            assert!(validate_redirect("r", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "no-scheme",
            "://x",
            "myapp://x y",
            "myapp://x\r\nBcc: a@b.c",
            &format!("myapp://{}", "x".repeat(2050)),
        ] {
            assert!(validate_redirect("r", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls() {
        assert!(validate_url("site_url", "http://localhost:9999").is_ok());
        assert!(validate_url("site_url", "javascript:alert(1)").is_err());
        assert!(validate_url("site_url", "https://x.io/\r\n").is_err());
    }

    #[test]
    fn locale_from_metadata() {
        let user: User = serde_json::from_str(r#"{"user_metadata": {"locale": "es"}}"#).unwrap();
        assert_eq!(locale(&user).as_deref(), Some("es"));
        let user: User = serde_json::from_str(r#"{"user_metadata": {"locale": 5}}"#).unwrap();
        assert_eq!(locale(&user), None);
    }
}
