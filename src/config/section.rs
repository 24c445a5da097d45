//! One `[[sink]]` table as its kind reads it. The loader reads the keys
//! every sink has (`id`, `kind`, `events`, `timeout`, `max_age`,
//! `retry_max`, `remind_every`, `concurrency`); the kind's `build` (in
//! `src/sinks/<kind>/`) reads its own through these getters, which expand
//! `${VAR}`, check the value and report errors at the key. A key that is
//! present but that neither read is refused: "`url` does not apply to a log
//! sink". So a key never sits in a file doing nothing.

use super::validate::Ctx;
use super::{Secret, Url};
use crate::event::EventFilter;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use toml::Value;

pub struct Section<'s, 'c> {
    cx: &'s mut Ctx<'c>,
    /// `sink[3]`.
    path: String,
    kind: &'static str,
    table: &'s toml::Table,
    /// Keys read so far.
    read: Vec<&'static str>,
    /// Errors recorded before this section began.
    errors_before: usize,
}

impl<'s, 'c> Section<'s, 'c> {
    pub(super) fn new(cx: &'s mut Ctx<'c>, path: String, table: &'s toml::Table) -> Self {
        let errors_before = cx.errors.len();
        Section {
            cx,
            path,
            kind: "",
            table,
            read: Vec::new(),
            errors_before,
        }
    }

    pub(super) fn set_kind(&mut self, kind: &'static str) {
        self.kind = kind;
    }

    /// The kind's name (`webhook`, …).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// No error was recorded in this section.
    pub fn ok(&self) -> bool {
        self.cx.errors.len() == self.errors_before
    }

