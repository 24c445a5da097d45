//! Retry logic apart from the loop that retries: what an answer means
//! ([`Verdict`]) and when to try again ([`Backoff`]).

use std::time::Duration;

/// First retry comes within this (full jitter below it).
pub const BASE: Duration = Duration::from_secs(2);
pub const DEFAULT_CAP: Duration = Duration::from_secs(600);

/// What one attempt's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered (2xx, exit 0, written).
    Done,
    /// Try again; honour the receiver's Retry-After if it gave one.
    Retry { retry_after: Option<Duration> },
    /// Never going to work (other 4xx, 3xx): dead at once, answer recorded.
    Dead,
}

/// Judges an HTTP answer: 2xx done; 408, 429 and 5xx retried (Retry-After
/// honoured on 429 and 503); every other status dead.
pub fn judge_http(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Done,
        429 | 503 => Verdict::Retry { retry_after },
        408 | 500..=599 => Verdict::Retry { retry_after: None },
        _ => Verdict::Dead,
    }
}

/// Exponential backoff with full jitter: attempt `n` (1 = first retry)
/// waits a uniform draw below `min(cap, BASE × 2^(n-1))`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub fn new(cap: Duration) -> Self {
        Backoff { base: BASE, cap }
    }

    /// The ceiling of retry `n` (no jitter).
    pub fn ceiling(&self, n: u32) -> Duration {
        let exp = self.base.as_millis() as f64 * 2f64.powi(n.saturating_sub(1).min(40) as i32);
        Duration::from_millis(exp.min(self.cap.as_millis() as f64) as u64)
    }

    /// The wait before retry `n`, with `draw` uniform in [0, 1). A
    /// Retry-After from the receiver wins when it is longer (capped too).
    pub fn wait(&self, n: u32, draw: f64, retry_after: Option<Duration>) -> Duration {
        let jittered = Duration::from_millis(
            (self.ceiling(n).as_millis() as f64 * draw.clamp(0.0, 1.0)) as u64,
        );
        match retry_after {
            Some(ra) => ra.min(self.cap).max(jittered),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_schedule_without_jitter() {
        let b = Backoff::new(DEFAULT_CAP);
        let secs: Vec<u64> = (1..=11).map(|n| b.ceiling(n).as_secs()).collect();
        assert_eq!(secs, vec![2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(b.ceiling(u32::MAX), DEFAULT_CAP);
    }

    #[test]
    fn jitter_stays_below_the_ceiling() {
        let b = Backoff::new(Duration::from_secs(60));
        for n in 1..20 {
            for d in [0.0, 0.25, 0.5, 0.999_999] {
                let w = b.wait(n, d, None);
                assert!(w <= b.ceiling(n), "{n} {d} {w:?}");
            }
            assert_eq!(
                b.wait(n, 0.0, None),
                Duration::ZERO,
                "full jitter reaches zero"
            );
        }
        assert_eq!(b.wait(3, 0.5, None), Duration::from_secs(4));
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped() {
        let b = Backoff::new(Duration::from_secs(60));
        assert_eq!(
            b.wait(1, 0.5, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(
            b.wait(1, 0.5, Some(Duration::from_secs(3600))),
            Duration::from_secs(60)
        );
        assert_eq!(b.wait(6, 0.999, Some(Duration::from_secs(1))).as_secs(), 59);
    }

    #[test]
    fn every_answer_class() {
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(judge_http(s, None), Verdict::Done, "{s}");
        }
        let ra = Some(Duration::from_secs(7));
        assert_eq!(judge_http(429, ra), Verdict::Retry { retry_after: ra });
        assert_eq!(judge_http(503, ra), Verdict::Retry { retry_after: ra });
        for s in [408, 500, 502, 504, 599] {
            assert_eq!(
                judge_http(s, ra),
                Verdict::Retry { retry_after: None },
                "{s}"
            );
        }
        for s in [300, 301, 302, 304, 400, 401, 403, 404, 410, 422] {
            assert_eq!(judge_http(s, None), Verdict::Dead, "{s}");
        }
    }
}
