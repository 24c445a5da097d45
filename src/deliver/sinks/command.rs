//! `command`: runs a program (no shell) with the envelope on stdin and
//! `CONNWATCH_EVENT_ID`, `CONNWATCH_EVENT_TYPE`, `CONNWATCH_CONNECTION_ID` in
//! its environment, killed after the sink's timeout. Exit 0 is success; any
//! other exit, or the timeout, is retried; a program that cannot be started
//! is dead.

use super::{AttemptResult, Outgoing};
use crate::config::Sink;
use crate::deliver::retry::Verdict;
use std::process::Stdio;
use std::time::Instant;
use tokio::io::AsyncWriteExt;

pub async fn run(sink: &Sink, ev: &Outgoing) -> AttemptResult {
    let start = Instant::now();
    let fail = |verdict, status: Option<i64>, error: String| AttemptResult {
        verdict,
        status,
        error: Some(error),
        duration: start.elapsed(),
        skipped: false,
    };
    let Some((program, args)) = sink.command.split_first() else {
        return fail(Verdict::Dead, None, "no command".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .env("CONNWATCH_EVENT_ID", &ev.id)
        .env("CONNWATCH_EVENT_TYPE", &ev.kind)
        .env(
            "CONNWATCH_CONNECTION_ID",
            ev.connection_id.as_deref().unwrap_or(""),
        );
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(Verdict::Dead, None, format!("cannot start {program}: {e}")),
    };
    let body = ev.body.clone();
    let mut stdin = child.stdin.take();
    let work = async move {
        if let Some(s) = stdin.as_mut() {
            // A program that does not read its stdin is its own business.
            let _ = s.write_all(body.as_bytes()).await;
            let _ = s.shutdown().await;
        }
        drop(stdin);
        child.wait().await
    };
    match tokio::time::timeout(sink.timeout, work).await {
        Ok(Ok(st)) if st.success() => AttemptResult {
            verdict: Verdict::Done,
            status: Some(0),
            error: None,
            duration: start.elapsed(),
            skipped: false,
        },
        Ok(Ok(st)) => {
            let code = st.code().map(i64::from);
            fail(
                Verdict::Retry { retry_after: None },
                code,
                format!("{program} exited with {st}"),
            )
        }
        Ok(Err(e)) => fail(
            Verdict::Retry { retry_after: None },
            None,
            format!("{program}: {e}"),
        ),
        Err(_) => fail(
            Verdict::Retry { retry_after: None },
            None,
            format!(
                "{program} did not finish within {} ms; killed",
                sink.timeout.as_millis()
            ),
        ),
    }
}
