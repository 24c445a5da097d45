//! Wires the parts together and owns start-up order, reload and shutdown.
//!
//! Start: open the database -> start the writer (it lives as long as the
//! process) -> start the sandbox if enabled -> start a *generation*: register
//! the connections (their stored state is read back), build the HTTP clients,
//! start the dispatcher, the cron jobs (cron connections, maintenance
//! windows, retention) and the engine, which tells systemd READY=1.
//!
//! SIGHUP: the new configuration is validated first. If it is invalid, the
//! errors are logged, a `system.error` is raised, and the running generation
//! goes on. If it is valid, the writer writes what it holds, the running
//! generation stops (probes and deliveries in flight finish), and a new one
//! starts from the new configuration. Connections keep their health,
//! circuit, counters and holds by id (they are read back from the database);
//! added ones start, removed ones stop (their history stays). The database
//! path and the sandbox are not reloaded (restart for those).
//!
//! SIGTERM/SIGINT: STOPPING=1, the generation stops, the writer writes
//! everything it holds, and the process exits 0.

use crate::config::{Config, ConfigErrors};
use crate::deliver::Dispatcher;
use crate::engine::{Engine, EngineStats};
use crate::ops::audit::Audit;
use crate::ops::notify::{Liveness, Notifier};
use crate::probe::Prober;
use crate::store::writer::Writer;
use crate::store::Store;
use anyhow::Context;
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio_cron_scheduler::{Job, JobScheduler};

/// Errors that are the operator's configuration, not a runtime failure
/// (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// When the hourly retention job runs (minute 7, to stay clear of the hour).
pub const RETENTION_SCHEDULE: &str = "0 7 * * * *";

/// What the signal task asks of the main loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Reload,
    Reopen,
    Stop,
}

/// The parts shared by every generation.
struct Shared {
    writer: Writer,
    /// Interval phases handed from one generation to the next.
    schedule: crate::engine::Schedule,
    /// Probe connection pools handed from one generation to the next.
    pools: crate::probe::Pools,
    wake: Arc<Notify>,
    liveness: Liveness,
    audit: Option<Audit>,
}

/// Everything built from one configuration.
struct Generation {
    stop: watch::Sender<bool>,
    /// Where the admin API asks for a probe now.
    probe_tx: mpsc::Sender<crate::engine::ProbeNow>,
    engine: JoinHandle<EngineStats>,
    dispatcher: JoinHandle<()>,
    storage_alarm: JoinHandle<()>,
    /// Reads the silences operators add and end.
    silence_watch: JoinHandle<()>,
    sched: JobScheduler,
}

