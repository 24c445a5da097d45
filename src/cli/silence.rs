//! `connwatch silence`.

use crate::model::{rfc3339, UnixMs};
use crate::store::silences::{Silence, SilenceView};

fn targets(s: &Silence) -> String {
    match &s.connections {
        None => "every connection".into(),
        Some(c) => c.join(", "),
    }
}

/// "sil_…: erp-prod silenced until 2026-12-02T10:00:00.000Z (upgrade)".
pub fn added(s: &Silence) -> String {
    format!(
        "{}: {} silenced until {} ({})",
        s.id,
        targets(s),
        rfc3339(s.ends_ms),
        s.reason
    )
}

pub fn render(list: &[SilenceView], now: UnixMs) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            let s = &v.silence;
            let state = if v.active {
                format!("ends {}", super::until(s.ends_ms, now))
            } else if let Some(e) = s.ended_ms {
                format!("ended {}", super::ago(e, now))
            } else {
                format!("over {}", super::ago(s.ends_ms, now))
            };
            vec![
                s.id.clone(),
                targets(s),
                state,
                s.created_by.clone(),
                s.reason.clone(),
            ]
        })
        .collect();
    super::table(&["ID", "CONNECTIONS", "STATE", "BY", "REASON"], &rows)
}
