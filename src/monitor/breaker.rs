//! The circuit breaker of one connection: `closed`, `open`, `half_open`.
//!
//! Pure: time and the jitter draw are passed in.
//! - Opens on `failure_threshold` consecutive failures, or when the failure
//!   rate over the last `window` probes reaches `failure_rate` once
//!   `min_probes` were made (a count-based window).
//! - While open the connection is not probed; after the open wait, one trial
//!   probe (`half_open`). `success_threshold` successes close it; a failure
//!   reopens it with the wait doubled, capped at `max_open_for`.
//! - The wait is jittered by ±20 % so a fleet opened by one platform outage
//!   does not retry in lockstep.
//! - Only failures count. `rate_limited` and `auth_required` are neutral
//!   (neither failure nor success); `degraded` is a success.

use crate::config::Breaker as Settings;
use crate::model::{Outcome, UnixMs};
use serde::{Deserialize, Serialize};

/// How far the open wait is jittered either way.
pub const JITTER: f64 = 0.2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl Circuit {
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }
}

/// What a probe did to the circuit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CircuitEvent {
    Opened {
        consecutive_failures: u32,
        /// Failure rate of the window when the rate opened it.
        failure_rate: Option<f64>,
        /// When the trial probe will be allowed.
        until: UnixMs,
        /// Open waits in a row (0 for the first).
        reopen: u32,
    },
    HalfOpened,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Hash, Serialize, Deserialize, Default)]
pub struct BreakerState {
    pub circuit: Circuit,
    pub consecutive_failures: u32,
    /// Recent outcomes for the rate, oldest first: '1' failure, '0' success.
    pub recent: String,
    /// While open: when a trial is allowed.
    pub open_until: Option<UnixMs>,
    /// How many times it reopened in a row (the wait doubles each time).
    pub reopens: u32,
    /// Successes since half-open.
    pub trial_successes: u32,
}

impl BreakerState {
    /// `Some(until)` if a probe must not be sent now.
    pub fn blocked_until(&self, now: UnixMs) -> Option<UnixMs> {
        match (self.circuit, self.open_until) {
            (Circuit::Open, Some(t)) if now < t => Some(t),
            _ => None,
        }
    }

    /// Called when a probe is about to be sent: an open circuit whose wait
    /// has passed becomes half-open (the trial).
    pub fn begin_probe(&mut self, now: UnixMs) -> Option<CircuitEvent> {
        if self.circuit == Circuit::Open && self.blocked_until(now).is_none() {
            self.circuit = Circuit::HalfOpen;
            self.trial_successes = 0;
            self.open_until = None;
            return Some(CircuitEvent::HalfOpened);
        }
        None
    }

    /// Feeds one outcome. `draw` is a uniform number in [0, 1) for jitter.
    pub fn record(
        &mut self,
        outcome: Outcome,
        now: UnixMs,
        s: &Settings,
        draw: f64,
    ) -> Option<CircuitEvent> {
        let failure = outcome.is_failure();
        let neutral = outcome == Outcome::RateLimited || outcome.needs_a_person();
        match self.circuit {
            Circuit::Open => None, // no probe is sent while open
            Circuit::HalfOpen => {
                if neutral {
                    return None;
                }
                if failure {
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                    self.reopens = self.reopens.saturating_add(1);
                    Some(self.open(now, s, draw, None))
                } else {
                    self.trial_successes += 1;
                    if self.trial_successes >= s.success_threshold {
                        *self = BreakerState::default();
                        Some(CircuitEvent::Closed)
                    } else {
                        None
                    }
                }
            }
            Circuit::Closed => {
                if neutral {
                    self.consecutive_failures = 0;
                    return None;
                }
                if failure {
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                } else {
                    self.consecutive_failures = 0;
                }
                self.recent.push(if failure { '1' } else { '0' });
                let window = s.window.max(1) as usize;
                if self.recent.len() > window {
                    let cut = self.recent.len() - window;
                    self.recent.drain(..cut);
                }
                if self.consecutive_failures >= s.failure_threshold {
                    self.reopens = 0;
                    return Some(self.open(now, s, draw, None));
                }
                if let Some(rate) = s.failure_rate {
                    let n = self.recent.len();
                    if n >= s.min_probes as usize {
                        let f =
                            self.recent.bytes().filter(|b| *b == b'1').count() as f64 / n as f64;
                        if f >= rate {
                            self.reopens = 0;
                            return Some(self.open(now, s, draw, Some(f)));
                        }
                    }
                }
                None
            }
        }
    }

    fn open(&mut self, now: UnixMs, s: &Settings, draw: f64, rate: Option<f64>) -> CircuitEvent {
        let wait = open_wait(s, self.reopens, draw);
        self.circuit = Circuit::Open;
        self.open_until = Some(now + wait);
        self.trial_successes = 0;
        self.recent.clear();
        CircuitEvent::Opened {
            consecutive_failures: self.consecutive_failures,
            failure_rate: rate,
            until: now + wait,
            reopen: self.reopens,
        }
    }
}

