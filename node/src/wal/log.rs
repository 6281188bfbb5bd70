//! The log itself: [`Wal`] appends entries to the current segment, syncs them, rolls
//! segments, writes snapshots, and opens the log again ([`Wal::open`], via `open.rs`). The
//! promises are in the module's `//!` (`wal/mod.rs`).

use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tally_core::limits::{FRAME_BYTES_MAX, RECORDS_PER_BATCH_MAX};
use tally_core::{ActorId, PollId, PollSpec, RecordBatch, Seq};

use super::{format, open};
use crate::storage::{LockError, Storage, StorageFile, StorageLock};

/// The on-disk format version this build writes and reads.
pub const WAL_FORMAT_VERSION: u32 = 1;

/// Largest encoded entry (the payload of one frame), in bytes: a peer frame's worth.
pub const WAL_ENTRY_BYTES_MAX: usize = FRAME_BYTES_MAX;

/// Bytes in front of each entry: its length and its CRC-32C, both `u32` little-endian.
pub const WAL_FRAME_HEADER_BYTES: usize = 8;

/// Bytes of the header that opens every log segment and snapshot file.
pub const WAL_FILE_HEADER_BYTES: usize = 32;

/// Appended bytes held in memory before [`Wal::append`] writes them out (unsynced) to the
/// segment; [`Wal::sync`] writes whatever is held. Bounds the encode buffer.
pub const WAL_BUFFER_BYTES_MAX: usize = 8 << 20;

/// Bytes read from storage at a time during recovery (grown to hold one frame if needed).
pub const WAL_READ_CHUNK_BYTES: usize = 1 << 20;

// A full record batch of the largest records (16 ID bytes, an option byte, at worst one
// second-run of two 5-byte varints per record) plus names must fit in one entry.
const _: () = assert!(RECORDS_PER_BATCH_MAX * (16 + 1 + 10) + 4096 <= WAL_ENTRY_BYTES_MAX);
// Lengths are u32 and u32::MAX marks a snapshot's footer.
const _: () = assert!(WAL_ENTRY_BYTES_MAX < u32::MAX as usize);
// The buffer holds at least one largest frame before it is written out.
const _: () = assert!(WAL_FRAME_HEADER_BYTES + WAL_ENTRY_BYTES_MAX <= WAL_BUFFER_BYTES_MAX);
const _: () = assert!(WAL_FILE_HEADER_BYTES <= WAL_READ_CHUNK_BYTES);

/// One logged fact. Replaying every entry in order rebuilds the node's state.
///
/// Extending: add new variants at the END only (postcard encodes the variant's position), never
/// reorder or remove one, and never change a variant's fields without bumping
/// [`WAL_FORMAT_VERSION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalEntry {
    /// Vote records, local or received from a peer.
    Records(RecordBatch),
    /// A poll definition (created, or its window changed: the latest spec of a poll wins).
    Poll(PollSpec),
    /// The actor (node incarnation) that writes this log: the first entry of a new log, and
    /// so also the first entry of every snapshot.
    Identity(ActorId),
    /// A poll's dedupe index was sized for this many vote IDs: by an admin request
    /// (`expected_votes`), or in a snapshot, the capacity it had when the node stopped. Replay
    /// reserves it as soon as it reads this entry, which follows the poll's definition and
    /// precedes its records, so a restart refills the index without growing it.
    Reserve {
        /// The poll.
        poll: PollId,
        /// Vote IDs the index holds before it must grow.
        vote_ids: u64,
    },
    /// From here on this log is written by `actor`, a new incarnation of the same node that
    /// supersedes `retired` (the node met records of `retired` that its log lacked, or its
    /// log was damaged). `retired`'s own records in this log *before* this entry with a seq
    /// above `durable_through` (per poll; 0 for a poll not named) were in a log job when
    /// the node switched, never became durable in its state and were never acknowledged:
    /// replay leaves them out. Its records after this entry came from peers.
    Incarnation {
        /// The new actor.
        actor: ActorId,
        /// The actor it supersedes.
        retired: ActorId,
        /// Per poll, the highest seq of `retired` that was durable when the node switched.
        durable_through: Vec<(PollId, Seq)>,
    },
}

