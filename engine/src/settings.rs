//! The worker's settings. In the extension they are GUCs (`mysmshook.concurrency`, …); in
//! mysmshook-worker, flags and environment variables with the same names and defaults.

use crate::retry::Backoff;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub batch_size: i32,
    pub concurrency: usize,
    /// A slow provider's share of the threads, 0 to 1 (the bulkhead).
    pub provider_share: f64,
    pub http_timeout: Duration,
    pub lease: Duration,
    pub backoff: Backoff,
    pub poll_interval: Duration,
    pub allow_http_loopback: bool,
    pub log_sink: bool,
    pub accepted_number_prefixes: Vec<String>,
    pub app_name: Option<String>,
}

/// The defaults, in the GUCs' units: the extension's GUCs and mysmshook-worker's flags both
/// start from these.
pub mod defaults {
    pub const BATCH_SIZE: i32 = 100;
    pub const CONCURRENCY: i32 = 16;
    pub const PROVIDER_SHARE: f64 = 0.5;
    pub const HTTP_TIMEOUT_MS: i32 = 10_000;
    pub const LEASE_S: i32 = 30;
    pub const RETRY_BASE_MS: i32 = 2_000;
    pub const RETRY_MAX_S: i32 = 300;
    pub const POLL_INTERVAL_MS: i32 = 250;
    pub const RETENTION_S: i32 = 7 * 24 * 3600;
}

impl Default for Settings {
    fn default() -> Settings {
        use defaults::*;
        let ms = |n: i32| Duration::from_millis(n as u64);
        let s = |n: i32| Duration::from_secs(n as u64);
        Settings {
            batch_size: BATCH_SIZE,
            concurrency: CONCURRENCY as usize,
            provider_share: PROVIDER_SHARE,
            http_timeout: ms(HTTP_TIMEOUT_MS),
            lease: s(LEASE_S),
            backoff: Backoff {
                base: ms(RETRY_BASE_MS),
                max: s(RETRY_MAX_S),
            },
            poll_interval: ms(POLL_INTERVAL_MS),
            allow_http_loopback: false,
            log_sink: false,
            accepted_number_prefixes: Vec::new(),
            app_name: None,
        }
    }
}

/// A provider share as a fraction of the threads: out of range is clamped, NaN means no limit.
pub fn clamp_share(share: f64) -> f64 {
    if share.is_finite() {
        share.clamp(0.0, 1.0)
    } else {
        1.0
    }
}

/// mysmshook.accepted_number_prefixes as E.164 prefixes ("521" is read as "+521").
pub fn number_prefixes(list: &str) -> Vec<String> {
    list.split([',', ' '])
        .map(|p| p.trim().trim_start_matches('+'))
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .map(|p| format!("+{p}"))
        .collect()
}

/// A duration as PostgreSQL writes a GUC's: a number with a unit (us, ms, s, min, h, d), or a
/// bare number in `unit` (the GUC's own).
pub fn parse_duration(text: &str, unit: Duration) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 250ms, 10s, 1min)"))?;
    let unit = match suffix.trim() {
        "" => unit,
        "us" => Duration::from_micros(1),
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "min" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        "d" => Duration::from_secs(86_400),
        other => return Err(format!("{other:?} is not a unit (us, ms, s, min, h, d)")),
    };
    Ok(unit.mul_f64(number))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_digits_with_a_plus() {
        assert_eq!(number_prefixes("521, +44 x1 ,"), ["+521", "+44"]);
        assert_eq!(clamp_share(f64::NAN), 1.0);
        assert_eq!(clamp_share(2.0), 1.0);
        assert_eq!(clamp_share(-1.0), 0.0);
    }

    #[test]
    fn durations_read_as_postgresql_writes_them() {
        let ms = Duration::from_millis(1);
        assert_eq!(parse_duration("250", ms), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s", ms), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5min", ms), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("7d", ms),
            Ok(Duration::from_secs(7 * 86_400))
        );
        assert!(parse_duration("soon", ms).is_err());
        assert!(parse_duration("3 fortnights", ms).is_err());
    }
}
