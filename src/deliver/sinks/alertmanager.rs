//! `alertmanager`: POST `/api/v2/alerts`. A connection that turns unhealthy
//! is a firing alert (labels `alertname`, `connection_id`, `severity` plus the
//! sink's static labels; annotations `summary`, `error`; `startsAt`); one
//! that returns to online is the same alert with `endsAt`. Firing alerts are
//! re-sent every `resend_interval` (default 1 m, inside Alertmanager's 5 m
//! resolve timeout) by the dispatcher while they last, so that
//! Alertmanager does not resolve them on its own.

use super::Outgoing;
use crate::model::{rfc3339, UnixMs};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const ALERTNAME: &str = "ConnwatchConnectionUnhealthy";

fn severity(health: &str) -> Option<&'static str> {
    match health {
        "offline" | "unreachable" | "invalid" => Some("critical"),
        "auth_required" => Some("error"),
        "degraded" | "rate_limited" => Some("warning"),
        _ => None,
    }
}

/// `<base>/api/v2/alerts`, keeping any path prefix of the configured URL
/// (with or without a trailing slash).
pub fn alerts_url(base: &url::Url) -> Option<url::Url> {
    let mut b = base.clone();
    if !b.path().ends_with('/') {
        let p = format!("{}/", b.path());
        b.set_path(&p);
    }
    b.join("api/v2/alerts").ok()
}

/// The body (a one-alert array), or `None` for events Alertmanager does not
/// take.
pub fn payload(
    ev: &Outgoing,
    static_labels: &BTreeMap<String, String>,
    now: UnixMs,
) -> Option<Value> {
    let id = ev.connection_id.as_deref()?;
    let current = super::current_health(ev)?;
    let previous = ev.envelope["data"]["previous"]
        .as_str()
        .unwrap_or("unknown");
    let mut labels: BTreeMap<String, String> = static_labels.clone();
    labels.insert("alertname".into(), ALERTNAME.into());
    labels.insert("connection_id".into(), id.into());
    let starts = ev.envelope["timestamp"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let alert = match severity(current) {
        Some(sev) => {
            labels.insert("severity".into(), sev.into());
            json!({
                "labels": labels,
                "annotations": {"summary": super::summary(ev), "error": ev.envelope["data"]["error"]["message"].as_str().unwrap_or("")},
                "startsAt": starts,
            })
        }
        None if current == "online" => {
            // Resolve what was firing: same labels, with the old severity.
            labels.insert(
                "severity".into(),
                severity(previous).unwrap_or("critical").into(),
            );
            json!({"labels": labels, "annotations": {"summary": super::summary(ev)}, "startsAt": starts, "endsAt": rfc3339(now)})
        }
        None => return None,
    };
    Some(json!([alert]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(previous: &str, current: &str) -> Outgoing {
        let envelope = json!({"id": "evt_1", "type": "connection.status_changed", "timestamp": "2026-11-28T21:30:45.123Z", "connection_id": "sap",
            "data": {"previous": previous, "current": current, "error": {"message": "HTTP 503"}}});
        Outgoing {
            id: "evt_1".into(),
            kind: "connection.status_changed".into(),
            connection_id: Some("sap".into()),
            body: envelope.to_string(),
            envelope,
        }
    }

    #[test]
    fn the_alerts_url_keeps_a_prefix() {
        let u = |s: &str| {
            alerts_url(&url::Url::parse(s).unwrap())
                .unwrap()
                .to_string()
        };
        assert_eq!(u("http://am:9093"), "http://am:9093/api/v2/alerts");
        assert_eq!(u("http://am:9093/"), "http://am:9093/api/v2/alerts");
        assert_eq!(
            u("http://h/alertmanager"),
            "http://h/alertmanager/api/v2/alerts"
        );
        assert_eq!(
            u("http://h/alertmanager/"),
            "http://h/alertmanager/api/v2/alerts"
        );
    }

    #[test]
    fn firing_and_resolved() {
        let mut labels = BTreeMap::new();
        labels.insert("team".to_string(), "ops".to_string());
        let p = payload(&ev("online", "offline"), &labels, 0).unwrap();
        let a = &p[0];
        assert_eq!(a["labels"]["alertname"], ALERTNAME);
        assert_eq!(a["labels"]["connection_id"], "sap");
        assert_eq!(a["labels"]["severity"], "critical");
        assert_eq!(a["labels"]["team"], "ops");
        assert_eq!(a["annotations"]["error"], "HTTP 503");
        assert_eq!(a["startsAt"], "2026-11-28T21:30:45.123Z");
        assert!(a.get("endsAt").is_none());
        let r = payload(&ev("offline", "online"), &labels, 1_000).unwrap();
        assert_eq!(
            r[0]["labels"]["severity"], "critical",
            "same labels as the firing alert"
        );
        assert_eq!(r[0]["endsAt"], "1970-01-01T00:00:01.000Z");
        assert!(payload(&ev("unknown", "online"), &labels, 0).is_some());
    }
}
