//! `log`: the envelope as one JSON line, appended to a file (created with
//! mode 0640) or written to stdout. A raw sink.
//!
//! With `{connection_id}` in the file name (`path =
//! "/var/log/connwatch/connections/{connection_id}.jsonl"`) each
//! connection has its own file, and `system.*` events go to the one named
//! `_system`. The directory is created (mode 0750) when missing. The
//! placeholder may appear only in the file name, and not as the whole of it
//! (an id may be `..`): ids are `[A-Za-z0-9_.-]`, so a name made from one
//! stays in the directory.
//!
//! Files are opened for each write, so logrotate can move them away
//! without a signal.
//!
//! Keys: `path` (default: stdout).

use super::{AttemptResult, Cx, Item, Kind, Sink};
use crate::config::schema::leaf;
use crate::config::Section;
use crate::deliver::retry::Verdict;
use crate::policy::SinkClass;
use futures::future::BoxFuture;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const KIND: Kind = Kind {
    name: "log",
    keys: &[leaf("path")],
    build,
};

/// The placeholder for per-connection files.
pub const PLACEHOLDER: &str = "{connection_id}";

/// The file of events that belong to no connection.
pub const SYSTEM: &str = "_system";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Dest {
    Stdout,
    File(PathBuf),
    /// One file per connection: `dir` / `name` with the id in place of
    /// [`PLACEHOLDER`].
    PerConnection {
        dir: PathBuf,
        name: String,
    },
}

#[derive(Debug)]
pub struct Log {
    dest: Dest,
}

fn build(s: &mut Section<'_, '_>) -> Option<Box<dyn Sink>> {
    let dest = if s.has("path") {
        let path = s.file_path("path")?;
        match dest(&path) {
            Ok(d) => d,
            Err(e) => {
                s.fail("path", e);
                return None;
            }
        }
    } else {
        Dest::Stdout
    };
    Some(Box::new(Log { dest }))
}

/// A file, or a template of files.
fn dest(path: &Path) -> Result<Dest, String> {
    let text = path.to_string_lossy();
    if !text.contains('{') && !text.contains('}') {
        return Ok(Dest::File(path.to_path_buf()));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("{PLACEHOLDER} must be in a file name"));
    };
    if dir.to_string_lossy().contains(['{', '}']) {
        return Err(format!(
            "{PLACEHOLDER} may appear only in the file name, not in a directory"
        ));
    }
    let name = name.to_string_lossy().into_owned();
    if name.replace(PLACEHOLDER, "").contains(['{', '}']) {
        return Err(format!(
            "the only placeholder is {PLACEHOLDER} (e.g. \"/var/log/connwatch/connections/{PLACEHOLDER}.jsonl\")"
        ));
    }
    if name == PLACEHOLDER {
        return Err(format!(
            "the file name needs more than {PLACEHOLDER} (an id may be `..`): e.g. \"{PLACEHOLDER}.jsonl\""
        ));
    }
    Ok(Dest::PerConnection {
        dir: dir.to_path_buf(),
        name,
    })
}

impl Sink for Log {
    fn class(&self) -> SinkClass {
        SinkClass::Raw
    }

    fn target(&self) -> String {
        match &self.dest {
            Dest::Stdout => "stdout".into(),
            Dest::File(p) => p.display().to_string(),
            Dest::PerConnection { dir, name } => dir.join(name).display().to_string(),
        }
    }

    fn send<'a>(&'a self, items: &'a [Item], _cx: Cx<'a>) -> BoxFuture<'a, AttemptResult> {
        Box::pin(async move { self.write(items) })
    }
}

impl Log {
    fn write(&self, items: &[Item]) -> AttemptResult {
        let start = Instant::now();
        let failed =
            |verdict, error: String| AttemptResult::failed(verdict, None, error, start.elapsed());
        // One write per file, in the items' order.
        let mut files: Vec<(Option<PathBuf>, String)> = Vec::new();
        for it in items {
            let file = match self.file_of(it) {
                Ok(f) => f,
                Err(e) => return failed(Verdict::Dead, e),
            };
            let at = match files.iter().position(|(f, _)| *f == file) {
                Some(i) => i,
                None => {
                    files.push((file, String::new()));
                    files.len() - 1
                }
            };
            files[at].1.push_str(&it.out.body);
            files[at].1.push('\n');
        }
        let mut written = Vec::new();
        for (file, lines) in &files {
            let res = match file {
                None => std::io::stdout().lock().write_all(lines.as_bytes()),
                Some(path) => append(path, lines, matches!(self.dest, Dest::PerConnection { .. })),
            };
            if let Err(e) = res {
                let shown = file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "stdout".into());
                return failed(
                    Verdict::Retry { retry_after: None },
                    format!("cannot write {shown}: {e}"),
                );
            }
            written.push(
                file.as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "stdout".into()),
            );
        }
        AttemptResult::done(None, start.elapsed())
            .answered(format!("appended to {}", written.join(", ")))
    }

    /// The file an event goes to (`None`: stdout).
    fn file_of(&self, it: &Item) -> Result<Option<PathBuf>, String> {
        Ok(match &self.dest {
            Dest::Stdout => None,
            Dest::File(p) => Some(p.clone()),
            Dest::PerConnection { dir, name } => {
                let id = match it.out.connection_id.as_deref() {
                    None => SYSTEM,
                    Some(id) if crate::config::valid_id(id) => id,
                    // Only ids the configuration accepted are stored; a
                    // database written by hand is not trusted with a path.
                    Some(id) => {
                        return Err(format!(
                            "connection id {id:?} cannot name a file: not [A-Za-z0-9_.-]"
                        ))
                    }
                };
                Some(dir.join(name.replace(PLACEHOLDER, id)))
            }
        })
    }
}

/// Appends to `path` (created 0640); with `make_dir`, creates its
/// directory (0750) when missing.
fn append(path: &Path, lines: &str, make_dir: bool) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
    };
    let mut f = match open() {
        Err(e) if make_dir && e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(dir)?;
            }
            open()?
        }
        other => other?,
    };
    f.write_all(lines.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholder_stays_in_the_file_name() {
        assert_eq!(
            dest(Path::new("/var/log/c/{connection_id}.jsonl")),
            Ok(Dest::PerConnection {
                dir: "/var/log/c".into(),
                name: "{connection_id}.jsonl".into()
            })
        );
        assert_eq!(
            dest(Path::new("/var/log/events.jsonl")),
            Ok(Dest::File("/var/log/events.jsonl".into()))
        );
        for bad in [
            "/var/log/{connection_id}/events.jsonl",
            "/var/log/c/{connection_id}",
            "/var/log/c/{conn}.jsonl",
            "/var/log/c/{connection_id}.{x}",
            "/{connection_id}/",
        ] {
            assert!(dest(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
