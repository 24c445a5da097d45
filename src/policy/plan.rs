//! From what a probe changed to the events that exist and who hears them.
//!
//! Status changes are told from the connection's alert memory, not from the
//! health machine's own transitions: `sent` is the health receivers last
//! heard, and a change is told when the confirmed health differs from it
//! and nothing holds per-change events back. So status changes chain (each
//! starts where the last one ended), never repeat a health, and a change
//! that came and went while held back is never told at all. A change made
//! while held back is recorded with its reason and no deliveries.

use super::{
    route::Routes, Delivery, Held, PageAction, Planned, Priority, Reason, Severity, SinkClass,
};
use crate::event::EventKind;
use crate::model::{rfc3339, Health, Outcome, ProbeError, UnixMs};
use crate::monitor::{CircuitEvent, FlapEvent, MonitorState, Observed, ScopeObserved, SyncEvent};
use serde_json::{json, Value};
use std::time::Duration;

/// What one probe brought, as the policy needs it.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    /// When the probe started.
    pub at: UnixMs,
    /// What it changed in the connection's state machines.
    pub observed: &'a Observed,
    pub error: Option<&'a ProbeError>,
    pub latency_ms: u64,
    /// What holds events back now.
    pub held: Held,
    /// The connection's `auth_interval` (told in `connection.auth_required`).
    pub auth_interval: Duration,
}

/// Why a connection's events are held back now, the strongest reason first:
/// a maintenance window, an operator's silence, a failing or suspected
/// parent (these hold every event), flapping (holds per-change events
/// only).
pub fn held(
    maintenance_until: Option<UnixMs>,
    silenced_until: Option<UnixMs>,
    now: UnixMs,
    parent: Option<&MonitorState>,
    own: &MonitorState,
) -> Held {
    let all = if maintenance_until.is_some_and(|t| now < t) {
        Some(Reason::Maintenance)
    } else if silenced_until.is_some_and(|t| now < t) {
        Some(Reason::Silenced)
    } else if parent.is_some_and(MonitorState::suspected) {
        Some(Reason::Parent)
    } else {
        None
    };
    Held {
        per_change: all.or(own.flap.flapping.then_some(Reason::Flapping)),
        other: all,
    }
}

/// The events of one probe, in order: flapping, the status change, the
/// circuit, syncs. Updates the alert memory in `st`.
pub fn after_probe(st: &mut MonitorState, p: &Probe<'_>, routes: &Routes) -> Vec<Planned> {
    let cx = Cx {
        at: p.at,
        routes,
        error: p.error,
        latency_ms: Some(p.latency_ms),
        auth_interval: p.auth_interval,
    };
    let mut out = Vec::new();
    if let Some(f) = p.observed.flap {
        flap(st, f, &cx, p.held.other, &mut out);
    }
    if let (Some(t), Some(reason)) = (p.observed.transition, p.held.per_change) {
        // Recorded, not sent; an online baseline is not even recorded.
        if !is_baseline(t.previous, t.current) {
            status(st, t.previous, t.current, &cx, Some(reason), &mut out);
        }
    }
    if p.held.per_change.is_none() {
        catch_up_into(st, &cx, &mut out);
    }
    if let Some(c) = p.observed.circuit {
        circuit(c, &cx, p.held.per_change, &mut out);
    }
    for s in &p.observed.sync {
        sync(s, &cx, p.held.other, &mut out);
    }
    out
}

/// What one probe of a scope brought, as the policy needs it.
#[derive(Debug, Clone, Copy)]
pub struct ScopeProbe<'a> {
    pub at: UnixMs,
    /// The scope's id.
    pub scope: &'a str,
    pub observed: &'a ScopeObserved,
    pub error: Option<&'a ProbeError>,
    pub held: Held,
}

