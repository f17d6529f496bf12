//! One batch: claimed jobs -> rendered messages -> provider chains run concurrently on worker
//! threads -> outcomes recorded on the backend thread as they arrive.
//!
//! Worker threads own everything they use (messages, providers, the HTTP client) and never call
//! into Postgres. The backend thread waits for results in short slices and checks for
//! interrupts in between, so a cancel or statement timeout stops the run promptly.

use crate::config::{self, Config, NamedProvider};
use crate::http;
use crate::job::Channel;
use crate::providers::{Context, Outcome};
use crate::queue::{self, ClaimedJob, Update};
use crate::render::{self, Message, SmsInfo};
use crate::retry::{self, Backoff, ChainResult, Verdict};
use crate::routing;
use crate::settings;
use pgrx::prelude::*;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One provider's answer within a chain run.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub provider: String,
    /// The provider's own channel, when it differs from the job's (WhatsApp).
    pub delivers_on: Option<Channel>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub struct ChainRun {
    pub attempts: Vec<Attempt>,
    pub result: ChainResult,
}

impl ChainRun {
    fn delivered_by(&self) -> Option<&Attempt> {
        self.attempts
            .last()
            .filter(|a| matches!(a.outcome, Outcome::Sent { .. }))
    }

    /// Every failure, "provider: error", newest last.
    fn errors(&self) -> Option<String> {
        let errors: Vec<String> = self
            .attempts
            .iter()
            .filter_map(|a| match &a.outcome {
                Outcome::Sent { .. } => None,
                Outcome::Retryable { error, .. }
                | Outcome::ProviderFailed { error }
                | Outcome::RecipientRejected { error } => Some(format!("{}: {error}", a.provider)),
            })
            .collect();
        (!errors.is_empty()).then(|| errors.join("; "))
    }
}

/// Tries the chain's providers in order until one delivers or the recipient is refused.
pub fn run_chain(chain: &[NamedProvider], message: &Message, ctx: &Context) -> ChainRun {
    let mut attempts = Vec::new();
    let mut retryable = chain.is_empty();
    let mut retry_after: Option<Duration> = None;
    if chain.is_empty() {
        attempts.push(Attempt {
            provider: "-".into(),
            delivers_on: None,
            outcome: Outcome::Retryable {
                error: "no enabled provider is configured for this channel".into(),
                retry_after: None,
            },
        });
    }
    for named in chain {
        let outcome = named.provider.send(message, ctx);
        let result = match &outcome {
            Outcome::Sent { .. } => Some(ChainResult::Delivered),
            Outcome::RecipientRejected { .. } => Some(ChainResult::RecipientRejected),
            Outcome::Retryable {
                retry_after: after, ..
            } => {
                retryable = true;
                retry_after = retry_after.max(*after);
                None
            }
            Outcome::ProviderFailed { .. } => None,
        };
        attempts.push(Attempt {
            provider: named.name.clone(),
            delivers_on: named.provider.delivers_on(),
            outcome,
        });
        if let Some(result) = result {
            return ChainRun { attempts, result };
        }
    }
    ChainRun {
        attempts,
        result: ChainResult::AllFailed {
            retryable,
            retry_after,
        },
    }
}

struct Task {
    index: usize,
    job_id: String,
    message: Message,
    chain: Vec<NamedProvider>,
}

/// What the backend keeps of a prepared job while its message is out on a worker thread.
#[derive(Default)]
struct Prepared {
    route: Option<String>,
    sms: Option<SmsInfo>,
    warnings: Vec<String>,
}

