//! The HTTP request of a probe: shared clients, bounded body, typed errors.
//!
//! One `reqwest::Client` serves every connection with default TLS settings
//! (one connection pool, HTTP/1.1 and HTTP/2 by ALPN); connections with their
//! own TLS options (private CA, client certificate, insecure) share one client
//! per distinct option set. The body is streamed and never read past
//! `max_body`, so an endless or huge (or decompressed-huge) body costs
//! bounded memory.

use crate::classify::{Answer, Attempt};
use crate::config::{redact_url, Connection, Tls};
use crate::model::{ErrorKind, ProbeError};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Redirects followed before the 3xx answer itself is classified.
pub const MAX_REDIRECTS: usize = 5;
pub const USER_AGENT: &str = concat!("connwatch/", env!("CARGO_PKG_VERSION"));

/// A client could not be built for a connection's TLS options.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("connection {id}: {what}: {source}")]
    Tls {
        id: String,
        what: &'static str,
        source: crate::config::TlsFileError,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

/// A connection's request, built once at start.
#[derive(Clone)]
pub struct Request {
    pub method: reqwest::Method,
    pub url: reqwest::Url,
    pub headers: HeaderMap,
    pub body: Option<bytes_body::Body>,
    pub timeout: Duration,
    pub max_body: usize,
    client: reqwest::Client,
}

/// Bodies are shared between probes without copying.
pub mod bytes_body {
    pub type Body = std::sync::Arc<str>;
}

/// What one probe produced.
#[derive(Debug, Clone)]
pub struct Report {
    pub attempt: Attempt,
    /// Request start to last byte read (or to the error).
    pub latency: Duration,
}

/// Builds and holds the shared clients.
pub struct Prober {
    default: reqwest::Client,
    by_tls: HashMap<Tls, reqwest::Client>,
}

impl Prober {
    /// Builds the default client and one per distinct TLS option set.
    pub fn new<C: std::ops::Deref<Target = Connection>>(
        connections: &[C],
    ) -> Result<Prober, SetupError> {
        let default = base_builder().build().map_err(SetupError::Client)?;
        let mut by_tls = HashMap::new();
        for c in connections {
            if c.tls.is_default() || by_tls.contains_key(&c.tls) {
                continue;
            }
            by_tls.insert(c.tls.clone(), tls_client(&c.id, &c.tls)?);
        }
        Ok(Prober { default, by_tls })
    }

    /// The request for a connection (headers parsed and marked sensitive once).
    pub fn request(&self, c: &Connection) -> Request {
        let mut headers = HeaderMap::new();
        for (name, value) in &c.headers {
            // Both were validated at load.
            if let (Ok(n), Ok(mut v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value.expose()),
            ) {
                v.set_sensitive(true);
                headers.insert(n, v);
            }
        }
        let client = if c.tls.is_default() {
            self.default.clone()
        } else {
            self.by_tls
                .get(&c.tls)
                .cloned()
                .unwrap_or_else(|| self.default.clone())
        };
        Request {
            method: c.method.clone(),
            url: c.url.clone(),
            headers,
            body: c.body.as_deref().map(Arc::from),
            timeout: c.timeout,
            max_body: c.max_body,
            client,
        }
    }
}

impl Request {
    /// Sends the request and reads at most `max_body` bytes of the answer,
    /// all within `timeout`.
    pub async fn send(&self) -> Report {
        let start = Instant::now();
        let attempt = match tokio::time::timeout(self.timeout, self.exchange()).await {
            Ok(a) => a,
            Err(_) => Err(ProbeError {
                kind: ErrorKind::Timeout,
                message: format!("no complete answer within {} ms", self.timeout.as_millis()),
                http_status: None,
            }),
        };
        Report {
            attempt,
            latency: start.elapsed(),
        }
    }

    async fn exchange(&self) -> Attempt {
        let mut rb = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone());
        if let Some(b) = &self.body {
            rb = rb.body(b.to_string());
        }
        let mut resp = rb.send().await.map_err(|e| transport_error(&e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(128).collect());
        // Sized from Content-Length when the server sends it (status bodies
        // are small), so most probes make one small allocation here.
        let hint = resp
            .content_length()
            .map_or(512, |n| n.min(64 * 1024) as usize);
        let mut body = Vec::with_capacity(hint.min(self.max_body));
        let mut truncated = false;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.max_body - body.len();
                    if chunk.len() > room {
                        body.extend_from_slice(&chunk[..room]);
                        truncated = true;
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(transport_error(&e)),
            }
        }
        Ok(Answer {
            status,
            retry_after,
            body,
            truncated,
        })
    }

    /// The URL with credentials masked, for logs and output.
    pub fn shown_url(&self) -> String {
        redact_url(&self.url)
    }
}

