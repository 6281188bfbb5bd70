//! Opening the write-ahead log: choose the newest valid snapshot, replay it and every file
//! after it, tell a torn tail from damage, and only then change anything on disk.
//!
//! The rule (DESIGN.md §4) that tells the two apart. A crash can only tear what was being
//! appended when it struck, which is always at the end of the last segment; anything else
//! that is not as the log wrote it is damage (a failing disk, a bad controller, a hand):
//! - **clean end**: the last segment ends right after a valid frame, or continues from
//!   there with nothing but the log's fill (`format::FILL_PATTERN`: space written ahead of
//!   appends, which no failing disk writes);
//! - **torn tail** (cut off): after the last segment's last valid frame come bytes that are
//!   no valid frame, and no valid frame follows them anywhere in the rest of the file (found
//!   by scanning forward byte by byte for a frame whose length is in range and whose
//!   CRC-32C matches); zero-filled space counts the same (preallocated or never-written
//!   space, or a zeroed sector); so does a torn header of a last segment that holds nothing
//!   but zeros after it (a crash while the segment was created);
//! - **damage** (kept): a bad frame with a valid frame after it; a CRC-valid frame that does
//!   not decode; a bad header of a segment with anything after it but zeros, or of any
//!   segment but the last; any bytes after the last valid frame of a segment that is not the
//!   last (the log syncs a segment whole before it starts the next, and cuts its fill off
//!   first; fill alone after the last frame is not damage in any segment); a
//!   missing segment in the sequence (or missing before the first one present); a snapshot
//!   that does not check out.
//!
//! A torn tail is cut off, as a crash left it. Damage is never cut, rewritten or removed in
//! place: every valid entry before and after it is replayed (a damaged file's valid frames
//! too), [`Recovery::finish`] first copies each damaged file aside (`<name>.damaged-N`, a
//! name the log ignores) for the operator, and the log continues after its last valid frame.
//! What the node then does (a new incarnation, a snapshot that retires the damaged files, or
//! refusing to start alone) is `crate::recovery`'s choice; [`Wal::recover`] changes nothing
//! on disk, so a refusal leaves every byte as it was.
//!
//! What it promises: replay yields only entries whose frames are whole and pass their
//! checksum, in the order they were appended; the only bytes it ever removes are a torn
//! tail, and files made redundant by a valid snapshot (older ones, and unfinished ones).

use std::collections::BTreeMap;

use crate::storage::{Storage, StorageFile};

use super::format::{self, FileKind, FileReader, LogFile, Step};
use super::{Corruption, CorruptionReason, RecoveryReport, WAL_FILE_HEADER_BYTES, Wal, WalEntry};
use super::{WAL_FRAME_HEADER_BYTES, WalError};

const HEADER: u64 = WAL_FILE_HEADER_BYTES as u64;

/// The log files found in a storage, by number, and every name in it.
#[derive(Debug, Default)]
struct Inventory {
    segments: BTreeMap<u64, String>,
    snapshots: BTreeMap<u64, String>,
    temps: Vec<String>,
    names: Vec<String>,
}

fn inventory(storage: &impl Storage) -> Result<Inventory, WalError> {
    let names = storage
        .list()
        .map_err(|error| WalError::io("list", "the log directory", error))?;
    let mut found = Inventory::default();
    for name in &names {
        match format::parse_name(name) {
            Some(LogFile::Segment(number)) => drop(found.segments.insert(number, name.clone())),
            Some(LogFile::Snapshot(number)) => drop(found.snapshots.insert(number, name.clone())),
            Some(LogFile::SnapshotTemp(_)) => found.temps.push(name.clone()),
            None => {}
        }
    }
    found.names = names;
    Ok(found)
}

/// What followed a file's last valid frame, when something did (and it was no footer).
#[derive(Debug, Clone)]
struct Tail {
    offset: u64,
    reason: CorruptionReason,
    /// Every byte from `offset` to the end of the file is zero.
    zeros: bool,
}

/// What reading one file found.
#[derive(Debug, Default)]
struct Scan {
    /// Damage to the file header, if any.
    header: Option<CorruptionReason>,
    /// Regions `[from, to)` that are not replayed, each followed by a valid frame (or, for a
    /// frame that does not decode, by the next frame).
    skip: Vec<(u64, u64, CorruptionReason)>,
    /// Just past the last valid frame (the header's end if none).
    end: u64,
    entries: u64,
    /// Frame bytes replayed, headers included.
    bytes: u64,
    /// The snapshot footer's (entries, bytes), if the file ended with one.
    footer: Option<(u64, u64)>,
    tail: Option<Tail>,
    len: u64,
}

