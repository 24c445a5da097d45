//! The HTTP request of a probe: shared clients, bounded body, typed errors.
//!
//! Probes go out through the crate's own small client ([`client`]): hyper's
//! connection layer under one connection pool per set of TLS options
//! (HTTP/1.1, or HTTP/2 where the server offers it by ALPN). Everything
//! about a connection's request that does not change is built once. The
//! body is read as it arrives, decompressed if gzipped, and never kept past
//! `max_body`, so an endless or huge (or decompressed-huge) body costs
//! bounded memory. Redirects are followed here, at most [`MAX_REDIRECTS`],
//! only to http and https.

mod client;
pub mod tls;

use crate::classify::{Answer, Attempt};
use crate::config::{Connection, Tls};
use crate::model::{ErrorKind, ProbeError};
use bytes::Bytes;
use client::{request_error, Client, Lease, Target};
use http::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, COOKIE,
    HOST, LOCATION, PROXY_AUTHORIZATION, RETRY_AFTER, USER_AGENT as USER_AGENT_HEADER,
    WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use std::borrow::Cow;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The probe connection pools, one per set of TLS options, kept from one
/// generation to the next: a reload keeps the live connections to every
/// endpoint (no burst of new TCP and TLS handshakes against the watched
/// systems). New connections use the TLS files as read at the reload.
#[derive(Default)]
pub struct Pools(std::sync::Mutex<HashMap<Tls, Arc<client::Pool>>>);

/// Redirects followed before the 3xx answer itself is classified.
pub const MAX_REDIRECTS: usize = 5;
pub const USER_AGENT: &str = concat!("connwatch/", env!("CARGO_PKG_VERSION"));

/// A client could not be built for a connection's TLS options.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("connection {id}: {source}")]
    Tls {
        id: String,
        source: Box<tls::TlsSetupError>,
    },
}

/// A connection's request, built once at start.
pub struct Request {
    pub method: Method,
    /// `None` only for a URL that is no http(s) URL with a host, which the
    /// configuration refuses at load; such a request fails every probe.
    target: Option<Target>,
    /// Host, the defaults, credentials from the URL, then the configured
    /// headers (values marked sensitive). Equal maps are shared.
    headers: Arc<HeaderMap>,
    body: Bytes,
    pub timeout: Duration,
    pub max_body: usize,
    client: Arc<Client>,
}

/// What one probe produced.
#[derive(Debug, Clone)]
pub struct Report {
    pub attempt: Attempt,
    /// Request start to last byte read (or to the error).
    pub latency: Duration,
}

/// What one request is made of (a connection's or a scope's).
struct Spec<'a> {
    url: &'a url::Url,
    method: &'a Method,
    headers: &'a [(String, crate::config::Secret)],
    body: Option<&'a str>,
    timeout: Duration,
}

/// Builds and holds the shared clients.
pub struct Prober {
    default: Arc<Client>,
    by_tls: HashMap<Tls, Arc<Client>>,
    /// Header maps by content: thousands of connections to one platform
    /// share one (the same host, defaults and token).
    headers: std::sync::Mutex<HashMap<Vec<u8>, Arc<HeaderMap>>>,
}

impl Prober {
    /// Builds the default client and one per distinct TLS option set, on
    /// the pools in `pools` (which then holds only the pools in use).
    pub fn new<C: std::ops::Deref<Target = Connection>>(
        connections: &[C],
        pools: &Pools,
    ) -> Result<Prober, SetupError> {
        let mut known = pools.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut pool = |tls: &Tls| Arc::clone(known.entry(tls.clone()).or_default());
        let failed = |id: &str| {
            let id = id.to_string();
            move |source| SetupError::Tls {
                id,
                source: Box::new(source),
            }
        };
        let roots = tls::native_roots();
        let default = Arc::new(
            Client::new(&Tls::default(), &roots, pool(&Tls::default()))
                .map_err(failed("(default)"))?,
        );
        let mut by_tls = HashMap::new();
        for c in connections {
            if c.tls.is_default() || by_tls.contains_key(&c.tls) {
                continue;
            }
            let client = Client::new(&c.tls, &roots, pool(&c.tls)).map_err(failed(&c.id))?;
            by_tls.insert(c.tls.clone(), Arc::new(client));
        }
        known.retain(|tls, _| tls.is_default() || by_tls.contains_key(tls));
        drop(known);
        Ok(Prober {
            default,
            by_tls,
            headers: Default::default(),
        })
    }

