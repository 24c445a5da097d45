//! Pure per-connection state machines, time passed in.
//!
//! - [`health`]: outcomes -> confirmed health;
//! - [`breaker`]: the circuit breaker;
//! - [`hold`]: Retry-After / backoff and the slow cadence of `auth_required`;
//! - [`flap`]: Nagios-style flap detection;
//! - [`sync`]: sync freshness.
//!
//! [`MonitorState`] holds them all for one connection, decides whether a
//! probe may be sent ([`MonitorState::gate`]) and takes each classified
//! probe ([`MonitorState::observe`]). It is serialised into the database so
//! a restart resumes it (an open breaker stays open; a Retry-After deadline
//! still holds). It also carries the connection's alert memory (`sent`,
//! `paged`), which only [`crate::policy`] changes.

pub mod breaker;
pub mod flap;
pub mod health;
pub mod hold;
pub mod scope;
pub mod sync;

pub use breaker::{BreakerState, Circuit, CircuitEvent};
pub use flap::{FlapEvent, FlapState};
pub use health::{HealthMachine, Thresholds, Transition};
pub use hold::{HoldSettings, HoldState, RateHold};
pub use scope::{Combined, ScopeState};
pub use sync::{SyncEvent, SyncState};

use crate::config::Connection;
use crate::model::{Classified, Health, Outcome, UnixMs};
use crate::policy::Severity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Base of the rate-limit backoff for cron connections (no interval).
pub const CRON_BACKOFF_BASE: std::time::Duration = std::time::Duration::from_secs(60);

/// Everything connwatch remembers about one connection.
#[derive(Debug, Clone, PartialEq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitorState {
    pub health: HealthMachine,
    pub breaker: BreakerState,
    pub hold: HoldState,
    pub flap: FlapState,
    pub sync: SyncState,
    /// The health receivers were last told (the last `status_changed` that
    /// was not held back). Held-back changes are caught up from here (see
    /// [`crate::policy`]).
    pub sent: Health,
    /// The severity paging sinks were last triggered with, while an
    /// incident is open (see [`crate::policy::page`]).
    pub paged: Option<Severity>,
    /// When the open incident began (its first trigger's time): told with
    /// each status change of the outage, so receivers can thread them.
    pub outage_since: Option<UnixMs>,
    /// Each configured scope's confirmed health, by scope id.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub scopes: BTreeMap<String, ScopeState>,
}

impl Default for MonitorState {
    fn default() -> Self {
        MonitorState {
            health: HealthMachine::default(),
            breaker: BreakerState::default(),
            hold: HoldState::default(),
            flap: FlapState::default(),
            sync: SyncState::default(),
            sent: Health::Unknown,
            paged: None,
            outage_since: None,
            scopes: BTreeMap::new(),
        }
    }
}

/// What one probe changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub transition: Option<Transition>,
    pub circuit: Option<CircuitEvent>,
    pub rate_hold: Option<RateHold>,
    pub flap: Option<FlapEvent>,
    pub sync: Vec<SyncEvent>,
    /// The configured sync pointer was found missing with this probe.
    pub sync_pointer_missing: bool,
}

/// What one probe of a scope changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScopeObserved {
    /// The scope's confirmed health changed.
    pub scope: Option<Transition>,
    /// The connection's health changed with it.
    pub transition: Option<Transition>,
    /// A 429 on the scope holds the whole connection.
    pub rate_hold: Option<RateHold>,
}

/// Uniform draws in [0, 1) for the jitter of the breaker and the backoff.
#[derive(Debug, Clone, Copy)]
pub struct Draws {
    pub breaker: f64,
    pub backoff: f64,
}

impl MonitorState {
    /// Why a probe must not be sent at `now`, and until when.
    pub fn gate(&self, now: UnixMs) -> Option<(UnixMs, &'static str)> {
        if let Some(t) = self.breaker.blocked_until(now) {
            return Some((t, "circuit_open"));
        }
        self.hold.blocked_until(now)
    }

    /// The connection's health and, when its scopes decided it, the error
    /// that says why ([`scope::combine`]).
    pub fn combined(&self) -> Combined {
        scope::combine(
            self.health.health,
            self.scopes.iter().map(|(id, s)| (id.as_str(), s)),
        )
    }

    /// The connection's confirmed health: its status endpoint's, lowered
    /// by failing scopes.
    pub fn current(&self) -> Health {
        if self.scopes.is_empty() {
            self.health.health
        } else {
            self.combined().health
        }
    }

    /// Takes one classified probe of the status endpoint that started at
    /// `at`.
    pub fn observe(
        &mut self,
        c: &Classified,
        at: UnixMs,
        cfg: &Connection,
        draws: Draws,
    ) -> Observed {
        let before = self.current();
        self.health.observe(c.outcome, at, thresholds(cfg));
        let transition = changed(before, self.current(), at);
        let circuit = self
            .breaker
            .record(c.outcome, at, &cfg.breaker, draws.breaker);
        let rate_hold = self.hold.record(
            c.outcome,
            c.retry_after,
            at,
            &hold_settings(cfg),
            draws.backoff,
        );
        let flap = self.flap.record(c.outcome, cfg.flap_high, cfg.flap_low);
        let missing_before = self.sync.pointer_missing();
        let sync = match (&c.sync, &cfg.expect.sync) {
            (Some(seen), Some(se)) => self.sync.record(
                seen,
                at,
                se.max_age.map(|d| d.as_millis() as i64),
                &se.failed,
            ),
            _ => Vec::new(),
        };
        Observed {
            transition,
            circuit,
            rate_hold,
            flap,
            sync,
            sync_pointer_missing: !missing_before && self.sync.pointer_missing(),
        }
    }

