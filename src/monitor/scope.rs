//! Scopes: a connection's operations (reading one entity type, say), each
//! probed on its own and confirmed with the connection's thresholds, and
//! how their healths combine with the status endpoint's into the
//! connection's health ([`combine`], pure).
//!
//! The rule (docs/configuration.md, "Scopes"): the connection's health is
//! its status endpoint's, except while the endpoint is `online`: if every
//! scope is `permission_denied`, the connection is `permission_denied`; if
//! some scopes fail, it is `degraded` (error.kind `scope`, naming them).
//! A scope fails when its confirmed health is anything but `online`
//! (`unknown` — not probed yet — and `rate_limited` — a hold, not an
//! answer — do not count). So a scope never makes a failing connection
//! look healthier: it can only lower an `online` endpoint.

use super::health::HealthMachine;
use crate::model::{ErrorKind, Health, Outcome, ProbeError};
use serde::{Deserialize, Serialize};

/// Scopes named in a combined error before "and N more".
pub const NAMED: usize = 5;

/// What connwatch remembers of one scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScopeState {
    pub health: HealthMachine,
    /// The error of the probe that last failed, while it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ProbeError>,
}

/// The connection's health, and the error that explains it when the
/// scopes decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combined {
    pub health: Health,
    /// Set only when the scopes lowered an online endpoint.
    pub error: Option<ProbeError>,
}

/// Whether a scope's confirmed health counts as failing.
pub fn failing(h: Health) -> bool {
    matches!(h, Health::Is(o) if o != Outcome::Online && o != Outcome::RateLimited)
}

/// The connection's health from its endpoint's and its scopes'.
pub fn combine<'a, I>(endpoint: Health, scopes: I) -> Combined
where
    I: IntoIterator<Item = (&'a str, &'a ScopeState)>,
{
    let plain = Combined {
        health: endpoint,
        error: None,
    };
    if endpoint != Health::Is(Outcome::Online) {
        return plain;
    }
    let mut total = 0;
    let mut denied = 0;
    let mut bad: Vec<(&str, &ScopeState)> = Vec::new();
    for (id, s) in scopes {
        total += 1;
        let h = s.health.health;
        if h == Health::Is(Outcome::PermissionDenied) {
            denied += 1;
        }
        if failing(h) {
            bad.push((id, s));
        }
    }
    if bad.is_empty() {
        return plain;
    }
    if denied == total {
        let names: Vec<&str> = bad.iter().map(|(id, _)| *id).collect();
        return Combined {
            health: Health::Is(Outcome::PermissionDenied),
            error: Some(ProbeError {
                kind: ErrorKind::Permission,
                message: format!("every scope is refused: {}", list(&names)),
                http_status: None,
            }),
        };
    }
    let message = match bad.as_slice() {
        [(id, s)] => match &s.error {
            Some(e) => format!("scope {id} is {}: {}", s.health.health, e.message),
            None => format!("scope {id} is {}", s.health.health),
        },
        many => {
            let named: Vec<String> = many
                .iter()
                .map(|(id, s)| format!("{id} ({})", s.health.health))
                .collect();
            let named: Vec<&str> = named.iter().map(String::as_str).collect();
            format!("{} of {total} scopes failing: {}", many.len(), list(&named))
        }
    };
    Combined {
        health: Health::Is(Outcome::Degraded),
        error: Some(ProbeError {
            kind: ErrorKind::Scope,
            message,
            http_status: None,
        }),
    }
}

