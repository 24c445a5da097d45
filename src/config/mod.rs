//! Configuration: TOML file -> validated [`Config`] (docs/configuration.md).
//!
//! Loading runs in four steps, each reporting errors with file, line and
//! column: TOML syntax (`toml_edit`), unknown keys with the nearest known key
//! (the [`schema`] walk, which also records where every value sits), types
//! (`serde`), then [`validate`]-ing values (ids, URLs, durations, cron,
//! thresholds, references), which collects every problem it finds rather
//! than stopping at the first.

pub mod duration;
pub mod env;
pub mod error;
pub mod raw;
pub mod schema;
pub mod secret;
pub mod section;
mod validate;
pub use validate::{check_cron, check_whsec as validate_whsec, valid_id};

pub use duration::{format_duration, parse_duration};
pub use error::{ConfigError, ConfigErrors};
pub use secret::Secret;
pub use section::Section;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Default config path.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/connwatch/connwatch.toml";
pub const DEFAULT_DATABASE: &str = "/var/lib/connwatch/connwatch.db";
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86_400);
pub const DEFAULT_MAX_CONCURRENT_PROBES: usize = 256;
/// Due times are rounded up to this tick; everything due in one tick goes out
/// in one wake-up.
pub const DEFAULT_SCHEDULER_TICK: Duration = Duration::from_millis(10);
/// Runs of online probes are kept in memory and written at most this long
/// after they happened (non-online probes and transitions are written at once).
pub const DEFAULT_HISTORY_FLUSH: Duration = Duration::from_secs(30);
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// Largest `max_body` accepted: memory per in-flight probe is bounded by it.
pub const MAX_MAX_BODY: usize = 16 * 1024 * 1024;
pub const DEFAULT_AUTH_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 2;
pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(30);
/// The longest wait between trials of an open circuit, and so the longest
/// a recovery goes unnoticed: two minutes, one probe every two minutes to
/// a sick system, a resolve within about three minutes of recovery at the
/// default interval (docs/delivery.md, "How soon a recovery is noticed").
pub const DEFAULT_MAX_OPEN_FOR: Duration = Duration::from_secs(120);
pub const DEFAULT_WINDOW: u32 = 20;
pub const DEFAULT_MIN_PROBES: u32 = 10;
pub const DEFAULT_JSON_POINTER: &str = "/status";
pub const DEFAULT_ONLINE: &[&str] = &["online", "ok", "up", "healthy", "active"];
pub const DEFAULT_DEGRADED: &[&str] = &["degraded"];
pub const DEFAULT_OFFLINE: &[&str] = &["offline", "error", "down", "failed"];
pub const DEFAULT_SINK_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_SINK_MAX_AGE: Duration = Duration::from_secs(86_400);
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(600);
pub const DEFAULT_SANDBOX_LISTEN: &str = "127.0.0.1:8089";
pub const DEFAULT_RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);
pub const DEFAULT_RATE_LIMIT_BACKOFF_MAX: Duration = Duration::from_secs(1800);
pub const DEFAULT_FLAP_HIGH: f64 = 50.0;
pub const DEFAULT_FLAP_LOW: f64 = 25.0;
pub const DEFAULT_SYNC_STATUS: &str = "/sync/status";
pub const DEFAULT_SYNC_FINISHED_AT: &str = "/sync/finished_at";
pub const DEFAULT_SYNC_FAILED: &[&str] = &["failed", "error"];
/// Shortest interval accepted: below this a status endpoint is being load-tested.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from (relative paths inside resolve against its folder).
    pub path: PathBuf,
    pub daemon: Daemon,
    /// Shared with the engine (one copy of each in memory).
    pub connections: Vec<Arc<Connection>>,
    pub sinks: Vec<Sink>,
    pub maintenance: Vec<Maintenance>,
    pub sandbox: Option<Sandbox>,
    /// `[[discovery]]` sources (src/discovery/).
    pub discovery: Vec<Arc<Discovery>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `[daemon]`.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub database: PathBuf,
    /// The hash-chained audit log, if any.
    pub audit_log: Option<PathBuf>,
    /// The admin API, status page and metrics; off when unset.
    pub listen: Option<SocketAddr>,
    /// Bearer token for the admin API's mutating routes (and for any
    /// request when `listen` is not loopback).
    pub admin_token: Option<Secret>,
    /// Raw probe rows older than this are pruned; hourly rollups are kept a year.
    pub retention: Duration,
    pub max_concurrent_probes: usize,
    pub log_format: LogFormat,
    /// A `tracing` filter directive (`info`, `connwatch=debug`); `RUST_LOG` wins.
    pub log_level: String,
    pub scheduler_tick: Duration,
    pub history_flush: Duration,
    pub shutdown_timeout: Duration,
    /// Where people reach the status page (through a proxy, say): messages
    /// for people link to a connection's row there.
    pub public_url: Option<Url>,
    /// Names this daemon in every envelope, metric and watchdog alert
    /// (default: the host name).
    pub instance: String,
    /// The slice of the connections this daemon probes.
    pub shard: Shard,
    /// Pinged (GET) every `heartbeat_interval` while the daemon is healthy.
    pub heartbeat_url: Option<Secret>,
    pub heartbeat_interval: Duration,
}

pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);
/// Largest shard count accepted.
pub const MAX_SHARDS: u32 = 1024;

/// `[daemon] shard = "i/n"`: this daemon probes the connections whose
/// [`crate::discovery::shard_of`] is `i - 1` modulo `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based, as written.
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 1, count: 1 }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || {
            format!("{s:?} is not a shard: write \"i/n\" with 1 <= i <= n <= {MAX_SHARDS}, e.g. \"2/3\"")
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count || count > MAX_SHARDS {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// The list formats a discovery source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryFormat {
    /// A JSON array of objects (at `items`), each with an id (and a name).
    List {
        items: String,
        id_pointer: String,
        name_pointer: Option<String>,
    },
    /// Prometheus HTTP service discovery JSON.
    HttpSd,
    /// The `http_sd` shape in a local file, re-read when it changes.
    File,
}

/// Where a source's list comes from.
#[derive(Debug, Clone)]
pub enum DiscoverySource {
    /// May carry credentials; print with [`redact_url`].
    Http {
        url: Url,
        headers: Vec<(String, Secret)>,
        tls: Tls,
        timeout: Duration,
    },
    File(PathBuf),
}

/// One `[[discovery]]` source, validated.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub id: String,
    pub format: DiscoveryFormat,
    pub source: DiscoverySource,
    /// The status URL with `{id}`, `{target}`, `{label:NAME}` placeholders.
    pub status_url: String,
    /// Each template scope's id and URL (with placeholders).
    pub scope_urls: Vec<(String, String)>,
    pub refresh: Duration,
    /// A connection made from `[defaults]` and `template` with a sample id:
    /// each discovered connection is this with its own id, name and URLs.
    pub prototype: Connection,
}

pub const DEFAULT_DISCOVERY_REFRESH: Duration = Duration::from_secs(60);
pub const MAX_DISCOVERED: usize = 100_000;

/// When a connection is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cadence {
    /// Fixed-rate, driven by the timer queue.
    Interval(Duration),
    /// A 6-field cron expression (seconds first), driven by tokio-cron-scheduler.
    Cron(String),
}

impl std::fmt::Display for Cadence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cadence::Interval(d) => write!(f, "every {}", format_duration(*d)),
            Cadence::Cron(c) => write!(f, "cron \"{c}\""),
        }
    }
}

/// What a good answer looks like (the classification in docs/configuration.md).
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    /// Accepted HTTP statuses; `None` = any 2xx.
    pub status: Option<Vec<u16>>,
    /// JSON pointer of the status field; `None` = no body check.
    pub json_pointer: Option<String>,
    /// Lower-cased status values for each outcome.
    pub online: Vec<String>,
    pub degraded: Vec<String>,
    pub offline: Vec<String>,
    /// Sync freshness, if configured.
    pub sync: Option<SyncExpect>,
}

/// `expect.sync`: where the last sync's status and finish time are.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncExpect {
    pub status: String,
    pub finished_at: String,
    /// A last sync older than this makes the probe `degraded` (`stale_sync`).
    pub max_age: Option<Duration>,
    /// Lower-cased status values that mean the sync failed.
    pub failed: Vec<String>,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            status: None,
            json_pointer: Some(DEFAULT_JSON_POINTER.to_string()),
            online: DEFAULT_ONLINE.iter().map(|s| s.to_string()).collect(),
            degraded: DEFAULT_DEGRADED.iter().map(|s| s.to_string()).collect(),
            offline: DEFAULT_OFFLINE.iter().map(|s| s.to_string()).collect(),
            sync: None,
        }
    }
}

