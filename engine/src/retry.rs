//! What happens to a job after one delivery attempt: the backoff policy and the final verdict.
//! Pure.

use crate::chain::ChainResult;
use std::time::Duration;

/// Exponential backoff with "equal jitter": retry n waits between half and all of
/// min(max, base * 2^n), so that retries of a failed batch spread out instead of stampeding.
#[derive(Debug, Clone, Copy, PartialEq)]
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

/// What becomes of a job after a chain run.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Completed,
    Retry {
        after: Duration,
    },
    Failed,
    /// The code expired before it could be sent, or would before the next try.
    Expired,
    /// Nothing was tried: back in line, no retry charged.
    Release,
}

/// `remaining_life`: how long the job's code stays usable (None: no code, never expires).
pub fn verdict(
    result: &ChainResult,
    retry_count: i32,
    max_retries: i32,
    backoff: &Backoff,
    jitter: f64,
    remaining_life: Option<Duration>,
) -> Verdict {
    match result {
        ChainResult::Delivered => Verdict::Completed,
        ChainResult::RecipientRejected => Verdict::Failed,
        ChainResult::Expired => Verdict::Expired,
        // The worker records a paused job before asking for a verdict; should one come here,
        // it goes back in line uncharged.
        ChainResult::NotStarted | ChainResult::Paused { .. } => Verdict::Release,
        ChainResult::AllFailed {
            retryable: false, ..
        } => Verdict::Failed,
        ChainResult::AllFailed { retry_after, .. } if retry_count < max_retries => {
            let after = backoff.delay(retry_count, *retry_after, jitter);
            match remaining_life {
                // The next try would send a dead code: stop now and say so.
                Some(life) if after >= life => Verdict::Expired,
                _ => Verdict::Retry { after },
            }
        }
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
            verdict(&ChainResult::Delivered, 9, 0, &POLICY, 0.0, None),
            Verdict::Completed
        );
        assert_eq!(
            verdict(&ChainResult::RecipientRejected, 0, 3, &POLICY, 0.0, None),
            Verdict::Failed
        );
        assert_eq!(verdict(&perm, 0, 3, &POLICY, 0.0, None), Verdict::Failed);
        assert_eq!(
            verdict(&temp, 0, 3, &POLICY, 0.0, None),
            Verdict::Retry {
                after: Duration::from_secs(1)
            }
        );
        assert_eq!(verdict(&temp, 3, 3, &POLICY, 0.0, None), Verdict::Failed);
        assert_eq!(
            verdict(&ChainResult::Expired, 0, 3, &POLICY, 0.0, None),
            Verdict::Expired
        );
        assert_eq!(
            verdict(&ChainResult::NotStarted, 3, 3, &POLICY, 0.0, None),
            Verdict::Release
        );
    }

    #[test]
    fn a_retry_that_would_send_a_dead_code_expires_now() {
        let temp = ChainResult::AllFailed {
            retryable: true,
            retry_after: Some(Duration::from_secs(30)),
        };
        let life = |s| Some(Duration::from_secs(s));
        assert_eq!(
            verdict(&temp, 0, 3, &POLICY, 0.0, life(20)),
            Verdict::Expired
        );
        assert_eq!(
            verdict(&temp, 0, 3, &POLICY, 0.0, life(31)),
            Verdict::Retry {
                after: Duration::from_secs(30)
            }
        );
    }
}
