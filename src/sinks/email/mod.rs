//! `email`: one plain-text message per group, over SMTP ([`lettre`]). A
//! chat sink: changes of `group_wait` are one message (see
//! [`crate::sinks::chat`]), its subject the gist a person scans in an inbox
//! ("[connwatch] 3 connections went offline: erp-prod, mes, cmms"), its
//! body the same lines as a chat message, then one paragraph per event
//! (name, change, time, error, link to the status page).
//!
//! Threading ([`thread`]): the message that opens a connection's outage
//! has the `Message-ID` `<outage.{id}.{start}@{from's domain}>`; every
//! later message about that outage (a rise in severity, a reminder, the
//! resolve) names it in `In-Reply-To` and `References`, so mail clients
//! that thread by those headers show the resolve under its trigger.
//!
//! Security: `smtp://` sends STARTTLS and refuses to go on without it
//! (`starttls = "required"`, the default); `smtps://` is TLS from the first
//! byte (port 465). `starttls = "opportunistic"` uses TLS when offered;
//! `starttls = "off"` is for a relay on this host and takes no login (the
//! password would cross in clear). Certificates are checked against the
//! system's roots and, if set, `tls_ca_file`.
//!
//! Verdicts: a 5xx reply (to MAIL, RCPT, DATA or AUTH) is a dead delivery,
//! recorded with the server's answer: sending the same message again gets
//! the same answer. A 4xx reply, a refused or dropped connection, a TLS
//! failure or a timeout is retried.
//!
//! Keys: `smtp_url` (required), `from` (required), `to` (required, one
//! address or a list), `username`, `password` or `password_file`,
//! `tls_ca_file`, `starttls`, `group_wait` (default 10 s).

use super::chat::{self, Row};
use super::{AttemptResult, Cx, Directory, Item, Kind, Sink};
use crate::config::schema::leaf;
use crate::config::{Secret, Section};
use crate::deliver::retry::Verdict;
use crate::event::EventKind;
use crate::policy::SinkClass;
use futures::future::BoxFuture;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Default ports: submission with STARTTLS, and implicit TLS.
pub const SMTP_PORT: u16 = 587;
pub const SMTPS_PORT: u16 = 465;

/// Events detailed in a message's body; the rest are counted.
pub const MAX_DETAILS: usize = 100;

/// Outages a message names in `References`.
pub const MAX_REFERENCES: usize = 20;

pub const KIND: Kind = Kind {
    name: "email",
    keys: &[
        leaf("smtp_url"),
        leaf("from"),
        leaf("to"),
        leaf("username"),
        leaf("password"),
        leaf("password_file"),
        leaf("tls_ca_file"),
        leaf("starttls"),
        chat::GROUP_WAIT,
    ],
    build,
};

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// `smtps://`: TLS from the first byte.
    Implicit,
    /// `smtp://` with STARTTLS, required or when offered.
    StartTls { required: bool },
    /// `smtp://` with `starttls = "off"`: a relay on this host.
    Plain,
}

