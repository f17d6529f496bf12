//! Email over SMTP, kind `smtp`: any mail service or company relay (SES, SendGrid, Postmark,
//! Mailgun, Postfix). lettre speaks the protocol: STARTTLS or implicit TLS with the same rustls
//! and Mozilla roots as the HTTP providers, AUTH, multipart text + HTML, header encoding.
//!
//! Settings: `host`; optional `port` (default 587, 465 with implicit TLS, 25 without TLS);
//! `username` + `password` (AUTH, never over an unencrypted connection); `from`; optional
//! `reply_to`; `tls` = `starttls` (default: the server must offer it) | `implicit` | `none`
//! (a loopback host only, while mysmshook.allow_http_loopback is on); `ca_certificate` (PEM)
//! for a relay whose certificate a private CA signed.
//!
//! The Message-ID is derived from the job id, so the copies a repeated exchange may leave (a
//! connection lost after the server took the message, before it said so) carry one Message-ID.
//!
//! A session should end by http_timeout, as an HTTP request does: the worker's lease assumes it.
//! lettre bounds each read or write, not the exchange, so the session runs lettre's steps itself
//! and gives each only the time left; no step starts after the deadline, so a worker that lost
//! its lease meanwhile does not start handing the message over. Bounds that remain: connecting
//! (TCP, greeting, EHLO) is one lettre call with http_timeout for each part, and a server that
//! trickles a reply byte by byte can stretch the step it is in.

use super::{required_setting, setting, Context, Outcome, Provider};
use crate::render::Message;
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{Certificate, SmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use serde_json::Value;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Security {
    StartTls,
    Implicit,
    None,
}

pub struct SmtpProvider {
    host: String,
    port: u16,
    security: Security,
    /// Built once: parsing the CA and assembling the rustls configuration is not per message.
    tls: Option<TlsParameters>,
    credentials: Option<Credentials>,
    from: Mailbox,
    reply_to: Option<Mailbox>,
}

impl SmtpProvider {
    pub fn from_settings(settings: &Value) -> Result<SmtpProvider, String> {
        let host = required_setting(settings, "host")?;
        let security =
            match setting(settings, "tls")?.unwrap_or("starttls") {
                "starttls" => Security::StartTls,
                "implicit" => Security::Implicit,
                "none" if crate::http::is_loopback(host) => Security::None,
                "none" => return Err(
                    "setting \"tls\" = \"none\" is only for a loopback host (local development)"
                        .into(),
                ),
                other => {
                    return Err(format!(
                        "setting \"tls\" must be starttls, implicit or none, not {other:?}"
                    ))
                }
            };
        let port = match settings.get("port") {
            None | Some(Value::Null) => match security {
                Security::StartTls => 587,
                Security::Implicit => 465,
                Security::None => 25,
            },
            Some(port) => port
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or("setting \"port\" must be a port number")?,
        };
        let credentials = match (
            setting(settings, "username")?,
            setting(settings, "password")?,
        ) {
            (Some(user), Some(password)) => Some(Credentials::new(user.into(), password.into())),
            (None, None) => None,
            _ => return Err("settings \"username\" and \"password\" go together".into()),
        };
        let tls = match security {
            Security::None => None,
            _ => {
                let mut params = TlsParameters::builder(host.to_owned());
                // Not `setting`: a PEM is several lines, and goes nowhere near a header.
                if let Some(pem) = settings.get("ca_certificate").and_then(Value::as_str) {
                    let not_pem =
                        || "setting \"ca_certificate\" is not a PEM certificate".to_owned();
                    if !pem.contains("-----BEGIN CERTIFICATE-----") {
                        return Err(not_pem());
                    }
                    let ca = Certificate::from_pem(pem.as_bytes()).map_err(|_| not_pem())?;
                    params = params.add_root_certificate(ca);
                }
                Some(
                    params
                        .build_rustls()
                        .map_err(|e| format!("TLS settings: {e}"))?,
                )
            }
        };
        let mailbox = |key: &str, value: &str| {
            value
                .parse::<Mailbox>()
                .map_err(|e| format!("setting {key:?} is not an email address: {e}"))
        };
        Ok(SmtpProvider {
            host: host.to_owned(),
            port,
            security,
            tls,
            credentials,
            from: mailbox("from", required_setting(settings, "from")?)?,
            reply_to: setting(settings, "reply_to")?
                .map(|r| mailbox("reply_to", r))
                .transpose()?,
        })
    }

    fn email(&self, message: &Message, job_id: &str) -> Result<lettre::Message, String> {
        let to = message
            .to
            .parse::<Mailbox>()
            .map_err(|e| format!("recipient {:?} is not an email address: {e}", message.to))?;
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.as_deref().unwrap_or_default())
            .message_id(Some(format!("<{job_id}@{}>", self.from.email.domain())));
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        let built = match &message.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                message.text.clone(),
                html.clone(),
            )),
            None => builder.singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(message.text.clone()),
            ),
        };
        built.map_err(|e| format!("the message cannot be built: {e}"))
    }

    /// One session, over by `timeout`: connect (greeting, EHLO), STARTTLS, AUTH, then the envelope
    /// and the message, each step given only the time left.
    fn session(&self, email: &lettre::Message, timeout: Duration) -> Result<Response, Failed> {
        let deadline = Instant::now() + timeout;
        let hello = ClientId::Domain(self.from.email.domain().to_owned());
        let implicit_tls = match self.security {
            Security::Implicit => self.tls.as_ref(),
            _ => None,
        };
        let mut conn = SmtpConnection::connect(
            (self.host.as_str(), self.port),
            Some(timeout),
            &hello,
            implicit_tls,
            None,
        )?;
        let result = self.exchange(&mut conn, &hello, email, deadline);
        // QUIT, if the connection still works, without waiting on its answer: the outcome is
        // known, and the worker should have it before the deadline.
        let _ = conn.set_timeout(Some(Duration::from_millis(50)));
        conn.abort();
        result
    }

    fn exchange(
        &self,
        conn: &mut SmtpConnection,
        hello: &ClientId,
        email: &lettre::Message,
        deadline: Instant,
    ) -> Result<Response, Failed> {
        let step = |conn: &mut SmtpConnection| match deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
        {
            Some(left) => conn.set_timeout(Some(left)).map_err(Failed::Io),
            None => Err(Failed::Deadline),
        };
        if let (Security::StartTls, Some(params)) = (self.security, &self.tls) {
            step(conn)?;
            conn.starttls(params, hello)?;
        }
        if let Some(credentials) = &self.credentials {
            step(conn)?;
            conn.auth(DEFAULT_MECHANISMS, credentials)?;
        }
        let envelope = email.envelope();
        let body = email.formatted();
        // What lettre's own send asks of the server for addresses or content beyond ASCII.
        let mut options = vec![];
        let non_ascii = |a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii();
        if envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(non_ascii)
        {
            if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                return Err(Failed::Unsupported("SMTPUTF8 (a non-ASCII address)"));
            }
            options.push(MailParameter::SmtpUtfEight);
        }
        if !body.is_ascii() {
            if !conn.server_info().supports_feature(Extension::EightBitMime) {
                return Err(Failed::Unsupported("8BITMIME (non-ASCII content)"));
            }
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        step(conn)?;
        conn.command(Mail::new(envelope.from().cloned(), options))?;
        for to in envelope.to() {
            step(conn)?;
            conn.command(Rcpt::new(to.clone(), vec![]))?;
        }
        step(conn)?;
        conn.command(Data)?;
        step(conn)?;
        Ok(conn.message(&body)?)
    }
}

