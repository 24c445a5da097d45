//! The outbox: every SQL statement on `events`, `deliveries` and
//! `delivery_attempts` outside retention is here.
//!
//! Who writes it, and why there is more than one writer:
//! - the writer thread ([`super::writer`]) stores events with their
//!   deliveries, in the transaction of the change that caused them
//!   ([`write_event`]);
//! - the dispatcher ([`crate::deliver`]), on its own connection, records
//!   attempts ([`record_attempts`]), stores the `system.error` events it
//!   raises ([`insert_event`]) and buries deliveries of sinks no longer
//!   configured ([`bury_unconfigured`]). It does not go through the writer
//!   so that delivery goes on at its own pace while probe results queue
//!   (and the other way round); SQLite's busy timeout serialises the two;
//! - operator commands (`events replay`, a reload refused) from their own
//!   connection ([`replay`], [`insert_event`]).

use super::{sq, Result, Store};
use crate::event::{Envelope, EventKind, Outgoing};
use crate::model::{rfc3339, UnixMs};
use crate::policy::{Delivery, PageAction};
use rusqlite::{params, Connection as Db, OptionalExtension};
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
    /// Attempts since the event was stored or last replayed.
    pub attempts: i64,
    pub next_attempt_at: Option<String>,
    #[serde(skip)]
    pub next_attempt_ms: Option<UnixMs>,
    pub last_error: Option<String>,
    /// Every attempt, oldest first, replays included.
    pub history: Vec<AttemptRow>,
}

/// One recorded attempt.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    pub at: String,
    /// HTTP status or exit code.
    pub status: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
    /// `done`, `retry`, `dead` or `skipped`.
    pub verdict: String,
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
    let mut a = store
        .db
        .prepare(
            "SELECT at, status, error, duration_ms, verdict FROM delivery_attempts
             WHERE event = ?1 AND sink = ?2 ORDER BY at, rowid",
        )
        .map_err(|e| sq(p, e))?;
    let mut out = Vec::with_capacity(heads.len());
    for (seq, id, kind, at, conn, suppressed) in heads.into_iter().rev() {
        let mut deliveries: Vec<DeliveryRow> = d
            .query_map([seq], |r| {
                let state: String = r.get(1)?;
                let next: i64 = r.get(3)?;
                let pending = state == "pending";
                Ok(DeliveryRow {
                    sink: r.get(0)?,
                    next_attempt_at: pending.then(|| rfc3339(next)),
                    next_attempt_ms: pending.then_some(next),
                    state,
                    attempts: r.get(2)?,
                    last_error: r.get(4)?,
                    history: Vec::new(),
                })
            })
            .map_err(|e| sq(p, e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| sq(p, e))?;
        for dl in &mut deliveries {
            dl.history = a
                .query_map(params![seq, dl.sink], |r| {
                    Ok(AttemptRow {
                        at: rfc3339(r.get(0)?),
                        status: r.get(1)?,
                        error: r.get(2)?,
                        duration_ms: r.get(3)?,
                        verdict: r.get(4)?,
                    })
                })
                .map_err(|e| sq(p, e))?
                .collect::<rusqlite::Result<_>>()
                .map_err(|e| sq(p, e))?;
        }
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
                "INSERT INTO deliveries (event, sink, state, attempts, next_at, conn)
                 SELECT ?1, ?2, 'pending', 0, ?3, conn FROM events WHERE seq = ?1
                 ON CONFLICT (event, sink) DO UPDATE SET state = 'pending', attempts = 0, next_at = ?3",
                params![seq, s, now],
            )
            .map_err(|e| sq(&p, e))?,
        None => tx
            .execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_at = ?2 WHERE event = ?1",
                params![seq, now],
            )
            .map_err(|e| sq(&p, e))?,
    };
    tx.commit().map_err(|e| sq(&p, e))?;
    Ok(Some(n))
}

