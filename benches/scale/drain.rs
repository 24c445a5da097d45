//! `cargo bench --bench scale -- --drain`: how fast one webhook sink drains
//! a backlog. N connections whose endpoints answer 503 offline from the
//! start, with `failure_threshold = 1`, so each one's first probe is its
//! offline baseline: one `connection.status_changed` (unknown → offline)
//! each, N deliveries to the sink. Connections emit nothing else (`events =
//! ["connection.status_changed"]`), and the circuit opens for a day, so no
//! further probe is made.
//!
//! The interval cannot make the backlog: first probes are spread evenly
//! over the interval (a 1 h interval would make the events trickle in for
//! an hour). So the receiver holds the first requests (the sink's slots)
//! until all N events are stored, then lets everything through and the
//! clock starts: what is measured is the drain of a full backlog, answered
//! after `--sink-delay` each. Nothing is asserted.

use crate::harness::{count, cpu_seconds, daemon_config, free_port, proc_field, serve, Daemon};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The drain's options (flattened into the scale benchmark's arguments);
/// it also uses `--n`, `--interval` (the spread of the first probes),
/// `--tick` and `--sink-delay`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Drain run: a backlog of N deliveries to one webhook sink, for each
    /// `--n`.
    #[arg(long)]
    pub drain: bool,
    /// The sink's `concurrency` (omitted from the configuration if not
    /// given: the kind's default).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Give up waiting for the drain after this long.
    #[arg(long, default_value = "20m", value_parser = humantime::parse_duration)]
    pub drain_max: Duration,
}

struct Target {
    probes: AtomicU64,
    release: tokio::sync::watch::Sender<bool>,
    released_at: OnceLock<Instant>,
    sink_delay: Duration,
    /// Requests that arrived before the release (they waited for it).
    held: AtomicU64,
    answered: AtomicU64,
    /// µs after the release of the first and last answer.
    first_us: AtomicU64,
    last_us: AtomicU64,
    ids: Mutex<HashSet<Box<str>>>,
    duplicates: AtomicU64,
}

async fn status(State(t): State<Arc<Target>>) -> (StatusCode, &'static str) {
    t.probes.fetch_add(1, Ordering::Relaxed);
    (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"offline"}"#)
}

async fn hook(State(t): State<Arc<Target>>, body: axum::body::Bytes) -> StatusCode {
    let mut rx = t.release.subscribe();
    if !*rx.borrow_and_update() {
        t.held.fetch_add(1, Ordering::Relaxed);
        let _ = rx.wait_for(|r| *r).await;
    }
    if !t.sink_delay.is_zero() {
        tokio::time::sleep(t.sink_delay).await;
    }
    let id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(Box::<str>::from))
        .unwrap_or_default();
    if !t.ids.lock().unwrap().insert(id) {
        t.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    t.answered.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = t.released_at.get() {
        let us = r.elapsed().as_micros() as u64;
        t.first_us.fetch_min(us, Ordering::Relaxed);
        t.last_us.fetch_max(us, Ordering::Relaxed);
    }
    StatusCode::OK
}

/// What one drain measured.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    pub n: usize,
    pub sink_delay: Duration,
    pub concurrency: Option<usize>,
    pub ready: bool,
    pub events: i64,
    /// Seconds from READY until every event was stored (the backlog).
    pub backlog_s: f64,
    pub held: u64,
    pub delivered: u64,
    pub duplicates: u64,
    pub dead: i64,
    pub pending_end: i64,
    /// First and last answer, seconds after the release.
    pub first_s: f64,
    pub last_s: f64,
    /// From the release until no delivery was pending.
    pub drain_s: f64,
    pub complete: bool,
    pub cpu_s: f64,
    pub vm_hwm_kib: u64,
}

const PENDING: &str = "SELECT count(*) FROM deliveries WHERE state = 'pending'";

