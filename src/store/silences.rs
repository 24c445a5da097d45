//! Operators' silences: "hold the events of these connections (or all) for
//! a while, because …". Written by `connwatch silence` and the admin API,
//! read by the daemon (every [`POLL`]) and by `status`. During a silence
//! events are recorded and held, as in a maintenance window; when it ends,
//! one catch-up brings receivers up to date.

use super::{sq, Result, Store};
use crate::model::{rfc3339, UnixMs};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use std::time::Duration;

/// How often the daemon looks for silences added or ended by others.
pub const POLL: Duration = Duration::from_secs(1);

/// The longest a silence may last.
pub const MAX: Duration = Duration::from_secs(30 * 86_400);

/// One silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Silence {
    pub id: String,
    /// `None`: every connection.
    pub connections: Option<Vec<String>>,
    #[serde(skip)]
    pub starts_ms: UnixMs,
    #[serde(skip)]
    pub ends_ms: UnixMs,
    pub reason: String,
    pub created_by: String,
    #[serde(skip)]
    pub ended_ms: Option<UnixMs>,
}

/// As `silence list --json` and the API show it.
#[derive(Debug, Clone, Serialize)]
pub struct SilenceView {
    #[serde(flatten)]
    pub silence: Silence,
    pub starts_at: String,
    pub ends_at: String,
    /// Ended early by an operator.
    pub ended_at: Option<String>,
    /// In force now.
    pub active: bool,
}

impl Silence {
    /// In force at `now`.
    pub fn active(&self, now: UnixMs) -> bool {
        self.ended_ms.is_none() && self.starts_ms <= now && now < self.ends_ms
    }

    /// Whether it covers connection `id`.
    pub fn covers(&self, id: &str) -> bool {
        self.connections
            .as_ref()
            .is_none_or(|c| c.iter().any(|x| x == id))
    }

    /// When it stops holding events: its end, or when it was ended.
    pub fn until(&self) -> UnixMs {
        self.ended_ms.map_or(self.ends_ms, |e| e.min(self.ends_ms))
    }

    pub fn view(self, now: UnixMs) -> SilenceView {
        SilenceView {
            starts_at: rfc3339(self.starts_ms),
            ends_at: rfc3339(self.ends_ms),
            ended_at: self.ended_ms.map(rfc3339),
            active: self.active(now),
            silence: self,
        }
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Silence> {
    let conns: Option<String> = r.get(1)?;
    Ok(Silence {
        id: r.get(0)?,
        connections: conns.and_then(|c| serde_json::from_str(&c).ok()),
        starts_ms: r.get(2)?,
        ends_ms: r.get(3)?,
        reason: r.get(4)?,
        created_by: r.get(5)?,
        ended_ms: r.get(6)?,
    })
}

const COLUMNS: &str = "id, connections, starts_at, ends_at, reason, created_by, ended_at";

/// Silences in force at `now` (or later), oldest first. A database of an
/// older version, without the table, has none.
pub fn current(db: &rusqlite::Connection, now: UnixMs) -> rusqlite::Result<Vec<Silence>> {
    let exists: Option<String> = db
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'silences'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    let mut s = db.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM silences WHERE ended_at IS NULL AND ends_at > ?1 ORDER BY starts_at, id"
    ))?;
    let rows = s.query_map([now], row)?;
    rows.collect()
}

/// Every silence that ended after `since` or is still to end, oldest first.
pub fn list(store: &Store, since: UnixMs) -> Result<Vec<Silence>> {
    let p = &store.path;
    let mut s = store
        .db
        .prepare(&format!(
            "SELECT {COLUMNS} FROM silences WHERE coalesce(ended_at, ends_at) > ?1 ORDER BY starts_at, id"
        ))
        .map_err(|e| sq(p, e))?;
    let rows = s.query_map([since], row).map_err(|e| sq(p, e))?;
    rows.collect::<rusqlite::Result<_>>().map_err(|e| sq(p, e))
}

/// What an operator asks for, before it is checked.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Connection ids; empty with `all`.
    pub connections: Vec<String>,
    pub all: bool,
    /// How long (`--for`), or until when (`--until`, RFC 3339): one of them.
    pub length: Option<Duration>,
    pub until: Option<String>,
    pub reason: String,
}

