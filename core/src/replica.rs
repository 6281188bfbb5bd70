//! One node's replica of every poll: local votes in, durable records and sync messages out.
//!
//! The flow of a local vote: [`Replica::accept_local`] answers at once whether the vote ID is
//! new (`Counted`, with the next seq of this actor) or seen (`Duplicate`); new records wait
//! *in flight* until the caller has logged them ([`Replica::take_unlogged`]) and fsynced the
//! log ([`Replica::mark_durable`]). Only then do they join the replicated state, its counters
//! and what peers are sent, so no peer ever sees a record this node could lose in a crash.
//! The caller acknowledges a vote only after `mark_durable` covers it.

use std::collections::{BTreeMap, VecDeque};

use hashbrown::HashMap;

use crate::counters::Counters;
use crate::definition::{Declarations, DefinitionDigest};
use crate::ids::{ActorId, OptionIndex, OptionName, PollId, Second, Seq, UnixMillis};
use crate::limits::{IN_FLIGHT_RECORDS_MAX, POLLS_MAX, RESERVED_VOTE_IDS_MAX};
use crate::merge::Merge;
use crate::poll::{PollSpec, PollStatus, PollWindow};
use crate::poll_state::{Applied, ApplyError, LOOKUP_AHEAD, PollState};
use crate::prepared_memory::{MemoryKind, MemoryOrder, Prepared, PreparedMemory};
use crate::record_batch::{BatchRecord, RecordBatch};
use crate::record_store::{ReservedIndex, RetiredIndex};
use crate::version_vector::VersionVector;
use crate::vote_id::VoteId;
use crate::wire::{ActorCounters, CounterEntry, CounterState};

mod definitions;
pub use definitions::Standing;

/// Why a local vote was refused. Nothing was counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// No poll of that name.
    #[error("no poll named {0}")]
    UnknownPoll(PollId),
    /// The option index is past the poll's options.
    #[error("the poll has no option {0}")]
    UnknownOption(u8),
    /// The poll has not opened.
    #[error("the poll is not open yet")]
    NotOpen,
    /// The poll has closed.
    #[error("the poll is closed")]
    Closed,
    /// Too many votes wait for the write-ahead log; retry shortly.
    #[error("too many votes are waiting to be made durable; retry shortly")]
    Overloaded,
    /// This node's definition of the poll lost the cluster's agreement (another definition
    /// is held by more nodes): it counts none of the poll's votes until its definition
    /// changes. Nothing was counted; the vote can be sent to another node.
    #[error(
        "this node defines poll {0} otherwise than the cluster does; it counts no votes for it"
    )]
    Disputed(PollId),
}

/// Why records or counters from elsewhere were refused. Nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    /// No poll of that name.
    #[error("no poll named {0}")]
    UnknownPoll(PollId),
    /// Records of this node's own actor that it never made durable: someone reused its identity.
    #[error("records of this node's own actor {actor} up to seq {seq} came from elsewhere")]
    ForeignOwnRecords {
        /// This node's actor.
        actor: ActorId,
        /// The highest seq received.
        seq: Seq,
    },
    /// The poll state refused the records.
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// Why a poll could not be added. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    /// A poll of that name exists with other options.
    #[error("poll {0} already exists with different options")]
    Conflict(PollId),
    /// No poll of that name.
    #[error("no poll named {0}")]
    UnknownPoll(PollId),
    /// A redefinition would drop options the poll has (their records would lose their
    /// meaning); only reordering and adding options is allowed.
    #[error("poll {poll} cannot be redefined without its options {missing:?}")]
    OptionsRemoved {
        /// The poll.
        poll: PollId,
        /// Its options the new definition lacks.
        missing: Vec<String>,
    },
    /// The replica holds [`POLLS_MAX`] polls already; a new one is refused.
    #[error("this node holds {POLLS_MAX} polls, the most it may; poll {0} was not created")]
    TooManyPolls(PollId),
}

