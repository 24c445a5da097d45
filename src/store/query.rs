//! Reads behind `status` and `history`. They run on a read-only connection
//! while the daemon writes (WAL lets readers and the writer proceed together).

use super::{sq, Result, Store};
use crate::model::{Outcome, ProbeError, UnixMs};
use crate::store::writer::stored_error;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

/// One line of `connwatch status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    #[serde(skip)]
    pub key: i64,
    pub id: String,
    pub name: Option<String>,
    pub health: String,
    pub circuit: String,
    /// When the current health was confirmed (RFC 3339), if ever.
    pub since: Option<String>,
    pub last_outcome: Option<String>,
    pub last_probe_at: Option<String>,
    pub last_latency_ms: Option<i64>,
    pub last_error: Option<ProbeError>,
    pub consecutive_failures: i64,
    /// When the next probe is due, if known (null while paused by the parent).
    pub next_probe_at: Option<String>,
    /// Why then: `cadence`, `circuit_open`, `retry_after`, `auth_backoff`,
    /// `paused_by_parent`.
    pub next_probe_reason: String,
    /// While the circuit is open: when the trial probe is allowed.
    pub next_trial_at: Option<String>,
    /// While the health is not online: if the connection recovered now,
    /// at most this many seconds until `online` is confirmed and resolved
    /// (the next probe, then `success_threshold` probes in a row; an open
    /// circuit's trial comes at the first tick after its wait). Null while
    /// online, unknown, or paused by the parent.
    pub resolve_within_s: Option<i64>,
    /// Why events are held back now, if they are: `maintenance`, `parent`,
    /// `flapping`.
    pub suppressed: Option<String>,
    /// The daemon is not keeping this row current (not running, or not
    /// writing): what it shows is as of its last write, and nothing is
    /// due.
    pub stale: bool,
    /// The operator's silence in force on it, if any.
    pub silence: Option<SilenceNote>,
    pub flapping: bool,
    /// What the operator should know: `sync_pointer_missing` (the
    /// configured sync pointer found nothing in the first bodies).
    pub notes: Vec<String>,
    /// Its scopes (`[[connection.scope]]`), by id.
    pub scopes: Vec<ScopeRow>,
    /// The health receivers were last sent.
    pub sent_health: Option<String>,
    pub cadence: Option<String>,
    pub depends_on: Option<String>,
    /// Where it came from: the `[[discovery]]` source's id, or null for a
    /// connection of the configuration file.
    pub origin: Option<String>,
    #[serde(skip)]
    pub since_ms: Option<UnixMs>,
    #[serde(skip)]
    pub last_probe_ms: Option<UnixMs>,
    #[serde(skip)]
    pub next_probe_ms: Option<UnixMs>,
}

/// One scope of a connection, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ScopeRow {
    pub id: String,
    /// Its confirmed health (`unknown` until its first probe).
    pub health: String,
    pub since: Option<String>,
    pub last_outcome: Option<String>,
    pub last_probe_at: Option<String>,
    pub last_error: Option<ProbeError>,
    /// `every 5m`.
    pub cadence: Option<String>,
    #[serde(skip)]
    pub last_probe_ms: Option<UnixMs>,
}

impl ScopeRow {
    /// Whether it counts against its connection (see
    /// [`crate::monitor::scope::failing`]).
    pub fn failing(&self) -> bool {
        crate::model::Health::parse(&self.health).is_some_and(crate::monitor::scope::failing)
    }
}

impl StatusRow {
    /// Marks the row as not kept current: nothing is due while no daemon
    /// runs.
    pub fn mark_stale(&mut self) {
        self.stale = true;
        self.next_probe_at = None;
        self.next_probe_ms = None;
        self.next_probe_reason = "daemon_not_running".into();
        self.next_trial_at = None;
        self.resolve_within_s = None;
    }
}

