//! End to end, the real binary against a scenario server that records the
//! time of every request it receives: the breaker, Retry-After, the slow
//! cadence of expired credentials, flapping, a failing parent, sync
//! staleness, and an open circuit across a restart.

mod common;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Request times per path, in ms since the server started.
#[derive(Clone)]
struct Log {
    start: Instant,
    hits: Arc<Mutex<HashMap<String, Vec<u64>>>>,
    started_unix: u64,
}

impl Log {
    fn times(&self, path: &str) -> Vec<u64> {
        self.hits
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "application/json")], body).into_response()
}

async fn answer(State(log): State<Log>, UrlPath(path): UrlPath<String>) -> Response {
    let n = {
        let mut hits = log.hits.lock().unwrap();
        let v = hits.entry(path.clone()).or_default();
        v.push(log.start.elapsed().as_millis() as u64);
        v.len()
    };
    let online = || json(StatusCode::OK, r#"{"status":"online"}"#.into());
    let down = || {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"offline"}"#.into(),
        )
    };
    match path.as_str() {
        "down" | "down10" | "parent" | "child" => down(),
        "later" if log.start.elapsed() < Duration::from_secs(3) => online(),
        "later" => down(),
        "ratelimit" if n == 1 => {
            let mut h = HeaderMap::new();
            h.insert("retry-after", "20".parse().unwrap());
            (
                StatusCode::TOO_MANY_REQUESTS,
                h,
                r#"{"error":{"code":"RATE_LIMIT_EXCEEDED"}}"#,
            )
                .into_response()
        }
        "ratelimit" => online(),
        "auth" => json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":{"code":"CREDENTIALS_EXPIRED"}}"#.into(),
        ),
        "flap" if n % 2 == 1 => online(),
        "flap" => down(),
        // The last sync finished when the server started and never again.
        "sync" => json(
            StatusCode::OK,
            format!(
                r#"{{"status":"online","sync":{{"status":"completed","finished_at":{}}}}}"#,
                log.started_unix
            ),
        ),
        _ => json(StatusCode::NOT_FOUND, "{}".into()),
    }
}

fn recording_server() -> (SocketAddr, Log) {
    let log = Log {
        start: Instant::now(),
        hits: Arc::default(),
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    };
    let app = Router::new()
        .route("/{path}", get(answer))
        .with_state(log.clone());
    (serve_on_thread(app), log)
}

const HEAD: &str = r#"
[daemon]
database = "cw.db"
history_flush = "1s"

[defaults]
interval = "1s"
timeout = "800ms"
breaker = { failure_threshold = 3, success_threshold = 2, open_for = "4s", max_open_for = "60s" }
"#;