/// Thresholds shared by health confirmation and the circuit breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct Breaker {
    /// Consecutive failures that confirm a failure health (and open the circuit).
    pub failure_threshold: u32,
    /// Consecutive successes that confirm a return to online.
    pub success_threshold: u32,
    pub open_for: Duration,
    pub max_open_for: Duration,
    /// Failure rate over the last `window` probes that opens the circuit.
    pub failure_rate: Option<f64>,
    pub window: u32,
    pub min_probes: u32,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            success_threshold: DEFAULT_SUCCESS_THRESHOLD,
            open_for: DEFAULT_OPEN_FOR,
            max_open_for: DEFAULT_MAX_OPEN_FOR,
            failure_rate: None,
            window: DEFAULT_WINDOW,
            min_probes: DEFAULT_MIN_PROBES,
        }
    }
}

/// Per-connection TLS options (private CAs are common on-prem).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Skip certificate verification. Logged as a warning at start.
    pub insecure: bool,
}

impl Tls {
    pub fn is_default(&self) -> bool {
        *self == Tls::default()
    }
}

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: String },
    #[error("{path} is not a PEM certificate bundle ({source})")]
    Bundle {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no PEM private key (-----BEGIN PRIVATE KEY-----): {source}")]
    NoKey {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path}: the private key is not one rustls can use ({source})")]
    Key { path: String, source: rustls::Error },
}

fn read_tls_file(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The certificates of a PEM bundle (`tls_ca_file`): at least one.
pub fn read_ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let shown = || path.display().to_string();
    let certs = CertificateDer::pem_slice_iter(&read_tls_file(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsFileError::Bundle {
            path: shown(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate { path: shown() });
    }
    Ok(certs)
}

/// A client identity: the certificate chain of a PEM file (at least one
/// certificate) and the private key of another, of a type rustls can sign
/// with.
pub fn read_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsFileError> {
    let chain = read_ca_bundle(cert)?;
    let shown = || key.display().to_string();
    let der = PrivateKeyDer::from_pem_slice(&read_tls_file(key)?).map_err(|source| {
        TlsFileError::NoKey {
            path: shown(),
            source,
        }
    })?;
    rustls::crypto::ring::sign::any_supported_type(&der).map_err(|source| TlsFileError::Key {
        path: shown(),
        source,
    })?;
    Ok((chain, der))
}

/// One watched connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    pub id: String,
    pub name: Option<String>,
    /// May carry credentials; print with [`redact_url`].
    pub url: Url,
    pub method: reqwest::Method,
    /// Header values are secrets.
    pub headers: Vec<(String, Secret)>,
    pub body: Option<String>,
    pub cadence: Cadence,
    pub timeout: Duration,
    pub degraded_after: Option<Duration>,
    pub max_body: usize,
    /// Shared between connections with equal tables.
    pub expect: Arc<Expect>,
    pub breaker: Breaker,
    pub auth_interval: Duration,
    /// A Retry-After longer than this is cut to this (and logged).
    pub retry_after_max: Duration,
    /// Cap of the backoff after a 429 without Retry-After.
    pub rate_limit_backoff_max: Duration,
    /// Flapping starts above this percent state change...
    pub flap_high: f64,
    /// ...and stops below this one.
    pub flap_low: f64,
    /// The parent connection (typically the platform's own health endpoint).
    pub depends_on: Option<String>,
    /// Sink ids this connection's events go to (already defaulted to all).
    pub sinks: Vec<String>,
    /// Event types this connection emits.
    pub events: crate::event::EventFilter,
    pub tls: Tls,
    /// Operations (entity types) probed besides the status endpoint.
    pub scopes: Vec<Arc<Scope>>,
    /// The `[[discovery]]` source that listed it; `None` for the file's own.
    pub origin: Option<Arc<str>>,
    /// The uptime objective, a fraction (`slo = "99.5%"` is 0.995).
    pub slo: Option<f64>,
}

/// Scopes one connection may have.
pub const MAX_SCOPES: usize = 32;
/// A scope's default interval, in intervals of its connection.
pub const SCOPE_INTERVAL_FACTOR: u32 = 10;

/// One `[[connection.scope]]`: an operation of its connection (reading one
/// entity type, say), probed on its own cadence with the connection's TLS
/// settings, body cap and thresholds. The default expectation is any 2xx
/// and no body check.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub id: String,
    /// May carry credentials; print with [`redact_url`].
    pub url: Url,
    pub method: reqwest::Method,
    /// The connection's headers, then the scope's own (by name).
    pub headers: Vec<(String, Secret)>,
    pub body: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub degraded_after: Option<Duration>,
    pub expect: Arc<Expect>,
}

