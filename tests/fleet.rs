//! An HA pair, end to end: two real Alertmanagers (Debian's
//! `prometheus-alertmanager`) gossiping as one cluster on loopback, and two
//! real `connwatch run` daemons with the same configuration (each with its
//! own database and admin port, as two hosts would have), each sending to
//! both Alertmanagers. A webhook receiver behind the Alertmanagers records
//! every notification. Outages of a scripted status endpoint prove that the
//! pair loses no alert and duplicates none:
//!
//! 1. everything up: one firing notification, then one resolved;
//! 2. daemon `a` SIGKILLed after the firing notification: `b` resolves the
//!    alert, once;
//! 3. the Alertmanager that has been notifying is stopped before the
//!    outage: the other one notifies, once, firing and resolved;
//! 4. each daemon keeps a `ConnwatchWatchdog` alert
//!    firing; the one of the killed daemon ends by itself, the survivor's
//!    stays active. A route sends it to a receiver with no configs, so it
//!    never reaches the webhook receiver.
//!
//! Every outage is on a connection of its own (`erp`, `cmms`, `eam`), so a
//! late duplicate is counted against the outage it belongs to; `crm` stays
//! online throughout and must never be heard of.
//!
//! `cargo test --test fleet -- --nocapture` prints the timeline (ms since
//! the start of the test) and the wall time; a failure prints it too and
//! keeps the four logs as `fleet-*.log` in the temp dir. As in
//! `tests/alertmanager.rs`, a missing Alertmanager fails the test.
//!
//! `a_resend_never_overtakes_the_resolve` (ignored) reproduces, every time,
//! a daemon race this test catches about once in 25 runs.

mod common;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BINARIES: &[&str] = &["prometheus-alertmanager", "alertmanager"];

// Timings. Some are conditions of "no duplicate", not just of speed:
//
// - The Alertmanager at cluster position 1 takes its flush (the group's
//   alerts as they are at a `group_interval` tick), waits `peer_timeout`,
//   then notifies unless the notification log (gossiped) shows position 0
//   notified the same. If position 0 notified a *newer* state meanwhile,
//   position 1 sends its stale one (a "firing" after the "resolved").
//   So `peer_timeout` plus gossip must stay well below `group_interval`
//   (with 2 s and 1 s every resolve was followed by a stale firing; with
//   1 s and 1 s both sent the same resolve about once in 70 notifications).
// - The two daemons notice a recovery at different times (each at its own
//   breaker trial: up to `max_open_for` plus an interval apart). Until the
//   later one does, it re-sends the firing alert, which Alertmanager takes
//   as firing again after the first daemon's resolve. Harmless while that
//   lag is shorter than `group_interval` (no flush tick can show the alert
//   firing between two resolved ones), so `max_open_for` is kept below it.

/// Alertmanager's `group_wait`.
const GROUP_WAIT_MS: u64 = 1_000;
/// Alertmanager's `group_interval`.
const GROUP_INTERVAL_MS: u64 = 2_000;
/// `--cluster.peer-timeout`.
const PEER_TIMEOUT_MS: u64 = 1_000;
/// How long to listen after a notification for a duplicate of it: past the
/// next flush of either Alertmanager and position 1's wait, twice over.
const QUIET: Duration = Duration::from_millis(GROUP_INTERVAL_MS + 2 * PEER_TIMEOUT_MS);
/// Each alertmanager sink's `resend_interval`.
const RESEND_MS: u64 = 1_000;
/// The daemons' probe interval and breaker `open_for` = `max_open_for`.
const INTERVAL_MS: u64 = 250;
const OPEN_FOR_MS: u64 = 500;
/// Bound on every wait for a notification or a health change.
const WAIT: Duration = Duration::from_secs(15);

/// Connections: one per outage, and one that never fails.
const CONNS: &[&str] = &["erp", "cmms", "eam", "crm"];

const ALERTNAME: &str = "ConnwatchConnectionUnhealthy";
const WATCHDOG_ALERT: &str = "ConnwatchWatchdog";

// ---------------------------------------------------------------- timeline

/// What happened, with its offset from the start of the test; printed when
/// the test ends, passed or failed.
struct Timeline {
    t0: Instant,
    lines: Mutex<Vec<(Duration, String)>>,
}

