//! The statements both hosts run against the queue (sql/queue.sql, sql/config.sql), with the
//! parameter types each binds. Every name is qualified: a worker's session may have any
//! search_path (a pooler's, a role's).

use crate::delivery::ClaimedJob;
use crate::job::Channel;
use std::time::{Duration, SystemTime};

/// $1 int4 (max jobs), $2 float8 (lease, seconds), $3 text (claim token).
pub const CLAIM: &str = "select job_id::text, channel, action_type, job_data, priority,
                                retry_count, max_retries, rescues, expires_at, superseded
                           from mysmshook.claim_jobs($1, pg_catalog.make_interval(secs => $2), $3::uuid)";
/// $1 text[] (claim tokens), $2 float8 (lease, seconds).
pub const RENEW: &str =
    "select mysmshook.renew_leases($1::uuid[], pg_catalog.make_interval(secs => $2))";
/// $1 text[] (job ids), $2 text[] (their claim tokens).
pub const RELEASE: &str = "select mysmshook.release_jobs($1::uuid[], $2::uuid[])";
pub const RESCUE: &str = "select mysmshook.rescue_expired_leases()";
/// $1 jsonb (the outcomes). The jobs whose outcome did not count, with what became of it.
pub const RECORD: &str = "select job_id::text, recorded from mysmshook.record_outcomes($1)
                           where recorded <> 'recorded'";
/// $1 text[] (the Vault secrets the configuration refers to).
pub const FINGERPRINT: &str = "select mysmshook.config_fingerprint($1)";
pub const WORKER_CONFIG: &str = "select mysmshook.worker_config()";
/// The retention is the database's mysmshook.retention, read in SQL.
pub const HOUSEKEEPING: &str = "select mysmshook.worker_housekeeping()";
/// Where mysmshook-worker is not told its own: the database's, as the hooks read it (the
/// extension: its GUC as a worker's session sees it; the SQL-only install: mysmshook.settings).
pub const NUMBER_PREFIXES: &str = "select mysmshook.worker_number_prefixes()";
/// The newest function a worker calls: a schema without it is older than this engine.
pub const NEWEST_FUNCTION: &str = "mysmshook.worker_number_prefixes()";
/// Whether the schema has it ($1 text: NEWEST_FUNCTION).
pub const SCHEMA_IS_CURRENT: &str = "select pg_catalog.to_regprocedure($1) is not null";
/// The worker's own transactions (claims and outcomes) commit durably even where the server or
/// session runs with synchronous_commit = off: an outcome lost in a crash means a message sent
/// twice. Transaction-scoped, so a pooler's next client never inherits it.
pub const COMMIT_DURABLY: &str = "set local synchronous_commit = on";

/// One row of [`CLAIM`], as either host reads it.
pub struct ClaimRow {
    pub job_id: String,
    pub channel: String,
    pub action_type: String,
    pub job_data: String,
    pub priority: i32,
    pub retry_count: i32,
    pub max_retries: i32,
    pub rescues: i32,
    /// Seconds since the epoch.
    pub expires_at: Option<f64>,
    pub superseded: bool,
}

impl ClaimRow {
    pub fn into_job(self, token: &str) -> ClaimedJob {
        ClaimedJob {
            job_id: self.job_id,
            token: token.to_owned(),
            channel: Channel::parse(&self.channel).unwrap_or(Channel::Sms),
            action_type: self.action_type,
            job_data: self.job_data,
            priority: self.priority,
            retry_count: self.retry_count,
            max_retries: self.max_retries,
            rescues: self.rescues,
            expires_at: self
                .expires_at
                .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0))),
            superseded: self.superseded,
        }
    }
}
