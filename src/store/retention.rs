//! Retention: raw probe rows (`probes`, `probe_runs`) older than `retention`
//! are deleted in batches, each its own short transaction taken by the
//! writer between its commits ([`Pruner`]), so it is never held for long; hourly rollups and transitions are kept a year,
//! and hourly rollups older than [`HOURLY_FOR`] are merged into one row per
//! connection and day.
//! Delivery attempts are raw detail too (`retention`). Events are kept a
//! year, and longer while any of their deliveries is pending; the newest
//! event of each type per connection is always kept (a standing alert is
//! restored from it).

use super::{sq, Result, Store};
use crate::model::UnixMs;
use serde::Serialize;
use std::time::Duration;

/// Rows deleted per transaction.
pub const BATCH: i64 = 2_000;
/// How long rollups and transitions are kept.
pub const ROLLUP_RETENTION: Duration = Duration::from_secs(365 * 86_400);
/// Rollups stay hourly this long, then become daily.
pub const HOURLY_FOR: Duration = Duration::from_secs(30 * 86_400);
/// Days merged per retention run (a year of hourly rollups is caught up in
/// a week of hourly runs).
pub const DAYS_PER_RUN: usize = 2;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Pruned {
    pub probes: u64,
    pub probe_runs: u64,
    pub transitions: u64,
    pub rollups: u64,
    /// Days whose hourly rollups were merged into daily ones.
    pub days_merged: u64,
    /// Events deleted, with their deliveries and attempts.
    pub events: u64,
    pub delivery_attempts: u64,
    /// Free pages given back to the file system by incremental vacuum.
    pub pages_freed: u64,
}

/// Deletes what is older than the cut-offs, as of `now`.
pub fn prune(store: &Store, retention: Duration, now: UnixMs) -> Result<Pruned> {
    prune_db(&store.db, &store.path, retention, now)
}

/// [`prune`] on a bare connection, all steps in a row (the CLI's
/// `connwatch prune`; the daemon's writer takes one [`Pruner::step`] at a
/// time between its commits).
pub fn prune_db(
    db: &rusqlite::Connection,
    path: &std::path::Path,
    retention: Duration,
    now: UnixMs,
) -> Result<Pruned> {
    let mut p = Pruner::new(retention, now);
    while !p.step(db, path)? {}
    Ok(p.done)
}

/// Connections whose hourly rollups of one day are merged per step.
pub const MERGE_CONNS: i64 = 1_000;

/// Retention as a sequence of short transactions: each [`Pruner::step`]
/// deletes one batch ([`BATCH`] rows), merges one day of [`MERGE_CONNS`]
/// connections' rollups, or vacuums [`VACUUM_STEP`] pages, so the writer
/// commits the engine's records between two steps and is never held for
/// long (the longest step is kept in [`Pruner::longest`]).
#[derive(Debug)]
pub struct Pruner {
    raw_cut: UnixMs,
    year_cut: UnixMs,
    merge_cut: UnixMs,
    phase: Phase,
    /// What was done so far.
    pub done: Pruned,
    /// Steps taken and the longest one.
    pub steps: u64,
    pub longest: std::time::Duration,
    /// What the longest step did (`probes`, `merge`, `vacuum`…).
    pub longest_was: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Probes,
    Runs,
    Attempts,
    Events,
    Transitions,
    Rollups,
    /// The day being merged, the next connection key, the day's last key.
    Merge(Option<(i64, i64, i64)>),
    Vacuum {
        left: u64,
    },
    Done,
}

impl Pruner {
    pub fn new(retention: Duration, now: UnixMs) -> Pruner {
        Pruner {
            raw_cut: now - retention.as_millis() as i64,
            year_cut: now - ROLLUP_RETENTION.as_millis() as i64,
            merge_cut: (now - HOURLY_FOR.as_millis() as i64).div_euclid(DAY_MS) * DAY_MS,
            phase: Phase::Probes,
            done: Pruned::default(),
            steps: 0,
            longest: std::time::Duration::ZERO,
            longest_was: "",
        }
    }

