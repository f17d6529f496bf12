//! Hook intake: a validated event becomes one or two job rows. Planning is pure; [`enqueue`] is
//! the single INSERT, run in the auth server's own transaction.

use crate::event::{
    self, is_notification, non_empty, EmailEvent, HookError, Metadata, SmsEvent, User,
};
use crate::job::{Channel, JobData};
use pgrx::pg_sys::{PgBuiltInOids, PgOid};
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use std::time::Duration;

/// A job about to be inserted.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub channel: Channel,
    pub action_type: String,
    pub data: JobData,
}

impl NewJob {
    /// Codes first so that bulk notifications never delay a sign-in; MFA and reauthentication
    /// (a user blocked mid-session) before everything.
    pub fn priority(&self) -> i32 {
        match self.action_type.as_str() {
            "mfa" | "reauthentication" => 30,
            "invite" => 10,
            _ if !self.carries_code() => 0,
            _ => 20,
        }
    }

    /// Whether the job carries a code or link whose useful life ends (notifications do not).
    pub fn carries_code(&self) -> bool {
        self.data.code.is_some() || self.data.token_hash.is_some()
    }

    /// Codes for the same user, action and destination share this key: the auth server accepts
    /// only the newest, so a worker that claims a job with a newer one of the same key does not
    /// send it (sql/queue.sql, claim_jobs).
    pub fn resend_key(&self) -> Option<String> {
        self.carries_code().then(|| {
            let data = &self.data;
            format!(
                "{}/{}/{}/{}/{}",
                self.channel.as_str(),
                self.action_type,
                data.sms_type.as_deref().unwrap_or_default(),
                data.user_id.as_deref().unwrap_or_default(),
                data.to
            )
        })
    }
}

/// What every job keeps of the user and the event: for templates, logs and correlation.
fn about_user(user: &User, metadata: Option<&Metadata>) -> JobData {
    JobData {
        locale: event::locale(user),
        user_id: non_empty(&user.id).map(str::to_owned),
        event_id: metadata.and_then(|m| non_empty(&m.uuid)).map(str::to_owned),
        email: non_empty(&user.email).map(str::to_owned),
        phone: non_empty(&user.phone).map(str::to_owned),
        user_metadata: user.user_metadata.clone(),
        ..Default::default()
    }
}

/// An SMS job and who asked for it (what the limits of sql/defence.sql count).
#[derive(Debug, Clone, PartialEq)]
pub struct SmsPlan {
    pub job: NewJob,
    pub requester: crate::defence::Requester,
}

/// `accepted_prefixes`: mysmshook.accepted_number_prefixes (see routing::parse_phone).
pub fn plan_sms(event: &str, accepted_prefixes: &[String]) -> Result<SmsPlan, HookError> {
    let event: SmsEvent = event::parse(event)?;
    event::validate_code("sms.otp", &event.sms.otp)?;
    // sms.phone is where Auth wants the code to go (it differs from user.phone on a phone change).
    let raw_phone = non_empty(&event.sms.phone)
        .or_else(|| non_empty(&event.user.phone))
        .ok_or_else(|| {
            HookError("no destination: sms.phone and user.phone are both empty".into())
        })?;
    let to = event::normalize_phone(raw_phone)?;
    // Refused here, Auth shows the message and the person can correct the number; queued, the
    // job would fail later while they wait for a code that never comes.
    let phone = crate::routing::parse_phone(&to, accepted_prefixes).map_err(HookError)?;
    let sms_type = non_empty(&event.sms.sms_type).map(str::to_owned);
    let action_type = if sms_type.as_deref() == Some("mfa") {
        "mfa"
    } else {
        "sms"
    };
    let requester = crate::defence::Requester {
        destination: to.clone(),
        region: phone.region.clone(),
        calling_code: phone.calling_code,
        ip: event
            .metadata
            .as_ref()
            .and_then(|m| non_empty(&m.ip_address))
            .map(str::to_owned),
    };
    Ok(SmsPlan {
        job: NewJob {
            channel: Channel::Sms,
            action_type: action_type.into(),
            data: JobData {
                to,
                code: Some(event.sms.otp.clone()),
                sms_type,
                region: phone.region,
                ..about_user(&event.user, event.metadata.as_ref())
            },
        },
        requester,
    })
}

