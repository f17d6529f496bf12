//! The backend's HTTP threads: a persistent pool that lives as long as the backend, so that
//! connections (keep-alive, TLS sessions) outlive a batch. Work waits in a queue ordered by
//! priority, then by arrival; answers come back on a channel the backend thread reads. A panic
//! in a piece of work becomes that work's answer (`Work::panicked`) and the thread lives on.
//!
//! Nothing here touches Postgres: the backend thread submits, collects and records.

use std::collections::BinaryHeap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

pub trait Work: Send + 'static {
    type Answer: Send + 'static;
    /// Higher goes first; equal priorities go in submission order.
    fn priority(&self) -> i32;
    fn run(&self) -> Self::Answer;
    fn panicked(&self, message: String) -> Self::Answer;
}

struct Queued<W> {
    priority: i32,
    seq: u64,
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
    seq: u64,
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
        let mut queue = self.shared.lock();
        let before = queue.heap.len();
        for work in work {
            queue.seq += 1;
            let seq = queue.seq;
            queue.heap.push(Queued {
                priority: work.priority(),
                seq,
                work,
            });
            self.outstanding += 1;
        }
        let added = queue.heap.len() - before;
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
