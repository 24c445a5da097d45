//! `connwatch check`: the plan a valid configuration makes.

use crate::config::{format_duration, redact_url, Cadence, Config};
use std::fmt::Write;

/// A human-readable plan: each connection with its schedule, timeout and
/// sinks; each sink; maintenance windows.
pub fn plan(c: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "configuration {} is valid", c.path.display());
    let _ = writeln!(out, "database: {}", c.daemon.database.display());
    let _ = writeln!(
        out,
        "retention: {}; max concurrent probes: {}; scheduler tick: {}",
        format_duration(c.daemon.retention),
        c.daemon.max_concurrent_probes,
        format_duration(c.daemon.scheduler_tick)
    );
    match c.daemon.listen {
        Some(l) => {
            let _ = writeln!(
                out,
                "admin API, metrics, status page: http://{l}/ (probe/replay {})",
                if c.daemon.admin_token.is_some() {
                    "enabled with the token"
                } else {
                    "disabled: no admin_token"
                }
            );
        }
        None => {
            let _ = writeln!(out, "admin API: off (no [daemon] listen)");
        }
    }
    if let Some(u) = &c.daemon.public_url {
        let _ = writeln!(out, "messages link to the status page at {u}");
    }
    if let Some(sb) = c.sandbox.as_ref().filter(|s| s.enabled) {
        let _ = writeln!(out, "sandbox: serving on {}", sb.listen);
    }
    let _ = writeln!(
        out,
        "instance: {}; shard {}",
        c.daemon.instance, c.daemon.shard
    );
    if c.daemon.heartbeat_url.is_some() {
        let _ = writeln!(
            out,
            "heartbeat: pinged every {} while healthy (URL not shown: it is a secret)",
            format_duration(c.daemon.heartbeat_interval)
        );
    }
    if c.daemon.shard.count > 1 {
        let taken = crate::discovery::shard::take(c.connections.clone(), c.daemon.shard);
        let _ = writeln!(
            out,
            "this shard ({}) takes {} of the {} configured connection(s) (discovered ones are split the same way)",
            c.daemon.shard,
            taken.len(),
            c.connections.len()
        );
    }
    for d in &c.discovery {
        let from = match &d.source {
            crate::config::DiscoverySource::Http { url, .. } => redact_url(url),
            crate::config::DiscoverySource::File(p) => p.display().to_string(),
        };
        let fmt = match &d.format {
            crate::config::DiscoveryFormat::List { .. } => "list",
            crate::config::DiscoveryFormat::HttpSd => "http_sd",
            crate::config::DiscoveryFormat::File => "file",
        };
        let _ = writeln!(
            out,
            "discovery {:?}: {fmt} from {from}, every {}; each listed connection is probed at its status_url, {}",
            d.id,
            format_duration(d.refresh),
            match &d.prototype.cadence {
                Cadence::Interval(i) => format!("every {}", format_duration(*i)),
                Cadence::Cron(e) => format!("cron {e}"),
            }
        );
    }
    let _ = writeln!(out, "\n{} connection(s):", c.connections.len());
    let rows: Vec<Vec<String>> = c
        .connections
        .iter()
        .map(|k| {
            let schedule = match &k.cadence {
                Cadence::Interval(d) => format!("every {}", format_duration(*d)),
                Cadence::Cron(e) => format!("cron {e}"),
            };
            let mut notes = Vec::new();
            if k.tls.insecure {
                notes.push("TLS NOT VERIFIED".to_string());
            }
            if k.tls.ca_file.is_some() {
                notes.push("private CA".into());
            }
            if k.tls.client_cert.is_some() {
                notes.push("client cert".into());
            }
            match &k.expect.json_pointer {
                None => notes.push("no body check".into()),
                Some(p) => notes.push(format!("status at {p}")),
            }
            if let Some(sync) = &k.expect.sync {
                let mut n = format!("sync at {} and {}", sync.status, sync.finished_at);
                if let Some(max) = sync.max_age {
                    n.push_str(&format!(", stale after {}", format_duration(max)));
                }
                notes.push(n);
            }
            if !k.scopes.is_empty() {
                notes.push(format!("{} scope(s), below", k.scopes.len()));
            }
            vec![
                k.id.clone(),
                schedule,
                format_duration(k.timeout),
                format!(
                    "{}/{}",
                    k.breaker.failure_threshold, k.breaker.success_threshold
                ),
                if k.sinks.is_empty() {
                    "-".into()
                } else {
                    k.sinks.join(",")
                },
                format!("{} {}", k.method, redact_url(&k.url)),
                notes.join("; "),
            ]
        })
        .collect();
    out.push_str(&super::table(
        &[
            "ID", "SCHEDULE", "TIMEOUT", "FAIL/OK", "SINKS", "REQUEST", "NOTES",
        ],
        &rows,
    ));
    let scopes: Vec<Vec<String>> = c
        .connections
        .iter()
        .flat_map(|k| {
            k.scopes.iter().map(|s| {
                vec![
                    k.id.clone(),
                    s.id.clone(),
                    format!("every {}", format_duration(s.interval)),
                    format_duration(s.timeout),
                    format!("{} {}", s.method, redact_url(&s.url)),
                    match &s.expect.json_pointer {
                        None => "no body check".into(),
                        Some(p) => format!("status at {p}"),
                    },
                ]
            })
        })
        .collect();
    if !scopes.is_empty() {
        let _ = writeln!(out, "\n{} scope(s):", scopes.len());
        out.push_str(&super::table(
            &[
                "CONNECTION",
                "SCOPE",
                "SCHEDULE",
                "TIMEOUT",
                "REQUEST",
                "NOTES",
            ],
            &scopes,
        ));
    }
    let _ = writeln!(out, "\n{} sink(s):", c.sinks.len());
    let rows: Vec<Vec<String>> = c
        .sinks
        .iter()
        .map(|s| {
            let class = match s.imp.class() {
                crate::policy::SinkClass::Chat { group_wait } => {
                    format!("chat, group_wait {}", format_duration(group_wait))
                }
                other => other.name().to_string(),
            };
            vec![
                s.id.clone(),
                s.kind.into(),
                class,
                s.concurrency.to_string(),
                s.imp.target(),
                s.events.describe(),
            ]
        })
        .collect();
    out.push_str(&super::table(
        &["ID", "KIND", "POLICY", "IN FLIGHT", "TARGET", "EVENTS"],
        &rows,
    ));
    if !c.maintenance.is_empty() {
        let _ = writeln!(out, "\n{} maintenance window(s):", c.maintenance.len());
        let rows: Vec<Vec<String>> = c
            .maintenance
            .iter()
            .map(|m| {
                vec![
                    m.schedule.clone(),
                    format_duration(m.duration),
                    m.connections
                        .as_ref()
                        .map(|v| v.join(","))
                        .unwrap_or_else(|| "all".into()),
                ]
            })
            .collect();
        out.push_str(&super::table(
            &["SCHEDULE", "DURATION", "CONNECTIONS"],
            &rows,
        ));
    }
    out
}

