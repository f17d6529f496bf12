//! Pauses (sql/operations.sql): an operator holds a channel, a route or a provider, and the
//! jobs that would go through it wait, status 'paused', without spending retries, until it is
//! resumed. Pure: the worker asks before and during a job's chain.

use crate::job::Channel;
use std::collections::HashSet;

/// What is paused, as `scope:name` keys ("channel:sms", "route:mx", "provider:twilio").
#[derive(Debug, Default, Clone)]
pub struct Pauses(HashSet<String>);

pub fn key(scope: &str, name: &str) -> String {
    format!("{scope}:{name}")
}

impl Pauses {
    pub fn new(keys: impl IntoIterator<Item = String>) -> Pauses {
        Pauses(keys.into_iter().collect())
    }

    fn get(&self, scope: &str, name: &str) -> Option<String> {
        let key = key(scope, name);
        self.0.contains(&key).then_some(key)
    }

    /// The pause that holds a whole job before any request: its channel's, then its route's.
    /// A job sent on WhatsApp once (then redriven, or undelivered) is still an SMS job.
    pub fn holding(&self, channel: Channel, route: Option<&str>) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let channel = match channel {
            Channel::WhatsApp => Channel::Sms,
            other => other,
        };
        self.get("channel", channel.as_str())
            .or_else(|| route.and_then(|r| self.get("route", r)))
    }

    /// The pause of a provider, if it is paused. The chain asks before each request: the
    /// providers before a paused one are tried, and should none of them deliver, the job waits
    /// for it rather than skipping it (skipping is what disabling a provider does).
    pub fn provider(&self, name: &str) -> Option<String> {
        self.get("provider", name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_pause_comes_before_a_route_pause() {
        let pauses = Pauses::new(["channel:sms".into(), "route:mx".into()]);
        assert_eq!(
            pauses.holding(Channel::Sms, Some("mx")).as_deref(),
            Some("channel:sms")
        );
        assert_eq!(
            pauses.holding(Channel::Email, Some("mx")).as_deref(),
            Some("route:mx")
        );
        assert_eq!(pauses.holding(Channel::Email, Some("eu")), None);
        assert_eq!(pauses.holding(Channel::Email, None), None);
        assert_eq!(
            pauses.holding(Channel::WhatsApp, None).as_deref(),
            Some("channel:sms")
        );
    }

    #[test]
    fn a_provider_pause_is_found_by_name() {
        let pauses = Pauses::new(["provider:b".into()]);
        assert_eq!(pauses.provider("b").as_deref(), Some("provider:b"));
        assert_eq!(pauses.provider("a"), None);
        assert_eq!(Pauses::default().provider("b"), None);
    }
}
