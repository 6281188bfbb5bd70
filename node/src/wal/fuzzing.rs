//! The fuzz body over write-ahead-log recovery (`fuzz/fuzz_targets/wal_recovery.rs`, replayed
//! on stable by `node/tests/fuzz_corpus.rs`). Not part of the API.

use std::collections::BTreeMap;

use tally_core::{
    ActorId, NodeId, OptionIndex, OptionName, PollId, PollSpec, PollWindow, RecordBatch, VoteId,
};

use super::{Wal, WalEntry};
use crate::storage::{MemoryStorage, Storage};

/// Votes in each batch of the valid log the fuzzer damages.
const FUZZ_VOTES_PER_BATCH_COUNT: u32 = 5;
/// Batches in that log.
const FUZZ_BATCHES_COUNT: u64 = 3;

fn valid_entries() -> Vec<WalEntry> {
    let actor = ActorId {
        node: NodeId::new("fuzz").unwrap_or_else(|_| unreachable!("a fixed valid name")),
        incarnation: 1,
    };
    let poll = PollId::new("fuzz").unwrap_or_else(|_| unreachable!("a fixed valid name"));
    // Every kind of entry a log holds, in the order a node writes them: the identity, the
    // poll's definition and its reservation, then record batches.
    let spec = PollSpec::new(
        poll.clone(),
        vec![
            OptionName::new("green").unwrap_or_else(|_| unreachable!("a fixed valid name")),
            OptionName::new("blue").unwrap_or_else(|_| unreachable!("a fixed valid name")),
        ],
        PollWindow::default(),
    )
    .unwrap_or_else(|_| unreachable!("two distinct options"));
    let mut entries = vec![
        WalEntry::Identity(actor.clone()),
        WalEntry::Poll(spec),
        WalEntry::Reserve {
            poll: poll.clone(),
            vote_ids: 30_000_000,
        },
    ];
    for batch_index in 0..FUZZ_BATCHES_COUNT {
        let first_seq = batch_index * u64::from(FUZZ_VOTES_PER_BATCH_COUNT) + 1;
        let mut batch = RecordBatch::new(poll.clone(), actor.clone(), first_seq);
        for vote in 0..FUZZ_VOTES_PER_BATCH_COUNT {
            batch.push(
                VoteId(u128::from(vote) << 64 | u128::from(first_seq)),
                OptionIndex(1),
                vote,
            );
        }
        entries.push(WalEntry::Records(batch));
    }
    entries
}

fn files(storage: &MemoryStorage) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut files = BTreeMap::new();
    for name in storage.list().map_err(|e| e.to_string())? {
        let bytes = storage
            .with_file_bytes(&name, |bytes| bytes.clone())
            .map_err(|e| e.to_string())?;
        files.insert(name, bytes);
    }
    Ok(files)
}

fn replay(storage: &MemoryStorage) -> Result<(Vec<WalEntry>, super::RecoveryReport), String> {
    let mut entries = Vec::new();
    let (_, report) = Wal::open(storage.clone(), |entry| entries.push(entry))
        .map_err(|e| format!("refused: {e}"))?;
    Ok((entries, report))
}

/// How the input damaged the valid log: the byte range it changed, when it was an overwrite
/// of the valid segment (the other modes replace every frame).
struct Damaged {
    /// Bytes `[from, to)` of the segment were written over (or appended).
    overwritten: Option<(usize, usize)>,
}

/// Runs recovery over a log damaged as `data` says: the first byte picks how (the whole
/// segment replaced by the rest; the rest after a valid file header; or the rest written
/// over a valid log at the offset its first two bytes name). Recovery of any bytes returns
/// instead of panicking; reading changes no file; an error leaves every file byte for byte
/// as it was; damage is never taken for a torn tail: every frame of the valid log that the
/// input left intact is replayed, and nothing is cut from the log when an intact frame lies
/// after the cut; a recovery that succeeds leaves a log that reopens to the same entries with
/// no tail to cut and no new damage, and that takes a new entry that the next reopen replays.
/// `Err` says which promise broke.
pub fn check_recovery(data: &[u8]) -> Result<(), String> {
    check_recovery_with(data, |storage, visit| Wal::recover(storage, visit))
}

/// [`check_recovery`] over the planted bug's recovery (damage cut off as a torn tail): the
/// check must refuse it. For the test that proves the check can fail.
#[doc(hidden)]
pub fn check_planted_truncating_recovery(data: &[u8]) -> Result<(), String> {
    check_recovery_with(data, |storage, visit| {
        Wal::recover_planted_truncating_damage(storage, "the fuzz target", visit)
    })
}

type Recover = fn(
    MemoryStorage,
    &mut dyn FnMut(WalEntry),
) -> Result<super::Recovery<MemoryStorage>, super::WalError>;

