//! Sync freshness: what the status endpoint says about the connection's last
//! data sync. A newly seen finish time emits `sync.completed` or
//! `sync.failed`; a last sync older than `max_age` emits `sync.stale` once per
//! stale period (the probe itself is classified `degraded`/`stale_sync`).
//! The first finish time ever seen is the baseline: that sync finished
//! before connwatch looked, so it is not news (staleness still is).

use crate::model::{SyncSeen, UnixMs};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SyncState {
    /// The newest finish time seen.
    pub last_finished_at: Option<UnixMs>,
    /// `sync.stale` was emitted for the current finish time.
    pub stale: bool,
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
            return out;
        };
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
}
