//! The writer: every write of probes, history, connection state and the
//! events they cause goes through here. (The outbox's delivery state has
//! other writers, named in [`super::outbox`].)
//!
//! It runs on its own thread (SQLite calls block) and takes records from a
//! bounded channel. Whatever is queued when it wakes is written in one
//! transaction (group commit), so thousands of probes a second cost a few
//! commits. Online probes only touch memory: the open run of each connection,
//! the hourly rollup and the connection's latest state are written at
//! `history_flush` (and when the run ends), so a healthy fleet writes a few
//! bytes per probe. A probe that is not online, a health transition, and the
//! events they cause are written at once, all in the same transaction (the
//! outbox guarantee of docs/delivery.md).
//!
//! A failed write (disk full, database locked) keeps its rows and is retried
//! with backoff. Nothing already accepted is dropped, with one bound: while
//! writes fail and more than [`MAX_HELD`] records wait, the records that are
//! only a failed probe's detail (no transition, event or state) are dropped
//! and counted. Their hourly rollup counts are kept.

use super::sq;
use crate::event::Envelope;
use crate::model::{ErrorKind, Outcome, ProbeError, UnixMs};
use crate::monitor::Transition;
use rusqlite::{params, Connection as Db};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Records queued before senders wait (back-pressure on the scheduler).
pub const QUEUE: usize = 16 * 1024;
/// While records keep coming, the writer takes them this often rather than
/// waking for each one (it waits for the first record when idle). It bounds
/// how long a transition waits before its transaction starts.
pub const POLL: Duration = Duration::from_millis(20);
const HOUR_MS: i64 = 3_600_000;

/// What the engine hands the writer: a probe, and/or what it changed.
#[derive(Debug, Clone)]
pub struct Record {
    pub conn: i64,
    /// The connection's id (for the audit log).
    pub conn_id: Arc<str>,
    pub at: UnixMs,
    pub probe: Option<Probe>,
    /// A confirmed health change, with the failure count at that moment.
    pub transition: Option<(Transition, u32)>,
    pub events: Vec<NewEvent>,
    /// The connection's state, when it changed.
    pub state: Option<StateRow>,
}

/// One probe's result.
#[derive(Debug, Clone)]
pub struct Probe {
    pub outcome: Outcome,
    pub latency_ms: u32,
    pub http_status: Option<u16>,
    pub error: Option<ProbeError>,
}

impl Probe {
    /// What is stored of a classified probe.
    pub fn of(c: &crate::model::Classified) -> Probe {
        Probe {
            outcome: c.outcome,
            latency_ms: u32::try_from(c.latency.as_millis()).unwrap_or(u32::MAX),
            http_status: c.http_status,
            error: c.error.clone(),
        }
    }
}

/// An event, its deliveries, and why it is held back (recorded with no
/// deliveries) if it is.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub envelope: Envelope,
    pub deliveries: Vec<crate::policy::Delivery>,
    pub suppressed: Option<&'static str>,
}

/// The connection row's state columns.
#[derive(Debug, Clone, PartialEq)]
pub struct StateRow {
    /// `MonitorState` as JSON (restored at start).
    pub json: String,
    pub circuit: &'static str,
    pub hold_until: Option<UnixMs>,
    pub hold_reason: Option<&'static str>,
    pub suppressed: Option<&'static str>,
    pub sent_health: &'static str,
}

/// The state row last handed to the writer for one connection (what is
/// compared, not the JSON), so that only changes are handed over: a
/// steady connection's row is not rewritten.
#[derive(Debug, Default)]
pub struct LastState(Option<u64>);

impl LastState {
    /// The row for this state, if it differs from the last one. Only a
    /// hash of the last one is kept (8 bytes, not a 280-byte copy per
    /// connection: 27 MB at 100,000).
    pub fn changed(
        &mut self,
        state: &crate::monitor::MonitorState,
        hold_until: Option<UnixMs>,
        hold_reason: Option<&'static str>,
        suppressed: Option<&'static str>,
    ) -> Option<StateRow> {
        use std::hash::{Hash, Hasher};
        // Fixed keys: the same state always hashes the same.
        let mut h = std::hash::DefaultHasher::new();
        (state, hold_until, hold_reason, suppressed).hash(&mut h);
        let now = h.finish();
        if self.0 == Some(now) {
            return None;
        }
        self.0 = Some(now);
        Some(StateRow {
            json: state.to_json(),
            circuit: state.breaker.circuit.as_str(),
            hold_until,
            hold_reason,
            suppressed,
            sent_health: state.sent.as_str(),
        })
    }
}

impl Record {
    /// Whether the writer must commit this now (else it is held in memory).
    fn urgent(&self) -> bool {
        self.probe
            .as_ref()
            .is_none_or(|p| p.outcome != Outcome::Online)
            || self.transition.is_some()
            || !self.events.is_empty()
    }
}

/// Counters for logs and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    pub commits: u64,
    pub probes: u64,
    pub rows: u64,
    pub max_batch: u64,
    pub failed_writes: u64,
    /// Failed probes' detail dropped while writes failed (see [`MAX_HELD`]).
    pub dropped_probes: u64,
}

/// Records held while writes fail before plain probe records are dropped
/// (about 300 bytes each: some 30 MB).
pub const MAX_HELD: usize = 100_000;

/// Run and rollup rows written per commit at most (the rest at the next
/// turns of the loop, 20 ms apart).
pub const BULK: usize = 5_000;

type PruneReply = oneshot::Sender<super::Result<super::retention::Pruned>>;

enum Op {
    Record(Box<Record>),
    Flush(oneshot::Sender<()>),
    Prune(Duration, PruneReply),
    /// Write everything and stop, even if other handles still exist.
    Close,
}

