//! An upgrade keeps the database: `tests/fixtures/upgrade/schema8.db` was
//! written by the release before discovery (schema version 8) running
//! `schema8.toml` against its sandbox for 30 s, then stopped: three
//! connections (online, offline behind an open circuit, auth_required), 7
//! history items for the offline one, and 6 events still pending for a
//! webhook that refused them. `schema8.json` holds what that release's
//! `status`, `events` and `history` said about it.
//!
//! The new binary opens a copy, migrates it, and goes on: the health, its
//! `since` and the history are the fixture's, and the 6 pending events are
//! delivered once the webhook answers. The copy is first moved forward in
//! time by whole hours (every stored time shifted alike), as if the old
//! daemon had stopped within the last hour: otherwise the events would
//! pass the sink's `max_age` (at most 30 days) as the fixture ages and be
//! declared dead, which is right for old events but not what this test is
//! about.

mod common;
use common::*;
use serde_json::Value;
use std::time::Duration;

const HOUR: i64 = 3_600_000;

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

#[test]
fn a_database_of_the_previous_schema_opens_migrates_and_delivers_what_was_pending() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade");
    let facts: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("schema8.json")).unwrap())
            .unwrap();
    let (addr, platform) = platform();
    platform.set("cmms-cycling", "down");
    platform.set("eam-expiring", "401");
    let (hook, got) = hook_receiver();
    let s = Setup::new(&format!(
        r#"
[daemon]
database = "cw.db"
history_flush = "1s"

[defaults]
interval = "1s"
timeout = "900ms"
breaker = {{ failure_threshold = 3, success_threshold = 2, open_for = "5s", max_open_for = "10s" }}

[[connection]]
id = "erp-stable"
name = "ERP"
url = "http://{addr}/c/erp-stable"

[[connection]]
id = "cmms-cycling"
name = "CMMS"
url = "http://{addr}/c/cmms-cycling"

[[connection]]
id = "eam-expiring"
name = "EAM"
url = "http://{addr}/c/eam-expiring"

[[sink]]
id = "hook"
kind = "webhook"
url = "http://{hook}/hook"
"#
    ));
    std::fs::copy(fixture.join("schema8.db"), s.db()).unwrap();

    // Age the copy to now, by whole hours (rollups sit on hour starts).
    let delta = {
        let db = rusqlite::Connection::open(s.db()).unwrap();
        let version: i64 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, facts["schema_version"].as_i64().unwrap());
        let last: i64 = db
            .query_row("SELECT max(at) FROM events", [], |r| r.get(0))
            .unwrap();
        let delta = (connwatch::model::now_ms() - last).max(0) / HOUR * HOUR;
        for sql in [
            "UPDATE probes SET at = at + ?1",
            "UPDATE probe_runs SET first_at = first_at + ?1, last_at = last_at + ?1",
            "UPDATE transitions SET at = at + ?1",
            "UPDATE events SET at = at + ?1",
            "UPDATE deliveries SET next_at = next_at + ?1",
            "UPDATE delivery_attempts SET at = at + ?1",
            "UPDATE rollups SET hour = hour + ?1",
            "UPDATE connections SET health_since = health_since + ?1 WHERE health_since IS NOT NULL",
            "UPDATE connections SET hold_until = hold_until + ?1 WHERE hold_until IS NOT NULL",
        ] {
            db.execute(sql, [delta]).unwrap();
        }
        delta
    };

    let mut daemon = s.spawn_daemon(&[]);
    let pending: Vec<String> = facts["pending_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let delivered = |got: &Hooked| -> Vec<String> {
        envelopes(got)
            .iter()
            .filter_map(|v| v["id"].as_str().map(str::to_string))
            .filter(|id| pending.contains(id))
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(20), || {
            let d = delivered(&got);
            pending.iter().all(|p| d.contains(p))
        }),
        "the 6 pending events delivered; got {:?}; log:\n{}",
        delivered(&got),
        s.daemon_log()
    );
    // Per connection, in the order they were stored.
    let d = delivered(&got);
    for conn in ["cmms-cycling", "eam-expiring"] {
        let by_conn = |ids: &[String]| -> Vec<String> {
            let all = envelopes(&got);
            ids.iter()
                .filter(|id| {
                    all.iter()
                        .any(|v| v["id"] == id.as_str() && v["connection_id"] == conn)
                })
                .cloned()
                .collect()
        };
        let mut want = by_conn(&pending);
        want.dedup();
        let mut seen = by_conn(&d);
        seen.dedup();
        assert_eq!(seen, want, "{conn}: delivered in stored order");
    }

    // States and their `since` carried over (the health has not changed:
    // the endpoints answer as before).
    let status = s.status_json();
    for r in status.as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        assert_eq!(r["health"], facts["health"][id], "{id}");
        assert_eq!(
            ms(r["since"].as_str().unwrap()),
            ms(facts["since"][id].as_str().unwrap()) + delta,
            "{id}: since carried over"
        );
    }
    // History intact: the fixture's transitions are still there.
    let out = s.cmd(&["history", "cmms-cycling", "--json", "--since", "30d"]);
    let history: Value = serde_json::from_slice(&out.stdout).unwrap();
    let transitions: Vec<(String, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["type"] == "transition")
        .map(|x| {
            (
                x["previous"].as_str().unwrap().to_string(),
                x["current"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> =
        serde_json::from_value(facts["cmms_transitions"].clone()).unwrap();
    assert_eq!(transitions, want, "history intact");
    assert!(
        history.as_array().unwrap().len() >= facts["cmms_history_items"].as_u64().unwrap() as usize
    );

    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
    let db = rusqlite::Connection::open(s.db()).unwrap();
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert!(version > 8, "migrated to {version}");
    println!(
        "schema 8 -> {version}: {} pending events delivered, states and history kept",
        pending.len()
    );
}
