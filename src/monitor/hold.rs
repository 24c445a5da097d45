//! Holds that stop probes for a while, apart from the breaker:
//! - `rate_limited`: nothing before `Retry-After` (capped at
//!   `retry_after_max`, default 1 h); without the header, exponential backoff
//!   with full jitter, base = the connection's interval, capped at
//!   `rate_limit_backoff_max` (default 30 m);
//! - `auth_required`, `permission_denied`: the next probe only after
//!   `auth_interval` (retrying does not fix them; a person does).
//!
//! Pure: time and the jitter draw are passed in.

use crate::model::{Outcome, UnixMs};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct HoldSettings {
    /// Base of the rate-limit backoff (the connection's interval).
    pub base: Duration,
    pub retry_after_max: Duration,
    pub backoff_max: Duration,
    pub auth_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct HoldState {
    pub rate_limited_until: Option<UnixMs>,
    /// Rate-limited answers in a row without a usable Retry-After.
    pub backoff_attempts: u32,
    pub auth_until: Option<UnixMs>,
}

/// What a rate limit decided, for the event and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHold {
    pub until: UnixMs,
    /// The server's Retry-After was larger than `retry_after_max`.
    pub capped_from: Option<Duration>,
    /// No Retry-After: exponential backoff.
    pub backoff: bool,
}

impl HoldState {
    /// Feeds one outcome; returns the rate-limit hold if one was set.
    pub fn record(
        &mut self,
        outcome: Outcome,
        retry_after: Option<Duration>,
        now: UnixMs,
        s: &HoldSettings,
        draw: f64,
    ) -> Option<RateHold> {
        self.auth_until = outcome
            .needs_a_person()
            .then(|| now + s.auth_interval.as_millis() as i64);
        if outcome != Outcome::RateLimited {
            self.rate_limited_until = None;
            self.backoff_attempts = 0;
            return None;
        }
        Some(self.rate_limit(retry_after, now, s, draw))
    }

    /// A rate-limited answer (of the status endpoint or of a scope: one
    /// limit per connection): no probe before its Retry-After, or the
    /// backoff.
    pub fn rate_limit(
        &mut self,
        retry_after: Option<Duration>,
        now: UnixMs,
        s: &HoldSettings,
        draw: f64,
    ) -> RateHold {
        let (wait, capped_from, backoff) = match retry_after {
            Some(ra) if ra > s.retry_after_max => (s.retry_after_max, Some(ra), false),
            Some(ra) => (ra, None, false),
            None => {
                self.backoff_attempts = self.backoff_attempts.saturating_add(1);
                let exp = s.base.as_millis() as f64
                    * 2f64.powi((self.backoff_attempts - 1).min(40) as i32);
                let ceiling = exp.min(s.backoff_max.as_millis() as f64);
                (
                    Duration::from_millis((ceiling * draw.clamp(0.0, 1.0)) as u64),
                    None,
                    true,
                )
            }
        };
        if !backoff {
            self.backoff_attempts = 0;
        }
        let until = now + wait.as_millis() as i64;
        // A later deadline already set (by another answer) stands.
        let until = self
            .rate_limited_until
            .filter(|t| *t > until)
            .unwrap_or(until);
        self.rate_limited_until = Some(until);
        RateHold {
            until,
            capped_from,
            backoff,
        }
    }

    /// The hold in force at `now`, with its reason.
    pub fn blocked_until(&self, now: UnixMs) -> Option<(UnixMs, &'static str)> {
        let rl = self
            .rate_limited_until
            .filter(|t| now < *t)
            .map(|t| (t, "retry_after"));
        let auth = self
            .auth_until
            .filter(|t| now < *t)
            .map(|t| (t, "auth_backoff"));
        match (rl, auth) {
            (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> HoldSettings {
        HoldSettings {
            base: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(3600),
            backoff_max: Duration::from_secs(60),
            auth_interval: Duration::from_secs(300),
        }
    }

    #[test]
    fn retry_after_holds_until_its_deadline() {
        let mut h = HoldState::default();
        let r = h
            .record(
                Outcome::RateLimited,
                Some(Duration::from_secs(20)),
                1_000,
                &s(),
                0.5,
            )
            .unwrap();
        assert_eq!(
            r,
            RateHold {
                until: 21_000,
                capped_from: None,
                backoff: false
            }
        );
        assert_eq!(h.blocked_until(20_999), Some((21_000, "retry_after")));
        assert_eq!(h.blocked_until(21_000), None);
        // A later success clears it.
        h.record(Outcome::Online, None, 21_000, &s(), 0.5);
        assert_eq!(h, HoldState::default());
    }

    #[test]
    fn far_future_retry_after_is_capped() {
        let mut h = HoldState::default();
        let r = h
            .record(
                Outcome::RateLimited,
                Some(Duration::from_secs(86_400)),
                0,
                &s(),
                0.5,
            )
            .unwrap();
        assert_eq!(r.until, 3_600_000);
        assert_eq!(r.capped_from, Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn no_header_backs_off_exponentially_with_full_jitter() {
        let mut h = HoldState::default();
        let waits: Vec<i64> = (0..9)
            .map(|_| {
                h.record(Outcome::RateLimited, None, 0, &s(), 0.999_999)
                    .unwrap()
                    .until
            })
            .collect();
        // Ceilings 1, 2, 4, 8, 16, 32, 60, 60, 60 s (draw ~1).
        assert_eq!(
            waits,
            vec![999, 1_999, 3_999, 7_999, 15_999, 31_999, 59_999, 59_999, 59_999]
        );
        let mut h = HoldState::default();
        assert_eq!(
            h.record(Outcome::RateLimited, None, 0, &s(), 0.0)
                .unwrap()
                .until,
            0,
            "full jitter reaches zero"
        );
        assert!(
            h.record(Outcome::RateLimited, None, 0, &s(), 0.5)
                .unwrap()
                .backoff
        );
    }

    #[test]
    fn auth_required_switches_to_the_slow_cadence() {
        let mut h = HoldState::default();
        assert_eq!(
            h.record(Outcome::AuthRequired, None, 1_000, &s(), 0.5),
            None
        );
        assert_eq!(h.blocked_until(2_000), Some((301_000, "auth_backoff")));
        h.record(Outcome::Online, None, 301_000, &s(), 0.5);
        assert_eq!(h.blocked_until(301_001), None);
    }
}
