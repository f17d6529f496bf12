//! The queue's SQL: claim due jobs (SKIP LOCKED + lease), rescue expired leases, load a claimed
//! batch, record outcomes, prune finished rows. Backend thread only.

use crate::job::{Channel, JobData};
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use std::time::Duration;

type SpiResult<T> = Result<T, pgrx::spi::Error>;

/// The worker's own transactions (claims and outcomes) commit durably even where the server or
/// session runs with synchronous_commit = off: an outcome lost in a crash means a message sent
/// twice. The auth server's hook transactions keep whatever setting they have.
pub fn commit_durably() -> SpiResult<()> {
    Spi::run("set local synchronous_commit = on")
}

/// Puts jobs whose worker died (lease passed) back in line, counting the lost attempt as a
/// retry so that a job that kills its worker every time cannot loop forever.
pub fn rescue_expired_leases() -> SpiResult<()> {
    Spi::run(
        "update mysmshook.job_queue
            set status = 'pending', locked_by = null, locked_until = null,
                retry_count = retry_count + 1, scheduled_at = pg_catalog.now(),
                last_error = 'lease expired: the worker stopped before recording an outcome'
          where status = 'running' and locked_until < pg_catalog.now()",
    )
}

/// Marks up to `batch_size` due jobs as running under this backend's lease.
pub fn claim(batch_size: i32, lease: Duration) -> SpiResult<Vec<Uuid>> {
    const CLAIM: &str = "with due as (
            select job_id from mysmshook.job_queue
             where status = 'pending' and scheduled_at <= pg_catalog.now()
             order by priority desc, scheduled_at, created_at
             limit $1
               for update skip locked)
        update mysmshook.job_queue j
           set status = 'running', locked_by = pg_catalog.pg_backend_pid(),
               locked_until = pg_catalog.now() + pg_catalog.make_interval(secs => $2)
          from due
         where j.job_id = due.job_id
        returning j.job_id";
    Spi::connect_mut(|client| {
        let rows = client.update(
            CLAIM,
            None,
            &[batch_size.into(), lease.as_secs_f64().into()],
        )?;
        rows.map(|row| row.get::<Uuid>(1).map(|id| id.expect("job_id is not null")))
            .collect()
    })
}

/// A job this backend claimed, as delivery needs it.
pub struct ClaimedJob {
    pub job_id: Uuid,
    pub channel: Channel,
    pub action_type: String,
    pub data: Result<JobData, String>,
    pub retry_count: i32,
    pub max_retries: i32,
    pub expired: bool,
}

pub fn load_claimed(job_ids: Vec<Uuid>) -> SpiResult<Vec<ClaimedJob>> {
    const LOAD: &str = "select job_id, channel, action_type, job_data, retry_count, max_retries,
                               coalesce(expires_at <= pg_catalog.clock_timestamp(), false)
                          from mysmshook.job_queue
                         where job_id = any($1) and status = 'running'
                           and locked_by = pg_catalog.pg_backend_pid()";
    Spi::connect(|client| {
        let mut jobs = Vec::new();
        for row in client.select(LOAD, None, &[job_ids.into()])? {
            let data = row.get::<JsonB>(4)?.map(|j| j.0).unwrap_or_default();
            let channel: String = row.get(2)?.unwrap_or_default();
            jobs.push(ClaimedJob {
                job_id: row.get(1)?.expect("job_id is not null"),
                channel: Channel::parse(&channel).unwrap_or(Channel::Sms),
                action_type: row.get(3)?.unwrap_or_default(),
                data: serde_json::from_value(data)
                    .map_err(|e| format!("job_data is unreadable: {e}")),
                retry_count: row.get(5)?.unwrap_or(0),
                max_retries: row.get(6)?.unwrap_or(0),
                expired: row.get(7)?.unwrap_or(false),
            });
        }
        Ok(jobs)
    })
}

/// The new state of a job after an attempt.
pub struct Update<'a> {
    pub status: &'a str,
    pub retry_in: Option<Duration>,
    pub provider: Option<&'a str>,
    pub provider_message_id: Option<&'a str>,
    pub channel: Option<Channel>,
    pub route: Option<&'a str>,
    pub sms: Option<&'a crate::render::SmsInfo>,
    pub last_error: Option<&'a str>,
    pub attempts: serde_json::Value,
    /// Replacement job_data (the scrubbed form once final).
    pub job_data: Option<serde_json::Value>,
}

/// Records an outcome, provided this backend still holds the job's lease (a job rescued by
/// another worker after our lease ran out is theirs now).
pub fn record(job_id: Uuid, update: Update) -> SpiResult<()> {
    const RECORD: &str = "update mysmshook.job_queue
           set status = $2,
               retry_count = retry_count + case when $3::float8 is null then 0 else 1 end,
               scheduled_at = coalesce(pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => $3), scheduled_at),
               provider = coalesce($4, provider),
               provider_message_id = coalesce($5, provider_message_id),
               channel = coalesce($6, channel),
               last_error = $7,
               attempts = attempts || $8,
               job_data = coalesce($9, job_data),
               route = coalesce($10, route),
               sms_encoding = coalesce($11, sms_encoding),
               sms_segments = coalesce($12, sms_segments),
               finished_at = case when $2 in ('completed', 'failed', 'expired') then pg_catalog.clock_timestamp() end,
               locked_by = null,
               locked_until = null
         where job_id = $1 and status = 'running' and locked_by = pg_catalog.pg_backend_pid()";
    Spi::run_with_args(
        RECORD,
        &[
            job_id.into(),
            update.status.into(),
            update.retry_in.map(|d| d.as_secs_f64()).into(),
            update.provider.into(),
            update.provider_message_id.into(),
            update.channel.map(Channel::as_str).into(),
            update.last_error.into(),
            JsonB(update.attempts).into(),
            update.job_data.map(JsonB).into(),
            update.route.into(),
            update.sms.map(|s| s.encoding).into(),
            update.sms.map(|s| s.segments).into(),
        ],
    )
}

/// Deletes finished jobs older than the retention period, a bounded number per call.
pub fn prune(retention: Duration) -> SpiResult<i64> {
    const PRUNE: &str = "with old as (
            select job_id from mysmshook.job_queue
             where status in ('completed', 'failed', 'expired')
               and finished_at < pg_catalog.now() - pg_catalog.make_interval(secs => $1)
             order by finished_at
             limit 10000)
        delete from mysmshook.job_queue j using old where j.job_id = old.job_id";
    Spi::connect_mut(|client| {
        let deleted = client.update(PRUNE, None, &[retention.as_secs_f64().into()])?;
        Ok(deleted.len() as i64)
    })
}
