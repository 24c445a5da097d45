//! Hostile endpoints: the real `connwatch run` binary against a loopback
//! server that misbehaves in every way we could think of (endless and
//! compressed-bomb bodies, slowloris, redirect loops and odd schemes, garbage
//! and non-HTTP answers, TLS on the wrong port, silence, resets, 10,000
//! headers), next to one healthy control endpoint.
//!
//! It proves that every hostile probe is classified as a failure with a
//! sensible error within its timeout, that the control keeps being probed on
//! schedule, that the daemon's peak memory stays bounded, and that it still
//! exits 0 on SIGTERM. Run with `--nocapture` to see the observed table and
//! the peak-memory figures.

mod common;
use common::*;
use connwatch::probe::MAX_REDIRECTS;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const INTERVAL_MS: u64 = 2_000;
const TIMEOUT_MS: u64 = 1_500;
const MAX_BODY: usize = 64 * 1024;
/// Allowed above `timeout` for a recorded latency (scheduling, clock reads).
const LATENCY_MARGIN_MS: i64 = 500;
const MEMORY_LIMIT_KIB: u64 = 150 * 1024;

/// One hostile case: the connection id, its URL (from the hostile server's
/// address), and what connwatch must record for it.
struct Case {
    id: &'static str,
    url: fn(SocketAddr) -> String,
    outcome: &'static str,
    kind: &'static str,
    /// A fragment the error message must contain (case-insensitive).
    message: &'static str,
}

fn http(a: SocketAddr, path: &str) -> String {
    format!("http://{a}/{path}")
}

const CASES: &[Case] = &[
    Case {
        id: "endless-chunked",
        url: |a| http(a, "endless-chunked"),
        outcome: "invalid",
        kind: "body",
        message: "larger than max_body",
    },
    Case {
        id: "endless-unframed",
        url: |a| http(a, "endless-unframed"),
        outcome: "invalid",
        kind: "body",
        message: "larger than max_body",
    },
    Case {
        id: "gzip-bomb",
        url: |a| http(a, "gzip-bomb"),
        outcome: "invalid",
        kind: "body",
        message: "larger than max_body",
    },
    Case {
        id: "slowloris-head",
        url: |a| http(a, "slowloris-head"),
        outcome: "unreachable",
        kind: "timeout",
        message: "no complete answer within 1500 ms",
    },
    Case {
        id: "slowloris-body",
        url: |a| http(a, "slowloris-body"),
        outcome: "unreachable",
        kind: "timeout",
        message: "no complete answer within 1500 ms",
    },
    Case {
        id: "redirect-loop",
        url: |a| http(a, "redirect-loop"),
        outcome: "offline",
        kind: "http_status",
        message: "HTTP 302",
    },
    Case {
        id: "redirect-ftp",
        url: |a| http(a, "redirect-ftp"),
        outcome: "offline",
        kind: "http_status",
        message: "HTTP 302",
    },
    Case {
        id: "redirect-file",
        url: |a| http(a, "redirect-file"),
        outcome: "offline",
        kind: "http_status",
        message: "HTTP 302",
    },
    Case {
        id: "garbage-body",
        url: |a| http(a, "garbage-body"),
        outcome: "invalid",
        kind: "body",
        message: "not valid JSON",
    },
    Case {
        id: "not-http",
        url: |a| http(a, "not-http"),
        outcome: "unreachable",
        kind: "io",
        message: "invalid HTTP",
    },
    Case {
        id: "tls-to-plaintext",
        url: |a| format!("https://{a}/tls-to-plaintext"),
        outcome: "unreachable",
        kind: "tls",
        message: "corrupt message",
    },
    Case {
        id: "plaintext-to-tls",
        url: |a| http(a, "plaintext-to-tls"),
        outcome: "unreachable",
        kind: "io",
        message: "invalid HTTP",
    },
    Case {
        id: "silent",
        url: |a| http(a, "silent"),
        outcome: "unreachable",
        kind: "timeout",
        message: "no complete answer within 1500 ms",
    },
    Case {
        id: "reset-mid-body",
        url: |a| http(a, "reset-mid-body"),
        outcome: "unreachable",
        kind: "io",
        message: "reset",
    },
    Case {
        id: "many-headers",
        url: |a| http(a, "many-headers"),
        outcome: "unreachable",
        kind: "io",
        message: "too large",
    },
];

