//! Merges a peer's pull answer into the engine in pieces of at most
//! [`PEER_APPLY_RECORDS_MAX`] records, one engine command each, the next sent once the last
//! is answered: between two pieces the engine serves votes and the log's reports.
//!
//! Why: the engine merges a peer's records at ~0.25 µs a record, and one command holds every
//! vote meanwhile. A whole round's answer at a region's peak (the peer's votes of a 100 ms
//! tick: ~39,000 records at 387,000 votes/s) held the engine 6–13 ms, 8–10 times a second,
//! the largest part of a vote's p99 under `local` acks with the index reserved
//! (BENCHMARKS.md, "Where the batches' tail at half the rate comes from").
//!
//! What it keeps: every piece carries the answer's poll definitions (so each merges only the
//! records of polls both nodes define alike, as the whole answer would); the first carries
//! its declarations and reservations, the last its counters, so definitions, then records,
//! then counters are merged in the order the whole answer's command merged them. Merges
//! commute, so a vote or a push the engine takes between two pieces sees a state a whole
//! merge could also have left. The pieces' outcomes add up to the answer's.

use tally_core::{NodeId, PullAnswer, RecordBatch};
use tokio::sync::mpsc;

use super::{SessionError, ask};
use crate::engine::{Command, PeerApplied, split_records};

/// Most records of a peer's answer one engine command merges (~1 ms of the engine's time).
pub(super) const PEER_APPLY_RECORDS_MAX: usize = 4_096;

/// Merges `answer` from `peer` (see the module doc).
pub(super) async fn apply_in_pieces(
    engine: &mpsc::Sender<Command>,
    peer: NodeId,
    answer: PullAnswer,
) -> Result<PeerApplied, SessionError> {
    let mut total = PeerApplied::default();
    for piece in pieces(answer) {
        let applied: PeerApplied = ask(engine, |reply| Command::PeerApply {
            peer: peer.clone(),
            answer: piece,
            reply,
        })
        .await?;
        total.records_added += applied.records_added;
        total.counters_changed |= applied.counters_changed;
        total.shared.extend(applied.shared);
        total.refused.extend(applied.refused);
        total.records_deferred += applied.records_deferred;
    }
    Ok(total)
}

/// `answer` as answers of at most [`PEER_APPLY_RECORDS_MAX`] records each (at least one).
fn pieces(mut answer: PullAnswer) -> Vec<PullAnswer> {
    let records: usize = answer.batches.iter().map(RecordBatch::len).sum();
    if records <= PEER_APPLY_RECORDS_MAX {
        return vec![answer];
    }
    let mut groups: Vec<Vec<RecordBatch>> = vec![Vec::new()];
    let mut in_group = 0;
    for batch in std::mem::take(&mut answer.batches) {
        for piece in split_records(&batch, 0, usize::MAX, PEER_APPLY_RECORDS_MAX) {
            if in_group + piece.len() > PEER_APPLY_RECORDS_MAX && in_group > 0 {
                groups.push(Vec::new());
                in_group = 0;
            }
            in_group += piece.len();
            if let Some(group) = groups.last_mut() {
                group.push(piece);
            }
        }
    }
    let mut counters = Some(std::mem::take(&mut answer.counters));
    let polls = answer.polls.clone();
    let mut first = Some(answer);
    let mut out: Vec<PullAnswer> = Vec::with_capacity(groups.len());
    let count = groups.len();
    for (i, batches) in groups.into_iter().enumerate() {
        let mut piece = first.take().unwrap_or_else(|| PullAnswer {
            polls: polls.clone(),
            ..PullAnswer::default()
        });
        piece.batches = batches;
        if i + 1 == count {
            piece.counters = counters.take().unwrap_or_default();
        }
        out.push(piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use tally_core::{ActorId, OptionIndex, PollId, Seq, VoteId};

    use super::*;

    fn batch(first_seq: Seq, len: usize) -> RecordBatch {
        let actor = ActorId {
            node: NodeId::new("b").unwrap(),
            incarnation: 3,
        };
        let mut batch = RecordBatch::new(PollId::new("p").unwrap(), actor, first_seq);
        for i in 0..len {
            batch.push(VoteId::from_bytes([i as u8; 16]), OptionIndex(1), 2);
        }
        batch
    }

    #[test]
    fn a_large_answer_is_merged_in_pieces_that_hold_every_record_once_in_order() {
        // Goal: splitting an answer loses, repeats and reorders no record, keeps each piece
        // within the bound, and leaves the answer's other parts in the first piece. Method:
        // an answer of 10,000 + 3 records in two batches, cut up.
        let mut answer = PullAnswer {
            batches: vec![batch(1, 10_000), batch(10_001, 3)],
            ..PullAnswer::default()
        };
        answer.vectors = vec![(PollId::new("p").unwrap(), Default::default())];
        let pieces = pieces(answer);
        assert_eq!(pieces.len(), 3);
        let seqs: Vec<Seq> = pieces
            .iter()
            .flat_map(|p| p.batches.iter().flat_map(|b| b.iter().map(|r| r.seq)))
            .collect();
        assert_eq!(seqs, (1..=10_003).collect::<Vec<_>>());
        for piece in &pieces {
            let records: usize = piece.batches.iter().map(RecordBatch::len).sum();
            assert!(records <= PEER_APPLY_RECORDS_MAX, "{records}");
        }
        assert_eq!(pieces[0].vectors.len(), 1, "the first piece keeps the rest");
        assert!(pieces[1].vectors.is_empty());
        // A small answer goes whole.
        assert_eq!(
            super::pieces(PullAnswer {
                batches: vec![batch(1, 10)],
                ..PullAnswer::default()
            })
            .len(),
            1
        );
    }
}
