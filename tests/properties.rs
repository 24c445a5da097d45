//! Property tests: the parsers and the classifier never panic, whatever the
//! input, and what they reject they reject with a location.
//!
//! - the config loader on arbitrary text, on TOML-shaped text made of real
//!   keys and awkward values, on files of known sections and keys with
//!   values mostly of the right type, and on random mutations of
//!   `config.example.toml`: no panic, and every error has a line and column
//!   inside the text and prints as `file:line:col: …`; a secret expanded
//!   from `${VAR}` is never echoed in an error;
//! - the classifier on any status, `Retry-After` and body (invalid UTF-8,
//!   10,000 levels of nesting, huge error codes): no panic, and the outcome
//!   agrees with the order of precedence of PRODUCT §1;
//! - durations, `Retry-After`, `${VAR}` expansion and the cron check on
//!   arbitrary strings: no panic, and what parses round-trips.
//!
//! Case counts are modest so the file runs in seconds in a debug build; set
//! `PROPTEST_CASES` to run more.

use connwatch::classify::{classify, parse_retry_after, Answer, Attempt, Rules};
use connwatch::config::{
    check_cron, env, format_duration, parse_duration, schema, Config, ConfigErrors, Expect,
    SyncExpect,
};
use connwatch::model::{ErrorKind, Outcome, ProbeError};
use proptest::prelude::*;
use proptest::sample::Index;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const EXAMPLE: &str = include_str!("../config.example.toml");
/// A folder that does not exist: `*_file` and TLS keys find nothing there.
const CONFIG_PATH: &str = "/nonexistent-connwatch-dir/connwatch.toml";

/// 256 cases per property, or `PROPTEST_CASES`.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------- config

fn env_lookup(name: &str) -> Option<String> {
    match name {
        "X" => Some("x-value".into()),
        "EMPTY" => Some(String::new()),
        "SECRET" => Some("sEcReT-MaRkEr-0123456789".into()),
        _ => None,
    }
}

/// Parses `text`; on error, checks that every error points inside the text.
fn check_config(text: &str) -> Result<(), TestCaseError> {
    let path = Path::new(CONFIG_PATH);
    match Config::parse(path, text, &env_lookup) {
        Ok(_) => Ok(()),
        Err(errors) => check_errors(text, &errors),
    }
}

fn check_errors(text: &str, errors: &ConfigErrors) -> Result<(), TestCaseError> {
    prop_assert!(!errors.0.is_empty(), "Err with no error");
    let lines = text.split('\n').count();
    let shown = errors.to_string();
    for e in &errors.0 {
        prop_assert!(
            e.line >= 1 && e.line <= lines,
            "line {} outside 1..={lines}: {e}",
            e.line
        );
        let width = text
            .split('\n')
            .nth(e.line - 1)
            .unwrap_or("")
            .chars()
            .count();
        prop_assert!(
            e.column >= 1 && e.column <= width + 1,
            "column {} outside 1..={} on line {}: {e}",
            e.column,
            width + 1,
            e.line
        );
        prop_assert!(!e.message.trim().is_empty(), "empty message: {e}");
        let at = format!("{CONFIG_PATH}:{}:{}: ", e.line, e.column);
        prop_assert!(e.to_string().starts_with(&at), "{e} does not start {at}");
        prop_assert!(shown.contains(&format!("error: {at}")), "{shown}");
    }
    Ok(())
}

