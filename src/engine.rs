//! The engine: owns every connection's state, fires probes when the timer
//! queue (or a cron job) says so and the connection's gates allow it, feeds
//! results through classification and the monitor state machines, decides
//! which events are sent and which are held back, and hands records to the
//! writer.
//!
//! It is one task and owns its state outright (no locks): probe tasks send
//! their reports back over a channel. A global semaphore caps probes in
//! flight (`max_concurrent_probes`).
//!
//! Gates, checked when a connection is due (the tick is skipped otherwise):
//! a probe still running; the parent (`depends_on`) confirmed failing; an open
//! circuit; a Retry-After or backoff deadline; the `auth_interval` of an
//! `auth_required` connection.
//!
//! Suppression (events recorded with a reason, not delivered), strongest
//! first: a maintenance window; the parent failing or suspected (its last
//! probe failed); flapping (for per-change events). When the reason ends, one
//! `status_changed` brings receivers from the last health they were sent to
//! the current one, if the two differ.

use crate::classify::{classify, Rules};
use crate::config::{Cadence, Config, Connection, Sink};
use crate::event::{self, Envelope};
use crate::model::{now_ms, rfc3339, Classified, Health, Outcome, UnixMs};
use crate::monitor::{CircuitEvent, Draws, FlapEvent, MonitorState, SyncEvent};
use crate::ops::metrics::metrics;
use crate::probe::{Prober, Report, Request};
use crate::schedule::TimerQueue;
use crate::store::writer::{NewEvent, Probe, Record, StateRow, Writer};
use crate::store::Known;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

/// One watched connection's live state.
struct Watched {
    cfg: Arc<Connection>,
    /// The id, shared with every record sent to the writer.
    id: Arc<str>,
    /// Row key in the database.
    key: i64,
    request: Arc<Request>,
    state: MonitorState,
    /// A probe is running; a due tick meanwhile is skipped.
    in_flight: bool,
    parent: Option<usize>,
    children: Vec<usize>,
    /// Events are held back until then.
    maintenance_until: Option<UnixMs>,
    /// What was last handed to the writer, to write only changes. Only
    /// what is compared is kept, not the JSON written.
    saved: Option<Box<Saved>>,
    /// For each event type, the sinks it goes to (cached).
    routes: HashMap<&'static str, Vec<String>>,
}

/// The compared parts of the state row last handed to the writer.
#[derive(PartialEq)]
struct Saved {
    state: MonitorState,
    hold_until: Option<UnixMs>,
    hold_reason: Option<&'static str>,
    suppressed: Option<&'static str>,
}

/// A probe's result on its way back to the engine.
struct Done {
    slot: usize,
    started_at: UnixMs,
    report: Report,
}

/// The engine's clock: wall-clock time at start plus tokio's monotonic time
/// since. Deadlines never jump with the wall clock, and tests that pause
/// tokio's clock control the engine's time too.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall0: UnixMs,
    inst0: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            wall0: now_ms(),
            inst0: Instant::now(),
        }
    }

    pub fn now(&self) -> UnixMs {
        self.wall0 + self.inst0.elapsed().as_millis() as i64
    }

    /// The tokio instant of a wall-clock time (now if it is past).
    pub fn instant_of(&self, at: UnixMs) -> Instant {
        let ahead = (at - self.now()).max(0) as u64;
        Instant::now() + Duration::from_millis(ahead)
    }
}

/// What cron jobs ask of the engine.
#[derive(Debug, Clone, Copy)]
pub enum Command {
    /// Probe this connection (a cron connection is due).
    Fire(usize),
    /// This maintenance window starts now.
    MaintenanceStart(usize),
}

/// An operator's "probe this connection now" (admin API).
#[derive(Debug)]
pub struct ProbeNow {
    pub id: String,
    pub reply: tokio::sync::oneshot::Sender<ProbeNowAnswer>,
}

