//! The probes' HTTP client against real loopback servers: TLS with a
//! private CA, a client certificate or none, HTTP/2 by ALPN, credentials in
//! the URL, and connection reuse (including a server that closes idle
//! connections).

mod common;

use common::*;
use rustls::pki_types::PrivateKeyDer;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a test server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    version: String,
    authorization: Option<String>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server config offering `alpn`, requiring a client certificate from
/// the test CA when `mtls`.
fn server_config(pki: &Pki, alpn: &[&[u8]], mtls: bool) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if mtls {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.client_ca.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let key = PrivateKeyDer::try_from(pki.server_key.clone()).unwrap();
    let mut config = builder
        .with_single_cert(pki.server_chain.clone(), key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// An https server (HTTP/2 or HTTP/1.1, whichever ALPN chose) that answers
/// every request online and logs what it saw.
fn tls_server(config: Arc<rustls::ServerConfig>) -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let seen = Arc::clone(&log);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                        let seen = Arc::clone(&seen);
                        async move {
                            seen.lock().unwrap().push(Seen {
                                version: format!("{:?}", req.version()),
                                authorization: req
                                    .headers()
                                    .get("authorization")
                                    .map(|v| v.to_str().unwrap().to_string()),
                            });
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(
                                    b"{\"status\":\"ok\"}",
                                )),
                            ))
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(tls);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(io, svc)
                        .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    }
                });
            }
        });
    });
    (addr, log)
}

fn probe(s: &Setup, id: &str) -> Value {
    let out = s.cmd(&["probe", id, "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "probe {id}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn tls_with_a_private_ca_a_client_certificate_or_no_verification() {
    let s = Setup::new("");
    let dir = s.dir.path();
    let pki = pki(dir);
    let (h2, h2_log) = tls_server(server_config(&pki, &[b"h2", b"http/1.1"], false));
    let (h1, h1_log) = tls_server(server_config(&pki, &[b"http/1.1"], false));
    let (mtls, _) = tls_server(server_config(&pki, &[b"h2", b"http/1.1"], true));
    let d = dir.display();
    let ca = format!("tls_ca_file = \"{d}/ca.pem\"\n");
    let identity =
        format!("tls_client_cert = \"{d}/client.pem\"\ntls_client_key = \"{d}/client.key\"\n");
    let conn = |id: &str, url: String, extra: &str| {
        format!("[[connection]]\nid = \"{id}\"\nurl = \"{url}\"\n{extra}")
    };
    let config = [
        conn("by-name", format!("https://localhost:{}/s", h2.port()), &ca),
        conn("by-address", format!("https://{h2}/s"), &ca),
        conn("http1-only", format!("https://{h1}/s"), &ca),
        conn("unknown-ca", format!("https://{h2}/s"), ""),
        conn(
            "insecure",
            format!("https://{h2}/s"),
            "tls_insecure = true\n",
        ),
        conn(
            "mtls",
            format!("https://{mtls}/s"),
            &format!("{ca}{identity}"),
        ),
        conn("mtls-without-cert", format!("https://{mtls}/s"), &ca),
    ]
    .concat();
    std::fs::write(&s.config, config).unwrap();

    for id in ["by-name", "by-address", "insecure", "mtls"] {
        let v = probe(&s, id);
        assert_eq!(v["outcome"], "online", "{id}: {v}");
    }
    // ALPN chose HTTP/2 where the server offers it.
    assert!(
        h2_log
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.version == "HTTP/2.0"),
        "{:?}",
        h2_log.lock().unwrap()
    );
    let v = probe(&s, "http1-only");
    assert_eq!(v["outcome"], "online", "{v}");
    assert_eq!(h1_log.lock().unwrap()[0].version, "HTTP/1.1");

    // Not trusted: the handshake fails, filed as tls.
    let v = probe(&s, "unknown-ca");
    assert_eq!(v["outcome"], "unreachable", "{v}");
    assert_eq!(v["error"]["kind"], "tls", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("UnknownIssuer"), "{message}");

    // A server that wants a client certificate and gets none. In TLS 1.3
    // its refusal comes after the client's handshake is done, and usually
    // after it has closed the socket: the kind is `io` or `tls`, whichever
    // the client read first.
    let v = probe(&s, "mtls-without-cert");
    assert_eq!(v["outcome"], "unreachable", "{v}");
    assert!(
        v["error"]["kind"] == "io" || v["error"]["kind"] == "tls",
        "{v}"
    );
}

#[test]
fn credentials_in_the_url_are_sent_as_basic_auth_and_only_to_their_own_origin() {
    let s = Setup::new("");
    let pki = pki(s.dir.path());
    let (tls, log) = tls_server(server_config(&pki, &[b"http/1.1"], false));
    // A plain server that redirects to the TLS one: another origin.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain = listener.local_addr().unwrap();
    let auths: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&auths);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push(line);
            }
            let auth = head
                .iter()
                .find_map(|l| l.strip_prefix("authorization: "))
                .unwrap_or("")
                .trim()
                .to_string();
            seen.lock().unwrap().push(auth);
            let to = format!("https://localhost:{}/s", tls.port());
            let _ = write!(
                stream,
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    let d = s.dir.path().display();
    std::fs::write(
        &s.config,
        format!(
            "[[connection]]\nid = \"direct\"\nurl = \"https://svc:p%40ss@localhost:{}/s\"\ntls_ca_file = \"{d}/ca.pem\"\n\
             [[connection]]\nid = \"redirected\"\nurl = \"http://svc:p%40ss@{plain}/s\"\ntls_ca_file = \"{d}/ca.pem\"\n",
            tls.port()
        ),
    )
    .unwrap();
    let v = probe(&s, "direct");
    assert_eq!(v["outcome"], "online", "{v}");
    // base64("svc:p@ss"), the password percent-decoded.
    assert_eq!(
        log.lock().unwrap()[0].authorization.as_deref(),
        Some("Basic c3ZjOnBAc3M=")
    );
    let v = probe(&s, "redirected");
    assert_eq!(v["outcome"], "online", "{v}");
    assert_eq!(auths.lock().unwrap()[0], "Basic c3ZjOnBAc3M=");
    // Followed to another origin: the credentials stay behind.
    let after = log.lock().unwrap();
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[1].authorization, None, "{after:?}");
}

