//! mysmshook: Postgres as the delivery queue for authentication messages.
//!
//! This file is the SQL-facing surface and nothing else: the hooks the auth server calls, and
//! the steps the delivery procedure (`sql/worker.sql`) runs between its COMMITs.

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;

mod defence;
mod hook_arg;
mod intake;
mod queue;
mod settings;
mod worker;

// The delivery engine (engine/), shared with mysmshook-worker.
use mysmshook_engine::{config, event, job, providers, receipts, render, routing};

#[cfg(test)]
mod properties;

pgrx::pg_module_magic!();

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/queue.sql", name = "queue", requires = ["schema"]);
extension_sql_file!(
    "../sql/config.sql",
    name = "config",
    requires = ["schema", "operations"]
);
extension_sql_file!(
    "../sql/worker.sql",
    name = "worker",
    requires = ["queue", worker_begin, worker_step]
);
extension_sql_file!(
    "../sql/schedule.sql",
    name = "schedule",
    requires = ["worker"]
);
extension_sql_file!(
    "../sql/receipts.sql",
    name = "receipts",
    requires = ["schema"]
);
extension_sql_file!(
    "../sql/defence.sql",
    name = "defence",
    requires = ["schema", "validation", refusals]
);
extension_sql_file!(
    "../sql/validation.sql",
    name = "validation",
    requires = [
        "schema",
        check_provider,
        check_template,
        invalidate_config_caches
    ]
);
extension_sql_file!(
    "../sql/operations.sql",
    name = "operations",
    requires = ["schema", "validation", scrubbed_job_data]
);
extension_sql_file!(
    "../sql/metrics.sql",
    name = "metrics",
    requires = ["schema", "operations"]
);
extension_sql_file!("../sql/privileges.sql", name = "privileges", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    settings::register();
    defence::watch_configuration();
}

/// The SMS hook's answer: queued (`{}`), refused by the pumping defence (429, or 400 for a
/// region not served), or the 400 of an invalid event.
fn sms_answer(plan: Result<intake::SmsPlan, event::HookError>) -> JsonB {
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => return hook_answer(Err(e)),
    };
    let refused = defence::check(&plan.requester)
        .unwrap_or_else(|e| error!("mysmshook: could not check the request's limits: {e}"));
    match refused {
        None => hook_answer(Ok(vec![plan.job])),
        Some(rule) => {
            defence::record_refusal(&rule, &plan.requester);
            defence::refusal_answer(&rule)
        }
    }
}

/// Turns a planned intake into the hook's answer: `{}` once the jobs are inserted, or the
/// 400 error object Supabase Auth shows to the user. Database errors stay exceptions (a 500).
fn hook_answer(plan: Result<Vec<intake::NewJob>, event::HookError>) -> JsonB {
    match plan {
        Ok(jobs) => {
            let lifetime = |job: &intake::NewJob| match job.channel {
                _ if !job.carries_code() => settings::notification_lifetime(),
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

fn event_or_error(event: Option<hook_arg::JsonbText>) -> Result<String, event::HookError> {
    event
        .map(|e| e.0)
        .ok_or_else(|| event::HookError("event is null".into()))
}

// The hooks run as the extension's owner, so every name they resolve must be the owner's
// choice: the SET clause takes the caller's search_path (and the functions, operators and
// types a caller can plant on it or in pg_temp) out of every statement they run.

/// Supabase Auth "Send SMS" hook: queues the one-time code for delivery.
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn send_sms(event: Option<hook_arg::JsonbText>) -> JsonB {
    sms_answer(
        event_or_error(event)
            .and_then(|e| intake::plan_sms(&e, &settings::accepted_number_prefixes())),
    )
}

/// Supabase Auth "Send Email" hook: queues the email(s) for delivery.
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn send_email(event: Option<hook_arg::JsonbText>) -> JsonB {
    hook_answer(event_or_error(event).and_then(|e| intake::plan_email(&e)))
}

/// Tells every backend that the configuration changed: an invalidation of
/// mysmshook.config_version, delivered when this transaction commits. The configuration tables'
/// statement trigger calls it (sql/validation.sql); the SMS hook then reloads its cached
/// pumping-defence policy instead of reading a version row on every sign-in.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn invalidate_config_caches() {
    defence::invalidate_config_caches()
        .unwrap_or_else(|e| error!("mysmshook: could not announce the configuration change: {e}"));
}

/// The SMS hook's refusals still in the audit log (src/defence.rs), oldest first: the rule,
/// the masked destination, the client IP and the region. Never a code.
#[pg_extern(security_definer, volatile, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx spells a table's columns in the return type
fn refusals() -> TableIterator<
    'static,
    (
        name!(refused_at, Option<pgrx::datum::TimestampWithTimeZone>),
        name!(rule, Option<String>),
        name!(destination, Option<String>),
        name!(ip, Option<String>),
        name!(region, Option<String>),
    ),
> {
    let rows = defence::refusals().into_iter().map(|r| {
        let at =
            r.at.and_then(|at| at.parse::<pgrx::datum::TimestampWithTimeZone>().ok());
        (at, r.rule, r.to, r.ip, r.region)
    });
    TableIterator::new(rows.collect::<Vec<_>>())
}

/// Takes a provider's delivery callback, forwarded by an HTTP endpoint: `provider` is the
/// provider's name in mysmshook.providers, `url` the URL the provider called (exactly: Twilio
/// signs it), `headers` the request's headers as a JSON object, `body` the raw body. The
/// signature is verified as that provider signs; a forged or stale callback is refused. Returns
/// `{"receipt_id", "job_id", "duplicate"}` (job_id null while the job has not recorded the
/// message id yet: the next worker run applies it).
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn receive_receipt(provider: &str, url: &str, headers: JsonB, body: &str) -> JsonB {
    let (kind, settings) = match queue::provider_settings(provider) {
        Ok(Some(found)) => found,
        Ok(None) => refuse(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("no provider is named {provider:?}"),
        ),
        Err(e) => refuse(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("provider {provider}: {e}"),
        ),
    };
    let headers: std::collections::HashMap<String, String> = headers
        .0
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.to_ascii_lowercase(), v.to_owned())))
        .collect();
    let callback = receipts::Callback {
        url,
        headers: &headers,
        body,
        now: chrono::Utc::now().timestamp(),
    };
    let receipt = match receipts::read(&kind, &settings, &callback) {
        Ok(receipt) => receipt,
        Err(receipts::Refused::Forged(why)) => refuse(
            PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            format!("callback for provider {provider} refused: {why}"),
        ),
        Err(receipts::Refused::Unreadable(why)) => refuse(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("callback for provider {provider} not read: {why}"),
        ),
    };
    queue::record_receipt(provider, &receipt)
        .unwrap_or_else(|e| error!("mysmshook: could not record the receipt: {e}"))
}

