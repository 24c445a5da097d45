//! What operators declare holds events back: maintenance windows (cron
//! schedules in the configuration) and silences (`connwatch silence`,
//! stored in the database). Which connections each covers, until when.
//! Pure, time passed in. Cron jobs (wired in [`crate::app`]) say when a
//! window starts; the engine learns of silences from the database, and asks
//! when the next hold ends (see [`crate::policy::held`]).

use crate::config::Maintenance;
use crate::model::UnixMs;
use std::collections::HashMap;
use std::time::Duration;

/// Until when each connection slot is covered (by windows, or by
/// silences), and the earliest of those ends.
#[derive(Debug, Default)]
struct Cover {
    until: Vec<Option<UnixMs>>,
    earliest: Option<UnixMs>,
}

impl Cover {
    fn new(n: usize) -> Cover {
        Cover {
            until: vec![None; n],
            earliest: None,
        }
    }

    /// Covers `slot` until `end` (or longer, if it already is).
    fn extend(&mut self, slot: usize, end: UnixMs) {
        if let Some(u) = self.until.get_mut(slot) {
            *u = Some(u.map_or(end, |t| t.max(end)));
        }
        self.earliest = Some(self.earliest.map_or(end, |t| t.min(end)));
    }

    fn until(&self, slot: usize) -> Option<UnixMs> {
        self.until.get(slot).copied().flatten()
    }

    /// The slots whose cover has ended by `now` (no longer covered).
    fn end_due(&mut self, now: UnixMs) -> Vec<usize> {
        if self.earliest.is_none_or(|t| t > now) {
            return Vec::new();
        }
        let mut ended = Vec::new();
        for (slot, u) in self.until.iter_mut().enumerate() {
            if u.is_some_and(|t| t <= now) {
                *u = None;
                ended.push(slot);
            }
        }
        self.earliest = self.until.iter().flatten().copied().min();
        ended
    }
}

/// One configured window.
#[derive(Debug)]
struct Window {
    slots: Vec<usize>,
    duration: Duration,
}

/// Every window, and until when each connection is covered.
#[derive(Debug, Default)]
pub struct Windows {
    windows: Vec<Window>,
    cover: Cover,
}

impl Windows {
    /// The windows of `config` over `n` connections (`index`: id to slot).
    /// A window already open at `now` (a restart inside it) applies at
    /// once; those are returned with their end, with each window's cron
    /// expression for the jobs that start it.
    pub fn new(
        config: &[Maintenance],
        index: &HashMap<&str, usize>,
        n: usize,
        now: UnixMs,
    ) -> (Windows, Vec<String>, Vec<(usize, UnixMs)>) {
        let mut w = Windows {
            windows: Vec::with_capacity(config.len()),
            cover: Cover::new(n),
        };
        let mut open = Vec::new();
        let mut schedules = Vec::with_capacity(config.len());
        for (i, m) in config.iter().enumerate() {
            let slots: Vec<usize> = match &m.connections {
                None => (0..n).collect(),
                Some(ids) => ids
                    .iter()
                    .filter_map(|id| index.get(id.as_str()).copied())
                    .collect(),
            };
            if let Some(end) = active_window_end(&m.schedule, m.duration, now) {
                for &s in &slots {
                    w.cover.extend(s, end);
                }
                open.push((i, end));
            }
            w.windows.push(Window {
                slots,
                duration: m.duration,
            });
            schedules.push(m.schedule.clone());
        }
        (w, schedules, open)
    }

    /// Until when `slot` is covered, if it is.
    pub fn until(&self, slot: usize) -> Option<UnixMs> {
        self.cover.until(slot)
    }

    /// Window `i` starts at `now`: the slots it covers, and its end.
    pub fn start(&mut self, i: usize, now: UnixMs) -> Option<(Vec<usize>, UnixMs)> {
        let w = self.windows.get(i)?;
        let end = now + w.duration.as_millis() as i64;
        let slots = w.slots.clone();
        for &s in &slots {
            self.cover.extend(s, end);
        }
        Some((slots, end))
    }