    /// Whether the key is present (does not count as reading it).
    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    fn at(&self, key: &str) -> String {
        if key.is_empty() {
            self.path.clone()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Records an error at `key` (the whole section for `""`).
    pub fn fail(&mut self, key: &str, msg: impl Into<String>) {
        let at = self.at(key);
        self.cx.err(&at, msg);
    }

    /// "a webhook sink needs a `url`", at the section.
    pub fn missing(&mut self, key: &str) {
        let article = if self.kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        let msg = format!("{article} {} sink needs a `{key}`", self.kind);
        self.fail("", msg);
    }

    fn get(&mut self, key: &'static str) -> Option<&'s Value> {
        if !self.read.contains(&key) {
            self.read.push(key);
        }
        self.table.get(key)
    }

    fn wrong_type(&mut self, key: &str, expected: &str, found: &Value) {
        self.fail(
            key,
            format!("expected {expected}, found {}", describe(found)),
        );
    }

    /// The string as written (not expanded).
    fn raw_str(&mut self, key: &'static str) -> Option<&'s str> {
        match self.get(key)? {
            Value::String(s) => Some(s),
            other => {
                self.wrong_type(key, "a string", other);
                None
            }
        }
    }

    /// A string, `${VAR}` expanded.
    pub fn string(&mut self, key: &'static str) -> Option<String> {
        let raw = self.raw_str(key)?;
        let at = self.at(key);
        self.cx.string(raw, &at)
    }

    /// An `http://` or `https://` URL with a host.
    pub fn url(&mut self, key: &'static str) -> Option<Url> {
        let raw = self.raw_str(key)?;
        let at = self.at(key);
        self.cx.url(raw, &at)
    }

    /// A URL of any scheme (the kind checks which and what else it
    /// allows), `${VAR}` expanded. The text may hold a secret: an error
    /// names the problem, not the value.
    pub fn any_url(&mut self, key: &'static str) -> Option<Url> {
        let raw = self.raw_str(key)?;
        let at = self.at(key);
        let s = self.cx.string(raw, &at)?;
        match Url::parse(&s) {
            Ok(u) => Some(u),
            Err(e) => {
                self.fail(key, format!("invalid URL ({e})"));
                None
            }
        }
    }

    /// A duration within `[min, max]`.
    pub fn duration(
        &mut self,
        key: &'static str,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let raw = self.raw_str(key)?;
        let at = self.at(key);
        self.cx.duration_in(raw, &at, min, max)
    }

    /// An integer within `[min, max]`.
    pub fn integer(&mut self, key: &'static str, min: i64, max: i64) -> Option<i64> {
        match self.get(key)? {
            Value::Integer(i) => {
                let at = self.at(key);
                self.cx.int_in(*i, &at, min, max)
            }
            other => {
                self.wrong_type(key, "an integer", other);
                None
            }
        }
    }

    /// A file path, relative ones resolved against the configuration's folder.
    pub fn file_path(&mut self, key: &'static str) -> Option<PathBuf> {
        let raw = self.raw_str(key)?;
        let at = self.at(key);
        self.cx.file_path(raw, &at)
    }

    /// One string or a list of strings, as written (not expanded).
    fn raw_strings(&mut self, key: &'static str) -> Option<Vec<&'s str>> {
        match self.get(key)? {
            Value::String(s) => Some(vec![s.as_str()]),
            Value::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                for (i, v) in a.iter().enumerate() {
                    match v {
                        Value::String(s) => out.push(s.as_str()),
                        other => {
                            self.wrong_type(&format!("{key}[{i}]"), "a string", other);
                            return None;
                        }
                    }
                }
                Some(out)
            }
            other => {
                self.wrong_type(key, "a string or an array of strings", other);
                None
            }
        }
    }

    /// One string or a list of strings, each `${VAR}` expanded.
    pub fn strings(&mut self, key: &'static str) -> Option<Vec<String>> {
        let raw = self.raw_strings(key)?;
        let at = self.at(key);
        let mut out = Vec::with_capacity(raw.len());
        for r in raw {
            out.push(self.cx.string(r, &at)?);
        }
        Some(out)
    }

    /// A table of strings, as written.
    fn raw_map(&mut self, key: &'static str) -> Option<BTreeMap<String, &'s str>> {
        match self.get(key)? {
            Value::Table(t) => {
                let mut out = BTreeMap::new();
                for (k, v) in t {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.as_str());
                        }
                        other => self.wrong_type(&format!("{key}.{k}"), "a string", other),
                    }
                }
                Some(out)
            }
            other => {
                self.wrong_type(key, "a table", other);
                None
            }
        }
    }

    /// A table of strings (labels), values `${VAR}` expanded.
    pub fn map(&mut self, key: &'static str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in self.raw_map(key).unwrap_or_default() {
            let at = format!("{}.{k}", self.at(key));
            if let Some(v) = self.cx.string(v, &at) {
                out.insert(k, v);
            }
        }
        out
    }

    /// HTTP headers: valid names; values are secrets.
    pub fn headers(&mut self, key: &'static str) -> Vec<(String, Secret)> {
        let raw: BTreeMap<String, String> = self
            .raw_map(key)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        let at = self.at(key);
        self.cx.headers(&raw, &at)
    }

    /// A secret given inline (`key`, `${VAR}` expanded) or read from a file
    /// (`file_key`). `None` when absent or refused (an error is recorded).
    pub fn secret(&mut self, key: &'static str, file_key: &'static str) -> Option<Secret> {
        let before = self.cx.errors.len();
        let inline = self.raw_str(key);
        let file = self.raw_str(file_key);
        if self.cx.errors.len() > before {
            return None;
        }
        let at = self.at(key);
        match self.cx.secret_source(inline, file, &at) {
            Ok(Some(s)) if s.trim().is_empty() => {
                self.fail(key, format!("{key} is empty"));
                None
            }
            Ok(s) => s.map(Secret::new),
            Err(()) => None,
        }
    }

    /// Secrets given inline (one string or a list, each expanded) or read
    /// from a file, one per line (two during a rotation).
    pub fn secret_lines(&mut self, key: &'static str, file_key: &'static str) -> Vec<String> {
        let inline = self.raw_strings(key);
        let file = self.raw_str(file_key);
        let at = self.at(key);
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.fail(
                    file_key,
                    format!("set either `{key}` or `{file_key}`, not both"),
                );
                Vec::new()
            }
            (Some(list), None) => list
                .into_iter()
                .filter_map(|v| self.cx.string(v, &at))
                .collect(),
            (None, Some(f)) => match self.cx.secret_source(None, Some(f), &at) {
                Ok(Some(text)) => text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect(),
                _ => Vec::new(),
            },
            (None, None) => Vec::new(),
        }
    }

    /// The common `id` key.
    pub(super) fn id(&mut self) -> Option<String> {
        let raw = match self.get("id") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.wrong_type("id", "a string", other);
                return None;
            }
        };
        let path = self.path.clone();
        self.cx.id(raw.as_ref(), &path, "every [[sink]]")
    }

    /// The common `events` key.
    pub(super) fn events(&mut self) -> EventFilter {
        match self.raw_strings("events") {
            None => EventFilter::all(),
            Some(list) => {
                let owned: Vec<String> = list.into_iter().map(str::to_string).collect();
                let at = self.at("events");
                self.cx.event_filter(&owned, &at)
            }
        }
    }

    /// Refuses every key present that nobody read.
    pub(super) fn refuse_unread(&mut self) {
        let table = self.table;
        for key in table.keys() {
            if !self.read.iter().any(|r| r == key) {
                let msg = format!("`{key}` does not apply to a {} sink", self.kind);
                self.fail(key, msg);
            }
        }
    }
}

/// A TOML value in the words of a type error.
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(i) => format!("integer `{i}`"),
        Value::Float(f) => format!("floating point `{f}`"),
        Value::Boolean(b) => format!("boolean `{b}`"),
        Value::Datetime(d) => format!("datetime `{d}`"),
        Value::Array(_) => "an array".into(),
        Value::Table(_) => "a table".into(),
    }
}
