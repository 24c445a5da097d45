//! Uptime reports from the database: the inputs of [`crate::uptime::measure`]
//! (transitions, the stored maintenance windows, the SLO) and the p95
//! latency from the hourly rollups.

use super::{sq, Result, Store};
use crate::model::{Health, UnixMs};
use crate::uptime::{measure, Step, Uptime};
use rusqlite::params;
use serde::Serialize;

/// Windows per schedule at most, in one report (a window every minute for
/// a year is 525,600: enough).
pub const MAX_WINDOWS: usize = 600_000;

/// One connection's report, as `report --json` and the API give it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub id: String,
    pub name: Option<String>,
    pub since: String,
    pub until: String,
    /// Percent of the measured time up, two decimals; null when nothing
    /// was measured.
    pub uptime: Option<f64>,
    pub outages: Outages,
    /// Mean time to recover (outages that ended in the period), seconds.
    pub mttr_s: Option<f64>,
    /// Count-weighted 95th percentile of the hourly p95 latencies.
    pub p95_latency_ms: Option<i64>,
    pub measured_s: f64,
    /// Before the first confirmed health (no probe yet).
    pub unmeasured_s: f64,
    /// Inside maintenance windows.
    pub maintenance_s: f64,
    /// `"99.5%"` when the connection has an `slo`.
    pub slo: Option<String>,
    /// Down time the SLO still allows over the measured time (negative:
    /// overspent).
    pub budget_remaining_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outages {
    pub count: usize,
    pub total_s: f64,
    pub longest_s: f64,
}

