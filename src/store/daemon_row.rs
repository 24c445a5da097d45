//! The `daemon` row: which process writes this database, and when it last
//! did. The writer records a heartbeat every [`super::writer::BEAT_EVERY`]
//! and a clean stop; `connwatch status` reads them to tell a running daemon
//! from a stopped one without the admin server.

use crate::model::UnixMs;
use rusqlite::{params, Connection as Db, OptionalExtension};
use std::time::Duration;

/// A heartbeat older than this means nobody is writing.
pub const STALE: Duration = Duration::from_secs(20);

/// Records a daemon that starts now.
pub fn started(db: &Db, pid: u32, version: &str, now: UnixMs) -> rusqlite::Result<()> {
    db.execute(
        "INSERT INTO daemon (id, pid, version, started_at, beat_at, stopped_at) VALUES (1, ?1, ?2, ?3, ?3, NULL)
         ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, version = excluded.version,
           started_at = excluded.started_at, beat_at = excluded.beat_at, stopped_at = NULL",
        params![pid, version, now],
    )
    .map(|_| ())
}

pub(super) fn beat(tx: &rusqlite::Transaction<'_>, now: UnixMs) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE daemon SET beat_at = ?1 WHERE id = 1")?
        .execute([now])
        .map(|_| ())
}

pub(super) fn stopped(tx: &rusqlite::Transaction<'_>, now: UnixMs) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE daemon SET beat_at = ?1, stopped_at = ?1 WHERE id = 1")?
        .execute([now])
        .map(|_| ())
}

/// What the row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonRow {
    pub pid: u32,
    pub version: String,
    pub started_at: UnixMs,
    pub beat_at: UnixMs,
    pub stopped_at: Option<UnixMs>,
}

/// The row, if a daemon ever wrote this database (a database of an older
/// version, without the table, reads as none).
pub fn read(db: &Db) -> rusqlite::Result<Option<DaemonRow>> {
    let table: Option<String> = db
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'daemon'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if table.is_none() {
        return Ok(None);
    }
    db.query_row(
        "SELECT pid, version, started_at, beat_at, stopped_at FROM daemon WHERE id = 1",
        [],
        |r| {
            Ok(DaemonRow {
                pid: r.get(0)?,
                version: r.get(1)?,
                started_at: r.get(2)?,
                beat_at: r.get(3)?,
                stopped_at: r.get(4)?,
            })
        },
    )
    .optional()
}

/// Whether a daemon keeps this database current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Running {
    /// Its heartbeat is fresh.
    Yes {
        pid: u32,
        since: UnixMs,
        last_write: UnixMs,
    },
    /// Its process is there but has not written for a while (the database
    /// cannot be written: a full disk, a lock).
    NotWriting { pid: u32, last_write: UnixMs },
    /// It stopped cleanly.
    Stopped { at: UnixMs },
    /// Its heartbeat stopped (killed, crashed, the host went down).
    Gone { last_seen: UnixMs },
    /// No daemon ever wrote this database.
    Never,
}

impl Running {
    /// From the row, at `now`; `alive` says whether a process id is a
    /// running connwatch.
    pub fn judge(row: Option<&DaemonRow>, now: UnixMs, alive: impl Fn(u32) -> bool) -> Running {
        let Some(r) = row else {
            return Running::Never;
        };
        if let Some(at) = r.stopped_at {
            return Running::Stopped { at };
        }
        let fresh = now - r.beat_at < STALE.as_millis() as i64;
        match (fresh, alive(r.pid)) {
            (true, _) => Running::Yes {
                pid: r.pid,
                since: r.started_at,
                last_write: r.beat_at,
            },
            (false, true) => Running::NotWriting {
                pid: r.pid,
                last_write: r.beat_at,
            },
            (false, false) => Running::Gone {
                last_seen: r.beat_at,
            },
        }
    }

    /// Whether what the database shows is current.
    pub fn current(&self) -> bool {
        matches!(self, Running::Yes { .. })
    }

    /// One line for `status`.
    pub fn describe(&self, now: UnixMs) -> String {
        let ago = |t: UnixMs| crate::cli::ago(t, now);
        match self {
            Running::Yes {
                pid,
                since,
                last_write,
            } => format!(
                "daemon: running (pid {pid}, started {}), last write {}",
                ago(*since),
                ago(*last_write)
            ),
            Running::NotWriting { pid, last_write } => format!(
                "daemon: running (pid {pid}) but not writing the database, last write {}: rows are as of then",
                ago(*last_write)
            ),
            Running::Stopped { at } => {
                format!("daemon: stopped {}: rows are as of then", ago(*at))
            }
            Running::Gone { last_seen } => format!(
                "daemon: not running, last seen {}: rows are as of then",
                ago(*last_seen)
            ),
            Running::Never => "daemon: has never run on this database".into(),
        }
    }
}

/// Whether `pid` is a running connwatch process (on this host).
pub fn is_connwatch(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "connwatch")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(beat_at: UnixMs, stopped_at: Option<UnixMs>) -> DaemonRow {
        DaemonRow {
            pid: 7,
            version: "x".into(),
            started_at: 0,
            beat_at,
            stopped_at,
        }
    }

    #[test]
    fn a_fresh_heartbeat_a_stale_one_and_a_clean_stop() {
        let now = 100_000;
        assert_eq!(Running::judge(None, now, |_| true), Running::Never);
        assert!(Running::judge(Some(&row(now - 5_000, None)), now, |_| false).current());
        assert_eq!(
            Running::judge(Some(&row(now - 30_000, None)), now, |_| false),
            Running::Gone {
                last_seen: now - 30_000
            }
        );
        assert_eq!(
            Running::judge(Some(&row(now - 30_000, None)), now, |p| p == 7),
            Running::NotWriting {
                pid: 7,
                last_write: now - 30_000
            }
        );
        assert_eq!(
            Running::judge(Some(&row(now - 1, Some(now - 1))), now, |_| true),
            Running::Stopped { at: now - 1 }
        );
    }
}
