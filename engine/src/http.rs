//! HTTP for providers: one ureq agent with connect and overall timeouts, the URL policy
//! (https only, plain http to loopback only when allowed), Retry-After parsing and Standard
//! Webhooks signing. Runs on worker threads: nothing here touches Postgres.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Read;
use std::time::Duration;
use ureq::http::Uri;

/// Provider answers larger than this are cut (they are only parsed for ids and error codes).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<Duration>,
}

/// A request that got no HTTP answer.
#[derive(Debug)]
pub enum Failure {
    Timeout,
    /// Refused, reset, DNS, TLS: nothing reached the provider or the answer was cut off.
    Transport(String),
    /// The request was never sent (bad URL, policy). Retrying will not help.
    Invalid(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("timed out"),
            Failure::Transport(e) => write!(f, "connection failed: {e}"),
            Failure::Invalid(e) => f.write_str(e),
        }
    }
}

pub struct Client {
    agent: ureq::Agent,
    timeout: Duration,
    allow_http_loopback: bool,
}

impl Client {
    /// `connections`: how many requests may be in flight at once (mysmshook.concurrency). That
    /// many connections per provider host stay open between requests: with fewer (ureq keeps 3
    /// by default), every request beyond them opens a new connection, which to a real provider
    /// is a TLS handshake on a waiting user's time.
    pub fn new(timeout: Duration, allow_http_loopback: bool, connections: usize) -> Client {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
            .max_idle_connections_per_host(connections.max(1))
            // Room for a chain's few hosts (an SMS provider, its fallback, an email API).
            .max_idle_connections(4 * connections.max(1))
            // Provider errors are answers to classify, not Rust errors.
            .http_status_as_error(false)
            // A redirect could carry credentials to another host; providers do not redirect API calls.
            .max_redirects(0)
            // The server's environment is not the place to pick up a proxy silently.
            .proxy(None)
            .user_agent("mysmshook/0.1")
            .build();
        Client {
            agent: config.into(),
            timeout,
            allow_http_loopback,
        }
    }

    /// mysmshook.http_timeout: also the deadline of an SMTP session.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether an unencrypted connection to `host` may be used (a loopback host while
    /// mysmshook.allow_http_loopback is on): the same policy for plain http and plain SMTP.
    pub fn allows_plaintext_to(&self, host: &str) -> bool {
        self.allow_http_loopback && is_loopback(host)
    }

    /// Whether a provider URL may be used: https, or http to a loopback host when allowed.
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let uri: Uri = url
            .parse()
            .map_err(|_| "provider URL is not a valid URL".to_string())?;
        let host = uri.host().unwrap_or_default();
        match uri.scheme_str() {
            Some("https") if !host.is_empty() => Ok(()),
            Some("http") if is_loopback(host) && self.allow_http_loopback => Ok(()),
            Some("http") if is_loopback(host) => Err(
                "plain http provider URL refused: set mysmshook.allow_http_loopback = on for local development".into(),
            ),
            _ => Err("provider URL must be https".into()),
        }
    }

    /// POST `body` with `headers`. Header values must already be free of CR/LF (callers build
    /// them from validated data; ureq refuses invalid ones, which surfaces as Invalid).
    pub fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Response, Failure> {
        self.check_url(url).map_err(Failure::Invalid)?;
        let mut request = self.agent.post(url);
        for (name, value) in headers {
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(Failure::Invalid(format!(
                    "header {name} contains a line break"
                )));
            }
            request = request.header(*name, value.as_str());
        }
        let mut response = request.send(body).map_err(classify_error)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut bytes = Vec::new();
        response
            .body_mut()
            .as_reader()
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    Failure::Timeout
                } else {
                    Failure::Transport(format!("reading the answer: {e}"))
                }
            })?;
        Ok(Response {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            retry_after,
        })
    }
}

fn classify_error(error: ureq::Error) -> Failure {
    match error {
        ureq::Error::Timeout(_) => Failure::Timeout,
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => Failure::Timeout,
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => {
            Failure::Invalid(format!("request not sent: {error}"))
        }
        other => Failure::Transport(other.to_string()),
    }
}

pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// `Authorization: Basic base64(user:password)`.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{user}:{password}")))
}

/// `Retry-After: <seconds>` or `Retry-After: <HTTP-date>`.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs_f64(seconds.min(1e9)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// Standard Webhooks: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed by the
/// base64 part of a `whsec_...` secret (Supabase shows it as `v1,whsec_...`).
pub fn sign_webhook(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, String> {
    let encoded = secret.trim();
    let encoded = encoded.strip_prefix("v1,").unwrap_or(encoded);
    let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
    let key = BASE64
        .decode(encoded)
        .map_err(|_| "webhook secret is not whsec_<base64>".to_string())?;
    if key.is_empty() {
        return Err("webhook secret is empty".into());
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_reference_vector() {
        // Test vector from the Standard Webhooks reference libraries.
        let sig = sign_webhook(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let same = sign_webhook(
            "v1,whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(same.unwrap(), sig);
        assert!(sign_webhook("whsec_!!!", "m", 1, b"").is_err());
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-3"), None);
    }

    #[test]
    fn url_policy() {
        let strict = Client::new(Duration::from_secs(1), false, 1);
        let dev = Client::new(Duration::from_secs(1), true, 1);
        assert!(strict.check_url("https://api.twilio.com/x").is_ok());
        assert!(strict.check_url("http://127.0.0.1:8080/x").is_err());
        assert!(dev.check_url("http://127.0.0.1:8080/x").is_ok());
        assert!(dev.check_url("http://[::1]:8080/x").is_ok());
        assert!(dev.check_url("http://localhost/x").is_ok());
        assert!(dev.check_url("http://example.com/x").is_err());
        assert!(dev.check_url("ftp://127.0.0.1/x").is_err());
        assert!(dev.check_url("not a url").is_err());
    }
}
