//! `webhook`: a POST of the envelope, signed per Standard Webhooks
//! ([`sign`]). A raw sink: every event it takes, as it is. Any 2xx is
//! success; a 410 Gone disables the sink until restart.
//!
//! Keys: `url` (required), `secret` (one `whsec_…` or a list, for a
//! rotation) or `secret_file` (one per line), `headers` (values are
//! secrets).

pub mod sign;

use super::{http, AttemptResult, Cx, Item, Kind, Sink};
use crate::config::schema::{leaf, Field, Shape};
use crate::config::{redact_url, Secret, Section};
use crate::policy::SinkClass;
use futures::future::BoxFuture;
use url::Url;

pub const KIND: Kind = Kind {
    name: "webhook",
    keys: &[
        leaf("url"),
        leaf("secret"),
        leaf("secret_file"),
        Field {
            name: "headers",
            shape: Shape::Map,
        },
    ],
    build,
};

#[derive(Debug)]
pub struct Webhook {
    url: Url,
    /// Signing secrets; several during a rotation.
    secrets: Vec<Secret>,
    headers: Vec<(String, Secret)>,
}

impl Webhook {
    pub fn secrets(&self) -> &[Secret] {
        &self.secrets
    }
}

fn build(s: &mut Section<'_, '_>) -> Option<Box<dyn Sink>> {
    if !s.has("url") {
        s.missing("url");
    }
    let url = s.url("url");
    let mut secrets = Vec::new();
    for (j, v) in s
        .secret_lines("secret", "secret_file")
        .into_iter()
        .enumerate()
    {
        match crate::config::validate_whsec(&v) {
            Ok(()) => secrets.push(Secret::new(v)),
            Err(e) => s.fail("secret", format!("secret #{}: {e}", j + 1)),
        }
    }
    let headers = s.headers("headers");
    Some(Box::new(Webhook {
        url: url?,
        secrets,
        headers,
    }))
}

/// Requests in flight to a webhook unless `concurrency` says otherwise.
pub const WEBHOOK_CONCURRENCY: usize = 16;

impl Sink for Webhook {
    fn class(&self) -> SinkClass {
        SinkClass::Raw
    }

    fn target(&self) -> String {
        redact_url(&self.url)
    }

    fn send<'a>(&'a self, items: &'a [Item], cx: Cx<'a>) -> BoxFuture<'a, AttemptResult> {
        Box::pin(async move {
            let Some(it) = items.first() else {
                return AttemptResult::skipped();
            };
            let ev = &it.out;
            let extra = sign::headers(&ev.id, &ev.body, &self.secrets, cx.now / 1000);
            http::post_json(cx, &self.url, &self.headers, extra, ev.body.clone()).await
        })
    }

    /// One event per request, so a backlog needs more requests in flight
    /// than a batching kind: 16 drains 1,600 events a second from a
    /// receiver answering in 10 ms, 8 a second from one answering in 2 s
    /// (raise `concurrency` for a receiver that is slow but parallel).
    fn concurrency(&self) -> usize {
        WEBHOOK_CONCURRENCY
    }

    fn gone(&self, refusal: &AttemptResult) -> Option<&'static str> {
        (refusal.status == Some(410)).then_some("the receiver answered 410 Gone")
    }
}
