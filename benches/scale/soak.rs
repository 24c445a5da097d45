//! `cargo bench --bench scale -- --soak`: one long run of the real daemon at
//! N connections, some of them flapping, with a webhook sink whose receiver
//! goes down for a while. Every `--slice` one row of memory, database size,
//! probes, CPU, events and deliveries; at the end, whether every event
//! reached the receiver, how many twice, and in which order per connection.
//! Nothing is asserted.
//!
//! The flapping endpoints (`--flapping` percent of them, `i % 100 <
//! flapping`) hold each state for `--flap-period` (default 4 min), each
//! with its own phase offset, so the changes are spread over time. At the
//! defaults (interval 10 s, `failure_threshold` 3, `success_threshold` 2,
//! `open_for` 30 s doubling to `max_open_for` 2 min, flap detection over the
//! last 21 probes above 50 %), a 4 min offline phase is confirmed within
//! ~30 s and its end within the next trial (≤ 2 min) plus one probe: every
//! phase yields status changes and circuit events, and the 21 probes of the
//! flap window never hold more than two changes (≤ 12 %), so flap detection
//! stays quiet and nothing is silenced.
//!
//! Memory of the bench itself: probes are counted, not kept; the receiver
//! keeps one small entry per event id (first arrival number, count).

use crate::harness::{cpu_seconds, daemon_config, db_size, free_port, proc_field, serve, Daemon};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The soak's options (flattened into the scale benchmark's arguments).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Soak run: the largest `--n` at `--interval` for `--duration`, one
    /// row every `--slice`.
    #[arg(long)]
    pub soak: bool,
    #[arg(long, default_value = "60m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Percent of endpoints that alternate online/offline.
    #[arg(long, default_value_t = 5)]
    pub flapping: usize,
    /// How long a flapping endpoint holds each state.
    #[arg(long, default_value = "4m", value_parser = humantime::parse_duration)]
    pub flap_period: Duration,
    /// The webhook receiver answers 503 from this long after READY...
    #[arg(long, default_value = "20m", value_parser = humantime::parse_duration)]
    pub down_from: Duration,
    /// ...until this long after READY.
    #[arg(long, default_value = "40m", value_parser = humantime::parse_duration)]
    pub down_until: Duration,
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub slice: Duration,
    /// Slices ending within this are warm-up: flatness is measured against
    /// the first slice after it.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub soak_warmup: Duration,
    /// The sink's `retry_max`.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub retry_max: Duration,
    /// After `--duration`, wait at most this long for no pending delivery.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub drain_wait: Duration,
}

/// One event id as the receiver saw it.
struct Seen {
    /// Arrival number of its first accepted delivery.
    first: u64,
    count: u32,
}

struct Target {
    start: Instant,
    flapping_pct: usize,
    period_ms: u64,
    probes: AtomicU64,
    down: AtomicBool,
    /// Accepted deliveries (answered 200), and attempts refused with 503.
    accepted: AtomicU64,
    refused: AtomicU64,
    /// Accepted bodies that were not an envelope with an id.
    garbage: AtomicU64,
    seen: Mutex<HashMap<Box<str>, Seen>>,
}

impl Target {
    /// Whether endpoint `i` answers offline now.
    fn offline(&self, i: usize) -> bool {
        if i % 100 >= self.flapping_pct {
            return false;
        }
        let offset = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % (2 * self.period_ms);
        let t = self.start.elapsed().as_millis() as u64 + offset;
        (t / self.period_ms) % 2 == 1
    }
}

