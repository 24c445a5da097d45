//! SIGHUP with the real binary: a valid configuration is applied in place
//! (added connections start, removed ones stop, unchanged ones keep their
//! health and open circuit); an invalid one is refused and the daemon keeps
//! running the old one. The notify socket sees RELOADING=1 then READY=1.

mod common;
use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use common::*;
use serde_json::Value;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn config(addr: std::net::SocketAddr, ids: &[&str], keep_timeout: &str) -> String {
    let mut s = String::from(
        "[daemon]\ndatabase = \"cw.db\"\nhistory_flush = \"1s\"\n[defaults]\ninterval = \"500ms\"\ntimeout = \"400ms\"\n\
         breaker = { failure_threshold = 2, success_threshold = 2, open_for = \"60s\", max_open_for = \"60s\" }\n",
    );
    for id in ids {
        s.push_str(&format!(
            "[[connection]]\nid = \"{id}\"\nurl = \"http://{addr}/{id}\"\n"
        ));
        if *id == "keep" {
            s.push_str(&format!("timeout = \"{keep_timeout}\"\n"));
        }
    }
    s
}

fn row(status: &Value, id: &str) -> Option<Value> {
    status
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
}

fn hup(pid: u32) {
    Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
}

#[test]
fn sighup_applies_a_valid_config_and_refuses_an_invalid_one() {
    let addr = serve_on_thread(Router::new().route(
        "/{id}",
        get(|UrlPath(id): UrlPath<String>| async move {
            if id == "down" {
                (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"offline"}"#)
            } else {
                (StatusCode::OK, r#"{"status":"online"}"#)
            }
        }),
    ));
    let setup = Setup::new(&config(addr, &["down", "keep", "gone"], "400ms"));
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let msgs: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let msgs = Arc::clone(&msgs);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            for _ in 0..400 {
                if let Ok(n) = sock.recv(&mut buf) {
                    msgs.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).to_string());
                }
            }
        });
    }
    let mut d = setup.spawn_daemon(&[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    assert!(
        eventually(Duration::from_secs(15), || setup.db().exists()
            && row(&setup.status_json(), "down")
                .is_some_and(|r| r["circuit"] == "open")
            && row(&setup.status_json(), "keep")
                .is_some_and(|r| r["health"] == "online")),
        "{}",
        setup.daemon_log()
    );
    let before = setup.status_json();
    let down_since = row(&before, "down").unwrap()["since"].clone();
    let keep_since = row(&before, "keep").unwrap()["since"].clone();

    // Valid: remove "gone", add "new", change "keep"'s timeout.
    std::fs::write(
        &setup.config,
        config(addr, &["down", "keep", "new"], "300ms"),
    )
    .unwrap();
    hup(d.id());
    assert!(
        eventually(Duration::from_secs(10), || row(&setup.status_json(), "new")
            .is_some_and(|r| r["health"] == "online")),
        "{}",
        setup.daemon_log()
    );
    let after = setup.status_json();
    assert!(
        row(&after, "gone").is_none(),
        "removed connections leave status"
    );
    let down = row(&after, "down").unwrap();
    assert_eq!(down["health"], "offline");
    assert_eq!(
        down["circuit"], "open",
        "the open circuit survives the reload"
    );
    assert_eq!(down["since"], down_since);
    assert_eq!(
        row(&after, "keep").unwrap()["since"],
        keep_since,
        "unchanged health is kept"
    );
    let log = setup.daemon_log();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(
        log.contains("connections: 1 added (new), 1 removed (gone), 1 changed (keep); sinks: 0 (0 added, 0 removed); maintenance windows: 0 -> 0"),
        "{log}"
    );

    // Invalid: refused, the daemon keeps running the previous configuration.
    std::fs::write(
        &setup.config,
        "[[connection]]\nid = \"x\"\nurl = \"http://h/\"\ntimout = \"1s\"\n",
    )
    .unwrap();
    hup(d.id());
    assert!(eventually(Duration::from_secs(5), || setup
        .daemon_log()
        .contains("reload refused")));
    // Still running the previous configuration: online runs keep coming.
    let runs = |db: &rusqlite::Connection| -> i64 {
        db.query_row("SELECT count(*) FROM probe_runs", [], |r| r.get(0))
            .unwrap()
    };
    let db = rusqlite::Connection::open(setup.db()).unwrap();
    let n0 = runs(&db);
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(d.try_wait().unwrap().is_none(), "still running");
    assert!(runs(&db) > n0, "still probing after the refused reload");
    assert_eq!(
        terminate(&mut d, Duration::from_secs(15)),
        Some(0),
        "{}",
        setup.daemon_log()
    );

    let db = rusqlite::Connection::open(setup.db()).unwrap();
    let errors: i64 = db
        .query_row(
            "SELECT count(*) FROM events WHERE type = 'system.error' AND conn IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(errors, 1, "the refused reload raised one system.error");
    let transitions: i64 = db
        .query_row("SELECT count(*) FROM transitions t JOIN connections c ON c.key = t.conn WHERE c.id = 'down'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(transitions, 1, "no re-confirmation after the reload");
    std::thread::sleep(Duration::from_millis(300));
    let msgs = msgs.lock().unwrap().clone();
    let kinds: Vec<&str> = msgs
        .iter()
        .filter_map(|m| {
            ["READY=1", "RELOADING=1", "STOPPING=1"]
                .into_iter()
                .find(|k| m.lines().any(|l| l == *k))
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "READY=1",
            "RELOADING=1",
            "READY=1",
            "RELOADING=1",
            "READY=1",
            "STOPPING=1"
        ],
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains("MONOTONIC_USEC=")),
        "{msgs:?}"
    );
}

/// A reload keeps each connection's phase: around a SIGHUP the gaps between
/// probes of an unchanged connection stay one interval (no probe missed,
/// none doubled). Before, every phase restarted at the reload.
#[test]
fn a_reload_keeps_every_connections_phase() {
    let arrivals: Arc<Mutex<Vec<(String, std::time::Instant)>>> = Arc::default();
    let log = Arc::clone(&arrivals);
    let addr = serve_on_thread(Router::new().route(
        "/{id}",
        get(move |UrlPath(id): UrlPath<String>| {
            let log = Arc::clone(&log);
            async move {
                log.lock().unwrap().push((id, std::time::Instant::now()));
                (StatusCode::OK, r#"{"status":"online"}"#)
            }
        }),
    ));
    let mut text = String::from(
        "[daemon]\ndatabase = \"cw.db\"\n[defaults]\ninterval = \"1s\"\ntimeout = \"500ms\"\n",
    );
    let ids: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    for id in &ids {
        text.push_str(&format!(
            "[[connection]]\nid = \"{id}\"\nurl = \"http://{addr}/{id}\"\n"
        ));
    }
    let setup = Setup::new(&text);
    let mut d = setup.spawn_daemon(&[]);
    std::thread::sleep(Duration::from_millis(3500));
    hup(d.id());
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(terminate(&mut d, Duration::from_secs(15)), Some(0));
    let log = setup.daemon_log();
    assert!(log.contains("configuration reloaded"), "{log}");
    let arrivals = arrivals.lock().unwrap();
    for id in &ids {
        let times: Vec<std::time::Instant> = arrivals
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, t)| *t)
            .collect();
        assert!(times.len() >= 6, "{id}: only {} probes", times.len());
        for w in times.windows(2) {
            let gap = w[1] - w[0];
            // One interval, give or take the tick, the reload's own pause
            // and a loaded machine; a restarted phase would show a gap
            // anywhere from 0 to 2 s for most connections.
            assert!(
                gap > Duration::from_millis(600) && gap < Duration::from_millis(1600),
                "{id}: a gap of {gap:?} around the reload\n{log}"
            );
        }
    }
}
