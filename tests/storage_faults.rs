//! Storage faults with the real binary: the database locked by another
//! process, the filesystem full, the database file deleted or replaced.
//! connwatch keeps probing, raises one `system.error` straight to the sinks
//! (the outbox is in the database it cannot write), catches up when the
//! fault clears, and exits non-zero when its file is gone.

mod common;
use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use common::*;
use serde_json::Value;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
struct Servers {
    /// Requests to `/up`.
    up_hits: Arc<AtomicU64>,
    /// Webhook bodies received.
    hooks: Arc<Mutex<Vec<Value>>>,
}

/// `/up` answers online, `/down` offline; `/hook` takes webhooks.
fn servers() -> (std::net::SocketAddr, Servers) {
    let s = Servers::default();
    let app = Router::new()
        .route(
            "/up",
            get(|State(s): State<Servers>| async move {
                s.up_hits.fetch_add(1, Ordering::SeqCst);
                r#"{"status":"online"}"#
            }),
        )
        .route(
            "/down",
            get(|| async {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"status":"offline"}"#,
                )
            }),
        )
        .route(
            "/hook",
            post(|State(s): State<Servers>, body: String| async move {
                if let Ok(v) = serde_json::from_str(&body) {
                    s.hooks.lock().unwrap().push(v);
                }
                axum::http::StatusCode::OK
            }),
        )
        .with_state(s.clone());
    (serve_on_thread(app), s)
}

fn config(addr: std::net::SocketAddr, database: &str) -> String {
    format!(
        r#"
[daemon]
database = "{database}"
history_flush = "1s"

[defaults]
interval = "250ms"
timeout = "200ms"
breaker = {{ failure_threshold = 2, open_for = "1h", max_open_for = "2h" }}

[[connection]]
id = "up"
url = "http://{addr}/up"

[[connection]]
id = "down"
url = "http://{addr}/down"

# Always offline, and its circuit never opens: a probe row to write every
# 250 ms.
[[connection]]
id = "flaky"
url = "http://{addr}/down"
breaker = {{ failure_threshold = 100 }}

[[sink]]
id = "hook"
kind = "webhook"
url = "http://{addr}/hook"
"#
    )
}

fn system_errors(s: &Servers) -> Vec<Value> {
    s.hooks
        .lock()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "system.error")
        .cloned()
        .collect()
}

fn scalar(db: &std::path::Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// Probes of `/up` in the last `d`.
fn up_rate(s: &Servers, d: Duration) -> u64 {
    let before = s.up_hits.load(Ordering::SeqCst);
    std::thread::sleep(d);
    s.up_hits.load(Ordering::SeqCst) - before
}

/// Probes of `flaky` recorded between two instants (unix ms).
fn flaky_probes(db: &std::path::Path, from: i64, to: i64) -> i64 {
    scalar(
        db,
        &format!(
            "SELECT count(*) FROM probes p JOIN connections c ON c.key = p.conn
             WHERE c.id = 'flaky' AND p.at BETWEEN {from} AND {to}"
        ),
    )
}

fn integrity(db: &std::path::Path) -> String {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_locked_database_holds_results_raises_one_system_error_and_catches_up() {
    let (addr, s) = servers();
    let setup = Setup::new(&config(addr, "cw.db"));
    let mut child = setup.spawn_daemon(&[]);
    let db = setup.db();
    assert!(
        eventually(Duration::from_secs(10), || db.exists()
            && scalar(
                &db,
                "SELECT count(*) FROM connections WHERE circuit = 'open'"
            ) == 1),
        "the circuit of `down` never opened; log:\n{}",
        setup.daemon_log()
    );

    // Another process takes the write lock and keeps it for 12 s.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let locked_at = Instant::now();
    let locked_ms = connwatch::model::now_ms();
    let during = up_rate(&s, Duration::from_secs(4));
    assert!(
        eventually(Duration::from_secs(15), || !system_errors(&s).is_empty()),
        "no system.error while the database was locked; log:\n{}",
        setup.daemon_log()
    );
    let raised_after = locked_at.elapsed();
    while locked_at.elapsed() < Duration::from_secs(12) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "daemon died while locked"
    );
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);

    // Catch-up: the writer commits what it held.
    assert!(
        eventually(Duration::from_secs(30), || setup
            .daemon_log()
            .contains("database writes recovered")),
        "writes never recovered; log:\n{}",
        setup.daemon_log()
    );
    let after = up_rate(&s, Duration::from_secs(2));
    assert_eq!(terminate(&mut child, Duration::from_secs(20)), Some(0));
    let log = setup.daemon_log();
    assert!(log.contains("database write failed"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(integrity(&db), "ok");
    // One system.error for the whole streak, naming the cause.
    let errs = system_errors(&s);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0]["data"]["component"], "database");
    let msg = errs[0]["data"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("database writes keep failing"), "{msg}");
    assert!(msg.contains("locked") || msg.contains("busy"), "{msg}");
    // The healthy connection was probed on schedule during the lock (4 a
    // second) and after it.
    assert!(
        during >= 10,
        "only {during} probes of `up` in 4 s while locked"
    );
    assert!(after >= 5, "only {after} probes of `up` in 2 s after");
    // The probes made while locked were held, then written (4 a second).
    let held = flaky_probes(&db, locked_ms, locked_ms + 12_000);
    assert!(
        held >= 30,
        "only {held} probes of `flaky` from the locked 12 s were written"
    );
    eprintln!(
        "locked: system.error after {:.1} s; {during} probes of `up` in 4 s while locked; \
         {held} probes from the locked 12 s written afterwards",
        raised_after.as_secs_f64()
    );
}

