//! Poll definitions across the cluster: what a poll's definition is (its ID and its options in
//! order, summarised as a [`DefinitionDigest`]), which definition each node holds
//! ([`Declarations`], a replicated lattice), and which one wins.
//!
//! Records and counters name options by *index*, so they mean the same thing only between
//! replicas that hold the same definition. A replica applies a peer's records and counters of
//! a poll only when the peer's definition of that poll is its own (`crate::sync`); otherwise the
//! poll is *disputed* between them, and nothing of it is exchanged.
//!
//! Agreement needs no coordination: every node declares the definition it holds, the
//! declarations spread by gossip (relayed like records), and every node computes the same
//! winner from the same declarations: the definition held by the most nodes, a tie going to the
//! smaller digest. A node whose own definition is not the winner refuses the poll's votes
//! (`AcceptError::Disputed`) until its definition changes: an operator fixes its configuration
//! and restarts it, and its records are remapped by option name
//! (`Replica::redefine_poll`). Declarations are soft state: a node's entry is a register only
//! that node writes, versioned; a node that hears an entry for itself that is not what it holds
//! (an older life, before a restart with a new configuration) answers with a higher version,
//! as SWIM's members refute suspicion, so no clock is involved.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, OptionName, PollId};
use crate::limits::DECLARING_NODES_MAX;
use crate::merge::Merge;

/// A digest of a poll's definition: its ID and its option names, in order (not its window,
/// which merges). Two replicas with the same digest number options alike.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DefinitionDigest(pub [u8; 16]);

/// Domain separation for [`DefinitionDigest::of`]: a change of the encoding changes this.
const DEFINITION_DIGEST_CONTEXT: &str = "tally 2026 poll definition v1";

impl DefinitionDigest {
    /// The digest of a poll `id` with `options` in this order. Names hold no `\n` (they are
    /// validated to letters, digits, `-`, `_` and `.`), so joining them with it is unambiguous.
    pub fn of(id: &PollId, options: &[OptionName]) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key(DEFINITION_DIGEST_CONTEXT);
        hasher.update(id.as_str().as_bytes());
        for option in options {
            hasher.update(b"\n");
            hasher.update(option.as_str().as_bytes());
        }
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        Self(digest)
    }

    /// The first 8 hex digits, for log lines and messages.
    pub fn short(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for DefinitionDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DefinitionDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DefinitionDigest({})", self.short())
    }
}

/// One node's declaration for one poll, as it travels between peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declaration {
    /// The declaring node.
    pub node: NodeId,
    /// Bumped by that node each time it declares something else (only it writes its entry).
    pub version: u64,
    /// The definition it holds.
    pub definition: DefinitionDigest,
}

/// Which definition of one poll each node holds, as far as this replica knows.
///
/// A map of registers, node → (version, definition), merged entry by entry by the larger
/// (version, definition) pair, and bounded to the [`DECLARING_NODES_MAX`] smallest node IDs
/// (keeping the smallest of a union is itself a join, so the bound keeps the merge lawful).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Declarations {
    by_node: BTreeMap<NodeId, (u64, DefinitionDigest)>,
}

impl Declarations {
    /// Declares that `node` holds `definition`: a new entry starts at version 1, a different
    /// one replaces the entry at a higher version, the same one changes nothing. Called for
    /// this replica's own node only; it also *refutes* a stale entry about it learnt from
    /// peers. Returns whether anything changed.
    pub fn declare(&mut self, node: &NodeId, definition: DefinitionDigest) -> bool {
        let version = match self.by_node.get(node) {
            Some(&(_, held)) if held == definition => return false,
            Some(&(version, _)) => version.saturating_add(1),
            None => 1,
        };
        self.by_node.insert(node.clone(), (version, definition));
        self.truncate();
        true
    }

    /// Raises entries with what a peer declared; returns whether anything changed.
    pub fn merge_entries(&mut self, entries: &[Declaration]) -> bool {
        let mut changed = false;
        for entry in entries {
            changed |= self.raise(&entry.node, (entry.version, entry.definition));
        }
        changed |= self.truncate();
        changed
    }

