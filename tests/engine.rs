//! The engine through the library, against a real loopback server that
//! counts concurrent requests: the global cap holds, and a connection whose
//! probe outlasts its interval is skipped, not bunched.

use axum::routing::get;
use axum::Router;
use connwatch::config::Config;
use connwatch::engine::{Engine, EngineStats};
use connwatch::probe::Prober;
use connwatch::store::writer::Writer;
use connwatch::store::Store;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct Counters {
    now: AtomicUsize,
    max: AtomicUsize,
    total: AtomicUsize,
}

async fn slow_server(c: Arc<Counters>, delay: Duration) -> std::net::SocketAddr {
    let app = Router::new().route(
        "/{id}",
        get(move || {
            let c = Arc::clone(&c);
            async move {
                let n = c.now.fetch_add(1, Ordering::SeqCst) + 1;
                c.max.fetch_max(n, Ordering::SeqCst);
                c.total.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                c.now.fetch_sub(1, Ordering::SeqCst);
                r#"{"status":"online"}"#
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

/// Runs the real engine (store, writer, prober) on `text` for `time`, then
/// shuts it down and waits for the writer. Returns the stats and database.
async fn run_engine(
    dir: &tempfile::TempDir,
    text: &str,
    time: Duration,
) -> (EngineStats, std::path::PathBuf) {
    let cfg = Config::parse(&dir.path().join("c.toml"), text, &|_| None).unwrap();
    let db = cfg.daemon.database.clone();
    let known = Store::open(Path::new(&db))
        .unwrap()
        .sync_connections(&connwatch::store::ConnMeta::all(&cfg))
        .unwrap();
    let prober = Prober::new(&cfg.connections, &Default::default()).unwrap();
    let (writer, join) = Writer::start(&db, cfg.daemon.history_flush).unwrap();
    let (engine, _cron, _) = Engine::new(&cfg, &known, &prober, writer.clone());
    let (tx, rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(engine.run(rx));
    tokio::time::sleep(time).await;
    tx.send(true).unwrap();
    let stats = run.await.unwrap();
    writer.close().await;
    tokio::task::spawn_blocking(move || join.join())
        .await
        .unwrap();
    (stats, db)
}

#[tokio::test(flavor = "current_thread")]
async fn cap_holds_and_busy_ticks_are_skipped() {
    let counters = Arc::new(Counters::default());
    // Each answer takes 600 ms; connections are due every 200 ms.
    let addr = slow_server(Arc::clone(&counters), Duration::from_millis(600)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from(
        "[daemon]\ndatabase = \"cw.db\"\nmax_concurrent_probes = 4\n[defaults]\ninterval = \"200ms\"\ntimeout = \"2s\"\n",
    );
    for i in 0..12 {
        text.push_str(&format!(
            "[[connection]]\nid = \"c{i}\"\nurl = \"http://{addr}/c{i}\"\n"
        ));
    }
    let (stats, _db) = run_engine(&dir, &text, Duration::from_secs(3)).await;

    let max = counters.max.load(Ordering::SeqCst);
    assert!(max <= 4, "at most 4 probes in flight, saw {max}");
    assert_eq!(max, 4, "the cap was reached (12 slow connections)");
    // 12 connections x 15 ticks would be 180 probes; 4 at a time for 600 ms
    // allow at most ~20 in 3 s. Busy ticks were skipped, not queued.
    let total = counters.total.load(Ordering::SeqCst);
    assert!(total <= 28, "{total} requests: ticks were bunched");
    assert!(stats.skipped_busy > 50, "{stats:?}");
    assert_eq!(
        stats.probes_started, stats.probes_done,
        "shutdown waited for probes in flight"
    );
}

/// With tokio's clock paused, the engine against an always-failing
/// endpoint (a closed loopback port: refused at once): three probes a
/// second apart, then one trial per open wait, each wait doubling from
/// `open_for` (±20 % jitter, rounded up to the 1 s grid) to `max_open_for`.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_always_failing_endpoint_sees_the_open_wait_schedule() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[daemon]\ndatabase = \"cw.db\"\nhistory_flush = \"1h\"\n\
         [[connection]]\nid = \"dead\"\nurl = \"http://127.0.0.1:{port}/status\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n\
         breaker = {{ failure_threshold = 3, success_threshold = 2, open_for = \"4s\", max_open_for = \"60s\" }}\n"
    );
    let (stats, db) = run_engine(&dir, &text, Duration::from_secs(300)).await;

    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut stmt = conn.prepare("SELECT at FROM probes ORDER BY at").unwrap();
    let at: Vec<i64> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let gaps: Vec<i64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!(
        "probe offsets (ms): {:?}",
        at.iter().map(|t| t - at[0]).collect::<Vec<_>>()
    );
    assert!(
        at.len() >= 8 && at.len() <= 12,
        "{} probes in 300 s: {gaps:?}",
        at.len()
    );
    assert_eq!(stats.probes_done as usize, at.len());
    for g in &gaps[..2] {
        assert!(
            (1_000..1_050).contains(g),
            "the first three are a second apart: {gaps:?}"
        );
    }
    for (k, g) in gaps[2..].iter().enumerate() {
        let base = (4_000i64 << k).min(60_000) as f64;
        let lo = (0.8 * base) as i64;
        let hi = (1.2 * base).min(60_000.0) as i64 + 1_050;
        assert!(
            *g >= lo && *g <= hi,
            "open wait {k}: {g} ms not in [{lo}, {hi}]: {gaps:?}"
        );
    }
    let events: Vec<String> = conn
        .prepare("SELECT type FROM events ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(events[0], "connection.status_changed");
    assert_eq!(events[1], "circuit.opened");
    assert!(
        events
            .iter()
            .filter(|e| *e == "circuit.half_opened")
            .count()
            >= 5,
        "{events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "connection.status_changed")
            .count(),
        1,
        "one confirmed change: {events:?}"
    );
}
