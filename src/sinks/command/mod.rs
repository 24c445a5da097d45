//! `command`: runs a program (no shell) with the envelope on stdin and
//! `CONNWATCH_EVENT_ID`, `CONNWATCH_EVENT_TYPE`, `CONNWATCH_CONNECTION_ID` in
//! its environment, killed after the sink's timeout. A raw sink. Exit 0 is
//! success; any other exit, or the timeout, is retried; a program that
//! cannot be started is dead.
//!
//! Keys: `command` (required): a program path, or `[program, args…]`.

use super::{AttemptResult, Cx, Item, Kind, Sink};
use crate::config::schema::leaf;
use crate::config::Section;
use crate::deliver::retry::Verdict;
use crate::policy::SinkClass;
use futures::future::BoxFuture;
use std::process::Stdio;
use std::time::Instant;
use tokio::io::AsyncWriteExt;

pub const KIND: Kind = Kind {
    name: "command",
    keys: &[leaf("command")],
    build,
};

#[derive(Debug)]
pub struct Command {
    /// Program, then its arguments.
    argv: Vec<String>,
}

fn build(s: &mut Section<'_, '_>) -> Option<Box<dyn Sink>> {
    if !s.has("command") {
        s.fail(
            "",
            "a command sink needs a `command` (a program path, or [program, args…])",
        );
        return None;
    }
    let argv = s.strings("command")?;
    if argv.first().is_none_or(|c| c.is_empty()) {
        s.fail("command", "the command is empty");
        return None;
    }
    Some(Box::new(Command { argv }))
}

impl Sink for Command {
    fn class(&self) -> SinkClass {
        SinkClass::Raw
    }

    fn target(&self) -> String {
        self.argv.first().cloned().unwrap_or_default()
    }

    fn send<'a>(&'a self, items: &'a [Item], cx: Cx<'a>) -> BoxFuture<'a, AttemptResult> {
        Box::pin(async move {
            match items.first() {
                Some(it) => self.run(it, cx).await,
                None => AttemptResult::skipped(),
            }
        })
    }
}

impl Command {
    async fn run(&self, it: &Item, cx: Cx<'_>) -> AttemptResult {
        let start = Instant::now();
        let ev = &it.out;
        let fail =
            |verdict, status, error| AttemptResult::failed(verdict, status, error, start.elapsed());
        let Some((program, args)) = self.argv.split_first() else {
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
        let retry = Verdict::Retry { retry_after: None };
        match tokio::time::timeout(cx.timeout, work).await {
            Ok(Ok(st)) if st.success() => AttemptResult::done(Some(0), start.elapsed()),
            Ok(Ok(st)) => fail(
                retry,
                st.code().map(i64::from),
                format!("{program} exited with {st}"),
            ),
            Ok(Err(e)) => fail(retry, None, format!("{program}: {e}")),
            Err(_) => fail(
                retry,
                None,
                format!(
                    "{program} did not finish within {} ms; killed",
                    cx.timeout.as_millis()
                ),
            ),
        }
    }
}
