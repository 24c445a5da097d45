//! `connwatch probe`: one probe now, classified; writes nothing.

use crate::classify::{classify, Rules};
use crate::config::Connection;
use crate::model::Classified;
use crate::probe::Prober;
use serde_json::json;
use std::time::SystemTime;

/// Probes `conn` once.
pub async fn once(conn: &Connection) -> Result<Classified, crate::probe::SetupError> {
    let prober = Prober::new(&[conn], &Default::default())?;
    let report = prober.request(conn).send().await;
    let rules = Rules {
        expect: &conn.expect,
        degraded_after: conn.degraded_after,
        max_body: conn.max_body,
    };
    Ok(classify(
        &report.attempt,
        report.latency,
        rules,
        SystemTime::now(),
    ))
}

pub fn render(id: &str, url: &str, c: &Classified, as_json: bool) -> String {
    if as_json {
        let v = json!({
            "id": id,
            "url": url,
            "outcome": c.outcome,
            "http_status": c.http_status,
            "latency_ms": c.latency.as_millis() as u64,
            "error": c.error,
            "retry_after_ms": c.retry_after.map(|d| d.as_millis() as u64),
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
    s
}