/// Reads one file through, handing every valid entry to `visit` (if any) in order. With
/// `stop_at_damage` (the simulation's planted bug only), the first bad frame ends the
/// file as a torn tail would, as recovery did before it told the two apart.
fn scan_file(
    reader: &mut FileReader<'_>,
    name: &str,
    kind: FileKind,
    number: u64,
    mut visit: Option<&mut dyn FnMut(WalEntry)>,
    stop_at_damage: bool,
) -> Result<Scan, WalError> {
    let io = |error| WalError::io("read", name, error);
    let mut scan = Scan {
        end: HEADER,
        len: reader.len(),
        ..Scan::default()
    };
    let mut at = HEADER;
    if let Err(reason) = format::check_file_header(reader, name, kind, number)? {
        scan.header = Some(reason.clone());
        if scan.len <= HEADER {
            return Ok(scan);
        }
        match format::find_frame(reader, HEADER).map_err(io)? {
            Some(first) => {
                if first > HEADER {
                    scan.skip.push((HEADER, first, reason));
                }
                at = first;
            }
            None => {
                let zeros = format::zeros_to_end(reader, HEADER).map_err(io)?;
                scan.tail = Some(Tail {
                    offset: HEADER,
                    reason,
                    zeros,
                });
                return Ok(scan);
            }
        }
    }
    let footers = kind == FileKind::Snapshot;
    loop {
        let step = format::read_step(reader, at, footers).map_err(io)?;
        let bad = match step {
            Step::End => return Ok(scan),
            Step::Footer { entries, bytes } => {
                scan.footer = Some((entries, bytes));
                return Ok(scan);
            }
            Step::Frame(payload) => {
                let frame_bytes = (WAL_FRAME_HEADER_BYTES + payload.len()) as u64;
                match format::decode_entry(payload) {
                    Ok(entry) => {
                        if let Some(visit) = visit.as_mut() {
                            visit(entry);
                        }
                        scan.entries += 1;
                        scan.bytes += frame_bytes;
                    }
                    // Whole and checksummed, yet no entry this build reads: never cut it.
                    Err(reason) => scan.skip.push((at, at + frame_bytes, reason)),
                }
                at += frame_bytes;
                scan.end = at;
                continue;
            }
            Step::Corrupt(reason) => reason,
        };
        // Space the log wrote ahead of its appends, and nothing else, to the end: a clean
        // end (the log syncs every frame before it writes fill after it). Fill that differs
        // further on is named as such.
        let bad = match kind {
            FileKind::Segment => match format::fill_differs(reader, at).map_err(io)? {
                None => return Ok(scan),
                Some(offset) if offset >= at + 8 => CorruptionReason::FillDiffers { offset },
                Some(_) => bad,
            },
            FileKind::Snapshot => bad,
        };
        let next = if stop_at_damage {
            None
        } else {
            format::find_frame(reader, at + 1).map_err(io)?
        };
        match next {
            Some(next) => {
                scan.skip.push((at, next, bad));
                at = next;
            }
            None => {
                let zeros = !stop_at_damage && format::zeros_to_end(reader, at).map_err(io)?;
                scan.tail = Some(Tail {
                    offset: at,
                    reason: if zeros {
                        CorruptionReason::ZeroFill
                    } else {
                        bad
                    },
                    zeros,
                });
                return Ok(scan);
            }
        }
    }
}

fn open_file<S: Storage>(storage: &S, name: &str) -> Result<(S::File, u64), WalError> {
    let file = storage
        .open(name)
        .map_err(|error| WalError::io("open", name, error))?;
    let len = file
        .len()
        .map_err(|error| WalError::io("measure", name, error))?;
    Ok((file, len))
}

