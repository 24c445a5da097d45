//! Durations, `Retry-After`, `${VAR}` expansion and the cron check on
//! arbitrary strings: none may panic, and a parsed duration prints back to
//! the same value.

#![no_main]

use connwatch::classify::parse_retry_after;
use connwatch::config::{check_cron, env, format_duration, parse_duration};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, UNIX_EPOCH};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_duration(text) {
        let shown = format_duration(d);
        assert_eq!(parse_duration(&shown), Ok(d), "{text:?} -> {shown:?}");
    }
    let now = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
    let _ = parse_retry_after(text, now);
    let _ = env::expand(text, &|name| (name == "X").then(|| "x".to_string()));
    if check_cron(text).is_ok() {
        // What passes the check is what the scheduler runs.
        let _ = connwatch::maintenance::active_window_end(
            text,
            Duration::from_secs(3600),
            1_764_000_000_000,
        );
    }
});