    fn raise(&mut self, node: &NodeId, value: (u64, DefinitionDigest)) -> bool {
        match self.by_node.get_mut(node) {
            Some(held) if *held >= value => false,
            Some(held) => {
                *held = value;
                true
            }
            None => {
                self.by_node.insert(node.clone(), value);
                true
            }
        }
    }

    /// Drops the largest node IDs beyond the bound; returns whether any was dropped.
    fn truncate(&mut self) -> bool {
        let mut dropped = false;
        while self.by_node.len() > DECLARING_NODES_MAX {
            dropped |= self.by_node.pop_last().is_some();
        }
        dropped
    }

    /// The winning definition: the one the most nodes hold; of those tied, the smallest
    /// digest. `None` only when nothing is declared.
    pub fn winner(&self) -> Option<DefinitionDigest> {
        let mut support: BTreeMap<DefinitionDigest, usize> = BTreeMap::new();
        for (_, definition) in self.by_node.values() {
            *support.entry(*definition).or_default() += 1;
        }
        // Ascending digests, so `max_by_key` (which keeps the last maximum) would pick the
        // largest of a tie: compare on (count, reversed order) instead.
        support
            .into_iter()
            .max_by(|(a, count_a), (b, count_b)| count_a.cmp(count_b).then(b.cmp(a)))
            .map(|(definition, _)| definition)
    }

    /// What `node` is declared to hold, if anything.
    pub fn of(&self, node: &NodeId) -> Option<DefinitionDigest> {
        self.by_node.get(node).map(|&(_, definition)| definition)
    }

    /// Every entry, in node order.
    pub fn entries(&self) -> Vec<Declaration> {
        self.by_node
            .iter()
            .map(|(node, &(version, definition))| Declaration {
                node: node.clone(),
                version,
                definition,
            })
            .collect()
    }

    /// (node, definition) of every entry, in node order.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, DefinitionDigest)> {
        self.by_node
            .iter()
            .map(|(node, &(_, definition))| (node, definition))
    }

    /// Number of declaring nodes.
    pub fn len(&self) -> usize {
        self.by_node.len()
    }

    /// Whether no node has declared anything.
    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }

    /// Feeds every entry into `hasher` (for a summary of all polls' declarations).
    pub(crate) fn hash_into(&self, hasher: &mut blake3::Hasher) {
        for (node, (version, definition)) in &self.by_node {
            hasher.update(node.as_str().as_bytes());
            hasher.update(b"\n");
            hasher.update(&version.to_le_bytes());
            hasher.update(&definition.0);
        }
    }
}

impl Merge for Declarations {
    fn merge(&mut self, other: &Self) -> bool {
        let mut changed = false;
        for (node, &value) in &other.by_node {
            changed |= self.raise(node, value);
        }
        changed |= self.truncate();
        changed
    }
}

/// A digest of every poll's declarations a replica holds: two replicas with equal summaries
/// have nothing to tell each other about definitions (a pull answer then leaves them out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgreementDigest(pub [u8; 16]);

/// Domain separation for [`AgreementDigest`].
const AGREEMENT_DIGEST_CONTEXT: &str = "tally 2026 definition declarations v1";

