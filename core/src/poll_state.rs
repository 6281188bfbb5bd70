//! The replicated state of one poll: the grow-only set of durable vote records, the winner of
//! every vote ID, and the counter CRDT.
//!
//! Records arrive per actor in seq order (a gap is held back, bounded, until it fills). The
//! winner of a vote ID is its record with the smallest `(second, actor, seq)`. Each actor's
//! counters are *derived* from the records held (accepted = its records, retracted = its
//! records that lost) and *reported* by peers; the view of an actor is the larger of the two,
//! entry by entry. Both are lower bounds of the entry's final value, so the view is too, and
//! once every record is everywhere the view is exact: Σ accepted − Σ retracted = the winners.
//!
//! An actor's own retractions are therefore durable by construction: they are a function of
//! records that are all in the write-ahead log.

use std::collections::BTreeMap;
use std::fmt;

use crate::counters::Counters;
use crate::ids::{ActorId, NodeId, OptionIndex, PollId, Second, Seq};
use crate::limits::{ACTORS_PER_POLL_MAX, OPTIONS_MAX, PENDING_RECORDS_MAX, RECORDS_PER_BATCH_MAX};
use crate::merge::Merge;
use crate::position_index::{IndexGrowth, IndexGrowthEvents};
use crate::prepared_memory::{MemoryKind, Prepared};
use crate::record_batch::{BatchRecord, RecordBatch};
use crate::record_store::{ActorSlot, RecordStore, ReservedIndex, RetiredIndex};
use crate::version_vector::VersionVector;
use crate::vote_id::VoteId;

/// Why records were refused. Nothing of the batch was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A record names an option the poll does not have.
    #[error("record seq {seq} names option {option}, but the poll has {option_count} options")]
    UnknownOption {
        /// The record's seq.
        seq: Seq,
        /// The option index it names.
        option: u8,
        /// How many options the poll has.
        option_count: usize,
    },
    /// A record differs from the one already held at the same (actor, seq): the actor reused
    /// its identity, or the sender is broken.
    #[error("record {actor} seq {seq} conflicts with the record held at that seq")]
    Conflict {
        /// The actor whose log disagrees.
        actor: ActorId,
        /// The first seq that disagrees.
        seq: Seq,
    },
    /// The batch belongs to another poll.
    #[error("records of poll {poll} were sent to another poll's state")]
    WrongPoll {
        /// The poll the batch names.
        poll: PollId,
    },
    /// The poll already tracks [`ACTORS_PER_POLL_MAX`] actors.
    #[error("poll already tracks {ACTORS_PER_POLL_MAX} actors")]
    TooManyActors,
}

/// What applying a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Records newly added (including any earlier out-of-order batches they released).
    pub added: usize,
    /// Records of the batch that were already held.
    pub already_held: usize,
    /// Records held back because of a gap before them.
    pub held_back: usize,
    /// Records refused because the out-of-order buffer is full; they will be sent again.
    pub refused: usize,
}

struct ActorState {
    id: ActorId,
    derived: Counters,
    reported: Counters,
    /// A newer incarnation of its node exists: this actor will never log another record, and
    /// counts it reported beyond the records that survived died with its disk.
    superseded: bool,
}

impl ActorState {
    /// Derived and reported, entry by entry the larger; for a superseded actor, derived only
    /// (see [`PollState::note_current_incarnation`]).
    fn view(&self) -> Counters {
        let mut view = self.derived.clone();
        if !self.superseded {
            view.merge(&self.reported);
        }
        view
    }
}

/// Vote IDs whose index lookups run back to back before they are taken in turn (by
/// [`PollState::append_records`] and `Replica::accept_local_batch`): enough cache misses in
/// flight to keep the memory system busy, few enough for the CPU's miss buffers.
pub(crate) const LOOKUP_AHEAD: usize = 16;

/// Per-option accepted counts for one second, flushed into an actor's counters in one go, so
/// the hot path touches the counter map once per second-run instead of once per record.
struct AcceptedRun {
    second: Second,
    counts: [u64; OPTIONS_MAX],
}

