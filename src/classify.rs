//! Response -> [`Outcome`]: the classification table (docs/configuration.md)
//! as one pure function.
//!
//! No I/O and no clock reads: the probe's transport result, the connection's
//! expectations and "now" (for `Retry-After` dates) are passed in.

use crate::config::Expect;
use crate::model::{Classified, ErrorKind, Outcome, ProbeError, SyncSeen, UnixMs};
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// Error codes that mean "renew the credentials".
pub const AUTH_CODES: &[&str] = &[
    "AUTHENTICATION_FAILED",
    "AUTHENTICATION_REQUIRED",
    "CREDENTIALS_EXPIRED",
];
/// Error codes that mean "the credentials work; this operation is
/// refused" (a permission changed in the source system).
pub const PERMISSION_CODES: &[&str] = &[
    "PERMISSION_DENIED",
    "FORBIDDEN",
    "INSUFFICIENT_PERMISSIONS",
    "INSUFFICIENT_SCOPE",
];
pub const RATE_LIMIT_CODE: &str = "RATE_LIMIT_EXCEEDED";
/// The status value that means "renew the credentials".
pub const AUTH_STATUS: &str = "auth_required";
/// The status value that means "this operation is refused".
pub const PERMISSION_STATUS: &str = "permission_denied";

/// A full HTTP answer, as far as the prober read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    pub status: u16,
    /// The raw `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// At most `max_body` bytes of the body.
    pub body: Vec<u8>,
    /// The body went on past `max_body`.
    pub truncated: bool,
}

/// What the transport produced: an answer, or an error before a full answer.
pub type Attempt = Result<Answer, ProbeError>;

/// What classification needs to know about the connection.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub expect: &'a Expect,
    pub degraded_after: Option<Duration>,
    pub max_body: usize,
}

/// Classifies one probe. `latency` is request start to last byte read.
/// With `expect.sync`, the last sync is read from the body, and an otherwise
/// online probe whose last sync is older than `max_age` is `degraded`
/// (kind `stale_sync`).
///
/// ```
/// use connwatch::classify::{classify, Answer, Rules};
/// use connwatch::config::Expect;
/// use connwatch::model::Outcome;
/// use std::time::{Duration, SystemTime};
///
/// let expect = Expect::default();
/// let rules = Rules { expect: &expect, degraded_after: None, max_body: 65536 };
/// let answer = Answer { status: 200, body: br#"{"status":"down"}"#.to_vec(), ..Default::default() };
/// let c = classify(&Ok(answer), Duration::from_millis(40), rules, SystemTime::now());
/// assert_eq!(c.outcome, Outcome::Offline);
/// assert_eq!(c.error.unwrap().message, "status \"down\"");
/// ```
pub fn classify(
    attempt: &Attempt,
    latency: Duration,
    rules: Rules<'_>,
    now: SystemTime,
) -> Classified {
    let mut c = classify_answer(attempt, latency, rules, now);
    let (Some(sync), Ok(answer)) = (&rules.expect.sync, attempt) else {
        return c;
    };
    if answer.truncated {
        return c;
    }
    let Ok(json) = serde_json::from_slice::<Value>(&answer.body) else {
        return c;
    };
    let seen = SyncSeen {
        status: json
            .pointer(&sync.status)
            .and_then(Value::as_str)
            .map(|s| s.chars().take(64).collect()),
        finished_at: json.pointer(&sync.finished_at).and_then(parse_time),
    };
    if let (Some(max), Some(at), Outcome::Online) = (sync.max_age, seen.finished_at, c.outcome) {
        let now_ms = crate::model::to_unix_ms(now);
        if now_ms - at > max.as_millis() as i64 {
            c.outcome = Outcome::Degraded;
            c.error = Some(ProbeError {
                kind: ErrorKind::StaleSync,
                message: format!(
                    "last sync finished {} s ago (max_age {} s)",
                    (now_ms - at) / 1000,
                    max.as_secs()
                ),
                http_status: c.http_status,
            });
        }
    }
    c.sync = Some(seen);
    c
}