fn gaps(t: &[u64]) -> Vec<u64> {
    t.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Events of one connection: (type, suppressed reason).
fn events(setup: &Setup, id: &str) -> Vec<(String, Option<String>)> {
    let db = rusqlite::Connection::open(setup.db()).unwrap();
    let mut s = db
        .prepare("SELECT e.type, e.suppressed FROM events e JOIN connections c ON c.key = e.conn WHERE c.id = ?1 ORDER BY e.seq")
        .unwrap();
    s.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn count(ev: &[(String, Option<String>)], kind: &str, sent: bool) -> usize {
    ev.iter()
        .filter(|(k, s)| k == kind && s.is_none() == sent)
        .count()
}

#[test]
fn protective_polling_end_to_end() {
    let (addr, log) = recording_server();
    let mut text = HEAD.to_string();
    let conn = |id: &str, extra: &str| {
        format!("\n[[connection]]\nid = \"{id}\"\nurl = \"http://{addr}/{id}\"\n{extra}\n")
    };
    text.push_str(&conn("down", ""));
    text.push_str(&conn("ratelimit", ""));
    text.push_str(&conn("auth", "auth_interval = \"8s\""));
    text.push_str(&conn(
        "flap",
        "breaker = { failure_threshold = 1, success_threshold = 1, open_for = \"100ms\", max_open_for = \"100ms\" }",
    ));
    text.push_str(&conn("parent", ""));
    text.push_str(&conn("child", "depends_on = \"parent\""));
    text.push_str(&conn("sync", "expect = { sync = { max_age = \"3s\" } }"));
    let setup = Setup::new(&text);
    let mut daemon = setup.spawn_daemon(&[]);
    std::thread::sleep(Duration::from_secs(24));
    // Read while the daemon runs: a stopped one's rows are stale, with
    // nothing due.
    let status = setup.status_json();
    assert_eq!(
        terminate(&mut daemon, Duration::from_secs(15)),
        Some(0),
        "{}",
        setup.daemon_log()
    );

    for path in [
        "down",
        "ratelimit",
        "auth",
        "flap",
        "parent",
        "child",
        "sync",
    ] {
        let t = log.times(path);
        let first = t.first().copied().unwrap_or(0);
        eprintln!(
            "{path:>9}: {:?}",
            t.iter().map(|x| x - first).collect::<Vec<_>>()
        );
    }

    // A down endpoint: 3 probes a second apart, then one per open wait.
    let down = log.times("down");
    let g = gaps(&down);
    assert!(down.len() >= 4 && down.len() <= 6, "{down:?}");
    assert!(g[0] < 1_600 && g[1] < 1_600, "{g:?}");
    assert!(
        g[2] >= 3_200 && g[2] <= 5_900,
        "first open wait ~4 s: {g:?}"
    );
    if g.len() > 3 {
        assert!(g[3] >= 6_400, "second open wait ~8 s: {g:?}");
    }
    let ev = events(&setup, "down");
    assert_eq!(count(&ev, "circuit.opened", true), down.len() - 2, "{ev:?}");
    assert_eq!(count(&ev, "connection.status_changed", true), 1, "{ev:?}");

    // 429 with Retry-After: 20: nothing for 20 s.
    let rl = log.times("ratelimit");
    assert!(rl.len() >= 2, "probed again after the deadline: {rl:?}");
    assert!(rl[1] - rl[0] >= 19_900, "Retry-After honoured: {rl:?}");
    let ev = events(&setup, "ratelimit");
    assert_eq!(count(&ev, "connection.rate_limited", true), 1, "{ev:?}");
    assert_eq!(
        count(&ev, "circuit.opened", true),
        0,
        "a rate limit never opens the circuit"
    );

    // 401: the slow cadence (auth_interval 8 s).
    let auth = log.times("auth");
    assert!(auth.len() >= 2 && auth.len() <= 4, "{auth:?}");
    assert!(gaps(&auth).iter().all(|g| *g >= 7_900), "{auth:?}");
    assert_eq!(
        count(&events(&setup, "auth"), "connection.auth_required", true),
        1
    );

    // Alternating: flapping_started once, and no stream of status_changed.
    let ev = events(&setup, "flap");
    let flap_probes = log.times("flap").len();
    assert!(flap_probes >= 18, "{flap_probes}");
    assert_eq!(count(&ev, "connection.flapping_started", true), 1, "{ev:?}");
    let sent = count(&ev, "connection.status_changed", true);
    let held = count(&ev, "connection.status_changed", false);
    assert!(sent <= 12, "{sent} status_changed sent: {ev:?}");
    assert!(
        held >= 5,
        "changes while flapping are recorded as suppressed: {ev:?}"
    );
    assert!(ev
        .iter()
        .filter(|(_, s)| s.is_some())
        .all(|(_, s)| s.as_deref() == Some("flapping")));

    // A child of a failing parent sends nothing and is paused.
    let ev = events(&setup, "child");
    assert!(
        ev.iter().all(|(_, s)| s.is_some()),
        "child sent something: {ev:?}"
    );
    let child = log.times("child");
    assert!(
        child.len() <= 4,
        "child paused while the parent fails: {child:?}"
    );
    assert_eq!(
        count(&events(&setup, "parent"), "connection.status_changed", true),
        1
    );
    let child_row = status
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "child")
        .unwrap();
    assert_eq!(
        child_row["next_probe_reason"], "paused_by_parent",
        "{child_row}"
    );

    // A sync that stopped advancing: sync.stale once.
    let ev = events(&setup, "sync");
    assert_eq!(count(&ev, "sync.stale", true), 1, "{ev:?}");
    assert_eq!(
        count(&ev, "sync.completed", true),
        0,
        "the sync that finished before connwatch looked is the baseline: {ev:?}"
    );
    let sync_row = status
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "sync")
        .unwrap();
    assert_eq!(sync_row["health"], "degraded");
    assert_eq!(sync_row["last_error"]["kind"], "stale_sync");
}

