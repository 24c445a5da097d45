//! The engine: owns every connection's state, fires probes when the timer
//! queue (or a cron job) says so and the connection's gates allow it, feeds
//! results through classification and the monitor state machines, asks the
//! alert policy ([`crate::policy`]) which events that makes and who hears
//! them, and hands the records to the writer.
//!
//! It is one task and owns its state outright (no locks): probe tasks send
//! their reports back over a channel. A global semaphore caps probes in
//! flight (`max_concurrent_probes`).
//!
//! Gates, checked when a connection is due (the tick is skipped otherwise):
//! a probe still running; the parent (`depends_on`) confirmed failing; an open
//! circuit; a Retry-After or backoff deadline; the `auth_interval` of an
//! `auth_required` or `permission_denied` connection.
//!
//! A connection's scopes are probed on the same timer queue (their slots
//! follow the connections'), through the same client and the same gates
//! (and only while the circuit is closed); their results change the
//! connection's health through [`MonitorState::observe_scope`].

use crate::classify::{classify, Rules};
use crate::config::{Cadence, Config, Connection, Scope};
use crate::event::Envelope;
use crate::maintenance::{Silenced, Windows};
use crate::model::{rfc3339, Clock, UnixMs};
use crate::monitor::{Circuit, Draws, MonitorState, Transition};
use crate::ops::metrics::metrics;
use crate::policy::{self, Held, Planned, Router, Routes};
use crate::probe::{Prober, Report, Request};
use crate::schedule::TimerQueue;
use crate::store::silences::Silence;
use crate::store::writer::{LastState, NewEvent, Probe, Record, StateRow, Writer};
use crate::store::Known;
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
    /// The state row last handed to the writer.
    saved: LastState,
    /// Who hears which of its events (shared with connections alike).
    routes: Arc<Routes>,
    /// A change of its health made at start (a reload dropped the scope
    /// that lowered it), for the first record.
    carry: Option<Transition>,
}

/// One scope of a watched connection.
struct WatchedScope {
    /// Its connection's slot.
    conn: usize,
    cfg: Arc<Scope>,
    /// `connection/scope`: its row in the database and its place in the
    /// schedule.
    row: Arc<str>,
    key: i64,
    request: Arc<Request>,
    in_flight: bool,
}

/// What a probe was of.
#[derive(Debug, Clone, Copy)]
enum Target {
    Conn(usize),
    Scope(usize),
}

/// A probe's result on its way back to the engine.
struct Done {
    target: Target,
    started_at: UnixMs,
    report: Report,
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
    /// Lift the open circuit's wait and the auth and rate-limit holds for
    /// this one probe (`connwatch probe ID --now`, `?force=true`).
    pub force: bool,
    pub reply: tokio::sync::oneshot::Sender<ProbeNowAnswer>,
}

/// Which gates a probe goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gates {
    /// All of them (a scheduled probe, an operator's plain request).
    All,
    /// A maintenance window or a silence ended: the open circuit's wait
    /// and an auth hold are lifted for one probe, so the catch-up tells
    /// what is true now; a Retry-After still holds.
    HoldEnded,
    /// An operator forced it: the rate limit's hold is lifted too.
    Forced,
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

impl std::fmt::Display for ProbeNowAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeNowAnswer::Started => f.write_str("started"),
            ProbeNowAnswer::Busy => f.write_str("busy: a probe is running"),
            ProbeNowAnswer::Held {
                reason,
                until: Some(t),
            } => write!(f, "held: {reason} until {}", rfc3339(*t)),
            ProbeNowAnswer::Held {
                reason,
                until: None,
            } => write!(f, "held: {reason}"),
            ProbeNowAnswer::Unknown => f.write_str("no such connection"),
        }
    }
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

pub struct Engine {
    /// `[daemon] instance`, for the envelopes.
    instance: Arc<str>,
    conns: Vec<Watched>,
    /// Every connection's scopes; scope `j` is slot `conns.len() + j` of
    /// the timer queue.
    scopes: Vec<WatchedScope>,
    /// Slot of each connection id.
    index: HashMap<Arc<str>, usize>,
    windows: Windows,
    silenced: Silenced,
    /// The silences in force, as the database says (polled by the app).
    silences_rx: Option<watch::Receiver<Vec<Silence>>>,
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
}

