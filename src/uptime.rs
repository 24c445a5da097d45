//! Uptime, outages and the error budget of one connection over a period
//! (pure): one definition for the page, the API and `connwatch report`
//! (docs/uptime.md).
//!
//! A connection's confirmed health is a step function of time: it changes
//! only at its transitions. Over `[from, to)`:
//!
//! - time before the first confirmed health (`unknown`: no probe yet, or
//!   not yet confirmed) is **unmeasured**, and so is time inside a
//!   maintenance window (reported apart as `maintenance_s`);
//! - the rest is **measured**; of it, time in `online`, `degraded` or
//!   `rate_limited` is **up**, anything else (offline, unreachable,
//!   invalid, auth_required, permission_denied) is **down**;
//! - uptime = up / measured (100 % when nothing was measured is *not*
//!   claimed: it is `None`);
//! - an **outage** is a maximal stretch of down time (offline then
//!   unreachable is one outage), cut by the period's ends; maintenance
//!   inside it does not split it but does not count in its duration;
//! - MTTR is the mean duration of the outages that ended in the period.

use crate::model::{Health, Outcome, UnixMs};

/// One transition: from `at` on, the health is `current`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub at: UnixMs,
    pub current: Health,
}

/// Whether a confirmed health counts as up.
pub fn is_up(h: Health) -> bool {
    matches!(
        h,
        Health::Is(Outcome::Online | Outcome::Degraded | Outcome::RateLimited)
    )
}

/// What [`measure`] finds.
#[derive(Debug, Clone, PartialEq)]
pub struct Uptime {
    pub from: UnixMs,
    pub to: UnixMs,
    pub up_ms: i64,
    pub down_ms: i64,
    /// Before the first confirmed health.
    pub unmeasured_ms: i64,
    /// Inside maintenance windows (not counted up or down).
    pub maintenance_ms: i64,
    /// up / (up + down), in percent; `None` when nothing was measured.
    pub uptime_pct: Option<f64>,
    pub outages: usize,
    pub outage_total_ms: i64,
    pub outage_longest_ms: i64,
    /// Mean duration of the outages that ended inside the period.
    pub mttr_ms: Option<i64>,
    /// With an SLO: the down time it allows over the measured time, minus
    /// the down time spent (negative when overspent).
    pub budget_remaining_ms: Option<i64>,
}

/// Measures `[from, to)`. `steps` are the connection's transitions in time
/// order (any before `from` set the health at `from`); `windows` are
/// maintenance windows as `(start, end)`; `slo` is a fraction (0.995).
pub fn measure(
    steps: &[Step],
    windows: &[(UnixMs, UnixMs)],
    from: UnixMs,
    to: UnixMs,
    slo: Option<f64>,
) -> Uptime {
    let mut u = Uptime {
        from,
        to,
        up_ms: 0,
        down_ms: 0,
        unmeasured_ms: 0,
        maintenance_ms: 0,
        uptime_pct: None,
        outages: 0,
        outage_total_ms: 0,
        outage_longest_ms: 0,
        mttr_ms: None,
        budget_remaining_ms: None,
    };
    if to <= from {
        return u;
    }
    // Every instant where something may change: transitions and window
    // edges inside the period.
    let mut cuts: Vec<UnixMs> = vec![from, to];
    cuts.extend(steps.iter().map(|s| s.at).filter(|t| *t > from && *t < to));
    for (a, b) in windows {
        cuts.extend([*a, *b].into_iter().filter(|t| *t > from && *t < to));
    }
    cuts.sort_unstable();
    cuts.dedup();
    let health_at = |t: UnixMs| -> Health {
        // The last step at or before t.
        match steps.partition_point(|s| s.at <= t) {
            0 => Health::Unknown,
            i => steps[i - 1].current,
        }
    };
    // Windows sorted and merged, walked with the cuts (both ascending):
    // linear in cuts + windows, however many windows a period has.
    let mut merged: Vec<(UnixMs, UnixMs)> =
        windows.iter().copied().filter(|(a, b)| a < b).collect();
    merged.sort_unstable();
    let mut m: Vec<(UnixMs, UnixMs)> = Vec::with_capacity(merged.len());
    for (a, b) in merged {
        match m.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => m.push((a, b)),
        }
    }
    let mut wi = 0;
    let mut in_window = |t: UnixMs| -> bool {
        while wi < m.len() && m[wi].1 <= t {
            wi += 1;
        }
        wi < m.len() && m[wi].0 <= t
    };
    let mut outage: Option<i64> = None; // down ms of the outage going on
    let mut ended: Vec<i64> = Vec::new();
    let close =
        |outage: &mut Option<i64>, ended_inside: bool, u: &mut Uptime, ended: &mut Vec<i64>| {
            if let Some(d) = outage.take() {
                u.outages += 1;
                u.outage_total_ms += d;
                u.outage_longest_ms = u.outage_longest_ms.max(d);
                if ended_inside {
                    ended.push(d);
                }
            }
        };
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let len = b - a;
        let h = health_at(a);
        if h == Health::Unknown {
            u.unmeasured_ms += len;
            continue;
        }
        let down = !is_up(h);
        if in_window(a) {
            u.maintenance_ms += len;
            // A window inside an outage neither ends nor lengthens it.
            continue;
        }
        if down {
            u.down_ms += len;
            *outage.get_or_insert(0) += len;
        } else {
            u.up_ms += len;
            close(&mut outage, true, &mut u, &mut ended);
        }
    }
    close(&mut outage, false, &mut u, &mut ended);
    let measured = u.up_ms + u.down_ms;
    if measured > 0 {
        u.uptime_pct = Some(u.up_ms as f64 * 100.0 / measured as f64);
    }
    if !ended.is_empty() {
        u.mttr_ms = Some(ended.iter().sum::<i64>() / ended.len() as i64);
    }
    if let Some(slo) = slo {
        let allowed = ((1.0 - slo) * measured as f64).round() as i64;
        u.budget_remaining_ms = Some(allowed - u.down_ms);
    }
    u
}