/// The answer to a local vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalVote {
    /// A new vote ID: counted as this actor's record `seq`, stamped `second`. Acknowledge it
    /// once `mark_durable` covers `seq`.
    Counted {
        /// The record's seq in this actor's log.
        seq: Seq,
        /// The poll-relative second it was stamped with.
        second: Second,
    },
    /// A vote ID seen before. If `wait_for` is `Some(seq)`, the earlier vote is this actor's and
    /// not yet durable: acknowledge once `mark_durable` covers `seq`.
    Duplicate {
        /// This actor's seq to wait for, if the earlier vote is not durable yet.
        wait_for: Option<Seq>,
    },
}

/// Local records that [`Replica::begin_incarnation`] moved to the new actor: in `poll`, the
/// old actor's seqs `old_first_seq..old_first_seq + count` are now the new actor's
/// `new_first_seq..new_first_seq + count`, in the same order. None of them was durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedRecords {
    /// The poll.
    pub poll: PollId,
    /// The old actor's seq of the first moved record.
    pub old_first_seq: Seq,
    /// The new actor's seq of the first moved record.
    pub new_first_seq: Seq,
    /// How many records moved.
    pub count: usize,
}

impl MovedRecords {
    /// The new seq of the old actor's `seq`, if this move covers it.
    pub fn new_seq(&self, seq: Seq) -> Option<Seq> {
        let offset = seq.checked_sub(self.old_first_seq)?;
        (offset < self.count as Seq).then_some(self.new_first_seq + offset)
    }
}

/// Local records not yet durable, in seq order.
struct InFlight {
    first_seq: Seq,
    /// The last seq accepted before records of other actors last joined the state: up to
    /// it, a record may have met a rival of its vote ID by the time it is durable, and the
    /// winner rule must compare them; after it, its vote ID is known to have no record held.
    compare_through: Seq,
    records: VecDeque<(VoteId, OptionIndex, Second)>,
    seq_by_vote_id: HashMap<u128, Seq, ahash::RandomState>,
    handed_out: usize,
}

struct PollReplica {
    spec: PollSpec,
    /// `spec.definition()`, kept.
    definition: DefinitionDigest,
    /// Which definition each node holds, as far as this replica knows (its own included).
    declarations: Declarations,
    /// Whether this replica's definition lost the agreement: local votes are refused.
    refusing: bool,
    /// Options of other definitions seen from peers (a few), to name them in messages.
    foreign: BTreeMap<DefinitionDigest, Vec<OptionName>>,
    state: PollState,
    in_flight: InFlight,
    last_second: Second,
}

impl PollReplica {
    /// The second a vote accepted at `now` is stamped with: an actor stamps its records in
    /// time order even if the caller's clock steps back.
    fn stamp(&mut self, now: UnixMillis) -> Second {
        let second = self
            .spec
            .window
            .second_at(now)
            .unwrap_or(self.last_second)
            .max(self.last_second);
        self.last_second = second;
        second
    }

    /// Accepts one vote cast at `now` in this open poll; `held` says whether the replicated
    /// state holds a record of its ID.
    fn accept_one(
        &mut self,
        option: OptionIndex,
        vote_id: VoteId,
        held: bool,
        now: UnixMillis,
    ) -> Result<LocalVote, AcceptError> {
        if option.get() >= self.spec.options().len() {
            return Err(AcceptError::UnknownOption(option.0));
        }
        if held {
            return Ok(LocalVote::Duplicate { wait_for: None });
        }
        let in_flight = &mut self.in_flight;
        if let Some(&seq) = in_flight.seq_by_vote_id.get(&vote_id.0) {
            return Ok(LocalVote::Duplicate {
                wait_for: Some(seq),
            });
        }
        if in_flight.records.len() >= IN_FLIGHT_RECORDS_MAX {
            return Err(AcceptError::Overloaded);
        }
        let seq = in_flight.first_seq + in_flight.records.len() as Seq;
        let second = self.stamp(now);
        let in_flight = &mut self.in_flight;
        in_flight.records.push_back((vote_id, option, second));
        in_flight.seq_by_vote_id.insert(vote_id.0, seq);
        Ok(LocalVote::Counted { seq, second })
    }
}

