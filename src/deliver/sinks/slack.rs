//! `slack`: an incoming-webhook message with one readable line of `text`.
//! The dispatcher keeps Slack's pace (one message a second per sink).

use super::Outgoing;
use serde_json::{json, Value};
use std::time::Duration;

/// Slack's incoming webhooks take about one message a second.
pub const MIN_GAP: Duration = Duration::from_secs(1);

pub fn payload(ev: &Outgoing) -> Value {
    let mark = match super::current_health(ev) {
        Some("online") => ":large_green_circle:",
        Some("degraded" | "rate_limited") => ":large_yellow_circle:",
        Some(_) => ":red_circle:",
        None => ":information_source:",
    };
    json!({ "text": format!("{mark} {} [{}]", super::summary(ev), ev.kind) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_readable_line() {
        let envelope = json!({"type": "connection.status_changed", "data": {"previous": "online", "current": "offline", "error": {"message": "HTTP 503"}}});
        let ev = Outgoing {
            id: "e".into(),
            kind: "connection.status_changed".into(),
            connection_id: Some("sap".into()),
            body: String::new(),
            envelope,
        };
        assert_eq!(
            payload(&ev)["text"],
            ":red_circle: sap: online → offline (HTTP 503) [connection.status_changed]"
        );
    }
}
