//! Where a poll's vote records live, and the dedupe index over them, packed to ~24 bytes a vote.
//!
//! Records sit in fixed-size chunks, each chunk owned by one actor and filled in that actor's
//! seq order; a record is 17 bytes (16-byte ID, 1-byte option). Seconds are run-length encoded
//! per actor, since an actor stamps its records in time order. A record's *position* (chunk
//! number × chunk size + offset) is a `u32`, and the dedupe index is a table of positions
//! (4 bytes a slot, plus a control byte) that compares keys by reading the record, so no vote
//! ID is stored twice. The index holds, for each vote ID, the position of its current winner,
//! and grows a bounded step at a time, never stopping the world (`position_index.rs`).
//!
//! A store that holds many records keeps a few spare chunks whose memory its owner's helper
//! thread allocated and faulted in (`prepared_memory.rs`), so that the owner does not pay
//! the records' page faults as votes arrive; without spares it allocates as before.
//!
//! Hashing uses a keyed hasher seeded by the caller (a per-node secret), because vote IDs are
//! chosen by clients and must not be able to aim at one bucket.
//!
//! The index's control bytes (one per slot) sit apart from the positions, so looking up a
//! new ID reads only a region a fifth the size of the table. Tried and not kept (figures in
//! BENCHMARKS.md, "Huge pages and batch accepts"):
//! - 8-byte slots holding 32 hash bits beside the position: every lookup became a DRAM miss;
//! - 256 shards resizing on their own: with the heap on huge pages (node/src/huge_pages.rs)
//!   one big table is backed by 2 MiB pages and 256 small ones are not, and remote applies
//!   fell from ~9M to ~5–7M records/s.
//! - hashbrown's `HashTable`, used until its all-at-once growth was replaced (BENCHMARKS.md,
//!   "No stop-the-world"): even a table filled step by step is allocated by writing every
//!   control byte at once, 19–42 ms at 2²⁶–2²⁷ slots.

use crate::ids::{OptionIndex, Second, Seq};
use crate::limits::RECORD_CHUNKS_SPARE_MAX;
use crate::position_index::{IndexGrowth, IndexGrowthEvents, PositionIndex};
use crate::position_table::{Keys, PAGE_BYTES, Position, PositionTable};
use crate::vote_id::VoteId;

/// Records per chunk. A chunk is 4096 × 17 bytes ≈ 68 KiB; the last chunk of each actor may
/// be partly filled.
pub(crate) const CHUNK_RECORDS: usize = 4096;
const CHUNK_SHIFT: u32 = CHUNK_RECORDS.trailing_zeros();
const _: () = assert!(CHUNK_RECORDS.is_power_of_two());

/// Dense per-poll actor number, an index into the poll's actor table.
pub(crate) type ActorSlot = u32;

struct Chunk {
    actor: ActorSlot,
    first_seq: Seq,
    vote_ids: Vec<u128>,
    options: Vec<u8>,
}

/// One actor's records: its chunks in seq order and its seconds as runs.
#[derive(Default)]
struct ActorRecords {
    chunks: Vec<u32>,
    /// `(first seq of the run, second)`, in seq order; a run lasts until the next one.
    second_runs: Vec<(Seq, Second)>,
    held: Seq,
}

/// A record read back from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoredRecord {
    pub(crate) actor: ActorSlot,
    pub(crate) seq: Seq,
    pub(crate) vote_id: VoteId,
    pub(crate) option: OptionIndex,
    pub(crate) second: Second,
}

/// An empty dedupe index sized for a number of vote IDs, built away from the replica's owner.
///
/// Allocating an index for tens of millions of IDs (and zeroing its control bytes) takes tens
/// to hundreds of milliseconds; the owner of a replica (the node's engine) answers every vote,
/// so it should not do that itself. An empty table holds no positions, so it does not depend
/// on the poll's records or its hasher: anyone can build it, and the owner installs it in
/// O(1) with [`crate::Replica::reserve_vote_ids_with`] while the poll's index is still empty.
/// Its pages are touched as it is built, so the first votes do not fault them in.
pub struct ReservedIndex(PositionTable);