/// Stores an event and its deliveries inside `tx`. Returns the rows written.
#[allow(clippy::too_many_arguments)]
pub fn write_event(
    tx: &rusqlite::Transaction<'_>,
    env: &Envelope,
    conn: Option<i64>,
    at: UnixMs,
    transition: Option<i64>,
    suppressed: Option<&str>,
    deliveries: &[Delivery],
) -> rusqlite::Result<u64> {
    let json = serde_json::to_string(env).unwrap_or_default();
    tx.prepare_cached(
        "INSERT INTO events (id, type, conn, at, transition, envelope, suppressed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![env.id, env.kind.as_str(), conn, at, transition, json, suppressed])?;
    let seq = tx.last_insert_rowid();
    let mut ins = tx.prepare_cached(
        "INSERT INTO deliveries (event, sink, next_at, conn, priority, action) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for d in deliveries {
        ins.execute(params![
            seq,
            &*d.sink,
            at,
            conn,
            d.priority.code(),
            d.action.map(PageAction::to_db)
        ])?;
    }
    Ok(1 + deliveries.len() as u64)
}

/// Stores an event that no probe caused (`system.error`) with its
/// deliveries, in one transaction of its own.
pub fn insert_event(
    db: &mut Db,
    env: &Envelope,
    at: UnixMs,
    deliveries: &[Delivery],
) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    write_event(&tx, env, None, at, None, None, deliveries)?;
    tx.commit()
}

/// Stores events about connections that no probe caused
/// (`connection.discovered`, `connection.retired`), each with its
/// connection's row, in one transaction.
pub fn insert_connection_events(
    db: &mut Db,
    events: &[(Envelope, String, Vec<Delivery>)],
    at: UnixMs,
) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    for (env, conn_id, deliveries) in events {
        let conn: Option<i64> = tx
            .query_row(
                "SELECT key FROM connections WHERE id = ?1",
                [conn_id],
                |r| r.get(0),
            )
            .optional()?;
        write_event(&tx, env, conn, at, None, None, deliveries)?;
    }
    tx.commit()
}

/// A pending delivery ready to attempt.
#[derive(Debug, Clone)]
pub struct Due {
    /// The event's row.
    pub event: i64,
    pub attempts: i64,
    /// When the event happened.
    pub at: UnixMs,
    pub out: Outgoing,
    pub action: Option<PageAction>,
}

/// How a sink's queue is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Fresh news first, then the oldest (one delivery per request).
    Priority,
    /// The oldest first (a chat sink cuts windows in time).
    Time,
}

/// The pending deliveries of `sink` that are due at `now` and head their
/// connection's queue on this sink (nothing earlier of the same
/// connection is pending), in `order`, at most `limit`. Walks the partial
/// index `deliveries_queue` (or `deliveries_fifo`) of this sink in order
/// and checks each row against `deliveries_pair`, stopping at `limit`: a
/// deep backlog of other sinks costs nothing, and of this sink only the
/// rows passed over (heads not due yet, non-heads).
pub fn due_heads(
    db: &Db,
    sink: &str,
    now: UnixMs,
    order: Order,
    limit: usize,
) -> rusqlite::Result<Vec<Due>> {
    let sql = match order {
        Order::Priority => DUE_BY_PRIORITY,
        Order::Time => DUE_BY_TIME,
    };
    let mut s = db.prepare_cached(sql)?;
    let rows = s.query_map(params![sink, now, limit as i64], |r| {
        let action: Option<String> = r.get(7)?;
        Ok(Due {
            event: r.get(0)?,
            attempts: r.get(1)?,
            at: r.get(2)?,
            out: outgoing(r, 3)?,
            action: action.as_deref().and_then(PageAction::from_db),
        })
    })?;
    rows.collect()
}

/// The query behind [`due_heads`]: the sink's pending deliveries walked in
/// `$order` along `$index`, each checked against `deliveries_pair`.
macro_rules! due_query {
    ($index:literal, $order:literal) => {
        concat!(
            "SELECT d.event, d.attempts, e.at, e.id, e.type, c.id, e.envelope, d.action
             FROM deliveries d INDEXED BY ",
            $index,
            " JOIN events e ON e.seq = d.event LEFT JOIN connections c ON c.key = d.conn
             WHERE d.sink = ?1 AND d.state = 'pending' AND d.next_at <= ?2
               AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.sink = ?1 AND p.state = 'pending'
                               AND p.conn IS d.conn AND p.event < d.event)
             ORDER BY ",
            $order,
            " LIMIT ?3"
        )
    };
}

const DUE_BY_PRIORITY: &str = due_query!("deliveries_queue", "d.priority, d.event");
const DUE_BY_TIME: &str = due_query!("deliveries_fifo", "d.event");

