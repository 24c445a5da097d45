//! Confirmed health, like a Nagios hard state: one blip does not change it.
//!
//! Rules (docs/design.md, "Health confirmation"):
//! - a failure outcome (offline, unreachable, invalid) becomes the health after
//!   `failure_threshold` consecutive failures; while already failing, a
//!   *different* failure outcome takes over once it has itself been seen
//!   `failure_threshold` times in a row;
//! - `auth_required`, `permission_denied` and `rate_limited` are explicit
//!   answers and count at once;
//! - `online` returns after `success_threshold` consecutive online probes when
//!   the health was anything but online/degraded;
//! - `degraded` (not a failure) is confirmed like a failure: after
//!   `failure_threshold` consecutive degraded probes when online, after
//!   `success_threshold` non-failure probes when coming back from a failure;
//! - from `unknown`, the first non-failure outcome counts at once (there is
//!   nothing to confirm against); failures still need the threshold.

use crate::model::{Health, Outcome, UnixMs};
use serde::{Deserialize, Serialize};

/// Counters stop here (above any threshold, which is at most 100): a steady
/// connection's state then stops changing, so it is not rewritten.
pub const COUNTER_CAP: u32 = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub failure: u32,
    pub success: u32,
}

/// A confirmed change of health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub previous: Health,
    pub current: Health,
    pub at: UnixMs,
}

/// The state of one connection's health. Serializable so that it survives a
/// restart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HealthMachine {
    pub health: Health,
    /// When the current health was confirmed.
    pub since: Option<UnixMs>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    /// The latest outcome and how many times in a row it was seen.
    pub last: Option<Outcome>,
    pub run: u32,
}

impl Default for HealthMachine {
    fn default() -> Self {
        HealthMachine {
            health: Health::Unknown,
            since: None,
            consecutive_failures: 0,
            consecutive_successes: 0,
            last: None,
            run: 0,
        }
    }
}

impl HealthMachine {
    /// Resumes with a known health (after a restart); counters start afresh.
    pub fn resume(health: Health, since: Option<UnixMs>) -> Self {
        HealthMachine {
            health,
            since,
            ..Default::default()
        }
    }

    /// Feeds one outcome; returns the transition if the health changed.
    pub fn observe(&mut self, outcome: Outcome, at: UnixMs, t: Thresholds) -> Option<Transition> {
        // `run` and the success count are only compared with the thresholds,
        // so they stop at the larger one: a steady connection's state stops
        // changing after a few probes and is no longer rewritten each time.
        let cap = t.failure.max(t.success).clamp(1, COUNTER_CAP);
        if self.last == Some(outcome) {
            self.run = self.run.saturating_add(1).min(cap);
        } else {
            self.last = Some(outcome);
            self.run = 1;
        }
        if outcome.is_failure() {
            self.consecutive_failures =
                self.consecutive_failures.saturating_add(1).min(COUNTER_CAP);
            self.consecutive_successes = 0;
        } else if matches!(outcome, Outcome::Online | Outcome::Degraded) {
            self.consecutive_successes = self.consecutive_successes.saturating_add(1).min(cap);
            self.consecutive_failures = 0;
        } else {
            // auth_required / permission_denied / rate_limited: neither a
            // failure nor a success.
            self.consecutive_failures = 0;
            self.consecutive_successes = 0;
        }

        let target = self.target(outcome, t)?;
        if Health::Is(target) == self.health {
            return None;
        }
        let tr = Transition {
            previous: self.health,
            current: Health::Is(target),
            at,
        };
        self.health = Health::Is(target);
        self.since = Some(at);
        Some(tr)
    }

