//! Raw file -> validated [`Config`]: defaults applied, `${VAR}` expanded,
//! every value checked. Collects all problems, each at its value's position.

use super::error::{ConfigError, ConfigErrors, Locator};
use super::raw::{ByteSize, RawBreaker, RawConfig, RawExpect, RawProbe};
use super::schema::suggest;
use super::section::Section;
use super::*;
use crate::event::EventFilter;
use std::collections::{BTreeMap, HashSet};

pub(super) struct Ctx<'a> {
    loc: &'a Locator<'a>,
    env: &'a dyn Fn(&str) -> Option<String>,
    base_dir: PathBuf,
    /// Each problem at its key path; placed in the file by [`Ctx::finish`].
    pub(super) errors: Vec<(String, String)>,
    /// Distinct `expect` tables seen so far: equal ones share one copy
    /// (10,000 connections with the default cost one, not 10,000).
    expects: Vec<Arc<Expect>>,
    /// TLS files (or cert + key pairs) already read and parsed as PEM.
    pem_ok: HashSet<(PathBuf, Option<PathBuf>)>,
}

impl Ctx<'_> {
    /// `e`, or an equal copy already made. At most 16 distinct tables are
    /// kept for sharing; the rest are stored on their own.
    fn shared_expect(&mut self, e: Expect) -> Arc<Expect> {
        if let Some(same) = self.expects.iter().find(|s| ***s == e) {
            return same.clone();
        }
        let e = Arc::new(e);
        if self.expects.len() < 16 {
            self.expects.push(e.clone());
        }
        e
    }

    /// Whether `file` is usable PEM: a CA bundle, or with `key` a client
    /// certificate and its key. Each file (pair) is parsed once per load.
    fn pem(&mut self, file: PathBuf, key: Option<PathBuf>, at: &str) -> bool {
        let id = (file, key);
        if self.pem_ok.contains(&id) {
            return true;
        }
        let checked = match &id {
            (ca, None) => read_ca_bundle(ca).map(|_| ()),
            (cert, Some(key)) => read_identity(cert, key).map(|_| ()),
        };
        match checked {
            Err(e) => {
                self.err(at, e.to_string());
                false
            }
            Ok(()) => {
                self.pem_ok.insert(id);
                true
            }
        }
    }

    pub(super) fn err(&mut self, path: &str, msg: impl Into<String>) {
        self.errors.push((path.to_string(), msg.into()));
    }

    /// The problems, each at its position and naming its entry by id
    /// (the spans are worked out only now, and only if there is one).
    fn finish(self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            return Ok(());
        }
        let spans = super::spans(self.loc);
        let mut errors: Vec<ConfigError> = self
            .errors
            .into_iter()
            .map(|(path, msg)| {
                self.loc
                    .error(spans.of(&path), format!("{}: {msg}", spans.display(&path)))
            })
            .collect();
        errors.sort_by_key(|e| (e.line, e.column));
        errors.dedup();
        Err(ConfigErrors(errors))
    }

    /// `${VAR}`-expanded string.
    pub(super) fn string(&mut self, s: &str, path: &str) -> Option<String> {
        match env::expand(s, self.env) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    fn duration(&mut self, s: &str, path: &str) -> Option<Duration> {
        let s = self.string(s, path)?;
        match parse_duration(&s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    /// A duration within `[min, max]`.
    pub(super) fn duration_in(
        &mut self,
        s: &str,
        path: &str,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let d = self.duration(s, path)?;
        if d < min || d > max {
            self.err(
                path,
                format!(
                    "{} is out of range ({} to {})",
                    format_duration(d),
                    format_duration(min),
                    format_duration(max)
                ),
            );
            return None;
        }
        Some(d)
    }

    pub(super) fn int_in(&mut self, v: i64, path: &str, min: i64, max: i64) -> Option<i64> {
        if v < min || v > max {
            self.err(path, format!("{v} is out of range ({min} to {max})"));
            None
        } else {
            Some(v)
        }
    }

    /// A file path, expanded, relative paths resolved against the config's folder.
    pub(super) fn file_path(&mut self, s: &str, path: &str) -> Option<PathBuf> {
        let s = self.string(s, path)?;
        if s.is_empty() {
            self.err(path, "empty path");
            return None;
        }
        let p = PathBuf::from(s);
        Some(if p.is_absolute() {
            p
        } else {
            self.base_dir.join(p)
        })
    }

    /// A secret given inline (`key`, `${VAR}` expanded) or read from a file
    /// (`key_file`: the path is expanded, so `${CREDENTIALS_DIRECTORY}`
    /// works; the contents are taken as they are, never expanded, with
    /// trailing whitespace trimmed). `Err(())` when an error was recorded.
    pub(super) fn secret_source(
        &mut self,
        inline: Option<&str>,
        file: Option<&str>,
        path: &str,
    ) -> Result<Option<String>, ()> {
        let fpath = format!("{path}_file");
        match (inline, file) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => {
                self.err(
                    &fpath,
                    format!(
                        "set either `{}` or `{}_file`, not both",
                        leaf_of(path),
                        leaf_of(path)
                    ),
                );
                Err(())
            }
            (Some(s), None) => self.string(s, path).map(Some).ok_or(()),
            (None, Some(f)) => {
                let p = self.file_path(f, &fpath).ok_or(())?;
                match std::fs::read(&p) {
                    Ok(bytes) => match String::from_utf8(bytes) {
                        Ok(s) => {
                            let s = s.trim_end().to_string();
                            if s.is_empty() {
                                self.err(&fpath, format!("{} is empty", p.display()));
                                return Err(());
                            }
                            Ok(Some(s))
                        }
                        Err(_) => {
                            self.err(&fpath, format!("{} is not UTF-8 text", p.display()));
                            Err(())
                        }
                    },
                    Err(e) => {
                        self.err(&fpath, format!("cannot read {}: {e}", p.display()));
                        Err(())
                    }
                }
            }
        }
    }

    fn existing_file(&mut self, s: &str, path: &str) -> Option<PathBuf> {
        let p = self.file_path(s, path)?;
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => Some(p),
            Ok(_) => {
                self.err(path, format!("{} is not a file", p.display()));
                None
            }
            Err(e) => {
                self.err(path, format!("cannot read {}: {e}", p.display()));
                None
            }
        }
    }

    pub(super) fn url(&mut self, s: &str, path: &str) -> Option<Url> {
        let s = self.string(s, path)?;
        match Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(u) => {
                self.err(
                    path,
                    format!(
                        "URL {} must be http:// or https:// with a host",
                        redact_url(&u)
                    ),
                );
                None
            }
            // The text may hold a secret: name the problem, not the value.
            Err(e) => {
                self.err(path, format!("invalid URL ({e})"));
                None
            }
        }
    }

    fn socket_addr(&mut self, s: &str, path: &str) -> Option<SocketAddr> {
        let s = self.string(s, path)?;
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    path,
                    format!("{s:?} is not an address like \"127.0.0.1:9185\""),
                );
                None
            }
        }
    }

    fn cron(&mut self, s: &str, path: &str) -> Option<String> {
        let s = self.string(s, path)?;
        match check_cron(&s) {
            Ok(()) => Some(s),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    pub(super) fn headers(
        &mut self,
        map: &BTreeMap<String, String>,
        path: &str,
    ) -> Vec<(String, Secret)> {
        let mut out = Vec::new();
        for (name, value) in map {
            let p = format!("{path}.{name}");
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.err(&p, format!("{name:?} is not a valid HTTP header name"));
                continue;
            }
            let Some(v) = self.string(value, &p) else {
                continue;
            };
            if reqwest::header::HeaderValue::from_str(&v).is_err() {
                // Never echo the value: it is a secret.
                self.err(&p, "header value has characters HTTP does not allow (control characters or newlines)");
                continue;
            }
            out.push((name.clone(), Secret::new(v)));
        }
        out
    }

    pub(super) fn event_filter(&mut self, list: &[String], path: &str) -> EventFilter {
        let mut ok = Vec::with_capacity(list.len());
        for (i, e) in list.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let Some(e) = self.string(e, &p) else {
                continue;
            };
            match EventFilter::parse(&[&e]) {
                Ok(_) => ok.push(e),
                Err(_) => {
                    let hint = match EventFilter::nearest(&e) {
                        Some(n) => format!("did you mean {n:?}?"),
                        None => "use a type such as \"connection.status_changed\", a family such as \"circuit.*\", or \"*\"".into(),
                    };
                    self.err(&p, format!("unknown event type {e:?}; {hint}"))
                }
            }
        }
        EventFilter::parse(&ok).unwrap_or_default()
    }

    pub(super) fn id(&mut self, id: Option<&String>, path: &str, what: &str) -> Option<String> {
        let Some(id) = id else {
            self.err(path, format!("{what} needs an `id`"));
            return None;
        };
        let idp = format!("{path}.id");
        let id = self.string(id, &idp)?;
        if valid_id(&id) {
            Some(id)
        } else {
            self.err(
                &idp,
                format!("id {id:?} must be 1 to 64 characters of A-Z a-z 0-9 _ . -"),
            );
            None
        }
    }
}

