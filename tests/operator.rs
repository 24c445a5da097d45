//! An operator's day with the real binary: `status` knows whether a daemon
//! keeps the database current, the read-only commands need no secret, and
//! the operator's tools (silences, forced probes) work end to end.

mod common;
use common::*;
use serde_json::Value;
use std::time::Duration;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn code(out: &std::process::Output) -> Option<i32> {
    out.status.code()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn status_knows_whether_the_daemon_runs() {
    let addr = scenario_server();
    let setup = Setup::new(&format!(
        "[daemon]\ndatabase = \"cw.db\"\nhistory_flush = \"1s\"\n\
         [[connection]]\nid = \"stable\"\nurl = \"http://{addr}/stable\"\ninterval = \"500ms\"\ntimeout = \"400ms\"\n"
    ));
    let mut d = setup.spawn_daemon(&[]);
    let up = eventually(Duration::from_secs(15), || {
        setup.db().exists() && code(&setup.cmd(&["status"])) == Some(0)
    });
    let out = setup.cmd(&["status"]);
    assert!(up, "{}\n{}", text(&out), setup.daemon_log());
    assert!(
        text(&out).starts_with("daemon: running (pid "),
        "{}",
        text(&out)
    );
    let rows = setup.status_json();
    assert_eq!(rows[0]["stale"], false);
    assert_eq!(rows[0]["next_probe_reason"], "cadence");

    // A clean stop is seen at once.
    assert_eq!(terminate(&mut d, Duration::from_secs(15)), Some(0));
    let out = setup.cmd(&["status"]);
    assert_eq!(code(&out), Some(3), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.starts_with("daemon: stopped "), "{shown}");
    assert!(shown.contains("- (not running)"), "{shown}");
    let out = setup.cmd(&["status", "--json"]);
    assert_eq!(code(&out), Some(3));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["stale"], true);
    assert_eq!(rows[0]["health"], "online", "the last known health stays");
    assert!(rows[0]["next_probe_at"].is_null());
    assert!(String::from_utf8_lossy(&out.stderr).contains("daemon: stopped"));

    // A daemon killed outright is seen when its heartbeat goes stale.
    let mut d = setup.spawn_daemon(&[]);
    assert!(eventually(Duration::from_secs(15), || code(
        &setup.cmd(&["status"])
    ) == Some(0)));
    d.kill().unwrap();
    d.wait().unwrap();
    let gone = eventually(Duration::from_secs(40), || {
        let out = setup.cmd(&["status"]);
        code(&out) == Some(3) && text(&out).contains("daemon: not running, last seen ")
    });
    assert!(gone, "{}", text(&setup.cmd(&["status"])));
}

