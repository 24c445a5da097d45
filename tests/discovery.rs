//! Discovery and shards with the real binary: loopback list servers in
//! each format (`list`, `http_sd`, `file`), connections that join and leave
//! a running daemon without a missed probe of the others, a source that
//! fails, answers garbage and then an empty list, a restart while the
//! source is down; and three shards that split 300 connections.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn now() -> i64 {
    connwatch::model::now_ms()
}

/// The list server's answer: a list of ids, HTTP 500, or garbage.
#[derive(Clone)]
enum Answer {
    Ids(Vec<String>),
    Fail,
    Garbage,
}

/// A list source and the status endpoints of what it lists: each status
/// request is logged with its time and the shard header.
#[derive(Clone)]
struct Platform {
    answer: Arc<Mutex<Answer>>,
    log: Arc<Mutex<Vec<(i64, String, String)>>>,
}

impl Platform {
    fn set(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }

    /// Probe times per id.
    fn probes(&self) -> HashMap<String, Vec<i64>> {
        let mut out: HashMap<String, Vec<i64>> = HashMap::new();
        for (t, id, _) in self.log.lock().unwrap().iter() {
            out.entry(id.clone()).or_default().push(*t);
        }
        out
    }

    /// The shards (header) that probed each id.
    fn probed_by(&self) -> HashMap<String, std::collections::BTreeSet<String>> {
        let mut out: HashMap<String, std::collections::BTreeSet<String>> = HashMap::new();
        for (_, id, shard) in self.log.lock().unwrap().iter() {
            out.entry(id.clone()).or_default().insert(shard.clone());
        }
        out
    }
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("d{i:03}")).collect()
}

fn platform() -> (std::net::SocketAddr, Platform) {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    let p = Platform {
        answer: Arc::new(Mutex::new(Answer::Ids(Vec::new()))),
        log: Arc::default(),
    };
    let app = axum::Router::new()
        .route(
            "/api/v1/connections",
            axum::routing::get(|State(p): State<Platform>, h: HeaderMap| async move {
                if h.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer list-token") {
                    return (StatusCode::UNAUTHORIZED, String::new());
                }
                match p.answer.lock().unwrap().clone() {
                    Answer::Ids(ids) => {
                        let data: Vec<Value> = ids
                            .iter()
                            .map(|id| json!({"id": id, "name": format!("Connection {id}")}))
                            .collect();
                        (StatusCode::OK, json!({"data": data, "total": ids.len()}).to_string())
                    }
                    Answer::Fail => (StatusCode::INTERNAL_SERVER_ERROR, "oops".into()),
                    Answer::Garbage => (StatusCode::OK, "<html>maintenance</html>".into()),
                }
            }),
        )
        .route(
            "/sd",
            axum::routing::get(|| async {
                json!([
                    {"targets": ["erp.example:443", "mes.example:8443"], "labels": {"env": "prod"}},
                    {"targets": ["cmms.example:80"], "labels": {"env": "test", "id": "cmms-main", "name": "CMMS"}}
                ])
                .to_string()
            }),
        )
        .route(
            "/status/{id}",
            axum::routing::get(
                |State(p): State<Platform>, Path(id): Path<String>, h: HeaderMap| async move {
                    let shard = h
                        .get("x-shard")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    p.log.lock().unwrap().push((now(), id, shard));
                    (StatusCode::OK, r#"{"status":"online"}"#)
                },
            ),
        )
        .with_state(p.clone());
    (serve_on_thread(app), p)
}

type Got = Hooked;

fn count(got: &Got, kind: &str) -> usize {
    envelopes(got).iter().filter(|v| v["type"] == kind).count()
}

/// Ids in `status --json`, with their origin.
fn watched(s: &Setup) -> BTreeMap<String, Value> {
    let out = s.cmd(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["origin"].clone()))
        .collect()
}

const INTERVAL_MS: i64 = 500;
const REFRESH_MS: u64 = 1_000;

