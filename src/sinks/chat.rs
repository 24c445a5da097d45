//! The lines of a chat message, shared by the chat kinds, and their
//! `group_wait` key. One event is one full line ("sap-prod: online →
//! offline (HTTP 503)"). A group (see [`crate::policy::group`]) is one line
//! per kind of news, the worst first, naming at most [`NAMES`] connections:
//! "12 connections went offline: a, b, c, d, e, f, g, h, i, j and 2 more".
//!
//! Also the sink the webhook chat kinds (Slack, Teams) share: [`Hook`], a
//! JSON POST of the kind's payload to a URL that holds a secret.

use super::{http, AttemptResult, Cx, Directory, Item, Sink};
use crate::config::schema::{leaf, Field};
use crate::config::Section;
use crate::event::EventKind;
use crate::policy::SinkClass;
use futures::future::BoxFuture;
use serde_json::Value;
use std::time::Duration;
use url::Url;

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

/// A chat webhook: one message per group, the kind's `payload`, one at a
/// time and at most one per `pace`. Its URL holds a secret (in its path or
/// query), so it is shown as `https://host/***`.
#[derive(Debug)]
pub struct Hook {
    url: Url,
    group_wait: Duration,
    payload: fn(&[Item], &Directory) -> Value,
    pace: Duration,
}

impl Hook {
    /// Reads `url` (required) and `group_wait`.
    pub fn build(
        s: &mut Section<'_, '_>,
        payload: fn(&[Item], &Directory) -> Value,
        pace: Duration,
    ) -> Option<Box<dyn Sink>> {
        if !s.has("url") {
            s.missing("url");
        }
        let url = s.url("url");
        let group_wait = group_wait(s);
        Some(Box::new(Hook {
            url: url?,
            group_wait,
            payload,
            pace,
        }))
    }
}

impl Sink for Hook {
    fn class(&self) -> SinkClass {
        SinkClass::Chat {
            group_wait: self.group_wait,
        }
    }

    fn target(&self) -> String {
        format!(
            "{}://{}/***",
            self.url.scheme(),
            self.url.host_str().unwrap_or("")
        )
    }

    fn send<'a>(&'a self, items: &'a [Item], cx: Cx<'a>) -> BoxFuture<'a, AttemptResult> {
        Box::pin(async move {
            if items.is_empty() {
                return AttemptResult::skipped();
            }
            let body = (self.payload)(items, cx.dir).to_string();
            http::post_json(cx, &self.url, &[], Vec::new(), body).await
        })
    }

    fn max_batch(&self) -> usize {
        crate::policy::group::MAX_GROUP
    }

    /// One message at a time, so messages arrive in order and paced.
    fn concurrency(&self) -> usize {
        1
    }

    fn concurrency_fixed(&self) -> Option<&'static str> {
        Some("it sends one message at a time, so messages arrive in order and paced")
    }

    fn pace(&self) -> Option<Duration> {
        Some(self.pace)
    }
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

/// Connections named in a [`headline`].
pub const HEADLINE_NAMES: usize = 3;

/// The most characters of a [`headline`].
pub const HEADLINE_MAX: usize = 160;

/// The lines for one message.
pub fn lines(items: &[Item]) -> Vec<Line> {
    grouped(items, NAMES).into_iter().map(|(l, _)| l).collect()
}

/// The gist of a message in one short line, for a title or a mail
/// subject: its first (worst) line naming at most [`HEADLINE_NAMES`]
/// connections, and how many other changes it holds. "3 connections went
/// offline: erp-prod, mes, cmms (and 1 other change)".
pub fn headline(items: &[Item]) -> String {
    let g = grouped(items, HEADLINE_NAMES);
    let Some((first, n)) = g.first() else {
        return "no news".into();
    };
    let mut text = first.text.clone();
    if text.chars().count() > HEADLINE_MAX {
        text = text.chars().take(HEADLINE_MAX - 1).collect::<String>() + "…";
    }
    match items.len() - n {
        0 => text,
        1 => format!("{text} (and 1 other change)"),
        rest => format!("{text} (and {rest} other changes)"),
    }
}

/// One event as a row of a message that lists them: for Teams' rows and
/// an email's details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub tone: Tone,
    /// The connection's id, or `None` for the daemon's own events.
    pub id: Option<String>,
    /// "online → offline", "started flapping".
    pub what: String,
    /// The error or message the event carries.
    pub detail: Option<String>,
    /// The event's time (RFC 3339).
    pub at: String,
}

/// A row per event, the worst first (otherwise in arrival order).
pub fn rows(items: &[Item]) -> Vec<Row> {
    let mut out: Vec<Row> = items.iter().map(row).collect();
    out.sort_by_key(|r| r.tone);
    out
}

