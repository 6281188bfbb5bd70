//! Voting routes: one vote, and batches for edge aggregators (JSON or compact postcard).
//!
//! A vote is answered only once it is durable: `counted` if its vote ID is new, `duplicate` if
//! it was seen before (then the earlier vote is durable too). The vote ID comes in the body or
//! as an `Idempotency-Key` header: a UUID as sent, or any other key of up to 128 bytes.

use std::future::Future;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use tally_core::{ActorText, OptionIndex, PollId, VoteId, VoteIdKey};
use tokio::sync::oneshot;

use super::body::TimelyBody;
use super::{ApiError, AppState, SharedState};
use crate::config::{BATCH_BODY_BYTES_MAX, BATCH_VOTES_MAX, VOTE_BODY_BYTES_MAX};
use crate::engine::{BatchVoteAck, Command, VoteAck};
use crate::results::PollSnapshot;
use tally_client::api::NOT_ANSWERED_BY_A_NODE;
use tally_client::api::{
    BatchReceipt, BatchRequest, BatchResponse, BatchVoteStatus, BinaryBatch, ErrorBody,
    POSTCARD_MEDIA_TYPE, ReceiptedBatchResponse, VoteRequest, VoteResponse, VoteStatus,
};
use tally_serve::vote_answer::{ReceiptFields, vote_answer};
pub(super) use tally_serve::votes::check_count;
pub(super) use tally_serve::votes::require_content_type;
use tally_serve::votes::{
    IDEMPOTENCY_KEY_HEADER, Parsed, accepts_postcard, encode_answer, parse_binary, parse_json,
    parse_vote, token_vote_id, wants_receipts,
};

// The OpenAPI text of the routes below quotes these limits: change it with them.
const _: () = assert!(
    VOTE_BODY_BYTES_MAX == 4 * 1024
        && BATCH_BODY_BYTES_MAX == 2 * 1024 * 1024
        && BATCH_VOTES_MAX == 10_000
);

pub(super) fn poll_snapshot(
    app: &AppState,
    poll: &str,
) -> Result<(PollId, std::sync::Arc<PollSnapshot>), ApiError> {
    let unknown = || ApiError::UnknownPoll(poll.to_owned());
    let id = PollId::new(poll).map_err(|_| unknown())?;
    let snapshot = app
        .results
        .borrow()
        .polls
        .get(&id)
        .cloned()
        .ok_or_else(unknown)?;
    Ok((id, snapshot))
}

/// Sends a command to the engine, shedding load with 503 when its queue is full.
pub(super) async fn ask<T>(
    app: &AppState,
    command: impl FnOnce(oneshot::Sender<Result<T, crate::engine::EngineError>>) -> Command,
) -> Result<T, ApiError> {
    let (reply, answer) = oneshot::channel();
    match app.engine.try_send(command(reply)) {
        Ok(()) => {}
        // Not counted here: the vote routes count their refusals (this one too), and an admin
        // change is no vote.
        Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
            return Err(ApiError::Overloaded(1));
        }
        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
            return Err(ApiError::Unavailable("the node is stopping"));
        }
    }
    answer
        .await
        .map_err(|_| ApiError::Unavailable("the node is stopping"))?
        .map_err(ApiError::from)
}

