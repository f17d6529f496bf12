//! The chain policy: a route's providers are tried in order until one accepts the message or
//! the recipient itself is refused; before every request a gate may stop the chain (the code
//! expired, or the worker's lease cannot cover the request). Pure: providers are reached through
//! the `send` closure, so every combination is unit-tested without a network.

use crate::job::Channel;
use crate::providers::Outcome;
use std::time::{Duration, Instant, SystemTime};

/// One provider's answer within a chain run.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub provider: String,
    /// The provider's own channel, when it differs from the job's (WhatsApp).
    pub delivers_on: Option<Channel>,
    pub outcome: Outcome,
    /// When the request started, and how long the provider took to answer it.
    pub started_at: SystemTime,
    pub took: Duration,
}

/// The attempt of a chain without providers.
const NO_PROVIDER: &str = "-";

/// Why the chain stopped before a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The code can no longer be used: sending it would only confuse.
    Expired,
    /// The request's worst case would end after the worker's lease: another worker could take
    /// the job over while it is in flight.
    LeaseTooShort,
    /// An operator paused this provider: the job waits for it rather than skipping it.
    Paused,
}

/// How one run of a job's provider chain ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainResult {
    Delivered,
    /// The recipient itself was refused (invalid number, unsubscribed): no provider can help.
    RecipientRejected,
    /// No provider delivered. `retryable` when a failure was temporary or a provider was not
    /// tried; `retry_after` is the longest wait a provider asked for.
    AllFailed {
        retryable: bool,
        retry_after: Option<Duration>,
    },
    /// The code expired before a request could be made.
    Expired,
    /// Nothing was sent: the lease could not cover the first request. The job goes back.
    NotStarted,
    /// The chain reached a paused provider (after the ones before it failed, if any).
    Paused {
        provider: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChainRun {
    pub attempts: Vec<Attempt>,
    pub result: ChainResult,
}

impl ChainRun {
    /// The attempt that delivered the message, if one did.
    pub fn delivered_by(&self) -> Option<&Attempt> {
        self.attempts
            .last()
            .filter(|a| matches!(a.outcome, Outcome::Sent { .. }))
    }

    /// When the first request of the run started (none if no provider was asked).
    pub fn first_request(&self) -> Option<SystemTime> {
        self.attempts
            .iter()
            .find(|a| a.provider != NO_PROVIDER)
            .map(|a| a.started_at)
    }

    /// Every failure, "provider: error", newest last.
    pub fn errors(&self) -> Option<String> {
        let errors: Vec<String> = self
            .attempts
            .iter()
            .filter_map(|a| a.outcome.error().map(|e| format!("{}: {e}", a.provider)))
            .collect();
        (!errors.is_empty()).then(|| errors.join("; "))
    }
}

/// A link of the chain as the policy sees it.
pub trait Link {
    fn name(&self) -> &str;
    fn delivers_on(&self) -> Option<Channel>;
}

/// Runs the chain. `gate(link, remaining)` is asked before each request, with the number of
/// providers still to try (this one included); `send` makes the request. A recipient refused on one
/// channel (a number without WhatsApp) skips the chain's other providers of that channel; one
/// refused outright stops the chain.
pub fn run<L: Link>(
    chain: &[L],
    mut gate: impl FnMut(&L, usize) -> Option<Stop>,
    mut send: impl FnMut(&L) -> Outcome,
) -> ChainRun {
    let mut attempts = Vec::new();
    if chain.is_empty() {
        attempts.push(Attempt {
            provider: NO_PROVIDER.into(),
            delivers_on: None,
            outcome: Outcome::Retryable {
                error: "no enabled provider is configured for this channel".into(),
                retry_after: None,
            },
            started_at: SystemTime::now(),
            took: Duration::ZERO,
        });
    }
    let mut retryable = chain.is_empty();
    let mut retry_after: Option<Duration> = None;
    let mut refused_on: Vec<Option<Channel>> = Vec::new();
    for (index, link) in chain.iter().enumerate() {
        if refused_on.contains(&link.delivers_on()) {
            continue;
        }
        match gate(link, chain.len() - index) {
            Some(Stop::Expired) => {
                return ChainRun {
                    attempts,
                    result: ChainResult::Expired,
                }
            }
            Some(Stop::Paused) => {
                return ChainRun {
                    attempts,
                    result: ChainResult::Paused {
                        provider: link.name().to_owned(),
                    },
                }
            }
            Some(Stop::LeaseTooShort) if attempts.is_empty() => {
                return ChainRun {
                    attempts,
                    result: ChainResult::NotStarted,
                }
            }
            // Later providers were not tried: the job is worth another run.
            Some(Stop::LeaseTooShort) => {
                return ChainRun {
                    attempts,
                    result: ChainResult::AllFailed {
                        retryable: true,
                        retry_after,
                    },
                }
            }
            None => {}
        }
        let started_at = SystemTime::now();
        let clock = Instant::now();
        let outcome = send(link);
        let took = clock.elapsed();
        if let Outcome::Deferred { .. } = outcome {
            // As if the gate had stopped it: nothing was sent to this provider.
            let result = match attempts.is_empty() {
                true => ChainResult::NotStarted,
                false => ChainResult::AllFailed {
                    retryable: true,
                    retry_after,
                },
            };
            return ChainRun { attempts, result };
        }
        let end = match &outcome {
            Outcome::Sent { .. } => Some(ChainResult::Delivered),
            Outcome::RecipientRejected { .. } => Some(ChainResult::RecipientRejected),
            Outcome::Retryable {
                retry_after: after, ..
            } => {
                retryable = true;
                retry_after = retry_after.max(*after);
                None
            }
            Outcome::ChannelRejected { .. } => {
                refused_on.push(link.delivers_on());
                None
            }
            Outcome::ProviderFailed { .. } | Outcome::Deferred { .. } => None,
        };
        attempts.push(Attempt {
            provider: link.name().to_owned(),
            delivers_on: link.delivers_on(),
            outcome,
            started_at,
            took,
        });
        if let Some(result) = end {
            return ChainRun { attempts, result };
        }
    }
    // Refused on every channel that was tried, and nothing else went wrong: no provider can
    // reach this recipient.
    let refused_everywhere = !refused_on.is_empty()
        && attempts.iter().all(|a| {
            matches!(a.outcome, Outcome::ChannelRejected { .. })
                || refused_on.contains(&a.delivers_on)
        });
    let result = if refused_everywhere && !retryable {
        ChainResult::RecipientRejected
    } else {
        ChainResult::AllFailed {
            retryable,
            retry_after,
        }
    };
    ChainRun { attempts, result }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct P(&'static str);
    impl Link for P {
        fn name(&self) -> &str {
            self.0
        }
        fn delivers_on(&self) -> Option<Channel> {
            (self.0 == "wa").then_some(Channel::WhatsApp)
        }
    }

    fn sent() -> Outcome {
        Outcome::Sent {
            message_id: Some("m".into()),
            note: None,
        }
    }
    fn retry(secs: u64) -> Outcome {
        Outcome::Retryable {
            error: "503".into(),
            retry_after: Some(Duration::from_secs(secs)),
        }
    }
    fn provider_failed() -> Outcome {
        Outcome::ProviderFailed {
            error: "401".into(),
        }
    }
    fn rejected() -> Outcome {
        Outcome::RecipientRejected {
            error: "invalid number".into(),
        }
    }

    #[test]
    fn a_paused_provider_holds_the_chain_after_the_ones_before_it() {
        let chain = [P("a"), P("b"), P("c")];
        let mut asked = Vec::new();
        let run = super::run(
            &chain,
            |link, _| (link.0 == "b").then_some(Stop::Paused),
            |link| {
                asked.push(link.0);
                provider_failed()
            },
        );
        assert_eq!(asked, ["a"]);
        assert_eq!(run.attempts.len(), 1);
        assert_eq!(
            run.result,
            ChainResult::Paused {
                provider: "b".into()
            }
        );
    }

    /// Runs a chain whose providers answer `answers` in order, with no gate.
    fn chain_of(answers: Vec<Outcome>) -> ChainRun {
        let names = ["a", "b", "c", "d"];
        let chain: Vec<P> = names[..answers.len()].iter().map(|n| P(n)).collect();
        let mut answers = answers.into_iter();
        run(&chain, |_, _| None, |_| answers.next().unwrap())
    }

    #[test]
    fn the_first_provider_that_accepts_ends_the_chain() {
        let run = chain_of(vec![provider_failed(), retry(1), sent()]);
        assert_eq!(run.result, ChainResult::Delivered);
        assert_eq!(run.attempts.len(), 3);
        assert_eq!(run.delivered_by().unwrap().provider, "c");
        assert_eq!(run.errors().unwrap(), "a: 401; b: 503");
    }

    #[test]
    fn a_refused_recipient_stops_the_chain() {
        let run = chain_of(vec![rejected(), sent()]);
        assert_eq!(run.result, ChainResult::RecipientRejected);
        assert_eq!(run.attempts.len(), 1);
        assert!(run.delivered_by().is_none());
    }

    #[test]
    fn failures_are_retryable_when_any_was_temporary() {
        assert_eq!(
            chain_of(vec![provider_failed(), provider_failed()]).result,
            ChainResult::AllFailed {
                retryable: false,
                retry_after: None
            }
        );
        assert_eq!(
            chain_of(vec![retry(3), provider_failed(), retry(7)]).result,
            ChainResult::AllFailed {
                retryable: true,
                retry_after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn an_empty_chain_waits_for_configuration() {
        let run = run::<P>(&[], |_, _| None, |_| unreachable!());
        assert!(matches!(
            run.result,
            ChainResult::AllFailed {
                retryable: true,
                ..
            }
        ));
        assert!(run.errors().unwrap().contains("no enabled provider"));
    }

    #[test]
    fn the_gate_sees_the_providers_left_and_can_stop_each_request() {
        let chain = [P("a"), P("b"), P("c")];
        let mut asked = vec![];
        let run = run(
            &chain,
            |_, left| {
                asked.push(left);
                None
            },
            |_| provider_failed(),
        );
        assert_eq!(asked, vec![3, 2, 1]);
        assert_eq!(run.attempts.len(), 3);

        // Expired before the first request, and before a fallback.
        let expired = super::run(&chain, |_, _| Some(Stop::Expired), |_| unreachable!());
        assert_eq!(
            (expired.result, expired.attempts.len()),
            (ChainResult::Expired, 0)
        );
        let mut calls = 0;
        let expired = super::run(
            &chain,
            |_, left| (left < 3).then_some(Stop::Expired),
            |_| {
                calls += 1;
                retry(1)
            },
        );
        assert_eq!((expired.result, calls), (ChainResult::Expired, 1));

        // A lease too short for the first request gives the job back untouched; after a
        // request it is a retry (the rest of the chain was never tried).
        let short = super::run(&chain, |_, _| Some(Stop::LeaseTooShort), |_| unreachable!());
        assert_eq!(
            (short.result, short.attempts.len()),
            (ChainResult::NotStarted, 0)
        );
        let short = super::run(
            &chain,
            |_, left| (left < 3).then_some(Stop::LeaseTooShort),
            |_| provider_failed(),
        );
        assert_eq!(
            short.result,
            ChainResult::AllFailed {
                retryable: true,
                retry_after: None
            }
        );
    }

    #[test]
    fn a_recipient_refused_on_one_channel_tries_the_next_channel() {
        let no_whatsapp = || Outcome::ChannelRejected {
            error: "63024".into(),
        };
        // WhatsApp refuses the number; the second WhatsApp provider is skipped, SMS delivers.
        let chain = [P("wa"), P("wa"), P("sms")];
        let mut answers = vec![no_whatsapp(), sent()].into_iter();
        let mut asked = vec![];
        let run = run(
            &chain,
            |_, _| None,
            |link| {
                asked.push(link.0);
                answers.next().unwrap()
            },
        );
        assert_eq!(run.result, ChainResult::Delivered);
        assert_eq!(asked, vec!["wa", "sms"]);
        // Refused on the only channel there is: nobody can reach it, no retry.
        let run = super::run(&[P("wa")], |_, _| None, |_| no_whatsapp());
        assert_eq!(run.result, ChainResult::RecipientRejected);
        // Refused on WhatsApp, SMS down for now: worth a retry.
        let mut answers = vec![no_whatsapp(), retry(5)].into_iter();
        let run = super::run(
            &[P("wa"), P("sms")],
            |_, _| None,
            |_| answers.next().unwrap(),
        );
        assert!(matches!(
            run.result,
            ChainResult::AllFailed {
                retryable: true,
                ..
            }
        ));
    }

    #[test]
    fn a_provider_that_defers_is_not_an_attempt() {
        let deferred = || Outcome::Deferred {
            reason: "rate limit".into(),
        };
        let run = chain_of(vec![deferred(), sent()]);
        assert_eq!(
            (run.result, run.attempts.len()),
            (ChainResult::NotStarted, 0)
        );
        let run = chain_of(vec![provider_failed(), deferred()]);
        assert_eq!(run.attempts.len(), 1);
        assert!(matches!(
            run.result,
            ChainResult::AllFailed {
                retryable: true,
                ..
            }
        ));
    }

    #[test]
    fn the_channel_of_the_provider_that_delivered_is_kept() {
        let chain = [P("wa"), P("sms")];
        let mut answers = vec![sent()].into_iter();
        let run = run(&chain, |_, _| None, |_| answers.next().unwrap());
        assert_eq!(
            run.delivered_by().unwrap().delivers_on,
            Some(Channel::WhatsApp)
        );
    }
}
