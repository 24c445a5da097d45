//! Running it for real: the systemd notify protocol and the audit log.

pub mod audit;
pub mod notify;
