//! Who takes which kind of event.
//!
//! A connection emits the kinds its `events` lets through (all by default)
//! to the sinks its `sinks` names (all by default). A sink takes the kinds
//! its `events` names, plus, for `"*"` or no list, its class's default set:
//!
//! | class | default set |
//! |---|---|
//! | raw (webhook, command, log) | every kind |
//! | paging (pagerduty, alertmanager) | `connection.status_changed` |
//! | chat (slack) | `connection.status_changed`, `connection.flapping_started`, `connection.flapping_stopped`, `sync.failed`, `sync.stale`, `system.error` |
//!
//! So circuit events, `auth_required`/`rate_limited` (the status change
//! already says it) and `sync.completed` reach paging and chat sinks only
//! when their `events` name them.

use super::{Delivery, Priority, SinkClass};
use crate::event::{EventFilter, EventKind};
use std::collections::HashMap;
use std::sync::Arc;

/// Whether a sink of `class` takes `kind` when its filter names nothing.
pub fn default_interest(class: SinkClass, kind: EventKind) -> bool {
    use EventKind::*;
    match class {
        SinkClass::Raw => true,
        SinkClass::Paging => kind == StatusChanged,
        SinkClass::Chat { .. } => matches!(
            kind,
            StatusChanged
                | FlappingStarted
                | FlappingStopped
                | SyncFailed
                | SyncStale
                | SystemError
        ),
    }
}

/// Whether a sink of `class` with filter `events` takes `kind`.
pub fn takes(class: SinkClass, events: &EventFilter, kind: EventKind) -> bool {
    events.takes(kind, |k| default_interest(class, k))
}

/// A sink as the policy sees it.
#[derive(Debug, Clone)]
pub struct SinkPolicy {
    pub id: Arc<str>,
    pub class: SinkClass,
    pub events: EventFilter,
}

/// One sink that takes an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub sink: Arc<str>,
    pub class: SinkClass,
}

/// For one connection: whether each kind exists, and which sinks take it.
#[derive(Debug, Clone)]
pub struct Routes {
    emits: [bool; EventKind::COUNT],
    to: [Vec<Route>; EventKind::COUNT],
}

impl Routes {
    pub fn new(conn_sinks: &[String], conn_events: &EventFilter, sinks: &[SinkPolicy]) -> Routes {
        let chosen: Vec<&SinkPolicy> = sinks
            .iter()
            .filter(|s| conn_sinks.iter().any(|c| **c == *s.id))
            .collect();
        Routes {
            emits: std::array::from_fn(|i| conn_events.takes(EventKind::ALL[i], |_| true)),
            to: std::array::from_fn(|i| {
                let kind = EventKind::ALL[i];
                chosen
                    .iter()
                    .filter(|s| takes(s.class, &s.events, kind))
                    .map(|s| Route {
                        sink: Arc::clone(&s.id),
                        class: s.class,
                    })
                    .collect()
            }),
        }
    }

    /// Every kind exists; no sink takes any (tests, and connections that
    /// route nowhere).
    pub fn nowhere() -> Routes {
        Routes {
            emits: [true; EventKind::COUNT],
            to: std::array::from_fn(|_| Vec::new()),
        }
    }

    /// Whether the connection's `events` lets `kind` exist at all.
    pub fn emits(&self, kind: EventKind) -> bool {
        self.emits[kind.index()]
    }

    pub fn to(&self, kind: EventKind) -> &[Route] {
        &self.to[kind.index()]
    }
}

/// Builds route tables, one per distinct (`sinks`, `events`) of the
/// connections, shared: 10,000 connections with the defaults hold one.
#[derive(Debug)]
pub struct Router {
    sinks: Vec<SinkPolicy>,
    cache: HashMap<(Vec<String>, EventFilter), Arc<Routes>>,
}

impl Router {
    pub fn new(sinks: Vec<SinkPolicy>) -> Router {
        Router {
            sinks,
            cache: HashMap::new(),
        }
    }