/// Whether snapshot `number` checks out: a good header, every frame valid and decodable,
/// nothing skipped, and a footer that agrees with the frames before it. Otherwise, the first
/// thing wrong.
fn check_snapshot(
    storage: &impl Storage,
    name: &str,
    number: u64,
) -> Result<Result<(), Corruption>, WalError> {
    let (file, len) = open_file(storage, name)?;
    let mut reader = FileReader::new(&file, len);
    let scan = scan_file(&mut reader, name, FileKind::Snapshot, number, None, true)?;
    let corruption = |offset: u64, reason| Corruption {
        file: name.to_owned(),
        segment: number,
        offset,
        bytes: len.saturating_sub(offset),
        reason,
    };
    if let Some(reason) = scan.header {
        return Ok(Err(corruption(0, reason)));
    }
    if let Some(&(offset, _, ref reason)) = scan.skip.first() {
        return Ok(Err(corruption(offset, reason.clone())));
    }
    if let Some(tail) = scan.tail {
        return Ok(Err(corruption(tail.offset, tail.reason)));
    }
    match scan.footer {
        None => Ok(Err(corruption(scan.end, CorruptionReason::MissingFooter))),
        Some(counts) if counts != (scan.entries, scan.bytes) => {
            let what = "its counts disagree with the entries before it";
            Ok(Err(corruption(
                scan.end,
                CorruptionReason::BadFooter { what },
            )))
        }
        Some(_) => Ok(Ok(())),
    }
}

/// One file to replay, and where its damage lies.
#[derive(Debug)]
struct FilePlan {
    name: String,
    number: u64,
    /// Regions not replayed, `[from, to)`.
    skip: Vec<(u64, u64)>,
    /// Just past its last valid frame: replay stops here.
    end: u64,
    /// Damage was found in it: a copy is kept aside before anything changes.
    damaged: bool,
}

/// How the log continues once opened.
#[derive(Debug)]
enum Resume {
    /// Start segment `number`, empty.
    Create(u64),
    /// Append to segment `number` from `end` (the end of its last valid frame), cutting off
    /// whatever follows; with `header`, its torn header is written again first.
    Append { number: u64, end: u64, header: bool },
}

/// What [`recover`] found: the files to replay, and how to open the log for appends.
#[derive(Debug)]
pub(super) struct Plan {
    files: Vec<FilePlan>,
    /// The newest valid snapshot, which makes every older file redundant.
    base: Option<u64>,
    resume: Resume,
    /// Frame bytes replayed from segments (not snapshots): what the next snapshot saves.
    segment_bytes: u64,
    inventory: Inventory,
}

/// The newest snapshot that checks out, and the newer ones that do not (damage).
fn choose_snapshot(
    storage: &impl Storage,
    snapshots: &BTreeMap<u64, String>,
) -> Result<(Option<u64>, Vec<Corruption>), WalError> {
    let mut corrupt = Vec::new();
    for (&number, name) in snapshots.iter().rev() {
        match check_snapshot(storage, name, number)? {
            Ok(()) => return Ok((Some(number), corrupt)),
            Err(corruption) => {
                tracing::warn!(%corruption, "a snapshot is damaged; its valid entries are kept");
                corrupt.push(corruption);
            }
        }
    }
    Ok((None, corrupt))
}

/// Ranges of segment numbers from `first` to the last segment present that are missing.
fn missing_segments(segments: &BTreeMap<u64, String>, first: u64) -> Vec<(u64, u64)> {
    let mut missing = Vec::new();
    let mut expected = first;
    for &number in segments.range(first..).map(|(n, _)| n) {
        if number > expected {
            missing.push((expected, number - 1));
        }
        expected = number + 1;
    }
    missing
}

/// How recovery treats damage: as damage, or (the simulation's planted bug) as a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DamageMode {
    /// Keep everything (the rule above).
    Keep,
    /// Stop at the first bad frame of the last segment and cut it off there, as recovery
    /// did before it told torn tails from damage. A planted bug for the simulation's checker
    /// tests; never used otherwise.
    PlantedTruncate,
}

