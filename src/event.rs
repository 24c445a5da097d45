//! The event envelope of the product contract, the one list of event kinds,
//! and the `events = [...]` filters that name them.
//!
//! Every event type string connwatch emits is spelled once, in
//! [`EventKind::as_str`]; the rest of the code names kinds by the enum.

use crate::model::{rfc3339, UnixMs};
use serde::{Serialize, Serializer};
use serde_json::Value;
use std::fmt;

/// What happened. The string forms are the envelope's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    StatusChanged,
    AuthRequired,
    RateLimited,
    CircuitOpened,
    CircuitHalfOpened,
    CircuitClosed,
    FlappingStarted,
    FlappingStopped,
    SyncCompleted,
    SyncFailed,
    SyncStale,
    SystemError,
    ScopeChanged,
    Discovered,
    Retired,
}

impl EventKind {
    /// How many kinds there are (tables indexed by [`EventKind::index`]).
    pub const COUNT: usize = 15;

    pub const ALL: [EventKind; EventKind::COUNT] = [
        EventKind::StatusChanged,
        EventKind::AuthRequired,
        EventKind::RateLimited,
        EventKind::CircuitOpened,
        EventKind::CircuitHalfOpened,
        EventKind::CircuitClosed,
        EventKind::FlappingStarted,
        EventKind::FlappingStopped,
        EventKind::SyncCompleted,
        EventKind::SyncFailed,
        EventKind::SyncStale,
        EventKind::SystemError,
        EventKind::ScopeChanged,
        EventKind::Discovered,
        EventKind::Retired,
    ];

    /// The envelope's `type`: the one place these strings are written.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::StatusChanged => "connection.status_changed",
            EventKind::AuthRequired => "connection.auth_required",
            EventKind::RateLimited => "connection.rate_limited",
            EventKind::CircuitOpened => "circuit.opened",
            EventKind::CircuitHalfOpened => "circuit.half_opened",
            EventKind::CircuitClosed => "circuit.closed",
            EventKind::FlappingStarted => "connection.flapping_started",
            EventKind::FlappingStopped => "connection.flapping_stopped",
            EventKind::SyncCompleted => "sync.completed",
            EventKind::SyncFailed => "sync.failed",
            EventKind::SyncStale => "sync.stale",
            EventKind::SystemError => "system.error",
            EventKind::ScopeChanged => "connection.scope_changed",
            EventKind::Discovered => "connection.discovered",
            EventKind::Retired => "connection.retired",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The part before the dot: `connection`, `circuit`, `sync`, `system`.
    pub fn family(self) -> &'static str {
        let s = self.as_str();
        s.split_once('.').map_or(s, |(f, _)| f)
    }

    /// Position in [`EventKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One entry of a filter that names something.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Named {
    Kind(EventKind),
    /// `family.*`.
    Family(&'static str),
}

/// An `events = [...]` list. `"*"` (or no list at all) stands for the
/// owner's default set: every kind for a connection and for raw sinks, a
/// smaller set for paging and chat sinks (see [`crate::policy`]). Anything
/// else is *named*: an exact type, or a family such as `"circuit.*"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventFilter {
    named: Vec<Named>,
    /// `"*"` was listed, or no list was given.
    default: bool,
}

impl Default for EventFilter {
    fn default() -> Self {
        EventFilter::all()
    }
}

impl EventFilter {
    /// No list: the default set.
    pub fn all() -> EventFilter {
        EventFilter {
            named: Vec::new(),
            default: true,
        }
    }

    /// Parses a list (an empty one is the same as none: the default set);
    /// `Err(entry)` names the first entry that is neither `*`, a known
    /// type, nor a known `family.*`.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<EventFilter, String> {
        let mut f = EventFilter {
            named: Vec::new(),
            default: list.is_empty(),
        };
        for e in list {
            let e = e.as_ref();
            if e == "*" {
                f.default = true;
            } else if let Some(k) = EventKind::parse(e) {
                f.named.push(Named::Kind(k));
            } else if let Some(fam) = e.strip_suffix(".*").and_then(|fam| {
                EventKind::ALL
                    .iter()
                    .map(|k| k.family())
                    .find(|known| *known == fam)
            }) {
                f.named.push(Named::Family(fam));
            } else {
                return Err(e.to_string());
            }
        }
        Ok(f)
    }

    /// The known type or family nearest to a mistyped entry, if one is
    /// near enough to be a likely typo (for error messages).
    pub fn nearest(entry: &str) -> Option<&'static str> {
        const FAMILIES: [&str; 4] = ["connection.*", "circuit.*", "sync.*", "system.*"];
        crate::config::schema::suggest(
            entry,
            EventKind::ALL
                .iter()
                .map(|k| k.as_str())
                .chain(FAMILIES)
                .chain(["*"]),
        )
    }

    /// Whether `kind` is named explicitly (not only through `"*"`).
    pub fn names(&self, kind: EventKind) -> bool {
        self.named.iter().any(|n| match n {
            Named::Kind(k) => *k == kind,
            Named::Family(f) => *f == kind.family(),
        })
    }

    /// Whether the filter lets `kind` through, given the owner's default set.
    pub fn takes(&self, kind: EventKind, default: impl Fn(EventKind) -> bool) -> bool {
        self.names(kind) || (self.default && default(kind))
    }

    /// For `check`: `*`, or the entries as written.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if self.default {
            parts.push("*".into());
        }
        for n in &self.named {
            parts.push(match n {
                Named::Kind(k) => k.as_str().to_string(),
                Named::Family(f) => format!("{f}.*"),
            });
        }
        parts.join(",")
    }
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
    pub kind: EventKind,
    pub timestamp: String,
    pub connection_id: Option<String>,
    /// The daemon that spoke (`[daemon] instance`), so the receivers of an
    /// HA pair can tell its two members apart.
    pub instance: String,
    pub data: Value,
}

