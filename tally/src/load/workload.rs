//! What `tally load` sends: fresh UUID v4 vote IDs with a random option, re-sends of earlier
//! vote IDs (retries), and the request bodies (one JSON vote, a JSON batch or a postcard
//! batch) — and how an answer maps back to each vote's [`Outcome`].
//!
//! Retries come from a bounded pool per node: a vote's ID enters the pool of the node it will
//! be retried at (the same node, or the next one with `--retry-other-node`) once its first
//! answer is in, and leaves it when it is re-sent, so each ID is retried at most once.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use http::StatusCode;
use rand::Rng;
use rand::rngs::StdRng;
use serde::Deserialize;

use super::check::Outcome;
use tally_client::api::{BatchResponse, BinaryBatch, BinaryVote};

/// Vote IDs waiting to be retried, per node; the oldest is dropped when a pool is full.
pub(super) const RETRY_POOL_IDS_MAX: usize = 65_536;

/// One vote to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Vote {
    /// The vote ID (UUID bytes).
    pub(super) vote_id: [u8; 16],
    /// Index into the run's option list.
    pub(super) option: u8,
    /// Whether this re-sends an earlier vote ID.
    pub(super) retry: bool,
}

/// A fresh vote: a random (version 4) UUID and a uniformly drawn option.
pub(super) fn fresh_vote(rng: &mut StdRng, options: usize) -> Vote {
    // Drawing IDs from the worker's seeded RNG instead of the OS per ID keeps the client cheap
    // and the run replayable; they are made as the client library makes them.
    let vote_id = tally_client::new_vote_id(rng);
    let option = rng.random_range(0..options.max(1));
    Vote {
        vote_id,
        option: u8::try_from(option).unwrap_or(u8::MAX),
        retry: false,
    }
}

/// Vote IDs (with their option) waiting to be retried at one node, oldest first.
type RetryPool = Mutex<VecDeque<([u8; 16], u8)>>;

/// The bounded retry pools, one per node.
#[derive(Debug)]
pub(super) struct RetryPools {
    pools: Vec<RetryPool>,
    other_node: bool,
}

impl RetryPools {
    /// Pools for `targets` nodes; with `other_node`, votes are retried at the next node.
    pub(super) fn new(targets: usize, other_node: bool) -> Self {
        Self {
            pools: (0..targets).map(|_| Mutex::new(VecDeque::new())).collect(),
            other_node: other_node && targets > 1,
        }
    }

    /// Offers the fresh votes just answered by node `sent_to` for a later retry.
    pub(super) fn offer(&self, sent_to: usize, votes: &[Vote]) {
        let destination = if self.other_node {
            (sent_to + 1) % self.pools.len()
        } else {
            sent_to
        };
        let Some(pool) = self.pools.get(destination) else {
            return;
        };
        let mut pool = pool.lock().unwrap_or_else(PoisonError::into_inner);
        for vote in votes.iter().filter(|v| !v.retry) {
            if pool.len() >= RETRY_POOL_IDS_MAX {
                pool.pop_front();
            }
            pool.push_back((vote.vote_id, vote.option));
        }
    }

    /// Moves up to `wanted` votes to retry at node `target` into `out`.
    pub(super) fn take(&self, target: usize, wanted: usize, out: &mut Vec<Vote>) {
        let Some(pool) = self.pools.get(target) else {
            return;
        };
        let mut pool = pool.lock().unwrap_or_else(PoisonError::into_inner);
        for _ in 0..wanted {
            let Some((vote_id, option)) = pool.pop_front() else {
                break;
            };
            out.push(Vote {
                vote_id,
                option,
                retry: true,
            });
        }
    }
}

/// How votes are put on the wire.
#[derive(Debug, Clone)]
pub(super) struct Encoding {
    /// Each option's name as a JSON string literal (quoted and escaped once, up front).
    pub(super) option_json: Vec<String>,
    /// Each option's index in the node's option list (for postcard batches).
    pub(super) option_index: Vec<u8>,
    /// Batches as postcard instead of JSON.
    pub(super) binary: bool,
}

impl Encoding {
    /// The body of `POST …/votes`: `{"option": …, "vote_id": …}`.
    pub(super) fn single(&self, vote: &Vote, body: &mut Vec<u8>) {
        let mut text = String::with_capacity(96);
        self.push_json_vote(vote, &mut text);
        body.clear();
        body.extend_from_slice(text.as_bytes());
    }

