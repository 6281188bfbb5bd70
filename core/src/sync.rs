//! One pull round of peer sync as values: what a puller asks ([`Replica::pull_request`]), what
//! the answering replica sends back ([`Replica::answer_pull`]) and what the puller merges
//! ([`Replica::apply_answer`]). The node's peer sessions carry these over QUIC, frame by frame
//! ([`crate::wire`]); the engine applies an answer in one step.
//!
//! The rule that keeps every vote under its option: records and counters of a poll travel,
//! and are applied, only between replicas that hold the same definition of it (its ID and its
//! options in order, [`DefinitionDigest`]). The answerer leaves out the records, counters and
//! vector of every poll the puller defines otherwise; the puller applies an answer's records
//! and counters of a poll only if the same answer carries the answerer's definition of it and
//! that definition is the puller's own (or the puller takes the poll from it, when it is the
//! winning definition). Every replica therefore holds only records made under its own
//! definition, so records relayed through any chain of replicas keep their meaning. Where two
//! definitions meet, each side's declarations ([`crate::Declarations`]) record it, and the
//! losing side refuses the poll's votes.

use std::collections::{BTreeMap, BTreeSet};

use crate::definition::{AgreementDigest, Declaration, Declarations, DefinitionDigest};
use crate::ids::{ActorId, PollId};
use crate::limits::{COUNTER_ENTRIES_PER_MESSAGE_MAX, RESERVED_VOTE_IDS_MAX};
use crate::poll::PollSpec;
use crate::poll_state::Applied;
use crate::record_batch::RecordBatch;
use crate::replica::{Replica, ReplicaError};
use crate::version_vector::VersionVector;
use crate::wire::{ActorCounters, CounterState};

/// What a puller says of one poll it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollRequest {
    /// The poll.
    pub poll: PollId,
    /// The puller's definition of it.
    pub definition: DefinitionDigest,
    /// What it holds of it.
    pub vector: VersionVector,
}

/// A pull: the puller's polls, and a summary of what it knows of definitions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullRequest {
    /// Its summary of every poll's declarations: when it equals the answerer's, the answer
    /// leaves the declarations out.
    pub agreement: AgreementDigest,
    /// Every poll it holds.
    pub polls: Vec<PollRequest>,
}

/// What a puller is sent: every poll's definition and index reservation, the declarations
/// (when the puller's summary differs), the records it lacks of every poll it defines alike or does not hold
/// (at most the requested number), those polls' counters and the answerer's vectors of them.
#[derive(Debug, Clone, Default)]
pub struct PullAnswer {
    /// The answerer's definition and window of every poll it holds.
    pub polls: Vec<PollSpec>,
    /// Every held poll's declarations, if the summaries differ.
    pub declarations: Vec<(PollId, Vec<Declaration>)>,
    /// Records the puller lacks, oldest first per actor.
    pub batches: Vec<RecordBatch>,
    /// Counter states of the actors the puller lags on.
    pub counters: Vec<CounterState>,
    /// The answerer's vectors of the polls it sent records of, so the puller can tell how
    /// far behind it is.
    pub vectors: Vec<(PollId, VersionVector)>,
    /// The answerer's reservations of the polls it shares with the puller (protocol 3;
    /// [`crate::wire::PeerMessage::Reserve`]).
    pub reservations: Vec<(PollId, u64)>,
    /// Whether the record budget cut the answer short (ask again at once).
    pub truncated: bool,
}

/// A part of an answer that was not merged, and why. Nothing of a refused part was merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRefusal {
    /// A stable label for metrics and for logging each kind once: `own_records`, `records`,
    /// `counters`.
    pub cause: &'static str,
    /// What happened, for people.
    pub message: String,
}

