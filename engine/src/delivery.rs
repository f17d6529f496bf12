//! One claimed job on an HTTP thread: read its data, pick its route, render its message, run its
//! provider chain with the code's expiry and the worker's lease checked before every request,
//! and turn what happened into the record the backend writes. Owns everything it uses; never
//! calls into Postgres.

use crate::chain::{self, ChainResult, ChainRun, Stop};
use crate::config::Config;
use crate::http;
use crate::job::{Channel, JobData};
use crate::pause::Pauses;
use crate::pool::{Bulkhead, Work};
use crate::providers::{Context, Outcome};
use crate::render::{self, Message};
use crate::retry::{self, Backoff, Verdict};
use crate::routing;
use serde::Serialize;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// A job whose lease ran out this many times (its worker died or stalled each time) is failed
/// instead of being handed to a fourth worker: it may be what kills them.
pub const MAX_RESCUES: i32 = 3;

/// A job as claimed (sql/queue.sql, claim_jobs).
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job_id: String,
    /// The claim that holds it: outcomes count only for this token.
    pub token: String,
    pub channel: Channel,
    pub action_type: String,
    pub job_data: String,
    pub priority: i32,
    pub retry_count: i32,
    pub max_retries: i32,
    pub rescues: i32,
    pub expires_at: Option<SystemTime>,
    /// A newer code for the same user, action and destination exists: this one is dead.
    pub superseded: bool,
}

/// Until when the worker's leases are known to hold (committed). Shared by the backend, which
/// moves it forward after each committed claim or renewal, and the HTTP threads, which start a
/// request only if its worst case ends before it.
pub struct LeaseClock {
    base: Instant,
    /// Milliseconds after `base`; u64::MAX: no limit (the claim is uncommitted and its rows stay
    /// locked by the worker's own transaction, so nobody else can take them).
    valid_ms: AtomicU64,
}

impl Default for LeaseClock {
    fn default() -> LeaseClock {
        LeaseClock::new()
    }
}

impl LeaseClock {
    /// Nothing held yet: no request may start until a committed claim moves it.
    pub fn new() -> LeaseClock {
        LeaseClock {
            base: Instant::now(),
            valid_ms: AtomicU64::new(0),
        }
    }

    pub fn unbounded() -> LeaseClock {
        let clock = LeaseClock::new();
        clock.valid_ms.store(u64::MAX, Ordering::SeqCst);
        clock
    }

    pub fn set(&self, valid_until: Instant) {
        let ms = valid_until.saturating_duration_since(self.base).as_millis() as u64;
        self.valid_ms.store(ms, Ordering::SeqCst);
    }

    /// Time left before the leases end (Duration::MAX when unbounded).
    pub fn remaining(&self) -> Duration {
        match self.valid_ms.load(Ordering::SeqCst) {
            u64::MAX => Duration::MAX,
            ms => (self.base + Duration::from_millis(ms)).saturating_duration_since(Instant::now()),
        }
    }

    pub fn covers(&self, needed: Duration) -> bool {
        self.remaining() > needed
    }
}

/// What the deliveries of a run share: read once on the backend thread.
pub struct Env {
    pub config: Arc<Config>,
    /// The worker's current pauses, newer than `config`'s when they changed since the claim.
    pub pauses: Arc<std::sync::RwLock<crate::pause::Pauses>>,
    pub http: Arc<http::Client>,
    pub http_timeout: Duration,
    pub backoff: Backoff,
    pub lease: Arc<LeaseClock>,
    /// The worker's bulkhead: a request to a provider starts only if that provider's share of
    /// the threads has room (src/pool.rs).
    pub bulkhead: Arc<Bulkhead>,
    /// The worker's backend pid, kept with every attempt (who sent what).
    pub worker: i32,
    /// mysmshook.log_sink.
    pub log_sink: bool,
    /// mysmshook.accepted_number_prefixes.
    pub accepted_number_prefixes: Vec<String>,
}

pub struct Delivery {
    pub job: ClaimedJob,
    pub env: Arc<Env>,
}

