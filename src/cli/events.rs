//! `connwatch events` and `connwatch sinks test`.

use crate::config::Sink;
use crate::deliver::retry::Verdict;
use crate::event::{Envelope, EventKind};
use crate::sinks::AttemptResult;
use crate::store::outbox::EventRow;

pub fn render(rows: &[EventRow], now: crate::model::UnixMs) -> String {
    let body: Vec<Vec<String>> =
        rows.iter()
            .map(|e| {
                let deliveries = if let Some(s) = &e.suppressed {
                    format!("held ({s})")
                } else if e.deliveries.is_empty() {
                    "-".into()
                } else {
                    e.deliveries
                        .iter()
                        .map(|d| {
                            let mut s = format!("{}:{}", d.sink, d.state);
                            if d.attempts > 1 || d.state != "done" {
                                s.push_str(&format!("/{}", d.attempts));
                            }
                            if let Some(t) = d.next_attempt_ms {
                                s.push_str(&format!(" (next {})", super::until(t, now)));
                            }
                            s
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                // The last error of a delivery (kept across replays), else the
                // latest one of any earlier attempt.
                let err =
                    e.deliveries
                        .iter()
                        .find_map(|d| d.last_error.clone())
                        .or_else(|| {
                            e.deliveries.iter().find_map(|d| {
                                d.history.iter().rev().find_map(|a| {
                                    a.error.as_ref().map(|x| format!("{x} (earlier)"))
                                })
                            })
                        })
                        .unwrap_or_default();
                vec![
                    e.timestamp.clone(),
                    e.id.clone(),
                    e.kind.clone(),
                    e.connection_id.clone().unwrap_or_else(|| "-".into()),
                    deliveries,
                    err.chars().take(60).collect(),
                ]
            })
            .collect();
    super::table(
        &[
            "TIME",
            "ID",
            "TYPE",
            "CONNECTION",
            "DELIVERIES (sink:state/attempts)",
            "LAST ERROR",
        ],
        &body,
    )
}

/// Sends a synthetic event to `sink` once.
pub async fn test_sink(
    sink: &Sink,
    dir: &crate::sinks::Directory,
    instance: &str,
) -> AttemptResult {
    let now = crate::model::now_ms();
    let env = Envelope::new(
        instance,
        EventKind::StatusChanged,
        now,
        Some("connwatch-test"),
        serde_json::json!({"previous": "online", "current": "offline", "severity": "critical", "test": true,
            "error": {"kind": "http_status", "message": "synthetic test event", "http_status": 503}}),
    );
    let client = crate::sinks::http::client().unwrap_or_default();
    crate::sinks::send_unstored(sink, &env, &client, dir).await
}

pub fn render_test(id: &str, r: &AttemptResult) -> String {
    let verdict = match &r.verdict {
        Verdict::Done if r.skipped => "skipped (this sink does not take the event)".to_string(),
        Verdict::Done => "accepted".to_string(),
        Verdict::Retry { retry_after } => format!(
            "refused, would retry{}",
            retry_after
                .map(|d| format!(" after {} s", d.as_secs()))
                .unwrap_or_default()
        ),
        Verdict::Dead => "refused for good".to_string(),
    };
    let mut s = format!("{id}: {verdict} in {} ms", r.duration.as_millis());
    if let Some(st) = r.status {
        s.push_str(&format!(" (status {st})"));
    }
    if let Some(e) = r.error.as_ref().or(r.answer.as_ref()) {
        s.push_str(&format!("\n  {e}"));
    }
    s
}
