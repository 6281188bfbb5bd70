//! Memory a replica will need soon, faulted in on a helper thread rather than by the
//! replica's owner (the node's engine, which answers every vote). Record chunks are allocated
//! there too; an index table is allocated by the owner, writing nothing, so that it comes from
//! the owner's glibc arena, on huge pages (`MemoryOrder::allocate`).
//!
//! A growing dedupe index's next table and the record store's next chunks are fresh memory:
//! their first touch costs a page fault, and on a VM whose hypervisor backs guest memory
//! lazily a 2 MiB huge page's first touch took ~5 ms (BENCHMARKS.md, "The fill as the node
//! runs it"). Touched by the owner, that is a vote held for milliseconds, and ~1.6 s of the
//! owner's CPU over a 30M-ID fill. So the replica says what it will need, as a value
//! ([`crate::Replica::poll_memory_order`]: the core does no I/O and starts no thread); the
//! owner has it prepared elsewhere ([`MemoryOrder::prepare`], on [`MemoryHelper`]'s threads)
//! and hands it back ([`crate::Replica::handle_prepared_memory`]). Nothing depends on it
//! arriving: an index whose table comes late grows as it does without a helper (touching
//! its next table a step at a time), a store without spare chunks allocates its own, and
//! what arrives too late to fit is handed back for the owner to free. So exactness never
//! depends on the helper: it only changes which thread pays the page faults.
//!
//! [`MemoryHelper`] is the one piece here that is not a state machine: two threads (one for
//! tables, one for chunks, so a table's hundreds of milliseconds do not hold the chunks up),
//! each with one order at a time, behind bounded channels. The node's engine and the
//! `index_growth` bench use it; the simulation's nodes run without it.

use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};

use crate::PollId;
use crate::limits::MEMORY_HELPER_JOBS_MAX;
use crate::record_store::{ReservedIndex, RetiredIndex, SpareChunk, UnpreparedIndex};

/// What kind of memory an order asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// A growing dedupe index's next table.
    IndexTable,
    /// Spare record chunks.
    RecordChunks,
}

/// Memory a poll of the replica will need soon, to be prepared off the owner's thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryOrder {
    poll: PollId,
    kind: MemoryKind,
    /// Groups of the table, or chunks.
    amount: usize,
}

impl MemoryOrder {
    pub(crate) fn new(poll: PollId, kind: MemoryKind, amount: usize) -> Self {
        Self { poll, kind, amount }
    }

    /// The poll it is for.
    pub fn poll(&self) -> &PollId {
        &self.poll
    }

    /// What it asks for.
    pub fn kind(&self) -> MemoryKind {
        self.kind
    }

    pub(crate) fn amount(&self) -> usize {
        self.amount
    }

    /// Allocates the memory and touches every page of it: tens to hundreds of milliseconds
    /// for a large table. Run it on a thread that answers no vote.
    pub fn prepare(self) -> PreparedMemory {
        self.allocate().prepare()
    }

    /// What the owner allocates itself before a helper thread prepares the order, writing
    /// nothing (O(1) but for the allocator's own bookkeeping): an index table, so that its
    /// memory comes from the owner's allocator arena, on huge pages ([`UnpreparedIndex`]).
    /// Record chunks are allocated by the helper: the owner allocating them was measured
    /// slower (the allocator's headers of each new chunk fault its pages on the owner's
    /// thread; BENCHMARKS.md, issue 25, seventh session).
    pub(crate) fn allocate(self) -> Allocated {
        match self.kind {
            MemoryKind::IndexTable => {
                let table = UnpreparedIndex::allocate(self.amount);
                Allocated::IndexTable(self, table)
            }
            MemoryKind::RecordChunks => Allocated::RecordChunks(self),
        }
    }
}

/// An order with what the owner allocated for it, nothing written ([`MemoryOrder::allocate`]),
/// to be prepared on any thread ([`Allocated::prepare`]).
pub(crate) enum Allocated {
    IndexTable(MemoryOrder, UnpreparedIndex),
    RecordChunks(MemoryOrder),
}

impl Allocated {
    /// Writes (and for record chunks, allocates) the order's memory, every page touched.
    pub(crate) fn prepare(self) -> PreparedMemory {
        let (order, memory) = match self {
            Allocated::IndexTable(order, table) => (order, Prepared::IndexTable(table.prepare())),
            Allocated::RecordChunks(order) => {
                let chunks = (0..order.amount).map(|_| SpareChunk::faulted()).collect();
                (order, Prepared::RecordChunks(chunks))
            }
        };
        PreparedMemory { order, memory }
    }
}