    /// The slots whose window has ended by `now` (no longer covered).
    pub fn end_due(&mut self, now: UnixMs) -> Vec<usize> {
        self.cover.end_due(now)
    }

    /// When the next window ends.
    pub fn next_end(&self) -> Option<UnixMs> {
        self.cover.earliest
    }
}

/// Operators' silences, by connection slot.
#[derive(Debug, Default)]
pub struct Silenced {
    cover: Cover,
}

/// What a new set of silences changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// Slots a silence covers now that none did.
    pub started: Vec<usize>,
    /// Slots no silence covers any more (ended early, or removed).
    pub ended: Vec<usize>,
}

impl Silenced {
    /// Takes the silences in force (`index`: connection id to slot, over
    /// `n` slots) at `now`.
    pub fn set(
        &mut self,
        silences: &[crate::store::silences::Silence],
        index: &HashMap<std::sync::Arc<str>, usize>,
        n: usize,
        now: UnixMs,
    ) -> Changed {
        let mut cover = Cover::new(n);
        for s in silences.iter().filter(|s| s.active(now)) {
            match &s.connections {
                None => (0..n).for_each(|slot| cover.extend(slot, s.until())),
                Some(ids) => ids
                    .iter()
                    .filter_map(|id| index.get(id.as_str()))
                    .for_each(|slot| cover.extend(*slot, s.until())),
            }
        }
        let mut changed = Changed::default();
        for slot in 0..n {
            match (self.cover.until(slot), cover.until(slot)) {
                (None, Some(_)) => changed.started.push(slot),
                (Some(_), None) => changed.ended.push(slot),
                _ => {}
            }
        }
        self.cover = cover;
        changed
    }

    /// Until when a silence covers `slot`.
    pub fn until(&self, slot: usize) -> Option<UnixMs> {
        self.cover.until(slot)
    }

    /// The slots whose silences have all ended by `now`.
    pub fn end_due(&mut self, now: UnixMs) -> Vec<usize> {
        self.cover.end_due(now)
    }

    /// When the next silence ends.
    pub fn next_end(&self) -> Option<UnixMs> {
        self.cover.earliest
    }
}

/// If a window of `schedule` + `duration` is open at `now`, when it ends.
pub fn active_window_end(schedule: &str, duration: Duration, now: UnixMs) -> Option<UnixMs> {
    let cron = croner::Cron::new(schedule)
        .with_seconds_required()
        .with_dom_and_dow()
        .parse()
        .ok()?;
    let from = chrono::DateTime::from_timestamp_millis(now - duration.as_millis() as i64)?;
    let start = cron
        .find_next_occurrence(&from, true)
        .ok()?
        .timestamp_millis();
    let end = start + duration.as_millis() as i64;
    (start <= now && now < end).then_some(end)
}

