//! Discovery: `[[discovery]]` sources turn a platform's list into
//! connections (docs/fleet.md), and shards split the connections between
//! daemons.
//!
//! - [`item`]: the formats (`list`, `http_sd`, `file`) parsed, and the
//!   `status_url` placeholders (pure);
//! - [`tracker`]: what an answer does to a source's last good set (pure);
//! - [`shard`]: which daemon of a sharded fleet probes a connection;
//! - [`fetch`]: one request (or file read), bounded;
//! - [`run`]: the refresh loop, the stored sets, and the events.
//!
//! A discovered connection is the source's prototype (`[defaults]` and the
//! `template`, validated with the rest of the file) with the item's id,
//! name and URLs; the running configuration is the file's connections,
//! then each source's in order (a configured id wins, then the first
//! source), cut to this daemon's shard.

pub mod fetch;
pub mod item;
pub mod run;
pub mod shard;
pub mod tracker;

pub use item::Item;
pub use shard::shard_of;

use crate::config::{Config, Connection, Discovery};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use url::Url;

/// The connection `item` makes from `source`.
pub fn connection(source: &Discovery, item: &Item) -> Result<Connection, String> {
    let url = |template: &str| -> Result<Url, String> {
        let text = item::fill(template, item)?;
        match Url::parse(&text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
            Ok(_) => Err(format!(
                "{:?}: the status URL is not http(s) with a host",
                item.id
            )),
            Err(e) => Err(format!("{:?}: the status URL is not a URL ({e})", item.id)),
        }
    };
    let mut c = source.prototype.clone();
    c.id = item.id.clone();
    c.name = item.name.clone();
    c.url = url(&source.status_url)?;
    c.origin = Some(Arc::from(source.id.as_str()));
    c.scopes = c
        .scopes
        .iter()
        .map(|s| {
            let mut s = (**s).clone();
            if let Some((_, t)) = source.scope_urls.iter().find(|(id, _)| *id == s.id) {
                s.url = url(t)?;
            }
            Ok(Arc::new(s))
        })
        .collect::<Result<_, String>>()?;
    Ok(c)
}

/// Why a listed connection is not watched.
#[derive(Debug, Clone, PartialEq)]
pub enum Left {
    /// A configured connection (or an earlier source) has this id.
    Shadowed { id: String, by: String },
    /// Its URL cannot be made.
    Unusable(String),
}

/// The running configuration: `base` (the file) with every source's set,
/// cut to this daemon's shard; and what was left out.
pub fn effective(base: &Config, sets: &BTreeMap<String, Vec<Item>>) -> (Config, Vec<Left>) {
    let mut config = base.clone();
    let mut left = Vec::new();
    let mut taken: BTreeMap<String, String> = base
        .connections
        .iter()
        .map(|c| (c.id.clone(), "the configuration file".to_string()))
        .collect();
    for source in &base.discovery {
        let Some(items) = sets.get(&source.id) else {
            continue;
        };
        for it in items {
            if let Some(by) = taken.get(&it.id) {
                left.push(Left::Shadowed {
                    id: it.id.clone(),
                    by: by.clone(),
                });
                continue;
            }
            match connection(source, it) {
                Ok(c) => {
                    taken.insert(it.id.clone(), format!("discovery source {:?}", source.id));
                    config.connections.push(Arc::new(c));
                }
                Err(e) => left.push(Left::Unusable(e)),
            }
        }
    }
    config.connections = shard::take(config.connections, config.daemon.shard);
    (config, left)
}

/// Logs what [`effective`] left out, each id once per process.
pub fn report_left(left: &[Left], logged: &mut HashSet<String>) {
    for l in left {
        let key = format!("{l:?}");
        if !logged.insert(key) {
            continue;
        }
        match l {
            Left::Shadowed { id, by } => tracing::warn!(
                connection_id = %id,
                "a discovered connection has the id of one from {by}; that one wins"
            ),
            Left::Unusable(e) => tracing::warn!("a discovered connection is left out: {e}"),
        }
    }
}
