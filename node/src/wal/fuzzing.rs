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

fn replay(storage: &MemoryStorage) -> Result<(Wal<MemoryStorage>, Vec<WalEntry>, bool), String> {
    let mut entries = Vec::new();
    let (wal, report) = Wal::open(storage.clone(), |entry| entries.push(entry))
        .map_err(|e| format!("refused: {e}"))?;
    Ok((wal, entries, report.corruption.is_some()))
}

/// Runs recovery over a log damaged as `data` says: the first byte picks how (the whole
/// segment replaced by the rest; the rest after a valid file header; or the rest written
/// over a valid log at the offset its first two bytes name). Recovery of any bytes returns
/// instead of panicking; an error leaves every file byte for byte as it was; a recovery that
/// succeeds leaves a log that reopens to the same entries with no damage reported, and that
/// takes a new entry that the next reopen replays. `Err` says which promise broke.
pub fn check_recovery(data: &[u8]) -> Result<(), String> {
    let Some((&mode, rest)) = data.split_first() else {
        return Ok(());
    };
    let storage = MemoryStorage::new();
    let original = valid_entries();
    {
        let (mut wal, _) = Wal::open(storage.clone(), |_| {}).map_err(|e| e.to_string())?;
        wal.append(&original).map_err(|e| e.to_string())?;
        wal.sync().map_err(|e| e.to_string())?;
    }
    let segment = storage
        .list()
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("the valid log has no segment")?;
    storage
        .with_file_bytes(&segment, |bytes| damage(bytes, mode, rest))
        .map_err(|e| e.to_string())?;
    let before = files(&storage)?;
    let (mut wal, entries, _) = match replay(&storage) {
        Ok(opened) => opened,
        Err(_) if files(&storage)? == before => return Ok(()),
        Err(refusal) => return Err(format!("recovery {refusal} and changed the files")),
    };
    let extra = original[1].clone();
    wal.append(std::slice::from_ref(&extra))
        .map_err(|e| format!("append after recovery: {e}"))?;
    wal.sync()
        .map_err(|e| format!("sync after recovery: {e}"))?;
    drop(wal);
    let (_, again, damaged) = replay(&storage).map_err(|e| format!("reopen {e}"))?;
    let mut expected = entries;
    expected.push(extra);
    if damaged || again != expected {
        return Err(format!(
            "reopen after recovery and one append: damage reported {damaged}, {} entries \
             instead of {}",
            again.len(),
            expected.len()
        ));
    }
    Ok(())
}

fn damage(bytes: &mut Vec<u8>, mode: u8, rest: &[u8]) {
    match mode % 3 {
        0 => *bytes = rest.to_vec(),
        1 => {
            bytes.truncate(super::WAL_FILE_HEADER_BYTES);
            bytes.extend_from_slice(rest);
        }
        _ => {
            let Some((offset, patch)) = rest.split_first_chunk::<2>() else {
                return;
            };
            let offset = usize::from(u16::from_le_bytes(*offset)) % (bytes.len() + 1);
            for (position, &byte) in (offset..).zip(patch) {
                match bytes.get_mut(position) {
                    Some(old) => *old = byte,
                    None => bytes.push(byte),
                }
            }
        }
    }
}