/// What became of a [`ProbeNow`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeNowAnswer {
    /// Sent now; its result lands in history and status as any probe's.
    Started,
    /// A probe of it is running already.
    Busy,
    /// A gate says no (circuit open, Retry-After or auth hold, parent
    /// failing) until then: the same gates as scheduled probes, so an
    /// operator cannot hammer a sick or rate-limited system by accident.
    Held {
        reason: &'static str,
        until: Option<UnixMs>,
    },
    /// No connection has that id in the running configuration.
    Unknown,
}

/// Counters exposed to logs (and later, metrics).
#[derive(Debug, Default, Clone, Copy)]
pub struct EngineStats {
    pub probes_started: u64,
    pub probes_done: u64,
    pub skipped_busy: u64,
    /// Due ticks not probed because of a gate (circuit, hold, parent).
    pub held: u64,
    pub transitions: u64,
    pub events: u64,
    pub suppressed: u64,
}

/// A maintenance window: the slots it covers and how long it lasts.
struct Window {
    slots: Vec<usize>,
    duration: Duration,
}

pub struct Engine {
    conns: Vec<Watched>,
    sinks: Vec<Sink>,
    windows: Vec<Window>,
    queue: TimerQueue,
    writer: Writer,
    permits: Arc<Semaphore>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    api_tx: mpsc::Sender<ProbeNow>,
    api_rx: mpsc::Receiver<ProbeNow>,
    shutdown_timeout: Duration,
    stats: EngineStats,
    clock: Clock,
    /// systemd notification, when running under it.
    notifier: Option<crate::ops::notify::Notifier>,
    liveness: crate::ops::notify::Liveness,
    /// Where to leave the schedule when stopping.
    schedule: Option<Schedule>,
    /// The earliest `maintenance_until` of any connection.
    maintenance_end: Option<UnixMs>,
}

/// The next due time of each interval connection, by id: a stopping
/// generation leaves it here and the next one starts from it, so a reload
/// keeps every unchanged connection's phase (no probe missed or doubled).
pub type Schedule = Arc<std::sync::Mutex<HashMap<String, (Duration, Instant)>>>;

/// Cron jobs the engine needs: the expression and what to send when it fires.
pub type CronJobs = Vec<(String, Command)>;

