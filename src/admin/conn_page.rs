//! The page of one connection, `/connections/{id}`: health, circuit and
//! the next probe with its reason; uptime over 24 h, 7 d, 30 d and 90 d
//! (the definition of docs/uptime.md, as `connwatch report` computes it);
//! a latency chart (p50 and p95 per hour over 7 days, inline SVG); the
//! transitions of 30 days with their errors; the last events with each
//! sink's delivery state (held ones marked with why); and the scopes.
//! Server-rendered, readable without JavaScript, everything escaped.

use super::page::{esc, tone, uptime_bar, SCRIPT, STYLE};
use crate::model::UnixMs;
use crate::store::query::{self, HistoryItem, Hourly, StatusRow};
use crate::store::{Result, Store};
use std::fmt::Write;

const HOUR: UnixMs = 3_600_000;
const DAY: UnixMs = 24 * HOUR;
/// Transitions and events shown at most.
pub const MAX_ITEMS: usize = 100;

/// The page, or `None` for an unknown connection.
pub fn render(store: &Store, id: &str, now: UnixMs) -> Result<Option<String>> {
    let Some(r) = query::status_of(store, now, id)? else {
        return Ok(None);
    };
    let this_hour = now - now.rem_euclid(HOUR);
    let hourly = query::hourly(store, r.key, this_hour - 167 * HOUR)?;
    let mut periods = Vec::new();
    for (label, len) in [
        ("24 h", DAY),
        ("7 d", 7 * DAY),
        ("30 d", 30 * DAY),
        ("90 d", 90 * DAY),
    ] {
        let rep = crate::store::report::reports(store, now - len, now, Some(id))?.pop();
        periods.push((label, rep));
    }
    let history = query::history(store, r.key, now - 30 * DAY, 10_000)?;
    let windows = crate::store::report::windows_of(store, id, now - 30 * DAY, now)?;
    let transitions: Vec<&HistoryItem> = history
        .iter()
        .rev()
        .filter(|h| matches!(h, HistoryItem::Transition { .. }))
        .take(MAX_ITEMS)
        .collect();
    let events =
        crate::store::outbox::list(store, crate::store::outbox::Filter::All, Some(id), 20)?;
    let mut out = String::with_capacity(16 * 1024);
    let name = esc(r.name.as_deref().unwrap_or(&r.id));
    let _ = writeln!(
        out,
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{refresh}">
<title>{name} — connwatch</title>
<style>{STYLE}</style>
<style>{EXTRA}</style>
</head>
<body>
<header>
<p class="muted"><a href="/">← all connections</a></p>
<h1>{name} <small class="muted">{id}</small></h1>
</header>
<main>"#,
        refresh = super::page::REFRESH_SECS,
        id = esc(&r.id),
    );
    summary(&mut out, &r);
    // Uptime: the same figures as `connwatch report`.
    out.push_str("<section id=\"uptime\"><h2>Uptime</h2><table class=\"uptime\"><thead><tr><th>Period</th><th>Uptime</th><th>Outages</th><th>Down</th><th>Longest</th><th>MTTR</th><th>Maintenance</th><th>SLO budget</th></tr></thead><tbody>\n");
    for (label, rep) in &periods {
        let Some(p) = rep else { continue };
        let dur = crate::store::report::duration_text;
        let _ = writeln!(
            out,
            r#"<tr data-period="{label}"><td>{label}</td><td class="pct">{pct}</td><td>{n}</td><td>{down}</td><td>{longest}</td><td>{mttr}</td><td>{maint}</td><td>{budget}</td></tr>"#,
            pct = p
                .uptime
                .map(|u| format!("{u:.2} %"))
                .unwrap_or_else(|| "—".into()),
            n = p.outages.count,
            down = dur(p.outages.total_s),
            longest = dur(p.outages.longest_s),
            mttr = p.mttr_s.map(dur).unwrap_or_else(|| "—".into()),
            maint = dur(p.maintenance_s),
            budget = p
                .budget_text()
                .map(|b| esc(&b))
                .unwrap_or_else(|| "—".into()),
        );
    }
    let _ = write!(
        out,
        "</tbody></table>\n<p class=\"bars\">24 h {} &nbsp; 7 d {}</p>\n<p class=\"muted\"><small>Up is online, degraded or rate_limited; maintenance and the time before the first probe are left out (docs/uptime.md). The bars count probes per hour.</small></p></section>\n",
        uptime_bar(&hourly, this_hour - 23 * HOUR, 24, 1),
        uptime_bar(&hourly, this_hour - 167 * HOUR, 28, 6),
    );
    out.push_str("<section id=\"latency\"><h2>Latency, 7 days</h2>\n");
    out.push_str(&latency_chart(&hourly, this_hour - 167 * HOUR, 168));
    out.push_str("</section>\n");
    if !r.scopes.is_empty() {
        out.push_str("<section id=\"scopes\"><h2>Scopes</h2><table><thead><tr><th>Scope</th><th>Health</th><th>Since</th><th>Last probe</th><th>Last error</th></tr></thead><tbody>\n");
        for s in &r.scopes {
            let _ = writeln!(
                out,
                r#"<tr class="scope" data-scope="{id}" data-health="{h}"><td>{id}</td><td><span class="badge {tone}">{h}</span></td><td>{since}</td><td>{last}</td><td class="err">{err}</td></tr>"#,
                id = esc(&s.id),
                h = esc(&s.health),
                tone = tone(&s.health),
                since = time(s.since.as_deref()),
                last = time(s.last_probe_at.as_deref()),
                err = s
                    .last_error
                    .as_ref()
                    .map(|e| esc(&e.message))
                    .unwrap_or_default(),
            );
        }
        out.push_str("</tbody></table></section>\n");
    }
    out.push_str("<section id=\"timeline\"><h2>Changes, 30 days</h2>\n");
    if transitions.is_empty() {
        out.push_str("<p class=\"muted\">No change of health in 30 days.</p>\n");
    } else {
        out.push_str(
            "<table><thead><tr><th>When</th><th>Change</th><th>Error</th></tr></thead><tbody>\n",
        );
        for t in transitions {
            if let HistoryItem::Transition {
                at,
                previous,
                current,
                error,
                at_ms,
                ..
            } = t
            {
                let maint = windows.iter().any(|(a, b)| a <= at_ms && at_ms < b);
                let _ = writeln!(
                    out,
                    r#"<tr class="transition" data-current="{c}"{mattr}><td>{when}{mnote}</td><td><span class="badge {pt}">{p}</span> → <span class="badge {ct}">{c}</span></td><td class="err">{e}</td></tr>"#,
                    mattr = if maint {
                        r#" data-maintenance="yes""#
                    } else {
                        ""
                    },
                    mnote = if maint {
                        r#" <small class="muted">(maintenance)</small>"#
                    } else {
                        ""
                    },
                    when = time(Some(at)),
                    p = esc(previous),
                    pt = tone(previous),
                    c = esc(current),
                    ct = tone(current),
                    e = error.as_ref().map(|e| esc(&e.message)).unwrap_or_default(),
                );
            }
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</section>\n<section id=\"events\"><h2>Last events</h2>\n");
    if events.is_empty() {
        out.push_str("<p class=\"muted\">No events.</p>\n");
    } else {
        out.push_str("<table><thead><tr><th>When</th><th>Event</th><th>Deliveries</th></tr></thead><tbody>\n");
        for e in &events {
            let held = e
                .suppressed
                .as_ref()
                .map(|s| format!(r#" <small class="muted">(held: {})</small>"#, esc(s)))
                .unwrap_or_default();
            let deliveries: Vec<String> = e
                .deliveries
                .iter()
                .map(|d| {
                    let t = match d.state.as_str() {
                        "done" => "ok",
                        "dead" => "bad",
                        _ => "warn",
                    };
                    format!(
                        r#"<span class="badge {t}" title="{err}">{sink}: {state}</span>"#,
                        sink = esc(&d.sink),
                        state = esc(&d.state),
                        err = esc(d.last_error.as_deref().unwrap_or("")),
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                r#"<tr class="event" data-type="{k}"><td>{when}</td><td>{k}{held}</td><td>{d}</td></tr>"#,
                when = time(Some(&e.timestamp)),
                k = esc(&e.kind),
                d = if deliveries.is_empty() {
                    "<small class=\"muted\">none</small>".to_string()
                } else {
                    deliveries.join(" ")
                },
            );
        }
        out.push_str("</tbody></table>\n");
    }
    let _ = writeln!(
        out,
        r#"</section>
</main>
<footer>connwatch {version} · <a href="/api/v1/connections/{id}">JSON</a> · <a href="/api/v1/connections/{id}/uptime">uptime JSON</a></footer>
<script>{SCRIPT}</script>
</body>
</html>"#,
        version = env!("CARGO_PKG_VERSION"),
        id = esc(&r.id),
    );
    Ok(Some(out))
}

fn time(t: Option<&str>) -> String {
    match t {
        Some(t) => format!(r#"<time datetime="{0}">{0}</time>"#, esc(t)),
        None => "—".into(),
    }
}

fn summary(out: &mut String, r: &StatusRow) {
    let next = match (&r.next_probe_at, r.next_probe_reason.as_str()) {
        (_, "paused_by_parent") => "paused while its parent fails".to_string(),
        (Some(t), "cadence") => time(Some(t)),
        (Some(t), why) => format!("{} ({})", time(Some(t)), esc(&why.replace('_', " "))),
        (None, why) => esc(&why.replace('_', " ")),
    };
    let _ = writeln!(
        out,
        r#"<section id="now" data-health="{h}"><dl class="facts">
<dt>Health</dt><dd><span class="badge {tone}">{h}</span> since {since}{flap}</dd>
<dt>Circuit</dt><dd>{circuit}</dd>
<dt>Next probe</dt><dd>{next}</dd>
<dt>Last probe</dt><dd>{last}{latency}</dd>
<dt>Last error</dt><dd class="err">{err}</dd>
<dt>Schedule</dt><dd>{cadence}</dd>
<dt>Source</dt><dd>{origin}</dd>
</dl></section>"#,
        h = esc(&r.health),
        tone = tone(&r.health),
        since = time(r.since.as_deref()),
        flap = if r.flapping { " (flapping)" } else { "" },
        circuit = esc(&r.circuit.replace('_', "-")),
        last = time(r.last_probe_at.as_deref()),
        latency = r
            .last_latency_ms
            .map(|l| format!(", {l} ms"))
            .unwrap_or_default(),
        err = r
            .last_error
            .as_ref()
            .map(|e| esc(&e.message))
            .unwrap_or_else(|| "—".into()),
        cadence = esc(r.cadence.as_deref().unwrap_or("—")),
        origin = r
            .origin
            .as_deref()
            .map(|o| format!("discovery source {}", esc(o)))
            .unwrap_or_else(|| "the configuration file".into()),
    );
}

/// p50 and p95 per hour over `hours` from `start`, as two lines on one
/// scale, with the scale's top labelled.
fn latency_chart(hourly: &[Hourly], start: UnixMs, hours: usize) -> String {
    let pts: Vec<(usize, i64, i64)> = hourly
        .iter()
        .filter(|h| h.hour >= start && h.count > 0)
        .map(|h| {
            (
                ((h.hour - start) / HOUR) as usize,
                h.latency_p50_ms,
                h.latency_p95_ms,
            )
        })
        .filter(|(i, _, _)| *i < hours)
        .collect();
    if pts.is_empty() {
        return "<p class=\"muted\">No probes in 7 days.</p>\n".into();
    }
    let top = pts.iter().map(|p| p.2.max(p.1)).max().unwrap_or(1).max(1);
    let (w, h) = (700.0, 160.0);
    let step = w / (hours.max(2) - 1) as f64;
    let line = |sel: fn(&(usize, i64, i64)) -> i64| -> String {
        pts.iter()
            .map(|p| {
                format!(
                    "{:.1},{:.1}",
                    p.0 as f64 * step,
                    h - 2.0 - (sel(p) as f64 / top as f64) * (h - 14.0)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        r#"<svg class="chart" viewBox="0 0 700 160" width="100%" height="160" role="img" preserveAspectRatio="none"><title>latency per hour over 7 days: p50 and p95, highest {top} ms</title><text x="2" y="10" class="axis">{top} ms</text><line x1="0" y1="158" x2="700" y2="158" class="axis"/><polyline class="p95" points="{p95}"/><polyline class="p50" points="{p50}"/></svg>
<p class="muted"><small><span class="key p50"></span> p50 &nbsp; <span class="key p95"></span> p95 per hour; now: p50 {last50} ms, p95 {last95} ms</small></p>
"#,
        p95 = line(|p| p.2),
        p50 = line(|p| p.1),
        last50 = pts.last().map_or(0, |p| p.1),
        last95 = pts.last().map_or(0, |p| p.2),
    )
}

/// The connection page's own rules (a second `<style>`, hashed in the CSP).
pub const EXTRA: &str = r#"
h2{font-size:1.05rem;margin:1.4rem 0 .4rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0}
a{color:inherit}
svg.chart{max-width:700px;border:1px solid var(--line)}
svg.chart polyline{fill:none;stroke-width:1.5}
svg.chart polyline.p50{stroke:var(--ok)}svg.chart polyline.p95{stroke:var(--warn)}
svg.chart .axis{fill:var(--muted);stroke:var(--line);font-size:10px}
span.key{display:inline-block;width:.8rem;height:.2rem;vertical-align:middle}
span.key.p50{background:var(--ok)}span.key.p95{background:var(--warn)}
"#;