/// What applying an answer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerApplied {
    /// Records newly held.
    pub records_added: usize,
    /// Whether any counter rose.
    pub counters_changed: bool,
    /// Polls taken from the answer or whose window changed: their definitions belong in the
    /// caller's log.
    pub polls_changed: Vec<PollId>,
    /// Batches that joined the state (or wait for a gap): they belong in the caller's log.
    pub batches_to_log: Vec<RecordBatch>,
    /// Polls whose definitions the two replicas share: the answer's vectors of these say how
    /// far behind the puller is.
    pub shared: BTreeSet<PollId>,
    /// Whether any poll's declarations changed (a dispute may have begun or ended).
    pub declarations_changed: bool,
    /// Reservations of shared polls larger than this replica's own (at most
    /// [`crate::limits::RESERVED_VOTE_IDS_MAX`]): to take and to log.
    pub reservations: Vec<(PollId, u64)>,
    /// Parts refused.
    pub refused: Vec<AnswerRefusal>,
}

impl AnswerApplied {
    /// Notes what applying one of the answer's batches (of a poll in [`Self::shared`]) did.
    pub fn note_records(&mut self, batch: RecordBatch, result: Result<Applied, ReplicaError>) {
        match result {
            Ok(result) => {
                self.records_added += result.added;
                // Log what joined the state, including batches held back for a gap: the log
                // replays through the same rules.
                if result.added > 0 || result.held_back > 0 {
                    self.batches_to_log.push(batch);
                }
            }
            Err(error) => self.refused.push(AnswerRefusal {
                cause: match error {
                    ReplicaError::ForeignOwnRecords { .. } => "own_records",
                    _ => "records",
                },
                message: error.to_string(),
            }),
        }
    }
}

impl Replica {
    /// What this replica asks a peer for.
    pub fn pull_request(&self) -> PullRequest {
        PullRequest {
            agreement: self.agreement_digest(),
            polls: self
                .poll_specs()
                .filter_map(|spec| {
                    Some(PollRequest {
                        poll: spec.id().clone(),
                        definition: self.definition(spec.id())?,
                        vector: self.version_vector(spec.id())?,
                    })
                })
                .collect(),
        }
    }

    /// The answer to `request` (see [`PullAnswer`]), with at most `records_max` records.
    pub fn answer_pull(&self, request: &PullRequest, records_max: usize) -> PullAnswer {
        let mut answer = PullAnswer::default();
        if request.agreement != self.agreement_digest() {
            answer.declarations = self
                .poll_specs()
                .filter_map(|spec| {
                    let entries = self.declarations(spec.id())?.entries();
                    Some((spec.id().clone(), entries))
                })
                .collect();
        }
        let empty = VersionVector::default();
        let mut budget = records_max;
        for spec in self.poll_specs() {
            answer.polls.push(spec.clone());
            let asked = request.polls.iter().find(|p| &p.poll == spec.id());
            let other = asked.is_some_and(|p| Some(p.definition) != self.definition(spec.id()));
            if other && !self.merge_across_definitions {
                continue;
            }
            let reserved = self.state(spec.id()).map_or(0, |s| s.reserved_vote_ids());
            if reserved > 0 {
                answer.reservations.push((spec.id().clone(), reserved));
            }
            let theirs = asked.map_or(&empty, |p| &p.vector);
            let batches = self.missing_records(spec.id(), theirs, budget);
            let sent: usize = batches.iter().map(RecordBatch::len).sum();
            budget -= sent.min(budget);
            answer.batches.extend(batches);
            if let (Some(counters), Some(state)) =
                (self.counter_state(spec.id()), self.state(spec.id()))
            {
                let lagging = |actor: &ActorId| {
                    let ours = state.held(actor);
                    ours == 0 || theirs.get(actor) < ours
                };
                answer
                    .counters
                    .extend(counters_for_lagging(counters, lagging));
            }
            if let Some(vector) = self.version_vector(spec.id()) {
                answer.vectors.push((spec.id().clone(), vector));
            }
        }
        answer.truncated = budget == 0;
        answer
    }