/// Memory prepared for an order, to hand back to the replica.
pub struct PreparedMemory {
    order: MemoryOrder,
    memory: Prepared,
}

impl PreparedMemory {
    /// The order it meets.
    pub fn order(&self) -> &MemoryOrder {
        &self.order
    }

    pub(crate) fn into_parts(self) -> (MemoryOrder, Prepared) {
        (self.order, self.memory)
    }
}

impl std::fmt::Debug for PreparedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedMemory")
            .field("order", &self.order)
            .finish()
    }
}

/// The memory itself.
pub(crate) enum Prepared {
    IndexTable(ReservedIndex),
    RecordChunks(Vec<SpareChunk>),
}

/// What a helper thread does.
enum Job {
    /// Prepares an order in what the owner allocated for it.
    Prepare(Allocated),
    /// Frees an index table left over (its unmap takes milliseconds).
    Free(RetiredIndex),
}

/// One helper thread and its order in flight.
struct Lane {
    kind: MemoryKind,
    jobs: SyncSender<Job>,
    ready: Receiver<PreparedMemory>,
    in_flight: Option<MemoryOrder>,
    alive: bool,
}

/// Two threads that prepare a replica's memory orders, one order of each kind at a time.
/// Dropping it ends them once their current job is done.
pub struct MemoryHelper {
    lanes: [Lane; 2],
    handed_over: u64,
}

impl MemoryHelper {
    /// Starts the helper threads.
    pub fn spawn() -> std::io::Result<Self> {
        Ok(Self {
            lanes: [
                Lane::spawn(MemoryKind::IndexTable, "tally-index-prep")?,
                Lane::spawn(MemoryKind::RecordChunks, "tally-chunk-prep")?,
            ],
            handed_over: 0,
        })
    }

    /// Hands `replica` what the threads have prepared, and gives each idle thread the next
    /// order, if any. Never waits. Call it often (the node's engine: on every wake-up).
    /// Returns the index tables left over that the tables' thread could not take to free
    /// (its queue full): the caller frees them off its own thread.
    #[must_use = "a left-over table dropped here is unmapped on the caller's thread"]
    pub fn tend(&mut self, replica: &mut crate::Replica) -> Vec<RetiredIndex> {
        let mut left_over = Vec::new();
        for lane in &mut self.lanes {
            loop {
                match lane.ready.try_recv() {
                    Ok(prepared) => {
                        lane.in_flight = None;
                        self.handed_over += 1;
                        if let Some(left) = replica.handle_prepared_memory(prepared) {
                            left_over.extend(lane.free(left));
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        lane.alive = false;
                        if let Some(order) = lane.in_flight.take() {
                            replica.cancel_memory_order(order);
                        }
                        break;
                    }
                }
            }
            if !lane.alive || lane.in_flight.is_some() {
                continue;
            }
            if let Some(order) = replica.poll_memory_order(lane.kind) {
                // Allocated here, on the owner's thread, written there (`allocate`).
                match lane.jobs.try_send(Job::Prepare(order.clone().allocate())) {
                    Ok(()) => lane.in_flight = Some(order),
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                        replica.cancel_memory_order(order);
                    }
                }
            }
        }
        left_over
    }

    /// Frees `table` on the tables' thread; hands it back if that thread cannot take it.
    pub fn free(&mut self, table: RetiredIndex) -> Option<RetiredIndex> {
        self.lanes[0].free(table)
    }

    /// Whether an order is out (being prepared, or prepared and not yet handed over).
    pub fn is_busy(&self) -> bool {
        self.lanes.iter().any(|lane| lane.in_flight.is_some())
    }

    /// Orders prepared and handed to the replica so far.
    pub fn handed_over(&self) -> u64 {
        self.handed_over
    }
}