    /// The body of `POST …/votes/batch` and its content type.
    pub(super) fn batch(&self, votes: &[Vote], body: &mut Vec<u8>) -> &'static str {
        body.clear();
        if self.binary {
            let batch = BinaryBatch {
                votes: votes
                    .iter()
                    .map(|v| BinaryVote {
                        option: self
                            .option_index
                            .get(usize::from(v.option))
                            .copied()
                            .unwrap_or(0),
                        vote_id: v.vote_id,
                    })
                    .collect(),
            };
            // Encoding a Vec of plain structs into a Vec cannot fail (no I/O, no size limit).
            if let Ok(bytes) = postcard::to_allocvec(&batch) {
                *body = bytes;
            }
            tally_client::api::POSTCARD_MEDIA_TYPE
        } else {
            let mut text = String::with_capacity(16 + votes.len() * 80);
            text.push_str(r#"{"votes":["#);
            for (i, vote) in votes.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                self.push_json_vote(vote, &mut text);
            }
            text.push_str("]}");
            body.extend_from_slice(text.as_bytes());
            "application/json"
        }
    }

    fn push_json_vote(&self, vote: &Vote, text: &mut String) {
        let option = self
            .option_json
            .get(usize::from(vote.option))
            .map_or("\"\"", String::as_str);
        let mut id = uuid::Uuid::encode_buffer();
        let id = uuid::Uuid::from_bytes(vote.vote_id)
            .hyphenated()
            .encode_lower(&mut id);
        // Writing to a String cannot fail.
        let _ = write!(text, r#"{{"option":{option},"vote_id":"{id}"}}"#);
    }
}

#[derive(Deserialize)]
struct SingleAnswer<'a> {
    #[serde(borrow)]
    status: Cow<'a, str>,
}

#[derive(Deserialize)]
struct BatchAnswer<'a> {
    #[serde(borrow)]
    statuses: Vec<Cow<'a, str>>,
}

/// What one answered request says about its votes, and the error label if it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Answer {
    /// One outcome per vote, in order.
    pub(super) outcomes: Vec<Outcome>,
    /// Error labels to count (`"503"`, `"vote:overloaded"`, `"bad_response"`, …).
    pub(super) errors: Vec<String>,
}

fn outcome_of(status: &str) -> Option<Outcome> {
    match status {
        "counted" => Some(Outcome::Counted),
        "duplicate" => Some(Outcome::Duplicate),
        // An edge's: sent on, answer lost; it may have been counted.
        "unconfirmed" => Some(Outcome::Unknown),
        _ => None,
    }
}

/// A refusal's code, as sent.
#[derive(serde::Deserialize)]
struct RefusalCode<'a> {
    #[serde(borrow)]
    error: Cow<'a, str>,
}

/// Maps a response to per-vote outcomes. A non-200 status refuses every vote (the API
/// counts none of a refused request), except one that may follow a count (an edge's 503
/// `unconfirmed`, a node's 503 `not_replicated` under replicated acks: the votes are durable
/// somewhere, maybe counted: unknown); a 200 the client cannot read leaves them unknown.
/// `postcard`: the body is a postcard batch answer (the response said so).
pub(super) fn read_answer(
    status: StatusCode,
    postcard: bool,
    body: &[u8],
    votes: usize,
    batch: bool,
) -> Answer {
    let mut errors = Vec::new();
    if status != StatusCode::OK {
        // A refusal takes nothing, but for one that may follow a count: an edge's 503
        // `unconfirmed` (it sent the vote on and lost the answer), a node's 503
        // `not_replicated` (durable on the node, not acknowledged).
        let code = serde_json::from_slice::<RefusalCode<'_>>(body)
            .map(|r| r.error)
            .unwrap_or_default();
        let outcome = if tally_client::api::refusal_may_follow_a_count(&code) {
            errors.push(format!("{}:{code}", status.as_u16()));
            Outcome::Unknown
        } else {
            errors.push(status.as_u16().to_string());
            Outcome::Refused
        };
        return Answer {
            outcomes: vec![outcome; votes],
            errors,
        };
    }
    let statuses: Option<Vec<Cow<'_, str>>> = if batch && postcard {
        postcard::from_bytes::<BatchResponse>(body).ok().map(|a| {
            a.statuses
                .into_iter()
                .map(|s| Cow::Borrowed(s.as_str()))
                .collect()
        })
    } else if batch {
        serde_json::from_slice::<BatchAnswer<'_>>(body)
            .ok()
            .map(|a| a.statuses)
    } else {
        serde_json::from_slice::<SingleAnswer<'_>>(body)
            .ok()
            .map(|a| vec![a.status])
    };
    let Some(statuses) = statuses.filter(|s| s.len() == votes) else {
        errors.push("bad_response".to_owned());
        return Answer {
            outcomes: vec![Outcome::Unknown; votes],
            errors,
        };
    };
    let outcomes = statuses
        .iter()
        .map(|status| {
            outcome_of(status).unwrap_or_else(|| {
                errors.push(format!("vote:{status}"));
                Outcome::Refused
            })
        })
        .collect();
    Answer { outcomes, errors }
}

