//! The file as written: every key optional, no defaults applied. The schema
//! walk has already rejected unknown keys; `deny_unknown_fields` stays as a
//! second guard.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub daemon: Option<RawDaemon>,
    pub defaults: Option<RawProbe>,
    /// Boxed: an entry is large and mostly empty, and each is freed as
    /// soon as it is validated.
    #[serde(default)]
    pub connection: Vec<Box<RawProbe>>,
    /// Each kind reads its own keys (`src/sinks/<kind>/`).
    #[serde(default)]
    pub sink: Vec<toml::Table>,
    #[serde(default)]
    pub maintenance: Vec<RawMaintenance>,
    pub sandbox: Option<RawSandbox>,
    #[serde(default)]
    pub discovery: Vec<RawDiscovery>,
}

/// One `[[discovery]]` source.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub id: Option<String>,
    pub format: Option<String>,
    pub url: Option<String>,
    pub path: Option<String>,
    pub items: Option<String>,
    pub id_pointer: Option<String>,
    pub name_pointer: Option<String>,
    pub status_url: Option<String>,
    pub refresh: Option<String>,
    pub timeout: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub tls_ca_file: Option<String>,
    pub tls_client_cert: Option<String>,
    pub tls_client_key: Option<String>,
    pub tls_insecure: Option<bool>,
    /// Connection keys every discovered connection gets (over `[defaults]`).
    pub template: Option<RawProbe>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub database: Option<String>,
    pub audit_log: Option<String>,
    pub listen: Option<String>,
    pub admin_token: Option<String>,
    pub admin_token_file: Option<String>,
    pub retention: Option<String>,
    pub max_concurrent_probes: Option<i64>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub scheduler_tick: Option<String>,
    pub history_flush: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub public_url: Option<String>,
    pub instance: Option<String>,
    pub shard: Option<String>,
    pub heartbeat_url: Option<String>,
    pub heartbeat_interval: Option<String>,
}

/// One `[[connection]]`, or `[defaults]` (which the schema forbids `id`,
/// `name` and `url` in).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub id: Option<String>,
    pub name: Option<String>,
    pub url: Option<String>,
    pub method: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub body: Option<String>,
    pub interval: Option<String>,
    pub schedule: Option<String>,
    pub timeout: Option<String>,
    pub degraded_after: Option<String>,
    pub max_body: Option<ByteSize>,
    pub expect: Option<RawExpect>,
    pub breaker: Option<RawBreaker>,
    pub auth_interval: Option<String>,
    pub retry_after_max: Option<String>,
    pub rate_limit_backoff_max: Option<String>,
    pub flap_high: Option<f64>,
    pub flap_low: Option<f64>,
    pub depends_on: Option<String>,
    pub sinks: Option<Vec<String>>,
    pub events: Option<Vec<String>>,
    pub tls_ca_file: Option<String>,
    pub tls_client_cert: Option<String>,
    pub tls_client_key: Option<String>,
    pub tls_insecure: Option<bool>,
    /// `"99.5%"`: the uptime objective (reports and the page).
    pub slo: Option<String>,
    /// `[[connection.scope]]` (refused in `[defaults]`).
    pub scope: Option<Vec<RawScope>>,
}

/// One `[[connection.scope]]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScope {
    pub id: Option<String>,
    pub url: Option<String>,
    pub interval: Option<String>,
    pub method: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub body: Option<String>,
    pub timeout: Option<String>,
    pub degraded_after: Option<String>,
    pub expect: Option<RawExpect>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpect {
    pub sync: Option<RawSync>,
    pub status: Option<Vec<i64>>,
    pub json_pointer: Option<String>,
    pub online: Option<Vec<String>>,
    pub degraded: Option<Vec<String>>,
    pub offline: Option<Vec<String>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    pub status: Option<String>,
    pub finished_at: Option<String>,
    pub max_age: Option<String>,
    pub failed: Option<Vec<String>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub failure_threshold: Option<i64>,
    pub success_threshold: Option<i64>,
    pub open_for: Option<String>,
    pub max_open_for: Option<String>,
    pub failure_rate: Option<f64>,
    pub window: Option<i64>,
    pub min_probes: Option<i64>,
    pub auth_interval: Option<String>,
}

/// `max_body = 65536` or `max_body = "64KiB"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    Bytes(i64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaintenance {
    pub connections: Option<Vec<String>>,
    pub schedule: Option<String>,
    pub duration: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSandbox {
    pub enabled: Option<bool>,
    pub listen: Option<String>,
    pub webhook_secret: Option<String>,
    pub webhook_secret_file: Option<String>,
}