#[test]
fn a_list_joins_and_leaves_a_running_daemon_and_survives_its_source() {
    let t0 = std::time::Instant::now();
    let (addr, platform) = platform();
    let (hook, got) = hook_receiver();
    platform.set(Answer::Ids(ids(0..50)));
    let text = format!(
        r#"
[daemon]
database = "cw.db"
history_flush = "1s"
instance = "host-a"

[[connection]]
id = "d007"
name = "configured wins"
url = "http://{addr}/status/d007"
interval = "{INTERVAL_MS}ms"
timeout = "400ms"

[[discovery]]
id = "platform"
format = "list"
url = "http://{addr}/api/v1/connections"
items = "/data"
name_pointer = "/name"
status_url = "http://{addr}/status/{{id}}"
refresh = "{REFRESH_MS}ms"
headers = {{ Authorization = "Bearer ${{LIST_TOKEN}}" }}
template = {{ interval = "{INTERVAL_MS}ms", timeout = "400ms" }}

[[sink]]
id = "hook"
kind = "webhook"
url = "http://{hook}/hook"
"#
    );
    let s = Setup::new(&text);
    let env = [("LIST_TOKEN", "list-token")];
    let check = s.cmd_env(&["check", "--discover"], &env);
    let out = String::from_utf8_lossy(&check.stdout);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        out.contains("discovery \"platform\": 50 listed, 0 skipped; this shard would add 49"),
        "{out}"
    );
    assert!(
        out.contains("d007: left out, the configuration file has this id"),
        "{out}"
    );

    // 1. Fifty listed: watched within one refresh of the start.
    let mut daemon = s.spawn_daemon(&env);
    let started = now();
    assert!(
        eventually(Duration::from_secs(10), || watched(&s).len() == 50),
        "50 watched; log:\n{}",
        s.daemon_log()
    );
    let w = watched(&s);
    assert_eq!(w["d001"], "platform");
    assert_eq!(w["d007"], Value::Null, "the configured d007 wins");
    assert!(
        s.daemon_log()
            .contains("a discovered connection has the id of one from the configuration file"),
        "{}",
        s.daemon_log()
    );
    let first_ms = now() - started;
    println!("50 discovered connections watched {first_ms} ms after the start");
    assert!(eventually(Duration::from_secs(5), || count(
        &got,
        "connection.discovered"
    ) == 49));
    let ev = envelopes(&got)
        .into_iter()
        .find(|v| v["type"] == "connection.discovered")
        .unwrap();
    assert_eq!(ev["instance"], "host-a");
    assert_eq!(ev["data"]["source"], "platform");
    assert!(eventually(Duration::from_secs(5), || s.all_online()));

    // 2. Ten added and five removed while running: no missed probe of the
    // forty-five others.
    let change_at = now();
    let mut next = ids(5..60);
    next.retain(|_| true);
    platform.set(Answer::Ids(next));
    assert!(
        eventually(Duration::from_secs(10), || {
            let w = watched(&s);
            w.len() == 55 && w.contains_key("d059") && !w.contains_key("d004")
        }),
        "55 watched; log:\n{}",
        s.daemon_log()
    );
    std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS as u64));
    let until = now();
    let probes = platform.probes();
    let mut worst = 0;
    for id in ids(5..50) {
        let times: Vec<i64> = probes[&id]
            .iter()
            .copied()
            .filter(|t| *t >= change_at - 2 * INTERVAL_MS && *t <= until)
            .collect();
        assert!(times.len() >= 4, "{id}: {times:?}");
        for w in times.windows(2) {
            worst = worst.max(w[1] - w[0]);
        }
    }
    println!("largest gap between two probes of the 45 kept connections across the change: {worst} ms (interval {INTERVAL_MS} ms)");
    assert!(
        worst < 2 * INTERVAL_MS - 100,
        "a probe was missed: gap {worst} ms"
    );
    assert!(eventually(Duration::from_secs(5), || {
        count(&got, "connection.discovered") == 59 && count(&got, "connection.retired") == 5
    }));
    assert!(
        probes.contains_key("d059"),
        "the added connections are probed"
    );

    // 3. The source fails, then answers garbage: the set stays, and one
    // system.error says so.
    platform.set(Answer::Fail);
    assert!(eventually(Duration::from_secs(5), || count(
        &got,
        "system.error"
    ) == 1));
    let err = envelopes(&got)
        .into_iter()
        .find(|v| v["type"] == "system.error")
        .unwrap();
    assert_eq!(err["data"]["component"], "discovery");
    assert!(
        err["data"]["message"]
            .as_str()
            .unwrap()
            .contains("HTTP 500"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("list-token"),
        "no secret in the event"
    );
    std::thread::sleep(Duration::from_millis(2 * REFRESH_MS));
    assert_eq!(watched(&s).len(), 55);
    let status = String::from_utf8_lossy(&s.cmd(&["status"]).stdout).to_string();
    assert!(status.contains("FAILING since"), "{status}");

    // 4. A restart while the source is down still watches the stored set.
    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
    let down_at = now();
    daemon = s.spawn_daemon(&env);
    assert!(
        eventually(Duration::from_secs(10), || {
            platform
                .probes()
                .get("d059")
                .is_some_and(|t| t.iter().any(|t| *t > down_at))
        }),
        "the stored set is probed after a restart; log:\n{}",
        s.daemon_log()
    );
    assert_eq!(watched(&s).len(), 55);
    platform.set(Answer::Garbage);
    std::thread::sleep(Duration::from_millis(2 * REFRESH_MS + 500));
    assert_eq!(watched(&s).len(), 55);
    assert_eq!(
        count(&got, "system.error"),
        1,
        "one system.error per failing period, across the restart"
    );
    assert!(
        s.daemon_log().contains("the answer is not JSON"),
        "{}",
        s.daemon_log()
    );

    // 5. An empty list would retire everything: held until three answers
    // in a row agree, then applied.
    platform.set(Answer::Ids(Vec::new()));
    assert!(
        eventually(Duration::from_secs(5), || {
            String::from_utf8_lossy(&s.cmd(&["status"]).stdout).contains("SHRINK HELD")
        }),
        "status says the shrink is held"
    );
    let held = String::from_utf8_lossy(&s.cmd(&["status"]).stdout).to_string();
    println!("{}", held.lines().last().unwrap_or(""));
    assert_eq!(watched(&s).len(), 55, "held: still watched");
    assert!(
        eventually(Duration::from_secs(8), || watched(&s).len() == 1),
        "applied after three refreshes; log:\n{}",
        s.daemon_log()
    );
    assert!(s
        .daemon_log()
        .contains("held until 3 answers in a row agree"));
    assert!(eventually(Duration::from_secs(5), || count(
        &got,
        "connection.retired"
    ) == 5 + 54));
    assert_eq!(count(&got, "system.error"), 1);
    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
    assert!(
        count(&got, "connection.status_changed") == 0,
        "an online baseline is silent: no status event for discovered connections"
    );
    println!("discovery test took {} ms", t0.elapsed().as_millis());
}

