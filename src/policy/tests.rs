//! The policy without I/O: a table of (what receivers last heard, the new
//! health, what holds events back, the circuit) -> events and who hears
//! them, and properties over random outcome sequences.

use super::route::SinkPolicy;
use super::*;
use crate::config::{Breaker, Connection};
use crate::event::EventFilter;
use crate::model::{Classified, Health, Outcome};
use crate::monitor::{CircuitEvent, Draws, FlapEvent, MonitorState, Observed, Transition};
use proptest::prelude::*;

fn routes() -> Routes {
    let sinks = vec![
        SinkPolicy {
            id: "hook".into(),
            class: SinkClass::Raw,
            events: EventFilter::all(),
        },
        SinkPolicy {
            id: "pd".into(),
            class: SinkClass::Paging,
            events: EventFilter::all(),
        },
        SinkPolicy {
            id: "chat".into(),
            class: SinkClass::Chat {
                group_wait: Duration::from_secs(10),
            },
            events: EventFilter::all(),
        },
    ];
    let all: Vec<String> = ["hook", "pd", "chat"].map(String::from).to_vec();
    Routes::new(&all, &EventFilter::all(), &sinks)
}

fn h(o: Outcome) -> Health {
    Health::Is(o)
}

/// One line per event: `type prev→cur (held reason): sink/priority ...`,
/// a paging delivery shown by its action.
fn show(events: &[Planned]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let mut s = e.kind.as_str().to_string();
            if let (Some(p), Some(c)) = (e.data["previous"].as_str(), e.data["current"].as_str()) {
                s.push_str(&format!(" {p}→{c}"));
            }
            if let Some(r) = e.suppressed {
                s.push_str(&format!(" (held {})", r.as_str()));
            }
            s.push(':');
            for d in &e.deliveries {
                let what = match d.action {
                    Some(a) => a.to_db(),
                    None => format!("{:?}", d.priority).to_lowercase(),
                };
                s.push_str(&format!(" {}/{what}", d.sink));
            }
            s
        })
        .collect()
}

/// A connection whose receivers last heard `sent` (with the paging memory
/// that goes with it), now confirmed `current`.
fn state(sent: Health, paged: Option<Severity>, current: Health) -> MonitorState {
    let mut st = MonitorState {
        sent,
        paged,
        ..MonitorState::default()
    };
    st.health.health = current;
    st
}

/// A probe at 1 s that changed `observed`, held back by `held`.
fn probe(observed: &Observed, held: Held) -> Probe<'_> {
    Probe {
        at: 1_000,
        observed,
        error: None,
        latency_ms: 5,
        held,
        auth_interval: Duration::from_secs(300),
    }
}

struct Row {
    what: &'static str,
    sent: Health,
    paged: Option<Severity>,
    current: Health,
    /// The machine's own transition this probe (previous -> current).
    transition: Option<Health>,
    circuit: Option<CircuitEvent>,
    flap: Option<FlapEvent>,
    held: Held,
    expect: &'static [&'static str],
    /// What receivers are left having heard.
    sent_after: Health,
    paged_after: Option<Severity>,
}

const OPENED: CircuitEvent = CircuitEvent::Opened {
    consecutive_failures: 3,
    failure_rate: None,
    until: 30_000,
    reopen: 0,
};

const NONE: Held = Held {
    per_change: None,
    other: None,
};

const U: Health = Health::Unknown;
const ON: Health = Health::Is(Outcome::Online);
const OFF: Health = Health::Is(Outcome::Offline);
const CRIT: Option<Severity> = Some(Severity::Critical);

