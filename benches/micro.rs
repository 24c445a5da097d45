//! Micro-benchmarks of the per-probe hot path and the writer:
//! `cargo bench --bench micro`. Criterion prints the figures; nothing is
//! asserted.

use connwatch::classify::{classify, Answer, Rules};
use connwatch::config::{Config, Secret};
use connwatch::model::Outcome;
use connwatch::monitor::{Draws, MonitorState};
use connwatch::store::writer::{Probe, Record, Writer};
use connwatch::store::{ConnMeta, Store};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn config() -> Config {
    Config::parse(
        Path::new("/bench.toml"),
        "[[connection]]\nid = \"a\"\nurl = \"http://127.0.0.1:1/status\"\n",
        &|_| None,
    )
    .expect("valid config")
}

fn answer(body: &str) -> Answer {
    Answer {
        status: 200,
        retry_after: None,
        body: body.as_bytes().to_vec(),
        truncated: false,
    }
}

fn bench_classify(c: &mut Criterion) {
    let cfg = config();
    let k = &cfg.connections[0];
    let rules = Rules {
        expect: &k.expect,
        degraded_after: k.degraded_after,
        max_body: k.max_body,
    };
    let small = Ok(answer(r#"{"status":"online"}"#));
    let big = Ok(answer(&format!(
        r#"{{"status":"online","details":{{"items":[{}]}}}}"#,
        (0..200)
            .map(|i| format!(r#"{{"id":{i},"name":"item {i}","ok":true}}"#))
            .collect::<Vec<_>>()
            .join(",")
    )));
    let now = SystemTime::now();
    c.bench_function("classify: small JSON body", |b| {
        b.iter(|| classify(&small, Duration::from_millis(3), rules, now))
    });
    c.bench_function("classify: 8 KiB JSON body", |b| {
        b.iter(|| classify(&big, Duration::from_millis(3), rules, now))
    });
}

fn bench_state_machine(c: &mut Criterion) {
    let cfg = config();
    let k = &cfg.connections[0];
    let rules = Rules {
        expect: &k.expect,
        degraded_after: k.degraded_after,
        max_body: k.max_body,
    };
    let online = classify(
        &Ok(answer(r#"{"status":"online"}"#)),
        Duration::from_millis(3),
        rules,
        SystemTime::now(),
    );
    let draws = Draws {
        breaker: 0.5,
        backoff: 0.5,
    };
    let mut st = MonitorState::default();
    let mut at = 1_000_000i64;
    c.bench_function("state machine: one online observation", |b| {
        b.iter(|| {
            at += 10_000;
            st.observe(&online, at, k, draws)
        })
    });
}

fn bench_writer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let metas: Vec<ConnMeta> = (0..1000)
        .map(|i| ConnMeta::bare(&format!("c{i}")))
        .collect();
    let known = Store::open(&path)
        .unwrap()
        .sync_connections(&metas)
        .unwrap();
    let keys: Vec<i64> = (0..1000).map(|i| known[&format!("c{i}")].key).collect();
    let (w, _join) = Writer::start(&path, Duration::from_secs(3600)).unwrap();
    let id: Arc<str> = Arc::from("c");
    let mut at = 1_000_000i64;
    let mut g = c.benchmark_group("writer: offline probes (a row each), committed");
    for batch in [1usize, 100, 1000] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("batch of {batch}"), |b| {
            b.iter_batched(
                || {
                    (0..batch)
                        .map(|i| {
                            at += 1;
                            Record {
                                conn: keys[i % keys.len()],
                                conn_id: Arc::clone(&id),
                                at,
                                probe: Some(Probe {
                                    outcome: Outcome::Offline,
                                    latency_ms: 3,
                                    http_status: Some(503),
                                    error: None,
                                }),
                                transition: None,
                                events: Vec::new(),
                                state: None,
                            }
                        })
                        .collect::<Vec<_>>()
                },
                |recs| {
                    rt.block_on(async {
                        for r in recs {
                            w.send(r).await;
                        }
                        w.flush().await;
                    })
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn bench_signing(c: &mut Criterion) {
    let secret = Secret::new("whsec_c2FuZGJveC1vbmx5LW5vdC1hLXJlYWwtc2VjcmV0");
    let body = r#"{"id":"evt_01J0000000000000000000000","type":"connection.status_changed","timestamp":"2026-11-29T01:00:00.000Z","data":{"connection_id":"sap-prod","previous":"online","current":"offline"}}"#;
    c.bench_function("webhook signature (Standard Webhooks, HMAC-SHA256)", |b| {
        b.iter(|| {
            connwatch::sinks::webhook::sign::sign(
                &secret,
                "evt_01J0000000000000000000000",
                "1800000000",
                body,
            )
        })
    });
}

criterion_group!(
    benches,
    bench_classify,
    bench_state_machine,
    bench_writer,
    bench_signing
);
criterion_main!(benches);