/// Delivers the jobs this backend claimed; returns how many were delivered.
pub fn deliver_batch(job_ids: Vec<pgrx::Uuid>) -> Result<i32, pgrx::spi::Error> {
    let jobs = queue::load_claimed(job_ids)?;
    if jobs.is_empty() {
        return Ok(0);
    }
    let config = config::load()?;
    let backoff = settings::backoff_policy();
    let mut tasks = VecDeque::new();
    let mut prepared: Vec<Prepared> = jobs.iter().map(|_| Prepared::default()).collect();
    for (index, job) in jobs.iter().enumerate() {
        match prepare(job, &config) {
            Ok((message, chain, route)) => {
                prepared[index] = Prepared {
                    route,
                    sms: message.sms.clone(),
                    warnings: message.warnings.clone(),
                };
                tasks.push_back(Task {
                    index,
                    job_id: job.job_id.to_string(),
                    message,
                    chain,
                });
            }
            Err((status, error)) => record_final_without_sending(job, status, &error)?,
        }
    }

    let http = Arc::new(http::Client::new(
        settings::http_timeout(),
        settings::allow_http_loopback(),
    ));
    let workers = settings::concurrency().min(tasks.len());
    let tasks = Arc::new(Mutex::new(tasks));
    let (results_tx, results_rx) = mpsc::channel::<(usize, ChainRun)>();
    for _ in 0..workers {
        let (tasks, results_tx, http) = (tasks.clone(), results_tx.clone(), http.clone());
        std::thread::spawn(move || loop {
            let next = tasks
                .lock()
                .map(|mut queue| queue.pop_front())
                .ok()
                .flatten();
            let Some(task) = next else { break };
            let ctx = Context {
                http: &http,
                job_id: &task.job_id,
            };
            let run = run_chain(&task.chain, &task.message, &ctx);
            // The backend stopped listening (cancelled): leave the rest to the lease.
            if results_tx.send((task.index, run)).is_err() {
                break;
            }
        });
    }
    drop(results_tx);

    let mut delivered = 0;
    loop {
        match results_rx.recv_timeout(Duration::from_millis(50)) {
            Ok((index, run)) => {
                if record_run(&jobs[index], &prepared[index], &run, &backoff)? {
                    delivered += 1;
                }
                pg_sys::check_for_interrupts!();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                pg_sys::check_for_interrupts!();
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    Ok(delivered)
}

type Ready = (Message, Vec<NamedProvider>, Option<String>);

/// The message, provider chain and route of a job, or the final status of a job that must not
/// be sent (expired, invalid number, unrenderable).
fn prepare(job: &ClaimedJob, config: &Config) -> Result<Ready, (&'static str, String)> {
    if job.retry_count > job.max_retries {
        return Err((
            "failed",
            "no retries left after the worker stopped mid-delivery".into(),
        ));
    }
    if job.expired {
        return Err((
            "expired",
            "the code expired before it could be delivered".into(),
        ));
    }
    let data = job.data.as_ref().map_err(|e| ("failed", e.clone()))?;
    let (route_channel, phone) = match job.channel {
        Channel::Email => (Channel::Email, None),
        _ => {
            let phone = routing::parse_phone(&data.to).map_err(|e| ("failed", e))?;
            (Channel::Sms, Some(phone))
        }
    };
    let route = routing::select(&config.routes, route_channel, phone.as_ref());
    let app_hash = route.and_then(|r| r.app_hash.as_deref());
    let message = render::render(
        &config.templates,
        job.channel,
        &job.action_type,
        data,
        app_hash,
    )
    .map_err(|e| ("failed", e))?;
    let chain = route.map(|r| config.chain(r)).unwrap_or_default();
    Ok((message, chain, route.map(|r| r.name.clone())))
}

fn record_final_without_sending(
    job: &ClaimedJob,
    status: &str,
    error: &str,
) -> Result<(), pgrx::spi::Error> {
    queue::record(
        job.job_id,
        Update {
            status,
            retry_in: None,
            provider: None,
            provider_message_id: None,
            channel: None,
            route: None,
            sms: None,
            last_error: Some(error),
            attempts: json!([{ "at": now(), "error": error }]),
            job_data: Some(scrubbed(job)),
        },
    )?;
    pgrx::log!("mysmshook: job {} {status}: {error}", job.job_id);
    Ok(())
}

/// Records one job's chain run; true when it was delivered.
fn record_run(
    job: &ClaimedJob,
    prepared: &Prepared,
    run: &ChainRun,
    backoff: &Backoff,
) -> Result<bool, pgrx::spi::Error> {
    let verdict = retry::verdict(
        &run.result,
        job.retry_count,
        job.max_retries,
        backoff,
        fastrand::f64(),
    );
    let sent = run.delivered_by();
    let (message_id, note) = match sent.map(|a| &a.outcome) {
        Some(Outcome::Sent { message_id, note }) => (message_id.as_deref(), note.as_deref()),
        _ => (None, None),
    };
    let (status, retry_in) = match verdict {
        Verdict::Completed => ("completed", None),
        Verdict::Retry { after } => ("pending", Some(after)),
        Verdict::Failed => ("failed", None),
    };
    let errors = run.errors();
    queue::record(
        job.job_id,
        Update {
            status,
            retry_in,
            provider: sent.map(|a| a.provider.as_str()),
            provider_message_id: message_id,
            channel: sent.and_then(|a| a.delivers_on),
            route: prepared.route.as_deref(),
            sms: prepared.sms.as_ref(),
            last_error: errors.as_deref(),
            attempts: attempts_json(run, &prepared.warnings),
            job_data: (status != "pending").then(|| scrubbed(job)),
        },
    )?;
    if let Some(note) = note {
        pgrx::log!("{note}");
    }
    for warning in &prepared.warnings {
        pgrx::warning!("mysmshook: job {}: {warning}", job.job_id);
    }
    if status == "failed" {
        pgrx::log!(
            "mysmshook: job {} failed: {}",
            job.job_id,
            errors.as_deref().unwrap_or("")
        );
    }
    Ok(status == "completed")
}

fn scrubbed(job: &ClaimedJob) -> Value {
    match &job.data {
        Ok(data) => data.scrubbed(),
        Err(_) => json!({ "scrubbed": true }),
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn attempts_json(run: &ChainRun, warnings: &[String]) -> Value {
    let at = now();
    let notes = warnings.iter().map(|w| json!({ "at": at, "warning": w }));
    let answers = run.attempts.iter().map(|a| attempt_json(a, &at));
    Value::Array(notes.chain(answers).collect())
}

fn attempt_json(a: &Attempt, at: &str) -> Value {
    match &a.outcome {
        Outcome::Sent { message_id, .. } => {
            json!({ "at": at, "provider": a.provider, "result": "sent", "message_id": message_id })
        }
        Outcome::Retryable { error, .. } => {
            json!({ "at": at, "provider": a.provider, "result": "retryable", "error": error })
        }
        Outcome::ProviderFailed { error } => {
            json!({ "at": at, "provider": a.provider, "result": "provider_failed", "error": error })
        }
        Outcome::RecipientRejected { error } => {
            json!({ "at": at, "provider": a.provider, "result": "recipient_rejected", "error": error })
        }
    }
}
