//! End to end: the real `connwatch run` binary against a real scenario server
//! on loopback, read back through `status --json` and `history --json`.

mod common;
use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

const SCENARIOS: &[(&str, &str)] = &[
    ("stable", "online"),
    ("goes-down", "offline"),
    ("auth", "auth_required"),
    ("ratelimit", "rate_limited"),
    ("slow", "unreachable"),
    ("endless", "invalid"),
    ("malformed", "invalid"),
    ("offline", "offline"),
    ("degraded", "degraded"),
];

fn config(addr: std::net::SocketAddr) -> String {
    let mut s = String::from(
        r#"
[daemon]
database = "cw.db"
history_flush = "1s"
log_level = "debug"

[defaults]
interval = "1s"
timeout = "800ms"
breaker = { failure_threshold = 3, success_threshold = 2 }
"#,
    );
    for (path, _) in SCENARIOS {
        s.push_str(&format!(
            "\n[[connection]]\nid = \"{path}\"\nurl = \"http://{addr}/{path}\"\n"
        ));
    }
    s
}

fn healths(v: &Value) -> HashMap<String, String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["health"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn daemon_confirms_each_scenario_and_exits_cleanly() {
    let addr = scenario_server();
    let setup = Setup::new(&config(addr));
    let mut daemon = setup.spawn_daemon(&[]);

    let expected: HashMap<String, String> = SCENARIOS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut last = HashMap::new();
    let reached = eventually(Duration::from_secs(40), || {
        if !setup.db().exists() {
            return false;
        }
        last = healths(&setup.status_json());
        last == expected
    });
    if !reached {
        let _ = daemon.kill();
        panic!(
            "health never matched.\nexpected {expected:?}\ngot      {last:?}\nlog:\n{}",
            setup.daemon_log()
        );
    }

    // status --json carries the contract's fields and the right error kinds.
    let status = setup.status_json();
    let by_id: HashMap<&str, &Value> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c))
        .collect();
    for c in by_id.values() {
        for key in [
            "id",
            "health",
            "circuit",
            "since",
            "last_outcome",
            "last_probe_at",
            "last_error",
        ] {
            assert!(c.get(key).is_some(), "{key} missing in {c}");
        }
        // Failures open the circuit (same threshold that confirms health);
        // rate limits, auth and degraded never do.
        let failing = matches!(
            c["health"].as_str(),
            Some("offline" | "unreachable" | "invalid")
        );
        let circuit = c["circuit"].as_str().unwrap();
        if failing {
            assert!(circuit == "open" || circuit == "half_open", "{c}");
        } else {
            assert_eq!(circuit, "closed", "{c}");
        }
    }
    assert_eq!(by_id["ratelimit"]["next_probe_reason"], "retry_after");
    assert_eq!(by_id["auth"]["next_probe_reason"], "auth_backoff");
    assert_eq!(by_id["stable"]["next_probe_reason"], "cadence");
    assert_eq!(by_id["slow"]["last_error"]["kind"], "timeout");
    assert_eq!(by_id["endless"]["last_error"]["kind"], "body");
    assert!(by_id["endless"]["last_error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_body"));
    assert_eq!(by_id["malformed"]["last_error"]["kind"], "body");
    assert_eq!(by_id["offline"]["last_error"]["kind"], "reported");
    assert_eq!(by_id["goes-down"]["last_error"]["kind"], "http_status");
    assert_eq!(by_id["goes-down"]["last_error"]["http_status"], 503);
    assert_eq!(by_id["auth"]["last_error"]["kind"], "auth");
    assert!(by_id["stable"]["last_error"].is_null());
    assert!(by_id["stable"]["resolve_within_s"].is_null(), "online");
    assert!(by_id["stable"]["next_trial_at"].is_null());
    assert!(
        by_id["auth"]["resolve_within_s"].as_i64().unwrap() > 250,
        "auth_interval 5m"
    );
    assert!(by_id["stable"]["since"].is_string());

    // The human table is aligned and names every connection.
    let out = setup.cmd(&["status"]);
    assert_eq!(out.status.code(), Some(0), "the daemon runs");
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().skip(1).collect();
    assert!(table.starts_with("daemon: running (pid "), "{table}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("HEALTH"),
        "{table}"
    );
    assert_eq!(lines.len(), SCENARIOS.len() + 1, "{table}");
    let col = lines[0].find("HEALTH").unwrap();
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.chars().nth(col - 1) == Some(' ')),
        "{table}"
    );

    // history: goes-down has online probes, then failures, then the transition.
    let out = setup.cmd(&["history", "goes-down", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hist: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = hist.iter().map(|h| h["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"online_run"), "{kinds:?}");
    let offline_probes = hist
        .iter()
        .filter(|h| h["type"] == "probe" && h["outcome"] == "offline")
        .count();
    assert!(offline_probes >= 3, "{hist:?}");
    let changes: Vec<(&str, &str)> = hist
        .iter()
        .filter(|h| h["type"] == "transition")
        .map(|h| {
            (
                h["previous"].as_str().unwrap(),
                h["current"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(changes, vec![("unknown", "online"), ("online", "offline")]);
    let times: Vec<&str> = hist.iter().map(|h| h["at"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "history is oldest first");

    // The outbox holds one status_changed event per transition, but for
    // online baselines (the first confirmed health, online), which are
    // recorded in history and told to no one.
    let db = rusqlite::Connection::open(setup.db()).unwrap();
    let (transitions, baselines, events): (i64, i64, i64) = db
        .query_row(
            "SELECT (SELECT count(*) FROM transitions),
                    (SELECT count(*) FROM transitions WHERE previous = 'unknown' AND current = 'online'),
                    (SELECT count(*) FROM events WHERE type = 'connection.status_changed')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!(transitions >= SCENARIOS.len() as i64);
    assert!(baselines >= 1, "stable and goes-down start online");
    assert_eq!(transitions - baselines, events);
    let told_baselines: i64 = db
        .query_row(
            "SELECT count(*) FROM events WHERE type = 'connection.status_changed'
             AND json_extract(envelope, '$.data.previous') = 'unknown' AND json_extract(envelope, '$.data.current') = 'online'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(told_baselines, 0);
    let env: String = db
        .query_row("SELECT envelope FROM events e JOIN connections c ON c.key = e.conn WHERE c.id = 'auth' AND e.type = 'connection.auth_required'", [], |r| r.get(0))
        .unwrap();
    let env: Value = serde_json::from_str(&env).unwrap();
    assert!(env["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(env["connection_id"], "auth");
    assert_eq!(env["data"]["auth_interval_s"], 300);
    assert!(env["data"]["next_probe_at"].is_string());
    let changed: String = db
        .query_row("SELECT envelope FROM events e JOIN connections c ON c.key = e.conn WHERE c.id = 'auth' AND e.type = 'connection.status_changed'", [], |r| r.get(0))
        .unwrap();
    let changed: Value = serde_json::from_str(&changed).unwrap();
    assert_eq!(changed["data"]["previous"], "unknown");
    assert_eq!(changed["data"]["current"], "auth_required");
    // Failing connections also opened their circuits, in the same outbox.
    let opened: i64 = db
        .query_row(
            "SELECT count(*) FROM events WHERE type = 'circuit.opened'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(opened >= 5, "{opened}");

    // SIGTERM: drain and exit 0.
    let code = terminate(&mut daemon, Duration::from_secs(15));
    assert_eq!(code, Some(0), "log:\n{}", setup.daemon_log());
    assert!(setup.daemon_log().contains("stopped"));
}

#[test]
fn health_survives_a_restart() {
    let addr = scenario_server();
    let setup = Setup::new(&format!(
        "[daemon]\ndatabase = \"cw.db\"\nhistory_flush = \"1s\"\n[defaults]\ninterval = \"1s\"\ntimeout = \"800ms\"\n\
         [[connection]]\nid = \"offline\"\nurl = \"http://{addr}/offline\"\n"
    ));
    let mut d = setup.spawn_daemon(&[]);
    assert!(eventually(Duration::from_secs(20), || setup.db().exists()
        && healths(&setup.status_json())
            .get("offline")
            .map(String::as_str)
            == Some("offline")));
    assert_eq!(terminate(&mut d, Duration::from_secs(15)), Some(0));
    let since = setup.status_json()[0]["since"].clone();

    let mut d = setup.spawn_daemon(&[]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(terminate(&mut d, Duration::from_secs(15)), Some(0));
    let after = setup.status_json();
    assert_eq!(after[0]["health"], "offline");
    assert_eq!(after[0]["since"], since, "no new transition after restart");
    let db = rusqlite::Connection::open(setup.db()).unwrap();
    let n: i64 = db
        .query_row("SELECT count(*) FROM transitions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}
