//! The sinks people read, against real receivers on loopback with the real
//! binary: email through Debian's aiosmtpd (STARTTLS with a private CA, a
//! login, threading, refusals and retries), Teams through a receiver that
//! checks what Teams requires of a Workflows message and its Adaptive
//! Card, and per-connection log files.

mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SMTP_PASSWORD: &str = "smtp-pass-Zq81xNv0";

/// A real SMTP server (`tests/fixtures/smtp_server.py` on Debian's
/// python3-aiosmtpd): what it reported, one JSON object per line.
struct Smtp {
    port: u16,
    child: Child,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Smtp {
    fn start(args: &[&str]) -> Smtp {
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smtp_server.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiosmtpd (apt-get install python3-aiosmtpd)");
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let out = child.stdout.take().unwrap();
        let s = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    s.lock().unwrap().push(v);
                }
            }
        });
        let smtp = Smtp { port, child, seen };
        assert!(
            eventually(Duration::from_secs(20), || smtp.of("ready").len() == 1),
            "the SMTP server did not start"
        );
        smtp
    }

    fn of(&self, event: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["event"] == event)
            .cloned()
            .collect()
    }

    fn messages(&self) -> Vec<Value> {
        self.of("message")
    }

    /// Waits for message number `n` (from 1).
    fn nth(&self, n: usize, limit: Duration) -> Value {
        assert!(
            eventually(limit, || self.messages().len() >= n),
            "message {n} did not arrive; got {:#?}",
            self.messages()
        );
        self.messages()[n - 1].clone()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `connwatch sinks test ID`: its exit code and what it printed.
fn sink_test(setup: &Setup, id: &str) -> (Option<i32>, String) {
    let out = setup.cmd(&["sinks", "test", id]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn occurrences(hay: &[u8], needle: &str) -> usize {
    hay.windows(needle.len())
        .filter(|w| *w == needle.as_bytes())
        .count()
}

/// The body as a mail client shows it (lines end in LF).
fn text(m: &Value) -> String {
    m["body"].as_str().unwrap_or("").replace("\r\n", "\n")
}

fn header(m: &Value, name: &str) -> String {
    m["headers"][name].as_str().unwrap_or("").to_string()
}

fn defaults() -> &'static str {
    r#"
[defaults]
interval = "300ms"
timeout = "250ms"
breaker = { failure_threshold = 2, success_threshold = 1, open_for = "1s", max_open_for = "2s" }
"#
}

#[test]
fn email_over_starttls_groups_and_threads_a_resolve_under_its_trigger() {
    let (addr, platform) = platform();
    let setup = Setup::new("");
    pki(setup.dir.path());
    std::fs::write(setup.dir.path().join("smtp.pass"), SMTP_PASSWORD).unwrap();
    let cert = setup.dir.path().join("server.pem");
    let key = setup.dir.path().join("server.key");
    let smtp = Smtp::start(&[
        "--tls",
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        "--login",
        "connwatch",
        SMTP_PASSWORD,
    ]);
    let port = smtp.port;
    std::fs::write(
        &setup.config,
        format!(
            r#"
[daemon]
database = "cw.db"
history_flush = "1s"
public_url = "https://connwatch.example.com/"
{defaults}
[[connection]]
id = "erp-prod"
name = "ERP production"
url = "http://{addr}/c/erp-prod"

[[connection]]
id = "mes"
url = "http://{addr}/c/mes"

[[connection]]
id = "cmms"
url = "http://{addr}/c/cmms"

[[sink]]
id = "mail"
kind = "email"
smtp_url = "smtp://localhost:{port}"
tls_ca_file = "ca.pem"
from = "connwatch <connwatch@example.com>"
to = ["ops@example.com", "oncall@example.com"]
username = "connwatch"
password_file = "smtp.pass"
group_wait = "1s"
"#,
            defaults = defaults()
        ),
    )
    .unwrap();
    let check = setup.cmd(&["check"]);
    let shown = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("smtp://localhost:") && shown.contains("ops@example.com"),
        "{shown}"
    );

    let mut daemon = setup.spawn_daemon(&[]);
    // The baseline (all online) sends nothing.
    assert!(eventually(Duration::from_secs(20), || setup.all_online()));
    std::thread::sleep(Duration::from_secs(2));
    assert!(smtp.messages().is_empty(), "{:#?}", smtp.messages());

    // One outage: one message, known by the outage.
    platform.set("erp-prod", "down");
    let trigger = smtp.nth(1, Duration::from_secs(20));
    let subject = header(&trigger, "Subject");
    assert!(
        subject.starts_with("[connwatch] erp-prod: online → offline"),
        "{subject}"
    );
    assert_eq!(trigger["tls"], true, "STARTTLS was used");
    assert_eq!(trigger["login"], "connwatch");
    assert_eq!(trigger["mail_from"], "connwatch@example.com");
    let mut rcpt: Vec<String> = trigger["rcpt_tos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    rcpt.sort();
    assert_eq!(rcpt, ["oncall@example.com", "ops@example.com"]);
    assert_eq!(
        header(&trigger, "To"),
        "ops@example.com, oncall@example.com"
    );
    assert_eq!(
        header(&trigger, "From"),
        "connwatch <connwatch@example.com>"
    );
    assert_eq!(header(&trigger, "Auto-Submitted"), "auto-generated");
    assert_eq!(trigger["content_type"], "text/plain");
    let trigger_id = header(&trigger, "Message-ID");
    assert!(
        trigger_id.starts_with("<outage.erp-prod.") && trigger_id.ends_with("@example.com>"),
        "{trigger_id}"
    );
    let body = text(&trigger);
    assert!(body.starts_with("erp-prod: online → offline"), "{body}");
    assert!(
        body.contains("\nerp-prod (ERP production)\n  online → offline at 20")
            && body.contains("  https://connwatch.example.com/#conn-erp-prod\n"),
        "{body}"
    );

    // Its recovery replies to it.
    platform.set("erp-prod", "up");
    let resolve = smtp.nth(2, Duration::from_secs(20));
    assert_eq!(
        header(&resolve, "Subject"),
        "[connwatch] erp-prod: offline → online"
    );
    assert_eq!(header(&resolve, "In-Reply-To"), trigger_id);
    assert_eq!(header(&resolve, "References"), trigger_id);
    assert_ne!(header(&resolve, "Message-ID"), trigger_id);

    // Two at once: one message naming both.
    platform.set("mes", "down");
    platform.set("cmms", "down");
    let grouped = smtp.nth(3, Duration::from_secs(20));
    let subject = header(&grouped, "Subject");
    assert!(
        subject == "[connwatch] 2 connections went offline: mes, cmms"
            || subject == "[connwatch] 2 connections went offline: cmms, mes",
        "{subject}"
    );
    let body = text(&grouped);
    assert!(
        body.starts_with("2 connections went offline: ")
            && body.contains("\nmes\n  online → offline at ")
            && body.contains("\ncmms\n  online → offline at ")
            && body.contains("https://connwatch.example.com/#conn-cmms"),
        "{body}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(smtp.messages().len(), 3, "{:#?}", smtp.messages());

    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
    // The password is nowhere the daemon writes.
    assert_eq!(
        occurrences(&all_bytes(setup.dir.path()), SMTP_PASSWORD),
        1,
        "only smtp.pass holds the password"
    );
    println!(
        "--- the trigger as the SMTP server received it ---\n{}",
        trigger["data"].as_str().unwrap()
    );
}

#[test]
fn a_refused_recipient_is_dead_at_once_and_a_greylisting_server_is_retried() {
    let (addr, platform) = platform();
    let smtp = Smtp::start(&["--greylist", "2"]);
    let port = smtp.port;
    let setup = Setup::new(&format!(
        r#"
[daemon]
database = "cw.db"
history_flush = "1s"
{defaults}
[[connection]]
id = "erp"
url = "http://{addr}/c/erp"

[[sink]]
id = "lost"
kind = "email"
smtp_url = "smtp://127.0.0.1:{port}"
starttls = "off"
from = "connwatch@example.com"
to = "refused@example.com"
group_wait = "0s"

[[sink]]
id = "grey"
kind = "email"
smtp_url = "smtp://127.0.0.1:{port}"
starttls = "off"
from = "connwatch@example.com"
to = "greylist@example.com"
group_wait = "0s"
retry_max = "1s"
# Not the system.error the dead delivery raises: one message greylisted.
events = ["connection.status_changed"]

[[sink]]
id = "strict"
kind = "email"
smtp_url = "smtp://127.0.0.1:{port}"
from = "connwatch@example.com"
to = "strict@example.com"
group_wait = "0s"
retry_max = "1s"
events = ["connection.status_changed"]

[[sink]]
id = "plain"
kind = "email"
smtp_url = "smtp://127.0.0.1:{port}"
starttls = "off"
from = "connwatch@example.com"
to = "ops@example.com"
events = ["connection.auth_required"]
"#,
        defaults = defaults()
    ));

    // `sinks test` prints the server's answer, accepted or not.
    let (code, said) = sink_test(&setup, "plain");
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.starts_with("plain: accepted in ")
            && said.contains("(status 250)\n  SMTP 250 2.0.0 Ok: queued as Q1"),
        "{said}"
    );
    let (code, said) = sink_test(&setup, "lost");
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("refused for good")
            && said.contains("SMTP 550 5.1.1 <refused@example.com>: Recipient address rejected"),
        "{said}"
    );
    // STARTTLS is required unless said otherwise: a server without it gets
    // nothing, not a message in clear.
    let (code, said) = sink_test(&setup, "strict");
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("refused, would retry"), "{said}");
    assert!(
        smtp.of("rcpt")
            .iter()
            .all(|r| r["address"] != "strict@example.com"),
        "no recipient was given without TLS"
    );
    assert_eq!(smtp.messages().len(), 1);

    let mut daemon = setup.spawn_daemon(&[]);
    assert!(eventually(Duration::from_secs(20), || setup.all_online()));
    platform.set("erp", "down");
    // The greylisted recipient gets it on the third try.
    assert!(
        eventually(Duration::from_secs(30), || smtp
            .messages()
            .iter()
            .any(|m| m["rcpt_tos"][0] == "greylist@example.com")),
        "{:#?}",
        smtp.seen.lock().unwrap()
    );
    let deliveries = |sink: &str| -> Value {
        let out = setup.cmd(&["events", "--json"]);
        let events: Value = serde_json::from_slice(&out.stdout).unwrap();
        events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "connection.status_changed" && e["connection_id"] == "erp")
            .flat_map(|e| e["deliveries"].as_array().unwrap().clone())
            .find(|d| d["sink"] == sink)
            .unwrap_or(Value::Null)
    };
    assert!(eventually(Duration::from_secs(10), || deliveries("grey")
        ["state"]
        == "done"));
    let grey = deliveries("grey");
    let tries: Vec<&Value> = grey["history"].as_array().unwrap().iter().collect();
    assert_eq!(
        tries.len(),
        3,
        "{grey:#}\n{:#?}\n{}",
        smtp.of("rcpt"),
        setup.daemon_log()
    );
    assert_eq!(tries[0]["status"], 451);
    assert_eq!(tries[0]["verdict"], "retry");
    assert_eq!(tries[2]["status"], 250);
    let lost = deliveries("lost");
    assert_eq!(lost["state"], "dead", "{lost:#}");
    assert_eq!(lost["history"].as_array().unwrap().len(), 1, "{lost:#}");
    assert_eq!(lost["history"][0]["status"], 550);
    assert!(
        lost["last_error"]
            .as_str()
            .unwrap()
            .starts_with("SMTP 550 5.1.1 <refused@example.com>"),
        "{lost:#}"
    );
    let strict = deliveries("strict");
    assert_eq!(strict["state"], "pending", "{strict:#}");
    assert_eq!(
        strict["last_error"], "STARTTLS is not supported on this server",
        "{strict:#}"
    );
    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
    assert!(
        smtp.of("rcpt")
            .iter()
            .all(|r| r["address"] != "strict@example.com"),
        "no recipient was given without TLS"
    );
}