    /// The health this outcome confirms, if any.
    fn target(&self, outcome: Outcome, t: Thresholds) -> Option<Outcome> {
        let current = self.health;
        match outcome {
            Outcome::AuthRequired | Outcome::PermissionDenied | Outcome::RateLimited => {
                Some(outcome)
            }
            o if o.is_failure() => {
                if current.is_failure() {
                    (self.run >= t.failure).then_some(o)
                } else {
                    (self.consecutive_failures >= t.failure).then_some(o)
                }
            }
            Outcome::Online => match current {
                Health::Unknown => Some(Outcome::Online),
                Health::Is(Outcome::Online) => None,
                Health::Is(Outcome::Degraded) => (self.run >= t.success).then_some(Outcome::Online),
                Health::Is(_) => {
                    (self.consecutive_successes >= t.success).then_some(Outcome::Online)
                }
            },
            Outcome::Degraded => match current {
                Health::Unknown => Some(Outcome::Degraded),
                Health::Is(Outcome::Degraded) => None,
                Health::Is(Outcome::Online) => (self.run >= t.failure).then_some(Outcome::Degraded),
                // Coming back from a failure/auth/rate limit: any success run
                // long enough confirms; its last outcome is the new health.
                Health::Is(_) => {
                    (self.consecutive_successes >= t.success).then_some(Outcome::Degraded)
                }
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    const T: Thresholds = Thresholds {
        failure: 3,
        success: 2,
    };

    /// Feeds a sequence; returns the health after each step.
    fn walk(m: &mut HealthMachine, seq: &[Outcome]) -> Vec<Health> {
        seq.iter()
            .enumerate()
            .map(|(i, o)| {
                m.observe(*o, i as i64, T);
                m.health
            })
            .collect()
    }

    fn h(o: Outcome) -> Health {
        Health::Is(o)
    }

    #[test]
    fn first_success_counts_at_once_failures_need_the_threshold() {
        let mut m = HealthMachine::default();
        assert_eq!(walk(&mut m, &[Online]), vec![h(Online)]);
        let mut m = HealthMachine::default();
        assert_eq!(
            walk(&mut m, &[Offline, Offline, Offline]),
            vec![Health::Unknown, Health::Unknown, h(Offline)]
        );
    }

    #[test]
    fn one_blip_does_not_change_health() {
        let mut m = HealthMachine::default();
        let hs = walk(
            &mut m,
            &[Online, Offline, Online, Unreachable, Unreachable, Online],
        );
        assert!(hs.iter().all(|x| *x == h(Online)), "{hs:?}");
    }

    #[test]
    fn mixed_failures_count_together_and_the_latest_wins() {
        let mut m = HealthMachine::default();
        let hs = walk(&mut m, &[Online, Offline, Invalid, Unreachable]);
        assert_eq!(hs.last(), Some(&h(Unreachable)));
        assert_eq!(m.consecutive_failures, 3);
    }

    #[test]
    fn switching_failure_kind_needs_its_own_run() {
        let mut m = HealthMachine::default();
        walk(&mut m, &[Offline, Offline, Offline]);
        assert_eq!(m.health, h(Offline));
        m.observe(Unreachable, 10, T);
        m.observe(Unreachable, 11, T);
        assert_eq!(m.health, h(Offline));
        let tr = m.observe(Unreachable, 12, T).unwrap();
        assert_eq!(
            (tr.previous, tr.current, tr.at),
            (h(Offline), h(Unreachable), 12)
        );
    }

    #[test]
    fn recovery_needs_success_threshold() {
        let mut m = HealthMachine::default();
        walk(&mut m, &[Offline, Offline, Offline]);
        assert!(m.observe(Online, 5, T).is_none());
        assert_eq!(m.health, h(Offline));
        let tr = m.observe(Online, 6, T).unwrap();
        assert_eq!(tr.current, h(Online));
        assert_eq!(m.since, Some(6));
        // An interrupted recovery starts over.
        walk(&mut m, &[Offline, Offline, Offline]);
        m.observe(Online, 7, T);
        m.observe(Offline, 8, T);
        m.observe(Online, 9, T);
        assert_eq!(m.health, h(Offline));
    }

    #[test]
    fn auth_and_rate_limit_count_at_once() {
        let mut m = HealthMachine::default();
        walk(&mut m, &[Online]);
        let tr = m.observe(AuthRequired, 1, T).unwrap();
        assert_eq!(tr.current, h(AuthRequired));
        let tr = m.observe(RateLimited, 2, T).unwrap();
        assert_eq!(tr.current, h(RateLimited));
        assert!(m.observe(RateLimited, 3, T).is_none());
        // They interrupt a failure run.
        let mut m = HealthMachine::default();
        walk(&mut m, &[Online, Offline, Offline, RateLimited, Offline]);
        assert_eq!(m.consecutive_failures, 1);
        // Back to online after the success threshold.
        let mut m = HealthMachine::default();
        walk(&mut m, &[AuthRequired, Online]);
        assert_eq!(m.health, h(AuthRequired));
        m.observe(Online, 9, T);
        assert_eq!(m.health, h(Online));
    }

    #[test]
    fn degraded_is_confirmed_and_not_a_failure() {
        let mut m = HealthMachine::default();
        walk(&mut m, &[Online, Degraded, Degraded]);
        assert_eq!(m.health, h(Online));
        m.observe(Degraded, 3, T);
        assert_eq!(m.health, h(Degraded));
        assert_eq!(m.consecutive_failures, 0);
        m.observe(Online, 4, T);
        assert_eq!(m.health, h(Degraded));
        m.observe(Online, 5, T);
        assert_eq!(m.health, h(Online));
        // From a failure, two non-failure probes confirm; the last one wins.
        walk(&mut m, &[Offline, Offline, Offline]);
        m.observe(Online, 20, T);
        m.observe(Degraded, 21, T);
        assert_eq!(m.health, h(Degraded));
    }

    #[test]
    fn threshold_one_is_immediate() {
        let t = Thresholds {
            failure: 1,
            success: 1,
        };
        let mut m = HealthMachine::default();
        assert!(m.observe(Offline, 0, t).is_some());
        assert!(m.observe(Online, 1, t).is_some());
    }

    #[test]
    fn resume_keeps_health() {
        let mut m = HealthMachine::resume(h(Offline), Some(100));
        assert!(m.observe(Offline, 101, T).is_none());
        assert_eq!(m.since, Some(100));
    }
}
