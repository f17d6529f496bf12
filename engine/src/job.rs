//! The job payload stored in `job_queue.job_data`: everything rendering and delivery need, and
//! nothing more. Pure.

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Sms,
    WhatsApp,
    Email,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::WhatsApp => "whatsapp",
            Channel::Email => "email",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        match s {
            "sms" => Some(Channel::Sms),
            "whatsapp" => Some(Channel::WhatsApp),
            "email" => Some(Channel::Email),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobData {
    /// E.164 phone number with `+`, or an email address.
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<String>,
    /// The user's current email address (the recipient may be the new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The hook event's metadata.uuid, for correlating with the auth server's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<UserMetadata>,
    /// The destination's region (CLDR), for SMS: kept when the job is scrubbed, so that the
    /// queue's history can suggest a geo allow-list (sql/defence.sql).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Providers a receipt-driven resend skips: they were tried, one of them took the message
    /// and reported it undelivered (sql/receipts.sql).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_providers: Vec<String>,
}

/// The user's `user_metadata`, kept as the JSON text it came in: the application's own data,
/// which may nest deeper or hold larger numbers than a `serde_json::Value` takes. Only what is
/// used is read from it: the preferred language, and the whole of it for templates (`data`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserMetadata(Box<RawValue>);

impl PartialEq for UserMetadata {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl UserMetadata {
    pub fn from_value(value: &Value) -> UserMetadata {
        UserMetadata(RawValue::from_string(value.to_string()).expect("a Value is valid JSON"))
    }

    /// For templates; None when it cannot be read as a value (too deep, a number out of range).
    pub fn to_value(&self) -> Option<Value> {
        serde_json::from_str(self.0.get()).ok()
    }

    /// The first of `locale`, `language`, `lang`, `i18n` that holds a short string.
    pub fn locale(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Keys {
            locale: Option<Text>,
            language: Option<Text>,
            lang: Option<Text>,
            i18n: Option<Text>,
        }
        let keys: Keys = serde_json::from_str(self.0.get()).ok()?;
        [keys.locale, keys.language, keys.lang, keys.i18n]
            .into_iter()
            .flatten()
            .find_map(|t| t.0.filter(|s| !s.is_empty() && s.len() <= 35))
    }
}

/// A string, or anything else skipped without being built (so no depth or number limits apply).
struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, s: &str) -> Result<Text, E> {
                Ok(Text(Some(s.to_owned())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_unit<E>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

impl JobData {
    /// What stays in `job_data` once a job is final: enough to debug, no code, token, link or
    /// full address.
    pub fn scrubbed(&self) -> Value {
        json!({
            "to": mask_recipient(&self.to),
            "user_id": self.user_id,
            "event_id": self.event_id,
            "region": self.region,
            "scrubbed": true,
        })
    }
}

/// `+52******5678`, `j***@soupbase.io`.
pub fn mask_recipient(to: &str) -> String {
    if let Some((local, domain)) = to.rsplit_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = to.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    // Country code and last digits stay readable; at least three characters are always hidden.
    let (keep_head, keep_tail) = if chars.len() >= 10 { (3, 4) } else { (1, 2) };
    let head: String = chars[..keep_head].iter().collect();
    let tail: String = chars[chars.len() - keep_tail..].iter().collect();
    format!(
        "{head}{}{tail}",
        "*".repeat(chars.len() - keep_head - keep_tail)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_phones_and_emails() {
        assert_eq!(mask_recipient("+525512345678"), "+52******5678");
        assert_eq!(mask_recipient("john@soupbase.io"), "j***@soupbase.io");
        assert_eq!(mask_recipient("12345"), "*****");
        assert_eq!(mask_recipient("1234567"), "1****67");
    }

    #[test]
    fn metadata_of_any_depth_and_number_passes_through() {
        let deep = format!("{}1e309{}", "[".repeat(5000), "]".repeat(5000));
        let text = format!(r#"{{"locale": "es-MX", "deep": {deep}, "big": 1e309}}"#);
        let meta: UserMetadata = serde_json::from_str(&text).unwrap();
        assert_eq!(meta.locale().as_deref(), Some("es-MX"));
        assert_eq!(meta.to_value(), None);
        let meta: UserMetadata = serde_json::from_str(r#"{"lang": 5, "i18n": "fr"}"#).unwrap();
        assert_eq!(meta.locale().as_deref(), Some("fr"));
        assert_eq!(meta.to_value().unwrap()["lang"], 5);
        let data = JobData {
            to: "x@y.z".into(),
            user_metadata: Some(serde_json::from_str(&text).unwrap()),
            ..Default::default()
        };
        let round: JobData = serde_json::from_str(&serde_json::to_string(&data).unwrap()).unwrap();
        assert_eq!(round, data);
    }

    #[test]
    fn scrubbed_keeps_no_secret() {
        let data = JobData {
            to: "+15551234567".into(),
            code: Some("561166".into()),
            token_hash: Some("abc".into()),
            user_id: Some("u1".into()),
            ..Default::default()
        };
        let text = data.scrubbed().to_string();
        assert!(!text.contains("561166") && !text.contains("abc") && !text.contains("1234567"));
        assert!(text.contains("u1"));
    }
}