impl Generation {
    async fn start(config: &Config, shared: &Shared) -> anyhow::Result<Generation> {
        for c in &config.connections {
            if c.tls.insecure {
                tracing::warn!(connection_id = %c.id, "tls_insecure = true: certificates of this connection are NOT verified");
            }
        }
        let db_path = &config.daemon.database;
        let mut store = Store::open(db_path)?;
        let known = store.sync_connections(&crate::store::ConnMeta::all(config))?;
        store.sync_windows(&config.maintenance)?;
        let silences = crate::store::silences::current(&store.db, crate::model::now_ms())
            .map_err(|e| crate::store::sq(db_path, e))?;
        drop(store);
        let prober = Prober::new(&config.connections, &shared.pools)
            .map_err(|e| SetupError(e.to_string()))?;
        let (stop, stop_rx) = watch::channel(false);
        let dispatcher = Dispatcher::new(
            config,
            Arc::clone(&shared.wake),
            shared.liveness.clone(),
            shared.audit.clone(),
        )?;
        let dispatcher = tokio::spawn(dispatcher.run(stop_rx.clone()));

        let (engine, cmd_tx, jobs) = Engine::new(config, &known, &prober, shared.writer.clone());
        let (silences_tx, silences_rx) = watch::channel(silences);
        let silence_watch = tokio::spawn(watch_silences(db_path.clone(), silences_tx));
        let engine = engine
            .with_notifier(Notifier::from_env(), shared.liveness.clone())
            .keep_schedule(Arc::clone(&shared.schedule))
            .with_silences(silences_rx);
        let probe_tx = engine.probe_handle();
        let sched = JobScheduler::new()
            .await
            .context("starting the cron scheduler")?;
        for (expr, cmd) in jobs {
            let tx = cmd_tx.clone();
            let job = Job::new_async(expr.as_str(), move |_, _| {
                let _ = tx.send(cmd);
                Box::pin(async {})
            })
            .with_context(|| format!("cron expression {expr:?}"))?;
            sched.add(job).await.context("adding a cron job")?;
        }
        let writer = shared.writer.clone();
        let retention = config.daemon.retention;
        let job = Job::new_async(RETENTION_SCHEDULE, move |_, _| {
            let writer = writer.clone();
            Box::pin(async move {
                match writer.prune(retention).await {
                    Some(Ok(p)) => tracing::info!(
                        probes = p.probes,
                        runs = p.probe_runs,
                        delivery_attempts = p.delivery_attempts,
                        events = p.events,
                        transitions = p.transitions,
                        rollups = p.rollups,
                        days_merged = p.days_merged,
                        pages_freed = p.pages_freed,
                        "retention applied"
                    ),
                    Some(Err(e)) => tracing::error!(error = %e, "retention failed"),
                    None => {}
                }
            })
        })
        .context("retention job")?;
        sched.add(job).await.context("adding the retention job")?;
        sched.start().await.context("starting the cron scheduler")?;
        let storage_alarm = tokio::spawn(storage_alarm(
            shared.writer.trouble(),
            config.daemon.instance.clone(),
            config.sinks.clone(),
            shared.audit.clone(),
        ));
        let engine = tokio::spawn(engine.run(stop_rx));
        tracing::info!(
            connections = config.connections.len(),
            sinks = config.sinks.len(),
            maintenance_windows = config.maintenance.len(),
            database = %db_path.display(),
            "connwatch running"
        );
        Ok(Generation {
            stop,
            probe_tx,
            engine,
            dispatcher,
            storage_alarm,
            silence_watch,
            sched,
        })
    }

    /// Stops scheduling; probes and deliveries in flight finish (bounded).
    async fn stop(mut self) -> EngineStats {
        let _ = self.stop.send(true);
        let stats = self.engine.await.unwrap_or_default();
        let _ = self.dispatcher.await;
        self.storage_alarm.abort();
        self.silence_watch.abort();
        let _ = self.sched.shutdown().await;
        stats
    }
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let audit = match &config.daemon.audit_log {
        Some(p) => Some(Audit::open(p).with_context(|| format!("audit log {}", p.display()))?),
        None => None,
    };
    if let Some(a) = &audit {
        a.record(
            "config_load",
            serde_json::json!({"config": config.path.display().to_string(), "connections": config.connections.len(), "sinks": config.sinks.len()}),
        );
    }
    let db_path = config.daemon.database.clone();
    // Create and migrate the database before anything else touches it, and
    // record which process writes it (`status` reads the writer's
    // heartbeat from there).
    {
        let store = Store::open(&db_path)?;
        crate::store::daemon_row::started(
            &store.db,
            std::process::id(),
            env!("CARGO_PKG_VERSION"),
            crate::model::now_ms(),
        )
        .map_err(|e| crate::store::sq(&db_path, e))?;
    }
    let wake = Arc::new(Notify::new());
    let liveness = Liveness::default();
    let (writer, writer_join) = Writer::start_notifying(
        &db_path,
        config.daemon.history_flush,
        Some(Arc::clone(&wake)),
        Arc::clone(&liveness.writer_beat),
        audit.clone(),
    )?;
    let shared = Shared {
        writer,
        schedule: Default::default(),
        pools: Default::default(),
        wake,
        liveness,
        audit,
    };