/// A TOML basic string holding `s`.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Values that sit near the edges of what the loader accepts.
const VALUES: &[&str] = &[
    "\"\"",
    "\"30s\"",
    "\"0s\"",
    "\"-5s\"",
    "\"30\"",
    "\"10 parsecs\"",
    "\"1h 30m\"",
    "\"99999999999999999999999s\"",
    "\"3650d\"",
    "0",
    "1",
    "-1",
    "65536",
    "9223372036854775807",
    "-9223372036854775808",
    "1.5",
    "0.5",
    "nan",
    "inf",
    "-inf",
    "true",
    "[]",
    "[\"a\"]",
    "[\"*\"]",
    "[\"connection.*\"]",
    "[200, 600]",
    "[[1]]",
    "{}",
    "{ a = 1 }",
    "{ failure_threshold = 0, failure_rate = 2.0 }",
    "{ json_pointer = \"status\" }",
    "{ sync = { max_age = \"1h\" } }",
    "{ X-Tenant = \"${X}\" }",
    "{ \"X Bad\" = \"v\" }",
    "\"${X}\"",
    "\"${NOPE}\"",
    "\"${\"",
    "\"$${X}\"",
    "\"${SECRET}\"",
    "\"http://127.0.0.1:1/status\"",
    "\"https://u:${SECRET}@h.example/s?token=${SECRET}\"",
    "\"ftp://h/\"",
    "\"http://\"",
    "\"127.0.0.1:9185\"",
    "\"0.0.0.0:9185\"",
    "\"[::1]:1\"",
    "\"0 */5 * * * *\"",
    "\"0 0 0 31 2 *\"",
    "\"* * * * *\"",
    "\"/status\"",
    "\"12 XB\"",
    "\"64KiB\"",
    "\"17MiB\"",
    "\"GET\"",
    "\"GE T\"",
    "\"webhook\"",
    "\"log\"",
    "\"pagerduty\"",
    "\"alertmanager\"",
    "\"command\"",
    "\"whsec_c2VjcmV0\"",
    "\"a\"",
    "\"b\"",
    "\"json\"",
    "\"info\"",
    "\"é\"",
    "'literal'",
    "\"\"\"multi\nline\"\"\"",
    "1979-05-27T07:32:00Z",
];

const HEADERS: &[&str] = &[
    "[daemon]",
    "[defaults]",
    "[[connection]]",
    "[[sink]]",
    "[[maintenance]]",
    "[sandbox]",
    "[connection]",
    "[defaults.breaker]",
    "[defaults.expect]",
    "[defaults.headers]",
    "[[connection.expect]]",
    "[nonsense]",
];

/// Every key the schema knows, plus a few it does not.
fn all_keys() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = [
        schema::TOP,
        schema::DAEMON,
        schema::CONNECTION,
        schema::MAINTENANCE,
        schema::SANDBOX,
        schema::BREAKER,
        schema::EXPECT,
        schema::SYNC,
    ]
    .iter()
    .flat_map(|fields| fields.iter().map(|f| f.name))
    .collect();
    keys.extend(sink_keys());
    keys.extend([
        "intervall",
        "breaker.window",
        "expect.status",
        "a.b.c",
        "\"\"",
    ]);
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// One line of TOML-shaped text.
fn toml_line() -> impl Strategy<Value = String> {
    let keys = all_keys();
    prop_oneof![
        3 => prop::sample::select(HEADERS).prop_map(str::to_string),
        8 => (prop::sample::select(keys.clone()), prop::sample::select(VALUES))
            .prop_map(|(k, v)| format!("{k} = {v}")),
        2 => (prop::sample::select(keys.clone()), any::<String>())
            .prop_map(|(k, v)| format!("{k} = {}", quoted(&v))),
        1 => (prop::sample::select(keys.clone()), any::<i64>())
            .prop_map(|(k, v)| format!("{k} = {v}")),
        1 => (prop::sample::select(keys), any::<f64>())
            .prop_map(|(k, v)| format!("{k} = {v:?}")),
        1 => "\\PC{0,40}",
    ]
}

