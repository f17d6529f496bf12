//! The backend's HTTP threads: a persistent pool that lives as long as the backend, so that
//! connections (keep-alive, TLS sessions) outlive a batch. Work waits in a queue ordered by
//! priority, then by arrival; answers come back on a channel the backend thread reads. A panic
//! in a piece of work becomes that work's answer (`Work::panicked`) and the thread lives on.
//!
//! The [`Bulkhead`] keeps one slow key (a provider) from occupying every thread.
//!
//! Nothing here touches Postgres: the backend thread submits, collects and records.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub trait Work: Send + 'static {
    type Answer: Send + 'static;
    /// Higher goes first; equal priorities go in submission order.
    fn priority(&self) -> i32;
    fn run(&self) -> Self::Answer;
    fn panicked(&self, message: String) -> Self::Answer;
}

struct Queued<W> {
    priority: i32,
    /// Arrival order; work put back in front (`submit_first`) counts down from zero.
    seq: i64,
    work: W,
}

impl<W> PartialEq for Queued<W> {
    fn eq(&self, other: &Self) -> bool {
        (self.priority, self.seq) == (other.priority, other.seq)
    }
}
impl<W> Eq for Queued<W> {}
impl<W> PartialOrd for Queued<W> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<W> Ord for Queued<W> {
    // BinaryHeap pops the greatest: highest priority, then the lowest sequence number.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.priority
            .cmp(&other.priority)
            .then(other.seq.cmp(&self.seq))
    }
}

struct Queue<W> {
    heap: BinaryHeap<Queued<W>>,
    seq: i64,
    front: i64,
}

struct Shared<W> {
    queue: Mutex<Queue<W>>,
    ready: Condvar,
}

impl<W> Shared<W> {
    fn lock(&self) -> MutexGuard<'_, Queue<W>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Pool<W: Work> {
    shared: Arc<Shared<W>>,
    answers_tx: mpsc::Sender<W::Answer>,
    answers: mpsc::Receiver<W::Answer>,
    threads: usize,
    /// Submitted and not yet answered (queued or running).
    outstanding: usize,
}

impl<W: Work> Default for Pool<W> {
    fn default() -> Self {
        let (answers_tx, answers) = mpsc::channel();
        Pool {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    heap: BinaryHeap::new(),
                    seq: 0,
                    front: 0,
                }),
                ready: Condvar::new(),
            }),
            answers_tx,
            answers,
            threads: 0,
            outstanding: 0,
        }
    }
}

impl<W: Work> Pool<W> {
    /// Starts threads until `threads` run (the pool never shrinks: idle threads cost nothing).
    pub fn ensure_threads(&mut self, threads: usize) {
        if self.threads == 0 && threads > 0 {
            share_malloc_arenas();
        }
        while self.threads < threads {
            let shared = self.shared.clone();
            let answers = self.answers_tx.clone();
            std::thread::Builder::new()
                .name("mysmshook-http".into())
                .spawn(move || work_loop(shared, answers))
                .expect("mysmshook: cannot start an HTTP thread");
            self.threads += 1;
        }
    }

    pub fn submit(&mut self, work: impl IntoIterator<Item = W>) {
        self.enqueue(work.into_iter().collect(), false);
    }

    /// Like `submit`, but ahead of the work already queued at the same priority, in the order
    /// given: work that was submitted before and had to wait (for its provider's share).
    pub fn submit_first(&mut self, work: Vec<W>) {
        self.enqueue(work, true);
    }

    fn enqueue(&mut self, work: Vec<W>, first: bool) {
        let added = work.len();
        let mut queue = self.shared.lock();
        if first {
            queue.front -= added as i64;
        }
        let mut front = queue.front;
        for work in work {
            let seq = if first {
                front += 1;
                front - 1
            } else {
                queue.seq += 1;
                queue.seq
            };
            queue.heap.push(Queued {
                priority: work.priority(),
                seq,
                work,
            });
            self.outstanding += 1;
        }
        drop(queue);
        // One thread per new piece of work: waking them all (hundreds at high concurrency) for
        // a few jobs cost more CPU in context switches than the requests themselves.
        for _ in 0..added.min(self.threads) {
            self.shared.ready.notify_one();
        }
    }

    /// Work submitted and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Work not yet started.
    pub fn queued(&self) -> usize {
        self.shared.lock().heap.len()
    }

