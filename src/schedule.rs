//! When each interval connection is due: one timer queue for all of them.
//!
//! Why not tokio-cron-scheduler for intervals: it rescans its whole job list
//! every 500 ms and gives every job its own wake-up, so ten thousand interval
//! connections would cost ten thousand timers and a constant scan. Here one
//! binary heap holds every interval connection and the engine sleeps until the
//! earliest due *tick*: due times are rounded up to a tick
//! (`[daemon] scheduler_tick`, default 10 ms) and everything due in the same
//! tick goes out in one wake-up, which is where a probe's CPU goes (the wake,
//! not the HTTP). tokio-cron-scheduler drives what really is cron: `schedule =
//! "…"` connections and the hourly retention job.
//!
//! Phases: connections that share an interval are spread evenly over the tick
//! slots of that interval, so N connections never fire in the same
//! millisecond. Occurrence `n` of a connection is due at
//! `start + phase + n * interval`, computed exactly and then rounded up to
//! the tick, so the period never drifts (the gap between two probes of one
//! connection is the interval, give or take one tick). Occurrences that pass
//! while the previous probe is still running are skipped, not bunched.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The next due time of each interval connection, by id: a stopping
/// generation leaves it here and the next one starts from it, so a reload
/// keeps every unchanged connection's phase (no probe missed or doubled).
pub type Schedule = Arc<Mutex<HashMap<String, (Duration, Instant)>>>;

/// A connection's place in the queue.
#[derive(Debug, Clone, Copy)]
struct Entry {
    phase: Duration,
    period: Duration,
    /// The next occurrence number.
    n: u64,
}

/// The timer queue of interval connections, addressed by slot index.
#[derive(Debug)]
pub struct TimerQueue {
    start: Instant,
    tick: Duration,
    entries: Vec<Option<Entry>>,
    /// (due tick, slot)
    heap: BinaryHeap<Reverse<(u64, usize)>>,
}

impl TimerQueue {
    pub fn new(start: Instant, tick: Duration) -> Self {
        TimerQueue {
            start,
            tick: tick.max(Duration::from_millis(1)),
            entries: Vec::new(),
            heap: BinaryHeap::new(),
        }
    }

    /// Spreads `slots` (all with the same `period`) evenly over the period's
    /// tick slots and queues their first occurrences.
    pub fn add_group(&mut self, slots: &[usize], period: Duration) {
        let ticks_per_period = (period.as_nanos() / self.tick.as_nanos()).max(1);
        let m = slots.len() as u128;
        for (j, &slot) in slots.iter().enumerate() {
            let tick_slot = (j as u128 * ticks_per_period) / m.max(1);
            let phase = Duration::from_nanos((tick_slot * self.tick.as_nanos()) as u64);
            self.insert(
                slot,
                Entry {
                    phase,
                    period,
                    n: 0,
                },
            );
        }
    }

    /// Groups `(slot, period)` pairs by period and adds each group.
    pub fn add_all(&mut self, items: &[(usize, Duration)]) {
        let mut groups: BTreeMap<Duration, Vec<usize>> = BTreeMap::new();
        for (slot, period) in items {
            groups.entry(*period).or_default().push(*slot);
        }
        for (period, slots) in groups {
            self.add_group(&slots, period);
        }
    }

    /// Queues `slot` with its first occurrence at `first` (rounded up to a
    /// tick), then every `period`: a reload uses it to keep a connection's
    /// phase. A `first` that passed while the reload ran fires at once (one
    /// late probe rather than a missed one), and the grid moves by that much.
    pub fn add_at(&mut self, slot: usize, period: Duration, first: Instant) {
        let phase = first.saturating_duration_since(self.start);
        self.insert(
            slot,
            Entry {
                phase,
                period,
                n: 0,
            },
        );
    }

    fn insert(&mut self, slot: usize, e: Entry) {
        if self.entries.len() <= slot {
            self.entries.resize(slot + 1, None);
        }
        self.entries[slot] = Some(e);
        let t = self.tick_of(e);
        self.heap.push(Reverse((t, slot)));
    }

