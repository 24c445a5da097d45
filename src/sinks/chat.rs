//! The lines of a chat message, shared by the chat kinds, and their
//! `group_wait` key. One event is one full line ("sap-prod: online →
//! offline (HTTP 503)"). A group (see [`crate::policy::group`]) is one line
//! per kind of news, the worst first, naming at most [`NAMES`] connections:
//! "12 connections went offline: a, b, c, d, e, f, g, h, i, j and 2 more".

use super::Item;
use crate::config::schema::{leaf, Field};
use crate::config::Section;
use crate::event::EventKind;
use std::time::Duration;

/// Connections named per line before "and N more".
pub const NAMES: usize = 10;

/// Default `group_wait`: changes of this long after the first go into one
/// message.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(10);

/// The key chat kinds list among theirs.
pub const GROUP_WAIT: Field = leaf("group_wait");

/// Reads `group_wait` (0s – 10m).
pub fn group_wait(s: &mut Section<'_, '_>) -> Duration {
    s.duration("group_wait", Duration::ZERO, Duration::from_secs(600))
        .unwrap_or(DEFAULT_GROUP_WAIT)
}

/// What kind of news a line is: each chat kind picks its mark or colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tone {
    Bad,
    Warn,
    Good,
    Info,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub tone: Tone,
    pub text: String,
}

/// The lines for one message.
pub fn lines(items: &[Item]) -> Vec<Line> {
    if let [one] = items {
        return vec![single(one)];
    }
    // Groups keep the order their first member arrived in.
    let mut groups: Vec<(String, Vec<&Item>)> = Vec::new();
    for it in items {
        let key = group_key(it);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(it),
            None => groups.push((key, vec![it])),
        }
    }
    let mut out: Vec<Line> = groups
        .iter()
        .map(|(_, g)| match g.as_slice() {
            [one] => single(one),
            many => summary(many),
        })
        .collect();
    out.sort_by_key(|l| l.tone);
    out
}

fn group_key(it: &Item) -> String {
    format!(
        "{}/{}/{}",
        it.out.kind,
        it.out.current_health().unwrap_or(""),
        is_reminder(it)
    )
}

fn is_reminder(it: &Item) -> bool {
    it.out.envelope["data"]["reminder"].is_u64()
}

fn tone(it: &Item) -> Tone {
    match it.out.event_kind() {
        Some(EventKind::StatusChanged) => match it.out.current_health() {
            Some("online") => Tone::Good,
            Some("degraded" | "rate_limited") => Tone::Warn,
            _ => Tone::Bad,
        },
        Some(EventKind::SystemError | EventKind::CircuitOpened | EventKind::AuthRequired) => {
            Tone::Bad
        }
        Some(
            EventKind::FlappingStarted
            | EventKind::SyncFailed
            | EventKind::SyncStale
            | EventKind::RateLimited,
        ) => Tone::Warn,
        Some(EventKind::FlappingStopped | EventKind::CircuitClosed) => Tone::Good,
        _ => Tone::Info,
    }
}

fn single(it: &Item) -> Line {
    let mut text = match it.out.event_kind() {
        Some(EventKind::StatusChanged | EventKind::SystemError) => it.out.summary(),
        _ => format!(
            "{}: {}",
            it.out.connection_id.as_deref().unwrap_or("connwatch"),
            what(it, 1)
        ),
    };
    if let Some(n) = it.out.envelope["data"]["reminder"].as_u64() {
        text.push_str(&format!(" (reminder {n})"));
    }
    Line {
        tone: tone(it),
        text,
    }
}

fn summary(g: &[&Item]) -> Line {
    let first = g[0];
    let names: Vec<&str> = g
        .iter()
        .map(|it| it.out.connection_id.as_deref().unwrap_or("connwatch"))
        .collect();
    let mut list = names[..names.len().min(NAMES)].join(", ");
    if names.len() > NAMES {
        list.push_str(&format!(" and {} more", names.len() - NAMES));
    }
    let still = if is_reminder(first) { "still: " } else { "" };
    Line {
        tone: tone(first),
        text: format!(
            "{still}{} connections {}: {list}",
            g.len(),
            what(first, g.len())
        ),
    }
}