/// `"99.5%"` -> 0.995; between 0 and 100 percent, exclusive of 0.
pub fn parse_slo(s: &str) -> Result<f64, String> {
    let n = s
        .trim()
        .strip_suffix('%')
        .ok_or_else(|| format!("{s:?} is not a percentage (e.g. \"99.5%\")"))?;
    let v: f64 = n
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (e.g. \"99.5%\")"))?;
    if !(v > 0.0 && v <= 100.0) {
        return Err(format!("{s:?} is out of range (above 0% up to 100%)"));
    }
    Ok(v / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn step(at: i64, o: Outcome) -> Step {
        Step {
            at,
            current: Health::Is(o),
        }
    }

    #[test]
    fn a_day_with_two_outages_and_a_window() {
        use Outcome::*;
        // Confirmed online at 1h; offline 5h–6h; unreachable 6h–7h (one
        // outage of 2 h); degraded 10h–11h (up); auth_required 20h–21h;
        // maintenance 12h–14h while online.
        let steps = [
            step(H, Online),
            step(5 * H, Offline),
            step(6 * H, Unreachable),
            step(7 * H, Online),
            step(10 * H, Degraded),
            step(11 * H, Online),
            step(20 * H, AuthRequired),
            step(21 * H, Online),
        ];
        let u = measure(&steps, &[(12 * H, 14 * H)], 0, 24 * H, Some(0.9));
        assert_eq!(u.unmeasured_ms, H);
        assert_eq!(u.maintenance_ms, 2 * H);
        assert_eq!(u.down_ms, 3 * H);
        assert_eq!(u.up_ms, 18 * H);
        assert_eq!(u.outages, 2);
        assert_eq!(u.outage_total_ms, 3 * H);
        assert_eq!(u.outage_longest_ms, 2 * H);
        assert_eq!(u.mttr_ms, Some(3 * H / 2));
        let pct = u.uptime_pct.unwrap();
        assert!((pct - 18.0 / 21.0 * 100.0).abs() < 1e-9, "{pct}");
        // 10 % of 21 h allowed = 2.1 h; 3 h spent.
        assert_eq!(u.budget_remaining_ms, Some(2 * H + H / 10 - 3 * H));
    }

    #[test]
    fn the_period_cuts_outages_and_steps_before_it_set_the_start() {
        use Outcome::*;
        let steps = [step(0, Online), step(10 * H, Offline), step(30 * H, Online)];
        // From 20h: offline already; to 25h: still offline.
        let u = measure(&steps, &[], 20 * H, 25 * H, None);
        assert_eq!(u.down_ms, 5 * H);
        assert_eq!(u.outages, 1);
        assert_eq!(u.mttr_ms, None, "an outage still going on has no recovery");
        assert_eq!(u.uptime_pct, Some(0.0));
        assert_eq!(u.budget_remaining_ms, None);
        // Nothing measured: no uptime claimed.
        let u = measure(&[], &[], 0, H, Some(0.99));
        assert_eq!(u.unmeasured_ms, H);
        assert_eq!(u.uptime_pct, None);
        assert_eq!(u.budget_remaining_ms, Some(0));
    }

    #[test]
    fn maintenance_inside_an_outage_does_not_split_it() {
        use Outcome::*;
        let steps = [step(0, Online), step(H, Offline), step(5 * H, Online)];
        let u = measure(&steps, &[(2 * H, 3 * H)], 0, 6 * H, None);
        assert_eq!(u.outages, 1);
        assert_eq!(u.outage_total_ms, 3 * H);
        assert_eq!(u.maintenance_ms, H);
        assert_eq!(u.mttr_ms, Some(3 * H));
    }

    #[test]
    fn overlapping_windows_count_once_and_many_windows_stay_cheap() {
        use Outcome::*;
        let steps = [step(0, Online)];
        let u = measure(
            &steps,
            &[(H, 3 * H), (2 * H, 4 * H), (2 * H, 3 * H)],
            0,
            10 * H,
            None,
        );
        assert_eq!(u.maintenance_ms, 3 * H);
        assert_eq!(u.up_ms, 7 * H);
        // A window every minute for a year: 525,600 windows, linear time.
        let minute = 60_000;
        let windows: Vec<(i64, i64)> = (0..525_600)
            .map(|i| (i * minute, i * minute + 1_000))
            .collect();
        let t = std::time::Instant::now();
        let u = measure(&steps, &windows, 0, 525_600 * minute, None);
        assert_eq!(u.maintenance_ms, 525_600 * 1_000);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn slo_values() {
        assert_eq!(parse_slo("99.5%").unwrap(), 0.995);
        assert_eq!(parse_slo("100%").unwrap(), 1.0);
        assert!(parse_slo("99.5").is_err());
        assert!(parse_slo("0%").is_err());
        assert!(parse_slo("101%").is_err());
    }
}
