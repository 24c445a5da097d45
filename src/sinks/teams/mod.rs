//! `teams`: a Microsoft Teams Workflows webhook ("Post to a channel when a
//! webhook request is received"), one Adaptive Card message per group. A
//! chat sink: changes of `group_wait` are one card (see
//! [`crate::sinks::chat`]): a title line (the gist of the group, coloured
//! by the worst news), then one row per connection — its name, previous →
//! current, the error — coloured by severity, linked to the connection's
//! row on the status page when `[daemon] public_url` is set. At most one
//! message a second, in order.
//!
//! The URL carries its signature (`sig=…`) in the query: it is a secret,
//! shown as `https://host/***` like Slack's. Retries and 429 as for
//! webhooks ([`crate::sinks::http`]).
//!
//! Keys: `url` (required), `group_wait` (default 10 s).

use super::chat::{self, Row, Tone};
use super::{Directory, Item, Kind, Sink};
use crate::config::schema::leaf;
use crate::config::Section;
use serde_json::{json, Value};
use std::time::Duration;

/// Teams takes a few messages a second per webhook at most; one a second
/// keeps a storm readable and under its throttling.
pub const MIN_GAP: Duration = Duration::from_secs(1);

/// Rows per card; the rest are counted in a last row. Teams refuses cards
/// over about 28 KB: 50 rows of at most [`DETAIL_MAX`] characters stay
/// well under it.
pub const MAX_ROWS: usize = 50;

/// The most characters of an error shown in a row.
pub const DETAIL_MAX: usize = 200;

/// The Adaptive Card version sent: the newest Teams renders everywhere
/// (desktop, web, mobile).
pub const CARD_VERSION: &str = "1.4";

pub const KIND: Kind = Kind {
    name: "teams",
    keys: &[leaf("url"), chat::GROUP_WAIT],
    build,
};

fn build(s: &mut Section<'_, '_>) -> Option<Box<dyn Sink>> {
    chat::Hook::build(s, payload, MIN_GAP)
}

/// The Workflows envelope around one Adaptive Card.
pub fn payload(items: &[Item], dir: &Directory) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card(items, dir),
        }],
    })
}

fn card(items: &[Item], dir: &Directory) -> Value {
    let rows = chat::rows(items);
    let worst = rows.first().map(|r| r.tone).unwrap_or(Tone::Info);
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": md(&format!("connwatch: {}", chat::headline(items))),
        "weight": "Bolder",
        "size": "Medium",
        "color": colour(worst),
        "wrap": true,
    })];
    for r in rows.iter().take(MAX_ROWS) {
        body.push(json!({
            "type": "TextBlock",
            "text": row_text(r, dir),
            "color": colour(r.tone),
            "wrap": true,
            "spacing": "Small",
        }));
    }
    if rows.len() > MAX_ROWS {
        body.push(json!({
            "type": "TextBlock",
            "text": format!("… and {} more", rows.len() - MAX_ROWS),
            "isSubtle": true,
            "wrap": true,
        }));
    }
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "msteams": { "width": "Full" },
        "body": body,
    });
    if let Some(page) = dir.page() {
        card["actions"] = json!([{
            "type": "Action.OpenUrl",
            "title": "Open the status page",
            "url": page.as_str(),
        }]);
    }
    card
}

/// "**SAP S/4HANA production** (sap-prod): online → offline — HTTP 503",
/// the name a link to the connection's row when the page is known.
fn row_text(r: &Row, dir: &Directory) -> String {
    let id = r.id.as_deref().unwrap_or("connwatch");
    let label = match r.id.as_deref().and_then(|i| dir.name(i)) {
        Some(name) => format!("**{}** ({})", md(name), md(id)),
        None => format!("**{}**", md(id)),
    };
    let label = match r.id.as_deref().and_then(|i| dir.link(i)) {
        Some(link) => format!("[{label}]({link})"),
        None => label,
    };
    let mut text = format!("{label}: {}", md(&r.what));
    if let Some(d) = &r.detail {
        let mut shown: String = d.chars().take(DETAIL_MAX).collect();
        if shown.len() < d.len() {
            shown.push('…');
        }
        text.push_str(&format!(" — {}", md(&shown)));
    }
    text
}

/// Adaptive Card colours for each kind of news.
fn colour(t: Tone) -> &'static str {
    match t {
        Tone::Bad => "Attention",
        Tone::Warn => "Warning",
        Tone::Good => "Good",
        Tone::Info => "Default",
    }
}

/// Text shown as written: Teams renders Markdown in a TextBlock, so the
/// characters that would format (or make a link of) a name or an error are
/// escaped.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '*' | '_' | '[' | ']' | '`' | '~') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Outgoing;

    fn change(id: &str, previous: &str, current: &str, error: Option<&str>) -> Item {
        let envelope = json!({"type": "connection.status_changed", "connection_id": id,
            "timestamp": "2026-12-02T10:00:00.000Z",
            "data": {"previous": previous, "current": current,
                     "error": error.map(|m| json!({"message": m}))}});
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

    use url::Url;

    fn dir(public_url: Option<&str>) -> Directory {
        Directory {
            names: [("sap_prod".to_string(), "SAP *prod*".to_string())].into(),
            public_url: public_url.map(|u| Url::parse(u).unwrap()),
        }
    }

    #[test]
    fn a_card_in_the_workflows_envelope() {
        let v = payload(
            &[change("sap_prod", "online", "offline", Some("HTTP 503"))],
            &dir(None),
        );
        assert_eq!(v["type"], "message");
        let a = &v["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        let c = &a["content"];
        assert_eq!(c["type"], "AdaptiveCard");
        assert_eq!(c["version"], CARD_VERSION);
        let body = c["body"].as_array().unwrap();
        assert_eq!(body.len(), 2);
        assert_eq!(body[0]["color"], "Attention");
        assert_eq!(
            body[1]["text"],
            r"**SAP \*prod\*** (sap\_prod): online → offline — HTTP 503"
        );
        assert!(c.get("actions").is_none());
    }

    #[test]
    fn rows_link_to_the_page_and_a_storm_is_capped() {
        let d = dir(Some("https://cw.example/status/"));
        let mut items = vec![change("sap_prod", "offline", "online", None)];
        items.extend((0..60).map(|i| change(&format!("c{i}"), "online", "offline", None)));
        let c = &payload(&items, &d)["attachments"][0]["content"];
        let body = c["body"].as_array().unwrap();
        assert_eq!(body.len(), 1 + MAX_ROWS + 1);
        assert_eq!(
            body[0]["text"],
            "connwatch: 60 connections went offline: c0, c1, c2 and 57 more (and 1 other change)"
        );
        assert_eq!(
            body[1]["text"],
            "[**c0**](https://cw.example/status/#conn-c0): online → offline"
        );
        assert_eq!(body[MAX_ROWS + 1]["text"], "… and 11 more");
        assert_eq!(c["actions"][0]["url"], "https://cw.example/status/");
        // The recovery is among the rows cut, coloured good.
        let all = payload(&items[..1], &d);
        let row = &all["attachments"][0]["content"]["body"][1];
        assert_eq!(row["color"], "Good");
        assert_eq!(
            row["text"],
            r"[**SAP \*prod\*** (sap\_prod)](https://cw.example/status/#conn-sap_prod): offline → online"
        );
    }
}
