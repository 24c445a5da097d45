//! The probes' own HTTP client: hyper's connection layer under a small
//! connection pool.
//!
//! A general client (reqwest) parses the URL again, clones its client and
//! header map and runs its redirect and decompression layers on every
//! request. Probes send the same request to the same place again and again,
//! so everything that does not change is worked out once per connection
//! ([`Target`]): the pool key, the request URIs and the Host header. What is
//! left per probe is a pool checkout, a header-map clone and hyper itself.
//!
//! The pool keeps idle HTTP/1.1 connections per scheme, host and port (last
//! in, first out; dropped after [`IDLE_TIMEOUT`] unused) and one shared
//! HTTP/2 connection where the server chose `h2` by ALPN. A request that a
//! pooled connection never sent (the server had closed it while idle) goes
//! out again on a fresh connection.

use super::tls::client_config;
use super::truncate;
use crate::config::Tls;
use crate::model::{ErrorKind, ProbeError};
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, Method, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use std::collections::{HashMap, VecDeque};
use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use url::Url;

/// An idle connection unused this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often the whole pool is swept for expired and closed connections.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Pooled connections tried before a new one is made.
const POOLED_TRIES: usize = 3;
/// Connects under way to one server at most; further probes to it wait for
/// a connection to come free. A burst (the probes due during a reload, say)
/// then reuses a few connections instead of opening hundreds at once, which
/// would overflow the server's accept queue (a dropped SYN costs a second).
pub const MAX_CONNECTING: usize = 8;
/// With more addresses left to try, one address gets this long to accept a
/// connection (a dual-stack name with a dead IPv6 route still answers on
/// IPv4 in time). The last address has the rest of the probe's timeout.
pub const CONNECT_ATTEMPT: Duration = Duration::from_secs(1);

type Body = Full<Bytes>;

/// Which server a request goes to: one pool entry per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    https: bool,
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Host {
    Name(Box<str>),
    Ip(IpAddr),
}

/// Where a request goes, worked out once from its URL. Small on purpose:
/// one is kept per connection.
#[derive(Debug, Clone)]
pub struct Target {
    key: Key,
    /// Path and query, as HTTP/1.1 sends them.
    origin: Uri,
}

impl Target {
    /// `None` for a URL that is not http or https with a host (a redirect
    /// elsewhere is not followed; configured URLs were checked at load).
    pub fn new(url: &Url) -> Option<Target> {
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        let host = match url.host()? {
            url::Host::Domain(d) => Host::Name(d.into()),
            url::Host::Ipv4(ip) => Host::Ip(ip.into()),
            url::Host::Ipv6(ip) => Host::Ip(ip.into()),
        };
        let port = url.port_or_known_default()?;
        let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let path = if path.is_empty() { "/" } else { path };
        Some(Target {
            key: Key { https, host, port },
            origin: Uri::try_from(path).ok()?,
        })
    }

    fn scheme(&self) -> &'static str {
        if self.key.https {
            "https"
        } else {
            "http"
        }
    }

    /// Host, and port unless it is the scheme's default: the Host header.
    pub fn authority(&self) -> String {
        let host = match &self.key.host {
            Host::Name(n) => n.to_string(),
            Host::Ip(IpAddr::V4(ip)) => ip.to_string(),
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        };
        let default = if self.key.https { 443 } else { 80 };
        if self.key.port == default {
            host
        } else {
            format!("{host}:{}", self.key.port)
        }
    }

    /// Scheme, authority, path and query, as HTTP/2 sends them.
    fn absolute(&self) -> Option<Uri> {
        Uri::try_from(self.absolute_text()?).ok()
    }

    /// The URL (without credentials), to resolve a redirect's Location
    /// against.
    pub fn url(&self) -> Option<Url> {
        Url::parse(&self.absolute_text()?).ok()
    }

    fn absolute_text(&self) -> Option<String> {
        let pq = self.origin.path_and_query()?.as_str();
        Some(format!("{}://{}{pq}", self.scheme(), self.authority()))
    }

    /// Same scheme, host and port: credentials may follow a redirect.
    pub fn same_origin(&self, other: &Target) -> bool {
        self.key == other.key
    }
}