/// `[A-Za-z0-9_.-]{1,64}`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A cron expression as tokio-cron-scheduler reads it: exactly 6 fields,
/// seconds first.
pub fn check_cron(expr: &str) -> Result<(), String> {
    let n = expr.split_whitespace().count();
    if n != 6 {
        return Err(format!(
            "cron expression {expr:?} has {n} fields; connwatch wants 6, seconds first (e.g. \"0 */5 * * * *\")"
        ));
    }
    // croner reads an empty list item ("," or "1,,2") as matching nothing:
    // the schedule would never fire, and finding its next time searches
    // thousands of years (seconds to minutes of CPU).
    if let Some(f) = expr
        .split_whitespace()
        .find(|f| f.split(',').any(str::is_empty))
    {
        return Err(format!(
            "invalid cron expression {expr:?}: field {f:?} has an empty list item"
        ));
    }
    let cron = croner::Cron::new(expr)
        .with_seconds_required()
        .with_dom_and_dow()
        .parse()
        .map_err(|e| format!("invalid cron expression {expr:?}: {e}"))?;
    // A date that never occurs (31 February) would leave the connection
    // unprobed, or the window never open, without a word; and every look
    // for its next time searches thousands of years.
    cron.find_next_occurrence(&chrono::Utc::now(), false)
        .map(|_| ())
        .map_err(|_| format!("cron expression {expr:?} never fires: no date matches it"))
}

fn parse_byte_size(v: &ByteSize) -> Result<usize, String> {
    let n: i64 = match v {
        ByteSize::Bytes(n) => *n,
        ByteSize::Text(t) => {
            let t = t.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let num: i64 = num
                .parse()
                .map_err(|_| format!("{t:?} is not a size like \"64KiB\""))?;
            let mult = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "kib" | "kb" | "k" => 1024,
                "mib" | "mb" | "m" => 1024 * 1024,
                other => return Err(format!("unknown size unit {other:?}; use B, KiB or MiB")),
            };
            num.saturating_mul(mult)
        }
    };
    if n < 1 || n as u128 > MAX_MAX_BODY as u128 {
        return Err(format!("{n} bytes is out of range (1 to {MAX_MAX_BODY})"));
    }
    Ok(n as usize)
}

/// Connection value if set, else the default; with the path it came from.
fn pick<'a, T>(
    c: &'a Option<T>,
    d: Option<&'a Option<T>>,
    cp: &str,
    dp: &str,
    key: &str,
) -> Option<(&'a T, String)> {
    if let Some(v) = c {
        return Some((v, format!("{cp}.{key}")));
    }
    d.and_then(|d| d.as_ref())
        .map(|v| (v, format!("{dp}.{key}")))
}

pub(super) fn validate(
    mut raw: RawConfig,
    path: &Path,
    loc: &Locator<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut cx = Ctx {
        loc,
        env,
        base_dir,
        errors: Vec::new(),
        expects: Vec::new(),
        pem_ok: HashSet::new(),
    };

    let daemon = daemon(&mut cx, raw.daemon.unwrap_or_default(), true);
    let sinks = sinks(&mut cx, &raw.sink);
    // Every entry with an id is declared, even one whose other keys are
    // wrong: a reference to it is not a second error.
    let mut sink_ids: Vec<String> = sinks.iter().map(|s| s.id.clone()).collect();
    for id in raw
        .sink
        .iter()
        .filter_map(|t| t.get("id")?.as_str())
        .filter(|id| valid_id(id))
    {
        if !sink_ids.iter().any(|s| s == id) {
            sink_ids.push(id.to_string());
        }
    }
    let defaults = raw.defaults.unwrap_or_default();
    if defaults.scope.is_some() {
        cx.err(
            "defaults.scope",
            "scopes are one connection's operations (their URLs name it): put each \
             [[connection.scope]] under its [[connection]]",
        );
    }
    // Each entry is validated and dropped in turn, so the file's entries
    // and the validated connections never all coexist (the load's peak
    // memory at 100,000 connections).
    let mut connections = Vec::with_capacity(raw.connection.len());
    let mut seen = HashSet::new();
    // Ids of entries that failed (a reference to one is not a second
    // error), and where each dependency was written.
    let mut failed_ids: Vec<String> = Vec::new();
    let mut depends: Vec<(usize, usize, bool)> = Vec::new();
    for (i, c) in std::mem::take(&mut raw.connection).into_iter().enumerate() {
        let cp = format!("connection[{i}]");
        match connection(&mut cx, &c, &defaults, &cp, &sink_ids) {
            Some(conn) => {
                if !seen.insert(conn.id.clone()) {
                    cx.err(
                        &format!("{cp}.id"),
                        format!("duplicate connection id {:?}", conn.id),
                    );
                    continue;
                }
                if conn.depends_on.is_some() {
                    depends.push((connections.len(), i, c.depends_on.is_some()));
                }
                connections.push(std::sync::Arc::new(conn));
            }
            None => failed_ids.extend(c.id.clone()),
        }
    }
    let conn_ids: HashSet<&str> = connections
        .iter()
        .map(|c| c.id.as_str())
        .chain(failed_ids.iter().map(String::as_str))
        .collect();
    let no_connection = |id: &str| match suggest(id, conn_ids.iter().copied()) {
        Some(near) => format!("no connection with id {id:?}; did you mean {near:?}?"),
        None => format!("no connection with id {id:?}"),
    };
    // id -> parent id: lookups by map, so 10,000 connections load in linear time.
    let parent_of: std::collections::HashMap<&str, &str> = connections
        .iter()
        .filter_map(|k| Some((k.id.as_str(), k.depends_on.as_deref()?)))
        .collect();
    for &(k, i, local) in &depends {
        let c = &connections[k];
        let Some(parent) = c.depends_on.clone() else {
            continue;
        };
        let at = if local {
            format!("connection[{i}].depends_on")
        } else {
            "defaults.depends_on".into()
        };
        if !conn_ids.contains(parent.as_str()) {
            cx.err(&at, no_connection(&parent));
        } else if c.id == parent {
            cx.err(&at, "a connection cannot depend on itself");
        } else {
            // Follow the chain: a cycle would pause its members forever.
            let mut seen = vec![c.id.clone()];
            let mut cur = Some(parent);
            while let Some(p) = cur {
                if seen.contains(&p) {
                    cx.err(
                        &at,
                        format!("dependency cycle: {} -> {p}", seen.join(" -> ")),
                    );
                    break;
                }
                cur = parent_of.get(p.as_str()).map(|s| s.to_string());
                seen.push(p);
            }
        }
    }
    let mut maintenance = Vec::new();
    for (i, m) in raw.maintenance.iter().enumerate() {
        let mp = format!("maintenance[{i}]");
        let schedule = match &m.schedule {
            Some(s) => cx.cron(s, &format!("{mp}.schedule")),
            None => {
                cx.err(
                    &mp,
                    "a maintenance window needs a `schedule` (cron, seconds first)",
                );
                None
            }
        };
        let duration = match &m.duration {
            Some(s) => cx.duration_in(
                s,
                &format!("{mp}.duration"),
                Duration::from_secs(1),
                Duration::from_secs(7 * 86_400),
            ),
            None => {
                cx.err(&mp, "a maintenance window needs a `duration`");
                None
            }
        };
        let mut names = None;
        if let Some(list) = &m.connections {
            let mut v = Vec::new();
            for (j, id) in list.iter().enumerate() {
                let p = format!("{mp}.connections[{j}]");
                let Some(id) = cx.string(id, &p) else {
                    continue;
                };
                if conn_ids.contains(id.as_str()) {
                    v.push(id);
                } else {
                    cx.err(&p, no_connection(&id));
                }
            }
            names = Some(v);
        }
        if let (Some(schedule), Some(duration)) = (schedule, duration) {
            maintenance.push(Maintenance {
                connections: names,
                schedule,
                duration,
            });
        }
    }
    let discovery = discoveries(&mut cx, &raw.discovery, &defaults, &sink_ids, &conn_ids);
    let sandbox = raw.sandbox.map(|s| {
        let listen = s
            .listen
            .as_ref()
            .and_then(|l| cx.socket_addr(l, "sandbox.listen"))
            .unwrap_or_else(|| DEFAULT_SANDBOX_LISTEN.parse().expect("constant address"));
        if !listen.ip().is_loopback() {
            cx.err(
                "sandbox.listen",
                "the sandbox serves on loopback only (127.0.0.0/8 or ::1)",
            );
        }
        let webhook_secret = cx
            .secret_source(
                s.webhook_secret.as_deref(),
                s.webhook_secret_file.as_deref(),
                "sandbox.webhook_secret",
            )
            .ok()
            .flatten()
            .and_then(|w| match check_whsec(&w) {
                Ok(()) => Some(Secret::new(w)),
                Err(e) => {
                    cx.err("sandbox.webhook_secret", e);
                    None
                }
            });
        Sandbox {
            enabled: s.enabled.unwrap_or(false),
            listen,
            webhook_secret,
        }
    });

    cx.finish()?;
    Ok(Config {
        path: path.to_path_buf(),
        daemon,
        connections,
        sinks,
        maintenance,
        sandbox,
        discovery,
    })
}