/// Reads the whole log, replaying every valid entry through `visit`, and classifies what it
/// finds. Changes nothing on disk.
pub(super) fn recover<S: Storage>(
    storage: &S,
    visit: &mut dyn FnMut(WalEntry),
    mode: DamageMode,
) -> Result<(Plan, RecoveryReport), WalError> {
    let found = inventory(storage)?;
    let mut report = RecoveryReport::default();
    let (base, corrupt_snapshots) = choose_snapshot(storage, &found.snapshots)?;
    // Where the log starts: the valid snapshot; without one, the lowest damaged snapshot or
    // segment (older segments may outlive a snapshot whose clean-up failed: replay them too);
    // with nothing at all, segment 1 (so a missing first segment shows).
    let lowest_corrupt = corrupt_snapshots.iter().map(|c| c.segment).min();
    let lowest_segment = found.segments.keys().next().copied();
    let first = match (base, lowest_corrupt, lowest_segment) {
        (Some(base), _, _) => base,
        (None, None, _) => 1,
        (None, Some(corrupt), segment) => segment.map_or(corrupt, |s| s.min(corrupt)),
    };
    // Each file to replay, with what a snapshot's check found wrong with it.
    let mut order: Vec<(u64, FileKind, &String, Option<&Corruption>)> = Vec::new();
    if let Some(base) = base {
        order.push((base, FileKind::Snapshot, &found.snapshots[&base], None));
    }
    for corruption in &corrupt_snapshots {
        let name = &found.snapshots[&corruption.segment];
        order.push((
            corruption.segment,
            FileKind::Snapshot,
            name,
            Some(corruption),
        ));
    }
    for (&number, name) in found.segments.range(first..) {
        order.push((number, FileKind::Segment, name, None));
    }
    // A snapshot N holds the state at the start of segment N: it goes first.
    order.sort_by_key(|&(number, kind, _, _)| (number, kind != FileKind::Snapshot));
    report.missing_segments = missing_segments(&found.segments, first);

    let last_segment = found.segments.range(first..).next_back().map(|(n, _)| *n);
    let mut files = Vec::new();
    let mut resume = None;
    let mut segment_bytes = 0;
    for (number, kind, name, check) in order {
        let last = kind == FileKind::Segment && Some(number) == last_segment;
        let stop = last && mode == DamageMode::PlantedTruncate;
        let (file, len) = open_file(storage, name)?;
        let mut reader = FileReader::new(&file, len);
        let scan = scan_file(&mut reader, name, kind, number, Some(&mut *visit), stop)?;
        drop(reader);
        if base == Some(number) && kind == FileKind::Snapshot {
            if scan.header.is_some() || !scan.skip.is_empty() || scan.tail.is_some() {
                // It checked out a moment ago: not a torn write. Refuse a partial base.
                let offset = scan.skip.first().map_or(scan.end, |s| s.0);
                return Err(WalError::SnapshotCorrupt {
                    corruption: Corruption {
                        file: name.clone(),
                        segment: number,
                        offset,
                        bytes: len - offset,
                        reason: CorruptionReason::BadFooter {
                            what: "it changed while it was read",
                        },
                    },
                });
            }
            report.snapshot = Some(number);
            report.snapshot_entries = scan.entries;
        } else if kind == FileKind::Segment {
            report.segments.push(number);
            segment_bytes += scan.bytes;
        }
        report.entries += scan.entries;
        report.bytes += scan.bytes;
        let mut plan = classify(name, number, kind, last, scan, &mut report, &mut resume);
        if let (Some(corruption), false) = (check, plan.damaged) {
            // A newer snapshot whose frames all read, but whose footer is bad or missing.
            report.damage.push(corruption.clone());
            plan.damaged = true;
        }
        files.push(plan);
    }
    for plan in &files {
        if plan.damaged {
            tracing::warn!(file = %plan.name, "write-ahead log file is damaged");
        }
    }
    // Appends go to a segment numbered at least as high as every snapshot, so a snapshot
    // the node writes next is newer than any damaged one left behind.
    let highest = found.snapshots.keys().next_back().copied().unwrap_or(first);
    let resume = match resume {
        Some(Resume::Append { number, .. }) if number < highest => Resume::Create(highest),
        Some(resume) => resume,
        None => Resume::Create(highest.max(first)),
    };
    Ok((
        Plan {
            files,
            base,
            resume,
            segment_bytes,
            inventory: found,
        },
        report,
    ))
}

