//! The engine: owns every connection's state, fires probes when the timer
//! queue (or a cron job) says so, feeds results through classification and
//! the health machine, and hands records to the writer.
//!
//! It is one task and owns its state outright (no locks): probe tasks send
//! their reports back over a channel. A global semaphore caps probes in
//! flight (`max_concurrent_probes`).

use crate::classify::{classify, Rules};
use crate::config::{Cadence, Config, Connection, Sink};
use crate::event::{self, Envelope};
use crate::model::{now_ms, Classified, Health, Outcome, UnixMs};
use crate::monitor::{HealthMachine, Thresholds, Transition};
use crate::probe::{Prober, Report, Request};
use crate::schedule::TimerQueue;
use crate::store::writer::{Change, NewEvent, ProbeRecord, Writer};
use crate::store::Known;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

/// One watched connection's live state.
struct Watched {
    cfg: Arc<Connection>,
    /// Row key in the database.
    key: i64,
    request: Arc<Request>,
    health: HealthMachine,
    /// A probe is running; a due tick meanwhile is skipped.
    in_flight: bool,
    /// For each event type seen so far, the sinks it goes to (cached).
    routes: HashMap<&'static str, Vec<String>>,
}

/// A probe's result on its way back to the engine.
struct Done {
    slot: usize,
    started_at: UnixMs,
    report: Report,
}

/// Counters exposed to logs (and later, metrics).
#[derive(Debug, Default, Clone, Copy)]
pub struct EngineStats {
    pub probes_started: u64,
    pub probes_done: u64,
    pub skipped_busy: u64,
    pub transitions: u64,
    pub events: u64,
}

pub struct Engine {
    conns: Vec<Watched>,
    sinks: Vec<Sink>,
    queue: TimerQueue,
    writer: Writer,
    permits: Arc<Semaphore>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    cron_rx: mpsc::UnboundedReceiver<usize>,
    shutdown_timeout: Duration,
    stats: EngineStats,
}

impl Engine {
    /// Builds the engine; `known` maps ids to stored keys and health.
    /// Returns the engine and the sender cron jobs use to fire a slot.
    pub fn new(
        config: &Config,
        known: &HashMap<String, Known>,
        prober: &Prober,
        writer: Writer,
    ) -> (Engine, mpsc::UnboundedSender<usize>, Vec<(usize, String)>) {
        let start = Instant::now();
        let mut queue = TimerQueue::new(start, config.daemon.scheduler_tick);
        let mut conns = Vec::with_capacity(config.connections.len());
        let mut intervals = Vec::new();
        let mut crons = Vec::new();
        for (slot, c) in config.connections.iter().enumerate() {
            let k = known.get(&c.id);
            let health = k
                .map(|k| HealthMachine::resume(k.health, k.since))
                .unwrap_or_default();
            conns.push(Watched {
                cfg: Arc::new(c.clone()),
                key: k.map(|k| k.key).unwrap_or(-1),
                request: Arc::new(prober.request(c)),
                health,
                in_flight: false,
                routes: HashMap::new(),
            });
            match &c.cadence {
                Cadence::Interval(d) => intervals.push((slot, *d)),
                Cadence::Cron(expr) => crons.push((slot, expr.clone())),
            }
        }
        queue.add_all(&intervals);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (cron_tx, cron_rx) = mpsc::unbounded_channel();
        let engine = Engine {
            conns,
            sinks: config.sinks.clone(),
            queue,
            writer,
            permits: Arc::new(Semaphore::new(config.daemon.max_concurrent_probes)),
            done_tx,
            done_rx,
            cron_rx,
            shutdown_timeout: config.daemon.shutdown_timeout,
            stats: EngineStats::default(),
        };
        (engine, cron_tx, crons)
    }

    /// Runs until `shutdown` turns true, then stops scheduling, waits for
    /// probes in flight (up to `shutdown_timeout`) and records them.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> EngineStats {
        let mut due = Vec::new();
        loop {
            let wake = self.queue.next_wake();
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(done) = self.done_rx.recv() => self.complete(done).await,
                Some(slot) = self.cron_rx.recv() => self.fire(slot),
                _ = sleep_until_opt(wake) => {
                    due.clear();
                    self.queue.pop_due(Instant::now(), &mut due);
                    for &slot in &due {
                        self.fire(slot);
                    }
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

    /// Starts a probe of `slot` unless one is already running.
    fn fire(&mut self, slot: usize) {
        let Some(w) = self.conns.get_mut(slot) else {
            return;
        };
        if w.in_flight {
            self.stats.skipped_busy += 1;
            tracing::debug!(connection_id = %w.cfg.id, "previous probe still running; skipping this tick");
            return;
        }
        w.in_flight = true;
        self.stats.probes_started += 1;
        let request = Arc::clone(&w.request);
        let permits = Arc::clone(&self.permits);
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            // The semaphore is never closed, so this only waits.
            let _permit = permits.acquire_owned().await;
            let started_at = now_ms();
            let report = request.send().await;
            let _ = tx.send(Done {
                slot,
                started_at,
                report,
            });
        });
    }

