//! The Monit side-by-side run (`--monit`): Debian's `monit` checks the same
//! in-process target as the daemon, N hosts at the same interval, for the
//! same window, and its process CPU is read from `/proc/<pid>/stat` as the
//! daemon's is. `harness::run` calls it after the daemon's window (and the
//! floor), so the two never share the machine. Figures are printed, never
//! asserted.
#![allow(dead_code)]

use crate::harness::{cpu_seconds, proc_field};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the Monit run measured.
#[derive(Debug, Clone, Default)]
pub struct Side {
    /// `set daemon` seconds (the interval, rounded to whole seconds).
    pub cycle_s: u64,
    pub window_s: f64,
    /// Monit's CPU (user + system) in the window.
    pub cpu_s: f64,
    /// Requests that reached `/m/` in the window.
    pub checks: u64,
    pub us_per_check: f64,
    pub checks_per_s: f64,
    /// N / cycle: what Monit would make if a cycle took no time.
    pub scheduled_per_s: f64,
    pub cpu_pct_core: f64,
    /// The target's CPU in Monit's window, % of a core.
    pub target_cpu_pct: f64,
    pub vm_hwm_kib: u64,
    /// Lines of Monit's log at priority error (failed checks and the like).
    pub log_errors: usize,
}

/// `monit` on PATH, or where Debian puts it.
pub fn find() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join("monit"))
        .find(|p| p.is_file())
}

/// The control file: whole-second cycle, everything Monit writes inside
/// `dir`, no httpd, and one `check host` per endpoint (see monit(1),
/// "CHECK HOST", "HTTP").
pub fn monitrc(dir: &Path, port: u16, n: usize, cycle_s: u64) -> String {
    let d = dir.display();
    let mut rc = format!(
        "set daemon {cycle_s}\n\
         set log {d}/monit.log\n\
         set pidfile {d}/monit.pid\n\
         set idfile {d}/monit.id\n\
         set statefile {d}/monit.state\n"
    );
    for i in 0..n {
        rc.push_str(&format!(
            "check host m{i} with address 127.0.0.1\n    \
             if failed port {port} protocol http request \"/m/{i}\" then alert\n"
        ));
    }
    rc
}

/// Runs Monit against the target at `port` (whose `/m/` requests are
/// counted in `checks`) and measures it for `window` after a warm-up of two
/// cycles and a few seconds. `target_cpu` reads the target's CPU seconds.
/// None if Monit is missing or does not run.
pub fn run(
    dir: &Path,
    port: u16,
    n: usize,
    interval: Duration,
    window: Duration,
    checks: &AtomicU64,
    target_cpu: &dyn Fn() -> f64,
) -> Option<Side> {
    let Some(bin) = find() else {
        eprintln!(
            "Monit: no `monit` binary found (apt-get install monit); skipping the side-by-side run"
        );
        return None;
    };
    let cycle_s = interval.as_secs_f64().round().max(1.0) as u64;
    if Duration::from_secs(cycle_s) != interval {
        eprintln!(
            "Monit: its cycle is whole seconds; interval {interval:?} rounded to `set daemon {cycle_s}`"
        );
    }
    let dir = dir.join("monit");
    std::fs::create_dir_all(&dir).unwrap();
    let rc = dir.join("monitrc");
    // Monit refuses a control file readable by others.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&rc)
        .and_then(|mut f| f.write_all(monitrc(&dir, port, n, cycle_s).as_bytes()))
        .unwrap();
    let syntax = Command::new(&bin).arg("-t").arg("-c").arg(&rc).output();
    match syntax {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            eprintln!(
                "Monit: `monit -t` rejected the control file, skipping: {}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Err(e) => {
            eprintln!("Monit: cannot run {}: {e}; skipping", bin.display());
            return None;
        }
    }
    let out = std::fs::File::create(dir.join("monit.out")).unwrap();
    let mut child = Command::new(&bin)
        .arg("-I")
        .arg("-c")
        .arg(&rc)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let pid = child.id();
    let gone = |child: &mut std::process::Child| -> bool {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(dir.join("monit.out")).unwrap_or_default();
            eprintln!("Monit exited early ({status}): {}", tail.trim());
            true
        } else {
            false
        }
    };
    eprintln!(
        "Monit: {} -I, {n} hosts, set daemon {cycle_s}; warm-up ...",
        bin.display()
    );
    // Two cycles and a few seconds, and at least one full cycle's checks
    // seen (bounded).
    let started = checks.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2 * cycle_s + 3));
    let until = Instant::now() + Duration::from_secs(60);
    while checks.load(Ordering::Relaxed) - started < n as u64 && Instant::now() < until {
        if gone(&mut child) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if gone(&mut child) {
        return None;
    }

    let t0 = Instant::now();
    let c0 = checks.load(Ordering::Relaxed);
    let cpu0 = cpu_seconds(pid);
    let tc0 = target_cpu();
    std::thread::sleep(window);
    let cpu1 = cpu_seconds(pid);
    let tc1 = target_cpu();
    let c1 = checks.load(Ordering::Relaxed);
    let window_s = t0.elapsed().as_secs_f64();
    let vm_hwm_kib = proc_field(pid, "status", "VmHWM:");
    if gone(&mut child) {
        return None;
    }

    // SIGTERM, then wait (Monit may finish the check it is in); SIGKILL
    // only if it does not go.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let until = Instant::now() + Duration::from_secs(30);
    while !matches!(child.try_wait(), Ok(Some(_))) {
        if Instant::now() > until {
            eprintln!("Monit: did not exit 30 s after SIGTERM; killing it");
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log_errors = std::fs::read_to_string(dir.join("monit.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("] error"))
        .count();
    let made = c1 - c0;
    let cpu_s = cpu1 - cpu0;
    Some(Side {
        cycle_s,
        window_s,
        cpu_s,
        checks: made,
        us_per_check: cpu_s * 1e6 / made.max(1) as f64,
        checks_per_s: made as f64 / window_s,
        scheduled_per_s: n as f64 / cycle_s as f64,
        cpu_pct_core: 100.0 * cpu_s / window_s,
        target_cpu_pct: 100.0 * (tc1 - tc0) / window_s,
        vm_hwm_kib,
        log_errors,
    })
}
