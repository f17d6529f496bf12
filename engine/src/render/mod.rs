//! Message rendering: a job's data becomes the text (and for email the subject and HTML) that a
//! provider sends. Templates are minijinja: sandboxed, and HTML output is auto-escaped, so user
//! data in an email can never inject markup. Pure.
//!
//! - templates.rs: custom templates, compiled per configuration version; language fallback
//! - wording.rs:   the built-in wording of every message
//! - variables.rs: what a template sees (Supabase's variables) and the confirmation link
//! - check.rs:     save-time checks
//! - go_syntax.rs: Supabase's Go-template syntax translated into minijinja's
//! - sms.rs:       SMS encoding and segments

mod check;
mod go_syntax;
mod sms;
mod templates;
mod variables;
mod wording;

pub use check::{check_source, check_template};
#[cfg(test)]
pub use go_syntax::from_go_syntax;
pub use sms::{sms_info, SmsInfo};
pub use templates::{Template, TemplateSet};

use crate::job::{Channel, JobData};
use minijinja::{context, Value as TemplateValue};
use serde_json::Value;
use templates::{environment, render_compiled, DEFAULT_LANGUAGE};
use variables::variables;
use wording::{email_wording, BUILT_IN};

/// A rendered message, ready for any provider.
#[derive(Debug, Clone, PartialEq, Default)]
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
    /// For SMS and WhatsApp: how the text is encoded and how many segments it costs.
    pub sms: Option<SmsInfo>,
    /// Things worth knowing that do not stop delivery (e.g. too long for SMS Retriever).
    pub warnings: Vec<String>,
    /// When the code in it stops working (providers that can drop a late message use it).
    pub expires_at: Option<std::time::SystemTime>,
}

/// Renders a short plain-text template (e.g. a WhatsApp content variable) with a message's variables.
pub fn render_fragment(source: &str, variables: &Value) -> Result<String, String> {
    let mut env = environment();
    env.add_template("fragment.txt", source)
        .map_err(|e| format!("template fragment.txt is invalid: {e}"))?;
    render_compiled(
        &env,
        "fragment.txt",
        &TemplateValue::from_serialize(variables),
    )
}