impl ReservedIndex {
    /// An empty index that holds `vote_ids` IDs (at most
    /// [`crate::limits::RESERVED_VOTE_IDS_MAX`]) before it must grow.
    pub fn for_vote_ids(vote_ids: usize) -> Self {
        let vote_ids = vote_ids.min(crate::limits::RESERVED_VOTE_IDS_MAX);
        Self::with_groups(PositionTable::groups_for(vote_ids))
    }

    /// An empty index of `groups` groups, its pages touched (an admin reservation's).
    fn with_groups(groups: usize) -> Self {
        let mut table = PositionTable::with_groups(groups);
        table.prefault(usize::MAX);
        Self(table)
    }

    /// How many distinct IDs it holds before it must grow.
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// The table as one to free.
    pub(crate) fn into_retired(self) -> RetiredIndex {
        RetiredIndex(self.0)
    }

    /// The address of its control words, to tell one allocation from another (tests).
    #[cfg(test)]
    pub(crate) fn control_address(&self) -> usize {
        self.0.control_address()
    }
}

/// A growing index's next table allocated by the replica's owner with nothing written, for
/// a helper thread to write ([`Self::prepare`]): glibc's `hugetlb=1` puts on huge pages only
/// its main arena and its own mappings, and a block under its mmap threshold (which rises to
/// 32 MiB as tables are freed) allocated on a helper thread comes from that thread's arena,
/// on 4 KiB pages: then lookups of the table (its control words and slots, up to 16 MiB each)
/// miss the TLB (BENCHMARKS.md, issue 25, eighth session: quiet groups of votes at 8–11M
/// IDs took 1.4–1.8× the time they take on huge pages). Allocated on the
/// owner's thread, the table is in the main arena or a mapping of its own, both on huge
/// pages; the owner writes no byte of it but glibc's block headers.
pub(crate) struct UnpreparedIndex(PositionTable);

impl UnpreparedIndex {
    /// A table of `groups` groups, allocated on this thread, nothing written.
    pub(crate) fn allocate(groups: usize) -> Self {
        Self(PositionTable::unzeroed(groups))
    }

    /// Writes the whole table with zeros (every page touched): an empty index ready to use.
    pub(crate) fn prepare(mut self) -> ReservedIndex {
        self.0.prefault(usize::MAX);
        ReservedIndex(self.0)
    }

    /// The address of its control words, to tell one allocation from another (tests).
    #[cfg(test)]
    pub(crate) fn control_address(&self) -> usize {
        self.0.control_address()
    }

    /// Bytes of its pages not written yet.
    #[cfg(test)]
    pub(crate) fn bytes_to_prefault(&self) -> usize {
        self.0.bytes_to_prefault()
    }
}

/// A dedupe index table a growth has moved every ID out of: dropping it frees its memory
/// (an unmap of every page, tens of milliseconds for hundreds of MB), which its owner may do
/// on another thread ([`crate::Replica::take_retired_index_tables`]).
pub struct RetiredIndex(PositionTable);

impl RetiredIndex {
    /// Bytes of heap it holds.
    pub fn heap_bytes(&self) -> usize {
        self.0.heap_bytes()
    }
}

impl std::fmt::Debug for RetiredIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetiredIndex")
            .field("heap_bytes", &self.heap_bytes())
            .finish()
    }
}

impl std::fmt::Debug for ReservedIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReservedIndex")
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// The memory of one record chunk, allocated and faulted in (written with zeros) off the
/// owner's thread, empty, with room for a whole chunk: [`crate::MemoryOrder::prepare`].
pub(crate) struct SpareChunk {
    vote_ids: Vec<u128>,
    options: Vec<u8>,
}