/// Every `[[discovery]]` source, its template checked as a connection
/// would be (over `[defaults]`, with a sample id).
fn discoveries(
    cx: &mut Ctx<'_>,
    raw: &[raw::RawDiscovery],
    defaults: &RawProbe,
    sink_ids: &[String],
    conn_ids: &HashSet<&str>,
) -> Vec<Arc<Discovery>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, d) in raw.iter().enumerate() {
        let dp = format!("discovery[{i}]");
        let id = cx.id(d.id.as_ref(), &dp, "every [[discovery]]");
        if let Some(id) = &id {
            if !seen.insert(id.clone()) {
                cx.err(
                    &format!("{dp}.id"),
                    format!("duplicate discovery id {id:?}"),
                );
            }
        }
        let list_only = |cx: &mut Ctx<'_>, key: &str, v: &Option<String>, fmt: &str| {
            if v.is_some() {
                cx.err(
                    &format!("{dp}.{key}"),
                    format!("`{key}` belongs to the list format, not {fmt}"),
                );
            }
        };
        let pointer = |cx: &mut Ctx<'_>, key: &str, v: &Option<String>, default: &str| {
            let p = v.clone().unwrap_or_else(|| default.to_string());
            if !p.is_empty() && !p.starts_with('/') {
                cx.err(
                    &format!("{dp}.{key}"),
                    format!("{p:?} is not a JSON pointer (\"\" or starting with \"/\")"),
                );
                return None;
            }
            Some(p)
        };
        let format = match d.format.as_deref() {
            None | Some("list") => {
                let items = pointer(cx, "items", &d.items, "");
                let idp = pointer(cx, "id_pointer", &d.id_pointer, "/id");
                let name = match &d.name_pointer {
                    Some(_) => pointer(cx, "name_pointer", &d.name_pointer, "").map(Some),
                    None => Some(None),
                };
                match (items, idp, name) {
                    (Some(items), Some(id_pointer), Some(name_pointer)) => {
                        Some(DiscoveryFormat::List {
                            items,
                            id_pointer,
                            name_pointer,
                        })
                    }
                    _ => None,
                }
            }
            Some(f @ ("http_sd" | "file")) => {
                list_only(cx, "items", &d.items, f);
                list_only(cx, "id_pointer", &d.id_pointer, f);
                list_only(cx, "name_pointer", &d.name_pointer, f);
                Some(if f == "file" {
                    DiscoveryFormat::File
                } else {
                    DiscoveryFormat::HttpSd
                })
            }
            Some(other) => {
                cx.err(
                    &format!("{dp}.format"),
                    format!("{other:?} is not one of \"list\", \"http_sd\", \"file\""),
                );
                None
            }
        };
        let source = match (&format, &d.url, &d.path) {
            (Some(DiscoveryFormat::File), None, Some(p)) => cx
                .file_path(p, &format!("{dp}.path"))
                .map(DiscoverySource::File),
            (Some(DiscoveryFormat::File), _, None) => {
                cx.err(&dp, "a file source needs a `path` (the http_sd JSON file)");
                None
            }
            (Some(DiscoveryFormat::File), Some(_), Some(_)) => {
                cx.err(
                    &format!("{dp}.url"),
                    "a file source reads `path`; remove `url`",
                );
                None
            }
            (Some(_), Some(u), None) => {
                let url = cx.url(u, &format!("{dp}.url"));
                let headers = d
                    .headers
                    .as_ref()
                    .map(|h| cx.headers(h, &format!("{dp}.headers")))
                    .unwrap_or_default();
                let tls_keys = RawProbe {
                    tls_ca_file: d.tls_ca_file.clone(),
                    tls_client_cert: d.tls_client_cert.clone(),
                    tls_client_key: d.tls_client_key.clone(),
                    tls_insecure: d.tls_insecure,
                    ..RawProbe::default()
                };
                let tls = tls(cx, &tls_keys, &RawProbe::default(), &dp);
                let timeout = d
                    .timeout
                    .as_ref()
                    .map(|t| {
                        cx.duration_in(
                            t,
                            &format!("{dp}.timeout"),
                            Duration::from_millis(1),
                            Duration::from_secs(600),
                        )
                    })
                    .unwrap_or(Some(DEFAULT_TIMEOUT));
                match (url, tls, timeout) {
                    (Some(url), Some(tls), Some(timeout)) => Some(DiscoverySource::Http {
                        url,
                        headers,
                        tls,
                        timeout,
                    }),
                    _ => None,
                }
            }
            (Some(_), None, _) => {
                cx.err(&dp, "a list or http_sd source needs a `url`");
                None
            }
            (Some(f), Some(_), Some(_)) => {
                let _ = f;
                cx.err(
                    &format!("{dp}.path"),
                    "`path` is for the file format; this source reads `url`",
                );
                None
            }
            (None, _, _) => None,
        };
        if matches!(source, Some(DiscoverySource::File(_))) {
            for (key, set) in [
                ("headers", d.headers.is_some()),
                ("timeout", d.timeout.is_some()),
                ("tls_ca_file", d.tls_ca_file.is_some()),
                ("tls_client_cert", d.tls_client_cert.is_some()),
                ("tls_client_key", d.tls_client_key.is_some()),
                ("tls_insecure", d.tls_insecure.is_some()),
            ] {
                if set {
                    cx.err(
                        &format!("{dp}.{key}"),
                        format!("`{key}` is for sources read over HTTP, not a file"),
                    );
                }
            }
        }
        let refresh = d
            .refresh
            .as_ref()
            .map(|r| {
                cx.duration_in(
                    r,
                    &format!("{dp}.refresh"),
                    Duration::from_secs(1),
                    Duration::from_secs(86_400),
                )
            })
            .unwrap_or(Some(DEFAULT_DISCOVERY_REFRESH));
        let sp = format!("{dp}.status_url");
        let status_url = match &d.status_url {
            None => {
                cx.err(
                    &dp,
                    "every [[discovery]] needs a `status_url` (with {id}, e.g. \"https://platform/api/v1/connections/{id}/status\")",
                );
                None
            }
            Some(u) => cx.string(u, &sp).and_then(|u| {
                let f = format.as_ref()?;
                match crate::discovery::item::check_template(&u, f) {
                    Ok(()) => Some(u),
                    Err(e) => {
                        cx.err(&sp, e);
                        None
                    }
                }
            }),
        };
        // The template, checked as a connection with a sample item.
        let sample = crate::discovery::Item {
            id: "sample".into(),
            name: None,
            target: Some("sample.invalid:443".into()),
            labels: Default::default(),
        };
        let mut sample_url = None;
        if let Some(u) = &status_url {
            match crate::discovery::item::fill(u, &sample)
                .ok()
                .filter(|u| u.find("{label:").is_none())
            {
                Some(filled) => match Url::parse(&filled) {
                    Ok(x) if matches!(x.scheme(), "http" | "https") && x.host().is_some() => {
                        sample_url = Some(filled)
                    }
                    _ => cx.err(&sp, "not an http:// or https:// URL with a host once its placeholders are filled"),
                },
                // Labels the sample lacks: checked per item at run time.
                None => sample_url = Some("https://sample.invalid/".into()),
            }
        }
        let tp = format!("{dp}.template");
        let mut template = d.template.clone().unwrap_or_default();
        let mut scope_urls = Vec::new();
        if let Some(scopes) = template.scope.as_mut() {
            for (j, s) in scopes.iter_mut().enumerate() {
                let Some(u) = s.url.clone() else { continue };
                let up = format!("{tp}.scope[{j}].url");
                let Some(u) = cx.string(&u, &up) else {
                    continue;
                };
                if let Some(f) = &format {
                    if let Err(e) = crate::discovery::item::check_template(&u, f) {
                        cx.err(&up, e);
                        continue;
                    }
                }
                if let Some(sid) = &s.id {
                    scope_urls.push((sid.clone(), u.clone()));
                }
                s.url = Some(
                    crate::discovery::item::fill(&u, &sample)
                        .ok()
                        .filter(|u| !u.contains("{label:"))
                        .unwrap_or_else(|| "https://sample.invalid/".into()),
                );
            }
        }
        if let Some(parent) = &template.depends_on {
            if !conn_ids.contains(parent.as_str()) {
                cx.err(
                    &format!("{tp}.depends_on"),
                    format!("no configured connection with id {parent:?} (a template may depend on a connection of the file only)"),
                );
                template.depends_on = None;
            }
        }
        template.id = Some("sample".into());
        template.url = Some(
            sample_url
                .clone()
                .unwrap_or_else(|| "https://sample.invalid/".into()),
        );
        let prototype = connection(cx, &template, defaults, &tp, sink_ids);
        if let (
            Some(id),
            Some(format),
            Some(source),
            Some(refresh),
            Some(status_url),
            Some(_),
            Some(prototype),
        ) = (
            id, format, source, refresh, status_url, sample_url, prototype,
        ) {
            out.push(Arc::new(Discovery {
                id,
                format,
                source,
                status_url,
                scope_urls,
                refresh,
                prototype,
            }));
        }
    }
    out
}