/// The events of one probe of a scope: `connection.scope_changed` when
/// the scope's confirmed health changed (its first health, when online, is
/// a baseline, told to no one), then the connection's status change if
/// that moved it. Updates the alert memory in `st`.
pub fn after_scope(st: &mut MonitorState, p: &ScopeProbe<'_>, routes: &Routes) -> Vec<Planned> {
    let cx = Cx {
        at: p.at,
        routes,
        error: None,
        latency_ms: None,
        auth_interval: Duration::ZERO,
    };
    let mut out = Vec::new();
    if let Some(t) = p
        .observed
        .scope
        .filter(|t| !is_baseline(t.previous, t.current))
    {
        let data = json!({
            "scope": p.scope,
            "previous": t.previous.as_str(),
            "current": t.current.as_str(),
            "error": p.error,
        });
        push(
            &mut out,
            routes,
            EventKind::ScopeChanged,
            data,
            p.held.other,
            Priority::Info,
            None,
        );
    }
    if let (Some(t), Some(reason)) = (p.observed.transition, p.held.per_change) {
        if !is_baseline(t.previous, t.current) {
            status(st, t.previous, t.current, &cx, Some(reason), &mut out);
        }
    }
    if p.held.per_change.is_none() {
        catch_up_into(st, &cx, &mut out);
    }
    out
}

/// `circuit.half_opened`, when a trial probe is about to be sent.
pub fn after_trial(at: UnixMs, held: Held, routes: &Routes) -> Vec<Planned> {
    let cx = Cx {
        at,
        routes,
        error: None,
        latency_ms: None,
        auth_interval: Duration::ZERO,
    };
    let mut out = Vec::new();
    circuit(CircuitEvent::HalfOpened, &cx, held.per_change, &mut out);
    out
}

/// When what held events back has ended (no probe): the change receivers
/// have not heard, if any.
pub fn catch_up(
    st: &mut MonitorState,
    at: UnixMs,
    auth_interval: Duration,
    routes: &Routes,
) -> Vec<Planned> {
    let cx = Cx {
        at,
        routes,
        error: None,
        latency_ms: None,
        auth_interval,
    };
    let mut out = Vec::new();
    catch_up_into(st, &cx, &mut out);
    out
}

/// A connection's first confirmed health, when it is `online`: recorded in
/// history and status, told to no one.
fn is_baseline(previous: Health, current: Health) -> bool {
    previous == Health::Unknown && current == Health::Is(Outcome::Online)
}

struct Cx<'a> {
    at: UnixMs,
    routes: &'a Routes,
    error: Option<&'a ProbeError>,
    latency_ms: Option<u64>,
    auth_interval: Duration,
}

fn catch_up_into(st: &mut MonitorState, cx: &Cx<'_>, out: &mut Vec<Planned>) {
    let current = st.current();
    if current == Health::Unknown || current == st.sent {
        return;
    }
    let previous = std::mem::replace(&mut st.sent, current);
    if !is_baseline(previous, current) {
        status(st, previous, current, cx, None, out);
    }
}

/// `connection.status_changed`, plus `connection.auth_required` or
/// `connection.rate_limited` when the new health is one of those.
fn status(
    st: &mut MonitorState,
    previous: Health,
    current: Health,
    cx: &Cx<'_>,
    suppressed: Option<Reason>,
    out: &mut Vec<Planned>,
) {
    // When the scopes decided the health, they say why.
    let scopes = st.combined().error;
    let error = scopes
        .as_ref()
        .or(cx.error)
        .map(|e| json!(e))
        .unwrap_or(Value::Null);
    let (priority, page) = match suppressed {
        Some(_) => (Priority::Info, None),
        None => (
            Priority::of_change(previous, current),
            PageAction::next(&mut st.paged, current),
        ),
    };
    // The outage this change belongs to: opened by a first trigger, told
    // with every change until (and with) its resolve.
    if let Some(PageAction::Trigger { replaces: None, .. }) = page {
        st.outage_since = Some(cx.at);
    }
    let outage = st.outage_since;
    if let Some(PageAction::Resolve { .. }) = page {
        st.outage_since = None;
    }
    let data = json!({
        "previous": previous.as_str(),
        "current": current.as_str(),
        "severity": Severity::of(current).map(Severity::as_str),
        "outage_started_at": outage.map(rfc3339),
        "error": error,
        "latency_ms": cx.latency_ms,
        "consecutive_failures": st.health.consecutive_failures,
        "circuit": st.breaker.circuit.as_str(),
    });
    push(
        out,
        cx.routes,
        EventKind::StatusChanged,
        data,
        suppressed,
        priority,
        page,
    );
    let extra = match current {
        Health::Is(Outcome::AuthRequired) => Some((
            EventKind::AuthRequired,
            json!({
                "error": error,
                "auth_interval_s": cx.auth_interval.as_secs(),
                "next_probe_at": st.hold.auth_until.map(rfc3339),
            }),
        )),
        Health::Is(Outcome::RateLimited) => Some((
            EventKind::RateLimited,
            json!({
                "error": error,
                "retry_after_s": st.hold.rate_limited_until.map(|t| ((t - cx.at).max(0) + 999) / 1000),
                "retry_at": st.hold.rate_limited_until.map(rfc3339),
            }),
        )),
        _ => None,
    };
    if let Some((kind, data)) = extra {
        push(out, cx.routes, kind, data, suppressed, priority, None);
    }
}