    pub fn routes(&mut self, conn_sinks: &[String], conn_events: &EventFilter) -> Arc<Routes> {
        let key = (conn_sinks.to_vec(), conn_events.clone());
        if let Some(r) = self.cache.get(&key) {
            return Arc::clone(r);
        }
        let r = Arc::new(Routes::new(conn_sinks, conn_events, &self.sinks));
        self.cache.insert(key, Arc::clone(&r));
        r
    }
}

/// Deliveries of an event that belongs to no connection (`system.error`):
/// every sink that takes `kind`, but `except` (the sink it is about).
pub fn system_deliveries(
    sinks: &[SinkPolicy],
    kind: EventKind,
    except: Option<&str>,
) -> Vec<Delivery> {
    sinks
        .iter()
        .filter(|s| except.is_none_or(|e| *s.id != *e) && takes(s.class, &s.events, kind))
        .map(|s| Delivery {
            sink: Arc::clone(&s.id),
            priority: Priority::Fresh,
            action: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sink(id: &str, class: SinkClass, events: &[&str]) -> SinkPolicy {
        SinkPolicy {
            id: Arc::from(id),
            class,
            events: if events.is_empty() {
                EventFilter::all()
            } else {
                EventFilter::parse(events).unwrap()
            },
        }
    }

    fn ids(r: &[Route]) -> Vec<&str> {
        r.iter().map(|r| &*r.sink).collect()
    }

    #[test]
    fn classes_have_their_default_sets_and_names_widen_them() {
        let chat = SinkClass::Chat {
            group_wait: Duration::from_secs(10),
        };
        let sinks = vec![
            sink("hook", SinkClass::Raw, &[]),
            sink("pd", SinkClass::Paging, &["*"]),
            sink("am", SinkClass::Paging, &["*", "circuit.opened"]),
            sink("chat", chat, &[]),
            sink("other", SinkClass::Raw, &[]),
        ];
        let all: Vec<String> = ["hook", "pd", "am", "chat"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = Routes::new(&all, &EventFilter::all(), &sinks);
        assert_eq!(
            ids(r.to(EventKind::StatusChanged)),
            ["hook", "pd", "am", "chat"]
        );
        assert_eq!(ids(r.to(EventKind::CircuitOpened)), ["hook", "am"]);
        assert_eq!(ids(r.to(EventKind::CircuitClosed)), ["hook"]);
        assert_eq!(ids(r.to(EventKind::AuthRequired)), ["hook"]);
        assert_eq!(ids(r.to(EventKind::SyncCompleted)), ["hook"]);
        assert_eq!(ids(r.to(EventKind::SyncStale)), ["hook", "chat"]);
        assert_eq!(ids(r.to(EventKind::FlappingStarted)), ["hook", "chat"]);
        // The connection's own filter: which kinds exist at all.
        let only = EventFilter::parse(&["connection.*"]).unwrap();
        let r = Routes::new(&all[..1], &only, &sinks);
        assert!(r.emits(EventKind::StatusChanged));
        assert!(!r.emits(EventKind::CircuitOpened));
        assert_eq!(ids(r.to(EventKind::StatusChanged)), ["hook"]);
        // system.error: every sink that takes it but the one it is about.
        let d = system_deliveries(&sinks, EventKind::SystemError, Some("hook"));
        let to: Vec<&str> = d.iter().map(|d| &*d.sink).collect();
        assert_eq!(to, ["chat", "other"]);
        assert!(d.iter().all(|d| d.priority == Priority::Fresh));
    }

    #[test]
    fn the_router_shares_equal_tables() {
        let mut router = Router::new(vec![sink("hook", SinkClass::Raw, &[])]);
        let s = vec!["hook".to_string()];
        let a = router.routes(&s, &EventFilter::all());
        let b = router.routes(&s, &EventFilter::all());
        assert!(Arc::ptr_eq(&a, &b));
        let c = router.routes(&[], &EventFilter::all());
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(c.to(EventKind::StatusChanged).is_empty());
    }
}
