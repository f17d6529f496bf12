//! The built-in wording of every message, used where no custom template exists. Compiled once
//! per process. Pure.

use super::templates::environment;
use minijinja::Environment;
use std::sync::LazyLock;

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

/// The first paragraph of an email whose action type this version does not know (a later Auth
/// release's): a notification, or a message with a code or link.
const GENERIC_NOTIFICATION: &str = "There is news about your account: {{ action_type | replace('_', ' ') }}. If it was not you, contact support now.";
const GENERIC_CODE: &str =
    "Use this {% if confirmation_url %}link{% else %}code{% endif %} to continue.";

/// The built-in templates, compiled: `sms.txt`, `email.txt`, `email.html`, `intro/{action}.txt`
/// and the generic `intro/notification.txt` and `intro/code.txt`.
pub static BUILT_IN: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = environment();
    let sources = [
        ("sms.txt", SMS_TEXT),
        ("email.txt", EMAIL_TEXT),
        ("email.html", EMAIL_HTML),
        ("intro/notification.txt", GENERIC_NOTIFICATION),
        ("intro/code.txt", GENERIC_CODE),
    ];
    for (name, source) in sources {
        env.add_template(name, source)
            .expect("built-in templates compile");
    }
    for (action, _, intro, _) in EMAIL_DEFAULTS {
        env.add_template_owned(format!("intro/{action}.txt"), *intro)
            .expect("built-in templates compile");
    }
    env
});

/// The built-in subject, first paragraph (a compiled template's name) and link label of an
/// email action; for an action type this version does not know, generic ones derived from it.
pub fn email_wording(action: &str, has_code: bool) -> (String, String, &'static str) {
    match EMAIL_DEFAULTS.iter().find(|(name, ..)| *name == action) {
        Some((_, subject, _, label)) => ((*subject).into(), format!("intro/{action}.txt"), label),
        None => {
            let words = action.replace('_', " ");
            let mut subject: String = words.chars().take(1).flat_map(char::to_uppercase).collect();
            subject.extend(words.chars().skip(1));
            let intro = if has_code { "code" } else { "notification" };
            (subject, format!("intro/{intro}.txt"), "Continue")
        }
    }
}