#[test]
fn http_sd_and_file_sources_fill_the_status_url_from_targets_and_labels() {
    let (addr, platform) = platform();
    let dir = tempfile::tempdir().unwrap();
    let sd_file = dir.path().join("targets.json");
    std::fs::write(
        &sd_file,
        json!([{"targets": ["f1"], "labels": {"id": "file-one"}}]).to_string(),
    )
    .unwrap();
    let text = format!(
        r#"
[daemon]
database = "cw.db"

[[discovery]]
id = "sd"
format = "http_sd"
url = "http://{addr}/sd"
status_url = "http://{addr}/status/{{label:env}}-{{id}}"
refresh = "1h"
template = {{ interval = "300ms", timeout = "250ms" }}

[[discovery]]
id = "files"
format = "file"
path = "{}"
status_url = "http://{addr}/status/{{target}}"
refresh = "1h"
template = {{ interval = "300ms", timeout = "250ms" }}
"#,
        sd_file.display()
    );
    let s = Setup::new(&text);
    let mut daemon = s.spawn_daemon(&[]);
    assert!(
        eventually(Duration::from_secs(10), || watched(&s).len() == 4),
        "log:\n{}",
        s.daemon_log()
    );
    let w = watched(&s);
    assert_eq!(
        w.keys().cloned().collect::<Vec<_>>(),
        [
            "cmms-main",
            "erp.example_443",
            "file-one",
            "mes.example_8443"
        ]
    );
    assert_eq!(w["cmms-main"], "sd");
    assert_eq!(w["file-one"], "files");
    assert!(eventually(Duration::from_secs(5), || {
        let p = platform.probes();
        p.contains_key("prod-erp.example_443")
            && p.contains_key("test-cmms-main")
            && p.contains_key("f1")
    }));
    // The file is re-read when it changes, long before `refresh`.
    let t = now();
    std::fs::write(
        &sd_file,
        json!([{"targets": ["f1"], "labels": {"id": "file-one"}}, {"targets": ["f2"]}]).to_string(),
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || watched(&s).contains_key("f2")),
        "log:\n{}",
        s.daemon_log()
    );
    println!("a changed file was applied in {} ms", now() - t);
    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
}