#[test]
fn an_open_circuit_stays_open_across_a_restart() {
    let (addr, log) = recording_server();
    let text = format!(
        "{HEAD}\n[[connection]]\nid = \"down10\"\nurl = \"http://{addr}/down10\"\n\
         breaker = {{ failure_threshold = 3, open_for = \"10s\", max_open_for = \"60s\" }}\n"
    );
    let setup = Setup::new(&text);
    let mut d = setup.spawn_daemon(&[]);
    assert!(eventually(Duration::from_secs(15), || setup.db().exists()
        && setup.status_json()[0]["circuit"] == "open"));
    assert_eq!(terminate(&mut d, Duration::from_secs(15)), Some(0));
    let before = log.times("down10").len();
    assert_eq!(before, 3);

    let mut d = setup.spawn_daemon(&[]);
    std::thread::sleep(Duration::from_secs(4));
    let row = setup.status_json()[0].clone();
    assert_eq!(terminate(&mut d, Duration::from_secs(15)), Some(0));
    assert_eq!(row["circuit"], "open", "{row}");
    assert_eq!(row["next_probe_reason"], "circuit_open", "{row}");
    // How soon a recovery now would be resolved: the trial (open_for 10 s,
    // +20 % jitter at most), the tick after it, one more success (1 s).
    assert_eq!(row["next_trial_at"], row["next_probe_at"], "{row}");
    let within = row["resolve_within_s"].as_i64().unwrap();
    assert!((1..=15).contains(&within), "{row}");
    assert_eq!(
        log.times("down10").len(),
        before,
        "no probe while the restored circuit is open"
    );
    // Nothing was re-sent: still one status_changed and one circuit.opened.
    let ev = events(&setup, "down10");
    assert_eq!(count(&ev, "connection.status_changed", true), 1, "{ev:?}");
    assert_eq!(count(&ev, "circuit.opened", true), 1, "{ev:?}");
}

#[test]
fn maintenance_holds_events_then_catches_up_once() {
    let (addr, log) = recording_server();
    // A one-shot window (exact second, UTC) starting 2 s from now, 6 s long.
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let schedule = at.format("%-S %-M %-H %-d %-m *").to_string();
    let text = format!(
        "{HEAD}\n[[connection]]\nid = \"later\"\nurl = \"http://{addr}/later\"\n\
         [[maintenance]]\nconnections = [\"later\"]\nschedule = \"{schedule}\"\nduration = \"6s\"\n"
    );
    let setup = Setup::new(&text);
    let mut d = setup.spawn_daemon(&[]);
    // Inside the window: the failure is confirmed but held.
    std::thread::sleep(Duration::from_millis(6_500));
    let during = setup.status_json()[0].clone();
    std::thread::sleep(Duration::from_millis(4_500));
    assert_eq!(
        terminate(&mut d, Duration::from_secs(15)),
        Some(0),
        "{}",
        setup.daemon_log()
    );
    let t = log.times("later");
    eprintln!(
        "    later: {:?}",
        t.iter().map(|x| x - t[0]).collect::<Vec<_>>()
    );

    assert_eq!(during["health"], "offline", "{during}");
    assert_eq!(during["suppressed"], "maintenance", "{during}");
    assert_eq!(
        during["sent_health"], "online",
        "receivers still think it is online: {during}"
    );
    let ev = events(&setup, "later");
    let sent: Vec<&(String, Option<String>)> = ev.iter().filter(|(_, s)| s.is_none()).collect();
    // Sent: one catch-up after the window (the online baseline before it
    // is told to no one).
    assert_eq!(count(&ev, "connection.status_changed", true), 1, "{ev:?}");
    assert!(
        ev.iter()
            .any(|(k, s)| k == "connection.status_changed" && s.as_deref() == Some("maintenance")),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|(k, s)| k == "circuit.opened" && s.as_deref() == Some("maintenance")),
        "{ev:?}"
    );
    // The window's end probes at once, past the open circuit's wait (a
    // trial: circuit.half_opened), and that probe brings the catch-up.
    let last_held = ev.iter().rposition(|(_, s)| s.is_some()).unwrap();
    assert_eq!(
        ev[last_held + 1..last_held + 3],
        [
            ("circuit.half_opened".to_string(), None),
            ("connection.status_changed".to_string(), None)
        ],
        "the catch-up follows the window: {ev:?}"
    );
    assert!(sent.len() >= 3);
    let db = rusqlite::Connection::open(setup.db()).unwrap();
    let env: String = db
        .query_row(
            "SELECT envelope FROM events WHERE type = 'connection.status_changed' AND suppressed IS NULL ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let env: serde_json::Value = serde_json::from_str(&env).unwrap();
    assert_eq!(
        (
            env["data"]["previous"].as_str(),
            env["data"]["current"].as_str()
        ),
        (Some("online"), Some("offline"))
    );
    // Probes went on during the window.
    assert!(
        t.iter()
            .filter(|x| **x >= t[0] + 2_000 && **x < t[0] + 8_000)
            .count()
            >= 2,
        "{t:?}"
    );
}
