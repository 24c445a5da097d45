//! The `connwatch` command: a thin shell over the library. Exit codes:
//! 0 ok, 1 runtime failure, 2 usage or configuration error, 3 the command
//! ran and found trouble (`status`: no daemon keeps the database current;
//! `probe`: the connection is not healthy).

use clap::{Parser, Subcommand};
use connwatch::config::{
    Config, ConfigErrors, Connection, DEFAULT_CONFIG_PATH, DEFAULT_SANDBOX_LISTEN,
};
use connwatch::store::{query, retention, Store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "connwatch",
    version = connwatch::VERSION,
    about = "Connection-health monitor for integration platforms",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "CONNWATCH_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

/// Shown by `--help`.
const EXIT_CODES: &str = "Exit codes:
  0  ok
  1  runtime failure (the database cannot be opened, a sink refused the test, ...)
  2  usage or configuration error
  3  the command ran and found trouble: `status`, no daemon keeps the
     database current (not running, or not writing); `probe`, the
     connection is not healthy (anything but online or degraded)";

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run,
    /// Validate the configuration and print the plan; exit 2 on errors.
    Check {
        /// Also fetch each [[discovery]] source once and print what it
        /// would add.
        #[arg(long)]
        discover: bool,
    },
    /// Every connection: health, circuit, since, last probe.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Uptime, outages, MTTR, p95 latency and SLO budget per connection
    /// (docs/uptime.md).
    Report {
        /// The period: from this long ago until now (e.g. 24h, 7d, 30d).
        #[arg(long, default_value = "30d")]
        since: String,
        /// Only this connection.
        #[arg(long)]
        connection: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print CSV instead of a table.
        #[arg(long)]
        csv: bool,
    },
    /// Probes and transitions of one connection.
    History {
        id: String,
        /// How far back (e.g. 30m, 1h, 7d).
        #[arg(long, default_value = "1h")]
        since: String,
        /// At most this many lines (newest kept).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// The probes and changes of one of its scopes instead.
        #[arg(long)]
        scope: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One probe now, classified; writes nothing. With --now, the running
    /// daemon probes instead (its result lands in status and history).
    Probe {
        /// A configured connection.
        #[arg(required_unless_present = "url", conflicts_with = "url")]
        id: Option<String>,
        /// Probe this URL with default settings instead.
        #[arg(long)]
        url: Option<String>,
        /// Ask the running daemon (through its admin API: [daemon] listen
        /// and admin_token) to probe now, past an open circuit's wait and
        /// the auth and rate-limit holds, for this one probe: after fixing
        /// credentials, say.
        #[arg(long, conflicts_with = "url", requires = "id")]
        now: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Simulated status API and webhook receiver on loopback.
    Sandbox {
        #[arg(long, default_value = DEFAULT_SANDBOX_LISTEN)]
        listen: SocketAddr,
        /// whsec_… secret to verify webhook signatures with.
        #[arg(long, env = "CONNWATCH_SANDBOX_WEBHOOK_SECRET", hide_env_values = true)]
        webhook_secret: Option<String>,
    },
    /// Apply retention now.
    Prune,
    /// Events and their deliveries; `events replay EVENT_ID` re-queues one.
    Events {
        #[command(subcommand)]
        action: Option<EventsAction>,
        /// Only events with a delivery still pending.
        #[arg(long, conflicts_with = "dead")]
        pending: bool,
        /// Only events with a dead delivery.
        #[arg(long)]
        dead: bool,
        /// Only events of this connection.
        #[arg(long)]
        connection: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Sinks: `sinks test SINK` sends a synthetic event now.
    Sinks {
        #[command(subcommand)]
        action: SinksAction,
    },
    /// Writes the man pages (gzipped) and shell completions into DIR, for
    /// packaging: `man/connwatch.1.gz` and one page per subcommand,
    /// `man/connwatch.toml.5.gz`, `completions/{connwatch.bash,_connwatch,connwatch.fish}`.
    #[command(hide = true)]
    Assets { dir: PathBuf },
    /// The audit log: `audit verify [FILE…]` checks its hash chain.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Silences: hold a connection's events for a while (`silence add`),
    /// see them (`silence list`), end one early (`silence end`).
    Silence {
        #[command(subcommand)]
        action: SilenceAction,
    },
}

#[derive(Subcommand)]
enum SilenceAction {
    /// Hold the events of connections (or --all) from now, for a while.
    /// Events are recorded and held as in a maintenance window; when it
    /// ends, one catch-up brings receivers up to date.
    Add {
        /// Connection ids.
        ids: Vec<String>,
        /// Every connection.
        #[arg(long)]
        all: bool,
        /// How long (e.g. 30m, 1h, 2d; at most 30d).
        #[arg(long = "for", conflicts_with = "until", value_name = "DURATION")]
        length: Option<String>,
        /// Until when (RFC 3339, e.g. 2026-12-02T18:00:00Z).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Why (shown in status and recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Silences in force, and those that ended in the last 24 hours.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// End a silence now.
    End { silence_id: String },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check the hash chain across FILEs, oldest first (default: the
    /// configured audit_log, after its rotated `.1` if there is one).
    Verify { files: Vec<PathBuf> },
}

#[derive(Subcommand)]
enum EventsAction {
    /// Re-queue an event for delivery now (all its sinks, or one).
    Replay {
        event_id: String,
        #[arg(long)]
        sink: Option<String>,
    },
}

#[derive(Subcommand)]
enum SinksAction {
    /// Send a synthetic `connection.status_changed` to SINK now and print the answer.
    Test { sink: String },
}

/// What went wrong, and which exit code it earns.
enum Failure {
    Usage(String),
    Config(ConfigErrors),
    Runtime(anyhow::Error),
    /// The command did its work and found trouble (exit 3).
    Trouble(String),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<connwatch::app::SetupError>() {
            Ok(s) => Failure::Usage(s.0),
            Err(e) => Failure::Runtime(e),
        }
    }
}

impl From<connwatch::store::StoreError> for Failure {
    fn from(e: connwatch::store::StoreError) -> Self {
        Failure::Runtime(e.into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands that open sockets (the daemon, the sandbox, `probe`, `sinks
    // test`, `check --discover`) keep SIGPIPE ignored: a peer that closes
    // its socket while a (vectored) write is under way must be an error to
    // handle, not a reason to die with no output.
    let network = matches!(
        cli.command,
        Command::Run
            | Command::Sandbox { .. }
            | Command::Probe { .. }
            | Command::Sinks { .. }
            | Command::Check { discover: true }
    );
    if !network {
        // A command whose output goes to `head` ends quietly when the pipe
        // closes, as Unix tools do, instead of panicking on the write.
        // SAFETY: setting a signal's disposition to its default, before
        // any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Config(e)) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
        Err(Failure::Trouble(m)) => {
            eprintln!("{m}");
            ExitCode::from(3)
        }
    }
}

fn load(path: &std::path::Path) -> Result<Config, Failure> {
    Config::load(path).map_err(Failure::Config)
}

fn load_daemon(path: &std::path::Path) -> Result<connwatch::config::Daemon, Failure> {
    Config::load_daemon(path).map_err(Failure::Config)
}

/// A current-thread runtime: measured cheaper per probe than the
/// multi-thread one (see docs/design.md); the writer has its own thread.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))
}

fn init_logs(level: &str, format: connwatch::config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    // tokio-cron-scheduler logs its own start-up at info; keep that out.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("tokio_cron_scheduler=warn,{level}")));
    // Colour only on a terminal: the journal and log files get plain text.
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        connwatch::config::LogFormat::Json => b.json().flatten_event(true).init(),
        connwatch::config::LogFormat::Text => b.init(),
    }
}

fn real_main(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Run => {
            let config = load(&cli.config)?;
            init_logs(&config.daemon.log_level, config.daemon.log_format);
            runtime()?.block_on(connwatch::app::run(config))?;
            Ok(())
        }
        Command::Check { discover } => {
            let config = load(&cli.config)?;
            print!("{}", connwatch::cli::check::plan(&config));
            if discover {
                let (text, ok) = runtime()?.block_on(connwatch::cli::check::discover(&config));
                print!("{text}");
                if !ok {
                    return Err(Failure::Trouble(
                        "a discovery source could not be read".into(),
                    ));
                }
            }
            Ok(())
        }
        Command::Status { json } => {
            let daemon = load_daemon(&cli.config)?;
            let store = Store::open_read_only(&daemon.database)?;
            let now = connwatch::model::now_ms();
            let running = query::daemon_running(&store, now)?;
            let mut rows = query::status(&store, now)?;
            if !running.current() {
                rows.iter_mut().for_each(query::StatusRow::mark_stale);
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).map_err(|e| Failure::Runtime(e.into()))?
                );
            } else {
                let sources = query::sources(&store)?;
                print!(
                    "{}",
                    connwatch::cli::status::render(&rows, &sources, &running, now)
                );
            }
            if running.current() {
                Ok(())
            } else {
                Err(Failure::Trouble(running.describe(now)))
            }
        }
        Command::Report {
            since,
            connection,
            json,
            csv,
        } => {
            let since = connwatch::config::parse_duration(&since)
                .map_err(|e| Failure::Usage(format!("--since: {e}")))?;
            let daemon = load_daemon(&cli.config)?;
            let store = Store::open_read_only(&daemon.database)?;
            let to = connwatch::model::now_ms();
            let from = to - since.as_millis() as i64;
            let rows = connwatch::store::report::reports(&store, from, to, connection.as_deref())?;
            if let (Some(id), true) = (&connection, rows.is_empty()) {
                return Err(Failure::Usage(format!(
                    "no connection {id:?} in {}",
                    daemon.database.display()
                )));
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).map_err(|e| Failure::Runtime(e.into()))?
                );
            } else if csv {
                print!("{}", connwatch::cli::report::csv(&rows));
            } else {
                print!("{}", connwatch::cli::report::table(&rows));
            }
            Ok(())
        }
        Command::History {
            id,
            since,
            limit,
            scope,
            json,
        } => {
            let since = connwatch::config::parse_duration(&since)
                .map_err(|e| Failure::Usage(format!("--since: {e}")))?;
            let daemon = load_daemon(&cli.config)?;
            let store = Store::open_read_only(&daemon.database)?;
            if id.contains('/') {
                return Err(Failure::Usage(format!(
                    "{id:?} is no connection id; for a scope: connwatch history ID --scope SCOPE"
                )));
            }
            let key = store.key_of(&id)?.ok_or_else(|| {
                Failure::Usage(format!(
                    "no connection {id:?} in {}",
                    daemon.database.display()
                ))
            })?;
            let key = match &scope {
                None => key,
                Some(s) => store
                    .key_of(&connwatch::store::scope_row_id(&id, s))?
                    .ok_or_else(|| {
                        Failure::Usage(format!("connection {id:?} has no scope {s:?}"))
                    })?,
            };
            let from = connwatch::model::now_ms() - since.as_millis() as i64;
            let items = query::history(&store, key, from, limit)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&items).map_err(|e| Failure::Runtime(e.into()))?
                );
            } else {
                print!("{}", connwatch::cli::history::render(&items));
            }
            Ok(())
        }
        Command::Probe {
            id: Some(id),
            now: true,
            json,
            ..
        } => probe_now(&cli.config, &id, json),
        Command::Probe { id, url, json, .. } => {
            let conn = match (id, url) {
                (_, Some(u)) => {
                    let url = url::Url::parse(&u)
                        .map_err(|e| Failure::Usage(format!("--url: invalid URL ({e})")))?;
                    if !matches!(url.scheme(), "http" | "https") {
                        return Err(Failure::Usage(
                            "--url: only http:// and https:// URLs".into(),
                        ));
                    }
                    Connection::adhoc(url)
                }
                (Some(id), None) => {
                    let config = load(&cli.config)?;
                    config.connection(&id).cloned().ok_or_else(|| {
                        Failure::Usage(format!("no connection {id:?} in {}", cli.config.display()))
                    })?
                }
                (None, None) => return Err(Failure::Usage("give a connection id or --url".into())),
            };
            let c = runtime()?
                .block_on(connwatch::cli::probe::once(&conn))
                .map_err(|e| Failure::Usage(e.to_string()))?;
            print!(
                "{}",
                connwatch::cli::probe::render(
                    &conn.id,
                    &connwatch::config::redact_url(&conn.url),
                    &c,
                    json
                )
            );
            use connwatch::model::Outcome;
            let outcome = c.classified.outcome;
            if matches!(outcome, Outcome::Online | Outcome::Degraded) {
                Ok(())
            } else {
                Err(Failure::Trouble(format!(
                    "{}: {outcome} (exit code 3: not healthy)",
                    conn.id
                )))
            }
        }
        Command::Sandbox {
            listen,
            webhook_secret,
        } => {
            if !listen.ip().is_loopback() {
                return Err(Failure::Usage(
                    "--listen: the sandbox serves on loopback only".into(),
                ));
            }
            if let Some(s) = &webhook_secret {
                connwatch::config::validate_whsec(s)
                    .map_err(|e| Failure::Usage(format!("--webhook-secret: {e}")))?;
            }
            init_logs("info", connwatch::config::LogFormat::Text);
            runtime()?.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
                    Failure::Runtime(anyhow::anyhow!("cannot listen on {listen}: {e}"))
                })?;
                eprintln!("sandbox serving on http://{listen}/ (Ctrl-C to stop)");
                let opts = connwatch::sandbox::Options {
                    webhook_secret: webhook_secret.map(connwatch::config::Secret::new),
                };
                connwatch::sandbox::serve(listener, opts, async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
                .map_err(|e| Failure::Runtime(e.into()))
            })
        }
        Command::Events {
            action: Some(EventsAction::Replay { event_id, sink }),
            ..
        } => {
            let daemon = load_daemon(&cli.config)?;
            if let Some(s) = &sink {
                let ids = Config::sink_ids(&cli.config).map_err(Failure::Config)?;
                if !ids.contains(s) {
                    return Err(Failure::Usage(format!(
                        "no sink {s:?} in {}",
                        cli.config.display()
                    )));
                }
            }
            let mut store = Store::open(&daemon.database)?;
            match connwatch::store::outbox::replay(
                &mut store,
                &event_id,
                sink.as_deref(),
                connwatch::model::now_ms(),
            )? {
                Some(n) => {
                    if let Some(a) = &daemon.audit_log {
                        connwatch::ops::audit::record_once(
                            a,
                            "operator",
                            serde_json::json!({"action": "replay", "event_id": event_id, "sink": sink, "queued": n}),
                        );
                    }
                    println!(
                        "{event_id}: {n} deliver{} queued",
                        if n == 1 { "y" } else { "ies" }
                    );
                    Ok(())
                }
                None => Err(Failure::Usage(format!(
                    "no event {event_id:?} in {}",
                    daemon.database.display()
                ))),
            }
        }
        Command::Events {
            action: None,
            pending,
            dead,
            connection,
            limit,
            json,
        } => {
            use connwatch::store::outbox;
            let daemon = load_daemon(&cli.config)?;
            let store = Store::open_read_only(&daemon.database)?;
            let filter = if pending {
                outbox::Filter::Pending
            } else if dead {
                outbox::Filter::Dead
            } else {
                outbox::Filter::All
            };
            let rows = outbox::list(&store, filter, connection.as_deref(), limit)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).map_err(|e| Failure::Runtime(e.into()))?
                );
            } else {
                print!(
                    "{}",
                    connwatch::cli::events::render(&rows, connwatch::model::now_ms())
                );
            }
            Ok(())
        }
        Command::Sinks {
            action: SinksAction::Test { sink },
        } => {
            let config = load(&cli.config)?;
            let sink = config
                .sinks
                .iter()
                .find(|s| s.id == sink)
                .cloned()
                .ok_or_else(|| {
                    Failure::Usage(format!("no sink {sink:?} in {}", cli.config.display()))
                })?;
            let dir = connwatch::sinks::Directory::of(&config);
            let r = runtime()?.block_on(connwatch::cli::events::test_sink(
                &sink,
                &dir,
                &config.daemon.instance,
            ));
            println!("{}", connwatch::cli::events::render_test(&sink.id, &r));
            if r.verdict == connwatch::deliver::retry::Verdict::Done {
                Ok(())
            } else {
                Err(Failure::Runtime(anyhow::anyhow!(
                    "sink {} did not accept the test event",
                    sink.id
                )))
            }
        }
        Command::Assets { dir } => {
            use clap::CommandFactory;
            let written = connwatch::cli::manpage::write_assets(Cli::command(), &dir)
                .map_err(|e| Failure::Runtime(anyhow::anyhow!("writing {}: {e}", dir.display())))?;
            for p in written {
                println!("{}", p.display());
            }
            Ok(())
        }
        Command::Audit {
            action: AuditAction::Verify { files },
        } => {
            let files = if files.is_empty() {
                let daemon = load_daemon(&cli.config)?;
                let path = daemon.audit_log.ok_or_else(|| {
                    Failure::Usage(format!(
                        "no [daemon] audit_log in {}; name the files",
                        cli.config.display()
                    ))
                })?;
                let rotated = PathBuf::from(format!("{}.1", path.display()));
                let mut v = Vec::new();
                if rotated.exists() {
                    v.push(rotated);
                }
                v.push(path);
                v
            } else {
                files
            };
            match connwatch::ops::audit::verify(&files) {
                Ok(n) => {
                    println!(
                        "ok: {n} lines in {} file(s), the chain is unbroken",
                        files.len()
                    );
                    Ok(())
                }
                Err(b) => Err(Failure::Runtime(anyhow::anyhow!(
                    "broken chain at {}:{}: {}",
                    b.file.display(),
                    b.line,
                    b.why
                ))),
            }
        }
        Command::Silence { action } => silence(&cli.config, action),
        Command::Prune => {
            let daemon = load_daemon(&cli.config)?;
            let store = Store::open(&daemon.database)?;
            let p = retention::prune(&store, daemon.retention, connwatch::model::now_ms())?;
            if let Some(a) = &daemon.audit_log {
                connwatch::ops::audit::record_once(
                    a,
                    "operator",
                    serde_json::json!({"action": "prune", "pruned": p}),
                );
            }
            println!(
                "pruned {} probe rows, {} online runs, {} delivery attempts, {} events, {} transitions, {} rollups, {} days of hourly rollups made daily; {} free pages returned",
                p.probes, p.probe_runs, p.delivery_attempts, p.events, p.transitions, p.rollups, p.days_merged, p.pages_freed
            );
            Ok(())
        }
    }
}