impl Lane {
    fn spawn(kind: MemoryKind, name: &str) -> std::io::Result<Self> {
        let (jobs, orders) = sync_channel::<Job>(MEMORY_HELPER_JOBS_MAX);
        let (done, ready) = sync_channel::<PreparedMemory>(1);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                for job in orders {
                    match job {
                        Job::Prepare(allocated) => {
                            if done.send(allocated.prepare()).is_err() {
                                return;
                            }
                        }
                        Job::Free(table) => drop(table),
                    }
                }
            })?;
        Ok(Self {
            kind,
            jobs,
            ready,
            in_flight: None,
            alive: true,
        })
    }

    fn free(&mut self, table: RetiredIndex) -> Option<RetiredIndex> {
        match self.jobs.try_send(Job::Free(table)) {
            Ok(()) => None,
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => match job {
                Job::Free(table) => Some(table),
                Job::Prepare(..) => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ActorId, LocalVote, NodeId, OptionIndex, OptionName, PollSpec, PollWindow, Replica,
        UnixMillis, VoteId,
    };

    #[test]
    fn a_next_table_is_allocated_by_the_owner_and_only_written_by_the_helper() {
        // Goal: a growing index's next table lives in memory its owner's thread allocated
        // (whose arena glibc puts on huge pages; a helper thread's arena it does not), and the
        // helper thread only writes it: the table handed back is that very allocation, empty,
        // every page written. Method: allocate as `MemoryHelper::tend` does, on this thread,
        // check nothing is written yet, prepare it on another thread, and compare the control
        // words' addresses; then the table must take a replica's growth like any other.
        let order = MemoryOrder::new(
            crate::PollId::new("p").unwrap(),
            MemoryKind::IndexTable,
            1 << 16,
        );
        let allocated = order.allocate();
        let Allocated::IndexTable(_, table) = &allocated else {
            panic!("an index table order allocates its table on the owner's thread")
        };
        let address = table.control_address();
        assert_eq!(
            table.bytes_to_prefault(),
            crate::position_table::PositionTable::pages_of(1 << 16)
                * crate::position_table::PAGE_BYTES,
            "nothing written on the owner's thread"
        );
        let prepared = std::thread::spawn(move || allocated.prepare())
            .join()
            .unwrap();
        let (order, Prepared::IndexTable(index)) = prepared.into_parts() else {
            panic!("an index table order prepares an index table")
        };
        assert_eq!(order.kind(), MemoryKind::IndexTable);
        assert_eq!(
            index.control_address(),
            address,
            "the owner's allocation, not a new one"
        );
        assert_eq!(index.capacity(), (1 << 16) * 6);
        let chunks = MemoryOrder::new(
            crate::PollId::new("p").unwrap(),
            MemoryKind::RecordChunks,
            2,
        );
        assert!(
            matches!(chunks.allocate(), Allocated::RecordChunks(_)),
            "chunks: the helper's"
        );
    }

    #[test]
    fn a_memory_helper_hands_a_growing_replica_its_next_tables_and_every_vote_counts_once() {
        // Goal: with its next tables prepared on the helper's threads and handed over between
        // batches (as the node's engine does between wake-ups), a replica's index grows
        // through several sizes and still knows every vote ID exactly. Method: 60,000 votes
        // in batches of 500, the helper tended after each (waiting for an order out, up to
        // 10 s), then every ID voted again must be a duplicate and the count exact.
        let poll = crate::PollId::new("p").unwrap();
        let node = NodeId::new("n").unwrap();
        let mut replica = Replica::new(
            ActorId {
                node,
                incarnation: 1,
            },
            [1, 2, 3, 4],
        );
        replica.order_index_tables_of_any_size();
        let options = vec![OptionName::new("a").unwrap(), OptionName::new("b").unwrap()];
        let spec = PollSpec::new(poll.clone(), options, PollWindow::open_from(UnixMillis(0)));
        replica.upsert_poll(spec.unwrap()).unwrap();
        let mut helper = MemoryHelper::spawn().unwrap();
        let votes: Vec<(OptionIndex, VoteId)> = (0..60_000u128)
            .map(|i| {
                (
                    OptionIndex((i % 2) as u8),
                    VoteId(i * 0x9e37_79b9_7f4a_7c15),
                )
            })
            .collect();
        let mut answers = Vec::new();
        for batch in votes.chunks(500) {
            answers.clear();
            replica
                .accept_local_batch(&poll, batch, UnixMillis(1_000), &mut answers)
                .unwrap();
            assert!(
                answers
                    .iter()
                    .all(|a| matches!(a, Ok(LocalVote::Counted { .. })))
            );
            for logged in replica.take_unlogged() {
                replica.mark_durable(logged.poll(), logged.last_seq());
            }
            drop(helper.tend(&mut replica));
            for _ in 0..10_000 {
                if !helper.is_busy() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
                drop(helper.tend(&mut replica));
            }
            drop(replica.take_retired_index_tables());
        }
        assert!(
            helper.handed_over() >= 3,
            "{} handed over",
            helper.handed_over()
        );
        let state = replica.state(&poll).unwrap();
        assert_eq!(state.distinct_vote_ids(), votes.len());
        answers.clear();
        replica
            .accept_local_batch(&poll, &votes, UnixMillis(2_000), &mut answers)
            .unwrap();
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, Ok(LocalVote::Duplicate { .. })))
        );
    }
}
