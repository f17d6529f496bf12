//! Message rendering: a job's data becomes the text (and for email the subject and HTML) that a
//! provider sends. Templates are minijinja: sandboxed, and HTML output is auto-escaped, so user
//! data in an email can never inject markup. Pure.

use crate::job::{Channel, JobData};
use minijinja::{context, Environment, UndefinedBehavior, Value as TemplateValue};
use serde_json::{json, Value};
use std::collections::HashMap;

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
    /// For SMS and WhatsApp: how the text is encoded and how many segments it costs.
    pub sms: Option<SmsInfo>,
    /// Things worth knowing that do not stop delivery (e.g. too long for SMS Retriever).
    pub warnings: Vec<String>,
}

/// A custom template row.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
}

/// Custom templates by (channel, action type, language), over the built-in defaults.
#[derive(Debug, Clone, Default)]
pub struct TemplateSet {
    custom: HashMap<(String, String, String), Template>,
    /// mysmshook.app_name, offered to every template as app_name.
    pub app_name: Option<String>,
}

impl TemplateSet {
    pub fn insert(&mut self, channel: &str, action: &str, language: &str, template: Template) {
        self.custom.insert(
            (
                channel.to_owned(),
                action.to_owned(),
                language.to_ascii_lowercase(),
            ),
            template,
        );
    }

    /// The template for a language, its primary subtag ("es" for "es-MX"), then the default.
    fn find(&self, channel: &str, action: &str, language: &str) -> Option<(&Template, String)> {
        let language = language.to_ascii_lowercase();
        let primary = language
            .split(['-', '_'])
            .next()
            .unwrap_or_default()
            .to_owned();
        [
            language.replace('_', "-"),
            primary,
            DEFAULT_LANGUAGE.to_owned(),
        ]
        .into_iter()
        .find_map(|lang| {
            self.custom
                .get(&(channel.to_owned(), action.to_owned(), lang.clone()))
                .map(|t| (t, lang))
        })
    }
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
fn variables(data: &JobData, action: &str, app_name: Option<&str>) -> Value {
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

/// Checks that a template compiles (used when configuration is saved).
pub fn check_source(source: &str) -> Result<(), String> {
    Environment::new()
        .template_from_str(source)
        .map(|_| ())
        .map_err(|e| format!("template is invalid: {e}"))
}

/// Renders a short plain-text template (e.g. a WhatsApp content variable) with a message's variables.
pub fn render_fragment(source: &str, variables: &Value) -> Result<String, String> {
    render_source(
        "fragment.txt",
        source,
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
    let custom = templates.find(template_channel, action, &wanted);
    let language = custom
        .as_ref()
        .map(|(_, lang)| lang.clone())
        .unwrap_or(wanted);
    let mut warnings = Vec::new();

    if channel != Channel::Email {
        let source = custom.map(|(t, _)| t.body.as_str()).unwrap_or(SMS_TEXT);
        let mut text = render_source("sms.txt", &from_go_syntax(source), &ctx)?;
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
        });
    }

    let (subject, text, html) = match custom {
        Some((t, _)) => (
            render_source(
                "subject.txt",
                &from_go_syntax(t.subject.as_deref().unwrap_or_default()),
                &ctx,
            )?,
            render_source("body.txt", &from_go_syntax(&t.body), &ctx)?,
            match &t.html {
                Some(html) => Some(render_source("body.html", &from_go_syntax(html), &ctx)?),
                None => None,
            },
        ),
        None => {
            let (_, subject, intro, link_label) = EMAIL_DEFAULTS
                .iter()
                .find(|(name, ..)| *name == action)
                .ok_or_else(|| format!("no template for email action {action}"))?;
            let intro = render_source("intro.txt", intro, &ctx)?;
            let layout_ctx = context! { ..ctx.clone(), ..context! { intro, link_label } };
            (
                (*subject).to_owned(),
                render_source("email.txt", EMAIL_TEXT, &layout_ctx)?,
                Some(render_source("email.html", EMAIL_HTML, &layout_ctx)?),
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
    })
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
        user_metadata: Some(serde_json::Map::new()),
        ..Default::default()
    };
    let ctx = TemplateValue::from_serialize(variables(&sample, action, Some("Acme")));
    let parts = [("subject", subject), ("body", Some(body)), ("html", html)];
    for (part, source) in parts {
        let Some(source) = source else { continue };
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        let name = if part == "html" {
            "check.html"
        } else {
            "check.txt"
        };
        let translated = from_go_syntax(source);
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

/// Supabase's Go-template names and what they are called here.
const GO_NAMES: &[(&str, &str)] = &[
    ("Token", "code"),
    ("TokenHash", "token_hash"),
    ("ConfirmationURL", "confirmation_url"),
    ("SiteURL", "site_url"),
    ("RedirectTo", "redirect_to"),
    ("Email", "email"),
    ("NewEmail", "new_email"),
    ("OldEmail", "old_email"),
    ("Phone", "phone"),
    ("OldPhone", "old_phone"),
    ("Provider", "provider"),
    ("FactorType", "factor_type"),
    ("Data", "data"),
    ("AppName", "app_name"),
];

/// Rewrites Supabase's Go-template variables (`{{ .Token }}`, `{{ .Data.name }}`) inside
/// `{{ }}` to their names here, so pasted templates work. Anything else is left for minijinja.
pub fn from_go_syntax(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open..].find("}}").map(|c| open + c) else {
            break;
        };
        out.push_str(&rest[..open + 2]);
        let inner = &rest[open + 2..close];
        let mut expr = String::with_capacity(inner.len());
        let mut chars = inner.char_indices().peekable();
        let mut previous: Option<char> = None;
        while let Some((i, c)) = chars.next() {
            let starts_name = c == '.'
                && !previous
                    .is_some_and(|p| p.is_alphanumeric() || p == '_' || p == ')' || p == ']')
                && inner[i + 1..].starts_with(|n: char| n.is_ascii_uppercase());
            if starts_name {
                let name: String = inner[i + 1..]
                    .chars()
                    .take_while(|n| n.is_alphanumeric() || *n == '_')
                    .collect();
                let mapped = GO_NAMES
                    .iter()
                    .find(|(go, _)| *go == name)
                    .map(|(_, ours)| *ours);
                expr.push_str(mapped.unwrap_or(&name));
                for _ in 0..name.chars().count() {
                    chars.next();
                }
                previous = name.chars().last();
                continue;
            }
            expr.push(c);
            previous = Some(c);
        }
        out.push_str(&expr);
        out.push_str("}}");
        rest = &rest[close + 2..];
    }
    out.push_str(rest);
    out
}

/// How an SMS text travels: GSM-7 when every character is in the GSM 03.38 alphabet (escape
/// characters take two septets), else UCS-2. Segments: 160/153 septets, or 70/67 UTF-16 units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsInfo {
    pub encoding: &'static str,
    pub segments: i32,
}

