//! The event envelope of PRODUCT §4 and the list of event types.

use crate::model::{rfc3339, UnixMs};
use serde::Serialize;
use serde_json::Value;

pub const STATUS_CHANGED: &str = "connection.status_changed";
pub const AUTH_REQUIRED: &str = "connection.auth_required";
pub const RATE_LIMITED: &str = "connection.rate_limited";

/// Every event type connwatch emits (PRODUCT §4).
pub const EVENT_TYPES: &[&str] = &[
    STATUS_CHANGED,
    AUTH_REQUIRED,
    RATE_LIMITED,
    "circuit.opened",
    "circuit.half_opened",
    "circuit.closed",
    "connection.flapping_started",
    "connection.flapping_stopped",
    "sync.completed",
    "sync.failed",
    "sync.stale",
    "system.error",
];

/// Whether an `events = [...]` filter entry is valid: `*`, `family.*`, or a
/// known type.
pub fn is_valid_filter(entry: &str) -> bool {
    entry == "*"
        || EVENT_TYPES.contains(&entry)
        || entry
            .strip_suffix(".*")
            .is_some_and(|fam| EVENT_TYPES.iter().any(|t| t.split('.').next() == Some(fam)))
}

/// Whether `event_type` passes `filter` (empty filter = everything).
pub fn filter_matches(filter: &[String], event_type: &str) -> bool {
    filter.is_empty()
        || filter.iter().any(|f| {
            f == "*"
                || f == event_type
                || f.strip_suffix(".*")
                    .is_some_and(|fam| event_type.split('.').next() == Some(fam))
        })
}

/// A new event id: `evt_` + a ULID (sortable by creation time).
pub fn new_event_id() -> String {
    format!("evt_{}", ulid::Ulid::new())
}

/// The envelope, exactly as stored and sent.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: String,
    pub connection_id: Option<String>,
    pub data: Value,
}

impl Envelope {
    pub fn new(kind: &str, at: UnixMs, connection_id: Option<&str>, data: Value) -> Self {
        Envelope {
            id: new_event_id(),
            kind: kind.to_string(),
            timestamp: rfc3339(at),
            connection_id: connection_id.map(str::to_string),
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert!(is_valid_filter("*"));
        assert!(is_valid_filter("circuit.*"));
        assert!(is_valid_filter(STATUS_CHANGED));
        assert!(!is_valid_filter("connection.status_change"));
        assert!(!is_valid_filter("bogus.*"));
        let f = vec!["circuit.*".to_string(), AUTH_REQUIRED.to_string()];
        assert!(filter_matches(&f, "circuit.opened"));
        assert!(filter_matches(&f, AUTH_REQUIRED));
        assert!(!filter_matches(&f, STATUS_CHANGED));
        assert!(filter_matches(&[], STATUS_CHANGED));
    }

    #[test]
    fn envelope_shape() {
        let e = Envelope::new(STATUS_CHANGED, 0, Some("a"), serde_json::json!({"x": 1}));
        let v = serde_json::to_value(&e).unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(v["type"], STATUS_CHANGED);
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["connection_id"], "a");
        assert_eq!(v["data"]["x"], 1);
    }
}
