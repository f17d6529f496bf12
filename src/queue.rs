//! The in-database host of the delivery engine: the queue's SQL functions (sql/queue.sql)
//! through SPI, on the backend thread. Each call is one statement over many jobs, prepared once
//! per backend.

use mysmshook_engine::delivery::{ClaimedJob, Record};
use mysmshook_engine::queue_sql as sql;
use mysmshook_engine::settings::Settings;
use mysmshook_engine::worker::Host;
use pgrx::pg_sys::{PgBuiltInOids, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::JsonB;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

type SpiResult<T> = Result<T, pgrx::spi::Error>;

thread_local! {
    static PLANS: RefCell<HashMap<&'static str, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// Runs `f` with the kept plan of `sql` (prepared on first use in this backend).
fn with_plan<R>(
    client: &mut SpiClient<'_>,
    sql: &'static str,
    types: &[PgBuiltInOids],
    f: impl FnOnce(&mut SpiClient<'_>, &OwnedPreparedStatement) -> SpiResult<R>,
) -> SpiResult<R> {
    let kept = PLANS.with(|plans| plans.borrow_mut().remove(sql));
    let plan = match kept {
        Some(plan) => plan,
        None => {
            let types: Vec<PgOid> = types.iter().map(|t| PgOid::BuiltIn(*t)).collect();
            client.prepare_mut(sql, &types)?.keep()
        }
    };
    let result = f(client, &plan);
    PLANS.with(|plans| plans.borrow_mut().insert(sql, plan));
    result
}

const FLOAT8OID: PgBuiltInOids = PgBuiltInOids::FLOAT8OID;
const INT4OID: PgBuiltInOids = PgBuiltInOids::INT4OID;
const JSONBOID: PgBuiltInOids = PgBuiltInOids::JSONBOID;
const TEXTARRAYOID: PgBuiltInOids = PgBuiltInOids::TEXTARRAYOID;
const TEXTOID: PgBuiltInOids = PgBuiltInOids::TEXTOID;

/// The worker's own transactions (claims and outcomes) commit durably even where the server or
/// session runs with synchronous_commit = off: an outcome lost in a crash means a message sent
/// twice. The auth server's hook transactions keep whatever setting they have.
pub fn commit_durably() -> SpiResult<()> {
    Spi::run(sql::COMMIT_DURABLY)
}

fn claim(max_jobs: i32, lease: Duration, token: &str) -> SpiResult<Vec<ClaimedJob>> {
    Spi::connect_mut(|client| {
        with_plan(
            client,
            sql::CLAIM,
            &[INT4OID, FLOAT8OID, TEXTOID],
            |client, plan| {
                let args = [max_jobs.into(), lease.as_secs_f64().into(), token.into()];
                let rows = client.update(plan, None, &args)?;
                let mut jobs = Vec::with_capacity(rows.len());
                for row in rows {
                    let row = sql::ClaimRow {
                        job_id: row.get(1)?.unwrap_or_default(),
                        channel: row.get(2)?.unwrap_or_default(),
                        action_type: row.get(3)?.unwrap_or_default(),
                        job_data: row.get(4)?.unwrap_or_default(),
                        priority: row.get(5)?.unwrap_or(0),
                        retry_count: row.get(6)?.unwrap_or(0),
                        max_retries: row.get(7)?.unwrap_or(0),
                        rescues: row.get(8)?.unwrap_or(0),
                        expires_at: row.get(9)?,
                        superseded: row.get(10)?.unwrap_or(false),
                    };
                    jobs.push(row.into_job(token));
                }
                Ok(jobs)
            },
        )
    })
}

fn renew(tokens: Vec<String>, lease: Duration) -> SpiResult<i32> {
    one_int(sql::RENEW, &[TEXTARRAYOID, FLOAT8OID], |args| {
        args.push(tokens.into());
        args.push(lease.as_secs_f64().into());
    })
}

fn release(jobs: Vec<(String, String)>) -> SpiResult<i32> {
    let (ids, tokens): (Vec<String>, Vec<String>) = jobs.into_iter().unzip();
    one_int(sql::RELEASE, &[TEXTARRAYOID, TEXTARRAYOID], |args| {
        args.push(ids.into());
        args.push(tokens.into());
    })
}

fn rescue_expired_leases() -> SpiResult<i32> {
    one_int(sql::RESCUE, &[], |_| {})
}

/// Records a verified receipt on its job (sql/receipts.sql, record_receipt).
pub fn record_receipt(
    provider: &str,
    receipt: &mysmshook_engine::receipts::Receipt,
) -> SpiResult<JsonB> {
    Spi::get_one_with_args::<JsonB>(
        "select mysmshook.record_receipt($1, $2, $3, $4, $5, $6)",
        &[
            provider.into(),
            receipt.message_id.as_str().into(),
            receipt.event_id.as_str().into(),
            receipt.status.as_str().into(),
            receipt.outcome.as_str().into(),
            receipt.error.as_deref().into(),
        ],
    )
    .map(|answer| answer.unwrap_or(JsonB(serde_json::Value::Null)))
}

/// Records a group of outcomes; returns the jobs whose outcome did not count for their claim,
/// with what became of it ('late' or 'missing').
fn record(records: &[Record]) -> SpiResult<Vec<(String, String)>> {
    let outcomes = serde_json::to_value(records).expect("records serialize");
    Spi::connect_mut(|client| {
        with_plan(client, sql::RECORD, &[JSONBOID], |client, plan| {
            let rows = client.update(plan, None, &[JsonB(outcomes).into()])?;
            rows.map(|row| {
                Ok((
                    row.get::<String>(1)?.unwrap_or_default(),
                    row.get::<String>(2)?.unwrap_or_default(),
                ))
            })
            .collect()
        })
    })
}

fn config_fingerprint(vault_names: &[String]) -> SpiResult<String> {
    Spi::connect_mut(|client| {
        with_plan(client, sql::FINGERPRINT, &[TEXTARRAYOID], |client, plan| {
            let rows = client.update(plan, Some(1), &[vault_names.to_vec().into()])?;
            Ok(rows.first().get::<String>(1)?.unwrap_or_default())
        })
    })
}

fn one_int(
    sql: &'static str,
    types: &[PgBuiltInOids],
    args: impl FnOnce(&mut Vec<pgrx::datum::DatumWithOid<'static>>),
) -> SpiResult<i32> {
    let mut values = Vec::new();
    args(&mut values);
    Spi::connect_mut(|client| {
        with_plan(client, sql, types, |client, plan| {
            let rows = client.update(plan, Some(1), &values)?;
            Ok(rows.first().get::<i32>(1)?.unwrap_or(0))
        })
    })
}

/// The worker's queue in this backend: SPI, this transaction, this backend's GUCs.
pub struct SpiHost;

impl Host for SpiHost {
    type Error = pgrx::spi::Error;

    fn settings(&self) -> Settings {
        crate::settings::worker_settings()
    }
    fn claim(&mut self, max_jobs: i32, lease: Duration, token: &str) -> SpiResult<Vec<ClaimedJob>> {
        claim(max_jobs, lease, token)
    }
    fn renew(&mut self, tokens: Vec<String>, lease: Duration) -> SpiResult<i32> {
        renew(tokens, lease)
    }
    fn release(&mut self, jobs: Vec<(String, String)>) -> SpiResult<i32> {
        release(jobs)
    }
    fn record(&mut self, records: &[Record]) -> SpiResult<Vec<(String, String)>> {
        record(records)
    }
    fn rescue_expired_leases(&mut self) -> SpiResult<i32> {
        rescue_expired_leases()
    }
    fn config_fingerprint(&mut self, vault_names: &[String]) -> SpiResult<String> {
        config_fingerprint(vault_names)
    }
    fn worker_config(&mut self) -> SpiResult<serde_json::Value> {
        Spi::get_one::<JsonB>(sql::WORKER_CONFIG)
            .map(|document| document.map(|d| d.0).unwrap_or_default())
    }
    fn housekeeping(&mut self) -> SpiResult<()> {
        let current =
            Spi::get_one_with_args::<bool>(sql::SCHEMA_IS_CURRENT, &[sql::NEWEST_FUNCTION.into()])?;
        // Between installing a new library and ALTER EXTENSION UPDATE, the schema is the
        // previous version's: the hooks go on queueing, delivery waits for the update.
        if current != Some(true) {
            error!(
                "mysmshook: the installed schema is older than this library; run ALTER EXTENSION \
                 mysmshook UPDATE to deliver (the hooks keep queueing meanwhile)"
            );
        }
        Spi::run(sql::HOUSEKEEPING)?;
        crate::defence::rotate_refusal_log();
        Ok(())
    }
    fn transaction_mark(&self) -> u64 {
        // SAFETY: reads this backend's transaction state; the claim assigned an id.
        u64::from(unsafe { pg_sys::GetCurrentTransactionIdIfAny() }.into_inner())
    }
    /// An error if the claim is still this transaction's: a caller could roll back after the
    /// requests and have every code sent again.
    fn committed(&self, mark: u64) -> bool {
        let xid = pg_sys::TransactionId::from(mark as u32);
        // SAFETY: plain reads of the transaction status (clog), on the backend thread.
        unsafe {
            if pg_sys::TransactionIdIsCurrentTransactionId(xid) {
                error!(
                    "mysmshook.worker_step() must run in its own transaction after the one that \
                     claimed: use CALL mysmshook.run_worker()"
                );
            }
            pg_sys::TransactionIdDidCommit(xid)
        }
    }
    fn worker_id(&self) -> i32 {
        // SAFETY: set once at backend start.
        unsafe { pg_sys::MyProcPid }
    }
    fn check_interrupts(&self) {
        pg_sys::check_for_interrupts!();
    }
    fn step_started(&self) {
        restart_statement_timeout();
    }
    fn warn(&self, message: &str) {
        pgrx::warning!("{message}");
    }
    fn log(&self, line: &str) {
        pgrx::log!("{line}");
    }
    fn config_error(&self, message: String) -> pgrx::spi::Error {
        error!("{message}")
    }
}

/// statement_timeout counts from the start of each step of a scheduled run, not from the start
/// of the run: a run bounds its own length (poll_for plus one batch), and a role or database
/// statement_timeout shorter than that (common on managed PostgreSQL) would otherwise cancel
/// every scheduled run mid-batch. A step that hangs is still cancelled.
fn restart_statement_timeout() {
    // utils/timeout.h, which pgrx does not bind. STATEMENT_TIMEOUT is the fourth TimeoutId in
    // PostgreSQL 15 through 17.
    const STATEMENT_TIMEOUT: u32 = 3;
    extern "C-unwind" {
        fn disable_timeout(id: u32, keep_indicator: bool);
        fn enable_timeout_after(id: u32, delay_ms: i32);
    }
    unsafe {
        disable_timeout(STATEMENT_TIMEOUT, false);
        if pg_sys::StatementTimeout > 0 {
            enable_timeout_after(STATEMENT_TIMEOUT, pg_sys::StatementTimeout);
        }
    }
}

/// A provider's kind and settings, Vault references resolved (sql/config.sql); None if no
/// provider has that name.
pub fn provider_settings(name: &str) -> SpiResult<Option<(String, serde_json::Value)>> {
    let (kind, settings) = Spi::get_two_with_args::<String, JsonB>(
        "select kind, settings from mysmshook.provider_settings($1)",
        &[name.into()],
    )?;
    Ok(kind.map(|kind| (kind, settings.map(|s| s.0).unwrap_or_default())))
}
