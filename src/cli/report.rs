//! `connwatch report`: uptime, outages, MTTR, p95 latency and the error
//! budget per connection (docs/uptime.md), as a table, JSON or CSV.

use crate::store::report::{duration_text as dur, Report};

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map(|v| v.to_string()).unwrap_or_default()
}

pub fn table(rows: &[Report]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.uptime
                    .map(|u| format!("{u:.2}%"))
                    .unwrap_or_else(|| "-".into()),
                r.outages.count.to_string(),
                dur(r.outages.total_s),
                dur(r.outages.longest_s),
                r.mttr_s.map(dur).unwrap_or_else(|| "-".into()),
                r.p95_latency_ms
                    .map(|v| format!("{v} ms"))
                    .unwrap_or_else(|| "-".into()),
                dur(r.maintenance_s),
                r.budget_text().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut out = match rows.first() {
        Some(r) => format!("from {} to {}\n", r.since, r.until),
        None => "no connections\n".into(),
    };
    out.push_str(&super::table(
        &[
            "ID",
            "UPTIME",
            "OUTAGES",
            "DOWN",
            "LONGEST",
            "MTTR",
            "P95 LATENCY",
            "MAINTENANCE",
            "SLO BUDGET",
        ],
        &body,
    ));
    out
}

/// One header line, then one line per connection; seconds as numbers.
pub fn csv(rows: &[Report]) -> String {
    let mut out = String::from(
        "id,since,until,uptime,outages_count,outages_total_s,outages_longest_s,mttr_s,p95_latency_ms,measured_s,unmeasured_s,maintenance_s,slo,budget_remaining_s\n",
    );
    for r in rows {
        let fields = [
            quote(&r.id),
            r.since.clone(),
            r.until.clone(),
            r.uptime.map(|u| format!("{u:.2}")).unwrap_or_default(),
            r.outages.count.to_string(),
            r.outages.total_s.to_string(),
            r.outages.longest_s.to_string(),
            opt(&r.mttr_s),
            opt(&r.p95_latency_ms),
            r.measured_s.to_string(),
            r.unmeasured_s.to_string(),
            r.maintenance_s.to_string(),
            opt(&r.slo),
            opt(&r.budget_remaining_s),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

/// RFC 4180 quoting when needed (ids cannot need it; kept for safety).
fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
