//! SQLite storage: schema and migrations, the single batching writer, the
//! queries behind `status` and `history`, and retention.
//!
//! Volume shapes the schema (10,000 connections every 30 s are 28.8 million
//! probes a day):
//! - `probes` keeps every probe that was *not* online, in full;
//! - `probe_runs` collapses runs of online probes into one row (first and
//!   last time, count, latency min/max/sum); the writer holds the open run in
//!   memory and appends the row when the run ends or at each `history_flush`;
//! - `transitions` keeps every confirmed health change, and `events` +
//!   `deliveries` are the outbox, written in the same transaction;
//! - `rollups` keeps hourly count/failures/latency per connection for a year.

pub mod daemon_row;
pub mod discovery;
pub mod outbox;
pub mod query;
pub mod report;
pub mod retention;
mod schema;
pub mod silences;
pub mod writer;

use crate::model::{Health, UnixMs};
use rusqlite::{Connection as Db, OpenFlags, OptionalExtension};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a statement waits for another writer before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("database {path} has schema version {found}, newer than this connwatch knows ({known}); upgrade connwatch")]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("database {path} does not exist (has the daemon run yet?)")]
    Missing { path: String },
    #[error("database {path} is not set up yet (the daemon is starting, or has never run)")]
    Empty { path: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// An open database.
pub struct Store {
    pub db: Db,
    pub path: PathBuf,
}

/// The row id of scope `scope` of connection `conn`: `conn/scope` (ids
/// have no `/`, so it names no connection).
pub fn scope_row_id(conn: &str, scope: &str) -> String {
    format!("{conn}/{scope}")
}

/// A connection row's persisted identity and state.
#[derive(Debug, Clone)]
pub struct Known {
    /// Row id used as the foreign key everywhere (4 bytes instead of the id text).
    pub key: i64,
    pub health: Health,
    pub since: Option<UnixMs>,
    /// The monitor state snapshot (JSON), if any was saved.
    pub state: Option<String>,
}

/// What the database records about a configured connection.
#[derive(Debug, Clone, Default)]
pub struct ConnMeta {
    pub id: String,
    pub name: Option<String>,
    /// Credentials masked.
    pub url: String,
    /// `every 30s` or the cron expression.
    pub cadence: String,
    pub interval_ms: Option<i64>,
    pub depends_on: Option<String>,
    /// Successes that close a circuit and confirm `online` (status works
    /// out how soon a recovery would be resolved).
    pub success_threshold: u32,
    /// For a scope's row: its connection's id.
    pub scope_of: Option<String>,
    /// The discovery source that listed it.
    pub origin: Option<String>,
    /// Its `slo`, a fraction.
    pub slo: Option<f64>,
}

impl ConnMeta {
    pub fn of(c: &crate::config::Connection) -> ConnMeta {
        ConnMeta {
            id: c.id.clone(),
            name: c.name.clone(),
            url: crate::config::redact_url(&c.url),
            cadence: match &c.cadence {
                crate::config::Cadence::Interval(d) => {
                    format!("every {}", crate::config::format_duration(*d))
                }
                crate::config::Cadence::Cron(e) => e.clone(),
            },
            interval_ms: c.interval().map(|d| d.as_millis() as i64),
            depends_on: c.depends_on.clone(),
            success_threshold: c.breaker.success_threshold,
            scope_of: None,
            origin: c.origin.as_deref().map(str::to_string),
            slo: c.slo,
        }
    }

    /// The row of scope `s` of connection `c`.
    pub fn scope(c: &crate::config::Connection, s: &crate::config::Scope) -> ConnMeta {
        ConnMeta {
            id: scope_row_id(&c.id, &s.id),
            name: None,
            url: crate::config::redact_url(&s.url),
            cadence: format!("every {}", crate::config::format_duration(s.interval)),
            interval_ms: Some(s.interval.as_millis() as i64),
            depends_on: None,
            success_threshold: c.breaker.success_threshold,
            scope_of: Some(c.id.clone()),
            origin: c.origin.as_deref().map(str::to_string),
            slo: None,
        }
    }

    /// The rows of a configuration's connections and their scopes.
    pub fn all(config: &crate::config::Config) -> Vec<ConnMeta> {
        let mut out = Vec::with_capacity(config.connections.len());
        for c in &config.connections {
            out.push(ConnMeta::of(c));
            out.extend(c.scopes.iter().map(|s| ConnMeta::scope(c, s)));
        }
        out
    }

    /// A bare entry (tests).
    pub fn bare(id: &str) -> ConnMeta {
        ConnMeta {
            id: id.into(),
            url: "http://h/".into(),
            cadence: "every 30s".into(),
            success_threshold: crate::config::DEFAULT_SUCCESS_THRESHOLD,
            ..Default::default()
        }
    }
}

impl Store {
    /// Opens (creating with mode 0600 if needed) and migrates for writing.
    pub fn open(path: &Path) -> Result<Store> {
        let io = |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        create_private(path).map_err(io)?;
        let db = Db::open(path).map_err(|e| sq(path, e))?;
        let store = Store {
            db,
            path: path.to_path_buf(),
        };
        store.pragmas(true)?;
        schema::migrate(&store.db).map_err(|e| match e {
            schema::MigrateError::Sqlite(e) => sq(path, e),
            schema::MigrateError::TooNew(found) => StoreError::TooNew {
                path: path.display().to_string(),
                found,
                known: schema::VERSION,
            },
        })?;
        Ok(store)
    }

    /// Opens an existing database read-only (CLI while the daemon runs).
    pub fn open_read_only(path: &Path) -> Result<Store> {
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.display().to_string(),
            });
        }
        let db = Db::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sq(path, e))?;
        let store = Store {
            db,
            path: path.to_path_buf(),
        };
        store.pragmas(false)?;
        // Created, but the daemon has not committed its tables yet.
        if store.schema_version()? == 0 {
            return Err(StoreError::Empty {
                path: path.display().to_string(),
            });
        }
        Ok(store)
    }

    fn pragmas(&self, write: bool) -> Result<()> {
        let p = &self.path;
        self.db.busy_timeout(BUSY_TIMEOUT).map_err(|e| sq(p, e))?;
        if write {
            self.db
                .execute_batch(
                    "PRAGMA auto_vacuum=INCREMENTAL; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
                )
                .map_err(|e| sq(p, e))?;
        } else {
            self.db
                .execute_batch("PRAGMA foreign_keys=ON;")
                .map_err(|e| sq(p, e))?;
        }
        Ok(())
    }

    /// Makes sure every configured connection has a row; returns each one's
    /// key and last confirmed health (so health survives a restart).
    /// Connections no longer configured keep their rows and history.
    pub fn sync_connections(&mut self, conns: &[ConnMeta]) -> Result<HashMap<String, Known>> {
        let p = self.path.clone();
        let tx = self.db.transaction().map_err(|e| sq(&p, e))?;
        tx.execute("UPDATE connections SET configured = 0", [])
            .map_err(|e| sq(&p, e))?;
        let mut out = HashMap::new();
        {
            let mut up = tx
                .prepare(
                    "INSERT INTO connections (id, name, url, configured, cadence, interval_ms, depends_on, success_threshold, scope_of, origin, slo)
                     VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT(id) DO UPDATE SET name = excluded.name, url = excluded.url, configured = 1,
                       cadence = excluded.cadence, interval_ms = excluded.interval_ms, depends_on = excluded.depends_on,
                       success_threshold = excluded.success_threshold, scope_of = excluded.scope_of,
                       origin = excluded.origin, slo = excluded.slo",
                )
                .map_err(|e| sq(&p, e))?;
            let mut get = tx
                .prepare("SELECT key, health, health_since, state FROM connections WHERE id = ?1")
                .map_err(|e| sq(&p, e))?;
            for c in conns {
                up.execute(rusqlite::params![
                    c.id,
                    c.name,
                    c.url,
                    c.cadence,
                    c.interval_ms,
                    c.depends_on,
                    c.success_threshold,
                    c.scope_of,
                    c.origin,
                    c.slo
                ])
                .map_err(|e| sq(&p, e))?;
                let k = get
                    .query_row([&c.id], |r| {
                        Ok(Known {
                            key: r.get(0)?,
                            health: Health::parse(&r.get::<_, String>(1)?)
                                .unwrap_or(Health::Unknown),
                            since: r.get(2)?,
                            state: r.get(3)?,
                        })
                    })
                    .map_err(|e| sq(&p, e))?;
                out.insert(c.id.clone(), k);
            }
        }
        tx.commit().map_err(|e| sq(&p, e))?;
        Ok(out)
    }

    /// Replaces the stored maintenance windows with `windows` (the running
    /// configuration's), for uptime reports.
    pub fn sync_windows(&mut self, windows: &[crate::config::Maintenance]) -> Result<()> {
        let p = self.path.clone();
        let tx = self.db.transaction().map_err(|e| sq(&p, e))?;
        tx.execute("DELETE FROM maintenance_windows", [])
            .map_err(|e| sq(&p, e))?;
        for w in windows {
            tx.execute(
                "INSERT INTO maintenance_windows (schedule, duration_ms, connections) VALUES (?1, ?2, ?3)",
                rusqlite::params![
                    w.schedule,
                    w.duration.as_millis() as i64,
                    w.connections
                        .as_ref()
                        .map(|c| serde_json::to_string(c).unwrap_or_default())
                ],
            )
            .map_err(|e| sq(&p, e))?;
        }
        tx.commit().map_err(|e| sq(&p, e))
    }

    /// The schema version (for `check` and tests).
    pub fn schema_version(&self) -> Result<i64> {
        self.db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sq(&self.path, e))
    }

    /// A connection's key by id.
    pub fn key_of(&self, id: &str) -> Result<Option<i64>> {
        self.db
            .query_row("SELECT key FROM connections WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| sq(&self.path, e))
    }
}

