//! What a batch's outcome means for its votes and for the node that had it: per-vote answers
//! from the node's durable statuses, a refusal of the whole batch that speaks for every vote,
//! or "send these votes elsewhere" (and whether they may have been counted meanwhile). Pure:
//! it reads the answer and decides; the dispatcher carries the decision out.

use std::sync::Arc;

use tally_client::api::{BatchVoteStatus, ReceiptedBatchResponse, refusal_may_follow_a_count};
use tally_serve::error::ApiError;

use crate::upstream::Exchanged;

/// What one vote of an answered batch gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum VoteVerdict {
    /// Counted by the node, durable, recorded as this receipt says.
    Counted {
        /// The actor, `node#incarnation`.
        actor: Arc<str>,
        /// Its seq.
        seq: u64,
        /// Its poll second.
        second: u32,
        /// The node (its ID).
        node: Arc<str>,
    },
    /// Seen before by the node (the earlier vote is durable).
    Duplicate {
        /// The node (its ID).
        node: Arc<str>,
    },
    /// The node has no such option.
    UnknownOption,
    /// Not taken now (the node was overloaded): send it again.
    Resend,
}

/// What a batch's outcome means.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Verdict {
    /// The node answered every vote.
    Answered(Vec<VoteVerdict>),
    /// The node refused the whole batch for good (the poll is not open): every vote gets this
    /// answer (nothing of the batch was counted there).
    Refused(ApiError),
    /// The node has no such poll: another node may.
    UnknownPoll,
    /// Nothing to say of the votes: send them to another node. `maybe_counted`: the node may
    /// have counted them (an answer was lost); `why`: for the log.
    Resend {
        /// Whether the node may have counted them.
        maybe_counted: bool,
        /// What happened.
        why: String,
    },
}

impl Verdict {
    /// Whether the outcome speaks against the node's health (its breaker counts it).
    pub(super) fn node_failed(&self) -> bool {
        matches!(self, Self::Resend { .. })
    }
}

/// The verdict on a batch of `votes` votes sent to `node` that came to `exchanged`.
pub(super) fn judge(node: &str, votes: usize, exchanged: Exchanged) -> Verdict {
    match exchanged {
        Exchanged::Answered { status: 200, body } => answered(node, votes, &body),
        Exchanged::Answered { status, body } => refused(node, status, &body),
        Exchanged::NotSent(why) => Verdict::Resend {
            maybe_counted: false,
            why,
        },
        Exchanged::Lost(why) => Verdict::Resend {
            maybe_counted: true,
            why,
        },
    }
}

fn answered(node: &str, votes: usize, body: &[u8]) -> Verdict {
    let broken = |what: String| Verdict::Resend {
        maybe_counted: true,
        why: format!("{node} answered a batch of {votes} votes with {what}"),
    };
    let answer: ReceiptedBatchResponse = match postcard::from_bytes(body) {
        Ok(answer) => answer,
        Err(e) => return broken(format!("an undecodable body ({e})")),
    };
    let statuses = &answer.batch.statuses;
    let counted = statuses
        .iter()
        .filter(|s| **s == BatchVoteStatus::Counted)
        .count();
    if statuses.len() != votes || answer.receipts.len() != counted {
        return broken(format!(
            "{} statuses and {} receipts for {counted} counted",
            statuses.len(),
            answer.receipts.len()
        ));
    }
    let actors: Vec<Arc<str>> = answer
        .actors
        .iter()
        .map(|a| Arc::from(a.as_str()))
        .collect();
    if answer.answered_by.len() != votes {
        return broken(format!("{} answered_by entries", answer.answered_by.len()));
    }
    let nodes: Vec<Arc<str>> = answer.nodes.iter().map(|n| Arc::from(n.as_str())).collect();
    let mut receipts = answer.receipts.iter();
    let mut verdicts = Vec::with_capacity(votes);
    for (status, by) in statuses.iter().zip(&answer.answered_by) {
        let durable = matches!(
            status,
            BatchVoteStatus::Counted | BatchVoteStatus::Duplicate
        );
        let node: Arc<str> = match nodes.get(usize::from(*by)) {
            Some(node) => node.clone(),
            None if !durable => Arc::from(""),
            None => return broken(format!("a durable vote answered by node #{by}")),
        };
        verdicts.push(match status {
            BatchVoteStatus::Counted => {
                let Some(receipt) = receipts.next() else {
                    return broken("fewer receipts than counted votes".into());
                };
                let Some(actor) = actors.get(usize::from(receipt.actor)) else {
                    return broken(format!("a receipt naming actor {}", receipt.actor));
                };
                VoteVerdict::Counted {
                    actor: actor.clone(),
                    seq: receipt.seq,
                    second: receipt.second,
                    node,
                }
            }
            BatchVoteStatus::Duplicate => VoteVerdict::Duplicate { node },
            BatchVoteStatus::UnknownOption => VoteVerdict::UnknownOption,
            // A 16-byte ID is never a bad one; should a node say so, another may not. A node
            // never answers `unconfirmed` (an edge's status); read as "not taken".
            BatchVoteStatus::BadVoteId
            | BatchVoteStatus::Overloaded
            | BatchVoteStatus::Unconfirmed => VoteVerdict::Resend,
        });
    }
    Verdict::Answered(verdicts)
}

