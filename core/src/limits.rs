//! Every limit of the core in one place, with its unit last (TigerBeetle's TIGER_STYLE).
//!
//! What happens when a limit is reached is part of each function's contract: input over a
//! limit is an `Err` that leaves state unchanged; a full buffer refuses new work.

/// Longest poll, node or option name, in bytes.
pub const NAME_BYTES_MAX: usize = 64;

/// Fewest options a poll may have.
pub const OPTIONS_MIN: usize = 2;

/// Most options a poll may have.
pub const OPTIONS_MAX: usize = 16;

/// Longest client key (a vote ID that is not a UUID), in bytes, before it is hashed.
pub const CLIENT_KEY_BYTES_MAX: usize = 128;

/// Latest second a vote record may carry: 31 days after a poll opens. Longer polls are not
/// a TV-voting use case, and the bound keeps a bad peer from creating absurd buckets.
pub const POLL_SECONDS_MAX: u32 = 31 * 24 * 3600;

/// Most polls one replica holds (created by configuration, the admin API or peers). A new
/// poll past it is refused (`PollError::TooManyPolls`); every poll is exchanged with peers
/// each sync round, so the bound also bounds a round's frames.
pub const POLLS_MAX: usize = 1_024;

/// Most records in one wire batch.
pub const RECORDS_PER_BATCH_MAX: usize = 16_384;

/// Most actors one poll replica tracks (node incarnations over the life of a poll).
pub const ACTORS_PER_POLL_MAX: usize = 4_096;

/// Most records held out of order (waiting for a gap to fill), per poll. When full, further
/// out-of-order batches are refused; anti-entropy sends them again once the gap is filled.
pub const PENDING_RECORDS_MAX: usize = 4 * RECORDS_PER_BATCH_MAX;

/// Most local votes accepted but not yet durable, per poll. When full, accepting refuses
/// with `Overloaded` until the write-ahead log catches up.
pub const IN_FLIGHT_RECORDS_MAX: usize = 1 << 20;

/// Most records one poll replica holds: record positions are 32-bit.
pub const RECORDS_PER_POLL_MAX: usize = u32::MAX as usize;

/// Most distinct vote IDs a poll's dedupe index may be sized for up front
/// ([`crate::Replica::reserve_vote_ids`]): 500 million, an index of 2³⁰ slots (~5.4 GB: 4 bytes a
/// slot and a control byte) reserved at once.
pub const RESERVED_VOTE_IDS_MAX: usize = 500_000_000;

/// Vote IDs one growth step of a dedupe index moves into its larger table at most, reading
/// each one's record to rehash it (see `position_index.rs`): no insert waits for more than
/// this many rehashes (~40–100 µs). A step's record reads go back to back, so the more a step
/// moves, the more of them the CPU overlaps: measured on this VM, 16 a step cost ~90 ns a
/// move among votes. 1,024 rather than 256 (the eighth session, BENCHMARKS.md): the faster
/// an old table is moved, the fewer new IDs land in it meanwhile (each of which is moved
/// again later) and the shorter the time lookups run on two tables.
pub const INDEX_GROWTH_STEP_MOVES_MAX: usize = 1024;

/// Inserts into a growing dedupe index per growth step: one insert in this many runs a
/// step, so the index moves up to 16 vote IDs per insert on average (~0.6 µs). Moving an
/// old table of G groups (8 G slots) then takes G / 2 inserts, and the new table, 12 G
/// entries before it is full, holds at most 8.5 G. The same steps touch the pages of a
/// table being prepared, [`INDEX_GROWTH_STEP_PREFAULT_BYTES`] a step.
pub const INDEX_GROWTH_INSERTS_PER_STEP: usize = 64;

/// Bytes of a growing dedupe index's new table one growth step goes through, touching each
/// page it enters, before the table takes inserts: eight 4 KiB pages a step, a 2 MiB huge
/// page (faulted in whole by its first touch: ~0.2 ms on a quiet host, ~3–6 ms in this VM,
/// whose first touch of memory is slow) every 64 steps, that is every 4,096 inserts. The
/// faster the touching, the later a growth starts: at this rate it starts when the table is
/// ~95% of the way to its load limit (a 10M-ID index has not begun to grow).
pub const INDEX_GROWTH_STEP_PREFAULT_BYTES: usize = 32 * 1024;

