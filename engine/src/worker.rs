//! The delivery run, the same in both hosts: claims jobs, hands them to the HTTP threads,
//! records their outcomes in groups, keeps its leases alive, and knows when to stop. The host
//! (the extension's backend, or mysmshook-worker's connection) runs it a step at a time and
//! commits after each step; every state change is a function of sql/queue.sql, called through
//! [`Host`].
//!
//! A step waits at most ~100 ms for answers, records them in one statement, renews leases,
//! claims more if threads are free, and returns so that the host commits. Jobs claimed in a
//! step are handed to the threads only in the next step, once their claim is committed; until
//! then another worker could not see the lease, and a rollback would hand them out again.
//!
//! A worker claims only what its threads will start within about a step (free threads, plus
//! requests expected to end by then), so that a job it could not start soon stays in line for
//! another worker. A provider that is slow or has not answered yet gets at most
//! `provider_share` of the threads (the bulkhead, pool.rs): a job whose provider's share is
//! busy is *parked* here, still claimed, and handed to a thread again when that provider has
//! room; one parked longer than `http_timeout` is given back (no retry charged).

use crate::config::Config;
use crate::delivery::{Answer, ClaimedJob, Delivery, Env, LeaseClock, Record};
use crate::http;
use crate::pause::Pauses;
use crate::pool::{Bulkhead, Pool, Withdrawer};
use crate::settings::Settings;
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// What a run needs from where it runs: the queue's functions (sql/queue.sql), the settings,
/// and the host's own ways to tell whether a claim committed, to log and to be interrupted.
pub trait Host {
    type Error;
    /// The settings now (read at the start of a run and when the configuration is checked).
    fn settings(&self) -> Settings;
    /// `mysmshook.claim_jobs`.
    fn claim(
        &mut self,
        max_jobs: i32,
        lease: Duration,
        token: &str,
    ) -> Result<Vec<ClaimedJob>, Self::Error>;
    /// `mysmshook.renew_leases`: how many jobs' leases moved.
    fn renew(&mut self, tokens: Vec<String>, lease: Duration) -> Result<i32, Self::Error>;
    /// `mysmshook.release_jobs`: (job id, claim token) pairs, given back without a charge.
    fn release(&mut self, jobs: Vec<(String, String)>) -> Result<i32, Self::Error>;
    /// `mysmshook.record_outcomes`: the jobs whose outcome did not count for their claim, with
    /// what became of it ('late', 'missing', or 'busy' while another transaction holds it).
    fn record(&mut self, records: &[Record]) -> Result<Vec<(String, String)>, Self::Error>;
    /// `mysmshook.rescue_expired_leases`.
    fn rescue_expired_leases(&mut self) -> Result<i32, Self::Error>;
    /// `mysmshook.config_fingerprint`.
    fn config_fingerprint(&mut self, vault_names: &[String]) -> Result<String, Self::Error>;
    /// `mysmshook.worker_config()`'s document.
    fn worker_config(&mut self) -> Result<serde_json::Value, Self::Error>;
    /// `mysmshook.worker_housekeeping`: pruning, late receipts, paused jobs that expired.
    fn housekeeping(&mut self) -> Result<(), Self::Error>;
    /// A mark of the transaction a claim was just made in...
    fn transaction_mark(&self) -> u64;
    /// ...and, at the next step, whether that transaction committed. A host may refuse to go on
    /// (an error) if it is still the same transaction.
    fn committed(&self, mark: u64) -> bool;
    /// Whether that transaction surely rolled back. A host that cannot tell (its COMMIT got no
    /// answer) says no: outcomes recorded again could undo what became of their jobs since.
    fn rolled_back(&self, mark: u64) -> bool {
        !self.committed(mark)
    }
    /// Who sends: kept with every attempt (a backend pid, or the worker process's id).
    fn worker_id(&self) -> i32;
    /// Called often while waiting: the extension's backend handles a cancel here.
    fn check_interrupts(&self) {}
    /// A step starts: the extension restarts statement_timeout here.
    fn step_started(&self) {}
    /// Nothing to do: wait this long before the next step. The step waits here by default; a
    /// host whose transaction would hold a pooler's connection meanwhile waits after its commit.
    fn idle(&self, wait: Duration) {
        sleep_interruptibly(self, wait);
    }
    fn warn(&self, message: &str);
    /// One line of a provider's log (the built-in `log` provider, mysmshook.log_sink).
    fn log(&self, line: &str);
    /// Called when a configuration document could not be read.
    fn config_error(&self, message: String) -> Self::Error;
}