/// The replicated state of one poll.
pub struct PollState {
    poll: PollId,
    option_count: usize,
    hash_seed: [u64; 4],
    store: RecordStore,
    actors: Vec<ActorState>,
    slots: BTreeMap<ActorId, ActorSlot>,
    pending: BTreeMap<(ActorSlot, Seq), RecordBatch>,
    pending_records: usize,
    /// Whether the winner rule retracts losing records (always, except in the simulation's
    /// planted-bug tests; see [`crate::Replica::plant_bug_keep_duplicates`]).
    retract_losers: bool,
    /// Each node's current incarnation, as far as this replica knows.
    current: BTreeMap<NodeId, u64>,
    /// The largest reservation asked of the dedupe index (0: none), relayed to peers.
    reserved_vote_ids: u64,
}

impl PollState {
    /// An empty state for a poll of `option_count` options, hashing vote IDs with keys from
    /// `hash_seed` (a per-node secret).
    pub fn new(poll: PollId, option_count: usize, hash_seed: [u64; 4]) -> Self {
        assert!(option_count <= OPTIONS_MAX);
        Self {
            poll,
            option_count,
            hash_seed,
            store: RecordStore::new(hash_seed),
            actors: Vec::new(),
            slots: BTreeMap::new(),
            pending: BTreeMap::new(),
            pending_records: 0,
            retract_losers: true,
            current: BTreeMap::new(),
            reserved_vote_ids: 0,
        }
    }

    /// The poll this state belongs to.
    pub fn poll(&self) -> &PollId {
        &self.poll
    }

    /// How many options the poll has.
    pub fn option_count(&self) -> usize {
        self.option_count
    }

    fn slot(&mut self, actor: &ActorId) -> Result<ActorSlot, ApplyError> {
        if let Some(&slot) = self.slots.get(actor) {
            return Ok(slot);
        }
        if self.actors.len() >= ACTORS_PER_POLL_MAX {
            return Err(ApplyError::TooManyActors);
        }
        let slot = self.store.add_actor();
        debug_assert_eq!(slot as usize, self.actors.len());
        let superseded = self
            .current
            .get(&actor.node)
            .is_some_and(|&current| current != actor.incarnation);
        self.actors.push(ActorState {
            id: actor.clone(),
            derived: Counters::default(),
            reported: Counters::default(),
            superseded,
        });
        self.slots.insert(actor.clone(), slot);
        Ok(slot)
    }

    /// Highest contiguous seq held for `actor`.
    pub fn held(&self, actor: &ActorId) -> Seq {
        self.slots.get(actor).map_or(0, |&s| self.store.held(s))
    }

    /// Whether any record for `vote_id` is held.
    pub fn contains(&self, vote_id: VoteId) -> bool {
        self.store.contains(vote_id)
    }

    /// The winning option of `vote_id`, if any record for it is held.
    pub fn winner_option(&self, vote_id: VoteId) -> Option<OptionIndex> {
        let position = self.store.winner_position(vote_id)?;
        Some(self.store.record_at(position).option)
    }

    /// The actor and seq of `vote_id`'s winning record, if any record for it is held.
    pub fn winner_record(&self, vote_id: VoteId) -> Option<(&ActorId, Seq)> {
        let record = self.store.record_at(self.store.winner_position(vote_id)?);
        Some((&self.actors[record.actor as usize].id, record.seq))
    }

    /// Number of distinct vote IDs held.
    pub fn distinct_vote_ids(&self) -> usize {
        self.store.distinct_vote_ids()
    }

    /// Sizes the dedupe index for `vote_ids` distinct IDs in all (see
    /// [`crate::Replica::reserve_vote_ids`]).
    pub(crate) fn reserve_vote_ids(&mut self, vote_ids: usize) {
        self.store.reserve(vote_ids);
        self.note_reservation(vote_ids);
    }

    /// As [`Self::reserve_vote_ids`], a growth step at a time even while the index is empty
    /// (see [`crate::Replica::reserve_vote_ids_gradually`]).
    pub(crate) fn reserve_vote_ids_gradually(&mut self, vote_ids: usize) {
        self.store.reserve_gradually(vote_ids);
        self.note_reservation(vote_ids);
    }

    pub(crate) fn note_reservation(&mut self, vote_ids: usize) {
        self.reserved_vote_ids = self.reserved_vote_ids.max(vote_ids as u64);
    }

    /// The largest number of vote IDs the dedupe index was reserved for (0: never reserved):
    /// what this replica tells its peers to reserve ([`crate::wire::PeerMessage::Reserve`]).
    pub fn reserved_vote_ids(&self) -> u64 {
        self.reserved_vote_ids
    }