/// One node's replica of every poll.
pub struct Replica {
    actor: ActorId,
    hash_seed: [u64; 4],
    polls: BTreeMap<PollId, PollReplica>,
    keep_duplicates: bool,
    /// A planted bug (simulation tests only): records and counters of a poll are exchanged
    /// whatever the peers' definitions, by option index (the behaviour issue 31 found).
    pub(crate) merge_across_definitions: bool,
    /// Fewest bytes a dedupe index's next table spans for it to be ordered
    /// ([`Self::poll_memory_order`]).
    index_table_order_bytes_min: usize,
    /// Each node's current incarnation as far as this replica knows (its own included).
    current_incarnations: Vec<ActorId>,
}

impl Replica {
    /// An empty replica for `actor`, hashing vote IDs with keys from `hash_seed` (a per-node
    /// secret drawn by the caller's seeded RNG).
    pub fn new(actor: ActorId, hash_seed: [u64; 4]) -> Self {
        Self {
            current_incarnations: vec![actor.clone()],
            actor,
            hash_seed,
            polls: BTreeMap::new(),
            keep_duplicates: false,
            merge_across_definitions: false,
            index_table_order_bytes_min: crate::limits::INDEX_TABLE_ORDER_BYTES_MIN,
        }
    }

    /// Notes that `actor` is its node's current incarnation (a peer's hello says so): every
    /// other incarnation of that node is superseded, and its counters count only what its
    /// records prove (see `PollState::note_current_incarnation`). Returns whether any view
    /// changed.
    pub fn note_current_incarnation(&mut self, actor: &ActorId) -> bool {
        if actor.node == self.actor.node && actor != &self.actor {
            // Only a node itself knows its current incarnation; a peer naming another one of
            // ours is stale or lying.
            return false;
        }
        self.current_incarnations.retain(|a| a.node != actor.node);
        self.current_incarnations.push(actor.clone());
        let mut changed = false;
        for poll in self.polls.values_mut() {
            changed |= poll.state.note_current_incarnation(actor);
        }
        changed
    }

    /// Makes `actor`, a new incarnation of this node, the replica's own actor from now on
    /// (DESIGN.md §2: a node whose log may lack records it once made durable never issues
    /// another seq of its old actor). The old actor becomes one more actor of the state,
    /// superseded: its records stay, more of them are taken from peers like any other
    /// actor's, and its counters count what its records prove.
    ///
    /// Local records in flight (accepted, not yet durable; handed out for logging or not)
    /// move to the new actor, in order, as its first records: they must be logged again
    /// under the new actor (the next [`Self::take_unlogged`] hands them out), and the caller
    /// must drop the old actor's seqs it meant to mark durable (a log job in flight may still
    /// write those records: they are void, see the caller's log). Returns, per poll
    /// with records in flight, how their seqs changed, so the caller can renumber what it
    /// promised to answer.
    ///
    /// # Panics
    /// If `actor` is not of this node, or is this replica's actor already.
    pub fn begin_incarnation(&mut self, actor: ActorId) -> Vec<MovedRecords> {
        assert_eq!(
            actor.node, self.actor.node,
            "an incarnation of another node"
        );
        assert_ne!(actor, self.actor, "the incarnation is already current");
        self.actor = actor.clone();
        self.note_current_incarnation(&actor);
        let mut moved = Vec::new();
        for (poll, replica) in &mut self.polls {
            let in_flight = &mut replica.in_flight;
            let old_first_seq = in_flight.first_seq;
            let new_first_seq = replica.state.held(&actor) + 1;
            in_flight.first_seq = new_first_seq;
            in_flight.handed_out = 0;
            // Rivals of these vote IDs may have joined the state since they were accepted:
            // every moved record is compared when it becomes durable.
            in_flight.compare_through = new_first_seq + in_flight.records.len() as Seq - 1;
            in_flight.seq_by_vote_id.clear();
            for (&(vote_id, _, _), seq) in in_flight.records.iter().zip(new_first_seq..) {
                in_flight.seq_by_vote_id.insert(vote_id.0, seq);
            }
            if !in_flight.records.is_empty() {
                moved.push(MovedRecords {
                    poll: poll.clone(),
                    old_first_seq,
                    new_first_seq,
                    count: in_flight.records.len(),
                });
            }
        }
        moved
    }