pub struct Email {
    host: String,
    port: u16,
    security: Security,
    from: Mailbox,
    to: Vec<Mailbox>,
    login: Option<(String, Secret)>,
    /// Trusted besides the system's roots (`tls_ca_file`).
    extra_roots: Vec<Vec<u8>>,
    /// Built at the first send (reading the system's roots costs time that
    /// `connwatch check` need not spend).
    tls: OnceLock<Result<TlsParameters, String>>,
    group_wait: Duration,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("from", &self.from.to_string())
            .field("to", &self.to.len())
            .field("login", &self.login.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

fn build(s: &mut Section<'_, '_>) -> Option<Box<dyn Sink>> {
    for key in ["smtp_url", "from", "to"] {
        if !s.has(key) {
            s.missing(key);
        }
    }
    let endpoint = endpoint(s);
    let from = s.string("from").and_then(|v| mailbox(s, "from", &v));
    let to: Option<Vec<Mailbox>> = s.strings("to").and_then(|list| {
        if list.is_empty() {
            s.fail("to", "name at least one recipient");
            return None;
        }
        let got: Vec<Option<Mailbox>> = list.iter().map(|v| mailbox(s, "to", v)).collect();
        got.into_iter().collect()
    });
    let login = login(s);
    let extra_roots = if s.has("tls_ca_file") {
        let path = s.file_path("tls_ca_file")?;
        match crate::config::read_ca_bundle(&path) {
            Ok(certs) => certs.into_iter().map(|c| c.to_vec()).collect(),
            Err(e) => {
                s.fail("tls_ca_file", e.to_string());
                return None;
            }
        }
    } else {
        Vec::new()
    };
    let group_wait = chat::group_wait(s);
    let (host, port, security) = endpoint?;
    if security == Security::Plain && matches!(login, Ok(Some(_))) {
        s.fail(
            "username",
            "with `starttls = \"off\"` the password would cross in clear: \
             use STARTTLS (the default) or smtps://, or drop the login",
        );
    }
    if security == Security::Plain && !extra_roots.is_empty() {
        s.fail("tls_ca_file", "`starttls = \"off\"` uses no TLS");
    }
    Some(Box::new(Email {
        host,
        port,
        security,
        from: from?,
        to: to?,
        login: login.ok()?,
        extra_roots,
        tls: OnceLock::new(),
        group_wait,
    }))
}

/// `smtp_url` and `starttls`: host, port and protection.
fn endpoint(s: &mut Section<'_, '_>) -> Option<(String, u16, Security)> {
    let starttls = s.string("starttls");
    let url = s.any_url("smtp_url")?;
    let implicit = match url.scheme() {
        "smtp" => false,
        "smtps" => true,
        other => {
            s.fail(
                "smtp_url",
                format!("scheme {other}:// is not smtp:// (STARTTLS) or smtps:// (implicit TLS)"),
            );
            return None;
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        s.fail(
            "smtp_url",
            "put the user name in `username` and the password in `password` or \
             `password_file`, not in the URL",
        );
        return None;
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        s.fail(
            "smtp_url",
            "an SMTP URL is a scheme, a host and a port (e.g. \"smtp://mail.example.com:587\")",
        );
        return None;
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        s.fail("smtp_url", "the URL names no host");
        return None;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url
        .port()
        .unwrap_or(if implicit { SMTPS_PORT } else { SMTP_PORT });
    let security = match (implicit, starttls.as_deref()) {
        (true, None) => Security::Implicit,
        (true, Some(_)) => {
            s.fail(
                "starttls",
                "smtps:// is TLS from the first byte: `starttls` applies to smtp:// only",
            );
            return None;
        }
        (false, None | Some("required")) => Security::StartTls { required: true },
        (false, Some("opportunistic")) => Security::StartTls { required: false },
        (false, Some("off")) => Security::Plain,
        (false, Some(other)) => {
            s.fail(
                "starttls",
                format!("{other:?} is not one of \"required\", \"opportunistic\", \"off\""),
            );
            return None;
        }
    };
    Some((host, port, security))
}

/// `username` with `password` or `password_file`; both or neither.
/// `Err(())` when an error was recorded.
#[allow(clippy::result_unit_err)]
fn login(s: &mut Section<'_, '_>) -> Result<Option<(String, Secret)>, ()> {
    let user = s.string("username");
    let password = s.secret("password", "password_file");
    match (user, password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some((u, p))),
        (None, None) if s.ok() => Ok(None),
        (Some(_), None) if s.ok() => {
            s.fail(
                "username",
                "a login needs `password` or `password_file` too",
            );
            Err(())
        }
        (None, Some(_)) => {
            s.fail("password", "a password needs a `username`");
            Err(())
        }
        (Some(_), Some(_)) => {
            s.fail("username", "empty user name");
            Err(())
        }
        _ => Err(()),
    }
}

fn mailbox(s: &mut Section<'_, '_>, key: &str, v: &str) -> Option<Mailbox> {
    match v.parse::<Mailbox>() {
        Ok(m) => Some(m),
        Err(e) => {
            s.fail(
                key,
                format!("{v:?} is not an e-mail address ({e}); e.g. \"ops@example.com\" or \"Ops <ops@example.com>\""),
            );
            None
        }
    }
}

impl Sink for Email {
    fn class(&self) -> SinkClass {
        SinkClass::Chat {
            group_wait: self.group_wait,
        }
    }

    fn target(&self) -> String {
        let scheme = match self.security {
            Security::Implicit => "smtps",
            _ => "smtp",
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let to: Vec<String> = self.to.iter().map(|m| m.email.to_string()).collect();
        format!("{scheme}://{host}:{} → {}", self.port, to.join(", "))
    }

    fn send<'a>(&'a self, items: &'a [Item], cx: Cx<'a>) -> BoxFuture<'a, AttemptResult> {
        Box::pin(async move {
            if items.is_empty() {
                return AttemptResult::skipped();
            }
            self.deliver(items, cx).await
        })
    }

    fn max_batch(&self) -> usize {
        crate::policy::group::MAX_GROUP
    }

    /// One message at a time, so a trigger's message is sent before its
    /// resolve's.
    fn concurrency(&self) -> usize {
        1
    }

    fn concurrency_fixed(&self) -> Option<&'static str> {
        Some("it sends one message at a time, so a trigger's message goes before its resolve's")
    }
}

impl Email {
    async fn deliver(&self, items: &[Item], cx: Cx<'_>) -> AttemptResult {
        let start = Instant::now();
        let failed = |verdict, status, error: String| {
            AttemptResult::failed(verdict, status, error, start.elapsed())
        };
        let message = match self.message(items, cx.dir) {
            Ok(m) => m,
            Err(e) => {
                return failed(
                    Verdict::Dead,
                    None,
                    format!("cannot compose the message: {e}"),
                )
            }
        };
        let transport = match self.transport(cx.timeout) {
            Ok(t) => t,
            Err(e) => return failed(Verdict::Dead, None, e),
        };
        // lettre's timeout is per read or write; this bounds the exchange.
        let sent = tokio::time::timeout(cx.timeout * 3, transport.send(message)).await;
        match sent {
            Err(_) => failed(
                Verdict::Retry { retry_after: None },
                None,
                format!(
                    "the SMTP exchange took longer than {}",
                    crate::config::format_duration(cx.timeout * 3)
                ),
            ),
            Ok(Ok(resp)) => {
                let code = u16::from(resp.code());
                let text: Vec<&str> = resp.message().collect();
                AttemptResult::done(Some(i64::from(code)), start.elapsed())
                    .answered(format!("SMTP {code} {}", text.join(" ")))
            }
            Ok(Err(e)) => {
                let status = e.status().map(|c| i64::from(u16::from(c)));
                let verdict = if e.is_permanent() {
                    Verdict::Dead
                } else {
                    Verdict::Retry { retry_after: None }
                };
                failed(verdict, status, smtp_error(&e))
            }
        }
    }