/// Values of one TOML type, near the edges of what the loader accepts.
fn pool(key: &str) -> &'static [&'static str] {
    const DURATIONS: &[&str] = &[
        "\"30s\"",
        "\"0s\"",
        "\"-5s\"",
        "\"30\"",
        "\"10 parsecs\"",
        "\"1h 30m\"",
        "\"100ms\"",
        "\"99999999999999999999999s\"",
        "\"3650d\"",
        "\"${X}\"",
        "\"${NOPE}\"",
        "\"\"",
        "\"7d\"",
    ];
    const INTS: &[&str] = &[
        "0",
        "1",
        "2",
        "3",
        "10",
        "100",
        "1001",
        "-1",
        "9223372036854775807",
    ];
    const FLOATS: &[&str] = &[
        "0.0", "0.5", "1.0", "1.5", "25.0", "50.0", "100.0", "100.5", "nan", "inf", "-0.0",
    ];
    const BOOLS: &[&str] = &["true", "false"];
    const LISTS: &[&str] = &[
        "[]",
        "[\"a\"]",
        "[\"b\"]",
        "[\"s\"]",
        "[\"*\"]",
        "[\"connection.*\"]",
        "[\"ok\", \"OK\"]",
        "[\"connection.status_change\"]",
        "[\"${X}\"]",
        "[\"${NOPE}\"]",
        "[\"\"]",
    ];
    const TABLES: &[&str] = &[
        "{}",
        "{ X-Tenant = \"${X}\" }",
        "{ \"X Bad\" = \"v\" }",
        "{ X-A = \"a\\nb\" }",
        "{ failure_threshold = 0, failure_rate = 2.0 }",
        "{ window = 5, min_probes = 10 }",
        "{ open_for = \"5m\", max_open_for = \"1m\" }",
        "{ success_threshold = 4 }",
        "{ json_pointer = \"status\" }",
        "{ json_pointer = \"\" }",
        "{ status = [200, 600] }",
        "{ status = [] }",
        "{ online = [\"ok\"], offline = [\"ok\"] }",
        "{ sync = { max_age = \"1h\" } }",
        "{ sync = { status = \"s\", failed = [] } }",
    ];
    const SIZES: &[&str] = &[
        "0",
        "1",
        "65536",
        "16777217",
        "\"64KiB\"",
        "\"12 XB\"",
        "\"17MiB\"",
        "\"-1\"",
        "\"1.5MiB\"",
    ];
    const STRINGS: &[&str] = &[
        "\"\"",
        "\"a\"",
        "\"b\"",
        "\"s\"",
        "\"a b\"",
        "\"${X}\"",
        "\"${NOPE}\"",
        "\"${\"",
        "\"$${X}\"",
        "\"http://127.0.0.1:1/status\"",
        "\"https://u:p@h.example/s?token=t\"",
        "\"ftp://h/\"",
        "\"http://\"",
        "\"127.0.0.1:9185\"",
        "\"0.0.0.0:9185\"",
        "\"[::1]:1\"",
        "\"0 */5 * * * *\"",
        "\"0 0 0 31 2 *\"",
        "\"* * * * *\"",
        "\"/status\"",
        "\"GET\"",
        "\"GE T\"",
        "\"webhook\"",
        "\"log\"",
        "\"pagerduty\"",
        "\"alertmanager\"",
        "\"slack\"",
        "\"command\"",
        "\"email\"",
        "\"whsec_c2VjcmV0\"",
        "\"whsec_\"",
        "\"json\"",
        "\"xml\"",
        "\"info\"",
        "\"[{\"",
        "\"no-such-file\"",
        "\"sixteen-chars-ok\"",
    ];
    match key {
        "interval"
        | "timeout"
        | "degraded_after"
        | "auth_interval"
        | "retry_after_max"
        | "rate_limit_backoff_max"
        | "retention"
        | "scheduler_tick"
        | "history_flush"
        | "shutdown_timeout"
        | "max_age"
        | "retry_max"
        | "resend_interval"
        | "remind_every"
        | "duration" => DURATIONS,
        "max_concurrent_probes" => INTS,
        "flap_high" | "flap_low" => FLOATS,
        "tls_insecure" | "enabled" => BOOLS,
        "sinks" | "events" | "connections" => LISTS,
        "headers" | "labels" | "expect" | "breaker" => TABLES,
        "max_body" => SIZES,
        _ => STRINGS,
    }
}

