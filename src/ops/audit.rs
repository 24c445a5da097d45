//! The audit log (`[daemon] audit_log`): one JSON line per configuration
//! load and reload, health transition, event, delivery attempt and operator
//! action. Each line carries `prev`, the SHA-256 (hex) of the previous line,
//! so an edited or removed line breaks the chain; `connwatch audit verify`
//! checks it across rotated files.
//!
//! Several writers append to one file (the daemon's writer and dispatcher,
//! and commands such as `events replay`): every append takes an exclusive
//! `flock`, and if the file grew since this writer's last append, re-reads
//! the last line to continue the chain from it. SIGUSR1 reopens the file
//! (logrotate's `postrotate`); a new file starts a new chain whose first line
//! names the hash it continues from.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// `prev` of the very first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

struct Inner {
    path: PathBuf,
    file: File,
    /// Hash of the last line this writer knows of.
    last: String,
    /// File length after this writer's last append.
    len: u64,
}

/// A shareable handle; clones append to the same file.
#[derive(Clone)]
pub struct Audit(Arc<Mutex<Inner>>);

pub fn hash(line: &str) -> String {
    let d = Sha256::digest(line.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn open(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o640)
        .open(path)
}

/// The hash of the last line of `file` (GENESIS for an empty file).
fn tail_hash(file: &mut File) -> std::io::Result<(String, u64)> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok((GENESIS.to_string(), 0));
    }
    // Read back far enough for one line (lines are short; 64 KiB is ample).
    let from = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(from))?;
    let mut buf = String::new();
    file.read_to_string(&mut buf)?;
    let last = buf
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Ok((
        if last.is_empty() {
            GENESIS.to_string()
        } else {
            hash(last)
        },
        len,
    ))
}

/// An exclusive `flock` on a file, released on drop. It holds the raw
/// descriptor: the file must outlive it (it does: both live in one scope or
/// one struct).
struct Flock(std::os::unix::io::RawFd);

impl Flock {
    fn new(f: &File) -> std::io::Result<Self> {
        let fd = f.as_raw_fd();
        // SAFETY: flock on a valid, open descriptor; released in Drop.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Flock(fd))
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        // SAFETY: as above; unlocking a descriptor we locked.
        unsafe {
            libc::flock(self.0, libc::LOCK_UN);
        }
    }
}

impl Audit {
    /// Opens (creating with mode 0640) and continues the file's chain.
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        let mut file = open(path)?;
        let (last, len) = {
            let _lock = Flock::new(&file)?;
            tail_hash(&mut file)?
        };
        Ok(Audit(Arc::new(Mutex::new(Inner {
            path: path.to_path_buf(),
            file,
            last,
            len,
        }))))
    }

    /// Appends one line: `{"ts", "kind", ...fields, "prev"}`.
    pub fn record(&self, kind: &str, fields: Value) {
        if let Err(e) = self.try_record(kind, fields) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    fn try_record(&self, kind: &str, fields: Value) -> std::io::Result<()> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *g;
        let _lock = Flock::new(&inner.file)?;
        let len = inner.file.metadata()?.len();
        if len != inner.len {
            // Someone else appended (or the file was truncated): continue
            // from what is there now.
            let (last, l) = tail_hash(&mut inner.file)?;
            inner.last = last;
            inner.len = l;
        }
        let mut obj = Map::new();
        obj.insert(
            "ts".into(),
            json!(crate::model::rfc3339(crate::model::now_ms())),
        );
        obj.insert("kind".into(), json!(kind));
        if let Value::Object(m) = fields {
            obj.extend(m);
        }
        obj.insert("prev".into(), json!(inner.last));
        let line = Value::Object(obj).to_string();
        inner.file.write_all(format!("{line}\n").as_bytes())?;
        inner.last = hash(&line);
        inner.len = inner.file.metadata()?.len();
        Ok(())
    }

    /// Reopens the file at the same path (after logrotate moved it). The new
    /// file's first line continues from the last hash written.
    pub fn reopen(&self) -> std::io::Result<()> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // First catch up with what others appended to the old file (its
        // descriptor still works after the rename): the new file continues
        // from the true last line.
        {
            let inner = &mut *g;
            let _lock = Flock::new(&inner.file)?;
            if inner.file.metadata()?.len() != inner.len {
                let (last, l) = tail_hash(&mut inner.file)?;
                inner.last = last;
                inner.len = l;
            }
        }
        let file = open(&g.path)?;
        let len = file.metadata()?.len();
        g.file = file;
        if len > 0 {
            // Not rotated after all (or someone else started it): follow it.
            let (last, l) = tail_hash(&mut g.file)?;
            g.last = last;
            g.len = l;
        } else {
            g.len = 0;
        }
        Ok(())
    }
}

