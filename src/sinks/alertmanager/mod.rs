//! `alertmanager`: POST `/api/v2/alerts`. A paging sink: a connection's
//! incident is one alert, labels `alertname = ConnwatchConnectionUnhealthy`,
//! `connection_id`, `severity` and the sink's static `labels`, annotations
//! `summary` and `error`. A trigger fires it; a resolve sends it with
//! `endsAt`. Alertmanager names an alert by its labels, and routes match on
//! `severity`, so when an incident's severity rises the request fires the
//! alert at the new severity and ends the one at the old severity, in one
//! request. While an alert fires it is sent again every `resend_interval`
//! (default 1 m, inside Alertmanager's 5 m `resolve_timeout`, after which
//! it would resolve the alert on its own); a request carries up to
//! [`BATCH`] alerts.
//!
//!
//! While the daemon is healthy (its engine loop and database writer beat,
//! as for the systemd watchdog) the sink also keeps [`WATCHDOG`] firing:
//! labels `alertname`, `instance`, `shard`, `severity = "none"` and the
//! static `labels`, sent every `resend_interval` with `endsAt`
//! [`WATCHDOG_LIFETIMES`] intervals ahead, so that it ends by itself when
//! connwatch dies or wedges. Route it to a dead-man's-switch receiver.
//!
//! Connection alerts carry no instance label: the two daemons of an HA
//! pair send the same alert, which the Alertmanager cluster deduplicates;
//! the `instance` annotation says which daemon sent it last.
//!
//! Keys: `url` (required; `/api/v2/alerts` is appended, a path prefix is
//! kept), `labels`, `headers` (values are secrets), `resend_interval`.

use super::{http, AttemptResult, Cx, Item, Kind, Outgoing, Sink, Who};
use crate::config::schema::{leaf, Field, Shape};
use crate::config::{redact_url, Secret, Section};
use crate::event::EventKind;
use crate::model::{rfc3339, UnixMs};
use crate::policy::{PageAction, Severity, SinkClass};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

pub const ALERTNAME: &str = "ConnwatchConnectionUnhealthy";

/// The always-firing alert of a healthy daemon.
pub const WATCHDOG: &str = "ConnwatchWatchdog";

/// The watchdog's `endsAt` is this many `resend_interval`s ahead.
pub const WATCHDOG_LIFETIMES: u32 = 3;

pub const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(60);

/// Alerts per request at most.
pub const BATCH: usize = 64;

pub const KIND: Kind = Kind {
    name: "alertmanager",
    keys: &[
        leaf("url"),
        Field {
            name: "labels",
            shape: Shape::Map,
        },
        Field {
            name: "headers",
            shape: Shape::Map,
        },
        leaf("resend_interval"),
    ],
    build,
};

#[derive(Debug)]
pub struct Alertmanager {
    /// `<url>/api/v2/alerts`.
    url: Url,
    labels: BTreeMap<String, String>,
    headers: Vec<(String, Secret)>,
    resend_interval: Duration,
}

fn build(s: &mut Section<'_, '_>) -> Option<Box<dyn Sink>> {
    if !s.has("url") {
        s.missing("url");
    }
    let url = s.url("url").and_then(|u| alerts_url(&u));
    let labels = s.map("labels");
    let headers = s.headers("headers");
    let resend_interval = s
        .duration(
            "resend_interval",
            Duration::from_secs(1),
            Duration::from_secs(7 * 86_400),
        )
        .unwrap_or(DEFAULT_RESEND_INTERVAL);
    Some(Box::new(Alertmanager {
        url: url?,
        labels,
        headers,
        resend_interval,
    }))
}

impl Sink for Alertmanager {
    fn class(&self) -> SinkClass {
        SinkClass::Paging
    }

    fn target(&self) -> String {
        redact_url(&self.url)
    }