    /// Installs a prebuilt empty index if this poll's holds no ID yet and is smaller.
    pub(crate) fn install_index(&mut self, index: ReservedIndex) -> Result<(), ReservedIndex> {
        self.store.install_index(index)
    }

    /// How many distinct vote IDs the dedupe index holds before it must grow (again, if it
    /// is growing).
    pub fn vote_id_capacity(&self) -> usize {
        self.store.index_capacity()
    }

    /// Where the dedupe index's growth stands, if it is growing: it grows a bounded step per
    /// insert (and per [`Self::advance_index_growth`]), never all at once.
    pub fn index_growth(&self) -> Option<IndexGrowth> {
        self.store.index_growth()
    }

    /// What the dedupe index's growth has done since the poll began here: a diagnostic
    /// (which paths a slow moment took).
    pub fn index_growth_events(&self) -> IndexGrowthEvents {
        self.store.index_growth_events()
    }

    /// Runs up to `steps` growth steps of the dedupe index, each of which moves at most
    /// [`crate::limits::INDEX_GROWTH_STEP_MOVES_MAX`] vote IDs; returns whether it still grows.
    /// Inserts grow it too; this lets an index that stopped taking IDs finish and free its
    /// old table.
    pub fn advance_index_growth(&mut self, steps: usize) -> bool {
        self.store.advance_index_growth(steps, || true)
    }

    /// [`Self::advance_index_growth`], asking `keep_going` before each step:
    /// a caller that must not be held for long stops on its own clock, or when work waits.
    pub fn advance_index_growth_while(
        &mut self,
        steps: usize,
        keep_going: impl FnMut() -> bool,
    ) -> bool {
        self.store.advance_index_growth(steps, keep_going)
    }

    /// Memory to have prepared off the owner's thread now, if any (see
    /// [`crate::Replica::poll_memory_order`]): the index's next table, or spare record chunks.
    /// `table_bytes_min`: the smallest index table worth ordering.
    pub(crate) fn order_memory(
        &mut self,
        kind: MemoryKind,
        table_bytes_min: usize,
    ) -> Option<usize> {
        match kind {
            MemoryKind::IndexTable => self.store.order_index_table(table_bytes_min),
            MemoryKind::RecordChunks => self.store.order_chunks(),
        }
    }

    /// Forgets an order of [`Self::order_memory`] that will not be met.
    pub(crate) fn cancel_memory_order(&mut self, kind: MemoryKind, amount: usize) {
        match kind {
            MemoryKind::IndexTable => self.store.cancel_index_table_order(amount),
            MemoryKind::RecordChunks => self.store.cancel_chunks_order(),
        }
    }

    /// Takes memory prepared off the owner's thread; returns an index table for the owner to
    /// free off its thread, if one is left over.
    pub(crate) fn take_prepared(&mut self, memory: Prepared) -> Option<RetiredIndex> {
        match memory {
            Prepared::IndexTable(table) => self.store.offer_index_table(table),
            Prepared::RecordChunks(chunks) => {
                self.store.add_spare_chunks(chunks);
                None
            }
        }
    }

    /// The dedupe index table the last growth moved out of, if not taken yet.
    pub(crate) fn take_retired_index(&mut self) -> Option<RetiredIndex> {
        self.store.take_retired_index()
    }

    /// Whether the dedupe index has growth work left: while it does, a caller that runs
    /// [`Self::advance_index_growth`] on a timer should keep doing so.
    pub fn index_is_growing(&self) -> bool {
        self.store.index_is_growing()
    }

    /// Number of records held, winners and losers.
    pub fn records_held(&self) -> u64 {
        (0..self.actors.len())
            .map(|s| self.store.held(s as ActorSlot))
            .sum()
    }

