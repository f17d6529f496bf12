//! mysmshook-worker's host of the delivery engine: the queue's SQL functions over a client
//! connection, one transaction per step. Every statement is sent unnamed with its parameter
//! types (`query_typed`), so a pooler in transaction mode can run it on any server connection.

use crate::log::Logger;
use mysmshook_engine::delivery::{ClaimedJob, Record};
use mysmshook_engine::queue_sql as sql;
use mysmshook_engine::settings::Settings;
use mysmshook_engine::worker::Host;
use postgres::types::{ToSql, Type};
use postgres::Transaction;
use std::time::Duration;

#[derive(Debug)]
pub enum HostError {
    Db(postgres::Error),
    /// mysmshook.worker_config() answered something the engine cannot read.
    Config(String),
}

impl From<postgres::Error> for HostError {
    fn from(e: postgres::Error) -> HostError {
        HostError::Db(e)
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostError::Db(e) => f.write_str(&crate::connection::describe_error(e)),
            HostError::Config(message) => f.write_str(message),
        }
    }
}

type Result<T> = std::result::Result<T, HostError>;

/// One step's transaction, and what the host knows across steps.
pub struct PgHost<'a, 'c> {
    pub tx: &'a mut Transaction<'c>,
    pub settings: &'a Settings,
    /// mysmshook.accepted_number_prefixes as the database has it, read at each run's start: used
    /// unless the worker was given its own.
    pub database_prefixes: &'a std::cell::RefCell<Vec<String>>,
    pub log: &'a Logger,
    /// This transaction's number, and what became of the earlier ones.
    pub transaction: u64,
    pub transactions: &'a crate::Transactions,
    /// How long the step asked to wait with nothing to do: the caller waits after the commit,
    /// so that no transaction stays open (and holds a pooler's server connection) meanwhile.
    pub idle: std::cell::Cell<Duration>,
}

impl PgHost<'_, '_> {
    fn one<T>(&mut self, statement: &str, params: &[(&(dyn ToSql + Sync), Type)]) -> Result<T>
    where
        T: for<'r> postgres::types::FromSql<'r>,
    {
        let rows = self.tx.query_typed(statement, params)?;
        let row = rows
            .first()
            .ok_or_else(|| HostError::Config(format!("no row from {statement}")))?;
        Ok(row.try_get(0)?)
    }

    /// Reads the database's mysmshook.accepted_number_prefixes (see `database_prefixes`).
    pub fn read_number_prefixes(&mut self) -> Result<()> {
        if self.settings.accepted_number_prefixes.is_empty() {
            let prefixes: Option<String> = self.one(sql::NUMBER_PREFIXES, &[])?;
            *self.database_prefixes.borrow_mut() =
                mysmshook_engine::settings::number_prefixes(&prefixes.unwrap_or_default());
        }
        Ok(())
    }
}

impl Host for PgHost<'_, '_> {
    type Error = HostError;

    fn settings(&self) -> Settings {
        let mut settings = self.settings.clone();
        if settings.accepted_number_prefixes.is_empty() {
            settings.accepted_number_prefixes = self.database_prefixes.borrow().clone();
        }
        settings
    }

    fn claim(&mut self, max_jobs: i32, lease: Duration, token: &str) -> Result<Vec<ClaimedJob>> {
        let lease = lease.as_secs_f64();
        let rows = self.tx.query_typed(
            sql::CLAIM,
            &[
                (&max_jobs, Type::INT4),
                (&lease, Type::FLOAT8),
                (&token, Type::TEXT),
            ],
        )?;
        rows.iter()
            .map(|row| {
                let claimed = sql::ClaimRow {
                    job_id: row.try_get(0)?,
                    channel: row.try_get(1)?,
                    action_type: row.try_get(2)?,
                    job_data: row.try_get(3)?,
                    priority: row.try_get(4)?,
                    retry_count: row.try_get(5)?,
                    max_retries: row.try_get(6)?,
                    rescues: row.try_get(7)?,
                    expires_at: row.try_get(8)?,
                    superseded: row.try_get(9)?,
                };
                Ok(claimed.into_job(token))
            })
            .collect()
    }

    fn renew(&mut self, tokens: Vec<String>, lease: Duration) -> Result<i32> {
        let lease = lease.as_secs_f64();
        self.one(
            sql::RENEW,
            &[(&tokens, Type::TEXT_ARRAY), (&lease, Type::FLOAT8)],
        )
    }

    fn release(&mut self, jobs: Vec<(String, String)>) -> Result<i32> {
        let (ids, tokens): (Vec<String>, Vec<String>) = jobs.into_iter().unzip();
        self.one(
            sql::RELEASE,
            &[(&ids, Type::TEXT_ARRAY), (&tokens, Type::TEXT_ARRAY)],
        )
    }

    fn record(&mut self, records: &[Record]) -> Result<Vec<(String, String)>> {
        let outcomes = serde_json::to_value(records).expect("records serialize");
        let rows = self
            .tx
            .query_typed(sql::RECORD, &[(&outcomes, Type::JSONB)])?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    fn rescue_expired_leases(&mut self) -> Result<i32> {
        self.one(sql::RESCUE, &[])
    }

    fn config_fingerprint(&mut self, vault_names: &[String]) -> Result<String> {
        let names = vault_names.to_vec();
        self.one(sql::FINGERPRINT, &[(&names, Type::TEXT_ARRAY)])
    }

    fn worker_config(&mut self) -> Result<serde_json::Value> {
        self.one(sql::WORKER_CONFIG, &[])
    }

    fn housekeeping(&mut self) -> Result<()> {
        self.tx.query_typed(sql::HOUSEKEEPING, &[])?;
        Ok(())
    }

    fn transaction_mark(&self) -> u64 {
        self.transaction
    }

    /// Steps commit one by one; a transaction that failed is remembered as such.
    fn committed(&self, mark: u64) -> bool {
        self.transactions.committed(mark)
    }

    fn rolled_back(&self, mark: u64) -> bool {
        self.transactions.rolled_back(mark)
    }

    fn idle(&self, wait: Duration) {
        self.idle.set(wait);
    }

    fn worker_id(&self) -> i32 {
        std::process::id() as i32
    }

    fn warn(&self, message: &str) {
        self.log.warn(message);
    }

    fn log(&self, line: &str) {
        self.log.info(line);
    }

    fn config_error(&self, message: String) -> HostError {
        HostError::Config(message)
    }
}