    /// Records again, as this actor's next record, a vote that this node's log held but
    /// whose record cannot join the state (it followed a gap that damage to the log left in
    /// its actor's seqs): `vote_id` for `option`, stamped `second` as it was. The poll's
    /// window is not checked (the vote was accepted once). Like a local vote, the record
    /// waits in flight until it is logged and marked durable. `Ok(None)`: a record of the
    /// vote ID is held or in flight already, nothing changed.
    pub fn adopt(
        &mut self,
        poll: &PollId,
        option: OptionIndex,
        vote_id: VoteId,
        second: Second,
    ) -> Result<Option<Seq>, AcceptError> {
        let replica = self
            .polls
            .get_mut(poll)
            .ok_or_else(|| AcceptError::UnknownPoll(poll.clone()))?;
        if option.get() >= replica.spec.options().len() {
            return Err(AcceptError::UnknownOption(option.0));
        }
        let in_flight = &mut replica.in_flight;
        if replica.state.contains(vote_id) || in_flight.seq_by_vote_id.contains_key(&vote_id.0) {
            return Ok(None);
        }
        if in_flight.records.len() >= IN_FLIGHT_RECORDS_MAX {
            return Err(AcceptError::Overloaded);
        }
        let seq = in_flight.first_seq + in_flight.records.len() as Seq;
        in_flight.records.push_back((vote_id, option, second));
        in_flight.seq_by_vote_id.insert(vote_id.0, seq);
        in_flight.compare_through = seq;
        replica.last_second = replica.last_second.max(second);
        Ok(Some(seq))
    }

    /// **For tests only**: orders dedupe index tables of every size from
    /// [`Self::poll_memory_order`], not only those of
    /// [`crate::limits::INDEX_TABLE_ORDER_BYTES_MIN`] or more, so that tests of a few thousand
    /// vote IDs see tables handed over at every point of a growth.
    #[doc(hidden)]
    pub fn order_index_tables_of_any_size(&mut self) {
        self.index_table_order_bytes_min = 0;
    }

    /// **A planted bug, for the simulation's checker tests only**: from now on this replica
    /// no longer retracts records that lose to a smaller record of the same vote ID (it
    /// does not dedupe what peers send it), so a vote retried at two regions counts twice.
    /// Nothing outside `tally-sim`'s tests calls this.
    #[doc(hidden)]
    pub fn plant_bug_keep_duplicates(&mut self) {
        self.keep_duplicates = true;
        for poll in self.polls.values_mut() {
            poll.state.plant_bug_keep_duplicates();
        }
    }

    /// **A planted bug, for the simulation's checker tests only**: from now on this replica
    /// sends and applies a poll's records and counters to and from peers that define the poll
    /// otherwise, by option index, so a region whose options are in another order counts
    /// other regions' votes under the wrong names. Nothing outside `tally-sim`'s tests calls
    /// this.
    #[doc(hidden)]
    pub fn plant_bug_merge_across_definitions(&mut self) {
        self.merge_across_definitions = true;
    }

    /// This node's actor.
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// Adds a poll, or merges the window of an existing poll with the same options. Returns
    /// whether anything changed.
    pub fn upsert_poll(&mut self, spec: PollSpec) -> Result<bool, PollError> {
        if let Some(existing) = self.polls.get_mut(spec.id()) {
            if existing.spec.options() != spec.options() {
                return Err(PollError::Conflict(spec.id().clone()));
            }
            return Ok(existing.spec.window.merge(&spec.window));
        }
        if self.polls.len() >= POLLS_MAX {
            return Err(PollError::TooManyPolls(spec.id().clone()));
        }
        let [k0, k1, k2, k3] = self.hash_seed;
        let own = self.actor.clone();
        let mut state = PollState::new(spec.id().clone(), spec.options().len(), self.hash_seed);
        if self.keep_duplicates {
            state.plant_bug_keep_duplicates();
        }
        for current in &self.current_incarnations {
            state.note_current_incarnation(current);
        }
        let in_flight = InFlight {
            first_seq: 1,
            compare_through: 0,
            records: VecDeque::new(),
            seq_by_vote_id: HashMap::with_hasher(ahash::RandomState::with_seeds(k1, k2, k3, k0)),
            handed_out: 0,
        };
        debug_assert_eq!(state.held(&own), 0);
        let definition = spec.definition();
        let mut declarations = Declarations::default();
        declarations.declare(&own.node, definition);
        self.polls.insert(
            spec.id().clone(),
            PollReplica {
                spec,
                definition,
                declarations,
                refusing: false,
                foreign: BTreeMap::new(),
                state,
                in_flight,
                last_second: 0,
            },
        );
        Ok(true)
    }

