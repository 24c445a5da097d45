//! Prometheus metrics (text exposition format 0.0.4).
//!
//! Counters and histograms that the hot paths touch live in one process-wide
//! registry ([`metrics`]); each is resolved once, so an update is a few
//! atomic operations, never a label lookup. Values that are a *state* rather
//! than a count (per connection health and circuit, outbox depth, database
//! size) are read from the database at scrape time by the admin server and
//! encoded next to them ([`Scrape`]).
//!
//! Cardinality: probe counters and histograms are labelled by outcome only,
//! not by connection (10,000 connections would make 70,000 series); per
//! connection there are exactly two series, health and circuit.

use crate::model::Outcome;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::LazyLock;

/// The registry and the handles the daemon updates.
pub struct Metrics {
    registry: Registry,
    probes: Vec<IntCounter>,
    pub probe_duration: Histogram,
    pub lateness: Histogram,
    pub skipped_busy: IntCounter,
    pub held: IntCounter,
    pub transitions: IntCounter,
    pub events: IntCounter,
    deliveries: IntCounterVec,
    pub writer_batch: Histogram,
    /// How long each retention step held the writer.
    pub retention_step: Histogram,
    pub writer_failures: IntCounter,
    /// Database transactions failed in a row now (0 when writes succeed).
    pub writer_failing: IntGauge,
    pub reloads: IntCounterVec,
    /// `connwatch_build_info`: labelled with the instance and shard once
    /// the configuration is read ([`Metrics::identify`]).
    build: IntGaugeVec,
    /// Discovery refreshes by source and result.
    pub discovery_refreshes: IntCounterVec,
    /// Connections each discovery source contributes now.
    pub discovery_connections: IntGaugeVec,
    /// Heartbeat pings by result.
    pub heartbeats: IntCounterVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    // Names are constants of this file; a duplicate is a programming error
    // caught by the unit test below.
    r.register(Box::new(m.clone()))
        .expect("metric registered once");
    m
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let probes_vec = reg(
            &r,
            IntCounterVec::new(
                Opts::new("connwatch_probes_total", "Probes finished, by outcome."),
                &["outcome"],
            )
            .expect("valid metric"),
        );
        let probes = Outcome::ALL
            .iter()
            .map(|o| probes_vec.with_label_values(&[o.as_str()]))
            .collect();
        let probe_duration = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "connwatch_probe_duration_seconds",
                    "Time from sending a probe to its classification.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
            )
            .expect("valid metric"),
        );
        let lateness = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "connwatch_scheduler_lateness_seconds",
                    "How late the scheduler woke for a due probe.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
                ]),
            )
            .expect("valid metric"),
        );
        let counter =
            |name: &str, help: &str| reg(&r, IntCounter::new(name, help).expect("valid metric"));
        let skipped_busy = counter(
            "connwatch_probes_skipped_busy_total",
            "Due probes skipped because the previous probe was still running.",
        );
        let held = counter(
            "connwatch_probes_held_total",
            "Due probes not sent because of an open circuit, a Retry-After or auth hold, or a failing parent.",
        );
        let transitions = counter(
            "connwatch_transitions_total",
            "Confirmed health transitions.",
        );
        let events = counter("connwatch_events_total", "Events recorded for delivery.");
        let deliveries = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "connwatch_deliveries_total",
                    "Delivery attempts, by sink and result (done, retry, dead, skipped).",
                ),
                &["sink", "result"],
            )
            .expect("valid metric"),
        );
        let writer_batch = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "connwatch_writer_batch_rows",
                    "Rows written per database transaction.",
                )
                .buckets(vec![1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 20000.0]),
            )
            .expect("valid metric"),
        );
        let retention_step = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "connwatch_retention_step_seconds",
                    "How long each retention step (one batch, one merge, one vacuum step) held the database writer.",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
            )
            .expect("valid metric"),
        );
        let writer_failures = counter(
            "connwatch_writer_failures_total",
            "Database transactions that failed and were retried.",
        );
        let writer_failing = reg(
            &r,
            IntGauge::new(
                "connwatch_writer_failing",
                "Database transactions failed in a row; 0 while writes succeed.",
            )
            .expect("valid metric"),
        );
        let reloads = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "connwatch_config_reloads_total",
                    "Configuration reloads, by result (applied, refused).",
                ),
                &["result"],
            )
            .expect("valid metric"),
        );
        let build = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "connwatch_build_info",
                    "The running build, this daemon's instance name and shard; always 1.",
                ),
                &["version", "connwatch_instance", "shard"],
            )
            .expect("valid metric"),
        );
        let discovery_refreshes = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "connwatch_discovery_refreshes_total",
                    "Discovery refreshes, by source and result (ok, unchanged, held, failed, garbage).",
                ),
                &["source", "result"],
            )
            .expect("valid metric"),
        );
        let discovery_connections = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "connwatch_discovery_connections",
                    "Connections each discovery source lists now (its last good set).",
                ),
                &["source"],
            )
            .expect("valid metric"),
        );
        let heartbeats = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "connwatch_heartbeat_pings_total",
                    "Pings of [daemon] heartbeat_url, by result (ok, failed).",
                ),
                &["result"],
            )
            .expect("valid metric"),
        );
        Metrics {
            registry: r,
            probes,
            probe_duration,
            lateness,
            skipped_busy,
            held,
            transitions,
            events,
            deliveries,
            writer_batch,
            retention_step,
            writer_failures,
            writer_failing,
            reloads,
            build,
            discovery_refreshes,
            discovery_connections,
            heartbeats,
        }
    }

    /// Labels `connwatch_build_info` with this daemon's instance and shard.
    pub fn identify(&self, instance: &str, shard: &str) {
        self.build.reset();
        self.build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), instance, shard])
            .set(1);
    }

    /// Counts one finished probe.
    pub fn probe(&self, outcome: Outcome, seconds: f64) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.probes[i].inc();
        self.probe_duration.observe(seconds);
    }

    /// Creates each result's series of `sink` at 0, so that an alert on
    /// `increase(…{result="dead"})` sees the first dead delivery.
    pub fn sink_known(&self, sink: &str) {
        for result in ["done", "skipped", "retry", "dead"] {
            self.deliveries.with_label_values(&[sink, result]);
        }
    }

    /// Counts one delivery attempt.
    pub fn delivery(&self, sink: &str, result: &str) {
        self.deliveries.with_label_values(&[sink, result]).inc();
    }
}