/// Why a session ended without the server's acceptance.
enum Failed {
    Smtp(lettre::transport::smtp::Error),
    Io(std::io::Error),
    /// The time was up before the next step.
    Deadline,
    Unsupported(&'static str),
}

impl From<lettre::transport::smtp::Error> for Failed {
    fn from(error: lettre::transport::smtp::Error) -> Failed {
        Failed::Smtp(error)
    }
}

impl Provider for SmtpProvider {
    fn send(&self, message: &Message, ctx: &Context) -> Outcome {
        if self.security == Security::None && !ctx.http.allows_plaintext_to(&self.host) {
            return Outcome::ProviderFailed {
                error: "unencrypted SMTP refused: set mysmshook.allow_http_loopback = on for local development".into(),
            };
        }
        let email = match self.email(message, ctx.job_id) {
            Ok(email) => email,
            Err(error) => return Outcome::RecipientRejected { error },
        };
        match self.session(&email, ctx.http.timeout()) {
            Ok(reply) => Outcome::Sent {
                message_id: email
                    .headers()
                    .get_raw("Message-ID")
                    .map(|id| id.trim_matches(['<', '>']).to_owned()),
                note: reply
                    .message()
                    .next()
                    .map(|line| format!("SMTP server: {line}")),
            },
            Err(Failed::Smtp(error)) => match error.status() {
                Some(code) => classify_reply(
                    code.to_string().parse().unwrap_or(554),
                    &error.source_text().unwrap_or_else(|| error.to_string()),
                ),
                None if timed_out(&error) => retry("SMTP server timed out".into()),
                // Refused, reset, closed mid-DATA, a TLS failure: retried, as for HTTP.
                None => retry(format!("SMTP: {error}")),
            },
            Err(Failed::Deadline) => retry("SMTP server timed out".into()),
            Err(Failed::Io(error)) => retry(format!("SMTP: {error}")),
            Err(Failed::Unsupported(what)) => Outcome::ProviderFailed {
                error: format!("the SMTP server does not offer {what}"),
            },
        }
    }
}

fn retry(error: String) -> Outcome {
    Outcome::Retryable {
        error,
        retry_after: None,
    }
}

/// lettre's own `is_timeout` misses a socket read timeout, which Linux reports as EAGAIN.
fn timed_out(error: &lettre::transport::smtp::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            );
        }
        source = inner.source();
    }
    false
}

trait SourceText {
    fn source_text(&self) -> Option<String>;
}