/// A plain HTTP/1.1 server that counts connections and requests. With
/// `close_idle_after`, it closes each connection that long after its answer
/// while keeping it alive in its headers: every pooled connection goes stale.
fn counting_server(
    close_idle_after: Option<Duration>,
) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (c, r) = (Arc::clone(&conns), Arc::clone(&requests));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            let r = Arc::clone(&r);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => {
                            r.fetch_add(1, Ordering::SeqCst);
                            let body = "{\"status\":\"ok\"}";
                            let _ = write!(
                                stream,
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if let Some(after) = close_idle_after {
                                std::thread::sleep(after);
                                let _ = stream.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    (addr, conns, requests)
}

fn probes(s: &Setup, id: &str) -> Vec<Value> {
    let out = s.cmd(&["history", id, "--since", "1h", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().clone()
}

#[test]
fn connections_are_reused_and_a_stale_one_costs_no_failure() {
    let (keep, keep_conns, keep_reqs) = counting_server(None);
    let (stale, stale_conns, stale_reqs) = counting_server(Some(Duration::from_millis(50)));
    let s = Setup::new(&format!(
        "[daemon]\ndatabase = \"cw.db\"\n\
         [[connection]]\nid = \"keep\"\nurl = \"http://{keep}/s\"\ninterval = \"200ms\"\ntimeout = \"1s\"\n\
         [[connection]]\nid = \"stale\"\nurl = \"http://{stale}/s\"\ninterval = \"200ms\"\ntimeout = \"1s\"\n"
    ));
    let mut daemon = s.spawn_daemon(&[]);
    assert!(
        eventually(Duration::from_secs(20), || {
            keep_reqs.load(Ordering::SeqCst) >= 10 && stale_reqs.load(Ordering::SeqCst) >= 10
        }),
        "probes did not run: {}",
        s.daemon_log()
    );
    assert_eq!(terminate(&mut daemon, Duration::from_secs(10)), Some(0));
    // One connection served every probe of the keep-alive server.
    let (kc, kr) = (
        keep_conns.load(Ordering::SeqCst),
        keep_reqs.load(Ordering::SeqCst),
    );
    assert_eq!(kc, 1, "{kc} connections for {kr} requests");
    // The closing server needed a connection per probe, and no probe failed
    // for finding its pooled connection closed.
    let (sc, sr) = (
        stale_conns.load(Ordering::SeqCst),
        stale_reqs.load(Ordering::SeqCst),
    );
    assert!(sc >= sr, "{sc} connections for {sr} requests");
    for id in ["keep", "stale"] {
        let items = probes(&s, id);
        assert!(!items.is_empty(), "{id}: no history");
        // Online probes are kept as runs; a failed one would be its own row.
        let failed: Vec<&Value> = items
            .iter()
            .filter(|i| {
                i["type"] == "probe" || (i["type"] == "transition" && i["current"] != "online")
            })
            .collect();
        assert!(failed.is_empty(), "{id}: {failed:?}");
    }
}

/// One request as a raw test server read it.
#[derive(Debug, Clone)]
struct Raw {
    method: String,
    path: String,
    body: String,
}

/// A raw HTTP/1.1 server: each request is logged and answered with what
/// `answer(path)` returns (status line and headers, without the blank line;
/// the body is `{"status":"ok"}`), then the connection is closed.
fn scripted_server(answer: fn(&str) -> String) -> (SocketAddr, Arc<Mutex<Vec<Raw>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Arc<Mutex<Vec<Raw>>> = Arc::default();
    let seen = Arc::clone(&log);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length.min(4096)];
            let _ = std::io::Read::read_exact(&mut reader, &mut body);
            let mut parts = first.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            let head = answer(&path);
            seen.lock().unwrap().push(Raw {
                method,
                path,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let ok = "{\"status\":\"ok\"}";
            let _ = write!(
                stream,
                "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{ok}",
                ok.len()
            );
        }
    });
    (addr, log)
}

#[test]
fn redirects_keep_or_drop_the_method_and_body_as_browsers_do() {
    let (addr, log) = scripted_server(|path| match path {
        "/see-other" => "HTTP/1.1 303 See Other\r\nLocation: /after".to_string(),
        "/temporary" => "HTTP/1.1 307 Temporary Redirect\r\nLocation: after".to_string(),
        "/found" => "HTTP/1.1 302 Found\r\nLocation: /after?from=found".to_string(),
        _ => "HTTP/1.1 200 OK".to_string(),
    });
    let conn = |id: &str, path: &str| {
        format!(
            "[[connection]]\nid = \"{id}\"\nurl = \"http://{addr}{path}\"\nmethod = \"POST\"\nbody = \"ping\"\n"
        )
    };
    let s = Setup::new(
        &[
            conn("see-other", "/see-other"),
            conn("temporary", "/temporary"),
            conn("found", "/found"),
        ]
        .concat(),
    );
    let mut hops = Vec::new();
    for id in ["see-other", "temporary", "found"] {
        let before = log.lock().unwrap().len();
        let v = probe(&s, id);
        assert_eq!(v["outcome"], "online", "{id}: {v}");
        let log = log.lock().unwrap();
        hops.push(log[before..].to_vec());
    }
    let shape = |r: &Raw| format!("{} {} {:?}", r.method, r.path, r.body);
    let got: Vec<Vec<String>> = hops.iter().map(|h| h.iter().map(shape).collect()).collect();
    assert_eq!(
        got,
        vec![
            vec![r#"POST /see-other "ping""#, r#"GET /after """#],
            vec![r#"POST /temporary "ping""#, r#"POST /after "ping""#],
            vec![r#"POST /found "ping""#, r#"GET /after?from=found """#],
        ]
    );
}

#[test]
fn a_name_that_does_not_resolve_is_dns() {
    let s = Setup::new("");
    let out = s.cmd(&[
        "probe",
        "--url",
        "http://no-such-host.invalid/status",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "unreachable", "{v}");
    assert_eq!(v["error"]["kind"], "dns", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("cannot resolve no-such-host.invalid"),
        "{message}"
    );
}

#[test]
fn a_reload_keeps_the_pooled_connections() {
    let (addr, conns, requests) = counting_server(None);
    let one = format!(
        "[daemon]\ndatabase = \"cw.db\"\n\
         [[connection]]\nid = \"a\"\nurl = \"http://{addr}/a\"\ninterval = \"200ms\"\ntimeout = \"1s\"\n"
    );
    let s = Setup::new(&one);
    let mut daemon = s.spawn_daemon(&[]);
    assert!(
        eventually(Duration::from_secs(20), || requests.load(Ordering::SeqCst)
            >= 5),
        "probes did not run: {}",
        s.daemon_log()
    );
    // A second connection to the same server, then SIGHUP.
    std::fs::write(
        &s.config,
        format!("{one}[[connection]]\nid = \"b\"\nurl = \"http://{addr}/b\"\ninterval = \"200ms\"\ntimeout = \"1s\"\n"),
    )
    .unwrap();
    let before = requests.load(Ordering::SeqCst);
    let pid = daemon.id().to_string();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            s.daemon_log().contains("configuration reloaded")
                && requests.load(Ordering::SeqCst) >= before + 10
        }),
        "no probes after the reload: {}",
        s.daemon_log()
    );
    assert_eq!(terminate(&mut daemon, Duration::from_secs(10)), Some(0));
    // "a" kept its connection through the reload; "b" needed one more at
    // most when both were due in the same tick.
    let c = conns.load(Ordering::SeqCst);
    assert!(
        c <= 2,
        "{c} connections for {} requests",
        requests.load(Ordering::SeqCst)
    );
}

#[test]
fn an_answer_without_a_body_may_name_gzip() {
    // HEAD (and 204, 304) answers carry headers only, Content-Encoding
    // included: there is nothing to decompress, and nothing to fail.
    let (addr, log) = scripted_server(|_| "HTTP/1.1 200 OK\r\nContent-Encoding: gzip".to_string());
    let s = Setup::new(&format!(
        "[[connection]]\nid = \"head\"\nurl = \"http://{addr}/health\"\nmethod = \"HEAD\"\nexpect.json_pointer = \"\"\n"
    ));
    let v = probe(&s, "head");
    assert_eq!(v["outcome"], "online", "{v}");
    assert_eq!(log.lock().unwrap()[0].method, "HEAD");
}