/// Variant tags of [`WalEntry`] (postcard writes a variant's position as its first byte):
/// a payload whose first byte is not below this is no entry, which lets recovery skip most
/// false frames cheaply when it looks for valid frames after damage.
pub const WAL_ENTRY_TAGS: u8 = 5;

/// A place in a log file that recovery could not replay, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The file's name.
    pub file: String,
    /// The number of that segment (or snapshot).
    pub segment: u64,
    /// Byte offset of the first byte not replayed: the start of the bad header or frame.
    pub offset: u64,
    /// Bytes from `offset` on that were not replayed: up to the next valid frame, or to the
    /// end of the file.
    pub bytes: u64,
    /// What was wrong there.
    pub reason: CorruptionReason,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes {}..{}: {}",
            self.file,
            self.offset,
            self.offset + self.bytes,
            self.reason
        )
    }
}

/// What was wrong with a file header or frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorruptionReason {
    /// The file ends inside its header (a crash while it was being created).
    #[error("the file ends inside its {WAL_FILE_HEADER_BYTES}-byte header ({available} bytes)")]
    TornFileHeader {
        /// Bytes the file holds.
        available: u64,
    },
    /// The header does not start with the magic bytes.
    #[error("the header's magic bytes are wrong")]
    BadMagic,
    /// The header's checksum does not match.
    #[error("the header's checksum does not match")]
    BadHeaderChecksum,
    /// The header names another kind of file or another number than the file name.
    #[error("the header says kind {kind} number {number}, which does not match the file name")]
    HeaderMismatch {
        /// Kind in the header.
        kind: u32,
        /// Number in the header.
        number: u64,
    },
    /// Fewer bytes than a frame header remain (a torn append).
    #[error("the file ends inside a frame header ({available} bytes left)")]
    TornFrameHeader {
        /// Bytes left in the file.
        available: u64,
    },
    /// A frame of length 0 (zero-filled space, never written by the log).
    #[error("a frame of length 0")]
    ZeroLength,
    /// Zeros from here to the end of the file (preallocated or never-written space, or a
    /// zeroed sector: the log never writes a zero frame).
    #[error("zeros to the end of the file")]
    ZeroFill,
    /// A frame longer than [`WAL_ENTRY_BYTES_MAX`].
    #[error("a frame of length {length}; at most {WAL_ENTRY_BYTES_MAX} are written")]
    LengthTooLarge {
        /// The length field.
        length: u32,
    },
    /// The file ends inside a frame's payload (a torn append).
    #[error("the file ends inside a {length}-byte entry ({available} bytes left)")]
    TornPayload {
        /// The length field.
        length: u32,
        /// Payload bytes left in the file.
        available: u64,
    },
    /// The payload's CRC-32C does not match the stored one.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// The checksum field.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// The checksum matches but the payload is not a valid entry.
    #[error("the entry does not decode: {message}")]
    Undecodable {
        /// The decoder's complaint.
        message: String,
    },
    /// Bytes after the last frame that begin as the log's fill (space written ahead of its
    /// appends) but differ from it further on: a torn append into the fill, or damage.
    #[error("the log's fill after the last entry differs from what was written at byte {offset}")]
    FillDiffers {
        /// The file offset of the first byte that differs.
        offset: u64,
    },
    /// A snapshot without its closing footer.
    #[error("the snapshot has no footer")]
    MissingFooter,
    /// A snapshot footer that is torn, fails its checksum, is followed by more bytes, or
    /// disagrees with the entries before it.
    #[error("the snapshot footer is bad: {what}")]
    BadFooter {
        /// What was wrong with it.
        what: &'static str,
    },
}

