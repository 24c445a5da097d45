//! `log`: the envelope as one JSON line, appended to a file (created with
//! mode 0640) or written to stdout.

use super::{AttemptResult, Outgoing};
use crate::config::Sink;
use crate::deliver::retry::Verdict;
use std::io::Write;
use std::time::Instant;

pub async fn write(sink: &Sink, ev: &Outgoing) -> AttemptResult {
    let start = Instant::now();
    let mut line = ev.body.clone();
    line.push('\n');
    let res = match &sink.path {
        None => std::io::stdout().lock().write_all(line.as_bytes()),
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(path)
                .and_then(|mut f| f.write_all(line.as_bytes()))
        }
    };
    match res {
        Ok(()) => AttemptResult {
            verdict: Verdict::Done,
            status: None,
            error: None,
            duration: start.elapsed(),
            skipped: false,
        },
        Err(e) => AttemptResult {
            verdict: Verdict::Retry { retry_after: None },
            status: None,
            error: Some(format!("cannot write: {e}")),
            duration: start.elapsed(),
            skipped: false,
        },
    }
}