impl SpareChunk {
    /// A chunk's memory, every page written (a read first would map the shared zero page;
    /// `position_table.rs`), then emptied: the capacity stays, touched.
    pub(crate) fn faulted() -> Self {
        let mut vote_ids = vec![0u128; CHUNK_RECORDS];
        let mut options = vec![0u8; CHUNK_RECORDS];
        // `vec!` of zeros may be `calloc`, which writes nothing to fresh pages: write them.
        for page in vote_ids.chunks_mut(PAGE_BYTES / 16) {
            page[0] = std::hint::black_box(0);
        }
        options[0] = std::hint::black_box(0);
        vote_ids[CHUNK_RECORDS - 1] = std::hint::black_box(0);
        options[CHUNK_RECORDS - 1] = std::hint::black_box(0);
        vote_ids.clear();
        options.clear();
        Self { vote_ids, options }
    }
}

/// The records of one poll and the index of each vote ID's winner.
pub(crate) struct RecordStore {
    chunks: Vec<Chunk>,
    actors: Vec<ActorRecords>,
    index: PositionIndex,
    hasher: ahash::RandomState,
    /// Chunks' memory prepared off the owner's thread, taken by the next new chunks; at most
    /// [`RECORD_CHUNKS_SPARE_MAX`].
    spare_chunks: Vec<SpareChunk>,
    /// Whether spare chunks are ordered and not yet delivered (or cancelled).
    spares_ordered: bool,
}

impl RecordStore {
    /// An empty store whose index hashes with keys derived from `hash_seed`.
    pub(crate) fn new(hash_seed: [u64; 4]) -> Self {
        let [k0, k1, k2, k3] = hash_seed;
        Self {
            chunks: Vec::new(),
            actors: Vec::new(),
            index: PositionIndex::default(),
            hasher: ahash::RandomState::with_seeds(k0, k1, k2, k3),
            spare_chunks: Vec::new(),
            spares_ordered: false,
        }
    }

    /// Makes room for one more actor; returns its slot.
    pub(crate) fn add_actor(&mut self) -> ActorSlot {
        self.actors.push(ActorRecords::default());
        // Infallible in practice: callers cap actors at ACTORS_PER_POLL_MAX.
        ActorSlot::try_from(self.actors.len() - 1).unwrap_or(ActorSlot::MAX)
    }

    /// Highest contiguous seq held for `actor`.
    pub(crate) fn held(&self, actor: ActorSlot) -> Seq {
        self.actors[actor as usize].held
    }

    /// Number of distinct vote IDs held.
    pub(crate) fn distinct_vote_ids(&self) -> usize {
        self.index.len()
    }

    fn hash(&self, vote_id: VoteId) -> u64 {
        self.hasher.hash_one(vote_id.0)
    }

    /// The position of `vote_id`'s current winner, if the ID is known.
    pub(crate) fn winner_position(&self, vote_id: VoteId) -> Option<Position> {
        let chunks = &self.chunks;
        self.index
            .find(self.hash(vote_id), |p| id_at(chunks, p) == vote_id.0)
    }

    /// Sizes the index for `vote_ids` distinct IDs in all, so it does not grow until it
    /// holds more: at once if it holds no ID, otherwise by growing step by step.
    pub(crate) fn reserve(&mut self, vote_ids: usize) {
        let keys = StoredKeys::of(&self.chunks, &self.hasher);
        self.index.reserve(vote_ids, &keys);
    }

    /// As [`Self::reserve`], a growth step at a time even while it holds no ID.
    pub(crate) fn reserve_gradually(&mut self, vote_ids: usize) {
        let keys = StoredKeys::of(&self.chunks, &self.hasher);
        self.index.reserve_gradually(vote_ids, &keys);
    }