    /// One short transaction, timed (`connwatch_retention_step_seconds`);
    /// true once retention is complete.
    pub fn step(&mut self, db: &rusqlite::Connection, path: &std::path::Path) -> Result<bool> {
        let t = std::time::Instant::now();
        let what = self.phase.name();
        let done = self.step_inner(db, path);
        let took = t.elapsed();
        crate::ops::metrics::metrics()
            .retention_step
            .observe(took.as_secs_f64());
        self.steps += 1;
        if took > self.longest {
            self.longest = took;
            self.longest_was = what;
        }
        done
    }

    fn step_inner(&mut self, db: &rusqlite::Connection, path: &std::path::Path) -> Result<bool> {
        let (raw, year) = (self.raw_cut, self.year_cut);
        let p = &mut self.done;
        self.phase = match self.phase {
            Phase::Probes => next_if(
                batch(db, path, "probes", "rowid", "at", raw),
                &mut p.probes,
                Phase::Probes,
                Phase::Runs,
            )?,
            Phase::Runs => next_if(
                batch(db, path, "probe_runs", "rowid", "last_at", raw),
                &mut p.probe_runs,
                Phase::Runs,
                Phase::Attempts,
            )?,
            Phase::Attempts => next_if(
                batch(db, path, "delivery_attempts", "rowid", "at", raw),
                &mut p.delivery_attempts,
                Phase::Attempts,
                Phase::Events,
            )?,
            // Before transitions: an event keeps its transition.
            Phase::Events => next_if(
                events_batch(db, path, year),
                &mut p.events,
                Phase::Events,
                Phase::Transitions,
            )?,
            Phase::Transitions => next_if(
                batch(db, path, "transitions", "id", "at", year),
                &mut p.transitions,
                Phase::Transitions,
                Phase::Rollups,
            )?,
            Phase::Rollups => next_if(
                batch(db, path, "rollups", "hour", "hour", year),
                &mut p.rollups,
                Phase::Rollups,
                Phase::Merge(None),
            )?,
            Phase::Merge(None) if p.days_merged >= DAYS_PER_RUN as u64 => vacuum_start(db, path)?,
            Phase::Merge(None) => match oldest_day(db, path, self.merge_cut)? {
                None => vacuum_start(db, path)?,
                Some((day, last)) => Phase::Merge(Some((day, 0, last))),
            },
            Phase::Merge(Some((day, from, last))) => {
                merge_conns(db, path, day, from, from + MERGE_CONNS)?;
                if from + MERGE_CONNS > last {
                    p.days_merged += 1;
                    Phase::Merge(None)
                } else {
                    Phase::Merge(Some((day, from + MERGE_CONNS, last)))
                }
            }
            Phase::Vacuum { left } if left > 0 => {
                let freed = vacuum_step(db, path)?;
                p.pages_freed += freed;
                if freed == 0 {
                    Phase::Done
                } else {
                    Phase::Vacuum { left: left - 1 }
                }
            }
            Phase::Vacuum { .. } | Phase::Done => Phase::Done,
        };
        Ok(self.phase == Phase::Done)
    }
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Probes => "probes",
            Phase::Runs => "probe_runs",
            Phase::Attempts => "delivery_attempts",
            Phase::Events => "events",
            Phase::Transitions => "transitions",
            Phase::Rollups => "rollups",
            Phase::Merge(_) => "merge",
            Phase::Vacuum { .. } => "vacuum",
            Phase::Done => "done",
        }
    }
}

/// Counts a batch; moves on when it deleted nothing.
fn next_if(n: Result<u64>, total: &mut u64, stay: Phase, next: Phase) -> Result<Phase> {
    let n = n?;
    *total += n;
    Ok(if n == 0 { next } else { stay })
}