    /// Applies a batch of records: idempotent, in any order, duplicated or relayed.
    pub fn apply(&mut self, batch: &RecordBatch) -> Result<Applied, ApplyError> {
        if batch.poll() != &self.poll {
            return Err(ApplyError::WrongPoll {
                poll: batch.poll().clone(),
            });
        }
        if let Some(bad) = batch.iter().find(|r| r.option.get() >= self.option_count) {
            return Err(ApplyError::UnknownOption {
                seq: bad.seq,
                option: bad.option.0,
                option_count: self.option_count,
            });
        }
        let slot = self.slot(batch.actor())?;
        self.check_overlap(slot, batch)?;
        let held = self.store.held(slot);
        let mut applied = Applied {
            already_held: batch
                .last_seq()
                .min(held)
                .saturating_sub(batch.first_seq() - 1) as usize,
            ..Applied::default()
        };
        if batch.first_seq() > held + 1 {
            self.hold_back(slot, batch, &mut applied);
            return Ok(applied);
        }
        applied.added += self.append_from(slot, batch, held + 1);
        applied.added += self.release_pending(slot);
        Ok(applied)
    }

    /// Refuses a batch that disagrees with records already held at the same seqs.
    fn check_overlap(&self, slot: ActorSlot, batch: &RecordBatch) -> Result<(), ApplyError> {
        let held = self.store.held(slot);
        if batch.is_empty() || batch.first_seq() > held {
            return Ok(());
        }
        let to = batch.last_seq().min(held);
        let mut mismatch = None;
        let mut incoming = batch.iter();
        self.store.for_each_in_range(
            slot,
            batch.first_seq(),
            to,
            |seq, vote_id, option, second| {
                let held_record = BatchRecord {
                    seq,
                    vote_id,
                    option,
                    second,
                };
                if mismatch.is_none() && incoming.next() != Some(held_record) {
                    mismatch = Some(seq);
                }
            },
        );
        match mismatch {
            Some(seq) => Err(ApplyError::Conflict {
                actor: self.actors[slot as usize].id.clone(),
                seq,
            }),
            None => Ok(()),
        }
    }

    fn hold_back(&mut self, slot: ActorSlot, batch: &RecordBatch, applied: &mut Applied) {
        let key = (slot, batch.first_seq());
        let longer_held = self
            .pending
            .get(&key)
            .is_some_and(|b| b.len() >= batch.len());
        if longer_held {
            applied.held_back = batch.len();
        } else if self.pending_records + batch.len() > PENDING_RECORDS_MAX {
            applied.refused = batch.len();
        } else {
            if let Some(shorter) = self.pending.insert(key, batch.clone()) {
                self.pending_records -= shorter.len();
            }
            self.pending_records += batch.len();
            applied.held_back = batch.len();
        }
    }

    /// Applies held-back batches of `slot` that the last append made contiguous.
    fn release_pending(&mut self, slot: ActorSlot) -> usize {
        let mut added = 0;
        loop {
            let next = self.store.held(slot) + 1;
            let ready = self
                .pending
                .range((slot, 0)..=(slot, next))
                .next()
                .map(|(&key, _)| key);
            let Some(key) = ready else { return added };
            let Some(batch) = self.pending.remove(&key) else {
                return added;
            };
            self.pending_records -= batch.len();
            // A held-back batch that now conflicts is dropped: anti-entropy resends the truth.
            if self.check_overlap(slot, &batch).is_ok() && batch.last_seq() >= next {
                added += self.append_from(slot, &batch, next);
            }
        }
    }

    /// Appends the records of `batch` from seq `from` on (which must be `held + 1`).
    fn append_from(&mut self, slot: ActorSlot, batch: &RecordBatch, from: Seq) -> usize {
        debug_assert_eq!(from, self.store.held(slot) + 1);
        let records = batch.iter().skip((from - batch.first_seq()) as usize);
        self.append_records(slot, records, Seq::MAX)
    }

    /// Appends `records`, the next ones of `slot` in seq order, with their counts and the
    /// winner rule. Records from seq `unique_from` on are of vote IDs the caller knows no
    /// record is held for, so they join the index without a comparison.
    fn append_records(
        &mut self,
        slot: ActorSlot,
        mut records: impl Iterator<Item = BatchRecord>,
        unique_from: Seq,
    ) -> usize {
        let mut run = AcceptedRun {
            second: 0,
            counts: [0; OPTIONS_MAX],
        };
        let mut added = 0;
        let unused = BatchRecord {
            seq: 0,
            vote_id: VoteId(0),
            option: OptionIndex(0),
            second: 0,
        };
        let mut group = [unused; LOOKUP_AHEAD];
        loop {
            let mut len = 0;
            for (place, record) in group.iter_mut().zip(records.by_ref()) {
                *place = record;
                len += 1;
            }
            if len == 0 {
                break;
            }
            self.warm_index(&group[..len]);
            for &record in &group[..len] {
                if record.second != run.second {
                    self.flush_run(slot, &mut run);
                    run.second = record.second;
                }
                run.counts[record.option.get()] += 1;
                if record.seq >= unique_from {
                    self.store
                        .append_unique(slot, record.vote_id, record.option, record.second);
                } else {
                    self.add_record(slot, record);
                }
                added += 1;
            }
        }
        self.flush_run(slot, &mut run);
        added
    }