/// Sorts what `scan` of one file found into the report (damage, or a cut-off tail) and the
/// plan (what later replays skip, and where appends go).
fn classify(
    name: &str,
    number: u64,
    kind: FileKind,
    last: bool,
    scan: Scan,
    report: &mut RecoveryReport,
    resume: &mut Option<Resume>,
) -> FilePlan {
    let corruption = |offset: u64, to: u64, reason| Corruption {
        file: name.to_owned(),
        segment: number,
        offset,
        bytes: to - offset,
        reason,
    };
    let before = report.damage.len();
    let header_only_torn = last && scan.skip.is_empty() && scan.entries == 0;
    let torn_header = match (&scan.header, &scan.tail) {
        (Some(_), None) => header_only_torn,
        (Some(_), Some(tail)) => header_only_torn && tail.zeros,
        (None, _) => false,
    };
    if let Some(reason) = &scan.header {
        if !torn_header {
            report
                .damage
                .push(corruption(0, HEADER.min(scan.len), reason.clone()));
        }
    }
    for (from, to, reason) in &scan.skip {
        report.damage.push(corruption(*from, *to, reason.clone()));
    }
    match (&scan.tail, kind, last) {
        (None, FileKind::Segment, true) if torn_header => {
            report.corruption = scan
                .header
                .clone()
                .map(|reason| corruption(0, scan.len, reason));
        }
        (Some(tail), FileKind::Segment, true) => {
            let reason = if torn_header {
                scan.header.clone().unwrap_or_else(|| tail.reason.clone())
            } else {
                tail.reason.clone()
            };
            let offset = if torn_header { 0 } else { tail.offset };
            report.corruption = Some(corruption(offset, scan.len, reason));
        }
        (Some(tail), _, _) => {
            let reason = tail.reason.clone();
            report
                .damage
                .push(corruption(tail.offset, scan.len, reason));
        }
        (None, _, _) => {}
    }
    if kind == FileKind::Segment && last {
        // A damaged header stays as it is (the file was kept aside; later reads find the
        // frames after it again); only a torn one over an empty segment is written again.
        *resume = Some(Resume::Append {
            number,
            end: scan.end,
            header: torn_header,
        });
    }
    FilePlan {
        name: name.to_owned(),
        number,
        skip: scan.skip.iter().map(|&(from, to, _)| (from, to)).collect(),
        end: scan.end,
        damaged: report.damage.len() > before,
    }
}

/// Replays the files of `plan` again, read-only, skipping what the first reading skipped:
/// the same entries in the same order.
pub(super) fn replay_again(
    storage: &impl Storage,
    plan: &Plan,
    visit: &mut dyn FnMut(WalEntry),
) -> Result<(), WalError> {
    for file_plan in &plan.files {
        let name = &file_plan.name;
        let (file, len) = open_file(storage, name)?;
        let mut reader = FileReader::new(&file, len.min(file_plan.end));
        let mut at = HEADER;
        let mut skip = file_plan.skip.iter().peekable();
        while at < file_plan.end {
            if let Some(&&(from, to)) = skip.peek() {
                if at >= from {
                    at = at.max(to);
                    skip.next();
                    continue;
                }
            }
            let step = format::read_step(&mut reader, at, false)
                .map_err(|error| WalError::io("read", name, error))?;
            let Step::Frame(payload) = step else {
                // Frames are found where the first reading found them, unless the file
                // changed under the node since.
                return Err(WalError::SnapshotCorrupt {
                    corruption: Corruption {
                        file: name.clone(),
                        segment: file_plan.number,
                        offset: at,
                        bytes: file_plan.end - at,
                        reason: CorruptionReason::BadFooter {
                            what: "it changed while it was read",
                        },
                    },
                });
            };
            let frame_bytes = (WAL_FRAME_HEADER_BYTES + payload.len()) as u64;
            if let Ok(entry) = format::decode_entry(payload) {
                visit(entry);
            }
            at += frame_bytes;
        }
    }
    Ok(())
}

/// Opens the log for appends as `plan` says: first a copy of every damaged file aside, then
/// the torn tail cut off (or a torn header written again) or a new segment started, then
/// files made redundant by the snapshot removed.
pub(super) fn finish<S: Storage>(
    storage: S,
    plan: Plan,
    report: &mut RecoveryReport,
) -> Result<Wal<S>, WalError> {
    keep_damaged_aside(&storage, &plan, report)?;
    let wal = resume(storage, &plan.resume, plan.segment_bytes)?;
    remove_leftovers(&wal.storage, &plan.inventory, plan.base, report);
    Ok(wal)
}

/// Copies each damaged file to `<name>.damaged-N`, byte for byte, and makes the copies
/// durable before anything else changes.
fn keep_damaged_aside(
    storage: &impl Storage,
    plan: &Plan,
    report: &mut RecoveryReport,
) -> Result<(), WalError> {
    let mut taken = plan.inventory.names.clone();
    for file_plan in plan.files.iter().filter(|f| f.damaged) {
        let copy = format::damaged_copy_name(&file_plan.name, &taken);
        copy_file(storage, &file_plan.name, &copy)?;
        tracing::warn!(file = %file_plan.name, copy = %copy, "damaged log file kept aside");
        taken.push(copy.clone());
        report.kept_aside.push(copy);
    }
    if !report.kept_aside.is_empty() {
        storage.sync_dir().map_err(|error| {
            WalError::io("sync directory after copying", "damaged files", error)
        })?;
    }
    Ok(())
}