    /// Puts `index` in place of this store's index if that holds no ID yet and `index` is
    /// larger; otherwise hands it back unchanged.
    pub(crate) fn install_index(&mut self, index: ReservedIndex) -> Result<(), ReservedIndex> {
        if self.index.len() == 0 && index.capacity() > self.index.capacity() {
            self.index = PositionIndex::from_table(index.0);
            Ok(())
        } else {
            Err(index)
        }
    }

    /// Runs up to `steps` growth steps of the index (each moves at most
    /// [`crate::limits::INDEX_GROWTH_STEP_MOVES_MAX`] IDs) while `keep_going` says so (asked
    /// before each step); returns whether it still grows.
    pub(crate) fn advance_index_growth(
        &mut self,
        steps: usize,
        keep_going: impl FnMut() -> bool,
    ) -> bool {
        let keys = StoredKeys::of(&self.chunks, &self.hasher);
        self.index.advance(steps, &keys, keep_going)
    }

    /// The index table the last growth moved out of, if not taken yet (see
    /// [`crate::Replica::take_retired_index_tables`]).
    pub(crate) fn take_retired_index(&mut self) -> Option<RetiredIndex> {
        self.index.take_retired().map(RetiredIndex)
    }

    /// Whether the index has growth work left (a table to prepare or move).
    pub(crate) fn index_is_growing(&self) -> bool {
        self.index.is_growing()
    }

    /// Where the index's growth stands, if it is growing.
    pub(crate) fn index_growth(&self) -> Option<IndexGrowth> {
        self.index.growth()
    }

    /// What the index's growth has done so far (a diagnostic).
    pub(crate) fn index_growth_events(&self) -> IndexGrowthEvents {
        self.index.events()
    }

    /// How many distinct IDs the index holds before it must grow.
    pub(crate) fn index_capacity(&self) -> usize {
        self.index.capacity()
    }

    /// Whether any record for `vote_id` is held.
    pub(crate) fn contains(&self, vote_id: VoteId) -> bool {
        self.winner_position(vote_id).is_some()
    }

    /// Appends the next record (seq `held + 1`) of `actor`. Does not touch the index.
    pub(crate) fn append(
        &mut self,
        actor: ActorSlot,
        vote_id: VoteId,
        option: OptionIndex,
        second: Second,
    ) -> Position {
        let seq = self.actors[actor as usize].held + 1;
        let chunk_number = match self.actors[actor as usize].chunks.last() {
            Some(&last) if self.chunks[last as usize].vote_ids.len() < CHUNK_RECORDS => last,
            _ => self.new_chunk(actor, seq),
        };
        let chunk = &mut self.chunks[chunk_number as usize];
        let offset = chunk.vote_ids.len();
        chunk.vote_ids.push(vote_id.0);
        chunk.options.push(option.0);
        let records = &mut self.actors[actor as usize];
        records.held = seq;
        if records.second_runs.last().map(|&(_, s)| s) != Some(second) {
            records.second_runs.push((seq, second));
        }
        let position = (chunk_number << CHUNK_SHIFT) | offset as u32;
        debug_assert_eq!(self.record_at(position).seq, seq);
        position
    }

    fn new_chunk(&mut self, actor: ActorSlot, first_seq: Seq) -> u32 {
        let chunk_number = self.chunks.len();
        assert!(
            chunk_number < (1usize << (32 - CHUNK_SHIFT)),
            "record store full: positions are 32-bit"
        );
        // An actor's first chunk grows as it fills (a poll may see few votes from an actor);
        // once an actor has filled one, the next is allocated whole instead of regrown and
        // copied five times on its way to 68 KiB.
        let first = self.actors[actor as usize].chunks.is_empty();
        let memory = match self.spare_chunks.pop() {
            Some(spare) if !first => spare,
            other => {
                self.spare_chunks.extend(other);
                let records = if first { 0 } else { CHUNK_RECORDS };
                SpareChunk {
                    vote_ids: Vec::with_capacity(records),
                    options: Vec::with_capacity(records),
                }
            }
        };
        self.chunks.push(Chunk {
            actor,
            first_seq,
            vote_ids: memory.vote_ids,
            options: memory.options,
        });
        let chunk_number = chunk_number as u32;
        self.actors[actor as usize].chunks.push(chunk_number);
        chunk_number
    }