/// Who runs this command, for the audit log.
fn operator() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

fn silence(config: &std::path::Path, action: SilenceAction) -> Result<(), Failure> {
    use connwatch::store::silences;
    let daemon = load_daemon(config)?;
    let now = connwatch::model::now_ms();
    let audit = |fields: serde_json::Value| {
        if let Some(a) = &daemon.audit_log {
            connwatch::ops::audit::record_once(a, "operator", fields);
        }
    };
    match action {
        SilenceAction::Add {
            ids,
            all,
            length,
            until,
            reason,
        } => {
            let length = length
                .map(|l| connwatch::config::parse_duration(&l))
                .transpose()
                .map_err(|e| Failure::Usage(format!("--for: {e}")))?;
            let mut store = Store::open(&daemon.database)?;
            let req = silences::Request {
                connections: ids,
                all,
                length,
                until,
                reason,
            };
            let (connections, length) =
                silences::check(&store, &req, now).map_err(Failure::Usage)?;
            let by = operator();
            let s = silences::add(&mut store, connections, now, length, &req.reason, &by)?;
            audit(
                serde_json::json!({"action": "silence_add", "silence_id": s.id,
                "connections": s.connections, "until": connwatch::model::rfc3339(s.ends_ms),
                "reason": s.reason, "by": by}),
            );
            println!("{}", connwatch::cli::silence::added(&s));
            Ok(())
        }
        SilenceAction::List { json } => {
            let store = Store::open_read_only(&daemon.database)?;
            let list: Vec<silences::SilenceView> = silences::list(&store, now - 86_400_000)?
                .into_iter()
                .map(|s| s.view(now))
                .collect();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).map_err(|e| Failure::Runtime(e.into()))?
                );
            } else {
                print!("{}", connwatch::cli::silence::render(&list, now));
            }
            Ok(())
        }
        SilenceAction::End { silence_id } => {
            let mut store = Store::open(&daemon.database)?;
            let Some(s) = silences::end(&mut store, &silence_id, now)? else {
                return Err(Failure::Usage(format!(
                    "no silence {silence_id:?} in {}",
                    daemon.database.display()
                )));
            };
            let by = operator();
            audit(serde_json::json!({"action": "silence_end", "silence_id": s.id, "by": by}));
            println!("{}: ended", s.id);
            Ok(())
        }
    }
}

