//! Opening the write-ahead log: choose the newest valid snapshot, replay it and the segments
//! after it, stop at the first torn or corrupt entry, cut the torn tail off, and clean up files
//! that an interrupted snapshot left behind.
//!
//! What it promises: replay yields only entries whose frames were fully written and pass their
//! checksum, in the order they were appended; the only bytes it ever removes are those after
//! the first damage in the last segment, and files made redundant by a valid snapshot. Anything
//! else it cannot read is an error that changes nothing on disk.

use std::collections::BTreeMap;

use crate::storage::{Storage, StorageFile};

use super::format::{self, FileKind, FileReader, LogFile, Step};
use super::{Corruption, CorruptionReason, RecoveryReport, WAL_FILE_HEADER_BYTES, Wal, WalEntry};
use super::{WAL_FRAME_HEADER_BYTES, WalError};

/// The log files found in a storage, by number.
#[derive(Debug, Default)]
struct Inventory {
    segments: BTreeMap<u64, String>,
    snapshots: BTreeMap<u64, String>,
    temps: Vec<String>,
}

fn inventory(storage: &impl Storage) -> Result<Inventory, WalError> {
    let names = storage
        .list()
        .map_err(|error| WalError::io("list", "the log directory", error))?;
    let mut found = Inventory::default();
    for name in names {
        match format::parse_name(&name) {
            Some(LogFile::Segment(number)) => drop(found.segments.insert(number, name)),
            Some(LogFile::Snapshot(number)) => drop(found.snapshots.insert(number, name)),
            Some(LogFile::SnapshotTemp(_)) => found.temps.push(name),
            None => {}
        }
    }
    Ok(found)
}

/// How walking one file's frames ended.
#[derive(Debug)]
struct Walk {
    /// Offset just past the last good frame: where the next frame would go.
    end: u64,
    entries: u64,
    /// Frame bytes walked, headers included.
    bytes: u64,
    /// The footer's (entries, bytes), if the walk ended at one.
    footer: Option<(u64, u64)>,
    /// Where and why the walk stopped early, if it did.
    damage: Option<(u64, CorruptionReason)>,
}

