//! One read of a source: a GET with the source's headers, TLS and timeout,
//! or a file read; the answer bounded to [`MAX_LIST_BYTES`].

use crate::config::{redact_url, Discovery, DiscoverySource, Secret};
use std::time::Duration;

/// The largest answer read (100,000 connections of about 160 bytes each).
pub const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;

/// A source's HTTP client (its TLS options), built once per start.
pub struct Fetcher {
    client: Option<reqwest::Client>,
}

impl Fetcher {
    pub fn new(source: &Discovery) -> Result<Fetcher, String> {
        let client = match &source.source {
            DiscoverySource::File(_) => None,
            DiscoverySource::Http { tls, .. } => {
                let roots = crate::probe::tls::native_roots();
                let cfg = crate::probe::tls::client_config(tls, &roots)
                    .map_err(|e| format!("TLS: {e}"))?;
                Some(
                    reqwest::Client::builder()
                        .use_preconfigured_tls((*cfg).clone())
                        // A redirect would carry the source's headers (an
                        // API key, say) to wherever it points: not followed.
                        .redirect(reqwest::redirect::Policy::none())
                        .no_proxy()
                        .build()
                        .map_err(|e| format!("HTTP client: {e}"))?,
                )
            }
        };
        Ok(Fetcher { client })
    }

    /// The answer's bytes, or why there are none (never a secret: URLs are
    /// redacted, header values never printed).
    pub async fn get(&self, source: &Discovery) -> Result<Vec<u8>, String> {
        match (&source.source, &self.client) {
            (DiscoverySource::File(path), _) => {
                let p = path.clone();
                tokio::task::spawn_blocking(move || read_file(&p))
                    .await
                    .map_err(|e| format!("reading the file: {e}"))?
            }
            (
                DiscoverySource::Http {
                    url,
                    headers,
                    timeout,
                    ..
                },
                Some(client),
            ) => get(client, url, headers, *timeout).await,
            (DiscoverySource::Http { .. }, None) => Err("no HTTP client".into()),
        }
    }
}

fn read_file(p: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    let mut buf = Vec::new();
    f.take(MAX_LIST_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    if buf.len() > MAX_LIST_BYTES {
        return Err(format!(
            "{} is larger than {MAX_LIST_BYTES} bytes",
            p.display()
        ));
    }
    Ok(buf)
}

async fn get(
    client: &reqwest::Client,
    url: &url::Url,
    headers: &[(String, Secret)],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let shown = redact_url(url);
    let mut rb = client
        .get(url.clone())
        .timeout(timeout)
        .header("accept", "application/json")
        .header("user-agent", crate::probe::USER_AGENT);
    for (name, value) in headers {
        rb = rb.header(name.as_str(), crate::sinks::http::sensitive(value));
    }
    let mut resp = rb.send().await.map_err(|e| {
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else {
            "request failed"
        };
        format!("GET {shown}: {kind}")
    })?;
    if !resp.status().is_success() {
        return Err(format!("GET {shown}: HTTP {}", resp.status().as_u16()));
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if body.len() + c.len() > MAX_LIST_BYTES {
                    return Err(format!(
                        "GET {shown}: the answer is larger than {MAX_LIST_BYTES} bytes"
                    ));
                }
                body.extend_from_slice(&c);
            }
            Ok(None) => return Ok(body),
            Err(_) => return Err(format!("GET {shown}: the answer was cut off")),
        }
    }
}