/// Answers wait this long at most before they are recorded and committed...
const GROUP_WINDOW: Duration = Duration::from_millis(100);
/// ...or until this many have come back (or one per thread, if there are more threads): enough
/// to spread a statement and a commit over many jobs when the provider answers fast.
const GROUP_MIN: usize = 32;
/// Waits are cut into slices this long, to notice a cancel or a statement timeout promptly.
const SLICE: Duration = Duration::from_millis(10);
/// The lease the threads rely on ends this much before the one in the table.
const LEASE_MARGIN: Duration = Duration::from_millis(500);
/// Leases of other workers, and whether the configuration changed, are checked at most this
/// often while a run claims.
const RESCUE_EVERY: Duration = Duration::from_secs(1);
const CONFIG_CHECK_EVERY: Duration = Duration::from_secs(1);
/// A claim takes what the threads will start within about this long: a step, and the commit
/// before its jobs reach the threads.
const CLAIM_AHEAD: Duration = Duration::from_millis(200);
/// A request that takes this long (or half of http_timeout, if less) makes its provider slow:
/// it gets only its share of the threads (mysmshook.provider_share).
const SLOW_REQUEST: Duration = Duration::from_secs(1);
/// Jobs parked for their provider's share, at most: beyond, the worker claims nothing more.
const PARKED_MAX: usize = 64;

/// How a step ended, for the procedure's loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    Busy,
    Idle,
    Done,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Busy => "busy",
            StepState::Idle => "idle",
            StepState::Done => "done",
        }
    }
}

/// What a host keeps between runs: the threads and their connections, the configuration, and
/// the jobs it still holds (an answer may come back after the run that sent it failed).
#[derive(Default)]
pub struct Worker {
    pool: Pool<Delivery>,
    cached: Option<Cached>,
    /// The pauses as last read: jobs already claimed (queued for a thread) see a new pause too.
    pauses: Arc<RwLock<Pauses>>,
    /// Jobs held per claim token: what renewals cover.
    held: HashMap<String, usize>,
    /// Late outcomes whose jobs another transaction held (record_outcomes said 'busy'): tried
    /// again with the next step's, in this run or the next, instead of waiting for it.
    unrecorded: Vec<Record>,
    /// Since when the oldest of them has waited: past a lease they are dropped, with a warning
    /// (the job is sent again, within the documented bound).
    unrecorded_since: Option<Instant>,
    /// Outcomes recorded in a transaction not yet known to have committed: should it have rolled
    /// back (a failed statement or commit, a lost connection), they are recorded again, so that
    /// a message sent is not sent again once its lease lapses.
    recorded_in: Option<Recorded>,
    /// Claimed in the last step, handed to the threads once that claim is committed...
    claimed: Vec<Delivery>,
    /// ...which the host tells by this mark of the claim's transaction.
    claimed_by: u64,
    /// Each provider's share of the threads, and how long its requests take.
    bulkhead: Arc<Bulkhead>,
    /// Claimed jobs whose first provider had its share busy: still ours, waiting without a
    /// thread, oldest first.
    parked: Vec<Parked>,
    run: Option<Run>,
}

struct Recorded {
    /// The transaction's mark.
    mark: u64,
    /// Past this their jobs' leases have lapsed: recorded again, they could undo what became of
    /// the jobs since (the lease is what the documented bound on repeats rests on).
    until: Instant,
    records: Vec<Record>,
}

struct Parked {
    delivery: Delivery,
    provider: String,
    since: Instant,
}

struct Cached {
    fingerprint: String,
    config: Arc<Config>,
    http: Arc<http::Client>,
    /// What `http` was built with: http_timeout, allow_http_loopback, concurrency.
    http_settings: (Duration, bool, usize),
}

struct Run {
    /// Claims commit between steps (the procedure); false in one transaction (the function).
    committing: bool,
    /// No claims after this, except to fill the first batch.
    deadline: Instant,
    batch_size: i32,
    claimed: i32,
    delivered: i32,
    concurrency: usize,
    poll_interval: Duration,
    lease_len: Duration,
    /// The configuration lengthened the longest chain: renew at the next step, so that the
    /// jobs held and those claimed next get a lease their chain fits in.
    renew_now: bool,
    /// This step gave jobs back: it claims none, or it would take the same jobs again at once.
    released_in_step: bool,
    lease: Arc<LeaseClock>,
    /// A renewal or claim made in the last step: the threads may rely on it once committed.
    lease_pending: Option<Instant>,
    env: Arc<Env>,
    /// The last claim that found fewer jobs than it asked for.
    short_claim_at: Option<Instant>,
    rescued_at: Option<Instant>,
    config_checked_at: Instant,
    /// The host's statement_timeout applies to each step instead of the whole run.
    per_step_timeout: bool,
    /// Stopping (a signal): nothing more is claimed, and what was not started went back.
    stopping: bool,
}

