//! Delivering events: the outbox dispatcher and the retry policy. What a
//! sink sends is its kind's business ([`crate::sinks`]); who gets what was
//! decided by the policy ([`crate::policy`]) when the event was stored.
//!
//! Each sink is a *lane*: its own queue in the outbox, read from indexes
//! (never by scanning the outbox), its own limit of requests in flight
//! (the sink's `concurrency`, else its kind's default), its own pace.
//! The dispatcher's loop only decides and starts; every request (a
//! delivery, a re-send of open incidents, a reminder) runs as a task of its
//! own and takes one of its lane's slots. So a sink that hangs fills its
//! own slots and holds up nothing else.
//!
//! The dispatcher wakes when the writer commits new deliveries, when an
//! attempt finishes, when the next retry or chat window falls due, and
//! every [`IDLE_POLL`] (so `connwatch events replay` from another process
//! is picked up); it never spins.
//!
//! Guarantees:
//! - at least once: a delivery is marked `done` only after the sink said so
//!   (2xx, exit 0, written); a crash leaves it `pending`, sent again after
//!   restart with the same event id;
//! - order: for one (sink, connection) pair, nothing is attempted while an
//!   earlier delivery of the pair is pending (head of line per pair, not
//!   per sink);
//! - fresh news first: among the heads of a sink's pairs, triggers go
//!   before resolves, resolves before the rest, then the oldest first;
//! - chat sinks send the heads of a `group_wait` window as one message;
//! - retries back off exponentially with full jitter (first within 2 s,
//!   capped at `retry_max`) and honour `Retry-After`; an event older than
//!   the sink's `max_age` is `dead` (kept, listed, replayable).
//!
//! Every attempt is recorded in `delivery_attempts` (time, status or error,
//! duration, verdict) and in the audit log.

pub mod retry;

use crate::config::Sink;
use crate::event::{Envelope, EventKind, Outgoing};
use crate::model::{now_ms, UnixMs};
use crate::policy::route::{system_deliveries, SinkPolicy};
use crate::policy::{group, PageAction, Severity, SinkClass};
use crate::sinks::{AttemptResult, Cx, Item};
use crate::store::outbox::{self, Attempt, Due, Order};
use retry::{Backoff, Verdict};
use rusqlite::Connection as Db;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};

/// Also look for due deliveries this often when nothing wakes the dispatcher.
pub const IDLE_POLL: Duration = Duration::from_secs(2);
/// Open incidents and reminders are looked at this often.
pub const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// The outbox's pending count (for the status line) is read this often.
const COUNT_EVERY: Duration = Duration::from_secs(1);
/// A delivery still failing after this many attempts raises `system.error`.
pub const LONG_RETRY: i64 = 8;
/// At most one `system.error` per failing sink in this period, so a dead
/// receiver does not flood the others.
pub const SYSTEM_ERROR_EVERY: Duration = Duration::from_secs(600);

/// A connection that stays unhealthy, for `remind_every`.
struct Reminder {
    item: Item,
    since: Instant,
    sent: u32,
}

