//! Humane durations: `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"30d"`, `"1h 30m"`.

use std::time::Duration;

/// Parses a humane duration. The error is a sentence that says what is wrong.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration; write e.g. \"30s\", \"5m\", \"2h\"".into());
    }
    if t.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "duration {text:?} has no unit; write e.g. \"{t}s\" or \"{t}ms\""
        ));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!("invalid duration {text:?} ({e}); write e.g. \"500ms\", \"30s\", \"5m\", \"2h\", \"30d\"")
    })
}

/// Formats a duration the way the config writes it (`30s`, `5m`,
/// `1h 30m`, `30d`), exactly (down to `ns`); [`parse_duration`] reads it
/// back.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let mut ns = d.as_nanos();
    let mut parts = Vec::new();
    for (unit, size) in [
        ("d", 86_400_000_000_000u128),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        if ns >= size {
            parts.push(format!("{}{unit}", ns / size));
            ns %= size;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_humane_forms() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_duration(" 1h 30m "), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        for bad in ["", "30", "thirty seconds", "5 parsecs", "-5s", "1.5.2s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("duration"), "{bad:?}: {e}");
        }
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
    }

    #[test]
    fn formats_back() {
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h 30m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(
            format_duration(Duration::from_millis(90_500)),
            "1m 30s 500ms"
        );
        assert_eq!(format_duration(Duration::from_micros(40)), "40us");
        assert_eq!(format_duration(Duration::from_nanos(1)), "1ns");
        for ms in [1, 999, 60_000, 86_400_001, 3_650 * 86_400_000u64] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms}");
        }
    }
}