    /// The tick at which an entry's next occurrence is due (rounded up).
    fn tick_of(&self, e: Entry) -> u64 {
        let at = e.phase.as_nanos() + e.period.as_nanos() * e.n as u128;
        at.div_ceil(self.tick.as_nanos()) as u64
    }

    fn instant_of_tick(&self, t: u64) -> Instant {
        self.start + Duration::from_nanos((t as u128 * self.tick.as_nanos()) as u64)
    }

    /// When the engine next has to wake, if anything is queued.
    pub fn next_wake(&self) -> Option<Instant> {
        self.heap
            .peek()
            .map(|Reverse((t, _))| self.instant_of_tick(*t))
    }

    /// Pops every slot due at or before `now`, and queues each one's next
    /// occurrence after `now` (missed occurrences are skipped, not bunched).
    pub fn pop_due(&mut self, now: Instant, out: &mut Vec<usize>) {
        let now_tick =
            (now.saturating_duration_since(self.start).as_nanos() / self.tick.as_nanos()) as u64;
        while let Some(&Reverse((t, slot))) = self.heap.peek() {
            if t > now_tick {
                break;
            }
            self.heap.pop();
            let Some(mut e) = self.entries.get(slot).copied().flatten() else {
                continue;
            };
            if self.tick_of(e) != t {
                continue; // stale heap entry
            }
            out.push(slot);
            e.n += 1;
            // Skip occurrences already in the past (the engine was late).
            while self.tick_of(e) <= now_tick {
                e.n += 1;
            }
            self.entries[slot] = Some(e);
            self.heap.push(Reverse((self.tick_of(e), slot)));
        }
    }

    /// The nominal due instant of a slot's *next* occurrence (for tests and
    /// lateness figures).
    pub fn next_due(&self, slot: usize) -> Option<Instant> {
        let e = self.entries.get(slot).copied().flatten()?;
        Some(self.instant_of_tick(self.tick_of(e)))
    }

