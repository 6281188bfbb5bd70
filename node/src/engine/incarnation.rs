//! The engine's move to a new incarnation while it serves: what happens when a peer offers
//! records of this node's own actor beyond what its log holds (the log lost records it once
//! made durable and sent: a rotten last frame that read as a torn tail, a disk that dropped
//! acknowledged writes, a data directory restored from a backup or copied to a second
//! machine).
//!
//! What it promises: from the moment the engine sees such records, it never issues another
//! seq of the old actor. The move is logged (a [`WalEntry::Incarnation`]) ahead of every
//! record of the new actor, in the next log job; records accepted but not yet durable move to
//! the new actor as its first seqs and are answered with those; records of the old actor
//! that a log job in flight still writes are void (never joined the state, never answered),
//! and the entry tells replay to leave them out; the peer's records of the old actor then
//! join the state like any other actor's. The event is logged once, counted in
//! `tally_incarnation_changes_total{reason="own_records_from_peer"}`, and the new actor is
//! published for peer hellos.
//!
//! What it cannot undo: seqs of the old actor this node issued *and made durable* since it
//! started, before it met the peer's records, may already differ from what the peer holds at
//! those seqs (recovery begins a new incarnation whenever its log is not whole, so this
//! needs a log that lost entries without a trace). The warning names them.

use rand::RngCore;
use tally_core::{ActorId, MovedRecords, PollId, RecordBatch, Seq};

use super::log_answers::TakenBack;
use super::replication::Need;
use super::{BatchVoteAck, Engine, Pending, VoteAck, Waiter};
use crate::metrics::OWN_RECORDS_FROM_PEER;
use crate::wal::WalEntry;

impl Engine {
    /// Moves this node to a new incarnation because `batch` (of its own actor, up to seq
    /// `their_seq`) came from a peer. See the module doc.
    pub(super) fn begin_incarnation_behind_peers(&mut self, batch: &RecordBatch, their_seq: Seq) {
        self.take_back_log_answers();
        let retired = self.replica.actor().clone();
        let durable_through: Vec<(PollId, Seq)> = self
            .replica
            .poll_specs()
            .filter_map(|spec| {
                let held = self.replica.state(spec.id())?.held(&retired);
                (held > 0).then(|| (spec.id().clone(), held))
            })
            .collect();
        let mut incarnation = self.incarnation_rng.next_u64();
        while incarnation == retired.incarnation {
            incarnation = self.incarnation_rng.next_u64();
        }
        let actor = ActorId {
            node: retired.node.clone(),
            incarnation,
        };
        let held = self
            .replica
            .state(batch.poll())
            .map_or(0, |s| s.held(&retired));
        let moved = self.replica.begin_incarnation(actor.clone());
        // The job in flight may still write records of the retired actor: they are void.
        for (_, marks) in &mut self.in_flight_jobs {
            marks.clear();
        }
        self.void_unpublished_pushes();
        self.renumber_waiters(&moved, retired.incarnation, incarnation);
        self.unlogged_entries.insert(
            0,
            WalEntry::Incarnation {
                actor: actor.clone(),
                retired: retired.clone(),
                durable_through,
            },
        );
        self.actor_changed = true;
        self.metrics.count_incarnation_change(OWN_RECORDS_FROM_PEER);
        let in_flight: usize = moved.iter().map(|m| m.count).sum();
        tracing::error!(
            %retired,
            new_actor = %actor,
            poll = %batch.poll(),
            held,
            peer_holds_up_to = their_seq,
            moved_in_flight = in_flight,
            "a peer holds records of this node's own actor beyond what its log holds: the \
             log lost records it had made durable (a damaged or restored disk). This node \
             now runs as a new incarnation and will never issue the old actor's seqs again; \
             the peer's records of the old actor are taken like any actor's. If this node \
             accepted votes since it started, records it made durable above the seq its log \
             held at start-up may differ from the peer's at those seqs: see OPERATIONS.md, \
             \"A damaged log\""
        );
    }

    /// Before a move: takes the replies the log writer would answer back into the engine's
    /// waiters, so they are renumbered with their records. A job in flight whose replies the
    /// writer has answered already is durable (its fsync returned): it is marked so now, as
    /// its report would, and its records stay the retired actor's, durable and answered.
    fn take_back_log_answers(&mut self) {
        let mut taken = Vec::new();
        while let Some((token, answers)) = self.in_flight_answers.pop_front() {
            match answers.take_back() {
                TakenBack::Replies(replies) => taken.extend(replies),
                TakenBack::Durable => self.on_durable(token),
                TakenBack::Nothing => {}
            }
        }
        taken.append(&mut self.log_answers);
        let token = self.next_token;
        for pending in taken {
            self.waiting.push_back(Waiter {
                token,
                need: Need::default(),
                pending,
            });
        }
    }

    /// Gives every answer waiting for a moved record the record's new seq and incarnation,
    /// and makes every waiter wait for the next log job (the one that logs the moved
    /// records under the new actor) at least.
    fn renumber_waiters(&mut self, moved: &[MovedRecords], retired: u64, incarnation: u64) {
        let next = self.next_token;
        for waiter in &mut self.waiting {
            waiter.token = waiter.token.max(next);
            if let Some(poll) = waiter.pending.poll() {
                // A need of records made durable under the retired actor stays that actor's:
                // only an ack peer's confirmation of its records answers it.
                let moved: Vec<&MovedRecords> = moved.iter().filter(|m| &m.poll == poll).collect();
                waiter.need.move_to(retired, incarnation, &moved);
            }
            match &mut waiter.pending {
                Pending::Vote(_, ack, poll) => renumber(ack, poll, moved, incarnation),
                Pending::Batch(_, acks, poll) => {
                    for ack in acks {
                        if let BatchVoteAck::Ack(ack) = ack {
                            renumber(ack, poll, moved, incarnation);
                        }
                    }
                }
                Pending::Poll(..) | Pending::Pushed(..) => {}
            }
        }
    }
}

/// `ack` with its record's new seq, if the record moved.
fn renumber(ack: &mut VoteAck, poll: &PollId, moved: &[MovedRecords], incarnation: u64) {
    let VoteAck::Counted {
        seq,
        incarnation: of,
        ..
    } = ack
    else {
        return;
    };
    let new_seq = moved
        .iter()
        .filter(|m| &m.poll == poll)
        .find_map(|m| m.new_seq(*seq));
    // A waiting `Counted` answer's record is in flight, so it moved.
    debug_assert!(
        new_seq.is_some(),
        "a waiting record of poll {poll} did not move"
    );
    if let Some(new_seq) = new_seq {
        *seq = new_seq;
        *of = incarnation;
    }
}
