//! The schema, versioned with `PRAGMA user_version`; each migration runs once,
//! in its own transaction.

use rusqlite::Connection;

/// Migrations in order; the schema version is their count.
const MIGRATIONS: &[&str] = &[
    // 1: the core tables.
    "
    CREATE TABLE connections (
        key INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        name TEXT,
        url TEXT NOT NULL,              -- credentials masked
        configured INTEGER NOT NULL DEFAULT 1,
        health TEXT NOT NULL DEFAULT 'unknown',
        health_since INTEGER,           -- unix ms
        circuit TEXT NOT NULL DEFAULT 'closed',
        consecutive_failures INTEGER NOT NULL DEFAULT 0
    );
    -- Every probe that was not online, in full.
    CREATE TABLE probes (
        conn INTEGER NOT NULL REFERENCES connections(key),
        at INTEGER NOT NULL,            -- unix ms, request start
        outcome INTEGER NOT NULL,       -- model::Outcome::code
        latency_ms INTEGER NOT NULL,
        http_status INTEGER,
        error_kind INTEGER,             -- model::ErrorKind::code
        error_message TEXT
    );
    CREATE INDEX probes_conn_at ON probes (conn, at);
    -- Runs of consecutive online probes, collapsed.
    CREATE TABLE probe_runs (
        conn INTEGER NOT NULL REFERENCES connections(key),
        first_at INTEGER NOT NULL,
        last_at INTEGER NOT NULL,
        count INTEGER NOT NULL,
        latency_min INTEGER NOT NULL,
        latency_max INTEGER NOT NULL,
        latency_sum INTEGER NOT NULL
    );
    CREATE INDEX probe_runs_conn_last ON probe_runs (conn, last_at);
    -- Confirmed health changes.
    CREATE TABLE transitions (
        id INTEGER PRIMARY KEY,
        conn INTEGER NOT NULL REFERENCES connections(key),
        at INTEGER NOT NULL,
        previous TEXT NOT NULL,
        current TEXT NOT NULL,
        error_kind INTEGER,
        error_message TEXT,
        latency_ms INTEGER,
        http_status INTEGER,
        consecutive_failures INTEGER NOT NULL
    );
    CREATE INDEX transitions_conn_at ON transitions (conn, at);
    -- The outbox: one row per event, written with the change that caused it.
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,        -- evt_<ulid>
        type TEXT NOT NULL,
        conn INTEGER REFERENCES connections(key),
        at INTEGER NOT NULL,
        transition INTEGER REFERENCES transitions(id),
        envelope TEXT NOT NULL          -- the JSON sent to sinks
    );
    CREATE INDEX events_conn ON events (conn, seq);
    -- One delivery per event and subscribed sink.
    CREATE TABLE deliveries (
        event INTEGER NOT NULL REFERENCES events(seq),
        sink TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',   -- pending | done | dead
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        last_error TEXT,
        PRIMARY KEY (event, sink)
    ) WITHOUT ROWID;
    CREATE INDEX deliveries_pending ON deliveries (state, next_at);
    -- Hourly statistics, kept a year.
    CREATE TABLE rollups (
        hour INTEGER NOT NULL,          -- unix ms of the hour's start
        conn INTEGER NOT NULL REFERENCES connections(key),
        count INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        latency_p50 INTEGER NOT NULL,
        latency_p95 INTEGER NOT NULL,
        latency_max INTEGER NOT NULL,
        PRIMARY KEY (hour, conn)
    ) WITHOUT ROWID;
    ",
    // 2: breaker, holds, flapping, suppression and what status shows.
    "
    ALTER TABLE connections ADD COLUMN state TEXT;          -- monitor::MonitorState, JSON
    ALTER TABLE connections ADD COLUMN hold_until INTEGER;  -- no probe before this (unix ms)
    ALTER TABLE connections ADD COLUMN hold_reason TEXT;    -- circuit_open | retry_after | auth_backoff | paused_by_parent
    ALTER TABLE connections ADD COLUMN suppressed TEXT;     -- maintenance | parent | flapping
    ALTER TABLE connections ADD COLUMN sent_health TEXT;    -- last health sent to receivers
    ALTER TABLE connections ADD COLUMN cadence TEXT;        -- 'every 30s' or a cron expression
    ALTER TABLE connections ADD COLUMN interval_ms INTEGER;
    ALTER TABLE connections ADD COLUMN depends_on TEXT;
    ALTER TABLE events ADD COLUMN suppressed TEXT;          -- recorded, not delivered: why
    ",
    // 3: every delivery attempt.
    "
    CREATE TABLE delivery_attempts (
        event INTEGER NOT NULL REFERENCES events(seq),
        sink TEXT NOT NULL,
        at INTEGER NOT NULL,            -- unix ms
        status INTEGER,                 -- HTTP status or exit code
        error TEXT,
        duration_ms INTEGER NOT NULL,
        verdict TEXT NOT NULL           -- done | retry | dead | skipped
    );
    CREATE INDEX delivery_attempts_event ON delivery_attempts (event, sink);
    ",
    // 4: the status page reads one connection's rollups by time.
    "
    CREATE INDEX rollups_conn_hour ON rollups (conn, hour);
    ",
    // 5: the alert policy. Each delivery knows its connection (order holds
    // per sink and connection), its priority (fresh news first) and, for
    // paging sinks, what the incident does; a sink's next deliveries are
    // read from small partial indexes, never by scanning the outbox.
    "
    ALTER TABLE deliveries ADD COLUMN conn INTEGER;                    -- the event's connection; NULL for system events
    ALTER TABLE deliveries ADD COLUMN priority INTEGER NOT NULL DEFAULT 2;  -- policy::Priority: 0 fresh, 1 resolve, 2 info
    ALTER TABLE deliveries ADD COLUMN action TEXT;                     -- policy::PageAction (paging sinks)
    UPDATE deliveries SET conn = (SELECT e.conn FROM events e WHERE e.seq = deliveries.event);
    CREATE INDEX deliveries_queue ON deliveries (sink, priority, event) WHERE state = 'pending';
    CREATE INDEX deliveries_pair ON deliveries (sink, conn, event) WHERE state = 'pending';
    CREATE INDEX deliveries_fifo ON deliveries (sink, event) WHERE state = 'pending';
    ALTER TABLE connections ADD COLUMN success_threshold INTEGER;      -- for the recovery latency `status` shows
    ",
    // 6: which daemon writes this database, and when it last did.
    "
    CREATE TABLE daemon (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        pid INTEGER NOT NULL,
        version TEXT NOT NULL,
        started_at INTEGER NOT NULL,   -- unix ms
        beat_at INTEGER NOT NULL,      -- the writer's last heartbeat
        stopped_at INTEGER             -- set on a clean stop
    );
    ",
    // 7: operators' silences.
    "
    CREATE TABLE silences (
        id TEXT PRIMARY KEY,           -- sil_<ulid>
        connections TEXT,              -- JSON array of connection ids; NULL: every connection
        starts_at INTEGER NOT NULL,    -- unix ms
        ends_at INTEGER NOT NULL,
        reason TEXT NOT NULL,
        created_by TEXT NOT NULL,      -- who asked: the CLI's user, or the admin API
        ended_at INTEGER               -- ended early by an operator
    );
    CREATE INDEX silences_ends ON silences (ends_at);
    ",
    // 8: scopes. Each scope of a connection has a row of its own (id
    // `<connection>/<scope>`, which no connection id can be), so its
    // probes, runs, transitions and rollups live where a connection's do.
    "
    ALTER TABLE connections ADD COLUMN scope_of TEXT;       -- a scope's row: its connection's id
    CREATE INDEX connections_scope_of ON connections (scope_of) WHERE scope_of IS NOT NULL;
    ",
    // 9: discovery. Where each connection came from, and each source's
    // last good set (so a restart without the source still watches it).
    "
    ALTER TABLE connections ADD COLUMN origin TEXT;         -- discovery source id; NULL: the file
    CREATE TABLE discovery (
        source TEXT PRIMARY KEY,
        tracker TEXT NOT NULL,          -- JSON: discovery::tracker::Tracker
        refreshed_at INTEGER            -- unix ms of the last answer (good or not)
    );
    ",
    // 10: reports. Each connection's SLO, and the maintenance windows of
    // the configuration the daemon last started with (uptime leaves them
    // out).
    "
    ALTER TABLE connections ADD COLUMN slo REAL;          -- a fraction: 0.995
    CREATE TABLE maintenance_windows (
        idx INTEGER PRIMARY KEY,
        schedule TEXT NOT NULL,         -- cron, seconds first (UTC)
        duration_ms INTEGER NOT NULL,
        connections TEXT                -- JSON array of ids; NULL: every connection
    );
    ",
];

pub const VERSION: i64 = MIGRATIONS.len() as i64;

#[derive(Debug)]
pub enum MigrateError {
    Sqlite(rusqlite::Error),
    TooNew(i64),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sqlite(e)
    }
}

pub fn migrate(db: &Connection) -> Result<(), MigrateError> {
    let current: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > VERSION {
        return Err(MigrateError::TooNew(current));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        db.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))?;
    }
    Ok(())
}
