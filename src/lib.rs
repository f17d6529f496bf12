//! mysmshook: Postgres as the delivery queue for authentication messages.
//!
//! This file is the SQL-facing surface and nothing else: the hooks the auth server calls, and
//! the steps the delivery procedure (`sql/worker.sql`) runs between its COMMITs.

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;

mod config;
mod delivery;
mod event;
mod http;
mod intake;
mod job;
mod providers;
mod queue;
mod render;
mod retry;
mod settings;

pgrx::pg_module_magic!();

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!(
    "../sql/worker.sql",
    name = "worker",
    requires = [
        claim_batch,
        deliver_batch,
        prune_finished_jobs,
        poll_interval
    ]
);
extension_sql_file!(
    "../sql/schedule.sql",
    name = "schedule",
    requires = ["worker"]
);
extension_sql_file!("../sql/privileges.sql", name = "privileges", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    settings::register();
}

/// Turns a planned intake into the hook's answer: `{}` once the jobs are inserted, or the
/// 400 error object Supabase Auth shows to the user. Database errors stay exceptions (a 500).
fn hook_answer(plan: Result<Vec<intake::NewJob>, event::HookError>) -> JsonB {
    match plan {
        Ok(jobs) => {
            let lifetime = |channel: job::Channel| match channel {
                job::Channel::Email => settings::email_code_lifetime(),
                _ => settings::sms_code_lifetime(),
            };
            intake::enqueue(&jobs, settings::window(), settings::max_retries(), lifetime)
                .unwrap_or_else(|e| error!("mysmshook: could not queue the message: {e}"));
            JsonB(json!({}))
        }
        Err(e) => JsonB(json!({ "error": { "http_code": 400, "message": e.0 } })),
    }
}

fn event_or_error(event: Option<JsonB>) -> Result<serde_json::Value, event::HookError> {
    event
        .map(|e| e.0)
        .ok_or_else(|| event::HookError("event is null".into()))
}

/// Supabase Auth "Send SMS" hook: queues the one-time code for delivery.
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn send_sms(event: Option<JsonB>) -> JsonB {
    hook_answer(event_or_error(event).and_then(intake::plan_sms))
}

/// Supabase Auth "Send Email" hook: queues the email(s) for delivery.
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn send_email(event: Option<JsonB>) -> JsonB {
    hook_answer(event_or_error(event).and_then(intake::plan_email))
}

/// Worker step: rescue expired leases, then claim up to mysmshook.batch_size due jobs.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn claim_batch() -> Result<Vec<pgrx::Uuid>, pgrx::spi::Error> {
    queue::rescue_expired_leases()?;
    queue::claim(settings::batch_size(), settings::lease())
}

/// Worker step: deliver jobs claimed by this backend and record every outcome.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn deliver_batch(job_ids: Vec<pgrx::Uuid>) -> Result<i32, pgrx::spi::Error> {
    delivery::deliver_batch(job_ids)
}

/// Worker step: delete finished jobs older than mysmshook.retention.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn prune_finished_jobs() -> Result<i64, pgrx::spi::Error> {
    queue::prune(settings::retention())
}

/// mysmshook.poll_interval in seconds, for pg_sleep in the worker procedure.
#[pg_extern(stable, parallel_safe)]
fn poll_interval() -> f64 {
    settings::poll_interval().as_secs_f64()
}