/// What happened, as a verb phrase ("went offline").
fn what(it: &Item, n: usize) -> String {
    let plural = n > 1;
    let are = if plural { "are" } else { "is" };
    match it.out.event_kind() {
        Some(EventKind::StatusChanged) => match it.out.current_health().unwrap_or("") {
            "online" => format!("{are} back online"),
            "offline" => "went offline".into(),
            "auth_required" if plural => "need new credentials".into(),
            "auth_required" => "needs new credentials".into(),
            "invalid" => format!("{are} answering with an invalid status"),
            h => format!("{are} {}", h.replace('_', " ")),
        },
        Some(EventKind::FlappingStarted) => "started flapping".into(),
        Some(EventKind::FlappingStopped) => "stopped flapping".into(),
        Some(EventKind::SyncFailed) => "had a sync fail".into(),
        Some(EventKind::SyncStale) => "had no sync for too long".into(),
        Some(EventKind::SyncCompleted) => "completed a sync".into(),
        Some(EventKind::CircuitOpened) => "opened the circuit".into(),
        Some(EventKind::CircuitHalfOpened) => "sent a trial probe".into(),
        Some(EventKind::CircuitClosed) => "closed the circuit".into(),
        Some(EventKind::AuthRequired) => "reported expired credentials".into(),
        Some(EventKind::RateLimited) => "were rate limited".into(),
        Some(EventKind::SystemError) => "reported a system error".into(),
        None => it.out.kind.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Outgoing;
    use serde_json::json;

    fn item(id: &str, kind: &str, data: serde_json::Value) -> Item {
        let envelope = json!({"id": "evt", "type": kind, "connection_id": id, "data": data});
        Item {
            out: Outgoing {
                id: "evt".into(),
                kind: kind.into(),
                connection_id: Some(id.into()),
                body: envelope.to_string(),
                envelope,
            },
            action: None,
        }
    }

    fn change(id: &str, previous: &str, current: &str) -> Item {
        item(
            id,
            "connection.status_changed",
            json!({"previous": previous, "current": current, "error": {"message": "HTTP 503"}}),
        )
    }

    #[test]
    fn one_change_is_one_full_line() {
        assert_eq!(
            lines(&[change("sap", "online", "offline")]),
            [Line {
                tone: Tone::Bad,
                text: "sap: online → offline (HTTP 503)".into()
            }]
        );
        let stale = item("erp", "sync.stale", json!({"age_s": 7200}));
        assert_eq!(lines(&[stale])[0].text, "erp: had no sync for too long");
    }

    #[test]
    fn a_storm_is_a_few_readable_lines_worst_first() {
        let mut items: Vec<Item> = (0..12)
            .map(|i| change(&format!("c{i:02}"), "online", "offline"))
            .collect();
        items.insert(3, change("back", "offline", "online"));
        items.push(change("slow", "online", "degraded"));
        items.push(change("x1", "online", "auth_required"));
        items.push(change("x2", "online", "auth_required"));
        let got = lines(&items);
        let text: Vec<&str> = got.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            text,
            [
                "12 connections went offline: c00, c01, c02, c03, c04, c05, c06, c07, c08, c09 and 2 more",
                "2 connections need new credentials: x1, x2",
                "slow: online → degraded (HTTP 503)",
                "back: offline → online (HTTP 503)",
            ]
        );
    }

    #[test]
    fn reminders_say_so() {
        let mut a = change("a", "online", "offline");
        a.out.envelope["data"]["reminder"] = json!(2);
        assert_eq!(
            lines(&[a.clone()])[0].text,
            "a: online → offline (HTTP 503) (reminder 2)"
        );
        let mut b = change("b", "online", "offline");
        b.out.envelope["data"]["reminder"] = json!(2);
        assert_eq!(
            lines(&[a, b])[0].text,
            "still: 2 connections went offline: a, b"
        );
    }
}