/// One way to send requests on a live connection.
enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Sends `req`; on failure says whether the request never left (so
    /// that it may be sent again elsewhere).
    async fn send(
        &mut self,
        req: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, (hyper::Error, bool)> {
        let sent = match self {
            Sender::H1(s) => {
                if let Err(e) = s.ready().await {
                    return Err((e, true));
                }
                s.try_send_request(req).await
            }
            Sender::H2(s) => {
                if let Err(e) = s.ready().await {
                    return Err((e, true));
                }
                s.try_send_request(req).await
            }
        };
        sent.map_err(|mut e| {
            let unsent = e.take_message().is_some();
            (e.into_error(), unsent)
        })
    }
}

/// The connection a response is being read from. Given back with
/// [`Client::release`] once the body has been read to its end; dropped
/// otherwise, which closes an HTTP/1.1 connection.
pub struct Lease(Sender);

/// Connections by server, for one set of TLS options.
pub struct Pool(Mutex<Servers>);

struct Servers {
    by_key: HashMap<Key, Server>,
    swept: Instant,
}

/// The connections to one server.
#[derive(Default)]
struct Server {
    /// Idle HTTP/1.1 connections (newest last), or the shared HTTP/2 one.
    idle: Vec<(Sender, Instant)>,
    /// Connects in progress.
    connecting: usize,
    /// Probes waiting for a connection: each is handed a released one, or
    /// `None` (look again) when a connect ends.
    waiting: VecDeque<oneshot::Sender<Option<Sender>>>,
}

impl Server {
    fn is_unused(&self) -> bool {
        self.idle.is_empty() && self.connecting == 0 && self.waiting.is_empty()
    }
}

impl Default for Pool {
    fn default() -> Pool {
        Pool(Mutex::new(Servers {
            by_key: HashMap::new(),
            swept: Instant::now(),
        }))
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Servers> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a probe gets from the pool.
enum Checkout {
    Ready(Sender),
    /// Make a new connection; the slot counts it until dropped.
    Connect(ConnectSlot),
    Wait(oneshot::Receiver<Option<Sender>>),
}

/// One of a server's [`MAX_CONNECTING`] connect slots. Dropping it (the
/// connect succeeded, failed or was cut by the timeout) frees the slot and
/// lets the longest-waiting probe look again.
struct ConnectSlot {
    pool: Arc<Pool>,
    key: Key,
}

impl Drop for ConnectSlot {
    fn drop(&mut self) {
        let mut pool = self.pool.lock();
        if let Some(server) = pool.by_key.get_mut(&self.key) {
            server.connecting = server.connecting.saturating_sub(1);
            while let Some(w) = server.waiting.pop_front() {
                if w.send(None).is_ok() {
                    break;
                }
            }
        }
    }
}

/// A connection pool and the TLS configuration for one set of TLS options.
pub struct Client {
    tls: tokio_rustls::TlsConnector,
    pool: Arc<Pool>,
}

impl Client {
    /// A client for one set of TLS options, trusting `roots` (the
    /// system's) unless the options say otherwise.
    pub fn new(
        tls: &Tls,
        roots: &[rustls::pki_types::CertificateDer<'static>],
        pool: Arc<Pool>,
    ) -> Result<Client, super::tls::TlsSetupError> {
        Ok(Client {
            tls: tokio_rustls::TlsConnector::from(client_config(tls, roots)?),
            pool,
        })
    }

    /// Sends one request to `t` and returns the response head; the body is
    /// the caller's to read.
    pub async fn send(
        &self,
        t: &Target,
        method: &Method,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(http::Response<Incoming>, Lease), ProbeError> {
        let build = |h2: bool| {
            let mut r = http::Request::new(Full::new(body.clone()));
            *r.method_mut() = method.clone();
            *r.headers_mut() = headers.clone();
            if h2 {
                *r.uri_mut() = t.absolute().unwrap_or_else(|| t.origin.clone());
                r.headers_mut().remove(HOST);
            } else {
                *r.uri_mut() = t.origin.clone();
            }
            r
        };
        // A pooled connection the server closed while it sat idle fails
        // without sending; then another one (or a new one) is tried.
        let mut stale = 0;
        loop {
            let mut s = match self.checkout(&t.key, stale >= POOLED_TRIES) {
                Checkout::Ready(s) => s,
                Checkout::Wait(rx) => match rx.await {
                    Ok(Some(s)) => s,
                    _ => continue,
                },
                Checkout::Connect(slot) => {
                    // Boxed: connecting (TLS handshake included) is rare once
                    // the pool is warm, and its future is large; inline, it
                    // would make every probe's task several KiB bigger.
                    let connected = Box::pin(self.connect(t)).await;
                    drop(slot);
                    return self.first_send(connected?, build).await;
                }
            };
            let h2 = matches!(s, Sender::H2(_));
            match s.send(build(h2)).await {
                Ok(resp) => return Ok((resp, Lease(s))),
                Err((_, true)) => {
                    self.forget(&t.key, &s);
                    stale += 1;
                }
                Err((e, false)) => return Err(request_error("request failed", &e)),
            }
        }
    }

    /// The first request on a new connection.
    async fn first_send(
        &self,
        (mut s, failed): (Sender, Failed),
        build: impl Fn(bool) -> http::Request<Body>,
    ) -> Result<(http::Response<Incoming>, Lease), ProbeError> {
        let h2 = matches!(s, Sender::H2(_));
        match s.send(build(h2)).await {
            Ok(resp) => Ok((resp, Lease(s))),
            Err((e, _)) => {
                // "connection closed" says little; the connection's own
                // error says why (a TLS alert after the handshake, say: a
                // server that wants a client certificate).
                let why = tokio::time::timeout(Duration::from_millis(100), failed).await;
                match why {
                    Ok(Ok(cause)) => Err(request_error("request failed", &cause)),
                    _ => Err(request_error("request failed", &e)),
                }
            }
        }
    }

    /// Gives a connection whose response was read to its end to the
    /// longest-waiting probe, or back to the pool. (An HTTP/2 connection
    /// stays pooled while it is in use.)
    pub fn release(&self, t: &Target, lease: Lease) {
        let Sender::H1(_) = lease.0 else {
            return;
        };
        let mut pool = self.pool.lock();
        let server = pool.by_key.entry(t.key.clone()).or_default();
        let mut s = lease.0;
        while let Some(w) = server.waiting.pop_front() {
            match w.send(Some(s)) {
                Ok(()) => return,
                // That probe gave up (its timeout); the next one.
                Err(back) => s = back.expect("sent Some"),
            }
        }
        server.idle.push((s, Instant::now()));
    }

    /// Drops a shared HTTP/2 connection that failed from the pool (an
    /// HTTP/1.1 one is out of the pool while in use).
    fn forget(&self, key: &Key, failed: &Sender) {
        if let Sender::H2(_) = failed {
            let mut pool = self.pool.lock();
            if let Some(server) = pool.by_key.get_mut(key) {
                server.idle.retain(|(s, _)| !matches!(s, Sender::H2(_)));
            }
        }
    }

    /// An idle connection to the server; else a connect slot, if fewer than
    /// [`MAX_CONNECTING`] connects to it are under way; else a place in
    /// its queue. `fresh` skips the idle connections.
    fn checkout(&self, key: &Key, fresh: bool) -> Checkout {
        let now = Instant::now();
        let mut pool = self.pool.lock();
        if now.duration_since(pool.swept) >= SWEEP_EVERY {
            pool.swept = now;
            pool.by_key.retain(|_, server| {
                server.idle.retain(|(s, since)| {
                    now.duration_since(*since) < IDLE_TIMEOUT && !s.is_closed()
                });
                !server.is_unused()
            });
        }
        if !pool.by_key.contains_key(key) {
            pool.by_key.insert(key.clone(), Server::default());
        }
        let server = pool.by_key.get_mut(key).expect("inserted above");
        while let Some((s, since)) = if fresh { None } else { server.idle.pop() } {
            if now.duration_since(since) >= IDLE_TIMEOUT || s.is_closed() {
                continue;
            }
            if let Sender::H2(h) = &s {
                let shared = Sender::H2(h.clone());
                server.idle.push((s, now));
                return Checkout::Ready(shared);
            }
            return Checkout::Ready(s);
        }
        if server.connecting < MAX_CONNECTING {
            server.connecting += 1;
            return Checkout::Connect(ConnectSlot {
                pool: Arc::clone(&self.pool),
                key: key.clone(),
            });
        }
        let (tx, rx) = oneshot::channel();
        server.waiting.push_back(tx);
        Checkout::Wait(rx)
    }

    /// A new connection to `t`, and where its task reports how it failed.
    async fn connect(&self, t: &Target) -> Result<(Sender, Failed), ProbeError> {
        let tcp = tcp_connect(&t.key).await?;
        if !t.key.https {
            return http1_over(tcp).await;
        }
        let name = match &t.key.host {
            Host::Name(n) => ServerName::try_from(n.to_string()),
            Host::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
        }
        .map_err(|e| ProbeError {
            kind: ErrorKind::Tls,
            message: format!("cannot connect: {e}"),
            http_status: None,
        })?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| connect_error(&e))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return http1_over(tls).await;
        }
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| request_error("cannot connect", &e))?;
        let failed = drive(conn);
        // Shared from now on: every probe waiting for this server gets it.
        let mut pool = self.pool.lock();
        let server = pool.by_key.entry(t.key.clone()).or_default();
        server
            .idle
            .push((Sender::H2(sender.clone()), Instant::now()));
        while let Some(w) = server.waiting.pop_front() {
            let _ = w.send(Some(Sender::H2(sender.clone())));
        }
        Ok((Sender::H2(sender), failed))
    }
}

/// How a connection's task ended, if with an error.
type Failed = tokio::sync::oneshot::Receiver<hyper::Error>;

/// Runs a connection's task.
fn drive<F>(conn: F) -> Failed
where
    F: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            let _ = tx.send(e);
        }
    });
    rx
}