/// Only `[daemon]`, with the admin token or not; see
/// [`Config::load_daemon`] and [`Config::load_admin`].
pub(super) fn validate_daemon(
    raw: RawConfig,
    path: &Path,
    loc: &Locator<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    token: bool,
) -> Result<Daemon, ConfigErrors> {
    let mut cx = Ctx {
        loc,
        env,
        base_dir: base_dir(path),
        errors: Vec::new(),
        expects: Vec::new(),
        pem_ok: HashSet::new(),
    };
    let d = daemon(&mut cx, raw.daemon.unwrap_or_default(), token);
    cx.finish()?;
    Ok(d)
}

/// The host name (the default `[daemon] instance`), cut to a valid id.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let raw = if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let id = crate::discovery::item::id_of_target(raw.trim());
    if id.is_empty() {
        "connwatch".into()
    } else {
        id
    }
}

fn base_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `whsec_` followed by base64 (Standard Webhooks).
pub fn check_whsec(s: &str) -> Result<(), String> {
    use base64::Engine;
    let Some(b64) = s.strip_prefix("whsec_") else {
        return Err("webhook secrets look like whsec_<base64>".into());
    };
    match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(bytes) if !bytes.is_empty() => Ok(()),
        _ => Err("the part after whsec_ must be non-empty base64".into()),
    }
}