    let (sandbox_stop, sandbox_stop_rx) = watch::channel(false);
    let mut sandbox_task = None;
    if let Some(sb) = config.sandbox.as_ref().filter(|s| s.enabled) {
        let listener = tokio::net::TcpListener::bind(sb.listen)
            .await
            .map_err(|e| SetupError(format!("sandbox: cannot listen on {}: {e}", sb.listen)))?;
        tracing::info!(listen = %sb.listen, "sandbox serving simulated connections");
        let opts = crate::sandbox::Options {
            webhook_secret: sb.webhook_secret.clone(),
        };
        let mut rx = sandbox_stop_rx;
        sandbox_task = Some(tokio::spawn(crate::sandbox::serve(
            listener,
            opts,
            async move {
                let _ = rx.changed().await;
            },
        )));
    }

    let admin = crate::admin::AdminState::new(
        &config,
        Arc::clone(&shared.wake),
        shared.liveness.clone(),
        shared.audit.clone(),
    );
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let mut admin_task = None;
    if let Some(addr) = config.daemon.listen {
        // A port in use may be a previous instance still stopping: a
        // runtime failure (exit 1, systemd restarts), not a config error.
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("admin API: cannot listen on {addr}"))?;
        tracing::info!(listen = %addr, token = config.daemon.admin_token.is_some(), "admin API, metrics and status page serving");
        let mut rx = admin_stop_rx;
        let state = Arc::clone(&admin);
        admin_task = Some(tokio::spawn(async move {
            let r = crate::admin::serve(listener, state, async move {
                let _ = rx.changed().await;
            })
            .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "admin API stopped");
            }
        }));
    }

    let (ask_tx, mut ask_rx) = mpsc::unbounded_channel();
    let signals = signal_hook_tokio::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGUSR1,
    ])
    .context("installing signal handlers")?;
    let signals_handle = signals.handle();
    let sig_task = tokio::spawn(async move {
        let mut signals = signals;
        while let Some(sig) = signals.next().await {
            let ask = match sig {
                signal_hook::consts::SIGHUP => Ask::Reload,
                signal_hook::consts::SIGUSR1 => Ask::Reopen,
                _ => Ask::Stop,
            };
            let what = match ask {
                Ask::Stop => "shutting down",
                Ask::Reload => "reloading the configuration",
                Ask::Reopen => "reopening the audit log",
            };
            tracing::info!(signal = sig, "{what}");
            if ask_tx.send(ask).is_err() || ask == Ask::Stop {
                break;
            }
        }
    });

    // The file's configuration, and the running one: the file's
    // connections plus every discovery source's last good set, cut to this
    // daemon's shard.
    let mut base = config;
    let trackers = crate::discovery::run::stored(&base);
    let mut sets = crate::discovery::run::sets(&trackers);
    let mut left_logged = std::collections::HashSet::new();
    let (mut config, left) = crate::discovery::effective(&base, &sets);
    crate::discovery::report_left(&left, &mut left_logged);
    crate::ops::metrics::metrics()
        .identify(&config.daemon.instance, &config.daemon.shard.to_string());
    if config.daemon.shard.count > 1 {
        tracing::info!(shard = %config.daemon.shard, takes = config.connections.len(), "this shard's connections");
    }
    let mut generation = Generation::start(&config, &shared).await?;
    admin.set_engine(Some(generation.probe_tx.clone()));
    let (found_tx, mut found_rx) = mpsc::unbounded_channel();
    let mut discovery = Discovery::start(&base, trackers, &found_tx, &shared);
    let mut heartbeat = Heartbeat::start(&config, &shared);
    let notifier = Notifier::from_env();
    let mut stats = EngineStats::default();
    let mut lost: Option<String> = None;
    loop {
        let next = tokio::select! {
            ask = ask_rx.recv() => ask.map(Next::Ask),
            found = found_rx.recv() => found.map(Next::Found),
            m = shared.writer.lost() => {
                lost = Some(m);
                None
            }
        };
        let Some(next) = next else { break };
        // A reload's new file, its sources' stored trackers and sets: taken
        // on only once the new generation has started.
        let mut reloaded: Option<(Config, Trackers, crate::discovery::run::Sets)> = None;
        let (new, found) = match next {
            Next::Ask(Ask::Stop) => break,
            Next::Ask(Ask::Reopen) => {
                if let Some(a) = &shared.audit {
                    match a.reopen() {
                        Ok(()) => a.record("log_reopened", serde_json::json!({})),
                        Err(e) => tracing::error!(error = %e, "cannot reopen the audit log"),
                    }
                }
                continue;
            }
            Next::Ask(Ask::Reload) => {
                notifier.reloading();
                match load_for_reload(&base) {
                    Err(why) => {
                        crate::ops::metrics::metrics()
                            .reloads
                            .with_label_values(&["refused"])
                            .inc();
                        tracing::error!("reload refused; the running configuration stays: {why}");
                        if let Some(a) = &shared.audit {
                            a.record("config_reload_refused", serde_json::json!({"error": why}));
                        }
                        raise_system_error(
                            &config,
                            "config",
                            &format!("reload refused: {why}"),
                            &shared.wake,
                        );
                        notifier.ready_again("reload refused; running the previous configuration");
                        continue;
                    }
                    Ok(new_base) => {
                        // The sources may have changed: they start again
                        // from what they stored, once the new file runs.
                        let new_trackers = crate::discovery::run::stored(&new_base);
                        let new_sets = crate::discovery::run::sets(&new_trackers);
                        let (new, left) = crate::discovery::effective(&new_base, &new_sets);
                        crate::discovery::report_left(&left, &mut left_logged);
                        reloaded = Some((new_base, new_trackers, new_sets));
                        (new, None)
                    }
                }
            }
            Next::Found(update) => {
                sets.insert(update.source.clone(), update.items.clone());
                let (new, left) = crate::discovery::effective(&base, &sets);
                crate::discovery::report_left(&left, &mut left_logged);
                (new, Some(update))
            }
        };
        let summary = changes(&config, &new);
        if new.daemon.listen != config.daemon.listen {
            tracing::warn!(
                "[daemon] listen changed; the admin API stays where it is until a restart"
            );
        }
        crate::ops::metrics::metrics()
            .identify(&new.daemon.instance, &new.daemon.shard.to_string());
        // Probes and deliveries in flight finish; the writer writes what it
        // holds, so the new generation reads current state.
        let t_switch = std::time::Instant::now();
        admin.set_engine(None);
        let s = generation.stop().await;
        add_stats(&mut stats, s);
        let t_stopped = t_switch.elapsed();
        shared.writer.flush().await;
        let t_flushed = t_switch.elapsed();
        let why = if found.is_some() {
            "discovery"
        } else {
            "reload"
        };
        match Generation::start(&new, &shared).await {
            Ok(g) => {
                if found.is_none() {
                    crate::ops::metrics::metrics()
                        .reloads
                        .with_label_values(&["applied"])
                        .inc();
                }
                admin.apply(&new);
                tracing::info!(
                    %summary,
                    stop_ms = t_stopped.as_millis() as u64,
                    flush_ms = (t_flushed - t_stopped).as_millis() as u64,
                    start_ms = (t_switch.elapsed() - t_flushed).as_millis() as u64,
                    "{}",
                    if found.is_some() { "discovered connections applied" } else { "configuration reloaded" }
                );
                if let Some(a) = &shared.audit {
                    a.record(
                        if found.is_some() {
                            "discovery_applied"
                        } else {
                            "config_reload"
                        },
                        serde_json::json!({"changes": summary}),
                    );
                }
                generation = g;
                if let Some(u) = &found {
                    discovery_events(&config, &new, u, &shared.wake);
                }
                if let Some((new_base, new_trackers, new_sets)) = reloaded {
                    discovery.stop().await;
                    base = new_base;
                    sets = new_sets;
                    discovery = Discovery::start(&base, new_trackers, &found_tx, &shared);
                    heartbeat.stop();
                    heartbeat = Heartbeat::start(&new, &shared);
                }
                config = new;
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the new configuration failed to start; going back to the previous one");
                raise_system_error(
                    &config,
                    "config",
                    &format!("{why} failed: {e:#}"),
                    &shared.wake,
                );
                generation = Generation::start(&config, &shared).await?;
            }
        }
        admin.set_engine(Some(generation.probe_tx.clone()));
    }
    discovery.stop().await;
    heartbeat.stop();
    // Tell the engine first: it runs on this thread, so it cannot ping the
    // watchdog between STOPPING=1 and noticing the stop.
    let _ = generation.stop.send(true);
    admin.set_engine(None);
    notifier.stopping();
    let s = generation.stop().await;
    add_stats(&mut stats, s);
    signals_handle.close();
    let _ = sig_task.await;
    let _ = sandbox_stop.send(true);
    if let Some(t) = sandbox_task {
        let _ = t.await;
    }
    let _ = admin_stop.send(true);
    if let Some(t) = admin_task {
        // Open keep-alive connections could hold graceful shutdown forever.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t).await;
    }
    shared.writer.close().await;
    drop(shared);
    let wstats = tokio::task::spawn_blocking(move || writer_join.join())
        .await
        .unwrap_or_default();
    tracing::info!(
        probes = stats.probes_done,
        skipped_busy = stats.skipped_busy,
        held = stats.held,
        transitions = stats.transitions,
        events = stats.events,
        suppressed = stats.suppressed,
        commits = wstats.commits,
        rows = wstats.rows,
        max_batch = wstats.max_batch,
        "stopped"
    );
    match lost {
        // Exit 1: systemd's Restart=on-failure starts connwatch again, on a
        // fresh database if the file is gone.
        Some(m) => Err(anyhow::anyhow!(m)),
        None => Ok(()),
    }
}