/// What the backend gets back for a job.
pub enum Answer {
    Record(Box<Record>),
    /// Not sent: the lease could not cover it. Back in line without a retry charged.
    Release {
        job_id: String,
        token: String,
    },
    /// Not sent: its first provider has its share of the threads busy. The worker keeps the job
    /// (its claim and lease unchanged) and hands it to a thread again once that provider has
    /// room, or gives it back.
    Park {
        job: Box<ClaimedJob>,
        provider: String,
        /// The clock of the run that handed it out: a job parked by an earlier run (that
        /// failed) is given back, not sent on another run's lease.
        lease: Arc<LeaseClock>,
    },
}

/// A row of sql/queue.sql's record_outcomes.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub job_id: String,
    pub token: String,
    pub status: &'static str,
    pub retry_in: Option<f64>,
    /// Whether a retry_in counts against max_retries (a configuration wait does not).
    pub retry_charged: bool,
    pub provider: Option<String>,
    pub message_id: Option<String>,
    pub channel: Option<&'static str>,
    pub route: Option<String>,
    pub error: Option<String>,
    pub attempts: Value,
    pub job_data: Option<Value>,
    /// A sent code's data while a provider after the sender remains (sql/receipts.sql).
    pub fallback_data: Option<Value>,
    pub sms_encoding: Option<&'static str>,
    pub sms_segments: Option<i32>,
    /// Status 'paused': the pause ("route:mx") the job waits for.
    pub paused_on: Option<String>,
    /// Seconds since the epoch: the run's first request, and the answer that accepted it.
    pub first_attempt_at: Option<f64>,
    pub sent_at: Option<f64>,
    /// Lines for the server log, written by the backend (threads cannot).
    #[serde(skip)]
    pub log: Vec<String>,
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl Record {
    /// PostgreSQL's text and jsonb cannot hold U+0000, and a provider's answer may carry one
    /// (`"message_id": "a\u0000"`, an error text): one such character would fail the statement
    /// that records the whole group's outcomes, and sent messages would go out again. It becomes
    /// U+FFFD, here, before anything reaches SQL or the server log.
    pub fn make_sql_safe(&mut self) {
        for text in [
            &mut self.provider,
            &mut self.message_id,
            &mut self.route,
            &mut self.error,
        ]
        .into_iter()
        .flatten()
        .chain(self.paused_on.as_mut())
        .chain(&mut self.log)
        .chain(&mut self.warnings)
        {
            sql_safe_text(text);
        }
        for value in [&mut self.job_data, &mut self.fallback_data]
            .into_iter()
            .flatten()
        {
            sql_safe_json(value);
        }
        sql_safe_json(&mut self.attempts);
    }
}

fn sql_safe_text(text: &mut String) {
    if text.contains('\0') {
        *text = text.replace('\0', "\u{FFFD}");
    }
}

fn sql_safe_json(value: &mut Value) {
    match value {
        Value::String(text) => sql_safe_text(text),
        Value::Array(items) => items.iter_mut().for_each(sql_safe_json),
        Value::Object(fields) => {
            if fields.keys().any(|key| key.contains('\0')) {
                *fields = std::mem::take(fields)
                    .into_iter()
                    .map(|(mut key, value)| {
                        sql_safe_text(&mut key);
                        (key, value)
                    })
                    .collect();
            }
            fields.values_mut().for_each(sql_safe_json);
        }
        _ => {}
    }
}

impl Work for Delivery {
    type Answer = Answer;

    fn priority(&self) -> i32 {
        self.job.priority
    }

    fn run(&self) -> Answer {
        let mut answer = deliver(&self.job, &self.env);
        if let Answer::Record(record) = &mut answer {
            record.make_sql_safe();
        }
        answer
    }

    fn panicked(&self, message: String) -> Answer {
        Answer::Record(Box::new(unsent(
            &self.job,
            &self.env,
            "failed",
            format!("internal error while delivering: {message}"),
        )))
    }
}