/// What recovery replayed and found (see `wal/open.rs` for how a torn tail is told from
/// damage).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The number of the snapshot replayed from, if any.
    pub snapshot: Option<u64>,
    /// Entries replayed from that snapshot.
    pub snapshot_entries: u64,
    /// Numbers of the log segments replayed, in order.
    pub segments: Vec<u64>,
    /// Entries replayed in total (snapshots and segments).
    pub entries: u64,
    /// Frame bytes replayed in total (snapshots and segments), headers included.
    pub bytes: u64,
    /// The tail of the last segment that is cut off when the log opens: a torn append, zero
    /// fill, or a torn segment header. A crash in the middle of a write leaves such bytes,
    /// and so does damage to the log's last frames: recovery cannot tell whether they once
    /// held a durable entry.
    pub corruption: Option<Corruption>,
    /// Damage: places that were not replayed although valid frames follow them (or that are
    /// in a file that is not the last segment, or in a snapshot). Every valid entry before
    /// and after each was replayed; nothing of them is cut, and each damaged file is copied
    /// aside when the log opens ([`Self::kept_aside`]).
    pub damage: Vec<Corruption>,
    /// Log segments missing from the sequence, as (first, last) number ranges: their entries
    /// are lost locally. Damage too.
    pub missing_segments: Vec<(u64, u64)>,
    /// Copies of the damaged files (`<name>.damaged-N`), made and synced before anything on
    /// disk changed, for the operator.
    pub kept_aside: Vec<String>,
    /// Leftover files removed: unfinished snapshots, and segments and snapshots older than
    /// the snapshot replayed.
    pub removed: Vec<String>,
}

impl RecoveryReport {
    /// Whether the log is damaged (not merely torn at its end).
    pub fn is_damaged(&self) -> bool {
        !self.damage.is_empty() || !self.missing_segments.is_empty()
    }

    /// Whether the log replayed whole: no damage and nothing cut from its end. Only then is
    /// every entry the log ever made durable sure to have been replayed (a cut tail may be
    /// a torn append, or damage to durable entries that looks the same).
    pub fn is_whole(&self) -> bool {
        !self.is_damaged() && self.corruption.is_none()
    }
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.snapshot {
            Some(number) => write!(f, "snapshot {number} ({} entries), ", self.snapshot_entries)?,
            None => write!(f, "no snapshot, ")?,
        }
        write!(
            f,
            "{} segment(s), {} entries and {} bytes replayed",
            self.segments.len(),
            self.entries,
            self.bytes
        )?;
        match &self.corruption {
            Some(corruption) => write!(f, "; torn tail cut off: {corruption}")?,
            None => write!(f, "; clean end")?,
        }
        for damage in &self.damage {
            write!(f, "; DAMAGE {damage}")?;
        }
        for (first, last) in &self.missing_segments {
            write!(
                f,
                "; DAMAGE: segments {} to {} are missing",
                format::segment_name(*first),
                format::segment_name(*last)
            )?;
        }
        if !self.kept_aside.is_empty() {
            write!(
                f,
                "; damaged files kept aside as {}",
                self.kept_aside.join(", ")
            )?;
        }
        if !self.removed.is_empty() {
            write!(f, "; removed {} leftover file(s)", self.removed.len())?;
        }
        Ok(())
    }
}

