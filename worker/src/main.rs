//! mysmshook-worker: delivers mysmshook's queue from outside PostgreSQL, with the extension's
//! delivery engine and the same guarantees (claim tokens, leases, grouped records). It runs the
//! engine a step at a time, one transaction per step, over one connection.
//!
//! SIGTERM or SIGINT: it stops claiming, gives back what it had not started (no retry
//! charged), records what is in flight, and exits 0. A second signal exits at once; the
//! leases then cover what it held.

mod connection;
mod host;
mod log;
mod metrics;
mod receipts;

use clap::builder::BoolishValueParser;
use clap::Parser;
use host::{HostError, PgHost};
use log::Logger;
use mysmshook_engine::queue_sql as sql;
use mysmshook_engine::retry::Backoff;
use mysmshook_engine::settings::{self, defaults, Settings};
use mysmshook_engine::worker::{StepState, Worker};
use postgres::types::Type;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings carry the names and defaults of the extension's GUCs (mysmshook.concurrency is
/// --concurrency and MYSMSHOOK_CONCURRENCY). Durations take PostgreSQL's units (250ms, 10s,
/// 1min); a bare number is in the GUC's unit. Switches take on/off as the GUCs do.
#[derive(Parser, Debug)]
#[command(version, about = "Delivers mysmshook's queue from outside PostgreSQL")]
struct Args {
    /// postgres://user:password@host:port/database?sslmode=verify-full (libpq's sslmode values
    /// and sslrootcert)
    #[arg(long, env = "MYSMSHOOK_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    #[arg(long, env = "MYSMSHOOK_BATCH_SIZE", default_value_t = defaults::BATCH_SIZE)]
    batch_size: i32,
    /// Requests in flight at once
    #[arg(long, env = "MYSMSHOOK_CONCURRENCY", default_value_t = defaults::CONCURRENCY)]
    concurrency: i32,
    /// The share of the threads a slow provider may hold
    #[arg(long, env = "MYSMSHOOK_PROVIDER_SHARE", default_value_t = defaults::PROVIDER_SHARE)]
    provider_share: f64,
    /// Default 10s; milliseconds, or with a unit
    #[arg(long, env = "MYSMSHOOK_HTTP_TIMEOUT", value_parser = millis)]
    http_timeout: Option<Duration>,
    /// Default 30s; seconds, or with a unit
    #[arg(long, env = "MYSMSHOOK_LEASE", value_parser = seconds)]
    lease: Option<Duration>,
    /// Default 2s; milliseconds, or with a unit
    #[arg(long, env = "MYSMSHOOK_RETRY_BASE", value_parser = millis)]
    retry_base: Option<Duration>,
    /// Default 5min; seconds, or with a unit
    #[arg(long, env = "MYSMSHOOK_RETRY_MAX", value_parser = seconds)]
    retry_max: Option<Duration>,
    /// Default 250ms; milliseconds, or with a unit
    #[arg(long, env = "MYSMSHOOK_POLL_INTERVAL", value_parser = millis)]
    poll_interval: Option<Duration>,
    /// Allow http:// providers on 127.0.0.1 (tests, local gateways)
    #[arg(long, env = "MYSMSHOOK_ALLOW_HTTP_LOOPBACK", value_parser = BoolishValueParser::new())]
    allow_http_loopback: bool,
    /// The built-in log provider writes what it would send to this process's log
    #[arg(long, env = "MYSMSHOOK_LOG_SINK", value_parser = BoolishValueParser::new())]
    log_sink: bool,
    #[arg(long, env = "MYSMSHOOK_ACCEPTED_NUMBER_PREFIXES", default_value = "")]
    accepted_number_prefixes: String,
    #[arg(long, env = "MYSMSHOOK_APP_NAME")]
    app_name: Option<String>,
    #[arg(long, env = "MYSMSHOOK_LOG_FORMAT", value_enum, default_value_t = log::Format::Text)]
    log_format: log::Format,
    /// Serve /healthz and /metrics (Prometheus) here, e.g. 0.0.0.0:9187
    #[arg(long, env = "MYSMSHOOK_METRICS_ADDR")]
    metrics_addr: Option<String>,
    /// Take providers' delivery callbacks at POST /receipts/{provider} here, e.g. 0.0.0.0:8080
    #[arg(long, env = "MYSMSHOOK_RECEIPTS_ADDR")]
    receipts_addr: Option<String>,
    /// The scheme and host providers call the receipts endpoint at, e.g. https://hooks.example.com
    /// (Twilio signs the URL it called); default http:// and the request's Host
    #[arg(long, env = "MYSMSHOOK_RECEIPTS_URL", requires = "receipts_addr",
          value_parser = receipts::public_url)]
    receipts_url: Option<String>,
    /// Check the enabled providers' settings and the templates as the extension does when they
    /// are saved, print each problem, and exit: 0 none, 1 some, 2 not checked (no connection)
    #[arg(long)]
    check: bool,
    /// Deliver for one run of this long, then exit 0, as `CALL mysmshook.run_worker(interval)`
    /// does inside PostgreSQL (0: one batch); for a scheduler that starts the worker
    #[arg(long, value_parser = seconds)]
    run_for: Option<Duration>,
}