pub fn deliver(job: &ClaimedJob, env: &Env) -> Answer {
    if job.superseded {
        let error = "superseded: a newer code was queued for the same user, action and destination"
            .to_string();
        return Answer::Record(Box::new(unsent(job, env, "superseded", error)));
    }
    if job.rescues >= MAX_RESCUES {
        let error = format!(
            "its lease ran out {} times (the worker stopped or stalled while holding it); not sent again",
            job.rescues
        );
        return Answer::Record(Box::new(unsent(job, env, "failed", error)));
    }
    if is_expired(job.expires_at) {
        let error = if crate::event::is_notification(&job.action_type) {
            "the notification's lifetime (mysmshook.notification_lifetime) passed before it could be delivered"
        } else {
            "the code expired before it could be delivered"
        }
        .to_string();
        return Answer::Record(Box::new(unsent(job, env, "expired", error)));
    }
    let data: JobData = match serde_json::from_str(&job.job_data) {
        Ok(data) => data,
        Err(e) => {
            let error = format!("job_data is unreadable: {e}");
            return Answer::Record(Box::new(unsent(job, env, "failed", error)));
        }
    };
    let prepared = match prepare(job, &data, env) {
        Ok(prepared) => prepared,
        Err(Unsendable::Recipient(error)) => {
            return Answer::Record(Box::new(unsent(job, env, "failed", error)))
        }
        Err(Unsendable::Template(error)) => {
            return Answer::Record(Box::new(waiting_for_template(job, env, error)))
        }
    };
    // The worker's current pauses, read again before every request: a pause made while the job
    // waited for a thread, or while an earlier provider answered, holds it too.
    let paused_now = |check: &dyn Fn(&Pauses) -> Option<String>| {
        check(&env.pauses.read().expect("not poisoned"))
    };
    if let Some(pause) = paused_now(&|p| p.holding(job.channel, prepared.route.as_deref())) {
        return Answer::Record(Box::new(paused(job, env, &prepared, None, pause)));
    }
    let may_start_after =
        |wait: Duration| !is_expired(job.expires_at) && env.lease.covers(wait + env.http_timeout);
    let ctx = Context {
        http: &env.http,
        job_id: &job.job_id,
        may_start_after: &may_start_after,
        log_sink: env.log_sink,
    };
    // A provider whose share of the threads is busy is not asked: as if the gate had stopped
    // the chain there. Before any request the job is parked; after one (a fallback), the rest
    // of the chain is a retry, as when the lease cannot cover a fallback.
    let busy: RefCell<Option<String>> = RefCell::new(None);
    let run = chain::run(
        &prepared.chain,
        |link, providers_left| {
            if paused_now(&|p| p.provider(&link.name)).is_some() {
                return Some(Stop::Paused);
            }
            gate(job.expires_at, &env.lease, env.http_timeout, providers_left)
        },
        |link| match env.bulkhead.try_acquire(&link.name) {
            Some(permit) => {
                let outcome = link.provider.send(&prepared.message, &ctx);
                drop(permit);
                outcome
            }
            None => {
                *busy.borrow_mut() = Some(link.name.clone());
                Outcome::Deferred {
                    reason: format!("provider {} has its share of the threads busy", link.name),
                }
            }
        },
    );
    if let ChainResult::Paused { provider } = &run.result {
        let pause = crate::pause::key("provider", provider);
        return Answer::Record(Box::new(paused(job, env, &prepared, Some(&run), pause)));
    }
    let busy = busy.take();
    if let (ChainResult::NotStarted, Some(provider)) = (&run.result, &busy) {
        return Answer::Park {
            job: Box::new(job.clone()),
            provider: provider.clone(),
            lease: env.lease.clone(),
        };
    }
    // A fallback whose provider has its share busy was not tried: the job tries again shortly,
    // with no retry charged (charging it would fail codes that never reached that provider).
    if busy.is_some() && run.delivered_by().is_none() {
        let verdict = Verdict::Retry {
            after: BUSY_FALLBACK_WAIT,
        };
        let mut record = record(job, env, &data, &prepared, &run, verdict);
        record.retry_charged = false;
        return Answer::Record(Box::new(record));
    }
    let remaining_life = job
        .expires_at
        .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default());
    let verdict = retry::verdict(
        &run.result,
        job.retry_count,
        job.max_retries,
        &env.backoff,
        fastrand::f64(),
        remaining_life,
    );
    match verdict {
        Verdict::Release => Answer::Release {
            job_id: job.job_id.clone(),
            token: job.token.clone(),
        },
        verdict => Answer::Record(Box::new(record(job, env, &data, &prepared, &run, verdict))),
    }
}