const _: () = assert!(INDEX_GROWTH_STEP_PREFAULT_BYTES * INDEX_GROWTH_INSERTS_PER_STEP >= 4096);
const _: () = assert!(INDEX_GROWTH_STEP_MOVES_MAX % 8 == 0 && INDEX_GROWTH_INSERTS_PER_STEP >= 1);

/// How far a dedupe index's table fills before its next table is ordered from the owner's
/// helper thread (`Replica::poll_memory_order`), in eighths of the way to its load limit:
/// at 7/8, the inserts left before the table is full (1/8 of its capacity, ~1.5M at 12M
/// IDs) took longer than the helper took to allocate and fault in a table twice its size: in
/// a 30M-ID fill of the `index_growth` bench, every table of 2¹⁸ groups (10 MB) or more
/// arrived before the index began preparing its own, and the two smaller ones while it did
/// (BENCHMARKS.md, "The next table prepared off the engine"). Not earlier, because
/// a prepared table is switched to at once: the index then holds the larger table from
/// 7/8 of the way on (not at 10M IDs, whose index is 0.80 of the way).
pub const INDEX_TABLE_ORDER_AT_EIGHTHS: usize = 7;

/// Fewest bytes a dedupe index's next table spans for it to be ordered from a helper thread:
/// 2 MiB, one huge page. Smaller tables are touched by the growth steps in a few steps.
pub const INDEX_TABLE_ORDER_BYTES_MIN: usize = 2 << 20;

/// Most spare record chunks a poll's record store keeps, allocated and faulted in by the
/// owner's helper thread (`Replica::poll_memory_order`), so that the owner's thread does not
/// fault in the records' memory as votes arrive (a 2 MiB huge page every ~30 chunks, up to
/// milliseconds each in this VM). A store keeps at most one spare per 64 chunks it holds
/// (1.6% of its records' memory), so polls under 128 chunks (~520,000 records) keep none.
pub const RECORD_CHUNKS_SPARE_MAX: usize = 32;

/// Most jobs waiting for one of a replica owner's memory helper threads
/// (`tally_core::MemoryHelper`): its one order, and index tables left over to free. Past it,
/// a table to free is handed back to the owner, and an order is cancelled (the replica
/// proceeds without it).
pub const MEMORY_HELPER_JOBS_MAX: usize = 4;

const _: () = assert!(INDEX_TABLE_ORDER_AT_EIGHTHS >= 1 && INDEX_TABLE_ORDER_AT_EIGHTHS <= 8);

/// Largest encoded wire frame, in bytes. Decoding refuses anything longer before parsing.
pub const FRAME_BYTES_MAX: usize = 4 << 20;

/// Most (actor, second, option) entries in one counter-state message.
pub const COUNTER_ENTRIES_PER_MESSAGE_MAX: usize = 65_536;

/// Most entries in one version vector message.
pub const VERSION_VECTOR_ENTRIES_MAX: usize = ACTORS_PER_POLL_MAX;

/// Most nodes whose declared definition of one poll a replica keeps (the smallest node IDs;
/// see `Declarations`): far more nodes than a cluster runs.
pub const DECLARING_NODES_MAX: usize = 256;

/// Most definitions of one poll other than its own a replica remembers the options of (to
/// name them in its messages); further ones are known by digest only.
pub const FOREIGN_DEFINITIONS_PER_POLL_MAX: usize = 4;

/// Longest cluster ID, in bytes.
pub const CLUSTER_ID_BYTES_MAX: usize = NAME_BYTES_MAX;

// A full batch of the largest records must fit in one frame: 16 ID bytes, one option byte,
// and at worst one second-run of two 5-byte varints per record, plus headroom for names.
const _: () = assert!(RECORDS_PER_BATCH_MAX * (16 + 1 + 10) + 4096 <= FRAME_BYTES_MAX);
const _: () = assert!(PENDING_RECORDS_MAX >= RECORDS_PER_BATCH_MAX);
const _: () = assert!(OPTIONS_MIN <= OPTIONS_MAX);
const _: () =
    assert!(VERSION_VECTOR_ENTRIES_MAX * (NAME_BYTES_MAX + 1 + 10 + 10) <= FRAME_BYTES_MAX);
const _: () = assert!(DECLARING_NODES_MAX * (NAME_BYTES_MAX + 1 + 10 + 16) <= FRAME_BYTES_MAX);