    fn send<'a>(&'a self, items: &'a [Item], cx: Cx<'a>) -> BoxFuture<'a, AttemptResult> {
        Box::pin(async move {
            let alerts: Vec<Value> = items
                .iter()
                .flat_map(|it| alerts(it, &self.labels, cx.now))
                .collect();
            if alerts.is_empty() {
                return AttemptResult::skipped();
            }
            let body = Value::Array(alerts).to_string();
            http::post_json(cx, &self.url, &self.headers, Vec::new(), body).await
        })
    }

    fn max_batch(&self) -> usize {
        BATCH
    }

    fn resend_every(&self) -> Option<Duration> {
        Some(self.resend_interval)
    }

    fn keepalive<'a>(&'a self, who: &'a Who, cx: Cx<'a>) -> Option<BoxFuture<'a, AttemptResult>> {
        Some(Box::pin(async move {
            let alert = watchdog(who, &self.labels, cx.now, self.resend_interval);
            let body = Value::Array(vec![alert]).to_string();
            http::post_json(cx, &self.url, &self.headers, Vec::new(), body).await
        }))
    }
}

/// The watchdog alert of `who` at `now`.
pub fn watchdog(
    who: &Who,
    static_labels: &BTreeMap<String, String>,
    now: UnixMs,
    every: Duration,
) -> Value {
    let mut l = static_labels.clone();
    l.insert("alertname".into(), WATCHDOG.into());
    l.insert("instance".into(), who.instance.clone());
    l.insert("shard".into(), who.shard.clone());
    l.insert("severity".into(), "none".into());
    let ends = now + (every * WATCHDOG_LIFETIMES).as_millis() as i64;
    json!({
        "labels": l,
        "annotations": {"summary": format!("connwatch {} (shard {}) is alive; this alert always fires while it is healthy", who.instance, who.shard)},
        "startsAt": rfc3339(now),
        "endsAt": rfc3339(ends),
    })
}

/// `<base>/api/v2/alerts`, keeping any path prefix of the configured URL
/// (with or without a trailing slash).
pub fn alerts_url(base: &Url) -> Option<Url> {
    let mut b = base.clone();
    if !b.path().ends_with('/') {
        let p = format!("{}/", b.path());
        b.set_path(&p);
    }
    b.join("api/v2/alerts").ok()
}

/// What an event without a stored action does (replays of events stored
/// before actions were): derived from the status change.
fn derived(ev: &Outgoing) -> Option<PageAction> {
    if ev.event_kind()? != EventKind::StatusChanged {
        return None;
    }
    let health = |k: &str| crate::model::Health::parse(ev.envelope["data"][k].as_str()?);
    match Severity::of(health("current")?) {
        Some(severity) => Some(PageAction::Trigger {
            severity,
            replaces: None,
        }),
        None if ev.current_health() == Some("online") => Some(PageAction::Resolve {
            severity: health("previous")
                .and_then(Severity::of)
                .unwrap_or(Severity::Critical),
        }),
        None => None,
    }
}