/// The lease a run takes: mysmshook.lease, raised to twice the worst case of the longest chain
/// plus a second (renewed at half time, so a request with the worst case can always start).
fn lease_for(env: &Env, lease: Duration) -> Duration {
    let worst_case = env
        .http_timeout
        .saturating_mul(env.config.longest_chain() as u32);
    lease.max(worst_case * 2 + Duration::from_secs(1))
}

impl Worker {
    /// Starts a run. `poll_for`: how long to keep claiming new work. `committing`: the host
    /// commits after every step (otherwise the whole run is one transaction, and the row locks,
    /// not the lease, keep the jobs ours). `abandoned`: jobs an aborted run of this host had
    /// claimed and not started (see [`Worker::withdrawer`]), given back first.
    pub fn begin<H: Host>(
        &mut self,
        host: &mut H,
        poll_for: Duration,
        committing: bool,
        abandoned: Vec<Delivery>,
    ) -> Result<(), H::Error> {
        self.confirm_recorded(host);
        self.give_back_abandoned(host, abandoned)?;
        let settings = host.settings();
        // Also in one transaction (the seed documents' cron line): it may be the only worker.
        host.housekeeping()?;
        let lease = Arc::new(if committing {
            LeaseClock::new()
        } else {
            LeaseClock::unbounded()
        });
        let env = self.env(host, &settings, lease.clone())?;
        let concurrency = settings.concurrency;
        self.pool.ensure_threads(concurrency);
        self.bulkhead.configure(
            concurrency,
            settings.provider_share,
            SLOW_REQUEST.min(env.http_timeout / 2),
        );
        let lease_len = lease_for(&env, settings.lease);
        self.run = Some(Run {
            committing,
            deadline: Instant::now() + poll_for,
            batch_size: settings.batch_size,
            claimed: 0,
            delivered: 0,
            concurrency,
            poll_interval: settings.poll_interval,
            lease_len,
            renew_now: false,
            released_in_step: false,
            lease,
            lease_pending: None,
            env,
            short_claim_at: None,
            rescued_at: None,
            config_checked_at: Instant::now(),
            per_step_timeout: committing && !poll_for.is_zero(),
            stopping: false,
        });
        Ok(())
    }

    /// Whether a run has begun (and not been dropped by [`Worker::end`]).
    pub fn running(&self) -> bool {
        self.run.is_some()
    }

    /// Jobs delivered by the run so far.
    pub fn delivered(&self) -> i32 {
        self.run.as_ref().map_or(0, |r| r.delivered)
    }

    /// Forgets the run (its host lost its transaction or connection): what the threads still
    /// run is recorded by the next run, as after an aborted step.
    pub fn end(&mut self) {
        self.run = None;
    }

    /// Takes the jobs the threads have not started, for a host whose transaction aborts: nobody
    /// would record them. The host gives them to the next [`Worker::begin`].
    pub fn withdrawer(&self) -> Withdrawer<Delivery> {
        self.pool.withdrawer()
    }

    /// Stops the run (a signal): nothing more is claimed; what the threads have not started,
    /// and what was claimed or parked for them, goes back at once without a retry charged.
    /// The steps that follow record what is in flight and end the run.
    pub fn stop<H: Host>(&mut self, host: &mut H) -> Result<(), H::Error> {
        let Some(run) = self.run.as_mut() else {
            return Ok(());
        };
        run.stopping = true;
        // give_back_abandoned forgets them in the pool's count.
        let unstarted = self.pool.withdrawer().withdraw();
        self.give_back_abandoned(host, unstarted)
    }

