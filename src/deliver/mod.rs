//! Delivering events: the outbox dispatcher, the retry policy and the sinks.
//!
//! The writer commits each event with one delivery row per subscribed sink
//! (`pending`). The dispatcher wakes when the writer commits new deliveries,
//! at the next due retry, and every [`IDLE_POLL`] (so `connwatch events
//! replay` from another process is picked up); it never spins.
//!
//! Guarantees:
//! - at least once: a delivery is marked `done` only after the sink said so
//!   (2xx, exit 0, written); a crash leaves it `pending`, sent again after
//!   restart with the same event id;
//! - order: for one (sink, connection) pair, nothing is attempted while an
//!   earlier delivery of the pair is pending (head-of-line per pair, not per
//!   sink, so one stuck connection never delays another);
//! - a slow or dead sink never delays another: each sink has its own
//!   concurrency limit ([`PER_SINK`]) and attempts run as their own tasks;
//! - retries back off exponentially with full jitter (first within 2 s,
//!   capped at 10 min) and honour `Retry-After`; an event older than the
//!   sink's `max_age` is `dead` (kept, listed, replayable).
//!
//! Every attempt is recorded in `delivery_attempts` (time, status or error,
//! duration, verdict).

pub mod retry;
pub mod sinks;

use crate::config::{Sink, SinkKind};
use crate::model::{now_ms, UnixMs};
use retry::{Backoff, Verdict};
use rusqlite::{params, Connection as Db};
use sinks::{AttemptResult, Outgoing};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};

/// Attempts in flight per sink.
pub const PER_SINK: usize = 4;
/// Also look for due deliveries this often when nothing wakes the dispatcher.
pub const IDLE_POLL: Duration = Duration::from_secs(2);
/// Pending deliveries read per pass.
const SCAN: i64 = 10_000;
/// A delivery still failing after this many attempts raises `system.error`.
pub const LONG_RETRY: i64 = 8;
/// At most one `system.error` per failing sink in this period, so a dead
/// receiver does not flood the others.
pub const SYSTEM_ERROR_EVERY: Duration = Duration::from_secs(600);

/// A connection that stays unhealthy, for `remind_every`.
struct Reminder {
    out: Outgoing,
    since: Instant,
    sent: u32,
}

/// One delivery to attempt.
struct Due {
    event: i64,
    sink: String,
    attempts: i64,
    at: UnixMs,
    out: Outgoing,
}

/// An attempt's result on its way back.
struct Done {
    event: i64,
    sink: String,
    attempts: i64,
    started: UnixMs,
    result: AttemptResult,
    out: Outgoing,
}

pub struct Dispatcher {
    db: Arc<Mutex<Db>>,
    path: PathBuf,
    sinks: HashMap<String, Arc<Sink>>,
    client: reqwest::Client,
    wake: Arc<Notify>,
    /// Attempts started and not yet recorded: at most [`PER_SINK`] per sink
    /// (`dispatch_due` starts no more).
    in_flight: HashSet<(i64, String)>,
    /// Sinks refused for good (a webhook answered 410 Gone).
    disabled: HashSet<String>,
    /// When each paced sink (Slack) last sent.
    last_sent: HashMap<String, Instant>,
    /// Alertmanager alerts firing now, per (sink, connection), re-sent while
    /// they last.
    firing: HashMap<(String, String), Outgoing>,
    last_resend: Instant,
    /// Unhealthy connections per (sink, connection) for sinks with
    /// `remind_every`.
    reminders: HashMap<(String, String), Reminder>,
    /// When each sink last raised `system.error`.
    last_system_error: HashMap<String, Instant>,
    /// Pending deliveries seen by the last scan (for the status line).
    pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Every attempt is audited.
    audit: Option<crate::ops::audit::Audit>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    shutdown_timeout: Duration,
}