    /// The request for a connection (headers parsed and marked sensitive once).
    pub fn request(&self, c: &Connection) -> Request {
        self.build(
            c,
            Spec {
                url: &c.url,
                method: &c.method,
                headers: &c.headers,
                body: c.body.as_deref(),
                timeout: c.timeout,
            },
        )
    }

    /// The request of scope `s` of connection `c`: the scope's URL, method,
    /// headers, body and timeout, with the connection's TLS settings and
    /// body cap.
    pub fn scope_request(&self, c: &Connection, s: &crate::config::Scope) -> Request {
        self.build(
            c,
            Spec {
                url: &s.url,
                method: &s.method,
                headers: &s.headers,
                body: s.body.as_deref(),
                timeout: s.timeout,
            },
        )
    }

    fn build(&self, c: &Connection, spec: Spec<'_>) -> Request {
        let target = Target::new(spec.url);
        let mut headers = HeaderMap::new();
        if let Some(host) = target
            .as_ref()
            .and_then(|t| HeaderValue::from_str(&t.authority()).ok())
        {
            headers.insert(HOST, host);
        }
        headers.insert(USER_AGENT_HEADER, HeaderValue::from_static(USER_AGENT));
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        if let Some(v) = basic_auth(spec.url) {
            headers.insert(AUTHORIZATION, v);
        }
        for (name, value) in spec.headers {
            // Both were validated at load.
            if let (Ok(n), Ok(mut v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value.expose()),
            ) {
                v.set_sensitive(true);
                headers.insert(n, v);
            }
        }
        let headers = self.shared(headers);
        let client = if c.tls.is_default() {
            Arc::clone(&self.default)
        } else {
            self.by_tls
                .get(&c.tls)
                .map(Arc::clone)
                .unwrap_or_else(|| Arc::clone(&self.default))
        };
        Request {
            method: spec.method.clone(),
            target,
            headers,
            body: spec
                .body
                .map(|b| Bytes::from(b.to_string()))
                .unwrap_or_default(),
            timeout: spec.timeout,
            max_body: c.max_body,
            client,
        }
    }

    /// One shared copy of each distinct header map.
    fn shared(&self, headers: HeaderMap) -> Arc<HeaderMap> {
        let mut key = Vec::new();
        for (name, value) in &headers {
            key.extend_from_slice(name.as_str().as_bytes());
            key.push(0);
            key.extend_from_slice(value.as_bytes());
            key.push(0);
        }
        let mut known = self.headers.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(known.entry(key).or_insert_with(|| Arc::new(headers)))
    }
}