fn copy_file(storage: &impl Storage, from: &str, to: &str) -> Result<(), WalError> {
    let (source, len) = open_file(storage, from)?;
    let mut copy = storage
        .create(to)
        .map_err(|error| WalError::io("create", to, error))?;
    let mut buffer = vec![0u8; super::WAL_READ_CHUNK_BYTES];
    let mut at = 0u64;
    while at < len {
        let count = (len - at).min(buffer.len() as u64) as usize;
        source
            .read_exact_at(&mut buffer[..count], at)
            .map_err(|error| WalError::io("read", from, error))?;
        copy.write_all_at(&buffer[..count], at)
            .map_err(|error| WalError::io("write", to, error))?;
        at += count as u64;
    }
    copy.sync_data()
        .map_err(|error| WalError::io("sync", to, error))
}

/// Makes the last segment ready for appends (cutting off a torn tail, or writing a torn
/// header again), or starts a new segment.
fn resume<S: Storage>(storage: S, resume: &Resume, segment_bytes: u64) -> Result<Wal<S>, WalError> {
    let (number, end, header) = match *resume {
        Resume::Create(number) => {
            let segment = format::create_file(&storage, FileKind::Segment, number)?;
            storage.sync_dir().map_err(|error| {
                WalError::io(
                    "sync directory after creating",
                    &format::segment_name(number),
                    error,
                )
            })?;
            return Ok(new_wal(storage, segment, number, HEADER, 0));
        }
        Resume::Append {
            number,
            end,
            header,
        } => (number, end, header),
    };
    let name = format::segment_name(number);
    let (mut file, len) = open_file(&storage, &name)?;
    if header {
        // A torn header over an empty segment: it holds no entry.
        file.write_all_at(&format::file_header(FileKind::Segment, number), 0)
            .map_err(|error| WalError::io("write", &name, error))?;
    }
    if end < len {
        file.set_len(end)
            .map_err(|error| WalError::io("truncate", &name, error))?;
    }
    if header || end < len {
        file.sync_data()
            .map_err(|error| WalError::io("sync", &name, error))?;
    }
    Ok(new_wal(storage, file, number, end, segment_bytes))
}

fn new_wal<S: Storage>(
    storage: S,
    segment: S::File,
    segment_number: u64,
    written_bytes: u64,
    bytes_since_snapshot: u64,
) -> Wal<S> {
    Wal {
        fill_bytes: storage.fill_ahead_bytes(),
        storage,
        segment,
        segment_number,
        written_bytes,
        buffer: Vec::new(),
        bytes_since_snapshot,
        failure: None,
        lock: None,
        filled_to: written_bytes,
    }
}

/// Removes unfinished snapshots and files older than the snapshot replayed. Failures leave
/// only garbage, so they are logged and reported by omission, not returned.
fn remove_leftovers(
    storage: &impl Storage,
    found: &Inventory,
    snapshot: Option<u64>,
    report: &mut RecoveryReport,
) {
    let older = |number: &u64| snapshot.is_some_and(|snapshot| *number < snapshot);
    let stale_snapshots = found.snapshots.iter().filter(|(n, _)| older(n));
    let stale_segments = found.segments.iter().filter(|(n, _)| older(n));
    // Snapshots first, made durable, then segments: an old snapshot must never outlive the
    // segments that follow it.
    let batches: [Vec<&String>; 2] = [
        found
            .temps
            .iter()
            .chain(stale_snapshots.map(|(_, name)| name))
            .collect(),
        stale_segments.map(|(_, name)| name).collect(),
    ];
    for batch in batches {
        if batch.is_empty() {
            continue;
        }
        let mut all_removed = true;
        for name in batch {
            match storage.remove(name) {
                Ok(()) => report.removed.push(name.clone()),
                Err(error) => {
                    all_removed = false;
                    tracing::warn!(%error, file = %name, "could not remove");
                }
            }
        }
        if let Err(error) = storage.sync_dir() {
            tracing::warn!(%error, "could not sync the log directory after removing files");
            return;
        }
        if !all_removed {
            // Keep the segments: an old snapshot that is still there may need them.
            return;
        }
    }
}

/// Removes snapshots, then segments, numbered below `number` (after a new snapshot).
pub(super) fn remove_older(storage: &impl Storage, number: u64) -> Result<(), WalError> {
    let found = inventory(storage)?;
    let mut report = RecoveryReport::default();
    remove_leftovers(storage, &found, Some(number), &mut report);
    Ok(())
}
