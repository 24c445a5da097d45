//! Bytes on disk per probe over a simulated day: the real writer and a real
//! SQLite file, fed synthetic probe results with timestamps a day apart
//! (no network, so a day takes seconds). Each probe fails at random with
//! probability `1 - healthy`; the writer keeps every failed probe in full,
//! collapses online ones into hourly runs and hourly rollups.

use connwatch::model::{ErrorKind, Outcome, ProbeError};
use connwatch::store::writer::{Probe, Record, Writer};
use connwatch::store::{ConnMeta, Store};
use std::sync::Arc;
use std::time::Duration;

pub struct Day {
    pub n: usize,
    pub interval: Duration,
    pub healthy: f64,
    pub hours: u64,
    pub probes: u64,
    pub failed: u64,
    pub bytes_empty: u64,
    pub bytes_end: u64,
    pub file_bytes: u64,
    pub seconds: f64,
    /// Bytes per table and index at the end (SQLite's dbstat), largest first.
    pub tables: Vec<(String, u64)>,
    /// Retention 31 days later, step by step as the writer takes it: steps,
    /// longest step, total time, what it did.
    pub retention: (
        u64,
        Duration,
        &'static str,
        Duration,
        connwatch::store::retention::Pruned,
    ),
}

impl Day {
    pub fn bytes_per_probe(&self) -> f64 {
        self.bytes_end.saturating_sub(self.bytes_empty) as f64 / self.probes.max(1) as f64
    }
}

/// An hour-aligned start (2027-01-15 08:00 UTC), as any day has.
const T0: i64 = 500_000 * 3_600_000;

pub fn simulate(n: usize, interval: Duration, healthy: f64, hours: u64) -> Day {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let metas: Vec<ConnMeta> = (0..n).map(|i| ConnMeta::bare(&format!("c{i}"))).collect();
    let known = Store::open(&path)
        .unwrap()
        .sync_connections(&metas)
        .unwrap();
    let keys: Vec<(i64, Arc<str>)> = (0..n)
        .map(|i| {
            let id = format!("c{i}");
            (known[&id].key, Arc::from(id.as_str()))
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let (probes, failed) = rt.block_on(async {
        let (w, join) = Writer::start(&path, Duration::from_secs(3600)).unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        // An hour-aligned start (2027-01-15 08:00 UTC), as any day has.
        let t0: i64 = T0;
        let step = interval.as_millis() as i64;
        let flush_every = 30_000 / step.max(1);
        let rounds = hours as i64 * 3_600_000 / step;
        let (mut probes, mut failed) = (0u64, 0u64);
        for k in 0..rounds {
            for (i, (key, id)) in keys.iter().enumerate() {
                let at = t0 + k * step + (i as i64 * step) / n as i64;
                let ok = rng.f64() < healthy;
                probes += 1;
                failed += u64::from(!ok);
                w.send(Record {
                    conn: *key,
                    conn_id: Arc::clone(id),
                    at,
                    probe: Some(Probe {
                        outcome: if ok {
                            Outcome::Online
                        } else {
                            Outcome::Offline
                        },
                        latency_ms: 1 + rng.u32(0..40),
                        http_status: Some(if ok { 200 } else { 503 }),
                        error: (!ok).then(|| ProbeError {
                            kind: ErrorKind::HttpStatus,
                            message: "HTTP 503".into(),
                            http_status: Some(503),
                        }),
                    }),
                    transition: None,
                    events: Vec::new(),
                    state: None,
                })
                .await;
            }
            // A history flush every 30 s of simulated time, as the daemon's default.
            if (k + 1) % flush_every.max(1) == 0 {
                w.flush().await;
            }
        }
        w.close().await;
        join.join();
        (probes, failed)
    });
    let seconds = started.elapsed().as_secs_f64();
    // Measure the empty size the same way: a fresh file with the same rows.
    let empty_dir = tempfile::tempdir().unwrap();
    Store::open(&empty_dir.path().join("bench.db"))
        .unwrap()
        .sync_connections(&metas)
        .unwrap();
    let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let tables = rusqlite::Connection::open(&path)
        .and_then(|db| {
            let mut s =
                db.prepare("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")?;
            let rows = s
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })?
                .collect::<rusqlite::Result<Vec<_>>>();
            rows
        })
        .unwrap_or_default();
    let bytes_empty = crate::harness::db_size(empty_dir.path());
    let bytes_end = crate::harness::db_size(dir.path());
    // Retention 31 days after the simulated hours: every raw row is past
    // the default 30 days and the hourly rollups are due to be merged into
    // daily ones. The same steps the writer takes between its commits.
    let db = rusqlite::Connection::open(&path).unwrap();
    let now = T0 + hours as i64 * 3_600_000 + 31 * 86_400_000;
    let mut p = connwatch::store::retention::Pruner::new(Duration::from_secs(30 * 86_400), now);
    let t = std::time::Instant::now();
    while !p.step(&db, &path).unwrap() {}
    let retention = (p.steps, p.longest, p.longest_was, t.elapsed(), p.done);
    Day {
        n,
        interval,
        healthy,
        hours,
        probes,
        failed,
        bytes_empty,
        bytes_end,
        file_bytes,
        seconds,
        tables,
        retention,
    }
}

pub fn table(days: &[Day]) -> String {
    let mut s = String::from("| N | interval | healthy | simulated | probes | failed (kept in full) | DB bytes (empty → end) | **bytes per probe** | file bytes | took s |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for d in days {
        s.push_str(&format!(
            "| {} | {}s | {:.0} % | {} h | {} | {} | {} → {} | **{:.2}** | {} | {:.1} |\n",
            d.n,
            d.interval.as_secs(),
            d.healthy * 100.0,
            d.hours,
            d.probes,
            d.failed,
            d.bytes_empty,
            d.bytes_end,
            d.bytes_per_probe(),
            d.file_bytes,
            d.seconds
        ));
    }
    for d in days {
        let parts: Vec<String> = d
            .tables
            .iter()
            .filter(|(_, b)| *b > 4096)
            .map(|(t, b)| format!("{t} {:.1} MB", *b as f64 / 1e6))
            .collect();
        s.push_str(&format!(
            "\nN = {}, {:.0} % healthy: {}\n",
            d.n,
            d.healthy * 100.0,
            parts.join(", ")
        ));
        let (steps, longest, was, total, p) = &d.retention;
        s.push_str(&format!(
            "N = {}: retention 31 days later: {steps} steps in {:.2} s, **longest step {:.1} ms** ({was}; the writer's longest hold); deleted {} probes, {} runs; merged {} days of rollups; freed {} pages\n",
            d.n,
            total.as_secs_f64(),
            longest.as_secs_f64() * 1000.0,
            p.probes,
            p.probe_runs,
            p.days_merged,
            p.pages_freed,
        ));
    }
    s
}