impl Dispatcher {
    /// Opens its own connection to the database. `wake` is notified by the
    /// writer when deliveries are committed.
    pub fn new(
        path: &Path,
        sinks: &[Sink],
        wake: Arc<Notify>,
        shutdown_timeout: Duration,
        pending: Arc<std::sync::atomic::AtomicUsize>,
        audit: Option<crate::ops::audit::Audit>,
    ) -> crate::store::Result<Dispatcher> {
        let store = crate::store::Store::open(path)?;
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let client = sinks::client().map_err(|e| crate::store::StoreError::Io {
            path: "http client".into(),
            source: std::io::Error::other(e),
        })?;
        let mut d = Dispatcher {
            db: Arc::new(Mutex::new(store.db)),
            path: path.to_path_buf(),
            sinks: sinks
                .iter()
                .map(|s| (s.id.clone(), Arc::new(s.clone())))
                .collect(),
            client,
            wake,
            in_flight: HashSet::new(),
            disabled: HashSet::new(),
            last_sent: HashMap::new(),
            firing: HashMap::new(),
            last_resend: Instant::now(),
            reminders: HashMap::new(),
            last_system_error: HashMap::new(),
            pending,
            audit,
            done_tx,
            done_rx,
            shutdown_timeout,
        };
        d.restore_standing();
        Ok(d)
    }