/// The read-only commands, from a shell that has none of the daemon's
/// secret variables.
#[test]
fn read_only_commands_need_no_secret() {
    let addr = scenario_server();
    let hook = serve_on_thread(axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async { axum::http::StatusCode::BAD_REQUEST }),
    ));
    let setup = Setup::new(&format!(
        r#"
[daemon]
database = "cw.db"
history_flush = "1s"
audit_log = "audit.jsonl"
listen = "127.0.0.1:{admin}"
admin_token = "${{CW_ADMIN_TOKEN}}"

[defaults]
interval = "500ms"
timeout = "400ms"
headers = {{ Authorization = "Bearer ${{CW_PLATFORM_TOKEN}}" }}
breaker = {{ failure_threshold = 1, success_threshold = 1, open_for = "30s", max_open_for = "30s" }}

[[connection]]
id = "down"
url = "http://{addr}/offline"

[[sink]]
id = "hook"
kind = "webhook"
url = "http://{hook}/hook"
secret = "${{CW_WEBHOOK_SECRET}}"

[[sink]]
id = "pager"
kind = "pagerduty"
routing_key = "${{CW_PD_KEY}}"
url = "http://{hook}/hook"
"#,
        admin = free_port()
    ));
    let secrets = [
        ("CW_ADMIN_TOKEN", "admin-token-0123456789abcdef"),
        ("CW_PLATFORM_TOKEN", "platform-token"),
        ("CW_WEBHOOK_SECRET", SECRET),
        ("CW_PD_KEY", "pd-key"),
    ];
    let mut d = setup.spawn_daemon(&secrets);
    // The offline connection's events die at the webhook (400).
    let dead = eventually(Duration::from_secs(20), || {
        setup.db().exists()
            && setup.cmd(&["events", "--dead", "--json"]).status.success()
            && serde_json::from_slice::<Value>(&setup.cmd(&["events", "--dead", "--json"]).stdout)
                .is_ok_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
    });
    assert!(dead, "{}", setup.daemon_log());
    let event_id =
        serde_json::from_slice::<Value>(&setup.cmd(&["events", "--dead", "--json"]).stdout)
            .unwrap()[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
    for (args, want) in [
        (vec!["status"], Some(0)),
        (vec!["status", "--json"], Some(0)),
        (vec!["history", "down"], Some(0)),
        (vec!["history", "down", "--json"], Some(0)),
        (vec!["events"], Some(0)),
        (vec!["events", "--pending", "--json"], Some(0)),
        (vec!["events", "--dead"], Some(0)),
        (vec!["audit", "verify"], Some(0)),
        (vec!["silence", "list"], Some(0)),
        (
            vec![
                "silence",
                "add",
                "down",
                "--for",
                "1m",
                "--reason",
                "no secrets",
            ],
            Some(0),
        ),
        (
            vec!["events", "replay", &event_id, "--sink", "hook"],
            Some(0),
        ),
    ] {
        let out = setup.cmd(&args);
        assert_eq!(code(&out), want, "{args:?}: {}", text(&out));
        assert!(
            !text(&out).contains("is not set"),
            "{args:?}: {}",
            text(&out)
        );
    }
    assert_eq!(terminate(&mut d, Duration::from_secs(15)), Some(0));
    // What needs the secrets says which one is missing.
    let out = setup.cmd(&["check"]);
    assert_eq!(code(&out), Some(2));
    assert!(
        text(&out).contains("CW_PLATFORM_TOKEN is not set"),
        "{}",
        text(&out)
    );
}

/// A platform that reports its last sync at `/last_sync/…`, three hours ago.
fn sync_platform() -> std::net::SocketAddr {
    serve_on_thread(axum::Router::new().route(
        "/status",
        axum::routing::get(|| async {
            let at = chrono::Utc::now() - chrono::Duration::hours(3);
            axum::Json(serde_json::json!({
                "status": "online",
                "last_sync": {"status": "completed", "finished_at": at.to_rfc3339()}
            }))
        }),
    ))
}

#[test]
fn a_wrong_sync_pointer_is_shown_not_silent() {
    let addr = sync_platform();
    let setup = Setup::new(&format!(
        "[daemon]\ndatabase = \"cw.db\"\nhistory_flush = \"1s\"\n\
         [[connection]]\nid = \"wrong\"\nurl = \"http://{addr}/status\"\ninterval = \"300ms\"\ntimeout = \"250ms\"\n\
         expect = {{ sync = {{ max_age = \"1h\" }} }}\n\
         [[connection]]\nid = \"right\"\nurl = \"http://{addr}/status\"\ninterval = \"300ms\"\ntimeout = \"250ms\"\n\
         expect = {{ sync = {{ status = \"/last_sync/status\", finished_at = \"/last_sync/finished_at\", max_age = \"1h\" }} }}\n"
    ));
    // check names the pointers each connection reads.
    let out = setup.cmd(&["check"]);
    let plan = text(&out);
    let wrong = plan.lines().find(|l| l.starts_with("wrong")).unwrap();
    assert!(
        wrong.contains("status at /status")
            && wrong.contains("sync at /sync/status and /sync/finished_at, stale after 1h"),
        "{plan}"
    );
    // probe shows what it read, and that the sync pointer found nothing.
    let out = setup.cmd(&["probe", "wrong"]);
    assert_eq!(code(&out), Some(0));
    let shown = text(&out);
    assert!(shown.contains("read /status: \"online\""), "{shown}");
    assert!(
        shown.contains("read /sync/finished_at: absent from the body"),
        "{shown}"
    );
    let out = setup.cmd(&["probe", "right", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "degraded", "{v}");
    assert_eq!(v["error"]["kind"], "stale_sync");
    assert_eq!(v["read"]["/last_sync/status"], "\"completed\"");
    // The daemon says so once, in the log and in status.
    let mut d = setup.spawn_daemon(&[]);
    let noted = eventually(Duration::from_secs(15), || {
        setup.db().exists()
            && setup
                .status_json()
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == "wrong" && r["notes"][0] == "sync_pointer_missing")
    });
    let status = text(&setup.cmd(&["status"]));
    assert_eq!(terminate(&mut d, Duration::from_secs(15)), Some(0));
    assert!(noted, "{status}");
    assert!(status.contains("online (sync pointer missing)"), "{status}");
    let log = setup.daemon_log();
    assert_eq!(
        log.matches("no sync finish time at the configured pointer")
            .count(),
        1,
        "{log}"
    );
    let right = setup
        .status_json()
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "right")
        .cloned()
        .unwrap();
    assert_eq!(right["health"], "degraded", "{right}");
    assert!(right["notes"].as_array().unwrap().is_empty());
}

