//! connwatch: a connection-health monitor daemon for integration platforms.
//!
//! It polls each connection's status endpoint on a schedule, classifies the
//! answer, confirms health changes, keeps the history in SQLite and writes
//! status-change events to a transactional outbox.
//!
//! # Layout
//!
//! Data flows one way:
//!
//! ```text
//! config ─▶ schedule/engine ─▶ probe ─▶ classify (pure) ─▶ monitor (pure, time passed in)
//!                                                              │
//!                                   policy (pure): which events, who hears them
//!                                                              │
//!                 store::writer: one transaction = probe rows + transition + outbox rows
//!                                                              │
//!                          deliver (a lane per sink) ─▶ sinks/<kind>/
//! ```
//!
//! - [`config`]: TOML -> validated [`config::Config`]; errors with file:line:column.
//! - [`schedule`]: the timer queue for interval connections (cron ones use
//!   tokio-cron-scheduler, wired in [`app`]); [`maintenance`]: windows.
//! - [`engine`]: owns connection state, fires probes, feeds results on.
//! - [`probe`]: the HTTP request; shared clients; bounded body.
//! - [`classify`]: response -> outcome, the classification table.
//! - [`monitor`]: pure state machines (confirmed health, breaker, holds,
//!   flapping, syncs).
//! - [`policy`]: the alert policy, pure: which events exist, who hears
//!   them, one page per outage, chat grouping, fresh news first.
//! - [`store`]: schema, the batching writer, the outbox, queries, retention.
//! - [`event`]: the event envelope and the one list of event kinds.
//! - [`deliver`]: the outbox dispatcher and the retry policy.
//! - [`sinks`]: one folder per sink kind, behind one trait, and the registry.
//! - [`sandbox`]: the simulated status API and webhook receiver.
//! - [`app`]: start-up order and shutdown; [`cli`]: the commands' output.

/// `connwatch --version`: the version and the commit it was built from
/// (`build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CONNWATCH_COMMIT"),
    ")"
);

pub mod admin;
pub mod app;
pub mod classify;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod discovery;
pub mod engine;
pub mod event;
pub mod maintenance;
pub mod model;
pub mod monitor;
pub mod ops;
pub mod policy;
pub mod probe;
pub mod sandbox;
pub mod schedule;
pub mod sinks;
pub mod store;
pub mod uptime;