// ---------------------------------------------------------------------------
// The hostile server: raw sockets, one thread per accepted connection, one
// behaviour per path.

/// A gzip member of `mib` MiB of zeros, kept as three parts so that the
/// middle (one deflate block run per MiB) is repeated on the wire instead of
/// held in memory: `head`, then `block` `mib - 1` times, then `tail`.
struct GzipBomb {
    head: Vec<u8>,
    block: Vec<u8>,
    tail: Vec<u8>,
    mib: u64,
}

impl GzipBomb {
    fn new(mib: u64) -> GzipBomb {
        use flate2::write::DeflateEncoder;
        use flate2::{Compression, Crc};
        assert!(mib >= 1);
        let zeros = vec![0u8; 1 << 20];
        let mut enc = DeflateEncoder::new(Vec::new(), Compression::best());
        // gzip header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
        let mut head = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        enc.write_all(&zeros).unwrap();
        enc.flush().unwrap(); // sync flush: byte-aligned, not final
        head.append(enc.get_mut());
        // The next MiB only refers back to zeros, so its blocks decode the
        // same wherever they follow at least 32 KiB of zeros.
        enc.write_all(&zeros).unwrap();
        enc.flush().unwrap();
        let block = std::mem::take(enc.get_mut());
        // An empty final fixed-Huffman block, then CRC-32 and size mod 2^32.
        let mut one = Crc::new();
        one.update(&zeros);
        let mut crc = Crc::new();
        for _ in 0..mib {
            crc.combine(&one);
        }
        let mut tail = vec![0x03, 0x00];
        tail.extend_from_slice(&crc.sum().to_le_bytes());
        tail.extend_from_slice(&((mib << 20) as u32).to_le_bytes());
        GzipBomb {
            head,
            block,
            tail,
            mib,
        }
    }

    fn compressed_len(&self) -> u64 {
        (self.head.len() + self.tail.len()) as u64 + self.block.len() as u64 * (self.mib - 1)
    }

    fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&self.head)?;
        for _ in 1..self.mib {
            w.write_all(&self.block)?;
        }
        w.write_all(&self.tail)
    }
}

/// The bomb's construction is valid gzip: a small one decodes, CRC and size
/// checked, to exactly its zeros.
#[test]
fn the_gzip_bomb_is_valid_gzip() {
    let bomb = GzipBomb::new(3);
    let mut wire = Vec::new();
    bomb.write_to(&mut wire).unwrap();
    assert_eq!(wire.len() as u64, bomb.compressed_len());
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&wire[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out.len(), 3 << 20);
    assert!(out.iter().all(|b| *b == 0));
}

type Hits = Arc<Mutex<HashMap<String, usize>>>;

/// Starts the hostile server; returns its address and the requests per path.
fn hostile_server() -> (SocketAddr, Hits) {
    // 10 GiB of zeros, about 10 MB on the wire.
    let bomb = Arc::new(GzipBomb::new(10 * 1024));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits: Hits = Arc::default();
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let bomb = bomb.clone();
            let hits = h.clone();
            std::thread::spawn(move || {
                // Errors are the client hanging up: exactly what we want.
                let _ = hostile(s, &bomb, &hits);
            });
        }
    });
    (addr, hits)
}

/// What the first read of a connection was: the path of an HTTP request, or
/// something else (a TLS ClientHello).
enum Request {
    Http(String),
    NotHttp,
    Closed,
}

fn read_request(s: &mut TcpStream) -> std::io::Result<Request> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(Request::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if !buf.is_ascii() || !buf[0].is_ascii_uppercase() {
            return Ok(Request::NotHttp);
        }
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > 64 * 1024 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let path = text.split_whitespace().nth(1).unwrap_or("/");
    Ok(Request::Http(path.trim_start_matches('/').to_string()))
}

const ONLINE: &[u8] = br#"{"status":"online"}"#;