/// The values read at scrape time.
pub struct Scrape<'a> {
    /// Id, health and circuit code of each connection
    /// (`query::health_and_circuit`).
    pub connections: &'a [(String, &'static str, u8)],
    /// Connection id, scope id and health of each scope
    /// (`query::scope_health`).
    pub scopes: &'a [(String, String, &'static str)],
    /// Each connection with an `slo`: the error budget left over the last
    /// 30 days, seconds (`store::report::slo_budgets`).
    pub slo_budget: &'a [(String, f64)],
    pub outbox_pending: i64,
    pub outbox_dead: i64,
    pub oldest_pending_age_s: f64,
    pub database_bytes: i64,
    pub uptime_s: f64,
}

/// The whole exposition: the process-wide metrics plus `scrape`.
pub fn render(scrape: &Scrape) -> prometheus::Result<Vec<u8>> {
    let r = Registry::new();
    let gauge = |name: &str, help: &str, v: i64| -> prometheus::Result<()> {
        let g = IntGauge::new(name, help)?;
        g.set(v);
        r.register(Box::new(g))
    };
    gauge(
        "connwatch_connections",
        "Configured connections.",
        scrape.connections.len() as i64,
    )?;
    gauge(
        "connwatch_outbox_pending",
        "Deliveries waiting to be sent (outbox depth).",
        scrape.outbox_pending,
    )?;
    gauge(
        "connwatch_outbox_dead",
        "Deliveries given up on (see `connwatch events --dead`).",
        scrape.outbox_dead,
    )?;
    gauge(
        "connwatch_database_size_bytes",
        "Size of the database file and its WAL.",
        scrape.database_bytes,
    )?;
    let fgauge = |name: &str, help: &str, v: f64| -> prometheus::Result<()> {
        let g = prometheus::Gauge::new(name, help)?;
        g.set(v);
        r.register(Box::new(g))
    };
    fgauge(
        "connwatch_outbox_oldest_pending_age_seconds",
        "Age of the oldest pending delivery's event; 0 when none is pending.",
        scrape.oldest_pending_age_s,
    )?;
    fgauge(
        "connwatch_uptime_seconds",
        "Seconds since the daemon started.",
        scrape.uptime_s,
    )?;
    let mut families = metrics().registry.gather();
    families.extend(r.gather());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::with_capacity(4096 + scrape.connections.len() * 120);
    TextEncoder::new().encode(&families, &mut out)?;
    // The two per-connection families are written straight from the rows:
    // through a registry, 10,000 connections cost three copies of 20,000
    // label sets per scrape.
    use std::io::Write;
    let mut line = |args: std::fmt::Arguments| {
        let _ = out.write_fmt(args);
    };
    line(format_args!(
        "# HELP connwatch_connection_health 1 for each connection's current health (one series per connection).\n# TYPE connwatch_connection_health gauge\n"
    ));
    for (id, health, _) in scrape.connections {
        line(format_args!(
            "connwatch_connection_health{{connection=\"{}\",health=\"{}\"}} 1\n",
            LabelValue(id),
            LabelValue(health)
        ));
    }
    line(format_args!(
        "# HELP connwatch_connection_circuit_state Circuit breaker per connection: 0 closed, 1 half-open, 2 open.\n# TYPE connwatch_connection_circuit_state gauge\n"
    ));
    for (id, _, circuit) in scrape.connections {
        line(format_args!(
            "connwatch_connection_circuit_state{{connection=\"{}\"}} {}\n",
            LabelValue(id),
            circuit
        ));
    }
    if !scrape.slo_budget.is_empty() {
        line(format_args!(
            "# HELP connwatch_slo_budget_remaining Seconds of down time the connection's slo still allows over the last 30 days (negative: overspent; docs/uptime.md).\n# TYPE connwatch_slo_budget_remaining gauge\n"
        ));
        for (conn, left) in scrape.slo_budget {
            line(format_args!(
                "connwatch_slo_budget_remaining{{connection=\"{}\"}} {left}\n",
                LabelValue(conn)
            ));
        }
    }
    if !scrape.scopes.is_empty() {
        line(format_args!(
            "# HELP connwatch_scope_health 1 for each scope's current health (one series per scope).\n# TYPE connwatch_scope_health gauge\n"
        ));
        for (conn, scope, health) in scrape.scopes {
            line(format_args!(
                "connwatch_scope_health{{connection=\"{}\",scope=\"{}\",health=\"{}\"}} 1\n",
                LabelValue(conn),
                LabelValue(scope),
                LabelValue(health)
            ));
        }
    }
    Ok(out)
}