    /// One step of the run started by [`Worker::begin`]; the host commits after it.
    pub fn step<H: Host>(&mut self, host: &mut H) -> Result<StepState, H::Error> {
        self.confirm_recorded(host);
        let run = self
            .run
            .as_mut()
            .expect("Worker::step() called without Worker::begin()");
        if run.per_step_timeout {
            host.step_started();
        }
        if run.config_checked_at.elapsed() >= CONFIG_CHECK_EVERY {
            self.refresh_config(host)?;
        }
        let run = self.run.as_mut().expect("a run");
        // The last step committed: its claims and renewals hold now.
        if let Some(valid_until) = run.lease_pending.take() {
            run.lease.set(valid_until);
        }
        let claimed = std::mem::take(&mut self.claimed);
        if !claimed.is_empty() && self.claim_committed(host, claimed.len()) {
            self.pool.submit(claimed);
        } else {
            for delivery in &claimed {
                self.let_go(&delivery.job.token);
            }
        }
        self.unpark();

        self.run.as_mut().expect("a run").released_in_step = false;
        let answers = self.collect_answers(host);
        self.record(host, answers)?;
        self.give_back_parked(host)?;
        self.renew_leases(host)?;
        let claimed = self.claim(host)?;

        let run = self.run.as_mut().expect("a run");
        let idle =
            self.pool.outstanding() == 0 && self.claimed.is_empty() && self.parked.is_empty();
        Ok(if claimed > 0 || !idle {
            StepState::Busy
        } else if !self.unrecorded.is_empty() {
            // Late outcomes an operator's transaction holds back: the run records them before
            // it ends (within a lease), a step at a time, waiting for no one.
            sleep_interruptibly(host, GROUP_WINDOW);
            StepState::Busy
        } else if run.may_claim() && Instant::now() < run.deadline {
            host.idle(run.poll_interval.min(run.deadline - Instant::now()));
            StepState::Idle
        } else {
            StepState::Done
        })
    }

    /// Waits up to GROUP_WINDOW for answers; returns sooner when a group is full or the threads
    /// are running out of queued work that a claim could give them (a thread is idle, or half
    /// a group could be claimed).
    fn collect_answers<H: Host>(&mut self, host: &H) -> Vec<Answer> {
        let started = Instant::now();
        let mut answers = Vec::new();
        while self.pool.outstanding() > 0 || !self.parked.is_empty() {
            if self.pool.outstanding() == 0 {
                // Parked jobs only (their provider busy with requests of an earlier run).
                sleep_interruptibly(host, SLICE);
                self.unpark();
            } else if let Some(answer) = self.pool.answer(SLICE) {
                answers.push(answer);
                while let Some(more) = self.pool.answer(Duration::ZERO) {
                    answers.push(more);
                }
                // A request ended: a job waiting for its provider's share may start now.
                self.unpark();
            }
            host.check_interrupts();
            let run = self.run.as_ref().expect("a run");
            let group = run.group();
            if answers.len() >= group || started.elapsed() >= GROUP_WINDOW {
                break;
            }
            let refill =
                run.may_claim() && run.claims_find_work() && self.pool.queued() < group / 2 + 1;
            if refill {
                let room = self.room();
                if room > group / 2 || (room > 0 && self.idle_threads() > 0) {
                    break;
                }
            }
        }
        answers
    }

