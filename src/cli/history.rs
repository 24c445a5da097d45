//! `connwatch history`.

use crate::store::query::HistoryItem;

pub fn render(items: &[HistoryItem]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| match i {
            HistoryItem::Probe {
                at,
                outcome,
                latency_ms,
                error,
                ..
            } => vec![
                at.clone(),
                "probe".into(),
                outcome.to_string(),
                format!("{latency_ms} ms"),
                error
                    .as_ref()
                    .map(|e| format!("{}: {}", e.kind, e.message))
                    .unwrap_or_default(),
            ],
            HistoryItem::OnlineRun {
                at,
                until,
                count,
                latency_ms_min,
                latency_ms_avg,
                latency_ms_max,
                ..
            } => vec![
                at.clone(),
                format!("{count} probes"),
                "online".into(),
                format!("{latency_ms_min}/{latency_ms_avg}/{latency_ms_max} ms"),
                format!("until {until}"),
            ],
            HistoryItem::Transition {
                at,
                previous,
                current,
                error,
                ..
            } => vec![
                at.clone(),
                "CHANGE".into(),
                format!("{previous} -> {current}"),
                String::new(),
                error
                    .as_ref()
                    .map(|e| format!("{}: {}", e.kind, e.message))
                    .unwrap_or_default(),
            ],
        })
        .collect();
    super::table(
        &["TIME", "WHAT", "OUTCOME", "LATENCY (min/avg/max)", "DETAIL"],
        &rows,
    )
}