/// Stops the chain before a request that would send a dead code or outlive the lease.
fn gate(
    expires_at: Option<SystemTime>,
    lease: &LeaseClock,
    http_timeout: Duration,
    providers_left: usize,
) -> Option<Stop> {
    if is_expired(expires_at) {
        return Some(Stop::Expired);
    }
    let worst_case = http_timeout.saturating_mul(providers_left as u32);
    (!lease.covers(worst_case)).then_some(Stop::LeaseTooShort)
}

fn is_expired(expires_at: Option<SystemTime>) -> bool {
    expires_at.is_some_and(|at| at <= SystemTime::now())
}

struct Prepared {
    message: Message,
    chain: Vec<crate::config::NamedProvider>,
    route: Option<String>,
}

/// Why a job's message cannot be built.
enum Unsendable {
    /// The recipient cannot receive it (a number libphonenumber refuses): the job fails.
    Recipient(String),
    /// Its template does not render for this job: a configuration error, so the job waits.
    Template(String),
}

/// A job whose fallback provider had its share of the threads busy tries again this soon.
const BUSY_FALLBACK_WAIT: Duration = Duration::from_secs(1);

/// A job whose template does not render waits for a configuration change, which makes it due
/// at once (sql/validation.sql, config_changed), with no retry charged: the person's message is
/// not at fault. This is only the backstop for a change that raced the job's own render, and
/// a code waits no longer than it lives.
const TEMPLATE_WAIT: Duration = Duration::from_secs(3600);

/// The message, provider chain and route of a job; an error for a job that cannot be sent.
fn prepare(job: &ClaimedJob, data: &JobData, env: &Env) -> Result<Prepared, Unsendable> {
    let config = &env.config;
    let (route_channel, phone) = match job.channel {
        Channel::Email => (Channel::Email, None),
        _ => (
            Channel::Sms,
            Some(
                routing::parse_phone(&data.to, &env.accepted_number_prefixes)
                    .map_err(Unsendable::Recipient)?,
            ),
        ),
    };
    let route = routing::select(&config.routes, route_channel, phone.as_ref());
    let app_hash = route.and_then(|r| r.app_hash.as_deref());
    let mut message = render::render(
        &config.templates,
        job.channel,
        &job.action_type,
        data,
        app_hash,
    )
    .map_err(Unsendable::Template)?;
    message.expires_at = job.expires_at;
    let mut chain = route.map(|r| config.chain(r)).unwrap_or_default();
    chain.retain(|link| !data.skip_providers.contains(&link.name));
    Ok(Prepared {
        message,
        chain,
        route: route.map(|r| r.name.clone()),
    })
}