/// `user:password@` in a URL becomes HTTP Basic credentials, as browsers
/// and curl do.
fn basic_auth(url: &url::Url) -> Option<HeaderValue> {
    use base64::Engine as _;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let pair = format!(
        "{}:{}",
        percent_decode(url.username()),
        percent_decode(url.password().unwrap_or(""))
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut v = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
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

    /// One request, and the requests its redirects lead to.
    async fn exchange(&self) -> Attempt {
        let Some(first) = &self.target else {
            return Err(ProbeError {
                kind: ErrorKind::Io,
                message: "the URL is not an http or https URL with a host".to_string(),
                http_status: None,
            });
        };
        let mut target = Cow::Borrowed(first);
        let mut method = Cow::Borrowed(&self.method);
        let mut headers = Cow::Borrowed(&*self.headers);
        let mut body = Cow::Borrowed(&self.body);
        let mut hop = 0;
        loop {
            let (resp, lease) = self.client.send(&target, &method, &headers, &body).await?;
            let status = resp.status();
            if hop < MAX_REDIRECTS && status.is_redirection() {
                if let Some(next) = redirect_target(&resp, &target) {
                    // The 3xx body is not read: its connection is closed.
                    drop((resp, lease));
                    hop += 1;
                    if !next.same_origin(&target) {
                        let h = headers.to_mut();
                        for name in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, WWW_AUTHENTICATE] {
                            h.remove(name);
                        }
                    }
                    if let Ok(host) = HeaderValue::from_str(&next.authority()) {
                        headers.to_mut().insert(HOST, host);
                    }
                    let to_get = status == StatusCode::SEE_OTHER && *method != Method::HEAD
                        || matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                            && *method == Method::POST;
                    if to_get {
                        method = Cow::Owned(Method::GET);
                        body = Cow::Owned(Bytes::new());
                        let h = headers.to_mut();
                        for name in [CONTENT_TYPE, CONTENT_LENGTH] {
                            h.remove(name);
                        }
                    }
                    target = Cow::Owned(next);
                    continue;
                }
            }
            return self.answer(resp, lease, &target).await;
        }
    }

    /// Reads the answer: status, Retry-After and at most `max_body` bytes of
    /// the (decompressed) body.
    async fn answer(
        &self,
        resp: http::Response<hyper::body::Incoming>,
        lease: Lease,
        target: &Target,
    ) -> Attempt {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(128).collect());
        let gzip = resp
            .headers()
            .get(CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
        // Sized from Content-Length when the server sends it (status bodies
        // are small), so most probes make one small allocation here.
        let hint = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|_| !gzip)
            .map_or(512, |n| n.min(64 * 1024) as usize);
        let mut sink = Capped {
            buf: Vec::with_capacity(hint.min(self.max_body)),
            max: self.max_body,
            over: false,
        };
        // Made at the first body byte: an answer without a body (HEAD, 204,
        // 304) may still name gzip, and has nothing to decode.
        let mut gunzip: Option<flate2::write::MultiGzDecoder<Vec<u8>>> = None;
        let mut incoming = resp.into_body();
        let body_error = |e: &(dyn StdError + 'static)| request_error("error reading body", e);
        while !sink.over {
            let frame = match incoming.frame().await {
                Some(Ok(f)) => f,
                Some(Err(e)) => return Err(body_error(&e)),
                None => break,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            if data.is_empty() {
                continue;
            }
            if !gzip {
                let _ = sink.write(&data);
                continue;
            }
            let d = gunzip.get_or_insert_with(|| flate2::write::MultiGzDecoder::new(Vec::new()));
            if let Err(e) = inflate(d, &data, &mut sink) {
                return Err(body_error(&e));
            }
        }
        if let (Some(d), false) = (&mut gunzip, sink.over) {
            if let Err(e) = d.try_finish() {
                return Err(body_error(&e));
            }
            let _ = sink.write(&std::mem::take(d.get_mut()));
        }
        if !sink.over {
            // Read to its end: the connection can serve the next probe.
            self.client.release(target, lease);
        }
        Ok(Answer {
            status,
            retry_after,
            body: sink.buf,
            truncated: sink.over,
        })
    }
}

/// The next hop of a redirect, if it is to be followed: a Location that
/// resolves against the current URL to an http or https URL.
fn redirect_target(resp: &http::Response<hyper::body::Incoming>, at: &Target) -> Option<Target> {
    let location = resp.headers().get(LOCATION)?.to_str().ok()?;
    Target::new(&at.url()?.join(location).ok()?)
}

/// A body buffer that keeps at most `max` bytes and notes that more came.
struct Capped {
    buf: Vec<u8>,
    max: usize,
    over: bool,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.max - self.buf.len();
        if data.len() > room {
            self.buf.extend_from_slice(&data[..room]);
            self.over = true;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decompresses one chunk into `sink`, a little at a time, stopping as soon
/// as the cap is reached: a gzip bomb costs `max_body` of work, not its
/// expanded size.
fn inflate(
    d: &mut flate2::write::MultiGzDecoder<Vec<u8>>,
    mut input: &[u8],
    sink: &mut Capped,
) -> std::io::Result<()> {
    while !input.is_empty() && !sink.over {
        let n = d.write(input)?;
        let _ = sink.write(&std::mem::take(d.get_mut()));
        if n == 0 {
            break;
        }
        input = &input[n..];
    }
    Ok(())
}

/// Maps a reqwest error (of a delivery) to `error.kind` by walking its typed source chain.
/// The message never contains the URL (which may carry credentials).
pub fn transport_error(e: &reqwest::Error) -> ProbeError {
    // From its source on: reqwest's own text names the URL.
    let (kind, innermost) = read_chain(e.source());
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

/// What a chain of errors says, from `first` down: the kind of its first
/// rustls or I/O error, and the text of its innermost cause (which says the
/// most). Shared by the probe client and the deliveries' reqwest errors.
fn read_chain(first: Option<&(dyn StdError + 'static)>) -> (Option<ErrorKind>, Option<String>) {
    let mut kind = None;
    let mut innermost = None;
    let mut src = first;
    // Bounded: real chains are a few levels deep.
    for _ in 0..16 {
        let Some(s) = src else {
            break;
        };
        if kind.is_none() {
            if s.downcast_ref::<rustls::Error>().is_some() {
                kind = Some(ErrorKind::Tls);
            } else if let Some(io) = s.downcast_ref::<std::io::Error>() {
                kind = Some(io_error_kind(io));
            }
        }
        innermost = Some(s);
        src = s.source();
    }
    (kind, innermost.map(|s| s.to_string()))
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