async fn http1_over<T>(io: T) -> Result<(Sender, Failed), ProbeError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| request_error("cannot connect", &e))?;
    Ok((Sender::H1(sender), drive(conn)))
}

/// Resolves the host (unless it is an address) and connects to its
/// addresses in turn.
async fn tcp_connect(key: &Key) -> Result<tokio::net::TcpStream, ProbeError> {
    let addrs: Vec<SocketAddr> = match &key.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, key.port)],
        Host::Name(name) => {
            let dns = |e: &dyn std::fmt::Display| ProbeError {
                kind: ErrorKind::Dns,
                message: truncate(&format!("cannot resolve {name}: {e}"), 300),
                http_status: None,
            };
            let found: Vec<SocketAddr> = tokio::net::lookup_host((&**name, key.port))
                .await
                .map_err(|e| dns(&e))?
                .collect();
            if found.is_empty() {
                return Err(dns(&"no addresses"));
            }
            found
        }
    };
    let mut last = None;
    let count = addrs.len();
    for (i, a) in addrs.into_iter().enumerate() {
        let attempt = tokio::net::TcpStream::connect(a);
        let connected = if i + 1 < count {
            match tokio::time::timeout(CONNECT_ATTEMPT, attempt).await {
                Ok(c) => c,
                Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
            }
        } else {
            attempt.await
        };
        match connected {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| std::io::Error::other("no address to connect to"));
    Err(connect_error(&e))
}