/// One sink's queue, slots and memory.
struct Lane {
    sink: Arc<Sink>,
    /// Requests in flight: deliveries, re-sends, reminders.
    busy: usize,
    /// Deliveries in flight, by event row (still pending in the database).
    in_flight: HashSet<i64>,
    /// When the last request started (for the kind's pace).
    last_sent: Option<Instant>,
    /// Refused for good until restart (a 410 Gone), and why.
    gone: Option<&'static str>,
    /// Open incidents per connection, re-sent while they last (kinds with
    /// `resend_every`).
    firing: BTreeMap<String, Item>,
    last_resend: Instant,
    resending: bool,
    /// Deliveries in flight per connection: a re-send leaves these
    /// connections out, so it cannot carry an alert as firing past its
    /// resolve.
    delivering: HashMap<String, usize>,
    /// The connections the re-send in flight carries: their next delivery
    /// waits for it, so a resolve cannot be overtaken by an older firing.
    resend_conns: HashSet<String>,
    /// The same for the reminders in flight.
    remind_conns: HashSet<String>,
    /// When the last keep-alive started (kinds with one).
    last_keepalive: Option<Instant>,
    keeping_alive: bool,
    /// Unhealthy connections (sinks with `remind_every`).
    reminders: HashMap<String, Reminder>,
    reminding: bool,
    /// The last read of this lane's queue found every due head (fewer than
    /// it asked for): nothing more is due before this time (the next retry,
    /// at most IDLE_POLL away, or sooner if a failed attempt's retry falls
    /// due first) unless new deliveries are stored or a delivery of the
    /// lane ends (a retry does not free its connection's next one). While a receiver is
    /// down, each failed attempt would otherwise walk the whole backlog
    /// of not-yet-due heads again.
    quiet_until: Option<UnixMs>,
}

impl Lane {
    fn free(&self) -> usize {
        self.sink.concurrency.saturating_sub(self.busy)
    }
}

/// What a request was for.
enum Job {
    Deliver(Vec<Due>),
    Resend,
    Remind,
    Keepalive,
}

/// A request's result on its way back.
struct Done {
    lane: usize,
    job: Job,
    started: UnixMs,
    result: AttemptResult,
}

pub struct Dispatcher {
    db: Arc<Mutex<Db>>,
    path: PathBuf,
    lanes: Vec<Lane>,
    /// Every sink as the policy sees it (`system.error` routing).
    policies: Vec<SinkPolicy>,
    client: reqwest::Client,
    /// Connections' names and pages, for chat sinks.
    dir: Arc<crate::sinks::Directory>,
    wake: Arc<Notify>,
    /// When each sink last raised `system.error`.
    last_system_error: HashMap<String, Instant>,
    /// Pending deliveries (for the status line).
    pending: Arc<std::sync::atomic::AtomicUsize>,
    last_count: Option<Instant>,
    /// Every attempt is audited.
    audit: Option<crate::ops::audit::Audit>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    shutdown_timeout: Duration,
    /// `[daemon] instance`, for the envelopes it makes.
    instance: String,
    /// This daemon, for keep-alives.
    who: Arc<crate::sinks::Who>,
    /// Keep-alives are sent only while the engine and the writer beat.
    liveness: crate::ops::notify::Liveness,
}

