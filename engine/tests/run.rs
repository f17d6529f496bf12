//! The run loop against an in-memory host, without PostgreSQL: what a stop does to a batch the
//! threads have started, and what a transaction that does not commit does to outcomes.

use mysmshook_engine::delivery::{ClaimedJob, Record};
use mysmshook_engine::job::Channel;
use mysmshook_engine::settings::Settings;
use mysmshook_engine::worker::{Host, StepState, Worker};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A queue of due jobs, handed out by the first claim; it remembers what was given back and
/// what was recorded, by which transaction. Transactions commit unless the test says otherwise.
#[derive(Default)]
struct MemoryHost {
    due: Vec<ClaimedJob>,
    gateway: String,
    released: Vec<String>,
    recorded: Vec<(String, &'static str, u64)>,
    transaction: u64,
    last_committed: u64,
    failed: Vec<u64>,
}

impl MemoryHost {
    /// Ends the current transaction: committed, or not (what it recorded is gone).
    fn end_transaction(&mut self, commits: bool) {
        if commits {
            self.last_committed = self.transaction;
        } else {
            self.failed.push(self.transaction);
            let failed = self.transaction;
            self.recorded.retain(|(_, _, by)| *by != failed);
        }
        self.transaction += 1;
    }
}

impl Host for MemoryHost {
    type Error = String;
    fn settings(&self) -> Settings {
        Settings {
            concurrency: 1,
            http_timeout: Duration::from_secs(1),
            allow_http_loopback: true,
            ..Settings::default()
        }
    }
    fn claim(&mut self, max: i32, _: Duration, token: &str) -> Result<Vec<ClaimedJob>, String> {
        let take = self.due.len().min(max as usize);
        Ok(self
            .due
            .drain(..take)
            .map(|job| ClaimedJob {
                token: token.to_owned(),
                ..job
            })
            .collect())
    }
    fn renew(&mut self, _: Vec<String>, _: Duration) -> Result<i32, String> {
        Ok(0)
    }
    fn release(&mut self, jobs: Vec<(String, String)>) -> Result<i32, String> {
        self.released.extend(jobs.iter().map(|(id, _)| id.clone()));
        Ok(jobs.len() as i32)
    }
    fn record(&mut self, records: &[Record]) -> Result<Vec<(String, String)>, String> {
        let by = self.transaction;
        self.recorded
            .extend(records.iter().map(|r| (r.job_id.clone(), r.status, by)));
        Ok(Vec::new())
    }
    fn rescue_expired_leases(&mut self) -> Result<i32, String> {
        Ok(0)
    }
    fn config_fingerprint(&mut self, _: &[String]) -> Result<String, String> {
        Ok("1".into())
    }
    fn worker_config(&mut self) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!({
            "providers": [{"name": "gateway", "kind": "webhook",
                           "settings": {"url": self.gateway, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}],
            "routes": [{"name": "sms", "channel": "sms", "providers": ["gateway"]}]
        }))
    }
    fn housekeeping(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn transaction_mark(&self) -> u64 {
        self.transaction
    }
    fn committed(&self, mark: u64) -> bool {
        mark <= self.last_committed && !self.failed.contains(&mark)
    }
    fn worker_id(&self) -> i32 {
        1
    }
    fn warn(&self, _: &str) {}
    fn log(&self, _: &str) {}
    fn config_error(&self, message: String) -> String {
        message
    }
}

fn sms_job(n: usize) -> ClaimedJob {
    ClaimedJob {
        job_id: format!("00000000-0000-0000-0000-{n:012}"),
        token: String::new(),
        channel: Channel::Sms,
        action_type: "sms".into(),
        job_data: format!(r#"{{"to": "+1212555{n:04}", "code": "123456"}}"#),
        priority: 0,
        retry_count: 0,
        max_retries: 3,
        rescues: 0,
        expires_at: None,
        superseded: false,
    }
}

#[test]
fn a_stop_gives_back_what_was_not_started_and_ends_once_the_request_in_flight_answers() {
    // A gateway that accepts and never answers: the one thread stays in its request.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let gateway = format!("http://{}/hook", listener.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming().take(1) {
            open.push(stream);
            std::thread::sleep(Duration::from_secs(5));
        }
    });
    let mut host = MemoryHost {
        due: (1..=5).map(sms_job).collect(),
        gateway,
        ..MemoryHost::default()
    };
    let mut worker = Worker::default();
    worker
        .begin(&mut host, Duration::from_secs(60), true, Vec::new())
        .unwrap();
    worker.step(&mut host).unwrap(); // claims the five
    worker.step(&mut host).unwrap(); // hands them to the thread: one starts
    std::thread::sleep(Duration::from_millis(200));
    worker.stop(&mut host).unwrap();
    assert_eq!(
        host.released.len(),
        4,
        "the four not started go back at once"
    );

    let started = Instant::now();
    while worker.step(&mut host).unwrap() != StepState::Done {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the run ends once the request in flight has answered"
        );
    }
    // The one in flight timed out: recorded (a retry), not given back, not lost.
    assert_eq!(host.recorded.len(), 1, "{:?}", host.recorded);
    assert!(!host.released.contains(&host.recorded[0].0));
    assert!(host.due.is_empty());
    drop(held);
}

/// A gateway that accepts every request at once; it counts them.
fn accepting_gateway() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            reader.read_exact(&mut vec![0; length]).unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            let body = r#"{"id": "m1"}"#;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
    });
    (url, requests)
}

#[test]
fn outcomes_whose_transaction_did_not_commit_are_recorded_again() {
    let (gateway, requests) = accepting_gateway();
    let mut host = MemoryHost {
        due: vec![sms_job(1)],
        gateway,
        transaction: 1,
        ..MemoryHost::default()
    };
    let mut worker = Worker::default();
    worker
        .begin(&mut host, Duration::from_secs(60), true, Vec::new())
        .unwrap();
    host.end_transaction(true);
    // The first transaction that records the outcome does not commit (a lost connection, a
    // failed COMMIT): the job's lease would lapse and the code go out again.
    let mut failed_once = false;
    let started = Instant::now();
    while !failed_once || host.recorded.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the outcome was not recorded again: {:?}",
            host.recorded
        );
        let before = host.recorded.len();
        worker.step(&mut host).unwrap();
        let recorded_now = host.recorded.len() > before;
        host.end_transaction(!recorded_now || failed_once);
        failed_once |= recorded_now;
    }
    assert_eq!(host.recorded.len(), 1, "{:?}", host.recorded);
    assert_eq!(host.recorded[0].1, "completed");
    assert_eq!(requests.load(Ordering::SeqCst), 1, "sent once");
}