fn refuse(code: PgSqlErrorCode, message: String) -> ! {
    ereport!(ERROR, code, message);
}

// The worker's steps run as the extension's owner, like the hooks: a role given
// mysmshook.grant_worker_access can deliver without reading the tables (or their secrets).

/// Starts a delivery run in this backend (sql/worker.sql, run_worker).
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn worker_begin(poll_for: f64) -> Result<(), pgrx::spi::Error> {
    if !(0.0..3600.0).contains(&poll_for) {
        invalid_parameter(format!(
            "poll_for must be between 0 and 1 hour, got {poll_for} seconds"
        ));
    }
    worker::begin(std::time::Duration::from_secs_f64(poll_for), true)
}

/// One step of the run: record answers, renew leases, claim. 'done' ends the run.
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn worker_step() -> Result<&'static str, pgrx::spi::Error> {
    worker::step().map(|state| state.as_str())
}

/// The seed documents' shape, for `select mysmshook.dequeue_and_run_jobs()` in a cron line:
/// delivers at most one batch in the caller's transaction and returns how many were delivered.
/// `CALL mysmshook.run_worker()` is the recommended path (it commits as it goes).
#[pg_extern(security_definer, volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn dequeue_and_run_jobs() -> Result<i32, pgrx::spi::Error> {
    worker::begin(std::time::Duration::ZERO, false)?;
    while worker::step()? != mysmshook_engine::worker::StepState::Done {}
    Ok(worker::delivered())
}

/// What a final job keeps of its data (cancel_job, sql/operations.sql): no code, token, link
/// or full address.
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn scrubbed_job_data(job_data: JsonB) -> JsonB {
    JsonB(
        serde_json::from_value::<job::JobData>(job_data.0)
            .map(|data| data.scrubbed())
            .unwrap_or_else(|_| json!({ "scrubbed": true })),
    )
}

/// Raises an error saying what is wrong with a provider's configuration (the providers
/// table's trigger calls it). Vault references are checked for shape only.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn check_provider(kind: &str, settings: JsonB) {
    // Stands in for a Vault secret; base64 so that format checks (whsec_...) pass.
    let placeholder = |_: &str| Ok("dmF1bHQtc2VjcmV0".to_owned());
    let checked = config::resolve_secrets(&settings.0, &placeholder)
        .and_then(|settings| providers::build(kind, &settings).map(|_| ()));
    if let Err(e) = checked {
        invalid_parameter(format!("invalid {kind} provider: {e}"));
    }
}

/// Raises an error if a template does not compile or uses unknown variables (the templates
/// table's trigger calls it).
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn check_template(
    channel: &str,
    action_type: &str,
    subject: Option<&str>,
    body: &str,
    html: Option<&str>,
) {
    if let Err(e) = render::check_template(channel, action_type, subject, body, html) {
        invalid_parameter(format!("{channel}/{action_type} template: {e}"));
    }
}

fn invalid_parameter(message: String) {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message
    );
}

/// The regions of Latin America and the Caribbean, for a WhatsApp-first route.
#[pg_extern(immutable, parallel_safe)]
fn latin_america_regions() -> Vec<&'static str> {
    routing::LATIN_AMERICA.to_vec()
}