impl Args {
    /// The flags given, the GUCs' defaults (the engine's) for the others.
    fn settings(&self) -> Settings {
        let defaults = Settings::default();
        Settings {
            batch_size: self.batch_size,
            concurrency: self.concurrency.max(1) as usize,
            provider_share: settings::clamp_share(self.provider_share),
            http_timeout: self.http_timeout.unwrap_or(defaults.http_timeout),
            lease: self.lease.unwrap_or(defaults.lease),
            backoff: Backoff {
                base: self.retry_base.unwrap_or(defaults.backoff.base),
                max: self.retry_max.unwrap_or(defaults.backoff.max),
            },
            poll_interval: self.poll_interval.unwrap_or(defaults.poll_interval),
            allow_http_loopback: self.allow_http_loopback,
            log_sink: self.log_sink,
            accepted_number_prefixes: settings::number_prefixes(&self.accepted_number_prefixes),
            app_name: self.app_name.clone().filter(|name| !name.is_empty()),
        }
    }
}

fn millis(text: &str) -> Result<Duration, String> {
    settings::parse_duration(text, Duration::from_millis(1))
}
fn seconds(text: &str) -> Result<Duration, String> {
    settings::parse_duration(text, Duration::from_secs(1))
}

/// A run claims this long, then the next begins (with its housekeeping), as pg_cron's do.
const RUN_LENGTH: Duration = Duration::from_secs(60);
/// Reconnecting after a lost connection waits this long, doubling up to RECONNECT_MAX.
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Why the worker ended.
enum Ended {
    /// Stopped by a signal, everything recorded.
    Stopped,
    /// The connection or a statement failed: reconnect.
    Lost(String),
    /// Nothing to retry (no schema, no privilege): exit non-zero.
    Fatal(String),
}

fn main() {
    let args = Args::parse();
    let log = Logger {
        format: args.log_format,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A second signal, once stopping, exits at once (status 1).
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .expect("signal handler");
        signal_hook::flag::register(signal, stop.clone()).expect("signal handler");
    }
    let target = match connection::parse(&args.database_url) {
        Ok(target) => Arc::new(target),
        Err(e) => exit_with(&log, &e),
    };
    if args.check {
        check(&target, &log);
    }
    let settings = args.settings();
    let status = metrics::Status::new();
    if let Some(addr) = &args.metrics_addr {
        // Healthy while steps commit: one ends at least every poll interval, and a run's
        // housekeeping or a slow commit may take a few seconds more.
        let within = settings.poll_interval * 4 + Duration::from_secs(10);
        if let Err(e) = metrics::serve(addr, target.clone(), status.clone(), within) {
            exit_with(&log, &e);
        }
    }
    if let Some(addr) = &args.receipts_addr {
        let public_url = args.receipts_url.clone();
        if let Err(e) = receipts::serve(addr, public_url, target.clone(), log) {
            exit_with(&log, &e);
        }
    }
    let process = Process {
        settings: &settings,
        log: &log,
        stop: &stop,
        status: &status,
        run_for: args.run_for,
    };
    let mut worker = Worker::default();
    // Jobs the threads had not started when a connection was lost: given back first.
    let mut abandoned = Vec::new();
    let mut connected_once = false;
    let mut wait = RECONNECT_FIRST;
    // Numbered across connections: a claim made on a lost one never counts as committed.
    let mut transactions = Transactions::default();
    loop {
        let ended = match target.connect() {
            Ok(mut client) => {
                if !connected_once {
                    log.info(&format!(
                        "mysmshook-worker {} connected; concurrency {}",
                        env!("CARGO_PKG_VERSION"),
                        settings.concurrency
                    ));
                }
                connected_once = true;
                status.connected.store(true, Ordering::Relaxed);
                let abandoned = std::mem::take(&mut abandoned);
                deliver(
                    &mut client,
                    &mut worker,
                    abandoned,
                    &process,
                    &mut transactions,
                    &mut wait,
                )
            }
            // Never connected: a wrong password, host or database is the operator's to fix.
            Err(e) if !connected_once => Ended::Fatal(format!("could not connect: {e}")),
            Err(e) => Ended::Lost(format!("could not connect: {e}")),
        };
        match ended {
            Ended::Stopped => {
                log.info("mysmshook-worker stopped");
                return;
            }
            Ended::Fatal(e) => exit_with(&log, &e),
            Ended::Lost(e) => {
                status.connected.store(false, Ordering::Relaxed);
                status.reconnects.fetch_add(1, Ordering::Relaxed);
                // Nobody would record what the threads start now, under leases no longer renewed.
                abandoned.extend(worker.withdrawer().withdraw());
                worker.end();
                if stop.load(Ordering::Relaxed) {
                    log.warn(&format!("{e}; stopping: the leases cover what was held"));
                    return;
                }
                log.warn(&format!("{e}; connecting again in {wait:?}"));
                sleep_unless_stopped(wait, &stop);
                wait = (wait * 2).min(RECONNECT_MAX);
            }
        }
    }
}