impl AgreementDigest {
    /// The summary of `polls`' declarations, in poll order.
    pub fn of<'a>(polls: impl Iterator<Item = (&'a PollId, &'a Declarations)>) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key(AGREEMENT_DIGEST_CONTEXT);
        for (poll, declarations) in polls {
            hasher.update(poll.as_str().as_bytes());
            hasher.update(b"\n");
            declarations.hash_into(&mut hasher);
            hasher.update(b"\n\n");
        }
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        Self(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::check_merge_laws;
    use proptest::prelude::*;

    fn node(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    fn digest(byte: u8) -> DefinitionDigest {
        DefinitionDigest([byte; 16])
    }

    fn names(list: &[&str]) -> Vec<OptionName> {
        list.iter().map(|n| OptionName::new(*n).unwrap()).collect()
    }

    #[test]
    fn the_digest_covers_the_id_and_the_options_in_order() {
        // Goal: a reordered, renamed or added option, or another poll ID, is another
        // definition; the same one typed twice is the same.
        let poll = PollId::new("superbowl").unwrap();
        let base = DefinitionDigest::of(&poll, &names(&["green", "blue"]));
        assert_eq!(
            base,
            DefinitionDigest::of(&poll, &names(&["green", "blue"]))
        );
        assert_ne!(
            base,
            DefinitionDigest::of(&poll, &names(&["blue", "green"]))
        );
        assert_ne!(base, DefinitionDigest::of(&poll, &names(&["green", "blu"])));
        assert_ne!(
            base,
            DefinitionDigest::of(&poll, &names(&["green", "blue", "red"]))
        );
        let other = PollId::new("superbowl2").unwrap();
        assert_ne!(
            base,
            DefinitionDigest::of(&other, &names(&["green", "blue"]))
        );
        // The separator keeps concatenations apart.
        assert_ne!(
            DefinitionDigest::of(&poll, &names(&["ab", "c"])),
            DefinitionDigest::of(&poll, &names(&["a", "bc"]))
        );
    }

    #[test]
    fn the_definition_most_nodes_hold_wins_and_a_tie_goes_to_the_smaller_digest() {
        // Goal: the winner rule, including its tie-break, is a function of the declarations.
        let mut declarations = Declarations::default();
        assert_eq!(declarations.winner(), None);
        declarations.declare(&node("a"), digest(9));
        assert_eq!(declarations.winner(), Some(digest(9)));
        declarations.declare(&node("b"), digest(3));
        assert_eq!(
            declarations.winner(),
            Some(digest(3)),
            "1:1, smaller digest"
        );
        declarations.declare(&node("c"), digest(9));
        assert_eq!(declarations.winner(), Some(digest(9)), "2:1");
    }

    #[test]
    fn a_node_refutes_a_stale_entry_about_itself_with_a_higher_version() {
        // Goal: a node restarted with another definition overrides what peers remember of it,
        // without clocks. Method: peers hold version 5 of the old definition; the node
        // declares its new one, and the peers' merge takes it.
        let mut at_peer = Declarations::default();
        at_peer.merge_entries(&[Declaration {
            node: node("b"),
            version: 5,
            definition: digest(1),
        }]);
        let mut at_b = Declarations::default();
        at_b.declare(&node("b"), digest(2));
        at_b.merge_entries(&at_peer.entries());
        assert_eq!(
            at_b.of(&node("b")),
            Some(digest(1)),
            "the stale entry is higher"
        );
        assert!(at_b.declare(&node("b"), digest(2)), "refuted");
        assert!(!at_b.declare(&node("b"), digest(2)), "once");
        assert_eq!(at_b.entries()[0].version, 6);
        assert!(at_peer.merge(&at_b));
        assert_eq!(at_peer.of(&node("b")), Some(digest(2)));
    }

    fn declarations() -> impl Strategy<Value = Declarations> {
        prop::collection::vec((0u8..6, 0u64..4, 0u8..3), 0..8).prop_map(|entries| {
            let mut declarations = Declarations::default();
            let entries: Vec<Declaration> = entries
                .into_iter()
                .map(|(n, version, d)| Declaration {
                    node: node(&format!("n{n}")),
                    version,
                    definition: digest(d),
                })
                .collect();
            declarations.merge_entries(&entries);
            declarations
        })
    }

    proptest! {
        #[test]
        fn declarations_merge_obeys_the_laws(
            a in declarations(), b in declarations(), c in declarations()
        ) {
            // Goal: gossip in any order, any number of times, converges.
            prop_assert_eq!(check_merge_laws(&a, &b, &c), Ok(()));
        }
    }

    #[test]
    fn declarations_keep_the_smallest_node_ids_when_full() {
        // Goal: the bound keeps the merge a join: the same nodes survive whatever the order.
        let all: Vec<Declaration> = (0..DECLARING_NODES_MAX + 5)
            .map(|i| Declaration {
                node: node(&format!("n{i:05}")),
                version: 1,
                definition: digest(1),
            })
            .collect();
        let mut forward = Declarations::default();
        forward.merge_entries(&all);
        let mut backward = Declarations::default();
        let reversed: Vec<Declaration> = all.iter().rev().cloned().collect();
        for entry in reversed.chunks(7) {
            backward.merge_entries(entry);
        }
        assert_eq!(forward, backward);
        assert_eq!(forward.len(), DECLARING_NODES_MAX);
        assert_eq!(forward.of(&node("n00000")), Some(digest(1)));
    }
}