    /// Merges a peer's answer (see the module doc): declarations, then definitions and
    /// windows, then the records and counters of the polls both define alike. A refused part
    /// is reported and merges nothing.
    ///
    /// The same in three steps, for a caller that treats records its own way (the node defers
    /// them on a low disk and moves to a new incarnation when a peer holds more of its own
    /// actor than it does): [`Self::apply_answer_definitions`], then each batch of a poll in
    /// [`AnswerApplied::shared`] through [`Self::apply_records`] and
    /// [`AnswerApplied::note_records`], then [`Self::apply_answer_counters`].
    pub fn apply_answer(&mut self, mut answer: PullAnswer) -> AnswerApplied {
        let mut applied = self.apply_answer_definitions(&mut answer);
        for batch in answer.batches {
            // Records of a poll defined otherwise (or not taken) are not ours to apply; a
            // correct answerer leaves them out, but the answer's own definitions decide.
            if applied.shared.contains(batch.poll()) {
                let result = self.apply_records(&batch);
                applied.note_records(batch, result);
            }
        }
        self.apply_answer_counters(&answer.counters, &mut applied);
        for (poll, vote_ids) in &applied.reservations {
            let vote_ids = usize::try_from(*vote_ids).unwrap_or(usize::MAX);
            let _ = self.reserve_vote_ids_gradually(poll, vote_ids);
        }
        applied
    }

    /// The first step of [`Self::apply_answer`]: an answer's declarations, then its
    /// definitions and windows (taken out of `answer`). The result's `shared` names the polls
    /// whose records and counters of this answer may be applied; nothing else may be.
    pub fn apply_answer_definitions(&mut self, answer: &mut PullAnswer) -> AnswerApplied {
        let mut applied = AnswerApplied::default();
        let mut not_held: BTreeMap<PollId, Vec<Declaration>> = BTreeMap::new();
        for (poll, entries) in std::mem::take(&mut answer.declarations) {
            if self.poll_spec(&poll).is_some() {
                applied.declarations_changed |= self.merge_declarations(&poll, &entries);
            } else {
                not_held.insert(poll, entries);
            }
        }
        for spec in std::mem::take(&mut answer.polls) {
            self.apply_definition(spec, &not_held, &mut applied);
        }
        for (poll, vote_ids) in std::mem::take(&mut answer.reservations) {
            let vote_ids = vote_ids.min(RESERVED_VOTE_IDS_MAX as u64);
            let ours = self.state(&poll).map_or(0, |s| s.reserved_vote_ids());
            if applied.shared.contains(&poll) && vote_ids > ours {
                applied.reservations.push((poll, vote_ids));
            }
        }
        applied
    }

    /// The last step of [`Self::apply_answer`]: the answer's counters of the polls in
    /// `applied.shared`.
    pub fn apply_answer_counters(
        &mut self,
        counters: &[CounterState],
        applied: &mut AnswerApplied,
    ) {
        for state in counters {
            if !applied.shared.contains(&state.poll) {
                continue;
            }
            match self.merge_counters(state) {
                Ok(changed) => applied.counters_changed |= changed,
                Err(error) => applied.refused.push(AnswerRefusal {
                    cause: "counters",
                    message: error.to_string(),
                }),
            }
        }
    }

    /// One definition of an answer: the same as ours (merge its window), another (remember
    /// it), or a poll not held (take it if it is the winning definition).
    fn apply_definition(
        &mut self,
        spec: PollSpec,
        not_held: &BTreeMap<PollId, Vec<Declaration>>,
        applied: &mut AnswerApplied,
    ) {
        let id = spec.id().clone();
        let theirs = spec.definition();
        match self.definition(&id) {
            Some(ours) if ours == theirs => {
                if self.merge_window(&id, &spec.window) == Ok(true) {
                    applied.polls_changed.push(id.clone());
                }
                applied.shared.insert(id);
            }
            Some(_) => {
                self.note_foreign_definition(&spec);
                if self.merge_across_definitions {
                    applied.shared.insert(id);
                }
            }
            None => {
                let entries = not_held.get(&id).map_or(&[][..], Vec::as_slice);
                let mut declarations = Declarations::default();
                declarations.merge_entries(entries);
                let winning = declarations.is_empty() || declarations.winner() == Some(theirs);
                if winning && self.upsert_poll(spec) == Ok(true) {
                    self.merge_declarations(&id, entries);
                    applied.declarations_changed = true;
                    applied.polls_changed.push(id.clone());
                    applied.shared.insert(id);
                }
            }
        }
    }
}