    /// Looks up the vote IDs of `group` back to back, so that their cache misses overlap;
    /// the lookups and inserts that follow, one record at a time, then find the index's
    /// control bytes in the cache. Unique records are warmed too: their inserts probe the same
    /// control bytes, and their accepts' lookups (a group commit earlier) have left the cache
    /// since. Only a warm-up: an ID repeated within the group is looked up again, after the
    /// inserts before it.
    fn warm_index(&self, group: &[BatchRecord]) {
        let mut found = 0;
        for record in group {
            found += usize::from(self.store.winner_position(record.vote_id).is_some());
        }
        std::hint::black_box(found);
    }

    /// Appends this node's own records, which its log has just made durable: what
    /// [`Self::apply`] does with a batch of them, without building and checking one. The
    /// records are `actor`'s next ones (the first is seq `held + 1`), of known options. No
    /// record of their vote IDs is held from seq `unique_from` on: the caller deduplicated
    /// them against this state when they were accepted, and nothing else was added since.
    pub(crate) fn append_own_durable(
        &mut self,
        actor: &ActorId,
        records: impl Iterator<Item = BatchRecord>,
        unique_from: Seq,
    ) -> Result<usize, ApplyError> {
        let slot = self.slot(actor)?;
        let mut expected = self.store.held(slot) + 1;
        let option_count = self.option_count;
        let records = records.inspect(move |record| {
            assert_eq!(record.seq, expected, "own records out of order");
            assert!(
                record.option.get() < option_count,
                "own record of no option"
            );
            expected += 1;
        });
        let added = self.append_records(slot, records, unique_from);
        if !self.pending.is_empty() {
            // Batches of this actor held back for a gap (relayed copies of its own records
            // read back at start-up) may now be contiguous.
            self.release_pending(slot);
        }
        Ok(added)
    }

    fn flush_run(&mut self, slot: ActorSlot, run: &mut AcceptedRun) {
        let derived = &mut self.actors[slot as usize].derived;
        for (option, count) in run.counts.iter_mut().enumerate() {
            if *count > 0 {
                // Infallible: option < OPTIONS_MAX ≤ 256 (asserted in ids.rs).
                derived.add_accepted(run.second, OptionIndex(option as u8), *count);
                *count = 0;
            }
        }
    }

    /// Stores one record and applies the winner rule to its vote ID.
    fn add_record(&mut self, slot: ActorSlot, record: BatchRecord) {
        let position = self
            .store
            .append(slot, record.vote_id, record.option, record.second);
        let Some(winner_position) = self.store.index_if_new(position) else {
            return;
        };
        let winner = self.store.record_at(winner_position);
        let new_key = (record.second, &self.actors[slot as usize].id, record.seq);
        let winner_key = (
            winner.second,
            &self.actors[winner.actor as usize].id,
            winner.seq,
        );
        assert_ne!(new_key, winner_key, "a record was stored twice");
        if !self.retract_losers {
            return;
        }
        if new_key < winner_key {
            self.store.index_replace(position);
            let loser = &mut self.actors[winner.actor as usize].derived;
            loser.add_retracted(winner.second, winner.option);
        } else {
            let loser = &mut self.actors[slot as usize].derived;
            loser.add_retracted(record.second, record.option);
        }
    }

