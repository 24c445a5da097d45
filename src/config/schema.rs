//! The set of known keys, checked against the parsed document before any typed
//! parsing, so that *every* unknown key is reported with its position and the
//! nearest known key. The same walk records where each value sits, so later
//! validation errors can point at the value's line and column.

use super::error::{ConfigError, Locator};
use std::collections::HashMap;
use std::ops::Range;
use toml_edit::{Item, Value};

/// What may stand under a key.
#[derive(Clone, Copy)]
pub enum Shape {
    /// A scalar or an array of scalars.
    Leaf,
    /// A table with these keys.
    Table(&'static [Field]),
    /// Array of tables, each with these keys.
    Tables(&'static [Field]),
    /// A table with free keys (headers, labels) whose values are leaves.
    Map,
    /// The `[[sink]]` tables: [`SINK_COMMON`] plus the keys of every kind
    /// in the registry ([`crate::sinks::KINDS`]); a kind refuses the keys
    /// of others when it reads its table.
    Sinks,
}

pub struct Field {
    pub name: &'static str,
    pub shape: Shape,
}

pub const fn leaf(name: &'static str) -> Field {
    Field {
        name,
        shape: Shape::Leaf,
    }
}

pub const SYNC: &[Field] = &[
    leaf("status"),
    leaf("finished_at"),
    leaf("max_age"),
    leaf("failed"),
];

pub const EXPECT: &[Field] = &[
    Field {
        name: "sync",
        shape: Shape::Table(SYNC),
    },
    leaf("status"),
    leaf("json_pointer"),
    leaf("online"),
    leaf("degraded"),
    leaf("offline"),
];

pub const BREAKER: &[Field] = &[
    leaf("failure_threshold"),
    leaf("success_threshold"),
    leaf("open_for"),
    leaf("max_open_for"),
    leaf("failure_rate"),
    leaf("window"),
    leaf("min_probes"),
    leaf("auth_interval"),
];

/// A scope's expectation: no sync (that is the status endpoint's).
pub const SCOPE_EXPECT: &[Field] = &[
    leaf("status"),
    leaf("json_pointer"),
    leaf("online"),
    leaf("degraded"),
    leaf("offline"),
];

pub const SCOPE: &[Field] = &[
    leaf("id"),
    leaf("url"),
    leaf("interval"),
    leaf("method"),
    Field {
        name: "headers",
        shape: Shape::Map,
    },
    leaf("body"),
    leaf("timeout"),
    leaf("degraded_after"),
    Field {
        name: "expect",
        shape: Shape::Table(SCOPE_EXPECT),
    },
];

/// Keys a connection may set; `[defaults]` takes the same minus identity.
macro_rules! probe_keys {
    ($($extra:expr),*) => {
        &[
            $($extra,)*
            leaf("method"),
            Field { name: "headers", shape: Shape::Map },
            leaf("body"),
            leaf("interval"),
            leaf("schedule"),
            leaf("timeout"),
            leaf("degraded_after"),
            leaf("max_body"),
            Field { name: "expect", shape: Shape::Table(EXPECT) },
            Field { name: "breaker", shape: Shape::Table(BREAKER) },
            leaf("auth_interval"),
            leaf("retry_after_max"),
            leaf("rate_limit_backoff_max"),
            leaf("flap_high"),
            leaf("flap_low"),
            leaf("depends_on"),
            leaf("sinks"),
            leaf("events"),
            leaf("tls_ca_file"),
            leaf("tls_client_cert"),
            leaf("tls_client_key"),
            leaf("tls_insecure"),
            leaf("slo"),
            // Known in `[defaults]` too, so that it is refused there with
            // a reason rather than as an unknown key.
            Field { name: "scope", shape: Shape::Tables(SCOPE) },
        ]
    };
}

pub const DEFAULTS: &[Field] = probe_keys!();
pub const CONNECTION: &[Field] = probe_keys!(leaf("id"), leaf("name"), leaf("url"));

pub const DAEMON: &[Field] = &[
    leaf("database"),
    leaf("audit_log"),
    leaf("listen"),
    leaf("admin_token"),
    leaf("admin_token_file"),
    leaf("retention"),
    leaf("max_concurrent_probes"),
    leaf("log_format"),
    leaf("log_level"),
    leaf("scheduler_tick"),
    leaf("history_flush"),
    leaf("shutdown_timeout"),
    leaf("public_url"),
    leaf("instance"),
    leaf("shard"),
    leaf("heartbeat_url"),
    leaf("heartbeat_interval"),
];

pub const DISCOVERY: &[Field] = &[
    leaf("id"),
    leaf("format"),
    leaf("url"),
    leaf("path"),
    leaf("items"),
    leaf("id_pointer"),
    leaf("name_pointer"),
    leaf("status_url"),
    leaf("refresh"),
    leaf("timeout"),
    Field {
        name: "headers",
        shape: Shape::Map,
    },
    leaf("tls_ca_file"),
    leaf("tls_client_cert"),
    leaf("tls_client_key"),
    leaf("tls_insecure"),
    Field {
        name: "template",
        shape: Shape::Table(DEFAULTS),
    },
];

/// Keys every `[[sink]]` has; each kind adds its own.
pub const SINK_COMMON: &[Field] = &[
    leaf("id"),
    leaf("kind"),
    leaf("events"),
    leaf("timeout"),
    leaf("max_age"),
    leaf("retry_max"),
    leaf("remind_every"),
    leaf("concurrency"),
];

pub const MAINTENANCE: &[Field] = &[leaf("connections"), leaf("schedule"), leaf("duration")];

pub const SANDBOX: &[Field] = &[
    leaf("enabled"),
    leaf("listen"),
    leaf("webhook_secret"),
    leaf("webhook_secret_file"),
];

pub const TOP: &[Field] = &[
    Field {
        name: "daemon",
        shape: Shape::Table(DAEMON),
    },
    Field {
        name: "defaults",
        shape: Shape::Table(DEFAULTS),
    },
    Field {
        name: "connection",
        shape: Shape::Tables(CONNECTION),
    },
    Field {
        name: "sink",
        shape: Shape::Sinks,
    },
    Field {
        name: "maintenance",
        shape: Shape::Tables(MAINTENANCE),
    },
    Field {
        name: "sandbox",
        shape: Shape::Table(SANDBOX),
    },
    Field {
        name: "discovery",
        shape: Shape::Tables(DISCOVERY),
    },
];

/// Where each key and value sits, by path (`connection[2].breaker.open_for`).
#[derive(Default, Debug)]
pub struct Spans {
    /// Whether the walk records spans at all: only needed to place errors,
    /// so a file is walked without them first and again with them only
    /// when it has errors (100,000 connections' spans are 40 MB).
    record: bool,
    values: HashMap<String, Range<usize>>,
    keys: HashMap<String, Range<usize>>,
    /// The id of each `connection[N]`, `connection[N].scope[M]` and
    /// `sink[N]` that has a valid one, so errors name an entry by its id.
    ids: HashMap<String, String>,
}

impl Spans {
    /// A key path as an operator reads it: `connection[3].interval` is
    /// `connection "oracle-erp".interval` when that entry has an id, and
    /// `connection[3].scope[1].url` is `connection "oracle-erp".scope
    /// "orders".url`.
    pub fn display(&self, path: &str) -> String {
        let mut out = String::with_capacity(path.len() + 16);
        let mut done = 0;
        for (end, _) in path.match_indices(']') {
            let entry = &path[..=end];
            let piece = &path[done..=end];
            match (self.ids.get(entry), piece.split_once('[')) {
                (Some(id), Some((section, _))) => out.push_str(&format!("{section} {id:?}")),
                _ => out.push_str(piece),
            }
            done = end + 1;
        }
        out.push_str(&path[done..]);
        out
    }

    /// The key path whose value is the narrowest one holding `span` (to
    /// name the key in an error that only has a position).
    pub fn path_at(&self, span: &Range<usize>) -> Option<&str> {
        self.values
            .iter()
            .filter(|(_, r)| r.start <= span.start && span.end <= r.end)
            .min_by_key(|(_, r)| r.end - r.start)
            .map(|(p, _)| p.as_str())
    }

    /// The value's span, else its key's, else the nearest parent's.
    pub fn of(&self, path: &str) -> Option<Range<usize>> {
        let mut p = path;
        loop {
            if let Some(r) = self.values.get(p).or_else(|| self.keys.get(p)) {
                return Some(r.clone());
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// The key's span (for "duplicate"/"conflict" errors that name the key).
    pub fn key(&self, path: &str) -> Option<Range<usize>> {
        self.keys.get(path).cloned().or_else(|| self.of(path))
    }
}

/// Walks the document: reports unknown keys and, with `record`, records
/// spans.
pub fn walk(
    doc: &toml_edit::ImDocument<String>,
    loc: &Locator<'_>,
    record: bool,
) -> (Spans, Vec<ConfigError>) {
    let mut spans = Spans {
        record,
        ..Spans::default()
    };
    let mut errors = Vec::new();
    let root: Vec<Entry<'_>> = table_entries(doc.as_table());
    walk_entries(&root, Fields::Static(TOP), "", &mut spans, &mut errors, loc);
    errors.sort_by_key(|e| (e.line, e.column));
    (spans, errors)
}

/// A key with its span and the node under it.
struct Entry<'a> {
    key: &'a str,
    key_span: Option<Range<usize>>,
    node: Node<'a>,
}

enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
}

fn table_entries(t: &toml_edit::Table) -> Vec<Entry<'_>> {
    t.iter()
        .map(|(k, item)| Entry {
            key: k,
            key_span: t.key(k).and_then(|key| key.span()),
            node: Node::Item(item),
        })
        .collect()
}

fn inline_entries(t: &toml_edit::InlineTable) -> Vec<Entry<'_>> {
    t.iter()
        .map(|(k, v)| Entry {
            key: k,
            key_span: t.key(k).and_then(|key| key.span()),
            node: Node::Value(v),
        })
        .collect()
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The keys allowed in a table.
#[derive(Clone, Copy)]
enum Fields {
    Static(&'static [Field]),
    /// A `[[sink]]`: the common keys and every kind's.
    Sink,
}

impl Fields {
    fn all(self) -> Box<dyn Iterator<Item = &'static Field>> {
        match self {
            Fields::Static(f) => Box::new(f.iter()),
            Fields::Sink => Box::new(
                SINK_COMMON
                    .iter()
                    .chain(crate::sinks::KINDS.iter().flat_map(|k| k.keys.iter())),
            ),
        }
    }

    fn find(self, name: &str) -> Option<&'static Field> {
        self.all().find(|f| f.name == name)
    }
}

fn walk_entries(
    entries: &[Entry<'_>],
    fields: Fields,
    prefix: &str,
    spans: &mut Spans,
    errors: &mut Vec<ConfigError>,
    loc: &Locator<'_>,
) {
    for e in entries {
        let path = join(prefix, e.key);
        if spans.record {
            if let Some(s) = &e.key_span {
                spans.keys.insert(path.clone(), s.clone());
            }
            if let Some(s) = node_span(&e.node) {
                spans.values.insert(path.clone(), s);
            }
        }
        if spans.record
            && e.key == "id"
            && (prefix.starts_with("connection[")
                || prefix.starts_with("sink[")
                || prefix.starts_with("discovery["))
        {
            let id = match &e.node {
                Node::Item(i) => i.as_str(),
                Node::Value(v) => v.as_str(),
            };
            if let Some(id) = id.filter(|id| crate::config::valid_id(id)) {
                spans.ids.insert(prefix.to_string(), id.to_string());
            }
        }
        let Some(field) = fields.find(e.key) else {
            let place = if prefix.is_empty() {
                "at the top level".to_string()
            } else {
                format!("in [{}]", section_name(prefix))
            };
            let mut msg = format!("unknown key `{}` {place}", e.key);
            if let Some(s) = suggest(e.key, fields.all().map(|f| f.name)) {
                msg.push_str(&format!("; did you mean `{s}`?"));
            }
            errors.push(loc.error(e.key_span.clone(), msg));
            continue;
        };
        match field.shape {
            Shape::Leaf => {}
            Shape::Map => {
                for child in children(&e.node).into_iter().filter(|_| spans.record) {
                    let p = join(&path, child.key);
                    if let Some(s) = child.key_span.clone() {
                        spans.keys.insert(p.clone(), s);
                    }
                    if let Some(s) = node_span(&child.node) {
                        spans.values.insert(p, s);
                    }
                }
            }
            Shape::Table(sub) => {
                let kids = children(&e.node);
                walk_entries(&kids, Fields::Static(sub), &path, spans, errors, loc);
            }
            Shape::Tables(sub) => {
                walk_tables(&e.node, Fields::Static(sub), &path, spans, errors, loc)
            }
            Shape::Sinks => walk_tables(&e.node, Fields::Sink, &path, spans, errors, loc),
        }
    }
}

fn walk_tables(
    node: &Node<'_>,
    fields: Fields,
    path: &str,
    spans: &mut Spans,
    errors: &mut Vec<ConfigError>,
    loc: &Locator<'_>,
) {
    for (i, t) in array_tables(node).enumerate() {
        let p = format!("{path}[{i}]");
        if let Some(s) = t.1.filter(|_| spans.record) {
            spans.values.insert(p.clone(), s);
        }
        walk_entries(&t.0, fields, &p, spans, errors, loc);
    }
}

fn node_span(n: &Node<'_>) -> Option<Range<usize>> {
    match n {
        Node::Item(i) => i.span(),
        Node::Value(v) => v.span(),
    }
}

/// Entries of a (possibly inline) table; nothing for other nodes (the typed
/// parse reports the wrong type).
fn children<'a>(n: &Node<'a>) -> Vec<Entry<'a>> {
    match n {
        Node::Item(Item::Table(t)) => table_entries(t),
        Node::Item(Item::Value(Value::InlineTable(t))) | Node::Value(Value::InlineTable(t)) => {
            inline_entries(t)
        }
        _ => Vec::new(),
    }
}

