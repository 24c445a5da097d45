//! Pure per-connection state machines, time passed in.
//!
//! `health` confirms outcomes into a health (PRODUCT §2, first paragraph).
//! The circuit breaker, backoff, flapping and maintenance plug in beside it:
//! each takes the classified outcome and the time, and returns what changed.

pub mod health;

pub use health::{HealthMachine, Thresholds, Transition};