/// Renders a job's message: the custom template for its channel, action and language if there
/// is one, else the built-in default. `app_hash` (SMS Retriever) ends an SMS on its own line.
pub fn render(
    templates: &TemplateSet,
    channel: Channel,
    action: &str,
    data: &JobData,
    app_hash: Option<&str>,
) -> Result<Message, String> {
    let vars = variables(data, action, templates.app_name.as_deref());
    let ctx = TemplateValue::from_serialize(&vars);
    let wanted = data
        .locale
        .clone()
        .unwrap_or_else(|| DEFAULT_LANGUAGE.into());
    let template_channel = if channel == Channel::Email {
        "email"
    } else {
        "sms"
    };
    let has_code = data.code.is_some() || data.token_hash.is_some();
    let mut warnings = Vec::new();
    let (custom, language) = match templates.find(template_channel, action, &wanted) {
        Some((Ok(compiled), language)) => (Some(compiled), language),
        // A stored template that no longer compiles (an upgrade's template engine refuses what
        // an older one took) must not hold a code back until it dies: the built-in message goes.
        Some((Err(error), _)) if has_code => {
            warnings.push(format!("{error}; the built-in message was sent instead"));
            (None, wanted)
        }
        Some((Err(error), _)) => return Err(error.clone()),
        None => (None, wanted),
    };
    let built_in = |name: &str, ctx: &TemplateValue| render_compiled(&BUILT_IN, name, ctx);

    if channel != Channel::Email {
        let mut text = match custom {
            Some(t) => templates.render(&t.body, &ctx)?,
            None => built_in("sms.txt", &ctx)?,
        };
        if let Some(hash) = app_hash {
            text = format!("{}\n{hash}", text.trim_end());
            if text.len() > 140 {
                warnings.push(format!(
                    "SMS is {} bytes with the app hash; Android SMS Retriever reads at most 140",
                    text.len()
                ));
            }
        }
        return Ok(Message {
            to: data.to.clone(),
            subject: None,
            sms: Some(sms_info(&text)),
            text,
            html: None,
            template_name: format!("{action}_sms"),
            language,
            variables: vars,
            warnings,
            expires_at: None,
        });
    }

    let (subject, text, html) = match custom {
        Some(t) => (
            match &t.subject {
                Some(name) => templates.render(name, &ctx)?,
                None => String::new(),
            },
            templates.render(&t.body, &ctx)?,
            t.html
                .as_deref()
                .map(|name| templates.render(name, &ctx))
                .transpose()?,
        ),
        None => {
            let (subject, intro, link_label) = email_wording(action, has_code);
            let intro = built_in(&intro, &ctx)?;
            let layout_ctx = context! { ..ctx.clone(), ..context! { intro, link_label } };
            (
                subject,
                built_in("email.txt", &layout_ctx)?,
                Some(built_in("email.html", &layout_ctx)?),
            )
        }
    };
    Ok(Message {
        to: data.to.clone(),
        // A subject is one header line: no line breaks from a template.
        subject: Some(
            subject
                .split(['\r', '\n'])
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        text,
        html,
        template_name: format!("{action}_email"),
        language,
        variables: vars,
        sms: None,
        warnings,
        expires_at: None,
    })
}

/// An email job with a code and a link, for the render modules' tests.
#[cfg(test)]
pub(crate) fn email_job() -> JobData {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{is_notification, CODE_ACTIONS, NOTIFICATION_ACTIONS};
    use serde_json::json;

    #[test]
    fn sms_default_body() {
        let data = JobData {
            to: "+15551234567".into(),
            code: Some("561166".into()),
            ..Default::default()
        };
        let msg = render(&TemplateSet::default(), Channel::Sms, "sms", &data, None).unwrap();
        assert_eq!(msg.text, "Your code is 561166");
        assert_eq!(msg.template_name, "sms_sms");
        assert_eq!(
            msg.sms,
            Some(SmsInfo {
                encoding: "GSM-7",
                segments: 1
            })
        );
    }

    #[test]
    fn every_action_renders_with_code_and_link() {
        for action in CODE_ACTIONS.iter().chain(NOTIFICATION_ACTIONS) {
            let msg = render(
                &TemplateSet::default(),
                Channel::Email,
                action,
                &email_job(),
                None,
            )
            .unwrap();
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
    fn an_unknown_action_type_gets_a_generic_message() {
        let msg = render(
            &TemplateSet::default(),
            Channel::Email,
            "passkey_added_notification",
            &JobData {
                to: "a@b.io".into(),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert_eq!(msg.subject.as_deref(), Some("Passkey added notification"));
        assert!(
            msg.text.contains("passkey added notification"),
            "{}",
            msg.text
        );
        let msg = render(
            &TemplateSet::default(),
            Channel::Email,
            "otp_login",
            &email_job(),
            None,
        )
        .unwrap();
        assert_eq!(msg.subject.as_deref(), Some("Otp login"));
        assert!(msg.text.contains("Use this link") && msg.text.contains("305805"));
        assert!(msg.text.contains("/verify?token=7d5b7b19&type=otp_login"));
    }

    #[test]
    fn html_escapes_user_data() {
        let mut data = email_job();
        data.email = Some("<script>alert(1)</script>@x.io".into());
        data.new_email = Some("n@x.io".into());
        let msg = render(
            &TemplateSet::default(),
            Channel::Email,
            "email_change",
            &data,
            None,
        )
        .unwrap();
        let html = msg.html.unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
    }

    #[test]
    fn custom_templates_by_language_with_fallback() {
        let mut set = TemplateSet::default();
        set.app_name = Some("Acme".into());
        let t = |body: &str| Template {
            subject: Some("S {{ .Email }}".into()),
            body: body.into(),
            html: Some("<b>{{ .Data.name }}</b>".into()),
        };
        set.insert("email", "signup", "es", t("Hola {{ .Token }}"));
        set.insert(
            "email",
            "signup",
            "en",
            t("Hi {{ .Token }} from {{ app_name }}"),
        );
        let mut data = email_job();
        data.user_metadata = Some(crate::job::UserMetadata::from_value(
            &json!({"name": "<Ana>"}),
        ));
        data.locale = Some("es-MX".into());
        let msg = render(&set, Channel::Email, "signup", &data, None).unwrap();
        assert_eq!(
            (msg.text.as_str(), msg.language.as_str()),
            ("Hola 305805", "es")
        );
        assert_eq!(msg.html.as_deref(), Some("<b>&lt;Ana&gt;</b>"));
        assert_eq!(msg.subject.as_deref(), Some("S john@soupbase.io"));
        data.locale = Some("fr".into());
        assert_eq!(
            render(&set, Channel::Email, "signup", &data, None)
                .unwrap()
                .text,
            "Hi 305805 from Acme"
        );
        // No custom template for recovery: the built-in default.
        assert!(render(&set, Channel::Email, "recovery", &data, None)
            .unwrap()
            .text
            .contains("reset"));
    }

    #[test]
    fn user_data_is_not_template_code() {
        let mut data = email_job();
        data.user_metadata = Some(crate::job::UserMetadata::from_value(
            &json!({"name": "{{ code }}{% for x in range(9) %}"}),
        ));
        let mut set = TemplateSet::default();
        set.insert(
            "email",
            "signup",
            "en",
            Template {
                subject: Some("s".into()),
                body: "Hi {{ .Data.name }}".into(),
                html: None,
            },
        );
        assert_eq!(
            render(&set, Channel::Email, "signup", &data, None)
                .unwrap()
                .text,
            "Hi {{ code }}{% for x in range(9) %}"
        );
    }

    #[test]
    fn app_hash_is_the_last_line() {
        let data = JobData {
            to: "+15551234567".into(),
            code: Some("561166".into()),
            ..Default::default()
        };
        let msg = render(
            &TemplateSet::default(),
            Channel::Sms,
            "sms",
            &data,
            Some("FA+9qCX9VSu"),
        )
        .unwrap();
        assert_eq!(msg.text, "Your code is 561166\nFA+9qCX9VSu");
        assert!(msg.warnings.is_empty());
        let mut set = TemplateSet::default();
        set.insert(
            "sms",
            "sms",
            "en",
            Template {
                subject: None,
                body: "x".repeat(150),
                html: None,
            },
        );
        let msg = render(&set, Channel::Sms, "sms", &data, Some("FA+9qCX9VSu")).unwrap();
        assert!(msg.warnings[0].contains("140"));
    }

    #[test]
    fn a_template_that_does_not_compile_sends_the_built_in_code_and_holds_a_notification() {
        let mut templates = TemplateSet::default();
        let broken = || Template {
            subject: Some("s".into()),
            body: "{{ code ".into(),
            html: None,
        };
        templates.insert("sms", "sms", "en", broken());
        templates.insert("email", "password_changed_notification", "en", broken());
        let code = JobData {
            to: "+15551234567".into(),
            code: Some("561166".into()),
            ..Default::default()
        };
        let msg = render(&templates, Channel::Sms, "sms", &code, None).unwrap();
        assert_eq!(msg.text, "Your code is 561166");
        assert!(msg.warnings[0].contains("built-in message was sent instead"));
        let notice = JobData {
            to: "john@soupbase.io".into(),
            ..Default::default()
        };
        let action = "password_changed_notification";
        assert!(render(&templates, Channel::Email, action, &notice, None).is_err());
    }
}