#[test]
fn the_table() {
    let rows = [
        Row {
            what: "an online baseline is told to no one",
            sent: U,
            paged: None,
            current: ON,
            transition: Some(U),
            circuit: None,
            flap: None,
            held: NONE,
            expect: &[],
            sent_after: ON,
            paged_after: None,
        },
        Row {
            what: "an online baseline held back is not even recorded",
            sent: U,
            paged: None,
            current: ON,
            transition: Some(U),
            circuit: None,
            flap: None,
            held: Held {
                per_change: Some(Reason::Maintenance),
                other: Some(Reason::Maintenance),
            },
            expect: &[],
            sent_after: U,
            paged_after: None,
        },
        Row {
            what: "a failing baseline is an outage; the circuit stays off pager and chat",
            sent: U,
            paged: None,
            current: OFF,
            transition: Some(U),
            circuit: Some(OPENED),
            flap: None,
            held: NONE,
            expect: &[
                "connection.status_changed unknown→offline: hook/fresh pd/trigger:critical chat/fresh",
                "circuit.opened: hook/info",
            ],
            sent_after: OFF,
            paged_after: CRIT,
        },
        Row {
            what: "online to offline pages once",
            sent: ON,
            paged: None,
            current: OFF,
            transition: Some(ON),
            circuit: Some(OPENED),
            flap: None,
            held: NONE,
            expect: &[
                "connection.status_changed online→offline: hook/fresh pd/trigger:critical chat/fresh",
                "circuit.opened: hook/info",
            ],
            sent_after: OFF,
            paged_after: CRIT,
        },
        Row {
            what: "another failure of the same severity: no new page",
            sent: OFF,
            paged: CRIT,
            current: h(Outcome::Unreachable),
            transition: Some(OFF),
            circuit: None,
            flap: None,
            held: NONE,
            expect: &["connection.status_changed offline→unreachable: hook/info chat/info"],
            sent_after: h(Outcome::Unreachable),
            paged_after: CRIT,
        },
        Row {
            what: "a reopened circuit is not a page",
            sent: OFF,
            paged: CRIT,
            current: OFF,
            transition: None,
            circuit: Some(CircuitEvent::Opened {
                consecutive_failures: 4,
                failure_rate: None,
                until: 60_000,
                reopen: 1,
            }),
            flap: None,
            held: NONE,
            expect: &["circuit.opened: hook/info"],
            sent_after: OFF,
            paged_after: CRIT,
        },
        Row {
            what: "severity rising raises the same incident",
            sent: h(Outcome::Degraded),
            paged: Some(Severity::Warning),
            current: OFF,
            transition: Some(h(Outcome::Degraded)),
            circuit: None,
            flap: None,
            held: NONE,
            expect: &[
                "connection.status_changed degraded→offline: hook/fresh pd/trigger:critical:warning chat/fresh",
            ],
            sent_after: OFF,
            paged_after: CRIT,
        },
        Row {
            what: "severity falling says nothing to pagers",
            sent: OFF,
            paged: CRIT,
            current: h(Outcome::Degraded),
            transition: Some(OFF),
            circuit: None,
            flap: None,
            held: NONE,
            expect: &["connection.status_changed offline→degraded: hook/info chat/info"],
            sent_after: h(Outcome::Degraded),
            paged_after: CRIT,
        },
        Row {
            what: "recovery resolves with the severity the incident carries",
            sent: h(Outcome::Degraded),
            paged: CRIT,
            current: ON,
            transition: Some(h(Outcome::Degraded)),
            circuit: Some(CircuitEvent::Closed),
            flap: None,
            held: NONE,
            expect: &[
                "connection.status_changed degraded→online: hook/resolve pd/resolve:critical chat/resolve",
                "circuit.closed: hook/info",
            ],
            sent_after: ON,
            paged_after: None,
        },
        Row {
            what: "expired credentials page at error; the companion event is for raw sinks",
            sent: ON,
            paged: None,
            current: h(Outcome::AuthRequired),
            transition: Some(ON),
            circuit: None,
            flap: None,
            held: NONE,
            expect: &[
                "connection.status_changed online→auth_required: hook/fresh pd/trigger:error chat/fresh",
                "connection.auth_required: hook/fresh",
            ],
            sent_after: h(Outcome::AuthRequired),
            paged_after: Some(Severity::Error),
        },
        Row {
            what: "a refused operation pages at error, with no companion event",
            sent: ON,
            paged: None,
            current: h(Outcome::PermissionDenied),
            transition: Some(ON),
            circuit: None,
            flap: None,
            held: NONE,
            expect: &[
                "connection.status_changed online→permission_denied: hook/fresh pd/trigger:error chat/fresh",
            ],
            sent_after: h(Outcome::PermissionDenied),
            paged_after: Some(Severity::Error),
        },
        Row {
            what: "a rate limit is not an outage",
            sent: ON,
            paged: None,
            current: h(Outcome::RateLimited),
            transition: Some(ON),
            circuit: None,
            flap: None,
            held: NONE,
            expect: &[
                "connection.status_changed online→rate_limited: hook/info chat/info",
                "connection.rate_limited: hook/info",
            ],
            sent_after: h(Outcome::RateLimited),
            paged_after: None,
        },
        Row {
            what: "a rate limit inside an outage keeps the incident open",
            sent: OFF,
            paged: CRIT,
            current: h(Outcome::RateLimited),
            transition: Some(OFF),
            circuit: None,
            flap: None,
            held: NONE,
            expect: &[
                "connection.status_changed offline→rate_limited: hook/info chat/info",
                "connection.rate_limited: hook/info",
            ],
            sent_after: h(Outcome::RateLimited),
            paged_after: CRIT,
        },
        Row {
            what: "maintenance records without delivering and leaves the memory",
            sent: ON,
            paged: None,
            current: OFF,
            transition: Some(ON),
            circuit: Some(OPENED),
            flap: None,
            held: Held {
                per_change: Some(Reason::Maintenance),
                other: Some(Reason::Maintenance),
            },
            expect: &[
                "connection.status_changed online→offline (held maintenance):",
                "circuit.opened (held maintenance):",
            ],
            sent_after: ON,
            paged_after: None,
        },
        Row {
            what: "flapping holds per-change events; flapping_started goes out",
            sent: ON,
            paged: None,
            current: OFF,
            transition: Some(ON),
            circuit: None,
            flap: Some(FlapEvent::Started { percent: 61.04 }),
            held: Held {
                per_change: Some(Reason::Flapping),
                other: None,
            },
            expect: &[
                "connection.flapping_started: hook/info chat/info",
                "connection.status_changed online→offline (held flapping):",
            ],
            sent_after: ON,
            paged_after: None,
        },
        Row {
            what: "a probe after a hold ended catches receivers up once",
            sent: ON,
            paged: None,
            current: OFF,
            transition: None,
            circuit: None,
            flap: None,
            held: NONE,
            expect: &[
                "connection.status_changed online→offline: hook/fresh pd/trigger:critical chat/fresh",
            ],
            sent_after: OFF,
            paged_after: CRIT,
        },
        Row {
            what: "a restart with known health says nothing",
            sent: OFF,
            paged: CRIT,
            current: OFF,
            transition: None,
            circuit: None,
            flap: None,
            held: NONE,
            expect: &[],
            sent_after: OFF,
            paged_after: CRIT,
        },
        Row {
            what: "a degraded baseline is a warning page",
            sent: U,
            paged: None,
            current: h(Outcome::Degraded),
            transition: Some(U),
            circuit: None,
            flap: None,
            held: NONE,
            expect: &[
                "connection.status_changed unknown→degraded: hook/fresh pd/trigger:warning chat/fresh",
            ],
            sent_after: h(Outcome::Degraded),
            paged_after: Some(Severity::Warning),
        },
    ];
    let r = routes();
    for row in rows {
        let mut st = state(row.sent, row.paged, row.current);
        let observed = Observed {
            transition: row.transition.map(|previous| Transition {
                previous,
                current: row.current,
                at: 1_000,
            }),
            circuit: row.circuit,
            flap: row.flap,
            ..Observed::default()
        };
        let got = show(&after_probe(&mut st, &probe(&observed, row.held), &r));
        assert_eq!(got, row.expect, "{}", row.what);
        assert_eq!(st.sent, row.sent_after, "{}: sent", row.what);
        assert_eq!(st.paged, row.paged_after, "{}: paged", row.what);
    }
}

