//! Connecting to PostgreSQL as libpq users expect: a URL or key=value string, `sslmode` as
//! libpq spells it (disable, allow, prefer, require, verify-ca, verify-full) and `sslrootcert`,
//! over rustls. rust-postgres itself knows disable, prefer and require; the verification modes
//! are this module's.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme,
};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEAD_PEER: Duration = Duration::from_secs(30);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(20);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// allow and prefer: TLS if the server offers it, certificate not checked.
    Prefer,
    /// Encrypted, certificate not checked (libpq's require without a root certificate).
    Require,
    /// Encrypted, certificate chain checked, host name not.
    VerifyCa,
    VerifyFull,
}

/// What to connect to and how.
pub struct Target {
    pub config: postgres::Config,
    pub ssl_mode: SslMode,
    pub root_cert: Option<String>,
}

/// Parses a connection string, taking out `sslmode` and `sslrootcert` (which rust-postgres
/// does not know in full) and reading them as libpq does. The default is prefer, as libpq's.
pub fn parse(url: &str) -> Result<Target, String> {
    let (mut ssl_mode, mut root_cert) = (SslMode::Prefer, None);
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let mut rest = Vec::new();
    let (base, params) = if is_url {
        match url.split_once('?') {
            Some((base, query)) => (
                base.to_owned(),
                query.split('&').map(str::to_owned).collect(),
            ),
            None => (url.to_owned(), Vec::new()),
        }
    } else {
        (
            String::new(),
            url.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )
    };
    for param in params {
        match param.split_once('=') {
            Some(("sslmode", mode)) => {
                ssl_mode = match mode {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => return Err(format!("invalid sslmode {other:?}")),
                }
            }
            Some(("sslrootcert", path)) => root_cert = Some(path.to_owned()),
            _ => rest.push(param),
        }
    }
    let text = if is_url {
        if rest.is_empty() {
            base
        } else {
            format!("{base}?{}", rest.join("&"))
        }
    } else {
        rest.join(" ")
    };
    let mut config =
        postgres::Config::from_str(&text).map_err(|e| format!("invalid database URL: {e}"))?;
    // A peer that vanishes without a word (a failover, a dropped route) is noticed in about
    // half a minute, not the kernel's quarter of an hour, unless the URL says otherwise.
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(DEAD_PEER);
    }
    if !text.contains("keepalives") {
        config
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES);
    }
    // libpq: a root certificate given with require means verify-ca; verify-ca without one is
    // refused (any public CA's certificate for any name would pass).
    if ssl_mode == SslMode::Require && root_cert.is_some() {
        ssl_mode = SslMode::VerifyCa;
    }
    if ssl_mode == SslMode::VerifyCa && root_cert.is_none() {
        return Err(
            "sslmode=verify-ca needs sslrootcert (the CA that signed the server's certificate)"
                .into(),
        );
    }
    Ok(Target {
        config,
        ssl_mode,
        root_cert,
    })
}

impl Target {
    pub fn connect(&self) -> Result<postgres::Client, String> {
        let mut config = self.config.clone();
        let describe = |e: postgres::Error| describe_error(&e);
        // libpq uses no TLS over Unix-domain sockets, whatever sslmode says.
        let local = config
            .get_hosts()
            .iter()
            .all(|host| !matches!(host, postgres::config::Host::Tcp(_)));
        if self.ssl_mode == SslMode::Disable || local {
            config.ssl_mode(postgres::config::SslMode::Disable);
            return config.connect(postgres::NoTls).map_err(describe);
        }
        config.ssl_mode(match self.ssl_mode {
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        });
        let tls = MakeRustlsConnect::new(self.tls_config()?);
        config.connect(tls).map_err(describe)
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let webpki = self.webpki(provider)?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.ssl_mode {
            SslMode::VerifyFull => webpki,
            mode => Arc::new(Relaxed {
                webpki,
                chain: mode == SslMode::VerifyCa,
            }),
        };
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth())
    }

    /// Certificates checked against `sslrootcert`, or the Mozilla roots without one.
    fn webpki(
        &self,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Arc<WebPkiServerVerifier>, String> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                for cert in CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?
                {
                    let cert = cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("sslrootcert {path}: {e}"))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| e.to_string())
    }
}

/// What a connection error means to an operator, with its SQLSTATE when the server sent one.
pub fn describe_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                text = format!("{text}: {inner}");
                source = inner.source();
            }
            text
        }
    }
}

/// libpq's require and prefer (`chain`: false, the certificate is not checked) and verify-ca
/// (the chain is checked against the roots, the host name is not). Handshake signatures are
/// always checked, by the WebPKI verifier the modes share.
#[derive(Debug)]
struct Relaxed {
    webpki: Arc<WebPkiServerVerifier>,
    chain: bool,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        if !self.chain {
            return Ok(ServerCertVerified::assertion());
        }
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_read_as_libpq_reads_it() {
        let t = parse(
            "postgres://w:pw@db.example:6543/postgres?sslmode=verify-full&application_name=x",
        )
        .unwrap();
        assert_eq!(t.ssl_mode, SslMode::VerifyFull);
        assert_eq!(t.config.get_application_name(), Some("x"));
        assert_eq!(parse("postgres://h/db").unwrap().ssl_mode, SslMode::Prefer);
        let t = parse("host=h user=u sslmode=require sslrootcert=/ca.pem").unwrap();
        assert_eq!(
            (t.ssl_mode, t.root_cert.as_deref()),
            (SslMode::VerifyCa, Some("/ca.pem"))
        );
        assert!(matches!(parse("host=h sslmode=verify-ca"), Err(e) if e.contains("sslrootcert")));
        assert_eq!(
            parse("host=h sslmode=disable").unwrap().ssl_mode,
            SslMode::Disable
        );
        assert!(matches!(parse("host=h sslmode=sometimes"), Err(e) if e.contains("sometimes")));
    }
}
