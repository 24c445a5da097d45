//! `[daemon] heartbeat_url` with the real binary: pinged every
//! `heartbeat_interval` while the daemon is healthy, failures counted in
//! `/metrics` and logged without the URL (it is a secret), never an event.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn metric(port: u16, name: &str) -> u64 {
    let (_, body) = http_get(port, "/metrics").unwrap_or_default();
    body.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn the_heartbeat_is_pinged_and_its_failures_are_counted_not_paged() {
    let pings = Arc::new(AtomicUsize::new(0));
    let fail = Arc::new(AtomicBool::new(false));
    let (p, f) = (Arc::clone(&pings), Arc::clone(&fail));
    let app = axum::Router::new().route(
        "/ping/check-7f3a9c",
        axum::routing::get(move || {
            let (p, f) = (Arc::clone(&p), Arc::clone(&f));
            async move {
                p.fetch_add(1, Ordering::SeqCst);
                if f.load(Ordering::SeqCst) {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let hb = serve_on_thread(app);
    let (hook, got) = hook_receiver();
    let (addr, _platform) = platform();
    let admin = free_port();
    let s = Setup::new(&format!(
        r#"
[daemon]
database = "cw.db"
listen = "127.0.0.1:{admin}"
heartbeat_url = "http://{hb}/ping/check-7f3a9c"
heartbeat_interval = "1s"

[[connection]]
id = "a"
url = "http://{addr}/c/a"
interval = "1s"

[[sink]]
id = "hook"
kind = "webhook"
url = "http://{hook}/hook"
"#
    ));
    let check = String::from_utf8_lossy(&s.cmd(&["check"]).stdout).to_string();
    assert!(
        check.contains("heartbeat: pinged every 1s while healthy"),
        "{check}"
    );
    assert!(
        !check.contains("check-7f3a9c"),
        "the URL is a secret: {check}"
    );
    let mut daemon = s.spawn_daemon(&[]);
    assert!(
        eventually(Duration::from_secs(10), || pings.load(Ordering::SeqCst)
            >= 3),
        "pinged every second; log:\n{}",
        s.daemon_log()
    );
    assert!(eventually(Duration::from_secs(5), || metric(
        admin,
        "connwatch_heartbeat_pings_total{result=\"ok\"}"
    ) >= 2));
    fail.store(true, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(10), || metric(
            admin,
            "connwatch_heartbeat_pings_total{result=\"failed\"}"
        ) >= 2),
        "failures counted"
    );
    let ok_pings = metric(admin, "connwatch_heartbeat_pings_total{result=\"ok\"}");
    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
    let log = s.daemon_log();
    assert!(log.contains("heartbeat ping failed"), "{log}");
    assert!(
        !log.contains("check-7f3a9c"),
        "the URL never appears in the log"
    );
    let events = envelopes(&got);
    assert!(
        events
            .iter()
            .all(|e| !e.to_string().contains("system.error")),
        "a failing heartbeat pages no one: {events:?}"
    );
    println!(
        "{} pings received, {ok_pings} counted ok, then failures counted",
        pings.load(Ordering::SeqCst)
    );
}