/// Seconds as people read them (`1h 16m 40s`), to the second.
pub fn duration_text(s: f64) -> String {
    crate::config::format_duration(std::time::Duration::from_secs(s.max(0.0).round() as u64))
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

impl Report {
    /// `99.5%: 27m 5s left` or `99.5%: overspent by 27m 5s`; `None`
    /// without an `slo`.
    pub fn budget_text(&self) -> Option<String> {
        match (&self.slo, self.budget_remaining_s) {
            (Some(s), Some(b)) if b < 0.0 => {
                Some(format!("{s}: overspent by {}", duration_text(-b)))
            }
            (Some(s), Some(b)) => Some(format!("{s}: {} left", duration_text(b))),
            _ => None,
        }
    }

    fn of(
        id: String,
        name: Option<String>,
        u: &Uptime,
        slo: Option<f64>,
        p95: Option<i64>,
    ) -> Report {
        Report {
            id,
            name,
            since: crate::model::rfc3339(u.from),
            until: crate::model::rfc3339(u.to),
            uptime: u.uptime_pct.map(round2),
            outages: Outages {
                count: u.outages,
                total_s: secs(u.outage_total_ms),
                longest_s: secs(u.outage_longest_ms),
            },
            mttr_s: u.mttr_ms.map(secs),
            p95_latency_ms: p95,
            measured_s: secs(u.up_ms + u.down_ms),
            unmeasured_s: secs(u.unmeasured_ms),
            maintenance_s: secs(u.maintenance_ms),
            slo: slo.map(|s| format!("{}%", round2(s * 100.0))),
            budget_remaining_s: u.budget_remaining_ms.map(secs),
        }
    }
}

/// Reports over `[from, to)` for every configured connection, or for `id`.
pub fn reports(store: &Store, from: UnixMs, to: UnixMs, id: Option<&str>) -> Result<Vec<Report>> {
    compute(store, from, to, id, false)
}

/// The reports of `id` (or all), or, with `budgets`, of the connections
/// with an `slo` only and without the latency percentile (what `/metrics`
/// needs, at each scrape).
fn compute(
    store: &Store,
    from: UnixMs,
    to: UnixMs,
    id: Option<&str>,
    budgets: bool,
) -> Result<Vec<Report>> {
    let p = &store.path;
    let conns: Vec<(i64, String, Option<String>, Option<f64>)> = store
        .db
        .prepare(
            "SELECT key, id, name, slo FROM connections
             WHERE configured = 1 AND scope_of IS NULL AND (?1 IS NULL OR id = ?1)
               AND (?2 = 0 OR slo IS NOT NULL) ORDER BY id",
        )
        .and_then(|mut st| {
            st.query_map(params![id, budgets], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })
        .map_err(|e| sq(p, e))?;
    let windows = Windows::load(store, from, to)?;
    let mut steps_q = store
        .db
        .prepare(
            "SELECT at, current FROM transitions WHERE conn = ?1 AND at < ?3
               AND at >= coalesce((SELECT max(at) FROM transitions WHERE conn = ?1 AND at <= ?2), ?2)
             ORDER BY at, id",
        )
        .map_err(|e| sq(p, e))?;
    let mut p95_q = store
        .db
        .prepare(
            "SELECT latency_p95, count FROM rollups WHERE conn = ?1 AND hour >= ?2 AND hour < ?3",
        )
        .map_err(|e| sq(p, e))?;
    let mut out = Vec::with_capacity(conns.len());
    for (key, cid, name, slo) in conns {
        let steps: Vec<Step> = steps_q
            .query_map(params![key, from, to], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| sq(p, e))?
            .into_iter()
            .map(|(at, h)| Step {
                at,
                current: Health::parse(&h).unwrap_or(Health::Unknown),
            })
            .collect();
        let u = measure(&steps, &windows.of(&cid), from, to, slo);
        let p95 = if budgets {
            None
        } else {
            let mut hours: Vec<(i64, i64)> = p95_q
                .query_map(params![key, from, to], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| sq(p, e))?;
            weighted_p95(&mut hours)
        };
        out.push(Report::of(cid, name, &u, slo, p95));
    }
    Ok(out)
}

/// The stored maintenance schedules, each with its windows inside a
/// period (computed once, shared by the connections a schedule covers).
struct Windows {
    /// Per schedule: the connections it covers (`None`: all) and its
    /// windows in the period.
    schedules: Vec<(Option<Vec<String>>, Spans)>,
}

type Spans = Vec<(UnixMs, UnixMs)>;

impl Windows {
    fn load(store: &Store, from: UnixMs, to: UnixMs) -> Result<Windows> {
        let rows: Vec<(String, i64, Option<String>)> = store
            .db
            .prepare(
                "SELECT schedule, duration_ms, connections FROM maintenance_windows ORDER BY idx",
            )
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(|e| sq(&store.path, e))?;
        let schedules = rows
            .into_iter()
            .map(|(s, d, c)| {
                // An unreadable list covers every connection.
                let covers = c.and_then(|c| serde_json::from_str(&c).ok());
                let spans = crate::maintenance::windows_between(
                    &s,
                    std::time::Duration::from_millis(d.max(0) as u64),
                    from,
                    to,
                    MAX_WINDOWS,
                );
                (covers, spans)
            })
            .collect();
        Ok(Windows { schedules })
    }

    /// The windows covering connection `id`, sorted.
    fn of(&self, id: &str) -> Vec<(UnixMs, UnixMs)> {
        let mut out: Vec<(UnixMs, UnixMs)> = self
            .schedules
            .iter()
            .filter(|(c, _)| c.as_ref().is_none_or(|c| c.iter().any(|x| x == id)))
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        out.sort_unstable();
        out
    }
}

/// The maintenance windows covering connection `id` inside `[from, to)`,
/// sorted (the page marks the changes that fell in one).
pub fn windows_of(
    store: &Store,
    id: &str,
    from: UnixMs,
    to: UnixMs,
) -> Result<Vec<(UnixMs, UnixMs)>> {
    Ok(Windows::load(store, from, to)?.of(id))
}

/// The error budget left over the last 30 days of every connection with
/// an `slo`, for `/metrics`.
pub fn slo_budgets(store: &Store, now: UnixMs) -> Result<Vec<(String, f64)>> {
    Ok(compute(store, now - 30 * 86_400_000, now, None, true)?
        .into_iter()
        .filter_map(|r| Some((r.id, r.budget_remaining_s?)))
        .collect())
}

/// The value below which 95 % of the probes' hourly p95s fall, each hour
/// weighted by its probe count.
fn weighted_p95(hours: &mut [(i64, i64)]) -> Option<i64> {
    let total: i64 = hours.iter().map(|(_, n)| (*n).max(0)).sum();
    if total == 0 {
        return None;
    }
    hours.sort_unstable();
    let want = (total as f64 * 0.95).ceil() as i64;
    let mut seen = 0;
    for (v, n) in hours.iter() {
        seen += (*n).max(0);
        if seen >= want {
            return Some(*v);
        }
    }
    hours.last().map(|(v, _)| *v)
}

#[cfg(test)]
mod tests {
    #[test]
    fn p95_is_count_weighted() {
        let mut h = vec![(100, 90), (900, 5), (50, 5)];
        assert_eq!(super::weighted_p95(&mut h), Some(100));
        let mut h = vec![(100, 50), (900, 50)];
        assert_eq!(super::weighted_p95(&mut h), Some(900));
        assert_eq!(super::weighted_p95(&mut []), None);
    }
}
