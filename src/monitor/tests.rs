//! Tests of the combined state over sequences, with explicit instants, and
//! property tests over random outcome sequences.

use super::*;
use crate::config::{Breaker, Connection};
use crate::model::{Classified, Outcome};
use proptest::prelude::*;
use std::time::Duration;

fn conn(interval_s: u64) -> Connection {
    let mut c = Connection::adhoc(url::Url::parse("http://127.0.0.1:1/").unwrap());
    c.cadence = crate::config::Cadence::Interval(Duration::from_secs(interval_s));
    c.breaker = Breaker {
        failure_threshold: 3,
        success_threshold: 2,
        open_for: Duration::from_secs(4),
        max_open_for: Duration::from_secs(60),
        ..Breaker::default()
    };
    c.auth_interval = Duration::from_secs(300);
    c
}

fn classified(o: Outcome, retry_after: Option<Duration>) -> Classified {
    Classified {
        outcome: o,
        error: None,
        http_status: None,
        latency: Duration::from_millis(5),
        retry_after,
        sync: None,
    }
}

const HALF: Draws = Draws {
    breaker: 0.5,
    backoff: 0.5,
};

/// Drives one connection on its interval grid for `secs` seconds: at each
/// tick, if the gate allows, it probes and feeds `outcome(n)`. Returns the
/// probe times.
fn drive(
    c: &Connection,
    secs: i64,
    mut outcome: impl FnMut(usize, i64) -> (Outcome, Option<Duration>),
) -> (Vec<i64>, MonitorState) {
    let mut s = MonitorState::default();
    let step = c.interval().unwrap().as_millis() as i64;
    let mut probes = Vec::new();
    let mut t = 0;
    while t < secs * 1000 {
        if s.gate(t).is_none() {
            s.breaker.begin_probe(t);
            let (o, ra) = outcome(probes.len(), t);
            probes.push(t);
            s.observe(&classified(o, ra), t, c, HALF);
        }
        t += step;
    }
    (probes, s)
}

#[test]
fn an_endpoint_that_goes_down_gets_three_probes_then_one_per_open_wait() {
    let c = conn(1);
    let (probes, s) = drive(&c, 60, |_, _| (Outcome::Offline, None));
    // 0, 1, 2 s: three failures open it for 4 s; trials at 6, 14 (8 s),
    // 30 (16 s); then 32 s would pass the minute.
    assert_eq!(probes, vec![0, 1_000, 2_000, 6_000, 14_000, 30_000]);
    assert_eq!(s.breaker.circuit, Circuit::Open);
    assert_eq!(s.health.health, Health::Is(Outcome::Offline));
}

#[test]
fn recovery_closes_after_success_threshold_and_cadence_resumes() {
    let c = conn(1);
    let (probes, s) = drive(&c, 20, |n, _| {
        (
            if n < 3 {
                Outcome::Offline
            } else {
                Outcome::Online
            },
            None,
        )
    });
    // Open at 2 s for 4 s; trial at 6 s succeeds (half-open), 7 s closes it.
    assert_eq!(&probes[..5], &[0, 1_000, 2_000, 6_000, 7_000]);
    assert_eq!(probes.len(), 3 + 14);
    assert_eq!(s.breaker.circuit, Circuit::Closed);
    assert_eq!(s.health.health, Health::Is(Outcome::Online));
}

#[test]
fn retry_after_twenty_seconds_sees_nothing_for_twenty_seconds() {
    let c = conn(1);
    let (probes, _) = drive(&c, 30, |n, _| {
        if n == 1 {
            (Outcome::RateLimited, Some(Duration::from_secs(20)))
        } else {
            (Outcome::Online, None)
        }
    });
    assert_eq!(&probes[..3], &[0, 1_000, 21_000]);
}

#[test]
fn auth_required_and_permission_denied_are_polled_on_the_slow_cadence() {
    let c = conn(1);
    for o in [Outcome::AuthRequired, Outcome::PermissionDenied] {
        let (probes, s) = drive(&c, 1_000, |_, _| (o, None));
        assert_eq!(probes, vec![0, 300_000, 600_000, 900_000], "{o}");
        assert_eq!(
            s.breaker.circuit,
            Circuit::Closed,
            "{o} never opens the circuit"
        );
        assert_eq!(s.health.health, Health::Is(o), "{o} counts at once");
        assert!(!s.confirmed_failing());
    }
}

