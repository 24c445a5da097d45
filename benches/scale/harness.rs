//! The scale benchmark: a fast loopback target serving N status endpoints,
//! the real `connwatch run` binary probing them, and a bare reqwest loop
//! hitting the same target at the same rate (the floor), all measured in one
//! run. Used by `cargo bench --bench scale` and, with tiny numbers, by the
//! CI smoke test (`tests/scale_smoke.rs`). Figures are printed, never
//! asserted.
#![allow(dead_code)]

use crate::cpu::thread_cpu;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One benchmark point.
#[derive(Debug, Clone)]
pub struct Opts {
    pub n: usize,
    pub interval: Duration,
    pub warmup: Duration,
    pub window: Duration,
    /// Percent of endpoints answering 503 offline.
    pub failing_pct: usize,
    /// Percent of endpoints answering after `slow`.
    pub slow_pct: usize,
    pub slow: Duration,
    /// The daemon's `scheduler_tick`.
    pub tick: Duration,
    /// Send SIGHUP halfway through the window and time the reload.
    pub reload: bool,
    /// Measure the bare-client floor after the daemon's window.
    pub floor: bool,
    /// The `connwatch` binary.
    pub bin: PathBuf,
    /// Add a webhook sink that answers after this long (every event goes
    /// to it; the outbox backs up on disk).
    pub sink_delay: Option<Duration>,
    /// After the daemon's window (and the floor): run Debian's `monit`
    /// against the same target, N hosts at the same interval, for the same
    /// window (benches/scale/monit.rs).
    pub monit: bool,
    /// Worker threads of the target's runtime (1: one current-thread
    /// runtime; more: a multi-thread runtime, all threads "bench-target").
    pub target_threads: usize,
}

impl Opts {
    pub fn new(n: usize, interval: Duration, bin: PathBuf) -> Opts {
        Opts {
            n,
            interval,
            warmup: Duration::from_secs(15),
            window: Duration::from_secs(30),
            failing_pct: 2,
            slow_pct: 1,
            slow: Duration::from_millis(300),
            tick: Duration::from_millis(10),
            reload: false,
            floor: true,
            bin,
            sink_delay: None,
            monit: false,
            target_threads: 1,
        }
    }
}

/// The target: what arrived, per endpoint, in µs since the target started.
struct Target {
    start: Instant,
    arrivals: Vec<Mutex<Vec<u64>>>,
    failing_pct: usize,
    slow_pct: usize,
    slow: Duration,
    requests: AtomicU64,
    sink_delay: Duration,
    /// Webhook deliveries answered.
    hooks: AtomicU64,
    /// Monit's requests (`/m/{i}`).
    monit_checks: AtomicU64,
}

/// The slow sink: answers 200 after `sink_delay`.
async fn hook(State(t): State<Arc<Target>>) -> StatusCode {
    tokio::time::sleep(t.sink_delay).await;
    t.hooks.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

async fn status(State(t): State<Arc<Target>>, Path(i): Path<usize>) -> (StatusCode, &'static str) {
    let at = t.start.elapsed().as_micros() as u64;
    t.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(a) = t.arrivals.get(i) {
        a.lock().unwrap().push(at);
    }
    let bucket = i % 100;
    if bucket < t.failing_pct {
        (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"offline"}"#)
    } else if bucket < t.failing_pct + t.slow_pct {
        tokio::time::sleep(t.slow).await;
        (StatusCode::OK, r#"{"status":"online"}"#)
    } else {
        (StatusCode::OK, r#"{"status":"online"}"#)
    }
}

/// Monit's endpoint: answers like a healthy one, counted on its own.
async fn monit_status(State(t): State<Arc<Target>>) -> &'static str {
    t.monit_checks.fetch_add(1, Ordering::Relaxed);
    r#"{"status":"online"}"#
}

/// The floor's endpoint: answers like a healthy one, records nothing.
async fn floor_status(State(t): State<Arc<Target>>) -> &'static str {
    t.requests.fetch_add(1, Ordering::Relaxed);
    r#"{"status":"online"}"#
}

fn start_target(o: &Opts) -> (SocketAddr, Arc<Target>) {
    let t = Arc::new(Target {
        start: Instant::now(),
        arrivals: (0..o.n).map(|_| Mutex::new(Vec::new())).collect(),
        failing_pct: o.failing_pct,
        slow_pct: o.slow_pct,
        slow: o.slow,
        requests: AtomicU64::new(0),
        sink_delay: o.sink_delay.unwrap_or_default(),
        hooks: AtomicU64::new(0),
        monit_checks: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/c/{i}", get(status))
        .route("/floor/{i}", get(floor_status))
        .route("/m/{i}", get(monit_status))
        .route("/hook", axum::routing::post(hook))
        .with_state(Arc::clone(&t));
    (serve_on(app, o.target_threads), t)
}

/// The target's CPU seconds: this process's threads named "bench-target".
fn target_cpu() -> f64 {
    thread_cpu_by_name(std::process::id())
        .get("bench-target")
        .copied()
        .unwrap_or(0.0)
}

/// Serves `app` on 127.0.0.1 (a free port) from a current-thread runtime on
/// a thread of its own; returns the address.
pub(crate) fn serve(app: Router) -> SocketAddr {
    serve_on(app, 1)
}

/// As [`serve`], on `threads` worker threads (a multi-thread runtime when
/// more than one), all named "bench-target" so their CPU can be read.
fn serve_on(app: Router, threads: usize) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("bench-target".into())
        .spawn(move || {
            let rt = if threads <= 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name("bench-target")
                    .enable_all()
                    .build()
            }
            .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                axum::serve(l, app).await.unwrap();
            });
        })
        .unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

