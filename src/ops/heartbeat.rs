//! `[daemon] heartbeat_url`: a GET every `heartbeat_interval` while the
//! daemon is healthy (the engine loop and the database writer both beat,
//! the condition of the systemd watchdog), healthchecks.io style: the
//! service that receives it alerts when the pings stop. A failed ping is
//! counted (`connwatch_heartbeat_pings_total{result="failed"}`) and logged,
//! never paged: the receiving service is the one that notices.

use super::notify::Liveness;
use crate::config::Secret;
use std::time::Duration;

/// Timeout of one ping.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(url: Secret, every: Duration, liveness: Liveness) {
    let Ok(client) = reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .build()
    else {
        tracing::error!("heartbeat: cannot build an HTTP client");
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let now = crate::model::now_ms();
        if !liveness.healthy(now) {
            tracing::warn!(
                "heartbeat: not pinged, the daemon is not healthy (engine or writer stalled)"
            );
            continue;
        }
        let r = client
            .get(url.expose())
            .header("user-agent", crate::probe::USER_AGENT)
            .send()
            .await;
        let ok = matches!(&r, Ok(resp) if resp.status().is_success());
        crate::ops::metrics::metrics()
            .heartbeats
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
        if !ok && !failing {
            // The URL is a secret (it names the check): never printed.
            let why = match &r {
                Ok(resp) => format!("HTTP {}", resp.status().as_u16()),
                Err(e) if e.is_timeout() => "timed out".into(),
                Err(_) => "cannot connect".into(),
            };
            tracing::warn!(error = %why, "heartbeat ping failed");
        } else if ok && failing {
            tracing::info!("heartbeat pings succeed again");
        }
        failing = !ok;
    }
}