#[test]
fn state_survives_a_round_trip_and_garbage_falls_back() {
    let c = conn(1);
    let (_, s) = drive(&c, 10, |_, _| (Outcome::Offline, None));
    let back = MonitorState::restore(Some(&s.to_json()), Health::Unknown, None);
    assert_eq!(back, s);
    assert_eq!(back.breaker.circuit, Circuit::Open);
    let fresh = MonitorState::restore(Some("{not json"), Health::Is(Outcome::Offline), Some(5));
    assert_eq!(fresh.health.health, Health::Is(Outcome::Offline));
    assert_eq!(fresh.sent, Health::Is(Outcome::Offline));
    assert_eq!(fresh.paged, Some(crate::policy::Severity::Critical));
    // A snapshot from before paging memory existed: an outage receivers
    // heard of is an open incident, so its recovery still resolves it.
    let mut old: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
    old.as_object_mut().unwrap().remove("paged");
    old["sent"] = serde_json::to_value(Health::Is(Outcome::Unreachable)).unwrap();
    let back = MonitorState::restore(Some(&old.to_string()), Health::Unknown, None);
    assert_eq!(back.paged, Some(crate::policy::Severity::Critical));
}

#[test]
fn steady_state_stops_changing() {
    let c = conn(1);
    let mut s = MonitorState::default();
    for t in 0..200 {
        s.observe(&classified(Outcome::Online, None), t, &c, HALF);
    }
    let before = s.clone();
    s.observe(&classified(Outcome::Online, None), 200, &c, HALF);
    assert_eq!(s, before, "a healthy connection's state is not rewritten");
}

