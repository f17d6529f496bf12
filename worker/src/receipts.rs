//! `--receipts-addr`: providers' delivery callbacks at `POST /receipts/{provider}`, what
//! `mysmshook.receive_receipt` does inside PostgreSQL, for installs without the library (the
//! SQL-only install): the provider's settings are read with `mysmshook.provider_settings`, the
//! signature is verified by the engine as that provider signs, and the receipt is recorded
//! with `mysmshook.record_receipt`, in one short transaction.
//!
//! A few threads take requests, so that one slow sender holds one of them; the database work is
//! theirs in turn, over one connection of its own, opened at the first callback and again when
//! it is lost. The HTTP server has no timeouts of its own: the TLS proxy in front (providers
//! call HTTPS) buffers requests and bounds their time, as nginx and cloud load balancers do.

use crate::connection::{describe_error, Target};
use crate::log::Logger;
use mysmshook_engine::receipts::{self, Callback, Refused};
use postgres::types::Type;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

const PATH: &str = "/receipts/";
/// Larger bodies are refused: no provider's callback comes near (Resend's carry an email's
/// headers, a few KiB).
const MAX_BODY: u64 = 256 * 1024;
const HANDLERS: usize = 4;
/// A callback waits at most this long for the database: a provider retries a 503 later.
const LIMITS: &str = "select pg_catalog.set_config('statement_timeout', '5s', true), \
                      pg_catalog.set_config('lock_timeout', '2s', true)";

/// What the endpoint answers: the status, and a body that tells the caller nothing of why it
/// was refused (the reason goes to this process's log).
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn new(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: format!("{body}\n"),
        }
    }
}

/// Why a callback was not recorded.
enum Failed {
    /// 403 forged or stale, 400 not a receipt this version reads (no provider of that name, a
    /// kind whose receipts are not read).
    Refused(u16, String),
    /// 503: the database refused or timed out (a Vault secret it cannot read, a lock); the
    /// connection is kept. Providers retry.
    Unavailable(String),
    /// 503: the connection was lost (a restart, pg_terminate_backend) or could not be opened.
    Lost(String),
}

/// The endpoint's connection, used by one request at a time.
struct Database {
    target: Arc<Target>,
    client: Option<postgres::Client>,
}

/// `--receipts-url`: a scheme and a host (and port), nothing after them.
pub fn public_url(text: &str) -> Result<String, String> {
    let base = text.trim_end_matches('/');
    let host = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"));
    match host {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#']) => Ok(base.to_owned()),
        _ => Err("a scheme and host only, e.g. https://hooks.example.com".to_owned()),
    }
}

/// Serves the endpoint on `addr` until the process ends.
pub fn serve(
    addr: &str,
    public_url: Option<String>,
    target: Arc<Target>,
    log: Logger,
) -> Result<(), String> {
    let server = Arc::new(
        tiny_http::Server::http(addr).map_err(|e| format!("--receipts-addr {addr}: {e}"))?,
    );
    let database = Arc::new(Mutex::new(Database {
        target,
        client: None,
    }));
    for _ in 0..HANDLERS {
        let (server, database, public_url) = (server.clone(), database.clone(), public_url.clone());
        std::thread::spawn(move || {
            for mut request in server.incoming_requests() {
                let answer = catch_unwind(AssertUnwindSafe(|| {
                    answer(&mut request, public_url.as_deref(), &database, log)
                }))
                .unwrap_or_else(|_| {
                    // A bug, not the caller's: the connection may be mid-transaction.
                    log.error("receipts endpoint: a callback's handling panicked");
                    lock(&database).client = None;
                    Answer::new(500, "error")
                });
                let response = tiny_http::Response::from_string(answer.body)
                    .with_status_code(answer.status)
                    .with_header(
                        tiny_http::Header::from_bytes("Content-Type", "text/plain; charset=utf-8")
                            .expect("a valid header"),
                    );
                let _ = request.respond(response);
            }
        });
    }
    Ok(())
}

fn lock(database: &Mutex<Database>) -> std::sync::MutexGuard<'_, Database> {
    database
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn answer(
    request: &mut tiny_http::Request,
    public_url: Option<&str>,
    database: &Mutex<Database>,
    log: Logger,
) -> Answer {
    let Some(provider) = provider_in(request.url()) else {
        return Answer::new(404, "not found");
    };
    if *request.method() != tiny_http::Method::Post {
        return Answer::new(405, "POST only");
    }
    if request
        .body_length()
        .is_some_and(|length| length as u64 > MAX_BODY)
    {
        return Answer::new(413, "too large");
    }
    let mut body = Vec::new();
    if request
        .as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body)
        .is_err()
    {
        return Answer::new(400, "unreadable");
    }
    if body.len() as u64 > MAX_BODY {
        return Answer::new(413, "too large");
    }
    let Ok(body) = String::from_utf8(body) else {
        return Answer::new(400, "not UTF-8");
    };
    let headers = receipts::header_map(
        request
            .headers()
            .iter()
            .map(|h| (h.field.as_str().as_str(), h.value.as_str())),
    );
    let url = match public_url {
        Some(base) => format!("{base}{}", request.url()),
        None => format!(
            "http://{}{}",
            headers.get("host").map_or("", String::as_str),
            request.url()
        ),
    };
    let callback = Callback {
        url: &url,
        headers: &headers,
        body: &body,
        now: chrono::Utc::now().timestamp(),
    };
    let received = lock(database).receive(&provider, &callback);
    match received {
        Ok(answer) => Answer::new(200, &answer.to_string()),
        Err(Failed::Refused(status, why)) => {
            log.warn(&format!("receipt for provider {provider:?} refused: {why}"));
            Answer::new(status, "refused")
        }
        Err(Failed::Unavailable(why) | Failed::Lost(why)) => {
            log.error(&format!(
                "receipt for provider {provider:?} not recorded: {why}"
            ));
            Answer::new(503, "try again")
        }
    }
}