/// Whether a daemon keeps the database current, at `now`.
pub fn daemon_running(store: &Store, now: UnixMs) -> Result<super::daemon_row::Running> {
    let row = super::daemon_row::read(&store.db).map_err(|e| sq(&store.path, e))?;
    Ok(super::daemon_row::Running::judge(
        row.as_ref(),
        now,
        super::daemon_row::is_connwatch,
    ))
}

/// A silence as a status row shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SilenceNote {
    pub id: String,
    pub ends_at: String,
    pub reason: String,
    pub created_by: String,
    #[serde(skip)]
    pub ends_ms: UnixMs,
}

/// The connection columns `status` reads.
struct ConnRow {
    key: i64,
    id: String,
    name: Option<String>,
    health: String,
    since: Option<i64>,
    circuit: String,
    consecutive_failures: i64,
    state: Option<String>,
    hold_until: Option<i64>,
    hold_reason: Option<String>,
    suppressed: Option<String>,
    sent_health: Option<String>,
    cadence: Option<String>,
    interval_ms: Option<i64>,
    depends_on: Option<String>,
    success_threshold: Option<i64>,
    origin: Option<String>,
}

/// Every configured connection, in id order, as of `now`.
pub fn status(store: &Store, now: UnixMs) -> Result<Vec<StatusRow>> {
    status_where(store, now, None)
}

/// One configured connection's status row, if there is one.
pub fn status_of(store: &Store, now: UnixMs, id: &str) -> Result<Option<StatusRow>> {
    Ok(status_where(store, now, Some(id))?.pop())
}