/// What a Teams Workflows webhook requires: the envelope and an Adaptive
/// Card with `type`, `version` and `body`, each element typed. The first
/// request is told to wait (429), as Teams does under load.
fn check_teams_message(v: &Value) -> Result<(), String> {
    if v["type"] != "message" {
        return Err("type must be \"message\"".into());
    }
    let att = v["attachments"]
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or("attachments must be a non-empty array")?;
    for a in att {
        if a["contentType"] != "application/vnd.microsoft.card.adaptive" {
            return Err("contentType must be application/vnd.microsoft.card.adaptive".into());
        }
        let c = &a["content"];
        if c["type"] != "AdaptiveCard" {
            return Err("content.type must be AdaptiveCard".into());
        }
        let version = c["version"]
            .as_str()
            .ok_or("content.version must be a string")?;
        let (major, minor) = version.split_once('.').ok_or("version must be N.N")?;
        if major != "1" || minor.parse::<u32>().map_or(true, |m| m > 5) {
            return Err(format!(
                "Teams renders Adaptive Cards up to 1.5, not {version}"
            ));
        }
        let body = c["body"]
            .as_array()
            .ok_or("content.body must be an array")?;
        for el in body {
            match el["type"].as_str() {
                Some("TextBlock") if el["text"].is_string() => {}
                Some("TextBlock") => return Err("a TextBlock needs text".into()),
                Some("RichTextBlock" | "ColumnSet" | "Container" | "FactSet" | "Image") => {}
                other => return Err(format!("unknown element type {other:?}")),
            }
            if let Some(colour) = el.get("color") {
                let ok = [
                    "Default",
                    "Dark",
                    "Light",
                    "Accent",
                    "Good",
                    "Warning",
                    "Attention",
                ];
                if !ok.iter().any(|c| colour == c) {
                    return Err(format!("unknown colour {colour}"));
                }
            }
        }
    }
    if serde_json::to_vec(v).unwrap().len() > 28 * 1024 {
        return Err("message larger than 28 KB".into());
    }
    Ok(())
}