/// The alerts one item makes: none for events Alertmanager does not take.
pub fn alerts(it: &Item, static_labels: &BTreeMap<String, String>, now: UnixMs) -> Vec<Value> {
    let ev = &it.out;
    let (Some(id), Some(action)) = (
        ev.connection_id.as_deref(),
        it.action.or_else(|| derived(ev)),
    ) else {
        return Vec::new();
    };
    let labels = |severity: Severity| {
        let mut l = static_labels.clone();
        l.insert("alertname".into(), ALERTNAME.into());
        l.insert("connection_id".into(), id.into());
        l.insert("severity".into(), severity.as_str().into());
        l
    };
    let starts = ev.envelope["timestamp"].as_str().unwrap_or_default();
    let instance = ev.envelope["instance"].as_str().unwrap_or("");
    let ended = |severity| {
        json!({"labels": labels(severity), "annotations": {"summary": ev.summary(), "instance": instance},
               "startsAt": starts, "endsAt": rfc3339(now)})
    };
    match action {
        PageAction::Trigger { severity, replaces } => {
            let mut out = vec![json!({
                "labels": labels(severity),
                "annotations": {"summary": ev.summary(), "error": ev.envelope["data"]["error"]["message"].as_str().unwrap_or(""), "instance": instance},
                "startsAt": starts,
            })];
            out.extend(replaces.map(ended));
            out
        }
        PageAction::Resolve { severity } => vec![ended(severity)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(previous: &str, current: &str, action: Option<PageAction>) -> Item {
        let envelope = json!({"id": "evt_1", "type": "connection.status_changed", "timestamp": "2026-11-28T21:30:45.123Z", "connection_id": "sap", "instance": "host-a",
            "data": {"previous": previous, "current": current, "error": {"message": "HTTP 503"}}});
        Item {
            out: Outgoing {
                id: "evt_1".into(),
                kind: "connection.status_changed".into(),
                connection_id: Some("sap".into()),
                body: envelope.to_string(),
                envelope,
            },
            action,
        }
    }

    #[test]
    fn the_alerts_url_keeps_a_prefix() {
        let u = |s: &str| alerts_url(&Url::parse(s).unwrap()).unwrap().to_string();
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
    fn firing_raised_and_resolved() {
        let mut labels = BTreeMap::new();
        labels.insert("team".to_string(), "ops".to_string());
        let fire = ev(
            "online",
            "offline",
            Some(PageAction::Trigger {
                severity: Severity::Critical,
                replaces: None,
            }),
        );
        let a = &alerts(&fire, &labels, 0)[0];
        assert_eq!(a["labels"]["alertname"], ALERTNAME);
        assert_eq!(a["labels"]["connection_id"], "sap");
        assert_eq!(a["labels"]["severity"], "critical");
        assert_eq!(a["labels"]["team"], "ops");
        assert_eq!(a["annotations"]["error"], "HTTP 503");
        // The pair's two daemons send the same labels; who spoke is an
        // annotation.
        assert_eq!(a["annotations"]["instance"], "host-a");
        assert!(a["labels"].get("instance").is_none());
        assert_eq!(a["startsAt"], "2026-11-28T21:30:45.123Z");
        assert!(a.get("endsAt").is_none());
        // A rise fires the new severity and ends the old one.
        let raise = ev(
            "degraded",
            "offline",
            Some(PageAction::Trigger {
                severity: Severity::Critical,
                replaces: Some(Severity::Warning),
            }),
        );
        let both = alerts(&raise, &labels, 1_000);
        assert_eq!(both.len(), 2);
        assert_eq!(both[1]["labels"]["severity"], "warning");
        assert_eq!(both[1]["endsAt"], "1970-01-01T00:00:01.000Z");
        // The resolve carries the severity the incident was fired with.
        let resolve = ev(
            "degraded",
            "online",
            Some(PageAction::Resolve {
                severity: Severity::Critical,
            }),
        );
        let r = alerts(&resolve, &labels, 1_000);
        assert_eq!(r[0]["labels"]["severity"], "critical");
        assert_eq!(r[0]["endsAt"], "1970-01-01T00:00:01.000Z");
        // Stored before actions existed: derived from the change.
        let old = alerts(&ev("offline", "online", None), &labels, 0);
        assert_eq!(old[0]["labels"]["severity"], "critical");
        assert!(alerts(&ev("online", "rate_limited", None), &labels, 0).is_empty());
    }

    #[test]
    fn the_watchdog_ends_three_intervals_ahead() {
        let who = Who {
            instance: "host-a".into(),
            shard: "2/3".into(),
        };
        let mut labels = BTreeMap::new();
        labels.insert("team".to_string(), "ops".to_string());
        let w = watchdog(&who, &labels, 1_000, Duration::from_secs(60));
        assert_eq!(w["labels"]["alertname"], WATCHDOG);
        assert_eq!(w["labels"]["instance"], "host-a");
        assert_eq!(w["labels"]["shard"], "2/3");
        assert_eq!(w["labels"]["team"], "ops");
        assert_eq!(w["startsAt"], "1970-01-01T00:00:01.000Z");
        assert_eq!(w["endsAt"], "1970-01-01T00:03:01.000Z");
    }
}
