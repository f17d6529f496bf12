//! What is checked when a template row is saved. Pure.

use super::go_syntax::from_go_syntax;
use super::templates::environment;
use super::variables::{variables, KNOWN_VARIABLES};
use crate::job::JobData;
use minijinja::Value as TemplateValue;

/// Checks that a template compiles (used when configuration is saved).
pub fn check_source(source: &str) -> Result<(), String> {
    environment()
        .template_from_str(source)
        .map(|_| ())
        .map_err(|e| format!("template is invalid: {e}"))
}

/// Checks a template row as it is saved: each part must compile and render against a sample
/// job, with unknown variables refused (a typo would otherwise render as nothing).
pub fn check_template(
    channel: &str,
    action: &str,
    subject: Option<&str>,
    body: &str,
    html: Option<&str>,
) -> Result<(), String> {
    let known = crate::event::CODE_ACTIONS
        .iter()
        .chain(crate::event::NOTIFICATION_ACTIONS);
    let valid_action = match channel {
        "sms" => ["sms", "mfa"].contains(&action),
        _ => known.clone().any(|a| *a == action),
    };
    if !valid_action {
        return Err(format!("no {channel} message has action type {action:?}"));
    }
    let sample = JobData {
        to: "+15005550006".into(),
        code: Some("123456".into()),
        token_hash: Some("pkce_0123abcd".into()),
        site_url: Some("https://example.com".into()),
        redirect_to: Some("https://example.com/welcome".into()),
        email: Some("user@example.com".into()),
        new_email: Some("new@example.com".into()),
        old_email: Some("old@example.com".into()),
        old_phone: Some("+15005550001".into()),
        phone: Some("+15005550006".into()),
        provider: Some("google".into()),
        factor_type: Some("totp".into()),
        user_metadata: Some(crate::job::UserMetadata::from_value(&serde_json::json!({}))),
        ..Default::default()
    };
    let ctx = TemplateValue::from_serialize(variables(&sample, action, Some("Acme")));
    let parts = [("subject", subject), ("body", Some(body)), ("html", html)];
    for (part, source) in parts {
        let Some(source) = source else { continue };
        let mut env = environment();
        let name = if part == "html" {
            "check.html"
        } else {
            "check.txt"
        };
        let translated = from_go_syntax(source).map_err(|e| format!("{part} template: {e}"))?;
        env.add_template(name, &translated)
            .and_then(|_| env.get_template(name)?.render(&ctx))
            .map_err(|e| format!("{part} template is invalid: {e}"))?;
        let unknown: Vec<String> = env
            .get_template(name)
            .map(|t| t.undeclared_variables(false))
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !KNOWN_VARIABLES.contains(&v.as_str()))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "{part} template uses unknown variable(s) {}; known: {}",
                unknown.join(", "),
                KNOWN_VARIABLES.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_checked_when_saved() {
        assert!(check_template(
            "email",
            "signup",
            Some("Hi"),
            "Code {{ .Token }}",
            Some("<a href='{{ .ConfirmationURL }}'>x</a>")
        )
        .is_ok());
        assert!(check_template(
            "sms",
            "sms",
            None,
            "{{ app_name }} code {{ code }} {{ data.x }}",
            None
        )
        .is_ok());
        let err = check_template("sms", "sms", None, "Code {{ .Tokn }}", None).unwrap_err();
        assert!(err.contains("Tokn"), "{err}");
        assert!(check_template("sms", "sms", None, "Code {{ code ", None)
            .unwrap_err()
            .contains("invalid"));
        assert!(check_template("email", "launch", Some("s"), "b", None).is_err());
        assert!(check_template("sms", "signup", None, "b", None).is_err());
    }
}