#[test]
fn teams_gets_one_valid_card_per_group() {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let (addr, platform) = platform();
    let got: Arc<Mutex<Vec<(u16, Value)>>> = Arc::default();
    let g = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/workflows/w1/triggers/manual/paths/invoke",
        axum::routing::post(move |body: String| {
            let g = Arc::clone(&g);
            async move {
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let mut seen = g.lock().unwrap();
                let first = seen.is_empty();
                let (status, reason) = match check_teams_message(&v) {
                    Err(why) => (StatusCode::BAD_REQUEST, why),
                    Ok(()) if first => (StatusCode::TOO_MANY_REQUESTS, String::new()),
                    Ok(()) => (StatusCode::ACCEPTED, String::new()),
                };
                seen.push((status.as_u16(), v));
                let mut h = HeaderMap::new();
                h.insert("retry-after", "1".parse().unwrap());
                (status, h, reason).into_response()
            }
        }),
    );
    let teams = serve_on_thread(app);
    let sig = "SIGsecret0123456789abcdef";
    let setup = Setup::new(&format!(
        r#"
[daemon]
database = "cw.db"
history_flush = "1s"
public_url = "https://connwatch.example.com"
{defaults}
[[connection]]
id = "erp_prod"
name = "ERP *production*"
url = "http://{addr}/c/erp"

[[connection]]
id = "crm"
url = "http://{addr}/c/crm"

[[sink]]
id = "chat"
kind = "teams"
url = "http://{teams}/workflows/w1/triggers/manual/paths/invoke?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sig={sig}"
group_wait = "1s"
"#,
        defaults = defaults()
    ));
    let check = setup.cmd(&["check"]);
    let shown = String::from_utf8_lossy(&check.stdout);
    assert!(
        shown.contains(&format!("http://{}/***", teams.ip())) && !shown.contains(sig),
        "{shown}"
    );

    let mut daemon = setup.spawn_daemon(&[]);
    assert!(eventually(Duration::from_secs(20), || setup.all_online()));
    platform.set("erp", "down");
    platform.set("crm", "down");
    let accepted = |n: usize| {
        eventually(Duration::from_secs(20), || {
            got.lock()
                .unwrap()
                .iter()
                .filter(|(s, _)| *s == 202)
                .count()
                >= n
        })
    };
    assert!(accepted(1), "{:#?}", got.lock().unwrap());
    let (statuses, card): (Vec<u16>, Value) = {
        let g = got.lock().unwrap();
        (g.iter().map(|(s, _)| *s).collect(), g[1].1.clone())
    };
    assert_eq!(statuses, [429, 202], "told to wait, then sent again");
    let content = &card["attachments"][0]["content"];
    let body = content["body"].as_array().unwrap();
    assert_eq!(
        body.len(),
        3,
        "a title and a row per connection: {content:#}"
    );
    assert_eq!(body[0]["color"], "Attention");
    let title = body[0]["text"].as_str().unwrap();
    assert!(
        title == "connwatch: 2 connections went offline: erp\\_prod, crm"
            || title == "connwatch: 2 connections went offline: crm, erp\\_prod",
        "{title}"
    );
    let rows: Vec<&str> = body[1..]
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    assert!(
        rows.iter().any(|r| r.starts_with(
            r"[**ERP \*production\*** (erp\_prod)](https://connwatch.example.com/#conn-erp_prod): online → offline — "
        )),
        "{rows:#?}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with(
            "[**crm**](https://connwatch.example.com/#conn-crm): online → offline — "
        )),
        "{rows:#?}"
    );
    assert_eq!(
        content["actions"][0]["url"],
        "https://connwatch.example.com/"
    );

    platform.set("erp", "up");
    platform.set("crm", "up");
    assert!(accepted(2), "{:#?}", got.lock().unwrap());
    let back = got.lock().unwrap().last().unwrap().1.clone();
    let body = back["attachments"][0]["content"]["body"]
        .as_array()
        .unwrap()
        .clone();
    assert!(body.iter().all(|b| b["color"] == "Good"), "{body:#?}");
    assert!(got.lock().unwrap().iter().all(|(s, _)| *s != 400));

    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
    let (code, said) = sink_test(&setup, "chat");
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("(status 202)\n  HTTP 202 Accepted"), "{said}");
    // Database, audit log, daemon log: everything but the configuration.
    assert_eq!(
        occurrences(&all_bytes(setup.dir.path()), sig),
        0,
        "the URL's signature is only in the configuration"
    );
    println!(
        "--- the card as the receiver got it ---\n{}",
        serde_json::to_string_pretty(&card).unwrap()
    );
}