type Trackers = std::collections::BTreeMap<String, crate::discovery::tracker::Tracker>;

/// What the main loop acts on.
enum Next {
    Ask(Ask),
    /// A discovery source's set changed.
    Found(crate::discovery::run::Update),
}

/// The file again, for a reload: refused (with why) when it does not load
/// or moves the database.
fn load_for_reload(base: &Config) -> Result<Config, String> {
    match Config::load(&base.path) {
        Ok(new) if new.daemon.database != base.daemon.database => Err(format!(
            "the database path changed ({} -> {}); restart connwatch to move it",
            base.daemon.database.display(),
            new.daemon.database.display()
        )),
        Ok(new) => Ok(new),
        Err(ConfigErrors(errs)) => {
            for e in &errs {
                tracing::error!(error = %e, "reload refused");
            }
            Err(format!(
                "{} configuration error(s); first: {}",
                errs.len(),
                errs[0]
            ))
        }
    }
}

/// The discovery sources of one file configuration, running.
struct Discovery {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Discovery {
    fn start(
        base: &Config,
        trackers: std::collections::BTreeMap<String, crate::discovery::tracker::Tracker>,
        tx: &mpsc::UnboundedSender<crate::discovery::run::Update>,
        shared: &Shared,
    ) -> Discovery {
        let (stop, stop_rx) = watch::channel(false);
        let task = (!base.discovery.is_empty()).then(|| {
            tokio::spawn(crate::discovery::run::run(
                Arc::new(base.clone()),
                trackers,
                tx.clone(),
                stop_rx,
                Arc::clone(&shared.wake),
            ))
        });
        Discovery { stop, task }
    }