/// One `[[sink]]`: the keys every sink has, and what its kind does.
#[derive(Debug, Clone)]
pub struct Sink {
    pub id: String,
    /// The kind's name (`webhook`, `pagerduty`, …).
    pub kind: &'static str,
    /// Event types this sink takes (see [`crate::policy::route`]).
    pub events: crate::event::EventFilter,
    /// For one attempt.
    pub timeout: Duration,
    /// Undelivered events older than this are dead.
    pub max_age: Duration,
    /// Cap of the retry backoff.
    pub retry_max: Duration,
    /// While a connection stays unhealthy, re-send its last status event
    /// this often (off when `None`).
    pub remind_every: Option<Duration>,
    /// Requests in flight at once (`concurrency`, else the kind's default).
    pub concurrency: usize,
    /// The kind's own keys, payload and quirks (`src/sinks/<kind>/`).
    pub imp: Arc<dyn crate::sinks::Sink>,
}

impl Sink {
    /// The sink as the alert policy sees it.
    pub fn policy(&self) -> crate::policy::route::SinkPolicy {
        crate::policy::route::SinkPolicy {
            id: Arc::from(self.id.as_str()),
            class: self.imp.class(),
            events: self.events.clone(),
        }
    }
}

/// One `[[maintenance]]` window.
#[derive(Debug, Clone)]
pub struct Maintenance {
    /// `None` = every connection.
    pub connections: Option<Vec<String>>,
    pub schedule: String,
    pub duration: Duration,
}

/// `[sandbox]` inside `run`.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub webhook_secret: Option<Secret>,
}

impl Config {
    /// Loads and validates a file, expanding `${VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_with_env(path, &|name| std::env::var(name).ok())
    }

    /// As [`Config::load`], with the environment passed in (tests).
    pub fn load_with_env(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        Config::parse(path, &read(path)?, env)
    }

    /// Parses and validates `text` as if read from `path`.
    pub fn parse(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let loc = error::Locator::new(path, text);
        let raw = parse_raw(text, &loc)?;
        validate::validate(raw, path, &loc, env)
    }

    /// Loads only `[daemon]` (database, retention…) and no secret (the
    /// admin token is left unset): for the read-only commands, which must
    /// work from a shell that lacks the daemon's secret variables. Syntax
    /// and unknown keys are still checked everywhere, and types everywhere
    /// but in `[[sink]]` tables (whose kinds check them).
    pub fn load_daemon(path: &Path) -> Result<Daemon, ConfigErrors> {
        let text = read(path)?;
        let loc = error::Locator::new(path, &text);
        let raw = parse_raw(&text, &loc)?;
        validate::validate_daemon(raw, path, &loc, &|name| std::env::var(name).ok(), false)
    }

    /// Loads `[daemon]` with the admin token (and no other secret): for
    /// commands that ask the running daemon through its admin API.
    pub fn load_admin(path: &Path) -> Result<Daemon, ConfigErrors> {
        let text = read(path)?;
        let loc = error::Locator::new(path, &text);
        let raw = parse_raw(&text, &loc)?;
        validate::validate_daemon(raw, path, &loc, &|name| std::env::var(name).ok(), true)
    }

    /// The ids of the `[[sink]]` tables as written, without reading any of
    /// their keys (so without their secrets): for commands that only name
    /// a sink.
    pub fn sink_ids(path: &Path) -> Result<Vec<String>, ConfigErrors> {
        let text = read(path)?;
        let loc = error::Locator::new(path, &text);
        let raw = parse_raw(&text, &loc)?;
        Ok(raw
            .sink
            .iter()
            .filter_map(|t| t.get("id")?.as_str().map(str::to_string))
            .collect())
    }

    pub fn connection(&self, id: &str) -> Option<&Connection> {
        self.connections.iter().find(|c| c.id == id).map(|c| &**c)
    }
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    let fail = |line: usize, column: usize, message: String| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line,
            column,
            message,
        }])
    };
    let bytes = std::fs::read(path)
        .map_err(|e| fail(0, 0, format!("cannot read configuration file: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        // Where the first bad byte is, so it can be found and fixed.
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        let start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&good[start..]).chars().count() + 1;
        fail(
            line,
            column,
            "not UTF-8 text: the configuration must be UTF-8 (is it another encoding, or binary?)"
                .to_string(),
        )
    })
}

