//! The status page at `/`: server-rendered HTML, one row per connection,
//! uptime bars and a latency sparkline drawn as inline SVG from the hourly
//! rollups. No JavaScript is needed to read it; a few lines of inline script
//! only turn timestamps into "5 min ago" in the reader's time zone. It
//! reloads itself every [`REFRESH_SECS`] seconds. Everything taken from
//! configuration or from a probe is HTML-escaped.

use crate::model::{rfc3339, UnixMs};
use crate::store::query::{self, Hourly, StatusRow};
use crate::store::{Result, Store};
use std::fmt::Write;

/// The page shows at most this many connections (failing ones first); the
/// API and `connwatch status` list all of them.
pub const MAX_ROWS: usize = 500;
pub const REFRESH_SECS: u32 = 30;

const HOUR: UnixMs = 3_600_000;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Where connection `id` is on the page served at `base` (`[daemon]
/// public_url`): its row, `#conn-{id}` (ids are `[A-Za-z0-9_.-]`, safe in
/// a fragment). Messages for people link here.
pub fn link(base: &url::Url, id: &str) -> String {
    format!("{}/#conn-{id}", base.as_str().trim_end_matches('/'))
}

/// Whether a health is a problem worth listing first.
fn is_problem(health: &str) -> bool {
    !matches!(health, "online" | "unknown")
}

/// The colour class of a health.
pub(super) fn tone(health: &str) -> &'static str {
    match health {
        "online" => "ok",
        "degraded" | "rate_limited" => "warn",
        "auth_required" => "auth",
        "permission_denied" => "perm",
        "offline" | "unreachable" | "invalid" => "bad",
        _ => "none",
    }
}

/// What the list shows: `?health=` (a health, or `problems`) and `?q=`
/// (part of an id or a name, any case).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListFilter {
    pub health: Option<String>,
    pub q: Option<String>,
}

impl ListFilter {
    fn keeps(&self, r: &StatusRow) -> bool {
        let health = match self.health.as_deref() {
            None | Some("") | Some("all") => true,
            Some("problems") => is_problem(&r.health),
            Some(h) => r.health == h,
        };
        let text = match self.q.as_deref().map(str::trim) {
            None | Some("") => true,
            Some(q) => {
                let q = q.to_lowercase();
                r.id.to_lowercase().contains(&q)
                    || r.name
                        .as_deref()
                        .is_some_and(|n| n.to_lowercase().contains(&q))
            }
        };
        health && text
    }
}

/// Attention order: down first, then credentials and permissions, then
/// slow or throttled, then not yet known, then fine.
fn urgency(health: &str) -> u8 {
    match tone(health) {
        "bad" => 0,
        "auth" | "perm" => 1,
        "warn" => 2,
        "none" => 3,
        _ => 4,
    }
}

const HEALTHS: &[&str] = &[
    "offline",
    "unreachable",
    "invalid",
    "auth_required",
    "permission_denied",
    "degraded",
    "rate_limited",
    "unknown",
    "online",
];

pub fn render(store: &Store, now: UnixMs) -> Result<String> {
    render_filtered(store, now, &ListFilter::default())
}

