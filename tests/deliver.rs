//! Delivery end to end: the real binary, a status server whose connections
//! change state on a clock, and a loopback receiver that verifies webhook
//! signatures with an independent implementation and answers as scripted.

mod common;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Status endpoints that change on a clock: `/blip` is online, then down
/// from 2 s to 6 s, then online; `/cycleN` flips every 3 s, shifted by N,
/// until `freeze` is set (then online).
fn status_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicBool>) {
    let start = Instant::now();
    let freeze = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let frozen = Arc::clone(&freeze);
    let app = Router::new().route(
        "/{path}",
        get(move |UrlPath(path): UrlPath<String>| async move {
            let t = start.elapsed().as_millis() as u64;
            let frozen = frozen.load(std::sync::atomic::Ordering::SeqCst);
            let up = match path.as_str() {
                "blip" => !(2_000..6_000).contains(&t),
                _ if frozen => true,
                p => {
                    let n: u64 = p.trim_start_matches("cycle").parse().unwrap_or(0);
                    ((t + n * 700) / 3_000) % 2 == 0
                }
            };
            let (code, body) = if up {
                (StatusCode::OK, r#"{"status":"online"}"#)
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"offline"}"#)
            };
            (code, [("content-type", "application/json")], body)
        }),
    );
    (serve_on_thread(app), freeze)
}

#[derive(Clone, Debug)]
struct Receipt {
    path: String,
    id: String,
    body: String,
    answered: u16,
}

/// How the receiver answers: (path, request number, body) -> status.
type Script = Arc<dyn Fn(&str, usize, &Value) -> u16 + Send + Sync>;

#[derive(Clone)]
struct Receiver {
    log: Arc<Mutex<Vec<Receipt>>>,
    /// How to answer: (path, request number) -> status.
    script: Script,
}