/// A failed TCP connect or TLS handshake.
fn connect_error(e: &std::io::Error) -> ProbeError {
    request_error("cannot connect", e)
}

/// A hyper error while sending or reading: the kind from the first rustls
/// or I/O error in its chain, the message from the innermost cause.
pub fn request_error(outer: &str, e: &(dyn StdError + 'static)) -> ProbeError {
    let (kind, innermost) = super::read_chain(Some(e));
    ProbeError {
        kind: kind.unwrap_or(ErrorKind::Io),
        message: truncate(&format!("{outer}: {}", innermost.unwrap_or_default()), 300),
        http_status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_gets_at_most_max_connecting_connects_and_then_a_queue() {
        let client = Client::new(&Tls::default(), &[], Arc::default()).unwrap();
        let t = Target::new(&Url::parse("http://127.0.0.1:9/").unwrap()).unwrap();
        let mut slots = Vec::new();
        for _ in 0..MAX_CONNECTING {
            match client.checkout(&t.key, false) {
                Checkout::Connect(slot) => slots.push(slot),
                _ => panic!("expected a connect slot"),
            }
        }
        let mut waiting = Vec::new();
        for _ in 0..3 {
            match client.checkout(&t.key, false) {
                Checkout::Wait(rx) => waiting.push(rx),
                _ => panic!("expected to wait"),
            }
        }
        // The first waiter gave up (its timeout); a freed slot goes to the
        // next one, in order.
        drop(waiting.remove(0));
        drop(slots.pop());
        assert!(matches!(waiting[0].try_recv(), Ok(None)));
        assert!(waiting[1].try_recv().is_err());
        // That probe looks again and gets the free slot.
        assert!(matches!(
            client.checkout(&t.key, false),
            Checkout::Connect(_)
        ));
        // Another server has slots of its own.
        let other = Target::new(&Url::parse("http://127.0.0.2:9/").unwrap()).unwrap();
        assert!(matches!(
            client.checkout(&other.key, false),
            Checkout::Connect(_)
        ));
    }

    #[test]
    fn a_target_is_worked_out_once_from_its_url() {
        let at = |u: &str| Target::new(&Url::parse(u).unwrap());
        let t = at("http://u:p@127.0.0.1:8080/a/b?x=1#frag").unwrap();
        assert_eq!(t.authority(), "127.0.0.1:8080");
        assert_eq!(t.origin, "/a/b?x=1");
        assert_eq!(t.absolute().unwrap(), "http://127.0.0.1:8080/a/b?x=1");
        assert_eq!(t.url().unwrap().as_str(), "http://127.0.0.1:8080/a/b?x=1");
        let t = at("https://[::1]/").unwrap();
        assert_eq!(t.authority(), "[::1]");
        assert_eq!(t.key.port, 443);
        assert_eq!(t.absolute().unwrap(), "https://[::1]/");
        let t = at("https://status.example:443").unwrap();
        assert_eq!(t.authority(), "status.example");
        assert_eq!(t.origin, "/");
        let t = at("https://status.example:8443/x").unwrap();
        assert_eq!(t.authority(), "status.example:8443");
        assert!(at("ftp://x.example/").is_none());
        assert!(at("file:///etc/passwd").is_none());
        let a = at("http://a.example/x").unwrap();
        let b = at("http://a.example:80/y").unwrap();
        let c = at("https://a.example/x").unwrap();
        assert!(a.same_origin(&b));
        assert!(!a.same_origin(&c));
    }
}
