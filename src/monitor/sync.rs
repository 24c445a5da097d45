//! Sync freshness: what the status endpoint says about the connection's last
//! data sync. A newly seen finish time emits `sync.completed` or
//! `sync.failed`; a last sync older than `max_age` emits `sync.stale` once per
//! stale period (the probe itself is classified `degraded`/`stale_sync`).
//! The first finish time ever seen is the baseline: that sync finished
//! before connwatch looked, so it is not news (staleness still is).

use crate::model::{SyncSeen, UnixMs};
use serde::{Deserialize, Serialize};

/// Probes with a body but no sync finish time at the configured pointer,
/// before any sync was seen, after which the pointer is reported missing
/// (a wrong pointer would otherwise fail silently: no sync, never stale).
pub const MISSING_AFTER: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct SyncState {
    /// The newest finish time seen.
    pub last_finished_at: Option<UnixMs>,
    /// `sync.stale` was emitted for the current finish time.
    pub stale: bool,
    /// Bodies in a row without a finish time, while none was ever seen
    /// (counted up to [`MISSING_AFTER`]).
    #[serde(default)]
    pub missing: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    Completed {
        status: Option<String>,
        finished_at: UnixMs,
    },
    Failed {
        status: Option<String>,
        finished_at: UnixMs,
    },
    Stale {
        finished_at: UnixMs,
        age_ms: i64,
    },
}

impl SyncState {
    pub fn record(
        &mut self,
        seen: &SyncSeen,
        now: UnixMs,
        max_age_ms: Option<i64>,
        failed: &[String],
    ) -> Vec<SyncEvent> {
        let mut out = Vec::new();
        let Some(at) = seen.finished_at else {
            if self.last_finished_at.is_none() && self.missing < MISSING_AFTER {
                self.missing += 1;
            }
            return out;
        };
        self.missing = 0;
        if self.last_finished_at.is_none() {
            self.last_finished_at = Some(at);
        } else if self.last_finished_at.is_some_and(|last| at > last) {
            self.last_finished_at = Some(at);
            self.stale = false;
            let status = seen.status.clone();
            let is_failed = status
                .as_deref()
                .is_some_and(|s| failed.iter().any(|f| f.eq_ignore_ascii_case(s)));
            out.push(if is_failed {
                SyncEvent::Failed {
                    status,
                    finished_at: at,
                }
            } else {
                SyncEvent::Completed {
                    status,
                    finished_at: at,
                }
            });
        }
        if let (Some(max), Some(last)) = (max_age_ms, self.last_finished_at) {
            if !self.stale && now - last > max {
                self.stale = true;
                out.push(SyncEvent::Stale {
                    finished_at: last,
                    age_ms: now - last,
                });
            }
        }
        out
    }
}

impl SyncState {
    /// The configured pointer has found no sync in the first
    /// [`MISSING_AFTER`] bodies.
    pub fn pointer_missing(&self) -> bool {
        self.last_finished_at.is_none() && self.missing >= MISSING_AFTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(status: &str, at: UnixMs) -> SyncSeen {
        SyncSeen {
            status: Some(status.into()),
            finished_at: Some(at),
        }
    }

    #[test]
    fn new_finish_times_emit_once_and_staleness_once_per_period() {
        let failed = vec!["failed".to_string(), "error".to_string()];
        let mut s = SyncState::default();
        let max = Some(10_000);
        // The first sync seen finished before connwatch looked: the baseline.
        assert!(s
            .record(&seen("failed", 500), 1_000, max, &failed)
            .is_empty());
        assert_eq!(
            s.record(&seen("completed", 1_000), 2_000, max, &failed),
            vec![SyncEvent::Completed {
                status: Some("completed".into()),
                finished_at: 1_000
            }]
        );
        assert!(
            s.record(&seen("completed", 1_000), 3_000, max, &failed)
                .is_empty(),
            "same sync again"
        );
        assert_eq!(
            s.record(&seen("FAILED", 5_000), 6_000, max, &failed),
            vec![SyncEvent::Failed {
                status: Some("FAILED".into()),
                finished_at: 5_000
            }]
        );
        // It stops advancing: stale once.
        assert_eq!(
            s.record(&seen("running", 5_000), 15_001, max, &failed),
            vec![SyncEvent::Stale {
                finished_at: 5_000,
                age_ms: 10_001
            }]
        );
        assert!(s
            .record(&seen("running", 5_000), 20_000, max, &failed)
            .is_empty());
        assert!(s
            .record(&seen("running", 5_000), 90_000, max, &failed)
            .is_empty());
        // A new sync ends the stale period.
        assert_eq!(
            s.record(&seen("completed", 95_000), 96_000, max, &failed)
                .len(),
            1
        );
        assert!(!s.stale);
        // An older time (clock skew) is ignored.
        assert!(s
            .record(&seen("completed", 50_000), 97_000, max, &failed)
            .is_empty());
        assert!(s
            .record(&SyncSeen::default(), 97_000, max, &failed)
            .is_empty());
    }

    #[test]
    fn a_stale_baseline_is_told_as_stale() {
        let mut s = SyncState::default();
        assert_eq!(
            s.record(&seen("completed", 0), 20_000, Some(10_000), &[]),
            vec![SyncEvent::Stale {
                finished_at: 0,
                age_ms: 20_000
            }]
        );
    }

    #[test]
    fn a_pointer_that_finds_nothing_is_reported_after_three_bodies() {
        let mut s = SyncState::default();
        let none = SyncSeen::default();
        for _ in 0..2 {
            assert!(s.record(&none, 0, None, &[]).is_empty());
            assert!(!s.pointer_missing());
        }
        s.record(&none, 0, None, &[]);
        assert!(s.pointer_missing());
        let before = s.clone();
        s.record(&none, 0, None, &[]);
        assert_eq!(s, before, "the count stops: no state churn");
        // Once a sync is seen, a later body without one is not this.
        s.record(&seen("completed", 1_000), 2_000, None, &[]);
        assert!(!s.pointer_missing());
        s.record(&none, 3_000, None, &[]);
        assert!(!s.pointer_missing());
    }
}