/// One number read from the benchmark's database (`bench.db` in `dir`)
/// through a read-only connection of its own; -1 when it cannot be read.
pub(crate) fn count(dir: &std::path::Path, sql: &str) -> i64 {
    rusqlite::Connection::open_with_flags(
        dir.join("bench.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .and_then(|db| db.query_row(sql, [], |r| r.get::<_, i64>(0)))
    .unwrap_or(-1)
}

/// The command name and CPU seconds (user + system) in a `stat` file of
/// /proc (a process's or a thread's).
fn stat_cpu(path: &std::path::Path) -> Option<(String, f64)> {
    let s = std::fs::read_to_string(path).ok()?;
    // The name sits in parentheses and may hold spaces; fields follow it.
    let (open, close) = (s.find('(')?, s.rfind(')')?);
    let f: Vec<&str> = s.get(close + 2..)?.split_whitespace().collect();
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let utime: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stime: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    Some((s[open + 1..close].to_string(), (utime + stime) / tick))
}

/// CPU seconds (user + system) of a process.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu(std::path::Path::new(&format!("/proc/{pid}/stat")))
        .map(|(_, cpu)| cpu)
        .unwrap_or(0.0)
}

/// CPU seconds per thread name (`/proc/<pid>/task/*/stat`), summed.
fn thread_cpu_by_name(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        if let Some((name, cpu)) = stat_cpu(&e.path().join("stat")) {
            *out.entry(name).or_insert(0.0) += cpu;
        }
    }
    out
}

pub(crate) fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// A histogram from the exposition: (upper bound, cumulative count), plus
/// sum and count.
#[derive(Debug, Default, Clone)]
struct Hist {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

fn hist(text: &str, name: &str) -> Hist {
    let mut h = Hist::default();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix(&format!("{name}_bucket{{le=\"")) {
            let (le, v) = rest.split_once("\"} ").unwrap_or(("", "0"));
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(0.0)
            };
            h.buckets.push((le, v.trim().parse().unwrap_or(0.0)));
        } else if let Some(v) = l.strip_prefix(&format!("{name}_sum ")) {
            h.sum = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix(&format!("{name}_count ")) {
            h.count = v.trim().parse().unwrap_or(0.0);
        }
    }
    h
}

