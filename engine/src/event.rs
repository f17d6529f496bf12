//! Supabase Auth's email action types, as the worker's templates and expiry know them. The
//! hooks that read Auth's events are SQL (sql/hooks.sql), which lists the same types.

/// Email action types that carry a code or confirmation link.
pub const CODE_ACTIONS: &[&str] = &[
    "signup",
    "invite",
    "magiclink",
    "recovery",
    "email_change",
    "reauthentication",
    "email",
];

/// Email action types that only notify (no code, never expire).
pub const NOTIFICATION_ACTIONS: &[&str] = &[
    "password_changed_notification",
    "email_changed_notification",
    "phone_changed_notification",
    "identity_linked_notification",
    "identity_unlinked_notification",
    "mfa_factor_enrolled_notification",
    "mfa_factor_unenrolled_notification",
];

/// An action type this version has wording for.
pub fn is_known_action(action: &str) -> bool {
    CODE_ACTIONS.contains(&action) || NOTIFICATION_ACTIONS.contains(&action)
}

/// Notifications carry no code; a later Auth release's `*_notification` types included.
pub fn is_notification(action: &str) -> bool {
    NOTIFICATION_ACTIONS.contains(&action) || action.ends_with("_notification")
}