pub(crate) fn sq(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    }
}

/// Creates the file with mode 0600 if it does not exist (SQLite gives its
/// `-wal` and `-shm` files the same mode).
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_private_file_with_current_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cw.db");
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), schema::VERSION);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let jm: String =
            s.db.query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
        assert_eq!(jm, "wal");
        drop(s);
        // Re-opening migrates nothing and keeps the version.
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), schema::VERSION);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cw.db");
        let s = Store::open(&path).unwrap();
        s.db.execute_batch("PRAGMA user_version = 999").unwrap();
        drop(s);
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 999, .. })
        ));
    }

    #[test]
    fn sync_keeps_keys_and_health() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cw.db");
        let mut s = Store::open(&path).unwrap();
        let a = s.sync_connections(&[ConnMeta::bare("a")]).unwrap();
        s.db.execute(
            "UPDATE connections SET health = 'offline', health_since = 5 WHERE id = 'a'",
            [],
        )
        .unwrap();
        let b = s
            .sync_connections(&[ConnMeta::bare("b"), ConnMeta::bare("a")])
            .unwrap();
        assert_eq!(a["a"].key, b["a"].key);
        assert_eq!(b["a"].health, Health::Is(crate::model::Outcome::Offline));
        assert_eq!(b["a"].since, Some(5));
        assert_eq!(b["b"].health, Health::Unknown);
    }

    #[test]
    fn read_only_open_of_a_missing_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = Store::open_read_only(&dir.path().join("nope.db"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("does not exist"));
    }
}