fn record(
    job: &ClaimedJob,
    env: &Env,
    data: &JobData,
    prepared: &Prepared,
    run: &ChainRun,
    verdict: Verdict,
) -> Record {
    let sent = run.delivered_by();
    let (message_id, note) = match sent.map(|a| &a.outcome) {
        Some(Outcome::Sent { message_id, note }) => (message_id.clone(), note.clone()),
        _ => (None, None),
    };
    let (status, retry_in) = match verdict {
        Verdict::Completed => ("completed", None),
        Verdict::Retry { after } => ("pending", Some(after.as_secs_f64())),
        Verdict::Failed => ("failed", None),
        Verdict::Expired | Verdict::Release => ("expired", None),
    };
    let mut error = run.errors();
    if status == "expired" {
        let why = match run.result {
            ChainResult::Expired => "the code expired before it could be delivered",
            _ => "the code would expire before the next try",
        };
        error = Some(match error {
            Some(errors) => format!("{why} ({errors})"),
            None => why.into(),
        });
    }
    let mut log: Vec<String> = note.into_iter().collect();
    if status == "failed" {
        let errors = error.as_deref().unwrap_or_default();
        log.push(format!("mysmshook: job {} failed: {errors}", job.job_id));
    }
    let sms = prepared.message.sms.as_ref();
    // A receipt may yet say the message was not delivered: while the code lives, the rest of
    // the chain can still send it.
    // Only when a receipt can come: the sender calls back and its message id is known.
    let receipt_fallback = sent
        .filter(|_| status == "completed" && job.expires_at.is_some() && message_id.is_some())
        .and_then(|a| {
            prepared
                .chain
                .iter()
                .position(|link| link.name == a.provider)
        })
        .filter(|&sender| {
            sender + 1 < prepared.chain.len() && prepared.chain[sender].provider.reports_receipts()
        })
        .is_some();
    // A failed job keeps its data while its code lives (a message without a code: a day), so
    // that an operator can redrive it once the cause is fixed (sql/operations.sql).
    let redrivable = status == "failed";
    let fallback_data = (receipt_fallback || redrivable)
        .then(|| serde_json::to_value(data).expect("JobData serializes"));
    Record {
        job_id: job.job_id.clone(),
        token: job.token.clone(),
        status,
        retry_in,
        retry_charged: true,
        provider: sent.map(|a| a.provider.clone()),
        message_id,
        channel: sent.and_then(|a| a.delivers_on).map(Channel::as_str),
        route: prepared.route.clone(),
        error,
        attempts: attempts_json(run, &prepared.message.warnings, env.worker),
        job_data: (status != "pending").then(|| data.scrubbed()),
        fallback_data,
        sms_encoding: sms.map(|s| s.encoding),
        sms_segments: sms.map(|s| s.segments),
        paused_on: None,
        first_attempt_at: run.first_request().map(epoch_secs),
        sent_at: sent.map(|a| epoch_secs(a.started_at + a.took)),
        log,
        warnings: prepared.message.warnings.clone(),
    }
}

/// A job whose template fails to render: pending until the configuration changes (at most
/// TEMPLATE_WAIT, or until its code dies, when the next claim expires it), no retry charged,
/// saying why in last_error and the server log.
fn waiting_for_template(job: &ClaimedJob, env: &Env, error: String) -> Record {
    let error =
        format!("waiting for a template fix (mysmshook.templates); nothing was sent: {error}");
    let mut record = unsent(job, env, "pending", error);
    let code_life = job
        .expires_at
        .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default());
    record.retry_in = Some(
        TEMPLATE_WAIT
            .min(code_life.unwrap_or(TEMPLATE_WAIT))
            .as_secs_f64(),
    );
    record.retry_charged = false;
    record.job_data = None;
    record
}

/// A job held by a pause: it waits, status 'paused', with no retry charged and its data as it
/// is, until the pause is lifted. The requests made before a paused provider are kept.
fn paused(
    job: &ClaimedJob,
    env: &Env,
    prepared: &Prepared,
    run: Option<&ChainRun>,
    pause: String,
) -> Record {
    let (scope, name) = pause.split_once(':').unwrap_or((&pause, ""));
    let error = format!(
        "paused: {scope} {name} is paused; mysmshook.resume('{scope}', '{name}') delivers it"
    );
    let mut record = unsent(job, env, "paused", error.clone());
    let note = json!({ "at": now(), "worker": env.worker, "result": "paused", "on": pause });
    record.attempts = json!([note]);
    if let Some(run) = run {
        let mut attempts = attempts_json(run, &[], env.worker);
        if let Value::Array(list) = &mut attempts {
            list.push(note);
        }
        record.attempts = attempts;
        record.error = Some(match run.errors() {
            Some(errors) => format!("{error} ({errors})"),
            None => error,
        });
        record.first_attempt_at = run.first_request().map(epoch_secs);
    }
    record.route = prepared.route.clone();
    record.retry_charged = false;
    record.job_data = None;
    record.log.clear();
    record.paused_on = Some(pause);
    record
}

