//! The sd_notify protocol (systemd 252, `Type=notify`).
//!
//! - `READY=1` once the database is open and schedules are set;
//! - `STATUS=` a one-line summary (connections, failing, pending deliveries);
//! - `WATCHDOG=1` at half of `WATCHDOG_USEC`, sent from the engine's loop and
//!   only while the writer's heartbeat is fresh: a wedged scheduler or a
//!   stuck writer stops the pings, and systemd restarts the daemon;
//! - `STOPPING=1` on shutdown.
//!
//! Without `NOTIFY_SOCKET` every call does nothing.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The writer beats at least this often while it runs.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Without a watchdog, the status line is refreshed this often.
pub const STATUS_EVERY: Duration = Duration::from_secs(10);
/// A heartbeat older than this means the writer is stuck.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(20);

/// Progress signals shared by the parts that prove the daemon alive.
#[derive(Clone, Default)]
pub struct Liveness {
    /// Unix ms of the writer's last loop.
    pub writer_beat: Arc<AtomicI64>,
    /// Unix ms of the engine's last heartbeat (its loop turns at least
    /// every [`HEARTBEAT`]).
    pub engine_beat: Arc<AtomicI64>,
    /// Pending deliveries seen by the dispatcher's last scan.
    pub pending_deliveries: Arc<AtomicUsize>,
}

impl Liveness {
    pub fn writer_fresh(&self, now_ms: i64) -> bool {
        now_ms - self.writer_beat.load(Ordering::Relaxed) < HEARTBEAT_STALE.as_millis() as i64
    }

    pub fn engine_fresh(&self, now_ms: i64) -> bool {
        now_ms - self.engine_beat.load(Ordering::Relaxed) < HEARTBEAT_STALE.as_millis() as i64
    }

    /// The engine loop and the database writer both beat: the condition
    /// for the watchdog alert and the heartbeat URL.
    pub fn healthy(&self, now_ms: i64) -> bool {
        self.engine_fresh(now_ms) && self.writer_fresh(now_ms)
    }
}

/// The watchdog period if it is meant for this process: as libsystemd's
/// `sd_watchdog_enabled`, an absent `WATCHDOG_PID` means "for us".
pub fn watchdog_usec(usec: Option<&str>, pid: Option<&str>, own: u32) -> Option<u64> {
    let usec: u64 = usec?.parse().ok().filter(|u| *u > 0)?;
    match pid {
        None => Some(usec),
        Some(p) => (p.parse::<u32>().ok()? == own).then_some(usec),
    }
}

pub struct Notifier {
    enabled: bool,
    /// Half of WATCHDOG_USEC, when the watchdog is on.
    watchdog: Option<Duration>,
    last_ping: Option<Instant>,
    last_status: String,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (and `WATCHDOG_PID`).
    pub fn from_env() -> Notifier {
        let watchdog = watchdog_usec(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        )
        .map(|usec| Duration::from_micros(usec / 2));
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog,
            last_ping: None,
            last_status: String::new(),
        }
    }

    fn send(&self, states: &[sd_notify::NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        let mut msg = String::new();
        for s in states {
            msg.push_str(&s.to_string());
            msg.push('\n');
        }
        if let Err(e) = send_now(&msg) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    pub fn ready(&mut self, status: &str) {
        self.last_status = status.to_string();
        self.send(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(status),
        ]);
        self.last_ping = Some(Instant::now());
    }

    /// Before a reload: `RELOADING=1` with `MONOTONIC_USEC` (systemd 252
    /// wants both); the new generation's `READY=1` ends it.
    pub fn reloading(&self) {
        match sd_notify::NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[
                sd_notify::NotifyState::Reloading,
                now,
                sd_notify::NotifyState::Status("reloading"),
            ]),
            Err(_) => self.send(&[sd_notify::NotifyState::Reloading]),
        }
    }

    /// After a rejected reload: the old configuration keeps running.
    pub fn ready_again(&self, status: &str) {
        self.send(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(status),
        ]);
    }

    pub fn stopping(&self) {
        self.send(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("stopping"),
        ]);
    }

    /// When `alive` next has something to do: the watchdog ping, or (with
    /// no watchdog) a status refresh every [`STATUS_EVERY`].
    pub fn next_ping(&self) -> Option<Instant> {
        if !self.enabled {
            return None;
        }
        let every = self.watchdog.unwrap_or(STATUS_EVERY);
        Some(self.last_ping.map_or_else(Instant::now, |t| t + every))
    }

    /// Called from the engine's loop: pings the watchdog when due (only if
    /// `healthy`), and updates the status line when it changed.
    pub fn alive(&mut self, healthy: bool, status: &str) {
        let due = self.next_ping().is_some_and(|t| Instant::now() >= t);
        if due && self.watchdog.is_none() {
            if status != self.last_status {
                self.last_status = status.to_string();
                self.send(&[sd_notify::NotifyState::Status(status)]);
            }
            self.last_ping = Some(Instant::now());
        } else if due && healthy {
            if status != self.last_status {
                self.last_status = status.to_string();
                self.send(&[
                    sd_notify::NotifyState::Watchdog,
                    sd_notify::NotifyState::Status(status),
                ]);
            } else {
                self.send(&[sd_notify::NotifyState::Watchdog]);
            }
            self.last_ping = Some(Instant::now());
        } else if due {
            tracing::warn!("writer heartbeat is stale; not pinging the watchdog");
            self.last_ping = Some(Instant::now());
        }
    }
}

/// Sends one message to `NOTIFY_SOCKET` as `sd_notify::notify` does, but
/// never waits: the engine sends from its own loop, and a reader that has
/// stopped reading (a full queue: 10 datagrams by default) must cost a
/// lost message, not a stalled engine.
fn send_now(msg: &str) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    sock.connect(path)?;
    sock.send(msg.as_bytes()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_for_us_or_not() {
        assert_eq!(watchdog_usec(Some("30000000"), None, 7), Some(30_000_000));
        assert_eq!(
            watchdog_usec(Some("30000000"), Some("7"), 7),
            Some(30_000_000)
        );
        assert_eq!(watchdog_usec(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_usec(Some("0"), None, 7), None);
        assert_eq!(watchdog_usec(Some("x"), None, 7), None);
        assert_eq!(watchdog_usec(None, Some("7"), 7), None);
    }
}
