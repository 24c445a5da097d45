//! Running under systemd: the notify protocol.

pub mod notify;