/// The windows of `schedule` + `duration` that overlap `[from, to)`, in
/// order, each cut to the period; at most `limit` (a window every second
/// over a year would be 31 million).
pub fn windows_between(
    schedule: &str,
    duration: Duration,
    from: UnixMs,
    to: UnixMs,
    limit: usize,
) -> Vec<(UnixMs, UnixMs)> {
    let Ok(cron) = croner::Cron::new(schedule)
        .with_seconds_required()
        .with_dom_and_dow()
        .parse()
    else {
        return Vec::new();
    };
    let len = duration.as_millis() as i64;
    let mut out = Vec::new();
    let Some(mut t) = chrono::DateTime::from_timestamp_millis(from - len) else {
        return out;
    };
    let mut inclusive = true;
    while out.len() < limit {
        let Ok(next) = cron.find_next_occurrence(&t, inclusive) else {
            break;
        };
        let start = next.timestamp_millis();
        if start >= to {
            break;
        }
        let end = start + len;
        if end > from {
            out.push((start.max(from), end.min(to)));
        }
        t = next;
        inclusive = false;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_over_a_period_are_found_and_cut() {
        let day = 86_400_000i64;
        let base = 1_764_028_800_000i64; // 2025-11-25T00:00:00Z
                                         // Daily at 02:00 for 2 h, over three days starting at 03:00.
        let w = windows_between(
            "0 0 2 * * *",
            Duration::from_secs(7200),
            base + 3 * 3_600_000,
            base + 3 * day,
            100,
        );
        assert_eq!(
            w,
            vec![
                (base + 3 * 3_600_000, base + 4 * 3_600_000),
                (base + day + 2 * 3_600_000, base + day + 4 * 3_600_000),
                (
                    base + 2 * day + 2 * 3_600_000,
                    base + 2 * day + 4 * 3_600_000
                ),
            ]
        );
        assert_eq!(
            windows_between("0 * * * * *", Duration::from_secs(1), 0, day, 10).len(),
            10
        );
    }

    #[test]
    fn a_window_in_progress_is_found() {
        // Every minute at second 0, lasting 30 s.
        let base = 1_764_000_000_000i64; // a whole minute
        assert_eq!(
            active_window_end("0 * * * * *", Duration::from_secs(30), base + 10_000),
            Some(base + 30_000)
        );
        assert_eq!(
            active_window_end("0 * * * * *", Duration::from_secs(30), base + 40_000),
            None
        );
        assert_eq!(
            active_window_end("0 * * * * *", Duration::from_secs(30), base),
            Some(base + 30_000)
        );
    }

    #[test]
    fn silences_cover_their_slots_until_they_end_or_are_ended() {
        use crate::store::silences::Silence;
        let silence = |id: &str, conns: Option<Vec<&str>>, ends: UnixMs| Silence {
            id: id.into(),
            connections: conns.map(|v| v.into_iter().map(String::from).collect()),
            starts_ms: 0,
            ends_ms: ends,
            reason: "work".into(),
            created_by: "ops".into(),
            ended_ms: None,
        };
        let index: HashMap<std::sync::Arc<str>, usize> =
            [("a".into(), 0), ("b".into(), 1), ("c".into(), 2)]
                .into_iter()
                .collect();
        let mut s = Silenced::default();
        let one = silence("s1", Some(vec!["a", "zz"]), 10_000);
        let all = silence("s2", None, 5_000);
        let c = s.set(&[one.clone(), all.clone()], &index, 3, 1_000);
        assert_eq!(c.started, vec![0, 1, 2]);
        assert_eq!(s.until(0), Some(10_000));
        assert_eq!(s.until(1), Some(5_000));
        assert_eq!(s.next_end(), Some(5_000));
        assert_eq!(s.end_due(5_000), vec![1, 2]);
        // The operator ends s1 early: a set without it.
        let c = s.set(&[], &index, 3, 6_000);
        assert_eq!(
            c,
            Changed {
                started: vec![],
                ended: vec![0]
            }
        );
        assert_eq!(s.next_end(), None);
    }

    #[test]
    fn windows_cover_their_slots_until_they_end() {
        let base = 1_764_000_000_000i64;
        let cfg = vec![
            Maintenance {
                connections: Some(vec!["b".into()]),
                schedule: "0 0 3 * * *".into(),
                duration: Duration::from_secs(60),
            },
            Maintenance {
                connections: None,
                schedule: "0 0 4 * * *".into(),
                duration: Duration::from_secs(10),
            },
        ];
        let index: HashMap<&str, usize> = [("a", 0), ("b", 1)].into_iter().collect();
        let (mut w, schedules, open) = Windows::new(&cfg, &index, 2, base);
        assert_eq!(schedules, ["0 0 3 * * *", "0 0 4 * * *"]);
        assert!(open.is_empty());
        assert_eq!(w.next_end(), None);
        assert_eq!(w.start(0, base), Some((vec![1], base + 60_000)));
        assert_eq!(w.start(1, base + 1_000), Some((vec![0, 1], base + 11_000)));
        assert_eq!(w.until(1), Some(base + 60_000), "the longer window wins");
        assert_eq!(w.next_end(), Some(base + 11_000));
        assert!(w.end_due(base + 10_999).is_empty());
        assert_eq!(w.end_due(base + 11_000), vec![0]);
        assert_eq!(w.end_due(base + 60_000), vec![1]);
        assert_eq!(w.next_end(), None);
        assert_eq!(w.start(7, base), None);
    }
}
