//! Property tests: the hooks never panic on hostile input, and what they accept is well formed
//! (the engine's own are in engine/src/properties.rs).

use crate::intake::{plan_email, plan_sms};
use mysmshook_engine::job::Channel;
use mysmshook_engine::test_support::json_value;
use proptest::prelude::*;
use serde_json::{json, Value};

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
}
