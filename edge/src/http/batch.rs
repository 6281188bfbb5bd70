//! `POST /v1/polls/{poll}/votes/batch` at the edge: the node's batch route (JSON or postcard,
//! the same limits, the same per-vote statuses, receipts with `?receipts=true`), for callers
//! that gather votes themselves (an SMS gateway, a partner's backend, the simulation's bulk
//! voters). Each vote joins the single votes in the dispatcher and is answered from a node's
//! durable status; a vote sent on whose answer did not come by its deadline is answered
//! `unconfirmed` (may have been counted: send it again), one never sent on `overloaded`.
//!
//! Credentials: like a node's, batches need the bearer token `batch_token` whenever the
//! edge has one or vote tokens are on (a batch carries no vote tokens; it must come from
//! the operator's own systems).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use tally_client::api::{
    BATCH_BODY_BYTES_MAX, BatchReceipt, BatchResponse, BatchVoteStatus, NOT_ANSWERED_BY_A_NODE,
    POSTCARD_MEDIA_TYPE, ReceiptedBatchResponse,
};
use tally_serve::error::ApiError;
use tally_serve::votes::{
    Parsed, accepts_postcard, encode_answer, parse_binary, parse_json, require_content_type,
    wants_receipts,
};
use tokio::sync::oneshot;

use super::EdgeState;
use super::vote::ANSWER_GRACE_MS;
use crate::dispatch::{VoteAnswer, VoteOrder};

/// Batch requests an edge answers at once; more are shed with 503 at once.
pub const BATCHES_IN_FLIGHT_MAX: usize = 64;

/// Cast many votes for one poll.
pub(super) async fn batch(
    State(edge): State<Arc<EdgeState>>,
    Path(poll): Path<String>,
    request: Request,
) -> Response {
    let _waiting = match super::enter(&edge, &edge.door.batches) {
        Ok(permit) => permit,
        Err(shed) => return shed.into_response(),
    };
    let receipts = wants_receipts(request.uri());
    let (headers, votes) = match door(&edge, &poll, request).await {
        Ok(taken) => taken,
        Err(refusal) => {
            edge.metrics.rejected(refusal.code());
            return refusal.into_response();
        }
    };
    let waited = edge.vote_deadline + Duration::from_millis(ANSWER_GRACE_MS);
    let deadline = tokio::time::Instant::now() + waited;
    let mut answers = Vec::with_capacity(votes.len());
    for vote in votes {
        answers.push(match vote {
            Taken::Refused(status) => Err(status),
            Taken::Waiting(answer) => match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) | Err(_) => Err(BatchVoteStatus::Unconfirmed),
            },
        });
    }
    if let Some(refusal) = refused_whole(&answers) {
        return refusal.into_response();
    }
    let answer = receipted(answers);
    let postcard = accepts_postcard(&headers);
    if receipts {
        encode_answer(&answer, postcard)
    } else {
        encode_answer(&answer.batch, postcard)
    }
}

/// A vote of the batch as the door left it.
enum Taken {
    /// Refused on its own, never sent on.
    Refused(BatchVoteStatus),
    /// With the dispatcher; its answer comes here.
    Waiting(oneshot::Receiver<VoteAnswer>),
}

/// Every check a node makes of a batch, in its order; then each vote to the dispatcher.
async fn door(
    edge: &EdgeState,
    poll: &str,
    request: Request,
) -> Result<(HeaderMap, Vec<Taken>), ApiError> {
    super::vote::limit_by_ip(edge, &request)?;
    require_batch_credential(edge, request.headers())?;
    let (headers, body) =
        tally_serve::body::split(request, BATCH_BODY_BYTES_MAX, edge.body_read_timeout);
    let body = body.read().await.map_err(ApiError::from_body_failure)?;
    let media_type = require_content_type(&headers, &["application/json", POSTCARD_MEDIA_TYPE])
        .map_err(|_| {
            ApiError::UnsupportedMediaType("application/json or application/x-postcard")
        })?;
    let catalogue = edge.dispatch.catalogue.borrow().clone();
    let poll = catalogue
        .polls
        .get(poll)
        .ok_or_else(|| ApiError::UnknownPoll(poll.to_owned()))?;
    let parsed = if media_type == POSTCARD_MEDIA_TYPE {
        parse_binary(&body, &poll.options)?
    } else {
        parse_json(&edge.vote_id_key, &body, &poll.options)?
    };
    super::vote::check_serving(edge)?;
    let taken = parsed
        .into_iter()
        .map(|vote| match vote {
            Parsed::Refused(status) => Taken::Refused(status),
            Parsed::Vote(option, vote_id) => {
                let (reply, answer) = oneshot::channel();
                let order = VoteOrder {
                    poll: poll.slot,
                    option: option.0,
                    vote_id,
                    reply,
                };
                match edge.dispatch.orders.try_send(order) {
                    Ok(()) => Taken::Waiting(answer),
                    // The edge is full (or stopping): this vote was not sent on.
                    Err(_) => Taken::Refused(BatchVoteStatus::Overloaded),
                }
            }
        })
        .collect();
    Ok((headers, taken))
}