/// The part of a counter state a peer needs, in messages of at most
/// [`COUNTER_ENTRIES_PER_MESSAGE_MAX`] entries. A peer holding every record of an actor that
/// this node holds derives that actor's counters itself, so only `lagging` actors are sent
/// (and actors known here only by counters, which are relayed): a caught-up cluster exchanges
/// almost nothing, and a long poll's counters never overflow a message.
pub fn counters_for_lagging(
    state: CounterState,
    lagging: impl Fn(&ActorId) -> bool,
) -> Vec<CounterState> {
    let mut messages = Vec::new();
    let mut current = CounterState {
        poll: state.poll.clone(),
        actors: Vec::new(),
    };
    let mut entries = 0usize;
    for mut actor in state.actors.into_iter().filter(|a| lagging(&a.actor)) {
        while !actor.entries.is_empty() {
            let room = COUNTER_ENTRIES_PER_MESSAGE_MAX - entries;
            let take = room.min(actor.entries.len());
            let rest = actor.entries.split_off(take);
            let taken = std::mem::replace(&mut actor.entries, rest);
            entries += taken.len();
            current.actors.push(ActorCounters {
                actor: actor.actor.clone(),
                entries: taken,
            });
            if entries == COUNTER_ENTRIES_PER_MESSAGE_MAX {
                messages.push(std::mem::replace(
                    &mut current,
                    CounterState {
                        poll: state.poll.clone(),
                        actors: Vec::new(),
                    },
                ));
                entries = 0;
            }
        }
    }
    if !current.actors.is_empty() {
        messages.push(current);
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
    use crate::wire::CounterEntry;

    fn actor(node: &str) -> ActorId {
        ActorId {
            node: NodeId::new(node).unwrap(),
            incarnation: 1,
        }
    }

    #[test]
    fn counters_for_peers_skip_caught_up_actors_and_split_at_the_message_limit() {
        // Goal: a long poll's counters never exceed one message's limit, and actors the peer
        // already holds every record of are not sent at all.
        let entries = |count: u32| -> Vec<CounterEntry> {
            (0..count)
                .map(|second| CounterEntry {
                    second,
                    option: 0,
                    accepted: 1,
                    retracted: 0,
                })
                .collect()
        };
        let state = CounterState {
            poll: PollId::new("p").unwrap(),
            actors: vec![
                ActorCounters {
                    actor: actor("lagging"),
                    entries: entries(150_000),
                },
                ActorCounters {
                    actor: actor("caught-up"),
                    entries: entries(10),
                },
            ],
        };
        let messages = counters_for_lagging(state, |a| a.node.as_str() == "lagging");
        assert_eq!(messages.len(), 3);
        let sizes: Vec<usize> = messages
            .iter()
            .map(|m| m.actors.iter().map(|a| a.entries.len()).sum())
            .collect();
        assert_eq!(sizes, vec![65_536, 65_536, 150_000 - 2 * 65_536]);
        assert!(
            messages
                .iter()
                .flat_map(|m| &m.actors)
                .all(|a| a.actor.node.as_str() == "lagging")
        );
        for message in &messages {
            let frame = crate::wire::encode(&crate::wire::PeerMessage::Counters(message.clone()));
            assert!(
                crate::wire::decode(&frame).is_ok(),
                "each message passes the receiver's limits"
            );
        }
    }
}
