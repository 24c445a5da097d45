//! `log`: the envelope as one JSON line, appended to a file (created with
//! mode 0640) or written to stdout. A raw sink.
//!
//! Keys: `path` (default: stdout).

use super::{AttemptResult, Cx, Item, Kind, Sink};
use crate::config::schema::leaf;
use crate::config::Section;
use crate::deliver::retry::Verdict;
use crate::policy::SinkClass;
use futures::future::BoxFuture;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

pub const KIND: Kind = Kind {
    name: "log",
    keys: &[leaf("path")],
    build,
};

#[derive(Debug)]
pub struct Log {
    /// `None`: stdout.
    path: Option<PathBuf>,
}

fn build(s: &mut Section<'_, '_>) -> Option<Box<dyn Sink>> {
    let path = if s.has("path") {
        Some(s.file_path("path")?)
    } else {
        None
    };
    Some(Box::new(Log { path }))
}

impl Sink for Log {
    fn class(&self) -> SinkClass {
        SinkClass::Raw
    }

    fn target(&self) -> String {
        self.path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "stdout".into())
    }

    fn send<'a>(&'a self, items: &'a [Item], _cx: Cx<'a>) -> BoxFuture<'a, AttemptResult> {
        Box::pin(async move { self.write(items) })
    }
}

impl Log {
    fn write(&self, items: &[Item]) -> AttemptResult {
        let start = Instant::now();
        let mut lines = String::new();
        for it in items {
            lines.push_str(&it.out.body);
            lines.push('\n');
        }
        let res = match &self.path {
            None => std::io::stdout().lock().write_all(lines.as_bytes()),
            Some(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .open(path)
                    .and_then(|mut f| f.write_all(lines.as_bytes()))
            }
        };
        match res {
            Ok(()) => AttemptResult::done(None, start.elapsed()),
            Err(e) => AttemptResult::failed(
                Verdict::Retry { retry_after: None },
                None,
                format!("cannot write: {e}"),
                start.elapsed(),
            ),
        }
    }
}