fn hostile(mut s: TcpStream, bomb: &GzipBomb, hits: &Hits) -> std::io::Result<()> {
    let path = match read_request(&mut s)? {
        Request::Closed => return Ok(()),
        // A TLS ClientHello to this plaintext port: answer as any plain
        // HTTP server would.
        Request::NotHttp => {
            *hits.lock().unwrap().entry("<not http>".into()).or_default() += 1;
            s.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return Ok(());
        }
        Request::Http(p) => p,
    };
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let ok_head = |extra: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n{extra}\r\n"
        )
    };
    let redirect = |location: &str| {
        format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    };
    let second = Duration::from_secs(1);
    match path.as_str() {
        "endless-chunked" => {
            s.write_all(ok_head("Transfer-Encoding: chunked\r\n").as_bytes())?;
            let data = vec![b' '; 16 * 1024];
            loop {
                s.write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
                s.write_all(&data)?;
                s.write_all(b"\r\n")?;
            }
        }
        "endless-unframed" => {
            // No Content-Length, no chunking: the body ends when the
            // connection does, which is never. Valid JSON so far.
            s.write_all(ok_head("").as_bytes())?;
            s.write_all(br#"{"status":"online","padding":""#)?;
            let data = vec![b'x'; 16 * 1024];
            loop {
                s.write_all(&data)?;
            }
        }
        "gzip-bomb" => {
            let extra = format!(
                "Content-Encoding: gzip\r\nContent-Length: {}\r\n",
                bomb.compressed_len()
            );
            s.write_all(ok_head(&extra).as_bytes())?;
            bomb.write_to(&mut s)
        }
        "slowloris-head" => {
            let mut all = ok_head(&format!("Content-Length: {}\r\n", ONLINE.len())).into_bytes();
            all.extend_from_slice(ONLINE);
            for b in all {
                s.write_all(&[b])?;
                std::thread::sleep(second);
            }
            Ok(())
        }
        "slowloris-body" => {
            s.write_all(ok_head(&format!("Content-Length: {}\r\n", ONLINE.len())).as_bytes())?;
            for b in ONLINE {
                std::thread::sleep(second);
                s.write_all(&[*b])?;
            }
            Ok(())
        }
        "redirect-loop" => s.write_all(redirect("/redirect-loop").as_bytes()),
        // Not hostile: proves the bomb's Content-Encoding is decoded.
        "gzip-ok" => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(ONLINE)?;
            let body = enc.finish()?;
            let extra = format!(
                "Content-Encoding: gzip\r\nContent-Length: {}\r\n",
                body.len()
            );
            s.write_all(ok_head(&extra).as_bytes())?;
            s.write_all(&body)
        }
        // Not hostile: the longest chain connwatch follows, then an answer.
        "hops/0" => {
            s.write_all(ok_head(&format!("Content-Length: {}\r\n", ONLINE.len())).as_bytes())?;
            s.write_all(ONLINE)
        }
        p if p.starts_with("hops/") => {
            let n: u32 = p["hops/".len()..].parse().unwrap_or(0);
            s.write_all(redirect(&format!("/hops/{}", n.saturating_sub(1))).as_bytes())
        }
        "redirect-ftp" => s.write_all(redirect("ftp://127.0.0.1/status").as_bytes()),
        "redirect-file" => s.write_all(redirect("file:///etc/passwd").as_bytes()),
        "garbage-body" => {
            // Invalid UTF-8 and binary noise, declared as JSON.
            let mut body = vec![0xff, 0xfe, 0x00, 0xc3, 0x28, b'{', 0xa0, 0xa1];
            body.extend(noise(4096, 7));
            s.write_all(ok_head(&format!("Content-Length: {}\r\n", body.len())).as_bytes())?;
            s.write_all(&body)
        }
        "not-http" => {
            // Random bytes instead of a status line.
            let mut junk = vec![0x00, 0x9c];
            junk.extend(noise(512, 11));
            s.write_all(&junk)
        }
        "plaintext-to-tls" => {
            // What a TLS port says to a plaintext request: a fatal alert record
            // (TLS 1.2, handshake_failure), then it hangs up.
            s.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])
        }
        "silent" => {
            // Accepted, request read, never a byte back: wait for the hang-up.
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            let mut b = [0u8; 1024];
            while s.read(&mut b)? > 0 {}
            Ok(())
        }
        "reset-mid-body" => {
            s.write_all(ok_head("Content-Length: 1000\r\n").as_bytes())?;
            s.write_all(&[b' '; 100])?;
            s.flush()?;
            std::thread::sleep(Duration::from_millis(200));
            reset(s);
            Ok(())
        }
        "many-headers" => {
            let mut head = String::from("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n");
            for i in 0..10_000 {
                head.push_str(&format!("X-Hostile-{i}: {i}\r\n"));
            }
            head.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                ONLINE.len()
            ));
            s.write_all(head.as_bytes())?;
            s.write_all(ONLINE)
        }
        _ => s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    }
}