type TableEntries<'a> = (Vec<Entry<'a>>, Option<Range<usize>>);

/// The tables of an array, each listed only when the walk reaches it (the
/// entries of 100,000 connections at once were 22 MB).
fn array_tables<'a>(n: &Node<'a>) -> Box<dyn Iterator<Item = TableEntries<'a>> + 'a> {
    match *n {
        Node::Item(Item::ArrayOfTables(a)) => {
            Box::new(a.iter().map(|t| (table_entries(t), t.span())))
        }
        Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)) => {
            Box::new(a.iter().filter_map(|v| match v {
                Value::InlineTable(t) => Some((inline_entries(t), v.span())),
                _ => None,
            }))
        }
        _ => Box::new(std::iter::empty()),
    }
}

/// `connection[2].breaker` -> `connection.breaker` (how a reader names it).
fn section_name(path: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for c in path.chars() {
        match c {
            '[' => skip = true,
            ']' => skip = false,
            _ if !skip => out.push(c),
            _ => {}
        }
    }
    out
}

/// The nearest known name (a key, an id, an event type), if it is near
/// enough to be a likely typo.
pub fn suggest<'a>(unknown: &str, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = unknown.to_ascii_lowercase();
    names
        .map(|n| {
            (
                strsim::damerau_levenshtein(&lower, &n.to_ascii_lowercase()),
                n,
            )
        })
        .filter(|(d, name)| *d <= 2.max(name.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_keys_only() {
        let names = |f: &'static [Field]| f.iter().map(|f| f.name);
        assert_eq!(suggest("intervall", names(CONNECTION)), Some("interval"));
        assert_eq!(suggest("tiemout", names(CONNECTION)), Some("timeout"));
        assert_eq!(suggest("URL", names(CONNECTION)), Some("url"));
        assert_eq!(
            suggest("failure_treshold", names(BREAKER)),
            Some("failure_threshold")
        );
        assert_eq!(suggest("zzzzzzzz", names(CONNECTION)), None);
        assert_eq!(
            suggest("paht", Fields::Sink.all().map(|f| f.name)),
            Some("path")
        );
    }

    #[test]
    fn section_names_drop_indices() {
        assert_eq!(section_name("connection[3].breaker"), "connection.breaker");
    }
}