    /// Merges `window` into a poll's window (earliest open, earliest close wins).
    pub fn merge_window(&mut self, poll: &PollId, window: &PollWindow) -> Result<bool, PollError> {
        let replica = self.poll_mut(poll)?;
        Ok(replica.spec.window.merge(window))
    }

    /// `poll`'s replica, or [`PollError::UnknownPoll`].
    fn poll_mut(&mut self, poll: &PollId) -> Result<&mut PollReplica, PollError> {
        self.polls
            .get_mut(poll)
            .ok_or_else(|| PollError::UnknownPoll(poll.clone()))
    }

    /// The definition of a poll.
    pub fn poll_spec(&self, poll: &PollId) -> Option<&PollSpec> {
        self.polls.get(poll).map(|p| &p.spec)
    }

    /// Every poll's definition, by name.
    pub fn poll_specs(&self) -> impl Iterator<Item = &PollSpec> {
        self.polls.values().map(|p| &p.spec)
    }

    /// The replicated state of a poll, for reads.
    pub fn state(&self, poll: &PollId) -> Option<&PollState> {
        self.polls.get(poll).map(|p| &p.state)
    }

    /// Sizes `poll`'s dedupe index for `vote_ids` distinct IDs in all (at most
    /// [`RESERVED_VOTE_IDS_MAX`]), so that it does not grow before it holds that many.
    /// Growing rehashes every ID held, reading each one's record: at 16 million IDs that is a
    /// pause of seconds while votes wait. An operator who expects a big poll reserves it at
    /// start-up, and pays its memory (~5 bytes per slot, slots a power of two ≥ 8/7 of the
    /// IDs) at once. Reserving less than is held, or than was reserved, changes nothing.
    pub fn reserve_vote_ids(&mut self, poll: &PollId, vote_ids: usize) -> Result<(), PollError> {
        self.reserve_vote_ids_with(poll, vote_ids, None)
    }

    /// As [`Self::reserve_vote_ids`], with an index built beforehand (off the owner's thread)
    /// for the same count: if the poll's index holds no ID yet, `prepared` takes its place in
    /// O(1); otherwise (or without one) the index grows in place, rehashing the IDs it holds.
    pub fn reserve_vote_ids_with(
        &mut self,
        poll: &PollId,
        vote_ids: usize,
        prepared: Option<ReservedIndex>,
    ) -> Result<(), PollError> {
        let replica = self.poll_mut(poll)?;
        let vote_ids = vote_ids.min(RESERVED_VOTE_IDS_MAX);
        if let Some(index) = prepared {
            // Handed back when it cannot be used: the in-place reservation below does the job.
            let _ = replica.state.install_index(index);
        }
        replica.state.reserve_vote_ids(vote_ids);
        Ok(())
    }

    /// As [`Self::reserve_vote_ids`], but met by growth steps (this replica's
    /// [`Self::advance_index_growth_while`] and its inserts) even while the index is empty,
    /// so that no call touches more than a step's memory: for a reservation a peer relayed,
    /// which arrives while votes are being answered.
    pub fn reserve_vote_ids_gradually(
        &mut self,
        poll: &PollId,
        vote_ids: usize,
    ) -> Result<(), PollError> {
        let replica = self.poll_mut(poll)?;
        replica
            .state
            .reserve_vote_ids_gradually(vote_ids.min(RESERVED_VOTE_IDS_MAX));
        Ok(())
    }

    /// Raises `poll`'s reservation as relayed to peers ([`PollState::reserved_vote_ids`])
    /// without sizing its index: for a reservation this replica's owner declines (past its
    /// memory budget) but must not be asked to take again.
    pub fn note_reservation(&mut self, poll: &PollId, vote_ids: usize) -> Result<(), PollError> {
        let replica = self.poll_mut(poll)?;
        replica
            .state
            .note_reservation(vote_ids.min(RESERVED_VOTE_IDS_MAX));
        Ok(())
    }