/// --check: the configuration's problems on standard output, one a line; exit 0 if none, 1 if
/// some, 2 if it could not be read (a script can tell a wrong configuration from no answer).
fn check(target: &connection::Target, log: &Logger) -> ! {
    let document = target.connect().and_then(|mut client| {
        client
            .query_typed(sql::WORKER_CONFIG, &[])
            .map(|rows| rows.first().map(|row| row.get::<_, serde_json::Value>(0)))
            .map_err(|e| connection::describe_error(&e))
    });
    let problems = match document {
        Ok(document) => mysmshook_engine::config::problems(document.unwrap_or_default()),
        Err(e) => Err(e),
    };
    match problems {
        Ok(problems) if problems.is_empty() => {
            println!("the providers and templates are valid");
            std::process::exit(0)
        }
        Ok(problems) => {
            for problem in &problems {
                println!("{problem}");
            }
            std::process::exit(1)
        }
        Err(e) => {
            log.error(&e);
            std::process::exit(2)
        }
    }
}

fn exit_with(log: &Logger, message: &str) -> ! {
    log.error(message);
    std::process::exit(1);
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let until = Instant::now() + total;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the delivery loop works with besides its connection and worker.
struct Process<'a> {
    settings: &'a Settings,
    log: &'a Logger,
    stop: &'a AtomicBool,
    status: &'a metrics::Status,
    /// One run of this long, then exit; without, runs of RUN_LENGTH until stopped.
    run_for: Option<Duration>,
}

/// The worker's transactions, numbered across connections: the latest, the last that committed,
/// those that surely rolled back (a statement failed, the connection was lost before COMMIT, or
/// COMMIT was answered with an error) and those whose COMMIT got no answer.
#[derive(Default)]
pub struct Transactions {
    latest: u64,
    last_committed: u64,
    rolled_back: Vec<u64>,
    unanswered: Vec<u64>,
}

/// Only the last few matter: the engine asks about the step before, within a lease.
const TRANSACTIONS_KEPT: usize = 64;

impl Transactions {
    pub fn committed(&self, number: u64) -> bool {
        number <= self.last_committed
            && !self.rolled_back.contains(&number)
            && !self.unanswered.contains(&number)
    }

    pub fn rolled_back(&self, number: u64) -> bool {
        self.rolled_back.contains(&number)
    }

    fn failed(&mut self, number: u64, in_commit_unanswered: bool) {
        let list = if in_commit_unanswered {
            &mut self.unanswered
        } else {
            &mut self.rolled_back
        };
        list.push(number);
        if list.len() > TRANSACTIONS_KEPT {
            list.remove(0);
        }
    }
}

/// What a step (or a run's beginning or stop) does inside its transaction.
type InTransaction<'f> =
    dyn FnMut(&mut Worker, &mut PgHost) -> Result<Option<StepState>, HostError> + 'f;

