//! Sinks: where events go. One folder per kind, each holding everything
//! about that kind: its configuration keys and their validation
//! ([`Kind::build`]), its payload, its class in the alert policy (raw,
//! paging or chat) and its quirks (Slack's pace, a webhook's 410, the
//! re-sending of Alertmanager alerts). The dispatcher ([`crate::deliver`])
//! and the configuration loader name no kind: they go through [`KINDS`]
//! and the [`Sink`] trait. Adding a kind is adding a folder and one line
//! in [`KINDS`].
//!
//! Shared by several kinds: [`http`] (a JSON POST judged by its status)
//! and [`chat`] (the lines of a grouped chat message).

pub mod alertmanager;
pub mod chat;
pub mod command;
pub mod email;
pub mod http;
pub mod log;
pub mod pagerduty;
pub mod slack;
pub mod teams;
pub mod webhook;

use crate::config::schema::Field;
use crate::config::Section;
use crate::deliver::retry::Verdict;
pub use crate::event::Outgoing;
use crate::model::UnixMs;
use crate::policy::{PageAction, SinkClass};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::time::Duration;

/// The registry of sink kinds.
pub const KINDS: &[Kind] = &[
    webhook::KIND,
    pagerduty::KIND,
    alertmanager::KIND,
    slack::KIND,
    teams::KIND,
    email::KIND,
    command::KIND,
    log::KIND,
];

/// Requests in flight per sink, unless the kind or the sink's
/// `concurrency` says otherwise. Paging receivers (PagerDuty's Events API
/// rate-limits per routing key; Alertmanager takes a batch per request)
/// and commands (a process each) need no more.
pub const CONCURRENCY: usize = 4;

/// The most a sink's `concurrency` may ask for.
pub const MAX_CONCURRENCY: usize = 512;

/// One sink kind: its name, its keys and how it reads them.
pub struct Kind {
    /// The `kind = "…"` value.
    pub name: &'static str,
    /// The keys it reads besides the common ones
    /// ([`crate::config::schema::SINK_COMMON`]).
    pub keys: &'static [Field],
    /// Reads and checks its keys; `None` when an error was recorded.
    pub build: fn(&mut Section<'_, '_>) -> Option<Box<dyn Sink>>,
}

/// The kind named `name`.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// "webhook, pagerduty, …, command or log" (with `last` before the last).
pub fn names(last: &str) -> String {
    let n: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
    match n.split_last() {
        Some((l, rest)) if !rest.is_empty() => format!("{}{last}{l}", rest.join(", ")),
        _ => n.join(""),
    }
}

/// One stored event and what this sink does with it.
#[derive(Debug, Clone)]
pub struct Item {
    pub out: Outgoing,
    /// For paging sinks: the incident's action, decided by the policy when
    /// the event was stored (`None`: derived from the event).
    pub action: Option<PageAction>,
}

/// What a sink needs to send.
#[derive(Clone, Copy)]
pub struct Cx<'a> {
    pub client: &'a reqwest::Client,
    /// The attempt's time.
    pub now: UnixMs,
    /// The sink's `timeout`.
    pub timeout: Duration,
    /// Connections' names and pages, for messages people read.
    pub dir: &'a Directory,
}

/// What messages for people may say about a connection besides its id:
/// its `name` and a link to it on the status page (when `[daemon]
/// public_url` is set).
#[derive(Debug, Default, Clone)]
pub struct Directory {
    /// Only connections that have a name.
    names: HashMap<String, String>,
    public_url: Option<url::Url>,
}

impl Directory {
    pub fn of(config: &crate::config::Config) -> Directory {
        Directory {
            names: config
                .connections
                .iter()
                .filter_map(|c| Some((c.id.clone(), c.name.clone()?)))
                .collect(),
            public_url: config.daemon.public_url.clone(),
        }
    }

    /// The connection's `name`, if it has one.
    pub fn name(&self, id: &str) -> Option<&str> {
        self.names.get(id).map(String::as_str)
    }

    /// Its place on the status page, if the page's address is known.
    pub fn link(&self, id: &str) -> Option<String> {
        Some(crate::admin::page::link(self.public_url.as_ref()?, id))
    }

    /// The status page, if its address is known.
    pub fn page(&self) -> Option<&url::Url> {
        self.public_url.as_ref()
    }
}

