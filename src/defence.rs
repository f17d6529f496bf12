//! The SMS pumping defence's audit log, this edition's `mysmshook.record_refusal` (the rules
//! themselves are SQL: sql/defence.sql).
//!
//! The log is a file, not a table: Supabase Auth rolls its transaction back when the hook
//! refuses, and a row written in it would go with it. Each refusal is one JSON line appended to
//! `mysmshook/refusals.jsonl` in the data directory (one write(2) with O_APPEND: whole lines
//! from concurrent backends); the worker rotates it to `refusals.1.jsonl` past MAX_LOG_BYTES.
//! Never a code: the rule, the masked destination, the client IP, the region, the time.

use serde_json::json;
use std::io::{BufRead, Write};

const LOG_DIR: &str = "mysmshook";
const LOG: &str = "mysmshook/refusals.jsonl";
const OLD_LOG: &str = "mysmshook/refusals.1.jsonl";
/// Past this the log is rotated (two files are kept: at most twice this on disk).
const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// Appends one refusal to the audit log. A failure to write is reported in the server log and
/// does not change the answer (the request stays refused).
pub fn record_refusal(
    rule: &str,
    masked_destination: &str,
    ip: Option<&str>,
    region: Option<&str>,
) {
    let line = json!({
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "rule": rule,
        "to": masked_destination,
        "ip": ip,
        "region": region,
    })
    .to_string()
        + "\n";
    // The backend's working directory is the data directory.
    let written = std::fs::create_dir_all(LOG_DIR).and_then(|_| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(LOG)?
            .write_all(line.as_bytes())
    });
    if let Err(e) = written {
        pgrx::warning!("mysmshook: could not write the refusal to {LOG}: {e}");
    }
}

/// One refusal as the audit log keeps it.
pub struct Refusal {
    pub at: Option<String>,
    pub rule: Option<String>,
    pub to: Option<String>,
    pub ip: Option<String>,
    pub region: Option<String>,
}

/// Every refusal still in the log, oldest first.
pub fn refusals() -> Vec<Refusal> {
    let mut all = Vec::new();
    for path in [OLD_LOG, LOG] {
        let Ok(file) = std::fs::File::open(path) else {
            continue;
        };
        for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue; // a line cut short by a crash mid-write
            };
            let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
            all.push(Refusal {
                at: text("at"),
                rule: text("rule"),
                to: text("to"),
                ip: text("ip"),
                region: text("region"),
            });
        }
    }
    all
}

/// Rotates the audit log once it is larger than MAX_LOG_BYTES (the worker calls this).
pub fn rotate_refusal_log() {
    let too_big = std::fs::metadata(LOG).is_ok_and(|m| m.len() > MAX_LOG_BYTES);
    if too_big {
        if let Err(e) = std::fs::rename(LOG, OLD_LOG) {
            pgrx::warning!("mysmshook: could not rotate {LOG}: {e}");
        }
    }
}
