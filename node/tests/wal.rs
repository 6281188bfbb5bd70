//! The write-ahead log against its promises (DESIGN.md §4): round trips, torn tails told from
//! damage on crafted logs (a flipped byte, a zeroed sector, a missing segment, a bad header,
//! zero fill), snapshots, the group-commit writer and fsync failures.
//!
//! Method: every scenario is a generic function over [`Storage`], run once on a
//! [`MemoryStorage`] and once on a [`DirStorage`] in a temporary directory (the `suite!` macro
//! below). Files are damaged through the storage itself (truncate, overwrite), as a crash or a
//! bad disk would. A counting wrapper counts fsyncs and can make them fail. The property test
//! at the end throws random bytes at a log and checks that recovery never panics and only ever
//! yields a prefix of what was written.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use proptest::prelude::*;
use tally_core::{
    ActorId, NodeId, OptionIndex, OptionName, PollId, PollSpec, PollWindow, RecordBatch,
    UnixMillis, VoteId,
};
use tally_node::storage::{
    DirStorage, LockError, MemoryStorage, Storage, StorageFile, StorageLock,
};
use tally_node::wal::{
    CorruptionReason, RecoveryReport, WAL_FILE_HEADER_BYTES, Wal, WalDone, WalEntry, WalError,
    WalJob, WalJobKind, run_writer, spawn_writer_thread,
};
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A storage plus whatever keeps it alive (the temporary directory).
struct Disk<S> {
    storage: S,
    _dir: Option<tempfile::TempDir>,
}

fn memory() -> Disk<MemoryStorage> {
    Disk {
        storage: MemoryStorage::new(),
        _dir: None,
    }
}

fn directory() -> Disk<DirStorage> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = DirStorage::open(dir.path().join("data")).expect("the data directory");
    Disk {
        storage,
        _dir: Some(dir),
    }
}

fn segment(number: u64) -> String {
    format!("wal-{number:020}.log")
}

fn snapshot(number: u64) -> String {
    format!("snapshot-{number:020}.snap")
}

fn actor() -> ActorId {
    ActorId {
        node: NodeId::new("us-east").expect("valid name"),
        incarnation: 7,
    }
}

fn poll_entry(index: u64) -> WalEntry {
    let options = ["green", "blue", "red"].map(|n| OptionName::new(n).expect("valid name"));
    let spec = PollSpec::new(
        PollId::new(format!("poll-{index}")).expect("valid name"),
        options.to_vec(),
        PollWindow::open_from(UnixMillis(1_000 * index)),
    )
    .expect("valid poll");
    WalEntry::Poll(spec)
}

/// A batch of `records` records starting at seq `first_seq`, IDs derived from `salt`.
fn records_entry(first_seq: u64, records: u64, salt: u64) -> WalEntry {
    let poll = PollId::new("superbowl").expect("valid name");
    let mut batch = RecordBatch::new(poll, actor(), first_seq);
    for i in 0..records {
        let id = u128::from(salt) << 64 | u128::from(first_seq + i);
        batch.push(VoteId(id), OptionIndex((i % 3) as u8), (i / 4) as u32);
    }
    WalEntry::Records(batch)
}

/// `count` entries: an identity, some polls and index reservations, and record batches of
/// varied sizes.
fn history(count: u64, salt: u64) -> Vec<WalEntry> {
    let mut seq = 1;
    (0..count)
        .map(|i| match i {
            0 => WalEntry::Identity(actor()),
            _ if i % 7 == 1 => poll_entry(i),
            _ if i % 11 == 5 => WalEntry::Reserve {
                poll: PollId::new("superbowl").expect("valid name"),
                vote_ids: i * 1_000 + salt,
            },
            _ => {
                let records = 1 + (i * 13 + salt) % 40;
                let entry = records_entry(seq, records, salt);
                seq += records;
                entry
            }
        })
        .collect()
}

/// Writes `entries` one append each, syncs, and returns each entry's frame offset in the
/// first segment.
fn write_log<S: Storage + Clone>(storage: &S, entries: &[WalEntry]) -> Vec<u64> {
    let (mut wal, report) = Wal::open(storage.clone(), |_| {}).expect("a new log opens");
    assert_eq!(report.entries, 0);
    let mut offset = WAL_FILE_HEADER_BYTES as u64;
    let mut offsets = Vec::new();
    for entry in entries {
        offsets.push(offset);
        offset += wal.append(std::slice::from_ref(entry)).expect("append");
    }
    wal.sync().expect("sync");
    offsets
}

fn replay<S: Storage + Clone>(storage: &S) -> Result<(Vec<WalEntry>, RecoveryReport), WalError> {
    let mut seen = Vec::new();
    let (_wal, report) = Wal::open(storage.clone(), |entry| seen.push(entry))?;
    Ok((seen, report))
}

fn file_len<S: Storage>(storage: &S, name: &str) -> u64 {
    let file = storage.open(name).expect("the file exists");
    file.len().expect("its length")
}

fn read_file<S: Storage>(storage: &S, name: &str) -> Vec<u8> {
    let file = storage.open(name).expect("the file exists");
    let mut bytes = vec![0; file.len().expect("its length") as usize];
    file.read_exact_at(&mut bytes, 0).expect("its bytes");
    bytes
}

fn write_file<S: Storage>(storage: &S, name: &str, bytes: &[u8]) {
    let mut file = storage.create(name).expect("created");
    file.write_all_at(bytes, 0).expect("written");
    file.sync_data().expect("synced");
    storage.sync_dir().expect("directory synced");
}

fn truncate<S: Storage>(storage: &S, name: &str, len: u64) {
    let mut file = storage.open(name).expect("the file exists");
    file.set_len(len).expect("truncated");
}

fn flip_byte<S: Storage>(storage: &S, name: &str, offset: u64) {
    let mut file = storage.open(name).expect("the file exists");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).expect("the byte");
    file.write_all_at(&[byte[0] ^ 0x5a], offset)
        .expect("the flipped byte");
}

/// Counts fsyncs of every file and can make them fail from now on.
#[derive(Clone)]
struct Counting<S> {
    inner: S,
    syncs: Arc<AtomicUsize>,
    fail: Arc<AtomicBool>,
}

impl<S> Counting<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            syncs: Arc::default(),
            fail: Arc::default(),
        }
    }

    fn syncs(&self) -> usize {
        self.syncs.load(Ordering::SeqCst)
    }
}

struct CountingFile<F> {
    inner: F,
    syncs: Arc<AtomicUsize>,
    fail: Arc<AtomicBool>,
}

