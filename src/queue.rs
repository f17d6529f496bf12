//! The queue's SQL functions (sql/queue.sql), called from the worker on the backend thread.
//! Each call is one statement over many jobs, prepared once per backend.

use crate::delivery::{ClaimedJob, Record};
use crate::job::Channel;
use pgrx::pg_sys::{PgBuiltInOids, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::JsonB;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

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
    Spi::run("set local synchronous_commit = on")
}

pub fn claim(max_jobs: i32, lease: Duration, token: &str) -> SpiResult<Vec<ClaimedJob>> {
    const CLAIM: &str = "select job_id::text, channel, action_type, job_data, priority,
                                retry_count, max_retries, rescues, expires_at, superseded
                           from mysmshook.claim_jobs($1, pg_catalog.make_interval(secs => $2), $3::uuid)";
    Spi::connect_mut(|client| {
        with_plan(
            client,
            CLAIM,
            &[INT4OID, FLOAT8OID, TEXTOID],
            |client, plan| {
                let args = [max_jobs.into(), lease.as_secs_f64().into(), token.into()];
                let rows = client.update(plan, None, &args)?;
                let mut jobs = Vec::with_capacity(rows.len());
                for row in rows {
                    let channel: String = row.get(2)?.unwrap_or_default();
                    let expires_at: Option<f64> = row.get(9)?;
                    jobs.push(ClaimedJob {
                        job_id: row.get(1)?.unwrap_or_default(),
                        token: token.to_owned(),
                        channel: Channel::parse(&channel).unwrap_or(Channel::Sms),
                        action_type: row.get(3)?.unwrap_or_default(),
                        job_data: row.get(4)?.unwrap_or_default(),
                        priority: row.get(5)?.unwrap_or(0),
                        retry_count: row.get(6)?.unwrap_or(0),
                        max_retries: row.get(7)?.unwrap_or(0),
                        rescues: row.get(8)?.unwrap_or(0),
                        expires_at: expires_at.map(|secs| {
                            SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0))
                        }),
                        superseded: row.get(10)?.unwrap_or(false),
                    });
                }
                Ok(jobs)
            },
        )
    })
}

pub fn renew(tokens: Vec<String>, lease: Duration) -> SpiResult<i32> {
    const RENEW: &str =
        "select mysmshook.renew_leases($1::uuid[], pg_catalog.make_interval(secs => $2))";
    one_int(RENEW, &[TEXTARRAYOID, FLOAT8OID], |args| {
        args.push(tokens.into());
        args.push(lease.as_secs_f64().into());
    })
}

pub fn release(jobs: Vec<(String, String)>) -> SpiResult<i32> {
    const RELEASE: &str = "select mysmshook.release_jobs($1::uuid[], $2::uuid[])";
    let (ids, tokens): (Vec<String>, Vec<String>) = jobs.into_iter().unzip();
    one_int(RELEASE, &[TEXTARRAYOID, TEXTARRAYOID], |args| {
        args.push(ids.into());
        args.push(tokens.into());
    })
}

pub fn rescue_expired_leases() -> SpiResult<i32> {
    one_int("select mysmshook.rescue_expired_leases()", &[], |_| {})
}

pub fn prune(retention: Duration) -> SpiResult<i32> {
    const PRUNE: &str =
        "select mysmshook.prune_finished_jobs(pg_catalog.make_interval(secs => $1))";
    one_int(PRUNE, &[FLOAT8OID], |args| {
        args.push(retention.as_secs_f64().into())
    })
}

/// Records a verified receipt on its job (sql/receipts.sql, record_receipt).
pub fn record_receipt(provider: &str, receipt: &crate::receipts::Receipt) -> SpiResult<JsonB> {
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

/// A function each schema version brought, by which the worker knows what the installed
/// schema has: between installing this library and ALTER EXTENSION UPDATE it is the previous
/// version's.
pub const RECEIPTS_AND_LIMITS: &str = "mysmshook.apply_receipts(uuid[])"; // 0.3.0
pub const PAUSES: &str = "mysmshook.expire_paused_jobs()"; // 0.4.0

pub fn schema_has(function: &str) -> SpiResult<bool> {
    Spi::get_one_with_args::<bool>(
        "select pg_catalog.to_regprocedure($1) is not null",
        &[function.into()],
    )
    .map(|has| has.unwrap_or(false))
}

/// Ends the paused jobs whose code expired while they waited (sql/operations.sql).
pub fn expire_paused_jobs() -> SpiResult<i32> {
    one_int("select mysmshook.expire_paused_jobs()", &[], |_| {})
}

/// Deletes limit counters no limit reads any more (sql/defence.sql).
pub fn prune_limit_counters() -> SpiResult<i32> {
    one_int("select mysmshook.prune_limit_counters()", &[], |_| {})
}

/// Applies the receipts that arrived before their job's outcome was recorded (sql/receipts.sql).
pub fn apply_receipts() -> SpiResult<i32> {
    one_int("select mysmshook.apply_receipts()", &[], |_| {})
}

/// Records a group of outcomes; returns the jobs whose outcome did not count for their claim,
/// with what became of it ('late' or 'missing').
pub fn record(records: &[Record]) -> SpiResult<Vec<(String, String)>> {
    const RECORD: &str = "select job_id::text, recorded from mysmshook.record_outcomes($1)
                           where recorded <> 'recorded'";
    let outcomes = serde_json::to_value(records).expect("records serialize");
    Spi::connect_mut(|client| {
        with_plan(client, RECORD, &[JSONBOID], |client, plan| {
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

pub fn config_fingerprint(vault_names: &[String]) -> SpiResult<String> {
    const FINGERPRINT: &str = "select mysmshook.config_fingerprint($1)";
    Spi::connect_mut(|client| {
        with_plan(client, FINGERPRINT, &[TEXTARRAYOID], |client, plan| {
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