impl Envelope {
    pub fn new(
        instance: &str,
        kind: EventKind,
        at: UnixMs,
        connection_id: Option<&str>,
        data: Value,
    ) -> Self {
        Envelope {
            id: new_event_id(),
            kind,
            timestamp: rfc3339(at),
            connection_id: connection_id.map(str::to_string),
            instance: instance.to_string(),
            data,
        }
    }
}

/// A stored event on its way to a sink (or one that was never stored: a
/// test event, a `system.error` about the database itself).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: String,
    /// The envelope's `type` as stored (an unknown one is kept as text).
    pub kind: String,
    pub connection_id: Option<String>,
    /// The envelope exactly as stored (the webhook body).
    pub body: String,
    pub envelope: Value,
}

impl Outgoing {
    /// Ready to send without storing it.
    pub fn unstored(env: &Envelope) -> Outgoing {
        let body = serde_json::to_string(env).unwrap_or_default();
        Outgoing {
            id: env.id.clone(),
            kind: env.kind.as_str().to_string(),
            connection_id: env.connection_id.clone(),
            envelope: serde_json::from_str(&body).unwrap_or_default(),
            body,
        }
    }

    /// The known kind, if the stored type is one.
    pub fn event_kind(&self) -> Option<EventKind> {
        EventKind::parse(&self.kind)
    }

    /// `data.current` of a status change.
    pub fn current_health(&self) -> Option<&str> {
        (self.event_kind() == Some(EventKind::StatusChanged))
            .then(|| self.envelope["data"]["current"].as_str())
            .flatten()
    }

    /// A one-line summary: "sap-prod: online → offline (HTTP 503)".
    pub fn summary(&self) -> String {
        let id = self.connection_id.as_deref().unwrap_or("connwatch");
        let d = &self.envelope["data"];
        let mut s = match (d["previous"].as_str(), d["current"].as_str()) {
            (Some(p), Some(c)) => format!("{id}: {p} → {c}"),
            _ => format!("{id}: {}", self.kind),
        };
        if let Some(m) = d["error"]["message"]
            .as_str()
            .or_else(|| d["message"].as_str())
        {
            s.push_str(&format!(" ({m})"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_families_are_known() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(EventKind::ALL[k.index()], k);
        }
        assert_eq!(EventKind::SystemError.family(), "system");
        assert_eq!(EventKind::CircuitOpened.family(), "circuit");
        assert_eq!(EventKind::parse("connection.status_change"), None);
    }

    #[test]
    fn filters_name_types_and_families_and_star_means_the_default() {
        let f = EventFilter::parse(&["circuit.*", "connection.auth_required"]).unwrap();
        assert!(f.names(EventKind::CircuitOpened));
        assert!(f.names(EventKind::AuthRequired));
        assert!(!f.names(EventKind::StatusChanged));
        assert!(!f.takes(EventKind::StatusChanged, |_| true), "no star");
        let star = EventFilter::parse(&["*"]).unwrap();
        assert_eq!(star, EventFilter::all());
        assert!(!star.names(EventKind::CircuitOpened));
        assert!(star.takes(EventKind::CircuitOpened, |_| true));
        assert!(!star.takes(EventKind::CircuitOpened, |k| k == EventKind::StatusChanged));
        let both = EventFilter::parse(&["*", "circuit.opened"]).unwrap();
        assert!(both.takes(EventKind::CircuitOpened, |_| false));
        assert_eq!(both.describe(), "*,circuit.opened");
        assert_eq!(
            EventFilter::parse(&["connection.status_change"]),
            Err("connection.status_change".into())
        );
        assert_eq!(EventFilter::parse(&["bogus.*"]), Err("bogus.*".into()));
        assert_eq!(EventFilter::parse::<&str>(&[]), Ok(EventFilter::all()));
        assert_eq!(
            EventFilter::nearest("connection.status_change"),
            Some("connection.status_changed")
        );
        assert_eq!(EventFilter::nearest("sync.stall"), Some("sync.stale"));
        assert_eq!(EventFilter::nearest("pagerduty"), None);
    }

    #[test]
    fn envelope_shape() {
        let e = Envelope::new(
            "host-a",
            EventKind::StatusChanged,
            0,
            Some("a"),
            serde_json::json!({"x": 1}),
        );
        let v = serde_json::to_value(&e).unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(v["type"], "connection.status_changed");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["connection_id"], "a");
        assert_eq!(v["instance"], "host-a");
        assert_eq!(v["data"]["x"], 1);
        let out = Outgoing::unstored(&e);
        assert_eq!(out.event_kind(), Some(EventKind::StatusChanged));
    }
}