    fn record<H: Host>(&mut self, host: &mut H, answers: Vec<Answer>) -> Result<(), H::Error> {
        let mut records: Vec<Record> = Vec::new();
        let mut releases = Vec::new();
        let run = self.run.as_ref().expect("a run");
        for answer in answers {
            match answer {
                Answer::Record(record) => records.push(*record),
                Answer::Release { job_id, token } => releases.push((job_id, token)),
                Answer::Park {
                    job,
                    provider,
                    lease,
                } if Arc::ptr_eq(&lease, &run.lease) => self.parked.push(Parked {
                    delivery: Delivery {
                        job: *job,
                        env: run.env.clone(),
                    },
                    provider,
                    since: Instant::now(),
                }),
                // Handed out by an earlier run that failed: not ours to send on this run's lease.
                Answer::Park { job, .. } => releases.push((job.job_id, job.token)),
            }
        }
        for (_, token) in &releases {
            self.let_go(token);
        }
        if !releases.is_empty() {
            self.run.as_mut().expect("a run").released_in_step = true;
            host.release(releases)?;
        }
        for record in &records {
            self.let_go(&record.token);
        }
        // Outcomes an operator's transaction kept from being recorded go first.
        let retried = self.unrecorded.len();
        records.splice(0..0, std::mem::take(&mut self.unrecorded));
        if records.is_empty() {
            return Ok(());
        }
        let run = self.run.as_ref().expect("a run");
        let until = Instant::now() + run.lease_len;
        if run.committing {
            // Should the statement itself fail, they are recorded again all the same.
            self.recorded_in = Some(Recorded {
                mark: host.transaction_mark(),
                until,
                records: records.clone(),
            });
        }
        let not_recorded = host.record(&records)?;
        let busy: HashSet<&str> = not_recorded
            .iter()
            .filter(|(_, what)| what == "busy")
            .map(|(job_id, _)| job_id.as_str())
            .collect();
        let (kept, recorded): (Vec<Record>, Vec<Record>) = records
            .into_iter()
            .partition(|record| busy.contains(record.job_id.as_str()));
        let run = self.run.as_mut().expect("a run");
        for record in &recorded {
            if record.status == "completed" {
                run.delivered += 1;
            }
            for line in &record.log {
                host.log(line);
            }
            for warning in &record.warnings {
                host.warn(&format!("mysmshook: job {}: {warning}", record.job_id));
            }
        }
        if self.run.as_ref().expect("a run").committing {
            // Recorded or late (the busy ones wait in `unrecorded`).
            self.recorded_in = (!recorded.is_empty()).then(|| Recorded {
                mark: host.transaction_mark(),
                until,
                records: recorded,
            });
        }
        for (job_id, what) in not_recorded.iter().filter(|(_, what)| what != "busy") {
            host.warn(&format!(
                "mysmshook: job {job_id}: outcome arrived after the lease passed ({what}); kept in its attempts"
            ));
        }
        if kept.len() > retried {
            host.warn(&format!(
                "mysmshook: {} late outcomes wait for another transaction that holds their jobs; \
                 recorded once it ends (within a lease)",
                kept.len()
            ));
        }
        let run = self.run.as_ref().expect("a run");
        self.unrecorded_since = match self.unrecorded_since {
            _ if kept.is_empty() => None,
            Some(since) if since.elapsed() > run.lease_len => {
                host.warn(&format!(
                    "mysmshook: {} late outcomes dropped: another transaction held their jobs \
                     for longer than a lease; those jobs may be sent again",
                    kept.len()
                ));
                self.unrecorded = Vec::new();
                return Ok(());
            }
            since => Some(since.unwrap_or_else(Instant::now)),
        };
        self.unrecorded = kept;
        Ok(())
    }

    /// Outcomes recorded in a transaction that rolled back go first in the next record, within
    /// their lease.
    fn confirm_recorded<H: Host>(&mut self, host: &H) {
        let Some(recorded) = self.recorded_in.take() else {
            return;
        };
        if recorded.mark != 0 && recorded.mark == host.transaction_mark() {
            // Still this transaction (a session driving the steps by hand): not known yet.
            self.recorded_in = Some(recorded);
        } else if host.rolled_back(recorded.mark) {
            let count = recorded.records.len();
            if Instant::now() < recorded.until {
                host.warn(&format!(
                    "mysmshook: the outcomes of {count} jobs were rolled back; recording them again"
                ));
                self.unrecorded.splice(0..0, recorded.records);
            } else {
                host.warn(&format!(
                    "mysmshook: the outcomes of {count} jobs were rolled back and their leases \
                     have lapsed: they may be sent again"
                ));
            }
        }
    }

    /// Whether the last step's claim committed (the host knows). Rolled back: the jobs are
    /// waiting again, not ours to send.
    fn claim_committed<H: Host>(&self, host: &H, jobs: usize) -> bool {
        if host.committed(self.claimed_by) {
            return true;
        }
        host.warn(&format!(
            "mysmshook: the claim of {jobs} jobs was rolled back; they wait for the next run"
        ));
        false
    }

    fn let_go(&mut self, token: &str) {
        if let Some(count) = self.held.get_mut(token) {
            *count -= 1;
            if *count == 0 {
                self.held.remove(token);
            }
        }
    }

    /// Extends the leases once half of one has passed.
    fn renew_leases<H: Host>(&mut self, host: &mut H) -> Result<(), H::Error> {
        let run = self.run.as_mut().expect("a run");
        let due = run.renew_now || run.lease.remaining() <= run.lease_len / 2;
        if !run.committing || self.held.is_empty() || !due {
            return Ok(());
        }
        run.renew_now = false;
        let before = Instant::now();
        let renewed = host.renew(self.held.keys().cloned().collect(), run.lease_len)?;
        // renew_leases skips a row another transaction has locked, and a job rescued from us
        // is no longer ours: either way some lease did not move. The threads keep to the old
        // one, and the next step tries again.
        if renewed as usize == self.held.values().sum::<usize>() {
            run.lease_pending = Some(before + run.lease_len - LEASE_MARGIN);
        }
        Ok(())
    }

