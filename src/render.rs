//! Message rendering: a job's data becomes the text (and for email the subject and HTML) that a
//! provider sends. Templates are minijinja: sandboxed, and HTML output is auto-escaped, so user
//! data in an email can never inject markup. Pure.

use crate::job::{Channel, JobData};
use minijinja::{context, Environment, Value as TemplateValue};
use serde_json::{json, Value};

/// A rendered message, ready for any provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub to: String,
    pub subject: Option<String>,
    pub text: String,
    pub html: Option<String>,
    /// Names which template produced it (e.g. `signup_email`), for gateways that want to know.
    pub template_name: String,
    pub language: String,
    /// The variables the templates saw; webhook gateways receive them as template_variables.
    pub variables: Value,
}

pub const DEFAULT_LANGUAGE: &str = "en";

/// Built-in wording: (action, subject, first paragraph, label of the confirmation link).
const EMAIL_DEFAULTS: &[(&str, &str, &str, &str)] = &[
    ("signup", "Confirm your signup", "Confirm your email address to finish signing up.", "Confirm your email"),
    ("invite", "You have been invited", "You have been invited to create an account.", "Accept the invite"),
    ("magiclink", "Your sign-in link", "Use this link to sign in.", "Sign in"),
    ("recovery", "Reset your password", "Someone asked to reset the password of your account. If it was not you, ignore this email.", "Reset password"),
    ("email_change", "Confirm your email change", "Confirm the change of your email address from {{ email }} to {{ new_email }}.", "Confirm the change"),
    ("reauthentication", "Confirm it is you", "Enter this code to confirm it is you.", "Confirm"),
    ("email", "Your sign-in code", "Use this code to sign in.", "Sign in"),
    ("password_changed_notification", "Your password was changed", "The password of your account was changed. If it was not you, reset your password now.", ""),
    ("email_changed_notification", "Your email address was changed", "The email address of your account was changed{% if old_email %} from {{ old_email }}{% endif %} to {{ email }}. If it was not you, contact support now.", ""),
    ("phone_changed_notification", "Your phone number was changed", "The phone number of your account was changed{% if phone %} to {{ phone }}{% endif %}. If it was not you, contact support now.", ""),
    ("identity_linked_notification", "A new sign-in method was linked", "{{ provider or 'A new' }} sign-in was linked to your account. If it was not you, contact support now.", ""),
    ("identity_unlinked_notification", "A sign-in method was removed", "{{ provider or 'A' }} sign-in was removed from your account. If it was not you, contact support now.", ""),
    ("mfa_factor_enrolled_notification", "A new MFA factor was added", "A {{ factor_type or 'new' }} multi-factor authentication factor was added to your account. If it was not you, contact support now.", ""),
    ("mfa_factor_unenrolled_notification", "An MFA factor was removed", "A {{ factor_type or '' }} multi-factor authentication factor was removed from your account. If it was not you, contact support now.", ""),
];

const SMS_TEXT: &str = "Your code is {{ code }}";

const EMAIL_TEXT: &str = "{{ intro }}\n\
{% if confirmation_url %}\n{{ link_label }}: {{ confirmation_url }}\n{% endif %}\
{% if code %}\nYour code: {{ code }}\n{% endif %}";

const EMAIL_HTML: &str = "<!doctype html>\n<html><body>\n<p>{{ intro }}</p>\n\
{% if confirmation_url %}<p><a href=\"{{ confirmation_url }}\">{{ link_label }}</a></p>\n{% endif %}\
{% if code %}<p>Your code: <strong>{{ code }}</strong></p>\n{% endif %}\
</body></html>\n";

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
fn variables(data: &JobData, action: &str) -> Value {
    json!({
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
        "phone": data.phone.as_deref().or(if data.to.starts_with('+') { Some(data.to.as_str()) } else { None }),
        "provider": data.provider,
        "factor_type": data.factor_type,
        "data": data.user_metadata,
    })
}

fn render_source(name: &str, source: &str, ctx: &TemplateValue) -> Result<String, String> {
    let mut env = Environment::new();
    env.add_template(name, source)
        .map_err(|e| format!("template {name} is invalid: {e}"))?;
    env.get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| format!("template {name} failed to render: {e}"))
}

pub fn render(channel: Channel, action: &str, data: &JobData) -> Result<Message, String> {
    let vars = variables(data, action);
    let ctx = TemplateValue::from_serialize(&vars);
    let language = data
        .locale
        .clone()
        .unwrap_or_else(|| DEFAULT_LANGUAGE.into());
    if channel != Channel::Email {
        return Ok(Message {
            to: data.to.clone(),
            subject: None,
            text: render_source("sms.txt", SMS_TEXT, &ctx)?,
            html: None,
            template_name: format!("{action}_sms"),
            language,
            variables: vars,
        });
    }
    let (_, subject, intro, link_label) = EMAIL_DEFAULTS
        .iter()
        .find(|(name, ..)| *name == action)
        .ok_or_else(|| format!("no template for email action {action}"))?;
    let intro = render_source("intro.txt", intro, &ctx)?;
    let layout_ctx = context! { ..ctx.clone(), ..context! { intro, link_label } };
    let text = render_source("email.txt", EMAIL_TEXT, &layout_ctx)?;
    let html = render_source("email.html", EMAIL_HTML, &layout_ctx)?;
    Ok(Message {
        to: data.to.clone(),
        subject: Some((*subject).to_owned()),
        text,
        html: Some(html),
        template_name: format!("{action}_email"),
        language,
        variables: vars,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{is_notification, CODE_ACTIONS, NOTIFICATION_ACTIONS};

    fn email_job() -> JobData {
        JobData {
            to: "john@soupbase.io".into(),
            code: Some("305805".into()),
            token_hash: Some("7d5b7b19".into()),
            site_url: Some("http://localhost:9999/".into()),
            redirect_to: Some("http://localhost:3000/?a=1&b=2".into()),
            email: Some("john@soupbase.io".into()),
            ..Default::default()
        }
    }

    #[test]
    fn sms_default_body() {
        let data = JobData {
            to: "+15551234567".into(),
            code: Some("561166".into()),
            ..Default::default()
        };
        let msg = render(Channel::Sms, "sms", &data).unwrap();
        assert_eq!(msg.text, "Your code is 561166");
        assert_eq!(msg.template_name, "sms_sms");
    }

    #[test]
    fn confirmation_link_is_query_encoded() {
        assert_eq!(
            confirmation_url(&email_job(), "signup").unwrap(),
            "http://localhost:9999/verify?token=7d5b7b19&type=signup&redirect_to=http%3A%2F%2Flocalhost%3A3000%2F%3Fa%3D1%26b%3D2"
        );
    }

    #[test]
    fn every_action_renders_with_code_and_link() {
        for action in CODE_ACTIONS.iter().chain(NOTIFICATION_ACTIONS) {
            let msg = render(Channel::Email, action, &email_job()).unwrap();
            assert!(!msg.subject.as_deref().unwrap().is_empty());
            if !is_notification(action) {
                assert!(msg.text.contains("305805"), "{action}: {}", msg.text);
                assert!(msg.text.contains("/verify?token=7d5b7b19"), "{action}");
                assert!(msg
                    .html
                    .as_deref()
                    .unwrap()
                    .contains("<strong>305805</strong>"));
            }
        }
    }

    #[test]
    fn html_escapes_user_data() {
        let mut data = email_job();
        data.email = Some("<script>alert(1)</script>@x.io".into());
        data.new_email = Some("n@x.io".into());
        let msg = render(Channel::Email, "email_change", &data).unwrap();
        let html = msg.html.unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
    }
}