/// Runs the engine on one connection until stopped or the connection fails.
/// `wait`, the reconnection backoff, starts over once a step has committed.
fn deliver(
    client: &mut postgres::Client,
    worker: &mut Worker,
    abandoned: Vec<mysmshook_engine::delivery::Delivery>,
    process: &Process,
    transactions: &mut Transactions,
    wait: &mut Duration,
) -> Ended {
    let Process {
        settings,
        log,
        stop,
        status,
        run_for,
    } = *process;
    if let Err(ended) = check_schema(client) {
        return ended;
    }
    let mut stopping = false;
    let database_prefixes = std::cell::RefCell::new(Vec::new());
    // Runs one step (or the run's beginning) in a transaction of its own and commits it.
    let mut in_transaction =
        |worker: &mut Worker, f: &mut InTransaction| -> Result<Option<StepState>, Ended> {
            transactions.latest += 1;
            let number = transactions.latest;
            let mut unanswered = false;
            let stepped = (|| {
                let mut tx = client.transaction().map_err(lost)?;
                tx.batch_execute(sql::COMMIT_DURABLY).map_err(lost)?;
                let mut host = PgHost {
                    tx: &mut tx,
                    settings,
                    database_prefixes: &database_prefixes,
                    log,
                    transaction: number,
                    transactions,
                    idle: Default::default(),
                };
                let state = f(worker, &mut host).map_err(classify)?;
                let idle = host.idle.get();
                tx.commit().map_err(|e| {
                    // No answer to COMMIT: the server may have committed.
                    unanswered = e.as_db_error().is_none();
                    lost(e)
                })?;
                Ok((state, idle))
            })();
            let (state, idle) = match stepped {
                Ok(done) => done,
                Err(ended) => {
                    transactions.failed(number, unanswered);
                    return Err(ended);
                }
            };
            transactions.last_committed = number;
            *wait = RECONNECT_FIRST;
            status.stepped();
            // Idle: wait with no transaction open.
            sleep_unless_stopped(idle, stop);
            Ok(state)
        };
    let mut abandoned = Some(abandoned);
    loop {
        let begun = in_transaction(worker, &mut |worker, host| {
            let abandoned = abandoned.take().unwrap_or_default();
            host.read_number_prefixes()?;
            worker.begin(host, run_for.unwrap_or(RUN_LENGTH), true, abandoned)?;
            Ok(None)
        });
        if let Err(ended) = begun {
            return ended;
        }
        loop {
            if stop.load(Ordering::Relaxed) && !stopping {
                stopping = true;
                log.info("mysmshook-worker stopping: finishing what is in flight");
                if let Err(ended) = in_transaction(worker, &mut |worker, host| {
                    worker.stop(host)?;
                    Ok(None)
                }) {
                    return ended;
                }
            }
            let before = worker.delivered();
            let stepped = in_transaction(worker, &mut |worker, host| worker.step(host).map(Some));
            let delivered = worker.delivered().saturating_sub(before);
            status
                .delivered
                .fetch_add(delivered as u64, Ordering::Relaxed);
            match stepped {
                Ok(Some(StepState::Done)) if stopping || run_for.is_some() => {
                    return Ended::Stopped
                }
                Ok(Some(StepState::Done)) => break,
                Ok(_) => {}
                Err(ended) => return ended,
            }
        }
    }
}

/// The database must have mysmshook's schema, at least the version of this engine's SQL.
fn check_schema(client: &mut postgres::Client) -> Result<(), Ended> {
    let current: bool = client
        .query_typed(
            sql::SCHEMA_IS_CURRENT,
            &[(&sql::NEWEST_FUNCTION, Type::TEXT)],
        )
        .map_err(lost)?
        .first()
        .map(|row| row.get(0))
        .unwrap_or(false);
    if !current {
        return Err(Ended::Fatal(format!(
            "this database has no mysmshook schema of version {} or later \
             (CREATE EXTENSION mysmshook, or ALTER EXTENSION mysmshook UPDATE)",
            env!("CARGO_PKG_VERSION")
        )));
    }
    Ok(())
}

fn lost(e: postgres::Error) -> Ended {
    classify(HostError::Db(e))
}

/// A lost connection is retried; an error the server answered is the operator's to fix.
fn classify(e: HostError) -> Ended {
    match &e {
        HostError::Db(db) if db.as_db_error().is_none() || db.is_closed() => {
            Ended::Lost(e.to_string())
        }
        HostError::Db(db) => match db.as_db_error().map(|d| d.code().code()) {
            // The server went away under us (admin shutdown, crash, a pooler that lost it), a
            // failover left us on a standby (25006), or it is short of resources (53).
            Some(code)
                if code.starts_with("57P")
                    || code.starts_with("08")
                    || code.starts_with("53")
                    || code == "25006" =>
            {
                Ended::Lost(e.to_string())
            }
            Some("42501") => Ended::Fatal(format!(
                "{e}: give the role mysmshook's worker access: \
                 select mysmshook.grant_worker_access('role', remote => true)"
            )),
            // Serialization failures, deadlocks, a statement or lock timeout: try again.
            Some(code) if code.starts_with("40") || code == "57014" || code == "55P03" => {
                Ended::Lost(e.to_string())
            }
            _ => Ended::Fatal(e.to_string()),
        },
        HostError::Config(_) => Ended::Fatal(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_without_an_answer_is_neither_committed_nor_rolled_back() {
        let mut transactions = Transactions::default();
        for number in 1..=4 {
            transactions.latest = number;
            match number {
                2 => transactions.failed(number, false),
                3 => transactions.failed(number, true),
                _ => transactions.last_committed = number,
            }
        }
        assert!(transactions.committed(1) && transactions.committed(4));
        assert!(!transactions.committed(2) && transactions.rolled_back(2));
        assert!(!transactions.committed(3) && !transactions.rolled_back(3));
        assert!(!transactions.committed(5) && !transactions.rolled_back(5));
    }
}