/// What a JSON body holds at each pointer the expectation reads: the
/// status pointer, then the sync pointers. `None` for a pointer that is
/// absent; nothing at all when the body is not read (no body check, not
/// JSON, cut at `max_body`, no answer). Values are shown as compact JSON,
/// cut at 80 characters.
pub fn pointers(attempt: &Attempt, expect: &Expect) -> Vec<(String, Option<String>)> {
    let Ok(answer) = attempt else {
        return Vec::new();
    };
    if answer.truncated {
        return Vec::new();
    }
    let Ok(json) = serde_json::from_slice::<Value>(&answer.body) else {
        return Vec::new();
    };
    let mut wanted: Vec<&str> = expect.json_pointer.iter().map(String::as_str).collect();
    if let Some(sync) = &expect.sync {
        wanted.push(&sync.status);
        wanted.push(&sync.finished_at);
    }
    wanted
        .into_iter()
        .map(|p| {
            let v = json.pointer(p).map(|v| {
                let t = v.to_string();
                if t.chars().count() > 80 {
                    format!("{}…", t.chars().take(79).collect::<String>())
                } else {
                    t
                }
            });
            (p.to_string(), v)
        })
        .collect()
}

/// A sync time: RFC 3339 text, or a Unix time in seconds (or milliseconds
/// when above 10^11).
fn parse_time(v: &Value) -> Option<UnixMs> {
    if let Some(s) = v.as_str() {
        return chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_millis());
    }
    let n = v.as_f64().filter(|n| n.is_finite() && *n >= 0.0)?;
    Some(if n > 1e11 {
        n as i64
    } else {
        (n * 1000.0) as i64
    })
}