pub fn plan_email(event: &str) -> Result<Vec<NewJob>, HookError> {
    let event: EmailEvent = event::parse(event)?;
    let d = &event.email_data;
    let action = d.email_action_type.as_str();
    let known = event::is_known_action(action);
    if !known {
        // A type a later Auth release added: queued with a generic message rather than
        // refused, which would break that flow the day Auth is upgraded.
        event::validate_action_type(action)?;
    }
    let user_email = non_empty(&event.user.email);
    if let Some(address) = user_email {
        event::validate_email("user.email", address)?;
    }
    for (field, value) in [
        ("email_data.token", &d.token),
        ("email_data.token_new", &d.token_new),
    ] {
        if let Some(code) = non_empty(value) {
            event::validate_code(field, code)?;
        }
    }
    for (field, value) in [
        ("email_data.token_hash", &d.token_hash),
        ("email_data.token_hash_new", &d.token_hash_new),
    ] {
        if let Some(hash) = non_empty(value) {
            event::validate_token_hash(field, hash)?;
        }
    }
    if let Some(url) = non_empty(&d.site_url) {
        event::validate_url("email_data.site_url", url)?;
    }
    if let Some(link) = non_empty(&d.redirect_to) {
        event::validate_redirect("email_data.redirect_to", link)?;
    }
    let new_email = non_empty(&event.user.new_email);
    if let Some(address) = new_email {
        event::validate_email("user.new_email", address)?;
    }

    let base = JobData {
        site_url: non_empty(&d.site_url).map(str::to_owned),
        redirect_to: non_empty(&d.redirect_to).map(str::to_owned),
        email: user_email.map(str::to_owned),
        new_email: new_email.map(str::to_owned),
        old_email: non_empty(&d.old_email).map(str::to_owned),
        old_phone: non_empty(&d.old_phone).map(str::to_owned),
        provider: non_empty(&d.provider).map(str::to_owned),
        factor_type: non_empty(&d.factor_type).map(str::to_owned),
        ..about_user(&event.user, event.metadata.as_ref())
    };
    let job = |to: &str, code: Option<&str>, hash: Option<&str>| NewJob {
        channel: Channel::Email,
        action_type: action.to_owned(),
        data: JobData {
            to: to.to_owned(),
            code: code.map(str::to_owned),
            token_hash: hash.map(str::to_owned),
            ..base.clone()
        },
    };
    fn require<'a>(
        address: Option<&'a str>,
        field: &str,
        action: &str,
    ) -> Result<&'a str, HookError> {
        address.ok_or_else(|| HookError(format!("{field} is required for {action}")))
    }

    let (token, token_hash) = (non_empty(&d.token), non_empty(&d.token_hash));
    let (token_new, token_hash_new) = (non_empty(&d.token_new), non_empty(&d.token_hash_new));
    if !known {
        return Ok(vec![job(
            require(user_email, "user.email", action)?,
            token,
            token_hash,
        )]);
    }
    if is_notification(action) {
        // A changed address is announced to the old one, where the account owner still reads.
        let to = match action {
            "email_changed_notification" => base.old_email.as_deref().or(user_email),
            _ => user_email,
        };
        return Ok(vec![job(require(to, "user.email", action)?, None, None)]);
    }
    if action == "email_change" {
        // Auth's historical naming: token_hash_new belongs to the current address and
        // token_hash to the new one.
        if token_hash.is_some() && token_hash_new.is_some() {
            return Ok(vec![
                job(
                    require(user_email, "user.email", action)?,
                    token,
                    token_hash_new,
                ),
                job(
                    require(new_email, "user.new_email", action)?,
                    token_new,
                    token_hash,
                ),
            ]);
        }
        let code = token.or(token_new);
        let hash = token_hash.or(token_hash_new);
        if code.is_none() && hash.is_none() {
            return Err(HookError("email_change needs a token or token_hash".into()));
        }
        // The confirmation is meant for the new address: never send it to another mailbox.
        let to = require(new_email, "user.new_email", action)?;
        return Ok(vec![job(to, code, hash)]);
    }
    if token.is_none() && token_hash.is_none() {
        return Err(HookError(format!(
            "{action} needs email_data.token or email_data.token_hash"
        )));
    }
    Ok(vec![job(
        require(user_email, "user.email", action)?,
        token,
        token_hash,
    )])
}

/// Logs an action type this version does not know, once per backend.
fn log_unknown_action_once(action: &str) {
    thread_local! {
        static SEEN: std::cell::RefCell<std::collections::HashSet<String>> = Default::default();
    }
    if SEEN.with(|seen| seen.borrow_mut().insert(action.to_owned())) {
        pgrx::log!(
            "mysmshook: email action type {action:?} is unknown to this version; its emails get a generic message"
        );
    }
}