impl<S: Storage> Storage for Counting<S> {
    type File = CountingFile<S::File>;

    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }

    fn open(&self, name: &str) -> io::Result<Self::File> {
        Ok(self.wrap(self.inner.open(name)?))
    }

    fn create(&self, name: &str) -> io::Result<Self::File> {
        Ok(self.wrap(self.inner.create(name)?))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.inner.sync_dir()
    }

    fn lock(&self, holder: &str) -> Result<StorageLock, LockError> {
        self.inner.lock(holder)
    }
}

impl<S> Counting<S> {
    fn wrap<F>(&self, inner: F) -> CountingFile<F> {
        CountingFile {
            inner,
            syncs: self.syncs.clone(),
            fail: self.fail.clone(),
        }
    }
}

impl<F: StorageFile> StorageFile for CountingFile<F> {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.inner.write_at(buf, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.inner.sync_data()
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios, generic over the storage

/// Goal: what is appended and synced comes back, in order. Method: write 300 entries of all
/// kinds in one segment, reopen, compare.
fn round_trip_of_many_entries_replays_them_in_order<S: Storage + Clone>(disk: Disk<S>) {
    let written = history(300, 1);
    write_log(&disk.storage, &written);
    let (seen, report) = replay(&disk.storage).expect("recovers");
    assert_eq!(seen, written);
    assert_eq!(report.entries, 300);
    assert_eq!(report.corruption, None);
    assert_eq!(report.segments, vec![1]);
}

/// Goal: a crash in the middle of the last append loses only that entry, and says so.
/// Method: cut the segment at every byte offset inside the last entry; each prefix must
/// replay all complete entries and report the torn one at its offset, truncated away.
fn every_cut_through_the_last_entry_recovers_all_complete_entries<S: Storage + Clone>(
    make: fn() -> Disk<S>,
) {
    let written = history(12, 2);
    let probe = make();
    let offsets = write_log(&probe.storage, &written);
    let last = *offsets.last().expect("entries");
    let end = file_len(&probe.storage, &segment(1));
    for cut in last..end {
        let disk = make();
        write_log(&disk.storage, &written);
        truncate(&disk.storage, &segment(1), cut);
        let (seen, report) = replay(&disk.storage).expect("recovers");
        assert_eq!(seen, written[..written.len() - 1], "cut at {cut}");
        match &report.corruption {
            None => assert_eq!(cut, last, "a clean end only at the frame boundary"),
            Some(corruption) => {
                assert_eq!(corruption.offset, last, "cut at {cut}");
                assert_eq!(corruption.file, segment(1));
                assert!(matches!(
                    corruption.reason,
                    CorruptionReason::TornFrameHeader { .. }
                        | CorruptionReason::TornPayload { .. }
                        | CorruptionReason::ZeroFill
                ));
                assert!(report.damage.is_empty(), "a torn tail is not damage");
                assert!(
                    !report.is_whole(),
                    "a cut tail may have held durable entries"
                );
            }
        }
        assert_eq!(
            file_len(&disk.storage, &segment(1)),
            last,
            "torn tail cut off"
        );
    }
}

/// Goal (issue 29): damage in the middle is not a torn tail: every entry before and after
/// the damaged one replays, nothing is cut, and the damaged file is kept aside byte for byte
/// before the log opens. Method: flip one payload byte of entry 5 of 20; read (nothing may
/// change on disk), then open, append, reopen.
fn a_flipped_byte_mid_log_is_damage_and_every_other_entry_replays<S: Storage + Clone>(
    disk: Disk<S>,
) {
    let written = history(20, 3);
    let offsets = write_log(&disk.storage, &written);
    flip_byte(&disk.storage, &segment(1), offsets[5] + 10);
    let damaged = read_file(&disk.storage, &segment(1));
    let mut seen = Vec::new();
    let recovery = Wal::recover(disk.storage.clone(), |entry| seen.push(entry)).expect("reads");
    let mut expected = written.clone();
    expected.remove(5);
    assert_eq!(seen, expected);
    let report = recovery.report().clone();
    assert_eq!(report.corruption, None, "not a torn tail");
    assert_eq!(report.damage.len(), 1, "{report}");
    let damage = &report.damage[0];
    assert_eq!((damage.segment, damage.offset), (1, offsets[5]));
    assert_eq!(damage.bytes, offsets[6] - offsets[5]);
    assert!(matches!(
        damage.reason,
        CorruptionReason::BadChecksum { .. }
    ));
    assert!(report.is_damaged() && !report.is_whole());
    assert_eq!(disk.storage.list().expect("list"), vec![segment(1)]);
    assert_eq!(
        read_file(&disk.storage, &segment(1)),
        damaged,
        "reading changed nothing"
    );

    let (mut wal, report) = recovery.finish().expect("opens");
    let copy = format!("{}.damaged-1", segment(1));
    assert_eq!(report.kept_aside, vec![copy.clone()]);
    assert_eq!(
        read_file(&disk.storage, &copy),
        damaged,
        "kept aside byte for byte"
    );
    assert_eq!(
        read_file(&disk.storage, &segment(1)),
        damaged,
        "never rewritten"
    );
    let more = poll_entry(77);
    wal.append(std::slice::from_ref(&more)).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    let (again, report) = replay(&disk.storage).expect("reopens");
    expected.push(more);
    assert_eq!(again, expected);
    assert_eq!(
        report.damage.len(),
        1,
        "damage stays until a snapshot retires it"
    );
    assert_eq!(report.kept_aside, vec![format!("{}.damaged-2", segment(1))]);
}

/// Goal: a zeroed 512-byte sector in the middle of a segment (a disk's typical loss) is
/// damage; the entries it did not touch all replay. Method: zero the sector holding the
/// middle of the log and check which entries come back.
fn a_zeroed_sector_mid_log_is_damage<S: Storage + Clone>(disk: Disk<S>) {
    let written = history(60, 22);
    let offsets = write_log(&disk.storage, &written);
    let len = file_len(&disk.storage, &segment(1));
    let sector = (len / 2) / 512 * 512;
    let mut bytes = read_file(&disk.storage, &segment(1));
    bytes[sector as usize..(sector + 512) as usize].fill(0);
    write_file(&disk.storage, &segment(1), &bytes);
    let (seen, report) = replay(&disk.storage).expect("recovers");
    let ends: Vec<u64> = offsets.iter().skip(1).copied().chain([len]).collect();
    let untouched: Vec<WalEntry> = written
        .iter()
        .zip(offsets.iter().zip(&ends))
        .filter(|(_, (start, end))| **end <= sector || **start >= sector + 512)
        .map(|(entry, _)| entry.clone())
        .collect();
    assert!(untouched.len() < written.len() && untouched.len() > written.len() / 2);
    assert_eq!(seen, untouched);
    assert_eq!(report.corruption, None);
    assert!(report.is_damaged(), "{report}");
}

/// Goal: a missing segment is damage: the segments after it replay, nothing is removed.
/// Method: snapshot twice so that segments 2 and 3 exist, remove segment 2, recover.
fn a_missing_segment_is_damage_and_the_later_ones_replay<S: Storage + Clone>(disk: Disk<S>) {
    let (first, second, third) = (history(8, 23), history(6, 24), history(4, 25));
    let (mut wal, _) = Wal::open(disk.storage.clone(), |_| {}).expect("opens");
    wal.append(&first).expect("append");
    wal.write_snapshot(first.clone()).expect("snapshot 2");
    wal.append(&second).expect("append");
    wal.sync().expect("sync");
    let kept =
        [snapshot(2), segment(2)].map(|name| (name.clone(), read_file(&disk.storage, &name)));
    wal.write_snapshot(first.iter().chain(&second).cloned())
        .expect("snapshot 3");
    wal.append(&third).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    // Snapshot 3 rots away with segment 2 gone: snapshot 2 and segment 3 are left.
    disk.storage.remove(&snapshot(3)).expect("removed");
    write_file(&disk.storage, &kept[0].0, &kept[0].1);
    let files = disk.storage.list().expect("list");
    let mut seen = Vec::new();
    let recovery = Wal::recover(disk.storage.clone(), |entry| seen.push(entry)).expect("reads");
    let expected: Vec<WalEntry> = first.iter().chain(&third).cloned().collect();
    assert_eq!(seen, expected);
    assert_eq!(recovery.report().missing_segments, vec![(2, 2)]);
    assert!(recovery.report().is_damaged());
    assert_eq!(
        disk.storage.list().expect("list"),
        files,
        "reading changed nothing"
    );
    let (_, report) = recovery.finish().expect("opens");
    assert!(
        report.kept_aside.is_empty(),
        "nothing to copy of a missing file"
    );
    assert_eq!(report.segments, vec![3]);
}

/// Goal: zero fill after the last frame (preallocated space, or a zeroed last sector) is cut
/// off as a torn tail would be, not damage; and the log says it is not whole. Method: append
/// 4 KiB of zeros to a log.
fn zero_fill_after_the_last_frame_is_cut_not_damage<S: Storage + Clone>(disk: Disk<S>) {
    let written = history(10, 26);
    write_log(&disk.storage, &written);
    let len = file_len(&disk.storage, &segment(1));
    let mut bytes = read_file(&disk.storage, &segment(1));
    bytes.resize(bytes.len() + 4096, 0);
    write_file(&disk.storage, &segment(1), &bytes);
    let (seen, report) = replay(&disk.storage).expect("recovers");
    assert_eq!(seen, written);
    let cut = report.corruption.clone().expect("the zeros are cut off");
    assert_eq!((cut.offset, cut.bytes), (len, 4096));
    assert_eq!(cut.reason, CorruptionReason::ZeroFill);
    assert!(!report.is_damaged() && !report.is_whole());
    assert_eq!(file_len(&disk.storage, &segment(1)), len);
}

/// Goal: a bad header with valid frames after it is damage (they replay); a torn header with
/// nothing but zeros after it is a crash while the segment was created (written again).
/// Method: flip a header byte of a full log; then tear the header of an empty last segment.
fn a_bad_header_is_damage_unless_nothing_follows_it<S: Storage + Clone>(disk: Disk<S>) {
    let written = history(9, 27);
    write_log(&disk.storage, &written);
    flip_byte(&disk.storage, &segment(1), 3);
    let (seen, report) = replay(&disk.storage).expect("recovers");
    assert_eq!(seen, written);
    assert_eq!(report.damage.len(), 1, "{report}");
    assert_eq!(report.damage[0].offset, 0);
    assert!(matches!(
        report.damage[0].reason,
        CorruptionReason::BadMagic
    ));
    let (seen, report) = replay(&disk.storage).expect("the header is left as it was");
    assert_eq!(seen, written);
    assert_eq!(report.damage.len(), 1, "{report}");

    for name in disk.storage.list().expect("list") {
        disk.storage.remove(&name).expect("removed");
    }
    write_file(
        &disk.storage,
        &segment(1),
        &[b'T', b'A', b'L', 0, 0, 0, 0, 0, 0, 0],
    );
    let (seen, report) = replay(&disk.storage).expect("recovers");
    assert!(seen.is_empty());
    assert!(!report.is_damaged(), "{report}");
    assert!(report.corruption.is_some());
    assert_eq!(
        file_len(&disk.storage, &segment(1)),
        WAL_FILE_HEADER_BYTES as u64
    );
}

/// Goal: bytes after the last frame of a segment that is not the last are damage (a segment
/// is synced whole before the next one starts), never cut. Method: snapshot so that segment
/// 2 follows, put segment 1 back with garbage appended and snapshot 2 removed.
fn garbage_at_the_end_of_an_earlier_segment_is_damage<S: Storage + Clone>(disk: Disk<S>) {
    let (first, second) = (history(7, 28), history(5, 29));
    write_log(&disk.storage, &first);
    let mut old = read_file(&disk.storage, &segment(1));
    let (mut wal, _) = Wal::open(disk.storage.clone(), |_| {}).expect("opens");
    wal.write_snapshot(first.clone()).expect("snapshot");
    wal.append(&second).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    disk.storage.remove(&snapshot(2)).expect("removed");
    old.extend_from_slice(&[0xab; 100]);
    write_file(&disk.storage, &segment(1), &old);
    let (seen, report) = replay(&disk.storage).expect("recovers");
    assert_eq!(
        seen,
        first.iter().chain(&second).cloned().collect::<Vec<_>>()
    );
    assert_eq!(report.damage.len(), 1, "{report}");
    assert_eq!(report.damage[0].segment, 1);
    assert_eq!(report.damage[0].bytes, 100);
    assert_eq!(report.corruption, None);
    assert_eq!(
        file_len(&disk.storage, &segment(1)),
        old.len() as u64,
        "never cut"
    );
}

/// Goal: after a torn tail is cut off, new appends are readable. Method: tear the last entry,
/// recover, append and sync more, recover again: no damage, old prefix plus the new entries.
fn appends_after_recovering_a_torn_log_are_readable<S: Storage + Clone>(disk: Disk<S>) {
    let written = history(10, 4);
    let offsets = write_log(&disk.storage, &written);
    truncate(&disk.storage, &segment(1), offsets[9] + 3);
    let (mut wal, report) = Wal::open(disk.storage.clone(), |_| {}).expect("recovers");
    assert!(report.corruption.is_some());
    let more = history(5, 5);
    wal.append(&more).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    let (seen, report) = replay(&disk.storage).expect("recovers again");
    assert_eq!(report.corruption, None);
    let expected: Vec<WalEntry> = written[..9].iter().chain(&more).cloned().collect();
    assert_eq!(seen, expected);
}

/// Goal: snapshot plus the segment after it recover the full history, and old files go.
/// Method: log A, snapshot A, log B; recover: A then B, from snapshot 2 and segment 2 only.
fn snapshot_and_later_segment_recover_the_full_history<S: Storage + Clone>(disk: Disk<S>) {
    let before = history(40, 6);
    let after = history(15, 7);
    let (mut wal, _) = Wal::open(disk.storage.clone(), |_| {}).expect("opens");
    wal.append(&before).expect("append");
    let written = wal.write_snapshot(before.clone()).expect("snapshot");
    assert_eq!((written.number, written.entries), (2, 40));
    assert_eq!(wal.bytes_since_snapshot(), 0);
    wal.append(&after).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    assert_eq!(
        disk.storage.list().expect("list"),
        vec![snapshot(2), segment(2)],
        "the old segment is removed"
    );
    let (seen, report) = replay(&disk.storage).expect("recovers");
    let expected: Vec<WalEntry> = before.iter().chain(&after).cloned().collect();
    assert_eq!(seen, expected);
    assert_eq!(report.snapshot, Some(2));
    assert_eq!(report.snapshot_entries, 40);
    assert_eq!(report.segments, vec![2]);
    assert_eq!(report.corruption, None);
}

/// Goal: a damaged snapshot with nothing older to fall back on is damage, not an error:
/// every entry of it that reads replays. Method: snapshot, flip a byte inside it, recover.
fn a_damaged_snapshot_replays_its_valid_entries<S: Storage + Clone>(disk: Disk<S>) {
    let state = history(30, 8);
    let (mut wal, _) = Wal::open(disk.storage.clone(), |_| {}).expect("opens");
    wal.write_snapshot(state.clone()).expect("snapshot");
    drop(wal);
    flip_byte(&disk.storage, &snapshot(2), 200);
    let (seen, report) = replay(&disk.storage).expect("recovers");
    assert_eq!(seen.len(), state.len() - 1, "all but the damaged entry");
    assert!(seen.iter().all(|entry| state.contains(entry)));
    assert_eq!(report.damage.len(), 1, "{report}");
    assert_eq!(report.damage[0].file, snapshot(2));
    assert!(report.damage[0].offset > 0);
    assert_eq!(report.snapshot, None, "no snapshot checks out");
    assert!(
        disk.storage
            .list()
            .expect("list")
            .contains(&format!("{}.damaged-1", snapshot(2)))
    );
}

/// Goal: a damaged snapshot newer than a valid one (a crash between writing a snapshot and
/// removing the old files) is damage; the valid one, its segment, the damaged snapshot's
/// readable entries and the newest segment all replay. Method: build snapshot 2 + segment 2,
/// keep copies, snapshot again (3), put the copies back, damage snapshot 3, recover.
fn a_damaged_snapshot_newer_than_a_valid_one_is_damage<S: Storage + Clone>(disk: Disk<S>) {
    let (first, second, third) = (history(20, 9), history(10, 10), history(5, 11));
    let (mut wal, _) = Wal::open(disk.storage.clone(), |_| {}).expect("opens");
    wal.write_snapshot(first.clone()).expect("snapshot 2");
    wal.append(&second).expect("append");
    wal.sync().expect("sync");
    let kept = [snapshot(2), segment(2)].map(|name| {
        let bytes = read_file(&disk.storage, &name);
        (name, bytes)
    });
    let all: Vec<WalEntry> = first.iter().chain(&second).cloned().collect();
    wal.write_snapshot(all.clone()).expect("snapshot 3");
    wal.append(&third).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    for (name, bytes) in &kept {
        write_file(&disk.storage, name, bytes);
    }
    flip_byte(&disk.storage, &snapshot(3), 100);
    let (seen, report) = replay(&disk.storage).expect("recovers");
    assert_eq!(report.snapshot, Some(2));
    assert_eq!(report.segments, vec![2, 3]);
    assert_eq!(report.damage.len(), 1, "{report}");
    assert_eq!(report.damage[0].file, snapshot(3));
    let (head, tail) = seen.split_at(30);
    assert_eq!(head, &all[..]);
    assert_eq!(&tail[tail.len() - 5..], &third[..]);
    assert_eq!(tail.len(), 5 + 29, "snapshot 3 less its damaged entry");
}

/// Goal: without a valid snapshot, segments older than a damaged one (left by a clean-up
/// that failed) are replayed too, not ignored. Method: log A in segment 1, snapshot it (2),
/// log B in segment 2, put segment 1 back, damage snapshot 2's header.
fn a_damaged_snapshot_with_older_segments_left_replays_them_too<S: Storage + Clone>(disk: Disk<S>) {
    let (first, second) = (history(12, 30), history(6, 31));
    write_log(&disk.storage, &first);
    let old = read_file(&disk.storage, &segment(1));
    let (mut wal, _) = Wal::open(disk.storage.clone(), |_| {}).expect("opens");
    wal.write_snapshot(first.clone()).expect("snapshot");
    wal.append(&second).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    write_file(&disk.storage, &segment(1), &old);
    flip_byte(&disk.storage, &snapshot(2), 2);
    let (seen, report) = replay(&disk.storage).expect("recovers");
    assert_eq!(&seen[..first.len()], &first[..], "segment 1 first");
    assert_eq!(
        &seen[seen.len() - second.len()..],
        &second[..],
        "segment 2 last"
    );
    assert_eq!(report.segments, vec![1, 2]);
    assert!(report.missing_segments.is_empty());
    assert!(
        report.damage.iter().any(|d| d.file == snapshot(2)),
        "{report}"
    );
}

/// Goal: an entry over the size limit is refused whole and the log stays usable.
/// Method: append a good entry and an oversized batch in one call, then a good one.
fn an_oversized_entry_is_refused_and_nothing_is_appended<S: Storage + Clone>(disk: Disk<S>) {
    let (mut wal, _) = Wal::open(disk.storage.clone(), |_| {}).expect("opens");
    let huge = records_entry(1, 300_000, 12);
    let good = poll_entry(1);
    let refused = wal.append(&[good.clone(), huge]);
    assert!(matches!(refused, Err(WalError::EntryTooLarge { .. })));
    wal.append(std::slice::from_ref(&good)).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    assert_eq!(replay(&disk.storage).expect("recovers").0, vec![good]);
}

/// Goal: a log written by another format version is refused, not truncated.
/// Method: rewrite the header's version and checksum, open, check the bytes are untouched.
fn a_log_of_another_format_version_is_refused_untouched<S: Storage + Clone>(disk: Disk<S>) {
    write_log(&disk.storage, &history(5, 13));
    let mut bytes = read_file(&disk.storage, &segment(1));
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    let checksum = crc32c::crc32c(&bytes[..28]);
    bytes[28..32].copy_from_slice(&checksum.to_le_bytes());
    write_file(&disk.storage, &segment(1), &bytes);
    assert!(matches!(
        replay(&disk.storage),
        Err(WalError::UnsupportedVersion { found: 2, .. })
    ));
    assert_eq!(read_file(&disk.storage, &segment(1)), bytes);
}

/// Goal: the group-commit writer covers every job already queued with ONE fsync and
/// acknowledges up to the last token. Method: queue five jobs before the writer starts,
/// count fsyncs, read the reports, recover.
async fn group_commit_coalesces_queued_jobs_into_one_sync<S: Storage + Clone>(disk: Disk<S>) {
    let storage = Counting::new(disk.storage.clone());
    let (wal, _) = Wal::open(storage.clone(), |_| {}).expect("opens");
    let syncs_before = storage.syncs();
    let (submit, jobs) = mpsc::channel(16);
    let (done_sender, mut done) = mpsc::channel(16);
    let written = history(10, 14);
    for (token, pair) in (10..).zip(written.chunks(2)) {
        submit
            .send(WalJob::append(token, pair.to_vec()))
            .await
            .expect("queued");
    }
    drop(submit);
    run_writer(wal, jobs, done_sender)
        .await
        .expect("the writer ends cleanly");
    let report: WalDone = done.recv().await.expect("one report");
    assert!(report.result.is_ok());
    assert_eq!(report.up_to_token, 14);
    assert_eq!((report.jobs, report.entries), (5, 10));
    assert_eq!(report.kind, WalJobKind::Append);
    assert!(done.recv().await.is_none(), "one group, one report");
    assert_eq!(storage.syncs() - syncs_before, 1, "one fsync for five jobs");
    assert_eq!(replay(&disk.storage).expect("recovers").0, written);
}

/// Goal: a snapshot job is never grouped with appends and keeps its place in the order.
/// Method: queue append, append, snapshot (of everything so far), append; check the reports
/// and what recovery sees.
async fn the_writer_takes_snapshots_in_order<S: Storage + Clone>(disk: Disk<S>) {
    let (wal, _) = Wal::open(disk.storage.clone(), |_| {}).expect("opens");
    let (submit, jobs) = mpsc::channel(16);
    let (done_sender, mut done) = mpsc::channel(16);
    let (a, b, c) = (history(3, 15), history(4, 16), history(2, 17));
    let state: Vec<WalEntry> = a.iter().chain(&b).cloned().collect();
    for job in [
        WalJob::append(1, a),
        WalJob::append(2, b),
        WalJob::snapshot(3, state.clone()),
        WalJob::append(4, c.clone()),
    ] {
        submit.send(job).await.expect("queued");
    }
    drop(submit);
    run_writer(wal, jobs, done_sender).await.expect("clean end");
    let mut reports = Vec::new();
    while let Some(report) = done.recv().await {
        assert!(report.result.is_ok());
        reports.push((report.up_to_token, report.kind));
    }
    assert_eq!(
        reports,
        vec![
            (2, WalJobKind::Append),
            (3, WalJobKind::Snapshot),
            (4, WalJobKind::Append)
        ]
    );
    let (seen, report) = replay(&disk.storage).expect("recovers");
    assert_eq!(seen, state.into_iter().chain(c).collect::<Vec<_>>());
    assert_eq!(report.snapshot, Some(2));
}

/// Goal: a failed fsync is reported, never retried, and ends the writer (fsyncgate), which
/// keeps the directory's lock until the engine lets go of its queue (a second process must
/// not open the directory while the failed node still answers its peers). Method: make
/// fsyncs fail, queue two jobs, then make fsyncs work again: the report is an error for both;
/// while the queue is open a second open is refused and a further job is taken unanswered;
/// once it closes the writer returns the error, and the log refuses further work.
async fn a_failed_fsync_is_reported_and_stops_the_writer<S: Storage + Clone>(disk: Disk<S>) {
    let storage = Counting::new(disk.storage.clone());
    let (wal, _) = Wal::open(storage.clone(), |_| {}).expect("opens");
    let (submit, jobs) = mpsc::channel(16);
    let (done_sender, mut done) = mpsc::channel::<WalDone>(16);
    storage.fail.store(true, Ordering::SeqCst);
    for token in [1, 2] {
        submit
            .send(WalJob::append(token, history(2, token)))
            .await
            .expect("queued");
    }
    let checks = async {
        let report = done.recv().await.expect("the failure is reported");
        assert_eq!(report.up_to_token, 2);
        assert!(report.result.is_err());
        storage.fail.store(false, Ordering::SeqCst);
        let second = Wal::open(storage.clone(), |_| {});
        assert!(
            matches!(second, Err(WalError::Locked(_))),
            "a failed writer still holds the directory"
        );
        storage.fail.store(true, Ordering::SeqCst);
        submit
            .send(WalJob::append(3, vec![]))
            .await
            .expect("taken while the writer holds the log");
        drop(submit);
    };
    let (ended, ()) = tokio::join!(run_writer(wal, jobs, done_sender), checks);
    assert!(matches!(
        ended,
        Err(WalError::Io {
            operation: "sync",
            ..
        })
    ));
    assert!(
        done.recv().await.is_none(),
        "nothing answered after the failure"
    );

    storage.fail.store(false, Ordering::SeqCst);
    let (mut wal, _) = Wal::open(storage.clone(), |_| {}).expect("opens");
    storage.fail.store(true, Ordering::SeqCst);
    wal.append(&history(1, 3)).expect("buffered");
    assert!(wal.sync().is_err());
    storage.fail.store(false, Ordering::SeqCst);
    assert!(matches!(wal.sync(), Err(WalError::Stopped { .. })));
    assert!(matches!(wal.append(&[]), Err(WalError::Stopped { .. })));
}

/// Goal: the writer thread runs on its own and hands the log back when the engine hangs up.
/// Method: submit two jobs from a plain thread, wait for both reports, drop the sender, join.
fn the_writer_thread_acknowledges_and_returns_the_log<S: Storage + Clone + 'static>(disk: Disk<S>) {
    let (wal, _) = Wal::open(disk.storage.clone(), |_| {}).expect("opens");
    let mut handle = spawn_writer_thread(wal, 8, "tally-wal-test").expect("a thread");
    let written = history(6, 18);
    handle
        .submit
        .blocking_send(WalJob::append(1, written[..3].to_vec()))
        .expect("queued");
    handle
        .submit
        .blocking_send(WalJob::append(2, written[3..].to_vec()))
        .expect("queued");
    let mut acknowledged = 0;
    while acknowledged < 2 {
        let report = handle.done.blocking_recv().expect("a report");
        assert!(report.result.is_ok());
        acknowledged = report.up_to_token;
    }
    drop(handle.submit);
    let wal = handle.thread.join().expect("no panic").expect("clean end");
    drop(wal);
    assert_eq!(replay(&disk.storage).expect("recovers").0, written);
}

/// Goal: an empty directory starts a new log, and reopening an untouched one changes nothing.
/// Method: open twice without appending.
fn an_empty_storage_starts_a_new_log<S: Storage + Clone>(disk: Disk<S>) {
    let (_, report) = replay(&disk.storage).expect("a new log");
    assert_eq!(report, RecoveryReport::default());
    let (_, again) = replay(&disk.storage).expect("reopens");
    let expected = RecoveryReport {
        segments: vec![1],
        ..RecoveryReport::default()
    };
    assert_eq!(again, expected);
    assert_eq!(disk.storage.list().expect("list"), vec![segment(1)]);
}

/// Goal: a crash after a snapshot is in place but before its segment exists recovers from
/// the snapshot and cleans up. Method: snapshot, then put the old segment back, remove the
/// new one and leave an unfinished temp snapshot; recover, append, recover again.
fn an_interrupted_snapshot_recovers_and_cleans_up<S: Storage + Clone>(disk: Disk<S>) {
    let state = history(25, 19);
    write_log(&disk.storage, &state);
    let old_segment = read_file(&disk.storage, &segment(1));
    let (mut wal, _) = Wal::open(disk.storage.clone(), |_| {}).expect("opens");
    wal.write_snapshot(state.clone()).expect("snapshot");
    drop(wal);
    disk.storage.remove(&segment(2)).expect("removed");
    write_file(&disk.storage, &segment(1), &old_segment);
    let temp = format!("{}.tmp", snapshot(3));
    write_file(&disk.storage, &temp, b"half a snapshot");
    let (mut wal, report) = Wal::open(disk.storage.clone(), |_| {}).expect("recovers");
    assert_eq!((report.snapshot, report.entries), (Some(2), 25));
    assert_eq!(report.removed, vec![temp, segment(1)]);
    let more = history(3, 20);
    wal.append(&more).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    let (seen, _) = replay(&disk.storage).expect("recovers again");
    assert_eq!(seen, state.into_iter().chain(more).collect::<Vec<_>>());
    assert_eq!(
        disk.storage.list().expect("list"),
        vec![snapshot(2), segment(2)]
    );
}

/// Goal: a gap in the segments is damage, and reading changes nothing. Method: write
/// segment 1, plant a segment 3 of 5 bytes (a torn header: the crash struck while it was
/// created), read, drop, then open.
fn a_gap_in_the_segments_is_damage_that_reading_leaves_untouched<S: Storage + Clone>(
    disk: Disk<S>,
) {
    let written = history(4, 21);
    write_log(&disk.storage, &written);
    write_file(&disk.storage, &segment(3), b"later");
    let files = disk.storage.list().expect("list");
    let mut seen = Vec::new();
    let recovery = Wal::recover(disk.storage.clone(), |entry| seen.push(entry)).expect("reads");
    assert_eq!(seen, written);
    assert_eq!(recovery.report().missing_segments, vec![(2, 2)]);
    drop(recovery);
    assert_eq!(
        disk.storage.list().expect("list"),
        files,
        "dropped unopened: unchanged"
    );
    let (_, report) = Wal::open(disk.storage.clone(), |_| {}).expect("opens");
    assert!(report.is_damaged());
    let torn = report.corruption.clone().expect("segment 3's torn header");
    assert_eq!((torn.file, torn.offset), (segment(3), 0));
    assert_eq!(
        file_len(&disk.storage, &segment(3)),
        WAL_FILE_HEADER_BYTES as u64
    );
}

fn a_second_open_of_a_held_log_is_refused_and_changes_nothing<S: Storage + Clone>(disk: Disk<S>) {
    // Goal: one log per storage at a time (issue 30): a second open while the first is held
    // is refused before anything is read or written, and succeeds once the first is dropped.
    // Method: open, append and sync; open again; compare the files; drop; open again.
    let storage = &disk.storage;
    let (mut first, _) = Wal::recover_as(storage.clone(), "node first", |_| {})
        .and_then(|recovery| recovery.finish())
        .expect("opens");
    first.append(&history(20, 1)).expect("append");
    first.sync().expect("sync");
    let before = read_file(storage, &segment(1));
    match Wal::recover_as(storage.clone(), "node second", |_| {}) {
        Err(WalError::Locked(LockError::Held { holder, .. })) => {
            let holder = holder.expect("the holder names itself");
            assert!(holder.contains("node first"), "{holder}");
        }
        other => panic!("a held log was read again: {other:?}"),
    }
    assert_eq!(
        read_file(storage, &segment(1)),
        before,
        "the refused open changed the log"
    );
    drop(first);
    let (entries, report) = replay(storage).expect("opens once released");
    assert_eq!(report.entries, 20);
    assert_eq!(entries, history(20, 1));
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod on_memory {
            use super::*;
            $(#[test] fn $name() { super::$name(memory()); })*
            #[test]
            fn every_cut_through_the_last_entry_recovers_all_complete_entries() {
                super::every_cut_through_the_last_entry_recovers_all_complete_entries(memory);
            }
        }
        mod on_directory {
            use super::*;
            $(#[test] fn $name() { super::$name(directory()); })*
            #[test]
            fn every_cut_through_the_last_entry_recovers_all_complete_entries() {
                super::every_cut_through_the_last_entry_recovers_all_complete_entries(directory);
            }
        }
    };
}

macro_rules! async_suite {
    ($($name:ident),* $(,)?) => {
        mod on_memory_async {
            use super::*;
            $(#[tokio::test] async fn $name() { super::$name(memory()).await; })*
        }
        mod on_directory_async {
            use super::*;
            $(#[tokio::test] async fn $name() { super::$name(directory()).await; })*
        }
    };
}

suite!(
    round_trip_of_many_entries_replays_them_in_order,
    a_flipped_byte_mid_log_is_damage_and_every_other_entry_replays,
    a_zeroed_sector_mid_log_is_damage,
    a_missing_segment_is_damage_and_the_later_ones_replay,
    zero_fill_after_the_last_frame_is_cut_not_damage,
    a_bad_header_is_damage_unless_nothing_follows_it,
    garbage_at_the_end_of_an_earlier_segment_is_damage,
    appends_after_recovering_a_torn_log_are_readable,
    snapshot_and_later_segment_recover_the_full_history,
    a_damaged_snapshot_replays_its_valid_entries,
    a_damaged_snapshot_newer_than_a_valid_one_is_damage,
    a_damaged_snapshot_with_older_segments_left_replays_them_too,
    an_oversized_entry_is_refused_and_nothing_is_appended,
    a_log_of_another_format_version_is_refused_untouched,
    the_writer_thread_acknowledges_and_returns_the_log,
    an_empty_storage_starts_a_new_log,
    an_interrupted_snapshot_recovers_and_cleans_up,
    a_gap_in_the_segments_is_damage_that_reading_leaves_untouched,
    a_second_open_of_a_held_log_is_refused_and_changes_nothing,
);

async_suite!(
    group_commit_coalesces_queued_jobs_into_one_sync,
    the_writer_takes_snapshots_in_order,
    a_failed_fsync_is_reported_and_stops_the_writer,
);

// ---------------------------------------------------------------------------------------------
// Random damage

/// One way to damage a log file.
#[derive(Debug, Clone)]
enum Damage {
    /// Append these bytes.
    Append(Vec<u8>),
    /// Overwrite at this fraction of the file (per mille) with these bytes.
    Overwrite(u16, Vec<u8>),
    /// Cut the file at this fraction (per mille).
    Truncate(u16),
}

fn damage() -> impl Strategy<Value = Damage> {
    let bytes = prop::collection::vec(any::<u8>(), 1..64);
    prop_oneof![
        bytes.clone().prop_map(Damage::Append),
        (0u16..1000, bytes).prop_map(|(at, bytes)| Damage::Overwrite(at, bytes)),
        (0u16..1000).prop_map(Damage::Truncate),
    ]
}

fn apply(storage: &MemoryStorage, damage: &Damage) {
    let name = segment(1);
    storage
        .with_file_bytes(&name, |file| match damage {
            Damage::Append(bytes) => file.extend_from_slice(bytes),
            Damage::Overwrite(at, bytes) => {
                let start = file.len() * usize::from(*at) / 1000;
                let end = (start + bytes.len()).min(file.len());
                file[start..end].copy_from_slice(&bytes[..end - start]);
            }
            Damage::Truncate(at) => {
                let len = file.len() * usize::from(*at) / 1000;
                file.truncate(len);
            }
        })
        .expect("the segment exists");
}

/// Whether `seen` is `written` with some entries left out, in order.
fn is_subsequence(seen: &[WalEntry], written: &[WalEntry]) -> bool {
    let mut rest = written.iter();
    seen.iter().all(|entry| rest.any(|w| w == entry))
}

proptest! {
    /// Goal: no damage makes recovery panic or invent an entry. Method: write a generated
    /// history, damage the segment at random, recover: the entries seen are those written,
    /// in order, some left out (a torn tail, damage); then append and recover again: the
    /// same entries plus the new one, with no torn tail left and no new damage.
    #[test]
    fn random_damage_never_panics_recovery_or_yields_unwritten_entries(
        count in 1u64..25,
        salt in any::<u64>(),
        damages in prop::collection::vec(damage(), 1..4),
    ) {
        let storage = MemoryStorage::new();
        let written = history(count, salt);
        write_log(&storage, &written);
        for damage in &damages {
            apply(&storage, damage);
        }
        let (seen, report) = match replay(&storage) {
            Ok(replayed) => replayed,
            // Damage that forges a header of another version is refused, which is fine.
            Err(WalError::UnsupportedVersion { .. }) => return Ok(()),
            Err(other) => return Err(TestCaseError::fail(format!("{other}"))),
        };
        prop_assert!(is_subsequence(&seen, &written), "{} entries out of order or unwritten", seen.len());
        prop_assert_eq!(report.entries, seen.len() as u64);

        let (mut wal, _) = Wal::open(storage.clone(), |_| {}).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let extra = poll_entry(99);
        wal.append(std::slice::from_ref(&extra)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        wal.sync().map_err(|e| TestCaseError::fail(e.to_string()))?;
        drop(wal);
        let (again, again_report) = replay(&storage).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Damage never appears from nothing (a bad header whose garbage was cut off reads as
        // a torn header the next time, so it may disappear).
        prop_assert!(report.is_damaged() || !again_report.is_damaged());
        prop_assert_eq!(again_report.corruption, None);
        let expected: Vec<WalEntry> = seen.into_iter().chain([extra]).collect();
        prop_assert_eq!(again, expected);
    }
}

// ---------------------------------------------------------------------------------------------
// The fill written ahead of the appends (`Wal::fill_ahead`), on a real directory

mod fill {
    use super::*;
    use tally_node::faulty_storage::{DiskFaults, FaultyStorage};

    const FILL: u64 = 8192;
    const PATTERN: &[u8; 8] = b"TallyPad";

    /// A directory whose log keeps `FILL` bytes of fill ahead of its appends.
    fn filling() -> Disk<DirStorage> {
        let disk = directory();
        Disk {
            storage: disk.storage.with_fill_ahead_bytes(FILL),
            _dir: disk._dir,
        }
    }

    /// Writes `entries`, syncs, fills ahead as the group-commit writer does after reporting
    /// a group, and returns the end of the last frame.
    fn write_and_fill<S: Storage + Clone>(storage: &S, entries: &[WalEntry]) -> u64 {
        let (mut wal, _) = Wal::open(storage.clone(), |_| {}).expect("the log opens");
        wal.append(entries).expect("append");
        wal.sync().expect("sync");
        wal.fill_ahead();
        wal.end().1
    }

    fn assert_fill(bytes: &[u8], from: u64) {
        for (at, byte) in bytes.iter().enumerate().skip(from as usize) {
            assert_eq!(*byte, PATTERN[at % 8], "fill byte at offset {at}");
        }
    }

    /// Goal: fill after the last frame is read as a clean end, the log is whole (a node that
    /// crashed with fill in its segment keeps its incarnation), and appends that land in the
    /// fill replay. Method: write, fill, "crash" (drop the log without closing anything),
    /// check the bytes on disk, reopen; then append inside the fill and reopen again.
    #[test]
    fn fill_after_the_last_frame_is_a_clean_end_and_appends_land_in_it() {
        let disk = filling();
        let written = history(30, 41);
        let end = write_and_fill(&disk.storage, &written);
        let bytes = read_file(&disk.storage, &segment(1));
        assert_eq!(
            bytes.len() as u64,
            end + FILL,
            "the fill follows the last frame"
        );
        assert_fill(&bytes, end);

        let (seen, report) = replay(&disk.storage).expect("recovers");
        assert_eq!(seen, written);
        assert!(report.is_whole(), "fill is no torn tail: {report}");
        assert_eq!(report.corruption, None);

        // Appends into the fill, with a fill of their own: the length moves only with it.
        let more = history(5, 42)[1..].to_vec();
        let end = write_and_fill(&disk.storage, &more);
        assert_eq!(file_len(&disk.storage, &segment(1)), end + FILL);
        let (seen, report) = replay(&disk.storage).expect("recovers");
        let expected: Vec<WalEntry> = written.iter().chain(&more).cloned().collect();
        assert_eq!(seen, expected);
        assert!(report.is_whole(), "{report}");
    }

    /// Goal: what is not the log's own fill after the last frame still reads as a torn tail
    /// (the log is not whole, so the node takes a new incarnation): a torn append into the
    /// fill, a zeroed sector or a flipped byte in the fill, and damage that zeroes the last
    /// frame right up to the fill (what a zero-filled tail could not tell from preallocated
    /// space). Method: write and fill, damage one way, recover, restore, next way.
    #[test]
    fn anything_but_the_fill_after_the_last_frame_is_a_torn_tail() {
        let disk = filling();
        let written = history(30, 43);
        let end = write_and_fill(&disk.storage, &written);
        let clean = read_file(&disk.storage, &segment(1));
        let frames = tally_node::wal::inspect::frames(&clean);
        let last = frames.last().expect("frames").bytes.clone();
        assert_eq!(last.end, end);

        let mut torn = clean.clone();
        torn[end as usize..end as usize + 5].copy_from_slice(&[40, 0, 0, 0, 0xab]);
        let mut zeroed_sector = clean.clone();
        zeroed_sector[end as usize + 1024..end as usize + 1536].fill(0);
        let mut flipped = clean.clone();
        flipped[end as usize + 3000] ^= 0x01;
        let mut last_frame_zeroed = clean.clone();
        last_frame_zeroed[last.start as usize..last.end as usize].fill(0);

        let differs = |offset| Some(CorruptionReason::FillDiffers { offset });
        let cases = [
            ("a torn append", torn, written.len(), None),
            (
                "a zeroed sector in the fill",
                zeroed_sector,
                written.len(),
                differs(end + 1024),
            ),
            (
                "a flipped byte in the fill",
                flipped,
                written.len(),
                differs(end + 3000),
            ),
            (
                "the last frame zeroed",
                last_frame_zeroed,
                written.len() - 1,
                None,
            ),
        ];
        for (what, bytes, replayed, reason) in cases {
            write_file(&disk.storage, &segment(1), &bytes);
            let (seen, report) = replay(&disk.storage).expect("recovers");
            assert_eq!(seen, written[..replayed], "{what}");
            assert!(!report.is_damaged(), "{what}: {report}");
            assert!(
                !report.is_whole(),
                "{what} must not read as a clean end: {report}"
            );
            let cut = report.corruption.clone().expect("a torn tail");
            if let Some(reason) = reason {
                assert_eq!(cut.reason, reason, "{what}");
            }
        }
    }

    /// Goal: a snapshot closes the segment without its fill, so that a segment that is not
    /// the last ends right after its last frame. Method: write and fill, snapshot, then look
    /// at the closed segment before the snapshot's clean-up could remove it: a storage that
    /// refuses removals keeps it.
    #[test]
    fn a_snapshot_cuts_the_fill_off_the_segment_it_closes() {
        let disk = filling();
        let storage = KeepFiles(disk.storage.clone());
        let written = history(20, 44);
        let (mut wal, _) = Wal::open(storage.clone(), |_| {}).expect("the log opens");
        wal.append(&written).expect("append");
        wal.sync().expect("sync");
        wal.fill_ahead();
        let end = wal.end().1;
        assert_eq!(file_len(&storage, &segment(1)), end + FILL);
        wal.write_snapshot(written.clone()).expect("snapshot");
        assert_eq!(
            file_len(&storage, &segment(1)),
            end,
            "the closed segment lost its fill"
        );
        assert_eq!(wal.segment_number(), 2);
    }

    /// A directory whose files cannot be removed.
    #[derive(Clone)]
    struct KeepFiles(DirStorage);

    impl Storage for KeepFiles {
        type File = <DirStorage as Storage>::File;
        fn list(&self) -> io::Result<Vec<String>> {
            self.0.list()
        }
        fn open(&self, name: &str) -> io::Result<Self::File> {
            self.0.open(name)
        }
        fn create(&self, name: &str) -> io::Result<Self::File> {
            self.0.create(name)
        }
        fn rename(&self, from: &str, to: &str) -> io::Result<()> {
            self.0.rename(from, to)
        }
        fn remove(&self, _name: &str) -> io::Result<()> {
            Err(io::Error::other("removal refused"))
        }
        fn sync_dir(&self) -> io::Result<()> {
            self.0.sync_dir()
        }
        fn lock(&self, holder: &str) -> Result<StorageLock, LockError> {
            self.0.lock(holder)
        }
        fn fill_ahead_bytes(&self) -> u64 {
            self.0.fill_ahead_bytes()
        }
    }

    /// Goal: a fill the disk has no room for loses nothing: the log goes on, its appends are
    /// durable and replay whole. Method: a quota 4 KiB past the log, so the 8 KiB fill
    /// fails halfway with ENOSPC; then append and sync inside the part written, and reopen.
    #[test]
    fn a_fill_the_disk_has_no_room_for_loses_nothing() {
        let disk = filling();
        let faults = Arc::new(DiskFaults::default());
        let storage = FaultyStorage::new(disk.storage.clone(), faults.clone());
        let written = history(10, 45);
        let (mut wal, _) = Wal::open(storage.clone(), |_| {}).expect("the log opens");
        wal.append(&written).expect("append");
        wal.sync().expect("sync");
        faults.leave_room(4096);
        wal.fill_ahead();
        assert!(faults.full_writes() > 0, "the fill hit the quota");
        let more = history(3, 46)[1..].to_vec();
        wal.append(&more).expect("append after the failed fill");
        wal.sync().expect("sync after the failed fill");
        wal.fill_ahead();
        drop(wal);
        let (seen, report) = replay(&storage).expect("recovers");
        let expected: Vec<WalEntry> = written.iter().chain(&more).cloned().collect();
        assert_eq!(seen, expected);
        assert!(report.is_whole(), "{report}");
    }
}