    /// How many jobs a claim may take: what the threads will start within about a step (see
    /// claim_room). Parked jobs do not count (they wait for their provider, not for a thread),
    /// up to PARKED_MAX.
    fn room(&self) -> usize {
        let run = self.run.as_ref().expect("a run");
        // Parked jobs whose provider is no longer held to its share wait for a thread like the
        // queued ones (they go to one at the next step): the claim leaves room for them.
        let parked_for_threads = self
            .parked
            .iter()
            .filter(|p| !self.bulkhead.limited(&p.provider))
            .count();
        let mut room = claim_room(
            run.concurrency,
            run.group(),
            self.pool.outstanding() + parked_for_threads,
            self.pool.queued() + parked_for_threads,
            self.claimed.len(),
            self.bulkhead.expected_ends(CLAIM_AHEAD),
        );
        if self.parked.len() >= PARKED_MAX {
            room = 0;
        }
        if Instant::now() >= run.deadline {
            room = room.min((run.batch_size - run.claimed).max(0) as usize);
        }
        room
    }

    /// Threads with nothing to start: not running, nothing queued or claimed for them.
    fn idle_threads(&self) -> usize {
        let run = self.run.as_ref().expect("a run");
        run.concurrency
            .saturating_sub(self.pool.outstanding() + self.claimed.len())
    }

    fn claim<H: Host>(&mut self, host: &mut H) -> Result<usize, H::Error> {
        let room = self.room();
        let run = self.run.as_ref().expect("a run");
        // Claim in useful amounts (the same threshold that ends collect_answers' wait early):
        // half a group or more, or anything when a thread would idle otherwise.
        let worth_it =
            room > run.group() / 2 || self.pool.outstanding() == 0 || self.idle_threads() > 0;
        if !run.may_claim() || room == 0 || !worth_it || run.released_in_step {
            return Ok(0);
        }
        let run = self.run.as_mut().expect("a run");
        if run.rescued_at.is_none_or(|at| at.elapsed() >= RESCUE_EVERY) {
            host.rescue_expired_leases()?;
            run.rescued_at = Some(Instant::now());
        }
        let token = new_token();
        let before = Instant::now();
        let jobs = host.claim(room as i32, run.lease_len, &token)?;
        run.claimed += jobs.len() as i32;
        run.short_claim_at = (jobs.len() < room).then(Instant::now);
        if jobs.is_empty() {
            return Ok(0);
        }
        // In one transaction (dequeue_and_run_jobs) the clock stays unbounded: the row locks,
        // not the lease, keep the jobs ours until the transaction ends.
        if run.committing && self.held.is_empty() {
            run.lease_pending = Some(before + run.lease_len - LEASE_MARGIN);
        }
        self.held.insert(token, jobs.len());
        let count = jobs.len();
        let env = run.env.clone();
        let deliveries = jobs.into_iter().map(|job| Delivery {
            job,
            env: env.clone(),
        });
        if run.committing {
            self.claimed.extend(deliveries);
            self.claimed_by = host.transaction_mark();
        } else {
            // One transaction: our row locks keep the jobs ours until it ends.
            self.pool.submit(deliveries);
        }
        Ok(count)
    }

    /// Picks up a configuration that changed since this backend last read it.
    fn refresh_config<H: Host>(&mut self, host: &mut H) -> Result<(), H::Error> {
        let lease = self.run.as_ref().expect("a run").lease.clone();
        let settings = host.settings();
        let env = self.env(host, &settings, lease)?;
        let run = self.run.as_mut().expect("a run");
        // A chain lengthened during the run (an operator adds a provider mid-incident): its
        // worst case must fit in the lease of the jobs that take it.
        let lease_len = lease_for(&env, settings.lease);
        if lease_len > run.lease_len {
            run.lease_len = lease_len;
            run.renew_now = true;
        }
        run.env = env;
        run.config_checked_at = Instant::now();
        Ok(())
    }