/// A value for `key`: mostly of its type, sometimes anything.
fn value_for(key: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        60 => prop::sample::select(pool(key)).prop_map(str::to_string),
        1 => prop::sample::select(VALUES).prop_map(str::to_string),
        1 => any::<String>().prop_map(|v| quoted(&v)),
        1 => any::<i64>().prop_map(|v| v.to_string()),
    ]
}

fn names(fields: &[schema::Field]) -> Vec<&'static str> {
    fields.iter().map(|f| f.name).collect()
}

/// Every key a `[[sink]]` may have: the common ones and each kind's.
fn sink_keys() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = schema::SINK_COMMON
        .iter()
        .chain(connwatch::sinks::KINDS.iter().flat_map(|k| k.keys.iter()))
        .map(|f| f.name)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// `header`, then some of `keys` (distinct), each with a value.
fn section(header: &'static str, keys: Vec<&'static str>) -> impl Strategy<Value = String> {
    let n = keys.len().min(6);
    prop::sample::subsequence(keys, 0..=n)
        .prop_flat_map(|keys| {
            let values: Vec<_> = keys.iter().map(|k| value_for(k)).collect();
            (Just(keys), values)
        })
        .prop_map(move |(keys, values)| {
            let mut out = format!("{header}\n");
            for (k, v) in keys.iter().zip(values) {
                out.push_str(&format!("{k} = {v}\n"));
            }
            out
        })
}

/// A file of known sections and keys with values mostly of the right type,
/// so that most files get past the TOML, unknown-key and type steps and
/// into validation.
fn known_keys_file() -> impl Strategy<Value = String> {
    let repeated = prop_oneof![
        section("[[connection]]", names(schema::CONNECTION)),
        section(
            "[[connection]]",
            vec!["id", "url", "depends_on", "sinks", "interval", "timeout"]
        ),
        section("[[sink]]", sink_keys()),
        section(
            "[[sink]]",
            vec![
                "id",
                "kind",
                "url",
                "secret",
                "routing_key",
                "command",
                "path"
            ]
        ),
        section("[[maintenance]]", names(schema::MAINTENANCE)),
    ];
    (
        prop::option::of(section("[daemon]", names(schema::DAEMON))),
        prop::option::of(section("[defaults]", names(schema::DEFAULTS))),
        prop::option::of(section("[sandbox]", names(schema::SANDBOX))),
        prop::collection::vec(repeated, 0..6),
    )
        .prop_map(|(daemon, defaults, sandbox, rest)| {
            let mut out = String::new();
            for s in [daemon, defaults, sandbox].into_iter().flatten() {
                out.push_str(&s);
                out.push('\n');
            }
            out.push_str(BASE_CONNECTION);
            out.push('\n');
            out.push_str(&rest.join("\n"));
            out
        })
}

/// A small valid file that TOML-shaped lines are appended to, so that
/// validation (not only syntax) is reached.
const BASE: &str = "[daemon]\nretention = \"7d\"\n\n[[connection]]\nid = \"a\"\nurl = \"http://127.0.0.1:1/status\"\n";
const BASE_CONNECTION: &str = "[[connection]]\nid = \"a\"\nurl = \"http://127.0.0.1:1/status\"\n";

