//! Shared parts of the integration tests: a real scenario HTTP server on
//! loopback (ephemeral port), config files in temp dirs, and the real binary.
#![allow(dead_code)]

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_connwatch");

/// The scenario server: each path answers one way. `/goes-down` is online for
/// its first 3 seconds, then HTTP 503.
pub fn scenario_server() -> SocketAddr {
    let start = tokio::time::Instant::now();
    let json = |s: &str| ([("content-type", "application/json")], s.to_string());
    let app = Router::new()
        .route(
            "/stable",
            get(move || async move { json(r#"{"status":"online"}"#) }),
        )
        .route(
            "/goes-down",
            get(move || async move {
                if start.elapsed() < Duration::from_secs(3) {
                    json(r#"{"status":"online"}"#).into_response()
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        json(r#"{"status":"offline"}"#),
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/auth",
            get(|| async {
                (
                    StatusCode::UNAUTHORIZED,
                    [("content-type", "application/json")],
                    r#"{"error":{"code":"CREDENTIALS_EXPIRED"}}"#,
                )
            }),
        )
        .route(
            "/ratelimit",
            get(|| async {
                let mut h = HeaderMap::new();
                h.insert("retry-after", "30".parse().unwrap());
                (StatusCode::TOO_MANY_REQUESTS, h, "slow down")
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                r#"{"status":"online"}"#
            }),
        )
        .route(
            "/endless",
            get(|| async {
                let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
                let stream = futures::stream::repeat_with(move || {
                    Ok::<_, std::convert::Infallible>(chunk.clone())
                });
                Response::new(Body::from_stream(stream))
            }),
        )
        .route(
            "/malformed",
            get(|| async { r#"{"status": "onl"#.to_string() }),
        )
        .route(
            "/offline",
            get(move || async move { json(r#"{"status":"offline"}"#) }),
        )
        .route(
            "/degraded",
            get(move || async move { json(r#"{"status":"degraded"}"#) }),
        );
    serve_on_thread(app)
}

/// Serves `app` on 127.0.0.1 (ephemeral port) from a thread of its own.
pub fn serve_on_thread(app: Router) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("server started")
}

/// Each connection answers as set: `up`, `down` (503) or `401`.
#[derive(Clone, Default)]
pub struct Platform(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, &'static str>>>,
);

impl Platform {
    pub fn set(&self, id: &str, how: &'static str) {
        self.0.lock().unwrap().insert(id.to_string(), how);
    }
}

pub fn platform() -> (std::net::SocketAddr, Platform) {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    let p = Platform::default();
    let app = axum::Router::new()
        .route(
            "/c/{id}",
            axum::routing::get(
                |State(p): State<Platform>, Path(id): Path<String>| async move {
                    let how = p.0.lock().unwrap().get(&id).copied().unwrap_or("up");
                    match how {
                        "down" => (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"offline"}"#),
                        "401" => (
                            StatusCode::UNAUTHORIZED,
                            r#"{"error":{"code":"CREDENTIALS_EXPIRED"}}"#,
                        ),
                        _ => (StatusCode::OK, r#"{"status":"online"}"#),
                    }
                },
            ),
        )
        .with_state(p.clone());
    (serve_on_thread(app), p)
}

/// A temp dir holding a config file; the database sits next to it.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Setup {
    pub fn new(config_text: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("connwatch.toml");
        std::fs::write(&config, config_text).unwrap();
        Setup { dir, config }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("cw.db")
    }

    /// Runs a command to completion with the config, bounded in time.
    pub fn cmd(&self, args: &[&str]) -> Output {
        self.cmd_env(args, &[])
    }

    pub fn cmd_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(BIN);
        c.args(args)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_output(child, Duration::from_secs(60))
    }

    /// Starts `connwatch run`, stderr to a file in the temp dir.
    pub fn spawn_daemon(&self, env: &[(&str, &str)]) -> Child {
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).unwrap();
        let mut c = Command::new(BIN);
        c.arg("run")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            c.env(k, v);
        }
        c.spawn().unwrap()
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Whether the daemon has set up its database and every connection is
    /// online (`false` while it starts).
    pub fn all_online(&self) -> bool {
        let out = self.cmd(&["status", "--json"]);
        matches!(out.status.code(), Some(0 | 3))
            && serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|v| {
                v.as_array()
                    .is_some_and(|a| !a.is_empty() && a.iter().all(|r| r["health"] == "online"))
            })
    }

    /// `status --json`, whether or not a daemon is running (exit 0 or 3).
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.cmd(&["status", "--json"]);
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Waits for a child, killing it if it takes longer than `limit`. Its
/// output is read while it runs, so a large one cannot fill the pipe and
/// stall it.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    use std::io::Read;
    fn drain(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("command did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Sends SIGTERM and waits (bounded) for the exit code.
pub fn terminate(child: &mut Child, limit: Duration) -> Option<i32> {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("daemon did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` every 250 ms until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    check()
}

/// Every file in `dir` but the config (database, WAL, logs...), concatenated.
pub fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_file() && e.path().extension().is_none_or(|x| x != "toml") {
            out.extend(std::fs::read(e.path()).unwrap_or_default());
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A plain HTTP/1.0 GET on loopback: (status, body). No client library, so
/// tests can poll third-party servers from synchronous code.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    request(port, "GET", path, &[], Duration::from_secs(5)).map(|(s, _, b)| (s, b))
}

/// A loopback port that was free a moment ago (for servers whose port must
/// be written into a config file before they start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 request on loopback with extra headers: (status, head, body).
pub fn http_req(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String, String)> {
    request(port, method, path, headers, Duration::from_secs(10))
}

fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Option<(u16, String, String)> {
    send(port, method, path, headers, "", timeout)
}

/// One HTTP/1.0 request on loopback with a body: (status, head, body).
pub fn http_send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String, String)> {
    send(port, method, path, headers, body, Duration::from_secs(10))
}

fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> Option<(u16, String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((buf.as_str(), ""));
    Some((status, head.to_string(), body.to_string()))
}

/// A private CA with a server certificate (localhost, 127.0.0.1) and a
/// client certificate, written as PEM files into `dir`: `ca.pem`,
/// `server.pem` and `server.key`, `client.pem` and `client.key`.
pub struct Pki {
    pub server_chain: Vec<CertificateDer<'static>>,
    pub server_key: Vec<u8>,
    pub client_ca: CertificateDer<'static>,
}

pub fn pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "connwatch test CA");
    let ca = ca.self_signed(&ca_key).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(vec!["probe.client".to_string()]).unwrap();
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client.signed_by(&client_key, &ca, &ca_key).unwrap();

    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("client.pem"), client.pem()).unwrap();
    std::fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    Pki {
        server_chain: vec![server.der().clone()],
        server_key: server_key.serialize_der(),
        client_ca: ca.der().clone(),
    }
}

/// Fails with how to install `bin` when it is missing.
pub fn needs(bin: &str, package: &str) {
    let ok = Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "{bin} is needed: apt-get install {package} (.ci/run does)"
    );
}

/// Runs headless Chromium on `url`: (DOM after scripts ran, stderr).
pub fn chromium_dump(url: &str) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
            "--window-size=390,844",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(90));
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What a [`hook_receiver`] got: each envelope with when it arrived (Unix ms).
pub type Hooked = std::sync::Arc<std::sync::Mutex<Vec<(i64, serde_json::Value)>>>;

/// A webhook receiver on loopback: `POST /hook` keeps each JSON body with
/// its arrival time and answers 204.
pub fn hook_receiver() -> (SocketAddr, Hooked) {
    let got: Hooked = Default::default();
    let g = std::sync::Arc::clone(&got);
    let app = Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let g = std::sync::Arc::clone(&g);
            async move {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                    g.lock().unwrap().push((connwatch::model::now_ms(), v));
                }
                StatusCode::NO_CONTENT
            }
        }),
    );
    (serve_on_thread(app), got)
}

/// The envelopes `got` so far, in arrival order.
pub fn envelopes(got: &Hooked) -> Vec<serde_json::Value> {
    got.lock().unwrap().iter().map(|(_, v)| v.clone()).collect()
}
