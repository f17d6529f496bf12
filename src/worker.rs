//! The delivery run inside a backend: the engine's worker (engine/src/worker.rs), kept by this
//! backend between runs, on the SPI host (src/queue.rs). sql/worker.sql drives it —
//! `worker_begin`, then `worker_step` with a COMMIT after each step.

use crate::queue::{self, SpiHost};
use mysmshook_engine::delivery::Delivery;
use mysmshook_engine::pool::Withdrawer;
use mysmshook_engine::worker::{StepState, Worker};
use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

type SpiResult<T> = Result<T, pgrx::spi::Error>;

thread_local! {
    static WORKER: RefCell<Worker> = RefCell::new(Worker::default());
    /// Jobs the threads had not started when a transaction aborted: given back by the next run.
    static ABANDONED: RefCell<Vec<Delivery>> = const { RefCell::new(Vec::new()) };
}

/// Starts a run in this backend. `poll_for`: how long to keep claiming new work; `committing`:
/// the procedure commits between steps (false: one transaction, the seed documents' function).
pub fn begin(poll_for: Duration, committing: bool) -> SpiResult<()> {
    queue::commit_durably()?;
    let abandoned = ABANDONED.with(|a| std::mem::take(&mut *a.borrow_mut()));
    WORKER.with(|worker| {
        worker
            .borrow_mut()
            .begin(&mut SpiHost, poll_for, committing, abandoned)
    })
}

/// One step of the run started by [`begin`].
pub fn step() -> SpiResult<StepState> {
    if !WORKER.with(|worker| worker.borrow().running()) {
        pgrx::error!("mysmshook.worker_step() called without mysmshook.worker_begin()");
    }
    on_abort_withdraw_unstarted();
    queue::commit_durably()?;
    WORKER.with(|worker| worker.borrow_mut().step(&mut SpiHost))
}

/// Jobs delivered by the run so far.
pub fn delivered() -> i32 {
    WORKER.with(|worker| worker.borrow().delivered())
}

/// Should this transaction abort (cancel, timeout, error), the threads must not start the jobs
/// still queued: nobody would record them. They are given back when the next run begins.
fn on_abort_withdraw_unstarted() {
    let withdrawer: Withdrawer<Delivery> = WORKER.with(|w| w.borrow().withdrawer());
    let withdrawer = AssertUnwindSafe(withdrawer);
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Abort, move || {
        let unstarted = withdrawer.withdraw();
        ABANDONED.with(|abandoned| abandoned.borrow_mut().extend(unstarted));
    });
}