    /// Appends the next record of `actor` and indexes it as the winner of `vote_id`, which the
    /// caller knows has no record held: no comparison with other records, no record read.
    pub(crate) fn append_unique(
        &mut self,
        actor: ActorSlot,
        vote_id: VoteId,
        option: OptionIndex,
        second: Second,
    ) {
        let position = self.append(actor, vote_id, option, second);
        debug_assert!(!self.contains(vote_id), "vote ID already held");
        let hash = self.hash(vote_id);
        let keys = StoredKeys::of(&self.chunks, &self.hasher);
        self.index.insert_new(hash, position, &keys);
    }

    /// Indexes `position` as the winner of its vote ID if the ID has none; otherwise leaves
    /// the index alone and returns the current winner's position.
    pub(crate) fn index_if_new(&mut self, position: Position) -> Option<Position> {
        let vote_id = id_at(&self.chunks, position);
        let hash = self.hasher.hash_one(vote_id);
        let keys = StoredKeys::of(&self.chunks, &self.hasher);
        self.index
            .insert_if_new(hash, |p| keys.key_at(p) == vote_id, position, &keys)
    }

    /// Replaces the indexed winner of the vote ID at `position` with `position`.
    pub(crate) fn index_replace(&mut self, position: Position) {
        let vote_id = VoteId(id_at(&self.chunks, position));
        let hash = self.hash(vote_id);
        let chunks = &self.chunks;
        let replaced = self
            .index
            .replace(hash, |p| id_at(chunks, p) == vote_id.0, position);
        assert!(replaced, "index_replace of an unindexed vote ID");
    }

    /// Reads the record at `position`.
    pub(crate) fn record_at(&self, position: Position) -> StoredRecord {
        let chunk = &self.chunks[(position >> CHUNK_SHIFT) as usize];
        let offset = (position as usize) & (CHUNK_RECORDS - 1);
        let seq = chunk.first_seq + offset as Seq;
        StoredRecord {
            actor: chunk.actor,
            seq,
            vote_id: VoteId(chunk.vote_ids[offset]),
            option: OptionIndex(chunk.options[offset]),
            second: self.second_of(chunk.actor, seq),
        }
    }

    /// The second stamped on `actor`'s record `seq` (which must be held).
    fn second_of(&self, actor: ActorSlot, seq: Seq) -> Second {
        let runs = &self.actors[actor as usize].second_runs;
        let run = runs.partition_point(|&(first, _)| first <= seq);
        runs[run - 1].1
    }

    /// Calls `visit` with `actor`'s records `from..=to` in seq order.
    pub(crate) fn for_each_in_range(
        &self,
        actor: ActorSlot,
        from: Seq,
        to: Seq,
        mut visit: impl FnMut(Seq, VoteId, OptionIndex, Second),
    ) {
        let records = &self.actors[actor as usize];
        assert!(
            from >= 1 && to <= records.held,
            "range outside held records"
        );
        let mut run = records
            .second_runs
            .partition_point(|&(first, _)| first <= from)
            - 1;
        for seq in from..=to {
            while run + 1 < records.second_runs.len() && records.second_runs[run + 1].0 <= seq {
                run += 1;
            }
            let index = (seq - 1) as usize;
            let chunk = &self.chunks[records.chunks[index / CHUNK_RECORDS] as usize];
            let offset = index % CHUNK_RECORDS;
            visit(
                seq,
                VoteId(chunk.vote_ids[offset]),
                OptionIndex(chunk.options[offset]),
                records.second_runs[run].1,
            );
        }
    }