/// The sending side; cloned by every producer.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Op>,
    /// Set (once) when the database file was deleted or replaced under the
    /// writer: the daemon must exit, since nothing it writes would last.
    lost: tokio::sync::watch::Receiver<Option<String>>,
    /// `Some(error)` while writes keep failing (from the [`TROUBLE_AFTER`]th
    /// failure in a row, or [`TROUBLE_FOR`] after the first failed attempt
    /// began, until the next commit).
    trouble: tokio::sync::watch::Receiver<Option<String>>,
}

/// Failed writes in a row before the writer reports trouble (a full disk
/// fails at once: with the backoff, about 1 s of failing).
pub const TROUBLE_AFTER: u32 = 3;
/// Or this long after the first failed attempt began (a locked database
/// fails only after [`super::BUSY_TIMEOUT`] of waiting).
pub const TROUBLE_FOR: Duration = Duration::from_secs(5);

/// How often the writer records the daemon's heartbeat in the database.
pub const BEAT_EVERY: Duration = Duration::from_secs(5);

/// How often the writer checks that the database file is still the one it
/// opened.
pub const FILE_CHECK: Duration = Duration::from_secs(1);

/// Device and inode of `path`, if it exists.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Joins the writer thread.
pub struct WriterJoin(std::thread::JoinHandle<WriterStats>);

impl WriterJoin {
    /// Waits (blocking) for the final flush.
    pub fn join(self) -> WriterStats {
        self.0.join().unwrap_or_default()
    }
}

impl Writer {
    /// Starts the writer thread on its own connection to `path`.
    pub fn start(path: &Path, history_flush: Duration) -> super::Result<(Writer, WriterJoin)> {
        Writer::start_notifying(path, history_flush, None, Default::default(), None)
    }

    /// As [`Writer::start`]; `wake` is notified after each commit that wrote
    /// deliveries (the dispatcher waits on it).
    pub fn start_notifying(
        path: &Path,
        history_flush: Duration,
        wake: Option<std::sync::Arc<tokio::sync::Notify>>,
        beat: std::sync::Arc<std::sync::atomic::AtomicI64>,
        audit: Option<crate::ops::audit::Audit>,
    ) -> super::Result<(Writer, WriterJoin)> {
        let store = super::Store::open(path)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let (lost_tx, lost) = tokio::sync::watch::channel(None);
        let (trouble_tx, trouble) = tokio::sync::watch::channel(None);
        let path = path.to_path_buf();
        let handle = std::thread::Builder::new()
            .name("connwatch-writer".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("a current-thread runtime");
                let out = Outputs {
                    notify: wake,
                    beat,
                    lost: lost_tx,
                    trouble: trouble_tx,
                };
                rt.block_on(run(store.db, path, rx, history_flush, audit, out))
            })
            .map_err(|source| super::StoreError::Io {
                path: "writer thread".into(),
                source,
            })?;
        Ok((Writer { tx, lost, trouble }, WriterJoin(handle)))
    }

    /// Resolves with a message when the database file was deleted or
    /// replaced while the writer held it open (the writer has stopped).
    pub async fn lost(&self) -> String {
        let mut rx = self.lost.clone();
        loop {
            if let Some(m) = rx.borrow_and_update().clone() {
                return m;
            }
            if rx.changed().await.is_err() {
                // The writer ended without losing the file: never resolves.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Watches write trouble: `Some(error)` while writes keep failing.
    pub fn trouble(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.trouble.clone()
    }

    /// Queues a record; waits if the queue is full.
    pub async fn send(&self, rec: Record) {
        // The only error is "writer gone", which happens only at shutdown.
        let _ = self.tx.send(Op::Record(Box::new(rec))).await;
    }

    /// Applies retention on the writer's connection (so it never races the
    /// writer), after writing what is held in memory.
    pub async fn prune(
        &self,
        retention: Duration,
    ) -> Option<super::Result<super::retention::Pruned>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Op::Prune(retention, tx)).await.ok()?;
        rx.await.ok()
    }

    /// Asks the writer to write everything and stop.
    pub async fn close(&self) {
        let _ = self.tx.send(Op::Close).await;
    }

    /// Writes everything held in memory now and waits until it is committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Run {
    first_at: UnixMs,
    last_at: UnixMs,
    count: i64,
    min: i64,
    max: i64,
    sum: i64,
    /// Its row, once written: later flushes update that row in place, so an
    /// online connection costs one row per hour, not one per flush.
    rowid: Option<i64>,
    /// Changed since it was last written.
    dirty: bool,
}

#[derive(Debug, Default)]
struct Acc {
    count: i64,
    failures: i64,
    latencies: Vec<u32>,
}

struct RollupRow {
    hour: i64,
    conn: i64,
    count: i64,
    failures: i64,
    p50: i64,
    p95: i64,
    max: i64,
}

/// Rows accepted but not yet committed.
#[derive(Default)]
struct Backlog {
    /// Runs that ended (a non-online probe, or the hour turned).
    runs: Vec<(i64, Run)>,
    /// Write the open runs that changed (a history flush is due).
    open_runs_due: bool,
    records: Vec<Record>,
    rollups: Vec<RollupRow>,
    states: Vec<(i64, StateRow)>,
    /// The daemon's heartbeat (unix ms), due to be written.
    beat: Option<UnixMs>,
    /// The daemon stops cleanly (unix ms).
    stopped: Option<UnixMs>,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.runs.is_empty()
            && !self.open_runs_due
            && self.records.is_empty()
            && self.rollups.is_empty()
            && self.states.is_empty()
            && self.beat.is_none()
            && self.stopped.is_none()
    }
}

