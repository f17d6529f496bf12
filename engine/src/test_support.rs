//! Generators of hostile input for the engine's property tests (the hooks' are SQL, tested
//! through PostgreSQL: tests/test_reliability.py).

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Field names of real events, so that random documents often look like events.
pub const KEYS: &[&str] = &[
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

pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
}

/// Any JSON document, often shaped like a hook event.
pub fn json_value() -> impl Strategy<Value = Value> {
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