/// GSM 03.38 default alphabet and its extension table (3GPP TS 23.038).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "^{}\\[~]|€\x0c";

pub fn sms_info(text: &str) -> SmsInfo {
    let septets: Option<usize> = text
        .chars()
        .map(|c| {
            if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    let (encoding, units, single, multi) = match septets {
        Some(n) => ("GSM-7", n, 160, 153),
        None => ("UCS-2", text.encode_utf16().count(), 70, 67),
    };
    let segments = if units <= single {
        1
    } else {
        units.div_ceil(multi)
    };
    SmsInfo {
        encoding,
        segments: segments as i32,
    }
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
    fn confirmation_link_is_query_encoded() {
        assert_eq!(
            confirmation_url(&email_job(), "signup").unwrap(),
            "http://localhost:9999/verify?token=7d5b7b19&type=signup&redirect_to=http%3A%2F%2Flocalhost%3A3000%2F%3Fa%3D1%26b%3D2"
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
    fn go_template_spelling_is_translated() {
        assert_eq!(
            from_go_syntax(
                "Code {{ .Token }} at {{ .ConfirmationURL }} for {{.Data.name}} {{ .SiteURL }}/x"
            ),
            "Code {{ code }} at {{ confirmation_url }} for {{data.name}} {{ site_url }}/x"
        );
        assert_eq!(
            from_go_syntax("{{ code }} {% if x %}.Token{% endif %}"),
            "{{ code }} {% if x %}.Token{% endif %}"
        );
        assert_eq!(from_go_syntax("{{ a.Token }} {{"), "{{ a.Token }} {{");
    }

    #[test]
    fn custom_templates_by_language_with_fallback() {
        let mut set = TemplateSet {
            app_name: Some("Acme".into()),
            ..Default::default()
        };
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
        data.user_metadata = Some(serde_json::from_value(json!({"name": "<Ana>"})).unwrap());
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
        data.user_metadata = Some(
            serde_json::from_value(json!({"name": "{{ code }}{% for x in range(9) %}"})).unwrap(),
        );
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
    fn sms_encoding_and_segments() {
        assert_eq!(
            sms_info(&"a".repeat(160)),
            SmsInfo {
                encoding: "GSM-7",
                segments: 1
            }
        );
        assert_eq!(
            sms_info(&"a".repeat(161)),
            SmsInfo {
                encoding: "GSM-7",
                segments: 2
            }
        );
        assert_eq!(
            sms_info(&"€".repeat(80)),
            SmsInfo {
                encoding: "GSM-7",
                segments: 1
            }
        );
        assert_eq!(
            sms_info(&"€".repeat(81)),
            SmsInfo {
                encoding: "GSM-7",
                segments: 2
            }
        );
        // ó is not in GSM 03.38 (ò is): one accent turns the whole SMS into UCS-2.
        assert_eq!(
            sms_info("Tu código es 123456"),
            SmsInfo {
                encoding: "UCS-2",
                segments: 1
            }
        );
        assert_eq!(
            sms_info("Votre code à usage unique"),
            SmsInfo {
                encoding: "GSM-7",
                segments: 1
            }
        );
        assert_eq!(
            sms_info("您的验证码是 123456"),
            SmsInfo {
                encoding: "UCS-2",
                segments: 1
            }
        );
        assert_eq!(
            sms_info(&"ç".repeat(71)),
            SmsInfo {
                encoding: "UCS-2",
                segments: 2
            }
        );
    }

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
