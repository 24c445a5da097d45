//! `connwatch status`.

use crate::store::query::StatusRow;

pub fn render(rows: &[StatusRow], now: crate::model::UnixMs) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let err = r
                .last_error
                .as_ref()
                .map(|e| format!("{}: {}", e.kind, e.message))
                .unwrap_or_default();
            vec![
                r.id.clone(),
                r.health.clone(),
                r.circuit.clone(),
                r.since_ms
                    .map(|s| super::ago(s, now))
                    .unwrap_or_else(|| "-".into()),
                r.last_outcome.clone().unwrap_or_else(|| "-".into()),
                r.last_probe_ms
                    .map(|s| super::ago(s, now))
                    .unwrap_or_else(|| "never".into()),
                shorten(&err, 60),
            ]
        })
        .collect();
    super::table(
        &[
            "ID",
            "HEALTH",
            "CIRCUIT",
            "SINCE",
            "LAST OUTCOME",
            "LAST PROBE",
            "LAST ERROR",
        ],
        &body,
    )
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}