impl Engine {
    /// Builds the engine; `known` maps ids to stored keys and state.
    /// Returns the engine, the sender cron jobs use, and those jobs.
    pub fn new(
        config: &Config,
        known: &HashMap<String, Known>,
        prober: &Prober,
        writer: Writer,
    ) -> (Engine, mpsc::UnboundedSender<Command>, CronJobs) {
        let clock = Clock::start();
        let start = Instant::now();
        let now = clock.now();
        let mut queue = TimerQueue::new(start, config.daemon.scheduler_tick);
        let mut conns = Vec::with_capacity(config.connections.len());
        let mut intervals = Vec::new();
        let mut jobs = Vec::new();
        let index: HashMap<&str, usize> = config
            .connections
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.as_str(), i))
            .collect();
        for (slot, c) in config.connections.iter().enumerate() {
            let k = known.get(&c.id);
            let state = k
                .map(|k| MonitorState::restore(k.state.as_deref(), k.health, k.since))
                .unwrap_or_default();
            conns.push(Watched {
                cfg: Arc::clone(c),
                id: Arc::from(c.id.as_str()),
                key: k.map(|k| k.key).unwrap_or(-1),
                request: Arc::new(prober.request(c)),
                state,
                in_flight: false,
                parent: c.depends_on.as_deref().and_then(|p| index.get(p).copied()),
                children: Vec::new(),
                maintenance_until: None,
                saved: None,
                routes: HashMap::new(),
            });
            match &c.cadence {
                Cadence::Interval(d) => intervals.push((slot, *d)),
                Cadence::Cron(expr) => jobs.push((expr.clone(), Command::Fire(slot))),
            }
        }
        for slot in 0..conns.len() {
            if let Some(p) = conns[slot].parent {
                conns[p].children.push(slot);
            }
        }
        let mut windows = Vec::new();
        for (i, m) in config.maintenance.iter().enumerate() {
            let slots: Vec<usize> = match &m.connections {
                None => (0..conns.len()).collect(),
                Some(ids) => ids
                    .iter()
                    .filter_map(|id| index.get(id.as_str()).copied())
                    .collect(),
            };
            // A window that is already open (a restart inside it) applies now.
            if let Some(end) = active_window_end(&m.schedule, m.duration, now) {
                for &s in &slots {
                    conns[s].maintenance_until = Some(end);
                }
                tracing::info!(window = i, until = %rfc3339(end), "maintenance window in progress");
            }
            windows.push(Window {
                slots,
                duration: m.duration,
            });
            jobs.push((m.schedule.clone(), Command::MaintenanceStart(i)));
        }
        queue.add_all(&intervals);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (api_tx, api_rx) = mpsc::channel(64);
        let engine = Engine {
            conns,
            sinks: config.sinks.clone(),
            windows,
            queue,
            writer,
            permits: Arc::new(Semaphore::new(config.daemon.max_concurrent_probes)),
            done_tx,
            done_rx,
            cmd_rx,
            api_tx,
            api_rx,
            shutdown_timeout: config.daemon.shutdown_timeout,
            stats: EngineStats::default(),
            clock,
            notifier: None,
            liveness: Default::default(),
            schedule: None,
            maintenance_end: None,
        };
        let mut engine = engine;
        engine.refresh_maintenance_end();
        (engine, cmd_tx, jobs)
    }

    /// Speaks the sd_notify protocol: READY when `run` starts, WATCHDOG and
    /// STATUS from its loop while `liveness` shows the writer turning,
    /// STOPPING when it stops. The engine beats into `liveness` too.
    pub fn with_notifier(
        mut self,
        notifier: crate::ops::notify::Notifier,
        liveness: crate::ops::notify::Liveness,
    ) -> Self {
        self.notifier = Some(notifier);
        self.liveness = liveness;
        self
    }

    /// Takes each interval connection's next due time from `s` when its id
    /// and interval are unchanged (a reload), and leaves its own there when
    /// it stops.
    pub fn keep_schedule(mut self, s: Schedule) -> Self {
        {
            let carried = s.lock().unwrap_or_else(|e| e.into_inner());
            for (slot, w) in self.conns.iter().enumerate() {
                if let (Cadence::Interval(d), Some((period, due))) =
                    (&w.cfg.cadence, carried.get(w.cfg.id.as_str()))
                {
                    if d == period {
                        self.queue.add_at(slot, *d, *due);
                    }
                }
            }
        }
        self.schedule = Some(s);
        self
    }

    /// Where the admin API sends "probe now" requests.
    pub fn probe_handle(&self) -> mpsc::Sender<ProbeNow> {
        self.api_tx.clone()
    }

    /// Answers an operator's "probe now": through the same gates as a
    /// scheduled probe.
    async fn probe_now(&mut self, req: ProbeNow) {
        let now = self.clock.now();
        let answer = match self.conns.iter().position(|c| *c.id == *req.id) {
            None => ProbeNowAnswer::Unknown,
            Some(slot) if self.conns[slot].in_flight => ProbeNowAnswer::Busy,
            Some(slot) if self.parent_failing(slot) => ProbeNowAnswer::Held {
                reason: "paused_by_parent",
                until: None,
            },
            Some(slot) => match self.conns[slot].state.gate(now) {
                Some((until, reason)) => ProbeNowAnswer::Held {
                    reason,
                    until: Some(until),
                },
                None => {
                    self.try_fire(slot).await;
                    ProbeNowAnswer::Started
                }
            },
        };
        tracing::info!(connection_id = %req.id, answer = ?answer, "probe requested by an operator");
        let _ = req.reply.send(answer);
    }

    /// The one-line status: connections, failing, pending deliveries.
    fn status_line(&self) -> String {
        let failing = self
            .conns
            .iter()
            .filter(|c| c.state.confirmed_failing())
            .count();
        let pending = self
            .liveness
            .pending_deliveries
            .load(std::sync::atomic::Ordering::Relaxed);
        format!(
            "{} connections, {failing} failing, {pending} deliveries pending",
            self.conns.len()
        )
    }

    fn ping(&mut self) {
        let status = self.status_line();
        let healthy = self.liveness.writer_fresh(self.clock.now());
        if let Some(n) = self.notifier.as_mut() {
            n.alive(healthy, &status);
        }
    }

    /// Runs until `shutdown` turns true, then stops scheduling, waits for
    /// probes in flight (up to `shutdown_timeout`) and records them.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> EngineStats {
        let mut due = Vec::new();
        // Write every connection's state once (status shows holds at once).
        let now = self.clock.now();
        for slot in 0..self.conns.len() {
            self.save_state(slot, now).await;
        }
        let status = self.status_line();
        if let Some(n) = self.notifier.as_mut() {
            n.ready(&status);
        }
        let beat = |l: &crate::ops::notify::Liveness, now: UnixMs| {
            l.engine_beat
                .store(now, std::sync::atomic::Ordering::Relaxed)
        };
        beat(&self.liveness, self.clock.now());
        let mut next_beat = Instant::now() + crate::ops::notify::HEARTBEAT;
        loop {
            let wake = self.queue.next_wake();
            let maint = self.next_maintenance_end();
            let ping = self
                .notifier
                .as_ref()
                .and_then(|n| n.next_ping())
                .map(Instant::from_std);
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                _ = sleep_until_opt(ping) => self.ping(),
                _ = tokio::time::sleep_until(next_beat) => {
                    beat(&self.liveness, self.clock.now());
                    next_beat = Instant::now() + crate::ops::notify::HEARTBEAT;
                }
                Some(done) = self.done_rx.recv() => self.complete(done).await,
                Some(req) = self.api_rx.recv() => self.probe_now(req).await,
                Some(cmd) = self.cmd_rx.recv() => match cmd {
                    Command::Fire(slot) => self.try_fire(slot).await,
                    Command::MaintenanceStart(i) => self.start_window(i).await,
                },
                _ = sleep_until_opt(maint) => self.end_windows().await,
                _ = sleep_until_opt(wake) => {
                    due.clear();
                    let now = Instant::now();
                    self.queue.pop_due(now, &mut due);
                    if let Some(w) = wake {
                        let late = now.saturating_duration_since(w).as_secs_f64();
                        for _ in 0..due.len() {
                            metrics().lateness.observe(late);
                        }
                    }
                    for &slot in &due {
                        self.try_fire(slot).await;
                    }
                }
            }
        }
        if let Some(s) = &self.schedule {
            let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
            s.clear();
            for (slot, w) in self.conns.iter().enumerate() {
                if let (Cadence::Interval(d), Some(due)) =
                    (&w.cfg.cadence, self.queue.next_due(slot))
                {
                    s.insert(w.cfg.id.clone(), (*d, due));
                }
            }
        }
        let in_flight = self.conns.iter().filter(|c| c.in_flight).count();
        tracing::info!(
            in_flight,
            "stopping: no new probes; waiting for probes in flight"
        );
        let deadline = Instant::now() + self.shutdown_timeout;
        while self.conns.iter().any(|c| c.in_flight) {
            match tokio::time::timeout_at(deadline, self.done_rx.recv()).await {
                Ok(Some(done)) => self.complete(done).await,
                _ => {
                    let left = self.conns.iter().filter(|c| c.in_flight).count();
                    tracing::warn!(
                        left,
                        "shutdown deadline reached; abandoning probes in flight"
                    );
                    break;
                }
            }
        }
        self.stats
    }

    /// Whether the parent of `slot` is confirmed failing (children pause).
    fn parent_failing(&self, slot: usize) -> bool {
        self.conns[slot]
            .parent
            .is_some_and(|p| self.conns[p].state.confirmed_failing())
    }

    /// Why events of `slot` are held back now (see [`crate::monitor::suppression`]).
    fn suppression(&self, slot: usize, now: UnixMs, per_change: bool) -> Option<&'static str> {
        let w = &self.conns[slot];
        let parent = w.parent.map(|p| &self.conns[p].state);
        crate::monitor::suppression(w.maintenance_until, now, parent, &w.state, per_change)
    }

    /// Starts a probe of `slot` unless a gate says no.
    async fn try_fire(&mut self, slot: usize) {
        if slot >= self.conns.len() {
            return;
        }
        if self.conns[slot].in_flight {
            self.stats.skipped_busy += 1;
            metrics().skipped_busy.inc();
            tracing::debug!(connection_id = %self.conns[slot].cfg.id, "previous probe still running; skipping this tick");
            return;
        }
        let now = self.clock.now();
        if self.parent_failing(slot) || self.conns[slot].state.gate(now).is_some() {
            self.stats.held += 1;
            metrics().held.inc();
            self.save_state(slot, now).await;
            return;
        }
        if let Some(ev) = self.conns[slot].state.breaker.begin_probe(now) {
            let sup = self.suppression(slot, now, true);
            let events = self.circuit_events(slot, ev, now, sup);
            let state = self.state_row(slot, now);
            tracing::info!(connection_id = %self.conns[slot].cfg.id, "circuit half-open: trial probe");
            self.send_change(slot, now, events, state).await;
        }
        let w = &mut self.conns[slot];
        w.in_flight = true;
        self.stats.probes_started += 1;
        let request = Arc::clone(&w.request);
        let permits = Arc::clone(&self.permits);
        let tx = self.done_tx.clone();
        let clock = self.clock;
        tokio::spawn(async move {
            // The semaphore is never closed, so this only waits.
            let _permit = permits.acquire_owned().await;
            let started_at = clock.now();
            let report = request.send().await;
            let _ = tx.send(Done {
                slot,
                started_at,
                report,
            });
        });
    }

    /// Classifies a finished probe, advances the state machines, decides the
    /// events and queues the record for the writer.
    async fn complete(&mut self, done: Done) {
        self.stats.probes_done += 1;
        let slot = done.slot;
        let at = done.started_at;
        let cfg = Arc::clone(&self.conns[slot].cfg);
        self.conns[slot].in_flight = false;
        let rules = Rules {
            expect: &cfg.expect,
            degraded_after: cfg.degraded_after,
            max_body: cfg.max_body,
        };
        let c = classify(
            &done.report.attempt,
            done.report.latency,
            rules,
            SystemTime::now(),
        );
        let draws = Draws {
            breaker: fastrand::f64(),
            backoff: fastrand::f64(),
        };
        metrics().probe(c.outcome, c.latency.as_secs_f64());
        let was_failing = self.conns[slot].state.health.health.is_failure();
        let obs = self.conns[slot].state.observe(&c, at, &cfg, draws);
        tracing::debug!(
            connection_id = %cfg.id,
            outcome = %c.outcome,
            latency_ms = c.latency.as_millis() as u64,
            error = c.error.as_ref().map(|e| e.message.as_str()).unwrap_or(""),
            "probe"
        );
        let per_change = self.suppression(slot, at, true);
        let other = self.suppression(slot, at, false);
        let mut events = Vec::new();
        if let Some(f) = obs.flap {
            events.extend(self.flap_events(slot, f, at, other));
        }
        if let Some(t) = obs.transition {
            self.stats.transitions += 1;
            metrics().transitions.inc();
            log_transition(&cfg, t.previous, t.current, &c, per_change);
            if let Some(reason) = per_change {
                events.extend(self.status_events(
                    slot,
                    t.previous,
                    t.current,
                    Some(&c),
                    at,
                    Some(reason),
                ));
            }
        }
        if per_change.is_none() {
            if let Some((prev, cur)) = self.conns[slot].state.catch_up() {
                events.extend(self.status_events(slot, prev, cur, Some(&c), at, None));
            }
        }
        if let Some(ce) = obs.circuit {
            events.extend(self.circuit_events(slot, ce, at, per_change));
        }
        if let Some(rh) = obs.rate_hold {
            if let Some(asked) = rh.capped_from {
                tracing::warn!(
                    connection_id = %cfg.id,
                    retry_after_s = asked.as_secs(),
                    capped_s = cfg.retry_after_max.as_secs(),
                    "Retry-After beyond retry_after_max; capped"
                );
            }
        }
        for s in &obs.sync {
            events.extend(self.sync_event(slot, s, at, other));
        }
        let state = self.state_row(slot, at);
        let w = &self.conns[slot];
        let rec = Record {
            conn: w.key,
            conn_id: Arc::clone(&w.id),
            at,
            probe: Some(Probe {
                outcome: c.outcome,
                latency_ms: u32::try_from(c.latency.as_millis()).unwrap_or(u32::MAX),
                http_status: c.http_status,
                error: c.error.clone(),
            }),
            transition: obs
                .transition
                .map(|t| (t, w.state.health.consecutive_failures)),
            events,
            state,
        };
        self.writer.send(rec).await;
        // A parent that recovered: its children are probed at once.
        let recovered = was_failing && !self.conns[slot].state.health.health.is_failure();
        if recovered && !self.conns[slot].children.is_empty() {
            tracing::info!(connection_id = %cfg.id, children = self.conns[slot].children.len(), "parent recovered; probing its children now");
            for child in self.conns[slot].children.clone() {
                self.try_fire(child).await;
            }
        }
    }

    /// Hands the writer the state of `slot` if it changed (no probe).
    async fn save_state(&mut self, slot: usize, now: UnixMs) {
        let state = self.state_row(slot, now);
        self.send_change(slot, now, Vec::new(), state).await;
    }

    /// Hands the writer events and/or a state change that no probe carries.
    async fn send_change(
        &mut self,
        slot: usize,
        at: UnixMs,
        events: Vec<NewEvent>,
        state: Option<StateRow>,
    ) {
        if events.is_empty() && state.is_none() {
            return;
        }
        let rec = Record {
            conn: self.conns[slot].key,
            conn_id: Arc::clone(&self.conns[slot].id),
            at,
            probe: None,
            transition: None,
            events,
            state,
        };
        self.writer.send(rec).await;
    }

    /// The state columns of `slot`, if they differ from the last ones saved.
    fn state_row(&mut self, slot: usize, now: UnixMs) -> Option<StateRow> {
        let (hold_until, hold_reason) = if self.parent_failing(slot) {
            (None, Some("paused_by_parent"))
        } else {
            match self.conns[slot].state.gate(now) {
                Some((t, r)) => (Some(t), Some(r)),
                None => (None, None),
            }
        };
        let suppressed = self.suppression(slot, now, true);
        let w = &mut self.conns[slot];
        if let Some(s) = &w.saved {
            if s.state == w.state
                && s.hold_until == hold_until
                && s.hold_reason == hold_reason
                && s.suppressed == suppressed
            {
                return None;
            }
        }
        let row = StateRow {
            json: w.state.to_json(),
            circuit: w.state.breaker.circuit.as_str(),
            hold_until,
            hold_reason,
            suppressed,
            sent_health: w.state.sent.as_str(),
        };
        let saved = Saved {
            state: w.state.clone(),
            hold_until,
            hold_reason,
            suppressed,
        };
        match &mut w.saved {
            Some(s) => **s = saved,
            None => w.saved = Some(Box::new(saved)),
        }
        Some(row)
    }

    /// Builds an event for `slot` (if its `events` filter lets it exist).
    fn event(
        &mut self,
        slot: usize,
        kind: &'static str,
        at: UnixMs,
        data: Value,
        suppressed: Option<&'static str>,
    ) -> Option<NewEvent> {
        let w = &mut self.conns[slot];
        if !event::filter_matches(&w.cfg.events, kind) {
            return None;
        }
        let sinks = w
            .routes
            .entry(kind)
            .or_insert_with(|| {
                self.sinks
                    .iter()
                    .filter(|s| {
                        w.cfg.sinks.contains(&s.id) && event::filter_matches(&s.events, kind)
                    })
                    .map(|s| s.id.clone())
                    .collect()
            })
            .clone();
        self.stats.events += 1;
        metrics().events.inc();
        if suppressed.is_some() {
            self.stats.suppressed += 1;
        }
        Some(NewEvent {
            envelope: Envelope::new(kind, at, Some(&w.cfg.id), data),
            sinks,
            suppressed,
        })
    }

    /// `status_changed`, plus `auth_required` / `rate_limited` when the new
    /// health is one of those.
    fn status_events(
        &mut self,
        slot: usize,
        previous: Health,
        current: Health,
        c: Option<&Classified>,
        at: UnixMs,
        suppressed: Option<&'static str>,
    ) -> Vec<NewEvent> {
        let st = &self.conns[slot].state;
        let cfg = &self.conns[slot].cfg;
        let latency_ms = c.map(|c| c.latency.as_millis() as u64);
        let error = c.and_then(|c| c.error.clone());
        let data = json!({
            "previous": previous.as_str(),
            "current": current.as_str(),
            "error": error,
            "latency_ms": latency_ms,
            "consecutive_failures": st.health.consecutive_failures,
            "circuit": st.breaker.circuit.as_str(),
        });
        let extra = match current {
            Health::Is(Outcome::AuthRequired) => Some((
                event::AUTH_REQUIRED,
                json!({
                    "error": error,
                    "auth_interval_s": cfg.auth_interval.as_secs(),
                    "next_probe_at": st.hold.auth_until.map(rfc3339),
                }),
            )),
            Health::Is(Outcome::RateLimited) => Some((
                event::RATE_LIMITED,
                json!({
                    "error": error,
                    "retry_after_s": st.hold.rate_limited_until.map(|t| ((t - at).max(0) + 999) / 1000),
                    "retry_at": st.hold.rate_limited_until.map(rfc3339),
                }),
            )),
            _ => None,
        };
        let mut out: Vec<NewEvent> = self
            .event(slot, event::STATUS_CHANGED, at, data, suppressed)
            .into_iter()
            .collect();
        if let Some((kind, data)) = extra {
            out.extend(self.event(slot, kind, at, data, suppressed));
        }
        out
    }

    fn circuit_events(
        &mut self,
        slot: usize,
        ce: CircuitEvent,
        at: UnixMs,
        suppressed: Option<&'static str>,
    ) -> Vec<NewEvent> {
        let id = self.conns[slot].cfg.id.clone();
        let (kind, data) = match ce {
            CircuitEvent::Opened {
                consecutive_failures,
                failure_rate,
                until,
                reopen,
            } => {
                tracing::warn!(connection_id = %id, consecutive_failures, until = %rfc3339(until), "circuit opened");
                (
                    "circuit.opened",
                    json!({
                        "consecutive_failures": consecutive_failures,
                        "failure_rate": failure_rate,
                        "open_for_ms": until - at,
                        "next_trial_at": rfc3339(until),
                        "reopened": reopen > 0,
                    }),
                )
            }
            CircuitEvent::HalfOpened => ("circuit.half_opened", json!({ "trial_at": rfc3339(at) })),
            CircuitEvent::Closed => {
                tracing::info!(connection_id = %id, "circuit closed");
                ("circuit.closed", json!({}))
            }
        };
        self.event(slot, kind, at, data, suppressed)
            .into_iter()
            .collect()
    }

    fn flap_events(
        &mut self,
        slot: usize,
        f: FlapEvent,
        at: UnixMs,
        suppressed: Option<&'static str>,
    ) -> Vec<NewEvent> {
        let id = self.conns[slot].cfg.id.clone();
        let health = self.conns[slot].state.health.health;
        let (kind, percent) = match f {
            FlapEvent::Started { percent } => {
                tracing::warn!(connection_id = %id, percent, "flapping started; per-change events held");
                ("connection.flapping_started", percent)
            }
            FlapEvent::Stopped { percent } => {
                tracing::info!(connection_id = %id, percent, health = %health, "flapping stopped");
                ("connection.flapping_stopped", percent)
            }
        };
        let data = json!({ "percent_state_change": (percent * 10.0).round() / 10.0, "health": health.as_str() });
        self.event(slot, kind, at, data, suppressed)
            .into_iter()
            .collect()
    }

    fn sync_event(
        &mut self,
        slot: usize,
        s: &SyncEvent,
        at: UnixMs,
        suppressed: Option<&'static str>,
    ) -> Option<NewEvent> {
        let (kind, data) = match s {
            SyncEvent::Completed {
                status,
                finished_at,
            } => (
                "sync.completed",
                json!({ "status": status, "finished_at": rfc3339(*finished_at) }),
            ),
            SyncEvent::Failed {
                status,
                finished_at,
            } => (
                "sync.failed",
                json!({ "status": status, "finished_at": rfc3339(*finished_at) }),
            ),
            SyncEvent::Stale {
                finished_at,
                age_ms,
            } => {
                tracing::warn!(connection_id = %self.conns[slot].cfg.id, age_s = age_ms / 1000, "sync is stale");
                (
                    "sync.stale",
                    json!({ "finished_at": rfc3339(*finished_at), "age_s": age_ms / 1000 }),
                )
            }
        };
        self.event(slot, kind, at, data, suppressed)
    }

    async fn start_window(&mut self, i: usize) {
        let Some(w) = self.windows.get(i) else {
            return;
        };
        let now = self.clock.now();
        let until = now + w.duration.as_millis() as i64;
        let slots = w.slots.clone();
        tracing::info!(window = i, connections = slots.len(), until = %rfc3339(until), "maintenance window started; events held");
        for slot in slots {
            let c = &mut self.conns[slot];
            c.maintenance_until = Some(c.maintenance_until.map_or(until, |t| t.max(until)));
            self.save_state(slot, now).await;
        }
        self.refresh_maintenance_end();
    }

    fn next_maintenance_end(&self) -> Option<Instant> {
        Some(self.clock.instant_of(self.maintenance_end?))
    }

    /// Recomputes the earliest window end (only when windows start or end:
    /// the loop reads the cached value on every turn).
    fn refresh_maintenance_end(&mut self) {
        self.maintenance_end = self.conns.iter().filter_map(|c| c.maintenance_until).min();
    }

    /// Ends windows that are over; brings receivers up to date.
    async fn end_windows(&mut self) {
        let now = self.clock.now();
        for slot in 0..self.conns.len() {
            if self.conns[slot].maintenance_until.is_none_or(|t| t > now) {
                continue;
            }
            self.conns[slot].maintenance_until = None;
            tracing::info!(connection_id = %self.conns[slot].cfg.id, "maintenance window ended");
            let mut events = Vec::new();
            if self.suppression(slot, now, true).is_none() {
                if let Some((prev, cur)) = self.conns[slot].state.catch_up() {
                    events = self.status_events(slot, prev, cur, None, now, None);
                }
            }
            let state = self.state_row(slot, now);
            self.send_change(slot, now, events, state).await;
        }
        self.refresh_maintenance_end();
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

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn log_transition(
    cfg: &Connection,
    previous: Health,
    current: Health,
    c: &Classified,
    held: Option<&str>,
) {
    let error = c.error.as_ref().map(|e| e.message.as_str()).unwrap_or("");
    let held = held.unwrap_or("");
    if current.is_failure() || matches!(current, Health::Is(Outcome::AuthRequired)) {
        tracing::warn!(connection_id = %cfg.id, %previous, %current, error, held, "health changed");
    } else {
        tracing::info!(connection_id = %cfg.id, %previous, %current, error, held, "health changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