/// "a, b, c, d, e and 2 more".
fn list(names: &[&str]) -> String {
    let mut s = names[..names.len().min(NAMED)].join(", ");
    if names.len() > NAMED {
        s.push_str(&format!(" and {} more", names.len() - NAMED));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn st(o: Option<Outcome>) -> ScopeState {
        ScopeState {
            health: HealthMachine {
                health: o.map_or(Health::Unknown, Health::Is),
                ..HealthMachine::default()
            },
            error: None,
        }
    }

    fn run(endpoint: Outcome, scopes: &[Option<Outcome>]) -> (Health, Option<String>) {
        let states: Vec<(String, ScopeState)> = scopes
            .iter()
            .enumerate()
            .map(|(i, o)| (format!("s{i}"), st(*o)))
            .collect();
        let c = combine(
            Health::Is(endpoint),
            states.iter().map(|(id, s)| (id.as_str(), s)),
        );
        (
            c.health,
            c.error.map(|e| format!("{}: {}", e.kind, e.message)),
        )
    }

    use Outcome::*;

    #[test]
    fn the_table() {
        let h = Health::Is;
        type Row<'a> = (Outcome, &'a [Option<Outcome>], Health, Option<&'a str>);
        let rows: &[Row] = &[
            // No scopes, or all fine: the endpoint's health.
            (Online, &[], h(Online), None),
            (Online, &[Some(Online), Some(Online)], h(Online), None),
            // Not probed yet, or held by a rate limit: not failing.
            (Online, &[None, Some(RateLimited)], h(Online), None),
            // One of three refused: degraded, naming it.
            (
                Online,
                &[Some(Online), Some(PermissionDenied), Some(Online)],
                h(Degraded),
                Some("scope: scope s1 is permission_denied"),
            ),
            // All refused: the connection is refused.
            (
                Online,
                &[
                    Some(PermissionDenied),
                    Some(PermissionDenied),
                    Some(PermissionDenied),
                ],
                h(PermissionDenied),
                Some("permission: every scope is refused: s0, s1, s2"),
            ),
            // All failing, not all refused: degraded.
            (
                Online,
                &[Some(PermissionDenied), Some(Offline)],
                h(Degraded),
                Some("scope: 2 of 2 scopes failing: s0 (permission_denied), s1 (offline)"),
            ),
            // Refused, with one not probed yet: not every scope.
            (
                Online,
                &[Some(PermissionDenied), None],
                h(Degraded),
                Some("scope: scope s0 is permission_denied"),
            ),
            // A degraded scope degrades.
            (
                Online,
                &[Some(Degraded)],
                h(Degraded),
                Some("scope: scope s0 is degraded"),
            ),
            // The endpoint not online: its health, whatever the scopes.
            (Offline, &[Some(PermissionDenied)], h(Offline), None),
            (Degraded, &[Some(Offline)], h(Degraded), None),
            (AuthRequired, &[Some(Online)], h(AuthRequired), None),
            (RateLimited, &[Some(PermissionDenied)], h(RateLimited), None),
        ];
        for (endpoint, scopes, want, error) in rows {
            let (got, err) = run(*endpoint, scopes);
            assert_eq!(got, *want, "{endpoint} with {scopes:?}");
            assert_eq!(err.as_deref(), *error, "{endpoint} with {scopes:?}");
        }
        let many: Vec<Option<Outcome>> = (0..8).map(|_| Some(Offline)).collect();
        let (_, err) = run(Online, &many);
        assert!(err.unwrap().ends_with("s4 (offline) and 3 more"));
    }

    #[test]
    fn one_failing_scope_says_why() {
        let mut s = st(Some(PermissionDenied));
        s.error = Some(ProbeError {
            kind: ErrorKind::Permission,
            message: "HTTP 403, PERMISSION_DENIED".into(),
            http_status: Some(403),
        });
        let c = combine(Health::Is(Online), [("orders", &s)]);
        assert_eq!(c.error.unwrap().message, "every scope is refused: orders");
        let ok = st(Some(Online));
        let c = combine(Health::Is(Online), [("orders", &s), ("items", &ok)]);
        assert_eq!(
            c.error.unwrap().message,
            "scope orders is permission_denied: HTTP 403, PERMISSION_DENIED"
        );
    }

    fn outcome() -> impl Strategy<Value = Option<Outcome>> {
        prop_oneof![
            1 => Just(None),
            8 => prop::sample::select(Outcome::ALL.to_vec()).prop_map(Some),
        ]
    }

    proptest! {
        /// A scope never turns a failing connection healthy, and never
        /// makes any connection healthier than its endpoint.
        #[test]
        fn scopes_only_ever_lower_an_online_endpoint(
            endpoint in prop::sample::select(Outcome::ALL.to_vec()),
            scopes in prop::collection::vec(outcome(), 0..6),
        ) {
            let (got, err) = run(endpoint, &scopes);
            if endpoint != Online {
                prop_assert_eq!(got, Health::Is(endpoint));
                prop_assert!(err.is_none());
            } else {
                prop_assert!(matches!(got, Health::Is(Online | Degraded | PermissionDenied)));
                prop_assert_eq!(got == Health::Is(Online), err.is_none());
            }
            if Health::Is(endpoint).is_failure() {
                prop_assert!(got.is_failure());
            }
        }
    }
}