#[test]
fn a_trial_and_a_catch_up_without_a_probe() {
    let r = routes();
    assert_eq!(
        show(&after_trial(5_000, NONE, &r)),
        ["circuit.half_opened: hook/info"]
    );
    let maint = Held {
        per_change: Some(Reason::Maintenance),
        other: Some(Reason::Maintenance),
    };
    assert_eq!(
        show(&after_trial(5_000, maint, &r)),
        ["circuit.half_opened (held maintenance):"]
    );
    // A maintenance window ends with the connection down since.
    let mut st = state(ON, None, OFF);
    let got = catch_up(&mut st, 9_000, Duration::from_secs(300), &r);
    assert_eq!(
        show(&got),
        ["connection.status_changed online→offline: hook/fresh pd/trigger:critical chat/fresh"]
    );
    assert!(got[0].data["error"].is_null(), "no probe, no error");
    assert_eq!(got[0].data["severity"], "critical");
    assert!(catch_up(&mut st, 9_001, Duration::from_secs(300), &r).is_empty());
}

#[test]
fn a_scope_change_is_its_own_event_and_moves_the_status_with_the_scopes_error() {
    use crate::monitor::{ScopeObserved, ScopeState};
    let r = routes();
    let mut st = state(ON, None, ON);
    let scope = |o: Outcome| ScopeState {
        health: crate::monitor::HealthMachine {
            health: h(o),
            ..Default::default()
        },
        error: None,
    };
    // The first health of a scope, online: a baseline, nothing told.
    st.scopes.insert("orders".into(), scope(Outcome::Online));
    let baseline = ScopeObserved {
        scope: Some(Transition {
            previous: Health::Unknown,
            current: ON,
            at: 1_000,
        }),
        ..Default::default()
    };
    fn p(o: &ScopeObserved) -> crate::policy::ScopeProbe<'_> {
        crate::policy::ScopeProbe {
            at: 1_000,
            scope: "orders",
            observed: o,
            error: None,
            held: NONE,
        }
    }
    assert!(after_scope(&mut st, &p(&baseline), &r).is_empty());
    // Refused: the scope's change to raw sinks, the connection's to all.
    st.scopes
        .insert("orders".into(), scope(Outcome::PermissionDenied));
    st.scopes.insert("items".into(), scope(Outcome::Online));
    let refused = ScopeObserved {
        scope: Some(Transition {
            previous: ON,
            current: h(Outcome::PermissionDenied),
            at: 2_000,
        }),
        transition: Some(Transition {
            previous: ON,
            current: h(Outcome::Degraded),
            at: 2_000,
        }),
        rate_hold: None,
    };
    let got = after_scope(&mut st, &p(&refused), &r);
    assert_eq!(
        show(&got),
        [
            "connection.scope_changed online→permission_denied: hook/info",
            "connection.status_changed online→degraded: hook/fresh pd/trigger:warning chat/fresh",
        ]
    );
    assert_eq!(got[0].data["scope"], "orders");
    assert_eq!(got[1].data["error"]["kind"], "scope");
    assert_eq!(
        got[1].data["error"]["message"],
        "scope orders is permission_denied"
    );
    // Held by a maintenance window: recorded, told to no one.
    let maint = Held {
        per_change: Some(Reason::Maintenance),
        other: Some(Reason::Maintenance),
    };
    let mut st2 = state(ON, None, ON);
    st2.scopes
        .insert("orders".into(), scope(Outcome::PermissionDenied));
    let q = crate::policy::ScopeProbe {
        held: maint,
        ..p(&refused)
    };
    assert_eq!(
        show(&after_scope(&mut st2, &q, &r)),
        [
            "connection.scope_changed online→permission_denied (held maintenance):",
            "connection.status_changed online→degraded (held maintenance):",
        ]
    );
}

