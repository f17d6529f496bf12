//! mysmshook: Postgres as the delivery queue for authentication messages.
//!
//! This file is the SQL-facing surface and nothing else: the hooks the auth server calls, and
//! the steps the delivery procedure (`sql/worker.sql`) runs between its COMMITs.

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;

mod defence;
mod legacy;
mod queue;
mod settings;
mod worker;

// The delivery engine (engine/), shared with mysmshook-worker.
use mysmshook_engine::{config, job, providers, receipts, render, routing};

pgrx::pg_module_magic!();

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/queue.sql", name = "queue", requires = ["schema"]);
extension_sql_file!(
    "../sql/config.sql",
    name = "config",
    requires = ["schema", "operations", setting]
);
extension_sql_file!(
    "../sql/worker.sql",
    name = "worker",
    requires = ["queue", worker_begin, worker_step]
);
extension_sql_file!(
    "../sql/cron_history.sql",
    name = "cron_history",
    requires = ["schema"]
);
extension_sql_file!(
    "../sql/schedule.sql",
    name = "schedule",
    requires = ["worker", "cron_history"]
);
extension_sql_file!(
    "../sql/receipts.sql",
    name = "receipts",
    requires = ["schema"]
);
extension_sql_file!(
    "../sql/defence.sql",
    name = "defence",
    requires = ["schema", "validation"]
);
extension_sql_file!(
    "../sql/refusal_audit.sql",
    name = "refusal_audit",
    requires = ["defence", refusals]
);
extension_sql_file!(
    "../sql/hooks.sql",
    name = "hooks",
    requires = ["schema", "defence", phone_info, setting, record_refusal]
);
extension_sql_file!(
    "../sql/validation.sql",
    name = "validation",
    requires = ["schema", check_provider, check_template]
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
    // Preloaded (shared_preload_libraries), this runs once in the postmaster, and every backend
    // forks with libphonenumber ready instead of loading it at its first SMS sign-in. (Where
    // backends are not forked from it, EXEC_BACKEND builds, each would do it at its start.)
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress && !pg_sys::IsUnderPostmaster }
    {
        let started = std::time::Instant::now();
        mysmshook_engine::phone::warm();
        log!(
            "mysmshook: libphonenumber loaded for every backend in {} ms",
            started.elapsed().as_millis()
        );
    }
}

/// What libphonenumber says of a number given in international form (a
/// `mysmshook.phone_number`): its E.164 form, calling code and region, whether it is valid and,
/// if not, why. The SMS hook's contract with either edition (sql/hooks.sql); here from the
/// `phonenumber` crate's full metadata.
#[pg_extern(immutable, parallel_safe, strict)]
fn phone_info(number: &str) -> pgrx::composite_type!('static, "phone_number") {
    let facts = routing::phone_facts(number);
    let info = || -> Result<_, String> {
        let mut info =
            PgHeapTuple::new_composite_type("mysmshook.phone_number").map_err(|e| e.to_string())?;
        let fields = || -> Result<(), pgrx::datum::TryFromDatumError> {
            info.set_by_name("e164", facts.e164)?;
            info.set_by_name("calling_code", facts.calling_code.map(i32::from))?;
            info.set_by_name("region", facts.region)?;
            info.set_by_name("valid", facts.valid)?;
            info.set_by_name("reason", facts.reason)
        };
        fields().map_err(|e| e.to_string())?;
        Ok(info)
    };
    info().unwrap_or_else(|e| error!("mysmshook: phone_number: {e}"))
}

/// A setting the hooks read (sql/hooks.sql), as `current_setting('mysmshook.<name>')` shows
/// it. Calling this loads the library, which registers every mysmshook setting as
/// superuser-only: a hook caller's own `SET mysmshook.…` never counts. (No SET search_path:
/// it resolves no name, and the hooks call it on every sign-in.)
#[pg_extern(stable, parallel_safe, strict)]
fn setting(name: &str) -> String {
    settings::current(name)
}

/// Writes a refusal of the SMS hook to the audit log, which survives the auth server's
/// rollback (src/defence.rs). `destination` comes masked.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, pg_temp)]
fn record_refusal(rule: &str, destination: &str, ip: Option<&str>, region: Option<&str>) {
    defence::record_refusal(rule, destination, ip, region);
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
    let headers = receipts::header_map(
        headers
            .0
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v))),
    );
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