/// Deterministic pseudo-random bytes (xorshift), no dependency needed.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Closes with SO_LINGER 0, so the peer gets an RST instead of a FIN.
fn reset(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

/// The healthy control: `{"status":"online"}` at once; records the time of
/// every request (ms since it started).
fn control_server() -> (SocketAddr, Arc<Mutex<Vec<u64>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let times: Arc<Mutex<Vec<u64>>> = Arc::default();
    let t = times.clone();
    let start = Instant::now();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let t = t.clone();
            std::thread::spawn(move || {
                if let Ok(Request::Http(_)) = read_request(&mut s) {
                    t.lock().unwrap().push(start.elapsed().as_millis() as u64);
                    let mut answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        ONLINE.len()
                    )
                    .into_bytes();
                    answer.extend_from_slice(ONLINE);
                    let _ = s.write_all(&answer);
                }
            });
        }
    });
    (addr, times)
}

// ---------------------------------------------------------------------------
// The daemon.

fn config(conns: &[(&str, String)], interval_ms: u64) -> String {
    let mut s = format!(
        r#"
[daemon]
database = "cw.db"
history_flush = "1s"

[defaults]
interval = "{interval_ms}ms"
timeout = "{TIMEOUT_MS}ms"
max_body = {MAX_BODY}
# Keep probing every hostile endpoint at its cadence for the whole run
# (the breaker would otherwise rest them after 3 failures).
breaker = {{ failure_threshold = 100 }}
"#
    );
    for (id, url) in conns {
        s.push_str(&format!(
            "\n[[connection]]\nid = \"{id}\"\nurl = \"{url}\"\n"
        ));
    }
    s
}

/// (VmHWM, VmRSS) of a process in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn history(setup: &Setup, id: &str) -> Vec<Value> {
    let out = setup.cmd(&["history", id, "--since", "1h", "--json"]);
    assert!(
        out.status.success(),
        "history {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().clone()
}