/// Appends one line to the audit log at `path` from a one-shot command.
pub fn record_once(path: &Path, kind: &str, fields: Value) {
    match Audit::open(path) {
        Ok(a) => a.record(kind, fields),
        Err(e) => tracing::error!(error = %e, path = %path.display(), "cannot open the audit log"),
    }
}

/// The first broken link, if any, across `files` in order (oldest first).
#[derive(Debug, PartialEq, Eq)]
pub struct Broken {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    pub why: String,
}

/// Verifies the chain across `files` (oldest first); returns the number of
/// lines checked, or the first broken line.
pub fn verify(files: &[PathBuf]) -> Result<usize, Broken> {
    let mut prev: Option<String> = None;
    let mut n = 0;
    for f in files {
        let file = File::open(f).map_err(|e| Broken {
            file: f.clone(),
            line: 0,
            why: format!("cannot read: {e}"),
        })?;
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let broken = |why: String| Broken {
                file: f.clone(),
                line: i + 1,
                why,
            };
            let line = line.map_err(|e| broken(format!("cannot read: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: Value =
                serde_json::from_str(&line).map_err(|e| broken(format!("not JSON: {e}")))?;
            let claimed = v["prev"]
                .as_str()
                .ok_or_else(|| broken("no prev field".into()))?;
            let expected = prev.clone().unwrap_or_else(|| claimed.to_string());
            if claimed != expected {
                return Err(broken(format!(
                    "prev is {claimed}, but the previous line hashes to {expected}"
                )));
            }
            prev = Some(hash(&line));
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_verifies_and_an_edit_breaks_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let a = Audit::open(&p).unwrap();
        for i in 0..5 {
            a.record("probe", json!({"n": i}));
        }
        // A second writer (another process, in effect) joins the chain.
        record_once(&p, "operator", json!({"action": "replay"}));
        a.record("probe", json!({"n": 5}));
        assert_eq!(verify(std::slice::from_ref(&p)), Ok(7));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.lines().next().unwrap().contains(GENESIS));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // Edit line 3.
        let edited = text.replacen("\"n\":2", "\"n\":9", 1);
        std::fs::write(&p, edited).unwrap();
        let b = verify(std::slice::from_ref(&p)).unwrap_err();
        assert_eq!(
            b.line, 4,
            "the line after the edited one no longer matches: {b:?}"
        );
    }

    #[test]
    fn rotation_continues_the_chain_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let a = Audit::open(&p).unwrap();
        a.record("x", json!({}));
        a.record("x", json!({}));
        let old = dir.path().join("audit.jsonl.1");
        std::fs::rename(&p, &old).unwrap();
        // Another process appended to the old file before the reopen.
        record_once(&old, "operator", json!({}));
        a.reopen().unwrap();
        a.record("x", json!({}));
        assert_eq!(verify(&[old.clone(), p.clone()]), Ok(4));
        // Out of order, it breaks at the first line of the second file.
        let b = verify(&[p.clone(), old.clone()]).unwrap_err();
        assert_eq!((b.file, b.line), (old, 1));
    }
}