/// An event row as it goes out, from columns id, type, connection id,
/// envelope starting at `i`.
fn outgoing(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Outgoing> {
    let body: String = r.get(i + 3)?;
    Ok(Outgoing {
        id: r.get(i)?,
        kind: r.get(i + 1)?,
        connection_id: r.get(i + 2)?,
        envelope: serde_json::from_str(&body).unwrap_or_default(),
        body,
    })
}

/// When the next delivery waiting for a retry (or a replay) falls due.
pub fn next_retry(db: &Db, now: UnixMs) -> rusqlite::Result<Option<UnixMs>> {
    db.prepare_cached(
        "SELECT min(next_at) FROM deliveries WHERE state = 'pending' AND next_at > ?1",
    )?
    .query_row([now], |r| r.get(0))
}

/// Pending deliveries, all sinks.
pub fn pending_count(db: &Db) -> rusqlite::Result<i64> {
    db.prepare_cached("SELECT count(*) FROM deliveries WHERE state = 'pending'")?
        .query_row([], |r| r.get(0))
}

/// One attempt at some of a sink's deliveries (one request).
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    pub started: UnixMs,
    /// HTTP status or exit code.
    pub status: Option<i64>,
    pub error: Option<&'a str>,
    pub duration_ms: i64,
    /// `done`, `retry`, `dead` or `skipped`.
    pub verdict: &'static str,
}

