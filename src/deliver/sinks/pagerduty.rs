//! `pagerduty`: Events API v2. `trigger` when a connection enters offline,
//! unreachable, invalid, auth_required or degraded (or its circuit opens),
//! `resolve` when it returns to online; `dedup_key = connwatch/<id>`, so one
//! incident per connection. Other events are not PagerDuty's business.
//! 202 (any 2xx) is success, 400 permanent, 429 and 5xx retried.

use super::Outgoing;
use crate::config::Secret;
use serde_json::{json, Value};

/// Summaries longer than this are cut (the API's limit).
pub const SUMMARY_MAX: usize = 1024;

/// The severity of a health, if PagerDuty should be told about it.
fn severity(health: &str) -> Option<&'static str> {
    match health {
        "offline" | "unreachable" | "invalid" => Some("critical"),
        "auth_required" => Some("error"),
        "degraded" => Some("warning"),
        _ => None,
    }
}

/// The request body, or `None` when this event is not sent to PagerDuty.
pub fn payload(ev: &Outgoing, routing_key: Option<&Secret>) -> Option<Value> {
    let id = ev.connection_id.as_deref()?;
    let data = &ev.envelope["data"];
    let (action, sev) = match ev.kind.as_str() {
        crate::event::STATUS_CHANGED => match data["current"].as_str()? {
            "online" => ("resolve", None),
            h => ("trigger", Some(severity(h)?)),
        },
        "circuit.opened" => ("trigger", Some("critical")),
        _ => return None,
    };
    let mut body = json!({
        "routing_key": routing_key.map(Secret::expose).unwrap_or_default(),
        "event_action": action,
        "dedup_key": format!("connwatch/{id}"),
    });
    if let Some(sev) = sev {
        let summary: String = super::summary(ev).chars().take(SUMMARY_MAX).collect();
        body["payload"] = json!({
            "summary": summary,
            "source": "connwatch",
            "severity": sev,
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
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, current: &str) -> Outgoing {
        let envelope = json!({"id": "evt_1", "type": kind, "connection_id": "sap",
            "data": {"previous": "online", "current": current, "error": {"kind": "http_status", "message": "HTTP 503"}, "latency_ms": 12}});
        Outgoing {
            id: "evt_1".into(),
            kind: kind.into(),
            connection_id: Some("sap".into()),
            body: envelope.to_string(),
            envelope,
        }
    }

    #[test]
    fn trigger_resolve_and_severities() {
        let key = Secret::new("rk");
        let p = payload(&ev("connection.status_changed", "offline"), Some(&key)).unwrap();
        assert_eq!(p["event_action"], "trigger");
        assert_eq!(p["dedup_key"], "connwatch/sap");
        assert_eq!(p["routing_key"], "rk");
        assert_eq!(p["payload"]["severity"], "critical");
        assert_eq!(p["payload"]["summary"], "sap: online → offline (HTTP 503)");
        assert_eq!(p["payload"]["custom_details"]["latency_ms"], 12);
        assert_eq!(
            payload(&ev("connection.status_changed", "auth_required"), None).unwrap()["payload"]
                ["severity"],
            "error"
        );
        assert_eq!(
            payload(&ev("connection.status_changed", "degraded"), None).unwrap()["payload"]
                ["severity"],
            "warning"
        );
        let r = payload(&ev("connection.status_changed", "online"), None).unwrap();
        assert_eq!(r["event_action"], "resolve");
        assert!(r.get("payload").is_none());
        assert_eq!(
            payload(&ev("circuit.opened", ""), None).unwrap()["event_action"],
            "trigger"
        );
        assert!(payload(&ev("sync.completed", ""), None).is_none());
        assert!(payload(&ev("connection.status_changed", "rate_limited"), None).is_none());
    }

    #[test]
    fn summary_is_capped() {
        let mut e = ev("connection.status_changed", "offline");
        e.envelope["data"]["error"]["message"] = json!("x".repeat(5000));
        let p = payload(&e, None).unwrap();
        assert_eq!(
            p["payload"]["summary"].as_str().unwrap().chars().count(),
            SUMMARY_MAX
        );
    }
}
