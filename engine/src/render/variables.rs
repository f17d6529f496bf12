//! The variables a template sees, Supabase's among them, and the confirmation link. Pure.

use crate::job::JobData;
use serde_json::{json, Value};

/// `{site_url}/verify?token={token_hash}&type={action}&redirect_to={redirect_to}`, query-encoded.
pub fn confirmation_url(data: &JobData, action: &str) -> Option<String> {
    let site = data.site_url.as_deref()?;
    let hash = data.token_hash.as_deref()?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("token", hash).append_pair("type", action);
    if let Some(redirect) = data.redirect_to.as_deref() {
        query.append_pair("redirect_to", redirect);
    }
    Some(format!(
        "{}/verify?{}",
        site.trim_end_matches('/'),
        query.finish()
    ))
}

/// The variables every template sees.
pub fn variables(data: &JobData, action: &str, app_name: Option<&str>) -> Value {
    json!({
        "app_name": app_name,
        "to": data.to,
        "action_type": action,
        "code": data.code,
        "token_hash": data.token_hash,
        "confirmation_url": confirmation_url(data, action),
        "site_url": data.site_url,
        "redirect_to": data.redirect_to,
        "email": data.email,
        "new_email": data.new_email,
        "old_email": data.old_email,
        "old_phone": data.old_phone,
        // For an SMS the destination (sms.phone can differ from user.phone on a phone change).
        "phone": if data.to.starts_with('+') { Some(data.to.as_str()) } else { data.phone.as_deref() },
        "provider": data.provider,
        "factor_type": data.factor_type,
        "data": data.user_metadata.as_ref().and_then(|m| m.to_value()),
    })
}

/// Variables a template may use.
pub const KNOWN_VARIABLES: &[&str] = &[
    "app_name",
    "to",
    "action_type",
    "code",
    "token_hash",
    "confirmation_url",
    "site_url",
    "redirect_to",
    "email",
    "new_email",
    "old_email",
    "old_phone",
    "phone",
    "provider",
    "factor_type",
    "data",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::email_job;

    #[test]
    fn confirmation_link_is_query_encoded() {
        assert_eq!(
            confirmation_url(&email_job(), "signup").unwrap(),
            "http://localhost:9999/verify?token=7d5b7b19&type=signup&redirect_to=http%3A%2F%2Flocalhost%3A3000%2F%3Fa%3D1%26b%3D2"
        );
    }
}