/// Records one attempt for each `(event, state, next_at)` of `sink`, and
/// moves the deliveries on, in one transaction.
pub fn record_attempts(
    db: &mut Db,
    sink: &str,
    moves: &[(i64, &'static str, UnixMs)],
    a: &Attempt<'_>,
) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    {
        let mut up = tx.prepare_cached(
            "UPDATE deliveries SET attempts = attempts + 1, state = ?3, next_at = ?4, last_error = ?5 WHERE event = ?1 AND sink = ?2",
        )?;
        let mut ins = tx.prepare_cached(
            "INSERT INTO delivery_attempts (event, sink, at, status, error, duration_ms, verdict) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for (event, state, next_at) in moves {
            up.execute(params![event, sink, state, next_at, a.error])?;
            ins.execute(params![
                event,
                sink,
                a.started,
                a.status,
                a.error,
                a.duration_ms,
                a.verdict
            ])?;
        }
    }
    tx.commit()
}

/// Pending deliveries to sinks that are no longer configured: dead, with
/// an attempt that says why. Returns how many.
pub fn bury_unconfigured(db: &mut Db, configured: &[&str], now: UnixMs) -> rusqlite::Result<usize> {
    let ids = serde_json::to_string(configured).unwrap_or_else(|_| "[]".into());
    let tx = db.transaction()?;
    tx.execute(
        "INSERT INTO delivery_attempts (event, sink, at, error, duration_ms, verdict)
         SELECT event, sink, ?2, 'sink no longer configured', 0, 'dead' FROM deliveries
         WHERE state = 'pending' AND sink NOT IN (SELECT value FROM json_each(?1))",
        params![ids, now],
    )?;
    let n = tx.execute(
        "UPDATE deliveries SET state = 'dead', attempts = attempts + 1, last_error = 'sink no longer configured'
         WHERE state = 'pending' AND sink NOT IN (SELECT value FROM json_each(?1))",
        [&ids],
    )?;
    tx.commit()?;
    Ok(n)
}

/// The last status change each connection's receivers on `sink` heard
/// (delivered), with its incident action: after a restart, the alerts
/// still firing and the reminders still due come from here.
pub fn last_told(db: &Db, sink: &str) -> rusqlite::Result<Vec<(Outgoing, Option<PageAction>)>> {
    let mut s = db.prepare(
        "SELECT e.id, e.type, c.id, e.envelope, d.action FROM deliveries d
         JOIN events e ON e.seq = d.event JOIN connections c ON c.key = e.conn
         WHERE d.sink = ?1 AND d.event IN (
             SELECT max(x.event) FROM deliveries x JOIN events y ON y.seq = x.event
             WHERE x.sink = ?1 AND x.state = 'done' AND y.type = ?2 GROUP BY y.conn)",
    )?;
    let rows = s.query_map(params![sink, EventKind::StatusChanged.as_str()], |r| {
        let action: Option<String> = r.get(4)?;
        Ok((
            outgoing(r, 0)?,
            action.as_deref().and_then(PageAction::from_db),
        ))
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Priority, Severity};

    fn delivery(priority: Priority, action: Option<PageAction>) -> Delivery {
        Delivery {
            sink: "s".into(),
            priority,
            action,
        }
    }

    /// Stores one event of `conn` (a key, or none) with one delivery to `s`.
    fn put(db: &mut Db, conn: Option<i64>, at: UnixMs, d: Delivery) -> String {
        let env = Envelope::new(
            "test",
            EventKind::StatusChanged,
            at,
            None,
            serde_json::json!({}),
        );
        let tx = db.transaction().unwrap();
        write_event(&tx, &env, conn, at, None, None, &[d]).unwrap();
        tx.commit().unwrap();
        env.id
    }

    fn ids(v: &[Due]) -> Vec<&str> {
        v.iter().map(|d| d.out.id.as_str()).collect()
    }

    #[test]
    fn a_sink_takes_heads_fresh_news_first_and_each_connection_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("cw.db")).unwrap();
        let known = store
            .sync_connections(&["a", "b", "c"].map(super::super::ConnMeta::bare))
            .unwrap();
        let k = |id: &str| Some(known[id].key);
        let db = &mut store.db;
        let trigger = Some(PageAction::Trigger {
            severity: Severity::Critical,
            replaces: None,
        });
        let e1 = put(db, k("a"), 1, delivery(Priority::Resolve, None));
        let e2 = put(db, k("b"), 2, delivery(Priority::Info, None));
        let e3 = put(db, k("a"), 3, delivery(Priority::Fresh, trigger));
        let e4 = put(db, k("c"), 4, delivery(Priority::Fresh, trigger));
        let e5 = put(db, None, 5, delivery(Priority::Fresh, None));
        let by_priority = due_heads(db, "s", 10, Order::Priority, 10).unwrap();
        assert_eq!(ids(&by_priority), [&e4, &e5, &e1, &e2], "e3 waits for e1");
        assert_eq!(by_priority[0].action, trigger, "the action comes back");
        assert_eq!(by_priority[0].out.connection_id.as_deref(), Some("c"));
        let by_time = due_heads(db, "s", 10, Order::Time, 10).unwrap();
        assert_eq!(ids(&by_time), [&e1, &e2, &e4, &e5]);
        assert_eq!(
            ids(&due_heads(db, "s", 10, Order::Priority, 2).unwrap()),
            [&e4, &e5]
        );
        assert!(due_heads(db, "other", 10, Order::Priority, 10)
            .unwrap()
            .is_empty());
        // Nothing is due before its time.
        assert_eq!(
            ids(&due_heads(db, "s", 2, Order::Time, 10).unwrap()),
            [&e1, &e2]
        );
        // e1 delivered: a's trigger heads its queue and goes first; e2 is
        // retried later and waits.
        let a = Attempt {
            started: 10,
            status: Some(200),
            error: None,
            duration_ms: 1,
            verdict: "done",
        };
        let seq = |id: &str| by_time.iter().find(|d| d.out.id == id).unwrap().event;
        record_attempts(
            db,
            "s",
            &[(seq(&e1), "done", 10), (seq(&e2), "pending", 50)],
            &a,
        )
        .unwrap();
        assert_eq!(
            ids(&due_heads(db, "s", 10, Order::Priority, 10).unwrap()),
            [&e3, &e4, &e5]
        );
        assert_eq!(next_retry(db, 10).unwrap(), Some(50));
        assert_eq!(pending_count(db).unwrap(), 4);
        let attempts: i64 = db
            .query_row("SELECT count(*) FROM delivery_attempts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(attempts, 2);
        // Each read walks its index in order: no scan, no sort.
        for sql in [DUE_BY_PRIORITY, DUE_BY_TIME] {
            let plan: Vec<String> = db
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(params!["s", 10, 10], |r| r.get::<_, String>(3))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            let plan = plan.join("; ");
            assert!(
                plan.contains("USING INDEX deliveries_queue (sink=?)")
                    || plan.contains("USING INDEX deliveries_fifo (sink=?)"),
                "{plan}"
            );
            assert!(plan.contains("INDEX deliveries_pair"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
        // A sink that is gone from the configuration: its deliveries die.
        assert_eq!(bury_unconfigured(db, &["other"], 20).unwrap(), 4);
        assert_eq!(pending_count(db).unwrap(), 0);
    }
}
