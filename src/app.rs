//! Wires the parts together and owns start-up order and shutdown.
//!
//! Start: open the database and register connections (so health survives
//! restarts) -> start the writer -> build the HTTP clients -> start the
//! sandbox if enabled -> start cron jobs (cron connections, retention) ->
//! run the engine. Stop (SIGTERM/SIGINT): the engine stops scheduling and
//! waits for probes in flight (up to `shutdown_timeout`), the writer writes
//! everything it holds, and the process exits 0.

use crate::config::Config;
use crate::engine::Engine;
use crate::probe::Prober;
use crate::store::writer::Writer;
use crate::store::Store;
use anyhow::Context;
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_cron_scheduler::{Job, JobScheduler};

/// Errors that are the operator's configuration, not a runtime failure
/// (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// When the hourly retention job runs (minute 7, to stay clear of the hour).
pub const RETENTION_SCHEDULE: &str = "0 7 * * * *";

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let db_path = config.daemon.database.clone();
    for c in &config.connections {
        if c.tls.insecure {
            tracing::warn!(connection_id = %c.id, "tls_insecure = true: certificates of this connection are NOT verified");
        }
    }
    if !config.maintenance.is_empty() {
        tracing::warn!(
            windows = config.maintenance.len(),
            "maintenance windows are validated but not applied by this version"
        );
    }
    if config.daemon.listen.is_some() || config.daemon.audit_log.is_some() {
        tracing::warn!(
            "[daemon] listen and audit_log are validated but not served/written by this version"
        );
    }

    let mut store = Store::open(&db_path)?;
    let ids: Vec<crate::store::ConnMeta> = config
        .connections
        .iter()
        .map(crate::store::ConnMeta::of)
        .collect();
    let known = store.sync_connections(&ids)?;
    drop(store);

    let prober = Prober::new(&config.connections).map_err(|e| SetupError(e.to_string()))?;
    let wake = Arc::new(tokio::sync::Notify::new());
    let liveness = crate::ops::notify::Liveness::default();
    let (writer, writer_join) = Writer::start_notifying(
        &db_path,
        config.daemon.history_flush,
        Some(Arc::clone(&wake)),
        Arc::clone(&liveness.writer_beat),
    )?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let dispatcher = crate::deliver::Dispatcher::new(
        &db_path,
        &config.sinks,
        wake,
        config.daemon.shutdown_timeout,
        Arc::clone(&liveness.pending_deliveries),
    )?;
    let dispatch_task = tokio::spawn(dispatcher.run(shutdown_rx.clone()));

    let mut sandbox_task = None;
    if let Some(sb) = config.sandbox.as_ref().filter(|s| s.enabled) {
        let listener = tokio::net::TcpListener::bind(sb.listen)
            .await
            .map_err(|e| SetupError(format!("sandbox: cannot listen on {}: {e}", sb.listen)))?;
        tracing::info!(listen = %sb.listen, "sandbox serving simulated connections");
        let opts = crate::sandbox::Options {
            webhook_secret: sb.webhook_secret.clone(),
        };
        let mut rx = shutdown_rx.clone();
        sandbox_task = Some(tokio::spawn(crate::sandbox::serve(
            listener,
            opts,
            async move {
                let _ = rx.changed().await;
            },
        )));
    }

    let (engine, cron_tx, jobs) = Engine::new(&config, &known, &prober, writer.clone());
    let engine = engine.with_notifier(crate::ops::notify::Notifier::from_env(), liveness);

    let mut sched = JobScheduler::new()
        .await
        .context("starting the cron scheduler")?;
    for (expr, cmd) in jobs {
        let tx = cron_tx.clone();
        let job = Job::new_async(expr.as_str(), move |_, _| {
            let _ = tx.send(cmd);
            Box::pin(async {})
        })
        .with_context(|| format!("cron expression {expr:?}"))?;
        sched.add(job).await.context("adding a cron job")?;
    }
    {
        let writer = writer.clone();
        let retention = config.daemon.retention;
        let job = Job::new_async(RETENTION_SCHEDULE, move |_, _| {
            let writer = writer.clone();
            Box::pin(async move {
                match writer.prune(retention).await {
                    Some(Ok(p)) => tracing::info!(
                        probes = p.probes,
                        runs = p.probe_runs,
                        rollups = p.rollups,
                        "retention applied"
                    ),
                    Some(Err(e)) => tracing::error!(error = %e, "retention failed"),
                    None => {}
                }
            })
        })
        .context("retention job")?;
        sched.add(job).await.context("adding the retention job")?;
    }
    sched.start().await.context("starting the cron scheduler")?;

    let signals = signal_hook_tokio::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .context("installing signal handlers")?;
    let signals_handle = signals.handle();
    let shutdown = Arc::new(shutdown_tx);
    let sig_task = {
        let shutdown = Arc::clone(&shutdown);
        tokio::spawn(async move {
            let mut signals = signals;
            while let Some(sig) = signals.next().await {
                match sig {
                    signal_hook::consts::SIGHUP => {
                        tracing::warn!("SIGHUP: configuration reload is not supported by this version; restart to apply changes");
                    }
                    _ => {
                        tracing::info!(signal = sig, "shutting down");
                        let _ = shutdown.send(true);
                        break;
                    }
                }
            }
        })
    };

    tracing::info!(
        connections = config.connections.len(),
        sinks = config.sinks.len(),
        database = %db_path.display(),
        "connwatch running"
    );
    let stats = engine.run(shutdown_rx).await;
    // Deliveries in flight finish (or stay pending for the next start).
    let _ = dispatch_task.await;
    signals_handle.close();
    let _ = sig_task.await;
    let _ = sched.shutdown().await;
    if let Some(t) = sandbox_task {
        let _ = t.await;
    }
    drop(cron_tx);
    writer.close().await;
    drop(writer);
    let wstats = tokio::task::spawn_blocking(move || writer_join.join())
        .await
        .unwrap_or_default();
    tracing::info!(
        probes = stats.probes_done,
        skipped_busy = stats.skipped_busy,
        transitions = stats.transitions,
        events = stats.events,
        commits = wstats.commits,
        rows = wstats.rows,
        max_batch = wstats.max_batch,
        "stopped"
    );
    Ok(())
}
