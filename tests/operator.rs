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
