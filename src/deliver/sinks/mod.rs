//! One file per sink kind. Each builds its message from the stored event
//! and judges the answer; [`send`] picks the kind.

pub mod alertmanager;
pub mod command;
pub mod log;
pub mod pagerduty;
pub mod slack;
pub mod webhook;

use super::retry::{judge_http, Verdict};
use crate::config::{Secret, Sink, SinkKind};
use crate::model::UnixMs;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A stored event on its way to a sink.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: String,
    pub kind: String,
    pub connection_id: Option<String>,
    /// The envelope exactly as stored (the webhook body).
    pub body: String,
    pub envelope: Value,
}

/// What one attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub verdict: Verdict,
    /// HTTP status or exit code.
    pub status: Option<i64>,
    pub error: Option<String>,
    pub duration: Duration,
    /// The sink does not take this event type (PagerDuty and sync events,
    /// say): done without sending.
    pub skipped: bool,
}

impl AttemptResult {
    pub fn skipped() -> Self {
        AttemptResult {
            verdict: Verdict::Done,
            status: None,
            error: None,
            duration: Duration::ZERO,
            skipped: true,
        }
    }
}

/// The HTTP client every delivery uses (the dispatcher's and `sinks test`):
/// no redirects (a 3xx answer is judged, not followed) and no proxy.
impl Outgoing {
    /// An event that was never stored (a test event, or a `system.error`
    /// about the database itself), ready to send.
    pub fn unstored(env: &crate::event::Envelope) -> Outgoing {
        let body = serde_json::to_string(env).unwrap_or_default();
        Outgoing {
            id: env.id.clone(),
            kind: env.kind.clone(),
            connection_id: env.connection_id.clone(),
            envelope: serde_json::from_str(&body).unwrap_or_default(),
            body,
        }
    }
}

pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
}

/// Sends `ev` to `sink` once, at `now`.
pub async fn send(
    sink: &Sink,
    ev: &Outgoing,
    client: &reqwest::Client,
    now: UnixMs,
) -> AttemptResult {
    match sink.kind {
        SinkKind::Webhook => {
            let headers = webhook::headers(&ev.id, &ev.body, &sink.secrets, now / 1000);
            post(client, sink, sink.url.as_ref(), headers, ev.body.clone()).await
        }
        SinkKind::Pagerduty => match pagerduty::payload(ev, sink.routing_key.as_ref()) {
            Some(body) => {
                post(
                    client,
                    sink,
                    sink.url.as_ref(),
                    Vec::new(),
                    body.to_string(),
                )
                .await
            }
            None => AttemptResult::skipped(),
        },
        SinkKind::Alertmanager => match alertmanager::payload(ev, &sink.labels, now) {
            Some(body) => {
                let url = sink.url.as_ref().and_then(alertmanager::alerts_url);
                post(client, sink, url.as_ref(), Vec::new(), body.to_string()).await
            }
            None => AttemptResult::skipped(),
        },
        SinkKind::Slack => {
            let body = slack::payload(ev);
            post(
                client,
                sink,
                sink.url.as_ref(),
                Vec::new(),
                body.to_string(),
            )
            .await
        }
        SinkKind::Command => command::run(sink, ev).await,
        SinkKind::Log => log::write(sink, ev).await,
    }
}

/// POSTs JSON with the sink's headers and timeout; judges the answer.
async fn post(
    client: &reqwest::Client,
    sink: &Sink,
    url: Option<&url::Url>,
    extra: Vec<(String, String)>,
    body: String,
) -> AttemptResult {
    let start = Instant::now();
    let Some(url) = url else {
        return AttemptResult {
            verdict: Verdict::Dead,
            status: None,
            error: Some("no url".into()),
            duration: Duration::ZERO,
            skipped: false,
        };
    };
    let mut rb = client
        .post(url.clone())
        .timeout(sink.timeout)
        .header("content-type", "application/json")
        .header("user-agent", crate::probe::USER_AGENT);
    for (name, value) in &sink.headers {
        rb = rb.header(name.as_str(), sensitive(value));
    }
    for (name, value) in extra {
        rb = rb.header(name, value);
    }
    match rb.body(body).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| crate::classify::parse_retry_after(v, std::time::SystemTime::now()));
            // A short excerpt of a refusal helps the operator; never more.
            let error = if (200..300).contains(&status) {
                None
            } else {
                let text = resp.text().await.unwrap_or_default();
                Some(format!(
                    "HTTP {status}: {}",
                    text.chars().take(200).collect::<String>()
                ))
            };
            AttemptResult {
                verdict: judge_http(status, retry_after),
                status: Some(i64::from(status)),
                error,
                duration: start.elapsed(),
                skipped: false,
            }
        }
        Err(e) => AttemptResult {
            verdict: Verdict::Retry { retry_after: None },
            status: None,
            error: Some(crate::probe::transport_error(&e).message),
            duration: start.elapsed(),
            skipped: false,
        },
    }
}

fn sensitive(s: &Secret) -> reqwest::header::HeaderValue {
    let mut v = reqwest::header::HeaderValue::from_str(s.expose())
        .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

/// `current` health named by a status event, if it is one.
pub(crate) fn current_health(ev: &Outgoing) -> Option<&str> {
    (ev.kind == crate::event::STATUS_CHANGED)
        .then(|| ev.envelope["data"]["current"].as_str())
        .flatten()
}

/// A one-line summary: "sap-prod: online → offline (HTTP 503)".
pub(crate) fn summary(ev: &Outgoing) -> String {
    let id = ev.connection_id.as_deref().unwrap_or("connwatch");
    let d = &ev.envelope["data"];
    let mut s = match (d["previous"].as_str(), d["current"].as_str()) {
        (Some(p), Some(c)) => format!("{id}: {p} → {c}"),
        _ => format!("{id}: {}", ev.kind),
    };
    if let Some(m) = d["error"]["message"].as_str() {
        s.push_str(&format!(" ({m})"));
    }
    s
}