pub use crate::schedule::Schedule;

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
        let mut queue = TimerQueue::new(start, config.daemon.scheduler_tick);
        let mut router = Router::new(config.sinks.iter().map(|s| s.policy()).collect());
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
            let mut state = k
                .map(|k| MonitorState::restore(k.state.as_deref(), k.health, k.since))
                .unwrap_or_default();
            let carry = state.fit(c, clock.now());
            conns.push(Watched {
                cfg: Arc::clone(c),
                id: Arc::from(c.id.as_str()),
                key: k.map(|k| k.key).unwrap_or(-1),
                request: Arc::new(prober.request(c)),
                state,
                in_flight: false,
                parent: c.depends_on.as_deref().and_then(|p| index.get(p).copied()),
                children: Vec::new(),
                saved: LastState::default(),
                routes: router.routes(&c.sinks, &c.events),
                carry,
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
        let mut scopes = Vec::new();
        for (slot, c) in config.connections.iter().enumerate() {
            for s in &c.scopes {
                let row = crate::store::scope_row_id(&c.id, &s.id);
                intervals.push((conns.len() + scopes.len(), s.interval));
                scopes.push(WatchedScope {
                    conn: slot,
                    cfg: Arc::clone(s),
                    key: known.get(&row).map(|k| k.key).unwrap_or(-1),
                    row: Arc::from(row),
                    request: Arc::new(prober.scope_request(c, s)),
                    in_flight: false,
                });
            }
        }
        let (windows, schedules, open) =
            Windows::new(&config.maintenance, &index, conns.len(), clock.now());
        for (i, until) in open {
            tracing::info!(window = i, until = %rfc3339(until), "maintenance window in progress");
        }
        for (i, expr) in schedules.into_iter().enumerate() {
            jobs.push((expr, Command::MaintenanceStart(i)));
        }
        queue.add_all(&intervals);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (api_tx, api_rx) = mpsc::channel(64);
        let index = conns
            .iter()
            .enumerate()
            .map(|(slot, w)| (Arc::clone(&w.id), slot))
            .collect();
        let engine = Engine {
            instance: Arc::from(config.daemon.instance.as_str()),
            conns,
            scopes,
            index,
            windows,
            silenced: Silenced::default(),
            silences_rx: None,
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
        };
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
        self.queue
            .carry_in(&s, intervals(&self.conns, &self.scopes));
        self.schedule = Some(s);
        self
    }

    /// Follows the silences in force (the app polls the database); the
    /// current ones apply from the first probe.
    pub fn with_silences(mut self, rx: watch::Receiver<Vec<Silence>>) -> Self {
        let now = self.clock.now();
        let current = rx.borrow().clone();
        self.silenced
            .set(&current, &self.index, self.conns.len(), now);
        self.silences_rx = Some(rx);
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
            Some(slot) if req.force => {
                self.fire(slot, Gates::Forced).await;
                ProbeNowAnswer::Started
            }
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
        tracing::info!(connection_id = %req.id, force = req.force, %answer, "probe requested by an operator");
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
        // Write every connection's state once (status shows holds at once),
        // except a new connection's: it has nothing to show yet, and
        // 100,000 of them would delay READY by a second.
        let now = self.clock.now();
        let fresh = crate::monitor::MonitorState::default();
        for slot in 0..self.conns.len() {
            let w = &self.conns[slot];
            if w.state == fresh && w.carry.is_none() && !self.parent_failing(slot) {
                continue;
            }
            self.hand_over(slot, now, Vec::new()).await;
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
            let hold_end = match (self.windows.next_end(), self.silenced.next_end()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
            .map(|t| self.clock.instant_of(t));
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
                _ = sleep_until_opt(hold_end) => self.end_holds().await,
                Ok(()) = changed_opt(&mut self.silences_rx) => self.silences_changed().await,
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
                    let n = self.conns.len();
                    for &slot in &due {
                        if slot < n {
                            self.try_fire(slot).await;
                        } else {
                            self.fire_scope(slot - n).await;
                        }
                    }
                }
            }
        }
        if let Some(s) = &self.schedule {
            self.queue
                .carry_out(s, intervals(&self.conns, &self.scopes));
        }
        let in_flight = self.in_flight();
        tracing::info!(
            in_flight,
            "stopping: no new probes; waiting for probes in flight"
        );
        let deadline = Instant::now() + self.shutdown_timeout;
        while self.in_flight() > 0 {
            match tokio::time::timeout_at(deadline, self.done_rx.recv()).await {
                Ok(Some(done)) => self.complete(done).await,
                _ => {
                    let left = self.in_flight();
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

    /// Probes in flight, of connections and of scopes.
    fn in_flight(&self) -> usize {
        self.conns.iter().filter(|c| c.in_flight).count()
            + self.scopes.iter().filter(|s| s.in_flight).count()
    }

    /// Whether the parent of `slot` is confirmed failing (children pause).
    fn parent_failing(&self, slot: usize) -> bool {
        self.conns[slot]
            .parent
            .is_some_and(|p| self.conns[p].state.confirmed_failing())
    }

    /// What holds the events of `slot` back at `now`.
    fn held(&self, slot: usize, now: UnixMs) -> Held {
        let w = &self.conns[slot];
        let parent = w.parent.map(|p| &self.conns[p].state);
        policy::held(
            self.windows.until(slot),
            self.silenced.until(slot),
            now,
            parent,
            &w.state,
        )
    }

    /// Starts a probe of `slot` unless a gate says no.
    async fn try_fire(&mut self, slot: usize) {
        self.fire(slot, Gates::All).await;
    }

    /// Starts a probe of `slot` through `gates`; whether it started.
    async fn fire(&mut self, slot: usize, gates: Gates) -> bool {
        if slot >= self.conns.len() {
            return false;
        }
        if self.conns[slot].in_flight {
            self.stats.skipped_busy += 1;
            metrics().skipped_busy.inc();
            tracing::debug!(connection_id = %self.conns[slot].cfg.id, "previous probe still running; skipping this tick");
            return false;
        }
        let now = self.clock.now();
        if gates != Gates::All && !self.parent_failing(slot) {
            self.conns[slot].state.lift(now, gates == Gates::Forced);
        }
        if self.parent_failing(slot) || self.conns[slot].state.gate(now).is_some() {
            self.stats.held += 1;
            metrics().held.inc();
            self.hand_over(slot, now, Vec::new()).await;
            return false;
        }
        if self.conns[slot].state.breaker.begin_probe(now).is_some() {
            tracing::info!(connection_id = %self.conns[slot].cfg.id, "circuit half-open: trial probe");
            let planned = policy::after_trial(now, self.held(slot, now), &self.conns[slot].routes);
            self.hand_over(slot, now, planned).await;
        }
        let w = &mut self.conns[slot];
        w.in_flight = true;
        let request = Arc::clone(&w.request);
        self.spawn(Target::Conn(slot), request);
        true
    }

    /// Starts a probe of scope `j` unless its connection's gates say no:
    /// a probe of it still running, the parent failing, a circuit not
    /// closed, a Retry-After or auth hold.
    async fn fire_scope(&mut self, j: usize) {
        let Some(w) = self.scopes.get(j) else {
            return;
        };
        if w.in_flight {
            self.stats.skipped_busy += 1;
            metrics().skipped_busy.inc();
            return;
        }
        let slot = w.conn;
        let now = self.clock.now();
        let state = &self.conns[slot].state;
        if self.parent_failing(slot)
            || state.breaker.circuit != Circuit::Closed
            || state.gate(now).is_some()
        {
            self.stats.held += 1;
            metrics().held.inc();
            return;
        }
        let w = &mut self.scopes[j];
        w.in_flight = true;
        let request = Arc::clone(&w.request);
        self.spawn(Target::Scope(j), request);
    }

    /// Sends `request` as a task of its own; its report comes back on the
    /// done channel.
    fn spawn(&mut self, target: Target, request: Arc<Request>) {
        self.stats.probes_started += 1;
        let permits = Arc::clone(&self.permits);
        let tx = self.done_tx.clone();
        let clock = self.clock;
        tokio::spawn(async move {
            // The semaphore is never closed, so this only waits.
            let _permit = permits.acquire_owned().await;
            let started_at = clock.now();
            let report = request.send().await;
            let _ = tx.send(Done {
                target,
                started_at,
                report,
            });
        });
    }

    /// Classifies a finished probe, advances the state machines, asks the
    /// policy for the events and queues the record for the writer.
    async fn complete(&mut self, done: Done) {
        self.stats.probes_done += 1;
        let slot = match done.target {
            Target::Conn(slot) => slot,
            Target::Scope(j) => return self.complete_scope(j, done).await,
        };
        let at = done.started_at;
        let cfg = Arc::clone(&self.conns[slot].cfg);
        self.conns[slot].in_flight = false;
        let rules = Rules {
            expect: &cfg.expect,
            degraded_after: cfg.degraded_after,
            max_body: cfg.max_body,
        };
        let (c, draws) = judged(&done.report, rules);
        let was_failing = self.conns[slot].state.health.health.is_failure();
        let obs = self.conns[slot].state.observe(&c, at, &cfg, draws);
        let held = self.held(slot, at);
        if obs.transition.is_some() {
            self.stats.transitions += 1;
            metrics().transitions.inc();
        }
        crate::ops::log::observed(&cfg, &c, &obs, held, self.conns[slot].state.current());
        let w = &mut self.conns[slot];
        let probe = policy::Probe {
            at,
            observed: &obs,
            error: c.error.as_ref(),
            latency_ms: c.latency.as_millis() as u64,
            held,
            auth_interval: cfg.auth_interval,
        };
        let planned = policy::after_probe(&mut w.state, &probe, &w.routes);
        let events = self.stored(slot, at, planned);
        let state = self.state_row(slot, at);
        let w = &self.conns[slot];
        let rec = Record {
            conn: w.key,
            conn_id: Arc::clone(&w.id),
            at,
            probe: Some(Probe::of(&c)),
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

    /// Classifies a finished probe of a scope, advances the scope's and
    /// the connection's state, asks the policy for the events, and queues
    /// the connection's record (its events and state) and then the
    /// scope's (its probe and transition, for its history).
    async fn complete_scope(&mut self, j: usize, done: Done) {
        let at = done.started_at;
        self.scopes[j].in_flight = false;
        let slot = self.scopes[j].conn;
        let scope = Arc::clone(&self.scopes[j].cfg);
        let cfg = Arc::clone(&self.conns[slot].cfg);
        let rules = Rules {
            expect: &scope.expect,
            degraded_after: scope.degraded_after,
            max_body: cfg.max_body,
        };
        let (c, draws) = judged(&done.report, rules);
        let obs = self.conns[slot]
            .state
            .observe_scope(&scope.id, &c, at, &cfg, draws);
        let held = self.held(slot, at);
        if obs.transition.is_some() {
            self.stats.transitions += 1;
            metrics().transitions.inc();
        }
        crate::ops::log::scope_observed(&cfg, &scope.id, &c, &obs);
        let w = &mut self.conns[slot];
        let probe = policy::ScopeProbe {
            at,
            scope: &scope.id,
            observed: &obs,
            error: c.error.as_ref(),
            held,
        };
        let planned = policy::after_scope(&mut w.state, &probe, &w.routes);
        let failures = w.state.health.consecutive_failures;
        let scope_failures = w
            .state
            .scopes
            .get(&scope.id)
            .map_or(0, |s| s.health.consecutive_failures);
        let events = self.stored(slot, at, planned);
        let state = self.state_row(slot, at);
        let w = &self.conns[slot];
        if obs.transition.is_some() || !events.is_empty() || state.is_some() {
            let rec = Record {
                conn: w.key,
                conn_id: Arc::clone(&w.id),
                at,
                probe: None,
                transition: obs.transition.map(|t| (t, failures)),
                events,
                state,
            };
            self.writer.send(rec).await;
        }
        let s = &self.scopes[j];
        let rec = Record {
            conn: s.key,
            conn_id: Arc::clone(&s.row),
            at,
            probe: Some(Probe::of(&c)),
            transition: obs.scope.map(|t| (t, scope_failures)),
            events: Vec::new(),
            state: None,
        };
        self.writer.send(rec).await;
    }

    /// Hands the writer planned events and the state of `slot` if it
    /// changed (no probe).
    async fn hand_over(&mut self, slot: usize, at: UnixMs, planned: Vec<Planned>) {
        let events = self.stored(slot, at, planned);
        let state = self.state_row(slot, at);
        let w = &mut self.conns[slot];
        let transition = w
            .carry
            .take()
            .map(|t| (t, w.state.health.consecutive_failures));
        if events.is_empty() && state.is_none() && transition.is_none() {
            return;
        }
        let rec = Record {
            conn: w.key,
            conn_id: Arc::clone(&w.id),
            at,
            probe: None,
            transition,
            events,
            state,
        };
        self.writer.send(rec).await;
    }

    /// The planned events of `slot` as the writer stores them, counted.
    fn stored(&mut self, slot: usize, at: UnixMs, planned: Vec<Planned>) -> Vec<NewEvent> {
        let id = &self.conns[slot].cfg.id;
        planned
            .into_iter()
            .map(|p| {
                self.stats.events += 1;
                metrics().events.inc();
                if p.suppressed.is_some() {
                    self.stats.suppressed += 1;
                }
                NewEvent {
                    envelope: Envelope::new(&self.instance, p.kind, at, Some(id), p.data),
                    deliveries: p.deliveries,
                    suppressed: p.suppressed.map(policy::Reason::as_str),
                }
            })
            .collect()
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
        let suppressed = self.held(slot, now).per_change.map(policy::Reason::as_str);
        let w = &mut self.conns[slot];
        w.saved
            .changed(&w.state, hold_until, hold_reason, suppressed)
    }

    async fn start_window(&mut self, i: usize) {
        let now = self.clock.now();
        let Some((slots, until)) = self.windows.start(i, now) else {
            return;
        };
        tracing::info!(window = i, connections = slots.len(), until = %rfc3339(until), "maintenance window started; events held");
        for slot in slots {
            self.hand_over(slot, now, Vec::new()).await;
        }
    }

    /// Ends the windows and silences that are over.
    async fn end_holds(&mut self) {
        let now = self.clock.now();
        for slot in self.windows.end_due(now) {
            tracing::info!(connection_id = %self.conns[slot].cfg.id, "maintenance window ended");
            self.hold_ended(slot, now).await;
        }
        for slot in self.silenced.end_due(now) {
            tracing::info!(connection_id = %self.conns[slot].cfg.id, "silence ended");
            self.hold_ended(slot, now).await;
        }
    }

    /// Silences were added or ended (by an operator, elsewhere).
    async fn silences_changed(&mut self) {
        let Some(rx) = self.silences_rx.as_mut() else {
            return;
        };
        let current = rx.borrow_and_update().clone();
        let now = self.clock.now();
        let changed = self
            .silenced
            .set(&current, &self.index, self.conns.len(), now);
        for &slot in &changed.started {
            tracing::info!(connection_id = %self.conns[slot].cfg.id, "silenced; events held");
            self.hand_over(slot, now, Vec::new()).await;
        }
        for slot in changed.ended {
            tracing::info!(connection_id = %self.conns[slot].cfg.id, "silence ended");
            self.hold_ended(slot, now).await;
        }
    }

    /// What held `slot`'s events back has ended: unless something else
    /// still does, the connection is probed at once (past an open
    /// circuit's wait) and that probe brings receivers up to date, so the
    /// catch-up tells what is true now. When no probe can go (one is
    /// running, whose result will do it; a Retry-After holds), the catch-up
    /// goes from the health as last confirmed.
    async fn hold_ended(&mut self, slot: usize, now: UnixMs) {
        if self.held(slot, now).per_change.is_some() || self.conns[slot].in_flight {
            self.hand_over(slot, now, Vec::new()).await;
            return;
        }
        if self.fire(slot, Gates::HoldEnded).await {
            return;
        }
        let w = &mut self.conns[slot];
        let planned = policy::catch_up(&mut w.state, now, w.cfg.auth_interval, &w.routes);
        self.hand_over(slot, now, planned).await;
    }
}

/// A finished probe classified by `rules` and counted, with the random
/// draws its state machines take.
fn judged(report: &Report, rules: Rules<'_>) -> (crate::model::Classified, Draws) {
    let c = classify(&report.attempt, report.latency, rules, SystemTime::now());
    metrics().probe(c.outcome, c.latency.as_secs_f64());
    let draws = Draws {
        breaker: fastrand::f64(),
        backoff: fastrand::f64(),
    };
    (c, draws)
}

/// `(slot, id, interval)` of the interval connections, then of the scopes
/// (whose id is `connection/scope`).
fn intervals<'a>(
    conns: &'a [Watched],
    scopes: &'a [WatchedScope],
) -> impl Iterator<Item = (usize, &'a str, Duration)> {
    let n = conns.len();
    conns
        .iter()
        .enumerate()
        .filter_map(|(slot, w)| w.cfg.interval().map(|d| (slot, &*w.id, d)))
        .chain(
            scopes
                .iter()
                .enumerate()
                .map(move |(j, s)| (n + j, &*s.row, s.cfg.interval)),
        )
}

/// Resolves when the watched value changes; never without a receiver
/// (and never again once its sender is gone).
async fn changed_opt<T>(rx: &mut Option<watch::Receiver<T>>) -> Result<(), ()> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => Ok(()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
