//! `connwatch status`.

use crate::store::query::StatusRow;

/// The daemon line, then the table.
pub fn render(
    rows: &[StatusRow],
    sources: &[crate::store::query::SourceRow],
    running: &crate::store::daemon_row::Running,
    now: crate::model::UnixMs,
) -> String {
    let mut out = format!("{}\n{}", running.describe(now), table(rows, now));
    for s in sources {
        out.push_str(&format!(
            "discovery {:?}: {} connections, refreshed {}",
            s.source,
            s.connections,
            s.refreshed_ms
                .map(|t| super::ago(t, now))
                .unwrap_or_else(|| "never".into())
        ));
        if let Some((since, why)) = &s.failing {
            out.push_str(&format!(
                "; FAILING since {} ({why}), keeping the last good set",
                super::ago(*since, now)
            ));
        }
        if let Some(h) = &s.held {
            out.push_str(&format!("; SHRINK HELD: {h}"));
        }
        out.push('\n');
    }
    out
}

fn table(rows: &[StatusRow], now: crate::model::UnixMs) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let err = r
                .last_error
                .as_ref()
                .map(|e| format!("{}: {}", e.kind, e.message))
                .unwrap_or_default();
            let next = match (r.next_probe_ms, r.next_probe_reason.as_str()) {
                (_, "paused_by_parent") => "paused: parent failing".to_string(),
                (_, "daemon_not_running") => "- (not running)".to_string(),
                (Some(t), "cadence") => super::until(t, now),
                (Some(t), why) => format!("{} ({why})", super::until(t, now)),
                (None, why) => why.to_string(),
            };
            let mut health = r.health.clone();
            if r.flapping {
                health.push_str(" (flapping)");
            }
            for n in &r.notes {
                health.push_str(&format!(" ({})", n.replace('_', " ")));
            }
            vec![
                r.id.clone(),
                r.name.clone().unwrap_or_else(|| "-".into()),
                r.origin.clone().unwrap_or_else(|| "file".into()),
                health,
                r.circuit.clone(),
                r.since_ms
                    .map(|s| super::ago(s, now))
                    .unwrap_or_else(|| "-".into()),
                r.last_outcome.clone().unwrap_or_else(|| "-".into()),
                r.last_probe_ms
                    .map(|s| super::ago(s, now))
                    .unwrap_or_else(|| "never".into()),
                next,
                r.resolve_within_s
                    .map(|s| super::until(now + s * 1000, now).replace("in ", ""))
                    .unwrap_or_else(|| "-".into()),
                match (&r.suppressed, &r.silence) {
                    (Some(s), Some(sil)) if s == "silenced" => {
                        format!("silenced (ends {})", super::until(sil.ends_ms, now))
                    }
                    (Some(s), _) => s.clone(),
                    (None, _) => "-".into(),
                },
                scopes(r),
                shorten(&err, 60),
            ]
        })
        .collect();
    super::table(
        &[
            "ID",
            "NAME",
            "SOURCE",
            "HEALTH",
            "CIRCUIT",
            "SINCE",
            "LAST OUTCOME",
            "LAST PROBE",
            "NEXT PROBE",
            "RESOLVES WITHIN",
            "HELD",
            "SCOPES",
            "LAST ERROR",
        ],
        &body,
    )
}

/// "-" without scopes; "3 ok"; or the failing ones first: "orders:
/// permission_denied, items: offline; 1 ok".
fn scopes(r: &StatusRow) -> String {
    if r.scopes.is_empty() {
        return "-".into();
    }
    let bad: Vec<String> = r
        .scopes
        .iter()
        .filter(|s| s.failing())
        .map(|s| format!("{}: {}", s.id, s.health))
        .collect();
    let ok = r.scopes.iter().filter(|s| s.health == "online").count();
    match (bad.is_empty(), ok) {
        (true, _) => format!("{ok} ok"),
        (false, 0) => shorten(&bad.join(", "), 60),
        (false, ok) => shorten(&format!("{}; {ok} ok", bad.join(", ")), 60),
    }
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}