/// A webhook receiver: the envelopes it got.
fn hook() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
) {
    let got: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let g = g.clone();
            async move {
                g.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                axum::http::StatusCode::OK
            }
        }),
    );
    (serve_on_thread(app), got)
}

fn changes(got: &std::sync::Arc<std::sync::Mutex<Vec<Value>>>, id: &str) -> Vec<(String, String)> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|e| e["connection_id"] == id && e["type"] == "connection.status_changed")
        .map(|e| {
            (
                e["data"]["previous"].as_str().unwrap_or("").to_string(),
                e["data"]["current"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn row(setup: &Setup, id: &str) -> Value {
    setup
        .status_json()
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

const TOKEN: &str = "operator-test-token-0123456789";

fn config(
    addr: std::net::SocketAddr,
    hook: std::net::SocketAddr,
    admin: u16,
    extra: &str,
) -> String {
    format!(
        r#"
[daemon]
database = "cw.db"
history_flush = "1s"
audit_log = "audit.jsonl"
listen = "127.0.0.1:{admin}"
admin_token = "{TOKEN}"

[defaults]
interval = "300ms"
timeout = "250ms"
breaker = {{ failure_threshold = 2, success_threshold = 1, open_for = "1m", max_open_for = "2m" }}

[[connection]]
id = "erp"
url = "http://{addr}/c/erp"

[[connection]]
id = "crm"
url = "http://{addr}/c/crm"

[[sink]]
id = "hook"
kind = "webhook"
url = "http://{hook}/hook"
{extra}
"#
    )
}

#[test]
fn silences_hold_events_and_one_catch_up_follows() {
    let (addr, platform) = platform();
    let (hook_addr, got) = hook();
    let admin = free_port();
    let setup = Setup::new(&config(addr, hook_addr, admin, ""));
    let mut d = setup.spawn_daemon(&[]);
    assert!(eventually(Duration::from_secs(15), || setup.db().exists()
        && row(&setup, "erp")["health"] == "online"
        && row(&setup, "crm")["health"] == "online"));

    // Wrong requests say what is wrong.
    for (args, says) in [
        (
            vec!["silence", "add", "erp", "--reason", "x"],
            "say how long",
        ),
        (
            vec!["silence", "add", "nope", "--for", "1h", "--reason", "x"],
            "no connection \"nope\"",
        ),
        (
            vec!["silence", "add", "erp", "--for", "1h", "--reason", " "],
            "say why",
        ),
        (
            vec![
                "silence", "add", "erp", "--all", "--for", "1h", "--reason", "x",
            ],
            "not both",
        ),
        (
            vec!["silence", "add", "erp", "--for", "90d", "--reason", "x"],
            "1s to 30d",
        ),
        (vec!["silence", "end", "sil_nope"], "no silence"),
    ] {
        let out = setup.cmd(&args);
        assert_eq!(code(&out), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }

    // Silence erp for an hour; it goes down: recorded, held, not sent.
    let out = setup.cmd(&[
        "silence",
        "add",
        "erp",
        "--for",
        "1h",
        "--reason",
        "ERP upgrade",
    ]);
    assert_eq!(code(&out), Some(0), "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown.contains(": erp silenced until ") && shown.contains("(ERP upgrade)"),
        "{shown}"
    );
    let sil = shown.split(':').next().unwrap().trim().to_string();
    assert!(sil.starts_with("sil_"), "{shown}");
    assert!(eventually(Duration::from_secs(5), || row(&setup, "erp")
        ["suppressed"]
        == "silenced"));
    let r = row(&setup, "erp");
    assert_eq!(r["silence"]["id"], sil.as_str());
    assert_eq!(r["silence"]["reason"], "ERP upgrade");
    let shown = text(&setup.cmd(&["status"]));
    assert!(shown.contains("silenced (ends in "), "{shown}");
    let list = text(&setup.cmd(&["silence", "list"]));
    assert!(
        list.contains(&sil) && list.contains("ERP upgrade") && list.contains("cli:"),
        "{list}"
    );
    platform.set("erp", "down");
    assert!(eventually(Duration::from_secs(10), || row(&setup, "erp")
        ["health"]
        == "offline"));
    std::thread::sleep(Duration::from_secs(1));
    assert!(changes(&got, "erp").is_empty(), "sent during the silence");

    // Ended early: one catch-up, at once.
    let ended_at = std::time::Instant::now();
    let out = setup.cmd(&["silence", "end", &sil]);
    assert_eq!(code(&out), Some(0), "{}", text(&out));
    assert!(eventually(Duration::from_secs(5), || !changes(&got, "erp").is_empty()));
    let took = ended_at.elapsed();
    assert_eq!(
        changes(&got, "erp"),
        [("online".to_string(), "offline".to_string())]
    );
    assert!(took < Duration::from_secs(4), "catch-up after {took:?}");

    // Through the API: every connection for 2 s; erp recovers meanwhile,
    // and the silence's expiry brings the resolve.
    let (s, _, body) = http_req(admin, "POST", "/api/v1/silences", &[]).unwrap();
    assert_eq!(s, 401, "the token is needed: {body}");
    let bearer = format!("Bearer {TOKEN}");
    let auth = [
        ("Authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let (s, _, body) = http_send(
        admin,
        "POST",
        "/api/v1/silences",
        &auth,
        r#"{"all": true, "for": "2s", "reason": "network change"}"#,
    )
    .unwrap();
    assert_eq!(s, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(created["reason"], "network change", "{created}");
    assert_eq!(created["active"], true, "{created}");
    assert!(
        created["connections"].is_null(),
        "every connection: {created}"
    );
    let (s, _, body) = http_send(
        admin,
        "POST",
        "/api/v1/silences",
        &auth,
        r#"{"all": true, "reason": "x"}"#,
    )
    .unwrap();
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("say how long"), "{body}");
    let (s, _, body) = http_req(admin, "GET", "/api/v1/silences", &[]).unwrap();
    assert_eq!(s, 200);
    assert!(body.contains("network change"), "{body}");
    platform.set("erp", "up");
    assert!(eventually(Duration::from_secs(10), || changes(&got, "erp")
        .len()
        == 2));
    assert_eq!(
        changes(&got, "erp")[1],
        ("offline".to_string(), "online".to_string())
    );
    assert_eq!(terminate(&mut d, Duration::from_secs(15)), Some(0));

    // The audit log says who silenced what, and why.
    let audit = std::fs::read_to_string(setup.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"silence_add\"") && audit.contains("ERP upgrade"),
        "{audit}"
    );
    assert!(audit.contains("\"silence_end\""), "{audit}");
    // Events during the silence were recorded, held.
    let db = rusqlite::Connection::open(setup.db()).unwrap();
    let held: i64 = db
        .query_row(
            "SELECT count(*) FROM events WHERE suppressed = 'silenced'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(held >= 1, "{held}");
}

#[test]
fn after_fixing_credentials_a_forced_probe_sees_it_at_once() {
    let (addr, platform) = platform();
    let (hook_addr, _got) = hook();
    let admin = free_port();
    platform.set("erp", "401");
    let setup = Setup::new(&config(addr, hook_addr, admin, ""));
    let mut d = setup.spawn_daemon(&[]);
    assert!(eventually(Duration::from_secs(15), || setup.db().exists()
        && row(&setup, "erp")["health"] == "auth_required"));
    let r = row(&setup, "erp");
    assert_eq!(r["next_probe_reason"], "auth_backoff", "{r}");

    // The credentials are fixed. A plain request waits for the hold...
    platform.set("erp", "up");
    let bearer = format!("Bearer {TOKEN}");
    let (s, _, body) = http_req(
        admin,
        "POST",
        "/api/v1/connections/erp/probe",
        &[("Authorization", bearer.as_str())],
    )
    .unwrap();
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("auth_backoff"), "{body}");
    // ...a forced one goes now, and one probe confirms it (success_threshold 1).
    let asked = std::time::Instant::now();
    let out = setup.cmd(&["probe", "erp", "--now"]);
    assert_eq!(code(&out), Some(0), "{}", text(&out));
    assert!(text(&out).contains("erp: probing now"), "{}", text(&out));
    assert!(eventually(Duration::from_secs(5), || row(&setup, "erp")
        ["health"]
        == "online"));
    eprintln!(
        "forced probe: online {:?} after the request",
        asked.elapsed()
    );
    assert!(asked.elapsed() < Duration::from_secs(5));
    let out = setup.cmd(&["probe", "nope", "--now"]);
    assert_eq!(code(&out), Some(2), "{}", text(&out));

    // A reload that shortens auth_interval shortens a hold in force.
    platform.set("crm", "401");
    assert!(eventually(Duration::from_secs(10), || row(&setup, "crm")
        ["health"]
        == "auth_required"));
    let until = |r: &Value| {
        chrono::DateTime::parse_from_rfc3339(
            r["next_probe_at"]
                .as_str()
                .unwrap_or("1970-01-01T00:00:00Z"),
        )
        .unwrap()
        .timestamp_millis()
            - chrono::Utc::now().timestamp_millis()
    };
    assert!(until(&row(&setup, "crm")) > 200_000, "5 min auth_interval");
    std::fs::write(
        &setup.config,
        config(addr, hook_addr, admin, "")
            .replace("[defaults]\n", "[defaults]\nauth_interval = \"2s\"\n"),
    )
    .unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &d.id().to_string()])
        .status()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let r = row(&setup, "crm");
            r["next_probe_reason"] != "auth_backoff" || until(&r) <= 2_500
        }),
        "{}",
        row(&setup, "crm")
    );
    assert_eq!(terminate(&mut d, Duration::from_secs(15)), Some(0));
    let audit = std::fs::read_to_string(setup.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"api_probe\"") && audit.contains("\"force\":true"),
        "{audit}"
    );
}