#[test]
fn three_shards_probe_each_of_300_connections_exactly_once() {
    let (addr, platform) = platform();
    let mut text = r#"
[daemon]
database = "${DB}"
shard = "${SHARD}"
instance = "shard-${N}"

[defaults]
interval = "500ms"
timeout = "400ms"
headers = { X-Shard = "${SHARD}" }
"#
    .to_string();
    for i in 0..300 {
        text.push_str(&format!(
            "\n[[connection]]\nid = \"c{i:03}\"\nurl = \"http://{addr}/status/c{i:03}\"\n"
        ));
    }
    let s = Setup::new(&text);
    let mut takes = Vec::new();
    for n in 1..=3 {
        let shard = format!("{n}/3");
        let env = [
            ("DB", format!("cw{n}.db")),
            ("SHARD", shard.clone()),
            ("N", n.to_string()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = s.cmd_env(&["check"], &env);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let line = text
            .lines()
            .find(|l| l.starts_with("this shard"))
            .unwrap_or_else(|| panic!("{text}{}", String::from_utf8_lossy(&out.stderr)))
            .to_string();
        println!("{line}");
        takes.push(
            line.split(" takes ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap(),
        );
    }
    assert_eq!(takes.iter().sum::<usize>(), 300, "{takes:?}");
    let mut daemons: Vec<_> = (1..=3)
        .map(|n| {
            let shard = format!("{n}/3");
            let db = format!("cw{n}.db");
            let nn = n.to_string();
            s.spawn_daemon(&[("DB", &db), ("SHARD", &shard), ("N", &nn)])
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(15), || platform.probed_by().len()
            == 300),
        "every connection probed; {} so far",
        platform.probed_by().len()
    );
    std::thread::sleep(Duration::from_secs(2));
    let by = platform.probed_by();
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for (id, shards) in &by {
        assert_eq!(shards.len(), 1, "{id} probed by {shards:?}");
        *per.entry(shards.iter().next().unwrap().clone())
            .or_default() += 1;
    }
    println!("probes per shard: {per:?} (300 connections, each probed by exactly one)");
    assert_eq!(per.values().sum::<usize>(), 300);
    assert_eq!(
        per.values().copied().collect::<Vec<_>>(),
        takes,
        "each daemon probed what check said it takes"
    );
    // The worked example of the docs: "sap-prod" is in shard 3/3.
    assert_eq!(connwatch::discovery::shard_of("sap-prod", 3), 2);
    for d in &mut daemons {
        assert_eq!(terminate(d, Duration::from_secs(15)), Some(0));
    }
}