/// Cast one vote.
///
/// Answered once the vote is durable (fsynced): `counted` if its vote ID is new to this poll,
/// `duplicate` if it was seen before. Retrying with the same vote ID is always safe.
#[utoipa::path(
    post,
    path = "/v1/polls/{poll}/votes",
    tag = "votes",
    params(
        ("poll" = String, Path, description = "The poll's name", example = "superbowl"),
        ("Idempotency-Key" = Option<String>, Header,
            description = "The vote ID, if the body has none"),
    ),
    request_body(content = VoteRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Durable: counted or duplicate", body = VoteResponse),
        (status = 400, description = "The body is not valid JSON for this route", body = ErrorBody),
        (status = 401, description = "Vote tokens are on and the X-Vote-Token header is \
            missing, forged, for another poll, or expired; nothing was counted", body = ErrorBody),
        (status = 404, description = "No such poll", body = ErrorBody),
        (status = 408, description = "The body did not arrive within body_read_timeout_ms of \
            the headers; nothing was counted", body = ErrorBody),
        (status = 409, description = "The poll is not open yet, or closed", body = ErrorBody),
        (status = 413, description = "The body is over 4 KiB", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
        (status = 422, description = "Unknown option, or a missing, empty or over-long vote ID",
            body = ErrorBody),
        (status = 429, description = "Over the per-IP or per-voter rate limit; nothing was \
            counted", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
        (status = 503, description = "Shedding load, stopping, held (low disk, a skewed clock), \
            or `poll_disputed`: this node defines the poll otherwise than the cluster; nothing \
            was counted: retry here later or at another node",
            body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ),
)]
pub(super) fn vote(
    State(app): State<SharedState>,
    Path(poll): Path<String>,
    request: Request,
) -> impl Future<Output = Result<Response, ApiError>> {
    // Split before anything is awaited, so the future (which axum boxes for every vote) holds
    // the headers and the body being read, not the request besides (see `body`).
    let (headers, body) = TimelyBody::<VOTE_BODY_BYTES_MAX>::split(request, &app);
    async move {
        let body = TimelyBody::read(body).await;
        let result = vote_inner(&app, &poll, &headers, body).await;
        match &result {
            Ok((_, ack)) => app.metrics.count_votes(ack_status(ack).as_str(), 1),
            Err(error) => app.metrics.count_rejections(error.code(), 1),
        }
        let (vote_id, ack) = result?;
        let receipt = match ack {
            VoteAck::Counted {
                seq,
                second,
                incarnation,
            } => Some(ReceiptFields {
                actor: ActorText(&app.node, incarnation),
                seq,
                second,
            }),
            VoteAck::Duplicate => None,
        };
        Ok(vote_answer(vote_id, receipt))
    }
}

/// A vote's status as its ack says.
fn ack_status(ack: &VoteAck) -> VoteStatus {
    match ack {
        VoteAck::Counted { .. } => VoteStatus::Counted,
        VoteAck::Duplicate => VoteStatus::Duplicate,
    }
}

async fn vote_inner(
    app: &AppState,
    poll: &str,
    headers: &HeaderMap,
    body: TimelyBody<VOTE_BODY_BYTES_MAX>,
) -> Result<(VoteId, VoteAck), ApiError> {
    let body = body.bytes()?;
    require_content_type(headers, &["application/json"])?;
    let (poll, snapshot) = poll_snapshot(app, poll)?;
    let voter_vote_id = token_vote_id(
        &app.abuse,
        &app.vote_id_key,
        app.clock.now(),
        &poll,
        headers,
    )?;
    let (option, vote_id) = parse_vote(
        &app.vote_id_key,
        &body,
        &snapshot.option_names,
        headers.get(IDEMPOTENCY_KEY_HEADER),
        voter_vote_id,
    )?;
    let ack = ask(app, |reply| Command::Vote {
        poll,
        option,
        vote_id,
        reply,
    })
    .await?;
    Ok((vote_id, ack))
}

/// Batches come from the operator's edges, not from voters, once the node says so: with a
/// batch token configured they need it (or the admin token), and with vote tokens on they
/// need one of the two (only the admin token, without a batch token). Otherwise anyone may
/// post them, as before edges existed.
fn require_aggregator(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if app.batch_token.is_empty() && app.abuse.tokens.is_none() {
        return Ok(());
    }
    if super::admin_token::presents_batch_token(app, headers) {
        return Ok(());
    }
    super::admin_token::authorize(app, headers)
}

/// Cast many votes for one poll (edge aggregators).
///
/// Up to 10,000 votes, as JSON or as a compact postcard body (`application/x-postcard`,
/// `BinaryBatch`: option indexes and 16-byte vote IDs). Answered once every vote counted is
/// durable, with a status per vote in the order sent. A poll-level refusal (unknown poll, poll
/// not open) refuses the whole batch, and then no vote of it was counted. With the query
/// `receipts=true` (the edge tier's) the answer is a `ReceiptedBatchResponse`: the same
/// statuses, and a receipt for each vote counted.
#[utoipa::path(
    post,
    path = "/v1/polls/{poll}/votes/batch",
    tag = "votes",
    params(("poll" = String, Path, description = "The poll's name", example = "superbowl")),
    request_body(content(
        (BatchRequest = "application/json"),
        (BinaryBatch = "application/x-postcard"),
    )),
    responses(
        (status = 200, description = "Every vote answered; see `statuses`. JSON, or postcard \
            when `Accept` names application/x-postcard (one byte per status: 0 counted, \
            1 duplicate, 2 unknown_option, 3 bad_vote_id, 4 overloaded)", content(
            (BatchResponse = "application/json"),
            (BatchResponse = "application/x-postcard"),
        )),
        (status = 400, description = "The body does not parse as the content type says",
            body = ErrorBody),
        (status = 401, description = "A batch token is configured, or vote tokens are on, and \
            neither the batch token nor the admin token came as the bearer token (batches \
            then come only from the operator's edges)", body = ErrorBody),
        (status = 404, description = "No such poll", body = ErrorBody),
        (status = 408, description = "The body did not arrive within body_read_timeout_ms of \
            the headers; nothing was counted", body = ErrorBody),
        (status = 409, description = "The poll is not open yet, or closed; nothing was counted",
            body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB, or holds over 10,000 votes",
            body = ErrorBody),
        (status = 415, description = "Content-Type is neither application/json nor \
            application/x-postcard", body = ErrorBody),
        (status = 429, description = "Over the per-IP rate limit; nothing was counted",
            body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
        (status = 503, description = "Shedding load, stopping, held (low disk, a skewed clock), \
            or `poll_disputed`: this node defines the poll otherwise than the cluster; nothing \
            was counted: retry here later or at another node",
            body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ),
)]
pub(super) async fn batch(
    State(app): State<SharedState>,
    Path(poll): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let receipts = wants_receipts(request.uri());
    let (headers, body) = TimelyBody::<BATCH_BODY_BYTES_MAX>::split(request, &app);
    let body = TimelyBody::read(body).await;
    let result = batch_inner(&app, &poll, &headers, body, receipts).await;
    match &result {
        Ok(response) => count_batch(&app, &response.batch),
        Err(error) => app.metrics.count_rejections(error.code(), 1),
    }
    let response = result?;
    let postcard = accepts_postcard(&headers);
    Ok(if receipts {
        encode_answer(&response, postcard)
    } else {
        encode_answer(&response.batch, postcard)
    })
}

async fn batch_inner(
    app: &AppState,
    poll: &str,
    headers: &HeaderMap,
    body: TimelyBody<BATCH_BODY_BYTES_MAX>,
    with_receipts: bool,
) -> Result<ReceiptedBatchResponse, ApiError> {
    require_aggregator(app, headers)?;
    let body = body.bytes()?;
    let media_type = require_content_type(headers, &["application/json", POSTCARD_MEDIA_TYPE])
        .map_err(|_| {
            ApiError::UnsupportedMediaType("application/json or application/x-postcard")
        })?;
    let (poll, snapshot) = poll_snapshot(app, poll)?;
    let parsed = if media_type == POSTCARD_MEDIA_TYPE {
        parse_binary(&body, &snapshot.option_names)?
    } else {
        parse_json(&app.vote_id_key, &body, &snapshot.option_names)?
    };
    let votes: Vec<(OptionIndex, VoteId)> = parsed
        .iter()
        .filter_map(|p| match p {
            Parsed::Vote(option, id) => Some((*option, *id)),
            Parsed::Refused(_) => None,
        })
        .collect();
    let acks = if votes.is_empty() {
        Vec::new()
    } else {
        ask(app, |reply| Command::Batch { poll, votes, reply }).await?
    };
    let mut acks = acks.into_iter();
    let mut response = ReceiptedBatchResponse {
        batch: BatchResponse {
            counted: 0,
            duplicate: 0,
            rejected: 0,
            statuses: Vec::with_capacity(parsed.len()),
        },
        actors: Vec::new(),
        receipts: Vec::new(),
        nodes: if with_receipts {
            vec![app.node.to_string()]
        } else {
            Vec::new()
        },
        answered_by: Vec::new(),
    };
    let mut incarnations = Vec::new();
    for vote in parsed {
        let status = match vote {
            Parsed::Refused(reason) => reason,
            Parsed::Vote(..) => match acks.next() {
                Some(BatchVoteAck::Ack(VoteAck::Counted {
                    seq,
                    second,
                    incarnation,
                })) => {
                    if with_receipts {
                        let actor =
                            actor_position(app, &mut response, &mut incarnations, incarnation);
                        response.receipts.push(BatchReceipt { actor, seq, second });
                    }
                    BatchVoteStatus::Counted
                }
                Some(BatchVoteAck::Ack(VoteAck::Duplicate)) => BatchVoteStatus::Duplicate,
                Some(BatchVoteAck::Overloaded) | None => BatchVoteStatus::Overloaded,
            },
        };
        let batch = &mut response.batch;
        let durable = match status {
            BatchVoteStatus::Counted => {
                batch.counted += 1;
                true
            }
            BatchVoteStatus::Duplicate => {
                batch.duplicate += 1;
                true
            }
            _ => {
                batch.rejected += 1;
                false
            }
        };
        batch.statuses.push(status);
        if with_receipts {
            let by = if durable { 0 } else { NOT_ANSWERED_BY_A_NODE };
            response.answered_by.push(by);
        }
    }
    Ok(response)
}

/// The position in `response.actors` of this node's actor of `incarnation` (one batch is
/// answered by one incarnation but for a hand-over mid-batch; a few at most).
fn actor_position(
    app: &AppState,
    response: &mut ReceiptedBatchResponse,
    incarnations: &mut Vec<u64>,
    incarnation: u64,
) -> u8 {
    if let Some(position) = incarnations.iter().position(|i| *i == incarnation) {
        return u8::try_from(position).unwrap_or(u8::MAX);
    }
    incarnations.push(incarnation);
    let actor = tally_core::ActorId {
        node: app.node.clone(),
        incarnation,
    };
    response.actors.push(actor.to_string());
    u8::try_from(incarnations.len() - 1).unwrap_or(u8::MAX)
}

/// Counts a batch's votes by outcome, and its refused votes by reason.
fn count_batch(app: &AppState, response: &BatchResponse) {
    app.metrics.count_votes("counted", response.counted as u64);
    app.metrics
        .count_votes("duplicate", response.duplicate as u64);
    if response.rejected == 0 {
        return;
    }
    for reason in [
        BatchVoteStatus::UnknownOption,
        BatchVoteStatus::BadVoteId,
        BatchVoteStatus::Overloaded,
    ] {
        let count = response.statuses.iter().filter(|s| **s == reason).count();
        if count > 0 {
            app.metrics.count_rejections(reason.as_str(), count as u64);
        }
    }
}

/// Options of the poll the body fuzzer votes in.
const FUZZ_OPTION_NAMES: [&str; 3] = ["green", "blue", "red"];

/// The fuzz body over vote and batch parsing (`fuzz/fuzz_targets/vote_body.rs`, replayed on
/// stable by `node/tests/fuzz_corpus.rs`): the first byte picks the route and content type
/// (single JSON vote, JSON batch, postcard batch), the rest is the body. Parsing any bytes
/// returns instead of panicking; what parses names only options the poll has, holds at most
/// [`BATCH_VOTES_MAX`] votes, and parses the same way twice; a postcard batch that parses
/// re-encodes to one that parses to the same votes. `Err` says which promise broke.
#[doc(hidden)]
pub fn check_vote_body(data: &[u8]) -> Result<(), String> {
    let Some((&mode, body)) = data.split_first() else {
        return Ok(());
    };
    let key = VoteIdKey::new([7; 32]);
    let names: Vec<String> = FUZZ_OPTION_NAMES.iter().map(|n| (*n).to_owned()).collect();
    let in_range = |option: OptionIndex| option.get() < names.len();
    match mode % 3 {
        0 => {
            let header = HeaderValue::from_bytes(body.get(..8).unwrap_or(body)).ok();
            let first = parse_vote(&key, body, &names, header.as_ref(), None);
            let again = parse_vote(&key, body, &names, header.as_ref(), None);
            match (&first, &again) {
                (Ok(a), Ok(b)) if a == b && in_range(a.0) => Ok(()),
                (Err(a), Err(b)) if a.to_string() == b.to_string() => Ok(()),
                _ => Err(format!("vote parsed to {first:?} and then {again:?}")),
            }
        }
        mode => {
            let parse = |body: &[u8]| {
                if mode == 1 {
                    parse_json(&key, body, &names)
                } else {
                    parse_binary(body, &names)
                }
            };
            let Ok(parsed) = parse(body) else {
                return Ok(());
            };
            if parsed.len() > BATCH_VOTES_MAX {
                return Err(format!("a batch of {} votes parsed", parsed.len()));
            }
            if let Some(bad) = parsed
                .iter()
                .find(|p| matches!(p, Parsed::Vote(o, _) if !in_range(*o)))
            {
                return Err(format!("{bad:?} names an option the poll lacks"));
            }
            if mode == 2 {
                let decoded: BinaryBatch =
                    postcard::from_bytes(body).map_err(|e| format!("parsed, then not: {e}"))?;
                let encoded = postcard::to_allocvec(&decoded).map_err(|e| e.to_string())?;
                let again =
                    parse(&encoded).map_err(|e| format!("re-encoded batch refused: {e}"))?;
                if again != parsed {
                    return Err("a re-encoded postcard batch parsed differently".into());
                }
            }
            Ok(())
        }
    }
}