/// Checks a request against the database (each id must be a configured
/// connection) at `now`: the connections (`None`: all) and the length.
/// The error says what is wrong, in the words of the command line.
pub fn check(
    store: &Store,
    r: &Request,
    now: UnixMs,
) -> std::result::Result<(Option<Vec<String>>, Duration), String> {
    let connections = match (r.all, r.connections.is_empty()) {
        (true, true) => None,
        (true, false) => return Err("name connections or all (--all), not both".into()),
        (false, true) => return Err("name the connections to silence, or all (--all)".into()),
        (false, false) => {
            for id in &r.connections {
                let configured: Option<i64> = store
                    .db
                    .query_row(
                        "SELECT configured FROM connections WHERE id = ?1",
                        [id],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(|e| sq(&store.path, e).to_string())?;
                if configured != Some(1) {
                    return Err(format!(
                        "no connection {id:?} in the running configuration ({})",
                        store.path.display()
                    ));
                }
            }
            Some(r.connections.clone())
        }
    };
    let length = match (r.length, &r.until) {
        (Some(d), None) => d,
        (None, Some(t)) => {
            let end = chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| format!("--until {t:?} is not an RFC 3339 time ({e})"))?
                .timestamp_millis();
            if end <= now {
                return Err(format!("--until {t} is in the past"));
            }
            Duration::from_millis((end - now) as u64)
        }
        _ => {
            return Err(
                "say how long: for a duration (--for 1h) or until a time (--until 2026-12-02T18:00:00Z)"
                    .into(),
            )
        }
    };
    if length < Duration::from_secs(1) || length > MAX {
        return Err(format!(
            "a silence lasts 1s to {}, not {}",
            crate::config::format_duration(MAX),
            crate::config::format_duration(length)
        ));
    }
    if r.reason.chars().count() > 500 {
        return Err("--reason is longer than 500 characters".into());
    }
    if r.reason.trim().is_empty() {
        return Err("say why: --reason \"…\" (it is shown in status and the audit log)".into());
    }
    Ok((connections, length))
}

/// A new silence from `now` for `length`; `connections` `None` is every
/// connection. Returns it.
pub fn add(
    store: &mut Store,
    connections: Option<Vec<String>>,
    now: UnixMs,
    length: Duration,
    reason: &str,
    created_by: &str,
) -> Result<Silence> {
    let s = Silence {
        id: format!("sil_{}", ulid::Ulid::new()),
        connections,
        starts_ms: now,
        ends_ms: now + length.as_millis() as i64,
        reason: reason.to_string(),
        created_by: created_by.to_string(),
        ended_ms: None,
    };
    let conns = s
        .connections
        .as_ref()
        .map(|c| serde_json::to_string(c).unwrap_or_default());
    store
        .db
        .execute(
            &format!("INSERT INTO silences ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)"),
            params![s.id, conns, s.starts_ms, s.ends_ms, s.reason, s.created_by],
        )
        .map_err(|e| sq(&store.path, e))?;
    Ok(s)
}

/// Ends a silence now. `None` if there is no such silence; the silence as
/// it was if it had already ended.
pub fn end(store: &mut Store, id: &str, now: UnixMs) -> Result<Option<Silence>> {
    let p = store.path.clone();
    let tx = store.db.transaction().map_err(|e| sq(&p, e))?;
    let found = tx
        .query_row(
            &format!("SELECT {COLUMNS} FROM silences WHERE id = ?1"),
            [id],
            row,
        )
        .optional()
        .map_err(|e| sq(&p, e))?;
    let Some(mut s) = found else {
        return Ok(None);
    };
    if s.active(now) {
        tx.execute(
            "UPDATE silences SET ended_at = ?2 WHERE id = ?1",
            params![id, now],
        )
        .map_err(|e| sq(&p, e))?;
        s.ended_ms = Some(now);
    }
    tx.commit().map_err(|e| sq(&p, e))?;
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_current_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("cw.db")).unwrap();
        let a = add(
            &mut store,
            Some(vec!["erp".into()]),
            1_000,
            Duration::from_secs(60),
            "upgrade",
            "ops",
        )
        .unwrap();
        let all = add(
            &mut store,
            None,
            2_000,
            Duration::from_secs(10),
            "storm",
            "api",
        )
        .unwrap();
        assert!(a.id.starts_with("sil_"));
        assert!(a.covers("erp") && !a.covers("crm"));
        assert!(all.covers("crm"));
        assert_eq!(
            current(&store.db, 5_000).unwrap(),
            vec![a.clone(), all.clone()]
        );
        assert_eq!(
            current(&store.db, 12_000).unwrap(),
            vec![a.clone()],
            "all ended at 12 s"
        );
        let ended = end(&mut store, &a.id, 20_000).unwrap().unwrap();
        assert_eq!(ended.ended_ms, Some(20_000));
        assert_eq!(ended.until(), 20_000);
        assert!(current(&store.db, 20_001).unwrap().is_empty());
        assert_eq!(end(&mut store, "sil_nope", 1).unwrap(), None);
        // Ending it again changes nothing.
        assert_eq!(
            end(&mut store, &a.id, 30_000).unwrap().unwrap().ended_ms,
            Some(20_000)
        );
        // The list keeps what ended recently.
        let listed = list(&store, 11_000).unwrap();
        assert_eq!(listed.len(), 2);
        assert!(!listed[0].clone().view(25_000).active);
    }
}
