//! Each discovery source's memory (its last good set, a held shrink, a
//! failing period), kept so that a restart without the source still
//! watches the set, and so that `status` can show it.

use crate::discovery::tracker::Tracker;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeMap;

/// A source as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub tracker: Tracker,
    /// Unix ms of the last answer, good or not.
    pub refreshed_at: Option<i64>,
}

/// Every stored source by id; a row that does not parse is skipped (and
/// logged): the source's next good answer replaces it.
pub fn load(db: &Connection) -> rusqlite::Result<BTreeMap<String, Stored>> {
    let mut st = db.prepare("SELECT source, tracker, refreshed_at FROM discovery")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<i64>>(2)?,
        ))
    })?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (source, text, refreshed_at) = row?;
        match serde_json::from_str::<Tracker>(&text) {
            Ok(tracker) => {
                out.insert(
                    source,
                    Stored {
                        tracker,
                        refreshed_at,
                    },
                );
            }
            Err(e) => {
                tracing::warn!(source = %source, error = %e, "a stored discovery set cannot be read; waiting for the source")
            }
        }
    }
    Ok(out)
}

pub fn save(db: &Connection, source: &str, t: &Tracker, at: i64) -> rusqlite::Result<()> {
    let text = serde_json::to_string(t).unwrap_or_else(|_| "{}".into());
    db.execute(
        "INSERT INTO discovery (source, tracker, refreshed_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(source) DO UPDATE SET tracker = excluded.tracker, refreshed_at = excluded.refreshed_at",
        params![source, text, at],
    )?;
    Ok(())
}

/// One source's row (tests, `status`).
pub fn get(db: &Connection, source: &str) -> rusqlite::Result<Option<Stored>> {
    db.query_row(
        "SELECT tracker, refreshed_at FROM discovery WHERE source = ?1",
        [source],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?)),
    )
    .optional()
    .map(|o| {
        o.and_then(|(t, refreshed_at)| {
            Some(Stored {
                tracker: serde_json::from_str(&t).ok()?,
                refreshed_at,
            })
        })
    })
}