/// Deletes events older than `cut` that have no pending delivery and are
/// not the newest of their type for their connection, with their
/// deliveries and attempts, `BATCH` events per transaction.
fn events_batch(db: &rusqlite::Connection, path: &std::path::Path, cut: UnixMs) -> Result<u64> {
    const OLD: &str = "SELECT seq FROM events WHERE at < ?1
        AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event = events.seq AND d.state = 'pending')
        AND seq NOT IN (SELECT max(seq) FROM events GROUP BY conn, type)
        ORDER BY seq LIMIT ?2";
    let tx = db.unchecked_transaction().map_err(|e| sq(path, e))?;
    tx.execute(
        "CREATE TEMP TABLE IF NOT EXISTS prune_events (seq INTEGER PRIMARY KEY)",
        [],
    )
    .map_err(|e| sq(path, e))?;
    tx.execute("DELETE FROM prune_events", [])
        .map_err(|e| sq(path, e))?;
    let n = tx
        .execute(&format!("INSERT INTO prune_events {OLD}"), [cut, BATCH])
        .map_err(|e| sq(path, e))?;
    for sql in [
        "DELETE FROM delivery_attempts WHERE event IN (SELECT seq FROM prune_events)",
        "DELETE FROM deliveries WHERE event IN (SELECT seq FROM prune_events)",
        "DELETE FROM events WHERE seq IN (SELECT seq FROM prune_events)",
    ] {
        tx.execute(sql, []).map_err(|e| sq(path, e))?;
    }
    tx.commit().map_err(|e| sq(path, e))?;
    Ok(n as u64)
}

/// The oldest whole day before `cut` that still has a rollup past its
/// first hour, and the highest connection key among its rows.
fn oldest_day(
    db: &rusqlite::Connection,
    path: &std::path::Path,
    cut: UnixMs,
) -> Result<Option<(i64, i64)>> {
    let day: Option<i64> = db
        .query_row(
            "SELECT hour FROM rollups WHERE hour < ?1 AND hour % ?2 != 0 ORDER BY hour LIMIT 1",
            [cut, DAY_MS],
            |r| r.get(0),
        )
        .map(|h: i64| Some(h.div_euclid(DAY_MS) * DAY_MS))
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .map_err(|e| sq(path, e))?;
    let Some(day) = day else { return Ok(None) };
    let last: i64 = db
        .query_row(
            "SELECT coalesce(max(conn), 0) FROM rollups WHERE hour >= ?1 AND hour < ?1 + ?2",
            [day, DAY_MS],
            |r| r.get(0),
        )
        .map_err(|e| sq(path, e))?;
    Ok(Some((day, last)))
}

/// Merges the hourly rollups of `day` of connections `from..to` into one
/// row per connection (at the day's first hour): counts and failures are
/// summed, p50 and p95 averaged weighted by count, the maximum kept. One
/// transaction.
fn merge_conns(
    db: &rusqlite::Connection,
    path: &std::path::Path,
    day: i64,
    from: i64,
    to: i64,
) -> Result<()> {
    let tx = db.unchecked_transaction().map_err(|e| sq(path, e))?;
    for sql in [
        "CREATE TEMP TABLE IF NOT EXISTS merge_day (conn INTEGER PRIMARY KEY, count INTEGER, failures INTEGER, p50 INTEGER, p95 INTEGER, max INTEGER)",
        "DELETE FROM merge_day",
        "INSERT INTO merge_day SELECT conn, sum(count), sum(failures),
            sum(latency_p50 * count) / max(sum(count), 1), sum(latency_p95 * count) / max(sum(count), 1),
            max(latency_max)
         FROM rollups WHERE hour >= ?1 AND hour < ?1 + ?2 AND conn >= ?3 AND conn < ?4 GROUP BY conn",
        "DELETE FROM rollups WHERE hour >= ?1 AND hour < ?1 + ?2 AND conn >= ?3 AND conn < ?4",
        "INSERT INTO rollups (hour, conn, count, failures, latency_p50, latency_p95, latency_max)
         SELECT ?1, conn, count, failures, p50, p95, max FROM merge_day",
    ] {
        let res = match sql.matches('?').count() {
            0 => tx.execute(sql, []),
            1 => tx.execute(sql, [day]),
            _ => tx.execute(sql, [day, DAY_MS, from, to]),
        };
        res.map_err(|e| sq(path, e))?;
    }
    tx.commit().map_err(|e| sq(path, e))?;
    Ok(())
}