fn status_where(store: &Store, now: UnixMs, id: Option<&str>) -> Result<Vec<StatusRow>> {
    let p = &store.path;
    let mut stmt = store
        .db
        .prepare(
            "SELECT key, id, name, health, health_since, circuit, consecutive_failures, state, hold_until,
                    hold_reason, suppressed, sent_health, cadence, interval_ms, depends_on, success_threshold, origin
             FROM connections WHERE configured = 1 AND scope_of IS NULL AND (?1 IS NULL OR id = ?1) ORDER BY id",
        )
        .map_err(|e| sq(p, e))?;
    let rows: Vec<ConnRow> = stmt
        .query_map([id], |r| {
            Ok(ConnRow {
                key: r.get(0)?,
                id: r.get(1)?,
                name: r.get(2)?,
                health: r.get(3)?,
                since: r.get(4)?,
                circuit: r.get(5)?,
                consecutive_failures: r.get(6)?,
                state: r.get(7)?,
                hold_until: r.get(8)?,
                hold_reason: r.get(9)?,
                suppressed: r.get(10)?,
                sent_health: r.get(11)?,
                cadence: r.get(12)?,
                interval_ms: r.get(13)?,
                depends_on: r.get(14)?,
                success_threshold: r.get(15)?,
                origin: r.get(16)?,
            })
        })
        .map_err(|e| sq(p, e))?
        .collect::<rusqlite::Result<_>>()
        .map_err(|e| sq(p, e))?;
    let silences = super::silences::current(&store.db, now).map_err(|e| sq(p, e))?;
    let mut scopes = scope_rows(store, id)?;
    let mut out = Vec::with_capacity(rows.len());
    for c in rows {
        let last = last_probe(store, c.key)?;
        let silence = silences
            .iter()
            .filter(|s| s.active(now) && s.covers(&c.id))
            .max_by_key(|s| s.until())
            .map(|s| SilenceNote {
                id: s.id.clone(),
                ends_at: crate::model::rfc3339(s.until()),
                reason: s.reason.clone(),
                created_by: s.created_by.clone(),
                ends_ms: s.until(),
            });
        let state = c
            .state
            .as_deref()
            .and_then(|j| serde_json::from_str::<crate::monitor::MonitorState>(j).ok());
        let flapping = state.as_ref().is_some_and(|s| s.flap.flapping);
        let mut notes = Vec::new();
        if state.as_ref().is_some_and(|s| s.sync.pointer_missing()) {
            notes.push("sync_pointer_missing".to_string());
        }
        let (next_ms, reason) = match (c.hold_reason.as_deref(), c.hold_until) {
            (Some("paused_by_parent"), _) => (None, "paused_by_parent".to_string()),
            (Some(r), Some(t)) if t > now => (Some(t), r.to_string()),
            _ => {
                let next = match (c.interval_ms, &c.cadence) {
                    // The next tick of the grid after now (the last probe
                    // read here may lag by up to history_flush).
                    (Some(iv), _) if iv > 0 => last.as_ref().map(|l| {
                        let k = ((now - l.at) / iv + 1).max(1);
                        l.at + k * iv
                    }),
                    (None, Some(expr)) => next_cron(expr, now),
                    _ => None,
                };
                (next, "cadence".to_string())
            }
        };
        let next_trial_ms = next_ms.filter(|_| reason == "circuit_open");
        let resolve_within_s = match (c.health.as_str(), next_ms) {
            ("online" | "unknown", _) | (_, None) => None,
            (_, Some(next)) => {
                let st = c.success_threshold.unwrap_or(1).max(1);
                let last = match (c.interval_ms, &c.cadence) {
                    // A held probe goes at the first tick after the hold.
                    (Some(iv), _) if iv > 0 => {
                        let slack = if reason == "cadence" { 0 } else { iv };
                        Some(next + slack + (st - 1) * iv)
                    }
                    (None, Some(expr)) => {
                        let first = if reason == "cadence" {
                            Some(next)
                        } else {
                            next_cron(expr, next)
                        };
                        first.and_then(|f| (1..st).try_fold(f, |t, _| next_cron(expr, t)))
                    }
                    _ => None,
                };
                last.map(|t| ((t - now).max(0) + 999) / 1000)
            }
        };
        let conn_scopes = scopes.remove(&c.id).unwrap_or_default();
        out.push(StatusRow {
            key: c.key,
            id: c.id,
            name: c.name,
            health: c.health,
            circuit: c.circuit,
            since: c.since.map(crate::model::rfc3339),
            last_outcome: last.as_ref().map(|l| l.outcome.as_str().to_string()),
            last_probe_at: last.as_ref().map(|l| crate::model::rfc3339(l.at)),
            last_latency_ms: last.as_ref().map(|l| l.latency_ms),
            last_error: last.as_ref().and_then(|l| l.error.clone()),
            consecutive_failures: c.consecutive_failures,
            next_probe_at: next_ms.map(crate::model::rfc3339),
            next_probe_reason: reason,
            next_trial_at: next_trial_ms.map(crate::model::rfc3339),
            resolve_within_s,
            suppressed: c.suppressed,
            stale: false,
            silence,
            flapping,
            notes,
            scopes: conn_scopes,
            sent_health: c.sent_health,
            cadence: c.cadence,
            depends_on: c.depends_on,
            origin: c.origin,
            since_ms: c.since,
            last_probe_ms: last.as_ref().map(|l| l.at),
            next_probe_ms: next_ms,
        });
    }
    Ok(out)
}

/// A discovery source as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceRow {
    pub source: String,
    /// Connections in its last good set.
    pub connections: usize,
    pub refreshed_ms: Option<UnixMs>,
    /// A large shrink waiting for agreement: "would retire 40 of 50; 1 of 3 answers agree".
    pub held: Option<String>,
    /// Failing since (Unix ms), and the last error.
    pub failing: Option<(UnixMs, String)>,
}

/// Every stored discovery source.
pub fn sources(store: &Store) -> Result<Vec<SourceRow>> {
    let all = super::discovery::load(&store.db).map_err(|e| sq(&store.path, e))?;
    Ok(all
        .into_iter()
        .map(|(source, s)| {
            let t = s.tracker;
            let connections = t.set.as_ref().map_or(0, Vec::len);
            SourceRow {
                source,
                held: t.held.as_ref().map(|h| {
                    format!(
                        "would retire {} of {}; {} of {} answers in a row agree",
                        h.retiring,
                        connections,
                        h.agree,
                        crate::discovery::tracker::AGREE
                    )
                }),
                connections,
                refreshed_ms: s.refreshed_at,
                failing: t.failing,
            }
        })
        .collect())
}

