//! The refresh loop: each source is read every `refresh` (a file source is
//! also read as soon as its file changes), its answer offered to its
//! [`Tracker`], the tracker stored, and every change of the set sent to
//! the daemon, which applies it as a reload applies a new file.

use super::fetch::Fetcher;
use super::item::{self, Item};
use super::tracker::{Tracker, Verdict, AGREE};
use crate::config::{Config, Discovery, DiscoverySource};
use crate::model::now_ms;
use crate::store::Store;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

/// How often a file source's modification time is looked at.
pub const FILE_POLL: Duration = Duration::from_secs(1);

/// A change of one source's set, for the daemon to apply.
#[derive(Debug)]
pub struct Update {
    pub source: String,
    pub items: Vec<Item>,
    pub added: Vec<String>,
    pub retired: Vec<String>,
}

/// The stored sets of `config`'s sources (sources no longer configured are
/// ignored), with their trackers.
pub fn stored(config: &Config) -> BTreeMap<String, Tracker> {
    if config.discovery.is_empty() {
        return BTreeMap::new();
    }
    let read = Store::open(&config.daemon.database)
        .map_err(|e| e.to_string())
        .and_then(|s| {
            crate::store::discovery::load(&s.db)
                .map_err(|e| crate::store::sq(&config.daemon.database, e).to_string())
        });
    match read {
        Ok(all) => all
            .into_iter()
            .filter(|(id, _)| config.discovery.iter().any(|d| d.id == *id))
            .map(|(id, s)| (id, s.tracker))
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the stored discovery sets; waiting for the sources");
            BTreeMap::new()
        }
    }
}

/// Each source's last good set, by source id.
pub type Sets = BTreeMap<String, Vec<Item>>;

/// The last good set of each source, from its tracker.
pub fn sets(trackers: &BTreeMap<String, Tracker>) -> Sets {
    trackers
        .iter()
        .filter_map(|(id, t)| Some((id.clone(), t.set.clone()?)))
        .collect()
}

/// Runs every source of `config` until `stop`.
pub async fn run(
    config: Arc<Config>,
    trackers: BTreeMap<String, Tracker>,
    tx: mpsc::UnboundedSender<Update>,
    stop: watch::Receiver<bool>,
    wake: Arc<Notify>,
) {
    let mut tasks = Vec::new();
    for source in &config.discovery {
        let t = trackers.get(&source.id).cloned().unwrap_or_default();
        if let Some(set) = &t.set {
            crate::ops::metrics::metrics()
                .discovery_connections
                .with_label_values(&[&source.id])
                .set(set.len() as i64);
        }
        tasks.push(tokio::spawn(one(
            Arc::clone(&config),
            Arc::clone(source),
            t,
            tx.clone(),
            stop.clone(),
            Arc::clone(&wake),
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Fetches and parses once (also `connwatch check --discover`).
pub async fn fetch_once(source: &Discovery, fetcher: &Fetcher) -> Result<item::Parsed, String> {
    let body = fetcher.get(source).await?;
    item::parse(&source.format, &body)
}

async fn one(
    config: Arc<Config>,
    source: Arc<Discovery>,
    mut tracker: Tracker,
    tx: mpsc::UnboundedSender<Update>,
    mut stop: watch::Receiver<bool>,
    wake: Arc<Notify>,
) {
    let id = source.id.clone();
    let fetcher = match Fetcher::new(&source) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(source = %id, error = %e, "discovery source cannot start");
            return;
        }
    };
    let db: PathBuf = config.daemon.database.clone();
    let file = match &source.source {
        DiscoverySource::File(p) => Some(p.clone()),
        DiscoverySource::Http { .. } => None,
    };
    let mut seen_file = file.as_deref().and_then(modified);
    let mut next = tokio::time::Instant::now();
    loop {
        // Wait for the next refresh, or (file sources) a change of the file.
        loop {
            let until = match &file {
                Some(_) => next.min(tokio::time::Instant::now() + FILE_POLL),
                None => next,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            if tokio::time::Instant::now() >= next {
                break;
            }
            if let Some(p) = &file {
                let m = modified(p);
                if m != seen_file {
                    seen_file = m;
                    break;
                }
            }
        }
        next = tokio::time::Instant::now() + source.refresh;
        if let Some(p) = &file {
            seen_file = modified(p);
        }
        // A stop does not wait for a slow source (up to its `timeout`).
        let answer = tokio::select! {
            a = fetch_once(&source, &fetcher) => a,
            _ = stop.changed() => return,
        };
        let m = crate::ops::metrics::metrics();
        let garbage = matches!(&answer, Err(e) if !is_fetch_error(e));
        let answer = answer.map(|p| {
            if p.skipped > 0 {
                tracing::warn!(
                    source = %id,
                    skipped = p.skipped,
                    first = p.first_skip.as_deref().unwrap_or(""),
                    "discovery: listed entries without a usable id are left out"
                );
            }
            p.items
        });
        let now = now_ms();
        let verdict = tracker.offer(answer, now);
        let result = match &verdict {
            Verdict::Applied { .. } => "ok",
            Verdict::Unchanged => "unchanged",
            Verdict::Held { .. } => "held",
            Verdict::Failed { .. } if garbage => "garbage",
            Verdict::Failed { .. } => "failed",
        };
        m.discovery_refreshes
            .with_label_values(&[&id, result])
            .inc();
        let save = {
            let t = tracker.clone();
            let id = id.clone();
            let db = db.clone();
            tokio::task::spawn_blocking(move || {
                let s = Store::open(&db).map_err(|e| e.to_string())?;
                crate::store::discovery::save(&s.db, &id, &t, now)
                    .map_err(|e| crate::store::sq(&db, e).to_string())
            })
        };
        match save.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(source = %id, error = %e, "cannot store the discovery set")
            }
            Err(e) => tracing::error!(source = %id, error = %e, "cannot store the discovery set"),
        }
        match verdict {
            Verdict::Applied {
                added,
                retired,
                changed,
            } => {
                let items = tracker.set.clone().unwrap_or_default();
                m.discovery_connections
                    .with_label_values(&[&id])
                    .set(items.len() as i64);
                tracing::info!(
                    source = %id,
                    connections = items.len(),
                    added = added.len(),
                    retired = retired.len(),
                    changed,
                    "discovery: the set changed"
                );
                if tx
                    .send(Update {
                        source: id.clone(),
                        items,
                        added,
                        retired,
                    })
                    .is_err()
                {
                    return;
                }
            }
            Verdict::Unchanged => {}
            Verdict::Held {
                agree,
                retiring,
                of,
            } => tracing::warn!(
                source = %id,
                retiring,
                of,
                agree,
                needed = AGREE,
                "discovery: the answer would retire more than half of the set; held until {AGREE} answers in a row agree"
            ),
            Verdict::Failed { first } => {
                let (since, why) = tracker.failing.clone().unwrap_or_default();
                tracing::warn!(source = %id, error = %why, since_ms = since, "discovery: the source failed; its last good set stays");
                if first {
                    crate::app::raise_system_error(
                        &config,
                        "discovery",
                        &format!(
                            "discovery source {id:?} failed ({why}); its last good set of {} connections stays until it answers again",
                            tracker.set.as_ref().map_or(0, Vec::len)
                        ),
                        &wake,
                    );
                }
            }
        }
    }
}

/// Whether an error came from reaching the source (not from its answer).
fn is_fetch_error(e: &str) -> bool {
    e.starts_with("GET ") || e.starts_with("cannot read") || e.starts_with("reading")
}

fn modified(p: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}
