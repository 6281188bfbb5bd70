//! The polls an edge takes votes for, learnt from its nodes' poll lists (`GET /v1/polls`,
//! read with every readiness probe), so a vote for an unknown poll or option is refused at
//! the edge with the node's code and never sent on.
//!
//! Each poll gets a slot (a small number) the first time any node lists it, and keeps it:
//! handlers hand the dispatcher slots, not names. Its options keep the order of the first
//! list that named it (the *edge's order*); each node's own order is kept beside it, so a
//! batch to a node carries that node's option indexes even if two nodes list the options
//! differently (a mismatched definition, which the nodes themselves then dispute).
//!
//! Bounded: at most [`tally_core::limits::POLLS_MAX`] polls, as on a node.

use std::collections::BTreeMap;
use std::sync::Arc;

use tally_client::api::PollSummary;
use tally_core::PollId;
use tally_core::limits::POLLS_MAX;

/// A poll's slot: its position in the edge's poll table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PollSlot(pub u32);

/// One poll as the handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CataloguePoll {
    /// Its slot.
    pub slot: PollSlot,
    /// Its name.
    pub id: PollId,
    /// Its options, in the edge's order (an option index in a vote order is a position here).
    pub options: Vec<String>,
}

/// Every poll the edge knows, by name: what handlers read (published whole when it changes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogue {
    /// The polls, by name.
    pub polls: BTreeMap<String, Arc<CataloguePoll>>,
    /// Whether any node's poll list has been read yet (before that, the edge is not ready).
    pub learnt: bool,
}

/// The catalogue with, per node, where each of the edge's options sits in that node's list:
/// the dispatcher's (it alone changes it).
#[derive(Debug, Default)]
pub struct PollBook {
    catalogue: Catalogue,
    /// By slot: the poll's name.
    names: Vec<PollId>,
    /// Per node, by slot: the node's index of each option in the edge's order (`None`: the
    /// node lacks that option); no entry: the node does not list the poll.
    per_node: Vec<BTreeMap<PollSlot, Vec<Option<u8>>>>,
}

impl PollBook {
    /// An empty book for `nodes` nodes.
    pub fn new(nodes: usize) -> Self {
        Self {
            per_node: vec![BTreeMap::new(); nodes],
            ..Self::default()
        }
    }

    /// The catalogue as handlers should see it.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// Takes in node `node`'s poll list; returns whether the catalogue changed (a new poll, or
    /// the first list read). Polls past [`POLLS_MAX`] and unusable names are skipped (logged).
    pub fn learn(&mut self, node: usize, polls: &[PollSummary]) -> bool {
        let mut changed = !self.catalogue.learnt;
        self.catalogue.learnt = true;
        for summary in polls {
            let Ok(id) = PollId::new(summary.id.clone()) else {
                tracing::warn!(poll = %summary.id, "a node lists a poll whose name is unusable");
                continue;
            };
            let slot = match self.catalogue.polls.get(id.as_str()) {
                Some(known) => known.slot,
                None if self.names.len() >= POLLS_MAX => {
                    tracing::warn!(poll = %id, "more polls than an edge keeps; not taking its votes");
                    continue;
                }
                None => {
                    let slot = PollSlot(self.names.len() as u32);
                    self.names.push(id.clone());
                    let poll = CataloguePoll {
                        slot,
                        id: id.clone(),
                        options: summary.options.clone(),
                    };
                    self.catalogue
                        .polls
                        .insert(id.as_str().to_owned(), Arc::new(poll));
                    changed = true;
                    slot
                }
            };
            let ours = &self.catalogue.polls[id.as_str()].options;
            let positions = ours
                .iter()
                .map(|name| {
                    let position = summary.options.iter().position(|o| o == name)?;
                    u8::try_from(position).ok()
                })
                .collect();
            if let Some(map) = self.per_node.get_mut(node) {
                map.insert(slot, positions);
            }
        }
        changed
    }

    /// Whether node `node` lists the poll in `slot`.
    pub fn lists(&self, node: usize, slot: PollSlot) -> bool {
        self.per_node
            .get(node)
            .is_some_and(|map| map.contains_key(&slot))
    }

    /// Node `node`'s index of the edge's option `option` of `slot` (`None`: it lacks it).
    pub fn option_at(&self, node: usize, slot: PollSlot, option: u8) -> Option<u8> {
        self.per_node
            .get(node)?
            .get(&slot)?
            .get(usize::from(option))
            .copied()
            .flatten()
    }

    /// Node `node` said it has no such poll: it is not sent that poll's votes until its list
    /// names the poll again.
    pub fn forget(&mut self, node: usize, slot: PollSlot) {
        if let Some(map) = self.per_node.get_mut(node) {
            map.remove(&slot);
        }
    }

    /// The name of the poll in `slot`.
    pub fn name(&self, slot: PollSlot) -> Option<&PollId> {
        self.names.get(slot.0 as usize)
    }
}

#[cfg(test)]
mod tests {
    //! Goal: slots are stable, each node's option order is kept, and unknown polls are not
    //! listed. Method: two nodes listing one poll in opposite orders.

    use super::*;

    fn summary(id: &str, options: &[&str]) -> PollSummary {
        PollSummary {
            id: id.into(),
            options: options.iter().map(|o| (*o).to_owned()).collect(),
            status: "open".into(),
            opens_at_ms: None,
            closes_at_ms: None,
        }
    }

    #[test]
    fn each_node_gets_its_own_option_indexes_and_slots_stay_put() {
        let mut book = PollBook::new(2);
        assert!(book.learn(0, &[summary("superbowl", &["green", "blue"])]));
        assert!(!book.learn(0, &[summary("superbowl", &["green", "blue"])]));
        assert!(!book.learn(1, &[summary("superbowl", &["blue", "green"])]));
        let poll = book.catalogue().polls["superbowl"].clone();
        assert_eq!(poll.options, ["green", "blue"]);
        assert_eq!(book.option_at(0, poll.slot, 0), Some(0));
        assert_eq!(
            book.option_at(1, poll.slot, 0),
            Some(1),
            "node 1 lists green second"
        );
        assert!(book.learn(1, &[summary("halftime", &["a", "b"])]));
        assert_eq!(book.catalogue().polls["superbowl"].slot, poll.slot);
        assert!(!book.lists(0, book.catalogue().polls["halftime"].slot));
        book.forget(1, poll.slot);
        assert!(!book.lists(1, poll.slot));
        assert_eq!(book.name(poll.slot).map(PollId::as_str), Some("superbowl"));
    }
}