/// Runs one drain of `n` deliveries.
pub fn run(
    a: &Args,
    n: usize,
    sink_delay: Duration,
    interval: Duration,
    tick: Duration,
    bin: &std::path::Path,
) -> Drain {
    let (release, _) = tokio::sync::watch::channel(false);
    let t = Arc::new(Target {
        probes: AtomicU64::new(0),
        release,
        released_at: OnceLock::new(),
        sink_delay,
        held: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        first_us: AtomicU64::new(u64::MAX),
        last_us: AtomicU64::new(0),
        ids: Mutex::new(HashSet::with_capacity(n)),
        duplicates: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/c/{i}", get(status))
        .route("/hook", post(hook))
        .with_state(Arc::clone(&t));
    let addr = serve(app);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(free_port(), tick, interval);
    cfg.push_str(
        "events = [\"connection.status_changed\"]\n\
         breaker = { failure_threshold = 1, open_for = \"1d\", max_open_for = \"1d\" }\n",
    );
    for i in 0..n {
        cfg.push_str(&format!(
            "[[connection]]\nid = \"c{i}\"\nurl = \"http://{addr}/c/{i}\"\n"
        ));
    }
    // The sink's timeout covers the requests held until the backlog is
    // complete.
    cfg.push_str(&format!(
        "[[sink]]\nid = \"hook\"\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\ntimeout = \"10m\"\n"
    ));
    if let Some(c) = a.concurrency {
        cfg.push_str(&format!("concurrency = {c}\n"));
    }
    let cfg_path = dir.path().join("bench.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut d = Drain {
        n,
        sink_delay,
        concurrency: a.concurrency,
        ..Drain::default()
    };
    let daemon = Daemon::start(bin, dir.path(), &cfg_path);
    let pid = daemon.pid();
    if !daemon.ready_ms.is_finite() {
        let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
        eprintln!("drain: no READY=1 within 60 s; daemon.log:\n{log}");
        daemon.stop();
        return d;
    }
    d.ready = true;
    // The backlog: every event stored (bounded: the spread of the first
    // probes plus 5 minutes).
    let ready = Instant::now();
    let until = ready + interval + Duration::from_secs(300);
    loop {
        d.events = count(dir.path(), "SELECT count(*) FROM events");
        if d.events >= n as i64 || Instant::now() >= until {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    d.backlog_s = ready.elapsed().as_secs_f64();
    if d.events < n as i64 {
        eprintln!(
            "drain: only {} of {n} events after {:.0} s; releasing anyway",
            d.events, d.backlog_s
        );
    }
    // Let the held requests reach the receiver.
    std::thread::sleep(Duration::from_millis(500));
    let cpu0 = cpu_seconds(pid);
    let released = Instant::now();
    let _ = t.released_at.set(released);
    t.release.send_replace(true);
    d.held = t.held.load(Ordering::Relaxed);
    let give_up = released + a.drain_max;
    let mut pending = count(dir.path(), PENDING);
    while pending != 0 && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(100));
        pending = count(dir.path(), PENDING);
    }
    d.drain_s = released.elapsed().as_secs_f64();
    d.complete = pending == 0;
    d.pending_end = pending;
    d.cpu_s = cpu_seconds(pid) - cpu0;
    d.vm_hwm_kib = proc_field(pid, "status", "VmHWM:");
    daemon.stop();
    d.events = count(dir.path(), "SELECT count(*) FROM events");
    d.dead = count(
        dir.path(),
        "SELECT count(*) FROM deliveries WHERE state = 'dead'",
    );
    d.delivered = t.ids.lock().unwrap().len() as u64;
    d.duplicates = t.duplicates.load(Ordering::Relaxed);
    let first = t.first_us.load(Ordering::Relaxed);
    d.first_s = if first == u64::MAX {
        f64::NAN
    } else {
        first as f64 / 1e6
    };
    d.last_s = t.last_us.load(Ordering::Relaxed) as f64 / 1e6;
    eprintln!(
        "drain: {} probes made; {} requests held until the release",
        t.probes.load(Ordering::Relaxed),
        d.held
    );
    d
}

/// The table header and one row per drain.
pub fn table(rows: &[Drain]) -> String {
    let mut s = String::new();
    s.push_str("| N | sink delay | concurrency | events | delivered (distinct) | duplicates | dead | requests held at release | backlog built s | first → last answer s | deliveries/s | s to drain (no pending) | daemon CPU s (% of a core) | VmHWM MiB | complete |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for d in rows {
        if !d.ready {
            s.push_str(&format!(
                "| {} | {:?} | {} | the daemon did not start (see above) |\n",
                d.n,
                d.sink_delay,
                d.concurrency
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "default".into())
            ));
            continue;
        }
        // Over the drain: from the release to the last answer.
        let rate = d.delivered as f64 / d.last_s.max(1e-9);
        s.push_str(&format!(
            "| {} | {:?} | {} | {} | {} | {} | {} | {} | {:.1} | {:.2} → {:.2} | {:.0} | {:.2} | {:.2} ({:.0} %) | {:.1} | {} |\n",
            d.n,
            d.sink_delay,
            d.concurrency
                .map(|c| c.to_string())
                .unwrap_or_else(|| "default".into()),
            d.events,
            d.delivered,
            d.duplicates,
            d.dead,
            d.held,
            d.backlog_s,
            d.first_s,
            d.last_s,
            rate,
            d.drain_s,
            d.cpu_s,
            100.0 * d.cpu_s / d.drain_s.max(1e-9),
            d.vm_hwm_kib as f64 / 1024.0,
            if d.complete {
                "yes".to_string()
            } else {
                format!("NO: {} pending after {:.0} s", d.pending_end, d.drain_s)
            },
        ));
    }
    s
}
