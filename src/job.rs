//! The job payload stored in `job_queue.job_data`: everything rendering and delivery need, and
//! nothing more. Pure.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

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
    pub user_metadata: Option<Map<String, Value>>,
}

impl JobData {
    /// What stays in `job_data` once a job is final: enough to debug, no code, token, link or
    /// full address.
    pub fn scrubbed(&self) -> Value {
        json!({
            "to": mask_recipient(&self.to),
            "user_id": self.user_id,
            "event_id": self.event_id,
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