fn row(it: &Item) -> Row {
    let d = &it.out.envelope["data"];
    let mut what = match (
        it.out.event_kind(),
        d["previous"].as_str(),
        d["current"].as_str(),
    ) {
        (Some(EventKind::StatusChanged), Some(p), Some(c)) => format!("{p} → {c}"),
        (Some(EventKind::SystemError), ..) => match d["component"].as_str() {
            Some(c) => format!("system error ({c})"),
            None => "system error".into(),
        },
        _ => what(it, 1),
    };
    if let Some(n) = d["reminder"].as_u64() {
        what.push_str(&format!(" (reminder {n})"));
    }
    Row {
        tone: tone(it),
        id: it.out.connection_id.clone(),
        what,
        detail: d["error"]["message"]
            .as_str()
            .or_else(|| d["message"].as_str())
            .map(str::to_string),
        at: it.out.envelope["timestamp"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    }
}

/// Lines with the count of events each stands for, naming at most `cap`
/// connections per line.
fn grouped(items: &[Item], cap: usize) -> Vec<(Line, usize)> {
    if let [one] = items {
        return vec![(single(one), 1)];
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
    let mut out: Vec<(Line, usize)> = groups
        .iter()
        .map(|(_, g)| match g.as_slice() {
            [one] => (single(one), 1),
            many => (summary(many, cap), many.len()),
        })
        .collect();
    out.sort_by_key(|(l, _)| l.tone);
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
        Some(EventKind::ScopeChanged) => match it.out.envelope["data"]["current"].as_str() {
            Some("online") => Tone::Good,
            _ => Tone::Warn,
        },
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

fn summary(g: &[&Item], cap: usize) -> Line {
    let first = g[0];
    let names: Vec<&str> = g
        .iter()
        .map(|it| it.out.connection_id.as_deref().unwrap_or("connwatch"))
        .collect();
    let mut list = names[..names.len().min(cap)].join(", ");
    if names.len() > cap {
        list.push_str(&format!(" and {} more", names.len() - cap));
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
            "permission_denied" if plural => "are refused by the source system".into(),
            "permission_denied" => "is refused by the source system".into(),
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
        Some(EventKind::Discovered) if plural => "were discovered".into(),
        Some(EventKind::Discovered) => "was discovered".into(),
        Some(EventKind::Retired) if plural => "were retired (no longer listed)".into(),
        Some(EventKind::Retired) => "was retired (no longer listed)".into(),
        Some(EventKind::ScopeChanged) if plural => "had a scope change".into(),
        Some(EventKind::ScopeChanged) => {
            let d = &it.out.envelope["data"];
            format!(
                "scope {}: {} → {}",
                d["scope"].as_str().unwrap_or("?"),
                d["previous"].as_str().unwrap_or("?"),
                d["current"].as_str().unwrap_or("?")
            )
        }
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
    fn a_headline_names_a_few_and_counts_the_rest() {
        assert_eq!(
            headline(&[change("sap", "online", "offline")]),
            "sap: online → offline (HTTP 503)"
        );
        let mut items: Vec<Item> = ["erp-prod", "mes", "cmms", "wms"]
            .iter()
            .map(|id| change(id, "online", "offline"))
            .collect();
        assert_eq!(
            headline(&items),
            "4 connections went offline: erp-prod, mes, cmms and 1 more"
        );
        items.push(change("eam", "offline", "online"));
        items.push(change("qms", "online", "degraded"));
        assert_eq!(
            headline(&items),
            "4 connections went offline: erp-prod, mes, cmms and 1 more (and 2 other changes)"
        );
        let long = item(
            "x",
            "connection.status_changed",
            json!({"previous": "online", "current": "offline", "error": {"message": "e".repeat(500)}}),
        );
        assert_eq!(headline(&[long]).chars().count(), HEADLINE_MAX);
    }

    #[test]
    fn rows_are_one_per_event_worst_first() {
        let mut back = change("eam", "offline", "online");
        back.out.envelope["timestamp"] = json!("2026-12-02T10:00:00.000Z");
        let stale = item("erp", "sync.stale", json!({"age_s": 7200}));
        let got = rows(&[back, stale, change("sap", "online", "offline")]);
        let what: Vec<(Option<&str>, &str, Option<&str>)> = got
            .iter()
            .map(|r| (r.id.as_deref(), r.what.as_str(), r.detail.as_deref()))
            .collect();
        assert_eq!(
            what,
            [
                (Some("sap"), "online → offline", Some("HTTP 503")),
                (Some("erp"), "had no sync for too long", None),
                (Some("eam"), "offline → online", Some("HTTP 503")),
            ]
        );
        assert_eq!(got[2].at, "2026-12-02T10:00:00.000Z");
        assert_eq!(got[0].tone, Tone::Bad);
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