    fn transport(&self, timeout: Duration) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.host.as_str())
            .port(self.port)
            .timeout(Some(timeout));
        if self.security != Security::Plain {
            let params = self.tls.get_or_init(|| self.tls_parameters()).clone()?;
            b = b.tls(match self.security {
                Security::Implicit => Tls::Wrapper(params),
                Security::StartTls { required: true } => Tls::Required(params),
                _ => Tls::Opportunistic(params),
            });
        }
        if let Some((user, password)) = &self.login {
            b = b.credentials(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ));
        }
        Ok(b.build())
    }

    fn tls_parameters(&self) -> Result<TlsParameters, String> {
        let mut b = TlsParameters::builder(self.host.clone());
        for der in &self.extra_roots {
            let cert =
                Certificate::from_der(der.clone()).map_err(|e| format!("tls_ca_file: {e}"))?;
            b = b.add_root_certificate(cert);
        }
        b.build_rustls()
            .map_err(|e| format!("cannot set up TLS: {e}"))
    }

    fn message(&self, items: &[Item], dir: &Directory) -> Result<Message, String> {
        let domain = self.from.email.domain();
        let t = thread(items, domain);
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(subject(items))
            .message_id(Some(t.id))
            .header(ContentType::TEXT_PLAIN)
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".into(),
            ));
        for to in &self.to {
            b = b.to(to.clone());
        }
        if let Some(first) = t.references.first() {
            b = b
                .in_reply_to(first.clone())
                .references(t.references.join(" "));
        }
        b.body(body(items, dir)).map_err(|e| e.to_string())
    }
}