struct State {
    db: Db,
    path: PathBuf,
    runs: HashMap<i64, Run>,
    rollups: HashMap<(i64, i64), Acc>,
    /// Latest state of connections whose records were not urgent.
    states: HashMap<i64, StateRow>,
    /// Retention under way, a step per turn of the loop, and who asked.
    pruning: Option<(super::retention::Pruner, PruneReply)>,
    backlog: Backlog,
    stats: WriterStats,
    /// Consecutive failed writes (for backoff and to log once per streak).
    failing: u32,
    /// Held records at which plain probe records are dropped next.
    compact_at: usize,
    /// Transitions and events are audited once committed.
    audit: Option<crate::ops::audit::Audit>,
}

/// What the writer tells the rest of the daemon.
struct Outputs {
    /// Notified after a commit that wrote deliveries.
    notify: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// The loop's heartbeat (unix ms).
    beat: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// The database file was deleted or replaced.
    lost: tokio::sync::watch::Sender<Option<String>>,
    /// Writes keep failing.
    trouble: tokio::sync::watch::Sender<Option<String>>,
}

async fn run(
    db: Db,
    path: PathBuf,
    mut rx: mpsc::Receiver<Op>,
    history_flush: Duration,
    audit: Option<crate::ops::audit::Audit>,
    out: Outputs,
) -> WriterStats {
    let Outputs {
        notify,
        beat,
        lost,
        trouble,
    } = out;
    let identity = file_identity(&path);
    let mut next_check = tokio::time::Instant::now() + FILE_CHECK;
    let mut streak_start: Option<tokio::time::Instant> = None;
    let mut st = State::new(db, path, audit);
    let start = tokio::time::Instant::now();
    let mut next_flush = start + history_flush;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut prunes: Vec<(Duration, PruneReply)> = Vec::new();
    let mut open = true;
    let mut next_beat = start;
    let mut stop_marked = false;
    let mut last_hour = crate::model::now_ms().div_euclid(HOUR_MS) * HOUR_MS;
    let mut busy = false;
    while open || !st.backlog.is_empty() {
        // The heartbeat proves the writer loop turns (the watchdog reads it).
        beat.store(crate::model::now_ms(), std::sync::atomic::Ordering::Relaxed);
        // SQLite keeps writing to a deleted or replaced file's old inode, and
        // every commit would succeed into nothing: check, and stop.
        if identity.is_some() && tokio::time::Instant::now() >= next_check {
            next_check = tokio::time::Instant::now() + FILE_CHECK;
            let now = file_identity(&st.path);
            if now != identity {
                let what = if now.is_none() { "deleted" } else { "replaced" };
                let msg = format!(
                    "database {} was {what} while connwatch held it open; {} records not written",
                    st.path.display(),
                    st.backlog.records.len()
                );
                tracing::error!(component = "writer", "{msg}");
                let _ = lost.send(Some(msg));
                break;
            }
        }
        let wake = retry_at
            .map_or(next_flush, |r| r.min(next_flush))
            .min(tokio::time::Instant::now() + crate::ops::notify::HEARTBEAT)
            .min(next_check);
        let mut batch = 0u64;
        if busy && open {
            // Under load, collect for a moment instead of waking for every
            // record: the engine's sends then cost no cross-thread wake-up.
            tokio::time::sleep_until(wake.min(tokio::time::Instant::now() + POLL)).await;
        } else {
            tokio::select! {
                op = rx.recv(), if open => match op {
                    Some(op) => { batch += 1; open = st.accept(op, &mut waiters, &mut prunes); }
                    None => open = false,
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        // Group commit: take everything already queued.
        while open && batch < QUEUE as u64 {
            match rx.try_recv() {
                Ok(op) => {
                    batch += 1;
                    open = st.accept(op, &mut waiters, &mut prunes);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // A retention run takes a step per turn, and bulk rows that did not
        // fit in the last commit go at the next: keep turning.
        busy = batch > 0 || st.pruning.is_some() || (retry_at.is_none() && !st.backlog.is_empty());
        let now = tokio::time::Instant::now();
        // The heartbeat `connwatch status` reads to tell a running daemon
        // from a stopped one, and the mark of a clean stop.
        if now >= next_beat {
            st.backlog.beat = Some(crate::model::now_ms());
            next_beat = now + BEAT_EVERY;
        }
        if !open && !stop_marked {
            st.backlog.stopped = Some(crate::model::now_ms());
            stop_marked = true;
        }
        let forced = !open || !waiters.is_empty() || (!prunes.is_empty() && st.pruning.is_none());
        if forced || now >= next_flush {
            st.mark_open_runs_due();
            let states: Vec<(i64, StateRow)> = st.states.drain().collect();
            st.backlog.states.extend(states);
            next_flush = now + history_flush;
            // The current hour's rollups too, so the views' newest slot is
            // never older than `history_flush` (a new install shows bars
            // within a minute).
            st.take_rollups(None);
        }
        // Rollups of hours that have ended are written without waiting.
        let hour = crate::model::now_ms().div_euclid(HOUR_MS) * HOUR_MS;
        if hour != last_hour {
            st.take_rollups(Some(hour));
            last_hour = hour;
        }
        if st.backlog.is_empty() {
            for w in waiters.drain(..) {
                let _ = w.send(());
            }
            st.prune(&mut prunes);
            continue;
        }
        if retry_at.is_some_and(|r| now < r) && open && waiters.is_empty() {
            continue;
        }
        let deliveries = st
            .backlog
            .records
            .iter()
            .any(|r| r.events.iter().any(|e| !e.deliveries.is_empty()));
        let attempt = tokio::time::Instant::now();
        match st.write() {
            Ok(rows) => {
                if deliveries {
                    if let Some(n) = &notify {
                        n.notify_one();
                    }
                }
                if st.failing > 0 {
                    tracing::info!(
                        component = "writer",
                        "database writes recovered after {} failures",
                        st.failing
                    );
                }
                st.failing = 0;
                retry_at = None;
                st.compact_at = MAX_HELD;
                trouble.send_if_modified(|t| t.take().is_some());
                streak_start = None;
                st.stats.commits += 1;
                st.stats.rows += rows;
                st.stats.max_batch = st.stats.max_batch.max(batch);
                crate::ops::metrics::metrics()
                    .writer_batch
                    .observe(rows as f64);
                crate::ops::metrics::metrics().writer_failing.set(0);
                // A flush is answered once everything it asked for is in.
                if st.backlog.is_empty() {
                    for w in waiters.drain(..) {
                        let _ = w.send(());
                    }
                }
                st.prune(&mut prunes);
            }
            Err(e) => {
                st.failing += 1;
                let since = *streak_start.get_or_insert(attempt);
                crate::ops::metrics::metrics().writer_failures.inc();
                crate::ops::metrics::metrics()
                    .writer_failing
                    .set(st.failing as i64);
                st.stats.failed_writes += 1;
                if st.failing == 1 {
                    tracing::error!(component = "writer", error = %e, "database write failed; keeping the rows and retrying");
                }
                if (st.failing >= TROUBLE_AFTER || since.elapsed() >= TROUBLE_FOR)
                    && trouble.borrow().is_none()
                {
                    let _ = trouble.send(Some(e.to_string()));
                }
                let backoff =
                    Duration::from_millis(200u64 << st.failing.min(7)).min(Duration::from_secs(30));
                retry_at = Some(tokio::time::Instant::now() + backoff);
                if !open {
                    // Shutting down: a few more tries, then give up loudly.
                    if st.failing > 5 {
                        tracing::error!(
                            component = "writer",
                            "giving up: {} records not written",
                            st.backlog.records.len()
                        );
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }
    st.stats
}

impl State {
    fn new(db: Db, path: PathBuf, audit: Option<crate::ops::audit::Audit>) -> State {
        State {
            db,
            path,
            runs: HashMap::new(),
            rollups: HashMap::new(),
            states: HashMap::new(),
            pruning: None,
            backlog: Backlog::default(),
            stats: WriterStats::default(),
            failing: 0,
            compact_at: MAX_HELD,
            audit,
        }
    }

    /// Takes one op; returns false when the writer is asked to close.
    fn accept(
        &mut self,
        op: Op,
        waiters: &mut Vec<oneshot::Sender<()>>,
        prunes: &mut Vec<(Duration, PruneReply)>,
    ) -> bool {
        match op {
            Op::Close => return false,
            Op::Flush(w) => waiters.push(w),
            // Memory is written first (the flush is forced), then pruned.
            Op::Prune(d, reply) => prunes.push((d, reply)),
            Op::Record(rec) => self.accept_record(*rec),
        }
        true
    }

    fn accept_record(&mut self, mut rec: Record) {
        if let Some(p) = &rec.probe {
            self.stats.probes += 1;
            let lat = i64::from(p.latency_ms);
            let hour = rec.at - rec.at.rem_euclid(HOUR_MS);
            let acc = self.rollups.entry((rec.conn, hour)).or_default();
            acc.count += 1;
            acc.failures += i64::from(p.outcome.is_failure());
            acc.latencies.push(p.latency_ms);
            if p.outcome == Outcome::Online {
                // Runs end with the hour, so `history` finds any moment
                // in a row that spans at most an hour.
                if self
                    .runs
                    .get(&rec.conn)
                    .is_some_and(|r| r.first_at - r.first_at.rem_euclid(HOUR_MS) != hour)
                {
                    if let Some(run) = self.runs.remove(&rec.conn) {
                        self.backlog.runs.push((rec.conn, run));
                    }
                }
                let r = self.runs.entry(rec.conn).or_insert(Run {
                    first_at: rec.at,
                    last_at: rec.at,
                    count: 0,
                    min: lat,
                    max: lat,
                    sum: 0,
                    rowid: None,
                    dirty: true,
                });
                r.dirty = true;
                r.last_at = rec.at;
                r.count += 1;
                r.min = r.min.min(lat);
                r.max = r.max.max(lat);
                r.sum += lat;
            } else if let Some(run) = self.runs.remove(&rec.conn) {
                self.backlog.runs.push((rec.conn, run));
            }
        }
        if rec.urgent() {
            // This record's state supersedes any held one.
            if rec.state.is_none() {
                if let Some(held) = self.states.remove(&rec.conn) {
                    rec.state = Some(held);
                }
            } else {
                self.states.remove(&rec.conn);
            }
            if self.failing > 0 && self.backlog.records.len() >= self.compact_at {
                self.drop_probe_detail();
            }
            self.backlog.records.push(rec);
        } else if let Some(state) = rec.state.take() {
            self.states.insert(rec.conn, state);
        }
    }

    /// Writes keep failing and too much is held: drops the records that
    /// are only a failed probe's detail. Transitions, events and states stay.
    fn drop_probe_detail(&mut self) {
        let before = self.backlog.records.len();
        self.backlog
            .records
            .retain(|r| r.transition.is_some() || !r.events.is_empty() || r.state.is_some());
        let dropped = before - self.backlog.records.len();
        self.stats.dropped_probes += dropped as u64;
        // What stays may itself be many: compact again only when it doubles.
        self.compact_at = MAX_HELD.max(self.backlog.records.len() * 2);
        tracing::warn!(
            component = "writer",
            dropped,
            held = self.backlog.records.len(),
            "database still not writable: dropped the detail of {dropped} failed probes held in memory (transitions, events, states and hourly counts are kept)"
        );
    }

    /// Takes one step of retention (after the backlog was committed),
    /// starting the next request when none runs: the loop commits records
    /// between two steps, so retention never holds the writer for long.
    fn prune(&mut self, prunes: &mut Vec<(Duration, PruneReply)>) {
        if self.pruning.is_none() && !prunes.is_empty() {
            let (retention, reply) = prunes.remove(0);
            let p = super::retention::Pruner::new(retention, crate::model::now_ms());
            self.pruning = Some((p, reply));
        }
        let Some((p, _)) = &mut self.pruning else {
            return;
        };
        let res = p.step(&self.db, &self.path);
        let finished = !matches!(res, Ok(false));
        if finished {
            let Some((p, reply)) = self.pruning.take() else {
                return;
            };
            tracing::debug!(
                component = "writer",
                steps = p.steps,
                longest_ms = p.longest.as_millis() as u64,
                "retention steps"
            );
            let _ = reply.send(res.map(|_| p.done));
        }
    }

    /// Open runs that changed are written at the next commit (they stay
    /// open in memory).
    fn mark_open_runs_due(&mut self) {
        if self.runs.values().any(|r| r.dirty) {
            self.backlog.open_runs_due = true;
        }
    }

    /// Moves rollup accumulators to the backlog: all of them, or only hours
    /// that started before `before`.
    fn take_rollups(&mut self, before: Option<i64>) {
        let keys: Vec<(i64, i64)> = self
            .rollups
            .keys()
            .filter(|(_, hour)| before.is_none_or(|b| *hour < b))
            .copied()
            .collect();
        for k in keys {
            let Some(mut acc) = self.rollups.remove(&k) else {
                continue;
            };
            acc.latencies.sort_unstable();
            let pct = |p: f64| -> i64 {
                let n = acc.latencies.len();
                if n == 0 {
                    return 0;
                }
                let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
                i64::from(acc.latencies[i])
            };
            self.backlog.rollups.push(RollupRow {
                hour: k.1,
                conn: k.0,
                count: acc.count,
                failures: acc.failures,
                p50: pct(0.50),
                p95: pct(0.95),
                max: acc.latencies.last().copied().map(i64::from).unwrap_or(0),
            });
        }
    }

    /// Writes the backlog in one transaction; clears it only on commit.
    fn write(&mut self) -> super::Result<u64> {
        let p = self.path.clone();
        let e = |err| sq(&p, err);
        let tx = self.db.transaction().map_err(e)?;
        let mut rows = 0u64;
        // Open runs written in this transaction: their rows, once committed.
        let mut written_runs: Vec<(i64, Option<i64>)> = Vec::new();
        let (mut ended_written, mut open_left, mut rollups_written) = (0usize, false, 0usize);
        {
            let mut ins_run = tx
                .prepare_cached(
                    "INSERT INTO probe_runs (conn, first_at, last_at, count, latency_min, latency_max, latency_sum)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(e)?;
            let mut up_run = tx
                .prepare_cached(
                    "UPDATE probe_runs SET last_at = ?2, count = ?3, latency_min = ?4, latency_max = ?5, latency_sum = ?6
                     WHERE rowid = ?1",
                )
                .map_err(e)?;
            let mut put = |conn: i64, r: &Run| -> rusqlite::Result<Option<i64>> {
                match r.rowid {
                    Some(id) => {
                        up_run.execute(params![id, r.last_at, r.count, r.min, r.max, r.sum])?;
                        Ok(Some(id))
                    }
                    None => {
                        ins_run.execute(params![
                            conn, r.first_at, r.last_at, r.count, r.min, r.max, r.sum
                        ])?;
                        Ok(Some(tx.last_insert_rowid()))
                    }
                }
            };
            // Runs and rollups are bulk: at most BULK of them per commit,
            // the rest at the next turns, so a flush of 100,000 connections
            // never holds the writer (and the engine's queue) for seconds.
            let mut budget = BULK;
            for (conn, r) in self.backlog.runs.iter().take(budget) {
                put(*conn, r).map_err(e)?;
                rows += 1;
                ended_written += 1;
            }
            budget -= ended_written;
            if self.backlog.open_runs_due {
                let mut dirty = self.runs.iter().filter(|(_, r)| r.dirty);
                for (conn, r) in dirty.by_ref().take(budget) {
                    written_runs.push((*conn, put(*conn, r).map_err(e)?));
                    rows += 1;
                }
                budget -= written_runs.len();
                open_left = dirty.next().is_some();
            }
            let mut ins_probe = tx
                .prepare_cached(
                    "INSERT INTO probes (conn, at, outcome, latency_ms, http_status, error_kind, error_message)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(e)?;
            for rec in &self.backlog.records {
                if let Some(p) = rec.probe.as_ref().filter(|p| p.outcome != Outcome::Online) {
                    ins_probe
                        .execute(params![
                            rec.conn,
                            rec.at,
                            p.outcome.code(),
                            p.latency_ms,
                            p.http_status,
                            p.error.as_ref().map(|x| x.kind.code()),
                            p.error.as_ref().map(|x| x.message.as_str()),
                        ])
                        .map_err(e)?;
                    rows += 1;
                }
                rows += write_change(&tx, rec).map_err(e)?;
            }
            for (conn, state) in &self.backlog.states {
                write_state(&tx, *conn, state).map_err(e)?;
                rows += 1;
            }
            let mut up_rollup = tx
                .prepare_cached(
                    "INSERT INTO rollups (hour, conn, count, failures, latency_p50, latency_p95, latency_max)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (hour, conn) DO UPDATE SET
                       latency_p50 = (latency_p50 * count + excluded.latency_p50 * excluded.count) / (count + excluded.count),
                       latency_p95 = (latency_p95 * count + excluded.latency_p95 * excluded.count) / (count + excluded.count),
                       latency_max = max(latency_max, excluded.latency_max),
                       failures = failures + excluded.failures,
                       count = count + excluded.count",
                )
                .map_err(e)?;
            for r in self.backlog.rollups.iter().take(budget) {
                rollups_written += 1;
                up_rollup
                    .execute(params![
                        r.hour, r.conn, r.count, r.failures, r.p50, r.p95, r.max
                    ])
                    .map_err(e)?;
                rows += 1;
            }
        }
        if let Some(t) = self.backlog.beat {
            super::daemon_row::beat(&tx, t).map_err(e)?;
        }
        if let Some(t) = self.backlog.stopped {
            super::daemon_row::stopped(&tx, t).map_err(e)?;
        }
        tx.commit().map_err(e)?;
        for (conn, rowid) in written_runs {
            if let Some(r) = self.runs.get_mut(&conn) {
                r.rowid = rowid;
                r.dirty = false;
            }
        }
        if let Some(a) = &self.audit {
            audit_committed(a, &self.backlog.records);
        }
        // What did not fit stays for the next turn.
        let mut runs = std::mem::take(&mut self.backlog.runs);
        runs.drain(..ended_written);
        let mut rollups = std::mem::take(&mut self.backlog.rollups);
        rollups.drain(..rollups_written);
        self.backlog = Backlog {
            runs,
            open_runs_due: open_left,
            rollups,
            ..Backlog::default()
        };
        Ok(rows)
    }
}

/// The transition row, the connection's new health, the outbox rows and the
/// state columns of one record.
fn write_change(tx: &rusqlite::Transaction<'_>, rec: &Record) -> rusqlite::Result<u64> {
    let mut rows = 0;
    let mut transition_id = None;
    if let Some((t, consecutive_failures)) = &rec.transition {
        let p = rec.probe.as_ref();
        let err = p.and_then(|p| p.error.as_ref());
        tx.prepare_cached(
            "INSERT INTO transitions (conn, at, previous, current, error_kind, error_message, latency_ms, http_status, consecutive_failures)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            rec.conn,
            t.at,
            t.previous.as_str(),
            t.current.as_str(),
            err.map(|x| x.kind.code()),
            err.map(|x| x.message.as_str()),
            p.map(|p| p.latency_ms),
            p.and_then(|p| p.http_status),
            consecutive_failures,
        ])?;
        transition_id = Some(tx.last_insert_rowid());
        tx.prepare_cached(
            "UPDATE connections SET health = ?2, health_since = ?3, consecutive_failures = ?4 WHERE key = ?1",
        )?
        .execute(params![rec.conn, t.current.as_str(), t.at, consecutive_failures])?;
        rows += 2;
    }
    for ev in &rec.events {
        rows += super::outbox::write_event(
            tx,
            &ev.envelope,
            Some(rec.conn),
            rec.at,
            transition_id,
            ev.suppressed,
            &ev.deliveries,
        )?;
    }
    if let Some(state) = &rec.state {
        write_state(tx, rec.conn, state)?;
        rows += 1;
    }
    Ok(rows)
}

fn write_state(tx: &rusqlite::Transaction<'_>, conn: i64, s: &StateRow) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "UPDATE connections SET state = ?2, circuit = ?3, hold_until = ?4, hold_reason = ?5, suppressed = ?6, sent_health = ?7
         WHERE key = ?1",
    )?
    .execute(params![conn, s.json, s.circuit, s.hold_until, s.hold_reason, s.suppressed, s.sent_health])
}

/// One audit line per committed transition and event.
fn audit_committed(a: &crate::ops::audit::Audit, records: &[Record]) {
    use serde_json::json;
    for rec in records {
        if let Some((t, failures)) = &rec.transition {
            let err = rec.probe.as_ref().and_then(|p| p.error.as_ref());
            a.record(
                "transition",
                json!({"connection_id": &*rec.conn_id, "at": crate::model::rfc3339(t.at), "previous": t.previous.as_str(),
                       "current": t.current.as_str(), "consecutive_failures": failures, "error": err}),
            );
        }
        for ev in &rec.events {
            let sinks: Vec<&str> = ev.deliveries.iter().map(|d| &*d.sink).collect();
            a.record(
                "event",
                json!({"event_id": ev.envelope.id, "type": ev.envelope.kind, "connection_id": &*rec.conn_id,
                       "suppressed": ev.suppressed, "sinks": sinks}),
            );
        }
    }
}

/// Decodes a stored error.
pub fn stored_error(
    kind: Option<i64>,
    message: Option<String>,
    http_status: Option<u16>,
) -> Option<ProbeError> {
    let kind = ErrorKind::from_code(kind?)?;
    Some(ProbeError {
        kind,
        message: message.unwrap_or_default(),
        http_status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Health;

    fn rec(conn: i64, at: UnixMs, outcome: Outcome) -> Record {
        Record {
            conn,
            conn_id: Arc::from("a"),
            at,
            probe: Some(Probe {
                outcome,
                latency_ms: (at % 100) as u32,
                http_status: Some(if outcome == Outcome::Online { 200 } else { 503 }),
                error: (outcome != Outcome::Online).then(|| ProbeError {
                    kind: ErrorKind::HttpStatus,
                    message: "HTTP 503".into(),
                    http_status: Some(503),
                }),
            }),
            transition: None,
            events: Vec::new(),
            state: None,
        }
    }

    fn state(json: &str) -> StateRow {
        StateRow {
            json: json.into(),
            circuit: "closed",
            hold_until: None,
            hold_reason: None,
            suppressed: None,
            sent_health: "online",
        }
    }

    /// A database in a temp dir with one connection, `a`: the dir (kept
    /// alive by the caller), the file and the connection's key.
    fn one_connection() -> (tempfile::TempDir, PathBuf, i64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cw.db");
        let key = super::super::Store::open(&path)
            .unwrap()
            .sync_connections(&[crate::store::ConnMeta::bare("a")])
            .unwrap()["a"]
            .key;
        (dir, path, key)
    }

    fn count(db: &Db, sql: &str) -> i64 {
        db.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn event(sinks: &[&str], suppressed: Option<&'static str>) -> NewEvent {
        NewEvent {
            envelope: Envelope::new(
                "test",
                crate::event::EventKind::StatusChanged,
                2_000,
                Some("a"),
                serde_json::json!({}),
            ),
            deliveries: sinks
                .iter()
                .filter(|_| suppressed.is_none())
                .map(|s| crate::policy::Delivery {
                    sink: (*s).into(),
                    priority: crate::policy::Priority::Fresh,
                    action: None,
                })
                .collect(),
            suppressed,
        }
    }

    #[test]
    fn while_writes_fail_plain_probe_detail_is_dropped_beyond_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cw.db");
        let db = super::super::Store::open(&path).unwrap().db;
        let mut st = State::new(db, path, None);
        st.failing = 1;
        let mut first = rec(1, 1, Outcome::Offline);
        first.transition = Some((
            Transition {
                previous: Health::Is(Outcome::Online),
                current: Health::Is(Outcome::Offline),
                at: 1,
            },
            3,
        ));
        first.events = vec![event(&["s"], None)];
        st.accept_record(first);
        let n = MAX_HELD + 10;
        for i in 0..n {
            let mut r = rec(1, 10 + i as i64, Outcome::Offline);
            if i == 5 {
                r.state = Some(state("changed"));
            }
            st.accept_record(r);
        }
        // Dropped once, at the bound: the transition and the state change
        // stay, and so do the records that came after.
        assert_eq!(st.stats.dropped_probes, MAX_HELD as u64 - 2);
        assert_eq!(st.backlog.records.len(), n + 1 - (MAX_HELD - 2));
        assert!(st.backlog.records[0].transition.is_some());
        assert!(st.backlog.records[1].state.is_some());
        // Every probe still counts in the hourly rollup.
        let counted: i64 = st.rollups.values().map(|a| a.count).sum();
        assert_eq!(counted, n as i64 + 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_online_run_is_one_row_per_hour_updated_in_place() {
        let (_dir, path, key) = one_connection();
        let (w, join) = Writer::start(&path, Duration::from_secs(3600)).unwrap();
        let db = Db::open(&path).unwrap();
        // Three flushes inside one hour: one row, growing.
        for i in 0..3 {
            w.send(rec(key, 10_000 + i, Outcome::Online)).await;
            w.flush().await;
            assert_eq!(count(&db, "SELECT count(*) FROM probe_runs"), 1);
            assert_eq!(count(&db, "SELECT count FROM probe_runs"), i + 1);
            assert_eq!(count(&db, "SELECT last_at FROM probe_runs"), 10_000 + i);
        }
        // The next hour starts a new row; the first keeps its figures.
        w.send(rec(key, HOUR_MS + 5, Outcome::Online)).await;
        w.flush().await;
        assert_eq!(count(&db, "SELECT count(*) FROM probe_runs"), 2);
        assert_eq!(
            count(&db, "SELECT count FROM probe_runs WHERE first_at = 10000"),
            3
        );
        // A failure ends the run; the next online probe opens another row.
        w.send(rec(key, HOUR_MS + 6, Outcome::Offline)).await;
        w.send(rec(key, HOUR_MS + 7, Outcome::Online)).await;
        w.flush().await;
        assert_eq!(count(&db, "SELECT count(*) FROM probe_runs"), 3);
        assert_eq!(count(&db, "SELECT sum(count) FROM probe_runs"), 5);
        w.close().await;
        join.join();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn retention_goes_in_timed_steps_while_records_still_flow() {
        let (_dir, path, key) = one_connection();
        let old = crate::model::now_ms() - 40 * 86_400_000;
        let n = 3 * super::super::retention::BATCH + 17;
        {
            let mut db = Db::open(&path).unwrap();
            let tx = db.transaction().unwrap();
            for i in 0..n {
                tx.execute(
                    "INSERT INTO probes (conn, at, outcome, latency_ms) VALUES (?1, ?2, 2, 1)",
                    [key, old + i],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let (w, join) = Writer::start(&path, Duration::from_secs(3600)).unwrap();
        let db = Db::open(&path).unwrap();
        let steps = crate::ops::metrics::metrics()
            .retention_step
            .get_sample_count();
        // A failed probe sent while retention runs is still taken and
        // written.
        let (pruned, ()) = tokio::join!(w.prune(Duration::from_secs(30 * 86_400)), async {
            w.send(rec(key, crate::model::now_ms(), Outcome::Offline))
                .await;
        });
        let pruned = pruned.unwrap().unwrap();
        assert_eq!(pruned.probes, n as u64);
        let taken = crate::ops::metrics::metrics()
            .retention_step
            .get_sample_count()
            - steps;
        // Four batches of probes (the last finds none), one for every other
        // table, and so on: several steps, each timed.
        assert!(taken >= 5, "{taken} steps");
        w.flush().await;
        assert_eq!(count(&db, "SELECT count(*) FROM probes"), 1);
        w.close().await;
        join.join();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_flush_of_many_runs_goes_in_bounded_commits_and_answers_when_all_are_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cw.db");
        let n = 2 * BULK + 1_234;
        let metas: Vec<_> = (0..n)
            .map(|i| crate::store::ConnMeta::bare(&format!("c{i}")))
            .collect();
        let known = super::super::Store::open(&path)
            .unwrap()
            .sync_connections(&metas)
            .unwrap();
        let (w, join) = Writer::start(&path, Duration::from_secs(3600)).unwrap();
        let db = Db::open(&path).unwrap();
        let before = crate::ops::metrics::metrics()
            .writer_batch
            .get_sample_count();
        for i in 0..n {
            w.send(rec(
                known[&format!("c{i}")].key,
                10_000 + i as i64,
                Outcome::Online,
            ))
            .await;
        }
        w.flush().await;
        // Every open run and every rollup is in once the flush answers...
        assert_eq!(count(&db, "SELECT count(*) FROM probe_runs"), n as i64);
        assert_eq!(count(&db, "SELECT sum(count) FROM rollups"), n as i64);
        // ...written in several commits of at most BULK runs and rollups.
        let commits = crate::ops::metrics::metrics()
            .writer_batch
            .get_sample_count()
            - before;
        assert!(commits >= 3, "{commits} commits for {n} runs");
        w.close().await;
        join.join();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn collapses_online_runs_and_writes_changes_with_their_outbox_rows() {
        let (_dir, path, key) = one_connection();
        let (w, join) = Writer::start(&path, Duration::from_secs(3600)).unwrap();
        for i in 0..5 {
            let mut r = rec(key, 1_000 + i, Outcome::Online);
            r.state = Some(state(&format!("held-{i}")));
            w.send(r).await;
        }
        let t = Transition {
            previous: Health::Is(Outcome::Online),
            current: Health::Is(Outcome::Offline),
            at: 2_000,
        };
        let mut r = rec(key, 2_000, Outcome::Offline);
        r.transition = Some((t, 3));
        r.events = vec![
            event(&["s1", "s2"], None),
            event(&["s1"], Some("maintenance")),
        ];
        w.send(r).await;
        w.flush().await;
        let db = Db::open(&path).unwrap();
        // Five online probes became one run row, closed by the offline probe.
        assert_eq!(count(&db, "SELECT count(*) FROM probe_runs"), 1);
        assert_eq!(count(&db, "SELECT count FROM probe_runs"), 5);
        assert_eq!(count(&db, "SELECT first_at FROM probe_runs"), 1_000);
        assert_eq!(count(&db, "SELECT last_at FROM probe_runs"), 1_004);
        assert_eq!(count(&db, "SELECT latency_sum FROM probe_runs"), 10);
        assert_eq!(count(&db, "SELECT count(*) FROM probes"), 1);
        assert_eq!(count(&db, "SELECT count(*) FROM transitions"), 1);
        assert_eq!(count(&db, "SELECT count(*) FROM events"), 2);
        // The suppressed event is recorded without deliveries.
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM events WHERE suppressed = 'maintenance'"
            ),
            1
        );
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM deliveries WHERE state = 'pending'"
            ),
            2
        );
        assert_eq!(
            db.query_row("SELECT health FROM connections", [], |r| r
                .get::<_, String>(0))
                .unwrap(),
            "offline"
        );
        // The held state went out with the urgent record.
        assert_eq!(
            db.query_row("SELECT state FROM connections", [], |r| r
                .get::<_, String>(0))
                .unwrap(),
            "held-4"
        );
        // More online probes: held in memory until a flush, then one more run.
        for i in 0..3 {
            let mut r = rec(key, 3_000 + i, Outcome::Online);
            r.state = Some(state("later"));
            w.send(r).await;
        }
        assert_eq!(count(&db, "SELECT count(*) FROM probe_runs"), 1);
        w.close().await;
        let stats = tokio::task::spawn_blocking(move || join.join())
            .await
            .unwrap();
        assert_eq!(count(&db, "SELECT count(*) FROM probe_runs"), 2);
        assert_eq!(
            db.query_row("SELECT state FROM connections", [], |r| r
                .get::<_, String>(0))
                .unwrap(),
            "later"
        );
        assert_eq!(stats.probes, 9);
        // Rollups: every probe counted once, the failure too.
        assert_eq!(count(&db, "SELECT sum(count) FROM rollups"), 9);
        assert_eq!(count(&db, "SELECT sum(failures) FROM rollups"), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn many_records_share_few_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cw.db");
        let ids: Vec<crate::store::ConnMeta> = (0..100)
            .map(|i| crate::store::ConnMeta::bare(&format!("c{i}")))
            .collect();
        let known = super::super::Store::open(&path)
            .unwrap()
            .sync_connections(&ids)
            .unwrap();
        let (w, join) = Writer::start(&path, Duration::from_secs(3600)).unwrap();
        // 5,000 non-online probes queued back to back.
        for i in 0..5_000i64 {
            let k = known[&format!("c{}", i % 100)].key;
            w.send(rec(k, 10_000 + i, Outcome::Offline)).await;
        }
        w.close().await;
        let stats = tokio::task::spawn_blocking(move || join.join())
            .await
            .unwrap();
        let db = Db::open(&path).unwrap();
        assert_eq!(count(&db, "SELECT count(*) FROM probes"), 5_000);
        assert!(stats.commits < 1_000, "group commit: {stats:?}");
        assert!(stats.max_batch > 1, "{stats:?}");
    }
}