    /// The dedupe index tables growths have moved out of since the last call (at most one
    /// a poll). Dropping one frees its memory, which unmaps every page: for 320 MB, 1–9 ms on
    /// 2 MiB pages and ~65 ms on 4 KiB pages in this VM, so an owner that answers votes
    /// drops them on another thread.
    /// One left untaken is freed when the poll's next growth retires a table.
    pub fn take_retired_index_tables(&mut self) -> Vec<RetiredIndex> {
        self.polls
            .values_mut()
            .filter_map(|replica| replica.state.take_retired_index())
            .collect()
    }

    /// Memory of `kind` one poll will need soon, to be prepared off the owner's thread
    /// ([`MemoryOrder::prepare`], e.g. on a [`crate::MemoryHelper`]) and handed back with
    /// [`Self::handle_prepared_memory`], if any poll needs some now: a growing dedupe index's
    /// next table once its table is 7/8 of the way to full
    /// ([`crate::limits::INDEX_TABLE_ORDER_AT_EIGHTHS`]), or spare record chunks
    /// ([`crate::limits::RECORD_CHUNKS_SPARE_MAX`]). A poll is not asked again for what it
    /// ordered until it arrives or the order is cancelled ([`Self::cancel_memory_order`]).
    /// Without any of it the replica works as well, paying its page faults itself.
    pub fn poll_memory_order(&mut self, kind: MemoryKind) -> Option<MemoryOrder> {
        let table_bytes_min = self.index_table_order_bytes_min;
        self.polls.iter_mut().find_map(|(id, replica)| {
            let amount = replica.state.order_memory(kind, table_bytes_min)?;
            Some(MemoryOrder::new(id.clone(), kind, amount))
        })
    }

    /// Forgets `order`, which will not be met: its poll may order again.
    pub fn cancel_memory_order(&mut self, order: MemoryOrder) {
        if let Some(replica) = self.polls.get_mut(order.poll()) {
            replica
                .state
                .cancel_memory_order(order.kind(), order.amount());
        }
    }

    /// Hands a poll the memory prepared for its order (O(1) on this thread): a next table
    /// the dedupe index switches to at once if it still fits (its entries then move step
    /// by step), or spare record chunks. Returns an index table for the owner to free off
    /// its thread, if one is left over: the prepared one if it came too late to fit, or the
    /// one the index had begun preparing itself.
    pub fn handle_prepared_memory(&mut self, memory: PreparedMemory) -> Option<RetiredIndex> {
        let (order, memory) = memory.into_parts();
        match self.polls.get_mut(order.poll()) {
            Some(replica) => replica.state.take_prepared(memory),
            None => match memory {
                Prepared::IndexTable(table) => Some(table.into_retired()),
                Prepared::RecordChunks(_) => None,
            },
        }
    }

    /// Runs up to `steps` growth steps of every growing dedupe index (see
    /// [`PollState::advance_index_growth`]); returns whether any still grows. The node's engine
    /// calls it on its tick, so an index that stops taking IDs mid-growth still finishes.
    pub fn advance_index_growth(&mut self, steps: usize) -> bool {
        self.advance_index_growth_while(steps, || true)
    }

    /// [`Self::advance_index_growth`], asking `keep_going` before each step
    /// (once it says no, no poll runs another): the engine stops on a time budget, or as soon
    /// as a command waits, since the core has no clock.
    pub fn advance_index_growth_while(
        &mut self,
        steps: usize,
        mut keep_going: impl FnMut() -> bool,
    ) -> bool {
        let mut growing = false;
        let mut stopped = false;
        for replica in self.polls.values_mut() {
            if stopped {
                growing |= replica.state.index_is_growing();
                continue;
            }
            growing |= replica.state.advance_index_growth_while(steps, || {
                stopped = stopped || !keep_going();
                !stopped
            });
        }
        growing
    }

    /// Whether any poll's dedupe index has growth work left.
    pub fn index_is_growing(&self) -> bool {
        self.polls
            .values()
            .any(|replica| replica.state.index_is_growing())
    }