fn refused(node: &str, status: u16, body: &[u8]) -> Verdict {
    let refusal = serde_json::from_slice::<RawRefusal>(body).ok();
    let code = refusal.as_ref().map_or("", |r| r.error.as_str());
    let message = refusal.as_ref().map_or("", |r| r.message.as_str());
    match (status, code) {
        (409, "poll_not_open") => {
            Verdict::Refused(ApiError::PollNotOpen(if message.contains("closed") {
                "closed"
            } else {
                "not open yet"
            }))
        }
        (404, "unknown_poll") => Verdict::UnknownPoll,
        // Sheds, holds, a disputed poll: nothing was counted there, but for a refusal that
        // follows a count (`not_replicated`: counted here, not yet at a peer).
        (429 | 503, code) => Verdict::Resend {
            maybe_counted: refusal_may_follow_a_count(code),
            why: format!("{node} refused a batch: {status} {code}"),
        },
        // A 4xx refuses the request before any vote is taken (a wrong batch token, say); a
        // 5xx of a proxy in between may follow a count.
        (status, code) => Verdict::Resend {
            maybe_counted: status >= 500,
            why: format!("{node} refused a batch: {status} {code} {message}"),
        },
    }
}

/// A node's error body (`tally_client::api::ErrorBody`) with its code as sent (a code this edge does not know still reads).
#[derive(serde::Deserialize)]
struct RawRefusal {
    error: String,
    message: String,
}

#[cfg(test)]
mod tests {
    //! Goal: each kind of outcome reads as the edge must treat it. Method: answers built as a
    //! node writes them.

    use super::*;
    use bytes::Bytes;
    use tally_client::api::{BatchReceipt, BatchResponse};

    fn answer(statuses: Vec<BatchVoteStatus>, receipts: Vec<BatchReceipt>) -> Exchanged {
        let answered_by = statuses
            .iter()
            .map(|s| match s {
                BatchVoteStatus::Counted | BatchVoteStatus::Duplicate => 0,
                _ => tally_client::api::NOT_ANSWERED_BY_A_NODE,
            })
            .collect();
        let body = ReceiptedBatchResponse {
            nodes: vec!["us-east".into()],
            answered_by,
            batch: BatchResponse {
                counted: 0,
                duplicate: 0,
                rejected: 0,
                statuses,
            },
            actors: vec!["us-east#7".into()],
            receipts,
        };
        Exchanged::Answered {
            status: 200,
            body: Bytes::from(postcard::to_allocvec(&body).unwrap()),
        }
    }

    fn refusal(status: u16, code: &str, message: &str) -> Exchanged {
        let body = serde_json::json!({"error": code, "message": message}).to_string();
        Exchanged::Answered {
            status,
            body: Bytes::from(body),
        }
    }

    #[test]
    fn a_node_answer_gives_each_vote_its_own_status_and_receipt() {
        use BatchVoteStatus::*;
        let receipt = BatchReceipt {
            actor: 0,
            seq: 41,
            second: 3,
        };
        let verdict = judge(
            "n",
            4,
            answer(
                vec![Counted, Duplicate, Overloaded, UnknownOption],
                vec![receipt],
            ),
        );
        assert_eq!(
            verdict,
            Verdict::Answered(vec![
                VoteVerdict::Counted {
                    actor: Arc::from("us-east#7"),
                    seq: 41,
                    second: 3,
                    node: Arc::from("us-east"),
                },
                VoteVerdict::Duplicate {
                    node: Arc::from("us-east")
                },
                VoteVerdict::Resend,
                VoteVerdict::UnknownOption,
            ])
        );
        assert!(!verdict.node_failed());
    }

    #[test]
    fn a_broken_answer_is_resent_as_possibly_counted() {
        use BatchVoteStatus::*;
        for broken in [
            answer(vec![Counted], vec![]),
            answer(vec![Duplicate], vec![]),
            Exchanged::Answered {
                status: 200,
                body: Bytes::from_static(b"junk"),
            },
        ] {
            let verdict = judge("n", 2, broken);
            assert!(
                matches!(
                    verdict,
                    Verdict::Resend {
                        maybe_counted: true,
                        ..
                    }
                ),
                "{verdict:?}"
            );
        }
    }

    #[test]
    fn refusals_say_whether_votes_may_have_been_counted() {
        let resend = |e| match judge("n", 1, e) {
            Verdict::Resend { maybe_counted, .. } => Some(maybe_counted),
            _ => None,
        };
        assert_eq!(resend(refusal(503, "overloaded", "x")), Some(false));
        assert_eq!(resend(refusal(503, "poll_disputed", "x")), Some(false));
        assert_eq!(resend(refusal(503, "not_replicated", "x")), Some(true));
        assert_eq!(resend(refusal(401, "unauthorized", "x")), Some(false));
        assert_eq!(resend(refusal(502, "", "")), Some(true));
        assert_eq!(resend(Exchanged::NotSent("x".into())), Some(false));
        assert_eq!(resend(Exchanged::Lost("x".into())), Some(true));
        assert_eq!(
            judge("n", 1, refusal(409, "poll_not_open", "poll is closed")),
            Verdict::Refused(ApiError::PollNotOpen("closed"))
        );
        assert_eq!(
            judge("n", 1, refusal(404, "unknown_poll", "x")),
            Verdict::UnknownPoll
        );
    }
}
