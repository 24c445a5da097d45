//! One page per outage. A connection's paging memory is the severity its
//! open incident was last triggered with (none when there is no incident):
//!
//! - a health with a severity opens an incident (trigger) when none is
//!   open, and raises it (a new trigger, same incident) when the severity
//!   is higher than the open one; a lower or equal one says nothing;
//! - `online` resolves the open incident, with the severity it carries (so
//!   Alertmanager sees the same labels it fired with);
//! - anything else (`rate_limited`) says nothing and leaves it open.

use super::{Priority, Severity};
use crate::model::{Health, Outcome};

/// What a paging sink does with a status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageAction {
    /// Open the connection's incident, or raise it from `replaces`.
    Trigger {
        severity: Severity,
        replaces: Option<Severity>,
    },
    /// Close it; `severity` is the one it was last triggered with.
    Resolve { severity: Severity },
}

impl PageAction {
    /// The action for a change to `health`, updating the memory `paged`.
    pub fn next(paged: &mut Option<Severity>, health: Health) -> Option<PageAction> {
        match Severity::of(health) {
            Some(s) if paged.is_none_or(|p| s > p) => {
                let replaces = paged.replace(s);
                Some(PageAction::Trigger {
                    severity: s,
                    replaces,
                })
            }
            Some(_) => None,
            None if health == Health::Is(Outcome::Online) => paged
                .take()
                .map(|severity| PageAction::Resolve { severity }),
            None => None,
        }
    }

    pub fn priority(self) -> Priority {
        match self {
            PageAction::Trigger { .. } => Priority::Fresh,
            PageAction::Resolve { .. } => Priority::Resolve,
        }
    }

    /// Stored with the delivery: `trigger:critical`,
    /// `trigger:critical:warning` (raised from warning), `resolve:critical`.
    pub fn to_db(self) -> String {
        match self {
            PageAction::Trigger {
                severity,
                replaces: None,
            } => format!("trigger:{}", severity.as_str()),
            PageAction::Trigger {
                severity,
                replaces: Some(r),
            } => format!("trigger:{}:{}", severity.as_str(), r.as_str()),
            PageAction::Resolve { severity } => format!("resolve:{}", severity.as_str()),
        }
    }

    pub fn from_db(s: &str) -> Option<PageAction> {
        let mut parts = s.split(':');
        let verb = parts.next()?;
        let severity = Severity::parse(parts.next()?)?;
        let extra = parts.next().map(Severity::parse);
        match (verb, extra) {
            ("trigger", None) => Some(PageAction::Trigger {
                severity,
                replaces: None,
            }),
            ("trigger", Some(Some(r))) => Some(PageAction::Trigger {
                severity,
                replaces: Some(r),
            }),
            ("resolve", None) => Some(PageAction::Resolve { severity }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    fn h(o: Outcome) -> Health {
        Health::Is(o)
    }

    #[test]
    fn trigger_raise_and_resolve() {
        let mut paged = None;
        assert_eq!(
            PageAction::next(&mut paged, h(Degraded)),
            Some(PageAction::Trigger {
                severity: Severity::Warning,
                replaces: None
            })
        );
        assert_eq!(PageAction::next(&mut paged, h(Degraded)), None);
        assert_eq!(
            PageAction::next(&mut paged, h(Offline)),
            Some(PageAction::Trigger {
                severity: Severity::Critical,
                replaces: Some(Severity::Warning)
            })
        );
        assert_eq!(PageAction::next(&mut paged, h(Unreachable)), None);
        assert_eq!(PageAction::next(&mut paged, h(AuthRequired)), None);
        assert_eq!(PageAction::next(&mut paged, h(RateLimited)), None);
        assert_eq!(paged, Some(Severity::Critical));
        assert_eq!(
            PageAction::next(&mut paged, h(Online)),
            Some(PageAction::Resolve {
                severity: Severity::Critical
            })
        );
        assert_eq!(paged, None);
        assert_eq!(PageAction::next(&mut paged, h(Online)), None);
        assert_eq!(PageAction::next(&mut paged, h(RateLimited)), None);
        assert_eq!(PageAction::next(&mut paged, Health::Unknown), None);
    }

    #[test]
    fn stored_form_round_trips() {
        for a in [
            PageAction::Trigger {
                severity: Severity::Error,
                replaces: None,
            },
            PageAction::Trigger {
                severity: Severity::Critical,
                replaces: Some(Severity::Warning),
            },
            PageAction::Resolve {
                severity: Severity::Warning,
            },
        ] {
            assert_eq!(PageAction::from_db(&a.to_db()), Some(a));
        }
        for bad in [
            "",
            "trigger",
            "trigger:loud",
            "resolve:critical:error",
            "x:error",
        ] {
            assert_eq!(PageAction::from_db(bad), None, "{bad}");
        }
    }
}