fn check_recovery_with(data: &[u8], recover: Recover) -> Result<(), String> {
    let Some((&mode, rest)) = data.split_first() else {
        return Ok(());
    };
    let storage = MemoryStorage::new();
    let original = valid_entries();
    let mut frames = Vec::new();
    {
        let (mut wal, _) = Wal::open(storage.clone(), |_| {}).map_err(|e| e.to_string())?;
        let mut offset = super::WAL_FILE_HEADER_BYTES;
        for entry in &original {
            let bytes = wal
                .append(std::slice::from_ref(entry))
                .map_err(|e| e.to_string())?;
            frames.push((offset, offset + bytes as usize));
            offset += bytes as usize;
        }
        wal.sync().map_err(|e| e.to_string())?;
    }
    let segment = storage
        .list()
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("the valid log has no segment")?;
    let damaged = storage
        .with_file_bytes(&segment, |bytes| damage(bytes, mode, rest))
        .map_err(|e| e.to_string())?;
    let before = files(&storage)?;
    let mut entries = Vec::new();
    let recovery = match recover(storage.clone(), &mut |entry| entries.push(entry)) {
        Ok(recovery) => recovery,
        Err(_) if files(&storage)? == before => return Ok(()),
        Err(refusal) => {
            return Err(format!(
                "recovery refused ({refusal}) and changed the files"
            ));
        }
    };
    if files(&storage)? != before {
        return Err("reading the log changed the files".into());
    }
    check_classification(&original, &frames, &damaged, &entries, recovery.report())?;
    let was_damaged = recovery.report().is_damaged();
    let (mut wal, _) = recovery
        .finish()
        .map_err(|e| format!("opening after recovery: {e}"))?;
    let extra = original[1].clone();
    wal.append(std::slice::from_ref(&extra))
        .map_err(|e| format!("append after recovery: {e}"))?;
    wal.sync()
        .map_err(|e| format!("sync after recovery: {e}"))?;
    drop(wal);
    let (again, report) = replay(&storage).map_err(|e| format!("reopen {e}"))?;
    let mut expected = entries;
    expected.push(extra);
    let new_damage = report.is_damaged() && !was_damaged;
    if report.corruption.is_some() || new_damage || again != expected {
        return Err(format!(
            "reopen after recovery and one append: a tail to cut {:?}, new damage \
             {new_damage}, {} entries instead of {}",
            report.corruption,
            again.len(),
            expected.len()
        ));
    }
    Ok(())
}

/// The classification promise (issue 29): every frame of the valid log the input left
/// intact replays, and no cut-off tail starts before an intact frame. Skipped if recovery
/// replayed an entry the valid log never held: the input forged a whole frame (a CRC-32C
/// collision), which is a valid frame as far as any reader can tell.
fn check_classification(
    original: &[WalEntry],
    frames: &[(usize, usize)],
    damaged: &Damaged,
    replayed: &[WalEntry],
    report: &super::RecoveryReport,
) -> Result<(), String> {
    let Some((from, to)) = damaged.overwritten else {
        return Ok(());
    };
    if replayed.iter().any(|entry| !original.contains(entry)) {
        return Ok(());
    }
    for (entry, &(start, end)) in original.iter().zip(frames) {
        let intact = end <= from || start >= to;
        if !intact {
            continue;
        }
        if !replayed.contains(entry) {
            return Err(format!(
                "the intact frame at bytes {start}..{end} was not replayed (damage at \
                 {from}..{to}; report: {report})"
            ));
        }
        if let Some(cut) = &report.corruption {
            if cut.offset < start as u64 {
                return Err(format!(
                    "a tail cut at byte {} although the intact frame at {start}..{end} \
                     follows: damage taken for a torn tail",
                    cut.offset
                ));
            }
        }
    }
    Ok(())
}

fn damage(bytes: &mut Vec<u8>, mode: u8, rest: &[u8]) -> Damaged {
    match mode % 3 {
        0 => {
            *bytes = rest.to_vec();
            Damaged { overwritten: None }
        }
        1 => {
            bytes.truncate(super::WAL_FILE_HEADER_BYTES);
            bytes.extend_from_slice(rest);
            Damaged { overwritten: None }
        }
        _ => {
            let Some((offset, patch)) = rest.split_first_chunk::<2>() else {
                return Damaged {
                    overwritten: Some((0, 0)),
                };
            };
            let offset = usize::from(u16::from_le_bytes(*offset)) % (bytes.len() + 1);
            for (position, &byte) in (offset..).zip(patch) {
                match bytes.get_mut(position) {
                    Some(old) => *old = byte,
                    None => bytes.push(byte),
                }
            }
            Damaged {
                overwritten: Some((offset, offset + patch.len())),
            }
        }
    }
}