fn classify_answer(
    attempt: &Attempt,
    latency: Duration,
    rules: Rules<'_>,
    now: SystemTime,
) -> Classified {
    let answer = match attempt {
        Err(e) => return done(Outcome::Unreachable, Some(e.clone()), None, latency, None),
        Ok(a) => a,
    };
    let status = answer.status;
    let http = Some(status);
    let json: Option<Value> = if answer.truncated || answer.body.is_empty() {
        None
    } else {
        serde_json::from_slice(&answer.body).ok()
    };
    let code = json.as_ref().and_then(error_code);
    let err = |kind, message: String| {
        Some(ProbeError {
            kind,
            message,
            http_status: http,
        })
    };

    // Rate limited: 429, or the body's error code.
    if status == 429 || code.as_deref() == Some(RATE_LIMIT_CODE) {
        let retry_after = answer
            .retry_after
            .as_deref()
            .and_then(|v| parse_retry_after(v, now));
        let message = if status == 429 {
            "HTTP 429".to_string()
        } else {
            format!("HTTP {status}, {RATE_LIMIT_CODE}")
        };
        return done(
            Outcome::RateLimited,
            err(ErrorKind::RateLimit, message),
            http,
            latency,
            retry_after,
        );
    }

    // Credentials: 401, a code asking for new credentials (on any status,
    // a 403 included), or status `auth_required`.
    let status_value = json
        .as_ref()
        .zip(rules.expect.json_pointer.as_deref())
        .and_then(|(j, p)| j.pointer(p))
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    // The code is the endpoint's text: cut it, as the status value is.
    let shown = |status: u16| match &code {
        Some(c) => format!("HTTP {status}, {}", c.chars().take(64).collect::<String>()),
        None => format!("HTTP {status}"),
    };
    let auth = |message| {
        done(
            Outcome::AuthRequired,
            err(ErrorKind::Auth, message),
            http,
            latency,
            None,
        )
    };
    if status == 401 || code.as_deref().is_some_and(|c| AUTH_CODES.contains(&c)) {
        return auth(shown(status));
    }
    if status_value.as_deref() == Some(AUTH_STATUS) {
        return auth(format!("status \"{AUTH_STATUS}\""));
    }

    // Permissions: the credentials work, the operation is refused (a 403
    // otherwise, a permission code, or status `permission_denied`).
    let denied = |message| {
        done(
            Outcome::PermissionDenied,
            err(ErrorKind::Permission, message),
            http,
            latency,
            None,
        )
    };
    if status == 403
        || code
            .as_deref()
            .is_some_and(|c| PERMISSION_CODES.contains(&c))
    {
        return denied(shown(status));
    }
    if status_value.as_deref() == Some(PERMISSION_STATUS) {
        return denied(format!("status \"{PERMISSION_STATUS}\""));
    }

    // HTTP status: 5xx, or anything not expected.
    let expected = match &rules.expect.status {
        None => (200..300).contains(&status),
        Some(list) => list.contains(&status),
    };
    if status >= 500 || !expected {
        return done(
            Outcome::Offline,
            err(ErrorKind::HttpStatus, format!("HTTP {status}")),
            http,
            latency,
            None,
        );
    }

    // Body.
    if answer.truncated {
        let msg = format!("body larger than max_body ({} bytes)", rules.max_body);
        return done(
            Outcome::Invalid,
            err(ErrorKind::Body, msg),
            http,
            latency,
            None,
        );
    }
    if let Some(pointer) = rules.expect.json_pointer.as_deref() {
        let Some(j) = &json else {
            let msg = if answer.body.is_empty() {
                "empty body, JSON expected".to_string()
            } else {
                "body is not valid JSON".to_string()
            };
            return done(
                Outcome::Invalid,
                err(ErrorKind::Body, msg),
                http,
                latency,
                None,
            );
        };
        let Some(v) = j.pointer(pointer) else {
            return done(
                Outcome::Invalid,
                err(
                    ErrorKind::Body,
                    format!("no value at JSON pointer {pointer}"),
                ),
                http,
                latency,
                None,
            );
        };
        let Some(s) = v.as_str() else {
            let msg = format!("value at {pointer} is not a string");
            return done(
                Outcome::Invalid,
                err(ErrorKind::Body, msg),
                http,
                latency,
                None,
            );
        };
        let s = s.to_ascii_lowercase();
        let shown: String = s.chars().take(64).collect();
        if rules.expect.offline.contains(&s) {
            return done(
                Outcome::Offline,
                err(ErrorKind::Reported, format!("status \"{shown}\"")),
                http,
                latency,
                None,
            );
        }
        if rules.expect.degraded.contains(&s) {
            return done(
                Outcome::Degraded,
                err(ErrorKind::Reported, format!("status \"{shown}\"")),
                http,
                latency,
                None,
            );
        }
        if !rules.expect.online.contains(&s) {
            let msg = format!("unrecognised status \"{shown}\" at {pointer}");
            return done(
                Outcome::Invalid,
                err(ErrorKind::Body, msg),
                http,
                latency,
                None,
            );
        }
    }

    // Latency.
    if let Some(limit) = rules.degraded_after {
        if latency > limit {
            let msg = format!(
                "latency {} ms above degraded_after {} ms",
                latency.as_millis(),
                limit.as_millis()
            );
            return done(
                Outcome::Degraded,
                err(ErrorKind::Slow, msg),
                http,
                latency,
                None,
            );
        }
    }
    done(Outcome::Online, None, http, latency, None)
}

fn done(
    outcome: Outcome,
    error: Option<ProbeError>,
    http_status: Option<u16>,
    latency: Duration,
    retry_after: Option<Duration>,
) -> Classified {
    Classified {
        outcome,
        error,
        http_status,
        latency,
        retry_after,
        sync: None,
    }
}

/// The error code at `/error/code`, else `/code` (upper-cased).
fn error_code(j: &Value) -> Option<String> {
    j.pointer("/error/code")
        .or_else(|| j.pointer("/code"))
        .and_then(Value::as_str)
        .map(str::to_ascii_uppercase)
}

