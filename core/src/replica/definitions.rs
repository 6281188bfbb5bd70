//! A replica's side of the cluster's agreement on poll definitions (see
//! `crate::definition`): its own definition of each poll, what it knows of the other nodes',
//! whether it lost (and so refuses the poll's local votes), and redefining a poll by option
//! name. A child of `replica` so that it reads the replica's state directly.

use super::{PollError, PollReplica, Replica};
use crate::definition::{AgreementDigest, Declaration, Declarations, DefinitionDigest};
use crate::ids::{NodeId, OptionName, PollId};
use crate::limits::FOREIGN_DEFINITIONS_PER_POLL_MAX;
use crate::merge::Merge;
use crate::poll::PollSpec;

/// Where this replica's definition of a poll stands in the cluster's agreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// This replica's definition.
    pub own: DefinitionDigest,
    /// The winning definition (the one most nodes hold).
    pub winner: DefinitionDigest,
    /// Nodes declaring another definition than this replica's, with theirs, in node order.
    pub others: Vec<(NodeId, DefinitionDigest)>,
}

impl Standing {
    /// Whether this replica's definition lost: it refuses the poll's votes.
    pub fn lost(&self) -> bool {
        self.own != self.winner
    }
}

impl PollReplica {
    /// Recomputes whether local votes are refused, after the declarations changed.
    fn refresh_standing(&mut self) {
        self.refusing = self.declarations.winner() != Some(self.definition);
    }

    /// Remembers the options of another definition of this poll (the first few only).
    fn note_foreign(&mut self, spec: &PollSpec) {
        let definition = spec.definition();
        if definition != self.definition && self.foreign.len() < FOREIGN_DEFINITIONS_PER_POLL_MAX {
            self.foreign
                .entry(definition)
                .or_insert_with(|| spec.options().to_vec());
        }
    }
}

impl Replica {
    /// Gives a poll this replica holds the definition `spec`, whose options must include
    /// every option the poll has now (reordered, or with options added): every record, counter
    /// and vote in flight keeps the option *name* it was cast for, under its new index. The
    /// windows merge. This node then declares the new definition (see [`Declarations`]). A poll
    /// not held is added; an unchanged definition only merges the window. Returns whether
    /// anything changed. O(records held): a start-up step, not for the vote path.
    pub fn redefine_poll(&mut self, spec: PollSpec) -> Result<bool, PollError> {
        let Some(existing) = self.polls.get_mut(spec.id()) else {
            return self.upsert_poll(spec);
        };
        if existing.spec.options() == spec.options() {
            return Ok(existing.spec.window.merge(&spec.window));
        }
        let mut mapping = Vec::with_capacity(existing.spec.options().len());
        let mut missing = Vec::new();
        for name in existing.spec.options() {
            match spec.option_index(name.as_str()) {
                Some(index) => mapping.push(index),
                None => missing.push(name.to_string()),
            }
        }
        if !missing.is_empty() {
            return Err(PollError::OptionsRemoved {
                poll: spec.id().clone(),
                missing,
            });
        }
        existing.state.remap_options(&mapping, spec.options().len());
        for (_, option, _) in &mut existing.in_flight.records {
            *option = mapping[option.get()];
        }
        let old = std::mem::replace(&mut existing.spec, spec);
        existing.spec.window.merge(&old.window);
        existing.definition = existing.spec.definition();
        existing.foreign.remove(&existing.definition);
        existing.note_foreign(&old);
        existing
            .declarations
            .declare(&self.actor.node, existing.definition);
        existing.refresh_standing();
        Ok(true)
    }

    /// What this replica knows of which node holds which definition of `poll`.
    pub fn declarations(&self, poll: &PollId) -> Option<&Declarations> {
        self.polls.get(poll).map(|p| &p.declarations)
    }

    /// Merges a peer's declarations for `poll` (a poll not held is ignored), then refutes any
    /// stale entry about this node. Returns whether anything changed.
    pub fn merge_declarations(&mut self, poll: &PollId, entries: &[Declaration]) -> bool {
        let Some(replica) = self.polls.get_mut(poll) else {
            return false;
        };
        let mut changed = replica.declarations.merge_entries(entries);
        changed |= replica
            .declarations
            .declare(&self.actor.node, replica.definition);
        replica.refresh_standing();
        changed
    }

    /// Where this replica's definition of `poll` stands in the cluster's agreement.
    pub fn standing(&self, poll: &PollId) -> Option<Standing> {
        let replica = self.polls.get(poll)?;
        let own = replica.definition;
        Some(Standing {
            own,
            winner: replica.declarations.winner().unwrap_or(own),
            others: replica
                .declarations
                .iter()
                .filter(|(_, definition)| *definition != own)
                .map(|(node, definition)| (node.clone(), definition))
                .collect(),
        })
    }

    /// The options of `definition` of `poll`, if it is this replica's or one seen from a peer.
    pub fn definition_options(
        &self,
        poll: &PollId,
        definition: DefinitionDigest,
    ) -> Option<&[OptionName]> {
        let replica = self.polls.get(poll)?;
        if replica.definition == definition {
            return Some(replica.spec.options());
        }
        replica.foreign.get(&definition).map(Vec::as_slice)
    }

    /// Remembers the options of a peer's other definition of a poll held here, to name it.
    pub(crate) fn note_foreign_definition(&mut self, spec: &PollSpec) {
        if let Some(replica) = self.polls.get_mut(spec.id()) {
            replica.note_foreign(spec);
        }
    }

    /// This replica's definition digest of `poll`.
    pub fn definition(&self, poll: &PollId) -> Option<DefinitionDigest> {
        self.polls.get(poll).map(|p| p.definition)
    }

    /// A summary of every held poll's declarations (see [`AgreementDigest`]).
    pub fn agreement_digest(&self) -> AgreementDigest {
        AgreementDigest::of(self.polls.iter().map(|(id, p)| (id, &p.declarations)))
    }
}