/// Inserts the jobs, bucketing scheduled_at to the start of the current window (due at once).
pub fn enqueue(
    jobs: &[NewJob],
    window: Duration,
    max_retries: i32,
    lifetime: impl Fn(&NewJob) -> Duration,
) -> Result<(), pgrx::spi::Error> {
    Spi::connect_mut(|client| {
        for job in jobs {
            if job.channel == Channel::Email && !event::is_known_action(&job.action_type) {
                log_unknown_action_once(&job.action_type);
            }
            // As text, cast by the INSERT: no serde_json::Value on the way, and user_metadata
            // goes in as it came.
            let data = serde_json::to_string(&job.data).expect("JobData serializes");
            let expires_in = lifetime(job).as_secs_f64();
            let args = [
                data.into(),
                job.channel.as_str().into(),
                job.action_type.as_str().into(),
                job.priority().into(),
                max_retries.into(),
                (window.as_secs() as f64).into(),
                expires_in.into(),
                job.resend_key().into(),
            ];
            INSERT_PLAN.with(|plan| -> Result<(), pgrx::spi::Error> {
                if plan.get().is_none() {
                    let prepared = client.prepare_mut(INSERT, &INSERT_TYPES.map(PgOid::BuiltIn))?;
                    let _ = plan.set(prepared.keep());
                }
                client.update(plan.get().expect("prepared above"), None, &args)?;
                Ok(())
            })?;
        }
        Ok(())
    })
}

/// Every name is schema-qualified, operators included, so that the statement means the same
/// under any search_path (the hooks also pin theirs: src/lib.rs).
///
/// created_at is the time of the hook call, not of the auth server's transaction: a newer code
/// supersedes the older ones of its key (sql/queue.sql), and the auth server serialises the
/// requests of one user, not the start of their transactions; a request whose transaction began
/// first but asked later holds the code the auth server kept.
const INSERT: &str = "insert into mysmshook.job_queue
        (job_data, channel, action_type, priority, max_retries, scheduled_at, expires_at, resend_key,
         created_at)
    values ($1::pg_catalog.jsonb, $2, $3, $4, $5,
            pg_catalog.date_bin(pg_catalog.make_interval(secs => $6), pg_catalog.now(),
                                '1970-01-01 00:00:00+00'::pg_catalog.timestamptz),
            pg_catalog.now() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $7),
            $8, pg_catalog.clock_timestamp())";

const INSERT_TYPES: [PgBuiltInOids; 8] = [
    PgBuiltInOids::TEXTOID,
    PgBuiltInOids::TEXTOID,
    PgBuiltInOids::TEXTOID,
    PgBuiltInOids::INT4OID,
    PgBuiltInOids::INT4OID,
    PgBuiltInOids::FLOAT8OID,
    PgBuiltInOids::FLOAT8OID,
    PgBuiltInOids::TEXTOID,
];