/// The last dotted part of a key path (`sink[0].secret` -> `secret`).
fn leaf_of(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// `[daemon]`; with `secrets` false the admin token is not read (the
/// read-only commands run from shells without the daemon's secrets).
fn daemon(cx: &mut Ctx<'_>, d: raw::RawDaemon, secrets: bool) -> Daemon {
    let database = d
        .database
        .as_ref()
        .and_then(|s| cx.file_path(s, "daemon.database"))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATABASE));
    let audit_log = d
        .audit_log
        .as_ref()
        .and_then(|s| cx.file_path(s, "daemon.audit_log"));
    let listen = d
        .listen
        .as_ref()
        .and_then(|s| cx.socket_addr(s, "daemon.listen"));
    let admin_token = if secrets {
        cx.secret_source(
            d.admin_token.as_deref(),
            d.admin_token_file.as_deref(),
            "daemon.admin_token",
        )
        .ok()
        .flatten()
    } else {
        None
    };
    let admin_token = admin_token.and_then(|t| {
        if t.chars().count() < 16 {
            cx.err(
                "daemon.admin_token",
                "too short: use at least 16 characters (e.g. `openssl rand -hex 32`)",
            );
            None
        } else if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            // A client cannot send it back intact in a header.
            cx.err(
                "daemon.admin_token",
                "must not contain spaces or control characters (e.g. `openssl rand -hex 32`)",
            );
            None
        } else {
            Some(Secret::new(t))
        }
    });
    if let (Some(l), true) = (listen, secrets) {
        if !l.ip().is_loopback() && admin_token.is_none() {
            cx.err(
                "daemon.listen",
                format!("{l} is not a loopback address: set `admin_token` (or `admin_token_file`) to serve the admin API beyond this host"),
            );
        }
    }
    let retention = d
        .retention
        .as_ref()
        .and_then(|s| {
            cx.duration_in(
                s,
                "daemon.retention",
                Duration::from_secs(3600),
                Duration::from_secs(3650 * 86_400),
            )
        })
        .unwrap_or(DEFAULT_RETENTION);
    let max_concurrent_probes = d
        .max_concurrent_probes
        .and_then(|n| cx.int_in(n, "daemon.max_concurrent_probes", 1, 100_000))
        .map(|n| n as usize)
        .unwrap_or(DEFAULT_MAX_CONCURRENT_PROBES);
    let log_format = match d.log_format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            cx.err(
                "daemon.log_format",
                format!("{other:?} is not one of \"text\", \"json\""),
            );
            LogFormat::Text
        }
    };
    let log_level = match &d.log_level {
        None => "info".to_string(),
        // Levels and targets only: the filter syntax also takes span-field
        // regexes, which can cost exponential time and memory to build.
        Some(l)
            if !l
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_:=,.-".contains(c)) =>
        {
            cx.err(
                "daemon.log_level",
                format!(
                    "invalid log level {l:?}: only levels and targets are allowed \
                     (letters, digits and `_ : = , . -`); e.g. \"info\" or \"connwatch=debug\""
                ),
            );
            "info".into()
        }
        Some(l) => match tracing_subscriber::EnvFilter::try_new(l) {
            Ok(_) => l.clone(),
            Err(e) => {
                cx.err(
                    "daemon.log_level",
                    format!("invalid log level {l:?} ({e}); e.g. \"info\" or \"connwatch=debug\""),
                );
                "info".into()
            }
        },
    };
    let scheduler_tick = d
        .scheduler_tick
        .as_ref()
        .and_then(|s| {
            cx.duration_in(
                s,
                "daemon.scheduler_tick",
                Duration::from_millis(1),
                Duration::from_secs(1),
            )
        })
        .unwrap_or(DEFAULT_SCHEDULER_TICK);
    let history_flush = d
        .history_flush
        .as_ref()
        .and_then(|s| {
            cx.duration_in(
                s,
                "daemon.history_flush",
                Duration::from_secs(1),
                Duration::from_secs(3600),
            )
        })
        .unwrap_or(DEFAULT_HISTORY_FLUSH);
    let shutdown_timeout = d
        .shutdown_timeout
        .as_ref()
        .and_then(|s| {
            cx.duration_in(
                s,
                "daemon.shutdown_timeout",
                Duration::from_secs(1),
                Duration::from_secs(300),
            )
        })
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
    let public_url = d.public_url.as_ref().and_then(|s| {
        let u = cx.url(s, "daemon.public_url")?;
        if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
            cx.err(
                "daemon.public_url",
                "the status page's address takes no query, fragment or user name \
                 (e.g. \"https://connwatch.example.com/\")",
            );
            return None;
        }
        Some(u)
    });
    let instance = match &d.instance {
        Some(i) => match cx.string(i, "daemon.instance") {
            Some(i) if valid_id(&i) => i,
            Some(i) => {
                cx.err(
                    "daemon.instance",
                    format!("instance {i:?} must be 1 to 64 characters of A-Z a-z 0-9 _ . -"),
                );
                String::new()
            }
            None => String::new(),
        },
        None => host_name(),
    };
    let shard = match &d.shard {
        Some(s) => match cx.string(s, "daemon.shard").map(|s| s.parse::<Shard>()) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                cx.err("daemon.shard", e);
                Shard::default()
            }
            None => Shard::default(),
        },
        None => Shard::default(),
    };
    // The whole URL is a secret (its path names the check): an error
    // never prints it.
    let heartbeat_url = d.heartbeat_url.as_ref().and_then(|s| {
        let s = cx.string(s, "daemon.heartbeat_url")?;
        match Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                Some(Secret::new(u.to_string()))
            }
            _ => {
                cx.err(
                    "daemon.heartbeat_url",
                    "not an http:// or https:// URL with a host (the URL is not shown: it is a secret)",
                );
                None
            }
        }
    });
    let heartbeat_interval = d
        .heartbeat_interval
        .as_ref()
        .and_then(|s| {
            cx.duration_in(
                s,
                "daemon.heartbeat_interval",
                Duration::from_secs(1),
                Duration::from_secs(86_400),
            )
        })
        .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL);
    if d.heartbeat_interval.is_some() && d.heartbeat_url.is_none() {
        cx.err(
            "daemon.heartbeat_interval",
            "set `heartbeat_url` too: the interval is how often that URL is pinged",
        );
    }
    Daemon {
        instance,
        shard,
        heartbeat_url,
        heartbeat_interval,
        database,
        audit_log,
        listen,
        admin_token,
        retention,
        max_concurrent_probes,
        log_format,
        log_level,
        scheduler_tick,
        history_flush,
        shutdown_timeout,
        public_url,
    }
}

