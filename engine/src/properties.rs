//! Property tests: the engine's pure edges that see hostile input (templates, provider
//! answers, user data) never panic, and user data never reaches HTML unescaped.

use crate::job::{mask_recipient, Channel, JobData};
use crate::render::{from_go_syntax, render, sms_info, TemplateSet};
use crate::test_support::json_value;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

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
