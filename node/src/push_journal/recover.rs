//! Start-up's part of the push journal: the records it holds join the replica and the main
//! log, then the journal is emptied, before the node serves.
//!
//! What it promises: a record the journal held durably when the node stopped (however it
//! stopped) is in the replica and durable in the main log before anything is answered; the
//! journal's tail torn by a crash is cut off like the main log's (no record in it was ever
//! answered durable, its fsync had not returned); damage anywhere else stops the start with
//! [`RecoveryError::JournalDamaged`] unless the operator accepts the loss
//! (`accept_log_damage`), in which case every valid record before and after the damage is
//! kept, and the damaged file stays aside (`.damaged-N`) as the main log's would.

use tally_core::{RecordBatch, Replica};

use super::storage::JournalStorage;
use crate::storage::Storage;
use crate::wal::startup::RecoveryError;
use crate::wal::{RecoveryReport, Wal, WalEntry};

/// What the journal held at start-up.
#[derive(Debug, Default)]
pub struct JournalReplayed {
    /// Batches read back.
    pub batches: usize,
    /// Records in them that the replica lacked (the main log did not hold them yet).
    pub records_added: usize,
    /// Batches the replica could not take (each logged as a warning).
    pub refused: usize,
    /// The journal log's own report.
    pub report: RecoveryReport,
}

/// Replays the push journal in `directory` into `replica` and `wal` (the main log, which
/// holds the directory's lock), makes it durable there, empties the journal and returns it,
/// open for appends.
pub fn recover_journal<S: Storage + Clone>(
    directory: &S,
    replica: &mut Replica,
    wal: &mut Wal<S>,
    accept_damage: bool,
) -> Result<(Wal<JournalStorage<S>>, JournalReplayed), RecoveryError> {
    let mut batches = Vec::new();
    let mut others = 0usize;
    let recovery = Wal::recover_as(
        JournalStorage::new(directory.clone()),
        "the push journal",
        |entry| match entry {
            WalEntry::Records(batch) => batches.push(batch),
            _ => others += 1,
        },
    )?;
    if recovery.report().is_damaged() && !accept_damage {
        return Err(RecoveryError::JournalDamaged {
            summary: recovery.report().to_string(),
        });
    }
    let (mut journal, report) = recovery.finish()?;
    let mut replayed = JournalReplayed {
        batches: batches.len(),
        refused: others,
        report,
        ..JournalReplayed::default()
    };
    let own = replica.actor().node.clone();
    let mut entries = Vec::new();
    for batch in batches {
        if batch.actor().node == own {
            replayed.refused += 1;
            tracing::warn!(actor = %batch.actor(), "push journal: records of this node's own actor ignored");
            continue;
        }
        match replica.apply_records(&batch) {
            Ok(applied) => {
                replayed.records_added += applied.added;
                if applied.added > 0 || applied.held_back > 0 {
                    entries.push(WalEntry::Records(batch));
                }
            }
            Err(error) => {
                replayed.refused += 1;
                warn_refused(&batch, &error);
            }
        }
    }
    if !entries.is_empty() {
        wal.append(&entries)?;
    }
    // The main log holds everything now (the records merged above, and everything it held
    // before): only then may the journal let go of them.
    wal.sync()?;
    if journal.bytes_since_snapshot() > 0 || replayed.report.snapshot_entries > 0 {
        journal.write_snapshot(Vec::new())?;
    }
    Ok((journal, replayed))
}

fn warn_refused(batch: &RecordBatch, error: &tally_core::ReplicaError) {
    tracing::warn!(
        poll = %batch.poll(),
        actor = %batch.actor(),
        first_seq = batch.first_seq(),
        records = batch.len(),
        %error,
        "push journal: records the replica could not take were not replayed"
    );
}