fn base_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            // `previous()` holds every URL requested so far, the original one
            // included: after n redirects it has n + 1 entries.
            if attempt.previous().len() > MAX_REDIRECTS
                || !matches!(attempt.url().scheme(), "http" | "https")
            {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        // Deterministic routing: connwatch talks to status endpoints directly.
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .dns_resolver(Arc::new(TypedResolver))
}

fn tls_client(id: &str, tls: &Tls) -> Result<reqwest::Client, SetupError> {
    let failed = |what: &'static str| {
        move |source| SetupError::Tls {
            id: id.to_string(),
            what,
            source,
        }
    };
    let mut b = base_builder();
    if let Some(ca) = &tls.ca_file {
        for c in crate::config::read_ca_bundle(ca).map_err(failed("tls_ca_file"))? {
            b = b.add_root_certificate(c);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        let identity = crate::config::read_identity(cert, key)
            .map_err(failed("tls_client_cert/tls_client_key"))?;
        b = b.identity(identity);
    }
    if tls.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().map_err(SetupError::Client)
}

/// Name resolution failed; lets [`transport_error`] tell DNS from connect.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {source}")]
pub struct DnsError {
    host: String,
    source: std::io::Error,
}

struct TypedResolver;

impl reqwest::dns::Resolve for TypedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let looked_up = tokio::net::lookup_host(format!("{host}:0")).await;
            match looked_up {
                Ok(addrs) => {
                    let v: Vec<std::net::SocketAddr> = addrs.collect();
                    Ok(Box::new(v.into_iter()) as reqwest::dns::Addrs)
                }
                Err(source) => {
                    Err(Box::new(DnsError { host, source }) as Box<dyn StdError + Send + Sync>)
                }
            }
        })
    }
}

/// Maps a reqwest error to `error.kind` by walking its typed source chain.
/// The message never contains the URL (which may carry credentials).
pub fn transport_error(e: &reqwest::Error) -> ProbeError {
    let mut kind = None;
    let mut innermost: Option<String> = None;
    let mut src: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = src {
        if kind.is_none() {
            if s.downcast_ref::<DnsError>().is_some() {
                kind = Some(ErrorKind::Dns);
            } else if s.downcast_ref::<rustls::Error>().is_some() {
                kind = Some(ErrorKind::Tls);
            } else if let Some(io) = s.downcast_ref::<std::io::Error>() {
                kind = Some(io_error_kind(io));
            }
        }
        innermost = Some(s.to_string());
        src = s.source();
    }
    let kind = kind.unwrap_or(if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Connect
    } else {
        ErrorKind::Io
    });
    let outer = if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "error reading body"
    } else {
        "request failed"
    };
    let message = match innermost {
        Some(m) => format!("{outer}: {m}"),
        None => outer.to_string(),
    };
    ProbeError {
        kind,
        message: truncate(&message, 300),
        http_status: None,
    }
}

/// The kind of an I/O error, looking through I/O errors that wrap I/O
/// errors: a failed TLS handshake reaches us as `Other(InvalidData(rustls
/// error))`, and `io::Error::source` skips the wrapped error itself.
fn io_error_kind(io: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as K;
    let mut io = io;
    // Bounded: a few levels are all that real stacks produce.
    for _ in 0..8 {
        match io.get_ref() {
            Some(i) if i.is::<rustls::Error>() => return ErrorKind::Tls,
            Some(i) if i.is::<DnsError>() => return ErrorKind::Dns,
            Some(i) => match i.downcast_ref::<std::io::Error>() {
                Some(inner) => io = inner,
                None => break,
            },
            None => break,
        }
    }
    match io.kind() {
        K::ConnectionRefused | K::AddrNotAvailable | K::NetworkUnreachable | K::HostUnreachable => {
            ErrorKind::Connect
        }
        K::TimedOut => ErrorKind::Timeout,
        _ => ErrorKind::Io,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind as K};

    #[test]
    fn io_error_kind_looks_through_wrapped_io_errors() {
        let tls = || rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        // As tokio-rustls makes it, and as it reaches transport_error.
        assert_eq!(
            io_error_kind(&Error::new(K::InvalidData, tls())),
            ErrorKind::Tls
        );
        assert_eq!(
            io_error_kind(&Error::other(Error::new(K::InvalidData, tls()))),
            ErrorKind::Tls
        );
        let dns = DnsError {
            host: "x.invalid".into(),
            source: Error::from(K::NotFound),
        };
        assert_eq!(io_error_kind(&Error::other(dns)), ErrorKind::Dns);
        assert_eq!(
            io_error_kind(&Error::other(Error::from(K::ConnectionRefused))),
            ErrorKind::Connect
        );
        assert_eq!(io_error_kind(&Error::from(K::TimedOut)), ErrorKind::Timeout);
        assert_eq!(
            io_error_kind(&Error::from(K::ConnectionReset)),
            ErrorKind::Io
        );
        assert_eq!(io_error_kind(&Error::other("something")), ErrorKind::Io);
    }
}
