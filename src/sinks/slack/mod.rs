//! `slack`: an incoming-webhook message (`text`). A chat sink: changes of
//! `group_wait` are one message (see [`crate::sinks::chat`]), one line per
//! kind of news, each with a mark; at most one message a second (Slack's
//! limit for incoming webhooks). The URL holds a secret in its path, so it
//! is shown as `https://hooks.slack.com/***`.
//!
//! Keys: `url` (required), `group_wait` (default 10 s).

use super::chat::{self, Tone};
use super::{http, AttemptResult, Cx, Item, Kind, Sink};
use crate::config::schema::leaf;
use crate::config::Section;
use crate::policy::SinkClass;
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::time::Duration;
use url::Url;

/// Slack's incoming webhooks take about one message a second.
pub const MIN_GAP: Duration = Duration::from_secs(1);

pub const KIND: Kind = Kind {
    name: "slack",
    keys: &[leaf("url"), chat::GROUP_WAIT],
    build,
};

#[derive(Debug)]
pub struct Slack {
    url: Url,
    group_wait: Duration,
}

fn build(s: &mut Section<'_, '_>) -> Option<Box<dyn Sink>> {
    if !s.has("url") {
        s.missing("url");
    }
    let url = s.url("url");
    let group_wait = chat::group_wait(s);
    Some(Box::new(Slack {
        url: url?,
        group_wait,
    }))
}

impl Sink for Slack {
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
            let body = payload(items).to_string();
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

    fn pace(&self) -> Option<Duration> {
        Some(MIN_GAP)
    }
}

pub fn payload(items: &[Item]) -> Value {
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
            payload(&[change("sap", "offline")])["text"],
            ":red_circle: sap: online → offline (HTTP 503)"
        );
        assert_eq!(
            payload(&[change("a", "offline"), change("b", "offline"), change("c", "degraded")])["text"],
            ":red_circle: 2 connections went offline: a, b\n:large_yellow_circle: c: online → degraded (HTTP 503)"
        );
    }
}