/// "SMTP 550 5.1.1 <x@example.com>: Recipient address rejected" for a
/// reply; otherwise what went wrong ("Connection error: Connection
/// refused", "STARTTLS is not supported on this server").
fn smtp_error(e: &lettre::transport::smtp::Error) -> String {
    use std::error::Error as _;
    match (e.status(), e.source()) {
        (Some(code), Some(text)) => format!("SMTP {code} {text}"),
        (Some(code), None) => format!("SMTP {code}"),
        // lettre calls the server's refusals it finds itself "internal".
        (None, Some(text)) if e.is_client() => text.to_string(),
        _ => e.to_string(),
    }
}

/// "[connwatch] …" on one line.
fn subject(items: &[Item]) -> String {
    let gist: String = chat::headline(items)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("[connwatch] {gist}")
}

/// The lines, then a paragraph per event.
fn body(items: &[Item], dir: &Directory) -> String {
    let mut out = String::new();
    for l in chat::lines(items) {
        out.push_str(&l.text);
        out.push('\n');
    }
    let rows = chat::rows(items);
    for r in rows.iter().take(MAX_DETAILS) {
        out.push('\n');
        out.push_str(&paragraph(r, dir));
    }
    if rows.len() > MAX_DETAILS {
        out.push_str(&format!("\n… and {} more\n", rows.len() - MAX_DETAILS));
    }
    out.push_str("\n-- \nconnwatch");
    if let Some(page) = dir.page() {
        out.push_str(&format!(" · {page}"));
    }
    out.push('\n');
    out
}

