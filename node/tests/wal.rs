//! The write-ahead log against its promises (DESIGN.md §4): round trips, torn tails, flipped
//! bytes, snapshots, the group-commit writer and fsync failures.
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
                    CorruptionReason::TornFrameHeader { .. } | CorruptionReason::TornPayload { .. }
                ));
            }
        }
        assert_eq!(
            file_len(&disk.storage, &segment(1)),
            last,
            "torn tail cut off"
        );
    }
}

/// Goal: damage in the middle stops replay at the damaged entry and reports it.
/// Method: flip one payload byte of entry 5 of 20.
fn a_flipped_byte_stops_recovery_at_that_entry<S: Storage + Clone>(disk: Disk<S>) {
    let written = history(20, 3);
    let offsets = write_log(&disk.storage, &written);
    flip_byte(&disk.storage, &segment(1), offsets[5] + 10);
    let (seen, report) = replay(&disk.storage).expect("recovers");
    assert_eq!(seen, written[..5]);
    let corruption = report.corruption.expect("the damage is reported");
    assert_eq!(corruption.offset, offsets[5]);
    assert_eq!(corruption.segment, 1);
    assert!(matches!(
        corruption.reason,
        CorruptionReason::BadChecksum { .. }
    ));
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

/// Goal: a corrupt snapshot with nothing older to fall back on is an error, and nothing is
/// deleted. Method: snapshot, flip a byte inside it, open.
fn a_corrupt_snapshot_is_reported<S: Storage + Clone>(disk: Disk<S>) {
    let state = history(30, 8);
    let (mut wal, _) = Wal::open(disk.storage.clone(), |_| {}).expect("opens");
    wal.write_snapshot(state).expect("snapshot");
    drop(wal);
    let files = disk.storage.list().expect("list");
    flip_byte(&disk.storage, &snapshot(2), 200);
    match replay(&disk.storage) {
        Err(WalError::SnapshotCorrupt { corruption }) => {
            assert_eq!(corruption.file, snapshot(2));
            assert!(corruption.offset > 0);
        }
        other => panic!("expected a corrupt snapshot error, got {other:?}"),
    }
    assert_eq!(disk.storage.list().expect("list"), files, "nothing removed");
}

/// Goal: a corrupt snapshot is skipped when an older valid one still exists with its
/// segments (a crash between writing a snapshot and removing the old files).
/// Method: build snapshot 2 + segment 2, keep copies, snapshot again (3), put the copies
/// back, corrupt snapshot 3, recover.
fn a_corrupt_snapshot_falls_back_to_an_older_valid_one<S: Storage + Clone>(disk: Disk<S>) {
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
    wal.write_snapshot(all).expect("snapshot 3");
    wal.append(&third).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    for (name, bytes) in &kept {
        write_file(&disk.storage, name, bytes);
    }
    flip_byte(&disk.storage, &snapshot(3), 100);
    let (seen, report) = replay(&disk.storage).expect("falls back");
    let expected: Vec<WalEntry> = first.iter().chain(&second).chain(&third).cloned().collect();
    assert_eq!(seen, expected);
    assert_eq!(report.snapshot, Some(2));
    assert_eq!(report.segments, vec![2, 3]);
    assert_eq!(report.corrupt_snapshots.len(), 1);
    assert_eq!(report.corrupt_snapshots[0].file, snapshot(3));
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

/// Goal: a failed fsync is reported, never retried, and ends the writer (fsyncgate).
/// Method: make fsyncs fail, queue two jobs, then make fsyncs work again: the report is an
/// error for both, the writer returns the error, and the log refuses further work.
async fn a_failed_fsync_is_reported_and_stops_the_writer<S: Storage + Clone>(disk: Disk<S>) {
    let storage = Counting::new(disk.storage.clone());
    let (wal, _) = Wal::open(storage.clone(), |_| {}).expect("opens");
    let (submit, jobs) = mpsc::channel(16);
    let (done_sender, mut done) = mpsc::channel(16);
    storage.fail.store(true, Ordering::SeqCst);
    for token in [1, 2] {
        submit
            .send(WalJob::append(token, history(2, token)))
            .await
            .expect("queued");
    }
    let ended = run_writer(wal, jobs, done_sender).await;
    assert!(matches!(
        ended,
        Err(WalError::Io {
            operation: "sync",
            ..
        })
    ));
    let report = done.recv().await.expect("the failure is reported");
    assert_eq!(report.up_to_token, 2);
    assert!(report.result.is_err());
    assert!(done.recv().await.is_none());
    assert!(submit.send(WalJob::append(3, vec![])).await.is_err());

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
    let mut handle = spawn_writer_thread(wal, 8).expect("a thread");
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

/// Goal: a missing segment is an error that changes nothing, never a silent skip.
/// Method: write segment 1, plant a segment 3, open.
fn a_gap_in_the_segments_is_an_error_that_changes_nothing<S: Storage + Clone>(disk: Disk<S>) {
    write_log(&disk.storage, &history(4, 21));
    write_file(&disk.storage, &segment(3), b"later");
    let files = disk.storage.list().expect("list");
    match replay(&disk.storage) {
        Err(WalError::MissingFile { file, .. }) => assert_eq!(file, segment(2)),
        other => panic!("expected a missing segment, got {other:?}"),
    }
    assert_eq!(disk.storage.list().expect("list"), files);
}

fn a_second_open_of_a_held_log_is_refused_and_changes_nothing<S: Storage + Clone>(disk: Disk<S>) {
    // Goal: one log per storage at a time (issue 30): a second open while the first is held
    // is refused before anything is read or written, and succeeds once the first is dropped.
    // Method: open, append and sync; open again; compare the files; drop; open again.
    let storage = &disk.storage;
    let (mut first, _) = Wal::open_as(storage.clone(), "node first", |_| {}).expect("opens");
    first.append(&history(20, 1)).expect("append");
    first.sync().expect("sync");
    let before = read_file(storage, &segment(1));
    match Wal::open_as(storage.clone(), "node second", |_| {}) {
        Err(WalError::Locked(LockError::Held { holder, .. })) => {
            let holder = holder.expect("the holder names itself");
            assert!(holder.contains("node first"), "{holder}");
        }
        other => panic!("a held log opened again: {:?}", other.map(|(_, r)| r)),
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
    a_flipped_byte_stops_recovery_at_that_entry,
    appends_after_recovering_a_torn_log_are_readable,
    snapshot_and_later_segment_recover_the_full_history,
    a_corrupt_snapshot_is_reported,
    a_corrupt_snapshot_falls_back_to_an_older_valid_one,
    an_oversized_entry_is_refused_and_nothing_is_appended,
    a_log_of_another_format_version_is_refused_untouched,
    the_writer_thread_acknowledges_and_returns_the_log,
    an_empty_storage_starts_a_new_log,
    an_interrupted_snapshot_recovers_and_cleans_up,
    a_gap_in_the_segments_is_an_error_that_changes_nothing,
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

proptest! {
    /// Goal: no damage makes recovery panic or invent an entry. Method: write a generated
    /// history, damage the segment at random, recover: the entries seen are a prefix of those
    /// written; then append and recover again: the prefix plus the new entry, undamaged.
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
        prop_assert!(seen.len() <= written.len());
        prop_assert_eq!(&seen[..], &written[..seen.len()]);
        prop_assert_eq!(report.entries, seen.len() as u64);

        let (mut wal, _) = Wal::open(storage.clone(), |_| {}).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let extra = poll_entry(99);
        wal.append(std::slice::from_ref(&extra)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        wal.sync().map_err(|e| TestCaseError::fail(e.to_string()))?;
        drop(wal);
        let (again, report) = replay(&storage).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(report.corruption, None);
        let expected: Vec<WalEntry> = seen.into_iter().chain([extra]).collect();
        prop_assert_eq!(again, expected);
    }
}