    /// Runs until `shutdown`, then waits (bounded) for attempts in flight.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        // Firing alerts are re-sent at the shortest resend_interval of the
        // Alertmanager sinks.
        let every = self
            .sinks
            .values()
            .filter(|s| s.kind == SinkKind::Alertmanager)
            .map(|s| s.resend_interval)
            .min()
            .unwrap_or(crate::config::DEFAULT_RESEND_INTERVAL);
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1).min(every));
        housekeeping.tick().await;
        loop {
            let next = self.dispatch_due().await;
            let wait = next
                .map(|t| Duration::from_millis((t - now_ms()).max(0) as u64))
                .unwrap_or(IDLE_POLL)
                .min(IDLE_POLL);
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(done) = self.done_rx.recv() => self.record(done).await,
                _ = self.wake.notified() => {}
                _ = housekeeping.tick() => {
                    if self.last_resend.elapsed() >= every {
                        self.last_resend = Instant::now();
                        self.resend_firing().await;
                    }
                    self.send_reminders().await;
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        while !self.in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, self.done_rx.recv()).await {
                Ok(Some(done)) => self.record(done).await,
                _ => {
                    tracing::warn!(
                        left = self.in_flight.len(),
                        "deliveries still in flight at shutdown; they stay pending"
                    );
                    break;
                }
            }
        }
    }

    /// Starts every due delivery that heads its (sink, connection) pair;
    /// returns when the next pending one falls due.
    async fn dispatch_due(&mut self) -> Option<UnixMs> {
        let now = now_ms();
        // Only as many deliveries start as each sink has free slots: with a
        // slow sink and a deep outbox, the rest stay on disk instead of
        // waiting in memory as tasks, and when no sink has room the outbox
        // is not even read (a finished attempt wakes the loop).
        let mut free: HashMap<String, usize> =
            self.sinks.keys().map(|k| (k.clone(), PER_SINK)).collect();
        for (_, sink) in &self.in_flight {
            if let Some(f) = free.get_mut(sink) {
                *f = f.saturating_sub(1);
            }
        }
        if free.values().all(|f| *f == 0) && !self.sinks.is_empty() {
            return None;
        }
        let in_flight = self.in_flight.clone();
        let db = Arc::clone(&self.db);
        let scan = tokio::task::spawn_blocking(move || {
            pending_heads(
                &db.lock().unwrap_or_else(|e| e.into_inner()),
                now,
                &in_flight,
                free,
            )
        })
        .await
        .ok()?;
        let (due, next) = match scan {
            Ok((due, next, pending)) => {
                self.pending
                    .store(pending, std::sync::atomic::Ordering::Relaxed);
                (due, next)
            }
            Err(e) => {
                tracing::error!(component = "dispatcher", error = %e, "cannot read pending deliveries");
                return Some(now + 1_000);
            }
        };
        let mut next = next;
        for d in due {
            let Some(sink) = self.sinks.get(&d.sink).cloned() else {
                self.finish_dead(&d, "sink no longer configured").await;
                continue;
            };
            if self.disabled.contains(&d.sink) {
                self.finish_dead(&d, "sink disabled: the receiver answered 410 Gone")
                    .await;
                continue;
            }
            if now - d.at > sink.max_age.as_millis() as i64 {
                self.finish_dead(&d, "older than max_age").await;
                continue;
            }
            if sink.kind == SinkKind::Slack {
                if let Some(last) = self.last_sent.get(&d.sink) {
                    let gap = last.elapsed();
                    if gap < sinks::slack::MIN_GAP {
                        let later = now + (sinks::slack::MIN_GAP - gap).as_millis() as i64;
                        next = Some(next.map_or(later, |n| n.min(later)));
                        continue;
                    }
                }
                self.last_sent.insert(d.sink.clone(), Instant::now());
            }
            self.start(sink, d);
        }
        next
    }

    fn start(&mut self, sink: Arc<Sink>, d: Due) {
        self.in_flight.insert((d.event, d.sink.clone()));
        let client = self.client.clone();
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            let started = now_ms();
            let result = sinks::send(&sink, &d.out, &client, started).await;
            let _ = tx.send(Done {
                event: d.event,
                sink: d.sink,
                attempts: d.attempts,
                started,
                result,
                out: d.out,
            });
        });
    }

    async fn finish_dead(&mut self, d: &Due, why: &str) {
        tracing::warn!(component = "dispatcher", event_id = %d.out.id, sink = %d.sink, why, "delivery dead");
        let result = AttemptResult {
            verdict: Verdict::Dead,
            status: None,
            error: Some(why.to_string()),
            duration: Duration::ZERO,
            skipped: false,
        };
        let done = Done {
            event: d.event,
            sink: d.sink.clone(),
            attempts: d.attempts,
            started: now_ms(),
            result,
            out: d.out.clone(),
        };
        self.in_flight.insert((d.event, d.sink.clone()));
        self.record(done).await;
    }

    /// Records an attempt and moves the delivery on.
    async fn record(&mut self, done: Done) {
        self.in_flight.remove(&(done.event, done.sink.clone()));
        let Some(sink) = self.sinks.get(&done.sink).cloned() else {
            return;
        };
        let n = done.attempts + 1;
        let (state, next_at) = match &done.result.verdict {
            Verdict::Done => ("done", done.started),
            Verdict::Dead => ("dead", done.started),
            Verdict::Retry { retry_after } => {
                let wait =
                    Backoff::new(sink.retry_max).wait(n as u32, fastrand::f64(), *retry_after);
                ("pending", done.started + wait.as_millis() as i64)
            }
        };
        match (&done.result.verdict, state) {
            (Verdict::Done, _) => {
                if !done.result.skipped {
                    tracing::debug!(component = "dispatcher", event_id = %done.out.id, sink = %done.sink, attempts = n, "delivered");
                }
                self.track_firing(&sink, &done.out);
                self.track_reminder(&sink, &done.out);
            }
            (Verdict::Dead, _) if !done.result.skipped => {
                let err = done.result.error.as_deref().unwrap_or("");
                tracing::warn!(component = "dispatcher", event_id = %done.out.id, sink = %done.sink, attempts = n, error = err, "delivery refused for good; dead");
                let why = format!(
                    "delivery of {} ({}) to sink {} is dead: {err}",
                    done.out.id, done.out.kind, done.sink
                );
                self.system_error(&done.sink, &done.out, why).await;
                if sink.kind == SinkKind::Webhook && done.result.status == Some(410) {
                    tracing::error!(component = "dispatcher", sink = %done.sink, "the receiver answered 410 Gone: sink disabled until restart");
                    self.disabled.insert(done.sink.clone());
                }
            }
            (Verdict::Retry { .. }, _) => {
                let err = done.result.error.as_deref().unwrap_or("");
                tracing::info!(component = "dispatcher", event_id = %done.out.id, sink = %done.sink, attempts = n, error = err, retry_at = %crate::model::rfc3339(next_at), "delivery failed; will retry");
                if n == LONG_RETRY {
                    let why = format!(
                        "delivery of {} to sink {} has failed {n} times, still retrying: {err}",
                        done.out.id, done.sink
                    );
                    self.system_error(&done.sink, &done.out, why).await;
                }
            }
            _ => {}
        }
        let db = Arc::clone(&self.db);
        let path = self.path.clone();
        let r = done.result.clone();
        let (event, sink_id, started) = (done.event, done.sink.clone(), done.started);
        let verdict = match r.verdict {
            Verdict::Done if r.skipped => "skipped",
            Verdict::Done => "done",
            Verdict::Retry { .. } => "retry",
            Verdict::Dead => "dead",
        };
        crate::ops::metrics::metrics().delivery(&sink_id, verdict);
        let res = tokio::task::spawn_blocking(move || -> rusqlite::Result<()> {
            let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
            let tx = db.transaction()?;
            tx.execute(
                "UPDATE deliveries SET attempts = attempts + 1, state = ?3, next_at = ?4, last_error = ?5 WHERE event = ?1 AND sink = ?2",
                params![event, sink_id, state, next_at, r.error],
            )?;
            tx.execute(
                "INSERT INTO delivery_attempts (event, sink, at, status, error, duration_ms, verdict) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![event, sink_id, started, r.status, r.error, r.duration.as_millis() as i64, verdict],
            )?;
            tx.commit()
        })
        .await;
        if let Some(a) = &self.audit {
            a.record(
                "delivery_attempt",
                serde_json::json!({"event_id": done.out.id, "type": done.out.kind, "connection_id": done.out.connection_id,
                    "sink": done.sink, "attempt": n, "verdict": verdict, "status": done.result.status,
                    "error": done.result.error, "duration_ms": done.result.duration.as_millis() as u64}),
            );
        }
        if let Ok(Err(e)) = res {
            // The delivery stays as it was (pending): sent again, at least once.
            tracing::error!(component = "dispatcher", error = %crate::store::sq(&path, e), "cannot record a delivery attempt");
        }
    }

    /// Keeps the set of firing Alertmanager alerts up to date.
    fn track_firing(&mut self, sink: &Sink, out: &Outgoing) {
        if sink.kind != SinkKind::Alertmanager {
            return;
        }
        let (Some(conn), Some(current)) = (out.connection_id.clone(), sinks::current_health(out))
        else {
            return;
        };
        let key = (sink.id.clone(), conn);
        if current == "online" {
            self.firing.remove(&key);
        } else if sinks::alertmanager::payload(out, &sink.labels, 0).is_some() {
            self.firing.insert(key, out.clone());
        }
    }

    /// Keeps the reminders of sinks with `remind_every` up to date.
    fn track_reminder(&mut self, sink: &Sink, out: &Outgoing) {
        if sink.remind_every.is_none() {
            return;
        }
        let (Some(conn), Some(current)) = (out.connection_id.clone(), sinks::current_health(out))
        else {
            return;
        };
        let key = (sink.id.clone(), conn);
        if matches!(
            current,
            "offline" | "unreachable" | "invalid" | "auth_required"
        ) {
            self.reminders.insert(
                key,
                Reminder {
                    out: out.clone(),
                    since: Instant::now(),
                    sent: 0,
                },
            );
        } else {
            self.reminders.remove(&key);
        }
    }

    /// Re-sends the last status event of a connection that stays unhealthy,
    /// every `remind_every`, as `<event id>-r<n>` with `data.reminder = n`
    /// (a new id, so receivers that drop duplicate ids still see it).
    async fn send_reminders(&mut self) {
        let now = now_ms();
        let mut due = Vec::new();
        for ((sink_id, conn), r) in &self.reminders {
            let Some(sink) = self.sinks.get(sink_id) else {
                continue;
            };
            let Some(every) = sink.remind_every else {
                continue;
            };
            if r.since.elapsed() >= every * (r.sent + 1) {
                due.push((sink_id.clone(), conn.clone()));
            }
        }
        for key in due {
            let Some(sink) = self.sinks.get(&key.0).cloned() else {
                continue;
            };
            let Some(r) = self.reminders.get_mut(&key) else {
                continue;
            };
            r.sent += 1;
            let mut envelope = r.out.envelope.clone();
            let id = format!("{}-r{}", r.out.id, r.sent);
            envelope["id"] = serde_json::json!(id);
            envelope["data"]["reminder"] = serde_json::json!(r.sent);
            let body = envelope.to_string();
            let out = Outgoing {
                id,
                kind: r.out.kind.clone(),
                connection_id: r.out.connection_id.clone(),
                body,
                envelope,
            };
            let res = sinks::send(&sink, &out, &self.client, now).await;
            if res.verdict != Verdict::Done {
                tracing::warn!(component = "dispatcher", sink = %key.0, error = res.error.as_deref().unwrap_or(""), "reminder not accepted");
            }
        }
    }

    /// Raises `system.error` (connection_id null) to every other sink that
    /// takes it, at most once per failing sink per [`SYSTEM_ERROR_EVERY`];
    /// never about a `system.error` itself.
    async fn system_error(&mut self, failing: &str, about: &Outgoing, message: String) {
        if about.kind == "system.error" {
            return;
        }
        if self
            .last_system_error
            .get(failing)
            .is_some_and(|t| t.elapsed() < SYSTEM_ERROR_EVERY)
        {
            return;
        }
        self.last_system_error
            .insert(failing.to_string(), Instant::now());
        tracing::error!(component = "dispatcher", sink = failing, "{message}");
        let now = now_ms();
        let env = crate::event::Envelope::new(
            "system.error",
            now,
            None,
            serde_json::json!({"component": "delivery", "sink": failing, "event_id": about.id, "message": message}),
        );
        let targets: Vec<String> = self
            .sinks
            .values()
            .filter(|s| {
                s.id != failing
                    && !self.disabled.contains(&s.id)
                    && crate::event::filter_matches(&s.events, "system.error")
            })
            .map(|s| s.id.clone())
            .collect();
        let db = Arc::clone(&self.db);
        let res = tokio::task::spawn_blocking(move || {
            let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
            crate::store::outbox::insert_event(&mut db, &env, now, &targets)
        })
        .await;
        if let Ok(Err(e)) = res {
            tracing::error!(component = "dispatcher", error = %e, "cannot record system.error");
        }
        self.wake.notify_one();
    }

    /// Re-sends firing alerts so Alertmanager does not resolve them itself.
    async fn resend_firing(&mut self) {
        let now = now_ms();
        for ((sink_id, _), out) in self.firing.clone() {
            let Some(sink) = self.sinks.get(&sink_id).cloned() else {
                continue;
            };
            let r = sinks::send(&sink, &out, &self.client, now).await;
            if r.verdict != Verdict::Done {
                tracing::warn!(component = "dispatcher", sink = %sink_id, error = r.error.as_deref().unwrap_or(""), "re-sending a firing alert failed");
            }
        }
    }

    /// After a restart: the Alertmanager alerts still firing and the
    /// reminders still due, from each sink's last delivered status event.
    fn restore_standing(&mut self) {
        let sinks: Vec<Arc<Sink>> = self
            .sinks
            .values()
            .filter(|s| s.kind == SinkKind::Alertmanager || s.remind_every.is_some())
            .cloned()
            .collect();
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        for sink in sinks {
            let rows = db
                .prepare(
                    "SELECT e.id, e.type, c.id, e.envelope FROM events e JOIN connections c ON c.key = e.conn
                     WHERE e.seq IN (SELECT max(d.event) FROM deliveries d JOIN events x ON x.seq = d.event
                                     WHERE d.sink = ?1 AND d.state = 'done' AND x.type = 'connection.status_changed'
                                     GROUP BY x.conn)",
                )
                .and_then(|mut s| s.query_map([&sink.id], row_to_outgoing)?.collect::<rusqlite::Result<Vec<Outgoing>>>());
            for out in rows.unwrap_or_default() {
                let Some(conn) = out.connection_id.clone() else {
                    continue;
                };
                let health = sinks::current_health(&out).unwrap_or("online");
                if sink.remind_every.is_some()
                    && matches!(
                        health,
                        "offline" | "unreachable" | "invalid" | "auth_required"
                    )
                {
                    let r = Reminder {
                        out: out.clone(),
                        since: Instant::now(),
                        sent: 0,
                    };
                    self.reminders.insert((sink.id.clone(), conn.clone()), r);
                }
                if sink.kind == SinkKind::Alertmanager && health != "online" {
                    self.firing.insert((sink.id.clone(), conn), out);
                }
            }
        }
    }
}