impl Receiver {
    fn receipts(&self, path: &str) -> Vec<Receipt> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

async fn receive(
    State(rx): State<Receiver>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = String::from_utf8_lossy(&body).to_string();
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if path == "hook" {
        // Independent verification (the standardwebhooks crate).
        let wh = standardwebhooks::Webhook::new(SECRET).unwrap();
        let mut h = http::HeaderMap::new();
        for (k, v) in headers.iter() {
            h.insert(
                http::HeaderName::from_bytes(k.as_str().as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        if wh.verify(&body, &h).is_err() {
            return StatusCode::UNAUTHORIZED.into_response();
        }
    }
    let id = match path.as_str() {
        "hook" => headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        _ => json["dedup_key"]
            .as_str()
            .or(json["text"].as_str())
            .unwrap_or("")
            .to_string(),
    };
    let n = rx
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == path)
        .count()
        + 1;
    let answer = (rx.script)(&path, n, &json);
    rx.log.lock().unwrap().push(Receipt {
        path,
        id,
        body: text,
        answered: answer,
    });
    let mut h = HeaderMap::new();
    if answer == 429 {
        h.insert("retry-after", "1".parse().unwrap());
    }
    (StatusCode::from_u16(answer).unwrap(), h).into_response()
}

fn receiver(
    script: impl Fn(&str, usize, &Value) -> u16 + Send + Sync + 'static,
) -> (SocketAddr, Receiver) {
    let rx = Receiver {
        log: Arc::default(),
        script: Arc::new(script),
    };
    let app = Router::new()
        .route("/{path}", post(receive))
        .with_state(rx.clone());
    (serve_on_thread(app), rx)
}

fn db_events(setup: &Setup) -> Vec<(String, String, Option<String>, i64)> {
    let db = rusqlite::Connection::open(setup.db()).unwrap();
    let mut s = db
        .prepare(
            "SELECT e.id, e.type, c.id, (SELECT count(*) FROM deliveries d WHERE d.event = e.seq)
             FROM events e LEFT JOIN connections c ON c.key = e.conn ORDER BY e.seq",
        )
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn pending(setup: &Setup) -> i64 {
    let db = rusqlite::Connection::open(setup.db()).unwrap();
    db.query_row(
        "SELECT count(*) FROM deliveries WHERE state = 'pending'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn sinks_receive_in_order_despite_refusals() {
    let (status, _) = status_server();
    let t0 = Instant::now();
    // The webhook receiver refuses every "offline" event for its first 8 s;
    // PagerDuty's first answer is 429 (Retry-After: 1); Slack refuses its
    // first message for good (400).
    let (rcv, rx) = receiver(move |path, n, json| match path {
        "hook" if json["data"]["current"] == "offline" && t0.elapsed() < Duration::from_secs(8) => {
            503
        }
        "pd" if n == 1 => 429,
        "pd" => 202,
        "slack" if n == 1 => 400,
        _ => 200,
    });
    let dir = tempfile::tempdir().unwrap();
    let cmd_out = dir.path().join("cmd");
    std::fs::create_dir(&cmd_out).unwrap();
    let setup = Setup::new(&format!(
        r#"
[daemon]
database = "cw.db"
history_flush = "1s"
[defaults]
interval = "500ms"
timeout = "400ms"
breaker = {{ failure_threshold = 2, success_threshold = 2, open_for = "500ms", max_open_for = "1s" }}
[[connection]]
id = "blip"
url = "http://{status}/blip"
[[sink]]
id = "hook"
kind = "webhook"
url = "http://{rcv}/hook"
secret = "{SECRET}"
events = ["connection.status_changed"]
[[sink]]
id = "pd"
kind = "pagerduty"
routing_key = "test-routing-key"
url = "http://{rcv}/pd"
[[sink]]
id = "slack"
kind = "slack"
url = "http://{rcv}/slack"
events = ["connection.status_changed"]
group_wait = "500ms"
[[sink]]
id = "cmd"
kind = "command"
command = ["/bin/sh", "-c", "cat > \"$0/$CONNWATCH_EVENT_TYPE-$CONNWATCH_EVENT_ID.json\"", "{}"]
events = ["connection.status_changed"]
[[sink]]
id = "file"
kind = "log"
path = "events.jsonl"
"#,
        cmd_out.display()
    ));
    let mut d = setup.spawn_daemon(&[]);
    // Down at 2 s, up at 6 s; the refused trigger is retried past 8 s.
    let drained = eventually(Duration::from_secs(40), || {
        t0.elapsed() > Duration::from_secs(9) && setup.db().exists() && pending(&setup) == 0
    });
    assert_eq!(
        terminate(&mut d, Duration::from_secs(15)),
        Some(0),
        "{}",
        setup.daemon_log()
    );
    assert!(drained, "deliveries still pending\n{}", setup.daemon_log());

    let status_events: Vec<String> = db_events(&setup)
        .into_iter()
        .filter(|e| e.1 == "connection.status_changed")
        .map(|e| e.0)
        .collect();
    assert_eq!(
        status_events.len(),
        2,
        "online→offline, offline→online (the online baseline is told to no one)"
    );

    // Webhook: every event arrived signed (the receiver verified it); the
    // first receipt of each event comes in event order, so the resolve was
    // not delivered before its refused trigger.
    let hooks = rx.receipts("hook");
    let mut first: Vec<String> = Vec::new();
    for r in &hooks {
        if !first.contains(&r.id) {
            first.push(r.id.clone());
        }
    }
    assert_eq!(first, status_events, "{hooks:?}");
    let refused = hooks.iter().filter(|r| r.answered == 503).count();
    assert!(refused >= 1, "the trigger was refused at first");
    let delivered: Vec<&String> = hooks
        .iter()
        .filter(|r| r.answered == 200)
        .map(|r| &r.id)
        .collect();
    assert_eq!(
        delivered,
        status_events.iter().collect::<Vec<_>>(),
        "each delivered once, in order"
    );
    let offline_ok = hooks
        .iter()
        .position(|r| r.answered == 200 && r.body.contains("\"current\":\"offline\""))
        .unwrap();
    let online_again = hooks
        .iter()
        .position(|r| r.body.contains("\"previous\":\"offline\""))
        .unwrap();
    assert!(offline_ok < online_again, "resolve after the trigger");

    // PagerDuty: trigger then resolve, one dedup key, 429 retried.
    let pd = rx.receipts("pd");
    let bodies: Vec<Value> = pd
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(pd[0].answered, 429);
    assert!(bodies
        .iter()
        .all(|b| b["dedup_key"] == "connwatch/blip" && b["routing_key"] == "test-routing-key"));
    let actions: Vec<&str> = bodies
        .iter()
        .filter(|b| b["payload"]["severity"] != "x")
        .map(|b| b["event_action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"trigger") && actions.last() == Some(&"resolve"),
        "{actions:?}"
    );
    assert_eq!(
        bodies
            .iter()
            .find(|b| b["event_action"] == "trigger")
            .unwrap()["payload"]["severity"],
        "critical"
    );

    // Slack: the first message was refused for good (dead), the rest sent.
    let slack = rx.receipts("slack");
    assert_eq!(slack[0].answered, 400);
    assert_eq!(slack.len(), 2, "no retry of a 400: {slack:?}");
    assert!(slack
        .iter()
        .all(|r| serde_json::from_str::<Value>(&r.body).unwrap()["text"].is_string()));
    let db = rusqlite::Connection::open(setup.db()).unwrap();
    let dead: i64 = db
        .query_row(
            "SELECT count(*) FROM deliveries WHERE sink = 'slack' AND state = 'dead'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(dead, 1);
    let attempts: i64 = db
        .query_row(
            "SELECT count(*) FROM delivery_attempts WHERE sink = 'hook' AND verdict = 'retry'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(attempts as usize, refused, "every attempt recorded");

    // Command: one file per status event, holding the envelope.
    let files: Vec<_> = std::fs::read_dir(&cmd_out).unwrap().flatten().collect();
    assert_eq!(files.len(), 2, "{files:?}");
    for f in files {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(f.path()).unwrap()).unwrap();
        assert_eq!(v["type"], "connection.status_changed");
    }
    // Log: one JSON line per event (every type).
    let lines = std::fs::read_to_string(setup.dir.path().join("events.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), db_events(&setup).len());

    // The CLI: the dead Slack delivery is listed, can be replayed, and a
    // sink can be tested by hand.
    let out = setup.cmd(&["events", "--dead", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dead: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let slack_row = dead[0]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["sink"] == "slack")
        .unwrap()
        .clone();
    assert_eq!(slack_row["state"], "dead");
    assert!(slack_row["last_error"]
        .as_str()
        .unwrap()
        .contains("HTTP 400"));
    let id = dead[0]["id"].as_str().unwrap().to_string();
    let out = setup.cmd(&["events", "replay", &id, "--sink", "slack"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 delivery queued"));
    let out = setup.cmd(&["events", "--pending", "--json"]);
    let pending: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["id"], id.as_str());
    // The replay keeps the history: the refusal is still there, and says
    // something even though the receiver sent no body.
    let slack_row = pending[0]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["sink"] == "slack")
        .unwrap()
        .clone();
    assert_eq!(slack_row["state"], "pending");
    assert_eq!(slack_row["attempts"], 0);
    assert_eq!(slack_row["last_error"], "HTTP 400 Bad Request (no body)");
    let history = slack_row["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{slack_row}");
    assert_eq!(history[0]["verdict"], "dead");
    assert_eq!(history[0]["status"], 400);
    let text = String::from_utf8(setup.cmd(&["events", "--pending"]).stdout).unwrap();
    assert!(
        text.contains("slack:pending/0 (next now)")
            && text.contains("HTTP 400 Bad Request (no body)"),
        "{text}"
    );
    assert_eq!(
        setup.cmd(&["events", "replay", "evt_nope"]).status.code(),
        Some(2)
    );
    let table = String::from_utf8(setup.cmd(&["events"]).stdout).unwrap();
    assert!(
        table.starts_with("TIME") && table.contains("hook:done"),
        "{table}"
    );
    let out = setup.cmd(&["sinks", "test", "hook"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("accepted"));
    assert_eq!(setup.cmd(&["sinks", "test", "nope"]).status.code(), Some(2));
}

/// kill -9 at seeded random moments while events flow to a receiver that
/// refuses some attempts; after a final run drains, every event was
/// received, no id carried two payloads, and per connection the first
/// receipts came in event order.
#[test]
fn crash_consistency_under_kill_9() {
    let (status, freeze) = status_server();
    // Refuse roughly a third of attempts, decided by the body (so a retry
    // of the same event may pass).
    let (rcv, rx) = receiver(|_, n, _| if n % 3 == 0 { 503 } else { 200 });
    let mut text = format!(
        r#"
[daemon]
database = "cw.db"
history_flush = "1s"
[defaults]
interval = "300ms"
timeout = "250ms"
breaker = {{ failure_threshold = 1, success_threshold = 1, open_for = "100ms", max_open_for = "100ms" }}
flap_high = 100
flap_low = 99
[[sink]]
id = "hook"
kind = "webhook"
url = "http://{rcv}/hook"
secret = "{SECRET}"
"#
    );
    for i in 0..4 {
        text.push_str(&format!(
            "[[connection]]\nid = \"c{i}\"\nurl = \"http://{status}/cycle{i}\"\n"
        ));
    }
    let setup = Setup::new(&text);
    let mut seed: u64 = 0x5eed_c0de;
    let mut kills = 0;
    for _ in 0..5 {
        let mut d = setup.spawn_daemon(&[]);
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let ms = 1_500 + (seed >> 33) % 2_000;
        std::thread::sleep(Duration::from_millis(ms));
        d.kill().unwrap(); // SIGKILL
        d.wait().unwrap();
        kills += 1;
    }
    assert_eq!(kills, 5);
    // The final run: no more flips; it drains the outbox, then stops.
    freeze.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut d = setup.spawn_daemon(&[]);
    std::thread::sleep(Duration::from_secs(3));
    let drained = eventually(Duration::from_secs(60), || pending(&setup) == 0);
    assert_eq!(terminate(&mut d, Duration::from_secs(15)), Some(0));
    assert!(
        drained,
        "pending after the final drain: {}\n{}",
        pending(&setup),
        setup.daemon_log()
    );

    let db = rusqlite::Connection::open(setup.db()).unwrap();
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let not_done: i64 = db
        .query_row(
            "SELECT count(*) FROM deliveries WHERE state != 'done'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(not_done, 0, "every delivery done after the drain");
    let events: Vec<(String, Option<String>)> = db
        .prepare("SELECT e.id, c.id FROM events e LEFT JOIN connections c ON c.key = e.conn JOIN deliveries d ON d.event = e.seq ORDER BY e.seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let receipts = rx.receipts("hook");
    let mut payload: HashMap<String, String> = HashMap::new();
    let mut duplicates = 0;
    for r in &receipts {
        if let Some(prev) = payload.insert(r.id.clone(), r.body.clone()) {
            assert_eq!(prev, r.body, "event {} carried two payloads", r.id);
            duplicates += 1;
        }
    }
    let received: std::collections::HashSet<&String> = receipts
        .iter()
        .filter(|r| r.answered == 200)
        .map(|r| &r.id)
        .collect();
    for (id, _) in &events {
        assert!(
            received.contains(id),
            "event {id} marked done but never received with 2xx"
        );
    }
    // Per connection, first receipts in event order.
    for conn in ["c0", "c1", "c2", "c3"] {
        let order: Vec<&String> = events
            .iter()
            .filter(|(_, c)| c.as_deref() == Some(conn))
            .map(|(id, _)| id)
            .collect();
        let mut firsts: Vec<&String> = Vec::new();
        for r in &receipts {
            if order.contains(&&r.id) && !firsts.contains(&&r.id) {
                firsts.push(&r.id);
            }
        }
        let expected: Vec<&String> = order
            .iter()
            .copied()
            .filter(|id| firsts.contains(id))
            .collect();
        assert_eq!(
            firsts, expected,
            "{conn}: first receipts out of event order"
        );
    }
    let mut accepted: HashMap<&String, usize> = HashMap::new();
    for r in receipts.iter().filter(|r| r.answered == 200) {
        *accepted.entry(&r.id).or_default() += 1;
    }
    let twice = accepted.values().filter(|n| **n > 1).count();
    eprintln!(
        "crash test: {kills} kills; {} events stored and delivered; {} receipts: {} refused by the receiver and retried, \
         {twice} events accepted more than once (sent again after a kill); {duplicates} receipts repeated an id, always with the same payload",
        events.len(),
        receipts.len(),
        receipts.iter().filter(|r| r.answered != 200).count()
    );
    assert!(events.len() >= 10, "events flowed: {}", events.len());
}

/// A receiver that answers 410 Gone disables its sink and raises one
/// `system.error` to the other sinks; `remind_every` re-sends the last status
/// of a connection that stays down, under new ids.
#[test]
fn gone_raises_system_error_and_reminders_repeat() {
    let (status, _) = status_server();
    let (rcv, rx) = receiver(|path, _, _| if path == "gone" { 410 } else { 200 });
    let setup = Setup::new(&format!(
        r#"
[daemon]
database = "cw.db"
history_flush = "1s"
[defaults]
interval = "500ms"
timeout = "400ms"
breaker = {{ failure_threshold = 2, success_threshold = 2, open_for = "30s", max_open_for = "30s" }}
[[connection]]
id = "blip"
url = "http://{status}/blip"
[[sink]]
id = "gone"
kind = "webhook"
url = "http://{rcv}/gone"
[[sink]]
id = "hook"
kind = "webhook"
url = "http://{rcv}/hook"
secret = "{SECRET}"
remind_every = "1s"
events = ["connection.status_changed", "system.error"]
"#
    ));
    let mut d = setup.spawn_daemon(&[]);
    // Down from 2 s; reminders every second while it stays down (until 6 s).
    std::thread::sleep(Duration::from_millis(5_500));
    assert_eq!(
        terminate(&mut d, Duration::from_secs(15)),
        Some(0),
        "{}",
        setup.daemon_log()
    );
    let gone = rx.receipts("gone");
    assert_eq!(gone.len(), 1, "disabled after the first 410: {gone:?}");
    let hooks = rx.receipts("hook");
    let system: Vec<&Receipt> = hooks
        .iter()
        .filter(|r| r.body.contains("\"type\":\"system.error\""))
        .collect();
    assert_eq!(system.len(), 1, "one system.error: {hooks:?}");
    let v: Value = serde_json::from_str(&system[0].body).unwrap();
    assert!(v["connection_id"].is_null());
    assert_eq!(v["data"]["sink"], "gone");
    let reminders: Vec<&Receipt> = hooks.iter().filter(|r| r.id.contains("-r")).collect();
    assert!(reminders.len() >= 2, "reminders while down: {hooks:?}");
    let first: Value = serde_json::from_str(&reminders[0].body).unwrap();
    assert_eq!(first["data"]["current"], "offline");
    assert_eq!(first["data"]["reminder"], 1);
    assert!(reminders[0].id.ends_with("-r1"));
    let db = rusqlite::Connection::open(setup.db()).unwrap();
    let dead: i64 = db
        .query_row(
            "SELECT count(*) FROM deliveries WHERE sink = 'gone' AND state = 'dead'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        dead >= 2,
        "the disabled sink's later deliveries are dead too: {dead}"
    );
}