impl Hist {
    fn minus(&self, before: &Hist) -> Hist {
        Hist {
            buckets: self
                .buckets
                .iter()
                .zip(before.buckets.iter().chain(std::iter::repeat(&(0.0, 0.0))))
                .map(|(a, b)| (a.0, a.1 - b.1))
                .collect(),
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    /// The upper bound of the bucket holding quantile `q`.
    fn quantile(&self, q: f64) -> f64 {
        let target = q * self.count;
        self.buckets
            .iter()
            .find(|(_, c)| *c >= target && *c > 0.0)
            .map(|(le, _)| *le)
            .unwrap_or(f64::NAN)
    }

    /// The upper bound of the highest non-empty bucket.
    fn max_bound(&self) -> f64 {
        let mut prev = 0.0;
        let mut top = 0.0;
        for (le, c) in &self.buckets {
            if *c > prev {
                top = *le;
            }
            prev = *c;
        }
        top
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What one point measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub n: usize,
    pub interval_s: f64,
    pub window_s: f64,
    pub ready_ms: f64,
    pub scheduled_healthy: f64,
    pub made_healthy: u64,
    pub made_all: u64,
    pub probes_per_s: f64,
    pub cpu_s: f64,
    pub cpu_us_per_probe: f64,
    pub cpu_pct_core: f64,
    pub vm_hwm_kib: u64,
    pub late_p50_ms: f64,
    pub late_p99_ms: f64,
    pub late_max_ms: f64,
    pub gap_err_p50_ms: f64,
    pub gap_err_p99_ms: f64,
    pub gap_err_max_ms: f64,
    pub peak_per_s: u64,
    pub mean_per_s: f64,
    pub db_bytes_start: u64,
    pub db_bytes_end: u64,
    pub disk_written: u64,
    pub bytes_per_probe: f64,
    pub writer_batch_mean: f64,
    pub reload_ms: Option<f64>,
    /// CPU µs per probe by daemon thread name, in the window.
    pub threads: Vec<(String, f64)>,
    pub floor_even_us: Option<f64>,
    pub floor_batched_us: Option<f64>,
    /// With a slow sink: deliveries answered, events stored, and the
    /// outbox's pending deliveries at the end of the window.
    pub sink: Option<(u64, u64, u64)>,
    /// The target's CPU (threads "bench-target") in the daemon's window,
    /// % of a core.
    pub target_cpu_pct: f64,
    /// With `--monit`: Monit's CPU µs per check and checks made per second
    /// in its window, and the rest of what was measured.
    pub monit_us: Option<f64>,
    pub monit_checks_per_s: Option<f64>,
    pub monit: Option<crate::monit::Side>,
}

/// The database's logical size: pages in use × page size, read through
/// SQLite (so it counts what the WAL holds and not the free pages).
pub fn db_size(dir: &std::path::Path) -> u64 {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        dir.join("bench.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return 0;
    };
    let q = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap_or(0);
    ((q("PRAGMA page_count") - q("PRAGMA freelist_count")) * q("PRAGMA page_size")).max(0) as u64
}

pub(crate) fn kill(child: &mut Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

/// A free loopback port (for the admin API).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The benchmark's `[daemon]` and `[defaults]` tables: database `bench.db`
/// next to the configuration, the admin API on `admin`, warnings only.
pub(crate) fn daemon_config(admin: u16, tick: Duration, interval: Duration) -> String {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    format!(
        "[daemon]\ndatabase = \"bench.db\"\nlisten = \"127.0.0.1:{admin}\"\nlog_level = \"warn\"\n\
         scheduler_tick = \"{}\"\nmax_concurrent_probes = 1024\n\
         [defaults]\ninterval = \"{}\"\ntimeout = \"2s\"\n",
        ms(tick),
        ms(interval)
    )
}

/// A running `connwatch run`, its notify socket read all along.
pub(crate) struct Daemon {
    pub child: Child,
    pub notes: std::sync::mpsc::Receiver<String>,
    reading: Arc<std::sync::atomic::AtomicBool>,
    /// From spawn to READY=1 (NaN if not seen within 60 s).
    pub ready_ms: f64,
}

impl Daemon {
    /// Starts `bin run --config cfg_path` (stderr to `daemon.log` in `dir`)
    /// and waits for READY=1 (at most 60 s).
    pub(crate) fn start(
        bin: &std::path::Path,
        dir: &std::path::Path,
        cfg_path: &std::path::Path,
    ) -> Daemon {
        let sock_path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
        let spawned = Instant::now();
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(cfg_path)
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        // Read the notify socket all along, as systemd does: its queue is 10
        // datagrams, and the daemon drops what does not fit.
        let (ntx, notes) = std::sync::mpsc::channel::<String>();
        let reading = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let still = Arc::clone(&reading);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while still.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let _ = ntx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        let mut ready_ms = f64::NAN;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(m) = notes.recv_timeout(Duration::from_millis(100)) {
                if m.lines().any(|l| l == "READY=1") {
                    ready_ms = spawned.elapsed().as_secs_f64() * 1000.0;
                    break;
                }
            }
        }
        Daemon {
            child,
            notes,
            reading,
            ready_ms,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait for the exit, stop reading the notify socket.
    pub(crate) fn stop(mut self) {
        kill(&mut self.child, "-TERM");
        let _ = self.child.wait();
        self.reading.store(false, Ordering::Relaxed);
    }
}

/// Runs one point.
pub fn run(o: &Opts) -> Report {
    let (addr, target) = start_target(o);
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let mut cfg = daemon_config(admin, o.tick, o.interval);
    for i in 0..o.n {
        cfg.push_str(&format!(
            "[[connection]]\nid = \"c{i}\"\nurl = \"http://{addr}/c/{i}\"\n"
        ));
    }
    if o.sink_delay.is_some() {
        cfg.push_str(&format!(
            "[[sink]]\nid = \"slow\"\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\n"
        ));
    }
    let cfg_path = dir.path().join("bench.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut daemon = Daemon::start(&o.bin, dir.path(), &cfg_path);
    let (pid, ready_ms) = (daemon.pid(), daemon.ready_ms);
    std::thread::sleep(o.warmup);

    let t0 = target.start.elapsed().as_micros() as u64;
    let m0 = http_get(admin, "/metrics").unwrap_or_default();
    let cpu0 = cpu_seconds(pid);
    let tc0 = target_cpu();
    let th0 = thread_cpu_by_name(pid);
    let w0 = proc_field(pid, "io", "write_bytes:");
    let db0 = db_size(dir.path());
    let mut reload_ms = None;
    if o.reload {
        std::thread::sleep(o.window / 2);
        let hup = Instant::now();
        kill(&mut daemon.child, "-HUP");
        let until = hup + Duration::from_secs(30);
        let mut reloading = false;
        while Instant::now() < until {
            if let Ok(m) = daemon.notes.recv_timeout(Duration::from_millis(100)) {
                reloading |= m.contains("RELOADING=1");
                if reloading && m.lines().any(|l| l == "READY=1") {
                    reload_ms = Some(hup.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
            }
        }
        std::thread::sleep(o.window.saturating_sub(hup.elapsed() + o.window / 2));
    } else {
        std::thread::sleep(o.window);
    }
    let cpu1 = cpu_seconds(pid);
    let tc1 = target_cpu();
    let th1 = thread_cpu_by_name(pid);
    let w1 = proc_field(pid, "io", "write_bytes:");
    let db1 = db_size(dir.path());
    let m1 = http_get(admin, "/metrics").unwrap_or_default();
    let t1 = target.start.elapsed().as_micros() as u64;
    let vm_hwm_kib = proc_field(pid, "status", "VmHWM:");
    daemon.stop();

    // Arrivals inside the window.
    let window_s = (t1 - t0) as f64 / 1e6;
    let interval_us = o.interval.as_micros() as f64;
    let mut gaps = Vec::new();
    let mut per_sec: std::collections::HashMap<u64, u64> = Default::default();
    let (mut made_all, mut made_healthy, mut healthy) = (0u64, 0u64, 0usize);
    for (i, a) in target.arrivals.iter().enumerate() {
        let a = a.lock().unwrap();
        let inside: Vec<u64> = a.iter().copied().filter(|&t| t >= t0 && t < t1).collect();
        made_all += inside.len() as u64;
        let is_healthy = i % 100 >= o.failing_pct + o.slow_pct;
        if is_healthy {
            healthy += 1;
            made_healthy += inside.len() as u64;
            for w in inside.windows(2) {
                gaps.push(((w[1] - w[0]) as f64 - interval_us).abs() / 1000.0);
            }
        }
        for t in &inside {
            *per_sec.entry(t / 1_000_000).or_default() += 1;
        }
    }
    gaps.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // Whole seconds only (the first and last are partial).
    let first = t0 / 1_000_000 + 1;
    let last = t1 / 1_000_000;
    let peak_per_s = (first..last)
        .map(|s| per_sec.get(&s).copied().unwrap_or(0))
        .max()
        .unwrap_or(0);
    let lat = hist(&m1, "connwatch_scheduler_lateness_seconds")
        .minus(&hist(&m0, "connwatch_scheduler_lateness_seconds"));
    let batch =
        hist(&m1, "connwatch_writer_batch_rows").minus(&hist(&m0, "connwatch_writer_batch_rows"));
    let cpu_s = cpu1 - cpu0;
    let mut r = Report {
        n: o.n,
        interval_s: o.interval.as_secs_f64(),
        window_s,
        ready_ms,
        scheduled_healthy: healthy as f64 * window_s / o.interval.as_secs_f64(),
        made_healthy,
        made_all,
        probes_per_s: made_all as f64 / window_s,
        cpu_s,
        cpu_us_per_probe: cpu_s * 1e6 / made_all.max(1) as f64,
        cpu_pct_core: 100.0 * cpu_s / window_s,
        vm_hwm_kib,
        late_p50_ms: lat.quantile(0.5) * 1000.0,
        late_p99_ms: lat.quantile(0.99) * 1000.0,
        late_max_ms: lat.max_bound() * 1000.0,
        gap_err_p50_ms: percentile(&gaps, 0.5),
        gap_err_p99_ms: percentile(&gaps, 0.99),
        gap_err_max_ms: gaps.last().copied().unwrap_or(f64::NAN),
        peak_per_s,
        mean_per_s: made_all as f64 / window_s,
        db_bytes_start: db0,
        db_bytes_end: db1,
        disk_written: w1.saturating_sub(w0),
        bytes_per_probe: db1.saturating_sub(db0) as f64 / made_all.max(1) as f64,
        writer_batch_mean: if batch.count > 0.0 {
            batch.sum / batch.count
        } else {
            0.0
        },
        reload_ms,
        threads: th1
            .iter()
            .map(|(k, v)| {
                let before = th0.get(k).copied().unwrap_or(0.0);
                (k.clone(), (v - before) * 1e6 / made_all.max(1) as f64)
            })
            .filter(|(_, v)| *v > 0.0)
            .collect(),
        floor_even_us: None,
        floor_batched_us: None,
        target_cpu_pct: 100.0 * (tc1 - tc0) / window_s,
        monit_us: None,
        monit_checks_per_s: None,
        monit: None,
        sink: o.sink_delay.map(|_| {
            let count = |sql: &str| count(dir.path(), sql).max(0) as u64;
            (
                target.hooks.load(Ordering::Relaxed),
                count("SELECT count(*) FROM events"),
                count("SELECT count(*) FROM deliveries WHERE state = 'pending'"),
            )
        }),
    };
    if o.floor {
        let rate = o.n as f64 / o.interval.as_secs_f64();
        r.floor_even_us = Some(floor(addr, o.n, rate, o.window, None));
        r.floor_batched_us = Some(floor(addr, o.n, rate, o.window, Some(o.tick)));
    }
    if o.monit {
        r.monit = crate::monit::run(
            dir.path(),
            addr.port(),
            o.n,
            o.interval,
            o.window,
            &target.monit_checks,
            &target_cpu,
        );
        r.monit_us = r.monit.as_ref().map(|m| m.us_per_check);
        r.monit_checks_per_s = r.monit.as_ref().map(|m| m.checks_per_s);
    }
    r
}

/// The floor: a bare reqwest client on a current-thread runtime of its own
/// thread sends `rate` GETs a second over `n` paths for `window`, evenly
/// paced (one timer wake-up per request) or in `batch`-sized ticks. Returns
/// that thread's CPU µs per request.
fn floor(addr: SocketAddr, n: usize, rate: f64, window: Duration, batch: Option<Duration>) -> f64 {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(usize::MAX)
                .build()
                .unwrap();
            let urls: Vec<Arc<str>> = (0..n)
                .map(|i| Arc::from(format!("http://{addr}/floor/{i}")))
                .collect();
            let done = Arc::new(AtomicU64::new(0));
            let step = Duration::from_secs_f64(1.0 / rate);
            let start = tokio::time::Instant::now();
            let end = start + window;
            let cpu0 = thread_cpu();
            let mut k = 0usize;
            let fire = |k: usize| {
                let c = client.clone();
                let u = Arc::clone(&urls[k % n]);
                let d = Arc::clone(&done);
                tokio::spawn(async move {
                    if let Ok(r) = c.get(&*u).send().await {
                        let _ = r.bytes().await;
                        d.fetch_add(1, Ordering::Relaxed);
                    }
                });
            };
            match batch {
                None => loop {
                    let at = start + step.mul_f64(k as f64);
                    if at >= end {
                        break;
                    }
                    tokio::time::sleep_until(at).await;
                    fire(k);
                    k += 1;
                },
                Some(tick) => {
                    let mut next = start;
                    while next < end {
                        tokio::time::sleep_until(next).await;
                        next += tick;
                        loop {
                            let at = start + step.mul_f64(k as f64);
                            if at >= next || at >= end {
                                break;
                            }
                            fire(k);
                            k += 1;
                        }
                    }
                }
            }
            // Let the last requests finish (bounded).
            let until = tokio::time::Instant::now() + Duration::from_secs(5);
            while done.load(Ordering::Relaxed) < k as u64 && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let cpu = thread_cpu() - cpu0;
            cpu.as_secs_f64() * 1e6 / done.load(Ordering::Relaxed).max(1) as f64
        })
    })
    .join()
    .unwrap()
}

/// Where the daemon's CPU went, per thread name.
pub fn threads(reports: &[Report]) -> String {
    let mut s = String::new();
    for r in reports {
        let parts: Vec<String> = r
            .threads
            .iter()
            .map(|(k, v)| format!("{k} {v:.1}"))
            .collect();
        s.push_str(&format!(
            "N = {}: CPU µs per probe by thread: {}\n",
            r.n,
            parts.join(", ")
        ));
        if let Some((hooks, events, pending)) = r.sink {
            s.push_str(&format!(
                "N = {}: slow sink: {hooks} deliveries answered, {events} events stored, {pending} deliveries pending at the end\n",
                r.n
            ));
        }
        s.push_str(&format!(
            "N = {}: target CPU in the daemon's window: {:.1} % of a core\n",
            r.n, r.target_cpu_pct
        ));
        if let Some(m) = &r.monit {
            s.push_str(&format!(
                "N = {}: Monit (set daemon {}): {} checks in {:.1} s = {:.0} checks/s of {:.0} scheduled (N / cycle, {:.1} %), CPU {:.3} s = {:.1} µs/check, {:.1} % of a core, VmHWM {:.1} MiB, {} error lines in its log; target CPU {:.1} % of a core\n",
                r.n,
                m.cycle_s,
                m.checks,
                m.window_s,
                m.checks_per_s,
                m.scheduled_per_s,
                100.0 * m.checks_per_s / m.scheduled_per_s.max(1e-9),
                m.cpu_s,
                m.us_per_check,
                m.cpu_pct_core,
                m.vm_hwm_kib as f64 / 1024.0,
                m.log_errors,
                m.target_cpu_pct,
            ));
        }
    }
    s
}

/// The table header and one row per report.
pub fn table(reports: &[Report]) -> String {
    let mut s = String::new();
    s.push_str("| N | interval | window s | READY ms | probes made / scheduled (healthy) | probes/s | daemon CPU s | CPU µs/probe | % of a core | VmHWM MiB | lateness p50/p99/max ms (bucket bounds) | gap error p50/p99/max ms | peak probes in 1 s (× mean) | DB bytes start → end | bytes/probe (DB growth) | disk written | writer rows/batch | reload ms | floor µs/req even / batched | ratio to floor even / batched | target CPU % of a core | Monit µs/check | ratio to Monit |\n");
    s.push_str(
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let f = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "—".into());
        let ratio = |v: Option<f64>| {
            v.map(|x| format!("{:.2}×", r.cpu_us_per_probe / x))
                .unwrap_or_else(|| "—".into())
        };
        s.push_str(&format!(
            "| {} | {}s | {:.1} | {:.0} | {} / {:.0} ({:.2} %) | {:.0} | {:.3} | {:.1} | {:.2} | {:.1} | {:.1} / {:.1} / {:.1} | {:.2} / {:.2} / {:.2} | {} ({:.2}×) | {} → {} | {:.2} | {} | {:.1} | {} | {} / {} | {} / {} | {:.1} | {} | {} |\n",
            r.n,
            r.interval_s,
            r.window_s,
            r.ready_ms,
            r.made_healthy,
            r.scheduled_healthy,
            100.0 * r.made_healthy as f64 / r.scheduled_healthy.max(1.0),
            r.probes_per_s,
            r.cpu_s,
            r.cpu_us_per_probe,
            r.cpu_pct_core,
            r.vm_hwm_kib as f64 / 1024.0,
            r.late_p50_ms,
            r.late_p99_ms,
            r.late_max_ms,
            r.gap_err_p50_ms,
            r.gap_err_p99_ms,
            r.gap_err_max_ms,
            r.peak_per_s,
            r.peak_per_s as f64 / r.mean_per_s.max(1e-9),
            r.db_bytes_start,
            r.db_bytes_end,
            r.bytes_per_probe,
            r.disk_written,
            r.writer_batch_mean,
            f(r.reload_ms),
            f(r.floor_even_us),
            f(r.floor_batched_us),
            ratio(r.floor_even_us),
            ratio(r.floor_batched_us),
            r.target_cpu_pct,
            f(r.monit_us),
            ratio(r.monit_us),
        ));
    }
    s
}
