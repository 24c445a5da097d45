//! Delivery throughput with the real binary: a sink's `concurrency` is the
//! number of requests in flight to its receiver (a webhook backlog to a slow
//! receiver drains that many at a time), and Alertmanager re-sends carry
//! many alerts per request.

mod common;
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A receiver that answers after `delay` and keeps the most requests it
/// had in flight at once, and what each request carried.
#[derive(Default)]
struct Slow {
    now: AtomicUsize,
    most: AtomicUsize,
    bodies: Mutex<Vec<serde_json::Value>>,
}

fn slow_receiver(path: &'static str, delay: Duration) -> (std::net::SocketAddr, Arc<Slow>) {
    let s = Arc::new(Slow::default());
    let st = Arc::clone(&s);
    let app = axum::Router::new().route(
        path,
        axum::routing::post(move |body: String| {
            let s = Arc::clone(&st);
            async move {
                let n = s.now.fetch_add(1, Ordering::SeqCst) + 1;
                s.most.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                if let Ok(v) = serde_json::from_str(&body) {
                    s.bodies.lock().unwrap().push(v);
                }
                s.now.fetch_sub(1, Ordering::SeqCst);
                axum::http::StatusCode::OK
            }
        }),
    );
    (serve_on_thread(app), s)
}

fn connections(addr: std::net::SocketAddr, n: usize, platform: &Platform) -> String {
    let mut out = String::new();
    for i in 0..n {
        platform.set(&format!("c{i}"), "down");
        out.push_str(&format!(
            "[[connection]]\nid = \"c{i}\"\nurl = \"http://{addr}/c/c{i}\"\n"
        ));
    }
    out
}

#[test]
fn a_webhook_backlog_drains_concurrency_requests_at_a_time() {
    let (addr, platform) = platform();
    let (hook, got) = slow_receiver("/hook", Duration::from_millis(1000));
    let n = 120;
    let s = Setup::new(&format!(
        "[daemon]\ndatabase = \"cw.db\"\n\
         [defaults]\ninterval = \"1s\"\nbreaker = {{ failure_threshold = 1 }}\n\
         [[sink]]\nid = \"hook\"\nkind = \"webhook\"\nurl = \"http://{hook}/hook\"\nconcurrency = 40\n{}",
        connections(addr, n, &platform)
    ));
    let check = String::from_utf8_lossy(&s.cmd(&["check"]).stdout).to_string();
    let mut daemon = s.spawn_daemon(&[]);
    let all = eventually(Duration::from_secs(30), || {
        got.bodies.lock().unwrap().len() >= n
    });
    terminate(&mut daemon, Duration::from_secs(10));
    assert!(
        all,
        "{} of {n} delivered; log:\n{}",
        got.bodies.lock().unwrap().len(),
        s.daemon_log()
    );
    let most = got.most.load(Ordering::SeqCst);
    // More than the webhook default (16) shows the key is in force; never
    // more than it allows.
    assert!(
        (17..=40).contains(&most),
        "at most {most} requests were in flight at once (concurrency = 40)"
    );
    let row = check.lines().find(|l| l.starts_with("hook ")).unwrap_or("");
    assert!(
        row.split_whitespace().nth(3) == Some("40"),
        "check shows the sink's concurrency under IN FLIGHT: {check}"
    );
}

#[test]
fn alertmanager_resends_carry_many_alerts_per_request() {
    let (addr, platform) = platform();
    let (am, got) = slow_receiver("/api/v2/alerts", Duration::ZERO);
    let n = 150;
    let s = Setup::new(&format!(
        "[daemon]\ndatabase = \"cw.db\"\n\
         [defaults]\ninterval = \"1s\"\nbreaker = {{ failure_threshold = 1 }}\n\
         [[sink]]\nid = \"am\"\nkind = \"alertmanager\"\nurl = \"http://{am}/\"\nresend_interval = \"2s\"\n{}",
        connections(addr, n, &platform)
    ));
    let mut daemon = s.spawn_daemon(&[]);
    // Every connection's alert is carried by the first re-send after all
    // fired; watch a few re-send rounds.
    let firing_in = |b: &serde_json::Value| -> usize {
        b.as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["labels"]["alertname"] == "ConnwatchConnectionUnhealthy")
                    .count()
            })
            .unwrap_or(0)
    };
    let enough = eventually(Duration::from_secs(30), || {
        got.bodies
            .lock()
            .unwrap()
            .iter()
            .map(firing_in)
            .sum::<usize>()
            >= 4 * n
    });
    terminate(&mut daemon, Duration::from_secs(10));
    assert!(enough, "log:\n{}", s.daemon_log());
    let bodies = got.bodies.lock().unwrap();
    let per: Vec<usize> = bodies.iter().map(firing_in).filter(|&k| k > 0).collect();
    let alerts: usize = per.iter().sum();
    assert!(
        per.iter().all(|&k| k <= 64),
        "at most 64 per request: {per:?}"
    );
    // 4 rounds of 150 alerts at 64 per request is 12 requests; the first
    // triggers may come in smaller batches, so allow some more, but far
    // fewer than one per alert.
    assert!(
        per.len() * 10 < alerts,
        "{} requests carried {alerts} alerts: {per:?}",
        per.len()
    );
}