fn circuit(c: CircuitEvent, cx: &Cx<'_>, suppressed: Option<Reason>, out: &mut Vec<Planned>) {
    let (kind, data) = match c {
        CircuitEvent::Opened {
            consecutive_failures,
            failure_rate,
            until,
            reopen,
        } => (
            EventKind::CircuitOpened,
            json!({
                "consecutive_failures": consecutive_failures,
                "failure_rate": failure_rate,
                "open_for_ms": until - cx.at,
                "next_trial_at": rfc3339(until),
                "reopened": reopen > 0,
            }),
        ),
        CircuitEvent::HalfOpened => (
            EventKind::CircuitHalfOpened,
            json!({ "trial_at": rfc3339(cx.at) }),
        ),
        CircuitEvent::Closed => (EventKind::CircuitClosed, json!({})),
    };
    push(out, cx.routes, kind, data, suppressed, Priority::Info, None);
}

fn flap(
    st: &MonitorState,
    f: FlapEvent,
    cx: &Cx<'_>,
    suppressed: Option<Reason>,
    out: &mut Vec<Planned>,
) {
    let (kind, percent) = match f {
        FlapEvent::Started { percent } => (EventKind::FlappingStarted, percent),
        FlapEvent::Stopped { percent } => (EventKind::FlappingStopped, percent),
    };
    let data = json!({
        "percent_state_change": (percent * 10.0).round() / 10.0,
        "health": st.current().as_str(),
    });
    push(out, cx.routes, kind, data, suppressed, Priority::Info, None);
}

fn sync(s: &SyncEvent, cx: &Cx<'_>, suppressed: Option<Reason>, out: &mut Vec<Planned>) {
    let (kind, data) = match s {
        SyncEvent::Completed {
            status,
            finished_at,
        } => (
            EventKind::SyncCompleted,
            json!({ "status": status, "finished_at": rfc3339(*finished_at) }),
        ),
        SyncEvent::Failed {
            status,
            finished_at,
        } => (
            EventKind::SyncFailed,
            json!({ "status": status, "finished_at": rfc3339(*finished_at) }),
        ),
        SyncEvent::Stale {
            finished_at,
            age_ms,
        } => (
            EventKind::SyncStale,
            json!({ "finished_at": rfc3339(*finished_at), "age_s": age_ms / 1000 }),
        ),
    };
    push(out, cx.routes, kind, data, suppressed, Priority::Info, None);
}

/// Adds the event if the connection emits its kind, with a delivery to each
/// sink that takes it. A paging sink hears a status change only through
/// `page` (none: it hears nothing of this change); other kinds that a
/// paging sink's `events` names go to it as they are.
fn push(
    out: &mut Vec<Planned>,
    routes: &Routes,
    kind: EventKind,
    data: Value,
    suppressed: Option<Reason>,
    priority: Priority,
    page: Option<PageAction>,
) {
    if !routes.emits(kind) {
        return;
    }
    let deliveries = match suppressed {
        Some(_) => Vec::new(),
        None => routes
            .to(kind)
            .iter()
            .filter_map(|r| match (r.class, kind) {
                (SinkClass::Paging, EventKind::StatusChanged) => page.map(|a| Delivery {
                    sink: r.sink.clone(),
                    priority: a.priority(),
                    action: Some(a),
                }),
                _ => Some(Delivery {
                    sink: r.sink.clone(),
                    priority,
                    action: None,
                }),
            })
            .collect(),
    };
    out.push(Planned {
        kind,
        data,
        suppressed,
        deliveries,
    });
}
