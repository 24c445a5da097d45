//! What one source's answers do to its set (pure): the last good set stays
//! through failures and garbage; an answer that would retire more than half
//! of the set waits until [`AGREE`] answers in a row agree.

use super::item::Item;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Answers in a row that must agree before a large shrink is applied.
pub const AGREE: u32 = 3;

/// A shrink waiting for agreement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub items: Vec<Item>,
    /// Answers in a row that gave this set.
    pub agree: u32,
    /// How many of the current set it would retire.
    pub retiring: usize,
}

/// One source's memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    /// The last good set (`None` until the first good answer or a stored one).
    pub set: Option<Vec<Item>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
    /// Since when the source has been failing (Unix ms), with the last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<(i64, String)>,
}

/// What an answer did.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// The set changed: these ids came, these left (items whose other
    /// fields changed are in `changed`).
    Applied {
        added: Vec<String>,
        retired: Vec<String>,
        changed: usize,
    },
    Unchanged,
    /// A large shrink is waiting: `agree` of [`AGREE`] answers so far.
    Held {
        agree: u32,
        retiring: usize,
        of: usize,
    },
    /// The source failed or answered garbage; `first` is true for the
    /// first failure of a failing period (the one that raises
    /// `system.error`).
    Failed {
        first: bool,
    },
}

impl Tracker {
    /// Offers an answer. Items are compared by id, whatever order the
    /// source lists them in.
    pub fn offer(&mut self, answer: Result<Vec<Item>, String>, now_ms: i64) -> Verdict {
        let mut items = match answer {
            Err(why) => {
                let first = self.failing.is_none();
                let since = self.failing.as_ref().map_or(now_ms, |f| f.0);
                self.failing = Some((since, why));
                return Verdict::Failed { first };
            }
            Ok(items) => items,
        };
        items.sort_by(|a, b| a.id.cmp(&b.id));
        self.failing = None;
        let Some(old) = &self.set else {
            let added = items.iter().map(|i| i.id.clone()).collect();
            self.set = Some(items);
            self.held = None;
            return Verdict::Applied {
                added,
                retired: Vec::new(),
                changed: 0,
            };
        };
        let new_ids: HashSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
        let old_ids: HashSet<&str> = old.iter().map(|i| i.id.as_str()).collect();
        let retired: Vec<String> = old
            .iter()
            .filter(|i| !new_ids.contains(i.id.as_str()))
            .map(|i| i.id.clone())
            .collect();
        if retired.len() * 2 > old.len() {
            let agree = match &self.held {
                Some(h) if same_ids(&h.items, &items) => h.agree + 1,
                _ => 1,
            };
            if agree < AGREE {
                let of = old.len();
                self.held = Some(Held {
                    items,
                    agree,
                    retiring: retired.len(),
                });
                return Verdict::Held {
                    agree,
                    retiring: retired.len(),
                    of,
                };
            }
        }
        self.held = None;
        let added: Vec<String> = items
            .iter()
            .filter(|i| !old_ids.contains(i.id.as_str()))
            .map(|i| i.id.clone())
            .collect();
        let changed = items
            .iter()
            .filter(|i| old.iter().any(|o| o.id == i.id && o != *i))
            .count();
        if added.is_empty() && retired.is_empty() && changed == 0 && *old == items {
            return Verdict::Unchanged;
        }
        self.set = Some(items);
        Verdict::Applied {
            added,
            retired,
            changed,
        }
    }
}

fn same_ids(a: &[Item], b: &[Item]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.id == y.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(ids: &[&str]) -> Vec<Item> {
        ids.iter()
            .map(|id| Item {
                id: id.to_string(),
                name: None,
                target: None,
                labels: Default::default(),
            })
            .collect()
    }

    #[test]
    fn failures_keep_the_set_and_raise_once_per_period() {
        let mut t = Tracker::default();
        assert!(matches!(
            t.offer(Ok(items(&["a", "b"])), 0),
            Verdict::Applied { .. }
        ));
        assert_eq!(
            t.offer(Err("HTTP 500".into()), 1),
            Verdict::Failed { first: true }
        );
        assert_eq!(
            t.offer(Err("garbage".into()), 2),
            Verdict::Failed { first: false }
        );
        assert_eq!(t.failing, Some((1, "garbage".to_string())));
        assert_eq!(t.set, Some(items(&["a", "b"])));
        assert_eq!(t.offer(Ok(items(&["a", "b"])), 3), Verdict::Unchanged);
        assert_eq!(t.failing, None);
        assert_eq!(
            t.offer(Err("again".into()), 4),
            Verdict::Failed { first: true }
        );
    }

    #[test]
    fn a_large_shrink_waits_for_three_answers_in_a_row() {
        let mut t = Tracker::default();
        t.offer(Ok(items(&["a", "b", "c", "d"])), 0);
        // Half is not more than half: applied at once.
        assert_eq!(
            t.offer(Ok(items(&["a", "b"])), 1),
            Verdict::Applied {
                added: vec![],
                retired: vec!["c".into(), "d".into()],
                changed: 0
            }
        );
        assert_eq!(
            t.offer(Ok(items(&[])), 2),
            Verdict::Held {
                agree: 1,
                retiring: 2,
                of: 2
            }
        );
        assert_eq!(t.offer(Err("x".into()), 3), Verdict::Failed { first: true });
        assert_eq!(
            t.offer(Ok(items(&[])), 4),
            Verdict::Held {
                agree: 2,
                retiring: 2,
                of: 2
            }
        );
        // A different answer starts the count again.
        assert_eq!(
            t.offer(Ok(items(&["z"])), 5),
            Verdict::Held {
                agree: 1,
                retiring: 2,
                of: 2
            }
        );
        t.offer(Ok(items(&[])), 6);
        t.offer(Ok(items(&[])), 7);
        assert_eq!(t.set, Some(items(&["a", "b"])));
        assert_eq!(
            t.offer(Ok(items(&[])), 8),
            Verdict::Applied {
                added: vec![],
                retired: vec!["a".into(), "b".into()],
                changed: 0
            }
        );
        assert_eq!(t.set, Some(items(&[])));
        assert_eq!(t.held, None);
        // Growth from empty is applied at once.
        assert!(matches!(
            t.offer(Ok(items(&["n"])), 9),
            Verdict::Applied { .. }
        ));
    }

    #[test]
    fn the_same_ids_in_another_order_are_no_change() {
        let mut t = Tracker::default();
        t.offer(Ok(items(&["b", "a", "c"])), 0);
        assert_eq!(t.offer(Ok(items(&["c", "b", "a"])), 1), Verdict::Unchanged);
        // A held shrink counts answers by their ids, in any order.
        t.offer(Ok(items(&["a", "b", "c", "d", "e", "f"])), 2);
        assert!(matches!(
            t.offer(Ok(items(&["b", "a"])), 3),
            Verdict::Held { agree: 1, .. }
        ));
        assert!(matches!(
            t.offer(Ok(items(&["a", "b"])), 4),
            Verdict::Held { agree: 2, .. }
        ));
        assert!(matches!(
            t.offer(Ok(items(&["b", "a"])), 5),
            Verdict::Applied { .. }
        ));
    }

    #[test]
    fn a_changed_name_is_a_change() {
        let mut t = Tracker::default();
        t.offer(Ok(items(&["a"])), 0);
        let mut renamed = items(&["a"]);
        renamed[0].name = Some("A".into());
        assert_eq!(
            t.offer(Ok(renamed), 1),
            Verdict::Applied {
                added: vec![],
                retired: vec![],
                changed: 1
            }
        );
    }
}