/// An edit of a text: flip a byte, insert bytes or a snippet, delete a
/// range; or, keeping the TOML valid more often, replace the value of a
/// `key = value` line, drop a line or repeat one.
#[derive(Debug, Clone)]
enum Edit {
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Snippet(Index, &'static str),
    Delete(Index, usize),
    Value(Index, &'static str),
    DropLine(Index),
    RepeatLine(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => (any::<Index>(), prop::sample::select(VALUES)).prop_map(|(i, s)| Edit::Snippet(i, s)),
        1 => (any::<Index>(), prop::sample::select(HEADERS)).prop_map(|(i, s)| Edit::Snippet(i, s)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        4 => (any::<Index>(), prop::sample::select(VALUES)).prop_map(|(i, v)| Edit::Value(i, v)),
        1 => any::<Index>().prop_map(Edit::DropLine),
        1 => any::<Index>().prop_map(Edit::RepeatLine),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut b = text.as_bytes().to_vec();
    for e in edits {
        let len = b.len().max(1);
        match e {
            Edit::Flip(i, x) => {
                if !b.is_empty() {
                    let at = i.index(len);
                    b[at] ^= x | 1;
                }
            }
            Edit::Insert(i, bytes) => {
                let at = i.index(len + 1).min(b.len());
                b.splice(at..at, bytes.iter().copied());
            }
            Edit::Snippet(i, s) => {
                let at = i.index(len + 1).min(b.len());
                b.splice(at..at, s.bytes());
            }
            Edit::Delete(i, n) => {
                let at = i.index(len).min(b.len());
                let end = (at + n).min(b.len());
                b.drain(at..end);
            }
            Edit::Value(..) | Edit::DropLine(_) | Edit::RepeatLine(_) => {
                let text = String::from_utf8_lossy(&b).into_owned();
                let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
                let valued: Vec<usize> = (0..lines.len())
                    .filter(|&n| lines[n].contains(" = ") && !lines[n].starts_with('#'))
                    .collect();
                match e {
                    Edit::Value(i, v) if !valued.is_empty() => {
                        let n = valued[i.index(valued.len())];
                        let key = lines[n].split(" = ").next().unwrap_or("").to_string();
                        lines[n] = format!("{key} = {v}");
                    }
                    Edit::DropLine(i) => {
                        lines.remove(i.index(lines.len()));
                    }
                    Edit::RepeatLine(i) => {
                        let n = i.index(lines.len());
                        lines.insert(n, lines[n].clone());
                    }
                    _ => {}
                }
                b = lines.join("\n").into_bytes();
            }
        }
    }
    // The loader takes text; invalid UTF-8 is the file reader's business.
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn the_example_config_is_valid() {
    // The base of the mutation property: unmutated, it loads.
    Config::parse(Path::new(CONFIG_PATH), EXAMPLE, &env_lookup).expect("config.example.toml");
    Config::parse(Path::new(CONFIG_PATH), BASE, &env_lookup).expect("BASE");
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_loader_on_arbitrary_text(text in "\\PC{0,300}") {
        check_config(&text)?;
    }

    #[test]
    fn config_loader_on_arbitrary_chars(text in any::<String>()) {
        check_config(&text)?;
    }

    #[test]
    fn config_loader_on_toml_shaped_text(lines in prop::collection::vec(toml_line(), 0..24)) {
        let text = format!("{BASE}{}\n", lines.join("\n"));
        check_config(&text)?;
    }

    #[test]
    fn config_loader_on_files_of_known_keys(text in known_keys_file()) {
        check_config(&text)?;
    }

    #[test]
    fn config_loader_on_mutations_of_the_example(edits in prop::collection::vec(edit(), 1..6)) {
        check_config(&apply(EXAMPLE, &edits))?;
    }

    /// `${SECRET}` in a secret-bearing place never shows up in an error,
    /// whatever else is wrong with the file.
    #[test]
    fn secrets_are_never_echoed(
        place in 0usize..5,
        junk in prop::collection::vec(toml_line(), 0..6),
    ) {
        let secret_line = match place {
            0 => "headers = { Authorization = \"Bearer ${SECRET}\\n\" }",
            1 => "url = \"http://u:${SECRET}@\"",
            2 => "url = \"http://h.example:99999/?token=${SECRET}\"",
            3 => "headers = { Authorization = \"${SECRET}\" }\nmethod = \"GE T\"",
            _ => "url = \"gopher://h/?token=${SECRET}\"",
        };
        // Junk that itself puts ${SECRET} in a non-secret key (an id, a
        // duration) would be echoed by design: leave it out.
        let junk: Vec<String> = junk.into_iter().filter(|l| !l.contains("SECRET")).collect();
        let text = format!(
            "[daemon]\nadmin_token = \"${{SECRET}}\"\n\n[[sink]]\nid = \"p\"\nkind = \"pagerduty\"\nrouting_key = \"${{SECRET}}\"\n\n[[connection]]\nid = \"a\"\n{secret_line}\n{}\n",
            junk.join("\n")
        );
        if let Err(e) = Config::parse(Path::new(CONFIG_PATH), &text, &env_lookup) {
            let shown = e.to_string();
            prop_assert!(!shown.contains("MaRkEr"), "secret echoed:\n{shown}\nfor\n{text}");
        }
    }
}

// ------------------------------------------------------------ classifier

fn outcome_body() -> impl Strategy<Value = Vec<u8>> {
    let words = prop::sample::select(vec![
        "online",
        "OK",
        "degraded",
        "down",
        "auth_required",
        "permission_denied",
        "weird",
        "",
    ]);
    let codes = prop::sample::select(vec![
        "RATE_LIMIT_EXCEEDED",
        "AUTHENTICATION_FAILED",
        "credentials_expired",
        "PERMISSION_DENIED",
        "insufficient_scope",
        "OTHER",
    ]);
    prop_oneof![
        // Anything at all, including invalid UTF-8.
        3 => prop::collection::vec(any::<u8>(), 0..256),
        // Deep nesting (serde_json stops at 128 levels).
        1 => (0usize..12_000, prop::sample::select(vec!["[", "{\"status\":", "{\"error\":{\"code\":"]))
            .prop_map(|(n, open)| open.repeat(n).into_bytes()),
        1 => Just(b"[".repeat(10_000)),
        // Status-endpoint shaped, with every field in play.
        4 => (words, codes, any::<bool>(), any::<f64>(), "\\PC{0,16}", 0usize..2000)
            .prop_map(|(w, c, nested, t, finished, long)| {
                let code = if long > 1000 { "X".repeat(long * 50) } else { c.to_string() };
                let err = if nested {
                    format!("\"error\":{{\"code\":{}}}", quoted(&code))
                } else {
                    format!("\"code\":{}", quoted(&code))
                };
                format!(
                    "{{\"status\":{},{err},\"sync\":{{\"status\":\"failed\",\"finished_at\":{}}},\"t\":{}}}",
                    quoted(w),
                    if long % 2 == 0 { quoted(&finished) } else { format!("{t:?}") },
                    quoted(&finished),
                )
                .into_bytes()
            }),
    ]
}

fn expect_strategy() -> impl Strategy<Value = Expect> {
    (
        prop::option::of(prop::collection::vec(any::<u16>(), 0..4)),
        prop::option::of(prop_oneof![Just("/status".to_string()), "/\\PC{0,8}"]),
        any::<bool>(),
        prop::option::of(0u64..u64::MAX / 4_000_000_000),
    )
        .prop_map(|(status, json_pointer, sync, max_age)| Expect {
            status,
            json_pointer,
            sync: sync.then(|| SyncExpect {
                status: "/sync/status".into(),
                finished_at: "/sync/finished_at".into(),
                max_age: max_age.map(Duration::from_millis),
                failed: vec!["failed".into()],
            }),
            ..Expect::default()
        })
}

fn attempt_strategy() -> impl Strategy<Value = Attempt> {
    let status = prop_oneof![
        6 => 100u16..=599,
        1 => Just(429u16),
        1 => prop::sample::select(vec![401u16, 403]),
        1 => any::<u16>(),
    ];
    let retry_after = prop::option::of(prop_oneof![
        any::<String>(),
        "[0-9]{0,40}",
        " ?[0-9]{1,5} ?",
        // Up to the last second of 9999, the end of what HTTP-dates can say.
        (0u64..253_402_300_800)
            .prop_map(|s| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(s))),
    ]);
    prop_oneof![
        9 => (status, retry_after, outcome_body(), any::<bool>()).prop_map(|(status, retry_after, body, truncated)| {
            Ok(Answer { status, retry_after, body, truncated })
        }),
        1 => (prop::sample::select(ErrorKind::ALL.to_vec()), "\\PC{0,20}").prop_map(|(kind, message)| {
            Err(ProbeError { kind, message, http_status: None })
        }),
    ]
}

fn now_strategy() -> impl Strategy<Value = SystemTime> {
    // From the epoch to about 2096.
    (0u64..4_000_000_000_000).prop_map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn classifier_always_returns_a_consistent_outcome(
        attempt in attempt_strategy(),
        expect in expect_strategy(),
        latency_ns in any::<u64>(),
        degraded_after_ms in prop::option::of(0u64..10_000_000),
        max_body in 1usize..(16 << 20),
        now in now_strategy(),
    ) {
        let rules = Rules {
            expect: &expect,
            degraded_after: degraded_after_ms.map(Duration::from_millis),
            max_body,
        };
        let c = classify(&attempt, Duration::from_nanos(latency_ns), rules, now);

        // Online, and only online, comes without an error.
        prop_assert_eq!(c.outcome == Outcome::Online, c.error.is_none(), "{:?}", c);
        if c.retry_after.is_some() {
            prop_assert_eq!(c.outcome, Outcome::RateLimited);
        }
        if let Some(e) = &c.error {
            // Bounded, whatever the endpoint sends.
            prop_assert!(e.message.len() <= 512, "message of {} bytes", e.message.len());
        }
        match &attempt {
            Err(e) => {
                prop_assert_eq!(c.outcome, Outcome::Unreachable);
                prop_assert_eq!(c.error.as_ref().map(|x| x.kind), Some(e.kind));
            }
            Ok(a) => {
                prop_assert_eq!(c.http_status, Some(a.status));
                if a.status == 429 {
                    prop_assert_eq!(c.outcome, Outcome::RateLimited);
                }
                if a.status == 401 {
                    prop_assert!(matches!(c.outcome, Outcome::RateLimited | Outcome::AuthRequired), "{:?}", c.outcome);
                }
                // 403: the credentials work unless a code says they expired.
                if a.status == 403 {
                    prop_assert!(
                        matches!(c.outcome, Outcome::RateLimited | Outcome::AuthRequired | Outcome::PermissionDenied),
                        "{:?}", c.outcome
                    );
                }
                if a.status >= 500 && a.status != 429 {
                    prop_assert!(
                        matches!(c.outcome, Outcome::RateLimited | Outcome::AuthRequired | Outcome::PermissionDenied | Outcome::Offline),
                        "{:?}", c.outcome
                    );
                }
                if a.truncated {
                    // A body over max_body is never online.
                    prop_assert!(c.outcome != Outcome::Online);
                }
            }
        }
    }

    #[test]
    fn retry_after_never_panics(value in any::<String>(), now in now_strategy()) {
        let _ = parse_retry_after(&value, now);
    }

    #[test]
    fn retry_after_reads_any_delta_seconds(n in any::<u64>(), pad in " {0,2}", now in now_strategy()) {
        let v = format!("{pad}{n}{pad}");
        prop_assert_eq!(parse_retry_after(&v, now), Some(Duration::from_secs(n)));
        // Longer than u64: saturated, never an error.
        let huge = format!("{n}0000000000000000000000");
        prop_assert!(parse_retry_after(&huge, now).is_some());
    }

    #[test]
    fn retry_after_reads_http_dates(at_s in 0u64..253_402_300_800, now_s in 0u64..4_000_000_000) {
        let at = UNIX_EPOCH + Duration::from_secs(at_s);
        let now = UNIX_EPOCH + Duration::from_secs(now_s);
        let want = at.duration_since(now).unwrap_or(Duration::ZERO);
        prop_assert_eq!(parse_retry_after(&httpdate::fmt_http_date(at), now), Some(want));
    }
}

#[test]
fn classifier_survives_deep_nesting() {
    let expect = Expect::default();
    let rules = Rules {
        expect: &expect,
        degraded_after: None,
        max_body: 1 << 20,
    };
    for open in ["[", "{\"a\":", "{\"status\":", "{\"error\":"] {
        let body = open.repeat(10_000).into_bytes();
        let a = Ok(Answer {
            status: 200,
            retry_after: None,
            body,
            truncated: false,
        });
        let c = classify(&a, Duration::from_millis(1), rules, SystemTime::now());
        assert_eq!(c.outcome, Outcome::Invalid, "{open}");
    }
}

#[test]
fn a_huge_error_code_on_401_gives_a_short_message() {
    // Found by the property above: the code was copied whole into the
    // error message (and from there into the database and events).
    let expect = Expect::default();
    let rules = Rules {
        expect: &expect,
        degraded_after: None,
        max_body: 1 << 20,
    };
    let body = format!("{{\"code\":\"{}\"}}", "x".repeat(100_000)).into_bytes();
    let a = Ok(Answer {
        status: 401,
        retry_after: None,
        body,
        truncated: false,
    });
    let c = classify(&a, Duration::from_millis(1), rules, SystemTime::now());
    assert_eq!(c.outcome, Outcome::AuthRequired);
    let m = c.error.unwrap().message;
    assert_eq!(m, format!("HTTP 401, {}", "X".repeat(64)));
}

// ------------------------------------------- durations, ${VAR} and cron

#[test]
fn a_cron_field_with_an_empty_list_item_is_rejected() {
    // Found by the `durations` fuzz target: croner reads "," as an empty
    // set, so the schedule never fires and looking for its next time took
    // from seconds to over a minute of CPU.
    for e in [
        "051 , 0 * * *",
        ", * * * * *",
        "0 , * * * *",
        "0 0 1,,2 * * *",
        "0 0 0 * * 1,",
    ] {
        let err = check_cron(e).unwrap_err();
        assert!(err.contains("empty list item"), "{e}: {err}");
    }
    assert!(check_cron("0 0 1,2 * * *").is_ok());
}

fn duration_text() -> impl Strategy<Value = String> {
    let unit = prop::sample::select(vec![
        "", "ns", "us", "µs", "ms", "s", "sec", "m", "min", "h", "hours", "d", "days", "w",
        "weeks", "M", "months", "y", "years", "parsecs", "XB",
    ]);
    prop::collection::vec(("-?[0-9]{0,24}(\\.[0-9]{0,3})?", " {0,2}", unit), 1..4).prop_map(
        |parts| {
            parts
                .into_iter()
                .map(|(n, sp, u)| format!("{n}{sp}{u}"))
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

fn cron_text() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("*".to_string()),
        Just("?".to_string()),
        "[0-9]{1,3}",
        "[0-9]{1,2}-[0-9]{1,2}",
        "\\*/[0-9]{1,3}",
        "[0-9]{1,2}/[0-9]{1,21}",
        "[0-9]{1,2}(,[0-9]{1,2}){1,3}",
        "[0-9]{0,2}[LW#][0-9]{0,2}",
        "(MON|tue|SUN|JAN|dec|FOO)(-(FRI|SAT))?(#[0-9])?",
        "\\PC{0,3}",
    ];
    prop::collection::vec(atom, 4..8).prop_map(|f| f.join(" "))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn durations_never_panic_and_round_trip(text in prop_oneof![any::<String>(), duration_text()]) {
        if let Ok(d) = parse_duration(&text) {
            let shown = format_duration(d);
            prop_assert_eq!(parse_duration(&shown), Ok(d), "{:?} -> {:?}", text, shown);
        }
    }

    #[test]
    fn env_expansion_never_panics(text in "[${}A-Za-z0-9_é ]{0,40}") {
        if let Err(e) = env::expand(&text, &env_lookup) {
            prop_assert!(!e.is_empty());
        }
    }

    #[test]
    fn cron_check_never_panics(text in prop_oneof![any::<String>(), cron_text()]) {
        if check_cron(&text).is_ok() {
            // What passes the check is what the scheduler runs: finding the
            // next window must not panic either.
            let now = 1_764_000_000_000;
            let _ = connwatch::maintenance::active_window_end(&text, Duration::from_secs(3600), now);
        }
    }
}