/// Why the log could not do what was asked. Each variant says what happened to the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// The storage failed. After a failed write or sync the log refuses further work.
    #[error("{operation} {file} failed: {source}")]
    Io {
        /// What was being done (`"write"`, `"sync"`, …).
        operation: &'static str,
        /// The file (or directory) concerned.
        file: String,
        /// The storage's error.
        #[source]
        source: Arc<io::Error>,
    },
    /// An entry encodes to more than [`WAL_ENTRY_BYTES_MAX`] bytes. Nothing from the call was
    /// appended; the log is unchanged and usable.
    #[error(
        "an entry encodes to {bytes} bytes, over the {WAL_ENTRY_BYTES_MAX}-byte limit; \
         nothing was appended"
    )]
    EntryTooLarge {
        /// Encoded size of the refused entry.
        bytes: usize,
    },
    /// An entry could not be encoded. Nothing from the call was appended.
    #[error("an entry could not be encoded ({message}); nothing was appended")]
    Encode {
        /// The encoder's complaint.
        message: String,
    },
    /// A file of another format version. Nothing was changed on disk.
    #[error(
        "{file} has format version {found}, this build reads version {WAL_FORMAT_VERSION}; \
         nothing was changed"
    )]
    UnsupportedVersion {
        /// The file.
        file: String,
        /// Its version.
        found: u32,
    },
    /// A file read differently the second time (it changed under the node while it
    /// started). Nothing was changed on disk.
    #[error("{corruption}; the file changed while the log was read; nothing was changed")]
    SnapshotCorrupt {
        /// Where and why.
        corruption: Corruption,
    },
    /// Another process (or another open log of this process) holds the storage's lock.
    /// Nothing was read or changed.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// An earlier write or sync failed; the log refuses all further work.
    #[error("the write-ahead log stopped after an earlier failure: {cause}")]
    Stopped {
        /// The first failure.
        cause: Box<WalError>,
    },
}

impl WalError {
    pub(super) fn io(operation: &'static str, file: &str, source: io::Error) -> Self {
        Self::Io {
            operation,
            file: file.to_owned(),
            source: Arc::new(source),
        }
    }
}

/// A log read through by [`Wal::recover`] but not opened yet: nothing on disk has changed.
pub struct Recovery<S: Storage> {
    storage: S,
    /// The storage's exclusive lock, handed to the log [`Recovery::finish`] opens.
    lock: StorageLock,
    plan: open::Plan,
    report: RecoveryReport,
}

impl<S: Storage> Recovery<S> {
    fn read(
        storage: S,
        lock: StorageLock,
        visit: &mut dyn FnMut(WalEntry),
        mode: open::DamageMode,
    ) -> Result<Self, WalError> {
        let (plan, report) = open::recover(&storage, visit, mode)?;
        Ok(Self {
            storage,
            lock,
            plan,
            report,
        })
    }

    /// What was replayed and found.
    pub fn report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Replays the same entries again, in the same order, through `visit` (read-only): for
    /// a caller that learned, at the end of the first replay, which entries to leave out.
    pub fn replay_again(&self, mut visit: impl FnMut(WalEntry)) -> Result<(), WalError> {
        open::replay_again(&self.storage, &self.plan, &mut visit)
    }

    /// Opens the log for appends: copies every damaged file aside (durably, before anything
    /// else changes), cuts off a torn tail (or writes a torn segment header again) or starts
    /// a new segment, and removes files the replayed snapshot made redundant. Damage stays
    /// in place in the log (the caller retires it with a snapshot, see
    /// [`Wal::write_snapshot`]). On error, the copies may exist; nothing else changed.
    pub fn finish(self) -> Result<(Wal<S>, RecoveryReport), WalError> {
        let Recovery {
            storage,
            lock,
            plan,
            mut report,
        } = self;
        let mut wal = open::finish(storage, plan, &mut report)?;
        wal.lock = Some(lock);
        Ok((wal, report))
    }
}

impl<S: Storage> std::fmt::Debug for Recovery<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

/// What [`Wal::write_snapshot`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotWritten {
    /// The snapshot's (and the new segment's) number.
    pub number: u64,
    /// Entries in the snapshot.
    pub entries: u64,
    /// Frame bytes in the snapshot, headers included.
    pub bytes: u64,
}

