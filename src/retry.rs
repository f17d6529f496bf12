//! What happens to a job after one delivery attempt: the backoff policy and the final verdict.
//! Pure.

use std::time::Duration;

/// Exponential backoff with "equal jitter": retry n waits between half and all of
/// min(max, base * 2^n), so that retries of a failed batch spread out instead of stampeding.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

/// A provider's Retry-After is honoured up to this much; beyond it the job would outlive any code.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(24 * 3600);

impl Backoff {
    /// `jitter` is uniform in [0, 1).
    pub fn delay(&self, retry_count: i32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let exponent = retry_count.clamp(0, 30) as u32;
        let ceiling = self.base.saturating_mul(1u32 << exponent).min(self.max);
        let jittered = ceiling.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        match retry_after {
            Some(wait) => jittered.max(wait.min(RETRY_AFTER_CAP)),
            None => jittered,
        }
    }
}

/// How one run of a job's provider chain ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainResult {
    Delivered,
    /// The recipient itself was refused (invalid number, unsubscribed): no provider can help.
    RecipientRejected,
    /// Every provider failed. `retryable` when at least one failure was temporary.
    AllFailed {
        retryable: bool,
        retry_after: Option<Duration>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Completed,
    Retry { after: Duration },
    Failed,
}

pub fn verdict(
    result: &ChainResult,
    retry_count: i32,
    max_retries: i32,
    backoff: &Backoff,
    jitter: f64,
) -> Verdict {
    match result {
        ChainResult::Delivered => Verdict::Completed,
        ChainResult::RecipientRejected => Verdict::Failed,
        ChainResult::AllFailed {
            retryable: false, ..
        } => Verdict::Failed,
        ChainResult::AllFailed { retry_after, .. } if retry_count < max_retries => Verdict::Retry {
            after: backoff.delay(retry_count, *retry_after, jitter),
        },
        ChainResult::AllFailed { .. } => Verdict::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Backoff = Backoff {
        base: Duration::from_secs(2),
        max: Duration::from_secs(60),
    };

    #[test]
    fn doubles_within_jitter_bounds_and_caps() {
        for (n, ceiling) in [(0, 2), (1, 4), (2, 8), (5, 60), (30, 60)] {
            let low = POLICY.delay(n, None, 0.0);
            let high = POLICY.delay(n, None, 0.999_999);
            assert_eq!(low, Duration::from_secs(ceiling) / 2, "retry {n}");
            assert!(
                high <= Duration::from_secs(ceiling) && high > low,
                "retry {n}"
            );
        }
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped() {
        assert_eq!(
            POLICY.delay(0, Some(Duration::from_secs(30)), 0.5),
            Duration::from_secs(30)
        );
        assert_eq!(
            POLICY.delay(0, Some(Duration::from_millis(1)), 0.0),
            Duration::from_secs(1)
        );
        assert_eq!(
            POLICY.delay(0, Some(Duration::from_secs(10 << 20)), 0.0),
            RETRY_AFTER_CAP
        );
    }

    #[test]
    fn verdicts() {
        let temp = ChainResult::AllFailed {
            retryable: true,
            retry_after: None,
        };
        let perm = ChainResult::AllFailed {
            retryable: false,
            retry_after: None,
        };
        assert_eq!(
            verdict(&ChainResult::Delivered, 9, 0, &POLICY, 0.0),
            Verdict::Completed
        );
        assert_eq!(
            verdict(&ChainResult::RecipientRejected, 0, 3, &POLICY, 0.0),
            Verdict::Failed
        );
        assert_eq!(verdict(&perm, 0, 3, &POLICY, 0.0), Verdict::Failed);
        assert_eq!(
            verdict(&temp, 0, 3, &POLICY, 0.0),
            Verdict::Retry {
                after: Duration::from_secs(1)
            }
        );
        assert_eq!(verdict(&temp, 3, 3, &POLICY, 0.0), Verdict::Failed);
    }
}