impl Timeline {
    fn mark(&self, what: impl Into<String>) {
        let at = self.t0.elapsed();
        self.lines.lock().unwrap().push((at, what.into()));
    }

    fn print(&self) {
        let mut lines = self.lines.lock().unwrap().clone();
        lines.sort_by_key(|(at, _)| *at);
        let mut out = String::from("\n---- fleet timeline (ms since start) ----\n");
        for (at, what) in lines {
            out.push_str(&format!("{:>7}  {what}\n", at.as_millis()));
        }
        eprint!("{out}");
    }
}

struct PrintOnDrop(Arc<Timeline>);

impl Drop for PrintOnDrop {
    fn drop(&mut self) {
        self.0.print();
    }
}

// ---------------------------------------------------------- the receiver

/// One webhook notification as the receiver got it.
#[derive(Clone, Debug)]
struct Note {
    at: Duration,
    /// `am1` or `am2`, from the notification's `externalURL`.
    from: String,
    /// (alert status, alertname, connection_id) of each alert in it.
    alerts: Vec<(String, String, String)>,
}

type Notes = Arc<Mutex<Vec<Note>>>;

/// Records every notification POSTed to `/hook`. `names` maps each
/// Alertmanager's external URL to its name.
fn receiver(tl: Arc<Timeline>, notes: Notes, names: Vec<(String, String)>) -> SocketAddr {
    serve_on_thread(Router::new().route(
        "/hook",
        post(move |body: String| {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let url = v["externalURL"].as_str().unwrap_or("?");
            let from = names
                .iter()
                .find(|(u, _)| u.trim_end_matches('/') == url.trim_end_matches('/'))
                .map_or(url.to_string(), |(_, n)| n.clone());
            let s = |a: &Value| a.as_str().unwrap_or("").to_string();
            let alerts: Vec<(String, String, String)> = v["alerts"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|a| {
                            (
                                s(&a["status"]),
                                s(&a["labels"]["alertname"]),
                                s(&a["labels"]["connection_id"]),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let what: Vec<String> = alerts
                .iter()
                .map(|(st, name, id)| match name.as_str() {
                    ALERTNAME => format!("{st} {id}"),
                    _ => format!("{st} {name} {id}"),
                })
                .collect();
            tl.mark(format!(
                "NOTIFICATION from {from}: {} [{}]",
                v["status"].as_str().unwrap_or("?"),
                what.join(", ")
            ));
            notes.lock().unwrap().push(Note {
                at: tl.t0.elapsed(),
                from,
                alerts,
            });
            async { StatusCode::OK }
        }),
    ))
}

/// Notifications that carry an alert of `conn` with `status`.
fn count(notes: &Notes, status: &str, conn: &str) -> usize {
    notes
        .lock()
        .unwrap()
        .iter()
        .filter(|n| {
            n.alerts
                .iter()
                .any(|(s, name, id)| s == status && name == ALERTNAME && id == conn)
        })
        .count()
}

/// Waits (bounded) for the first notification of `conn` with `status`.
fn await_note(notes: &Notes, status: &str, conn: &str) -> Note {
    let first = || {
        notes
            .lock()
            .unwrap()
            .iter()
            .find(|n| {
                n.alerts
                    .iter()
                    .any(|(s, name, id)| s == status && name == ALERTNAME && id == conn)
            })
            .cloned()
    };
    poll(WAIT, || first().is_some());
    first().unwrap_or_else(|| panic!("no {status} notification for {conn} within {WAIT:?}"))
}

/// Listens for [`QUIET`] after `note` arrived, then expects exactly one
/// notification of `conn` with `status` in all.
fn exactly_once(tl: &Timeline, notes: &Notes, note: &Note, status: &str, conn: &str) {
    let until = tl.t0 + note.at + QUIET;
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    let n = count(notes, status, conn);
    tl.mark(format!(
        "{conn}: {n} {status} notification(s) within {} ms after the first",
        QUIET.as_millis()
    ));
    assert_eq!(n, 1, "{conn}: {n} {status} notifications, expected one");
}

/// After the resolve: no running Alertmanager still holds `conn` as
/// firing (a re-send that overtook the resolve would leave it firing until
/// Alertmanager's `resolve_timeout`, 5 min).
fn nothing_firing(tl: &Timeline, ams: &[&Am], conn: &str) {
    for am in ams {
        assert!(
            !am.firing(conn),
            "{conn} is still firing on {} after every daemon resolved it",
            am.name
        );
    }
    let names: Vec<&str> = ams.iter().map(|a| a.name.as_str()).collect();
    tl.mark(format!("{conn}: not firing on {}", names.join(", ")));
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
fn poll(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ------------------------------------------------------- the Alertmanagers

struct Am {
    name: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Drop for Am {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join(format!("fleet-{}.log", self.name));
            let _ = std::fs::copy(self.dir.path().join("am.log"), &keep);
            eprintln!("{} log kept: {}", self.name, keep.display());
        }
    }
}

impl Am {
    /// (cluster status, number of peers) from `/api/v2/status`.
    fn cluster(&self) -> Option<(String, usize)> {
        let (code, body) = http_get(self.port, "/api/v2/status")?;
        let v: Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
        Some((
            v["cluster"]["status"].as_str()?.to_string(),
            v["cluster"]["peers"].as_array()?.len(),
        ))
    }

    /// The watchdog alerts Alertmanager lists (it leaves out ended ones):
    /// (instance, shard, state).
    fn watchdogs(&self) -> Vec<(String, String, String)> {
        let path = format!("/api/v2/alerts?filter=alertname%3D%22{WATCHDOG_ALERT}%22");
        let alerts: Vec<Value> = http_get(self.port, &path)
            .and_then(|(_, b)| serde_json::from_str(&b).ok())
            .unwrap_or_default();
        let s = |v: &Value| v.as_str().unwrap_or("").to_string();
        alerts
            .iter()
            .filter(|a| a["labels"]["alertname"] == WATCHDOG_ALERT)
            .map(|a| {
                (
                    s(&a["labels"]["instance"]),
                    s(&a["labels"]["shard"]),
                    s(&a["status"]["state"]),
                )
            })
            .collect()
    }

    /// Whether Alertmanager holds `conn`'s alert as firing.
    fn firing(&self, conn: &str) -> bool {
        let alerts: Vec<Value> = http_get(self.port, "/api/v2/alerts")
            .and_then(|(_, b)| serde_json::from_str(&b).ok())
            .unwrap_or_default();
        alerts.iter().any(|a| {
            a["labels"]["alertname"] == ALERTNAME
                && a["labels"]["connection_id"] == conn
                && a["status"]["state"] == "active"
        })
    }

    fn watchdog_active(&self, instance: &str) -> bool {
        self.watchdogs()
            .iter()
            .any(|(i, shard, state)| i == instance && shard == "1/1" && state == "active")
    }

    fn watchdog_listed(&self, instance: &str) -> bool {
        self.watchdogs().iter().any(|(i, _, _)| i == instance)
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("am.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// The Alertmanagers' routing: connwatch's alerts to the webhook receiver,
/// one group per connection; the watchdog to a receiver with no configs.
fn am_config(hook: SocketAddr) -> String {
    format!(
        "route:
  receiver: hook
  group_by: ['alertname', 'connection_id']
  group_wait: {GROUP_WAIT_MS}ms
  group_interval: {GROUP_INTERVAL_MS}ms
  repeat_interval: 1h
  routes:
    - matchers: ['alertname=\"{WATCHDOG_ALERT}\"']
      receiver: 'null'
receivers:
  - name: hook
    webhook_configs:
      - url: 'http://{hook}/hook'
        send_resolved: true
  - name: 'null'
"
    )
}

/// An Alertmanager on 127.0.0.1:`port`; with `cluster` (its own cluster
/// port, its peer's), a member of a gossip cluster, else on its own.
fn start_am(bin: &str, name: &str, port: u16, cluster: Option<(u16, u16)>, hook: SocketAddr) -> Am {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("am.yml");
    std::fs::write(&config, am_config(hook)).unwrap();
    let log = std::fs::File::create(dir.path().join("am.log")).unwrap();
    let mut cmd = Command::new(bin);
    match cluster {
        Some((cport, peer)) => cmd
            .arg(format!("--cluster.listen-address=127.0.0.1:{cport}"))
            .arg(format!("--cluster.peer=127.0.0.1:{peer}"))
            .arg("--cluster.gossip-interval=50ms")
            .arg("--cluster.pushpull-interval=1s")
            .arg(format!("--cluster.peer-timeout={PEER_TIMEOUT_MS}ms"))
            .arg("--cluster.settle-timeout=5s")
            .arg("--cluster.reconnect-interval=1s")
            .arg("--cluster.probe-interval=200ms")
            .arg("--cluster.probe-timeout=100ms"),
        None => cmd.arg("--cluster.listen-address="),
    };
    let child = cmd
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--web.external-url=http://127.0.0.1:{port}/"))
        .arg("--log.level=debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Am {
        name: name.to_string(),
        port,
        dir,
        child: Some(child),
    }
}

// ------------------------------------------------------------ the daemons

struct Daemon {
    name: String,
    admin: u16,
    setup: Setup,
    child: Option<Child>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join(format!("fleet-daemon-{}.log", self.name));
            let _ = std::fs::write(&keep, self.setup.daemon_log());
            eprintln!("daemon {} log kept: {}", self.name, keep.display());
        }
    }
}

impl Daemon {
    /// `conn`'s health as this daemon's admin API tells it.
    fn health(&self, conn: &str) -> Option<String> {
        let (_, body) = http_get(self.admin, "/api/v1/connections")?;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["connections"]
            .as_array()?
            .iter()
            .find(|c| c["id"] == conn)
            .and_then(|c| c["health"].as_str())
            .map(str::to_string)
    }

    fn log(&self) -> String {
        let log = self.setup.daemon_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// The pair's configuration: the same for both but for the admin port
/// (and the instance). The database is `cw.db` beside
/// each one's config file, so each daemon has its own.
fn daemon_config(
    instance: &str,
    admin: u16,
    status: SocketAddr,
    sinks: &[(&str, String)],
) -> String {
    let mut s = format!(
        "[daemon]\ndatabase = \"cw.db\"\nlisten = \"127.0.0.1:{admin}\"\nshutdown_timeout = \"2s\"\nlog_level = \"connwatch=debug,info\"\n"
    );
    s.push_str(&format!("instance = \"{instance}\"\n"));
    s.push_str(&format!(
        "[defaults]\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"1s\"\n\
         breaker = {{ failure_threshold = 2, success_threshold = 2, open_for = \"{OPEN_FOR_MS}ms\", max_open_for = \"{OPEN_FOR_MS}ms\" }}\n",
    ));
    for c in CONNS {
        s.push_str(&format!(
            "[[connection]]\nid = \"{c}\"\nurl = \"http://{status}/c/{c}\"\n"
        ));
    }
    for (id, url) in sinks {
        s.push_str(&format!(
            "[[sink]]\nid = \"{id}\"\nkind = \"alertmanager\"\nurl = \"{url}\"\nresend_interval = \"{RESEND_MS}ms\"\n"
        ));
    }
    s
}

/// Waits (bounded) until each daemon reports `conn` as `health`, marking
/// when each one does.
fn await_health(tl: &Timeline, daemons: &[&Daemon], conn: &str, health: &str) {
    let mut seen = vec![false; daemons.len()];
    let all = poll(WAIT, || {
        for (d, seen) in daemons.iter().zip(seen.iter_mut()) {
            if !*seen && d.health(conn).as_deref() == Some(health) {
                *seen = true;
                tl.mark(format!("daemon {}: {conn} is {health}", d.name));
            }
        }
        seen.iter().all(|s| *s)
    });
    if !all {
        let logs: Vec<String> = daemons
            .iter()
            .map(|d| format!("daemon {}:\n{}", d.name, d.log()))
            .collect();
        panic!(
            "{conn} did not become {health} on every daemon\n{}",
            logs.join("\n")
        );
    }
}

fn unique_ports(n: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::new();
    while ports.len() < n {
        let p = free_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    ports
}

// ---------------------------------------------------------------- the tests

/// The Alertmanager binary; as in `tests/alertmanager.rs`, a missing one
/// fails the test (`.ci/run` installs it).
fn am_binary() -> &'static str {
    BINARIES
        .iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
        .unwrap_or_else(|| {
            panic!("Alertmanager is needed: apt-get install prometheus-alertmanager (.ci/run does)")
        })
}

fn new_timeline() -> Arc<Timeline> {
    Arc::new(Timeline {
        t0: Instant::now(),
        lines: Mutex::new(Vec::new()),
    })
}

#[test]
fn an_ha_pair_loses_no_alert_and_duplicates_none() {
    let bin = am_binary();
    let tl = new_timeline();
    let _print = PrintOnDrop(Arc::clone(&tl));
    let notes: Notes = Arc::new(Mutex::new(Vec::new()));

    // The scripted platform and the receiver.
    let (status, platform) = platform();
    for c in CONNS {
        platform.set(c, "up");
    }
    let ports = unique_ports(6);
    let (web, cluster, admin) = (
        [ports[0], ports[1]],
        [ports[2], ports[3]],
        [ports[4], ports[5]],
    );
    let names = (0..2)
        .map(|i| {
            (
                format!("http://127.0.0.1:{}/", web[i]),
                format!("am{}", i + 1),
            )
        })
        .collect();
    let hook = receiver(Arc::clone(&tl), Arc::clone(&notes), names);

    // Two Alertmanagers, one cluster.
    let mut ams = [
        start_am(bin, "am1", web[0], Some((cluster[0], cluster[1])), hook),
        start_am(bin, "am2", web[1], Some((cluster[1], cluster[0])), hook),
    ];
    tl.mark(format!(
        "am1 (127.0.0.1:{}) and am2 (127.0.0.1:{}) started",
        web[0], web[1]
    ));
    let mut seen = [false; 2];
    let ready = poll(Duration::from_secs(30), || {
        for (am, seen) in ams.iter().zip(seen.iter_mut()) {
            if !*seen && am.cluster() == Some(("ready".to_string(), 2)) {
                *seen = true;
                tl.mark(format!("{}: cluster ready, 2 peers", am.name));
            }
        }
        seen.iter().all(|s| *s)
    });
    assert!(
        ready,
        "the Alertmanagers did not form a ready cluster of two: {:?} {:?}\nam1:\n{}\nam2:\n{}",
        ams[0].cluster(),
        ams[1].cluster(),
        ams[0].log(),
        ams[1].log()
    );

    // Two daemons, the same configuration.
    let mut daemons: Vec<Daemon> = ["a", "b"]
        .iter()
        .zip(admin)
        .map(|(name, admin)| {
            let sinks: Vec<(&str, String)> = ams
                .iter()
                .map(|am| (am.name.as_str(), format!("http://127.0.0.1:{}", am.port)))
                .collect();
            let setup = Setup::new(&daemon_config(name, admin, status, &sinks));
            let child = setup.spawn_daemon(&[]);
            Daemon {
                name: name.to_string(),
                admin,
                setup,
                child: Some(child),
            }
        })
        .collect();
    tl.mark("daemons a and b started");
    for c in CONNS {
        await_health(&tl, &[&daemons[0], &daemons[1]], c, "online");
    }
    {
        let both = poll(WAIT, || {
            ams.iter()
                .all(|am| am.watchdog_active("a") && am.watchdog_active("b"))
        });
        assert!(
            both,
            "watchdogs not active on both Alertmanagers: am1 {:?}, am2 {:?}",
            ams[0].watchdogs(),
            ams[1].watchdogs()
        );
        tl.mark("watchdogs a and b active on am1 and am2");
    }

    // 1. Everything up.
    tl.mark("== 1. outage of erp, everything up");
    platform.set("erp", "down");
    tl.mark("platform: erp offline");
    await_health(&tl, &[&daemons[0], &daemons[1]], "erp", "offline");
    let fired = await_note(&notes, "firing", "erp");
    exactly_once(&tl, &notes, &fired, "firing", "erp");
    platform.set("erp", "up");
    tl.mark("platform: erp online");
    await_health(&tl, &[&daemons[0], &daemons[1]], "erp", "online");
    let resolved = await_note(&notes, "resolved", "erp");
    exactly_once(&tl, &notes, &resolved, "resolved", "erp");
    nothing_firing(&tl, &[&ams[0], &ams[1]], "erp");

    // 2. Daemon a dies mid-outage.
    tl.mark("== 2. outage of cmms, daemon a SIGKILLed after the firing notification");
    platform.set("cmms", "down");
    tl.mark("platform: cmms offline");
    await_health(&tl, &[&daemons[0], &daemons[1]], "cmms", "offline");
    let fired = await_note(&notes, "firing", "cmms");
    let mut a = daemons[0].child.take().unwrap();
    a.kill().unwrap(); // SIGKILL
    a.wait().unwrap();
    let killed_at = tl.t0.elapsed();
    tl.mark("daemon a: SIGKILL");
    {
        // Its watchdog ends by itself (endsAt = last re-send + 3 resends),
        // the survivor's stays.
        let gone = poll(Duration::from_millis(3 * RESEND_MS) + WAIT, || {
            ams.iter().all(|am| !am.watchdog_listed("a"))
        });
        assert!(
            gone,
            "the killed daemon's watchdog is still listed: am1 {:?}, am2 {:?}",
            ams[0].watchdogs(),
            ams[1].watchdogs()
        );
        tl.mark(format!(
            "watchdog a no longer listed on am1 and am2, {} ms after the SIGKILL",
            (tl.t0.elapsed() - killed_at).as_millis()
        ));
        assert!(ams.iter().all(|am| am.watchdog_active("b")));
    }
    exactly_once(&tl, &notes, &fired, "firing", "cmms");
    platform.set("cmms", "up");
    tl.mark("platform: cmms online");
    await_health(&tl, &[&daemons[1]], "cmms", "online");
    let resolved = await_note(&notes, "resolved", "cmms");
    exactly_once(&tl, &notes, &resolved, "resolved", "cmms");
    nothing_firing(&tl, &[&ams[0], &ams[1]], "cmms");

    // 3. The Alertmanager that has been notifying stops.
    let sender = resolved.from.clone();
    let (gone, survivor) = if ams[0].name == sender {
        (0, 1)
    } else {
        (1, 0)
    };
    tl.mark(format!(
        "== 3. outage of eam, {sender} (the one that notified so far) stopped first"
    ));
    let code = terminate(ams[gone].child.as_mut().unwrap(), WAIT);
    ams[gone].child = None;
    tl.mark(format!("{sender}: SIGTERM, exited ({code:?})"));
    if poll(Duration::from_secs(5), || {
        ams[survivor].cluster().is_some_and(|(_, peers)| peers == 1)
    }) {
        tl.mark(format!("{}: 1 peer left", ams[survivor].name));
    }
    platform.set("eam", "down");
    tl.mark("platform: eam offline");
    await_health(&tl, &[&daemons[1]], "eam", "offline");
    let fired = await_note(&notes, "firing", "eam");
    assert_eq!(fired.from, ams[survivor].name);
    exactly_once(&tl, &notes, &fired, "firing", "eam");
    platform.set("eam", "up");
    tl.mark("platform: eam online");
    await_health(&tl, &[&daemons[1]], "eam", "online");
    let resolved = await_note(&notes, "resolved", "eam");
    exactly_once(&tl, &notes, &resolved, "resolved", "eam");
    nothing_firing(&tl, &[&ams[survivor]], "eam");

    // 4. The watchdogs, on the surviving Alertmanager.
    {
        tl.mark(format!(
            "== 4. watchdogs on {} (the surviving Alertmanager)",
            ams[survivor].name
        ));
        let am = &ams[survivor];
        let ok = poll(WAIT, || !am.watchdog_listed("a") && am.watchdog_active("b"));
        assert!(
            ok,
            "on {}: expected watchdog b active and a gone, got {:?}",
            am.name,
            am.watchdogs()
        );
        tl.mark(format!("{}: watchdog b active, a gone", am.name));
    }

    // The whole run: one firing and one resolved per outage, nothing else.
    for c in CONNS {
        let (f, r) = (count(&notes, "firing", c), count(&notes, "resolved", c));
        tl.mark(format!("total {c}: {f} firing, {r} resolved"));
    }
    for c in ["erp", "cmms", "eam"] {
        assert_eq!(count(&notes, "firing", c), 1, "{c}: firing");
        assert_eq!(count(&notes, "resolved", c), 1, "{c}: resolved");
    }
    let all = notes.lock().unwrap().clone();
    assert_eq!(all.len(), 6, "notifications: {all:?}");
    assert!(
        all.iter()
            .all(|n| n.alerts.iter().all(|(_, name, _)| name == ALERTNAME)),
        "only connection alerts reach the receiver: {all:?}"
    );

    // The survivor stops cleanly.
    let b = &mut daemons[1];
    let code = terminate(b.child.as_mut().unwrap(), WAIT);
    b.child = None;
    assert_eq!(code, Some(0), "daemon b:\n{}", b.log());
    tl.mark(format!("done in {:.1} s", tl.t0.elapsed().as_secs_f64()));
}

/// A re-send of firing alerts must never reach Alertmanager after the
/// resolve of one of them: Alertmanager would hold the alert firing again,
/// nobody would re-send the resolve, and it would stay firing (and be
/// notified as firing) until its `resolve_timeout`. The dispatcher leaves
/// out of a re-send every connection with a delivery in flight, and holds a
/// connection's next delivery while a re-send carrying it is in flight
/// (src/deliver). Before that, a re-send started in the same millisecond as
/// a resolve made the test above fail about once in 25 runs; an
/// Alertmanager that answers a resolve later than `resend_interval` made it
/// fail every time, which is what this test does: the proxy forwards each
/// request at once and answers resolves 1.5 s late.
#[test]
fn a_resend_never_overtakes_the_resolve() {
    let bin = am_binary();
    let tl = new_timeline();
    let _print = PrintOnDrop(Arc::clone(&tl));
    let notes: Notes = Arc::new(Mutex::new(Vec::new()));
    let port = free_port();
    let hook = receiver(
        Arc::clone(&tl),
        Arc::clone(&notes),
        vec![(format!("http://127.0.0.1:{port}/"), "am".to_string())],
    );
    let am = start_am(bin, "am", port, None, hook);
    assert!(
        poll(Duration::from_secs(20), || {
            http_get(port, "/-/ready").is_some_and(|(s, _)| s == 200)
        }),
        "Alertmanager did not start\n{}",
        am.log()
    );
    let t = Arc::clone(&tl);
    let proxy = serve_on_thread(Router::new().route(
        "/api/v2/alerts",
        post(move |body: String| {
            let tl = Arc::clone(&t);
            async move {
                let resolve = body.contains("endsAt");
                tl.mark(format!(
                    "proxy: {} request forwarded",
                    if resolve { "resolve" } else { "firing" }
                ));
                let b = body.clone();
                let code = tokio::task::spawn_blocking(move || {
                    http_send(
                        port,
                        "POST",
                        "/api/v2/alerts",
                        &[("content-type", "application/json")],
                        &b,
                    )
                    .map_or(502, |(code, _, _)| code)
                })
                .await
                .unwrap_or(502);
                if resolve {
                    tokio::time::sleep(Duration::from_millis(1_500)).await;
                    tl.mark("proxy: resolve answered");
                }
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY)
            }
        }),
    ));
    let (status, platform) = platform();
    let admin = free_port();
    let setup = Setup::new(&daemon_config(
        "a",
        admin,
        status,
        &[("am", format!("http://{proxy}"))],
    ));
    let d = Daemon {
        name: "a".to_string(),
        admin,
        child: Some(setup.spawn_daemon(&[])),
        setup,
    };
    await_health(&tl, &[&d], "erp", "online");
    platform.set("erp", "down");
    tl.mark("platform: erp offline");
    await_note(&notes, "firing", "erp");
    platform.set("erp", "up");
    tl.mark("platform: erp online");
    await_health(&tl, &[&d], "erp", "online");
    // The resolve answered (1.5 s), then time for a flush or two.
    std::thread::sleep(Duration::from_millis(1_500) + QUIET);
    nothing_firing(&tl, &[&am], "erp");
    assert_eq!(count(&notes, "firing", "erp"), 1, "erp fired again");
    assert_eq!(count(&notes, "resolved", "erp"), 1, "erp resolved");
}