#[test]
fn log_files_per_connection_and_one_for_the_daemon() {
    use std::os::unix::fs::PermissionsExt;
    let (addr, platform) = platform();
    let config = |extra: &str| {
        format!(
            r#"
[daemon]
database = "cw.db"
history_flush = "1s"
{defaults}
[[connection]]
id = "erp"
url = "http://{addr}/c/erp"

[[connection]]
id = "crm.eu"
url = "http://{addr}/c/crm.eu"
{extra}
[[sink]]
id = "files"
kind = "log"
path = "events/by-connection/{{connection_id}}.jsonl"
"#,
            defaults = defaults()
        )
    };
    let setup = Setup::new(&config(""));
    let mut daemon = setup.spawn_daemon(&[]);
    assert!(eventually(Duration::from_secs(20), || setup.all_online()));
    let dir = setup.dir.path().join("events/by-connection");
    platform.set("erp", "down");
    let read = |name: &str| -> Vec<Value> {
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let changed = |name: &str, to: &str| {
        read(name)
            .iter()
            .any(|e| e["type"] == "connection.status_changed" && e["data"]["current"] == to)
    };
    assert!(eventually(Duration::from_secs(20), || changed(
        "erp.jsonl",
        "offline"
    )));
    platform.set("crm.eu", "down");
    assert!(eventually(Duration::from_secs(20), || changed(
        "crm.eu.jsonl",
        "offline"
    )));
    for (file, id) in [("erp.jsonl", "erp"), ("crm.eu.jsonl", "crm.eu")] {
        let events = read(file);
        assert!(
            events.iter().all(|e| e["connection_id"] == id),
            "{file} holds only {id}'s events: {events:#?}"
        );
    }
    // A refused reload raises system.error: the daemon's own file.
    std::fs::write(&setup.config, config("bogus_key = 1\n")).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(
        eventually(Duration::from_secs(20), || read("_system.jsonl")
            .iter()
            .any(
                |e| e["type"] == "system.error" && e["connection_id"].is_null()
            )),
        "{}",
        setup.daemon_log()
    );
    assert_eq!(terminate(&mut daemon, Duration::from_secs(15)), Some(0));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o750);
    for f in ["erp.jsonl", "crm.eu.jsonl", "_system.jsonl"] {
        assert_eq!(mode(&dir.join(f)), 0o640, "{f}");
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["_system.jsonl", "crm.eu.jsonl", "erp.jsonl"]);

    // An id that would climb out of the directory never loads.
    std::fs::write(
        &setup.config,
        config("\n[[connection]]\nid = \"../../../etc/cron.d/x\"\nurl = \"http://127.0.0.1:1/\"\n"),
    )
    .unwrap();
    let out = setup.cmd(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("id \"../../../etc/cron.d/x\" must be 1 to 64 characters"),
        "{err}"
    );
}