    /// Renumbers every record's option: `mapping[old]` is its new index. Positions, vote IDs,
    /// seconds and the index stay as they are (the winner rule does not read options).
    pub(crate) fn remap_options(&mut self, mapping: &[u8]) {
        for chunk in &mut self.chunks {
            for option in &mut chunk.options {
                *option = mapping[usize::from(*option)];
            }
        }
    }

    /// Calls `visit` with each vote ID's winner.
    pub(crate) fn for_each_winner(&self, mut visit: impl FnMut(StoredRecord)) {
        self.index
            .for_each(|position| visit(self.record_at(position)));
    }

    /// How many spare chunks to order from the owner's helper thread, if it is time: the
    /// store holds at least 128 chunks, fewer than half its share of spares
    /// (one per 64 chunks, at most [`RECORD_CHUNKS_SPARE_MAX`]), and none are ordered yet.
    pub(crate) fn order_chunks(&mut self) -> Option<usize> {
        let share = (self.chunks.len() / 64).min(RECORD_CHUNKS_SPARE_MAX);
        if self.spares_ordered || share < 2 || self.spare_chunks.len() >= share / 2 {
            return None;
        }
        self.spares_ordered = true;
        Some(share - self.spare_chunks.len())
    }

    /// Takes spare chunks prepared off the owner's thread (up to the limit; the rest are
    /// dropped), and ends their order.
    pub(crate) fn add_spare_chunks(&mut self, spares: Vec<SpareChunk>) {
        self.spares_ordered = false;
        let room = RECORD_CHUNKS_SPARE_MAX - self.spare_chunks.len();
        self.spare_chunks.extend(spares.into_iter().take(room));
    }

    /// Forgets an order of spare chunks that will not be met.
    pub(crate) fn cancel_chunks_order(&mut self) {
        self.spares_ordered = false;
    }

    /// The size of the index's next table, if it is time to order it from the owner's helper
    /// thread and it spans `bytes_min` bytes or more (`PositionIndex::order_table`).
    pub(crate) fn order_index_table(&mut self, bytes_min: usize) -> Option<usize> {
        self.index.order_table(bytes_min)
    }

    /// Forgets an order of the index's next table that will not be met.
    pub(crate) fn cancel_index_table_order(&mut self, groups: usize) {
        self.index.cancel_order(groups);
    }

    /// Offers the index a next table prepared off the owner's thread; returns a table for
    /// the owner to free off its thread, if any (`PositionIndex::offer`).
    pub(crate) fn offer_index_table(&mut self, table: ReservedIndex) -> Option<RetiredIndex> {
        self.index.offer(table.0).map(RetiredIndex)
    }

    /// Bytes of heap this store has reserved (capacity, not length): the memory it costs.
    pub(crate) fn heap_bytes(&self) -> usize {
        let chunk_bytes: usize = self
            .chunks
            .iter()
            .map(|c| c.vote_ids.capacity() * 16 + c.options.capacity())
            .sum();
        let actor_bytes: usize = self
            .actors
            .iter()
            .map(|a| a.chunks.capacity() * 4 + a.second_runs.capacity() * 16)
            .sum();
        let spare_bytes = self.spare_chunks.len() * CHUNK_RECORDS * 17;
        chunk_bytes
            + spare_bytes
            + actor_bytes
            + self.index.heap_bytes()
            + self.chunks.capacity() * std::mem::size_of::<Chunk>()
    }
}

/// The vote IDs of a store's records as its index reads and hashes them when it moves them.
struct StoredKeys<'a> {
    chunks: &'a [Chunk],
    hasher: &'a ahash::RandomState,
}

impl<'a> StoredKeys<'a> {
    fn of(chunks: &'a [Chunk], hasher: &'a ahash::RandomState) -> Self {
        Self { chunks, hasher }
    }
}