fn connection(
    cx: &mut Ctx<'_>,
    c: &RawProbe,
    d: &RawProbe,
    cp: &str,
    sink_ids: &[String],
) -> Option<Connection> {
    let dp = "defaults";
    let id = cx.id(c.id.as_ref(), cp, "every [[connection]]");
    let name = c
        .name
        .as_ref()
        .and_then(|n| cx.string(n, &format!("{cp}.name")));
    let url = match &c.url {
        Some(u) => cx.url(u, &format!("{cp}.url")),
        None => {
            cx.err(cp, "every [[connection]] needs a `url`");
            None
        }
    };
    let method = match pick(&c.method, Some(&d.method), cp, dp, "method") {
        None => Some(reqwest::Method::GET),
        Some((m, p)) => match reqwest::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) => Some(m),
            Err(_) => {
                cx.err(&p, format!("{m:?} is not an HTTP method"));
                None
            }
        },
    };
    // Headers merge: defaults first, the connection's own override by name.
    let mut headers = d
        .headers
        .as_ref()
        .map(|h| cx.headers(h, "defaults.headers"))
        .unwrap_or_default();
    if let Some(h) = &c.headers {
        for (name, v) in cx.headers(h, &format!("{cp}.headers")) {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
            headers.push((name, v));
        }
    }
    let body = pick(&c.body, Some(&d.body), cp, dp, "body").and_then(|(b, p)| cx.string(b, &p));

    // A connection that sets either cadence key ignores both defaults.
    let cadence = if c.interval.is_some() && c.schedule.is_some() {
        cx.err(
            &format!("{cp}.schedule"),
            "set either `interval` or `schedule`, not both",
        );
        None
    } else if c.interval.is_some() || c.schedule.is_some() {
        cadence(cx, &c.interval, &c.schedule, cp)
    } else if d.interval.is_some() && d.schedule.is_some() {
        cx.err(
            "defaults.schedule",
            "set either `interval` or `schedule`, not both",
        );
        None
    } else if d.interval.is_some() || d.schedule.is_some() {
        cadence(cx, &d.interval, &d.schedule, dp)
    } else {
        Some(Cadence::Interval(DEFAULT_INTERVAL))
    };
    let timeout = pick(&c.timeout, Some(&d.timeout), cp, dp, "timeout")
        .map(|(s, p)| cx.duration_in(s, &p, Duration::from_millis(1), Duration::from_secs(3600)))
        .unwrap_or(Some(DEFAULT_TIMEOUT));
    let degraded_after = match pick(
        &c.degraded_after,
        Some(&d.degraded_after),
        cp,
        dp,
        "degraded_after",
    ) {
        None => Some(None),
        Some((s, p)) => cx
            .duration_in(s, &p, Duration::from_millis(1), Duration::from_secs(3600))
            .map(Some),
    };
    let max_body = match pick(&c.max_body, Some(&d.max_body), cp, dp, "max_body") {
        None => Some(DEFAULT_MAX_BODY),
        Some((v, p)) => match parse_byte_size(v) {
            Ok(n) => Some(n),
            Err(e) => {
                cx.err(&p, e);
                None
            }
        },
    };
    let expect = expect(cx, c.expect.as_ref(), d.expect.as_ref(), cp);
    let (breaker, breaker_auth) = breaker(cx, c.breaker.as_ref(), d.breaker.as_ref(), cp);
    let auth_interval = match pick(
        &c.auth_interval,
        Some(&d.auth_interval),
        cp,
        dp,
        "auth_interval",
    ) {
        Some((s, p)) => cx.duration_in(s, &p, MIN_INTERVAL, Duration::from_secs(86_400)),
        None => Some(breaker_auth.unwrap_or(DEFAULT_AUTH_INTERVAL)),
    };
    let limit_dur = |cx: &mut Ctx<'_>,
                     cv: &Option<String>,
                     dv: &Option<String>,
                     key: &str,
                     default: Duration| match pick(cv, Some(dv), cp, dp, key) {
        Some((s, p)) => cx.duration_in(s, &p, Duration::from_secs(1), Duration::from_secs(86_400)),
        None => Some(default),
    };
    let retry_after_max = limit_dur(
        cx,
        &c.retry_after_max,
        &d.retry_after_max,
        "retry_after_max",
        DEFAULT_RETRY_AFTER_MAX,
    );
    let rate_limit_backoff_max = limit_dur(
        cx,
        &c.rate_limit_backoff_max,
        &d.rate_limit_backoff_max,
        "rate_limit_backoff_max",
        DEFAULT_RATE_LIMIT_BACKOFF_MAX,
    );
    let pct =
        |cx: &mut Ctx<'_>, cv: &Option<f64>, dv: &Option<f64>, key: &str, default: f64| match pick(
            cv,
            Some(dv),
            cp,
            dp,
            key,
        ) {
            Some((v, _)) if v.is_finite() && *v > 0.0 && *v <= 100.0 => Some(*v),
            Some((v, p)) => {
                cx.err(
                    &p,
                    format!("{v} is out of range (a percent above 0, at most 100)"),
                );
                None
            }
            None => Some(default),
        };
    let flap_high = pct(
        cx,
        &c.flap_high,
        &d.flap_high,
        "flap_high",
        DEFAULT_FLAP_HIGH,
    );
    let flap_low = pct(cx, &c.flap_low, &d.flap_low, "flap_low", DEFAULT_FLAP_LOW);
    if let (Some(h), Some(l)) = (flap_high, flap_low) {
        if l >= h {
            cx.err(
                &format!("{cp}.flap_low"),
                format!("flap_low ({l}) must be below flap_high ({h})"),
            );
        }
    }
    let depends_on = pick(&c.depends_on, Some(&d.depends_on), cp, dp, "depends_on")
        .and_then(|(v, p)| cx.string(v, &p));
    let sinks = match pick(&c.sinks, Some(&d.sinks), cp, dp, "sinks") {
        None => sink_ids.to_vec(),
        Some((list, p)) => {
            let mut out = Vec::new();
            for (i, s) in list.iter().enumerate() {
                let ip = format!("{p}[{i}]");
                let Some(s) = cx.string(s, &ip) else { continue };
                if sink_ids.contains(&s) {
                    out.push(s);
                } else {
                    let hint = match suggest(&s, sink_ids.iter().map(String::as_str)) {
                        Some(k) => format!("; did you mean {k:?}?"),
                        None if sink_ids.is_empty() => "; no [[sink]] is defined".into(),
                        None => format!("; the sinks are {}", sink_ids.join(", ")),
                    };
                    cx.err(&ip, format!("no sink with id {s:?}{hint}"));
                }
            }
            out
        }
    };
    let events = pick(&c.events, Some(&d.events), cp, dp, "events")
        .map(|(l, p)| cx.event_filter(l, &p))
        .unwrap_or_else(EventFilter::all);
    let tls = tls(cx, c, d, cp);
    let scopes = scopes(cx, c, cp, cadence.as_ref(), &headers, timeout);

    if let (Some(Cadence::Interval(iv)), Some(t)) = (&cadence, timeout) {
        if t > *iv * 10 {
            cx.err(
                &format!("{cp}.timeout"),
                format!(
                    "timeout {} is more than ten intervals ({})",
                    format_duration(t),
                    format_duration(*iv)
                ),
            );
        }
    }
    let slo = match pick(&c.slo, Some(&d.slo), cp, dp, "slo") {
        None => Some(None),
        Some((v, p)) => match crate::uptime::parse_slo(v) {
            Ok(f) => Some(Some(f)),
            Err(e) => {
                cx.err(&p, e);
                None
            }
        },
    };
    Some(Connection {
        id: id?,
        name,
        url: url?,
        method: method?,
        headers,
        body,
        cadence: cadence?,
        timeout: timeout?,
        degraded_after: degraded_after?,
        max_body: max_body?,
        expect: cx.shared_expect(expect?),
        breaker: breaker?,
        auth_interval: auth_interval?,
        retry_after_max: retry_after_max?,
        rate_limit_backoff_max: rate_limit_backoff_max?,
        flap_high: flap_high?,
        flap_low: flap_low?,
        depends_on,
        sinks,
        events,
        tls: tls?,
        scopes: scopes?,
        origin: None,
        slo: slo?,
    })
}