#[test]
fn holds_come_from_maintenance_silences_the_parent_and_flapping() {
    let own = MonitorState::default();
    let maint = held(Some(10_000), None, 9_999, None, &own);
    assert_eq!(maint.per_change, Some(Reason::Maintenance));
    assert_eq!(maint.other, Some(Reason::Maintenance));
    assert_eq!(
        held(Some(10_000), None, 10_000, None, &own),
        NONE,
        "ends at its end"
    );
    let silenced = held(None, Some(10_000), 9_999, None, &own);
    assert_eq!(
        (silenced.per_change, silenced.other),
        (Some(Reason::Silenced), Some(Reason::Silenced))
    );
    assert_eq!(
        held(Some(5), Some(10_000), 0, None, &own).per_change,
        Some(Reason::Maintenance),
        "the window is named first"
    );
    // A parent whose last probe failed is suspected: its children wait.
    let mut parent = MonitorState::default();
    parent.health.last = Some(Outcome::Offline);
    let p = held(None, None, 0, Some(&parent), &own);
    assert_eq!(
        (p.per_change, p.other),
        (Some(Reason::Parent), Some(Reason::Parent))
    );
    assert_eq!(
        held(Some(5), None, 0, Some(&parent), &own).per_change,
        Some(Reason::Maintenance),
        "maintenance is the stronger reason"
    );
    // Flapping holds per-change events only.
    let mut flapping = MonitorState::default();
    flapping.flap.flapping = true;
    let f = held(None, None, 0, None, &flapping);
    assert_eq!((f.per_change, f.other), (Some(Reason::Flapping), None));
}