    /// Notes that `actor` is its node's current incarnation: every other incarnation of that
    /// node is superseded from now on. A node gets a new incarnation only when it starts on an
    /// empty disk, so an older one can never log another record; the counts it had reported
    /// beyond the records that reached someone before its disk was lost can never be backed
    /// by a record, so its view falls back to what its records prove. Once those records are
    /// everywhere, every replica shows the same, exact, totals (DESIGN.md invariant 2), where
    /// the larger reported counts would stay above the exact tally forever. Returns whether
    /// any actor became superseded.
    pub fn note_current_incarnation(&mut self, actor: &ActorId) -> bool {
        self.current.insert(actor.node.clone(), actor.incarnation);
        let mut changed = false;
        for state in &mut self.actors {
            if state.id.node == actor.node
                && state.id.incarnation != actor.incarnation
                && !state.superseded
            {
                state.superseded = true;
                changed = true;
            }
        }
        changed
    }

    /// Renumbers the poll's options after a redefinition that reorders or adds options:
    /// `mapping[old]` is each old option's new index, and the poll now has `option_count`
    /// options. Every record, counter and held-back batch keeps naming the option it named; the
    /// winners do not change (the winner rule does not read options). O(records held).
    pub(crate) fn remap_options(&mut self, mapping: &[OptionIndex], option_count: usize) {
        assert_eq!(
            mapping.len(),
            self.option_count,
            "one new index per old option"
        );
        assert!(option_count <= OPTIONS_MAX && mapping.iter().all(|o| o.get() < option_count));
        let bytes: Vec<u8> = mapping.iter().map(|o| o.0).collect();
        let mut seen = bytes.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), bytes.len(), "two options mapped to one");
        self.store.remap_options(&bytes);
        for actor in &mut self.actors {
            actor.derived = actor.derived.remapped(mapping);
            actor.reported = actor.reported.remapped(mapping);
        }
        for batch in self.pending.values_mut() {
            batch.remap_options(&bytes);
        }
        self.option_count = option_count;
    }

    /// Turns the winner rule's retraction off (planted bug; see
    /// [`crate::Replica::plant_bug_keep_duplicates`]).
    pub(crate) fn plant_bug_keep_duplicates(&mut self) {
        self.retract_losers = false;
    }

    /// Raises `actor`'s reported counters with counts a peer sent; returns whether anything rose.
    pub fn merge_reported(
        &mut self,
        actor: &ActorId,
        counters: &Counters,
    ) -> Result<bool, ApplyError> {
        if let Some((_, option, _)) = counters
            .iter()
            .find(|(_, o, _)| o.get() >= self.option_count)
        {
            return Err(ApplyError::UnknownOption {
                seq: 0,
                option: option.0,
                option_count: self.option_count,
            });
        }
        let slot = self.slot(actor)?;
        Ok(self.actors[slot as usize].reported.merge(counters))
    }

    /// Each actor's counters as this replica sees them (derived and reported, the larger).
    pub fn counter_views(&self) -> Vec<(ActorId, Counters)> {
        self.actors
            .iter()
            .map(|a| (a.id.clone(), a.view()))
            .collect()
    }

    /// Net votes per option from the fast path, counting buckets up to `at` (all if `None`).
    pub fn totals(&self, at: Option<Second>) -> Vec<i64> {
        let mut totals = vec![0i64; self.option_count];
        for actor in &self.actors {
            for (second, option, pair) in actor.view().iter() {
                if at.is_none_or(|at| second <= at) {
                    totals[option.get()] += pair.net();
                }
            }
        }
        totals
    }

    /// Net votes per (second, option) from the fast path: the time series.
    pub fn history(&self) -> BTreeMap<Second, Vec<i64>> {
        let mut history: BTreeMap<Second, Vec<i64>> = BTreeMap::new();
        for actor in &self.actors {
            for (second, option, pair) in actor.view().iter() {
                let row = history
                    .entry(second)
                    .or_insert_with(|| vec![0; self.option_count]);
                row[option.get()] += pair.net();
            }
        }
        history
    }

    /// The exact tally: winners by (second, option), computed by scanning every vote ID.
    /// O(vote IDs); for checks and audits, not for serving.
    pub fn exact_tally(&self) -> BTreeMap<(Second, OptionIndex), u64> {
        let mut tally = BTreeMap::new();
        self.store.for_each_winner(|winner| {
            *tally.entry((winner.second, winner.option)).or_insert(0) += 1;
        });
        tally
    }

    /// Exact net votes per option (all seconds).
    pub fn exact_totals(&self) -> Vec<i64> {
        let mut totals = vec![0i64; self.option_count];
        for ((_, option), count) in self.exact_tally() {
            totals[option.get()] += count as i64;
        }
        totals
    }

    /// Highest contiguous seq held per actor.
    pub fn version_vector(&self) -> VersionVector {
        self.actors
            .iter()
            .zip(0..)
            .map(|(a, slot)| (a.id.clone(), self.store.held(slot)))
            .collect()
    }

    /// The records a replica whose vector is `theirs` lacks, at most `records_max` of them, in
    /// batches of at most [`RECORDS_PER_BATCH_MAX`], actor by actor.
    pub fn missing_for(&self, theirs: &VersionVector, records_max: usize) -> Vec<RecordBatch> {
        let mut batches = Vec::new();
        let mut budget = records_max;
        for actor in &self.actors {
            let missing = self.records_of(&actor.id, theirs.get(&actor.id), budget);
            budget -= missing.iter().map(RecordBatch::len).sum::<usize>();
            batches.extend(missing);
        }
        batches
    }

    /// `actor`'s records after seq `after`, at most `records_max` of them, in batches of at
    /// most [`RECORDS_PER_BATCH_MAX`] (the pushes of replicated acks).
    pub fn records_of(&self, actor: &ActorId, after: Seq, records_max: usize) -> Vec<RecordBatch> {
        let Some(&slot) = self.slots.get(actor) else {
            return Vec::new();
        };
        let mut batches = Vec::new();
        let mut budget = records_max;
        let mut from = after + 1;
        let held = self.store.held(slot);
        while from <= held && budget > 0 {
            let count = (held - from + 1).min(RECORDS_PER_BATCH_MAX.min(budget) as Seq);
            let to = from + count - 1;
            let mut batch = RecordBatch::new(self.poll.clone(), actor.clone(), from);
            self.store
                .for_each_in_range(slot, from, to, |_, id, option, second| {
                    batch.push(id, option, second)
                });
            batches.push(batch);
            budget -= count as usize;
            from = to + 1;
        }
        batches
    }

    /// Bytes of heap the records and the index have reserved.
    pub fn heap_bytes(&self) -> usize {
        self.store.heap_bytes()
    }
}