    /// Classifies a finished probe, advances the health machine and queues
    /// the record (with any transition and its events) for the writer.
    async fn complete(&mut self, done: Done) {
        self.stats.probes_done += 1;
        let Some(w) = self.conns.get_mut(done.slot) else {
            return;
        };
        w.in_flight = false;
        let cfg = Arc::clone(&w.cfg);
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
        let thresholds = Thresholds {
            failure: cfg.breaker.failure_threshold,
            success: cfg.breaker.success_threshold,
        };
        let transition = w.health.observe(c.outcome, done.started_at, thresholds);
        tracing::debug!(
            connection_id = %cfg.id,
            outcome = %c.outcome,
            latency_ms = c.latency.as_millis() as u64,
            error = c.error.as_ref().map(|e| e.message.as_str()).unwrap_or(""),
            "probe"
        );
        let change = transition.map(|t| {
            self.stats.transitions += 1;
            let consecutive_failures = w.health.consecutive_failures;
            log_transition(&cfg, &t, &c);
            let events = events_for(
                &cfg,
                &t,
                &c,
                consecutive_failures,
                &self.sinks,
                &mut w.routes,
            );
            self.stats.events += events.len() as u64;
            Change {
                transition: t,
                consecutive_failures,
                events,
            }
        });
        let rec = ProbeRecord {
            conn: w.key,
            at: done.started_at,
            outcome: c.outcome,
            latency_ms: u32::try_from(c.latency.as_millis()).unwrap_or(u32::MAX),
            http_status: c.http_status,
            error: c.error,
            change,
        };
        self.writer.probe(rec).await;
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn log_transition(cfg: &Connection, t: &Transition, c: &Classified) {
    let error = c.error.as_ref().map(|e| e.message.as_str()).unwrap_or("");
    if t.current.is_failure() || matches!(t.current, Health::Is(Outcome::AuthRequired)) {
        tracing::warn!(connection_id = %cfg.id, previous = %t.previous, current = %t.current, error, "health changed");
    } else {
        tracing::info!(connection_id = %cfg.id, previous = %t.previous, current = %t.current, error, "health changed");
    }
}

/// The events a transition emits, each with the sinks it goes to. The
/// connection's `events` filter decides whether an event exists at all; each
/// sink's filter decides whether it gets a delivery.
fn events_for(
    cfg: &Connection,
    t: &Transition,
    c: &Classified,
    consecutive_failures: u32,
    sinks: &[Sink],
    routes: &mut HashMap<&'static str, Vec<String>>,
) -> Vec<NewEvent> {
    let mut kinds: Vec<&'static str> = vec![event::STATUS_CHANGED];
    match t.current {
        Health::Is(Outcome::AuthRequired) => kinds.push(event::AUTH_REQUIRED),
        Health::Is(Outcome::RateLimited) => kinds.push(event::RATE_LIMITED),
        _ => {}
    }
    let latency_ms = c.latency.as_millis() as u64;
    kinds
        .into_iter()
        .filter(|k| event::filter_matches(&cfg.events, k))
        .map(|kind| {
            let mut data = json!({
                "previous": t.previous.as_str(),
                "current": t.current.as_str(),
                "error": c.error,
                "latency_ms": latency_ms,
                "consecutive_failures": consecutive_failures,
                "circuit": "closed",
            });
            if let Some(ra) = c.retry_after {
                data["retry_after_ms"] = json!(ra.as_millis() as u64);
            }
            let envelope = Envelope::new(kind, t.at, Some(&cfg.id), data);
            let sinks = routes
                .entry(kind)
                .or_insert_with(|| {
                    sinks
                        .iter()
                        .filter(|s| {
                            cfg.sinks.contains(&s.id) && event::filter_matches(&s.events, kind)
                        })
                        .map(|s| s.id.clone())
                        .collect()
                })
                .clone();
            NewEvent { envelope, sinks }
        })
        .collect()
}