#[test]
fn events_a_connection_does_not_emit_do_not_exist() {
    let sinks = vec![SinkPolicy {
        id: "hook".into(),
        class: SinkClass::Raw,
        events: EventFilter::all(),
    }];
    let only_circuit = EventFilter::parse(&["circuit.*"]).unwrap();
    let r = Routes::new(&["hook".to_string()], &only_circuit, &sinks);
    let mut st = state(ON, None, OFF);
    let observed = Observed {
        circuit: Some(OPENED),
        ..Observed::default()
    };
    assert_eq!(
        show(&after_probe(&mut st, &probe(&observed, NONE), &r)),
        ["circuit.opened: hook/info"]
    );
    assert_eq!(st.sent, OFF, "told (to nobody), so not told again");
}

fn conn() -> Connection {
    let mut c = Connection::adhoc(url::Url::parse("http://127.0.0.1:1/").unwrap());
    c.cadence = crate::config::Cadence::Interval(Duration::from_secs(1));
    c.breaker = Breaker {
        failure_threshold: 3,
        success_threshold: 2,
        open_for: Duration::from_secs(4),
        max_open_for: Duration::from_secs(20),
        ..Breaker::default()
    };
    c
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        6 => Just(Outcome::Online),
        1 => Just(Outcome::Degraded),
        3 => Just(Outcome::Offline),
        1 => Just(Outcome::Unreachable),
        1 => Just(Outcome::Invalid),
        1 => Just(Outcome::AuthRequired),
        1 => Just(Outcome::RateLimited),
    ]
}

/// Everything planned while driving one connection the way the engine
/// does: a probe each second the gate allows, maintenance on the steps
/// marked, a catch-up when it ends.
fn drive(seq: &[(Outcome, bool)]) -> (Vec<Planned>, MonitorState) {
    let c = conn();
    let r = routes();
    let mut st = MonitorState::default();
    let mut out = Vec::new();
    let mut was_held = false;
    for (i, (o, maintenance)) in seq.iter().enumerate() {
        let t = i as i64 * 1_000;
        let until = maintenance.then_some(t + 1);
        if was_held && !maintenance {
            out.extend(catch_up(&mut st, t, c.auth_interval, &r));
        }
        was_held = *maintenance;
        if st.gate(t).is_some() {
            continue;
        }
        let hold = held(until, None, t, None, &st);
        if st.breaker.begin_probe(t).is_some() {
            out.extend(after_trial(t, hold, &r));
        }
        let classified = Classified {
            outcome: *o,
            error: None,
            http_status: None,
            latency: Duration::from_millis(3),
            retry_after: Some(Duration::from_secs(2)),
            sync: None,
        };
        let observed = st.observe(
            &classified,
            t,
            &c,
            Draws {
                breaker: 0.5,
                backoff: 0.5,
            },
        );
        let hold = held(until, None, t, None, &st);
        let p = Probe {
            at: t,
            observed: &observed,
            error: None,
            latency_ms: 3,
            held: hold,
            auth_interval: c.auth_interval,
        };
        out.extend(after_probe(&mut st, &p, &r));
    }
    (out, st)
}

