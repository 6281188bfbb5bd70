//! The pushes of replicated acks (protocol 3), sans-IO: each side of a session may push the
//! records of its own actor, as soon as they are durable on its disk, to a peer that logs
//! and fsyncs them and answers each push with exactly one [`PeerMessage::PushAck`] (what it
//! now holds durably of that actor and poll), in order. A node in `ack_mode = "replicated"`
//! acknowledges a vote once an ack peer's answer covers the vote's record.
//!
//! Each side sends its pushes and its answers to the peer's pushes on one unidirectional
//! stream of its own, so a push stream carries both kinds and a pull round's bidirectional
//! streams carry neither. A [`PushSender`] queues this side's frames and bounds what is
//! unanswered ([`PUSHES_UNANSWERED_MAX`] pushes, [`PUSH_RECORDS_UNANSWERED_MAX`] records:
//! past either, [`PushSender::can_push`] is false and the caller waits for answers) and its
//! answers not yet written ([`PUSH_ANSWERS_QUEUED_MAX`]: a peer that keeps pushing while it
//! reads none of this side's answers is refused, cause `limit`); a
//! [`PushReceiver`] checks the peer's frames: pushes of its own node's records only, answers
//! about this node's records only, nothing else.

use std::collections::VecDeque;

use super::{Refusal, decode_gated, message_kind};
use crate::definition::DefinitionDigest;
use crate::ids::NodeId;
use crate::record_batch::RecordBatch;
use crate::wire::{self, PeerMessage, PushAck};

/// Most pushes sent and not yet answered, per session.
pub const PUSHES_UNANSWERED_MAX: usize = 64;

/// Most records sent in pushes not yet answered, per session (four pull rounds' worth).
pub const PUSH_RECORDS_UNANSWERED_MAX: usize = 262_144;

/// Most answers to the peer's pushes queued and not yet written. A peer stops pushing at
/// [`PUSHES_UNANSWERED_MAX`] unanswered pushes (give or take one ask's batches), so only a
/// peer that ignores the rule gets here.
pub const PUSH_ANSWERS_QUEUED_MAX: usize = 4 * PUSHES_UNANSWERED_MAX;

/// The protocol version that introduced pushes.
const PUSH_PROTOCOL: u16 = 3;

/// This side's push stream: its pushes and its answers to the peer's.
#[derive(Debug)]
pub struct PushSender {
    own: NodeId,
    /// Records of each push not yet answered, oldest first.
    unanswered: VecDeque<usize>,
    unanswered_records: usize,
    /// Frames to write, each marked whether it is an answer.
    outbox: VecDeque<(bool, Vec<u8>)>,
    answers_queued: usize,
}

impl PushSender {
    pub(super) fn new(own: NodeId) -> Self {
        Self {
            own,
            unanswered: VecDeque::new(),
            unanswered_records: 0,
            outbox: VecDeque::new(),
            answers_queued: 0,
        }
    }

    /// Whether another push may be sent: fewer than [`PUSHES_UNANSWERED_MAX`] pushes and
    /// [`PUSH_RECORDS_UNANSWERED_MAX`] records wait for the peer's answers.
    pub fn can_push(&self) -> bool {
        self.unanswered.len() < PUSHES_UNANSWERED_MAX
            && self.unanswered_records < PUSH_RECORDS_UNANSWERED_MAX
    }

    /// Pushes without an answer yet.
    pub fn unanswered(&self) -> usize {
        self.unanswered.len()
    }

    /// Queues a push of `batch`, records of this node's own actor in a poll it defines as
    /// `definition`.
    pub fn send_records(&mut self, definition: DefinitionDigest, batch: RecordBatch) {
        assert_eq!(
            batch.actor().node,
            self.own,
            "a node pushes only its own actor's records"
        );
        self.unanswered.push_back(batch.len());
        self.unanswered_records += batch.len();
        self.outbox.push_back((
            false,
            wire::encode(&PeerMessage::Push { definition, batch }),
        ));
    }

    /// Queues the answer to one of the peer's pushes (in the order they came). Past
    /// [`PUSH_ANSWERS_QUEUED_MAX`] answers not yet written, a refusal: the peer pushes
    /// without reading the answers.
    pub fn send_ack(&mut self, ack: PushAck) -> Result<(), Refusal> {
        if self.answers_queued >= PUSH_ANSWERS_QUEUED_MAX {
            return Err(Refusal::new(
                "limit",
                format!(
                    "the peer pushed on with {PUSH_ANSWERS_QUEUED_MAX} of its pushes' answers \
                     unread"
                ),
            ));
        }
        self.answers_queued += 1;
        self.outbox
            .push_back((true, wire::encode(&PeerMessage::PushAck(ack))));
        Ok(())
    }

    /// The peer answered this side's oldest unanswered push. An answer to no push is a
    /// refusal.
    pub fn handle_ack(&mut self) -> Result<(), Refusal> {
        let records = self
            .unanswered
            .pop_front()
            .ok_or_else(|| Refusal::new("frame", "a push ack answers no push"))?;
        self.unanswered_records -= records;
        Ok(())
    }

    /// The next frame to write on this side's push stream.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let (answer, frame) = self.outbox.pop_front()?;
        self.answers_queued -= usize::from(answer);
        Some(frame)
    }
}