impl Database {
    /// Verifies and records one callback. A connection found lost is opened again, once.
    fn receive(
        &mut self,
        provider: &str,
        callback: &Callback,
    ) -> Result<serde_json::Value, Failed> {
        let had_connection = self.client.is_some();
        match self.receive_once(provider, callback) {
            Err(Failed::Lost(_)) if had_connection => self.receive_once(provider, callback),
            other => other,
        }
    }

    fn receive_once(
        &mut self,
        provider: &str,
        callback: &Callback,
    ) -> Result<serde_json::Value, Failed> {
        let client = match &mut self.client {
            Some(client) => client,
            None => self
                .client
                .insert(self.target.connect().map_err(Failed::Lost)?),
        };
        let result = match record(client, provider, callback) {
            Err(Failed::Unavailable(why)) if client.is_closed() => Err(Failed::Lost(why)),
            other => other,
        };
        if matches!(result, Err(Failed::Lost(_))) {
            self.client = None;
        }
        result
    }
}

/// One transaction: the provider's settings, the engine's verdict, the receipt recorded.
fn record(
    client: &mut postgres::Client,
    provider: &str,
    callback: &Callback,
) -> Result<serde_json::Value, Failed> {
    let failed = |e: postgres::Error| match e.as_db_error() {
        Some(_) => Failed::Unavailable(describe_error(&e)),
        None => Failed::Lost(describe_error(&e)),
    };
    let mut transaction = client.transaction().map_err(failed)?;
    transaction.query_typed(LIMITS, &[]).map_err(failed)?;
    let rows = transaction
        .query_typed(
            "select kind, settings from mysmshook.provider_settings($1)",
            &[(&provider, Type::TEXT)],
        )
        .map_err(failed)?;
    // One row, all null, when no provider has the name.
    let found = rows.first().and_then(|row| {
        let kind: Option<String> = row.get(0);
        let settings: Option<serde_json::Value> = row.get(1);
        kind.zip(settings)
    });
    let Some((kind, settings)) = found else {
        return Err(Failed::Refused(
            400,
            format!("no provider is named {provider:?}"),
        ));
    };
    let receipt = receipts::read(&kind, &settings, callback).map_err(|refused| match refused {
        Refused::Forged(why) => Failed::Refused(403, why),
        Refused::Unreadable(why) => Failed::Refused(400, why),
    })?;
    let rows = transaction
        .query_typed(
            "select mysmshook.record_receipt($1, $2, $3, $4, $5, $6)",
            &[
                (&provider, Type::TEXT),
                (&receipt.message_id, Type::TEXT),
                (&receipt.event_id, Type::TEXT),
                (&receipt.status, Type::TEXT),
                (&receipt.outcome.as_str(), Type::TEXT),
                (&receipt.error, Type::TEXT),
            ],
        )
        .map_err(failed)?;
    transaction.commit().map_err(failed)?;
    Ok(rows
        .first()
        .and_then(|row| row.get::<_, Option<serde_json::Value>>(0))
        .unwrap_or_default())
}

/// The provider's name in `/receipts/{provider}` (the query string aside), as written.
fn provider_in(url: &str) -> Option<String> {
    let path = url.split_once('?').map_or(url, |(path, _)| path);
    path.strip_prefix(PATH)
        .filter(|name| !name.is_empty() && !name.contains('/'))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::{provider_in, public_url};

    #[test]
    fn the_provider_is_the_path_segment_after_receipts() {
        assert_eq!(provider_in("/receipts/twilio").as_deref(), Some("twilio"));
        assert_eq!(
            provider_in("/receipts/twilio?a=b").as_deref(),
            Some("twilio")
        );
        assert_eq!(provider_in("/receipts/"), None);
        assert_eq!(provider_in("/receipts/a/b"), None);
        assert_eq!(provider_in("/metrics"), None);
    }

    #[test]
    fn the_public_url_is_a_scheme_and_a_host() {
        assert_eq!(
            public_url("https://hooks.example.com/").as_deref(),
            Ok("https://hooks.example.com")
        );
        assert_eq!(
            public_url("http://10.0.0.5:8080").as_deref(),
            Ok("http://10.0.0.5:8080")
        );
        for wrong in [
            "hooks.example.com",
            "https://",
            "https://hooks.example.com/receipts",
            "ftp://x",
        ] {
            assert!(public_url(wrong).is_err(), "{wrong}");
        }
    }
}