fn pd_actions(events: &[Planned]) -> Vec<PageAction> {
    events
        .iter()
        .flat_map(|e| e.deliveries.iter())
        .filter(|d| &*d.sink == "pd")
        .map(|d| d.action.expect("the pager hears only incidents"))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Per paging sink: one trigger opens an outage, later triggers in it
    /// only raise its severity, one resolve closes it; never a resolve
    /// without an open incident, never a second open one; and when
    /// receivers last heard `online`, no incident is left open.
    #[test]
    fn one_trigger_and_one_resolve_per_outage(
        seq in proptest::collection::vec((outcome(), proptest::bool::weighted(0.1)), 1..400),
    ) {
        let (events, st) = drive(&seq);
        let mut open: Option<Severity> = None;
        for a in pd_actions(&events) {
            match a {
                PageAction::Trigger { severity, replaces } => {
                    prop_assert_eq!(replaces, open, "a trigger names the incident it raises");
                    prop_assert!(open.is_none_or(|o| severity > o), "only a rise pages again");
                    open = Some(severity);
                }
                PageAction::Resolve { severity } => {
                    prop_assert_eq!(Some(severity), open, "resolve only what is open");
                    open = None;
                }
            }
        }
        prop_assert_eq!(open, st.paged);
        if st.sent == Health::Is(Outcome::Online) || st.sent == Health::Unknown {
            prop_assert_eq!(open, None);
        }
        // Nothing but status changes reaches the pager by default.
        for e in &events {
            if e.kind != crate::event::EventKind::StatusChanged {
                prop_assert!(e.deliveries.iter().all(|d| &*d.sink != "pd"), "{:?}", e.kind);
            }
        }
    }

    /// Status changes told chain (each starts where the last ended) and
    /// never repeat a health; the first starts from `unknown`, or from
    /// `online` when the baseline was online (told to no one).
    #[test]
    fn told_changes_chain_and_the_online_baseline_is_never_told(
        seq in proptest::collection::vec((outcome(), proptest::bool::weighted(0.1)), 1..300),
    ) {
        let (events, _) = drive(&seq);
        let told: Vec<(String, String)> = events
            .iter()
            .filter(|e| e.kind == crate::event::EventKind::StatusChanged && e.suppressed.is_none())
            .map(|e| (e.data["previous"].as_str().unwrap().to_string(), e.data["current"].as_str().unwrap().to_string()))
            .collect();
        for w in told.windows(2) {
            prop_assert_eq!(&w[0].1, &w[1].0, "chain broken: {:?}", told);
        }
        for (p, c) in &told {
            prop_assert_ne!(p, c);
        }
        if let Some((first, _)) = told.first() {
            prop_assert!(first == "unknown" || first == "online", "{told:?}");
        }
        for e in &events {
            prop_assert!(
                !(e.data["previous"] == "unknown" && e.data["current"] == "online"),
                "the online baseline was recorded or told: {:?}", e
            );
        }
    }

    /// A connection that only ever answers online produces no event at all.
    #[test]
    fn an_always_online_connection_is_silent(n in 1usize..200) {
        let (events, st) = drive(&vec![(Outcome::Online, false); n]);
        prop_assert!(events.is_empty(), "{events:?}");
        prop_assert_eq!(st.sent, Health::Is(Outcome::Online));
    }

    /// Deliveries of one change are fresh exactly when the severity rose.
    #[test]
    fn priorities_follow_severity(
        seq in proptest::collection::vec((outcome(), Just(false)), 1..200),
    ) {
        let (events, _) = drive(&seq);
        for e in events.iter().filter(|e| e.kind == crate::event::EventKind::StatusChanged) {
            let prev = Health::parse(e.data["previous"].as_str().unwrap()).unwrap();
            let cur = Health::parse(e.data["current"].as_str().unwrap()).unwrap();
            let rose = Severity::of(cur).is_some_and(|c| Severity::of(prev).is_none_or(|p| c > p));
            for d in e.deliveries.iter().filter(|d| &*d.sink == "hook") {
                prop_assert_eq!(d.priority == Priority::Fresh, rose, "{} → {}", prev, cur);
            }
        }
    }
}
