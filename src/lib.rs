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
//!                 store::writer: one transaction = probe rows + transition + outbox rows
//! ```
//!
//! - [`config`]: TOML -> validated [`config::Config`]; errors with file:line:column.
//! - [`schedule`]: the timer queue for interval connections (cron ones use
//!   tokio-cron-scheduler, wired in [`app`]).
//! - [`engine`]: owns connection state, fires probes, feeds results on.
//! - [`probe`]: the HTTP request; shared clients; bounded body.
//! - [`classify`]: response -> outcome, the table of PRODUCT §1.
//! - [`monitor`]: pure state machines (confirmed health; the breaker and
//!   friends plug in here).
//! - [`store`]: schema, the single batching writer, queries, retention.
//! - [`event`]: the event envelope and types.
//! - [`deliver`]: the outbox dispatcher, retry policy and sinks.
//! - [`sandbox`]: the simulated status API and webhook receiver.
//! - [`app`]: start-up order and shutdown; [`cli`]: the commands' output.

pub mod admin;
pub mod app;
pub mod classify;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod engine;
pub mod event;
pub mod model;
pub mod monitor;
pub mod ops;
pub mod probe;
pub mod sandbox;
pub mod schedule;
pub mod store;
