//! Domain values shared by every part: outcomes, health, error kinds and
//! wall-clock stamps and the engine's clock. Nothing here does I/O.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time in milliseconds since the Unix epoch. The daemon stores and
/// prints these; monotonic scheduling uses `tokio::time::Instant` instead.
pub type UnixMs = i64;

/// The one place wall-clock stamps come from.
pub fn now_ms() -> UnixMs {
    to_unix_ms(SystemTime::now())
}

/// A clock of wall-clock time at its start plus tokio's monotonic time
/// since: deadlines never jump with the wall clock, and tests that pause
/// tokio's clock control it too. The engine keeps its time with one.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall0: UnixMs,
    inst0: tokio::time::Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            wall0: now_ms(),
            inst0: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> UnixMs {
        self.wall0 + self.inst0.elapsed().as_millis() as i64
    }

    /// The tokio instant of a wall-clock time (now if it is past).
    pub fn instant_of(&self, at: UnixMs) -> tokio::time::Instant {
        let ahead = (at - self.now()).max(0) as u64;
        tokio::time::Instant::now() + Duration::from_millis(ahead)
    }
}

pub fn to_unix_ms(t: SystemTime) -> UnixMs {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// RFC 3339 with milliseconds and `Z`, as in the event envelope.
pub fn rfc3339(ms: UnixMs) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// The classification of one probe (docs/configuration.md, classification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Online,
    Degraded,
    Offline,
    Unreachable,
    Invalid,
    AuthRequired,
    RateLimited,
    /// The credentials work; the source system refuses this operation.
    PermissionDenied,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Online,
        Outcome::Degraded,
        Outcome::Offline,
        Outcome::Unreachable,
        Outcome::Invalid,
        Outcome::AuthRequired,
        Outcome::RateLimited,
        Outcome::PermissionDenied,
    ];

    /// Whether this outcome counts as a failure (opens the circuit).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::Offline | Outcome::Unreachable | Outcome::Invalid
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Online => "online",
            Outcome::Degraded => "degraded",
            Outcome::Offline => "offline",
            Outcome::Unreachable => "unreachable",
            Outcome::Invalid => "invalid",
            Outcome::AuthRequired => "auth_required",
            Outcome::RateLimited => "rate_limited",
            Outcome::PermissionDenied => "permission_denied",
        }
    }

    /// An explicit answer that retrying does not change (`auth_required`,
    /// `permission_denied`): confirmed at once, neutral to the breaker,
    /// probed every `auth_interval`.
    pub fn needs_a_person(self) -> bool {
        matches!(self, Outcome::AuthRequired | Outcome::PermissionDenied)
    }

    /// Compact code for the probe tables (one byte per row instead of a word).
    pub fn code(self) -> i64 {
        match self {
            Outcome::Online => 0,
            Outcome::Degraded => 1,
            Outcome::Offline => 2,
            Outcome::Unreachable => 3,
            Outcome::Invalid => 4,
            Outcome::AuthRequired => 5,
            Outcome::RateLimited => 6,
            Outcome::PermissionDenied => 7,
        }
    }

    pub fn from_code(code: i64) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.code() == code)
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Confirmed health: `unknown` before the first probe, then an outcome that
/// has been confirmed (docs/design.md, "Health confirmation").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Unknown,
    Is(Outcome),
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Is(o) => o.as_str(),
        }
    }

    pub fn parse(s: &str) -> Option<Health> {
        if s == "unknown" {
            Some(Health::Unknown)
        } else {
            Outcome::parse(s).map(Health::Is)
        }
    }

    pub fn is_failure(self) -> bool {
        matches!(self, Health::Is(o) if o.is_failure())
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `error.kind` of a probe and an event (docs/events.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Dns,
    Connect,
    Tls,
    Timeout,
    Io,
    HttpStatus,
    Body,
    Reported,
    StaleSync,
    /// Latency above `degraded_after`.
    Slow,
    /// 429 or `RATE_LIMIT_EXCEEDED`.
    RateLimit,
    /// 401 (or a 403 with an expired-credential code) or a body asking for
    /// new credentials.
    Auth,
    /// 403 or a permission error code: the credentials work, the
    /// operation is refused.
    Permission,
    /// The status endpoint is online but some of the connection's scopes
    /// fail.
    Scope,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 14] = [
        ErrorKind::Dns,
        ErrorKind::Connect,
        ErrorKind::Tls,
        ErrorKind::Timeout,
        ErrorKind::Io,
        ErrorKind::HttpStatus,
        ErrorKind::Body,
        ErrorKind::Reported,
        ErrorKind::StaleSync,
        ErrorKind::Slow,
        ErrorKind::RateLimit,
        ErrorKind::Auth,
        ErrorKind::Permission,
        ErrorKind::Scope,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Dns => "dns",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Io => "io",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::Body => "body",
            ErrorKind::Reported => "reported",
            ErrorKind::StaleSync => "stale_sync",
            ErrorKind::Slow => "slow",
            ErrorKind::RateLimit => "rate_limit",
            ErrorKind::Auth => "auth",
            ErrorKind::Permission => "permission",
            ErrorKind::Scope => "scope",
        }
    }

    pub fn code(self) -> i64 {
        ErrorKind::ALL.iter().position(|k| *k == self).unwrap_or(0) as i64
    }

    pub fn from_code(code: i64) -> Option<ErrorKind> {
        ErrorKind::ALL.get(usize::try_from(code).ok()?).copied()
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object of a probe or event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProbeError {
    pub kind: ErrorKind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

/// A classified probe: what the daemon records for every probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    pub outcome: Outcome,
    pub error: Option<ProbeError>,
    pub http_status: Option<u16>,
    /// Request start to last byte read.
    pub latency: Duration,
    /// From `Retry-After` on a rate-limited answer.
    pub retry_after: Option<Duration>,
    /// The last sync, when `expect.sync` is configured and the body says.
    pub sync: Option<SyncSeen>,
}

/// What a status body says about the connection's last data sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncSeen {
    pub status: Option<String>,
    pub finished_at: Option<UnixMs>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::from_code(o.code()), Some(o));
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_code(k.code()), Some(k));
        }
        assert_eq!(Health::parse("unknown"), Some(Health::Unknown));
        assert_eq!(Health::parse("offline"), Some(Health::Is(Outcome::Offline)));
        assert_eq!(Outcome::from_code(99), None);
    }

    #[test]
    fn rfc3339_has_millis_and_z() {
        assert_eq!(rfc3339(1_764_365_445_123), "2025-11-28T21:30:45.123Z");
    }
}
