//! Output of the commands other than `run`: aligned tables for people,
//! `--json` for scripts.

pub mod check;
pub mod events;
pub mod history;
pub mod manpage;
pub mod probe;
pub mod report;
pub mod silence;
pub mod status;

use crate::model::UnixMs;

/// Prints rows as columns aligned on the widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: &mut dyn Iterator<Item = &str>, out: &mut String| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            if i + 1 < widths.len() {
                l.push_str(c);
                l.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            } else {
                l.push_str(c);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied(), &mut out);
    for r in rows {
        line(&mut r.iter().map(String::as_str), &mut out);
    }
    out
}

/// "5s ago", "3m ago", "2h 5m ago", "4d ago".
pub fn ago(at: UnixMs, now: UnixMs) -> String {
    let s = (now - at).max(0) / 1000;
    if s < 60 {
        format!("{s}s ago")
    } else if s < 3600 {
        format!("{}m ago", s / 60)
    } else if s < 86_400 {
        format!("{}h {}m ago", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d ago", s / 86_400)
    }
}

/// "in 5s", "in 3m", "now".
pub fn until(at: UnixMs, now: UnixMs) -> String {
    // Rounded up: "in 1s" until it is due.
    let s = (at - now + 999).div_euclid(1000);
    if s <= 0 {
        "now".into()
    } else if s < 60 {
        format!("in {s}s")
    } else if s < 3600 {
        format!("in {}m {}s", s / 60, s % 60)
    } else {
        format!("in {}h {}m", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned() {
        let t = table(
            &["ID", "HEALTH"],
            &[
                vec!["a-long-id".into(), "online".into()],
                vec!["b".into(), "offline".into()],
            ],
        );
        assert_eq!(
            t,
            "ID         HEALTH\na-long-id  online\nb          offline\n"
        );
    }

    #[test]
    fn ages() {
        assert_eq!(ago(0, 5_000), "5s ago");
        assert_eq!(ago(0, 180_000), "3m ago");
        assert_eq!(ago(0, 7_500_000), "2h 5m ago");
        assert_eq!(ago(0, 4 * 86_400_000), "4d ago");
        assert_eq!(ago(10, 0), "0s ago");
        assert_eq!(until(5_000, 4_100), "in 1s");
        assert_eq!(until(5_000, 5_000), "now");
        assert_eq!(until(5_000, 9_000), "now");
        assert_eq!(until(200_000, 0), "in 3m 20s");
    }
}