impl Dispatcher {
    /// Opens its own connection to the database. `wake` is notified by the
    /// writer when deliveries are committed.
    pub fn new(
        config: &crate::config::Config,
        wake: Arc<Notify>,
        liveness: crate::ops::notify::Liveness,
        audit: Option<crate::ops::audit::Audit>,
    ) -> crate::store::Result<Dispatcher> {
        let pending = Arc::clone(&liveness.pending_deliveries);
        let path = config.daemon.database.as_path();
        let sinks = &config.sinks;
        let mut store = crate::store::Store::open(path)?;
        let client = crate::sinks::http::client().map_err(|e| crate::store::StoreError::Io {
            path: "http client".into(),
            source: std::io::Error::other(e),
        })?;
        let ids: Vec<&str> = sinks.iter().map(|s| s.id.as_str()).collect();
        for id in &ids {
            crate::ops::metrics::metrics().sink_known(id);
        }
        match outbox::bury_unconfigured(&mut store.db, &ids, now_ms()) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                component = "dispatcher",
                deliveries = n,
                "pending deliveries to sinks no longer configured are dead"
            ),
            Err(e) => {
                tracing::error!(component = "dispatcher", error = %crate::store::sq(path, e), "cannot bury deliveries of removed sinks")
            }
        }
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut d = Dispatcher {
            db: Arc::new(Mutex::new(store.db)),
            path: path.to_path_buf(),
            lanes: sinks
                .iter()
                .map(|s| Lane {
                    sink: Arc::new(s.clone()),
                    busy: 0,
                    in_flight: HashSet::new(),
                    last_sent: None,
                    gone: None,
                    firing: BTreeMap::new(),
                    last_resend: Instant::now(),
                    resending: false,
                    last_keepalive: None,
                    keeping_alive: false,
                    delivering: HashMap::new(),
                    resend_conns: HashSet::new(),
                    remind_conns: HashSet::new(),
                    reminders: HashMap::new(),
                    reminding: false,
                    quiet_until: None,
                })
                .collect(),
            policies: sinks.iter().map(Sink::policy).collect(),
            client,
            dir: Arc::new(crate::sinks::Directory::of(config)),
            wake,
            last_system_error: HashMap::new(),
            pending,
            last_count: None,
            audit,
            done_tx,
            done_rx,
            shutdown_timeout: config.daemon.shutdown_timeout,
            instance: config.daemon.instance.clone(),
            who: Arc::new(crate::sinks::Who {
                instance: config.daemon.instance.clone(),
                shard: config.daemon.shard.to_string(),
            }),
            liveness,
        };
        d.restore_standing();
        Ok(d)
    }

    /// Runs until `shutdown`, then waits (bounded) for requests in flight.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        housekeeping.tick().await;
        // Whether the queues are read again before waiting: not after a
        // housekeeping tick, which changes nothing in them.
        let mut look = true;
        let mut until = tokio::time::Instant::now();
        loop {
            if look {
                let next = self.dispatch_due().await;
                let wait = next
                    .map(|t| Duration::from_millis((t - now_ms()).max(0) as u64))
                    .unwrap_or(IDLE_POLL)
                    .min(IDLE_POLL);
                until = tokio::time::Instant::now() + wait;
            }
            look = true;
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(done) = self.done_rx.recv() => self.record(done).await,
                // New deliveries were stored (or replayed): every lane reads
                // its queue again.
                _ = self.wake.notified() => {
                    for lane in &mut self.lanes {
                        lane.quiet_until = None;
                    }
                }
                _ = housekeeping.tick() => {
                    self.housekeeping();
                    look = false;
                }
                _ = tokio::time::sleep_until(until) => {}
            }
        }
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        while self.lanes.iter().any(|l| l.busy > 0) {
            match tokio::time::timeout_at(deadline, self.done_rx.recv()).await {
                Ok(Some(done)) => self.record(done).await,
                _ => {
                    let left: usize = self.lanes.iter().map(|l| l.busy).sum();
                    tracing::warn!(
                        left,
                        "requests to sinks still in flight at shutdown; their deliveries stay pending"
                    );
                    break;
                }
            }
        }
    }

    /// Starts what each lane has room for; returns when to look again.
    async fn dispatch_due(&mut self) -> Option<UnixMs> {
        let now = now_ms();
        let mut next: Option<UnixMs> = None;
        // What each lane with a free slot asks of its queue.
        let mut asks: Vec<(usize, String, Order, usize)> = Vec::new();
        for (i, lane) in self.lanes.iter().enumerate() {
            let free = lane.free();
            if free == 0 {
                continue;
            }
            if let Some(t) = lane.quiet_until.filter(|t| now < *t) {
                soonest(t, &mut next);
                continue;
            }
            if let (Some(pace), Some(last)) = (lane.sink.imp.pace(), lane.last_sent) {
                let gap = last.elapsed();
                if gap < pace {
                    soonest(now + (pace - gap).as_millis() as i64, &mut next);
                    continue;
                }
            }
            let (order, limit) = match lane.sink.imp.class() {
                SinkClass::Chat { .. } => (Order::Time, group::MAX_GROUP),
                _ => (
                    Order::Priority,
                    free * lane.sink.imp.max_batch() + lane.in_flight.len(),
                ),
            };
            asks.push((i, lane.sink.id.clone(), order, limit));
        }
        let count = self.last_count.is_none_or(|t| t.elapsed() >= COUNT_EVERY);
        if asks.is_empty() && !count {
            // Every lane is full or paced: nothing could start, and a
            // finished request wakes the loop. The outbox is not read.
            return next;
        }
        let db = Arc::clone(&self.db);
        let wanted: Vec<(String, Order, usize)> = asks
            .iter()
            .map(|(_, s, o, l)| (s.clone(), *o, *l))
            .collect();
        type Read = (Vec<Vec<Due>>, Option<UnixMs>, Option<i64>);
        let read = tokio::task::spawn_blocking(move || -> rusqlite::Result<Read> {
            let db = db.lock().unwrap_or_else(|e| e.into_inner());
            let mut heads = Vec::with_capacity(wanted.len());
            for (sink, order, limit) in &wanted {
                heads.push(outbox::due_heads(&db, sink, now, *order, *limit)?);
            }
            let retry = outbox::next_retry(&db, now)?;
            let pending = if count {
                Some(outbox::pending_count(&db)?)
            } else {
                None
            };
            Ok((heads, retry, pending))
        })
        .await;
        let (heads, retry, pending) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!(component = "dispatcher", error = %crate::store::sq(&self.path, e), "cannot read pending deliveries");
                return Some(now + 1_000);
            }
            Err(_) => return Some(now + 1_000),
        };
        if let Some(p) = pending {
            self.last_count = Some(Instant::now());
            self.pending
                .store(p as usize, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(t) = retry {
            soonest(t, &mut next);
        }
        for ((li, _, _, limit), heads) in asks.into_iter().zip(heads) {
            let lane = &mut self.lanes[li];
            // At most IDLE_POLL: a replay from another process sets
            // deliveries due without waking this one.
            let poll = now + IDLE_POLL.as_millis() as i64;
            lane.quiet_until = (heads.len() < limit
                && !matches!(lane.sink.imp.class(), SinkClass::Chat { .. }))
            .then(|| retry.map_or(poll, |r| r.min(poll)));
            let lane = &self.lanes[li];
            let max_age = lane.sink.max_age.as_millis() as i64;
            let gone = lane.gone;
            let mut alive = Vec::with_capacity(heads.len());
            let mut dead = Vec::new();
            for d in heads {
                if lane.in_flight.contains(&d.event) {
                    continue;
                }
                // Waits for the re-send that carries its connection (a
                // finished request wakes the loop).
                if d.out
                    .connection_id
                    .as_ref()
                    .is_some_and(|c| lane.resend_conns.contains(c) || lane.remind_conns.contains(c))
                {
                    continue;
                }
                match gone {
                    Some(why) => dead.push((d, format!("sink disabled: {why}"))),
                    None if now - d.at > max_age => dead.push((d, "older than max_age".into())),
                    None => alive.push(d),
                }
            }
            if !dead.is_empty() {
                // Their connections' next deliveries may be due now.
                self.lanes[li].quiet_until = None;
            }
            for (d, why) in dead {
                tracing::warn!(component = "dispatcher", event_id = %d.out.id, sink = %self.lanes[li].sink.id, why, "delivery dead");
                let result = AttemptResult::failed(Verdict::Dead, None, why, Duration::ZERO);
                self.settle(li, vec![d], now, result).await;
            }
            let lane = &self.lanes[li];
            match lane.sink.imp.class() {
                SinkClass::Chat { group_wait } => {
                    let times: Vec<UnixMs> = alive.iter().map(|d| d.at).collect();
                    match group::cut(&times, now, group_wait) {
                        Ok(0) => {}
                        Ok(n) => {
                            alive.truncate(n);
                            self.start(li, Job::Deliver(alive));
                        }
                        Err(closes) => soonest(closes, &mut next),
                    }
                }
                _ => {
                    let batch = lane.sink.imp.max_batch().max(1);
                    let mut free = lane.free();
                    let mut rest = alive.into_iter().peekable();
                    while free > 0 && rest.peek().is_some() {
                        let chunk: Vec<Due> = rest.by_ref().take(batch).collect();
                        self.start(li, Job::Deliver(chunk));
                        free -= 1;
                    }
                }
            }
        }
        next
    }

    /// Sends `job` on lane `li` as a task of its own.
    fn start(&mut self, li: usize, job: Job) {
        let lane = &mut self.lanes[li];
        let items: Vec<Item> = match &job {
            Job::Deliver(dues) => dues
                .iter()
                .map(|d| {
                    lane.in_flight.insert(d.event);
                    if let Some(c) = &d.out.connection_id {
                        *lane.delivering.entry(c.clone()).or_default() += 1;
                    }
                    Item {
                        out: d.out.clone(),
                        action: d.action,
                    }
                })
                .collect(),
            Job::Resend => {
                let carried: Vec<Item> = lane
                    .firing
                    .iter()
                    .filter(|(conn, _)| !lane.delivering.contains_key(*conn))
                    .map(|(_, it)| it.clone())
                    .collect();
                lane.resend_conns = lane
                    .firing
                    .keys()
                    .filter(|conn| !lane.delivering.contains_key(*conn))
                    .cloned()
                    .collect();
                carried
            }
            Job::Remind => {
                let due = reminders_due(lane);
                lane.remind_conns = due
                    .iter()
                    .filter_map(|it| it.out.connection_id.clone())
                    .collect();
                due
            }
            Job::Keepalive => Vec::new(),
        };
        lane.busy += 1;
        lane.last_sent = Some(Instant::now());
        let sink = Arc::clone(&lane.sink);
        let client = self.client.clone();
        let dir = Arc::clone(&self.dir);
        let tx = self.done_tx.clone();
        let who = Arc::clone(&self.who);
        let keepalive = matches!(job, Job::Keepalive);
        tokio::spawn(async move {
            let started = now_ms();
            let cx = Cx {
                client: &client,
                now: started,
                timeout: sink.timeout,
                dir: &dir,
            };
            if keepalive {
                let result = match sink.imp.keepalive(&who, cx) {
                    Some(f) => f.await,
                    None => AttemptResult::skipped(),
                };
                let _ = tx.send(Done {
                    lane: li,
                    job,
                    started,
                    result,
                });
                return;
            }
            // One request, or (re-sends, reminders) one per batch in turn:
            // the last refusal, if any, is what is reported.
            let mut result = AttemptResult::skipped();
            for chunk in items.chunks(sink.imp.max_batch().max(1)) {
                let r = sink.imp.send(chunk, cx).await;
                if result.verdict == Verdict::Done {
                    result = r;
                }
            }
            let _ = tx.send(Done {
                lane: li,
                job,
                started,
                result,
            });
        });
    }

    /// Takes a finished request back.
    async fn record(&mut self, done: Done) {
        let lane = &mut self.lanes[done.lane];
        lane.busy = lane.busy.saturating_sub(1);
        // A delivery that ended frees its connection's next one, and a
        // re-send or reminder frees the deliveries that waited for it: read
        // the queue again. A retry changes nothing that is due.
        if !matches!(
            (&done.job, &done.result.verdict),
            (Job::Deliver(_), Verdict::Retry { .. })
        ) {
            lane.quiet_until = None;
        }
        let failed = done.result.verdict != Verdict::Done;
        let error = done.result.error.as_deref().unwrap_or("");
        match done.job {
            Job::Resend => {
                lane.resending = false;
                lane.resend_conns.clear();
                if failed {
                    tracing::warn!(component = "dispatcher", sink = %lane.sink.id, error, "re-sending open incidents failed");
                }
            }
            Job::Keepalive => {
                lane.keeping_alive = false;
                if failed {
                    tracing::warn!(component = "dispatcher", sink = %lane.sink.id, error, "the watchdog alert was not accepted");
                }
            }
            Job::Remind => {
                lane.reminding = false;
                lane.remind_conns.clear();
                if failed {
                    tracing::warn!(component = "dispatcher", sink = %lane.sink.id, error, "reminder not accepted");
                }
            }
            Job::Deliver(dues) => {
                for d in &dues {
                    lane.in_flight.remove(&d.event);
                    if let Some(c) = &d.out.connection_id {
                        if let Some(n) = lane.delivering.get_mut(c) {
                            *n -= 1;
                            if *n == 0 {
                                lane.delivering.remove(c);
                            }
                        }
                    }
                }
                self.settle(done.lane, dues, done.started, done.result)
                    .await;
            }
        }
    }

    /// Records an attempt at `dues` (one request) and moves them on.
    async fn settle(&mut self, li: usize, dues: Vec<Due>, started: UnixMs, r: AttemptResult) {
        let sink = Arc::clone(&self.lanes[li].sink);
        let n = dues.iter().map(|d| d.attempts).max().unwrap_or(0) + 1;
        let (state, next_at) = match &r.verdict {
            Verdict::Done => ("done", started),
            Verdict::Dead => ("dead", started),
            Verdict::Retry { retry_after } => {
                let wait =
                    Backoff::new(sink.retry_max).wait(n as u32, fastrand::f64(), *retry_after);
                ("pending", started + wait.as_millis() as i64)
            }
        };
        if state == "pending" {
            // A quiet lane wakes for this retry if it falls due first.
            let lane = &mut self.lanes[li];
            lane.quiet_until = lane.quiet_until.map(|q| q.min(next_at));
        }
        let err = r.error.as_deref().unwrap_or("");
        match &r.verdict {
            Verdict::Done => {
                for d in &dues {
                    if !r.skipped {
                        tracing::debug!(component = "dispatcher", event_id = %d.out.id, sink = %sink.id, attempts = n, "delivered");
                    }
                    let item = Item {
                        out: d.out.clone(),
                        action: d.action,
                    };
                    track(&mut self.lanes[li], item, Instant::now());
                }
            }
            Verdict::Dead if !r.skipped => {
                tracing::warn!(component = "dispatcher", sink = %sink.id, deliveries = dues.len(), attempts = n, error = err, "delivery refused for good; dead");
                if let Some(d) = dues.first() {
                    let why = format!(
                        "delivery of {} ({}) to sink {} is dead: {err}",
                        d.out.id, d.out.kind, sink.id
                    );
                    self.system_error(li, &d.out, why).await;
                }
                if let Some(why) = sink.imp.gone(&r) {
                    tracing::error!(component = "dispatcher", sink = %sink.id, "{why}: sink disabled until restart");
                    self.lanes[li].gone = Some(why);
                }
            }
            Verdict::Retry { .. } => {
                tracing::info!(component = "dispatcher", sink = %sink.id, deliveries = dues.len(), attempts = n, error = err, retry_at = %crate::model::rfc3339(next_at), "delivery failed; will retry");
                if let (true, Some(d)) = (n == LONG_RETRY, dues.first()) {
                    let why = format!(
                        "delivery of {} to sink {} has failed {n} times, still retrying: {err}",
                        d.out.id, sink.id
                    );
                    self.system_error(li, &d.out, why).await;
                }
            }
            _ => {}
        }
        let verdict = match r.verdict {
            Verdict::Done if r.skipped => "skipped",
            Verdict::Done => "done",
            Verdict::Retry { .. } => "retry",
            Verdict::Dead => "dead",
        };
        for _ in &dues {
            crate::ops::metrics::metrics().delivery(&sink.id, verdict);
        }
        if let Some(a) = &self.audit {
            for d in &dues {
                a.record(
                    "delivery_attempt",
                    serde_json::json!({"event_id": d.out.id, "type": d.out.kind, "connection_id": d.out.connection_id,
                        "sink": sink.id, "attempt": d.attempts + 1, "verdict": verdict, "status": r.status,
                        "error": r.error, "duration_ms": r.duration.as_millis() as u64}),
                );
            }
        }
        let db = Arc::clone(&self.db);
        let sink_id = sink.id.clone();
        let moves: Vec<(i64, &'static str, UnixMs)> =
            dues.iter().map(|d| (d.event, state, next_at)).collect();
        let res = tokio::task::spawn_blocking(move || {
            let attempt = Attempt {
                started,
                status: r.status,
                error: r.error.as_deref(),
                duration_ms: r.duration.as_millis() as i64,
                verdict,
            };
            let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
            outbox::record_attempts(&mut db, &sink_id, &moves, &attempt)
        })
        .await;
        if let Ok(Err(e)) = res {
            // The deliveries stay as they were (pending): sent again, at
            // least once.
            tracing::error!(component = "dispatcher", error = %crate::store::sq(&self.path, e), "cannot record a delivery attempt");
        }
    }

    /// Starts the re-sends and reminders that are due, each as a request
    /// on its lane (when the lane has a free slot).
    fn housekeeping(&mut self) {
        for li in 0..self.lanes.len() {
            let lane = &self.lanes[li];
            if lane.gone.is_some() {
                continue;
            }
            // The watchdog takes no slot: a backlog to a slow Alertmanager
            // must not let it expire and page as if connwatch were dead.
            if let Some(every) = lane.sink.imp.resend_every() {
                if !lane.keeping_alive
                    && lane.last_keepalive.is_none_or(|t| t.elapsed() >= every)
                    && self.liveness.healthy(now_ms())
                {
                    let lane = &mut self.lanes[li];
                    lane.keeping_alive = true;
                    lane.last_keepalive = Some(Instant::now());
                    self.start(li, Job::Keepalive);
                }
            }
            let lane = &self.lanes[li];
            if lane.free() == 0 {
                continue;
            }
            if let Some(every) = lane.sink.imp.resend_every() {
                if !lane.resending && !lane.firing.is_empty() && lane.last_resend.elapsed() >= every
                {
                    let lane = &mut self.lanes[li];
                    lane.resending = true;
                    lane.last_resend = Instant::now();
                    self.start(li, Job::Resend);
                    continue;
                }
            }
            let lane = &self.lanes[li];
            let remind = lane.sink.remind_every.is_some_and(|every| {
                !lane.reminding
                    && lane
                        .reminders
                        .values()
                        .any(|r| r.since.elapsed() >= every * (r.sent + 1))
            });
            if remind {
                self.lanes[li].reminding = true;
                self.start(li, Job::Remind);
            }
        }
    }

    /// Raises `system.error` (connection_id null) to every other sink that
    /// takes it, at most once per failing sink per [`SYSTEM_ERROR_EVERY`];
    /// never about a `system.error` itself.
    async fn system_error(&mut self, failing: usize, about: &Outgoing, message: String) {
        if about.event_kind() == Some(EventKind::SystemError) {
            return;
        }
        let failing = self.lanes[failing].sink.id.clone();
        if self
            .last_system_error
            .get(&failing)
            .is_some_and(|t| t.elapsed() < SYSTEM_ERROR_EVERY)
        {
            return;
        }
        self.last_system_error
            .insert(failing.clone(), Instant::now());
        tracing::error!(component = "dispatcher", sink = %failing, "{message}");
        let now = now_ms();
        let env = Envelope::new(
            &self.instance,
            EventKind::SystemError,
            now,
            None,
            serde_json::json!({"component": "delivery", "sink": failing, "event_id": about.id, "message": message}),
        );
        let open: Vec<SinkPolicy> = self
            .policies
            .iter()
            .zip(&self.lanes)
            .filter(|(_, l)| l.gone.is_none())
            .map(|(p, _)| p.clone())
            .collect();
        let deliveries = system_deliveries(&open, EventKind::SystemError, Some(&failing));
        let db = Arc::clone(&self.db);
        let res = tokio::task::spawn_blocking(move || {
            let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
            outbox::insert_event(&mut db, &env, now, &deliveries)
        })
        .await;
        if let Ok(Err(e)) = res {
            tracing::error!(component = "dispatcher", error = %crate::store::sq(&self.path, e), "cannot record system.error");
        }
        self.wake.notify_one();
    }

    /// After a restart: the open incidents still to re-send and the
    /// reminders still due, from each sink's last delivered status change
    /// per connection.
    fn restore_standing(&mut self) {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        for lane in &mut self.lanes {
            if lane.sink.imp.resend_every().is_none() && lane.sink.remind_every.is_none() {
                continue;
            }
            match outbox::last_told(&db, &lane.sink.id) {
                Ok(told) => {
                    for (out, action) in told {
                        track(lane, Item { out, action }, Instant::now());
                    }
                }
                Err(e) => {
                    tracing::error!(component = "dispatcher", sink = %lane.sink.id, error = %crate::store::sq(&self.path, e), "cannot read open incidents")
                }
            }
        }
    }
}

/// Moves `next` to `t` if that is sooner.
fn soonest(t: UnixMs, next: &mut Option<UnixMs>) {
    *next = Some(next.map_or(t, |n| n.min(t)));
}

/// Whether a delivered item opens (true) or closes (false) its
/// connection's incident.
fn incident(it: &Item) -> Option<bool> {
    match it.action {
        Some(PageAction::Trigger { .. }) => Some(true),
        Some(PageAction::Resolve { .. }) => Some(false),
        None => match crate::model::Health::parse(it.out.current_health()?)? {
            crate::model::Health::Is(crate::model::Outcome::Online) => Some(false),
            h => Severity::of(h).map(|_| true),
        },
    }
}

/// Keeps a lane's open incidents and reminders up to date with a delivered
/// item.
fn track(lane: &mut Lane, it: Item, now: Instant) {
    let Some(conn) = it.out.connection_id.clone() else {
        return;
    };
    if lane.sink.imp.resend_every().is_some() {
        match incident(&it) {
            Some(true) => {
                lane.firing.insert(conn.clone(), it.clone());
            }
            Some(false) => {
                lane.firing.remove(&conn);
            }
            None => {}
        }
    }
    if lane.sink.remind_every.is_some() {
        if let Some(current) = it
            .out
            .current_health()
            .and_then(crate::model::Health::parse)
        {
            if Severity::of(current).is_some_and(|s| s >= Severity::Error) {
                lane.reminders.insert(
                    conn,
                    Reminder {
                        item: it,
                        since: now,
                        sent: 0,
                    },
                );
            } else {
                lane.reminders.remove(&conn);
            }
        }
    }
}

/// The reminders due on `lane`, marked sent: the last status change
/// again, as `<event id>-r<n>` with `data.reminder = n` (a new id, so
/// receivers that drop duplicate ids still see it).
fn reminders_due(lane: &mut Lane) -> Vec<Item> {
    let Some(every) = lane.sink.remind_every else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (conn, r) in lane.reminders.iter_mut() {
        // A delivery of this connection is in flight (its resolve, say):
        // the reminder waits, so it cannot land after it.
        if r.since.elapsed() < every * (r.sent + 1) || lane.delivering.contains_key(conn) {
            continue;
        }
        r.sent += 1;
        let mut envelope = r.item.out.envelope.clone();
        let id = format!("{}-r{}", r.item.out.id, r.sent);
        envelope["id"] = serde_json::json!(id);
        envelope["data"]["reminder"] = serde_json::json!(r.sent);
        out.push(Item {
            out: Outgoing {
                id,
                kind: r.item.out.kind.clone(),
                connection_id: r.item.out.connection_id.clone(),
                body: envelope.to_string(),
                envelope,
            },
            action: r.item.action,
        });
    }
    out
}