#[test]
fn a_deleted_or_replaced_database_makes_the_daemon_exit_non_zero() {
    for how in ["deleted", "replaced"] {
        let (addr, _s) = servers();
        let setup = Setup::new(&config(addr, "cw.db"));
        let mut child = setup.spawn_daemon(&[]);
        let db = setup.db();
        assert!(eventually(Duration::from_secs(10), || db.exists()
            && scalar(&db, "SELECT count(*) FROM transitions") >= 1));
        if how == "deleted" {
            std::fs::remove_file(&db).unwrap();
        } else {
            let other = setup.dir.path().join("other.db");
            std::fs::write(&other, b"").unwrap();
            std::fs::rename(&other, &db).unwrap();
        }
        let t = Instant::now();
        let code = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st.code();
            }
            if t.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("daemon still running 20 s after its database was {how}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = setup.daemon_log();
        assert_eq!(code, Some(1), "{how}: exit code; log:\n{log}");
        assert!(
            log.contains(&format!("was {how} while connwatch held it open")),
            "{how}: log:\n{log}"
        );
        assert!(!log.contains("panicked"), "{log}");
        eprintln!(
            "database {how}: exit 1 after {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn a_full_filesystem_holds_results_and_catches_up_when_space_returns() {
    let (addr, s) = servers();
    // A 2 MiB tmpfs holds the database. Mounting needs root (CAP_SYS_ADMIN);
    // CI runs as root.
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the full-disk case is not tested"
        );
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let db = mnt.join("cw.db");
    let setup = Setup::new(&config(addr, &db.display().to_string()));
    let mut child = setup.spawn_daemon(&[]);
    assert!(eventually(Duration::from_secs(10), || db.exists()
        && scalar(
            &db,
            "SELECT count(*) FROM connections WHERE circuit = 'open'"
        ) == 1));

    // Fill the filesystem.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 16 * 1024];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&[0u8; 512]).is_ok() {}
        let _ = f.sync_all();
    }
    let full_ms = connwatch::model::now_ms();
    let raised = eventually(Duration::from_secs(20), || !system_errors(&s).is_empty());
    let during = up_rate(&s, Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "daemon died on a full disk"
    );
    assert!(
        raised,
        "no system.error on a full disk; log:\n{}",
        setup.daemon_log()
    );

    // Space returns.
    let freed_ms = connwatch::model::now_ms();
    std::fs::remove_file(&filler).unwrap();
    assert!(
        eventually(Duration::from_secs(40), || setup
            .daemon_log()
            .contains("database writes recovered")),
        "writes never recovered; log:\n{}",
        setup.daemon_log()
    );
    assert_eq!(terminate(&mut child, Duration::from_secs(20)), Some(0));
    let log = setup.daemon_log();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(integrity(&db), "ok");
    let errs = system_errors(&s);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let msg = errs[0]["data"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("full"), "{msg}");
    assert!(
        during >= 8,
        "only {during} probes of `up` in 3 s on a full disk"
    );
    let held = flaky_probes(&db, full_ms, freed_ms);
    let secs = (freed_ms - full_ms) as f64 / 1000.0;
    assert!(
        held as f64 >= secs * 4.0 * 0.6,
        "only {held} probes of `flaky` from the {secs:.1} s of full disk were written"
    );
    eprintln!(
        "full disk: system.error raised; {during} probes of `up` in 3 s while full; {held} probes \
         from the {secs:.1} s of full disk written after space returned"
    );
}