/// Walks the frames of a file whose header is good, handing each payload to `on_frame`;
/// an `Err` from it is damage at that frame.
fn walk_frames(
    reader: &mut FileReader<'_>,
    name: &str,
    footers: bool,
    on_frame: &mut dyn FnMut(&[u8]) -> Result<(), CorruptionReason>,
) -> Result<Walk, WalError> {
    let mut walk = Walk {
        end: WAL_FILE_HEADER_BYTES as u64,
        entries: 0,
        bytes: 0,
        footer: None,
        damage: None,
    };
    loop {
        let step = format::read_step(reader, walk.end, footers)
            .map_err(|error| WalError::io("read", name, error))?;
        match step {
            Step::End => return Ok(walk),
            Step::Footer { entries, bytes } => {
                walk.footer = Some((entries, bytes));
                return Ok(walk);
            }
            Step::Corrupt(reason) => {
                walk.damage = Some((walk.end, reason));
                return Ok(walk);
            }
            Step::Frame(payload) => {
                let frame_bytes = (WAL_FRAME_HEADER_BYTES + payload.len()) as u64;
                if let Err(reason) = on_frame(payload) {
                    walk.damage = Some((walk.end, reason));
                    return Ok(walk);
                }
                walk.end += frame_bytes;
                walk.entries += 1;
                walk.bytes += frame_bytes;
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

/// Reads snapshot `number` through, checking every frame and the footer; with `visit`, also
/// decodes every entry and hands it over. Returns (entries, bytes) or the damage found.
fn scan_snapshot(
    storage: &impl Storage,
    name: &str,
    number: u64,
    visit: Option<&mut dyn FnMut(WalEntry)>,
) -> Result<Result<(u64, u64), Corruption>, WalError> {
    let (file, len) = open_file(storage, name)?;
    let mut reader = FileReader::new(&file, len);
    let corruption = |offset, reason| Corruption {
        file: name.to_owned(),
        segment: number,
        offset,
        reason,
    };
    if let Err(reason) = format::check_file_header(&mut reader, name, FileKind::Snapshot, number)? {
        return Ok(Err(corruption(0, reason)));
    }
    let walk = match visit {
        None => walk_frames(&mut reader, name, true, &mut |_| Ok(()))?,
        Some(visit) => walk_frames(&mut reader, name, true, &mut |payload| {
            visit(format::decode_entry(payload)?);
            Ok(())
        })?,
    };
    if let Some((offset, reason)) = walk.damage {
        return Ok(Err(corruption(offset, reason)));
    }
    match walk.footer {
        None => Ok(Err(corruption(walk.end, CorruptionReason::MissingFooter))),
        Some(counts) if counts != (walk.entries, walk.bytes) => {
            let what = "its counts disagree with the entries before it";
            Ok(Err(corruption(
                walk.end,
                CorruptionReason::BadFooter { what },
            )))
        }
        Some(counts) => Ok(Ok(counts)),
    }
}

/// The newest snapshot that checks out, newer corrupt ones, or an error if only corrupt ones
/// exist.
fn choose_snapshot(
    storage: &impl Storage,
    snapshots: &BTreeMap<u64, String>,
    report: &mut RecoveryReport,
) -> Result<Option<(u64, String)>, WalError> {
    for (&number, name) in snapshots.iter().rev() {
        match scan_snapshot(storage, name, number, None)? {
            Ok(_) => return Ok(Some((number, name.clone()))),
            Err(corruption) => {
                tracing::warn!(%corruption, "skipping a corrupt snapshot");
                report.corrupt_snapshots.push(corruption);
            }
        }
    }
    match report.corrupt_snapshots.first() {
        Some(newest) => Err(WalError::SnapshotCorrupt {
            corruption: newest.clone(),
        }),
        None => Ok(None),
    }
}

/// How replaying one segment ended.
struct SegmentReplay<F> {
    file: F,
    len: u64,
    walk: Walk,
    /// Damage to the file header (offset 0).
    header_damage: Option<CorruptionReason>,
}

fn replay_segment<S: Storage>(
    storage: &S,
    name: &str,
    number: u64,
    visit: &mut dyn FnMut(WalEntry),
) -> Result<SegmentReplay<S::File>, WalError> {
    let (file, len) = open_file(storage, name)?;
    let mut reader = FileReader::new(&file, len);
    let header = format::check_file_header(&mut reader, name, FileKind::Segment, number)?;
    let walk = match header {
        Err(_) => Walk {
            end: 0,
            entries: 0,
            bytes: 0,
            footer: None,
            damage: None,
        },
        Ok(()) => walk_frames(&mut reader, name, false, &mut |payload| {
            visit(format::decode_entry(payload)?);
            Ok(())
        })?,
    };
    drop(reader);
    Ok(SegmentReplay {
        file,
        len,
        walk,
        header_damage: header.err(),
    })
}

/// Checks that segments `first..` are numbered without a gap and that the log starts where a
/// snapshot (or the beginning) says it must.
fn check_sequence(segments: &[(u64, String)], first: u64) -> Result<(), WalError> {
    for (expected, (number, _)) in (first..).zip(segments) {
        if *number != expected {
            return Err(WalError::MissingFile {
                file: format::segment_name(expected),
                why: "later segments exist, so entries would be skipped",
            });
        }
    }
    Ok(())
}

pub(super) fn recover<S: Storage>(
    storage: S,
    visit: &mut dyn FnMut(WalEntry),
) -> Result<(Wal<S>, RecoveryReport), WalError> {
    let found = inventory(&storage)?;
    let mut report = RecoveryReport::default();
    let snapshot = choose_snapshot(&storage, &found.snapshots, &mut report)?;
    let first = snapshot.as_ref().map_or(1, |(number, _)| *number);
    let segments: Vec<(u64, String)> = found
        .segments
        .range(first..)
        .map(|(number, name)| (*number, name.clone()))
        .collect();
    let lowest = found.segments.keys().next().copied();
    if let (None, Some(lowest @ 2..)) = (&snapshot, lowest) {
        return Err(WalError::MissingFile {
            file: format::snapshot_name(lowest),
            why: "the log starts after segment 1, so a snapshot must hold the rest",
        });
    }
    check_sequence(&segments, first)?;

    if let Some((number, name)) = &snapshot {
        replay_snapshot(&storage, name, *number, visit, &mut report)?;
    }
    let mut current = None;
    let last_index = segments.len().checked_sub(1);
    for (index, (number, name)) in segments.iter().enumerate() {
        let replay = replay_segment(&storage, name, *number, visit)?;
        report.segments.push(*number);
        report.entries += replay.walk.entries;
        report.bytes += replay.walk.bytes;
        let damage = replay
            .header_damage
            .clone()
            .map(|reason| (0, reason))
            .or_else(|| replay.walk.damage.clone());
        if let Some((offset, reason)) = damage {
            let corruption = Corruption {
                file: name.clone(),
                segment: *number,
                offset,
                reason,
            };
            if Some(index) != last_index {
                return Err(WalError::CorruptBeforeLastSegment { corruption });
            }
            tracing::warn!(%corruption, "write-ahead log replay stopped early");
            report.corruption = Some(corruption);
        }
        current = Some((*number, replay));
    }

    let wal = resume(storage, first, current)?;
    remove_leftovers(&wal.storage, &found, snapshot.map(|(n, _)| n), &mut report);
    Ok((wal, report))
}

fn replay_snapshot(
    storage: &impl Storage,
    name: &str,
    number: u64,
    visit: &mut dyn FnMut(WalEntry),
    report: &mut RecoveryReport,
) -> Result<(), WalError> {
    match scan_snapshot(storage, name, number, Some(visit))? {
        Ok((entries, bytes)) => {
            report.snapshot = Some(number);
            report.snapshot_entries = entries;
            report.entries += entries;
            report.bytes += bytes;
            Ok(())
        }
        // It checked out a moment ago, so this is not a torn write: refuse to go on from a
        // partly replayed snapshot.
        Err(corruption) => Err(WalError::SnapshotCorrupt { corruption }),
    }
}

/// Makes the last segment ready for appends (cutting off a torn tail, or rewriting a torn
/// header), or starts segment `first` if there is none.
fn resume<S: Storage>(
    storage: S,
    first: u64,
    current: Option<(u64, SegmentReplay<S::File>)>,
) -> Result<Wal<S>, WalError> {
    let Some((number, replay)) = current else {
        let segment = format::create_file(&storage, FileKind::Segment, first)?;
        storage.sync_dir().map_err(|error| {
            WalError::io(
                "sync directory after creating",
                &format::segment_name(first),
                error,
            )
        })?;
        return Ok(new_wal(
            storage,
            segment,
            first,
            WAL_FILE_HEADER_BYTES as u64,
            0,
        ));
    };
    let name = format::segment_name(number);
    let SegmentReplay {
        mut file,
        len,
        walk,
        header_damage,
    } = replay;
    if header_damage.is_some() {
        file.set_len(0)
            .map_err(|error| WalError::io("truncate", &name, error))?;
        file.write_all_at(&format::file_header(FileKind::Segment, number), 0)
            .map_err(|error| WalError::io("write", &name, error))?;
    } else if walk.end < len {
        file.set_len(walk.end)
            .map_err(|error| WalError::io("truncate", &name, error))?;
    }
    if header_damage.is_some() || walk.end < len {
        file.sync_data()
            .map_err(|error| WalError::io("sync", &name, error))?;
    }
    let end = walk.end.max(WAL_FILE_HEADER_BYTES as u64);
    Ok(new_wal(storage, file, number, end, walk.bytes))
}

fn new_wal<S: Storage>(
    storage: S,
    segment: S::File,
    segment_number: u64,
    written_bytes: u64,
    bytes_since_snapshot: u64,
) -> Wal<S> {
    Wal {
        storage,
        segment,
        segment_number,
        written_bytes,
        buffer: Vec::new(),
        bytes_since_snapshot,
        failure: None,
        lock: None,
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