pub fn render_filtered(store: &Store, now: UnixMs, filter: &ListFilter) -> Result<String> {
    let mut rows = query::status(store, now)?;
    let total = rows.len();
    let failing = rows.iter().filter(|r| is_problem(&r.health)).count();
    rows.retain(|r| filter.keeps(r));
    let shown_of = rows.len();
    // What needs attention first, then by id (the query's order; the sort
    // is stable).
    rows.sort_by_key(|r| urgency(&r.health));
    rows.truncate(MAX_ROWS);
    let this_hour = now - now.rem_euclid(HOUR);
    let week_start = this_hour - 167 * HOUR;
    let mut body = String::with_capacity(4096 + rows.len() * 2048);
    for r in &rows {
        let hourly = query::hourly(store, r.key, week_start)?;
        row(&mut body, r, &hourly, this_hour);
    }
    let mut page = String::with_capacity(body.len() + 4096);
    let title = if failing == 0 {
        format!("connwatch — all {total} connections fine")
    } else {
        format!("connwatch — {failing} of {total} connections need attention")
    };
    let _ = write!(
        page,
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECS}">
<title>{title}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>connwatch</h1>
<p class="summary"><strong>{total}</strong> connections · <strong class="{ftone}">{failing}</strong> need attention · as of <time datetime="{asof}">{asof}</time> · refreshes every {REFRESH_SECS} s</p>
</header>
<main>
<form class="filter" method="get" action="/"><input type="search" name="q" value="{q}" placeholder="id or name" aria-label="filter by id or name"> <select name="health" aria-label="filter by health">{options}</select> <button type="submit">Filter</button></form>
"#,
        q = esc(filter.q.as_deref().unwrap_or("")),
        options = {
            let chosen = filter.health.as_deref().unwrap_or("all");
            let mut o = String::new();
            for h in ["all", "problems"].iter().chain(HEALTHS) {
                let _ = write!(
                    o,
                    r#"<option value="{h}"{sel}>{h}</option>"#,
                    sel = if *h == chosen { " selected" } else { "" }
                );
            }
            o
        },
        title = esc(&title),
        ftone = if failing == 0 { "ok" } else { "bad" },
        asof = rfc3339(now),
    );
    if total > rows.len() {
        let _ = writeln!(
            page,
            r#"<p class="note">Showing {} of {total} connections{}, those that need attention first. <code>connwatch status</code> and <code>/api/v1/connections</code> list every one.</p>"#,
            rows.len(),
            if shown_of < total {
                format!(" ({shown_of} match the filter)")
            } else {
                String::new()
            }
        );
    }
    if rows.is_empty() && total > 0 {
        page.push_str("<p class=\"note\">No connection matches the filter.</p>\n");
    } else if rows.is_empty() {
        page.push_str("<p class=\"note\">No connections are configured.</p>\n");
    } else {
        page.push_str(
            r#"<table>
<thead><tr><th>Connection</th><th>Health</th><th>Circuit</th><th>Last error</th><th>24 h</th><th>7 d</th><th>Latency, 24 h</th></tr></thead>
<tbody>
"#,
        );
        page.push_str(&body);
        page.push_str("</tbody>\n</table>\n");
    }
    let _ = write!(
        page,
        r#"</main>
<footer>connwatch {version} · <a href="/api/v1/connections">JSON</a> · <a href="/metrics">metrics</a></footer>
<script>{SCRIPT}</script>
</body>
</html>
"#,
        version = env!("CARGO_PKG_VERSION"),
    );
    Ok(page)
}