/// Pages freed per incremental-vacuum step (4 MiB at 4 KiB pages).
const VACUUM_STEP: u64 = 1_000;

/// Free pages, given back to the file system in small steps (databases
/// created with `auto_vacuum = INCREMENTAL`; nothing to do on others), so
/// the file shrinks after retention instead of only ever growing.
fn vacuum_start(db: &rusqlite::Connection, path: &std::path::Path) -> Result<Phase> {
    let mode: i64 = db
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .map_err(|e| sq(path, e))?;
    if mode != 2 {
        return Ok(Phase::Done);
    }
    // Bounded: at most as many steps as there are free pages now.
    Ok(Phase::Vacuum {
        left: free_pages(db, path)?.div_ceil(VACUUM_STEP),
    })
}

fn free_pages(db: &rusqlite::Connection, path: &std::path::Path) -> Result<u64> {
    db.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0))
        .map(|n| n.max(0) as u64)
        .map_err(|e| sq(path, e))
}

/// One incremental-vacuum step; the pages it freed.
fn vacuum_step(db: &rusqlite::Connection, path: &std::path::Path) -> Result<u64> {
    let before = free_pages(db, path)?;
    db.execute_batch(&format!("PRAGMA incremental_vacuum({VACUUM_STEP})"))
        .map_err(|e| sq(path, e))?;
    Ok(before.saturating_sub(free_pages(db, path)?))
}