    /// The run's shared environment, from the cached configuration (loaded if it changed).
    fn env<H: Host>(
        &mut self,
        host: &mut H,
        settings: &Settings,
        lease: Arc<LeaseClock>,
    ) -> Result<Arc<Env>, H::Error> {
        let vault_names = self
            .cached
            .as_ref()
            .map(|c| c.config.vault_names.clone())
            .unwrap_or_default();
        let fingerprint = host.config_fingerprint(&vault_names)?;
        let http_settings = (
            settings.http_timeout,
            settings.allow_http_loopback,
            settings.concurrency,
        );
        let stale = self
            .cached
            .as_ref()
            .is_none_or(|c| c.fingerprint != fingerprint);
        if stale {
            let document = host.worker_config()?;
            let config = Config::from_json(document, settings.app_name.clone())
                .map_err(|e| host.config_error(e))?;
            let config = Arc::new(config);
            // The secrets it names may differ from the last version's.
            let fingerprint = host.config_fingerprint(&config.vault_names)?;
            let http = match self.cached.take() {
                Some(c) if c.http_settings == http_settings => c.http,
                _ => Arc::new(http::Client::new(
                    http_settings.0,
                    http_settings.1,
                    http_settings.2,
                )),
            };
            self.cached = Some(Cached {
                fingerprint,
                config,
                http,
                http_settings,
            });
        }
        let cached = self.cached.as_mut().expect("loaded above");
        if cached.http_settings != http_settings {
            cached.http = Arc::new(http::Client::new(
                http_settings.0,
                http_settings.1,
                http_settings.2,
            ));
            cached.http_settings = http_settings;
        }
        *self.pauses.write().expect("not poisoned") = cached.config.pauses.clone();
        Ok(Arc::new(Env {
            config: cached.config.clone(),
            pauses: self.pauses.clone(),
            http: cached.http.clone(),
            http_timeout: http_settings.0,
            backoff: settings.backoff,
            lease,
            bulkhead: self.bulkhead.clone(),
            worker: host.worker_id(),
            log_sink: settings.log_sink,
            accepted_number_prefixes: settings.accepted_number_prefixes.clone(),
        }))
    }

    /// Hands parked jobs to the threads again, highest priority and oldest first, as far as
    /// their provider's share has room; a job whose code has expired goes at once (it ends
    /// without a request).
    fn unpark(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        let Some(run) = self.run.as_ref() else {
            return;
        };
        let env = run.env.clone();
        let now = SystemTime::now();
        let mut parked = std::mem::take(&mut self.parked);
        parked.sort_by_key(|p| Reverse(p.delivery.job.priority)); // stable: oldest first
        let mut room: HashMap<String, usize> = HashMap::new();
        let mut ready = Vec::new();
        for p in parked {
            let expired = p.delivery.job.expires_at.is_some_and(|at| at <= now);
            let left = room
                .entry(p.provider.clone())
                .or_insert_with(|| self.bulkhead.room(&p.provider));
            if expired || *left > 0 {
                if !expired {
                    *left -= 1;
                }
                ready.push(Delivery {
                    job: p.delivery.job,
                    env: env.clone(),
                });
            } else {
                self.parked.push(p);
            }
        }
        if !ready.is_empty() {
            self.pool.submit_first(ready);
        }
    }

    /// Gives back, without a retry charged, the jobs parked for longer than one request may
    /// take (http_timeout): their provider is behind a backlog, and another worker whose share
    /// of it has room can send them. A run that goes on claiming may take them again.
    fn give_back_parked<H: Host>(&mut self, host: &mut H) -> Result<(), H::Error> {
        let run = self.run.as_ref().expect("a run");
        let wait = run.env.http_timeout;
        // Only while the provider is still held to its share: one that turned out fast (it was
        // unknown when they parked) takes them at the next steps.
        let overdue = |p: &Parked| p.since.elapsed() >= wait && self.bulkhead.limited(&p.provider);
        if !self.parked.iter().any(overdue) {
            return Ok(());
        }
        let (back, kept): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(overdue);
        self.parked = kept;
        let jobs: Vec<(String, String)> = back
            .into_iter()
            .map(|p| (p.delivery.job.job_id, p.delivery.job.token))
            .collect();
        for (_, token) in &jobs {
            self.let_go(token);
        }
        if !jobs.is_empty() {
            self.run.as_mut().expect("a run").released_in_step = true;
            host.release(jobs)?;
        }
        Ok(())
    }

    /// Gives back what an aborted run claimed but never started, with what this worker still
    /// holds unstarted (claimed, parked).
    fn give_back_abandoned<H: Host>(
        &mut self,
        host: &mut H,
        mut unstarted: Vec<Delivery>,
    ) -> Result<(), H::Error> {
        self.pool.forget(unstarted.len());
        unstarted.append(&mut self.claimed);
        unstarted.extend(self.parked.drain(..).map(|parked| parked.delivery));
        if unstarted.is_empty() {
            return Ok(());
        }
        let jobs: Vec<(String, String)> = unstarted
            .iter()
            .map(|d| (d.job.job_id.clone(), d.job.token.clone()))
            .collect();
        for (_, token) in &jobs {
            self.let_go(token);
        }
        host.release(jobs)?;
        Ok(())
    }
}