fn outcome_strategy() -> impl Strategy<Value = (Outcome, Option<u64>)> {
    prop_oneof![
        4 => Just((Outcome::Online, None)),
        1 => Just((Outcome::Degraded, None)),
        3 => Just((Outcome::Offline, None)),
        1 => Just((Outcome::Unreachable, None)),
        1 => Just((Outcome::Invalid, None)),
        1 => Just((Outcome::AuthRequired, None)),
        1 => (0u64..100_000).prop_map(|s| (Outcome::RateLimited, Some(s))),
        1 => Just((Outcome::RateLimited, None)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// After a rate-limited answer, the gate refuses every instant before
    /// the deadline (Retry-After capped at retry_after_max, or the backoff).
    #[test]
    fn rate_limited_never_probed_before_its_deadline(
        seq in proptest::collection::vec(outcome_strategy(), 1..200),
        draws in proptest::collection::vec(0.0f64..1.0, 200),
    ) {
        let c = conn(1);
        let mut s = MonitorState::default();
        let mut t = 0i64;
        let mut deadline: Option<i64> = None;
        for (i, (o, ra)) in seq.iter().enumerate() {
            // Jump to the first instant the gate allows.
            if let Some((until, _)) = s.gate(t) {
                t = until;
            }
            if let Some(d) = deadline {
                prop_assert!(t >= d, "probe at {t} before the deadline {d}");
            }
            s.breaker.begin_probe(t);
            let ra = ra.map(Duration::from_secs);
            s.observe(&classified(*o, ra), t, &c, Draws { breaker: draws[i], backoff: draws[i] });
            deadline = s.hold.rate_limited_until;
            if *o == Outcome::RateLimited {
                let d = deadline.unwrap();
                if let Some(ra) = ra {
                    let capped = ra.min(c.retry_after_max).as_millis() as i64;
                    prop_assert_eq!(d, t + capped);
                }
                for probe_at in [t, (t + d) / 2, d - 1] {
                    if probe_at < d {
                        prop_assert!(s.gate(probe_at).is_some());
                    }
                }
            }
            t += 1_000;
        }
    }

    /// An always-failing connection, probed at every tick the gate allows
    /// for a day, gets no more probes than the open-wait schedule allows.
    #[test]
    fn probes_to_a_dead_endpoint_are_bounded_by_the_open_waits(
        draws in proptest::collection::vec(0.0f64..1.0, 400),
        interval_s in 1u64..30,
    ) {
        let c = conn(interval_s);
        let mut s = MonitorState::default();
        let mut n = 0usize;
        let step = interval_s as i64 * 1000;
        let day = 86_400_000i64;
        let mut t = 0;
        while t < day {
            if s.gate(t).is_none() {
                s.breaker.begin_probe(t);
                s.observe(&classified(Outcome::Unreachable, None), t, &c, Draws { breaker: draws[n % draws.len()], backoff: 0.5 });
                n += 1;
            }
            t += step;
        }
        // 3 to open, then one per wait; waits are at least 80 % of
        // min(4 s * 2^k, 60 s): 3.2, 6.4, 12.8, 25.6, then 48 s each.
        let bound = 3 + 4 + (day / 48_000) as usize + 1;
        prop_assert!(n <= bound, "{n} probes > {bound}");
        prop_assert!(n >= 3 + (day / (60_000 + step)) as usize / 2, "{n} probes: the trials did happen");
    }
}

fn scoped(ids: &[&str]) -> Connection {
    let mut c = conn(1);
    c.scopes = ids
        .iter()
        .map(|id| {
            std::sync::Arc::new(crate::config::Scope {
                id: id.to_string(),
                url: url::Url::parse("http://127.0.0.1:1/e").unwrap(),
                method: reqwest::Method::GET,
                headers: Vec::new(),
                body: None,
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                degraded_after: None,
                expect: std::sync::Arc::new(crate::config::Expect::default()),
            })
        })
        .collect();
    c
}

#[test]
fn a_refused_scope_degrades_an_online_connection_and_all_refused_deny_it() {
    let c = scoped(&["orders", "items"]);
    let mut s = MonitorState::default();
    assert_eq!(s.fit(&c, 0), None);
    assert_eq!(s.scopes.len(), 2, "configured scopes start unknown");
    let on = classified(Outcome::Online, None);
    let denied = classified(Outcome::PermissionDenied, None);
    let t = s.observe(&on, 0, &c, HALF).transition.unwrap();
    assert_eq!(
        (t.previous, t.current),
        (Health::Unknown, Health::Is(Outcome::Online))
    );
    // One refused: confirmed at once, the connection degraded.
    let o = s.observe_scope("orders", &denied, 1_000, &c, HALF);
    assert_eq!(
        o.scope.unwrap().current,
        Health::Is(Outcome::PermissionDenied)
    );
    let t = o.transition.unwrap();
    assert_eq!(
        (t.previous, t.current),
        (Health::Is(Outcome::Online), Health::Is(Outcome::Degraded))
    );
    // The endpoint's probes do not undo it.
    assert_eq!(s.observe(&on, 2_000, &c, HALF).transition, None);
    assert_eq!(s.current(), Health::Is(Outcome::Degraded));
    // Both refused: the connection is refused.
    let t = s
        .observe_scope("items", &denied, 3_000, &c, HALF)
        .transition
        .unwrap();
    assert_eq!(t.current, Health::Is(Outcome::PermissionDenied));
    // The endpoint going down wins; coming back, the scopes count again.
    for i in 0..3 {
        s.observe(&classified(Outcome::Offline, None), 4_000 + i, &c, HALF);
    }
    assert_eq!(s.current(), Health::Is(Outcome::Offline));
    // A reload that drops both scopes: the connection is its endpoint.
    let mut s2 = s.clone();
    s2.health.health = Health::Is(Outcome::Online);
    let t = s2.fit(&conn(1), 10_000).unwrap();
    assert_eq!(
        (t.previous, t.current),
        (
            Health::Is(Outcome::PermissionDenied),
            Health::Is(Outcome::Online)
        )
    );
    assert!(s2.scopes.is_empty());
}

#[test]
fn a_scope_confirms_failures_with_the_thresholds_and_a_429_holds_the_connection() {
    let c = scoped(&["orders"]);
    let mut s = MonitorState::default();
    s.fit(&c, 0);
    s.observe(&classified(Outcome::Online, None), 0, &c, HALF);
    let off = classified(Outcome::Offline, None);
    assert_eq!(
        s.observe_scope("orders", &off, 1_000, &c, HALF).transition,
        None
    );
    assert_eq!(
        s.observe_scope("orders", &off, 2_000, &c, HALF).transition,
        None
    );
    let o = s.observe_scope("orders", &off, 3_000, &c, HALF);
    assert_eq!(
        o.transition.unwrap().current,
        Health::Is(Outcome::Degraded),
        "failure_threshold 3"
    );
    assert_eq!(
        s.breaker.circuit,
        Circuit::Closed,
        "a scope never opens the circuit"
    );
    // A rate limit on a scope: no change of the scope, the whole connection waits.
    let limited = classified(Outcome::RateLimited, Some(Duration::from_secs(20)));
    let o = s.observe_scope("orders", &limited, 4_000, &c, HALF);
    assert_eq!(o.scope, None);
    assert_eq!(o.rate_hold.unwrap().until, 24_000);
    assert_eq!(s.gate(5_000), Some((24_000, "retry_after")));
    // The state round-trips with its scopes.
    let back = MonitorState::restore(Some(&s.to_json()), Health::Unknown, None);
    assert_eq!(back, s);
}