    async fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// `[daemon] heartbeat_url`, pinged while the daemon is healthy.
struct Heartbeat(Option<JoinHandle<()>>);

impl Heartbeat {
    fn start(config: &Config, shared: &Shared) -> Heartbeat {
        Heartbeat(config.daemon.heartbeat_url.clone().map(|url| {
            tokio::spawn(crate::ops::heartbeat::run(
                url,
                config.daemon.heartbeat_interval,
                shared.liveness.clone(),
            ))
        }))
    }

    fn stop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

/// Stores `connection.discovered` for each connection `update` added to
/// the running set and `connection.retired` for each it took out, routed
/// as the connection's other events are.
fn discovery_events(
    old: &Config,
    new: &Config,
    update: &crate::discovery::run::Update,
    wake: &Notify,
) {
    use crate::event::{Envelope, EventKind};
    let now = crate::model::now_ms();
    let mut router =
        crate::policy::route::Router::new(new.sinks.iter().map(|s| s.policy()).collect());
    let mut out = Vec::new();
    let find = |c: &Config, id: &str| c.connections.iter().find(|c| c.id == id).cloned();
    for (ids, kind, config) in [
        (&update.added, EventKind::Discovered, new),
        (&update.retired, EventKind::Retired, old),
    ] {
        let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        for c in config.connections.iter().filter(|c| {
            wanted.contains(c.id.as_str()) && c.origin.as_deref() == Some(update.source.as_str())
        }) {
            // A retired id that is still running came back from another
            // source or the file: not retired.
            if kind == EventKind::Retired && find(new, &c.id).is_some() {
                continue;
            }
            let routes = router.routes(&c.sinks, &c.events);
            if !routes.emits(kind) {
                continue;
            }
            let deliveries: Vec<_> = routes
                .to(kind)
                .iter()
                .map(|r| crate::policy::Delivery {
                    sink: Arc::clone(&r.sink),
                    priority: crate::policy::Priority::Info,
                    action: None,
                })
                .collect();
            let env = Envelope::new(
                &new.daemon.instance,
                kind,
                now,
                Some(&c.id),
                serde_json::json!({
                    "source": update.source,
                    "name": c.name,
                    "url": crate::config::redact_url(&c.url),
                }),
            );
            out.push((env, c.id.clone(), deliveries));
        }
    }
    if out.is_empty() {
        return;
    }
    let res = Store::open(&new.daemon.database)
        .map_err(|e| e.to_string())
        .and_then(|mut s| {
            crate::store::outbox::insert_connection_events(&mut s.db, &out, now)
                .map_err(|e| e.to_string())
        });
    match res {
        Ok(()) => wake.notify_one(),
        Err(e) => tracing::error!(error = %e, "cannot record the discovery events"),
    }
}

fn add_stats(total: &mut EngineStats, s: EngineStats) {
    total.probes_started += s.probes_started;
    total.probes_done += s.probes_done;
    total.skipped_busy += s.skipped_busy;
    total.held += s.held;
    total.transitions += s.transitions;
    total.events += s.events;
    total.suppressed += s.suppressed;
}

/// "connections: 2 added (c, d), 1 removed (b), 1 changed (a); sinks: 2
/// (0 added, 0 removed); maintenance windows: 1 -> 0".
fn changes(old: &Config, new: &Config) -> String {
    // By id in maps: a reload of 10,000 connections must not compare every
    // pair.
    fn by_id(c: &Config) -> std::collections::HashMap<&str, &crate::config::Connection> {
        c.connections
            .iter()
            .map(|k| (k.id.as_str(), &**k))
            .collect()
    }
    fn ids(c: &Config) -> Vec<&String> {
        c.connections.iter().map(|k| &k.id).collect()
    }
    let (o, n) = (by_id(old), by_id(new));
    let added: Vec<&String> = ids(new)
        .into_iter()
        .filter(|i| !o.contains_key(i.as_str()))
        .collect();
    let removed: Vec<&String> = ids(old)
        .into_iter()
        .filter(|i| !n.contains_key(i.as_str()))
        .collect();
    let changed: Vec<&String> = ids(new)
        .into_iter()
        .filter(|i| match (o.get(i.as_str()), n.get(i.as_str())) {
            // Field by field, header secrets included.
            (Some(a), Some(b)) => a != b,
            _ => false,
        })
        .collect();
    let list = |n: &str, v: &[&str]| match v {
        [] => format!("0 {n}"),
        _ => format!("{} {n} ({})", v.len(), v.join(", ")),
    };
    fn strs<'a>(v: &[&'a String]) -> Vec<&'a str> {
        v.iter().map(|s| s.as_str()).collect()
    }
    let sink_ids = |c: &Config| c.sinks.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    let (old_sinks, new_sinks) = (sink_ids(old), sink_ids(new));
    let sinks_added: Vec<&str> = new_sinks
        .iter()
        .filter(|s| !old_sinks.contains(s))
        .map(String::as_str)
        .collect();
    let sinks_removed: Vec<&str> = old_sinks
        .iter()
        .filter(|s| !new_sinks.contains(s))
        .map(String::as_str)
        .collect();
    format!(
        "connections: {}, {}, {}; sinks: {} ({}, {}); maintenance windows: {} -> {}",
        list("added", &strs(&added)),
        list("removed", &strs(&removed)),
        list("changed", &strs(&changed)),
        new.sinks.len(),
        list("added", &sinks_added),
        list("removed", &sinks_removed),
        old.maintenance.len(),
        new.maintenance.len()
    )
}

