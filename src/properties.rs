//! Property tests: the pure edges that see hostile input (hook events, templates, provider
//! answers) never panic, and what they accept is well formed.

use crate::intake::{plan_email, plan_sms};
use crate::job::{mask_recipient, Channel, JobData};
use crate::render::{from_go_syntax, render, sms_info, TemplateSet};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Field names of real events, so that random documents often look like events.
const KEYS: &[&str] = &[
    "user",
    "sms",
    "otp",
    "phone",
    "email",
    "new_email",
    "email_data",
    "token",
    "token_hash",
    "token_new",
    "token_hash_new",
    "email_action_type",
    "site_url",
    "redirect_to",
    "metadata",
    "uuid",
    "sms_type",
    "user_metadata",
    "locale",
    "id",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        "[0-9+]{0,20}".prop_map(Value::String),
        Just(Value::String("signup".into())),
        Just(Value::String("john@soupbase.io".into())),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A valid event with one field replaced by a random value.
fn mutated(base: Value) -> impl Strategy<Value = Value> {
    (
        proptest::sample::select(vec![
            "/user",
            "/user/phone",
            "/user/email",
            "/user/new_email",
            "/user/user_metadata",
            "/sms",
            "/sms/otp",
            "/sms/phone",
            "/sms/sms_type",
            "/email_data",
            "/email_data/token",
            "/email_data/token_hash",
            "/email_data/email_action_type",
            "/email_data/site_url",
            "/email_data/redirect_to",
            "/metadata",
        ]),
        json_value(),
    )
        .prop_map(move |(path, value)| {
            let mut event = base.clone();
            if let Some(slot) = event.pointer_mut(path) {
                *slot = value;
            }
            event
        })
}

fn sms_base() -> Value {
    json!({"user": {"id": "u", "phone": "12125550123"}, "sms": {"otp": "123456"}})
}

fn email_base() -> Value {
    json!({"user": {"id": "u", "email": "a@b.io", "new_email": "c@d.io"},
           "email_data": {"token": "123456", "token_hash": "abc", "email_action_type": "signup",
                          "site_url": "https://x.io", "redirect_to": "https://x.io/r"}})
}

fn assert_well_formed(jobs: &[crate::intake::NewJob]) {
    for job in jobs {
        assert!(!job.data.to.is_empty());
        if job.channel == Channel::Sms {
            assert!(
                job.data.to.starts_with('+')
                    && job.data.to[1..].bytes().all(|b| b.is_ascii_digit())
            );
        } else {
            assert!(job.data.to.contains('@') && !job.data.to.chars().any(char::is_control));
        }
        if let Some(code) = &job.data.code {
            assert!(!code.is_empty() && code.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_documents_never_panic_the_hooks(event in json_value()) {
        if let Ok(plan) = plan_sms(&event.to_string(), &[]) { assert_well_formed(&[plan.job]) }
        if let Ok(jobs) = plan_email(&event.to_string()) { assert_well_formed(&jobs) }
    }

    #[test]
    fn mutated_sms_events_are_accepted_well_formed_or_refused(event in mutated(sms_base())) {
        if let Ok(plan) = plan_sms(&event.to_string(), &[]) { assert_well_formed(&[plan.job]) }
    }

    #[test]
    fn mutated_email_events_are_accepted_well_formed_or_refused(event in mutated(email_base())) {
        if let Ok(jobs) = plan_email(&event.to_string()) { assert_well_formed(&jobs) }
    }

    #[test]
    fn rendering_arbitrary_user_data_never_panics(text in ".{0,200}", metadata in json_value()) {
        // "<x" starts no tag of the built-in templates: found in the HTML, it came from the data.
        let text = format!("<x{text}");
        let data = JobData {
            to: "a@b.io".into(),
            code: Some("123456".into()),
            email: Some(text.clone()),
            provider: Some(text.clone()),
            user_metadata: metadata.is_object().then(|| crate::job::UserMetadata::from_value(&metadata)),
            ..Default::default()
        };
        for action in ["signup", "email_change", "identity_linked_notification"] {
            let message = render(&TemplateSet::default(), Channel::Email, action, &data, None).unwrap();
            // User data never reaches the HTML unescaped.
            prop_assert!(!message.html.unwrap().contains(&text));
        }
    }

    #[test]
    fn template_helpers_never_panic(source in ".{0,300}") {
        let _ = from_go_syntax(&source);
        let _ = crate::render::check_template("sms", "sms", None, &source, None);
        let info = sms_info(&source);
        prop_assert!(info.segments >= 1);
        let masked = mask_recipient(&source);
        if source.chars().count() > 6 && !source.contains('@') {
            prop_assert_ne!(&masked, &source);
        }
        let _ = crate::http::parse_retry_after(&source);
    }
}
