//! Running it for real: the systemd notify protocol, metrics and the audit log.

pub mod audit;
pub mod heartbeat;
pub mod log;
pub mod metrics;
pub mod notify;