/// Whether an error body is replicated acks' `not_replicated`.
#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn encoding(binary: bool) -> Encoding {
        Encoding {
            option_json: vec![r#""green""#.into(), r#""blue""#.into()],
            option_index: vec![0, 1],
            binary,
        }
    }

    #[test]
    fn fresh_votes_are_version_4_uuids() {
        // Goal: realistic IDs. Method: check version and variant of a few.
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..100 {
            let vote = fresh_vote(&mut rng, 2);
            let uuid = uuid::Uuid::from_bytes(vote.vote_id);
            assert_eq!(uuid.get_version_num(), 4);
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
            assert!(vote.option < 2 && !vote.retry);
        }
    }

    #[test]
    fn bodies_parse_as_the_node_reads_them() {
        // Goal: the client speaks the node's API. Method: decode each body with the node's
        // own request types.
        let mut rng = StdRng::seed_from_u64(8);
        let votes: Vec<Vote> = (0..3).map(|_| fresh_vote(&mut rng, 2)).collect();
        let mut body = Vec::new();
        encoding(false).single(&votes[0], &mut body);
        let single: tally_client::api::VoteRequest = serde_json::from_slice(&body).unwrap();
        let id = uuid::Uuid::parse_str(single.vote_id.as_deref().unwrap()).unwrap();
        assert_eq!(id.into_bytes(), votes[0].vote_id);
        assert_eq!(encoding(false).batch(&votes, &mut body), "application/json");
        let json: tally_client::api::BatchRequest = serde_json::from_slice(&body).unwrap();
        assert_eq!(json.votes.len(), 3);
        encoding(true).batch(&votes, &mut body);
        let binary: BinaryBatch = postcard::from_bytes(&body).unwrap();
        assert_eq!(binary.votes[2].vote_id, votes[2].vote_id);
        assert_eq!(binary.votes[2].option, votes[2].option);
    }

    #[test]
    fn answers_map_to_outcomes_and_refusals_to_errors() {
        // Goal: every answer shape lands in the right bucket. Method: one of each.
        let ok = read_answer(
            StatusCode::OK,
            false,
            br#"{"status":"duplicate"}"#,
            1,
            false,
        );
        assert_eq!(ok.outcomes, vec![Outcome::Duplicate]);
        let batch = br#"{"counted":1,"statuses":["counted","overloaded"]}"#;
        let mixed = read_answer(StatusCode::OK, false, batch, 2, true);
        assert_eq!(mixed.outcomes, vec![Outcome::Counted, Outcome::Refused]);
        assert_eq!(mixed.errors, vec!["vote:overloaded".to_owned()]);
        // The same answer in postcard: counts, then a byte per status (1 duplicate, 4 overloaded).
        let compact = read_answer(StatusCode::OK, true, &[0, 1, 1, 2, 1, 4], 2, true);
        assert_eq!(compact.outcomes, vec![Outcome::Duplicate, Outcome::Refused]);
        assert_eq!(compact.errors, vec!["vote:overloaded".to_owned()]);
        let short = read_answer(StatusCode::OK, true, &[0, 1, 1, 2, 1], 2, true);
        assert_eq!(short.outcomes, vec![Outcome::Unknown; 2]);
        let shed = read_answer(StatusCode::SERVICE_UNAVAILABLE, false, b"{}", 2, true);
        assert_eq!(shed.outcomes, vec![Outcome::Refused; 2]);
        assert_eq!(shed.errors, vec!["503".to_owned()]);
        // Replicated acks' 503: durable on the node, not acknowledged, maybe counted.
        let body = br#"{"error":"not_replicated","message":"no ack peer confirmed"}"#;
        let unconfirmed = read_answer(StatusCode::SERVICE_UNAVAILABLE, false, body, 2, true);
        assert_eq!(unconfirmed.outcomes, vec![Outcome::Unknown; 2]);
        assert_eq!(unconfirmed.errors, vec!["503:not_replicated".to_owned()]);
        let garbled = read_answer(StatusCode::OK, false, b"nope", 1, false);
        assert_eq!(garbled.outcomes, vec![Outcome::Unknown]);
    }

    #[test]
    fn retry_pools_hand_each_id_out_once_and_to_the_next_node_when_asked() {
        // Goal: bounded, at-most-once retries, routed as configured. Method: offer and take.
        let mut rng = StdRng::seed_from_u64(9);
        let votes: Vec<Vote> = (0..4).map(|_| fresh_vote(&mut rng, 2)).collect();
        let pools = RetryPools::new(2, true);
        pools.offer(0, &votes);
        let mut out = Vec::new();
        pools.take(0, 10, &mut out);
        assert!(out.is_empty());
        pools.take(1, 10, &mut out);
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|v| v.retry));
        pools.offer(1, &out);
        out.clear();
        pools.take(0, 10, &mut out);
        assert!(out.is_empty(), "retries are not retried again");
    }
}