impl Run {
    /// Answers recorded together: one per thread, and at least GROUP_MIN.
    fn group(&self) -> usize {
        self.concurrency.max(GROUP_MIN)
    }

    /// Claims continue until the deadline, and past it until the first batch is full.
    fn may_claim(&self) -> bool {
        if self.stopping {
            return false;
        }
        Instant::now() < self.deadline
            || (self.claimed < self.batch_size && self.short_claim_at.is_none())
    }

    /// Whether a claim is likely to find work (none came up short within a poll interval).
    fn claims_find_work(&self) -> bool {
        self.short_claim_at
            .is_none_or(|at| at.elapsed() >= self.poll_interval)
    }
}

/// How many jobs a claim may take. `ahead`: how many jobs the threads now in requests will
/// start within CLAIM_AHEAD; None while nothing is known about the providers, and then, as
/// always, at most what runs plus a group (`concurrency + group` less what is out and claimed).
/// Otherwise only what the threads will start within about a step: the free threads, plus
/// `ahead`, less what already waits for a thread. With providers that answer in tens of
/// milliseconds that is the whole group, as before; with slow ones, one job per free thread, so
/// that a job this worker could not start soon stays in line for another worker.
fn claim_room(
    concurrency: usize,
    group: usize,
    outstanding: usize,
    queued: usize,
    claimed: usize,
    ahead: Option<f64>,
) -> usize {
    let most = (concurrency + group).saturating_sub(outstanding + claimed);
    let Some(ahead) = ahead else {
        return most;
    };
    let running = outstanding.saturating_sub(queued);
    let free = concurrency.saturating_sub(running);
    let ahead = if ahead.is_nan() {
        0
    } else {
        ahead.floor().clamp(0.0, (concurrency + group) as f64) as usize
    };
    (free + ahead).saturating_sub(queued + claimed).min(most)
}

/// A claim token: random, never reused (unlike backend pids).
fn new_token() -> String {
    let bits = fastrand::u128(..);
    // Version 4, variant 1: a well-formed random uuid.
    let bits = (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn sleep_interruptibly<H: Host + ?Sized>(host: &H, total: Duration) {
    let until = Instant::now() + total;
    loop {
        host.check_interrupts();
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(SLICE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_takes_what_the_threads_start_within_a_step() {
        // (concurrency, group, outstanding, queued, claimed, ahead)
        // Nothing known yet: what runs plus a group, as always.
        assert_eq!(claim_room(2, 32, 0, 0, 0, None), 34);
        assert_eq!(claim_room(2, 32, 10, 8, 0, None), 24);
        // Both threads in slow requests that end later than a step: nothing. Another worker
        // with a free thread takes the next job.
        assert_eq!(claim_room(2, 32, 2, 0, 0, Some(0.0)), 0);
        // One of them about to end: one job.
        assert_eq!(claim_room(2, 32, 2, 0, 0, Some(1.0)), 1);
        // A free thread: one job, less what already waits for it.
        assert_eq!(claim_room(2, 32, 1, 0, 0, Some(0.0)), 1);
        assert_eq!(claim_room(2, 32, 2, 1, 0, Some(0.0)), 0);
        assert_eq!(claim_room(2, 32, 1, 0, 1, Some(0.0)), 0);
        // Idle: one per thread.
        assert_eq!(claim_room(16, 32, 0, 0, 0, Some(0.0)), 16);
        // Fast providers: threads that finish several requests a step keep a group queued.
        assert_eq!(claim_room(16, 32, 16, 0, 0, Some(64.0)), 32);
        assert_eq!(claim_room(16, 32, 40, 24, 0, Some(64.0)), 8);
        assert_eq!(claim_room(16, 32, 16, 0, 0, Some(f64::INFINITY)), 32);
        // A 200 ms provider: about one more per thread.
        assert_eq!(claim_room(16, 32, 16, 0, 0, Some(16.5)), 16);
        assert_eq!(claim_room(16, 32, 16, 0, 0, Some(f64::NAN)), 0);
    }

    #[test]
    fn tokens_are_distinct_version_4_uuids() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]), "{a}");
    }
}
