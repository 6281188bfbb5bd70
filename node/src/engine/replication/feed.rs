//! The push feed: this node's own records, handed to the push sessions by the engine the
//! moment the log job holding them is durable, so a session pushes a group commit without
//! asking the engine for it ([`AckCommand::OwnRecordsToPush`], a command that waits for the
//! engine's current wake-up) and before the engine has indexed the group's records into its
//! state (`mark_durable`, milliseconds for a large group).
//!
//! What it promises: a batch is in the feed only once its log job is durable here (the
//! engine publishes at the log's report, never before), and never a record of a log job that
//! a move to a new incarnation voided (those are dropped before publication, and the feed is
//! emptied at the move). Batches of one poll come in seq order. A session reads the feed
//! without taking from it (each ack peer's session has its own cursor); the feed keeps the
//! newest [`PUSH_FEED_RECORDS_MAX`] records and lets older ones go. A session whose cursor it
//! cannot continue without a gap (the session fell further behind than that, it is new, its
//! cursor is of another incarnation, or it wants probes) asks the engine as before: the feed
//! is a shortcut, never the only way.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tally_core::limits::RECORDS_PER_BATCH_MAX;
use tally_core::{DefinitionDigest, RecordBatch, Seq};

use super::{OwnRecords, PUSH_RECORDS_PER_ASK_MAX, PushCursor};

/// Most records the push feed keeps (the newest; as many as a session may have unanswered,
/// `tally_core::session::PUSH_RECORDS_UNANSWERED_MAX`: a session further behind than that
/// is waiting for its peer's answers anyway, and asks the engine when it goes on).
pub const PUSH_FEED_RECORDS_MAX: usize = 262_144;

/// Own records of this node with its definition of their poll, shared by the engine, the
/// feed and the push sessions (a log job's batch is copied once, at its submission).
pub(super) type FeedBatch = (DefinitionDigest, Arc<RecordBatch>);

/// This node's durable own records for the push sessions (see the module doc). Shared by
/// the engine (which publishes) and the push sessions (which read).
#[derive(Debug, Default)]
pub struct PushFeed {
    inner: Mutex<FeedInner>,
    /// Set by the planted bug `AckBeforePeerFsync` only: the sessions ask the engine for
    /// every record, and the bug takes what the engine hands out as confirmed.
    closed: AtomicBool,
}

#[derive(Debug, Default)]
struct FeedInner {
    /// Durable own batches, oldest first, each with this node's definition of its poll.
    batches: VecDeque<FeedBatch>,
    /// Records in `batches`.
    records: usize,
}

impl PushFeed {
    /// Appends durable own batches (in log order), letting the oldest go past
    /// [`PUSH_FEED_RECORDS_MAX`] records.
    pub(in crate::engine) fn publish(&self, batches: impl IntoIterator<Item = FeedBatch>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        for (definition, batch) in batches {
            inner.records += batch.len();
            inner.batches.push_back((definition, batch));
        }
        while inner.records > PUSH_FEED_RECORDS_MAX {
            let Some((_, oldest)) = inner.batches.pop_front() else {
                break;
            };
            inner.records -= oldest.len();
        }
    }

    /// Sends every session to the engine for good (the planted bug's setting).
    pub(in crate::engine) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Empties the feed (a move to a new incarnation: the sessions start over by asking).
    pub(in crate::engine) fn clear(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            *inner = FeedInner::default();
        }
    }

    /// The records to push after `cursor` (at most [`PUSH_RECORDS_PER_ASK_MAX`], whole
    /// batches of at most [`RECORDS_PER_BATCH_MAX`] records), as the engine would answer
    /// [`super::AckCommand::OwnRecordsToPush`] without probes: `None` when the feed cannot
    /// continue `cursor` without a gap (records it let go of, or another actor's), and the
    /// session must ask the engine.
    pub fn after(&self, cursor: &PushCursor) -> Option<OwnRecords> {
        if self.closed.load(Ordering::Relaxed) {
            return None;
        }
        // Only the shared handles are taken under the lock; copies are made outside it.
        let feed: Vec<FeedBatch> = {
            let inner = self.inner.lock().ok()?;
            inner.batches.iter().cloned().collect()
        };
        let mut cursor = cursor.clone();
        let mut pushes = Vec::new();
        let mut budget = PUSH_RECORDS_PER_ASK_MAX;
        for (definition, batch) in feed {
            if batch.actor() != &cursor.actor {
                return None;
            }
            let through = cursor.through.get(batch.poll()).copied().unwrap_or(0);
            if batch.last_seq() <= through {
                continue;
            }
            if batch.first_seq() > through + 1 {
                return None;
            }
            let mut taken = through;
            for piece in pieces_after(&batch, through, budget) {
                budget -= piece.len();
                taken = piece.last_seq();
                pushes.push((definition, piece));
            }
            cursor.through.insert(batch.poll().clone(), taken);
            if taken < batch.last_seq() {
                // The budget ran out in this batch: the session reads on after its push.
                return Some(OwnRecords {
                    cursor,
                    pushes,
                    more: true,
                });
            }
        }
        Some(OwnRecords {
            cursor,
            pushes,
            more: false,
        })
    }
}

