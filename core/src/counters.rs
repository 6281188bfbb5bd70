//! The fast-path counter CRDT: per actor, grow-only `accepted` and `retracted` counts by
//! (second, option), merged by taking the larger count of each entry.
//!
//! Displayed total = Σ accepted − Σ retracted over all actors. The split at second S sums the
//! buckets ≤ S. Every count is a lower bound of the final value of that entry, so max is the
//! right merge whoever computed it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{OptionIndex, Second};
use crate::merge::Merge;

/// One entry of the counter: how many records were accepted and later retracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CountPair {
    /// Records accepted in this bucket.
    pub accepted: u64,
    /// Of those, records retracted because a smaller record for the same vote ID exists.
    pub retracted: u64,
}

impl CountPair {
    /// Net votes this entry contributes: accepted − retracted.
    pub fn net(self) -> i64 {
        // Counts are far below i64::MAX (4 billion records per poll at most).
        self.accepted as i64 - self.retracted as i64
    }
}

/// One actor's counts by (second, option).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counters {
    entries: BTreeMap<(Second, OptionIndex), CountPair>,
}

impl Counters {
    /// Adds `count` accepted records to a bucket.
    pub fn add_accepted(&mut self, second: Second, option: OptionIndex, count: u64) {
        self.entries.entry((second, option)).or_default().accepted += count;
    }

    /// Adds one retracted record to a bucket.
    pub fn add_retracted(&mut self, second: Second, option: OptionIndex) {
        self.entries.entry((second, option)).or_default().retracted += 1;
    }

    /// Raises an entry to at least `pair`; returns whether it changed.
    pub fn raise(&mut self, second: Second, option: OptionIndex, pair: CountPair) -> bool {
        // Zero entries are never stored, so equal counters compare equal.
        let current = self.get(second, option);
        let raised = CountPair {
            accepted: current.accepted.max(pair.accepted),
            retracted: current.retracted.max(pair.retracted),
        };
        if raised == current {
            return false;
        }
        self.entries.insert((second, option), raised);
        true
    }

    /// The entry for a bucket (zero if absent).
    pub fn get(&self, second: Second, option: OptionIndex) -> CountPair {
        self.entries
            .get(&(second, option))
            .copied()
            .unwrap_or_default()
    }

    /// All entries, ordered by (second, option).
    pub fn iter(&self) -> impl Iterator<Item = (Second, OptionIndex, CountPair)> + '_ {
        self.entries.iter().map(|(&(s, o), &p)| (s, o, p))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Counters {
    /// The same counts with every option renumbered: `mapping[old]` is its new index (an
    /// injective mapping, so no two entries meet).
    pub fn remapped(&self, mapping: &[OptionIndex]) -> Self {
        let entries = self
            .entries
            .iter()
            .map(|(&(second, option), &pair)| ((second, mapping[option.get()]), pair))
            .collect();
        Self { entries }
    }
}

impl Merge for Counters {
    fn merge(&mut self, other: &Self) -> bool {
        let mut changed = false;
        for (second, option, pair) in other.iter() {
            changed |= self.raise(second, option, pair);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::check_merge_laws;
    use proptest::prelude::*;

    fn counters() -> impl Strategy<Value = Counters> {
        prop::collection::vec((0u32..4, 0u8..3, 0u64..5, 0u64..5), 0..8).prop_map(|entries| {
            let mut c = Counters::default();
            for (second, option, accepted, retracted) in entries {
                c.raise(
                    second,
                    OptionIndex(option),
                    CountPair {
                        accepted,
                        retracted,
                    },
                );
            }
            c
        })
    }

    proptest! {
        #[test]
        fn counter_merge_obeys_the_laws(a in counters(), b in counters(), c in counters()) {
            // Goal: max-per-entry is a lattice join, so push order never matters.
            check_merge_laws(&a, &b, &c).map_err(TestCaseError::fail)?;
        }
    }
}
