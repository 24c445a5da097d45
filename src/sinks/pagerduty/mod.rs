//! `pagerduty`: Events API v2. A paging sink: the policy decides, when an
//! event is stored, whether it triggers, raises or resolves the
//! connection's incident (see [`crate::policy::page`]); this kind turns
//! that into `trigger` (severity `critical`, `error` or `warning`) or
//! `resolve`, with `dedup_key = connwatch/<id>` so a connection has one
//! incident at a time. An event its `events` names explicitly and that
//! carries no action (`circuit.opened`) is sent as a `critical` trigger;
//! other events are not PagerDuty's business (skipped). 2xx is success,
//! 400 is dead, 429 and 5xx are retried.
//!
//! Keys: `routing_key` or `routing_key_file` (required, a secret), `url`
//! (default [`DEFAULT_URL`]).

use super::{http, AttemptResult, Cx, Item, Kind, Outgoing, Sink};
use crate::config::schema::leaf;
use crate::config::{redact_url, Secret, Section};
use crate::event::EventKind;
use crate::policy::{PageAction, Severity, SinkClass};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use url::Url;

pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// Summaries longer than this are cut (the API's limit).
pub const SUMMARY_MAX: usize = 1024;

pub const KIND: Kind = Kind {
    name: "pagerduty",
    keys: &[leaf("url"), leaf("routing_key"), leaf("routing_key_file")],
    build,
};

#[derive(Debug)]
pub struct PagerDuty {
    url: Url,
    routing_key: Secret,
}

impl PagerDuty {
    pub fn routing_key(&self) -> &Secret {
        &self.routing_key
    }
}

fn build(s: &mut Section<'_, '_>) -> Option<Box<dyn Sink>> {
    let url = if s.has("url") {
        s.url("url")
    } else {
        Some(Url::parse(DEFAULT_URL).expect("constant URL"))
    };
    let given = s.has("routing_key") || s.has("routing_key_file");
    let routing_key = s.secret("routing_key", "routing_key_file");
    if !given {
        s.missing("routing_key");
    }
    Some(Box::new(PagerDuty {
        url: url?,
        routing_key: routing_key?,
    }))
}

impl Sink for PagerDuty {
    fn class(&self) -> SinkClass {
        SinkClass::Paging
    }

    fn target(&self) -> String {
        redact_url(&self.url)
    }

    fn send<'a>(&'a self, items: &'a [Item], cx: Cx<'a>) -> BoxFuture<'a, AttemptResult> {
        Box::pin(async move {
            match items.first().and_then(|it| payload(it, &self.routing_key)) {
                Some(body) => {
                    http::post_json(cx, &self.url, &[], Vec::new(), body.to_string()).await
                }
                None => AttemptResult::skipped(),
            }
        })
    }
}

/// What an event without a stored action does: derived from the event
/// (replays of events stored before actions were, and kinds a sink's
/// `events` names explicitly).
fn derived(ev: &Outgoing) -> Option<PageAction> {
    match ev.event_kind()? {
        EventKind::StatusChanged => {
            let current = crate::model::Health::parse(ev.current_health()?)?;
            match Severity::of(current) {
                Some(severity) => Some(PageAction::Trigger {
                    severity,
                    replaces: None,
                }),
                None if ev.current_health() == Some("online") => Some(PageAction::Resolve {
                    severity: Severity::Critical,
                }),
                None => None,
            }
        }
        EventKind::CircuitOpened => Some(PageAction::Trigger {
            severity: Severity::Critical,
            replaces: None,
        }),
        _ => None,
    }
}

/// The request body, or `None` when this event is not sent to PagerDuty.
pub fn payload(it: &Item, routing_key: &Secret) -> Option<Value> {
    let ev = &it.out;
    let id = ev.connection_id.as_deref()?;
    let action = it.action.or_else(|| derived(ev))?;
    let data = &ev.envelope["data"];
    let mut body = json!({
        "routing_key": routing_key.expose(),
        "dedup_key": format!("connwatch/{id}"),
    });
    match action {
        PageAction::Resolve { .. } => body["event_action"] = json!("resolve"),
        PageAction::Trigger { severity, .. } => {
            body["event_action"] = json!("trigger");
            let summary: String = ev.summary().chars().take(SUMMARY_MAX).collect();
            body["payload"] = json!({
                "summary": summary,
                "source": "connwatch",
                "severity": severity.as_str(),
                "component": id,
                "custom_details": {
                    "event": ev.kind,
                    "event_id": ev.id,
                    "error": data["error"],
                    "latency_ms": data["latency_ms"],
                    "consecutive_failures": data["consecutive_failures"],
                },
            });
        }
    }
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, current: &str) -> Item {
        let envelope = json!({"id": "evt_1", "type": kind, "connection_id": "sap",
            "data": {"previous": "online", "current": current, "error": {"kind": "http_status", "message": "HTTP 503"}, "latency_ms": 12}});
        Item {
            out: Outgoing {
                id: "evt_1".into(),
                kind: kind.into(),
                connection_id: Some("sap".into()),
                body: envelope.to_string(),
                envelope,
            },
            action: None,
        }
    }

    fn with(mut it: Item, a: PageAction) -> Item {
        it.action = Some(a);
        it
    }

    #[test]
    fn the_stored_action_decides() {
        let key = Secret::new("rk");
        let raised = with(
            ev("connection.status_changed", "offline"),
            PageAction::Trigger {
                severity: Severity::Critical,
                replaces: Some(Severity::Warning),
            },
        );
        let p = payload(&raised, &key).unwrap();
        assert_eq!(p["event_action"], "trigger");
        assert_eq!(p["dedup_key"], "connwatch/sap");
        assert_eq!(p["routing_key"], "rk");
        assert_eq!(p["payload"]["severity"], "critical");
        assert_eq!(p["payload"]["summary"], "sap: online → offline (HTTP 503)");
        assert_eq!(p["payload"]["custom_details"]["latency_ms"], 12);
        let resolve = with(
            ev("connection.status_changed", "online"),
            PageAction::Resolve {
                severity: Severity::Error,
            },
        );
        let r = payload(&resolve, &key).unwrap();
        assert_eq!(r["event_action"], "resolve");
        assert!(r.get("payload").is_none());
    }

    #[test]
    fn without_an_action_it_is_derived_from_the_event() {
        let key = Secret::new("rk");
        let sev = |current: &str| {
            payload(&ev("connection.status_changed", current), &key).unwrap()["payload"]["severity"]
                .clone()
        };
        assert_eq!(sev("offline"), "critical");
        assert_eq!(sev("auth_required"), "error");
        assert_eq!(sev("degraded"), "warning");
        assert_eq!(
            payload(&ev("connection.status_changed", "online"), &key).unwrap()["event_action"],
            "resolve"
        );
        assert_eq!(
            payload(&ev("circuit.opened", ""), &key).unwrap()["event_action"],
            "trigger"
        );
        assert!(payload(&ev("sync.completed", ""), &key).is_none());
        assert!(payload(&ev("connection.status_changed", "rate_limited"), &key).is_none());
    }

    #[test]
    fn summary_is_capped() {
        let mut e = ev("connection.status_changed", "offline");
        e.out.envelope["data"]["error"]["message"] = json!("x".repeat(5000));
        let p = payload(&e, &Secret::new("rk")).unwrap();
        assert_eq!(
            p["payload"]["summary"].as_str().unwrap().chars().count(),
            SUMMARY_MAX
        );
    }
}
