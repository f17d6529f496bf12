//! `--metrics-addr`: `/healthz` (connected, and a step committed lately) and `/metrics` (the
//! queue's `mysmshook.metrics_prometheus()`, read on a connection of its own at each scrape,
//! then this process's counters), served from a thread of their own.

use crate::connection::Target;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the worker loop reports, read by the HTTP thread.
pub struct Status {
    started: Instant,
    pub connected: AtomicBool,
    /// Milliseconds after `started` of the last committed step.
    last_step_ms: AtomicU64,
    pub steps: AtomicU64,
    pub delivered: AtomicU64,
    pub reconnects: AtomicU64,
}

impl Status {
    pub fn new() -> Arc<Status> {
        Arc::new(Status {
            started: Instant::now(),
            connected: AtomicBool::new(false),
            last_step_ms: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        })
    }

    pub fn stepped(&self) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        let now = self.started.elapsed().as_millis() as u64;
        self.last_step_ms.store(now, Ordering::Relaxed);
    }

    /// Healthy: connected, and a step committed within `within` (a step ends at least every
    /// poll interval, or every ~100 ms while busy).
    pub fn healthy(&self, within: Duration) -> bool {
        let since =
            self.started.elapsed().as_millis() as u64 - self.last_step_ms.load(Ordering::Relaxed);
        self.connected.load(Ordering::Relaxed)
            && self.steps.load(Ordering::Relaxed) > 0
            && since <= within.as_millis() as u64
    }

    /// This process's counters, in Prometheus text format.
    pub fn prometheus(&self) -> String {
        let counter = |name: &str, help: &str, value: u64| {
            format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n")
        };
        [
            counter(
                "mysmshook_worker_steps_total",
                "Steps committed by this mysmshook-worker process.",
                self.steps.load(Ordering::Relaxed),
            ),
            counter(
                "mysmshook_worker_delivered_total",
                "Jobs this process delivered.",
                self.delivered.load(Ordering::Relaxed),
            ),
            counter(
                "mysmshook_worker_reconnects_total",
                "Connections this process lost and opened again.",
                self.reconnects.load(Ordering::Relaxed),
            ),
            format!(
                "# HELP mysmshook_worker_connected Whether this process is connected.\n\
                 # TYPE mysmshook_worker_connected gauge\nmysmshook_worker_connected {}\n",
                u8::from(self.connected.load(Ordering::Relaxed))
            ),
        ]
        .concat()
    }
}

/// Serves the endpoints on `addr` until the process ends.
pub fn serve(
    addr: &str,
    target: Arc<Target>,
    status: Arc<Status>,
    healthy_within: Duration,
) -> Result<(), String> {
    let server =
        tiny_http::Server::http(addr).map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let (code, body) = match request.url() {
                "/healthz" if status.healthy(healthy_within) => (200, "ok\n".to_owned()),
                "/healthz" => (
                    503,
                    "not connected, or no step committed lately\n".to_owned(),
                ),
                "/metrics" => match queue_metrics(&target) {
                    Ok(text) => (200, text + &status.prometheus()),
                    // The process's own figures still tell what is wrong.
                    Err(e) => (
                        503,
                        format!(
                            "# mysmshook.metrics_prometheus(): {e}\n{}",
                            status.prometheus()
                        ),
                    ),
                },
                _ => (404, "not found\n".to_owned()),
            };
            let response = tiny_http::Response::from_string(body)
                .with_status_code(code)
                .with_header(
                    tiny_http::Header::from_bytes("Content-Type", "text/plain; version=0.0.4")
                        .expect("a valid header"),
                );
            let _ = request.respond(response);
        }
    });
    Ok(())
}

fn queue_metrics(target: &Target) -> Result<String, String> {
    let mut client = target.connect()?;
    let rows = client
        .query_typed("select mysmshook.metrics_prometheus()", &[])
        .map_err(|e| crate::connection::describe_error(&e))?;
    Ok(rows.first().map(|row| row.get(0)).unwrap_or_default())
}