/// `batch`'s records after seq `through`, at most `budget` of them, in batches of at most
/// [`RECORDS_PER_BATCH_MAX`] (a push's limit; a log job's batch holds a whole group commit).
fn pieces_after(batch: &RecordBatch, through: Seq, budget: usize) -> Vec<RecordBatch> {
    split_records(batch, through, budget, RECORDS_PER_BATCH_MAX)
}

/// `batch`'s records after seq `through`, at most `budget` of them, in batches of at most
/// `piece_records` (≥ 1) records each, in seq order (the batch itself when it fits whole).
pub(crate) fn split_records(
    batch: &RecordBatch,
    through: Seq,
    budget: usize,
    piece_records: usize,
) -> Vec<RecordBatch> {
    if batch.first_seq() > through && batch.len() <= piece_records.min(budget) {
        return vec![batch.clone()];
    }
    let mut pieces: Vec<RecordBatch> = Vec::new();
    for record in batch.iter().filter(|r| r.seq > through).take(budget) {
        let full = pieces
            .last()
            .is_none_or(|piece| piece.len() >= piece_records);
        if full {
            pieces.push(RecordBatch::new(
                batch.poll().clone(),
                batch.actor().clone(),
                record.seq,
            ));
        }
        if let Some(piece) = pieces.last_mut() {
            piece.push(record.vote_id, record.option, record.second);
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tally_core::{ActorId, NodeId, OptionIndex, PollId, VoteId};

    use super::*;

    fn actor(incarnation: u64) -> ActorId {
        ActorId {
            node: NodeId::new("a").unwrap(),
            incarnation,
        }
    }

    fn batch(actor: &ActorId, first_seq: Seq, len: usize) -> Arc<RecordBatch> {
        let mut batch = RecordBatch::new(PollId::new("p").unwrap(), actor.clone(), first_seq);
        for i in 0..len {
            batch.push(VoteId::from_bytes([i as u8; 16]), OptionIndex(0), 0);
        }
        Arc::new(batch)
    }

    fn cursor(actor: &ActorId, through: Seq) -> PushCursor {
        PushCursor {
            actor: actor.clone(),
            through: BTreeMap::from([(PollId::new("p").unwrap(), through)]),
        }
    }

    fn seqs(records: &OwnRecords) -> Vec<(Seq, Seq)> {
        records
            .pushes
            .iter()
            .map(|(_, b)| (b.first_seq(), b.last_seq()))
            .collect()
    }

    #[test]
    fn a_session_continues_its_cursor_from_the_feed_and_asks_the_engine_past_a_gap() {
        // Goal: the feed hands out exactly the records after a session's cursor, in push-sized
        // pieces, and refuses (None: ask the engine) when it cannot continue without a gap.
        // Method: publish three batches, read after several cursors, then let the feed's bound
        // drop the oldest.
        let a = actor(1);
        let digest = DefinitionDigest([7; 16]);
        let feed = PushFeed::default();
        feed.publish([
            (digest, batch(&a, 1, 10)),
            (digest, batch(&a, 11, 5)),
            (digest, batch(&a, 16, RECORDS_PER_BATCH_MAX + 3)),
        ]);
        let all = feed.after(&cursor(&a, 0)).unwrap();
        let last = 15 + RECORDS_PER_BATCH_MAX as Seq + 3;
        assert_eq!(
            seqs(&all),
            vec![
                (1, 10),
                (11, 15),
                (16, 15 + RECORDS_PER_BATCH_MAX as Seq),
                (16 + RECORDS_PER_BATCH_MAX as Seq, last)
            ]
        );
        assert_eq!(
            all.cursor.through.values().copied().collect::<Vec<_>>(),
            [last]
        );
        assert!(!all.more);
        // A session takes at most PUSH_RECORDS_PER_ASK_MAX records at a time, and more after.
        feed.publish([(digest, batch(&a, last + 1, PUSH_RECORDS_PER_ASK_MAX))]);
        let capped = feed.after(&cursor(&a, 0)).unwrap();
        let taken: usize = capped.pushes.iter().map(|(_, b)| b.len()).sum();
        assert_eq!(taken, PUSH_RECORDS_PER_ASK_MAX);
        let rest = feed.after(&capped.cursor).unwrap();
        let rest_taken: usize = rest.pushes.iter().map(|(_, b)| b.len()).sum();
        assert_eq!(taken + rest_taken, last as usize + PUSH_RECORDS_PER_ASK_MAX);
        assert!(capped.more && !rest.more);
        let last = last + PUSH_RECORDS_PER_ASK_MAX as Seq;
        // Mid-batch: only what follows the cursor.
        assert_eq!(seqs(&feed.after(&cursor(&a, 12)).unwrap())[0], (13, 15));
        // Nothing new: nothing to push.
        assert!(feed.after(&cursor(&a, last)).unwrap().pushes.is_empty());
        // Another incarnation's cursor: ask the engine.
        assert!(feed.after(&cursor(&actor(2), 0)).is_none());
        // Past the bound the oldest batches go: a cursor before them has a gap.
        feed.publish([(digest, batch(&a, last + 1, PUSH_FEED_RECORDS_MAX))]);
        assert!(feed.after(&cursor(&a, 0)).is_none());
        assert!(feed.after(&cursor(&a, last)).is_some());
        feed.clear();
        assert!(feed.after(&cursor(&a, 0)).unwrap().pushes.is_empty());
    }
}
