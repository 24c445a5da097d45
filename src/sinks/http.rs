//! A JSON POST with the sink's headers and timeout, judged by its status
//! (see [`crate::deliver::retry::judge_http`]): shared by the HTTP kinds.

use super::{AttemptResult, Cx};
use crate::config::Secret;
use crate::deliver::retry::{judge_http, Verdict};
use std::time::Instant;

/// The HTTP client every delivery uses (the dispatcher's and `sinks
/// test`): no redirects (a 3xx answer is judged, not followed) and no proxy.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
}

/// POSTs `body` as JSON to `url` with `headers` (secrets) and `extra`.
pub async fn post_json(
    cx: Cx<'_>,
    url: &url::Url,
    headers: &[(String, Secret)],
    extra: Vec<(String, String)>,
    body: String,
) -> AttemptResult {
    let start = Instant::now();
    let mut rb = cx
        .client
        .post(url.clone())
        .timeout(cx.timeout)
        .header("content-type", "application/json")
        .header("user-agent", crate::probe::USER_AGENT);
    for (name, value) in headers {
        rb = rb.header(name.as_str(), sensitive(value));
    }
    for (name, value) in extra {
        rb = rb.header(name, value);
    }
    match rb.body(body).send().await {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| crate::classify::parse_retry_after(v, std::time::SystemTime::now()));
            let reason = resp.status().canonical_reason().unwrap_or("");
            // A short excerpt of the answer helps the operator; never more.
            let text = head(&mut resp).await;
            let said = answer(status, reason, &text);
            let ok = (200..300).contains(&status);
            AttemptResult {
                verdict: judge_http(status, retry_after),
                status: Some(i64::from(status)),
                error: (!ok).then(|| said.clone()),
                answer: ok.then_some(said),
                duration: start.elapsed(),
                skipped: false,
            }
        }
        Err(e) => AttemptResult::failed(
            Verdict::Retry { retry_after: None },
            None,
            crate::probe::transport_error(&e).message,
            start.elapsed(),
        ),
    }
}

/// The body read so far, up to [`HEAD`] bytes: a receiver that answers
/// with a gigabyte costs no more than that.
const HEAD: usize = 4096;

async fn head(resp: &mut reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < HEAD {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c[..c.len().min(HEAD - buf.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// "HTTP 400 Bad Request: <the first 200 characters of the body>", or
/// "(no body)": an answer always says something.
fn answer(status: u16, reason: &str, body: &str) -> String {
    let head = format!("HTTP {status} {reason}");
    let excerpt: String = body.trim().chars().take(200).collect();
    if excerpt.is_empty() {
        format!("{} (no body)", head.trim_end())
    } else {
        format!("{}: {excerpt}", head.trim_end())
    }
}

/// A secret header value, marked sensitive (kept out of reqwest's debug
/// output); one that HTTP cannot carry becomes empty (validation refused
/// it already).
pub(crate) fn sensitive(s: &Secret) -> reqwest::header::HeaderValue {
    let mut v = reqwest::header::HeaderValue::from_str(s.expose())
        .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_always_says_something() {
        assert_eq!(
            answer(400, "Bad Request", ""),
            "HTTP 400 Bad Request (no body)"
        );
        assert_eq!(answer(410, "Gone", " \n"), "HTTP 410 Gone (no body)");
        assert_eq!(
            answer(422, "Unprocessable Entity", "{\"error\":\"bad\"}"),
            "HTTP 422 Unprocessable Entity: {\"error\":\"bad\"}"
        );
        assert_eq!(
            answer(599, "", "x".repeat(500).as_str()).len(),
            "HTTP 599: ".len() + 200
        );
    }
}