/// The configured scopes of every connection (or of connection `id`), by
/// connection id, each list in scope id order.
fn scope_rows(
    store: &Store,
    id: Option<&str>,
) -> Result<std::collections::HashMap<String, Vec<ScopeRow>>> {
    let p = &store.path;
    let mut stmt = store
        .db
        .prepare(
            "SELECT key, id, scope_of, health, health_since, cadence FROM connections
             WHERE configured = 1 AND scope_of IS NOT NULL AND (?1 IS NULL OR scope_of = ?1)
             ORDER BY scope_of, id",
        )
        .map_err(|e| sq(p, e))?;
    type Raw = (i64, String, String, String, Option<i64>, Option<String>);
    let raw: Vec<Raw> = stmt
        .query_map([id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .map_err(|e| sq(p, e))?
        .collect::<rusqlite::Result<_>>()
        .map_err(|e| sq(p, e))?;
    let mut out: std::collections::HashMap<String, Vec<ScopeRow>> = Default::default();
    for (key, row_id, conn, health, since, cadence) in raw {
        let last = last_probe(store, key)?;
        let scope = row_id
            .strip_prefix(&format!("{conn}/"))
            .unwrap_or(&row_id)
            .to_string();
        out.entry(conn).or_default().push(ScopeRow {
            id: scope,
            health,
            since: since.map(crate::model::rfc3339),
            last_outcome: last.as_ref().map(|l| l.outcome.as_str().to_string()),
            last_probe_at: last.as_ref().map(|l| crate::model::rfc3339(l.at)),
            last_error: last.as_ref().and_then(|l| l.error.clone()),
            cadence,
            last_probe_ms: last.as_ref().map(|l| l.at),
        });
    }
    Ok(out)
}

/// Connection id, scope id and health of every configured scope: what
/// `/metrics` needs.
pub fn scope_health(store: &Store) -> Result<Vec<(String, String, &'static str)>> {
    let p = &store.path;
    let mut s = store
        .db
        .prepare(
            "SELECT scope_of, id, health FROM connections
             WHERE configured = 1 AND scope_of IS NOT NULL ORDER BY scope_of, id",
        )
        .map_err(|e| sq(p, e))?;
    let rows = s
        .query_map([], |r| {
            let conn: String = r.get(0)?;
            let row: String = r.get(1)?;
            let health = r.get_ref(2)?.as_str().unwrap_or("");
            let health = crate::model::Health::parse(health).map_or("unknown", |h| h.as_str());
            let scope = row
                .strip_prefix(&format!("{conn}/"))
                .unwrap_or(&row)
                .to_string();
            Ok((conn, scope, health))
        })
        .map_err(|e| sq(p, e))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| sq(p, e))?;
    Ok(rows)
}

fn next_cron(expr: &str, now: UnixMs) -> Option<UnixMs> {
    let cron = croner::Cron::new(expr)
        .with_seconds_required()
        .with_dom_and_dow()
        .parse()
        .ok()?;
    let from = chrono::DateTime::from_timestamp_millis(now)?;
    cron.find_next_occurrence(&from, false)
        .ok()
        .map(|d| d.timestamp_millis())
}

struct Last {
    at: UnixMs,
    outcome: Outcome,
    latency_ms: i64,
    error: Option<ProbeError>,
}

/// The latest recorded probe: the newer of the last full probe row and the
/// end of the last online run.
fn last_probe(store: &Store, key: i64) -> Result<Option<Last>> {
    let p = &store.path;
    let full = store
        .db
        .prepare_cached(
            "SELECT at, outcome, latency_ms, error_kind, error_message, http_status FROM probes
             WHERE conn = ?1 ORDER BY at DESC LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row([key], |r| {
                Ok(Last {
                    at: r.get(0)?,
                    outcome: Outcome::from_code(r.get(1)?).unwrap_or(Outcome::Invalid),
                    latency_ms: r.get(2)?,
                    error: stored_error(r.get(3)?, r.get(4)?, r.get(5)?),
                })
            })
            .optional()
        })
        .map_err(|e| sq(p, e))?;
    let run = store
        .db
        .prepare_cached(
            "SELECT last_at, latency_max FROM probe_runs WHERE conn = ?1 ORDER BY last_at DESC LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row([key], |r| {
                Ok(Last { at: r.get(0)?, outcome: Outcome::Online, latency_ms: r.get(1)?, error: None })
            })
            .optional()
        })
        .map_err(|e| sq(p, e))?;
    // An online transition is written before its run is flushed.
    let tr = store
        .db
        .prepare_cached(
            "SELECT at, latency_ms FROM transitions WHERE conn = ?1 AND current = 'online' ORDER BY at DESC LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row([key], |r| {
                Ok(Last { at: r.get(0)?, outcome: Outcome::Online, latency_ms: r.get::<_, Option<i64>>(1)?.unwrap_or(0), error: None })
            })
            .optional()
        })
        .map_err(|e| sq(p, e))?;
    Ok([full, run, tr].into_iter().flatten().max_by_key(|l| l.at))
}

