//! The alert policy: which events exist, and who hears them. Pure: no I/O,
//! time passed in, tested without a network or a database.
//!
//! This is the one place to read to answer "when is an alert sent?":
//!
//! - [`plan`]: from what one probe changed (the monitor's [`Observed`]) and
//!   why events are held back now ([`Held`]), to the events that exist and
//!   what each sink gets of them ([`Planned`]). It keeps the connection's
//!   alert memory: the health receivers were last told, and the severity
//!   paging sinks were last told.
//! - [`route`]: which sinks take which kinds of event: a connection's
//!   `sinks` and `events`, each sink's `events` and its class's default set.
//! - [`page`]: one page per outage for paging sinks: trigger, raise,
//!   resolve.
//! - [`group`]: how a chat sink cuts its queue into messages.
//!
//! The rules, in plain words, are in `docs/delivery.md`. In short:
//!
//! - **Baseline, not news.** A connection's first confirmed health is its
//!   baseline. An `online` baseline is recorded (history, audit, status)
//!   and sends nothing. Any other baseline is an outage like any other.
//! - **One page per outage.** A paging sink gets one trigger when the
//!   health becomes a failure, another only if the severity rises, and one
//!   resolve when it is `online` again. Circuit events reach paging and
//!   chat sinks only when their `events` name them.
//! - **Chat sinks group** what arrives within `group_wait` into one message.
//! - **Fresh news first.** Each delivery carries a [`Priority`]: a sink
//!   sends new triggers before older resolves and informational events
//!   (order per sink and connection still holds).
//!
//! [`Observed`]: crate::monitor::Observed

pub mod group;
pub mod page;
pub mod plan;
pub mod route;

pub use page::PageAction;
pub use plan::{after_probe, after_scope, after_trial, catch_up, held, Probe, ScopeProbe};
pub use route::{Route, Router, Routes};

use crate::event::EventKind;
use crate::model::{Health, Outcome};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How loud a health is. Ordered: a rise is a new page within an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Error,
    Critical,
}

impl Severity {
    /// `offline`, `unreachable`, `invalid`: critical; `auth_required`,
    /// `permission_denied`: error; `degraded`: warning; anything else is
    /// not an outage.
    pub fn of(h: Health) -> Option<Severity> {
        match h {
            Health::Is(Outcome::Offline | Outcome::Unreachable | Outcome::Invalid) => {
                Some(Severity::Critical)
            }
            Health::Is(Outcome::AuthRequired | Outcome::PermissionDenied) => Some(Severity::Error),
            Health::Is(Outcome::Degraded) => Some(Severity::Warning),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        [Severity::Warning, Severity::Error, Severity::Critical]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// Which of a sink's pending deliveries go first (lower first). Order per
/// (sink, connection) still holds: a connection's resolve never overtakes
/// its own trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// A health got worse (a trigger), or the monitor itself is failing.
    Fresh = 0,
    /// A health came back.
    Resolve = 1,
    /// Everything else.
    Info = 2,
}

impl Priority {
    pub fn code(self) -> i64 {
        self as i64
    }

    /// A status change's priority: fresh when the severity rose.
    pub fn of_change(previous: Health, current: Health) -> Priority {
        match (Severity::of(previous), Severity::of(current)) {
            (p, Some(c)) if p.is_none_or(|p| c > p) => Priority::Fresh,
            _ if current == Health::Is(Outcome::Online) => Priority::Resolve,
            _ => Priority::Info,
        }
    }
}

/// How a sink hears events; each sink kind declares its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkClass {
    /// Every event as it is (webhook, command, log).
    Raw,
    /// Incidents: one trigger and one resolve per outage (PagerDuty,
    /// Alertmanager).
    Paging,
    /// Messages people read: changes gathered for `group_wait` into one
    /// message (Slack).
    Chat { group_wait: Duration },
}

impl SinkClass {
    pub fn name(self) -> &'static str {
        match self {
            SinkClass::Raw => "raw",
            SinkClass::Paging => "paging",
            SinkClass::Chat { .. } => "chat",
        }
    }
}

/// Why a connection's events are recorded but not delivered now, the
/// strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A maintenance window covers it: everything is held.
    Maintenance,
    /// An operator silenced it: everything is held.
    Silenced,
    /// Its parent (`depends_on`) is failing or suspected: everything is held.
    Parent,
    /// It is flapping: per-change events are held.
    Flapping,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Maintenance => "maintenance",
            Reason::Silenced => "silenced",
            Reason::Parent => "parent",
            Reason::Flapping => "flapping",
        }
    }
}

/// What holds a connection's events back now: per-change events (status,
/// circuit, auth, rate limit) and the others (flapping, sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held {
    pub per_change: Option<Reason>,
    pub other: Option<Reason>,
}

/// One delivery the policy decided on.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub sink: Arc<str>,
    pub priority: Priority,
    /// For paging sinks: what the incident does.
    pub action: Option<PageAction>,
}

/// An event that exists, and who hears it. A held event is recorded with
/// its reason and no deliveries.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub kind: EventKind,
    pub data: serde_json::Value,
    pub suppressed: Option<Reason>,
    pub deliveries: Vec<Delivery>,
}

#[cfg(test)]
mod tests;