fn row_to_outgoing(r: &rusqlite::Row<'_>) -> rusqlite::Result<Outgoing> {
    let body: String = r.get(3)?;
    Ok(Outgoing {
        id: r.get(0)?,
        kind: r.get(1)?,
        connection_id: r.get(2)?,
        envelope: serde_json::from_str(&body).unwrap_or_default(),
        body,
    })
}

/// The pending deliveries that head their (sink, connection) pair and are
/// due, not counting those in flight; and when the next one falls due.
fn pending_heads(
    db: &Db,
    now: UnixMs,
    in_flight: &HashSet<(i64, String)>,
    mut free: HashMap<String, usize>,
) -> rusqlite::Result<(Vec<Due>, Option<UnixMs>, usize)> {
    let mut s = db.prepare_cached(
        "SELECT d.event, d.sink, d.next_at, e.conn FROM deliveries d JOIN events e ON e.seq = d.event
         WHERE d.state = 'pending' ORDER BY d.event LIMIT ?1",
    )?;
    let rows: Vec<(i64, String, i64, Option<i64>)> = s
        .query_map([SCAN], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let pending = rows.len();
    let mut seen: HashSet<(String, Option<i64>)> = HashSet::new();
    let mut heads = Vec::new();
    let mut next: Option<UnixMs> = None;
    for (event, sink, next_at, conn) in rows {
        if !seen.insert((sink.clone(), conn)) {
            continue; // an earlier delivery of the pair is pending
        }
        if in_flight.contains(&(event, sink.clone())) {
            continue;
        }
        if next_at <= now {
            // A sink no longer configured has no entry: its deliveries are
            // started, and finished as dead.
            match free.get_mut(&sink) {
                Some(0) => {}
                Some(f) => {
                    *f -= 1;
                    heads.push((event, sink));
                }
                None => heads.push((event, sink)),
            }
        } else {
            next = Some(next.map_or(next_at, |n| n.min(next_at)));
        }
    }
    let mut get = db.prepare_cached(
        "SELECT e.id, e.type, c.id, e.envelope, e.at, d.attempts FROM events e LEFT JOIN connections c ON c.key = e.conn
         JOIN deliveries d ON d.event = e.seq AND d.sink = ?2 WHERE e.seq = ?1",
    )?;
    let mut due = Vec::with_capacity(heads.len());
    for (event, sink) in heads {
        let (out, at, attempts) = get.query_row(params![event, sink], |r| {
            Ok((row_to_outgoing(r)?, r.get(4)?, r.get(5)?))
        })?;
        due.push(Due {
            event,
            sink,
            attempts,
            at,
            out,
        });
    }
    Ok((due, next, pending))
}