/// A job that ends without a request: superseded, expired, unreadable, unroutable.
fn unsent(job: &ClaimedJob, env: &Env, status: &'static str, error: String) -> Record {
    let scrubbed = serde_json::from_str::<JobData>(&job.job_data)
        .map(|data| data.scrubbed())
        .unwrap_or_else(|_| json!({ "scrubbed": true }));
    Record {
        job_id: job.job_id.clone(),
        token: job.token.clone(),
        status,
        retry_in: None,
        retry_charged: true,
        provider: None,
        message_id: None,
        channel: None,
        route: None,
        attempts: json!([{ "at": now(), "worker": env.worker, "error": error }]),
        log: vec![format!("mysmshook: job {} {status}: {error}", job.job_id)],
        error: Some(error),
        job_data: Some(scrubbed),
        fallback_data: None,
        sms_encoding: None,
        sms_segments: None,
        paused_on: None,
        first_attempt_at: None,
        sent_at: None,
        warnings: vec![],
    }
}

/// Seconds since the epoch, as record_outcomes reads times (to_timestamp).
fn epoch_secs(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn attempts_json(run: &ChainRun, warnings: &[String], worker: i32) -> Value {
    let at = now();
    let notes = warnings
        .iter()
        .map(|w| json!({ "at": at, "worker": worker, "warning": w }));
    let answers = run.attempts.iter().map(|a| {
        let (result, detail) = match &a.outcome {
            Outcome::Sent { message_id, .. } => ("sent", json!({ "message_id": message_id })),
            Outcome::Retryable { error, .. } => ("retryable", json!({ "error": error })),
            Outcome::ProviderFailed { error } => ("provider_failed", json!({ "error": error })),
            Outcome::RecipientRejected { error } => {
                ("recipient_rejected", json!({ "error": error }))
            }
            Outcome::ChannelRejected { error } => ("channel_rejected", json!({ "error": error })),
            Outcome::Deferred { reason } => ("deferred", json!({ "error": reason })),
        };
        let started: chrono::DateTime<chrono::Utc> = a.started_at.into();
        let mut entry = json!({
            "at": started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "ms": a.took.as_millis() as u64,
            "worker": worker,
            "provider": a.provider,
            "result": result,
        });
        entry
            .as_object_mut()
            .expect("an object")
            .extend(detail.as_object().expect("an object").clone());
        entry
    });
    Value::Array(notes.chain(answers).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_clock_counts_down_and_can_be_unbounded() {
        let clock = LeaseClock::new();
        assert!(!clock.covers(Duration::ZERO));
        clock.set(Instant::now() + Duration::from_secs(10));
        assert!(clock.covers(Duration::from_secs(9)));
        assert!(!clock.covers(Duration::from_secs(11)));
        assert!(LeaseClock::unbounded().covers(Duration::from_secs(1 << 40)));
    }

    #[test]
    fn the_gate_stops_dead_codes_and_requests_past_the_lease() {
        let clock = LeaseClock::new();
        clock.set(Instant::now() + Duration::from_secs(25));
        let timeout = Duration::from_secs(10);
        let later = Some(SystemTime::now() + Duration::from_secs(60));
        let past = Some(SystemTime::now() - Duration::from_secs(1));
        assert_eq!(gate(later, &clock, timeout, 2), None);
        assert_eq!(gate(later, &clock, timeout, 3), Some(Stop::LeaseTooShort));
        assert_eq!(gate(past, &clock, timeout, 1), Some(Stop::Expired));
        assert_eq!(gate(None, &clock, timeout, 1), None);
    }

    #[test]
    fn text_from_providers_loses_its_nul_characters_before_sql() {
        let mut value = json!({"message_id": "a\u{0}b", "k\u{0}": ["\u{0}", 1, {"e": "x\u{0}"}]});
        sql_safe_json(&mut value);
        assert_eq!(
            value,
            json!({"message_id": "a\u{FFFD}b", "k\u{FFFD}": ["\u{FFFD}", 1, {"e": "x\u{FFFD}"}]})
        );
        let mut text = "ok".to_owned();
        sql_safe_text(&mut text);
        assert_eq!(text, "ok");
    }
}