/// Batches need the batch token when the edge has one, and (as on a node) whenever vote
/// tokens are on.
fn require_batch_credential(edge: &EdgeState, headers: &HeaderMap) -> Result<(), ApiError> {
    if edge.batch_token.is_empty() && edge.abuse.tokens.is_none() {
        return Ok(());
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let matches = presented.len() == edge.batch_token.len()
        && presented
            .bytes()
            .zip(edge.batch_token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if edge.batch_token.is_empty() || !matches {
        return Err(ApiError::Unauthorized);
    }
    Ok(())
}

/// One refusal for the whole batch, as a node gives it, when no vote was taken and every
/// vote met the same poll-level refusal (the poll is not open, or no node knows it).
fn refused_whole(answers: &[Result<VoteAnswer, BatchVoteStatus>]) -> Option<ApiError> {
    let first = match answers.first()? {
        Ok(VoteAnswer::Refused(
            refusal @ (ApiError::PollNotOpen(_) | ApiError::UnknownPoll(_)),
        )) => refusal,
        _ => return None,
    };
    answers
        .iter()
        .all(|a| matches!(a, Ok(VoteAnswer::Refused(r)) if r == first))
        .then(|| first.clone())
}

/// The per-vote answer with receipts (and which node made each vote durable).
fn receipted(answers: Vec<Result<VoteAnswer, BatchVoteStatus>>) -> ReceiptedBatchResponse {
    let mut response = ReceiptedBatchResponse {
        batch: BatchResponse {
            counted: 0,
            duplicate: 0,
            rejected: 0,
            statuses: Vec::with_capacity(answers.len()),
        },
        actors: Vec::new(),
        receipts: Vec::new(),
        nodes: Vec::new(),
        answered_by: Vec::with_capacity(answers.len()),
    };
    for answer in answers {
        let (status, node) = match answer {
            Err(status) => (status, None),
            Ok(VoteAnswer::Counted {
                actor,
                seq,
                second,
                node,
            }) => {
                let actor = position(&mut response.actors, &actor);
                response.receipts.push(BatchReceipt { actor, seq, second });
                (BatchVoteStatus::Counted, Some(node))
            }
            Ok(VoteAnswer::Duplicate { node }) => (BatchVoteStatus::Duplicate, Some(node)),
            Ok(VoteAnswer::Refused(refusal)) => (status_of(&refusal), None),
        };
        match status {
            BatchVoteStatus::Counted => response.batch.counted += 1,
            BatchVoteStatus::Duplicate => response.batch.duplicate += 1,
            _ => response.batch.rejected += 1,
        }
        response.batch.statuses.push(status);
        let by = node.map_or(NOT_ANSWERED_BY_A_NODE, |node| {
            position(&mut response.nodes, &node)
        });
        response.answered_by.push(by);
    }
    response
}

/// A refused vote's status in a batch answer.
fn status_of(refusal: &ApiError) -> BatchVoteStatus {
    match refusal {
        ApiError::UnknownOption(_) => BatchVoteStatus::UnknownOption,
        ApiError::BadVoteId(_) => BatchVoteStatus::BadVoteId,
        ApiError::Unconfirmed(_) => BatchVoteStatus::Unconfirmed,
        // Not counted (shed, the poll closed meanwhile, …): send it again later.
        _ => BatchVoteStatus::Overloaded,
    }
}

/// The position of `name` in `names`, added if new (a batch names a few actors and nodes).
fn position(names: &mut Vec<String>, name: &str) -> u8 {
    if let Some(at) = names.iter().position(|n| n == name) {
        return u8::try_from(at).unwrap_or(u8::MAX);
    }
    names.push(name.to_owned());
    u8::try_from(names.len() - 1).unwrap_or(u8::MAX)
}
