//! A run of one actor's vote records, `first_seq ..`, in the compact columnar form used on the
//! wire, in the write-ahead log and between the replica and its callers.
//!
//! Per record: 16 ID bytes and 1 option byte; seconds are run-length encoded. So a full batch
//! costs ~17 bytes a record. A decoded batch is always well formed (validated on decode).

use serde::{Deserialize, Serialize};

use crate::ids::{ActorId, OptionIndex, PollId, Second, Seq};
use crate::limits::{OPTIONS_MAX, POLL_SECONDS_MAX, RECORDS_PER_BATCH_MAX};
use crate::vote_id::VoteId;

/// `count` consecutive records stamped `second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondRun {
    /// How many records the run covers (at least 1).
    pub count: u32,
    /// The second they were stamped with.
    pub second: Second,
}

/// One record as a caller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRecord {
    /// The record's seq in its actor's log.
    pub seq: Seq,
    /// The vote's idempotency key.
    pub vote_id: VoteId,
    /// The option voted for.
    pub option: OptionIndex,
    /// The poll-relative second it was accepted in.
    pub second: Second,
}

/// Why a record batch is ill formed. Nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// More than [`RECORDS_PER_BATCH_MAX`] records.
    #[error("batch holds {count} records; at most {RECORDS_PER_BATCH_MAX} are allowed")]
    TooManyRecords {
        /// Records in the batch.
        count: usize,
    },
    /// Column lengths disagree.
    #[error(
        "batch columns disagree: {vote_id_bytes} ID bytes, {options} options, {seconds} seconds"
    )]
    ColumnMismatch {
        /// Bytes in the ID column (16 per record).
        vote_id_bytes: usize,
        /// Entries in the option column.
        options: usize,
        /// Records covered by the second runs.
        seconds: u64,
    },
    /// A seq of 0, or seqs past `u64::MAX`.
    #[error("batch seqs start at {first_seq}, which is out of range")]
    BadSeq {
        /// The refused first seq.
        first_seq: Seq,
    },
    /// An option index past [`OPTIONS_MAX`] or a second past [`POLL_SECONDS_MAX`].
    #[error("batch holds an out-of-range option or second")]
    OutOfRange,
    /// A second run of zero records.
    #[error("batch holds an empty second run")]
    EmptyRun,
}

/// The wire form, decoded first and validated into a [`RecordBatch`].
#[derive(Deserialize)]
struct RawBatch {
    poll: PollId,
    actor: ActorId,
    first_seq: Seq,
    #[serde(with = "serde_bytes")]
    vote_ids: Vec<u8>,
    #[serde(with = "serde_bytes")]
    options: Vec<u8>,
    second_runs: Vec<SecondRun>,
}

/// Consecutive records of one actor for one poll.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawBatch")]
pub struct RecordBatch {
    poll: PollId,
    actor: ActorId,
    first_seq: Seq,
    vote_ids: Vec<u8>,
    options: Vec<u8>,
    second_runs: Vec<SecondRun>,
}

impl RecordBatch {
    /// An empty batch whose first record will have seq `first_seq` (≥ 1).
    pub fn new(poll: PollId, actor: ActorId, first_seq: Seq) -> Self {
        assert!(first_seq >= 1, "seqs start at 1");
        Self {
            poll,
            actor,
            first_seq,
            vote_ids: Vec::new(),
            options: Vec::new(),
            second_runs: Vec::new(),
        }
    }

    /// Appends the next record (seq `first_seq + len`).
    pub fn push(&mut self, vote_id: VoteId, option: OptionIndex, second: Second) {
        self.vote_ids.extend_from_slice(&vote_id.to_bytes());
        self.options.push(option.0);
        match self.second_runs.last_mut() {
            Some(run) if run.second == second => run.count += 1,
            _ => self.second_runs.push(SecondRun { count: 1, second }),
        }
    }

    /// Renumbers every record's option: `mapping[old]` is its new index.
    pub(crate) fn remap_options(&mut self, mapping: &[u8]) {
        for option in &mut self.options {
            *option = mapping[usize::from(*option)];
        }
    }

    /// The poll the records belong to.
    pub fn poll(&self) -> &PollId {
        &self.poll
    }

    /// The actor that accepted the records.
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// Seq of the first record.
    pub fn first_seq(&self) -> Seq {
        self.first_seq
    }

    /// Seq of the last record (`first_seq - 1` when empty).
    pub fn last_seq(&self) -> Seq {
        self.first_seq + self.len() as Seq - 1
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.options.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.options.is_empty()
    }

    /// The records in seq order.
    pub fn iter(&self) -> impl Iterator<Item = BatchRecord> + '_ {
        let seconds = self
            .second_runs
            .iter()
            .flat_map(|run| std::iter::repeat_n(run.second, run.count as usize));
        self.vote_ids
            .chunks_exact(16)
            .zip(&self.options)
            .zip(seconds)
            .enumerate()
            .map(move |(i, ((id, &option), second))| {
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(id);
                BatchRecord {
                    seq: self.first_seq + i as Seq,
                    vote_id: VoteId::from_bytes(bytes),
                    option: OptionIndex(option),
                    second,
                }
            })
    }
}

impl TryFrom<RawBatch> for RecordBatch {
    type Error = BatchError;

    fn try_from(raw: RawBatch) -> Result<Self, BatchError> {
        let count = raw.options.len();
        if count > RECORDS_PER_BATCH_MAX {
            return Err(BatchError::TooManyRecords { count });
        }
        let seconds: u64 = raw.second_runs.iter().map(|r| u64::from(r.count)).sum();
        if raw.vote_ids.len() != count * 16 || seconds != count as u64 {
            return Err(BatchError::ColumnMismatch {
                vote_id_bytes: raw.vote_ids.len(),
                options: count,
                seconds,
            });
        }
        if raw.first_seq == 0 || raw.first_seq.checked_add(count as Seq).is_none() {
            return Err(BatchError::BadSeq {
                first_seq: raw.first_seq,
            });
        }
        if raw.second_runs.iter().any(|r| r.count == 0) {
            return Err(BatchError::EmptyRun);
        }
        let bad_option = raw.options.iter().any(|&o| usize::from(o) >= OPTIONS_MAX);
        let bad_second = raw.second_runs.iter().any(|r| r.second > POLL_SECONDS_MAX);
        if bad_option || bad_second {
            return Err(BatchError::OutOfRange);
        }
        Ok(Self {
            poll: raw.poll,
            actor: raw.actor,
            first_seq: raw.first_seq,
            vote_ids: raw.vote_ids,
            options: raw.options,
            second_runs: raw.second_runs,
        })
    }
}

/// The wire form, borrowed for encoding without a copy. Field order matches [`RawBatch`].
#[derive(Serialize)]
struct RawBatchRef<'a> {
    poll: &'a PollId,
    actor: &'a ActorId,
    first_seq: Seq,
    #[serde(with = "serde_bytes")]
    vote_ids: &'a [u8],
    #[serde(with = "serde_bytes")]
    options: &'a [u8],
    second_runs: &'a [SecondRun],
}

impl Serialize for RecordBatch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RawBatchRef {
            poll: &self.poll,
            actor: &self.actor,
            first_seq: self.first_seq,
            vote_ids: &self.vote_ids,
            options: &self.options,
            second_runs: &self.second_runs,
        }
        .serialize(serializer)
    }
}