/// While the database cannot be written (a full disk, a lock held by
/// another process), neither can the outbox. So when the writer reports
/// trouble, a `system.error` goes straight to every sink that takes it: once
/// per failing streak, one attempt per sink, never stored. Probing goes on,
/// and the writer holds the results until it can write them.
async fn storage_alarm(
    mut trouble: watch::Receiver<Option<String>>,
    instance: String,
    sinks: Vec<crate::config::Sink>,
    audit: Option<Audit>,
) {
    use crate::event::EventKind;
    // A streak that began before this generation was already reported.
    trouble.borrow_and_update();
    let sinks: Vec<_> = sinks
        .into_iter()
        .filter(|s| crate::policy::route::takes(s.imp.class(), &s.events, EventKind::SystemError))
        .collect();
    while trouble.changed().await.is_ok() {
        let Some(error) = trouble.borrow_and_update().clone() else {
            tracing::info!(component = "writer", "database writable again");
            continue;
        };
        let message = format!(
            "database writes keep failing; probing goes on and results are held in memory until they can be written: {error}"
        );
        if let Some(a) = &audit {
            a.record("storage_trouble", serde_json::json!({"error": error}));
        }
        let now = crate::model::now_ms();
        let env = crate::event::Envelope::new(
            &instance,
            EventKind::SystemError,
            now,
            None,
            serde_json::json!({"component": "database", "message": message}),
        );
        let Ok(client) = crate::sinks::http::client() else {
            continue;
        };
        for s in &sinks {
            let r = crate::sinks::send_unstored(s, &env, &client, &Default::default()).await;
            let sent = matches!(r.verdict, crate::deliver::retry::Verdict::Done);
            tracing::warn!(
                sink = %s.id,
                event_id = %env.id,
                sent,
                "system.error about the database sent directly (not stored)"
            );
        }
    }
}

