//! Against a real Alertmanager (Debian's `prometheus-alertmanager`, started
//! on loopback here; `.ci/run` installs it): a connection that goes down is a
//! firing alert, still firing well past Alertmanager's resolve timeout
//! because connwatch re-sends it; recovery resolves it.

mod common;
use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use common::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARIES: &[&str] = &["prometheus-alertmanager", "alertmanager"];

fn alerts(port: u16) -> Vec<Value> {
    http_get(port, "/api/v2/alerts")
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or_default()
}

/// The alert for connection `id`, if Alertmanager holds it as active.
fn active(port: u16, id: &str) -> bool {
    alerts(port).iter().any(|a| {
        a["labels"]["connection_id"] == id
            && a["status"]["state"] == "active"
            && a["endsAt"]
                .as_str()
                .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
                .is_none_or(|e| e > chrono::Utc::now())
    })
}

#[test]
fn firing_alert_outlives_the_resolve_timeout_and_recovery_resolves_it() {
    let bin = BINARIES
        .iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
        .unwrap_or_else(|| {
            panic!("Alertmanager is needed: apt-get install prometheus-alertmanager (.ci/run does)")
        });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("am.yml"),
        "global:\n  resolve_timeout: 3s\nroute:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n",
    )
    .unwrap();
    let port = free_port();
    let mut am = Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.path().join("am.yml").display()
        ))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = eventually(Duration::from_secs(20), || {
        http_get(port, "/-/ready").is_some_and(|(s, _)| s == 200)
    });
    assert!(ready, "Alertmanager did not start");

    // Online for 1 s, down until 12 s, online after.
    let start = Instant::now();
    let status = serve_on_thread(Router::new().route(
        "/{p}",
        get(move |UrlPath(_p): UrlPath<String>| async move {
            let t = start.elapsed();
            if t > Duration::from_secs(1) && t < Duration::from_secs(12) {
                (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"offline"}"#)
            } else {
                (StatusCode::OK, r#"{"status":"online"}"#)
            }
        }),
    ));
    let setup = Setup::new(&format!(
        "[daemon]\ndatabase = \"cw.db\"\n[defaults]\ninterval = \"500ms\"\ntimeout = \"400ms\"\n\
         breaker = {{ failure_threshold = 2, success_threshold = 2, open_for = \"500ms\", max_open_for = \"1s\" }}\n\
         [[connection]]\nid = \"erp\"\nurl = \"http://{status}/erp\"\n\
         [[sink]]\nid = \"am\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:{port}/\"\nresend_interval = \"1s\"\nlabels = {{ team = \"ops\" }}\n"
    ));
    let mut d = setup.spawn_daemon(&[]);
    let fired = eventually(Duration::from_secs(8), || active(port, "erp"));
    let fired_at = start.elapsed();
    // Past the 3 s resolve timeout (twice over), it is still firing.
    std::thread::sleep(Duration::from_secs(7));
    let still = active(port, "erp");
    let labels = alerts(port)
        .into_iter()
        .find(|a| a["labels"]["connection_id"] == "erp")
        .map(|a| a["labels"].clone());
    let resolved = eventually(Duration::from_secs(15), || !active(port, "erp"));
    let resolved_at = start.elapsed();
    let code = terminate(&mut d, Duration::from_secs(15));
    let _ = am.kill();
    let _ = am.wait();
    assert_eq!(code, Some(0), "{}", setup.daemon_log());
    assert!(fired, "the alert never fired\n{}", setup.daemon_log());
    assert!(
        still,
        "the alert resolved on its own after the resolve timeout (fired at {fired_at:?})"
    );
    let labels = labels.unwrap();
    assert_eq!(labels["alertname"], "ConnwatchConnectionUnhealthy");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["team"], "ops");
    assert!(resolved, "recovery did not resolve the alert");
    assert!(
        resolved_at >= Duration::from_secs(12),
        "resolved at {resolved_at:?}, before the recovery"
    );
    eprintln!(
        "alertmanager: firing at {fired_at:?}, still firing 7 s later, resolved at {resolved_at:?}"
    );
}
