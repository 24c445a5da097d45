//! The admin server with the real binary: every API route (including auth
//! failures and JSON errors), `/metrics` checked by `promtool check metrics`
//! (Debian's `prometheus`), and the status page rendered by headless
//! Chromium (Debian's `chromium`). `.ci/run` installs both.

mod common;
use common::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "test-admin-token-0123456789";

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// `(status, body as JSON)` of a request.
fn call(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let (status, _, body) = http_req(port, method, path, &headers)
        .unwrap_or_else(|| panic!("{method} {path}: no answer"));
    (status, json(&body))
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error of the stable shape: {v}"))
}

fn wait_ready(port: u16, setup: &Setup) {
    assert!(
        eventually(Duration::from_secs(20), || {
            http_get(port, "/readyz").is_some_and(|(s, _)| s == 200)
        }),
        "/readyz never answered 200:\n{}",
        setup.daemon_log()
    );
}

#[test]
fn api_routes_auth_errors_metrics_and_audit() {
    needs("promtool", "prometheus");
    let addr = scenario_server();
    let port = free_port();
    let setup = Setup::new(&format!(
        "[daemon]\ndatabase = \"cw.db\"\naudit_log = \"audit.jsonl\"\nhistory_flush = \"1s\"\n\
         listen = \"127.0.0.1:{port}\"\nadmin_token = \"{TOKEN}\"\n\
         [defaults]\ninterval = \"1s\"\ntimeout = \"2s\"\n\
         breaker = {{ failure_threshold = 2, success_threshold = 2, open_for = \"60s\", max_open_for = \"60s\" }}\n\
         [[connection]]\nid = \"stable\"\nurl = \"http://{addr}/stable\"\n\
         [[connection]]\nid = \"goes-down\"\nurl = \"http://{addr}/goes-down\"\n\
         [[connection]]\nid = \"ratelimit\"\nurl = \"http://{addr}/ratelimit\"\n\
         [[sink]]\nid = \"file\"\nkind = \"log\"\npath = \"events.jsonl\"\n"
    ));
    let mut daemon = setup.spawn_daemon(&[]);
    wait_ready(port, &setup);

    // Liveness and readiness.
    let (s, v) = call(port, "GET", "/healthz", None);
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let (s, v) = call(port, "GET", "/readyz", None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["checks"]["database"], "ok");
    assert_eq!(v["checks"]["scheduler"], "ok");

    // The list reaches the expected states.
    let health = |id: &str| {
        let (_, v) = call(port, "GET", "/api/v1/connections", None);
        v["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["health"].as_str().unwrap().to_string())
    };
    assert!(
        eventually(Duration::from_secs(20), || {
            health("goes-down").as_deref() == Some("offline")
                && health("ratelimit").as_deref() == Some("rate_limited")
                && health("stable").as_deref() == Some("online")
        }),
        "states not reached: {:?} {:?} {:?}\n{}",
        health("goes-down"),
        health("ratelimit"),
        health("stable"),
        setup.daemon_log()
    );
    let (s, v) = call(port, "GET", "/api/v1/connections", None);
    assert_eq!(s, 200);
    assert_eq!(v["connections"].as_array().unwrap().len(), 3);

    // One connection, with its history.
    let (s, v) = call(
        port,
        "GET",
        "/api/v1/connections/goes-down?since=10m&limit=50",
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["connection"]["id"], "goes-down");
    assert_eq!(v["connection"]["circuit"], "open");
    let history = v["history"].as_array().unwrap();
    assert!(
        history
            .iter()
            .any(|h| h["type"] == "transition" && h["current"] == "offline"),
        "no transition to offline in {history:?}"
    );
    let (s, v) = call(port, "GET", "/api/v1/connections/nope", None);
    assert_eq!((s, error_code(&v)), (404, "unknown_connection"));
    let (s, v) = call(port, "GET", "/api/v1/connections/stable?since=soon", None);
    assert_eq!((s, error_code(&v)), (400, "bad_request"));
    let (s, v) = call(port, "GET", "/api/v1/connections/stable?bogus=1", None);
    assert_eq!((s, error_code(&v)), (400, "bad_request"));

    // Events, filtered.
    let (s, v) = call(port, "GET", "/api/v1/events?connection=goes-down", None);
    assert_eq!(s, 200, "{v}");
    let evs = v["events"].as_array().unwrap();
    assert!(!evs.is_empty(), "no events for goes-down");
    assert!(
        evs.iter().all(|e| e["connection_id"] == "goes-down"),
        "{evs:?}"
    );
    let event_id = evs[0]["id"].as_str().unwrap().to_string();
    let (s, v) = call(port, "GET", "/api/v1/events?state=dead&limit=5", None);
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(port, "GET", "/api/v1/events?state=sideways", None);
    assert_eq!((s, error_code(&v)), (400, "bad_request"));

    // Probe now: auth first, then the engine's answer.
    let probe = "/api/v1/connections/stable/probe";
    let (s, head, body) = http_req(port, "POST", probe, &[]).unwrap();
    assert_eq!((s, error_code(&json(&body))), (401, "unauthorized"));
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    let (s, v) = call(port, "POST", probe, Some("wrong-token-0123456789"));
    assert_eq!((s, error_code(&v)), (401, "unauthorized"));
    let (s, v) = call(port, "POST", probe, Some(&TOKEN[..TOKEN.len() - 1]));
    assert_eq!(
        (s, error_code(&v)),
        (401, "unauthorized"),
        "a prefix of the token"
    );
    let (s, _, body) = http_req(port, "POST", probe, &[("Authorization", TOKEN)]).unwrap();
    assert_eq!(
        (s, error_code(&json(&body))),
        (401, "unauthorized"),
        "token without the Bearer scheme"
    );
    let (s, v) = call(port, "POST", probe, Some(TOKEN));
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["probe"], "started");
    let (s, v) = call(
        port,
        "POST",
        "/api/v1/connections/ratelimit/probe",
        Some(TOKEN),
    );
    assert_eq!((s, error_code(&v)), (409, "held"), "{v}");
    assert_eq!(v["error"]["reason"], "retry_after");
    let (s, v) = call(
        port,
        "POST",
        "/api/v1/connections/goes-down/probe",
        Some(TOKEN),
    );
    assert_eq!((s, error_code(&v)), (409, "held"), "{v}");
    assert_eq!(v["error"]["reason"], "circuit_open");
    let (s, v) = call(port, "POST", "/api/v1/connections/nope/probe", Some(TOKEN));
    assert_eq!((s, error_code(&v)), (404, "unknown_connection"));

    // Replay.
    let (s, v) = call(
        port,
        "POST",
        &format!("/api/v1/events/{event_id}/replay"),
        None,
    );
    assert_eq!((s, error_code(&v)), (401, "unauthorized"));
    let (s, v) = call(
        port,
        "POST",
        &format!("/api/v1/events/{event_id}/replay"),
        Some(TOKEN),
    );
    assert_eq!(s, 202, "{v}");
    assert!(v["deliveries_queued"].as_u64().unwrap() >= 1, "{v}");
    let (s, v) = call(
        port,
        "POST",
        &format!("/api/v1/events/{event_id}/replay?sink=nope"),
        Some(TOKEN),
    );
    assert_eq!((s, error_code(&v)), (404, "unknown_sink"));
    let (s, v) = call(port, "POST", "/api/v1/events/evt_nope/replay", Some(TOKEN));
    assert_eq!((s, error_code(&v)), (404, "unknown_event"));

    // Unknown routes and methods keep the error shape.
    let (s, v) = call(port, "GET", "/api/v1/nothing", None);
    assert_eq!((s, error_code(&v)), (404, "not_found"));
    let (s, v) = call(port, "GET", probe, None);
    assert_eq!((s, error_code(&v)), (405, "method_not_allowed"));
    let (s, v) = call(port, "DELETE", "/api/v1/connections", None);
    assert_eq!((s, error_code(&v)), (405, "method_not_allowed"));

    // Metrics: the families the issue names, valid for promtool.
    let (s, head, text) = http_req(port, "GET", "/metrics", &[]).unwrap();
    assert_eq!(s, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    for needle in [
        "connwatch_connection_health{connection=\"goes-down\",health=\"offline\"} 1",
        "connwatch_connection_health{connection=\"stable\",health=\"online\"} 1",
        "connwatch_connection_circuit_state{connection=\"goes-down\"} 2",
        "connwatch_probes_total{outcome=\"online\"}",
        "connwatch_probes_total{outcome=\"rate_limited\"}",
        "connwatch_probe_duration_seconds_bucket{le=",
        "connwatch_scheduler_lateness_seconds_bucket{le=",
        "connwatch_outbox_pending ",
        "connwatch_outbox_oldest_pending_age_seconds ",
        "connwatch_deliveries_total{result=\"done\",sink=\"file\"}",
        "connwatch_database_size_bytes ",
        "connwatch_writer_batch_rows_bucket{le=",
        "connwatch_build_info{connwatch_instance=",
    ] {
        assert!(
            text.contains(needle),
            "{needle} missing from /metrics:\n{text}"
        );
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = wait_output(promtool, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Operator actions are in the audit log; the token is nowhere.
    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
    let audit = std::fs::read_to_string(setup.dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"api_probe\"") && audit.contains("\"api_replay\""),
        "{audit}"
    );
    let all = all_bytes(setup.dir.path());
    assert!(!contains(&all, TOKEN), "the admin token leaked to disk");
    assert!(!setup.daemon_log().contains(TOKEN));
}

#[test]
fn without_a_token_mutations_are_refused_and_other_hosts_need_one() {
    let addr = scenario_server();
    let port = free_port();
    // Beyond loopback without a token: a configuration error.
    let setup = Setup::new(&format!(
        "[daemon]\ndatabase = \"cw.db\"\nlisten = \"0.0.0.0:{port}\"\n\
         [[connection]]\nid = \"stable\"\nurl = \"http://{addr}/stable\"\n"
    ));
    let out = setup.cmd(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("connwatch.toml:3:10:")
            && err.contains("daemon.listen")
            && err.contains("admin_token"),
        "{err}"
    );
    // A token that is too short is refused, and so is a token set twice.
    std::fs::write(
        &setup.config,
        format!("[daemon]\nlisten = \"127.0.0.1:{port}\"\nadmin_token = \"short\"\n"),
    )
    .unwrap();
    let out = setup.cmd(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("too short"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("\"short\""));

    // Loopback without a token: reads work, mutations answer 403.
    std::fs::write(
        &setup.config,
        format!(
            "[daemon]\ndatabase = \"cw.db\"\nlisten = \"127.0.0.1:{port}\"\n\
             [defaults]\ninterval = \"1s\"\n\
             [[connection]]\nid = \"stable\"\nurl = \"http://{addr}/stable\"\n"
        ),
    )
    .unwrap();
    let mut daemon = setup.spawn_daemon(&[]);
    wait_ready(port, &setup);
    let (s, _) = call(port, "GET", "/api/v1/connections", None);
    assert_eq!(s, 200);
    let (s, v) = call(
        port,
        "POST",
        "/api/v1/connections/stable/probe",
        Some(TOKEN),
    );
    assert_eq!((s, error_code(&v)), (403, "disabled"));
    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
}

#[test]
fn beyond_loopback_every_read_needs_the_token() {
    let addr = scenario_server();
    let port = free_port();
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), format!("{TOKEN}\n")).unwrap();
    // Bound to every address (reached here over loopback), token from a file.
    let setup = Setup::new(&format!(
        "[daemon]\ndatabase = \"cw.db\"\nlisten = \"0.0.0.0:{port}\"\nadmin_token_file = \"{}\"\n\
         [[connection]]\nid = \"stable\"\nurl = \"http://{addr}/stable\"\n",
        token_file.path().display()
    ));
    let mut daemon = setup.spawn_daemon(&[]);
    wait_ready(port, &setup);
    for path in ["/", "/metrics", "/api/v1/connections", "/api/v1/events"] {
        let (s, _, body) = http_req(port, "GET", path, &[]).unwrap();
        assert_eq!(
            (s, error_code(&json(&body))),
            (401, "unauthorized"),
            "{path}"
        );
        let auth = format!("Bearer {TOKEN}");
        let (s, _, _) = http_req(port, "GET", path, &[("Authorization", &auth)]).unwrap();
        assert_eq!(s, 200, "{path} with the token");
    }
    let (s, _) = call(port, "GET", "/healthz", None);
    assert_eq!(s, 200, "/healthz stays open for load balancers and systemd");
    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
}

#[test]
fn status_page_renders_in_headless_chromium_without_script_errors() {
    needs("chromium", "chromium");
    let addr = scenario_server();
    let port = free_port();
    let hostile = r#"<script>document.title="pwned"</script><img src=x onerror=alert(1)>"#;
    let setup = Setup::new(&format!(
        "[daemon]\ndatabase = \"cw.db\"\nhistory_flush = \"1s\"\nlisten = \"127.0.0.1:{port}\"\n\
         [defaults]\ninterval = \"1s\"\ntimeout = \"2s\"\nbreaker = {{ failure_threshold = 2 }}\n\
         [[connection]]\nid = \"stable\"\nname = \"ERP & friends\"\nurl = \"http://{addr}/stable\"\n\
         [[connection]]\nid = \"goes-down\"\nname = \"{}\"\nurl = \"http://{addr}/goes-down\"\n\
         [[connection]]\nid = \"auth\"\nurl = \"http://{addr}/auth\"\n\
         [[connection]]\nid = \"degraded\"\nurl = \"http://{addr}/degraded\"\n",
        hostile.replace('"', "\\\"")
    ));
    let mut daemon = setup.spawn_daemon(&[]);
    wait_ready(port, &setup);
    assert!(
        eventually(Duration::from_secs(20), || {
            let s = setup.status_json();
            s.as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == "goes-down" && c["health"] == "offline")
        }),
        "goes-down never went offline"
    );
    let (dom, stderr) = chromium_dump(&format!("http://127.0.0.1:{port}/"));
    assert!(
        dom.contains("data-script=\"ok\""),
        "the page's script did not finish:\n{dom}\n{stderr}"
    );
    for id in ["stable", "goes-down", "auth", "degraded"] {
        assert!(
            dom.contains(&format!("id=\"conn-{id}\"")),
            "no row for {id}:\n{dom}"
        );
    }
    assert!(dom.contains(r#"data-health="offline""#), "{dom}");
    assert!(dom.contains(r#"data-health="auth_required""#), "{dom}");
    // The hostile name is shown as text, not run.
    assert!(dom.contains("&lt;script&gt;document.title="), "{dom}");
    assert!(
        !dom.contains("<img src=\"x\""),
        "an element was injected:\n{dom}"
    );
    assert!(
        !dom.contains("<title>pwned"),
        "the injected script ran:\n{dom}"
    );
    assert!(dom.contains("ERP &amp; friends"));
    for bad in ["Uncaught", "Refused to", "SyntaxError"] {
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("CONSOLE") || l.contains(bad))
            .filter(|l| l.contains(bad))
            .collect();
        assert!(lines.is_empty(), "browser reported {bad}: {lines:?}");
    }
    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
}

/// Online probes of `id` written so far (runs are flushed every second).
fn online_probes(setup: &Setup, id: &str) -> i64 {
    rusqlite::Connection::open(setup.db())
        .unwrap()
        .query_row(
            "SELECT coalesce(sum(r.count), 0) FROM probe_runs r
             JOIN connections c ON c.key = r.conn WHERE c.id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn the_admin_surface_bounds_probed_tokens_big_heads_and_connection_floods() {
    use std::io::{Read, Write};
    let addr = scenario_server();
    let port = free_port();
    let setup = Setup::new(&format!(
        "[daemon]\ndatabase = \"cw.db\"\nhistory_flush = \"1s\"\nlisten = \"127.0.0.1:{port}\"\nadmin_token = \"{TOKEN}\"\n\
         [[connection]]\nid = \"stable\"\nurl = \"http://{addr}/stable\"\ninterval = \"200ms\"\ntimeout = \"1s\"\n"
    ));
    let mut daemon = setup.spawn_daemon(&[]);
    wait_ready(port, &setup);

    // Tokens that share ever longer prefixes with the real one, differ in
    // case or length: all refused alike.
    let n = TOKEN.len();
    let mut near: Vec<String> = [1, n / 2, n - 1]
        .iter()
        .map(|k| TOKEN[..*k].to_string())
        .collect();
    near.push(format!("{}X", &TOKEN[..n - 1]));
    near.push(format!("{TOKEN}X"));
    near.push(TOKEN.to_uppercase());
    near.push(format!("{TOKEN} x"));
    for t in &near {
        let (s, v) = call(port, "POST", "/api/v1/connections/stable/probe", Some(t));
        assert_eq!((s, error_code(&v)), (401, "unauthorized"), "token {t:?}");
    }
    let (s, _) = call(
        port,
        "POST",
        "/api/v1/connections/stable/probe",
        Some(TOKEN),
    );
    assert!(s == 202 || s == 409, "the right token: {s}");

    // A request head over 16 KiB, or with more than 64 headers: refused
    // (431/414) or cut off, never served.
    let long = format!("/api/v1/connections/{}", "a".repeat(20_000));
    let big = http_req(port, "GET", &long, &[]).map(|r| r.0);
    assert!(matches!(big, None | Some(414) | Some(431)), "{big:?}");
    let names: Vec<String> = (0..100).map(|i| format!("X-H{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|h| (h.as_str(), "1")).collect();
    let r = http_req(port, "GET", "/healthz", &many).map(|r| r.0);
    assert!(matches!(r, None | Some(431)), "{r:?}");

    // A flood of silent connections: at most 64 are held, the rest closed
    // at once; the held ones are dropped when the head deadline (5 s)
    // passes. Probing goes on meanwhile.
    let before = online_probes(&setup, "stable");
    let t0 = std::time::Instant::now();
    let socks: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // Whether the server closed (or answered and closed) the connection.
    let closed = |s: &std::net::TcpStream, wait: Duration| -> bool {
        s.set_read_timeout(Some(wait)).unwrap();
        let mut b = [0u8; 256];
        let mut r = s;
        // Any bytes (a 408, say) or the end of the stream: the server acted.
        match r.read(&mut b) {
            Ok(0) | Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    };
    std::thread::sleep(Duration::from_millis(500));
    let shut_at_once = socks
        .iter()
        .filter(|s| closed(s, Duration::from_millis(50)))
        .count();
    assert!(
        shut_at_once >= 36,
        "only {shut_at_once} of 100 silent connections were refused at once"
    );
    std::thread::sleep(Duration::from_secs(6).saturating_sub(t0.elapsed()));
    let still_open = socks
        .iter()
        .filter(|s| !closed(s, Duration::from_millis(1_000)))
        .count();
    assert_eq!(
        still_open, 0,
        "silent connections outlived the head deadline"
    );
    // One that trickles its head also gets cut at the deadline.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let t1 = std::time::Instant::now();
    let mut cut = false;
    for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        .iter()
        .cycle()
        .take(20)
    {
        if slow.write_all(&[*b]).is_err() || closed(&slow, Duration::from_millis(400)) {
            cut = true;
            break;
        }
    }
    assert!(cut, "a head trickled for 8 s was never cut");
    assert!(t1.elapsed() < Duration::from_secs(9));
    drop(socks);
    // Served again, and the connection was probed throughout (every 200 ms).
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    std::thread::sleep(Duration::from_millis(1_500));
    let probed = online_probes(&setup, "stable") - before;
    let secs = t0.elapsed().as_secs_f64();
    assert!(
        probed as f64 >= secs / 0.2 * 0.6,
        "only {probed} probes in {secs:.1} s during the flood"
    );
    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
}
