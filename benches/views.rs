//! How fast the operator's views are at scale: a database seeded with N
//! connections (default 10,000), a year of rollups each (30 days hourly,
//! then daily, as retention leaves them), a few transitions each and one
//! scoped check; then the connection page, the list page, `report` for one
//! connection and for all, each timed over a few runs, and the query plans
//! they use. Prints figures (docs/performance.md); asserts nothing about
//! time.
//!
//! `cargo bench --bench views -- [--n 10000] [--runs 5]`

use connwatch::store::{ConnMeta, Store};
use std::time::Instant;

const H: i64 = 3_600_000;
const DAY: i64 = 24 * H;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, f64, T) {
    let mut best = f64::MAX;
    let mut sum = 0.0;
    let mut last = None;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        last = Some(f());
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        best = best.min(ms);
        sum += ms;
    }
    (best, sum / runs.max(1) as f64, last.expect("one run"))
}

fn main() {
    let n = arg("--n", 10_000);
    let runs = arg("--runs", 5);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("views.db");
    let now = connwatch::model::now_ms();
    let this_hour = now / H * H;
    let t = Instant::now();
    {
        let mut store = Store::open(&path).expect("open");
        let metas: Vec<ConnMeta> = (0..n)
            .map(|i| {
                let mut m = ConnMeta::bare(&format!("c{i:05}"));
                m.name = Some(format!("Connection {i}"));
                m.slo = (i % 10 == 0).then_some(0.995);
                m
            })
            .collect();
        let known = store.sync_connections(&metas).expect("sync");
        let tx = store.db.transaction().expect("tx");
        {
            let mut roll = tx
                .prepare("INSERT INTO rollups (hour, conn, count, failures, latency_p50, latency_p95, latency_max) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
                .expect("prepare");
            let mut tr = tx
                .prepare("INSERT INTO transitions (conn, at, previous, current, consecutive_failures) VALUES (?1, ?2, ?3, ?4, 0)")
                .expect("prepare");
            for (i, m) in metas.iter().enumerate() {
                let key = known[&m.id].key;
                // 30 days hourly, then 335 days daily (one row per day).
                for h in 0..(30 * 24) {
                    let fail = i64::from((h + i) % 97 == 0);
                    roll.execute(rusqlite::params![
                        this_hour - h as i64 * H,
                        key,
                        360,
                        fail,
                        40,
                        90,
                        300
                    ])
                    .expect("insert");
                }
                for d in 30..365 {
                    let day = (this_hour - d as i64 * DAY) / DAY * DAY;
                    roll.execute(rusqlite::params![day, key, 8_640, 2, 40, 90, 300])
                        .expect("insert");
                }
                // A year of changes: an outage every ~40 days.
                let mut prev = "unknown";
                let start = now - 365 * DAY;
                let mut at = start;
                for (k, cur) in [
                    "online", "offline", "online", "offline", "online", "offline", "online",
                    "offline", "online", "offline", "online", "offline", "online", "offline",
                    "online", "offline", "online",
                ]
                .iter()
                .enumerate()
                {
                    tr.execute(rusqlite::params![key, at, prev, cur])
                        .expect("insert");
                    prev = cur;
                    at += if k % 2 == 0 {
                        40 * DAY
                    } else {
                        (i as i64 % 7 + 1) * H
                    };
                }
            }
        }
        tx.commit().expect("commit");
        store
            .sync_windows(&[connwatch::config::Maintenance {
                connections: None,
                schedule: "0 0 2 * * Sun".into(),
                duration: std::time::Duration::from_secs(7200),
            }])
            .expect("windows");
    }
    let seed_s = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "seeded {n} connections, a year of rollups and 17 transitions each in {seed_s:.1} s; database {:.1} MiB",
        size as f64 / 1_048_576.0
    );
    let store = Store::open_read_only(&path).expect("read-only");
    let id = format!("c{:05}", n / 2);
    let (best, mean, page) = time(runs, || {
        connwatch::admin::conn_page::render(&store, &id, now)
            .expect("render")
            .expect("known")
    });
    println!(
        "connection page ({id}): best {best:.1} ms, mean {mean:.1} ms, {} bytes",
        page.len()
    );
    let (best, mean, list) = time(runs, || {
        connwatch::admin::page::render(&store, now).expect("list")
    });
    println!(
        "list page ({} rows shown of {n}): best {best:.1} ms, mean {mean:.1} ms, {} bytes",
        connwatch::admin::page::MAX_ROWS.min(n),
        list.len()
    );
    let (best, mean, one) = time(runs, || {
        connwatch::store::report::reports(&store, now - 30 * DAY, now, Some(&id)).expect("report")
    });
    println!(
        "report --since 30d --connection {id}: best {best:.1} ms, mean {mean:.1} ms (uptime {:?})",
        one[0].uptime
    );
    let (best, mean, one) = time(runs, || {
        connwatch::store::report::reports(&store, now - 365 * DAY, now, Some(&id)).expect("report")
    });
    println!(
        "report --since 365d --connection {id}: best {best:.1} ms, mean {mean:.1} ms (outages {})",
        one[0].outages.count
    );
    let (best, mean, all) = time(runs.min(2), || {
        connwatch::store::report::reports(&store, now - 30 * DAY, now, None).expect("report")
    });
    println!("report --since 30d, all {} connections: best {best:.0} ms, mean {mean:.0} ms ({:.2} ms per connection)", all.len(), best / all.len().max(1) as f64);
    let (best, mean, budgets) = time(runs.min(2), || {
        connwatch::store::report::slo_budgets(&store, now).expect("budgets")
    });
    println!(
        "/metrics SLO budgets ({} connections with an slo): best {best:.0} ms, mean {mean:.0} ms",
        budgets.len()
    );
    for (what, sql) in [
        ("transitions of a period", "EXPLAIN QUERY PLAN SELECT at, current FROM transitions WHERE conn = 1 AND at < 2 AND at >= coalesce((SELECT max(at) FROM transitions WHERE conn = 1 AND at <= 1), 1) ORDER BY at, id"),
        ("rollups of a period", "EXPLAIN QUERY PLAN SELECT latency_p95, count FROM rollups WHERE conn = 1 AND hour >= 1 AND hour < 2"),
        ("hourly rollups for the page", "EXPLAIN QUERY PLAN SELECT hour, count, failures, latency_p50, latency_p95 FROM rollups WHERE conn = 1 AND hour >= 1 ORDER BY hour"),
    ] {
        let plan: Vec<String> = store
            .db
            .prepare(sql)
            .and_then(|mut st| st.query_map([], |r| r.get::<_, String>(3))?.collect())
            .unwrap_or_default();
        println!("plan, {what}: {}", plan.join("; "));
    }
}