/// Sends an event that was never stored (a test event, a `system.error`
/// about the database itself) to `sink`, once.
pub async fn send_unstored(
    sink: &crate::config::Sink,
    env: &crate::event::Envelope,
    client: &reqwest::Client,
    dir: &Directory,
) -> AttemptResult {
    let item = [Item {
        out: Outgoing::unstored(env),
        action: None,
    }];
    let cx = Cx {
        client,
        now: crate::model::now_ms(),
        timeout: sink.timeout,
        dir,
    };
    sink.imp.send(&item, cx).await
}

/// What a kind does.
pub trait Sink: Send + Sync + std::fmt::Debug + std::any::Any {
    /// How the alert policy treats it.
    fn class(&self) -> SinkClass;

    /// Where it sends, for `connwatch check` (secrets masked).
    fn target(&self) -> String;

    /// Sends `items` as one request: one item, up to [`Sink::max_batch`]
    /// for kinds that take several, or a chat group.
    fn send<'a>(&'a self, items: &'a [Item], cx: Cx<'a>) -> BoxFuture<'a, AttemptResult>;

    /// Items one request may carry.
    fn max_batch(&self) -> usize {
        1
    }

    /// Requests in flight at once, unless the sink's `concurrency` says.
    fn concurrency(&self) -> usize {
        CONCURRENCY
    }

    /// Why this kind's concurrency cannot be changed (chat and email send
    /// one message at a time, so messages arrive in order).
    fn concurrency_fixed(&self) -> Option<&'static str> {
        None
    }

    /// The least time between two requests.
    fn pace(&self) -> Option<Duration> {
        None
    }

    /// Whether this refusal disables the sink until restart, and why.
    fn gone(&self, _refusal: &AttemptResult) -> Option<&'static str> {
        None
    }

    /// Open incidents are sent again this often while they last.
    fn resend_every(&self) -> Option<Duration> {
        None
    }

    /// A keep-alive the sink holds while the daemon is healthy, sent every
    /// [`Sink::resend_every`] (Alertmanager's `ConnwatchWatchdog`): its
    /// absence is how a dead or wedged daemon is noticed.
    fn keepalive<'a>(&'a self, _who: &'a Who, _cx: Cx<'a>) -> Option<BoxFuture<'a, AttemptResult>> {
        None
    }
}

/// Which daemon speaks (`[daemon] instance` and `shard`).
#[derive(Debug, Clone, Default)]
pub struct Who {
    pub instance: String,
    pub shard: String,
}

/// What one attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub verdict: Verdict,
    /// HTTP status or exit code.
    pub status: Option<i64>,
    pub error: Option<String>,
    /// What the receiver said when it accepted ("250 2.0.0 Ok: queued"),
    /// for `connwatch sinks test`; not stored.
    pub answer: Option<String>,
    pub duration: Duration,
    /// The sink does not take this event (a sync event to PagerDuty): done
    /// without sending.
    pub skipped: bool,
}

impl AttemptResult {
    pub fn skipped() -> Self {
        AttemptResult {
            verdict: Verdict::Done,
            status: None,
            error: None,
            answer: None,
            duration: Duration::ZERO,
            skipped: true,
        }
    }

    pub fn done(status: Option<i64>, duration: Duration) -> Self {
        AttemptResult {
            verdict: Verdict::Done,
            status,
            error: None,
            answer: None,
            duration,
            skipped: false,
        }
    }

    /// With the receiver's answer.
    pub fn answered(mut self, answer: impl Into<String>) -> Self {
        let a: String = answer.into();
        self.answer = (!a.trim().is_empty()).then(|| a.trim().to_string());
        self
    }

    pub fn failed(
        verdict: Verdict,
        status: Option<i64>,
        error: String,
        duration: Duration,
    ) -> Self {
        AttemptResult {
            verdict,
            status,
            error: Some(error),
            answer: None,
            duration,
            skipped: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn kinds_have_unique_names_and_keys_apart_from_the_common_ones() {
        let mut seen = HashSet::new();
        for k in KINDS {
            assert!(seen.insert(k.name), "{} twice", k.name);
            for f in k.keys {
                assert!(
                    !crate::config::schema::SINK_COMMON
                        .iter()
                        .any(|c| c.name == f.name),
                    "{}: {} is a common key",
                    k.name,
                    f.name
                );
            }
        }
        assert_eq!(
            names(" or "),
            "webhook, pagerduty, alertmanager, slack, teams, email, command or log"
        );
    }
}