/// What a frame of the peer's push stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// The peer's records to log, fsync and answer.
    Records {
        /// The peer's definition of the batch's poll.
        definition: DefinitionDigest,
        /// The records (of the peer's own node).
        batch: RecordBatch,
    },
    /// The peer's answer to this side's oldest unanswered push
    /// ([`PushSender::handle_ack`]).
    Ack(PushAck),
}

/// Checks the frames of the peer's push stream.
#[derive(Debug, Clone)]
pub struct PushReceiver {
    pub(super) own: NodeId,
    pub(super) peer: NodeId,
}

impl PushReceiver {
    /// One frame of the peer's push stream. A push of another node's records, an answer
    /// about another node's records, or any other message is a refusal.
    pub fn handle_frame(&self, frame: &[u8]) -> Result<Pushed, Refusal> {
        match decode_gated(frame, PUSH_PROTOCOL)? {
            PeerMessage::Push { definition, batch } => {
                if batch.actor().node != self.peer {
                    return Err(Refusal::new(
                        "frame",
                        format!(
                            "peer {} pushed records of {}, not its own",
                            self.peer,
                            batch.actor()
                        ),
                    ));
                }
                Ok(Pushed::Records { definition, batch })
            }
            PeerMessage::PushAck(ack) => {
                if ack.actor.node != self.own {
                    return Err(Refusal::new(
                        "frame",
                        format!("push ack about {}, not this node", ack.actor),
                    ));
                }
                Ok(Pushed::Ack(ack))
            }
            other => Err(Refusal::new(
                "frame",
                format!(
                    "unexpected message on a push stream: {}",
                    message_kind(&other)
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ActorId, OptionIndex, PollId};
    use crate::vote_id::VoteId;

    fn actor(node: &str) -> ActorId {
        ActorId {
            node: NodeId::new(node).unwrap(),
            incarnation: 7,
        }
    }

    fn batch(node: &str, records: u32) -> RecordBatch {
        let mut batch = RecordBatch::new(PollId::new("p").unwrap(), actor(node), 1);
        for i in 0..records {
            batch.push(VoteId(u128::from(i) + 1), OptionIndex(0), 0);
        }
        batch
    }

    #[test]
    fn pushes_stop_at_the_unanswered_bound_and_resume_as_answers_come() {
        // Goal: the pusher never has more than PUSHES_UNANSWERED_MAX pushes unanswered, and
        // an answer to no push is refused. Method: push until `can_push` is false, answer one.
        let mut sender = PushSender::new(NodeId::new("a").unwrap());
        let definition = DefinitionDigest([1; 16]);
        let mut pushed = 0;
        while sender.can_push() {
            sender.send_records(definition, batch("a", 1));
            pushed += 1;
        }
        assert_eq!(pushed, PUSHES_UNANSWERED_MAX);
        assert_eq!(
            std::iter::from_fn(|| sender.poll_transmit()).count(),
            pushed
        );
        sender.handle_ack().unwrap();
        assert!(sender.can_push());
        for _ in 1..pushed {
            sender.handle_ack().unwrap();
        }
        assert_eq!(sender.handle_ack().map_err(|r| r.cause), Err("frame"));
    }

    #[test]
    fn answers_queue_only_up_to_their_bound_and_drain_as_they_are_written() {
        // Goal: a peer that pushes without reading the answers cannot grow this side's queue
        // without bound. Method: queue answers to the bound, then one more; write one.
        let mut sender = PushSender::new(NodeId::new("a").unwrap());
        let ack = PushAck {
            poll: PollId::new("p").unwrap(),
            actor: actor("b"),
            durable_through: 1,
        };
        for _ in 0..PUSH_ANSWERS_QUEUED_MAX {
            sender.send_ack(ack.clone()).unwrap();
        }
        let refused = sender.send_ack(ack.clone()).map_err(|r| r.cause);
        assert_eq!(refused, Err("limit"));
        assert!(sender.poll_transmit().is_some());
        assert!(sender.send_ack(ack).is_ok());
    }

    #[test]
    fn a_push_stream_takes_only_the_peers_own_records_and_answers_about_this_node() {
        // Goal: a peer cannot push another node's records or answer about another node's.
        // Method: a receiver of b's pushes at a meets each kind of frame.
        let receiver = PushReceiver {
            own: NodeId::new("a").unwrap(),
            peer: NodeId::new("b").unwrap(),
        };
        let definition = DefinitionDigest([1; 16]);
        let push = |node| {
            wire::encode(&PeerMessage::Push {
                definition,
                batch: batch(node, 2),
            })
        };
        assert!(matches!(
            receiver.handle_frame(&push("b")),
            Ok(Pushed::Records { .. })
        ));
        assert!(receiver.handle_frame(&push("c")).is_err());
        let ack = |node| {
            wire::encode(&PeerMessage::PushAck(PushAck {
                poll: PollId::new("p").unwrap(),
                actor: actor(node),
                durable_through: 2,
            }))
        };
        assert!(matches!(
            receiver.handle_frame(&ack("a")),
            Ok(Pushed::Ack(_))
        ));
        assert!(receiver.handle_frame(&ack("b")).is_err());
        let clock = wire::encode(&PeerMessage::Agreement(Default::default()));
        assert!(receiver.handle_frame(&clock).is_err());
    }
}