/// sap-prod (SAP S/4HANA production)
///   online → offline at 2026-12-02T10:00:00.000Z
///   HTTP 503
///   https://connwatch.example.com/#conn-sap-prod
fn paragraph(r: &Row, dir: &Directory) -> String {
    let id = r.id.as_deref().unwrap_or("connwatch");
    let mut p = match r.id.as_deref().and_then(|i| dir.name(i)) {
        Some(name) => format!("{id} ({name})\n"),
        None => format!("{id}\n"),
    };
    p.push_str(&format!("  {} at {}\n", r.what, r.at));
    if let Some(d) = &r.detail {
        p.push_str(&format!("  {}\n", one_line(d)));
    }
    if let Some(link) = r.id.as_deref().and_then(|i| dir.link(i)) {
        p.push_str(&format!("  {link}\n"));
    }
    p
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A message's place in its threads.
#[derive(Debug, PartialEq, Eq)]
struct Thread {
    /// Its `Message-ID`, with angle brackets.
    id: String,
    /// The outages it follows up, oldest reference first.
    references: Vec<String>,
}

/// The message that opens an outage takes the outage's id; the others are
/// known by their first event, and refer to the outages they follow up.
fn thread(items: &[Item], domain: &str) -> Thread {
    let mut own = None;
    let mut references: Vec<String> = Vec::new();
    for it in items {
        let Some(outage) = outage_id(it, domain) else {
            continue;
        };
        if opens_outage(it) {
            // Others opened in the same message are not follow-ups: naming
            // them would make this message a reply to messages that never
            // were.
            own.get_or_insert(outage);
        } else if !references.contains(&outage) && references.len() < MAX_REFERENCES {
            references.push(outage);
        }
    }
    let id = own.unwrap_or_else(|| {
        let first = &items[0];
        match first.out.envelope["data"]["reminder"].as_u64() {
            Some(n) => format!("<{}.r{n}@{domain}>", first.out.id),
            None => format!("<{}@{domain}>", first.out.id),
        }
    });
    references.retain(|r| *r != id);
    Thread { id, references }
}

/// `<outage.{id}.{start}@{domain}>` for an event of an outage.
fn outage_id(it: &Item, domain: &str) -> Option<String> {
    if it.out.event_kind() != Some(EventKind::StatusChanged) {
        return None;
    }
    let started = it.out.envelope["data"]["outage_started_at"].as_str()?;
    let conn = it.out.connection_id.as_deref()?;
    // Ids are [A-Za-z0-9_.-]; `=` stands for a dot (`..` is no dot-atom).
    let conn = conn.replace('.', "=");
    let stamp: String = started
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    Some(format!("<outage.{conn}.{stamp}@{domain}>"))
}

/// The first trigger of an outage (not a reminder of it).
fn opens_outage(it: &Item) -> bool {
    let e = &it.out.envelope;
    !e["data"]["reminder"].is_u64()
        && e["data"]["outage_started_at"].is_string()
        && e["data"]["outage_started_at"] == e["timestamp"]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Outgoing;
    use serde_json::json;

    fn change(id: &str, at: &str, previous: &str, current: &str, started: Option<&str>) -> Item {
        let envelope = json!({"type": "connection.status_changed", "connection_id": id,
            "id": format!("evt_{id}_{current}"), "timestamp": at,
            "data": {"previous": previous, "current": current, "outage_started_at": started,
                     "error": if current == "online" { json!(null) } else { json!({"message": "HTTP 503"}) }}});
        Item {
            out: Outgoing {
                id: format!("evt_{id}_{current}"),
                kind: "connection.status_changed".into(),
                connection_id: Some(id.into()),
                body: String::new(),
                envelope,
            },
            action: None,
        }
    }

    const T0: &str = "2026-12-02T10:00:00.000Z";
    const T1: &str = "2026-12-02T10:05:00.000Z";

    #[test]
    fn a_resolve_threads_under_its_trigger() {
        let trigger = thread(
            &[change("sap.prod", T0, "online", "offline", Some(T0))],
            "ex.com",
        );
        assert_eq!(trigger.id, "<outage.sap=prod.20261202T100000000Z@ex.com>");
        assert!(trigger.references.is_empty());
        let resolve = thread(
            &[change("sap.prod", T1, "offline", "online", Some(T0))],
            "ex.com",
        );
        assert_eq!(resolve.id, "<evt_sap.prod_online@ex.com>");
        assert_eq!(resolve.references, std::slice::from_ref(&trigger.id));
        // A reminder is a copy of the trigger: its own id, in the thread.
        let mut reminder = change("sap.prod", T0, "online", "offline", Some(T0));
        reminder.out.envelope["data"]["reminder"] = json!(2);
        let r = thread(&[reminder], "ex.com");
        assert_eq!(r.id, "<evt_sap.prod_offline.r2@ex.com>");
        assert_eq!(r.references, [trigger.id]);
    }

    #[test]
    fn a_storm_message_is_known_by_its_first_outage_and_its_resolve_follows_it() {
        let opened: Vec<Item> = ["a", "b", "c"]
            .iter()
            .map(|id| change(id, T0, "online", "offline", Some(T0)))
            .collect();
        let t = thread(&opened, "ex.com");
        assert_eq!(t.id, "<outage.a.20261202T100000000Z@ex.com>");
        // The others opened here are not follow-ups of anything.
        assert!(t.references.is_empty());
        let closed: Vec<Item> = ["a", "b", "c"]
            .iter()
            .map(|id| change(id, T1, "offline", "online", Some(T0)))
            .collect();
        let r = thread(&closed, "ex.com");
        assert_eq!(r.references[0], t.id);
        assert_eq!(r.references.len(), 3);
        // Without outages (a test event, a sync), the first event names it.
        let stale = Item {
            out: Outgoing {
                id: "evt_9".into(),
                kind: "sync.stale".into(),
                connection_id: Some("erp".into()),
                body: String::new(),
                envelope: json!({"type": "sync.stale", "timestamp": T0, "data": {}}),
            },
            action: None,
        };
        assert_eq!(thread(&[stale], "ex.com").id, "<evt_9@ex.com>");
    }

    #[test]
    fn the_body_has_the_lines_then_a_paragraph_per_event() {
        let dir = Directory {
            names: [("sap".to_string(), "SAP S/4HANA".to_string())].into(),
            public_url: Some(url::Url::parse("https://cw.example/").unwrap()),
        };
        let items = [
            change("sap", T0, "online", "offline", Some(T0)),
            change("mes", T0, "online", "offline", Some(T0)),
        ];
        assert_eq!(
            subject(&items),
            "[connwatch] 2 connections went offline: sap, mes"
        );
        assert_eq!(
            body(&items, &dir),
            "2 connections went offline: sap, mes\n\
             \n\
             sap (SAP S/4HANA)\n  online → offline at 2026-12-02T10:00:00.000Z\n  HTTP 503\n  https://cw.example/#conn-sap\n\
             \n\
             mes\n  online → offline at 2026-12-02T10:00:00.000Z\n  HTTP 503\n  https://cw.example/#conn-mes\n\
             \n-- \nconnwatch · https://cw.example/\n"
        );
    }
}
