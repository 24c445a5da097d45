//! Uptime reports against a database seeded with a scripted month: an
//! outage, an outage of two unhealthy states in a row, a degraded stretch
//! (up), a daily maintenance window and an SLO. The figures `connwatch
//! report` (table, JSON, CSV) and the API give must equal the ones this
//! test computes on its own, minute by minute, from the script.

mod common;
use common::*;
use serde_json::Value;
use std::time::Duration;

const MIN: i64 = 60_000;
const H: i64 = 60 * MIN;
const DAY: i64 = 24 * H;

/// The script: (start offset from the month's start, health) in order.
fn script() -> Vec<(i64, &'static str)> {
    vec![
        (H, "online"), // first probe an hour in: the hour before is unmeasured
        (3 * DAY + 10 * H, "offline"),
        (3 * DAY + 12 * H + 30 * MIN, "online"), // outage 1: 2 h 30 min
        (10 * DAY + 14 * H, "unreachable"),
        (10 * DAY + 14 * H + 45 * MIN, "offline"),
        (10 * DAY + 15 * H, "online"), // outage 2: 1 h
        (15 * DAY + 6 * H, "degraded"),
        (15 * DAY + 12 * H, "online"), // degraded: up
        (20 * DAY + 3 * H, "auth_required"),
        (20 * DAY + 3 * H + 20 * MIN, "online"), // outage 3: 20 min
        (25 * DAY + 2 * H + 30 * MIN, "offline"),
        (25 * DAY + 2 * H + 45 * MIN, "online"), // inside the 02:00 window: no outage
    ]
}