    /// Accepts a vote cast at this node at `now`.
    pub fn accept_local(
        &mut self,
        poll: &PollId,
        option: OptionIndex,
        vote_id: VoteId,
        now: UnixMillis,
    ) -> Result<LocalVote, AcceptError> {
        let replica = Self::open_poll(&mut self.polls, poll, now)?;
        let held = replica.state.contains(vote_id);
        replica.accept_one(option, vote_id, held, now)
    }

    /// Accepts votes cast at this node at `now` in one poll, appending one answer per vote to
    /// `answers`, in order: the same answers as [`Self::accept_local`] for each vote in turn,
    /// but faster. The replicated state does not change while local votes are accepted (they
    /// wait in flight), so the dedupe lookups of [`LOOKUP_AHEAD`] votes run back to back
    /// before those votes are taken in turn, and the CPU overlaps their cache misses (the
    /// index of a large poll is far bigger than the caches, and a miss costs more than the
    /// rest of an accept). A refusal that concerns the whole poll (unknown, not open, closed)
    /// is returned as the error before anything is counted.
    pub fn accept_local_batch(
        &mut self,
        poll: &PollId,
        votes: &[(OptionIndex, VoteId)],
        now: UnixMillis,
        answers: &mut Vec<Result<LocalVote, AcceptError>>,
    ) -> Result<(), AcceptError> {
        let replica = Self::open_poll(&mut self.polls, poll, now)?;
        answers.reserve(votes.len());
        for group in votes.chunks(LOOKUP_AHEAD) {
            let mut held = [false; LOOKUP_AHEAD];
            for (held, &(_, vote_id)) in held.iter_mut().zip(group) {
                *held = replica.state.contains(vote_id);
            }
            for (&held, &(option, vote_id)) in held.iter().zip(group) {
                answers.push(replica.accept_one(option, vote_id, held, now));
            }
        }
        Ok(())
    }