#[test]
fn the_end_of_a_maintenance_window_probes_at_once() {
    let (addr, platform) = platform();
    let (hook_addr, got) = hook();
    let admin = free_port();
    // A one-shot window (exact second, UTC) from 2 s to 8 s from now.
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let schedule = at.format("%-S %-M %-H %-d %-m *").to_string();
    let window = format!(
        "[[maintenance]]\nconnections = [\"erp\", \"crm\"]\nschedule = \"{schedule}\"\nduration = \"6s\"\n"
    );
    let setup = Setup::new(&config(addr, hook_addr, admin, &window));
    let started = std::time::Instant::now();
    let mut d = setup.spawn_daemon(&[]);
    assert!(eventually(Duration::from_secs(5), || setup.db().exists()
        && row(&setup, "erp")["health"] == "online"));
    // Inside the window both go down; their circuits open for a minute.
    std::thread::sleep(Duration::from_millis(3_000).saturating_sub(started.elapsed()));
    platform.set("erp", "down");
    platform.set("crm", "down");
    assert!(eventually(Duration::from_secs(4), || row(&setup, "erp")
        ["circuit"]
        == "open"
        && row(&setup, "crm")["circuit"] == "open"));
    // erp comes back before the window ends; crm does not.
    platform.set("erp", "up");
    // The window ends 8 s after the start: both are probed at once, past
    // their circuits' one-minute waits.
    assert!(eventually(Duration::from_secs(12), || {
        row(&setup, "erp")["health"] == "online" && !changes(&got, "crm").is_empty()
    }));
    let took = started.elapsed();
    assert_eq!(terminate(&mut d, Duration::from_secs(15)), Some(0));
    eprintln!("window end: receivers up to date {took:?} after start (window ends at 8 s)");
    assert!(took < Duration::from_secs(12), "{took:?}");
    // erp's outage came and went inside the window: nothing to tell.
    assert!(
        changes(&got, "erp").is_empty(),
        "{:?}",
        changes(&got, "erp")
    );
    assert_eq!(
        changes(&got, "crm"),
        [("online".to_string(), "offline".to_string())]
    );
}
