//! The write-ahead log: every poll definition and every record batch the node holds, appended
//! with a checksum and made durable with group-commit `fdatasync` before a vote is acknowledged
//! (DESIGN.md §4).
//!
//! What it promises:
//! - an entry reported durable by [`Wal::sync`] (or by a [`WalDone`] with `result: Ok`) is
//!   replayed by every later [`Wal::open`] of the same storage, unless the disk itself is lost;
//! - recovery replays the newest valid snapshot, then every file after it, in order, and tells
//!   a torn tail (a crash in the middle of an append: cut off) from damage (anything else: a
//!   bad frame with valid frames after it, a bad header, a missing segment, a bad snapshot;
//!   see `wal/open.rs` for the rule): it never yields an entry that was not written, it
//!   replays every valid entry before and after damage, and it reports exactly where and why
//!   it skipped anything ([`RecoveryReport`]);
//! - it never discards data it cannot read, except a torn tail: damage stays in place, and
//!   a copy of each damaged file is kept aside before anything changes; reading
//!   ([`Wal::recover`]) changes nothing, so a caller may refuse to go on; a file of another
//!   format version is an error that leaves the storage untouched;
//! - after a failed write or fsync the log refuses all further work (PostgreSQL's "fsyncgate":
//!   a failed fsync is never retried and assumed to have worked).
//!
//! Files (see `wal/format.rs` for the bytes): log segments `wal-<20 digits>.log`, snapshots
//! `snapshot-<20 digits>.snap`. Snapshot `N` holds the whole state as of the start of segment
//! `N`; recovery = snapshot `N` (if any) + segments `N, N+1, …`. Without a snapshot the log
//! starts at segment 1. Time is not read here; the group-commit writer ([`run_writer`]) only
//! measures fsync durations with tokio's clock (simulated under turmoil).

//!
//! The files of this module, in the order a node uses them:
//! - `format.rs`: the bytes on disk (file names, headers, frames, snapshot footers);
//! - `log.rs`: [`Wal`], the log (append, sync, roll segments, snapshot);
//! - `open.rs`: opening the log (newest valid snapshot, replay, torn tail or damage);
//! - `startup.rs`: the node's start-up: the replica rebuilt from the log, or a new
//!   incarnation ([`startup::recover`]);
//! - `replay.rs`: log entries replayed into a replica (for `startup.rs`);
//! - `group_commit.rs`: the group-commit writer the engine submits jobs to, and where it runs
//!   ([`WalExecutor`]: its own thread, or a task);
//! - `inspect.rs`, `fuzzing.rs`: frames as they lie on disk, and the fuzz body (not API).

mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod group_commit;
#[doc(hidden)]
pub mod inspect;
mod log;
mod open;
mod replay;
pub mod startup;

pub use group_commit::{
    InlineWriter, SyncPause, WAL_GROUP_BYTES_MAX, WAL_GROUP_ENTRIES_MAX, WAL_JOBS_IN_FLIGHT_MAX,
    WAL_JOBS_QUEUE_MAX, WalDone, WalExecutor, WalHandle, WalJob, WalJobKind, run_writer,
    spawn_writer_thread,
};
pub use log::*;
pub use replay::MissingSeqs;
