//! `POST /v1/polls/{poll}/votes` at the edge: the node's route, checked at the door in the
//! node's order (per-IP limit, body within its deadline and size, content type, poll, vote
//! token, option and vote ID) so bad input gets the node's code and is never sent on; then
//! handed to the dispatcher and answered from a node's durable per-vote status.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use tally_client::api::{ANSWERED_BY_HEADER, VOTE_BODY_BYTES_MAX};
use tally_core::VoteId;
use tally_serve::connections::ClientAddr;
use tally_serve::error::ApiError;
use tally_serve::vote_answer::{ReceiptFields, vote_answer};
use tally_serve::votes::{IDEMPOTENCY_KEY_HEADER, parse_vote, require_content_type, token_vote_id};
use tokio::sync::oneshot;

use super::EdgeState;
use crate::dispatch::{VoteAnswer, VoteOrder};

/// How long past its deadline a batch request's handler waits for the dispatcher (which
/// answers every vote by its deadline) before it answers the rest `unconfirmed` itself, in ms
/// (one timer per batch request; a single vote's handler needs none: see [`vote`]).
pub(crate) const ANSWER_GRACE_MS: u64 = 1_000;

/// The header a trusted proxy names the client in.
pub(crate) const FORWARDED_FOR_HEADER: &str = "x-forwarded-for";

/// Cast one vote: answered once a node has made it durable (`counted`, with the node's
/// receipt) or had it already (`duplicate`).
pub(super) async fn vote(
    State(edge): State<Arc<EdgeState>>,
    Path(poll): Path<String>,
    request: Request,
) -> Response {
    let _waiting = match super::enter(&edge, &edge.door.votes) {
        Ok(permit) => permit,
        Err(shed) => return shed.into_response(),
    };
    let (vote_id, answer) = match door(&edge, &poll, request).await {
        Ok(order) => order,
        Err(refusal) => {
            edge.metrics.rejected(refusal.code());
            return refusal.into_response();
        }
    };
    // No timer of the handler's own: the dispatcher answers every vote it holds by the vote's
    // deadline (one timer for all of them, [`crate::dispatch`]), and holds the only sender of
    // its answer, so a dispatcher gone (a panic, or aborted past the drain deadline) ends the
    // wait at once. (A per-vote timeout here cost ~0.3 µs of the edge's CPU per vote:
    // BENCHMARKS.md, "Edge: single votes through `tally edge`".)
    let answer = match answer.await {
        Ok(answer) => answer,
        // The vote may have gone on.
        Err(_) => VoteAnswer::Refused(ApiError::Unconfirmed(
            "the edge lost track of the vote; it may have been counted: retry with the same \
             vote ID"
                .into(),
        )),
    };
    let (receipt, node) = match answer {
        VoteAnswer::Counted {
            actor,
            seq,
            second,
            node,
        } => (Some(ReceiptFields { actor, seq, second }), node),
        VoteAnswer::Duplicate { node } => (None, node),
        VoteAnswer::Refused(refusal) => return refusal.into_response(),
    };
    let mut response = vote_answer(vote_id, receipt);
    if let Ok(node) = HeaderValue::from_str(&node) {
        response.headers_mut().insert(ANSWERED_BY_HEADER, node);
    }
    response
}

/// Every check a node makes before its engine sees a vote, in the node's order; then the
/// vote is handed to the dispatcher. Returns its ID and where its answer will come.
async fn door(
    edge: &EdgeState,
    poll: &str,
    request: Request,
) -> Result<(VoteId, oneshot::Receiver<VoteAnswer>), ApiError> {
    limit_by_ip(edge, &request)?;
    let (headers, body) =
        tally_serve::body::split(request, VOTE_BODY_BYTES_MAX, edge.body_read_timeout);
    let body = body.read().await.map_err(ApiError::from_body_failure)?;
    require_content_type(&headers, &["application/json"])?;
    let catalogue = edge.dispatch.catalogue.borrow().clone();
    let poll = catalogue
        .polls
        .get(poll)
        .ok_or_else(|| ApiError::UnknownPoll(poll.to_owned()))?;
    let (option, vote_id) = parse(edge, &poll.id, &poll.options, &headers, &body)?;
    check_serving(edge)?;
    let (reply, answer) = oneshot::channel();
    let order = VoteOrder {
        poll: poll.slot,
        option: option.0,
        vote_id,
        reply,
    };
    edge.dispatch.orders.try_send(order).map_err(|e| match e {
        tokio::sync::mpsc::error::TrySendError::Full(_) => ApiError::Overloaded(1),
        tokio::sync::mpsc::error::TrySendError::Closed(_) => {
            ApiError::Unavailable("the edge is stopping")
        }
    })?;
    Ok((vote_id, answer))
}

/// 429 when the request's client is over the per-IP limit (nothing changes).
pub(super) fn limit_by_ip(edge: &EdgeState, request: &Request) -> Result<(), ApiError> {
    if let Some(limiter) = &edge.abuse.per_ip {
        if let Some(client) = client_ip(edge, request) {
            limiter
                .check(client, edge.clock.now())
                .map_err(ApiError::RateLimited)?;
        }
    }
    Ok(())
}

/// 503 when the edge cannot take votes now: it is stopping, or no node can take them.
pub(super) fn check_serving(edge: &EdgeState) -> Result<(), ApiError> {
    if *edge.stopping.borrow() {
        return Err(ApiError::Unavailable("the edge is stopping"));
    }
    if edge.dispatch.availability.nodes() == 0 {
        return Err(ApiError::Unavailable(
            "no node can take votes now (none is ready with its breaker closed)",
        ));
    }
    Ok(())
}

fn parse(
    edge: &EdgeState,
    poll: &tally_core::PollId,
    options: &[String],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(tally_core::OptionIndex, VoteId), ApiError> {
    let now = edge.clock.now();
    let voter = token_vote_id(&edge.abuse, &edge.vote_id_key, now, poll, headers)?;
    parse_vote(
        &edge.vote_id_key,
        body,
        options,
        headers.get(IDEMPOTENCY_KEY_HEADER),
        voter,
    )
}

/// The client's address: the connection's, or, from a trusted proxy, the one its
/// `X-Forwarded-For` names. `None` off a socket (the simulation's network, oneshot tests).
fn client_ip(edge: &EdgeState, request: &Request) -> Option<IpAddr> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .and_then(|info| info.0.0)?
        .ip();
    if edge.trusted_proxies.is_empty() {
        return Some(peer);
    }
    let forwarded: Vec<&str> = request
        .headers()
        .get_all(FORWARDED_FOR_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    Some(edge.trusted_proxies.client_ip(peer, &forwarded))
}