impl Keys for StoredKeys<'_> {
    type Key = u128;

    fn key_at(&self, position: Position) -> u128 {
        id_at(self.chunks, position)
    }

    fn hash(&self, vote_id: u128) -> u64 {
        self.hasher.hash_one(vote_id)
    }
}

fn id_at(chunks: &[Chunk], position: Position) -> u128 {
    chunks[(position >> CHUNK_SHIFT) as usize].vote_ids[(position as usize) & (CHUNK_RECORDS - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written_across_chunks_and_second_runs() {
        // Goal: positions, seqs and run-length seconds survive chunk boundaries.
        let mut store = RecordStore::new([1, 2, 3, 4]);
        let a = store.add_actor();
        let b = store.add_actor();
        let count = CHUNK_RECORDS as u128 * 2 + 10;
        let mut positions = Vec::new();
        for i in 0..count {
            let second = (i / 1000) as Second;
            positions.push(store.append(a, VoteId(i), OptionIndex((i % 3) as u8), second));
            store.append(b, VoteId(i + 1_000_000), OptionIndex(1), 7);
        }
        for (i, &p) in positions.iter().enumerate() {
            let record = store.record_at(p);
            assert_eq!(record.actor, a);
            assert_eq!(record.seq, i as Seq + 1);
            assert_eq!(record.vote_id, VoteId(i as u128));
            assert_eq!(record.second, (i / 1000) as Second);
        }
        let mut seen = Vec::new();
        store.for_each_in_range(a, 4095, 4098, |seq, id, _, second| {
            seen.push((seq, id.0, second))
        });
        assert_eq!(
            seen,
            vec![
                (4095, 4094, 4),
                (4096, 4095, 4),
                (4097, 4096, 4),
                (4098, 4097, 4)
            ]
        );
    }

    #[test]
    fn spare_chunks_prepared_off_thread_become_new_chunks_and_records_read_back_as_written() {
        // Goal: a store takes its next chunks' memory from spares its owner's helper
        // prepared (only for an actor's second chunk on: a first chunk grows as it fills),
        // orders them only once it holds 128 chunks and not again until they arrive, keeps
        // at most its share, and reads every record back as written. Method: two actors;
        // spares handed over at the start and again once an order comes; every record read.
        let mut store = RecordStore::new([1, 2, 3, 4]);
        let a = store.add_actor();
        let b = store.add_actor();
        store.add_spare_chunks((0..3).map(|_| SpareChunk::faulted()).collect());
        assert_eq!(store.order_chunks(), None, "too few chunks to order spares");
        let small = store.append(b, VoteId(u128::MAX), OptionIndex(1), 0);
        assert_eq!(store.spare_chunks.len(), 3, "a first chunk takes no spare");
        let count = 130 * CHUNK_RECORDS;
        let mut ordered = 0;
        for i in 0..count {
            store.append(
                a,
                VoteId(i as u128 * 7),
                OptionIndex((i % 2) as u8),
                (i / 5000) as u32,
            );
            if let Some(chunks) = store.order_chunks() {
                ordered += 1;
                assert_eq!(store.order_chunks(), None, "ordered once");
                store.add_spare_chunks((0..chunks).map(|_| SpareChunk::faulted()).collect());
                assert!(store.spare_chunks.len() <= RECORD_CHUNKS_SPARE_MAX);
            }
        }
        assert!(ordered >= 1, "no order at {} chunks", store.chunks.len());
        assert!(store.spare_chunks.len() <= store.chunks.len() / 64);
        for i in 0..count {
            let record = store
                .record_at((((i / CHUNK_RECORDS + 1) << CHUNK_SHIFT) | (i % CHUNK_RECORDS)) as u32);
            assert_eq!(record.actor, a);
            assert_eq!(record.seq, i as Seq + 1);
            assert_eq!(record.vote_id, VoteId(i as u128 * 7));
            assert_eq!(record.option, OptionIndex((i % 2) as u8));
            assert_eq!(record.second, (i / 5000) as u32);
        }
        assert_eq!(store.record_at(small).vote_id, VoteId(u128::MAX));
    }

    #[test]
    fn index_finds_winners_and_replaces_them() {
        let mut store = RecordStore::new([9, 9, 9, 9]);
        let a = store.add_actor();
        let first = store.append(a, VoteId(42), OptionIndex(0), 5);
        assert!(!store.contains(VoteId(42)));
        assert_eq!(store.index_if_new(first), None);
        assert_eq!(store.winner_position(VoteId(42)), Some(first));
        let second = store.append(a, VoteId(42), OptionIndex(1), 3);
        assert_eq!(
            store.index_if_new(second),
            Some(first),
            "already indexed: unchanged"
        );
        store.index_replace(second);
        assert_eq!(store.winner_position(VoteId(42)), Some(second));
        assert_eq!(store.distinct_vote_ids(), 1);
    }

    #[test]
    fn a_reserved_index_takes_that_many_ids_without_growing_and_keeps_what_it_held() {
        // Goal: `reserve` sizes the index once, up front, and a reserve after IDs are held
        // rehashes them without losing any. Method: hold some IDs, reserve, fill to the
        // reservation, and check capacity never moved and every ID is still found.
        let mut store = RecordStore::new([5, 6, 7, 8]);
        let a = store.add_actor();
        for i in 0..1_000u128 {
            let position = store.append(a, VoteId(i), OptionIndex(0), 0);
            assert_eq!(store.index_if_new(position), None);
        }
        store.reserve(100_000);
        let reserved = store.index_capacity();
        assert!(reserved >= 100_000, "capacity {reserved}");
        for i in 1_000..100_000u128 {
            store.append_unique(a, VoteId(i), OptionIndex(1), 0);
            assert_eq!(store.index_capacity(), reserved, "grew at {i}");
        }
        store.reserve(10);
        assert_eq!(
            store.index_capacity(),
            reserved,
            "a smaller reserve shrinks nothing"
        );
        assert!((0..100_000u128).all(|i| store.contains(VoteId(i))));
        assert!(!store.contains(VoteId(100_000)));
        assert_eq!(store.distinct_vote_ids(), 100_000);
    }

    #[test]
    fn a_prebuilt_index_replaces_only_an_empty_smaller_one() {
        // Goal: an index built away from the owner is installed only where nothing can be
        // lost: the store's own index holds no ID and is smaller. Method: install into an
        // empty store (taken, then filled to the reservation without growing), then offer
        // another to a store that holds IDs and to one already larger (both handed back).
        let mut store = RecordStore::new([1, 2, 3, 4]);
        let a = store.add_actor();
        let prepared = ReservedIndex::for_vote_ids(50_000);
        let capacity = prepared.capacity();
        assert!(capacity >= 50_000, "capacity {capacity}");
        assert!(store.install_index(prepared).is_ok());
        assert_eq!(store.index_capacity(), capacity);
        for i in 0..50_000u128 {
            store.append_unique(a, VoteId(i), OptionIndex(0), 0);
            assert_eq!(store.index_capacity(), capacity, "grew at {i}");
        }
        assert!((0..50_000u128).all(|i| store.contains(VoteId(i))));

        let refused = store.install_index(ReservedIndex::for_vote_ids(200_000));
        assert!(
            refused.is_err(),
            "the store holds IDs: nothing replaces its index"
        );
        assert_eq!(store.index_capacity(), capacity);
        assert_eq!(store.distinct_vote_ids(), 50_000);

        let mut larger = RecordStore::new([1, 2, 3, 4]);
        larger.reserve(100_000);
        let kept = larger.index_capacity();
        assert!(
            larger
                .install_index(ReservedIndex::for_vote_ids(10))
                .is_err()
        );
        assert_eq!(
            larger.index_capacity(),
            kept,
            "a smaller index replaces nothing"
        );
    }
}