/// The write-ahead log: one open segment being appended to, over a [`Storage`].
///
/// Appends are buffered; [`Wal::sync`] writes and fsyncs them. One owner (the writer task);
/// not shared.
pub struct Wal<S: Storage> {
    pub(super) storage: S,
    pub(super) segment: S::File,
    pub(super) segment_number: u64,
    /// Bytes of the segment already written to storage; the buffer goes after them.
    pub(super) written_bytes: u64,
    /// Encoded frames not yet written to storage. Reused: cleared, never reallocated per entry.
    pub(super) buffer: Vec<u8>,
    pub(super) bytes_since_snapshot: u64,
    /// The first write or sync failure, after which every call refuses.
    pub(super) failure: Option<WalError>,
    /// The storage's exclusive lock, held while the log is open (one process per directory).
    pub(super) lock: Option<StorageLock>,
    /// How far the segment may hold fill (written ahead of the appends by
    /// [`Wal::fill_ahead`]); at most `written_bytes` when it holds none.
    pub(super) filled_to: u64,
    /// Bytes of fill [`Wal::fill_ahead`] keeps ahead of the appends
    /// ([`Storage::fill_ahead_bytes`]); 0 once a fill failed, for the rest of the segment.
    pub(super) fill_bytes: u64,
}

impl<S: Storage> std::fmt::Debug for Wal<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("segment_number", &self.segment_number)
            .field("written_bytes", &self.written_bytes)
            .field("buffered_bytes", &self.buffer.len())
            .field("bytes_since_snapshot", &self.bytes_since_snapshot)
            .field("filled_to", &self.filled_to)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> Wal<S> {
    /// Opens the log in `storage`: [`Wal::recover`], then [`Recovery::finish`].
    pub fn open(
        storage: S,
        visit: impl FnMut(WalEntry),
    ) -> Result<(Self, RecoveryReport), WalError> {
        Self::recover(storage, visit)?.finish()
    }

    /// Reads the log in `storage`, replaying the newest valid snapshot and every file after
    /// it through `visit`, in the order they were written, skipping only what cannot be
    /// read: a torn tail ([`RecoveryReport::corruption`]) and damage
    /// ([`RecoveryReport::damage`]), every valid entry after which is replayed too. Changes
    /// nothing on disk: the caller looks at the report, then opens the log with
    /// [`Recovery::finish`] or drops it. An empty storage replays nothing.
    ///
    /// It first takes the storage's exclusive lock ([`Storage::lock`]), held by the
    /// [`Recovery`] and then by the log it opens: a storage another log holds is refused with
    /// [`WalError::Locked`] before anything is read.
    pub fn recover(storage: S, visit: impl FnMut(WalEntry)) -> Result<Recovery<S>, WalError> {
        Self::recover_as(storage, "a tally write-ahead log", visit)
    }

    /// As [`Wal::recover`], naming the holder (`node us-east`) in the lock for the error a
    /// second process gets.
    pub fn recover_as(
        storage: S,
        holder: &str,
        mut visit: impl FnMut(WalEntry),
    ) -> Result<Recovery<S>, WalError> {
        let lock = storage.lock(holder)?;
        Recovery::read(storage, lock, &mut visit, open::DamageMode::Keep)
    }

    /// [`Wal::open`] as it was before recovery told torn tails from damage: the first bad
    /// frame of the last segment ends replay and is cut off with everything after it. **A
    /// planted bug for the simulation's checker tests only.**
    #[doc(hidden)]
    pub fn recover_planted_truncating_damage(
        storage: S,
        holder: &str,
        mut visit: impl FnMut(WalEntry),
    ) -> Result<Recovery<S>, WalError> {
        let lock = storage.lock(holder)?;
        Recovery::read(storage, lock, &mut visit, open::DamageMode::PlantedTruncate)
    }

    /// Encodes `entries` into the log's buffer and returns the frame bytes they take. Not
    /// durable until [`Wal::sync`]. All or nothing: if any entry is refused, none is appended.
    pub fn append(&mut self, entries: &[WalEntry]) -> Result<u64, WalError> {
        self.check_running()?;
        let start = self.buffer.len();
        let mut bytes = 0u64;
        for entry in entries {
            match format::encode_frame(&mut self.buffer, entry) {
                Ok(frame_bytes) => bytes += frame_bytes as u64,
                Err(error) => {
                    self.buffer.truncate(start);
                    return Err(error);
                }
            }
        }
        self.bytes_since_snapshot += bytes;
        if self.buffer.len() >= WAL_BUFFER_BYTES_MAX {
            self.write_buffer()?;
        }
        Ok(bytes)
    }

    /// Writes every appended entry to the segment and fsyncs it (`fdatasync`). Once this
    /// returns `Ok`, every entry appended before the call survives a crash. After an error
    /// the log stops: the error is final and every later call refuses.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_running()?;
        self.write_buffer()?;
        if let Err(error) = self.segment.sync_data() {
            let name = format::segment_name(self.segment_number);
            return Err(self.stop(WalError::io("sync", &name, error)));
        }
        Ok(())
    }

    /// Writes fill ([`format::FILL_PATTERN`]) ahead of the appends, and fsyncs it, when less
    /// than half of [`Storage::fill_ahead_bytes`] is left past the segment's end: a later
    /// [`Wal::sync`] whose appends land inside it changes no file length, so the filesystem
    /// commits no journal transaction for it (ext4 and XFS), which took 0.5-0.75x the time
    /// and about half the CPU of an appending `fdatasync` on this project's test disk
    /// (BENCHMARKS.md, "The log's fill"). The group-commit writer calls it after reporting
    /// a group, so no vote waits for it. Recovery reads fill after the last frame as a clean
    /// end (`wal/open.rs`); [`Wal::write_snapshot`] cuts it off before the segment is
    /// closed. Does nothing with appends not yet synced, after a failure, or for a storage
    /// that keeps no fill. A failed fill loses nothing (it holds no entry): it is logged,
    /// and the segment is not filled again.
    pub fn fill_ahead(&mut self) {
        if self.fill_bytes == 0 || self.failure.is_some() || !self.buffer.is_empty() {
            return;
        }
        let end = self.written_bytes;
        if self.filled_to >= end + self.fill_bytes / 2 {
            return;
        }
        let from = self.filled_to.max(end);
        let to = end + self.fill_bytes;
        // Whatever happens below, the segment may hold fill up to here from now on.
        self.filled_to = to;
        let mut at = from;
        let result = loop {
            if at == to {
                break self.segment.sync_data();
            }
            let count = (to - at).min(format::FILL_CHUNK_BYTES as u64) as usize;
            let piece = &format::FILL[(at % 8) as usize..][..count];
            if let Err(error) = self.segment.write_all_at(piece, at) {
                break Err(error);
            }
            at += count as u64;
        };
        if let Err(error) = result {
            self.fill_bytes = 0;
            tracing::warn!(
                %error,
                segment = %format::segment_name(self.segment_number),
                "could not write the log's fill ahead of its appends; the log goes on \
                 without it (each fsync then also commits the file's new length)"
            );
        }
    }

    /// Writes the whole state — `entries` must include every poll spec and every record
    /// batch the node holds, so everything logged so far — as snapshot `N + 1` (temp file,
    /// fsync, rename, directory fsync), starts the empty segment `N + 1`, and removes older
    /// segments and snapshots. Entries appended before the call are made durable first.
    ///
    /// Errors before the snapshot is in place (including [`WalError::EntryTooLarge`]) leave
    /// the log as it was and usable; errors after it stop the log.
    pub fn write_snapshot(
        &mut self,
        entries: impl IntoIterator<Item = WalEntry>,
    ) -> Result<SnapshotWritten, WalError> {
        self.sync()?;
        self.cut_fill()?;
        let number = self.segment_number + 1;
        let (entries, bytes) = self.write_snapshot_file(number, entries)?;
        self.start_segment(number)
            .map_err(|error| self.stop(error))?;
        self.remove_older_than(number);
        Ok(SnapshotWritten {
            number,
            entries,
            bytes,
        })
    }

    /// Frame bytes appended since the last snapshot (or since the log began), including the
    /// segment bytes replayed at open: what a restart would replay beyond the snapshot.
    pub fn bytes_since_snapshot(&self) -> u64 {
        self.bytes_since_snapshot
    }

    /// The number of the segment being appended to.
    pub fn segment_number(&self) -> u64 {
        self.segment_number
    }

    /// Where the next append lands: (segment number, byte offset in it, buffered bytes
    /// included). Taken right after a successful [`Wal::sync`], it is where the durable log
    /// ends: what [`Wal::roll_back_to`] takes after a failure.
    pub fn end(&self) -> (u64, u64) {
        (
            self.segment_number,
            self.written_bytes + self.buffer.len() as u64,
        )
    }

    /// After a group of appends failed with `cause`: stops the log (every later call
    /// refuses), then cuts the segment back to `end` (an [`Wal::end`] taken when everything
    /// before it was durable) and syncs that, so that bytes whose durability is unknown —
    /// whole frames of a group whose fsync failed, or the part of a group a full disk let
    /// through — are never replayed by the next start as if they had been acknowledged. This
    /// is not a retry of the failed sync (PostgreSQL's fsyncgate): nothing is assumed durable
    /// that was not before; it only makes the file shorter. Does nothing more if the segment
    /// has changed since `end`.
    pub fn roll_back_to(&mut self, end: (u64, u64), cause: &WalError) -> Result<(), WalError> {
        self.stop(cause.clone());
        let (segment, len) = end;
        if segment != self.segment_number {
            return Ok(());
        }
        assert!(
            len <= self.written_bytes + self.buffer.len() as u64,
            "rolling back to byte {len}, past the log's end"
        );
        self.buffer.clear();
        let name = format::segment_name(segment);
        self.filled_to = len;
        self.segment
            .set_len(len)
            .map_err(|error| WalError::io("truncate after a failure", &name, error))?;
        self.segment
            .sync_data()
            .map_err(|error| WalError::io("sync after truncating", &name, error))?;
        self.written_bytes = len;
        Ok(())
    }

    fn check_running(&self) -> Result<(), WalError> {
        match &self.failure {
            None => Ok(()),
            Some(cause) => Err(WalError::Stopped {
                cause: Box::new(cause.clone()),
            }),
        }
    }

    /// Records `error` as the log's final failure and returns it.
    fn stop(&mut self, error: WalError) -> WalError {
        if self.failure.is_none() {
            self.failure = Some(error.clone());
        }
        error
    }

    /// Cuts the segment's fill off and syncs that, before the segment is closed: a segment
    /// that is not the last ends right after its last frame (`wal/open.rs`). A failure stops
    /// the log, as a failed sync does.
    fn cut_fill(&mut self) -> Result<(), WalError> {
        if self.filled_to <= self.written_bytes {
            return Ok(());
        }
        let name = format::segment_name(self.segment_number);
        let result = self
            .segment
            .set_len(self.written_bytes)
            .map_err(|error| WalError::io("cut the fill off", &name, error))
            .and_then(|()| {
                self.segment
                    .sync_data()
                    .map_err(|error| WalError::io("sync after cutting the fill off", &name, error))
            });
        match result {
            Ok(()) => {
                self.filled_to = self.written_bytes;
                Ok(())
            }
            Err(error) => Err(self.stop(error)),
        }
    }

    /// Writes the buffer at the end of the segment (not synced) and clears it.
    fn write_buffer(&mut self) -> Result<(), WalError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        format::assert_frames(&self.buffer);
        if let Err(error) = self.segment.write_all_at(&self.buffer, self.written_bytes) {
            let name = format::segment_name(self.segment_number);
            return Err(self.stop(WalError::io("write", &name, error)));
        }
        self.written_bytes += self.buffer.len() as u64;
        self.buffer.clear();
        self.buffer.shrink_to(WAL_BUFFER_BYTES_MAX * 2);
        Ok(())
    }

    /// Writes snapshot `number` under a temp name and renames it into place durably. On error
    /// before the rename, removes the temp file; the log is unchanged.
    fn write_snapshot_file(
        &mut self,
        number: u64,
        entries: impl IntoIterator<Item = WalEntry>,
    ) -> Result<(u64, u64), WalError> {
        let temp = format::snapshot_temp_name(number);
        let result = self.write_snapshot_temp(&temp, number, entries);
        self.buffer.clear();
        let counts = match result {
            Ok(counts) => counts,
            Err(error) => {
                // Best effort: a leftover temp file is removed at the next open anyway.
                let _ = self.storage.remove(&temp);
                return Err(error);
            }
        };
        let name = format::snapshot_name(number);
        if let Err(error) = self.storage.rename(&temp, &name) {
            return Err(self.stop(WalError::io("rename to", &name, error)));
        }
        if let Err(error) = self.storage.sync_dir() {
            return Err(self.stop(WalError::io("sync directory after", &name, error)));
        }
        Ok(counts)
    }

    /// Streams `entries` into the temp file through the reused buffer, adds the footer and
    /// fsyncs it. Returns (entries, frame bytes).
    fn write_snapshot_temp(
        &mut self,
        temp: &str,
        number: u64,
        entries: impl IntoIterator<Item = WalEntry>,
    ) -> Result<(u64, u64), WalError> {
        let io_error = |operation| move |error| WalError::io(operation, temp, error);
        let mut file = self.storage.create(temp).map_err(io_error("create"))?;
        self.buffer.clear();
        self.buffer
            .extend_from_slice(&format::file_header(format::FileKind::Snapshot, number));
        let mut offset = 0u64;
        let (mut count, mut bytes) = (0u64, 0u64);
        for entry in entries {
            bytes += format::encode_frame(&mut self.buffer, &entry)? as u64;
            count += 1;
            if self.buffer.len() >= WAL_BUFFER_BYTES_MAX {
                file.write_all_at(&self.buffer, offset)
                    .map_err(io_error("write"))?;
                offset += self.buffer.len() as u64;
                self.buffer.clear();
            }
        }
        self.buffer
            .extend_from_slice(&format::snapshot_footer(count, bytes));
        file.write_all_at(&self.buffer, offset)
            .map_err(io_error("write"))?;
        file.sync_data().map_err(io_error("sync"))?;
        Ok((count, bytes))
    }

    /// Creates segment `number` with its header, durably, and appends to it from now on.
    fn start_segment(&mut self, number: u64) -> Result<(), WalError> {
        let name = format::segment_name(number);
        let segment = format::create_file(&self.storage, format::FileKind::Segment, number)?;
        self.storage
            .sync_dir()
            .map_err(|error| WalError::io("sync directory after creating", &name, error))?;
        self.segment = segment;
        self.segment_number = number;
        self.written_bytes = WAL_FILE_HEADER_BYTES as u64;
        self.filled_to = self.written_bytes;
        self.fill_bytes = self.storage.fill_ahead_bytes();
        self.bytes_since_snapshot = 0;
        Ok(())
    }

    /// Removes snapshots, then segments, older than `number`, each step made durable before
    /// the next (so an older snapshot never outlives the segments after it). Failures only
    /// leave garbage that the next open removes, so they are logged, not returned.
    fn remove_older_than(&mut self, number: u64) {
        if let Err(error) = open::remove_older(&self.storage, number) {
            tracing::warn!(%error, "could not remove log files older than snapshot {number}");
        }
    }
}