    /// The poll `poll` if it exists and is open at `now`.
    fn open_poll<'a>(
        polls: &'a mut BTreeMap<PollId, PollReplica>,
        poll: &PollId,
        now: UnixMillis,
    ) -> Result<&'a mut PollReplica, AcceptError> {
        let replica = polls
            .get_mut(poll)
            .ok_or_else(|| AcceptError::UnknownPoll(poll.clone()))?;
        if replica.refusing {
            return Err(AcceptError::Disputed(poll.clone()));
        }
        match replica.spec.window.status(now) {
            PollStatus::NotOpen => Err(AcceptError::NotOpen),
            PollStatus::Closed => Err(AcceptError::Closed),
            PollStatus::Open => Ok(replica),
        }
    }

    /// Hands out the local records not yet handed out, one batch per poll, for the caller to
    /// append to its write-ahead log.
    pub fn take_unlogged(&mut self) -> Vec<RecordBatch> {
        let mut batches = Vec::new();
        for (poll, replica) in &mut self.polls {
            let in_flight = &mut replica.in_flight;
            if in_flight.handed_out == in_flight.records.len() {
                continue;
            }
            let first_seq = in_flight.first_seq + in_flight.handed_out as Seq;
            let mut batch = RecordBatch::new(poll.clone(), self.actor.clone(), first_seq);
            for &(vote_id, option, second) in in_flight.records.range(in_flight.handed_out..) {
                batch.push(vote_id, option, second);
            }
            in_flight.handed_out = in_flight.records.len();
            batches.push(batch);
        }
        batches
    }

    /// Marks this actor's records of `poll` up to `seq` durable: they join the replicated state.
    /// `seq` must have been handed out by [`Self::take_unlogged`].
    pub fn mark_durable(&mut self, poll: &PollId, seq: Seq) {
        let Some(replica) = self.polls.get_mut(poll) else {
            return;
        };
        let in_flight = &mut replica.in_flight;
        if seq < in_flight.first_seq {
            return;
        }
        let count = (seq - in_flight.first_seq + 1) as usize;
        assert!(
            count <= in_flight.handed_out,
            "mark_durable past what was handed out for logging"
        );
        let first_seq = in_flight.first_seq;
        let mut records = Vec::with_capacity(count);
        for ((vote_id, option, second), seq) in in_flight.records.drain(..count).zip(first_seq..) {
            in_flight.seq_by_vote_id.remove(&vote_id.0);
            records.push(BatchRecord {
                seq,
                vote_id,
                option,
                second,
            });
        }
        let records = records.into_iter();
        let unique_from = in_flight.compare_through + 1;
        let added = replica
            .state
            .append_own_durable(&self.actor, records, unique_from);
        assert!(
            added.as_ref().is_ok_and(|&added| added == count),
            "own durable records did not apply: {added:?}"
        );
        in_flight.first_seq = seq + 1;
        in_flight.handed_out -= count;
    }

    /// Applies records received from a peer.
    pub fn apply_records(&mut self, batch: &RecordBatch) -> Result<Applied, ReplicaError> {
        let replica = self
            .polls
            .get_mut(batch.poll())
            .ok_or_else(|| ReplicaError::UnknownPoll(batch.poll().clone()))?;
        if batch.actor() == &self.actor && batch.last_seq() > replica.state.held(&self.actor) {
            return Err(ReplicaError::ForeignOwnRecords {
                actor: self.actor.clone(),
                seq: batch.last_seq(),
            });
        }
        let applied = replica.state.apply(batch)?;
        if applied.added > 0 {
            let in_flight = &mut replica.in_flight;
            in_flight.compare_through = in_flight.first_seq + in_flight.records.len() as Seq - 1;
        }
        Ok(applied)
    }

    /// Applies records read back from this node's own write-ahead log at start-up, including
    /// this actor's own. Call before accepting any local vote.
    pub fn recover_records(&mut self, batch: &RecordBatch) -> Result<Applied, ReplicaError> {
        let replica = self
            .polls
            .get_mut(batch.poll())
            .ok_or_else(|| ReplicaError::UnknownPoll(batch.poll().clone()))?;
        assert!(
            replica.in_flight.records.is_empty(),
            "recover_records after local votes were accepted"
        );
        let applied = replica.state.apply(batch)?;
        if batch.actor() == &self.actor {
            replica.in_flight.first_seq = replica.state.held(&self.actor) + 1;
            if let Some(last) = batch.iter().last() {
                replica.last_second = replica.last_second.max(last.second);
            }
        }
        Ok(applied)
    }

    /// Raises the reported counters with a peer's counter state; returns whether anything rose.
    pub fn merge_counters(&mut self, message: &CounterState) -> Result<bool, ReplicaError> {
        let replica = self
            .polls
            .get_mut(&message.poll)
            .ok_or_else(|| ReplicaError::UnknownPoll(message.poll.clone()))?;
        let mut changed = false;
        for actor in &message.actors {
            let mut counters = Counters::default();
            for entry in &actor.entries {
                counters.raise(entry.second, OptionIndex(entry.option), entry.pair());
            }
            changed |= replica.state.merge_reported(&actor.actor, &counters)?;
        }
        Ok(changed)
    }

    /// This replica's version vector for `poll`.
    pub fn version_vector(&self, poll: &PollId) -> Option<VersionVector> {
        self.state(poll).map(PollState::version_vector)
    }

    /// The durable records of `poll` that a peer with vector `theirs` lacks (at most
    /// `records_max`).
    pub fn missing_records(
        &self,
        poll: &PollId,
        theirs: &VersionVector,
        records_max: usize,
    ) -> Vec<RecordBatch> {
        self.state(poll)
            .map(|s| s.missing_for(theirs, records_max))
            .unwrap_or_default()
    }

    /// The counter state of `poll` to push to peers: every actor's counters as seen here.
    pub fn counter_state(&self, poll: &PollId) -> Option<CounterState> {
        let state = self.state(poll)?;
        let actors = state
            .counter_views()
            .into_iter()
            .filter(|(_, counters)| !counters.is_empty())
            .map(|(actor, counters)| ActorCounters {
                actor,
                entries: counters.iter().map(CounterEntry::from_pair).collect(),
            })
            .collect();
        Some(CounterState {
            poll: poll.clone(),
            actors,
        })
    }

    /// Local votes accepted but not yet durable, over all polls.
    pub fn in_flight_records(&self) -> usize {
        self.polls.values().map(|p| p.in_flight.records.len()).sum()
    }
}