/// The open wait after `reopens` reopenings: `open_for × 2^reopens`, capped
/// at `max_open_for`, then jittered by ±[`JITTER`] (never above the cap).
pub fn open_wait(s: &Settings, reopens: u32, draw: f64) -> i64 {
    let base = s.open_for.as_millis() as f64 * 2f64.powi(reopens.min(40) as i32);
    let cap = s.max_open_for.as_millis() as f64;
    let capped = base.min(cap);
    let jittered = capped * (1.0 - JITTER + 2.0 * JITTER * draw.clamp(0.0, 1.0));
    jittered.min(cap).max(1.0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use Outcome::*;

    fn settings() -> Settings {
        Settings {
            failure_threshold: 3,
            success_threshold: 2,
            open_for: Duration::from_secs(4),
            max_open_for: Duration::from_secs(30),
            failure_rate: None,
            window: 10,
            min_probes: 5,
        }
    }

    #[test]
    fn trips_on_consecutive_failures() {
        let s = settings();
        let mut b = BreakerState::default();
        assert_eq!(b.record(Offline, 0, &s, 0.5), None);
        assert_eq!(b.record(Unreachable, 1, &s, 0.5), None);
        let e = b.record(Invalid, 2, &s, 0.5).unwrap();
        assert_eq!(
            e,
            CircuitEvent::Opened {
                consecutive_failures: 3,
                failure_rate: None,
                until: 4_002,
                reopen: 0
            }
        );
        assert_eq!(b.circuit, Circuit::Open);
        assert_eq!(b.blocked_until(3_000), Some(4_002));
        assert_eq!(b.blocked_until(4_002), None);
    }

    #[test]
    fn neutral_outcomes_never_open_and_break_the_run() {
        let s = settings();
        let mut b = BreakerState::default();
        for (i, o) in [
            Offline,
            Offline,
            RateLimited,
            Offline,
            Offline,
            AuthRequired,
            Degraded,
            Offline,
        ]
        .iter()
        .enumerate()
        {
            assert_eq!(b.record(*o, i as i64, &s, 0.5), None, "step {i}");
        }
        for i in 0..100 {
            assert_eq!(b.record(RateLimited, i, &s, 0.5), None);
            assert_eq!(b.record(AuthRequired, i, &s, 0.5), None);
            assert_eq!(b.record(Degraded, i, &s, 0.5), None);
        }
        assert_eq!(b.circuit, Circuit::Closed);
    }

    #[test]
    fn trips_on_failure_rate_once_min_probes_were_made() {
        let s = Settings {
            failure_rate: Some(0.5),
            ..settings()
        };
        let mut b = BreakerState::default();
        // F S F S: 50 % but only 4 probes (< min_probes 5).
        for (i, o) in [Offline, Online, Offline, Online].iter().enumerate() {
            assert_eq!(b.record(*o, i as i64, &s, 0.5), None);
        }
        // The fifth probe, a failure: 3/5 = 60 %.
        match b.record(Offline, 5, &s, 0.5) {
            Some(CircuitEvent::Opened {
                failure_rate: Some(r),
                consecutive_failures: 1,
                ..
            }) => assert!((r - 0.6).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rate_window_slides() {
        let s = Settings {
            failure_rate: Some(0.5),
            window: 4,
            min_probes: 4,
            ..settings()
        };
        let mut b = BreakerState::default();
        for (i, o) in [Offline, Online, Online, Online, Online, Offline]
            .iter()
            .enumerate()
        {
            assert_eq!(b.record(*o, i as i64, &s, 0.5), None, "step {i}");
        }
        assert_eq!(b.recent, "0001");
    }

    #[test]
    fn never_closes_without_success_threshold_successes() {
        let s = settings();
        let mut b = BreakerState::default();
        for i in 0..3 {
            b.record(Offline, i, &s, 0.5);
        }
        assert_eq!(b.begin_probe(3_000), None, "still open");
        assert_eq!(b.begin_probe(4_002), Some(CircuitEvent::HalfOpened));
        assert_eq!(b.record(Online, 4_010, &s, 0.5), None);
        assert_eq!(b.circuit, Circuit::HalfOpen);
        assert_eq!(
            b.record(RateLimited, 5_000, &s, 0.5),
            None,
            "neutral in half-open"
        );
        assert_eq!(b.record(Online, 6_000, &s, 0.5), Some(CircuitEvent::Closed));
        assert_eq!(b, BreakerState::default());
    }

    #[test]
    fn open_wait_doubles_and_is_capped() {
        let s = settings();
        let mut b = BreakerState::default();
        for i in 0..3 {
            b.record(Offline, i, &s, 0.5);
        }
        let mut now = 2;
        let mut waits = Vec::new();
        for _ in 0..6 {
            now = b.open_until.unwrap();
            assert_eq!(b.begin_probe(now), Some(CircuitEvent::HalfOpened));
            match b.record(Offline, now, &s, 0.5).unwrap() {
                CircuitEvent::Opened { until, .. } => waits.push(until - now),
                e => panic!("{e:?}"),
            }
        }
        assert_eq!(waits, vec![8_000, 16_000, 30_000, 30_000, 30_000, 30_000]);
        assert!(now > 0);
    }

    #[test]
    fn jitter_spreads_within_twenty_percent_and_never_above_the_cap() {
        let s = settings();
        assert_eq!(open_wait(&s, 0, 0.0), 3_200);
        assert_eq!(open_wait(&s, 0, 0.5), 4_000);
        assert_eq!(open_wait(&s, 0, 0.999_999), 4_799);
        assert_eq!(open_wait(&s, 10, 0.999), 30_000);
        assert_eq!(open_wait(&s, 10, 0.0), 24_000);
        assert_eq!(open_wait(&s, u32::MAX, 0.5), 30_000);
    }
}
