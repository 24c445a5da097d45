//! What one HTTP request costs with each client, in one run:
//! `cargo bench --bench clients [-- SECONDS]`.
//!
//! A loopback HTTP/1.1 server (its own thread) answers `{"status":"ok"}`.
//! Each client then sends 1,000 requests a second over 1,000 paths from a
//! current-thread runtime on a thread of its own, in batches of 10 every
//! 10 ms (as the daemon's scheduler sends them), with keep-alive. The figure
//! is that thread's CPU per answered request, after a 5 s warm-up:
//!
//! - `reqwest`: the bare client the scale benchmark's floor uses;
//! - `hyper-util legacy`: hyper-util's pooled client, the layer under reqwest;
//! - `connwatch probe`: the daemon's own request path (`probe::Prober`),
//!   body read under `max_body` included, classification not.
//!
//! Nothing is asserted; compare the ratios within one run.

#[path = "shared/cpu.rs"]
mod cpu;

use bytes::Bytes;
use cpu::thread_cpu;
use http_body_util::{BodyExt, Empty, Full};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PATHS: usize = 1_000;
const PER_TICK: usize = 10;
const TICK: Duration = Duration::from_millis(10);
const WARMUP: Duration = Duration::from_secs(5);

fn server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_r| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"{\"status\":\"ok\"}"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
    });
    addr
}

/// Starts request `i` (of `PATHS`) and counts it in `done` when answered.
type Fire = Box<dyn Fn(usize, Arc<AtomicU64>)>;
/// Builds a client for the server at the address.
type MakeClient = fn(SocketAddr) -> Fire;

/// Runs one client for `window` after the warm-up; CPU µs per request.
fn measure(addr: SocketAddr, window: Duration, make: MakeClient) -> (u64, f64) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let fire = make(addr);
            let done = Arc::new(AtomicU64::new(0));
            let warm_ticks = (WARMUP.as_millis() / TICK.as_millis()) as usize;
            let ticks = warm_ticks + (window.as_millis() / TICK.as_millis()) as usize;
            let mut next = tokio::time::Instant::now();
            let (mut cpu0, mut done0) = (thread_cpu(), 0);
            let mut k = 0;
            for t in 0..ticks {
                if t == warm_ticks {
                    cpu0 = thread_cpu();
                    done0 = done.load(Ordering::Relaxed);
                }
                tokio::time::sleep_until(next).await;
                next += TICK;
                for _ in 0..PER_TICK {
                    fire(k % PATHS, Arc::clone(&done));
                    k += 1;
                }
            }
            // The last batch is answered within a few ms (bounded wait).
            let sent = k as u64;
            let until = tokio::time::Instant::now() + Duration::from_secs(2);
            while done.load(Ordering::Relaxed) < sent && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let cpu = thread_cpu() - cpu0;
            let n = done.load(Ordering::Relaxed) - done0;
            (n, cpu.as_secs_f64() * 1e6 / n.max(1) as f64)
        })
    })
    .join()
    .unwrap()
}

fn reqwest_client(addr: SocketAddr) -> Fire {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .unwrap();
    let urls: Vec<Arc<str>> = (0..PATHS)
        .map(|i| Arc::from(format!("http://{addr}/c/{i}")))
        .collect();
    Box::new(move |i, done| {
        let (c, u) = (client.clone(), Arc::clone(&urls[i]));
        tokio::spawn(async move {
            if let Ok(r) = c.get(&*u).send().await {
                if r.bytes().await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    })
}

fn legacy_client(addr: SocketAddr) -> Fire {
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    let client: Client<_, Empty<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new());
    let uris: Vec<http::Uri> = (0..PATHS)
        .map(|i| format!("http://{addr}/c/{i}").parse().unwrap())
        .collect();
    Box::new(move |i, done| {
        let (c, u) = (client.clone(), uris[i].clone());
        tokio::spawn(async move {
            let req = http::Request::get(u)
                .header("user-agent", "bench")
                .body(Empty::new())
                .unwrap();
            if let Ok(r) = c.request(req).await {
                if r.into_body().collect().await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    })
}

fn probe_client(addr: SocketAddr) -> Fire {
    let text: String = (0..PATHS)
        .map(|i| format!("[[connection]]\nid = \"c{i}\"\nurl = \"http://{addr}/c/{i}\"\n"))
        .collect();
    let config = connwatch::config::Config::parse(Path::new("/bench.toml"), &text, &|_| None)
        .expect("valid config");
    let prober =
        connwatch::probe::Prober::new(&config.connections, &Default::default()).expect("clients");
    let requests: Vec<Arc<connwatch::probe::Request>> = config
        .connections
        .iter()
        .map(|c| Arc::new(prober.request(c)))
        .collect();
    Box::new(move |i, done| {
        let r = Arc::clone(&requests[i]);
        tokio::spawn(async move {
            if r.send().await.attempt.is_ok() {
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    })
}

fn main() {
    let window = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<u64>().ok())
        .map_or(Duration::from_secs(15), Duration::from_secs);
    let addr = server();
    println!(
        "{PATHS} paths, {} requests/s in batches of {PER_TICK} every {} ms, warm-up {} s, window {} s",
        PER_TICK as u128 * 1000 / TICK.as_millis(),
        TICK.as_millis(),
        WARMUP.as_secs(),
        window.as_secs()
    );
    println!("| client | requests | CPU µs/request | × reqwest |");
    println!("|---|---|---|---|");
    let runs: [(&str, MakeClient); 3] = [
        ("reqwest", reqwest_client),
        ("hyper-util legacy", legacy_client),
        ("connwatch probe", probe_client),
    ];
    let mut base = None;
    for (name, make) in runs {
        let (n, us) = measure(addr, window, make);
        let base = *base.get_or_insert(us);
        println!("| {name} | {n} | {us:.1} | {:.2}× |", us / base);
    }
}