/// One line of `connwatch history`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HistoryItem {
    /// A probe that was not online.
    Probe {
        at: String,
        outcome: Outcome,
        latency_ms: i64,
        http_status: Option<i64>,
        error: Option<ProbeError>,
        #[serde(skip)]
        at_ms: UnixMs,
    },
    /// A run of consecutive online probes, collapsed.
    OnlineRun {
        at: String,
        until: String,
        count: i64,
        latency_ms_min: i64,
        latency_ms_avg: i64,
        latency_ms_max: i64,
        #[serde(skip)]
        at_ms: UnixMs,
    },
    /// A confirmed health change.
    Transition {
        at: String,
        previous: String,
        current: String,
        error: Option<ProbeError>,
        consecutive_failures: i64,
        #[serde(skip)]
        at_ms: UnixMs,
    },
}

impl HistoryItem {
    pub fn at_ms(&self) -> UnixMs {
        match self {
            HistoryItem::Probe { at_ms, .. }
            | HistoryItem::OnlineRun { at_ms, .. }
            | HistoryItem::Transition { at_ms, .. } => *at_ms,
        }
    }
}

/// Probes, online runs and transitions of one connection since `since`, oldest first.
pub fn history(store: &Store, key: i64, since: UnixMs, limit: usize) -> Result<Vec<HistoryItem>> {
    let p = &store.path;
    let rfc = crate::model::rfc3339;
    let mut items = Vec::new();
    let mut s = store
        .db
        .prepare(
            "SELECT at, outcome, latency_ms, http_status, error_kind, error_message FROM probes
             WHERE conn = ?1 AND at >= ?2 ORDER BY at DESC LIMIT ?3",
        )
        .map_err(|e| sq(p, e))?;
    let rows = s
        .query_map(params![key, since, limit as i64], |r| {
            let at: i64 = r.get(0)?;
            let status: Option<i64> = r.get(3)?;
            Ok(HistoryItem::Probe {
                at: rfc(at),
                outcome: Outcome::from_code(r.get(1)?).unwrap_or(Outcome::Invalid),
                latency_ms: r.get(2)?,
                http_status: status,
                error: stored_error(
                    r.get(4)?,
                    r.get(5)?,
                    status.and_then(|s| u16::try_from(s).ok()),
                ),
                at_ms: at,
            })
        })
        .map_err(|e| sq(p, e))?;
    for r in rows {
        items.push(r.map_err(|e| sq(p, e))?);
    }
    let mut s = store
        .db
        .prepare(
            "SELECT first_at, last_at, count, latency_min, latency_sum, latency_max FROM probe_runs
             WHERE conn = ?1 AND last_at >= ?2 ORDER BY last_at DESC LIMIT ?3",
        )
        .map_err(|e| sq(p, e))?;
    let rows = s
        .query_map(params![key, since, limit as i64], |r| {
            let first: i64 = r.get(0)?;
            let count: i64 = r.get(2)?;
            Ok(HistoryItem::OnlineRun {
                at: rfc(first),
                until: rfc(r.get(1)?),
                count,
                latency_ms_min: r.get(3)?,
                latency_ms_avg: r.get::<_, i64>(4)? / count.max(1),
                latency_ms_max: r.get(5)?,
                at_ms: first,
            })
        })
        .map_err(|e| sq(p, e))?;
    for r in rows {
        items.push(r.map_err(|e| sq(p, e))?);
    }
    let mut s = store
        .db
        .prepare(
            "SELECT at, previous, current, error_kind, error_message, http_status, consecutive_failures FROM transitions
             WHERE conn = ?1 AND at >= ?2 ORDER BY at DESC LIMIT ?3",
        )
        .map_err(|e| sq(p, e))?;
    let rows = s
        .query_map(params![key, since, limit as i64], |r| {
            let at: i64 = r.get(0)?;
            Ok(HistoryItem::Transition {
                at: rfc(at),
                previous: r.get(1)?,
                current: r.get(2)?,
                error: stored_error(r.get(3)?, r.get(4)?, r.get(5)?),
                consecutive_failures: r.get(6)?,
                at_ms: at,
            })
        })
        .map_err(|e| sq(p, e))?;
    for r in rows {
        items.push(r.map_err(|e| sq(p, e))?);
    }
    // Oldest first; a transition sorts after the probe that caused it.
    items.sort_by_key(|i| (i.at_ms(), matches!(i, HistoryItem::Transition { .. })));
    if items.len() > limit {
        items.drain(..items.len() - limit);
    }
    Ok(items)
}