/// `probe ID --now`: the running daemon probes, through its admin API.
fn probe_now(config: &std::path::Path, id: &str, json: bool) -> Result<(), Failure> {
    let daemon = Config::load_admin(config).map_err(Failure::Config)?;
    let how = "probe --now asks the running daemon through its admin API";
    let Some(listen) = daemon.listen else {
        return Err(Failure::Usage(format!(
            "{how}: set [daemon] listen (and admin_token) in {}",
            config.display()
        )));
    };
    let Some(token) = daemon.admin_token else {
        return Err(Failure::Usage(format!(
            "{how}: set [daemon] admin_token in {}",
            config.display()
        )));
    };
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let path: String =
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).collect();
    let url = format!("http://{addr}/api/v1/connections/{path}/probe?force=true");
    let (status, body) = runtime()?.block_on(async {
        let resp = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(15))
            .build()
            .map_err(|e| Failure::Runtime(e.into()))?
            .post(&url)
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(|e| {
                Failure::Runtime(anyhow::anyhow!(
                    "cannot reach the daemon's admin API at {addr}: {} (is it running?)",
                    connwatch::probe::transport_error(&e).message
                ))
            })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        Ok::<_, Failure>((status, body))
    })?;
    if json {
        println!("{body}");
    }
    match status {
        202 => {
            if !json {
                println!(
                    "{id}: probing now (holds lifted for this one probe); `connwatch status` shows the result"
                );
            }
            Ok(())
        }
        404 => Err(Failure::Usage(format!(
            "no connection {id:?} in the running configuration"
        ))),
        _ => Err(Failure::Runtime(anyhow::anyhow!(
            "the daemon answered {status}: {}",
            body["message"].as_str().unwrap_or("")
        ))),
    }
}
