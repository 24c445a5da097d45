//! Alert quality at fleet size, end to end: the real binary, 320
//! connections on a fresh database, and Slack, PagerDuty and webhook
//! receivers on loopback that record what they get and when.
//!
//! - the online baseline sends nothing anywhere;
//! - each scripted outage is one trigger and one resolve per paging sink;
//! - a storm of 100 connections failing together is a few chat messages;
//! - a later single outage reaches every sink within
//!   `failure_threshold × interval + group_wait + 2 s` while the storm's
//!   resolves are still queued behind slow receivers.
//!
//! And a hanging Alertmanager (it accepts connections and never answers)
//! delays no other sink, and its re-sends resume when it answers again.

mod common;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections whose id is in the set answer offline; the rest online.
#[derive(Clone, Default)]
struct Platform {
    down: Arc<Mutex<HashSet<String>>>,
}

impl Platform {
    fn set(&self, ids: &[String], down: bool) {
        let mut d = self.down.lock().unwrap();
        for id in ids {
            if down {
                d.insert(id.clone());
            } else {
                d.remove(id);
            }
        }
    }
}

fn platform() -> (std::net::SocketAddr, Platform) {
    let p = Platform::default();
    let app = Router::new()
        .route(
            "/c/{id}",
            get(
                |State(p): State<Platform>, UrlPath(id): UrlPath<String>| async move {
                    if p.down.lock().unwrap().contains(&id) {
                        (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"offline"}"#)
                    } else {
                        (StatusCode::OK, r#"{"status":"online"}"#)
                    }
                },
            ),
        )
        .with_state(p.clone());
    (serve_on_thread(app), p)
}

/// One request a receiver got: when (since the test began) and its body.
#[derive(Clone, Debug)]
struct Got {
    at: Duration,
    body: Value,
}

/// Receivers on one server: `/{name}` records the JSON body, waits
/// `delay_ms[name]`, then answers 2xx.
#[derive(Clone)]
struct Receivers {
    t0: Instant,
    log: Arc<Mutex<BTreeMap<String, Vec<Got>>>>,
    delay_ms: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Receivers {
    fn got(&self, name: &str) -> Vec<Got> {
        self.log
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    fn slow(&self, name: &str, ms: u64) {
        self.delay_ms.lock().unwrap().insert(name.into(), ms);
    }
}

fn receivers(t0: Instant) -> (std::net::SocketAddr, Receivers) {
    let r = Receivers {
        t0,
        log: Arc::default(),
        delay_ms: Arc::default(),
    };
    let app = Router::new()
        .route(
            "/{name}",
            post(
                |State(r): State<Receivers>, UrlPath(name): UrlPath<String>, body: Bytes| async move {
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let got = Got {
                        at: r.t0.elapsed(),
                        body,
                    };
                    r.log.lock().unwrap().entry(name.clone()).or_default().push(got);
                    let ms = r.delay_ms.lock().unwrap().get(&name).copied().unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    StatusCode::ACCEPTED
                },
            ),
        )
        .with_state(r.clone());
    (serve_on_thread(app), r)
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("c{i:03}")).collect()
}

/// PagerDuty requests for connection `id`: (action, received at).
fn pd_for(r: &Receivers, id: &str) -> Vec<(String, Duration)> {
    let key = format!("connwatch/{id}");
    r.got("pd")
        .into_iter()
        .filter(|g| g.body["dedup_key"] == key.as_str())
        .map(|g| {
            (
                g.body["event_action"].as_str().unwrap_or("").to_string(),
                g.at,
            )
        })
        .collect()
}

/// Slack messages naming `id` (as a whole word).
fn slack_for(r: &Receivers, id: &str) -> Vec<Got> {
    r.got("slack")
        .into_iter()
        .filter(|g| {
            g.body["text"]
                .as_str()
                .unwrap_or("")
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|w| w == id)
        })
        .collect()
}

/// Webhook status changes of `id` to `current`.
fn hook_for(r: &Receivers, id: &str, current: &str) -> Vec<Got> {
    r.got("hook")
        .into_iter()
        .filter(|g| {
            g.body["connection_id"] == id
                && g.body["type"] == "connection.status_changed"
                && g.body["data"]["current"] == current
        })
        .collect()
}

const N: usize = 320;
const INTERVAL_S: u64 = 1;
const FAILURE_THRESHOLD: u64 = 2;
const GROUP_WAIT_S: u64 = 2;

#[test]
fn a_fleet_pages_once_per_outage_groups_chat_and_puts_fresh_news_first() {
    let t0 = Instant::now();
    let (status, platform) = platform();
    let (rcv, rx) = receivers(t0);
    let mut text = format!(
        r#"
[daemon]
database = "cw.db"
history_flush = "2s"

[defaults]
interval = "{INTERVAL_S}s"
timeout = "800ms"
breaker = {{ failure_threshold = {FAILURE_THRESHOLD}, success_threshold = 1, open_for = "1s", max_open_for = "2s" }}

[[sink]]
id = "chat"
kind = "slack"
url = "http://{rcv}/slack"
group_wait = "{GROUP_WAIT_S}s"

[[sink]]
id = "pager"
kind = "pagerduty"
routing_key = "test-routing-key"
url = "http://{rcv}/pd"

# Four in flight (the default is 16), so the storm queues behind the
# slow receiver and the late outage has something to overtake.
[[sink]]
id = "hook"
kind = "webhook"
url = "http://{rcv}/hook"
concurrency = 4
"#
    );
    for id in ids(0..N) {
        text.push_str(&format!(
            "[[connection]]\nid = \"{id}\"\nurl = \"http://{status}/c/{id}\"\n"
        ));
    }
    let setup = Setup::new(&text);
    let mut daemon = setup.spawn_daemon(&[]);
    let all_online = || {
        setup.db().exists()
            && setup.cmd(&["status", "--json"]).status.success()
            && setup
                .status_json()
                .as_array()
                .is_some_and(|a| a.len() == N && a.iter().all(|c| c["health"] == "online"))
    };

    // 1. The baseline: all online, and nothing sent anywhere.
    assert!(
        eventually(Duration::from_secs(60), all_online),
        "{}",
        setup.daemon_log()
    );
    std::thread::sleep(Duration::from_secs(GROUP_WAIT_S + 2));
    let baseline: Vec<usize> = ["slack", "pd", "hook"]
        .iter()
        .map(|s| rx.got(s).len())
        .collect();
    assert_eq!(baseline, [0, 0, 0], "the online baseline sent something");

    // 2. One outage: one trigger, one resolve.
    let a = ids(0..1);
    platform.set(&a, true);
    assert!(eventually(Duration::from_secs(15), || pd_for(&rx, "c000")
        .len()
        == 1));
    platform.set(&a, false);
    assert!(eventually(Duration::from_secs(15), || pd_for(&rx, "c000")
        .len()
        == 2
        && slack_for(&rx, "c000").len() == 2
        && hook_for(&rx, "c000", "online").len() == 1));

    // 3. A storm: 100 connections fail together, then recover, behind slow
    // pager and webhook receivers.
    rx.slow("pd", 400);
    rx.slow("hook", 100);
    rx.slow("slack", 300);
    let storm = ids(100..200);
    let storm_at = t0.elapsed();
    platform.set(&storm, true);
    let storm_triggers = || {
        storm
            .iter()
            .filter(|id| pd_for(&rx, id).iter().any(|(a, _)| a == "trigger"))
            .count()
    };
    // Every storm connection confirmed down, then back up: their
    // resolves queue behind the triggers.
    assert!(eventually(Duration::from_secs(20), || {
        setup
            .status_json()
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["health"] == "offline")
            .count()
            == storm.len()
    }));
    platform.set(&storm, false);
    assert!(
        eventually(Duration::from_secs(60), || storm_triggers() == storm.len()),
        "storm triggers: {}",
        storm_triggers()
    );

    // 4. A new outage while the storm's resolves are still queued.
    let b = "c300".to_string();
    let b_at = t0.elapsed();
    platform.set(std::slice::from_ref(&b), true);
    let bound = Duration::from_secs(FAILURE_THRESHOLD * INTERVAL_S + GROUP_WAIT_S + 2);
    let arrived = eventually(Duration::from_secs(30), || {
        !pd_for(&rx, &b).is_empty()
            && !slack_for(&rx, &b).is_empty()
            && !hook_for(&rx, &b, "offline").is_empty()
    });
    assert!(
        arrived,
        "the late outage never arrived\n{}",
        setup.daemon_log()
    );
    let pd_b = pd_for(&rx, &b)[0].1 - b_at;
    let slack_b = slack_for(&rx, &b)[0].at - b_at;
    let hook_b = hook_for(&rx, &b, "offline")[0].at - b_at;
    let pd_b_arrived = pd_for(&rx, &b)[0].1;
    let resolves_before_b = storm
        .iter()
        .filter(|id| {
            pd_for(&rx, id)
                .iter()
                .any(|(a, t)| a == "resolve" && *t < pd_b_arrived)
        })
        .count();
    let hook_queued_after_b = rx
        .got("hook")
        .iter()
        .filter(|g| {
            g.at > hook_b + b_at && storm.iter().any(|s| g.body["connection_id"] == s.as_str())
        })
        .count();
    platform.set(std::slice::from_ref(&b), false);
    // Everything drains: every storm connection and B resolved once.
    let all_resolved = eventually(Duration::from_secs(90), || {
        storm.iter().chain(std::iter::once(&b)).all(|id| {
            pd_for(&rx, id)
                .iter()
                .filter(|(a, _)| a == "resolve")
                .count()
                == 1
        })
    });
    std::thread::sleep(Duration::from_secs(GROUP_WAIT_S + 2));
    assert_eq!(
        terminate(&mut daemon, Duration::from_secs(20)),
        Some(0),
        "{}",
        setup.daemon_log()
    );
    assert!(
        all_resolved,
        "not every outage was resolved\n{}",
        setup.daemon_log()
    );

    // One trigger and one resolve per outage, for every outage.
    let outages: Vec<String> = a.iter().chain(&storm).chain([&b]).cloned().collect();
    for id in &outages {
        let actions: Vec<String> = pd_for(&rx, id).into_iter().map(|(a, _)| a).collect();
        assert_eq!(actions, ["trigger", "resolve"], "{id}");
    }
    // Nothing for a connection that never went down, on any sink.
    let quiet: Vec<String> = ids(0..N)
        .into_iter()
        .filter(|id| !outages.contains(id))
        .collect();
    for id in &quiet {
        assert!(pd_for(&rx, id).is_empty(), "{id} paged");
        assert!(slack_for(&rx, id).is_empty(), "{id} in chat");
        assert!(
            !rx.got("hook")
                .iter()
                .any(|g| g.body["connection_id"] == id.as_str()),
            "{id} on the webhook"
        );
    }
    // The storm in chat: a few messages, naming all 100 between them.
    let storm_msgs: Vec<String> = rx
        .got("slack")
        .into_iter()
        .filter(|g| g.at >= storm_at && g.at < b_at + Duration::from_secs(1))
        .map(|g| g.body["text"].as_str().unwrap_or("").to_string())
        .collect();
    let went_offline: usize = storm_msgs
        .iter()
        .flat_map(|m| m.lines())
        .filter_map(|l| {
            let l = l.split_once(' ')?.1;
            let (n, rest) = l.split_once(" connections went offline")?;
            let _ = rest;
            n.parse::<usize>().ok()
        })
        .sum();
    let single_offline = storm_msgs
        .iter()
        .flat_map(|m| m.lines())
        .filter(|l| l.contains(": online → offline"))
        .count();
    assert_eq!(
        went_offline + single_offline,
        storm.len(),
        "{storm_msgs:#?}"
    );
    let offline_msgs = storm_msgs.iter().filter(|m| m.contains("offline")).count();
    assert!(offline_msgs <= 3, "{storm_msgs:#?}");

    eprintln!(
        "fleet: {N} connections; baseline: 0 Slack, 0 PagerDuty, 0 webhook requests\n\
         fleet: {} outages ({} + {} storm + 1 late), each 1 trigger and 1 resolve on PagerDuty\n\
         fleet: totals: Slack {} messages, PagerDuty {} requests, webhook {} requests\n\
         fleet: storm of {} in {} Slack messages while it failed and recovered\n\
         fleet: late outage arrived after {:.1} s on PagerDuty, {:.1} s on Slack, {:.1} s on the webhook \
         (bound {} s); {} of {} storm resolves had reached PagerDuty before it, {} storm events reached the webhook after it",
        outages.len(),
        a.len(),
        storm.len(),
        rx.got("slack").len(),
        rx.got("pd").len(),
        rx.got("hook").len(),
        storm.len(),
        storm_msgs.len(),
        pd_b.as_secs_f64(),
        slack_b.as_secs_f64(),
        hook_b.as_secs_f64(),
        bound.as_secs(),
        resolves_before_b,
        storm.len(),
        hook_queued_after_b,
    );
    // Fresh news first: the late trigger overtook storm resolves on the
    // pager and storm events on the webhook...
    assert!(
        resolves_before_b < storm.len(),
        "the storm's resolves were all sent before the late trigger: nothing was queued"
    );
    assert!(hook_queued_after_b > 0, "nothing was queued on the webhook");
    // ...and arrived in time everywhere.
    for (sink, took) in [("PagerDuty", pd_b), ("Slack", slack_b), ("webhook", hook_b)] {
        assert!(
            took <= bound,
            "{sink}: the late outage took {took:?} > {bound:?}"
        );
    }
}