/// Id, health and circuit code (0 closed, 1 half-open, 2 open) of every
/// configured connection: what `/metrics` needs. No state is parsed, and
/// only the id is copied per row.
pub fn health_and_circuit(store: &Store) -> Result<Vec<(String, &'static str, u8)>> {
    let p = &store.path;
    let mut s = store
        .db
        .prepare("SELECT id, health, circuit FROM connections WHERE configured = 1 AND scope_of IS NULL ORDER BY id")
        .map_err(|e| sq(p, e))?;
    let rows = s
        .query_map([], |r| {
            let health = r.get_ref(1)?.as_str().unwrap_or("");
            let health = crate::model::Health::parse(health).map_or("unknown", |h| h.as_str());
            let circuit = match r.get_ref(2)?.as_str().unwrap_or("") {
                "open" => 2,
                "half_open" => 1,
                _ => 0,
            };
            Ok((r.get(0)?, health, circuit))
        })
        .map_err(|e| sq(p, e))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| sq(p, e))?;
    Ok(rows)
}

/// One hour of one connection's rollup.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Hourly {
    /// Unix ms of the hour's start.
    pub hour: UnixMs,
    pub count: i64,
    pub failures: i64,
    pub latency_p50_ms: i64,
    pub latency_p95_ms: i64,
}

/// The hourly rollups of connection `key` from `since` on, oldest first.
pub fn hourly(store: &Store, key: i64, since: UnixMs) -> Result<Vec<Hourly>> {
    let p = &store.path;
    let mut s = store
        .db
        .prepare_cached(
            "SELECT hour, count, failures, latency_p50, latency_p95 FROM rollups
             WHERE conn = ?1 AND hour >= ?2 ORDER BY hour",
        )
        .map_err(|e| sq(p, e))?;
    let rows = s
        .query_map(params![key, since], |r| {
            Ok(Hourly {
                hour: r.get(0)?,
                count: r.get(1)?,
                failures: r.get(2)?,
                latency_p50_ms: r.get(3)?,
                latency_p95_ms: r.get(4)?,
            })
        })
        .map_err(|e| sq(p, e))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| sq(p, e))?;
    Ok(rows)
}