/// `Retry-After`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3). A date in
/// the past is zero; anything else is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Saturate absurd values; callers cap them.
        return Some(Duration::from_secs(
            v.parse::<u64>().unwrap_or(u64::MAX / 2),
        ));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Attempt {
        Ok(Answer {
            status,
            retry_after: None,
            body: body.as_bytes().to_vec(),
            truncated: false,
        })
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000)
    }

    fn run_with(
        a: &Attempt,
        expect: &Expect,
        degraded_after: Option<Duration>,
        latency_ms: u64,
    ) -> Classified {
        let rules = Rules {
            expect,
            degraded_after,
            max_body: 65536,
        };
        classify(a, Duration::from_millis(latency_ms), rules, now())
    }

    fn run(a: &Attempt) -> Classified {
        run_with(a, &Expect::default(), Some(Duration::from_secs(2)), 10)
    }

    fn kind(c: &Classified) -> Option<ErrorKind> {
        c.error.as_ref().map(|e| e.kind)
    }

    #[test]
    fn transport_errors_are_unreachable_with_their_kind() {
        for k in [
            ErrorKind::Dns,
            ErrorKind::Connect,
            ErrorKind::Tls,
            ErrorKind::Timeout,
            ErrorKind::Io,
        ] {
            let c = run(&Err(ProbeError {
                kind: k,
                message: "x".into(),
                http_status: None,
            }));
            assert_eq!(c.outcome, Outcome::Unreachable);
            assert_eq!(kind(&c), Some(k));
            assert!(c.outcome.is_failure());
        }
    }

    /// The whole classification table, one row each, in precedence order.
    #[test]
    fn the_table() {
        let rows: &[(Attempt, Outcome, Option<ErrorKind>)] = &[
            (
                answer(429, ""),
                Outcome::RateLimited,
                Some(ErrorKind::RateLimit),
            ),
            (
                answer(200, r#"{"error":{"code":"RATE_LIMIT_EXCEEDED"}}"#),
                Outcome::RateLimited,
                Some(ErrorKind::RateLimit),
            ),
            (
                answer(503, r#"{"code":"rate_limit_exceeded"}"#),
                Outcome::RateLimited,
                Some(ErrorKind::RateLimit),
            ),
            (
                answer(401, ""),
                Outcome::AuthRequired,
                Some(ErrorKind::Auth),
            ),
            (
                answer(403, "forbidden"),
                Outcome::PermissionDenied,
                Some(ErrorKind::Permission),
            ),
            (
                answer(403, r#"{"error":{"code":"CREDENTIALS_EXPIRED"}}"#),
                Outcome::AuthRequired,
                Some(ErrorKind::Auth),
            ),
            (
                answer(401, r#"{"error":{"code":"PERMISSION_DENIED"}}"#),
                Outcome::AuthRequired,
                Some(ErrorKind::Auth),
            ),
            (
                answer(
                    200,
                    r#"{"status":"online","error":{"code":"PERMISSION_DENIED"}}"#,
                ),
                Outcome::PermissionDenied,
                Some(ErrorKind::Permission),
            ),
            (
                answer(200, r#"{"code":"INSUFFICIENT_SCOPE"}"#),
                Outcome::PermissionDenied,
                Some(ErrorKind::Permission),
            ),
            (
                answer(400, r#"{"error":{"code":"insufficient_permissions"}}"#),
                Outcome::PermissionDenied,
                Some(ErrorKind::Permission),
            ),
            (
                answer(200, r#"{"status":"forbidden","code":"FORBIDDEN"}"#),
                Outcome::PermissionDenied,
                Some(ErrorKind::Permission),
            ),
            (
                answer(200, r#"{"status":"permission_denied"}"#),
                Outcome::PermissionDenied,
                Some(ErrorKind::Permission),
            ),
            (
                answer(200, r#"{"status":"auth_required"}"#),
                Outcome::AuthRequired,
                Some(ErrorKind::Auth),
            ),
            (
                answer(
                    200,
                    r#"{"status":"online","error":{"code":"AUTHENTICATION_FAILED"}}"#,
                ),
                Outcome::AuthRequired,
                Some(ErrorKind::Auth),
            ),
            (
                answer(400, r#"{"code":"AUTHENTICATION_REQUIRED"}"#),
                Outcome::AuthRequired,
                Some(ErrorKind::Auth),
            ),
            (
                answer(200, r#"{"code":"CREDENTIALS_EXPIRED"}"#),
                Outcome::AuthRequired,
                Some(ErrorKind::Auth),
            ),
            (
                answer(500, r#"{"status":"online"}"#),
                Outcome::Offline,
                Some(ErrorKind::HttpStatus),
            ),
            (
                answer(503, ""),
                Outcome::Offline,
                Some(ErrorKind::HttpStatus),
            ),
            (
                answer(404, r#"{"status":"online"}"#),
                Outcome::Offline,
                Some(ErrorKind::HttpStatus),
            ),
            (
                answer(302, ""),
                Outcome::Offline,
                Some(ErrorKind::HttpStatus),
            ),
            (
                answer(200, "{not json"),
                Outcome::Invalid,
                Some(ErrorKind::Body),
            ),
            (answer(200, ""), Outcome::Invalid, Some(ErrorKind::Body)),
            (
                answer(200, r#"{"state":"online"}"#),
                Outcome::Invalid,
                Some(ErrorKind::Body),
            ),
            (
                answer(200, r#"{"status":42}"#),
                Outcome::Invalid,
                Some(ErrorKind::Body),
            ),
            (
                answer(200, r#"{"status":"purple"}"#),
                Outcome::Invalid,
                Some(ErrorKind::Body),
            ),
            (
                answer(200, r#"{"status":"offline"}"#),
                Outcome::Offline,
                Some(ErrorKind::Reported),
            ),
            (
                answer(200, r#"{"status":"ERROR"}"#),
                Outcome::Offline,
                Some(ErrorKind::Reported),
            ),
            (
                answer(200, r#"{"status":"down"}"#),
                Outcome::Offline,
                Some(ErrorKind::Reported),
            ),
            (
                answer(200, r#"{"status":"failed"}"#),
                Outcome::Offline,
                Some(ErrorKind::Reported),
            ),
            (
                answer(200, r#"{"status":"degraded"}"#),
                Outcome::Degraded,
                Some(ErrorKind::Reported),
            ),
            (answer(200, r#"{"status":"online"}"#), Outcome::Online, None),
            (answer(200, r#"{"status":"ok"}"#), Outcome::Online, None),
            (answer(200, r#"{"status":"Up"}"#), Outcome::Online, None),
            (
                answer(200, r#"{"status":"healthy"}"#),
                Outcome::Online,
                None,
            ),
            (answer(200, r#"{"status":"active"}"#), Outcome::Online, None),
            (answer(204, r#"{"status":"active"}"#), Outcome::Online, None),
        ];
        for (i, (a, outcome, k)) in rows.iter().enumerate() {
            let c = run(a);
            assert_eq!(c.outcome, *outcome, "row {i}: {a:?}");
            assert_eq!(kind(&c), *k, "row {i}: {a:?}");
        }
    }

    #[test]
    fn failure_column() {
        assert!(Outcome::Offline.is_failure());
        assert!(Outcome::Invalid.is_failure());
        assert!(!Outcome::RateLimited.is_failure());
        assert!(!Outcome::AuthRequired.is_failure());
        assert!(!Outcome::PermissionDenied.is_failure());
        assert!(!Outcome::Degraded.is_failure());
        assert!(!Outcome::Online.is_failure());
    }

    #[test]
    fn http_status_is_recorded() {
        let c = run(&answer(503, ""));
        assert_eq!(c.http_status, Some(503));
        assert_eq!(c.error.unwrap().http_status, Some(503));
    }

    #[test]
    fn slow_is_degraded_only_past_the_limit() {
        let a = answer(200, r#"{"status":"online"}"#);
        let e = Expect::default();
        assert_eq!(
            run_with(&a, &e, Some(Duration::from_secs(2)), 2000).outcome,
            Outcome::Online
        );
        let c = run_with(&a, &e, Some(Duration::from_secs(2)), 2001);
        assert_eq!(
            (c.outcome, kind(&c)),
            (Outcome::Degraded, Some(ErrorKind::Slow))
        );
        assert_eq!(run_with(&a, &e, None, 60_000).outcome, Outcome::Online);
        // A failure stays a failure however slow.
        let c = run_with(
            &answer(200, r#"{"status":"down"}"#),
            &e,
            Some(Duration::from_millis(1)),
            5000,
        );
        assert_eq!(c.outcome, Outcome::Offline);
    }

    #[test]
    fn retry_after_both_forms_and_garbage() {
        let mut a = Answer {
            status: 429,
            ..Default::default()
        };
        a.retry_after = Some("120".into());
        assert_eq!(
            run(&Ok(a.clone())).retry_after,
            Some(Duration::from_secs(120))
        );
        // HTTP-date 90 s after "now".
        let date = httpdate::fmt_http_date(now() + Duration::from_secs(90));
        a.retry_after = Some(date);
        assert_eq!(
            run(&Ok(a.clone())).retry_after,
            Some(Duration::from_secs(90))
        );
        // A date in the past: retry now.
        a.retry_after = Some(httpdate::fmt_http_date(now() - Duration::from_secs(90)));
        assert_eq!(run(&Ok(a.clone())).retry_after, Some(Duration::ZERO));
        for garbage in ["soon", "-5", "1.5", "", "Mon, 99 Foo 2025"] {
            a.retry_after = Some(garbage.into());
            let c = run(&Ok(a.clone()));
            assert_eq!(c.outcome, Outcome::RateLimited);
            assert_eq!(c.retry_after, None, "{garbage:?}");
        }
        assert_eq!(
            parse_retry_after(" 7 ", now()),
            Some(Duration::from_secs(7))
        );
        assert!(parse_retry_after("99999999999999999999999", now()).is_some());
    }

    #[test]
    fn error_code_at_either_pointer() {
        assert_eq!(
            run(&answer(200, r#"{"error":{"code":"CREDENTIALS_EXPIRED"}}"#)).outcome,
            Outcome::AuthRequired
        );
        assert_eq!(
            run(&answer(200, r#"{"code":"CREDENTIALS_EXPIRED"}"#)).outcome,
            Outcome::AuthRequired
        );
        // /error/code wins over /code.
        assert_eq!(
            run(&answer(
                200,
                r#"{"error":{"code":"RATE_LIMIT_EXCEEDED"},"code":"X"}"#
            ))
            .outcome,
            Outcome::RateLimited
        );
        assert_eq!(
            run(&answer(200, r#"{"status":"ok","code":"SOMETHING_ELSE"}"#)).outcome,
            Outcome::Online
        );
    }

    #[test]
    fn custom_value_maps_and_pointer() {
        let e = Expect {
            status: Some(vec![200, 299]),
            json_pointer: Some("/health/state".into()),
            online: vec!["green".into()],
            degraded: vec!["yellow".into()],
            offline: vec!["red".into()],
            sync: None,
        };
        let r = |b: &str| run_with(&answer(200, b), &e, None, 1).outcome;
        assert_eq!(r(r#"{"health":{"state":"GREEN"}}"#), Outcome::Online);
        assert_eq!(r(r#"{"health":{"state":"yellow"}}"#), Outcome::Degraded);
        assert_eq!(r(r#"{"health":{"state":"red"}}"#), Outcome::Offline);
        assert_eq!(r(r#"{"health":{"state":"online"}}"#), Outcome::Invalid);
        assert_eq!(r(r#"{"status":"green"}"#), Outcome::Invalid);
        assert_eq!(
            run_with(&answer(299, r#"{"health":{"state":"green"}}"#), &e, None, 1).outcome,
            Outcome::Online
        );
        assert_eq!(
            run_with(&answer(201, r#"{"health":{"state":"green"}}"#), &e, None, 1).outcome,
            Outcome::Offline
        );
    }

    #[test]
    fn body_check_off_for_plain_health_urls() {
        let e = Expect {
            json_pointer: None,
            ..Expect::default()
        };
        assert_eq!(
            run_with(&answer(200, "OK"), &e, None, 1).outcome,
            Outcome::Online
        );
        assert_eq!(
            run_with(&answer(200, ""), &e, None, 1).outcome,
            Outcome::Online
        );
        assert_eq!(
            run_with(&answer(503, "OK"), &e, None, 1).outcome,
            Outcome::Offline
        );
        // Codes in a JSON body still count without the body check.
        assert_eq!(
            run_with(
                &answer(200, r#"{"code":"CREDENTIALS_EXPIRED"}"#),
                &e,
                None,
                1
            )
            .outcome,
            Outcome::AuthRequired
        );
    }

    #[test]
    fn body_cut_at_the_cap_is_invalid() {
        let a = Ok(Answer {
            status: 200,
            retry_after: None,
            body: br#"{"status":"onl"#.to_vec(),
            truncated: true,
        });
        let c = run(&a);
        assert_eq!(
            (c.outcome, kind(&c)),
            (Outcome::Invalid, Some(ErrorKind::Body))
        );
        assert!(c.error.unwrap().message.contains("max_body"));
        // ...even for a plain health URL.
        let e = Expect {
            json_pointer: None,
            ..Expect::default()
        };
        assert_eq!(run_with(&a, &e, None, 1).outcome, Outcome::Invalid);
        // A 503 with a huge body is still offline (status first).
        let a = Ok(Answer {
            status: 503,
            retry_after: None,
            body: vec![b'x'; 10],
            truncated: true,
        });
        assert_eq!(run(&a).outcome, Outcome::Offline);
    }

    #[test]
    fn sync_freshness() {
        let e = Expect {
            sync: Some(crate::config::SyncExpect {
                status: "/sync/status".into(),
                finished_at: "/sync/finished_at".into(),
                max_age: Some(Duration::from_secs(7200)),
                failed: vec!["failed".into()],
            }),
            ..Expect::default()
        };
        let now_s = 1_764_000_000i64;
        let body = |at: &str| {
            format!(r#"{{"status":"online","sync":{{"status":"completed","finished_at":{at}}}}}"#)
        };
        let c = run_with(&answer(200, &body(&format!("{}", now_s - 60))), &e, None, 1);
        assert_eq!(c.outcome, Outcome::Online);
        assert_eq!(
            c.sync,
            Some(SyncSeen {
                status: Some("completed".into()),
                finished_at: Some((now_s - 60) * 1000)
            })
        );
        // RFC 3339 and milliseconds read the same.
        let c = run_with(&answer(200, &body("\"2025-11-24T15:59:00Z\"")), &e, None, 1);
        assert_eq!(c.sync.unwrap().finished_at, Some((now_s - 60) * 1000));
        let c = run_with(
            &answer(200, &body(&format!("{}", (now_s - 60) * 1000))),
            &e,
            None,
            1,
        );
        assert_eq!(c.sync.unwrap().finished_at, Some((now_s - 60) * 1000));
        // Older than max_age: degraded, stale_sync.
        let c = run_with(
            &answer(200, &body(&format!("{}", now_s - 7201))),
            &e,
            None,
            1,
        );
        assert_eq!(
            (c.outcome, kind(&c)),
            (Outcome::Degraded, Some(ErrorKind::StaleSync))
        );
        // Staleness never hides a failure.
        let c = run_with(
            &answer(503, &body(&format!("{}", now_s - 9999))),
            &e,
            None,
            1,
        );
        assert_eq!(c.outcome, Outcome::Offline);
        // No sync object: nothing seen, nothing stale.
        let c = run_with(&answer(200, r#"{"status":"online"}"#), &e, None, 1);
        assert_eq!(c.outcome, Outcome::Online);
        assert_eq!(c.sync, Some(SyncSeen::default()));
    }

    #[test]
    fn binary_garbage_is_invalid_not_a_panic() {
        let a = Ok(Answer {
            status: 200,
            retry_after: None,
            body: vec![0xff, 0xfe, 0, 1, 2],
            truncated: false,
        });
        assert_eq!(run(&a).outcome, Outcome::Invalid);
    }
}
