//! Log lines of what one probe changed, in one place beside the metrics
//! (the events themselves are the policy's business).

use crate::config::Connection;
use crate::model::{rfc3339, Classified, Health};
use crate::monitor::{CircuitEvent, FlapEvent, Observed, ScopeObserved, SyncEvent};
use crate::policy::{self, Held};

/// The log lines of one probe's changes (the events are the policy's).
pub fn observed(cfg: &Connection, c: &Classified, obs: &Observed, held: Held, health: Health) {
    let id = &cfg.id;
    tracing::debug!(
        connection_id = %id,
        outcome = %c.outcome,
        latency_ms = c.latency.as_millis() as u64,
        error = c.error.as_ref().map(|e| e.message.as_str()).unwrap_or(""),
        "probe"
    );
    if let Some(f) = obs.flap {
        match f {
            FlapEvent::Started { percent } => {
                tracing::warn!(connection_id = %id, percent, "flapping started; per-change events held")
            }
            FlapEvent::Stopped { percent } => {
                tracing::info!(connection_id = %id, percent, %health, "flapping stopped")
            }
        }
    }
    if let Some(t) = obs.transition {
        let error = c.error.as_ref().map(|e| e.message.as_str()).unwrap_or("");
        let held = held.per_change.map(policy::Reason::as_str).unwrap_or("");
        let (previous, current) = (t.previous, t.current);
        if current.is_failure() || matches!(current, Health::Is(o) if o.needs_a_person()) {
            tracing::warn!(connection_id = %id, %previous, %current, error, held, "health changed");
        } else {
            tracing::info!(connection_id = %id, %previous, %current, error, held, "health changed");
        }
    }
    match obs.circuit {
        Some(CircuitEvent::Opened {
            consecutive_failures,
            until,
            ..
        }) => {
            tracing::warn!(connection_id = %id, consecutive_failures, until = %rfc3339(until), "circuit opened")
        }
        Some(CircuitEvent::Closed) => tracing::info!(connection_id = %id, "circuit closed"),
        _ => {}
    }
    if let Some(asked) = obs.rate_hold.and_then(|rh| rh.capped_from) {
        tracing::warn!(
            connection_id = %id,
            retry_after_s = asked.as_secs(),
            capped_s = cfg.retry_after_max.as_secs(),
            "Retry-After beyond retry_after_max; capped"
        );
    }
    if let (true, Some(sync)) = (obs.sync_pointer_missing, &cfg.expect.sync) {
        tracing::warn!(
            connection_id = %id,
            pointer = %sync.finished_at,
            probes = crate::monitor::sync::MISSING_AFTER,
            "no sync finish time at the configured pointer in the first bodies: check expect.sync (connwatch probe shows what each pointer reads)"
        );
    }
    for s in &obs.sync {
        if let SyncEvent::Stale { age_ms, .. } = s {
            tracing::warn!(connection_id = %id, age_s = age_ms / 1000, "sync is stale");
        }
    }
}

/// The log lines of one scope probe's changes.
pub fn scope_observed(cfg: &Connection, scope: &str, c: &Classified, obs: &ScopeObserved) {
    let id = &cfg.id;
    let error = c.error.as_ref().map(|e| e.message.as_str()).unwrap_or("");
    tracing::debug!(
        connection_id = %id,
        scope,
        outcome = %c.outcome,
        latency_ms = c.latency.as_millis() as u64,
        error,
        "scope probe"
    );
    if let Some(t) = obs.scope {
        let (previous, current) = (t.previous, t.current);
        if current == Health::Is(crate::model::Outcome::Online) || previous == Health::Unknown {
            tracing::info!(connection_id = %id, scope, %previous, %current, error, "scope changed");
        } else {
            tracing::warn!(connection_id = %id, scope, %previous, %current, error, "scope changed");
        }
    }
    if let Some(t) = obs.transition {
        let (previous, current) = (t.previous, t.current);
        if current == Health::Is(crate::model::Outcome::Online) {
            tracing::info!(connection_id = %id, scope, %previous, %current, "health changed with a scope");
        } else {
            tracing::warn!(connection_id = %id, scope, %previous, %current, "health changed with a scope");
        }
    }
    if let Some(rh) = obs.rate_hold {
        tracing::warn!(connection_id = %id, scope, until = %rfc3339(rh.until), "scope rate limited: the whole connection waits");
    }
}
