//! Flap detection, Nagios's algorithm on the raw outcome sequence: over the
//! last 21 outcomes (20 possible changes), each change is weighted linearly
//! from 0.8 (oldest) to 1.2 (newest); the weighted sum over 20 is the percent
//! state change. Flapping starts above `flap_high` (default 50 %) and stops
//! below `flap_low` (default 25 %).

use crate::model::Outcome;
use serde::{Deserialize, Serialize};

pub const HISTORY: usize = 21;
pub const DEFAULT_HIGH: f64 = 50.0;
pub const DEFAULT_LOW: f64 = 25.0;

#[derive(Debug, Clone, PartialEq, Hash, Serialize, Deserialize, Default)]
pub struct FlapState {
    /// Outcome codes, oldest first, at most [`HISTORY`].
    pub history: Vec<u8>,
    pub flapping: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FlapEvent {
    Started { percent: f64 },
    Stopped { percent: f64 },
}

impl FlapState {
    pub fn record(&mut self, outcome: Outcome, high: f64, low: f64) -> Option<FlapEvent> {
        self.history.push(outcome.code() as u8);
        if self.history.len() > HISTORY {
            self.history.remove(0);
        }
        let percent = self.percent();
        if !self.flapping && percent > high {
            self.flapping = true;
            return Some(FlapEvent::Started { percent });
        }
        if self.flapping && percent < low {
            self.flapping = false;
            return Some(FlapEvent::Stopped { percent });
        }
        None
    }

    /// Percent state change over the history (an unfilled history counts as
    /// no change, as Nagios seeds it with the current state).
    pub fn percent(&self) -> f64 {
        let h = &self.history;
        let offset = HISTORY - h.len(); // changes not yet seen are the oldest
        let mut sum = 0.0;
        for i in 1..h.len() {
            if h[i] != h[i - 1] {
                let j = offset + i - 1; // 0 = oldest of the 20 changes
                sum += 0.8 + 0.4 * j as f64 / (HISTORY - 2) as f64;
            }
        }
        sum * 100.0 / (HISTORY - 1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    fn feed(f: &mut FlapState, seq: &[Outcome]) -> Vec<FlapEvent> {
        seq.iter()
            .filter_map(|o| f.record(*o, DEFAULT_HIGH, DEFAULT_LOW))
            .collect()
    }

    #[test]
    fn steady_is_zero_and_alternating_is_a_hundred() {
        let mut f = FlapState::default();
        assert!(feed(&mut f, &[Online; 30]).is_empty());
        assert_eq!(f.percent(), 0.0);
        let alt: Vec<Outcome> = (0..21)
            .map(|i| if i % 2 == 0 { Online } else { Offline })
            .collect();
        let mut f = FlapState::default();
        feed(&mut f, &alt);
        assert!((f.percent() - 100.0).abs() < 1e-9, "{}", f.percent());
    }

    #[test]
    fn newer_changes_weigh_more() {
        let mut old = FlapState::default();
        feed(&mut old, &[Online, Offline]);
        feed(&mut old, &[Offline; 19]);
        let mut new = FlapState::default();
        feed(&mut new, &[Online; 20]);
        feed(&mut new, &[Offline]);
        assert!((old.percent() - 4.0).abs() < 1e-9, "{}", old.percent()); // 0.8 / 20
        assert!((new.percent() - 6.0).abs() < 1e-9, "{}", new.percent()); // 1.2 / 20
    }

    #[test]
    fn starts_above_high_and_stops_below_low() {
        let mut f = FlapState::default();
        feed(&mut f, &[Online; 21]);
        // Alternate until it starts.
        let mut events = Vec::new();
        let mut n = 0;
        while events.is_empty() {
            let o = if n % 2 == 0 { Offline } else { Online };
            events = feed(&mut f, &[o]);
            n += 1;
        }
        assert!(matches!(events[0], FlapEvent::Started { percent } if percent > 50.0));
        assert!(f.flapping);
        // Between the thresholds it stays flapping (hysteresis).
        let mut steps = 0;
        let mut stopped = None;
        while stopped.is_none() {
            stopped = feed(&mut f, &[Online]).pop();
            steps += 1;
            if f.percent() >= 25.0 {
                assert!(f.flapping, "still flapping at {}", f.percent());
            }
        }
        assert!(matches!(stopped, Some(FlapEvent::Stopped { percent }) if percent < 25.0));
        assert!(steps > 1);
        assert!(!f.flapping);
    }

    #[test]
    fn a_single_outage_is_not_flapping() {
        let mut f = FlapState::default();
        let mut seq = vec![Online; 10];
        seq.extend([Offline; 5]);
        seq.extend([Online; 10]);
        assert!(feed(&mut f, &seq).is_empty());
    }
}