    /// Queues each `(slot, id, interval)` whose id and interval were left
    /// in `carried` by the previous generation at exactly that due time.
    pub fn carry_in<'a>(
        &mut self,
        carried: &Schedule,
        items: impl Iterator<Item = (usize, &'a str, Duration)>,
    ) {
        let carried = carried.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, id, period) in items {
            if let Some((p, due)) = carried.get(id) {
                if *p == period {
                    self.add_at(slot, period, *due);
                }
            }
        }
    }

    /// Leaves each `(slot, id, interval)`'s next due time in `carried`.
    pub fn carry_out<'a>(
        &self,
        carried: &Schedule,
        items: impl Iterator<Item = (usize, &'a str, Duration)>,
    ) {
        let mut carried = carried.lock().unwrap_or_else(|e| e.into_inner());
        carried.clear();
        for (slot, id, period) in items {
            if let Some(due) = self.next_due(slot) {
                carried.insert(id.to_string(), (period, due));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn spreads_first_probes_over_tick_slots() {
        let start = Instant::now();
        let mut q = TimerQueue::new(start, ms(10));
        let slots: Vec<usize> = (0..1000).collect();
        q.add_group(&slots, Duration::from_secs(10));
        // 1000 connections over 1000 ticks: one per tick, none sharing one.
        let mut firsts: Vec<Instant> = slots.iter().map(|s| q.next_due(*s).unwrap()).collect();
        firsts.sort();
        firsts.dedup();
        assert_eq!(firsts.len(), 1000);
        assert_eq!(*firsts.last().unwrap() - start, ms(9990));

        // 10,000 connections at 10 s: 10 per tick, evenly.
        let mut q = TimerQueue::new(start, ms(10));
        let slots: Vec<usize> = (0..10_000).collect();
        q.add_group(&slots, Duration::from_secs(10));
        let mut per_tick = std::collections::HashMap::new();
        for s in &slots {
            *per_tick.entry(q.next_due(*s).unwrap()).or_insert(0) += 1;
        }
        assert_eq!(per_tick.len(), 1000);
        assert!(per_tick.values().all(|n| *n == 10));
    }

    #[test]
    fn a_carried_due_time_keeps_the_phase_and_a_passed_one_fires_at_once() {
        let start = Instant::now();
        let mut q = TimerQueue::new(start, ms(10));
        q.add_at(0, ms(1000), start + ms(730));
        q.add_at(1, ms(1000), start - ms(5));
        assert_eq!(q.next_due(0).unwrap() - start, ms(730));
        assert_eq!(q.next_due(1).unwrap(), start);
        let mut out = Vec::new();
        q.pop_due(start + ms(735), &mut out);
        out.sort();
        assert_eq!(out, [0, 1]);
        // Then every period from there.
        assert_eq!(q.next_due(0).unwrap() - start, ms(1730));
        assert_eq!(q.next_due(1).unwrap() - start, ms(1000));
    }

    #[test]
    fn fixed_rate_with_exact_period() {
        let start = Instant::now();
        let mut q = TimerQueue::new(start, ms(10));
        q.add_group(&[0, 1, 2], ms(1000));
        let mut fired: Vec<(usize, Duration)> = Vec::new();
        let mut out = Vec::new();
        // Wake exactly when asked, for 10 s.
        while let Some(w) = q.next_wake() {
            if w - start > Duration::from_secs(10) {
                break;
            }
            out.clear();
            q.pop_due(w, &mut out);
            fired.extend(out.iter().map(|s| (*s, w - start)));
        }
        for slot in 0..3 {
            let times: Vec<Duration> = fired
                .iter()
                .filter(|(s, _)| *s == slot)
                .map(|(_, t)| *t)
                .collect();
            assert!(times.len() >= 10, "slot {slot}: {times:?}");
            for w in times.windows(2) {
                assert_eq!(w[1] - w[0], ms(1000), "slot {slot}");
            }
        }
        // Phases differ by a third of the period, rounded to the tick.
        let firsts: Vec<Duration> = (0..3)
            .map(|s| fired.iter().find(|(x, _)| *x == s).unwrap().1)
            .collect();
        assert_eq!(firsts, vec![ms(0), ms(330), ms(660)]);
    }

    #[test]
    fn period_not_a_tick_multiple_does_not_drift() {
        let start = Instant::now();
        let mut q = TimerQueue::new(start, ms(10));
        q.add_group(&[0], ms(1005));
        let mut out = Vec::new();
        let mut last = start;
        for _ in 0..1000 {
            let w = q.next_wake().unwrap();
            out.clear();
            q.pop_due(w, &mut out);
            last = w;
        }
        // Occurrence 999 nominally at 999 * 1005 ms; within one tick of it.
        let nominal = ms(999 * 1005);
        let got = last - start;
        assert!(
            got >= nominal && got < nominal + ms(10),
            "{got:?} vs {nominal:?}"
        );
    }

    #[test]
    fn a_late_wake_skips_instead_of_bunching() {
        let start = Instant::now();
        let mut q = TimerQueue::new(start, ms(10));
        q.add_group(&[0], ms(100));
        let mut out = Vec::new();
        q.pop_due(start, &mut out);
        assert_eq!(out, vec![0]);
        // Wake 1 s late: one probe, not ten.
        out.clear();
        q.pop_due(start + ms(1050), &mut out);
        assert_eq!(out, vec![0]);
        assert_eq!(q.next_due(0).unwrap() - start, ms(1100));
    }

    #[test]
    fn mixed_periods_are_grouped() {
        let start = Instant::now();
        let mut q = TimerQueue::new(start, ms(5));
        q.add_all(&[(0, ms(1000)), (1, ms(2000)), (2, ms(1000))]);
        assert_eq!(q.len(), 3);
        assert_eq!(q.next_due(0).unwrap() - start, ms(0));
        assert_eq!(q.next_due(2).unwrap() - start, ms(500));
        assert_eq!(q.next_due(1).unwrap() - start, ms(0));
    }
}