/// History items that are a non-online probe or a change to anything but
/// online.
fn not_online(items: &[Value]) -> usize {
    items
        .iter()
        .filter(|i| i["type"] == "probe" || (i["type"] == "transition" && i["current"] != "online"))
        .count()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[test]
fn hostile_endpoints_are_classified_in_time_with_bounded_memory() {
    let started = Instant::now();
    let (hostile_addr, hits) = hostile_server();
    let (control_addr, control_times) = control_server();
    let mut conns: Vec<(&str, String)> = CASES
        .iter()
        .map(|c| (c.id, (c.url)(hostile_addr)))
        .collect();
    conns.push(("control", format!("http://{control_addr}/status")));
    // Two healthy ones on the hostile server: a small gzip answer (so the
    // bomb is known to be inflated, not read raw) and the redirect limit's
    // boundary, exactly MAX_REDIRECTS hops to the answer.
    conns.push(("gzip-ok", format!("http://{hostile_addr}/gzip-ok")));
    conns.push((
        "redirect-max-hops",
        format!("http://{hostile_addr}/hops/{MAX_REDIRECTS}"),
    ));
    let setup = Setup::new(&config(&conns, INTERVAL_MS));
    let mut daemon = setup.spawn_daemon(&[]);
    let pid = daemon.id();

    // Let every connection be probed several times, watching the memory.
    let run = Duration::from_secs(16);
    let run_start = Instant::now();
    let mut peak = (0, 0);
    while run_start.elapsed() < run {
        let (hwm, rss) = memory_kib(pid);
        peak = (peak.0.max(hwm), peak.1.max(rss));
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "the daemon died:\n{}",
            setup.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Every hostile connection has a recorded, non-online last probe (bounded wait).
    let mut by_id: HashMap<String, Value> = HashMap::new();
    let recorded = eventually(Duration::from_secs(10), || {
        by_id = setup
            .status_json()
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["id"].as_str().unwrap().to_string(), c.clone()))
            .collect();
        by_id.values().all(|c| !c["last_outcome"].is_null())
    });
    assert!(recorded, "not every connection was probed: {by_id:#?}");

    let mut report = Vec::new();
    let mut failures = Vec::new();
    for case in CASES {
        let c = &by_id[case.id];
        let err = &c["last_error"];
        let items = history(&setup, case.id);
        let probes: Vec<&Value> = items.iter().filter(|i| i["type"] == "probe").collect();
        let online_runs = items.iter().filter(|i| i["type"] == "online_run").count();
        let lat: Vec<i64> = probes
            .iter()
            .map(|p| p["latency_ms"].as_i64().unwrap())
            .collect();
        let (lo, hi) = (
            lat.iter().min().copied().unwrap_or(-1),
            lat.iter().max().copied().unwrap_or(-1),
        );
        report.push(format!(
            "{:<17} {:<12} {:<12} {:>3} probes  latency {:>4}..{:>4} ms  {}",
            case.id,
            c["last_outcome"].as_str().unwrap_or("-"),
            err["kind"].as_str().unwrap_or("-"),
            probes.len(),
            lo,
            hi,
            err["message"].as_str().unwrap_or("-"),
        ));
        let mut fail = |what: String| failures.push(format!("{}: {what}", case.id));
        if c["last_outcome"] != case.outcome {
            fail(format!("outcome {} != {}", c["last_outcome"], case.outcome));
        }
        if err["kind"] != case.kind {
            fail(format!("error kind {} != {}", err["kind"], case.kind));
        }
        let message = err["message"].as_str().unwrap_or("").to_lowercase();
        if !message.contains(&case.message.to_lowercase()) {
            fail(format!("message {message:?} lacks {:?}", case.message));
        }
        // Probed again and again at its cadence, never online, each within
        // its timeout.
        if probes.len() < 5 || online_runs > 0 {
            fail(format!(
                "{} non-online probes, {online_runs} online runs",
                probes.len()
            ));
        }
        for p in &probes {
            if p["outcome"] != case.outcome || p["error"]["kind"] != case.kind {
                fail(format!(
                    "a probe recorded {} / {}",
                    p["outcome"], p["error"]
                ));
            }
        }
        if hi > TIMEOUT_MS as i64 + LATENCY_MARGIN_MS {
            fail(format!("latency {hi} ms above timeout {TIMEOUT_MS} ms"));
        }
    }

    // The control: online throughout, probed at its cadence.
    let control = &by_id["control"];
    let items = history(&setup, "control");
    let online: i64 = items
        .iter()
        .filter(|i| i["type"] == "online_run")
        .map(|i| i["count"].as_i64().unwrap())
        .sum();
    let control_bad = not_online(&items);
    let times = control_times.lock().unwrap().clone();
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let max_gap = gaps.iter().max().copied().unwrap_or(0);
    report.push(format!(
        "{:<17} {:<12} {:<12} {:>3} probes  gaps {:?} ms",
        "control",
        control["last_outcome"].as_str().unwrap_or("-"),
        "-",
        online,
        gaps
    ));

    // Still alive, then a clean stop.
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon died:\n{}",
        setup.daemon_log()
    );
    let (hwm, rss) = memory_kib(pid);
    peak = (peak.0.max(hwm), peak.1.max(rss));
    let code = terminate(&mut daemon, Duration::from_secs(15));
    let log = setup.daemon_log();

    eprintln!("\nhostile endpoints, interval {INTERVAL_MS} ms, timeout {TIMEOUT_MS} ms, max_body {MAX_BODY}:");
    for line in &report {
        eprintln!("  {line}");
    }
    eprintln!(
        "  requests seen: {:?}",
        hits.lock()
            .unwrap()
            .iter()
            .collect::<std::collections::BTreeMap<_, _>>()
    );
    eprintln!(
        "  daemon peak memory: VmHWM {:.1} MiB (highest VmRSS sampled {:.1} MiB)",
        mib(peak.0),
        mib(peak.1)
    );
    eprintln!("  wall time {:.1} s", started.elapsed().as_secs_f64());

    assert!(failures.is_empty(), "{failures:#?}\nlog:\n{log}");
    assert_eq!(control["health"], "online", "{control}");
    assert_eq!(control["last_outcome"], "online", "{control}");
    assert_eq!(
        control_bad, 0,
        "the control had a non-online probe: {items:?}"
    );
    let expected = (run.as_millis() as u64 / INTERVAL_MS) as i64;
    assert!(
        online >= expected - 2,
        "control probed {online} times, expected about {expected}"
    );
    assert!(
        times.len() as i64 >= expected - 2,
        "control server saw {} requests",
        times.len()
    );
    assert!(
        max_gap <= INTERVAL_MS + 750 && gaps.iter().all(|g| *g >= INTERVAL_MS - 750),
        "control cadence disturbed: gaps {gaps:?}"
    );
    // The redirect loop is cut after MAX_REDIRECTS follow-ups per probe:
    // 1 + MAX_REDIRECTS requests for each recorded probe (plus at most one
    // chain cut short by the shutdown), and a chain of exactly
    // MAX_REDIRECTS hops is followed to its answer.
    let loop_probes = history(&setup, "redirect-loop")
        .iter()
        .filter(|i| i["type"] == "probe")
        .count();
    let loop_hits = hits.lock().unwrap()["redirect-loop"];
    let per_probe = MAX_REDIRECTS + 1;
    assert!(
        loop_probes > 0
            && loop_hits >= per_probe * loop_probes
            && loop_hits < per_probe * (loop_probes + 1),
        "{loop_hits} requests for {loop_probes} probes"
    );
    assert_eq!(by_id["gzip-ok"]["last_outcome"], "online");
    assert_eq!(not_online(&history(&setup, "gzip-ok")), 0);
    assert_eq!(by_id["redirect-max-hops"]["last_outcome"], "online");
    assert_eq!(
        not_online(&history(&setup, "redirect-max-hops")),
        0,
        "a chain of {MAX_REDIRECTS} redirects was not followed"
    );
    assert!(
        peak.0 > 0 && peak.0 < MEMORY_LIMIT_KIB,
        "peak memory {:.1} MiB",
        mib(peak.0)
    );
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(code, Some(0), "exit code on SIGTERM\n{log}");
}