thread_local! {
    /// The hook runs on every sign-in: its INSERT is planned once per backend, not per call.
    /// (Postgres revalidates a kept plan by itself if the table changes.)
    static INSERT_PLAN: std::cell::OnceCell<OwnedPreparedStatement> = const { std::cell::OnceCell::new() };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn sms(event: Value) -> Result<Vec<NewJob>, HookError> {
        plan_sms(&event.to_string(), &[]).map(|plan| vec![plan.job])
    }

    fn email(event: Value) -> Result<Vec<NewJob>, HookError> {
        plan_email(&event.to_string())
    }

    fn email_event(action: &str, data: Value) -> Value {
        let mut email_data = json!({
            "token": "", "token_hash": "", "redirect_to": "http://localhost:3000/",
            "email_action_type": action, "site_url": "http://localhost:9999",
            "token_new": "", "token_hash_new": ""
        });
        email_data
            .as_object_mut()
            .unwrap()
            .extend(data.as_object().unwrap().clone());
        json!({
            "user": {"id": "u1", "email": "old@example.com", "new_email": "new@example.com"},
            "email_data": email_data
        })
    }

    #[test]
    fn sms_prefers_sms_phone_and_marks_mfa() {
        let jobs = sms(json!({
            "user": {"phone": "+1333363128"},
            "sms": {"otp": "561166", "phone": "525512345678", "sms_type": "mfa"}
        }))
        .unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].data.to, "+525512345678");
        assert_eq!(jobs[0].action_type, "mfa");
        assert_eq!(jobs[0].priority(), 30);
    }

    #[test]
    fn sms_falls_back_to_user_phone() {
        let jobs =
            sms(json!({"user": {"phone": "12125550123"}, "sms": {"otp": "561166"}})).unwrap();
        assert_eq!(jobs[0].data.to, "+12125550123");
        assert_eq!(jobs[0].action_type, "sms");
        assert_eq!(jobs[0].priority(), 20);
    }

    #[test]
    fn numbers_libphonenumber_refuses_are_refused_unless_their_prefix_is_accepted() {
        // The Supabase sample event's number: +1 and only nine digits.
        let err =
            sms(json!({"user": {"phone": "1333363128"}, "sms": {"otp": "561166"}})).unwrap_err();
        assert!(
            err.0.contains("not a valid number for its country"),
            "{err}"
        );
        let mexico_old_mobile =
            json!({"user": {"phone": "5215512345678"}, "sms": {"otp": "561166"}});
        assert!(sms(mexico_old_mobile.clone()).is_err());
        let plan = plan_sms(&mexico_old_mobile.to_string(), &["+521".into()]).unwrap();
        assert_eq!(plan.job.data.to, "+5215512345678");
        assert_eq!(
            (
                plan.requester.calling_code,
                plan.requester.region.as_deref()
            ),
            (52, Some("MX"))
        );
    }

    #[test]
    fn sms_without_destination_is_refused() {
        let err = sms(json!({"user": {"phone": ""}, "sms": {"otp": "561166"}})).unwrap_err();
        assert!(err.0.contains("no destination"), "{err}");
    }

    #[test]
    fn email_change_with_both_pairs_sends_two() {
        let jobs = email(email_event(
            "email_change",
            json!({"token": "111111", "token_hash": "hashnew", "token_new": "222222", "token_hash_new": "hashcur"}),
        ))
        .unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            (
                jobs[0].data.to.as_str(),
                jobs[0].data.code.as_deref(),
                jobs[0].data.token_hash.as_deref()
            ),
            ("old@example.com", Some("111111"), Some("hashcur"))
        );
        assert_eq!(
            (
                jobs[1].data.to.as_str(),
                jobs[1].data.code.as_deref(),
                jobs[1].data.token_hash.as_deref()
            ),
            ("new@example.com", Some("222222"), Some("hashnew"))
        );
    }

    #[test]
    fn email_change_with_one_pair_sends_one_to_the_new_address() {
        let jobs = email(email_event(
            "email_change",
            json!({"token": "111111", "token_hash": "h1"}),
        ))
        .unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].data.to, "new@example.com");
        assert_eq!(jobs[0].data.token_hash.as_deref(), Some("h1"));
    }

    #[test]
    fn every_action_type_is_accepted() {
        use crate::event::{CODE_ACTIONS, NOTIFICATION_ACTIONS};
        for action in CODE_ACTIONS.iter().chain(NOTIFICATION_ACTIONS) {
            let jobs = email(email_event(
                action,
                json!({"token": "305805", "token_hash": "7d5b"}),
            ))
            .unwrap();
            assert_eq!(jobs[0].action_type, *action);
            assert_eq!(jobs[0].carries_code(), !is_notification(action));
            if is_notification(action) {
                assert_eq!(jobs[0].data.code, None);
                assert_eq!(jobs[0].priority(), 0);
            }
        }
    }

    #[test]
    fn an_action_type_from_a_later_auth_is_queued() {
        let jobs = email(email_event("passkey_added_notification", json!({}))).unwrap();
        assert_eq!(
            (jobs[0].data.to.as_str(), jobs[0].priority()),
            ("old@example.com", 0)
        );
        assert!(!jobs[0].carries_code());
        let jobs = email(email_event(
            "otp_login",
            json!({"token": "123456", "token_hash": "abc"}),
        ))
        .unwrap();
        assert!(jobs[0].carries_code() && jobs[0].priority() == 20);
        assert!(email(email_event("Drop Table", json!({})))
            .unwrap_err()
            .0
            .contains("email_action_type"));
    }

    #[test]
    fn email_change_with_one_pair_and_no_new_address_is_refused() {
        let mut event = email_event(
            "email_change",
            json!({"token": "111111", "token_hash": "h1"}),
        );
        event["user"]["new_email"] = json!("");
        let err = email(event).unwrap_err();
        assert!(err.0.contains("user.new_email"), "{err}");
    }

    #[test]
    fn email_errors() {
        assert!(email(email_event("signup", json!({})))
            .unwrap_err()
            .0
            .contains("token"));
        let mut bad = email_event("signup", json!({"token": "1"}));
        bad["user"]["email"] = json!("not-an-address");
        assert!(email(bad).unwrap_err().0.contains("user.email"));
    }
}
