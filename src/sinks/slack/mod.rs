//! `slack`: an incoming-webhook message (`text`). A chat sink: changes of
//! `group_wait` are one message (see [`crate::sinks::chat`]), one line per
//! kind of news, each with a mark; at most one message a second (Slack's
//! limit for incoming webhooks). The URL holds a secret in its path, so it
//! is shown as `https://hooks.slack.com/***`.
//!
//! Keys: `url` (required), `group_wait` (default 10 s).

use super::chat::{self, Tone};
use super::{Directory, Item, Kind, Sink};
use crate::config::schema::leaf;
use crate::config::Section;
use serde_json::{json, Value};
use std::time::Duration;

/// Slack's incoming webhooks take about one message a second.
pub const MIN_GAP: Duration = Duration::from_secs(1);

pub const KIND: Kind = Kind {
    name: "slack",
    keys: &[leaf("url"), chat::GROUP_WAIT],
    build,
};

fn build(s: &mut Section<'_, '_>) -> Option<Box<dyn Sink>> {
    chat::Hook::build(s, payload, MIN_GAP)
}

pub fn payload(items: &[Item], _: &Directory) -> Value {
    let text: Vec<String> = chat::lines(items)
        .into_iter()
        .map(|l| {
            let mark = match l.tone {
                Tone::Bad => ":red_circle:",
                Tone::Warn => ":large_yellow_circle:",
                Tone::Good => ":large_green_circle:",
                Tone::Info => ":information_source:",
            };
            format!("{mark} {}", l.text)
        })
        .collect();
    json!({ "text": text.join("\n") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Outgoing;

    fn change(id: &str, current: &str) -> Item {
        let envelope = json!({"type": "connection.status_changed", "connection_id": id,
            "data": {"previous": "online", "current": current, "error": {"message": "HTTP 503"}}});
        Item {
            out: Outgoing {
                id: "e".into(),
                kind: "connection.status_changed".into(),
                connection_id: Some(id.into()),
                body: String::new(),
                envelope,
            },
            action: None,
        }
    }

    #[test]
    fn one_line_per_kind_of_news() {
        assert_eq!(
            payload(&[change("sap", "offline")], &Directory::default())["text"],
            ":red_circle: sap: online → offline (HTTP 503)"
        );
        assert_eq!(
            payload(&[change("a", "offline"), change("b", "offline"), change("c", "degraded")], &Directory::default())["text"],
            ":red_circle: 2 connections went offline: a, b\n:large_yellow_circle: c: online → degraded (HTTP 503)"
        );
    }
}