/// One batch of at most [`BATCH`] rows of `table` older than `cut`.
fn batch(
    db: &rusqlite::Connection,
    path: &std::path::Path,
    table: &str,
    order: &str,
    col: &str,
    cut: UnixMs,
) -> Result<u64> {
    // Transitions referenced by events stay while their events do, and
    // each connection's newest one stays whatever its age: it is the
    // health a report starts from (docs/uptime.md).
    let keep = if table == "transitions" {
        " AND NOT EXISTS (SELECT 1 FROM events WHERE events.transition = transitions.id)\
         AND at < (SELECT max(t2.at) FROM transitions t2 WHERE t2.conn = transitions.conn)"
    } else {
        ""
    };
    let sql = if table == "rollups" {
        format!("DELETE FROM rollups WHERE (hour, conn) IN (SELECT hour, conn FROM rollups WHERE hour < ?1 ORDER BY hour LIMIT {BATCH})")
    } else {
        format!(
            "DELETE FROM {table} WHERE {order} IN (SELECT {order} FROM {table} WHERE {col} < ?1{keep} ORDER BY {order} LIMIT {BATCH})"
        )
    };
    let n = db.execute(&sql, [cut]).map_err(|e| sq(path, e))?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database in a temp dir with connections `ids`, and their keys.
    fn store_with(ids: &[&str]) -> (tempfile::TempDir, Store, Vec<i64>) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("cw.db")).unwrap();
        let metas: Vec<_> = ids
            .iter()
            .map(|i| crate::store::ConnMeta::bare(i))
            .collect();
        let known = s.sync_connections(&metas).unwrap();
        let keys = ids.iter().map(|i| known[*i].key).collect();
        (dir, s, keys)
    }

    #[test]
    fn deletes_only_old_rows_in_batches() {
        let (_dir, mut s, keys) = store_with(&["a"]);
        let k = keys[0];
        let day = 86_400_000i64;
        let now = 400 * day;
        {
            let tx = s.db.transaction().unwrap();
            for i in 0..12_000i64 {
                // 0..6000 are 40 days old, the rest 1 day old.
                let at = if i < 6_000 { now - 40 * day } else { now - day } + i;
                tx.execute(
                    "INSERT INTO probes (conn, at, outcome, latency_ms) VALUES (?1, ?2, 2, 1)",
                    [k, at],
                )
                .unwrap();
            }
            tx.execute(
                "INSERT INTO probe_runs (conn, first_at, last_at, count, latency_min, latency_max, latency_sum) VALUES (?1, ?2, ?2, 1, 1, 1, 1)",
                [k, now - 31 * day],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO rollups VALUES (?1, ?2, 1, 0, 1, 1, 1)",
                [now - 366 * day, k],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO rollups VALUES (?1, ?2, 1, 0, 1, 1, 1)",
                [now - 364 * day, k],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let pages = |s: &Store| -> i64 {
            s.db.query_row("PRAGMA page_count", [], |r| r.get(0))
                .unwrap()
        };
        let before = pages(&s);
        let p = prune(&s, Duration::from_secs(30 * 86_400), now).unwrap();
        assert!(p.pages_freed > 0, "{p:?}");
        assert_eq!(
            p,
            Pruned {
                probes: 6_000,
                probe_runs: 1,
                transitions: 0,
                rollups: 1,
                // The rollup left is at a day's first hour: nothing to merge.
                days_merged: 0,
                events: 0,
                delivery_attempts: 0,
                pages_freed: p.pages_freed,
            }
        );
        // Incremental vacuum gave the pages back: the file shrinks.
        assert_eq!(pages(&s), before - p.pages_freed as i64);
        let left: i64 =
            s.db.query_row("SELECT count(*) FROM probes", [], |r| r.get(0))
                .unwrap();
        assert_eq!(left, 6_000);
        // Idempotent: no more rows to delete.
        let again = prune(&s, Duration::from_secs(30 * 86_400), now).unwrap();
        assert_eq!(
            Pruned {
                pages_freed: 0,
                ..again
            },
            Pruned::default()
        );
    }

    #[test]
    fn hourly_rollups_older_than_30_days_become_daily() {
        let (_dir, mut s, keys) = store_with(&["a", "b"]);
        let (a, b) = (keys[0], keys[1]);
        let hour = 3_600_000i64;
        let now = 400 * DAY_MS + 5 * hour;
        let old_day = now.div_euclid(DAY_MS) * DAY_MS - 40 * DAY_MS;
        let older_day = old_day - 3 * DAY_MS;
        let recent_day = now.div_euclid(DAY_MS) * DAY_MS - 2 * DAY_MS;
        {
            let tx = s.db.transaction().unwrap();
            let put = |h: i64, k: i64, count: i64, failures: i64, p50: i64, max: i64| {
                tx.execute(
                    "INSERT INTO rollups VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
                    [h, k, count, failures, p50, max],
                )
                .unwrap();
            };
            for day in [older_day, old_day, recent_day] {
                // a: 24 hours of 360 probes, p50 10 ms but 40 ms in hour 5;
                // b: two hours only.
                for i in 0..24 {
                    let p50 = if i == 5 { 40 } else { 10 };
                    put(day + i * hour, a, 360, i % 2, p50, 100 + i);
                }
                put(day + 3 * hour, b, 100, 100, 5, 7);
                put(day + 4 * hour, b, 300, 0, 9, 8);
            }
            tx.commit().unwrap();
        }
        let rows = |s: &Store, day: i64| -> Vec<(i64, i64, i64, i64, i64, i64)> {
            let mut q = s
                .db
                .prepare(
                    "SELECT hour, count, failures, latency_p50, latency_p95, latency_max FROM rollups
                     WHERE hour >= ?1 AND hour < ?1 + ?2 ORDER BY conn, hour",
                )
                .unwrap();
            q.query_map([day, DAY_MS], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
        };
        let p = prune(&s, Duration::from_secs(30 * 86_400), now).unwrap();
        assert_eq!(p.days_merged, 2);
        for day in [older_day, old_day] {
            // One row per connection, at the day's first hour.
            assert_eq!(
                rows(&s, day),
                [
                    // 24 × 360 probes, 12 failures, p50 weighted (23 × 10 +
                    // 40) / 24 = 11, max 123.
                    (day, 8_640, 12, 11, 11, 123),
                    // (100 × 5 + 300 × 9) / 400 = 8.
                    (day, 400, 100, 8, 8, 8),
                ]
            );
        }
        // The recent day stays hourly; a second run finds nothing to merge.
        assert_eq!(rows(&s, recent_day).len(), 26);
        let again = prune(&s, Duration::from_secs(30 * 86_400), now).unwrap();
        assert_eq!(again.days_merged, 0);
        assert_eq!(rows(&s, old_day).len(), 2);
    }

    #[test]
    fn a_connection_keeps_its_newest_transition_however_old() {
        let (_dir, s, keys) = store_with(&["a", "b"]);
        let day = 86_400_000i64;
        let now = 800 * day;
        for (id, k, at) in [
            (1, keys[0], 10 * day),
            (2, keys[0], 20 * day),
            (3, keys[1], 30 * day),
        ] {
            s.db.execute(
                "INSERT INTO transitions (id, conn, at, previous, current, consecutive_failures) VALUES (?1, ?2, ?3, 'unknown', 'online', 0)",
                rusqlite::params![id, k, at],
            )
            .unwrap();
        }
        prune(&s, Duration::from_secs(30 * 86_400), now).unwrap();
        let mut q =
            s.db.prepare("SELECT id FROM transitions ORDER BY id")
                .unwrap();
        let ids: Vec<i64> = q
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        // Stable for two years: the health a report starts from is kept.
        assert_eq!(ids, [2, 3]);
    }

    #[test]
    fn old_finished_events_go_with_their_deliveries_but_the_newest_and_pending_stay() {
        let (_dir, mut s, keys) = store_with(&["a"]);
        let k = keys[0];
        let day = 86_400_000i64;
        let now = 800 * day;
        let old = now - 400 * day;
        {
            let tx = s.db.transaction().unwrap();
            // Events 1..=4 are old: 1 and 2 delivered, 3 still pending, 4
            // the newest of its type (kept for standing alerts). 5 is recent.
            for (seq, at, state) in [
                (1, old, "done"),
                (2, old + 1, "dead"),
                (3, old + 2, "pending"),
                (4, old + 3, "done"),
                (5, now - day, "done"),
            ] {
                let kind = if seq == 4 {
                    "connection.circuit_opened"
                } else {
                    "connection.status_changed"
                };
                let kind = if seq == 5 {
                    "connection.status_changed"
                } else {
                    kind
                };
                tx.execute(
                    "INSERT INTO transitions (id, conn, at, previous, current, consecutive_failures) VALUES (?1, ?2, ?3, 'online', 'offline', 3)",
                    rusqlite::params![seq, k, at],
                )
                .unwrap();
                tx.execute(
                    "INSERT INTO events (seq, id, type, conn, at, transition, envelope) VALUES (?1, ?2, ?3, ?4, ?5, ?1, '{}')",
                    rusqlite::params![seq, format!("evt_{seq}"), kind, k, at],
                )
                .unwrap();
                tx.execute(
                    "INSERT INTO deliveries (event, sink, state, next_at) VALUES (?1, 'hook', ?2, 0)",
                    rusqlite::params![seq, state],
                )
                .unwrap();
                tx.execute(
                    "INSERT INTO delivery_attempts (event, sink, at, duration_ms, verdict) VALUES (?1, 'hook', ?2, 5, 'done')",
                    rusqlite::params![seq, at],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let p = prune(&s, Duration::from_secs(30 * 86_400), now).unwrap();
        let ids = |sql: &str| -> Vec<i64> {
            let mut q = s.db.prepare(sql).unwrap();
            q.query_map([], |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        };
        assert_eq!(ids("SELECT seq FROM events ORDER BY seq"), [3, 4, 5]);
        assert_eq!(
            ids("SELECT event FROM deliveries ORDER BY event"),
            [3, 4, 5]
        );
        // Attempts are raw detail: only the recent one is left.
        assert_eq!(ids("SELECT event FROM delivery_attempts"), [5]);
        // The transitions of deleted events went too; the others stay.
        assert_eq!(ids("SELECT id FROM transitions ORDER BY id"), [3, 4, 5]);
        assert_eq!((p.events, p.delivery_attempts, p.transitions), (2, 4, 2));
    }
}