    /// Takes one classified probe of scope `id` that started at `at`. A
    /// rate-limited answer changes no health: it holds the connection.
    pub fn observe_scope(
        &mut self,
        id: &str,
        c: &Classified,
        at: UnixMs,
        cfg: &Connection,
        draws: Draws,
    ) -> ScopeObserved {
        let before = self.current();
        let mut out = ScopeObserved::default();
        if c.outcome == Outcome::RateLimited {
            out.rate_hold =
                Some(
                    self.hold
                        .rate_limit(c.retry_after, at, &hold_settings(cfg), draws.backoff),
                );
        } else {
            let s = self.scopes.entry(id.to_string()).or_default();
            out.scope = s.health.observe(c.outcome, at, thresholds(cfg));
            s.error = (c.outcome != Outcome::Online)
                .then(|| c.error.clone())
                .flatten();
        }
        out.transition = changed(before, self.current(), at);
        out
    }

    /// Lets the next probe through now, for one probe: an open circuit's
    /// wait ends (the probe is its trial) and an expired-credentials hold
    /// ends; with `retry_after`, a rate limit's hold too. What the probe
    /// answers sets the holds again.
    pub fn lift(&mut self, now: UnixMs, retry_after: bool) {
        if self.breaker.circuit == Circuit::Open {
            self.breaker.open_until = Some(now);
        }
        self.hold.auth_until = None;
        if retry_after {
            self.hold.rate_limited_until = None;
        }
    }

    /// After a reload: holds longer than the connection's settings now
    /// allow are cut to them (a shorter `auth_interval`, `open_for` or
    /// `max_open_for` takes effect at once, not after the old wait).
    /// The scopes follow the configuration: one it no longer has is
    /// forgotten, a new one starts `unknown` (so "every scope" means every
    /// configured one). Returns the change of the connection's health if
    /// that changed it.
    pub fn fit(&mut self, cfg: &Connection, now: UnixMs) -> Option<Transition> {
        let before = self.current();
        self.scopes
            .retain(|id, _| cfg.scopes.iter().any(|s| s.id == *id));
        for s in &cfg.scopes {
            self.scopes.entry(s.id.clone()).or_default();
        }
        if let Some(t) = self.hold.auth_until.as_mut() {
            *t = (*t).min(now + cfg.auth_interval.as_millis() as i64);
        }
        if let (Circuit::Open, Some(t)) = (self.breaker.circuit, self.breaker.open_until.as_mut()) {
            let longest = breaker::open_wait(&cfg.breaker, self.breaker.reopens, 1.0);
            *t = (*t).min(now + longest);
        }
        changed(before, self.current(), now)
    }

    /// Confirmed failing: a failure health, or a circuit that is not closed.
    /// Children of such a connection are paused.
    pub fn confirmed_failing(&self) -> bool {
        self.health.health.is_failure() || self.breaker.circuit != Circuit::Closed
    }

    /// Failing or about to be: the last probe failed too. Children's events
    /// are held back while their parent is suspected, so a platform outage
    /// that children notice first does not page for each of them.
    pub fn suspected(&self) -> bool {
        self.confirmed_failing() || self.health.last.is_some_and(|o| o.is_failure())
    }

    /// Resumes from a stored snapshot; `None` or garbage starts afresh with
    /// the stored health.
    pub fn restore(json: Option<&str>, health: Health, since: Option<UnixMs>) -> MonitorState {
        match json.and_then(|j| Some((j, serde_json::from_str::<MonitorState>(j).ok()?))) {
            Some((j, mut s)) => {
                // Written before paging memory existed: an incident is open
                // when receivers were last told of an outage.
                if !j.contains("\"paged\"") {
                    s.paged = Severity::of(s.sent);
                }
                s
            }
            None => MonitorState {
                health: HealthMachine::resume(health, since),
                sent: health,
                paged: Severity::of(health),
                ..MonitorState::default()
            },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn thresholds(cfg: &Connection) -> Thresholds {
    Thresholds {
        failure: cfg.breaker.failure_threshold,
        success: cfg.breaker.success_threshold,
    }
}

fn hold_settings(cfg: &Connection) -> HoldSettings {
    HoldSettings {
        base: cfg.interval().unwrap_or(CRON_BACKOFF_BASE),
        retry_after_max: cfg.retry_after_max,
        backoff_max: cfg.rate_limit_backoff_max,
        auth_interval: cfg.auth_interval,
    }
}

/// The transition from `before` to `after`, if they differ.
fn changed(before: Health, after: Health, at: UnixMs) -> Option<Transition> {
    (before != after).then_some(Transition {
        previous: before,
        current: after,
        at,
    })
}

#[cfg(test)]
mod tests;