#[test]
fn a_scripted_month_gives_the_figures_computed_independently() {
    let (addr, _platform) = platform();
    let admin = free_port();
    let s = Setup::new(&format!(
        r#"
[daemon]
database = "cw.db"
listen = "127.0.0.1:{admin}"

[[connection]]
id = "erp"
name = "Hostile <b>name</b> & co"
url = "http://{addr}/c/erp"
interval = "1h"
slo = "99.5%"

[[maintenance]]
connections = ["erp"]
schedule = "0 0 2 * * *"
duration = "1h"
"#
    ));
    // The script starts at the first midnight (UTC) inside the report's
    // period (`--since 30d` from now), so the daily 02:00 window falls
    // where the script expects it.
    let now = connwatch::model::now_ms();
    let start = (now - 30 * DAY) / DAY * DAY + DAY;
    {
        let config = connwatch::config::Config::load(&s.config).unwrap();
        let mut store = connwatch::store::Store::open(&s.db()).unwrap();
        store
            .sync_connections(&connwatch::store::ConnMeta::all(&config))
            .unwrap();
        store.sync_windows(&config.maintenance).unwrap();
        let key = store.key_of("erp").unwrap().unwrap();
        let mut prev = "unknown";
        for (at, h) in script() {
            store
                .db
                .execute(
                    "INSERT INTO transitions (conn, at, previous, current, consecutive_failures) VALUES (?1, ?2, ?3, ?4, 0)",
                    rusqlite::params![key, start + at, prev, h],
                )
                .unwrap();
            prev = h;
        }
        store
            .db
            .execute(
                "UPDATE connections SET health = 'online', health_since = ?2 WHERE key = ?1",
                rusqlite::params![key, start + 20 * DAY + 3 * H + 20 * MIN],
            )
            .unwrap();
        // Hourly rollups: 100 probes at p95 40 ms every hour, and one hour
        // of 4,000 probes at p95 900 ms, more than 5 % of all the probes:
        // the count-weighted p95 is 900.
        for hour in 0..(29 * 24) {
            let (count, p95) = if hour == 100 { (4_000, 900) } else { (100, 40) };
            store
                .db
                .execute(
                    "INSERT INTO rollups (hour, conn, count, failures, latency_p50, latency_p95, latency_max) VALUES (?1, ?2, ?3, 0, 10, ?4, ?4)",
                    rusqlite::params![start + hour * H, key, count, p95],
                )
                .unwrap();
        }
    }

    // Ground truth, minute by minute over [start, start + 30 days), from
    // the script alone. The report's period is [now - 30d, now): before
    // `start` nothing is measured either, and after the script the health
    // stays online, so extend the count to `now`.
    let out = s.cmd(&["report", "--json", "--since", "30d"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &rows[0];
    let from = chrono::DateTime::parse_from_rfc3339(r["since"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    let to = chrono::DateTime::parse_from_rfc3339(r["until"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    let steps: Vec<(i64, &str)> = script().into_iter().map(|(a, h)| (start + a, h)).collect();
    let health = |t: i64| {
        steps
            .iter()
            .rev()
            .find(|(a, _)| *a <= t)
            .map_or("unknown", |(_, h)| *h)
    };
    let in_window = |t: i64| {
        let dt = chrono::DateTime::from_timestamp_millis(t).unwrap();
        use chrono::Timelike;
        dt.hour() == 2
    };
    let (mut up, mut down, mut maint, mut unmeasured) = (0i64, 0i64, 0i64, 0i64);
    // Whole minutes (every change in the script is on one), with the
    // partial minutes at both ends.
    let mut t = from;
    while t < to {
        let len = (MIN - t.rem_euclid(MIN)).min(to - t);
        let h = health(t);
        if h == "unknown" {
            unmeasured += len;
        } else if in_window(t) {
            maint += len;
        } else if matches!(h, "online" | "degraded" | "rate_limited") {
            up += len;
        } else {
            down += len;
        }
        t += len;
    }
    let truth = up as f64 * 100.0 / (up + down) as f64;
    println!(
        "ground truth: up {up} ms, down {down} ms, maintenance {maint} ms, unmeasured {unmeasured} ms, uptime {truth:.4}%"
    );
    println!("report: {r}");
    let got = r["uptime"].as_f64().unwrap();
    assert!((got - truth).abs() <= 0.01, "uptime {got} vs {truth}");
    assert_eq!(r["outages"]["count"], 3);
    // The minute grid can split a minute at the period's start: compare
    // the durations to the second where the script is exact.
    assert_eq!(
        r["outages"]["total_s"].as_f64().unwrap(),
        (3 * H + 50 * MIN) as f64 / 1000.0
    );
    assert_eq!(
        r["outages"]["longest_s"].as_f64().unwrap(),
        (2 * H + 30 * MIN) as f64 / 1000.0
    );
    assert_eq!(
        r["mttr_s"].as_f64().unwrap(),
        ((3 * H + 50 * MIN) / 3) as f64 / 1000.0
    );
    assert!(((r["maintenance_s"].as_f64().unwrap() * 1000.0) as i64 - maint).abs() <= MIN);
    assert_eq!(r["p95_latency_ms"], 900);
    assert_eq!(r["slo"], "99.5%");
    let measured = (up + down) as f64 / 1000.0;
    let budget = 0.005 * measured - down as f64 / 1000.0;
    assert!(
        (r["budget_remaining_s"].as_f64().unwrap() - budget).abs() < 61.0,
        "budget {} vs {budget}",
        r["budget_remaining_s"]
    );

    // CSV carries the same figures.
    let csv = String::from_utf8(s.cmd(&["report", "--csv", "--since", "30d"]).stdout).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(col("id"), "erp");
    assert!((col("uptime").parse::<f64>().unwrap() - truth).abs() <= 0.01);
    assert_eq!(col("outages_count"), "3");
    assert_eq!(col("p95_latency_ms"), "900");
    assert_eq!(col("slo"), "99.5%");
    // The table, for people.
    let table = String::from_utf8(s.cmd(&["report", "--since", "30d"]).stdout).unwrap();
    println!("{table}");
    assert!(table.contains(&format!("{got:.2}%")), "{table}");

    // The API gives the same report, from the running daemon.
    let mut daemon = s.spawn_daemon(&[]);
    assert!(eventually(Duration::from_secs(10), || http_get(
        admin,
        "/api/v1/connections/erp/uptime?since=30d"
    )
    .is_some_and(|(c, _)| c == 200)));
    let (_, body) = http_get(admin, "/api/v1/connections/erp/uptime?since=30d").unwrap();
    let api: Value = serde_json::from_str(&body).unwrap();
    assert!(
        (api["uptime"].as_f64().unwrap() - truth).abs() <= 0.01,
        "{api}"
    );
    assert_eq!(api["outages"], r["outages"]);
    assert_eq!(api["p95_latency_ms"], 900);
    // The connection's page shows the same figure (30 d row), escaped, and
    // renders in a real browser without a console error.
    needs("chromium", "chromium");
    let (dom, stderr) = chromium_dump(&format!("http://127.0.0.1:{admin}/connections/erp"));
    let row = dom
        .split("data-period=\"30 d\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no 30 d row:\n{dom}"));
    let pct: f64 = row
        .split("class=\"pct\">")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no figure in the 30 d row:\n{row}"));
    println!("page, 30 d: {pct:.2} % (ground truth {truth:.4} %)");
    assert!((pct - truth).abs() <= 0.01, "page {pct} vs {truth}");
    for needle in [
        "<h1>Hostile &lt;b&gt;name&lt;/b&gt; &amp; co",
        "id=\"latency\"",
        "<polyline class=\"p95\"",
        "class=\"transition\" data-current=\"auth_required\"",
        "data-current=\"offline\" data-maintenance=\"yes\"",
        "data-script=\"ok\"",
    ] {
        assert!(dom.contains(needle), "{needle} missing:\n{dom}");
    }
    assert!(!dom.contains("<b>name</b>"), "the name was not escaped");
    for bad in ["Uncaught", "Refused to", "SyntaxError"] {
        assert!(
            !stderr.lines().any(|l| l.contains(bad)),
            "browser reported {bad}:\n{stderr}"
        );
    }
    // The list links to it, and renders in the browser too.
    let (list, stderr) = chromium_dump(&format!("http://127.0.0.1:{admin}/?health=all"));
    assert!(list.contains("href=\"/connections/erp\""), "{list}");
    assert!(list.contains("data-script=\"ok\""), "{list}");
    assert!(list.contains("Hostile &lt;b&gt;name&lt;/b&gt;"), "{list}");
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains("Uncaught") || l.contains("Refused to")),
        "{stderr}"
    );
    // The list filters by text and by health, without a script.
    let (_, hit) = http_get(admin, "/?q=HOSTILE&health=all").unwrap();
    assert!(hit.contains("id=\"conn-erp\""), "{hit}");
    let (_, miss) = http_get(admin, "/?q=zzz").unwrap();
    assert!(miss.contains("No connection matches the filter"), "{miss}");
    let (_, healthy) = http_get(admin, "/?health=problems").unwrap();
    assert!(
        !healthy.contains("id=\"conn-erp\""),
        "erp is online: {healthy}"
    );
    assert!(
        healthy.contains("<option value=\"problems\" selected>"),
        "{healthy}"
    );
    let (code, _) = http_get(admin, "/?colour=red").unwrap();
    assert_eq!(code, 400);
    let (code, _) = http_get(admin, "/connections/nope").unwrap();
    assert_eq!(code, 404);
    // The budget as a metric.
    let (_, metrics) = http_get(admin, "/metrics").unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("connwatch_slo_budget_remaining{connection=\"erp\"}"))
        .unwrap_or_else(|| panic!("no budget metric:\n{metrics}"));
    let left: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((left - budget).abs() < 61.0, "{line} vs {budget}");
    let (code, _) = http_get(admin, "/api/v1/connections/nope/uptime").unwrap();
    assert_eq!(code, 404);
    let (code, _) = http_get(admin, "/api/v1/connections/erp/uptime?since=soon").unwrap();
    assert_eq!(code, 400);
    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
}

/// The views' newest hourly slot is never older than `history_flush`: a new
/// install shows its current hour within seconds, not after five minutes.
#[test]
fn the_current_hour_shows_within_history_flush() {
    let (addr, _platform) = platform();
    let admin = free_port();
    let s = Setup::new(&format!(
        r#"
[daemon]
database = "cw.db"
listen = "127.0.0.1:{admin}"
history_flush = "1s"

[[connection]]
id = "a"
url = "http://{addr}/c/a"
interval = "200ms"
timeout = "150ms"
"#
    ));
    let started = std::time::Instant::now();
    let mut daemon = s.spawn_daemon(&[]);
    let hour_now = || connwatch::model::now_ms() / H * H;
    let current = || -> Option<u64> {
        let (_, body) = http_get(admin, "/api/v1/connections/a")?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let want = connwatch::model::rfc3339(hour_now());
        v["hourly"]
            .as_array()?
            .iter()
            .find(|h| h["hour"] == want.as_str())
            .and_then(|h| h["count"].as_u64())
    };
    assert!(
        eventually(Duration::from_secs(5), || current().is_some_and(|c| c >= 3)),
        "the current hour's rollup after {:?}: {:?}",
        started.elapsed(),
        current()
    );
    println!(
        "current hour's rollup shown {} ms after the start: {:?} probes",
        started.elapsed().as_millis(),
        current()
    );
    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
}