fn row(out: &mut String, r: &StatusRow, hourly: &[Hourly], this_hour: UnixMs) {
    let id = esc(&r.id);
    let name = esc(r.name.as_deref().unwrap_or(&r.id));
    let since = match &r.since {
        Some(s) => format!(
            r#"<small>since <time datetime="{0}">{0}</time></small>"#,
            esc(s)
        ),
        None => String::new(),
    };
    let suppressed = match (&r.suppressed, &r.silence) {
        (Some(s), Some(sil)) if s == "silenced" => format!(
            r#" <small class="muted">(silenced until <time datetime="{0}">{0}</time>: {1})</small>"#,
            esc(&sil.ends_at),
            esc(&sil.reason)
        ),
        (Some(s), _) => format!(r#" <small class="muted">({})</small>"#, esc(s)),
        (None, _) => String::new(),
    };
    let mut error = match &r.last_error {
        Some(e) if is_problem(&r.health) => esc(&e.message),
        _ => String::new(),
    };
    // Failing scopes, under the connection: which operations are refused.
    let failing: Vec<&crate::store::query::ScopeRow> =
        r.scopes.iter().filter(|s| s.failing()).collect();
    if !failing.is_empty() {
        error.push_str(r#"<ul class="scopes">"#);
        for s in failing {
            let _ = write!(
                error,
                r#"<li class="scope" data-scope="{id}" data-health="{health}"><span class="badge {tone}">{health}</span> {id}{why}</li>"#,
                id = esc(&s.id),
                health = esc(&s.health),
                tone = tone(&s.health),
                why = s
                    .last_error
                    .as_ref()
                    .map(|e| format!(" — {}", esc(&e.message)))
                    .unwrap_or_default(),
            );
        }
        error.push_str("</ul>");
    }
    let circuit_tone = match r.circuit.as_str() {
        "open" => "bad",
        "half_open" => "warn",
        _ => "ok",
    };
    let _ = write!(
        out,
        r#"<tr class="conn" id="conn-{id}" data-connection="{id}" data-health="{health}">
<td class="name" data-label="Connection"><a href="/connections/{id}">{name}</a><br><small class="muted">{id}</small></td>
<td data-label="Health"><span class="badge {tone}">{health}</span>{suppressed}<br>{since}</td>
<td class="nowrap" data-label="Circuit"><span class="dot {circuit_tone}"></span>{circuit}</td>
<td class="err" data-label="Last error">{error}</td>
<td data-label="24 h">{bar24}</td>
<td data-label="7 d">{bar7}</td>
<td data-label="Latency, 24 h">{spark}</td>
</tr>
"#,
        health = esc(&r.health),
        tone = tone(&r.health),
        circuit = esc(&r.circuit.replace('_', "-")),
        bar24 = uptime_bar(hourly, this_hour - 23 * HOUR, 24, 1),
        bar7 = uptime_bar(hourly, this_hour - 167 * HOUR, 28, 6),
        spark = sparkline(hourly, this_hour - 23 * HOUR, 24),
    );
}

/// `segments` bars of `per` hours each from `start`: green without
/// failures, amber up to 10 % failed, red beyond, grey without data; with
/// the window's uptime as text.
pub(super) fn uptime_bar(hourly: &[Hourly], start: UnixMs, segments: usize, per: i64) -> String {
    const W: usize = 4;
    let width = segments * (W + 1);
    let mut svg = format!(
        r#"<svg class="bar" viewBox="0 0 {width} 16" width="{width}" height="16" role="img">"#
    );
    let (mut count, mut failures) = (0i64, 0i64);
    for i in 0..segments {
        let from = start + i as i64 * per * HOUR;
        let to = from + per * HOUR;
        let (c, f) = hourly
            .iter()
            .filter(|h| h.hour >= from && h.hour < to)
            .fold((0, 0), |(c, f), h| (c + h.count, f + h.failures));
        count += c;
        failures += f;
        let class = if c == 0 {
            "none"
        } else if f == 0 {
            "ok"
        } else if f * 10 <= c {
            "warn"
        } else {
            "bad"
        };
        let tip = if c == 0 {
            "no probes".to_string()
        } else {
            format!("{:.1} % of {c} probes", 100.0 * (c - f) as f64 / c as f64)
        };
        let _ = write!(
            svg,
            r#"<rect class="{class}" x="{x}" y="0" width="{W}" height="16"><title>{when}: {tip}</title></rect>"#,
            x = i * (W + 1),
            when = rfc3339(from),
        );
    }
    svg.push_str("</svg>");
    let pct = if count == 0 {
        "—".to_string()
    } else {
        format!("{:.2} %", 100.0 * (count - failures) as f64 / count as f64)
    };
    format!(r#"{svg}<br><small class="muted">{pct}</small>"#)
}

/// The median latency of each hour as a line, scaled to the window's
/// highest; with the last hour's median as text.
fn sparkline(hourly: &[Hourly], start: UnixMs, hours: usize) -> String {
    let points: Vec<(usize, i64)> = hourly
        .iter()
        .filter(|h| h.hour >= start && h.count > 0)
        .map(|h| (((h.hour - start) / HOUR) as usize, h.latency_p50_ms))
        .filter(|(i, _)| *i < hours)
        .collect();
    let Some(&(_, last)) = points.last() else {
        return r#"<small class="muted">—</small>"#.to_string();
    };
    let max = points.iter().map(|p| p.1).max().unwrap_or(1).max(1);
    let (w, h) = (96.0, 20.0);
    let step = w / (hours.max(2) - 1) as f64;
    let coords: Vec<String> = points
        .iter()
        .map(|&(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                h - 1.0 - (v as f64 / max as f64) * (h - 2.0)
            )
        })
        .collect();
    format!(
        r#"<svg class="spark" viewBox="0 0 96 20" width="96" height="20" role="img"><title>median latency per hour, highest {max} ms</title><polyline points="{}"/></svg><br><small class="muted">{last} ms</small>"#,
        coords.join(" ")
    )
}

pub const STYLE: &str = r#"
:root{color-scheme:light dark;--ok:#2e9e44;--warn:#d99a00;--bad:#d33a2c;--auth:#8e44ad;--none:#9aa0a6;--fg:#1d1f21;--muted:#6b7075;--bg:#fff;--line:#e3e5e8}
@media (prefers-color-scheme:dark){:root{--fg:#e8eaed;--muted:#9aa0a6;--bg:#17181a;--line:#2c2e31}}
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;padding:1rem;color:var(--fg);background:var(--bg)}
h1{font-size:1.3rem;margin:0 0 .2rem}
.summary,.note{color:var(--muted);margin:.2rem 0 1rem}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.45rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;color:var(--muted);font-size:.85rem}
small{font-size:.8rem}.muted{color:var(--muted)}
.badge{display:inline-block;padding:0 .45rem;border-radius:.6rem;color:#fff;font-weight:600;font-size:.85rem}
.badge.ok{background:var(--ok)}.badge.warn{background:var(--warn)}.badge.bad{background:var(--bad)}.badge.auth{background:var(--auth)}.badge.perm{background:#b5507a}ul.scopes{margin:.2rem 0 0;padding:0;list-style:none}ul.scopes li{margin:.1rem 0}.badge.none{background:var(--none)}
strong.ok{color:var(--ok)}strong.bad{color:var(--bad)}
.dot{display:inline-block;width:.6rem;height:.6rem;border-radius:50%;margin-right:.3rem}
.dot.ok{background:var(--ok)}.dot.warn{background:var(--warn)}.dot.bad{background:var(--bad)}
.err{max-width:22rem;word-break:break-word;color:var(--bad)}
form.filter{margin:0 0 1rem}form.filter input,form.filter select,form.filter button{font:inherit;padding:.2rem .4rem}
svg.bar rect.ok{fill:var(--ok)}svg.bar rect.warn{fill:var(--warn)}svg.bar rect.bad{fill:var(--bad)}svg.bar rect.none{fill:var(--line)}
svg.spark polyline{fill:none;stroke:var(--muted);stroke-width:1.5}
.nowrap{white-space:nowrap}
footer{margin-top:1rem;color:var(--muted);font-size:.8rem}a{color:inherit}
@media (max-width:720px){
 thead{display:none}table,tbody,tr,td{display:block;width:auto}
 tr.conn{border:1px solid var(--line);border-radius:.5rem;margin:0 0 .8rem;padding:.3rem .5rem}
 td{border:0;padding:.2rem 0}td[data-label]::before{content:attr(data-label);display:block;color:var(--muted);font-size:.75rem}
 td.name::before{display:none}td.name{font-weight:600}
}
"#;

/// Turns `<time>` into relative local times; marks the page when it ran,
/// so a browser test can tell that no script error happened.
pub const SCRIPT: &str = r#"
(function(){
  var d = document.documentElement;
  window.addEventListener('error', function(){ d.setAttribute('data-script', 'error'); });
  var now = Date.now();
  function ago(ms){
    var s = Math.round(ms/1000);
    if (s < 90) return s + ' s ago';
    var m = Math.round(s/60); if (m < 90) return m + ' min ago';
    var h = Math.round(m/60); if (h < 36) return h + ' h ago';
    return Math.round(h/24) + ' d ago';
  }
  var times = document.querySelectorAll('time[datetime]');
  for (var i = 0; i < times.length; i++) {
    var t = new Date(times[i].getAttribute('datetime'));
    if (isNaN(t)) continue;
    times[i].title = t.toLocaleString();
    times[i].textContent = ago(now - t.getTime());
  }
  // The page reloads itself (meta refresh): keep the reader's place.
  try {
    var key = 'scroll:' + location.pathname + location.search;
    var y = sessionStorage.getItem(key);
    if (y !== null) window.scrollTo(0, parseInt(y, 10) || 0);
    window.addEventListener('beforeunload', function(){ sessionStorage.setItem(key, String(window.scrollY)); });
  } catch (e) {}
  if (d.getAttribute('data-script') !== 'error') d.setAttribute('data-script', 'ok');
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
    }

    #[test]
    fn uptime_bar_colours_by_failure_share() {
        let h = |hour, count, failures| Hourly {
            hour,
            count,
            failures,
            latency_p50_ms: 10,
            latency_p95_ms: 20,
        };
        let rows = [h(0, 100, 0), h(HOUR, 100, 5), h(2 * HOUR, 100, 50)];
        let svg = uptime_bar(&rows, 0, 4, 1);
        let classes: Vec<&str> = svg
            .match_indices("<rect class=\"")
            .map(|(i, m)| {
                let rest = &svg[i + m.len()..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect();
        assert_eq!(classes, ["ok", "warn", "bad", "none"]);
        assert!(svg.contains("81.67 %"), "{svg}");
    }

    #[test]
    fn sparkline_without_data_is_a_dash() {
        assert!(sparkline(&[], 0, 24).contains('—'));
    }
}