    /// An answer, if one arrives within `wait`.
    pub fn answer(&mut self, wait: Duration) -> Option<W::Answer> {
        let answer = if wait.is_zero() {
            self.answers.try_recv().ok()
        } else {
            self.answers.recv_timeout(wait).ok()
        };
        if answer.is_some() {
            self.outstanding -= 1;
        }
        answer
    }

    /// A handle that takes back all work not yet started (what is running finishes and answers
    /// as usual), usable from elsewhere on the backend thread (a transaction-abort callback)
    /// without borrowing the pool.
    pub fn withdrawer(&self) -> Withdrawer<W> {
        Withdrawer(self.shared.clone())
    }

    /// Counts work withdrawn through a [`Withdrawer`].
    pub fn forget(&mut self, withdrawn: usize) {
        self.outstanding -= withdrawn;
    }
}

/// glibc gives every thread that allocates its own malloc arena (up to 8 per core), and each
/// keeps the memory it once held: with 16 HTTP threads that is about 15 MiB of the backend's
/// private memory. The threads spend their time waiting on sockets, so they share two arenas
/// with little contention. The backend's own allocations (single-threaded) are not affected.
fn share_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_ARENA_MAX: i32 = -8;
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        unsafe {
            mallopt(M_ARENA_MAX, 2);
        }
    }
}

pub struct Withdrawer<W>(Arc<Shared<W>>);

impl<W> Withdrawer<W> {
    pub fn withdraw(&self) -> Vec<W> {
        self.0.lock().heap.drain().map(|q| q.work).collect()
    }
}

fn work_loop<W: Work>(shared: Arc<Shared<W>>, answers: mpsc::Sender<W::Answer>) {
    loop {
        let work = {
            let mut queue = shared.lock();
            loop {
                if let Some(next) = queue.heap.pop() {
                    break next.work;
                }
                queue = shared.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        };
        let answer = catch_unwind(AssertUnwindSafe(|| work.run())).unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            work.panicked(message)
        });
        if answers.send(answer).is_err() {
            return; // the pool is gone
        }
    }
}

/// A bulkhead per key (the worker's keys are provider names): a key that is slow or unknown
/// may hold at most its share of the threads at once, so that one provider that hangs or times
/// out cannot occupy every thread while work for the others waits behind it.
///
/// A key is *slow* while its last request took `slow_after` or longer, or one of its requests
/// has been running that long; it is *unknown* until a request to it has ended in this backend.
/// Either way it gets `share` requests in flight at once (at least one). A key that answered
/// quickly, with nothing running long, may use every thread: a healthy provider keeps the whole
/// pool, so one provider alone is as fast as without the bulkhead.
///
/// It also knows how long each key's requests take, from which the worker estimates how many
/// threads will free up soon (what a claim may take ahead).
#[derive(Default)]
pub struct Bulkhead {
    state: Mutex<Compartments>,
}

#[derive(Default)]
struct Compartments {
    limits: Limits,
    keys: HashMap<String, Compartment>,
    /// When the requests of the last RATE_WINDOW ended, oldest first.
    ended: VecDeque<Instant>,
}

/// Requests that ended this long ago or less tell how fast the threads are going.
const RATE_WINDOW: Duration = Duration::from_secs(1);