/// The `[[connection.scope]]` tables of connection `c` (at `cp`): its
/// headers and timeout apply unless a scope sets its own; the interval is
/// ten of the connection's unless set (a cron connection's scopes must set
/// it).
fn scopes(
    cx: &mut Ctx<'_>,
    c: &RawProbe,
    cp: &str,
    cadence: Option<&Cadence>,
    headers: &[(String, Secret)],
    timeout: Option<Duration>,
) -> Option<Vec<Arc<Scope>>> {
    let raw = c.scope.as_deref().unwrap_or_default();
    if raw.len() > MAX_SCOPES {
        cx.err(
            &format!("{cp}.scope"),
            format!(
                "{} scopes; a connection may have at most {MAX_SCOPES}",
                raw.len()
            ),
        );
        return None;
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut ok = true;
    let mut seen = HashSet::new();
    for (j, s) in raw.iter().enumerate() {
        let sp = format!("{cp}.scope[{j}]");
        let id = cx.id(s.id.as_ref(), &sp, "every [[connection.scope]]");
        if let Some(id) = &id {
            if !seen.insert(id.clone()) {
                cx.err(
                    &format!("{sp}.id"),
                    format!("duplicate scope id {id:?} in this connection"),
                );
                ok = false;
            }
        }
        let url = match &s.url {
            Some(u) => cx.url(u, &format!("{sp}.url")),
            None => {
                cx.err(&sp, "every [[connection.scope]] needs a `url`");
                None
            }
        };
        let method = match &s.method {
            None => Some(reqwest::Method::GET),
            Some(m) => match reqwest::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => Some(m),
                Err(_) => {
                    cx.err(
                        &format!("{sp}.method"),
                        format!("{m:?} is not an HTTP method"),
                    );
                    None
                }
            },
        };
        let mut hs = headers.to_vec();
        if let Some(h) = &s.headers {
            for (name, v) in cx.headers(h, &format!("{sp}.headers")) {
                hs.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                hs.push((name, v));
            }
        }
        let body = s
            .body
            .as_ref()
            .and_then(|b| cx.string(b, &format!("{sp}.body")));
        let interval = match (&s.interval, cadence) {
            (Some(i), _) => cx.duration_in(
                i,
                &format!("{sp}.interval"),
                MIN_INTERVAL,
                Duration::from_secs(86_400),
            ),
            (None, Some(Cadence::Interval(iv))) => {
                Some((*iv * SCOPE_INTERVAL_FACTOR).min(Duration::from_secs(86_400)))
            }
            (None, Some(Cadence::Cron(_))) => {
                cx.err(
                    &sp,
                    "the connection runs on a cron `schedule`: give each scope an `interval`",
                );
                None
            }
            // The connection's cadence is wrong; that error is reported.
            (None, None) => None,
        };
        let scope_timeout = match &s.timeout {
            Some(t) => cx.duration_in(
                t,
                &format!("{sp}.timeout"),
                Duration::from_millis(1),
                Duration::from_secs(3600),
            ),
            None => timeout,
        };
        let degraded_after = match &s.degraded_after {
            None => Some(None),
            Some(d) => cx
                .duration_in(
                    d,
                    &format!("{sp}.degraded_after"),
                    Duration::from_millis(1),
                    Duration::from_secs(3600),
                )
                .map(Some),
        };
        // Any 2xx and no body check, unless the scope says otherwise.
        let expect = expect(cx, s.expect.as_ref(), None, &sp).map(|mut e| {
            if s.expect.as_ref().is_none_or(|x| x.json_pointer.is_none()) {
                e.json_pointer = None;
            }
            e
        });
        match (
            id,
            url,
            method,
            body,
            interval,
            scope_timeout,
            degraded_after,
            expect,
        ) {
            (
                Some(id),
                Some(url),
                Some(method),
                body,
                Some(interval),
                Some(timeout),
                Some(degraded_after),
                Some(expect),
            ) => out.push(Arc::new(Scope {
                id,
                url,
                method,
                headers: hs,
                body,
                interval,
                timeout,
                degraded_after,
                expect: cx.shared_expect(expect),
            })),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn cadence(
    cx: &mut Ctx<'_>,
    interval: &Option<String>,
    schedule: &Option<String>,
    at: &str,
) -> Option<Cadence> {
    if let Some(s) = interval {
        cx.duration_in(
            s,
            &format!("{at}.interval"),
            MIN_INTERVAL,
            Duration::from_secs(86_400),
        )
        .map(Cadence::Interval)
    } else {
        let s = schedule.as_ref()?;
        cx.cron(s, &format!("{at}.schedule")).map(Cadence::Cron)
    }
}

fn value_list(cx: &mut Ctx<'_>, l: &[String], p: &str) -> Option<Vec<String>> {
    if l.is_empty() {
        cx.err(p, "the list is empty");
        return None;
    }
    Some(l.iter().map(|s| s.to_ascii_lowercase()).collect())
}

fn expect(
    cx: &mut Ctx<'_>,
    c: Option<&RawExpect>,
    d: Option<&RawExpect>,
    cp: &str,
) -> Option<Expect> {
    let none = RawExpect::default();
    let c = c.unwrap_or(&none);
    let dd = d.cloned().unwrap_or_default();
    let cpe = format!("{cp}.expect");
    let dpe = "defaults.expect";
    let mut e = Expect::default();
    let mut ok = true;
    if let Some((list, p)) = pick(&c.status, Some(&dd.status), &cpe, dpe, "status") {
        if list.is_empty() {
            cx.err(&p, "the list is empty");
            ok = false;
        }
        let mut v = Vec::new();
        for (i, s) in list.iter().enumerate() {
            match cx.int_in(*s, &format!("{p}[{i}]"), 100, 599) {
                Some(s) => v.push(s as u16),
                None => ok = false,
            }
        }
        e.status = Some(v);
    }
    if let Some((ptr, p)) = pick(
        &c.json_pointer,
        Some(&dd.json_pointer),
        &cpe,
        dpe,
        "json_pointer",
    ) {
        match cx.string(ptr, &p) {
            Some(s) if s.is_empty() => e.json_pointer = None,
            Some(s) if s.starts_with('/') => e.json_pointer = Some(s),
            Some(s) => {
                cx.err(&p, format!("JSON pointer {s:?} must start with \"/\" (or be \"\" to turn the body check off)"));
                ok = false;
            }
            None => ok = false,
        }
    }
    for (key, slot) in [("online", 0), ("degraded", 1), ("offline", 2)] {
        let (cv, dv) = match slot {
            0 => (&c.online, &dd.online),
            1 => (&c.degraded, &dd.degraded),
            _ => (&c.offline, &dd.offline),
        };
        if let Some((l, p)) = pick(cv, Some(dv), &cpe, dpe, key) {
            match value_list(cx, l, &p) {
                Some(v) => match slot {
                    0 => e.online = v,
                    1 => e.degraded = v,
                    _ => e.offline = v,
                },
                None => ok = false,
            }
        }
    }
    if let Some((sy, p)) = pick(&c.sync, Some(&dd.sync), &cpe, dpe, "sync") {
        let mut se = SyncExpect {
            status: DEFAULT_SYNC_STATUS.into(),
            finished_at: DEFAULT_SYNC_FINISHED_AT.into(),
            max_age: None,
            failed: DEFAULT_SYNC_FAILED.iter().map(|s| s.to_string()).collect(),
        };
        for (key, val, slot) in [
            ("status", &sy.status, 0),
            ("finished_at", &sy.finished_at, 1),
        ] {
            if let Some(v) = val {
                let kp = format!("{p}.{key}");
                match cx.string(v, &kp) {
                    Some(v) if v.starts_with('/') => {
                        if slot == 0 {
                            se.status = v
                        } else {
                            se.finished_at = v
                        }
                    }
                    Some(v) => {
                        cx.err(&kp, format!("JSON pointer {v:?} must start with \"/\""));
                        ok = false;
                    }
                    None => ok = false,
                }
            }
        }
        if let Some(m) = &sy.max_age {
            match cx.duration_in(
                m,
                &format!("{p}.max_age"),
                Duration::from_secs(1),
                Duration::from_secs(365 * 86_400),
            ) {
                Some(d) => se.max_age = Some(d),
                None => ok = false,
            }
        }
        if let Some(f) = &sy.failed {
            match value_list(cx, f, &format!("{p}.failed")) {
                Some(v) => se.failed = v,
                None => ok = false,
            }
        }
        e.sync = Some(se);
    }
    for v in &e.online {
        if e.degraded.contains(v) || e.offline.contains(v) {
            cx.err(
                &cpe,
                format!("status value {v:?} is listed for more than one outcome"),
            );
            ok = false;
        }
    }
    for v in &e.degraded {
        if e.offline.contains(v) {
            cx.err(
                &cpe,
                format!("status value {v:?} is listed for more than one outcome"),
            );
            ok = false;
        }
    }
    ok.then_some(e)
}

/// The breaker table; the second value is `breaker.auth_interval` if set.
fn breaker(
    cx: &mut Ctx<'_>,
    c: Option<&RawBreaker>,
    d: Option<&RawBreaker>,
    cp: &str,
) -> (Option<Breaker>, Option<Duration>) {
    let none = RawBreaker::default();
    let c = c.unwrap_or(&none);
    let dd = d.cloned().unwrap_or_default();
    let cpb = format!("{cp}.breaker");
    let dpb = "defaults.breaker";
    let mut b = Breaker::default();
    let mut ok = true;
    let mut int = |cx: &mut Ctx<'_>,
                   cv: &Option<i64>,
                   dv: &Option<i64>,
                   key: &str,
                   min: i64,
                   max: i64,
                   slot: &mut u32| {
        if let Some((v, p)) = pick(cv, Some(dv), &cpb, dpb, key) {
            match cx.int_in(*v, &p, min, max) {
                Some(v) => *slot = v as u32,
                None => ok = false,
            }
        }
    };
    int(
        cx,
        &c.failure_threshold,
        &dd.failure_threshold,
        "failure_threshold",
        1,
        100,
        &mut b.failure_threshold,
    );
    int(
        cx,
        &c.success_threshold,
        &dd.success_threshold,
        "success_threshold",
        1,
        100,
        &mut b.success_threshold,
    );
    int(cx, &c.window, &dd.window, "window", 1, 1000, &mut b.window);
    int(
        cx,
        &c.min_probes,
        &dd.min_probes,
        "min_probes",
        1,
        1000,
        &mut b.min_probes,
    );
    let dur = |cx: &mut Ctx<'_>,
               cv: &Option<String>,
               dv: &Option<String>,
               key: &str,
               slot: &mut Duration|
     -> bool {
        if let Some((v, p)) = pick(cv, Some(dv), &cpb, dpb, key) {
            match cx.duration_in(
                v,
                &p,
                Duration::from_millis(100),
                Duration::from_secs(7 * 86_400),
            ) {
                Some(d) => *slot = d,
                None => return false,
            }
        }
        true
    };
    let ok1 = dur(cx, &c.open_for, &dd.open_for, "open_for", &mut b.open_for);
    let ok2 = dur(
        cx,
        &c.max_open_for,
        &dd.max_open_for,
        "max_open_for",
        &mut b.max_open_for,
    );
    let mut auth = None;
    if let Some((v, p)) = pick(
        &c.auth_interval,
        Some(&dd.auth_interval),
        &cpb,
        dpb,
        "auth_interval",
    ) {
        auth = cx.duration_in(v, &p, MIN_INTERVAL, Duration::from_secs(86_400));
    }
    if let Some((r, p)) = pick(
        &c.failure_rate,
        Some(&dd.failure_rate),
        &cpb,
        dpb,
        "failure_rate",
    ) {
        if r.is_finite() && *r > 0.0 && *r <= 1.0 {
            b.failure_rate = Some(*r);
        } else {
            cx.err(
                &p,
                format!("{r} is out of range (a fraction above 0, at most 1)"),
            );
            ok = false;
        }
    }
    if ok && b.min_probes > b.window {
        cx.err(
            &cpb,
            format!(
                "min_probes ({}) is larger than window ({})",
                b.min_probes, b.window
            ),
        );
        ok = false;
    }
    if ok1 && ok2 && b.max_open_for < b.open_for {
        cx.err(&cpb, "max_open_for is shorter than open_for");
        ok = false;
    }
    ((ok && ok1 && ok2).then_some(b), auth)
}

fn tls(cx: &mut Ctx<'_>, c: &RawProbe, d: &RawProbe, cp: &str) -> Option<Tls> {
    let dp = "defaults";
    let mut t = Tls::default();
    let mut ok = true;
    for (key, cv, dv) in [
        ("tls_ca_file", &c.tls_ca_file, &d.tls_ca_file),
        ("tls_client_cert", &c.tls_client_cert, &d.tls_client_cert),
        ("tls_client_key", &c.tls_client_key, &d.tls_client_key),
    ] {
        if let Some((v, p)) = pick(cv, Some(dv), cp, dp, key) {
            match cx.existing_file(v, &p) {
                Some(f) => match key {
                    "tls_ca_file" => t.ca_file = Some(f),
                    "tls_client_cert" => t.client_cert = Some(f),
                    _ => t.client_key = Some(f),
                },
                None => ok = false,
            }
        }
    }
    if ok && t.client_cert.is_some() != t.client_key.is_some() {
        cx.err(
            cp,
            "tls_client_cert and tls_client_key go together: set both or neither",
        );
        ok = false;
    }
    // Parsed now, so that `check` finds what `run` would refuse at start.
    if ok {
        if let Some(ca) = &t.ca_file {
            ok &= cx.pem(ca.clone(), None, &format!("{cp}.tls_ca_file"));
        }
        if let (Some(cert), Some(key)) = (&t.client_cert, &t.client_key) {
            ok &= cx.pem(
                cert.clone(),
                Some(key.clone()),
                &format!("{cp}.tls_client_cert"),
            );
        }
    }
    t.insecure = pick(
        &c.tls_insecure,
        Some(&d.tls_insecure),
        cp,
        dp,
        "tls_insecure",
    )
    .map(|(v, _)| *v)
    .unwrap_or(false);
    ok.then_some(t)
}

/// Every `[[sink]]`: the keys all sinks have here, the rest read by the
/// kind's own `build` (`src/sinks/<kind>/`), found in the registry.
fn sinks(cx: &mut Ctx<'_>, raw: &[toml::Table]) -> Vec<Sink> {
    let mut out: Vec<Sink> = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        let sp = format!("sink[{i}]");
        let mut s = Section::new(cx, sp, t);
        let Some(id) = s.id() else {
            continue;
        };
        if out.iter().any(|o| o.id == id) {
            s.fail("id", format!("duplicate sink id {id:?}"));
            continue;
        }
        let kind = match s.string("kind") {
            None if !s.has("kind") => {
                s.fail(
                    "",
                    format!(
                        "every [[sink]] needs a `kind` ({})",
                        crate::sinks::names(", ")
                    ),
                );
                continue;
            }
            None => continue,
            Some(k) => match crate::sinks::kind(&k) {
                Some(kind) => kind,
                None => {
                    s.fail(
                        "kind",
                        format!(
                            "unknown sink kind {k:?}; use {}",
                            crate::sinks::names(" or ")
                        ),
                    );
                    continue;
                }
            },
        };
        s.set_kind(kind.name);
        let events = s.events();
        let week = Duration::from_secs(7 * 86_400);
        let timeout = s
            .duration(
                "timeout",
                Duration::from_millis(100),
                Duration::from_secs(600),
            )
            .unwrap_or(DEFAULT_SINK_TIMEOUT);
        let max_age = s
            .duration(
                "max_age",
                Duration::from_secs(60),
                Duration::from_secs(30 * 86_400),
            )
            .unwrap_or(DEFAULT_SINK_MAX_AGE);
        let retry_max = s
            .duration("retry_max", Duration::from_secs(1), week)
            .unwrap_or(DEFAULT_RETRY_MAX);
        let remind_every = s.duration("remind_every", Duration::from_secs(1), week);
        let concurrency = s.integer("concurrency", 1, crate::sinks::MAX_CONCURRENCY as i64);
        let imp = (kind.build)(&mut s);
        if let (Some(_), Some(imp)) = (concurrency, &imp) {
            if let Some(why) = imp.concurrency_fixed() {
                s.fail(
                    "concurrency",
                    format!(
                        "`concurrency` does not apply to a {} sink: {why}",
                        kind.name
                    ),
                );
            }
        }
        s.refuse_unread();
        if let (true, Some(imp)) = (s.ok(), imp) {
            out.push(Sink {
                id,
                kind: kind.name,
                events,
                timeout,
                max_age,
                retry_max,
                remind_every,
                concurrency: concurrency
                    .map(|c| c as usize)
                    .unwrap_or_else(|| imp.concurrency()),
                imp: imp.into(),
            });
        }
    }
    out
}