/// Peak memory per case: one daemon per hostile endpoint (and one for the
/// control alone, the baseline), all at once, each probing every second.
#[test]
fn peak_memory_per_hostile_case() {
    let (hostile_addr, _hits) = hostile_server();
    let (control_addr, _times) = control_server();
    let control = [("control", format!("http://{control_addr}/status"))];
    let mut runs = vec![("control (baseline)", Setup::new(&config(&control, 1_000)))];
    for case in CASES {
        let conn = [(case.id, (case.url)(hostile_addr))];
        runs.push((case.id, Setup::new(&config(&conn, 1_000))));
    }
    let mut daemons: Vec<_> = runs.iter().map(|(_, s)| s.spawn_daemon(&[])).collect();
    let mut peaks = vec![0u64; daemons.len()];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        for (d, p) in daemons.iter().zip(peaks.iter_mut()) {
            *p = (*p).max(memory_kib(d.id()).0);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut probed = Vec::new();
    for ((_, setup), d) in runs.iter().zip(daemons.iter_mut()) {
        let alive = d.try_wait().unwrap().is_none();
        let status = setup.status_json();
        let outcome = status[0]["last_outcome"]
            .as_str()
            .unwrap_or("-")
            .to_string();
        probed.push((alive, outcome));
    }
    let codes: Vec<Option<i32>> = daemons
        .iter_mut()
        .map(|d| terminate(d, Duration::from_secs(15)))
        .collect();
    eprintln!("\npeak memory (VmHWM) per case, one daemon each, 8 s at 1 probe/s:");
    for (i, (name, _)) in runs.iter().enumerate() {
        eprintln!(
            "  {:<20} {:>6.1} MiB   last outcome {}",
            name,
            mib(peaks[i]),
            probed[i].1
        );
    }
    for (i, (name, setup)) in runs.iter().enumerate() {
        assert!(
            probed[i].0,
            "{name}: the daemon died\n{}",
            setup.daemon_log()
        );
        assert_ne!(probed[i].1, "-", "{name}: never probed");
        assert!(
            peaks[i] > 0 && peaks[i] < MEMORY_LIMIT_KIB,
            "{name}: VmHWM {:.1} MiB",
            mib(peaks[i])
        );
        assert_eq!(codes[i], Some(0), "{name}\n{}", setup.daemon_log());
    }
}
