//! Reads and operator actions on the outbox: `connwatch events` and
//! `connwatch events replay`.

use super::{sq, Result, Store};
use crate::model::{rfc3339, UnixMs};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

/// One event with its deliveries.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: String,
    pub connection_id: Option<String>,
    /// Why it was held back (recorded, not delivered), if it was.
    pub suppressed: Option<String>,
    pub deliveries: Vec<DeliveryRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRow {
    pub sink: String,
    /// `pending`, `done` or `dead`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
}

/// Which events to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    All,
    Pending,
    Dead,
}

/// The outbox at a glance: pending and dead deliveries, and when the oldest
/// pending one's event happened.
#[derive(Debug, Clone, Copy, Default)]
pub struct Depth {
    pub pending: i64,
    pub dead: i64,
    pub oldest_pending_at: Option<UnixMs>,
}

pub fn depth(store: &Store) -> Result<Depth> {
    let p = &store.path;
    let (pending, oldest) = store
        .db
        .query_row(
            "SELECT COUNT(*), MIN(e.at) FROM deliveries d JOIN events e ON e.seq = d.event WHERE d.state = 'pending'",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?)),
        )
        .map_err(|e| sq(p, e))?;
    let dead = store
        .db
        .query_row(
            "SELECT COUNT(*) FROM deliveries WHERE state = 'dead'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| sq(p, e))?;
    Ok(Depth {
        pending,
        dead,
        oldest_pending_at: oldest,
    })
}

/// The newest `limit` events matching `filter` (and of `connection`, when
/// given), oldest first.
pub fn list(
    store: &Store,
    filter: Filter,
    connection: Option<&str>,
    limit: usize,
) -> Result<Vec<EventRow>> {
    let p = &store.path;
    let cond = match filter {
        Filter::All => "1",
        Filter::Pending => {
            "EXISTS (SELECT 1 FROM deliveries d WHERE d.event = e.seq AND d.state = 'pending')"
        }
        Filter::Dead => {
            "EXISTS (SELECT 1 FROM deliveries d WHERE d.event = e.seq AND d.state = 'dead')"
        }
    };
    let sql = format!(
        "SELECT e.seq, e.id, e.type, e.at, c.id, e.suppressed FROM events e LEFT JOIN connections c ON c.key = e.conn
         WHERE {cond} AND (?2 IS NULL OR c.id = ?2) ORDER BY e.seq DESC LIMIT ?1"
    );
    let mut s = store.db.prepare(&sql).map_err(|e| sq(p, e))?;
    type Head = (i64, String, String, i64, Option<String>, Option<String>);
    let heads: Vec<Head> = s
        .query_map(rusqlite::params![limit as i64, connection], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .map_err(|e| sq(p, e))?
        .collect::<rusqlite::Result<_>>()
        .map_err(|e| sq(p, e))?;
    let mut d = store
        .db
        .prepare("SELECT sink, state, attempts, next_at, last_error FROM deliveries WHERE event = ?1 ORDER BY sink")
        .map_err(|e| sq(p, e))?;
    let mut out = Vec::with_capacity(heads.len());
    for (seq, id, kind, at, conn, suppressed) in heads.into_iter().rev() {
        let deliveries = d
            .query_map([seq], |r| {
                let state: String = r.get(1)?;
                let next: i64 = r.get(3)?;
                Ok(DeliveryRow {
                    sink: r.get(0)?,
                    next_attempt_at: (state == "pending").then(|| rfc3339(next)),
                    state,
                    attempts: r.get(2)?,
                    last_error: r.get(4)?,
                })
            })
            .map_err(|e| sq(p, e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| sq(p, e))?;
        out.push(EventRow {
            id,
            kind,
            timestamp: rfc3339(at),
            connection_id: conn,
            suppressed,
            deliveries,
        });
    }
    Ok(out)
}

/// Re-queues an event now: every one of its deliveries, or only `sink`'s
/// (created if the event never had one, e.g. it was suppressed). Returns the
/// number of deliveries queued, or `None` if there is no such event.
pub fn replay(
    store: &mut Store,
    event_id: &str,
    sink: Option<&str>,
    now: UnixMs,
) -> Result<Option<usize>> {
    let p = store.path.clone();
    let tx = store.db.transaction().map_err(|e| sq(&p, e))?;
    let Some(seq) = tx
        .query_row("SELECT seq FROM events WHERE id = ?1", [event_id], |r| {
            r.get::<_, i64>(0)
        })
        .optional()
        .map_err(|e| sq(&p, e))?
    else {
        return Ok(None);
    };
    let n = match sink {
        Some(s) => tx
            .execute(
                "INSERT INTO deliveries (event, sink, state, attempts, next_at) VALUES (?1, ?2, 'pending', 0, ?3)
                 ON CONFLICT (event, sink) DO UPDATE SET state = 'pending', attempts = 0, next_at = ?3, last_error = NULL",
                params![seq, s, now],
            )
            .map_err(|e| sq(&p, e))?,
        None => tx
            .execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_at = ?2, last_error = NULL WHERE event = ?1",
                params![seq, now],
            )
            .map_err(|e| sq(&p, e))?,
    };
    tx.commit().map_err(|e| sq(&p, e))?;
    Ok(Some(n))
}

/// Stores an event that no probe caused (`system.error`), with a pending
/// delivery to each of `sinks`, in one transaction.
pub fn insert_event(
    db: &mut rusqlite::Connection,
    env: &crate::event::Envelope,
    at: UnixMs,
    sinks: &[String],
) -> rusqlite::Result<()> {
    let body = serde_json::to_string(env).unwrap_or_default();
    let tx = db.transaction()?;
    tx.execute(
        "INSERT INTO events (id, type, conn, at, transition, envelope) VALUES (?1, ?2, NULL, ?3, NULL, ?4)",
        params![env.id, env.kind, at, body],
    )?;
    let seq = tx.last_insert_rowid();
    for s in sinks {
        tx.execute(
            "INSERT INTO deliveries (event, sink, next_at) VALUES (?1, ?2, ?3)",
            params![seq, s, at],
        )?;
    }
    tx.commit()
}