/// Silences are added and ended by other processes (`connwatch silence`)
/// and by the admin API, straight in the database: read the ones in force
/// every [`crate::store::silences::POLL`] and tell the engine when they
/// change.
async fn watch_silences(
    path: std::path::PathBuf,
    tx: watch::Sender<Vec<crate::store::silences::Silence>>,
) {
    let mut tick = tokio::time::interval(crate::store::silences::POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let p = path.clone();
        let read = tokio::task::spawn_blocking(move || {
            let store = Store::open_read_only(&p).map_err(|e| e.to_string())?;
            crate::store::silences::current(&store.db, crate::model::now_ms())
                .map_err(|e| crate::store::sq(&p, e).to_string())
        })
        .await;
        match read {
            Ok(Ok(now)) => {
                failing = false;
                tx.send_if_modified(|v| {
                    let changed = *v != now;
                    *v = now;
                    changed
                });
            }
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::error!(error = %e, "cannot read silences; the last ones read stay in force");
            }
            _ => {}
        }
    }
}

/// Stores a `system.error` about `component` for every sink that takes it
/// and wakes the dispatcher.
pub(crate) fn raise_system_error(config: &Config, component: &str, message: &str, wake: &Notify) {
    let now = crate::model::now_ms();
    let kind = crate::event::EventKind::SystemError;
    let env = crate::event::Envelope::new(
        &config.daemon.instance,
        kind,
        now,
        None,
        serde_json::json!({"component": component, "message": message}),
    );
    let policies: Vec<_> = config.sinks.iter().map(|s| s.policy()).collect();
    let deliveries = crate::policy::route::system_deliveries(&policies, kind, None);
    let res = Store::open(&config.daemon.database)
        .map_err(|e| e.to_string())
        .and_then(|mut s| {
            crate::store::outbox::insert_event(&mut s.db, &env, now, &deliveries)
                .map_err(|e| e.to_string())
        });
    match res {
        Ok(()) => wake.notify_one(),
        Err(e) => tracing::error!(error = %e, "cannot record system.error"),
    }
}
