//! `connwatch probe`: one probe now, classified; writes nothing.

use crate::classify::{classify, Rules};
use crate::config::Connection;
use crate::model::Classified;
use crate::probe::Prober;
use serde_json::json;
use std::time::SystemTime;

/// One probe: its classification and what the body held at each pointer
/// the connection reads.
pub struct Probed {
    pub classified: Classified,
    pub read: Vec<(String, Option<String>)>,
}

/// Probes `conn` once.
pub async fn once(conn: &Connection) -> Result<Probed, crate::probe::SetupError> {
    let prober = Prober::new(&[conn], &Default::default())?;
    let report = prober.request(conn).send().await;
    let rules = Rules {
        expect: &conn.expect,
        degraded_after: conn.degraded_after,
        max_body: conn.max_body,
    };
    Ok(Probed {
        classified: classify(&report.attempt, report.latency, rules, SystemTime::now()),
        read: crate::classify::pointers(&report.attempt, &conn.expect),
    })
}

pub fn render(id: &str, url: &str, p: &Probed, as_json: bool) -> String {
    let c = &p.classified;
    if as_json {
        let read: serde_json::Map<String, serde_json::Value> = p
            .read
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.clone().map_or(serde_json::Value::Null, Into::into),
                )
            })
            .collect();
        let v = json!({
            "id": id,
            "url": url,
            "outcome": c.outcome,
            "http_status": c.http_status,
            "latency_ms": c.latency.as_millis() as u64,
            "error": c.error,
            "retry_after_ms": c.retry_after.map(|d| d.as_millis() as u64),
            "read": read,
        });
        return format!("{v}\n");
    }
    let mut s = format!("{id}: {}", c.outcome);
    if let Some(st) = c.http_status {
        s.push_str(&format!(" (HTTP {st})"));
    }
    s.push_str(&format!(" in {} ms\n", c.latency.as_millis()));
    s.push_str(&format!("  url: {url}\n"));
    if let Some(e) = &c.error {
        s.push_str(&format!("  error: {}: {}\n", e.kind, e.message));
    }
    if let Some(r) = c.retry_after {
        s.push_str(&format!("  retry after: {} s\n", r.as_secs()));
    }
    for (pointer, value) in &p.read {
        match value {
            Some(v) => s.push_str(&format!("  read {pointer}: {v}\n")),
            None => s.push_str(&format!("  read {pointer}: absent from the body\n")),
        }
    }
    s
}