/// An Alertmanager stand-in: records firing alerts per connection; while
/// `hang` is set it accepts requests and does not answer.
#[derive(Clone, Default)]
struct Am {
    hang: Arc<AtomicBool>,
    firing: Arc<Mutex<BTreeMap<String, u64>>>,
    posts: Arc<AtomicU64>,
}

fn alertmanager(am: Am) -> std::net::SocketAddr {
    let app = Router::new()
        .route(
            "/api/v2/alerts",
            post(|State(am): State<Am>, body: Bytes| async move {
                while am.hang.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                am.posts.fetch_add(1, Ordering::SeqCst);
                let alerts: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
                let mut f = am.firing.lock().unwrap();
                for a in alerts {
                    if a.get("endsAt").is_none() {
                        let id = a["labels"]["connection_id"]
                            .as_str()
                            .unwrap_or("")
                            .to_string();
                        *f.entry(id).or_default() += 1;
                    }
                }
                StatusCode::OK
            }),
        )
        .with_state(am);
    serve_on_thread(app)
}

#[test]
fn a_hanging_alertmanager_delays_no_other_sink_and_its_resends_resume() {
    let t0 = Instant::now();
    let (status, platform) = platform();
    let (rcv, rx) = receivers(t0);
    let am = Am::default();
    let am_addr = alertmanager(am.clone());
    let mut text = format!(
        r#"
[daemon]
database = "cw.db"
history_flush = "2s"
shutdown_timeout = "3s"

[defaults]
interval = "500ms"
timeout = "400ms"
breaker = {{ failure_threshold = 2, success_threshold = 1, open_for = "5s", max_open_for = "5s" }}

[[sink]]
id = "am"
kind = "alertmanager"
url = "http://{am_addr}/"
resend_interval = "1s"
timeout = "2s"

[[sink]]
id = "hook"
kind = "webhook"
url = "http://{rcv}/hook"
"#
    );
    for id in ids(0..21) {
        text.push_str(&format!(
            "[[connection]]\nid = \"{id}\"\nurl = \"http://{status}/c/{id}\"\n"
        ));
    }
    let setup = Setup::new(&text);
    let mut daemon = setup.spawn_daemon(&[]);
    assert!(eventually(Duration::from_secs(30), || setup.db().exists()
        && setup
            .status_json()
            .as_array()
            .is_some_and(|a| a.iter().all(|c| c["health"] == "online"))));

    // 20 connections fire; Alertmanager takes them, then hangs.
    let twenty = ids(0..20);
    platform.set(&twenty, true);
    assert!(
        eventually(Duration::from_secs(20), || am.firing.lock().unwrap().len()
            == 20),
        "firing: {:?}",
        am.firing.lock().unwrap()
    );
    am.hang.store(true, Ordering::SeqCst);
    // Let re-sends pile into the hanging receiver.
    std::thread::sleep(Duration::from_secs(3));

    // A new outage still reaches the webhook at once.
    let x = "c020".to_string();
    let x_at = t0.elapsed();
    platform.set(std::slice::from_ref(&x), true);
    let bound = Duration::from_millis(2 * 500 + 2_000);
    let reached = eventually(Duration::from_secs(15), || {
        !hook_for(&rx, &x, "offline").is_empty()
    });
    assert!(reached, "{}", setup.daemon_log());
    let took = hook_for(&rx, &x, "offline")[0].at - x_at;

    // Alertmanager answers again: re-sends resume, and the new alert
    // fires there too.
    let posts_while_hung = am.posts.load(Ordering::SeqCst);
    let before: u64 = am.firing.lock().unwrap().values().sum();
    am.hang.store(false, Ordering::SeqCst);
    let resumed = eventually(Duration::from_secs(15), || {
        let f = am.firing.lock().unwrap();
        let sent: u64 = f.values().sum();
        f.contains_key(&x) && sent >= before + 20
    });
    assert_eq!(
        terminate(&mut daemon, Duration::from_secs(20)),
        Some(0),
        "{}",
        setup.daemon_log()
    );
    eprintln!(
        "hanging alertmanager: the late outage reached the webhook after {:.1} s (bound {:.1} s); \
         {posts_while_hung} requests answered before the hang; re-sends resumed after it: {resumed}",
        took.as_secs_f64(),
        bound.as_secs_f64()
    );
    assert!(
        took <= bound,
        "the webhook waited for Alertmanager: {took:?}"
    );
    assert!(
        resumed,
        "re-sends did not resume: {:?}",
        am.firing.lock().unwrap()
    );
}
