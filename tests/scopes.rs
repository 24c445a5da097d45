//! Scoped checks with the real binary: a connection whose status endpoint
//! stays online while the source system refuses one entity type, then all
//! of them; its recovery; and an open circuit on the status endpoint that
//! stops the scope probes. The scenario server logs every request it gets
//! and the webhook receiver every event, both with wall-clock times.

mod common;
use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Wall-clock milliseconds.
fn now() -> i64 {
    connwatch::model::now_ms()
}

/// What each path answers: `up`/`down` for the status endpoint, `ok`/`403`
/// for an entity; and every request, with its time.
#[derive(Clone, Default)]
struct Platform {
    how: Arc<Mutex<HashMap<String, &'static str>>>,
    log: Arc<Mutex<Vec<(i64, String)>>>,
}

impl Platform {
    fn set(&self, what: &str, how: &'static str) {
        self.how.lock().unwrap().insert(what.to_string(), how);
    }

    fn requests(&self, prefix: &str, from: i64, to: i64) -> Vec<(i64, String)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, p)| p.starts_with(prefix) && *t >= from && *t <= to)
            .cloned()
            .collect()
    }
}

fn platform() -> (std::net::SocketAddr, Platform) {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    let p = Platform::default();
    let app = axum::Router::new()
        .route(
            "/erp/status",
            axum::routing::get(|State(p): State<Platform>| async move {
                p.log.lock().unwrap().push((now(), "/erp/status".into()));
                match p.how.lock().unwrap().get("status").copied() {
                    Some("down") => (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"offline"}"#),
                    _ => (StatusCode::OK, r#"{"status":"online"}"#),
                }
            }),
        )
        .route(
            "/erp/entities/{entity}",
            axum::routing::get(
                |State(p): State<Platform>, Path(entity): Path<String>| async move {
                    p.log
                        .lock()
                        .unwrap()
                        .push((now(), format!("/erp/entities/{entity}")));
                    match p.how.lock().unwrap().get(&entity).copied() {
                        Some("403") => (
                            StatusCode::FORBIDDEN,
                            r#"{"error":{"code":"PERMISSION_DENIED","message":"no read access"}}"#,
                        ),
                        _ => (StatusCode::OK, r#"{"data":[]}"#),
                    }
                },
            ),
        )
        .with_state(p.clone());
    (serve_on_thread(app), p)
}

const SCOPES: [&str; 3] = ["orders", "items", "invoices"];
const FAILURE_THRESHOLD: i64 = 2;
const SCOPE_INTERVAL_MS: i64 = 1_000;

fn ts(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

#[test]
fn scopes_degrade_then_deny_recover_and_stop_while_the_circuit_is_open() {
    let (addr, platform) = platform();
    let (hook, got) = hook_receiver();
    let admin = free_port();
    let mut text = format!(
        r#"
[daemon]
database = "cw.db"
history_flush = "1s"
listen = "127.0.0.1:{admin}"

[defaults]
interval = "300ms"
timeout = "250ms"
breaker = {{ failure_threshold = {FAILURE_THRESHOLD}, success_threshold = 1, open_for = "3s", max_open_for = "3s" }}

[[connection]]
id = "erp"
url = "http://{addr}/erp/status"
"#
    );
    for s in SCOPES {
        text.push_str(&format!(
            "\n[[connection.scope]]\nid = \"{s}\"\nurl = \"http://{addr}/erp/entities/{s}\"\ninterval = \"{SCOPE_INTERVAL_MS}ms\"\n"
        ));
    }
    text.push_str(&format!(
        "\n[[sink]]\nid = \"hook\"\nkind = \"webhook\"\nurl = \"http://{hook}/hook\"\n"
    ));
    let setup = Setup::new(&text);
    let check = setup.cmd(&["check"]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("3 scope(s):"));

    let mut daemon = setup.spawn_daemon(&[]);
    let row = || -> Value {
        let out = setup.cmd(&["status", "--json"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array()?.first().cloned())
            .unwrap_or(Value::Null)
    };
    // Up, with every scope probed once and online.
    assert!(
        eventually(Duration::from_secs(20), || {
            let r = row();
            r["health"] == "online"
                && r["scopes"]
                    .as_array()
                    .is_some_and(|s| s.len() == 3 && s.iter().all(|x| x["health"] == "online"))
        }),
        "{}\n{}",
        row(),
        setup.daemon_log()
    );
    let events = |kind: &str| -> Vec<(i64, Value)> {
        got.lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| e["type"] == kind)
            .cloned()
            .collect()
    };
    assert!(
        events("connection.status_changed").is_empty(),
        "a baseline is no news"
    );
    assert!(
        events("connection.scope_changed").is_empty(),
        "nor is a scope's"
    );

    // One entity type refused.
    let t_refused = now();
    platform.set("orders", "403");
    assert!(eventually(Duration::from_secs(10), || row()["health"] == "degraded"));
    assert!(eventually(Duration::from_secs(5), || !events(
        "connection.status_changed"
    )
    .is_empty()));
    let changed = events("connection.status_changed");
    let scope_changed = events("connection.scope_changed");
    assert_eq!(changed.len(), 1, "{changed:#?}");
    assert_eq!(scope_changed.len(), 1, "{scope_changed:#?}");
    let (sc, st) = (&scope_changed[0].1, &changed[0].1);
    assert_eq!(
        (
            &sc["data"]["scope"],
            &sc["data"]["previous"],
            &sc["data"]["current"]
        ),
        (
            &Value::from("orders"),
            &Value::from("online"),
            &Value::from("permission_denied")
        )
    );
    assert_eq!(sc["data"]["error"]["kind"], "permission");
    assert_eq!(
        (&st["data"]["previous"], &st["data"]["current"]),
        (&Value::from("online"), &Value::from("degraded"))
    );
    assert_eq!(st["data"]["error"]["kind"], "scope");
    assert_eq!(
        st["data"]["error"]["message"],
        "scope orders is permission_denied: HTTP 403, PERMISSION_DENIED"
    );
    let bound = FAILURE_THRESHOLD * SCOPE_INTERVAL_MS + 1_000;
    let took = ts(st) - t_refused;
    assert!(
        took <= bound,
        "degraded {took} ms after the refusal began (bound {bound} ms)"
    );
    let r = row();
    let orders = r["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "orders")
        .unwrap()
        .clone();
    assert_eq!(orders["health"], "permission_denied");
    assert_eq!(orders["last_outcome"], "permission_denied");
    assert_eq!(orders["last_error"]["http_status"], 403);
    assert!(orders["last_probe_at"].is_string());
    let table = String::from_utf8(setup.cmd(&["status"]).stdout).unwrap();
    assert!(table.contains("orders: permission_denied; 2 ok"), "{table}");

    // Every entity type refused: the connection is refused.
    platform.set("items", "403");
    platform.set("invoices", "403");
    assert!(
        eventually(Duration::from_secs(10), || row()["health"]
            == "permission_denied"),
        "{}",
        row()
    );
    // Back: resolved.
    for s in SCOPES {
        platform.set(s, "ok");
    }
    assert!(eventually(Duration::from_secs(10), || row()["health"] == "online"));
    assert!(eventually(Duration::from_secs(5), || events(
        "connection.status_changed"
    )
    .last()
    .is_some_and(|(_, e)| e["data"]["current"] == "online")));
    let changes: Vec<String> = events("connection.status_changed")
        .iter()
        .map(|(_, e)| {
            format!(
                "{}→{}",
                e["data"]["previous"].as_str().unwrap(),
                e["data"]["current"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        changes[..2],
        ["online→degraded", "degraded→permission_denied"],
        "{changes:?}"
    );
    assert!(changes.last().unwrap().ends_with("→online"), "{changes:?}");
    assert_eq!(
        events("connection.scope_changed").len(),
        6,
        "three refusals, three recoveries"
    );

    // The status endpoint goes down: the circuit opens, and no scope is
    // probed until its trial.
    platform.set("status", "down");
    assert!(eventually(Duration::from_secs(10), || !events(
        "circuit.opened"
    )
    .is_empty()));
    let opened = ts(&events("circuit.opened")[0].1);
    std::thread::sleep(Duration::from_millis(2_000));
    let during = platform.requests("/erp/entities/", opened + 300, opened + 2_000);
    assert!(
        during.is_empty(),
        "scope probes while the circuit was open: {during:?}"
    );
    let status_during = platform.requests("/erp/status", opened + 300, opened + 2_000);
    assert!(
        status_during.is_empty(),
        "no probe of the status endpoint either: {status_during:?}"
    );
    platform.set("status", "up");
    assert!(eventually(Duration::from_secs(15), || row()["health"] == "online"));
    // After the trial closed it, the scopes are probed again.
    let back = now();
    assert!(eventually(Duration::from_secs(5), || !platform
        .requests("/erp/entities/", back, i64::MAX)
        .is_empty()));

    // A reload that drops the refused scope: the connection is online
    // again, and says so.
    platform.set("orders", "403");
    assert!(eventually(Duration::from_secs(10), || row()["health"] == "degraded"));
    let without = text.replace(
        &format!("\n[[connection.scope]]\nid = \"orders\"\nurl = \"http://{addr}/erp/entities/orders\"\ninterval = \"{SCOPE_INTERVAL_MS}ms\"\n"),
        "",
    );
    assert_ne!(without, text);
    std::fs::write(&setup.config, &without).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(
        eventually(Duration::from_secs(10), || row()["health"] == "online"
            && row()["scopes"].as_array().is_some_and(|s| s.len() == 2)),
        "{}\n{}",
        row(),
        setup.daemon_log()
    );
    assert!(eventually(Duration::from_secs(5), || events(
        "connection.status_changed"
    )
    .last()
    .is_some_and(
        |(_, e)| e["data"]["previous"] == "degraded" && e["data"]["current"] == "online"
    )));

    // history --scope: that scope's probes and changes (kept after the
    // reload dropped it).
    let out = setup.cmd(&[
        "history", "erp", "--scope", "orders", "--since", "5m", "--json",
    ]);
    let items: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<(String, String)> = items
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "transition")
        .map(|i| {
            (
                i["previous"].as_str().unwrap().into(),
                i["current"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("online".into(), "permission_denied".into()))
            && kinds.contains(&("permission_denied".into(), "online".into())),
        "{kinds:?}"
    );
    assert_eq!(
        setup
            .cmd(&["history", "erp", "--scope", "nope"])
            .status
            .code(),
        Some(2)
    );

    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
    // The timeline, as the server and the receiver saw it.
    println!("--- timeline (ms after the first refusal) ---");
    let mut lines: Vec<(i64, String)> = got
        .lock()
        .unwrap()
        .iter()
        .map(|(at, e)| {
            let d = &e["data"];
            let what = match e["type"].as_str().unwrap() {
                "connection.scope_changed" => format!(
                    "receiver: scope_changed {} {}→{}",
                    d["scope"].as_str().unwrap_or(""),
                    d["previous"].as_str().unwrap_or(""),
                    d["current"].as_str().unwrap_or("")
                ),
                "connection.status_changed" => format!(
                    "receiver: status_changed {}→{} ({})",
                    d["previous"].as_str().unwrap_or(""),
                    d["current"].as_str().unwrap_or(""),
                    d["error"]["message"].as_str().unwrap_or("")
                ),
                other => format!("receiver: {other}"),
            };
            (*at, what)
        })
        .collect();
    // The scope probes (the status endpoint's, every 300 ms, are left out).
    for (at, path) in platform.requests("/erp/entities/", t_refused - 1_000, i64::MAX) {
        lines.push((at, format!("server:   GET {path}")));
    }
    lines.sort();
    for (at, what) in lines {
        println!("{:>7} {what}", at - t_refused);
    }
}
