//! Version vectors: for each actor, the highest contiguous seq held.
//!
//! Two replicas compare vectors to find "the records you are missing": for every actor where
//! mine is ahead of yours, the range `yours + 1 ..= mine`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{ActorId, Seq};
use crate::merge::Merge;

/// Actor → highest contiguous seq held (absent means 0).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<ActorId, Seq>);

impl VersionVector {
    /// Highest contiguous seq held for `actor`.
    pub fn get(&self, actor: &ActorId) -> Seq {
        self.0.get(actor).copied().unwrap_or(0)
    }

    /// Raises `actor`'s entry to at least `seq`; returns whether it changed.
    pub fn raise(&mut self, actor: &ActorId, seq: Seq) -> bool {
        if seq <= self.get(actor) {
            return false;
        }
        self.0.insert(actor.clone(), seq);
        true
    }

    /// Entries in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (&ActorId, Seq)> {
        self.0.iter().map(|(a, &s)| (a, s))
    }

    /// Number of actors with an entry.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no actor has an entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Total records covered: the sum of all entries.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Whether every entry of `other` is covered by `self`.
    pub fn covers(&self, other: &VersionVector) -> bool {
        other.iter().all(|(actor, seq)| self.get(actor) >= seq)
    }
}

impl Merge for VersionVector {
    fn merge(&mut self, other: &Self) -> bool {
        let mut changed = false;
        for (actor, seq) in other.iter() {
            changed |= self.raise(actor, seq);
        }
        changed
    }
}

impl FromIterator<(ActorId, Seq)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (ActorId, Seq)>>(iter: I) -> Self {
        let mut vector = Self::default();
        for (actor, seq) in iter {
            vector.raise(&actor, seq);
        }
        vector
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
    use crate::merge::check_merge_laws;
    use proptest::prelude::*;

    fn vectors() -> impl Strategy<Value = VersionVector> {
        prop::collection::vec((0u64..3, 0u64..5), 0..4).prop_map(|entries| {
            entries
                .into_iter()
                .map(|(incarnation, seq)| {
                    let node = NodeId::new("n").unwrap();
                    (ActorId { node, incarnation }, seq)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn version_vector_merge_obeys_the_laws(a in vectors(), b in vectors(), c in vectors()) {
            check_merge_laws(&a, &b, &c).map_err(TestCaseError::fail)?;
        }
    }
}