/// The first three steps: TOML syntax, unknown keys (all of them), types.
fn parse_raw(text: &str, loc: &error::Locator<'_>) -> Result<raw::RawConfig, ConfigErrors> {
    let doc = toml_edit::ImDocument::parse(text.to_string())
        .map_err(|e| ConfigErrors(vec![loc.error(e.span(), toml_message(e.message()))]))?;
    let (_, unknown) = schema::walk(&doc, loc, false);
    if !unknown.is_empty() {
        return Err(ConfigErrors(unknown));
    }
    // One parse: the document the walk read is what serde reads, consumed
    // as it goes.
    let raw: raw::RawConfig = toml_edit::de::from_document(doc).map_err(|e| {
        // The syntax was checked above: this is a value of the wrong type.
        let spans = spans(loc);
        let key = e.span().and_then(|s| spans.path_at(&s));
        let m = type_message(e.message());
        let m = match key {
            Some(k) => format!("{}: {m}", spans.display(k)),
            None => m,
        };
        ConfigErrors(vec![loc.error(e.span(), m)])
    })?;
    Ok(raw)
}

/// Where each key of the file sits (parsed again: only a file with an
/// error needs it).
fn spans(loc: &error::Locator<'_>) -> schema::Spans {
    match toml_edit::ImDocument::parse(loc.source().to_string()) {
        Ok(doc) => schema::walk(&doc, loc, true).0,
        Err(_) => schema::Spans::default(),
    }
}

/// A TOML syntax error on one line.
fn toml_message(m: &str) -> String {
    let m: Vec<&str> = m.trim().lines().map(str::trim).collect();
    format!("invalid TOML: {}", m.join("; "))
}

/// serde's type error in the words of a configuration file.
fn type_message(m: &str) -> String {
    let mut m = m
        .trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    for (rust, plain) in [
        ("expected i64", "expected an integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected u16", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
        ("expected f64", "expected a number"),
        (
            "expected a sequence",
            "expected an array (a list of tables is written `[[name]]`)",
        ),
        ("expected a map", "expected a table"),
        ("invalid type: map", "invalid type: a table"),
        ("invalid type: sequence", "invalid type: an array"),
    ] {
        m = m.replace(rust, plain);
    }
    // "invalid length 2, expected struct RawBreaker with 8 elements": an
    // array where a table belongs.
    if let (Some(i), true) = (m.find("expected struct "), m.contains(" elements")) {
        m = format!("{}expected a table", &m[..i]);
    }
    // "invalid type: X, expected Y" reads better as "expected Y, found X".
    if let Some((found, expected)) = m
        .strip_prefix("invalid type: ")
        .and_then(|r| r.split_once(", expected "))
    {
        return format!("expected {expected}, found {found}");
    }
    if let Some((n, expected)) = m
        .strip_prefix("invalid length ")
        .and_then(|r| r.split_once(", expected "))
    {
        return format!("expected {expected}, found an array of {n}");
    }
    m
}

/// A URL fit for logs and pages: userinfo removed, and the values of query
/// parameters whose names look secret (`token`, `key`, `secret`, `password`,
/// `signature`, `auth`, `sig`) replaced by `***`.
pub fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username("***");
        let _ = u.set_password(None);
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let secret = is_secret_name(&k);
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// Whether a parameter or header name looks like it carries a secret.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "token",
        "key",
        "secret",
        "password",
        "passwd",
        "auth",
        "signature",
        "sig",
        "credential",
    ]
    .iter()
    .any(|w| n.contains(w))
}

impl Connection {
    /// The cadence's period, for interval connections.
    pub fn interval(&self) -> Option<Duration> {
        match self.cadence {
            Cadence::Interval(d) => Some(d),
            Cadence::Cron(_) => None,
        }
    }

    /// A connection with every default, for `connwatch probe --url`.
    pub fn adhoc(url: Url) -> Connection {
        Connection {
            id: "adhoc".into(),
            name: None,
            url,
            method: reqwest::Method::GET,
            headers: Vec::new(),
            body: None,
            cadence: Cadence::Interval(DEFAULT_INTERVAL),
            timeout: DEFAULT_TIMEOUT,
            degraded_after: None,
            max_body: DEFAULT_MAX_BODY,
            expect: Arc::new(Expect::default()),
            breaker: Breaker::default(),
            auth_interval: DEFAULT_AUTH_INTERVAL,
            retry_after_max: DEFAULT_RETRY_AFTER_MAX,
            rate_limit_backoff_max: DEFAULT_RATE_LIMIT_BACKOFF_MAX,
            flap_high: DEFAULT_FLAP_HIGH,
            flap_low: DEFAULT_FLAP_LOW,
            depends_on: None,
            sinks: Vec::new(),
            events: crate::event::EventFilter::all(),
            tls: Tls::default(),
            scopes: Vec::new(),
            origin: None,
            slo: None,
        }
    }
}

#[cfg(test)]
mod tests;
