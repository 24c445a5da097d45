//! `cargo bench --bench scale -- [--n 1000,10000] [--interval 10s] ...`
//!
//! Runs the real `connwatch run` against a loopback target for each N and
//! prints one Markdown table (see docs/performance.md). Nothing is asserted.

#[path = "../shared/cpu.rs"]
mod cpu;
mod drain;
mod harness;
mod monit;
mod soak;
mod storage;

use clap::Parser;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "connwatch scale benchmark")]
struct Args {
    /// Connection counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    n: Vec<usize>,
    /// Probe interval of every connection.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    interval: Duration,
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// The daemon's scheduler_tick.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    tick: Duration,
    /// Percent of endpoints answering 503 offline.
    #[arg(long, default_value_t = 2)]
    failing: usize,
    /// Percent of endpoints answering after 300 ms.
    #[arg(long, default_value_t = 1)]
    slow: usize,
    /// Send SIGHUP halfway through the window and time the reload.
    #[arg(long)]
    reload: bool,
    /// Add a webhook sink that answers after this long (e.g. 2s).
    #[arg(long, value_parser = humantime::parse_duration)]
    sink_delay: Option<Duration>,
    /// Skip the bare-client floor.
    #[arg(long)]
    no_floor: bool,
    /// Instead of the daemon run: bytes on disk per probe over a simulated
    /// day (the writer fed synthetic results), for each N.
    #[arg(long)]
    storage_day: bool,
    /// Share of healthy probes in the storage simulation.
    #[arg(long, default_value_t = 0.98)]
    healthy: f64,
    /// Simulated hours.
    #[arg(long, default_value_t = 24)]
    hours: u64,
    /// After the daemon's window (and the floor): run Debian's `monit`
    /// against the same target, N hosts at the same interval, for the same
    /// window, and compare CPU per check.
    #[arg(long)]
    monit: bool,
    /// Worker threads of the loopback target (1: one current-thread
    /// runtime).
    #[arg(long, default_value_t = 1)]
    target_threads: usize,
    #[command(flatten)]
    soak: soak::Args,
    #[command(flatten)]
    drain: drain::Args,
    /// `cargo bench` passes this; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let a = Args::parse();
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_connwatch"));
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    eprintln!("machine: {cpus} CPUs, {model}");
    if a.storage_day {
        let days: Vec<storage::Day> =
            a.n.iter()
                .map(|&n| {
                    eprintln!(
                        "simulating {} h of N = {n} at {:?}, {} % healthy ...",
                        a.hours,
                        a.interval,
                        a.healthy * 100.0
                    );
                    storage::simulate(n, a.interval, a.healthy, a.hours)
                })
                .collect();
        println!("{}", storage::table(&days));
        return;
    }
    if a.soak.soak {
        // One long run: the largest N.
        let n = a.n.iter().copied().max().unwrap_or(10_000);
        soak::run(&a.soak, n, a.interval, a.tick, &bin);
        return;
    }
    if a.drain.drain {
        let mut rows = Vec::new();
        for &n in &a.n {
            let delay = a.sink_delay.unwrap_or_default();
            eprintln!("drain: N = {n}, sink delay {delay:?} ...");
            let d = drain::run(&a.drain, n, delay, a.interval, a.tick, &bin);
            eprint!("{}", drain::table(std::slice::from_ref(&d)));
            rows.push(d);
        }
        println!("{}", drain::table(&rows));
        return;
    }
    let mut reports = Vec::new();
    for &n in &a.n {
        let mut o = harness::Opts::new(n, a.interval, bin.clone());
        o.warmup = a.warmup;
        o.window = a.window;
        o.tick = a.tick;
        o.failing_pct = a.failing;
        o.slow_pct = a.slow;
        o.reload = a.reload;
        o.floor = !a.no_floor;
        o.sink_delay = a.sink_delay;
        o.monit = a.monit;
        o.target_threads = a.target_threads;
        eprintln!(
            "running N = {n}, interval {:?}, warm-up {:?}, window {:?} ...",
            a.interval, a.warmup, a.window
        );
        let r = harness::run(&o);
        eprint!("{}", harness::table(std::slice::from_ref(&r)));
        eprint!("{}", harness::threads(std::slice::from_ref(&r)));
        reports.push(r);
    }
    println!("{}", harness::table(&reports));
    println!("{}", harness::threads(&reports));
}
