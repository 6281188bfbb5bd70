//! Votes on their way: a [`PendingVote`] waits for its answer, a [`Batch`] carries some of one
//! poll's votes to one node at a time, remembering which nodes it has tried.

use tally_client::api::{BinaryBatch, BinaryVote};
use tally_core::VoteId;
use tally_serve::error::ApiError;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::VoteAnswer;
use crate::catalogue::PollSlot;

/// A vote waiting for its answer.
#[derive(Debug)]
pub(super) struct PendingVote {
    /// The option, as a position in the edge's option list of the poll.
    pub(super) option: u8,
    /// The vote ID.
    pub(super) vote_id: VoteId,
    /// When it arrived.
    pub(super) arrived: Instant,
    /// When it is answered 503 if no node has answered it.
    pub(super) deadline: Instant,
    /// Whether a batch holding it may have reached a node that took it (an answer was lost,
    /// or came back ambiguous): a refusal after that cannot say "not counted".
    pub(super) maybe_counted: bool,
    /// Where its answer goes; `None` once answered.
    pub(super) reply: Option<oneshot::Sender<VoteAnswer>>,
}

impl PendingVote {
    /// Answers the vote (once; later answers are ignored). Returns whether it was waiting.
    pub(super) fn answer(&mut self, answer: VoteAnswer) -> bool {
        match self.reply.take() {
            Some(reply) => {
                // The voter may have gone (its connection closed): nothing to tell then.
                let _ = reply.send(answer);
                true
            }
            None => false,
        }
    }

    /// Whether it still waits for an answer.
    pub(super) fn waiting(&self) -> bool {
        self.reply.is_some()
    }

    /// The answer when its deadline passes: `unconfirmed` if it may have been counted,
    /// `overloaded` (nothing was counted) if no node can have taken it.
    pub(super) fn expired(&self, deadline_ms: u64) -> VoteAnswer {
        VoteAnswer::Refused(if self.maybe_counted {
            ApiError::Unconfirmed(format!(
                "the edge sent the vote on, but no node's answer came within {deadline_ms} ms; \
                 it may have been counted: retry with the same vote ID"
            ))
        } else {
            ApiError::Overloaded(1)
        })
    }
}

/// Some votes of one poll, sent together.
#[derive(Debug)]
pub(super) struct Batch {
    /// The poll.
    pub(super) poll: PollSlot,
    /// The votes, in the order sent, which is the order they arrived in (a batch is cut from
    /// the front of its poll's buffer and never merged with another): their deadlines ascend.
    pub(super) votes: Vec<PendingVote>,
    /// Nodes tried since the last full round (bit `i`: node `i`).
    pub(super) tried: u32,
    /// Not sent before this (a pause after every node was tried).
    pub(super) not_before: Instant,
}

impl Batch {
    /// The earliest deadline of a vote still waiting (`None`: none waits): the first waiting
    /// vote's, as deadlines ascend (usually the first vote's: a look at one vote).
    pub(super) fn earliest_deadline(&self) -> Option<Instant> {
        self.votes.iter().find(|v| v.waiting()).map(|v| v.deadline)
    }

    /// Answers every waiting vote whose deadline is past; returns how many, by whether they
    /// may have been counted (`(unconfirmed, shed)`).
    pub(super) fn expire(&mut self, now: Instant, deadline_ms: u64) -> (u64, u64) {
        let (mut unconfirmed, mut shed) = (0, 0);
        for vote in self
            .votes
            .iter_mut()
            .filter(|v| v.waiting() && v.deadline <= now)
        {
            let answer = vote.expired(deadline_ms);
            if vote.answer(answer) {
                if vote.maybe_counted {
                    unconfirmed += 1;
                } else {
                    shed += 1;
                }
            }
        }
        (unconfirmed, shed)
    }

    /// Drops the votes answered already (before the batch is sent again).
    pub(super) fn keep_waiting(&mut self) {
        self.votes.retain(PendingVote::waiting);
    }

    /// The postcard body for a node whose option index of the edge's option `o` is
    /// `index_of(o)` (`u8::MAX`, which no poll has, when the node lacks the option: it then
    /// answers that vote `unknown_option`).
    pub(super) fn encode(&self, index_of: impl Fn(u8) -> Option<u8>) -> Vec<u8> {
        let votes = self
            .votes
            .iter()
            .map(|vote| BinaryVote {
                option: index_of(vote.option).unwrap_or(u8::MAX),
                vote_id: vote.vote_id.to_bytes(),
            })
            .collect();
        // Encoding bytes and arrays into a Vec cannot fail.
        postcard::to_allocvec(&BinaryBatch { votes }).unwrap_or_default()
    }
}