/// A label value escaped for the text format (`\\`, `\"`, `\n`).
struct LabelValue<'a>(&'a str);

impl std::fmt::Display for LabelValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for ch in self.0.chars() {
            match ch {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_escaped_labels() {
        metrics().probe(Outcome::Offline, 0.2);
        metrics().delivery("ops", "done");
        metrics().identify("host-a", "2/3");
        let s = Scrape {
            connections: &[
                ("a\"b".to_string(), "offline", 2),
                ("back\\slash\nnewline".to_string(), "online", 0),
            ],
            scopes: &[(
                "a\"b".to_string(),
                "orders".to_string(),
                "permission_denied",
            )],
            slo_budget: &[("a\"b".to_string(), -12.5)],
            outbox_pending: 3,
            outbox_dead: 0,
            oldest_pending_age_s: 1.5,
            database_bytes: 4096,
            uptime_s: 2.0,
        };
        let text = String::from_utf8(render(&s).unwrap()).unwrap();
        for needle in [
            "connwatch_probes_total{outcome=\"offline\"}",
            "connwatch_probe_duration_seconds_bucket",
            "connwatch_connection_health{connection=\"a\\\"b\",health=\"offline\"} 1",
            "connwatch_connection_circuit_state{connection=\"a\\\"b\"} 2",
            "connwatch_connection_circuit_state{connection=\"back\\\\slash\\nnewline\"} 0",
            "connwatch_outbox_pending 3",
            "connwatch_scope_health{connection=\"a\\\"b\",scope=\"orders\",health=\"permission_denied\"} 1",
            "connwatch_probes_total{outcome=\"permission_denied\"}",
            "connwatch_slo_budget_remaining{connection=\"a\\\"b\"} -12.5",
            "connwatch_build_info{connwatch_instance=\"host-a\",shard=\"2/3\",version=",
            "connwatch_deliveries_total{result=\"done\",sink=\"ops\"}",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}