/// `check --discover`: each source fetched once, and what it would add
/// (this shard's part, configured ids left out). The bool is false when a
/// source could not be read.
pub async fn discover(c: &Config) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    for d in &c.discovery {
        let fetched = match crate::discovery::fetch::Fetcher::new(d) {
            Ok(f) => crate::discovery::run::fetch_once(d, &f).await,
            Err(e) => Err(e),
        };
        let parsed = match fetched {
            Ok(p) => p,
            Err(e) => {
                ok = false;
                let _ = writeln!(out, "\ndiscovery {:?}: FAILED: {e}", d.id);
                continue;
            }
        };
        let mut sets = std::collections::BTreeMap::new();
        sets.insert(d.id.clone(), parsed.items.clone());
        let (eff, left) = crate::discovery::effective(c, &sets);
        let added: Vec<_> = eff
            .connections
            .iter()
            .filter(|k| k.origin.as_deref() == Some(d.id.as_str()))
            .collect();
        let _ = writeln!(
            out,
            "\ndiscovery {:?}: {} listed, {} skipped{}; this shard would add {}:",
            d.id,
            parsed.items.len(),
            parsed.skipped,
            parsed
                .first_skip
                .as_deref()
                .map(|s| format!(" (first: {s})"))
                .unwrap_or_default(),
            added.len()
        );
        let rows: Vec<Vec<String>> = added
            .iter()
            .map(|k| {
                vec![
                    k.id.clone(),
                    k.name.clone().unwrap_or_else(|| "-".into()),
                    redact_url(&k.url),
                ]
            })
            .collect();
        out.push_str(&super::table(&["ID", "NAME", "STATUS URL"], &rows));
        for l in left {
            match l {
                crate::discovery::Left::Shadowed { id, by } => {
                    let _ = writeln!(out, "  {id}: left out, {by} has this id");
                }
                crate::discovery::Left::Unusable(e) => {
                    let _ = writeln!(out, "  left out: {e}");
                }
            }
        }
    }
    (out, ok)
}