impl Merge for PollState {
    /// Union of the records, max of the reported counters.
    fn merge(&mut self, other: &Self) -> bool {
        let mut changed = false;
        for batch in other.missing_for(&self.version_vector(), usize::MAX) {
            let applied = self.apply(&batch);
            assert!(
                applied.is_ok(),
                "merging two valid states failed: {applied:?}"
            );
            changed |= applied.is_ok_and(|a| a.added > 0);
        }
        for actor in &other.actors {
            let merged = self.merge_reported(&actor.id, &actor.reported);
            assert!(
                merged.is_ok(),
                "merging two valid states failed: {merged:?}"
            );
            changed |= merged.unwrap_or(false);
        }
        changed
    }
}

impl Clone for PollState {
    /// A copy holding the same records and reported counters (pending batches are not copied:
    /// they are not yet part of the state).
    fn clone(&self) -> Self {
        let mut copy = PollState::new(self.poll.clone(), self.option_count, self.hash_seed);
        copy.merge(self);
        copy
    }
}

impl PartialEq for PollState {
    /// Equal when both hold the same records and the same reported counters.
    fn eq(&self, other: &Self) -> bool {
        let records = |s: &PollState| s.missing_for(&VersionVector::default(), usize::MAX);
        let reported = |s: &PollState| -> BTreeMap<ActorId, Counters> {
            s.actors
                .iter()
                .filter(|a| !a.reported.is_empty())
                .map(|a| (a.id.clone(), a.reported.clone()))
                .collect()
        };
        let mut mine = records(self);
        let mut theirs = records(other);
        mine.sort_by(|a, b| (a.actor(), a.first_seq()).cmp(&(b.actor(), b.first_seq())));
        theirs.sort_by(|a, b| (a.actor(), a.first_seq()).cmp(&(b.actor(), b.first_seq())));
        self.poll == other.poll
            && self.option_count == other.option_count
            && mine == theirs
            && reported(self) == reported(other)
    }
}

impl fmt::Debug for PollState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollState")
            .field("options", &self.option_count)
            .field("version_vector", &self.version_vector())
            .field("distinct_vote_ids", &self.distinct_vote_ids())
            .field("pending_records", &self.pending_records)
            .finish()
    }
}