impl Compartments {
    fn forget_old_ends(&mut self, now: Instant) {
        while self
            .ended
            .front()
            .is_some_and(|&at| now.saturating_duration_since(at) > RATE_WINDOW)
        {
            self.ended.pop_front();
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Limits {
    /// 0 until configured: no limit.
    threads: usize,
    share: usize,
    slow_after: Duration,
}

impl Limits {
    fn of(&self, key: &Compartment, now: Instant) -> usize {
        if self.threads == 0 {
            return usize::MAX;
        }
        let healthy = key.typical.is_some()
            && !key.last_slow
            && key
                .running
                .iter()
                .all(|&started| now.saturating_duration_since(started) < self.slow_after);
        if healthy {
            self.threads
        } else {
            self.share
        }
    }
}

#[derive(Default)]
struct Compartment {
    /// When each of its requests in flight started.
    running: Vec<Instant>,
    /// How long its requests take (a moving average), once one has ended.
    typical: Option<Duration>,
    /// Whether its last request took slow_after or longer.
    last_slow: bool,
}

/// A request's place in its key's share, given back when dropped (also when the request
/// panics), noting how long it took.
pub struct Permit<'a> {
    bulkhead: &'a Bulkhead,
    key: String,
    started: Instant,
}

impl Bulkhead {
    fn lock(&self) -> MutexGuard<'_, Compartments> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `threads`: the pool's (mysmshook.concurrency); `share`: the fraction of them a slow or
    /// unknown key may hold (at least one thread); `slow_after`: how long a request takes to
    /// make its key slow. What the bulkhead learnt about its keys is kept.
    pub fn configure(&self, threads: usize, share: f64, slow_after: Duration) {
        let threads = threads.max(1);
        let share = (threads as f64 * share.clamp(0.0, 1.0)).floor() as usize;
        self.lock().limits = Limits {
            threads,
            share: share.clamp(1, threads),
            slow_after,
        };
    }

    /// A place for a request to `key`, if its share has one free now.
    pub fn try_acquire(&self, key: &str) -> Option<Permit<'_>> {
        let now = Instant::now();
        let mut state = self.lock();
        let limits = state.limits;
        if !state.keys.contains_key(key) {
            state.keys.insert(key.to_owned(), Compartment::default());
        }
        let compartment = state.keys.get_mut(key).expect("inserted above");
        if compartment.running.len() >= limits.of(compartment, now) {
            return None;
        }
        compartment.running.push(now);
        Some(Permit {
            bulkhead: self,
            key: key.to_owned(),
            started: now,
        })
    }

    /// Whether `key` is held to its share now: slow, or unknown.
    pub fn limited(&self, key: &str) -> bool {
        let state = self.lock();
        let limits = state.limits;
        let compartment = state.keys.get(key);
        limits.threads != 0
            && limits.of(
                compartment.unwrap_or(&Compartment::default()),
                Instant::now(),
            ) < limits.threads
    }

    /// How many more requests to `key` could start now.
    pub fn room(&self, key: &str) -> usize {
        let now = Instant::now();
        let state = self.lock();
        match state.keys.get(key) {
            Some(compartment) => state
                .limits
                .of(compartment, now)
                .saturating_sub(compartment.running.len()),
            None => state.limits.of(&Compartment::default(), now),
        }
    }

    /// How many requests the threads now in requests will end within `within`, and so how many
    /// jobs they will start by then. From how long each key's requests take: a request that
    /// will end by then counts one, plus the requests of that key its thread can make in the
    /// rest of the time; one running for more than twice its key's usual time plus `within`
    /// counts none (no telling when it ends), nor does one whose key has no history. Or, if
    /// more, as many as ended in as long lately (requests of a fast provider are mostly over
    /// before anyone looks). None until a request to some key has ended: nothing is known yet.
    pub fn expected_ends(&self, within: Duration) -> Option<f64> {
        let now = Instant::now();
        let mut state = self.lock();
        if !state.keys.values().any(|key| key.typical.is_some()) {
            return None;
        }
        state.forget_old_ends(now);
        let lately = state.ended.len() as f64 * within.as_secs_f64() / RATE_WINDOW.as_secs_f64();
        let mut ends = 0.0;
        for key in state.keys.values() {
            let Some(typical) = key.typical else { continue };
            let typical = typical.max(Duration::from_millis(1));
            for &started in &key.running {
                let elapsed = now.saturating_duration_since(started);
                let left = typical.saturating_sub(elapsed);
                if left > within || elapsed > typical * 2 + within {
                    continue;
                }
                ends += 1.0 + (within - left).as_secs_f64() / typical.as_secs_f64();
            }
        }
        Some(ends.max(lately))
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        let took = now.saturating_duration_since(self.started);
        let mut state = self.bulkhead.lock();
        state.forget_old_ends(now);
        state.ended.push_back(now);
        let slow_after = state.limits.slow_after;
        if let Some(key) = state.keys.get_mut(&self.key) {
            if let Some(at) = key.running.iter().position(|&s| s == self.started) {
                key.running.swap_remove(at);
            }
            key.typical = Some(match key.typical {
                None => took,
                Some(typical) => typical.mul_f64(0.8) + took.mul_f64(0.2),
            });
            key.last_slow = took >= slow_after;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    struct Job {
        id: u32,
        priority: i32,
        sleep_ms: u64,
        panics: bool,
    }

    impl Work for Job {
        type Answer = (u32, Result<(), String>);
        fn priority(&self) -> i32 {
            self.priority
        }
        fn run(&self) -> Self::Answer {
            std::thread::sleep(Duration::from_millis(self.sleep_ms));
            if self.panics {
                panic!("provider bug in job {}", self.id);
            }
            (self.id, Ok(()))
        }
        fn panicked(&self, message: String) -> Self::Answer {
            (self.id, Err(message))
        }
    }

    fn job(id: u32, priority: i32) -> Job {
        Job {
            id,
            priority,
            sleep_ms: 0,
            panics: false,
        }
    }

    fn collect(pool: &mut Pool<Job>, n: usize) -> Vec<(u32, Result<(), String>)> {
        (0..n)
            .map(|_| pool.answer(Duration::from_secs(5)).expect("an answer"))
            .collect()
    }

    #[test]
    fn higher_priority_first_then_submission_order() {
        let mut pool = Pool::default();
        pool.submit([job(1, 20), job(2, 0), job(3, 30), job(4, 20), job(5, 30)]);
        assert_eq!(pool.queued(), 5);
        pool.ensure_threads(1); // one thread: answers come in queue order
        let order: Vec<u32> = collect(&mut pool, 5).into_iter().map(|a| a.0).collect();
        assert_eq!(order, vec![3, 5, 1, 4, 2]);
        assert_eq!(pool.outstanding(), 0);
    }

    #[test]
    fn a_panic_is_the_answer_and_the_thread_lives_on() {
        let mut pool = Pool::default();
        pool.ensure_threads(1);
        pool.submit([Job {
            panics: true,
            ..job(1, 0)
        }]);
        pool.submit([job(2, 0)]);
        let answers = collect(&mut pool, 2);
        assert_eq!(answers[0].0, 1);
        assert!(answers[0]
            .1
            .as_ref()
            .unwrap_err()
            .contains("provider bug in job 1"));
        assert_eq!(answers[1], (2, Ok(())));
    }

    #[test]
    fn threads_work_concurrently_and_persist() {
        let mut pool = Pool::default();
        pool.ensure_threads(8);
        pool.ensure_threads(4); // never shrinks
        assert_eq!(pool.threads, 8);
        let started = Instant::now();
        pool.submit((0..8).map(|i| Job {
            sleep_ms: 200,
            ..job(i, 0)
        }));
        collect(&mut pool, 8);
        assert!(started.elapsed() < Duration::from_millis(1500));
    }

    #[test]
    fn work_put_back_goes_before_queued_work_of_its_priority() {
        let mut pool = Pool::default();
        pool.submit([job(1, 20), job(2, 20), job(3, 10)]);
        pool.submit_first(vec![job(4, 20), job(5, 20), job(6, 30)]);
        pool.submit_first(vec![job(7, 10)]);
        pool.ensure_threads(1);
        let order: Vec<u32> = collect(&mut pool, 7).into_iter().map(|a| a.0).collect();
        assert_eq!(order, vec![6, 4, 5, 1, 2, 7, 3]);
    }

    const SLOW: Duration = Duration::from_millis(200);

    /// Ends a request to `key` that took about `took`.
    fn request(bulkhead: &Bulkhead, key: &str, took: Duration) {
        let permit = bulkhead.try_acquire(key).expect("room");
        std::thread::sleep(took);
        drop(permit);
    }

    #[test]
    fn an_unknown_or_slow_key_gets_its_share_and_a_fast_one_every_thread() {
        let bulkhead = Bulkhead::default();
        bulkhead.configure(4, 0.5, SLOW);
        // Unknown: two of four threads.
        let a = bulkhead.try_acquire("sms").unwrap();
        let b = bulkhead.try_acquire("sms").unwrap();
        assert!(bulkhead.try_acquire("sms").is_none());
        assert_eq!(bulkhead.room("sms"), 0);
        // Another key is not held back by it.
        assert_eq!(bulkhead.room("email"), 2);
        let c = bulkhead.try_acquire("email").unwrap();
        drop((a, b, c));
        // Its requests answered quickly: it may use every thread...
        assert_eq!(bulkhead.room("sms"), 4);
        let held: Vec<_> = (0..4)
            .map(|_| bulkhead.try_acquire("sms").unwrap())
            .collect();
        assert!(bulkhead.try_acquire("sms").is_none());
        // ...until one of them runs long: then no more than its share start.
        std::thread::sleep(SLOW);
        assert_eq!(bulkhead.room("sms"), 0);
        drop(held);
        // The last request was slow: its share again, until one answers quickly.
        assert_eq!(bulkhead.room("sms"), 2);
        request(&bulkhead, "sms", Duration::ZERO);
        assert_eq!(bulkhead.room("sms"), 4);
    }

    #[test]
    fn a_share_is_at_least_one_thread_and_one_turns_the_bulkhead_off() {
        let bulkhead = Bulkhead::default();
        bulkhead.configure(3, 0.1, SLOW);
        assert_eq!(bulkhead.room("a"), 1);
        bulkhead.configure(3, 1.0, SLOW);
        assert_eq!(bulkhead.room("a"), 3);
        // Unconfigured: no limit.
        assert_eq!(Bulkhead::default().room("a"), usize::MAX);
    }

    #[test]
    fn a_permit_is_given_back_when_its_request_panics() {
        let bulkhead = Bulkhead::default();
        bulkhead.configure(2, 0.5, Duration::from_secs(60));
        let result = catch_unwind(AssertUnwindSafe(|| {
            let _permit = bulkhead.try_acquire("a").unwrap();
            panic!("provider bug");
        }));
        assert!(result.is_err());
        assert_eq!(bulkhead.room("a"), 2);
    }

    #[test]
    fn expected_ends_count_requests_by_how_long_their_key_takes() {
        let within = Duration::from_millis(200);
        let bulkhead = Bulkhead::default();
        bulkhead.configure(8, 1.0, Duration::from_secs(60));
        assert_eq!(bulkhead.expected_ends(within), None); // nothing known yet
        let unknown = bulkhead.try_acquire("new").unwrap();
        assert_eq!(bulkhead.expected_ends(within), None);
        // A key whose requests take 2 s: one just started ends later than that.
        request(&bulkhead, "slow", Duration::ZERO);
        bulkhead.lock().keys.get_mut("slow").unwrap().typical = Some(Duration::from_secs(2));
        bulkhead.lock().ended.clear();
        let slow = bulkhead.try_acquire("slow").unwrap();
        assert_eq!(bulkhead.expected_ends(within), Some(0.0));
        // One that takes 50 ms: a running request ends within 200 ms, and three more after it.
        request(&bulkhead, "fast", Duration::ZERO);
        bulkhead.lock().keys.get_mut("fast").unwrap().typical = Some(Duration::from_millis(50));
        bulkhead.lock().ended.clear();
        let fast = bulkhead.try_acquire("fast").unwrap();
        let ends = bulkhead.expected_ends(within).unwrap();
        assert!((4.0..=5.0).contains(&ends), "{ends}");
        // Stuck far beyond its usual time: no telling.
        bulkhead.lock().keys.get_mut("fast").unwrap().running[0] -= Duration::from_secs(1);
        assert_eq!(bulkhead.expected_ends(within), Some(0.0));
        drop((unknown, slow, fast));
        // Requests over before anyone looked: as many as ended lately, by then (3 ended in the
        // last second: 0.6 within 200 ms; 100 of them: 20).
        let ends = bulkhead.expected_ends(within).unwrap();
        assert!((0.5..=0.7).contains(&ends), "{ends}");
        for _ in 0..97 {
            request(&bulkhead, "fast", Duration::ZERO);
        }
        let ends = bulkhead.expected_ends(within).unwrap();
        assert!((19.9..=20.1).contains(&ends), "{ends}");
    }

    #[test]
    fn withdrawn_work_never_starts() {
        let mut pool = Pool::default();
        pool.submit((0..5).map(|i| job(i, 0)));
        let withdrawer = pool.withdrawer();
        assert_eq!(withdrawer.withdraw().len(), 5);
        pool.forget(5);
        pool.ensure_threads(2);
        assert!(pool.answer(Duration::from_millis(100)).is_none());
        assert_eq!(pool.outstanding(), 0);
        pool.submit([job(9, 0)]);
        assert!(pool.answer(Duration::from_secs(5)).is_some());
    }
}