impl SourceText for lettre::transport::smtp::Error {
    /// The server's own words, without lettre's prefix.
    fn source_text(&self) -> Option<String> {
        std::error::Error::source(self).map(|s| s.to_string())
    }
}

/// Maps an SMTP error reply (RFC 5321 codes, RFC 3463 enhanced codes in the text).
fn classify_reply(code: u16, text: &str) -> Outcome {
    let error = format!("SMTP {code}: {}", super::excerpt(text));
    if (400..500).contains(&code) {
        return Outcome::Retryable {
            error,
            retry_after: None,
        };
    }
    let enhanced = text.split_whitespace().next().unwrap_or_default();
    // X.1.Y is about an address; X.1.7 and X.1.8 about the sender's, the rest the recipient's.
    // 5.2.1: the mailbox is disabled. Without an enhanced code, 550/551/553 name the mailbox.
    let recipient = match enhanced.strip_prefix("5.") {
        Some(rest) => (rest.starts_with("1.") && !matches!(rest, "1.7" | "1.8")) || rest == "2.1",
        None => matches!(code, 550 | 551 | 553),
    };
    match code {
        530 | 534 | 535 | 538 => Outcome::ProviderFailed {
            error: format!("authentication failed ({error}): check the provider's credentials"),
        },
        _ if recipient => Outcome::RecipientRejected { error },
        _ => Outcome::ProviderFailed { error },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies() {
        assert!(matches!(
            classify_reply(451, "4.3.0 try again later"),
            Outcome::Retryable { .. }
        ));
        assert!(matches!(
            classify_reply(550, "5.1.1 <x@y.io>: Recipient address rejected"),
            Outcome::RecipientRejected { .. }
        ));
        assert!(matches!(
            classify_reply(550, "mailbox unavailable"),
            Outcome::RecipientRejected { .. }
        ));
        assert!(matches!(
            classify_reply(553, "5.1.8 sender domain does not exist"),
            Outcome::ProviderFailed { .. }
        ));
        assert!(matches!(
            classify_reply(554, "5.7.1 message rejected as spam"),
            Outcome::ProviderFailed { .. }
        ));
        assert!(matches!(
            classify_reply(535, "5.7.8 authentication credentials invalid"),
            Outcome::ProviderFailed { error } if error.starts_with("authentication failed")
        ));
        assert!(matches!(
            classify_reply(550, "5.2.1 mailbox disabled"),
            Outcome::RecipientRejected { .. }
        ));
    }

    #[test]
    fn settings() {
        let build = |s: Value| SmtpProvider::from_settings(&s);
        let p =
            build(json!({"host": "smtp.example.com", "from": "Acme <auth@acme.test>"})).unwrap();
        assert_eq!((p.port, p.security), (587, Security::StartTls));
        let p =
            build(json!({"host": "smtp.example.com", "from": "a@acme.test", "tls": "implicit"}))
                .unwrap();
        assert_eq!((p.port, p.security), (465, Security::Implicit));
        let p =
            build(json!({"host": "127.0.0.1", "port": 2525, "from": "a@acme.test", "tls": "none"}))
                .unwrap();
        assert_eq!((p.port, p.security), (2525, Security::None));
        for (bad, needle) in [
            (json!({"from": "a@acme.test"}), "host"),
            (json!({"host": "smtp.example.com"}), "from"),
            (
                json!({"host": "smtp.example.com", "from": "not an address"}),
                "from",
            ),
            (
                json!({"host": "smtp.example.com", "from": "a@acme.test", "tls": "none"}),
                "loopback",
            ),
            (
                json!({"host": "smtp.example.com", "from": "a@acme.test", "tls": "ssl"}),
                "starttls",
            ),
            (
                json!({"host": "smtp.example.com", "from": "a@acme.test", "port": 70000}),
                "port",
            ),
            (
                json!({"host": "smtp.example.com", "from": "a@acme.test", "username": "u"}),
                "password",
            ),
            (
                json!({"host": "smtp.example.com", "from": "a@acme.test", "ca_certificate": "x"}),
                "PEM",
            ),
        ] {
            let err = build(bad.clone())
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn message_id_comes_from_the_job() {
        let p = build_local();
        let message = Message {
            to: "user@example.com".into(),
            subject: Some("Your code".into()),
            text: "123456".into(),
            html: Some("<p>123456</p>".into()),
            ..Default::default()
        };
        let email = p
            .email(&message, "0a1b2c3d-0000-4000-8000-000000000001")
            .unwrap();
        let raw = String::from_utf8(email.formatted()).unwrap();
        assert!(
            raw.contains("Message-ID: <0a1b2c3d-0000-4000-8000-000000000001@acme.test>"),
            "{raw}"
        );
        assert!(raw.contains("multipart/alternative"), "{raw}");
    }

    fn build_local() -> SmtpProvider {
        SmtpProvider::from_settings(
            &json!({"host": "127.0.0.1", "from": "Acme <auth@acme.test>", "tls": "none"}),
        )
        .unwrap()
    }
}