async fn status(State(t): State<Arc<Target>>, Path(i): Path<usize>) -> (StatusCode, &'static str) {
    t.probes.fetch_add(1, Ordering::Relaxed);
    if t.offline(i) {
        (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"offline"}"#)
    } else {
        (StatusCode::OK, r#"{"status":"online"}"#)
    }
}

/// The webhook receiver: 503 while down; else records the envelope's id
/// with its arrival number and answers 200.
async fn hook(State(t): State<Arc<Target>>, body: axum::body::Bytes) -> StatusCode {
    if t.down.load(Ordering::Relaxed) {
        t.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(Box::<str>::from));
    let Some(id) = id else {
        t.garbage.fetch_add(1, Ordering::Relaxed);
        return StatusCode::OK;
    };
    let mut seen = t.seen.lock().unwrap();
    let n = t.accepted.fetch_add(1, Ordering::Relaxed);
    seen.entry(id).or_insert(Seen { first: n, count: 0 }).count += 1;
    StatusCode::OK
}

fn file_size(p: std::path::PathBuf) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

const MIB: f64 = 1024.0 * 1024.0;
const PENDING: &str = "SELECT count(*) FROM deliveries WHERE state = 'pending'";

/// One row of the slice table.
#[derive(Debug, Clone)]
pub struct Slice {
    pub end_s: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub db_logical: u64,
    pub db_file: u64,
    pub wal_file: u64,
    pub probes: u64,
    pub probes_per_s: f64,
    pub cpu_pct: f64,
    pub events: i64,
    pub received: u64,
    pub refused: u64,
    pub pending: i64,
    pub receiver_down: bool,
}

pub fn header() -> String {
    "| slice end min | VmRSS MiB | VmHWM MiB | DB logical MiB | bench.db MiB | bench.db-wal MiB | probes in slice | probes/s | daemon % of a core | events stored | deliveries received in slice | attempts refused (503) in slice | deliveries pending | receiver |\n\
     |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        .to_string()
}

pub fn row(s: &Slice) -> String {
    format!(
        "| {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {:.0} | {:.1} | {} | {} | {} | {} | {} |\n",
        s.end_s / 60.0,
        s.rss_kib as f64 / 1024.0,
        s.hwm_kib as f64 / 1024.0,
        s.db_logical as f64 / MIB,
        s.db_file as f64 / MIB,
        s.wal_file as f64 / MIB,
        s.probes,
        s.probes_per_s,
        s.cpu_pct,
        s.events,
        s.received,
        s.refused,
        s.pending,
        if s.receiver_down { "down" } else { "up" },
    )
}

/// The largest deviation of `v` over the slices from its value at the
/// first one, in percent.
fn deviation(slices: &[Slice], v: impl Fn(&Slice) -> f64) -> Option<(f64, f64)> {
    let base = v(slices.first()?);
    if base <= 0.0 {
        return None;
    }
    let max = slices
        .iter()
        .map(|s| (v(s) - base).abs() * 100.0 / base)
        .fold(0.0, f64::max);
    Some((base, max))
}

/// Runs the soak at `n` connections; prints as it goes.
pub fn run(a: &Args, n: usize, interval: Duration, tick: Duration, bin: &std::path::Path) {
    let period = a.flap_period.max(Duration::from_millis(1));
    let t = Arc::new(Target {
        start: Instant::now(),
        flapping_pct: a.flapping.min(100),
        period_ms: period.as_millis() as u64,
        probes: AtomicU64::new(0),
        down: AtomicBool::new(false),
        accepted: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        garbage: AtomicU64::new(0),
        seen: Mutex::new(HashMap::new()),
    });
    let app = Router::new()
        .route("/c/{i}", get(status))
        .route("/hook", post(hook))
        .with_state(Arc::clone(&t));
    let addr = serve(app);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = daemon_config(free_port(), tick, interval);
    for i in 0..n {
        cfg.push_str(&format!(
            "[[connection]]\nid = \"c{i}\"\nurl = \"http://{addr}/c/{i}\"\n"
        ));
    }
    cfg.push_str(&format!(
        "[[sink]]\nid = \"hook\"\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\n\
         retry_max = \"{}ms\"\nmax_age = \"2h\"\n",
        a.retry_max.as_millis()
    ));
    let cfg_path = dir.path().join("bench.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let flapping = (0..n).filter(|i| i % 100 < t.flapping_pct).count();
    eprintln!(
        "soak: N = {n} ({flapping} flapping, each state {period:?}), interval {interval:?}, \
         {:?}, receiver down {:?}..{:?}, slice {:?}, sink retry_max {:?}, max_age 2h",
        a.duration, a.down_from, a.down_until, a.slice, a.retry_max
    );
    let daemon = Daemon::start(bin, dir.path(), &cfg_path);
    let pid = daemon.pid();
    if !daemon.ready_ms.is_finite() {
        let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
        eprintln!("soak: no READY=1 within 60 s; daemon.log:\n{log}");
        daemon.stop();
        return;
    }
    eprintln!("soak: READY after {:.0} ms", daemon.ready_ms);
    let t0 = Instant::now();
    let slice = a.slice.max(Duration::from_secs(1));
    let slices_n = (a.duration.as_secs_f64() / slice.as_secs_f64())
        .ceil()
        .max(1.0) as u32;

    let mut out = std::io::stdout();
    print!("{}", header());
    let _ = out.flush();
    let mut slices = Vec::new();
    let (mut probes0, mut cpu0, mut acc0, mut ref0) = (0u64, cpu_seconds(pid), 0u64, 0u64);
    let mut last_end = t0;
    // Backlog: peak pending sampled while down and after, and when it
    // first reached zero after the receiver came back.
    let mut pending_peak = 0i64;
    let mut cleared_after: Option<Duration> = None;
    let mut next_pending_poll = t0;
    for k in 1..=slices_n {
        let end = t0 + (slice * k).min(a.duration);
        // One step a second at most: the receiver's state follows the clock.
        while Instant::now() < end {
            let now = t0.elapsed();
            let down = now >= a.down_from && now < a.down_until;
            if t.down.swap(down, Ordering::Relaxed) != down {
                eprintln!(
                    "soak: receiver {} at {:.1} min",
                    if down { "DOWN" } else { "UP" },
                    now.as_secs_f64() / 60.0
                );
            }
            if now >= a.down_from && cleared_after.is_none() && Instant::now() >= next_pending_poll
            {
                let p = crate::harness::count(dir.path(), PENDING);
                pending_peak = pending_peak.max(p);
                if !down && p == 0 {
                    cleared_after = Some(now.saturating_sub(a.down_until));
                }
                next_pending_poll = Instant::now() + Duration::from_secs(2);
            }
            std::thread::sleep(
                end.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(500)),
            );
        }
        let now = Instant::now();
        let secs = now.duration_since(last_end).as_secs_f64().max(1e-9);
        last_end = now;
        let probes = t.probes.load(Ordering::Relaxed);
        let cpu = cpu_seconds(pid);
        let acc = t.accepted.load(Ordering::Relaxed);
        let refused = t.refused.load(Ordering::Relaxed);
        let s = Slice {
            end_s: now.duration_since(t0).as_secs_f64(),
            rss_kib: proc_field(pid, "status", "VmRSS:"),
            hwm_kib: proc_field(pid, "status", "VmHWM:"),
            db_logical: db_size(dir.path()),
            db_file: file_size(dir.path().join("bench.db")),
            wal_file: file_size(dir.path().join("bench.db-wal")),
            probes: probes - probes0,
            probes_per_s: (probes - probes0) as f64 / secs,
            cpu_pct: 100.0 * (cpu - cpu0) / secs,
            events: crate::harness::count(dir.path(), "SELECT count(*) FROM events"),
            received: acc - acc0,
            refused: refused - ref0,
            pending: crate::harness::count(dir.path(), PENDING),
            receiver_down: t.down.load(Ordering::Relaxed),
        };
        (probes0, cpu0, acc0, ref0) = (probes, cpu, acc, refused);
        print!("{}", row(&s));
        let _ = out.flush();
        slices.push(s);
    }
    // The receiver is up from here on (a --down-until past the end).
    if t.down.swap(false, Ordering::Relaxed) {
        eprintln!("soak: receiver UP at the end of the run");
    }
    let drain_start = Instant::now();
    let mut pending = crate::harness::count(dir.path(), PENDING);
    while pending != 0 && drain_start.elapsed() < a.drain_wait {
        std::thread::sleep(Duration::from_secs(1));
        pending = crate::harness::count(dir.path(), PENDING);
    }
    let drained = drain_start.elapsed();
    if cleared_after.is_none() && pending == 0 {
        cleared_after = Some(t0.elapsed().saturating_sub(a.down_until.min(a.duration)));
    }
    let hwm = proc_field(pid, "status", "VmHWM:");
    daemon.stop();

    // What the database says the sink had to receive.
    let db = rusqlite::Connection::open_with_flags(
        dir.path().join("bench.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap_or(-1) };
    let events_all = count("SELECT count(*) FROM events");
    let suppressed = count("SELECT count(*) FROM events WHERE suppressed IS NOT NULL");
    let for_sink = count("SELECT count(*) FROM deliveries WHERE sink = 'hook'");
    let by_state = |st: &str| {
        count(&format!(
            "SELECT count(*) FROM deliveries WHERE sink = 'hook' AND state = '{st}'"
        ))
    };
    let (done, dead, pend) = (by_state("done"), by_state("dead"), by_state("pending"));
    let attempts = count("SELECT count(*) FROM delivery_attempts WHERE sink = 'hook'");
    let types: Vec<(String, i64)> = db
        .prepare(
            "SELECT e.type, count(*) FROM deliveries d JOIN events e ON e.seq = d.event \
             WHERE d.sink = 'hook' GROUP BY e.type ORDER BY 2 DESC",
        )
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_default();
    // Events stored without a delivery for the sink (suppressed, or not
    // the sink's): by type.
    let not_for_sink: Vec<(String, i64)> = db
        .prepare(
            "SELECT e.type || coalesce(' (' || e.suppressed || ')', ''), count(*) FROM events e \
             WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event = e.seq AND d.sink = 'hook') \
             GROUP BY 1 ORDER BY 2 DESC",
        )
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_default();
    let list = |v: &[(String, i64)]| {
        if v.is_empty() {
            return "none".to_string();
        }
        v.iter()
            .map(|(t, c)| format!("{t} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };

    let seen = t.seen.lock().unwrap();
    let distinct = seen.len();
    let duplicates: u64 = seen.values().map(|s| (s.count - 1) as u64).sum();
    let dup_events = seen.values().filter(|s| s.count > 1).count();
    // Per connection, in the events' order in the database: the first
    // arrivals must rise.
    let mut st = db
        .prepare(
            "SELECT e.id, coalesce(c.id, ''), d.state FROM deliveries d \
             JOIN events e ON e.seq = d.event LEFT JOIN connections c ON c.key = e.conn \
             WHERE d.sink = 'hook' ORDER BY e.conn, e.seq",
        )
        .unwrap();
    let mut rows = st.query([]).unwrap();
    let (mut violations, mut missing, mut done_missing, mut known) = (0u64, 0u64, 0u64, 0usize);
    let mut examples: Vec<String> = Vec::new();
    let mut conns_checked = 0u64;
    let mut cur_conn: Option<String> = None;
    let mut last: Option<(String, u64)> = None;
    while let Ok(Some(r)) = rows.next() {
        let id: String = r.get(0).unwrap_or_default();
        let conn: String = r.get(1).unwrap_or_default();
        let state: String = r.get(2).unwrap_or_default();
        if cur_conn.as_deref() != Some(conn.as_str()) {
            cur_conn = Some(conn.clone());
            conns_checked += 1;
            last = None;
        }
        match seen.get(id.as_str()) {
            Some(s) => {
                known += 1;
                if let Some((prev, at)) = &last {
                    if s.first < *at {
                        violations += 1;
                        if examples.len() < 5 {
                            examples.push(format!(
                                "{conn}: {id} (arrival #{}) before earlier {prev} (arrival #{at})",
                                s.first
                            ));
                        }
                    }
                }
                if last.as_ref().is_none_or(|(_, at)| s.first > *at) {
                    last = Some((id, s.first));
                }
            }
            None => {
                missing += 1;
                if state == "done" {
                    done_missing += 1;
                    if examples.len() < 5 {
                        examples.push(format!(
                            "{conn}: {id} is done in the database, never received"
                        ));
                    }
                }
            }
        }
    }
    let unknown = distinct.saturating_sub(known);

    println!();
    println!("Flatness after warm-up ({:?}):", a.soak_warmup);
    println!();
    println!("| measure | first slice after warm-up | max deviation | within 5 % |");
    println!("|---|---|---|---|");
    let post: Vec<Slice> = slices
        .iter()
        .filter(|s| s.end_s > a.soak_warmup.as_secs_f64() + 1.0)
        .cloned()
        .collect();
    for (name, unit, f) in [
        (
            "VmRSS",
            "MiB",
            (|s: &Slice| s.rss_kib as f64 / 1024.0) as fn(&Slice) -> f64,
        ),
        ("DB logical size", "MiB", |s: &Slice| {
            s.db_logical as f64 / MIB
        }),
    ] {
        match deviation(&post, f) {
            Some((base, max)) => println!(
                "| {name} | {base:.2} {unit} | {max:.1} % | {} |",
                if max <= 5.0 { "yes" } else { "NO" }
            ),
            None => println!("| {name} | — | — | no slice after warm-up |"),
        }
    }
    println!();
    println!("Delivery to the webhook sink (at-least-once, ordered per connection):");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| events stored (all; suppressed) | {events_all}; {suppressed} |");
    println!("| events stored for the sink (deliveries) | {for_sink} |");
    println!("| deliveries done / pending / dead at the end | {done} / {pend} / {dead} |");
    println!("| delivery attempts recorded | {attempts} |");
    println!("| event types for the sink | {} |", list(&types));
    println!(
        "| events without a delivery for the sink | {} |",
        list(&not_for_sink)
    );
    println!("| distinct event ids received | {distinct} |");
    println!(
        "| every event delivered? | {} ({missing} of the sink's events never received, {done_missing} of them marked done) |",
        if missing == 0 { "yes" } else { "NO" }
    );
    println!("| received ids unknown to the sink's deliveries | {unknown} |");
    println!(
        "| accepted deliveries in all; duplicates (events received more than once) | {}; {duplicates} ({dup_events}) |",
        t.accepted.load(Ordering::Relaxed)
    );
    println!(
        "| attempts refused with 503 while down | {} |",
        t.refused.load(Ordering::Relaxed)
    );
    println!(
        "| bodies without an event id | {} |",
        t.garbage.load(Ordering::Relaxed)
    );
    println!(
        "| per-connection order violations (expected 0) | {violations} over {conns_checked} connections |"
    );
    println!("| pending peak (sampled every 2 s from --down-from) | {pending_peak} |");
    println!(
        "| backlog cleared (pending = 0) after the receiver came back | {} |",
        cleared_after
            .map(|d| format!("{:.0} s", d.as_secs_f64()))
            .unwrap_or_else(|| "never seen".into())
    );
    println!(
        "| end-of-run drain | pending {pending} after {:.0} s{} |",
        drained.as_secs_f64(),
        if pending == 0 {
            ""
        } else {
            " (INCOMPLETE: drain wait over)"
        }
    );
    println!(
        "| daemon VmHWM at the end | {:.1} MiB |",
        hwm as f64 / 1024.0
    );
    for e in &examples {
        println!("\nexample: {e}");
    }
}
