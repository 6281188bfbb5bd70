//! Voting routes: one vote, and batches for edge aggregators (JSON or compact postcard).
//!
//! A vote is answered only once it is durable: `counted` if its vote ID is new, `duplicate` if
//! it was seen before (then the earlier vote is durable too). The vote ID comes in the body or
//! as an `Idempotency-Key` header: a UUID as sent, or any other key of up to 128 bytes.

use std::future::Future;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use tally_core::{NodeId, OptionIndex, PollId, VoteId, VoteIdKey};
use tokio::sync::oneshot;

use super::abuse::{VOTE_TOKEN_HEADER, voter_vote_id};
use super::body::TimelyBody;
use super::{ApiError, AppState, SharedState};
use crate::config::{BATCH_BODY_BYTES_MAX, BATCH_VOTES_MAX, VOTE_BODY_BYTES_MAX};
use crate::engine::{BatchVoteAck, Command, VoteAck};
use crate::results::PollSnapshot;
use tally_client::api::{
    BatchRequest, BatchResponse, BatchVoteStatus, BinaryBatch, ErrorBody, POSTCARD_MEDIA_TYPE,
    Receipt, VoteRequest, VoteResponse, VoteStatus,
};

// The OpenAPI text of the routes below quotes these limits: change it with them.
const _: () = assert!(
    VOTE_BODY_BYTES_MAX == 4 * 1024
        && BATCH_BODY_BYTES_MAX == 2 * 1024 * 1024
        && BATCH_VOTES_MAX == 10_000
);

pub(super) fn require_content_type(
    headers: &HeaderMap,
    accepted: &[&'static str],
) -> Result<&'static str, ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = value.split(';').next().unwrap_or("").trim();
    accepted
        .iter()
        .find(|a| a.eq_ignore_ascii_case(media_type))
        .copied()
        .ok_or(ApiError::UnsupportedMediaType(accepted[0]))
}

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

fn option_index(option_names: &[String], name: &str) -> Option<OptionIndex> {
    let position = option_names.iter().position(|o| o == name)?;
    u8::try_from(position).ok().map(OptionIndex)
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
    let (headers, body) = TimelyBody::<VOTE_BODY_BYTES_MAX>::with_headers(request, &app);
    async move {
        let result = vote_inner(&app, &poll, &headers, body.read().await).await;
        match &result {
            Ok(answer) => app.metrics.count_votes(answer.status().as_str(), 1),
            Err(error) => app.metrics.count_rejections(error.code(), 1),
        }
        Ok(result?.into_response(&app.node))
    }
}

/// A vote's answer, written as a [`VoteResponse`] is (`a_vote_answer_is_written_as_a_vote_response_is`
/// holds the two equal) but without building its strings first: the vote ID and the receipt's
/// actor go straight into the body, one allocation in all.
struct VoteAnswer {
    vote_id: VoteId,
    ack: VoteAck,
}

/// Room for a vote's answer: ~140 bytes with a node name of 20 characters.
const VOTE_ANSWER_BYTES: usize = 192;

impl VoteAnswer {
    fn status(&self) -> VoteStatus {
        match self.ack {
            VoteAck::Counted { .. } => VoteStatus::Counted,
            VoteAck::Duplicate => VoteStatus::Duplicate,
        }
    }

    /// The JSON answer of a vote answered by `node`.
    fn into_response(self, node: &NodeId) -> Response {
        let mut body = Vec::with_capacity(VOTE_ANSWER_BYTES);
        match serde_json::to_writer(&mut body, &WithNode(&self, node)) {
            Ok(()) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            // Strings and integers always serialize; should it ever fail, the vote stands
            // (it is durable) and the client retries with the same vote ID.
            Err(error) => ApiError::Unavailable(if error.is_io() {
                "could not write the answer"
            } else {
                "could not encode the answer"
            })
            .into_response(),
        }
    }
}

/// A [`VoteAnswer`] with the node that gives it (receipts name its actor).
struct WithNode<'a>(&'a VoteAnswer, &'a NodeId);

impl Serialize for WithNode<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let WithNode(answer, node) = *self;
        let mut response = serializer.serialize_struct("VoteResponse", 3)?;
        response.serialize_field("status", &answer.status())?;
        response.serialize_field("vote_id", &Text(&answer.vote_id))?;
        match answer.ack {
            VoteAck::Counted {
                seq,
                second,
                incarnation,
            } => response.serialize_field(
                "receipt",
                &Some(ReceiptOf {
                    node,
                    incarnation,
                    seq,
                    second,
                }),
            )?,
            VoteAck::Duplicate => response.serialize_field("receipt", &None::<Receipt>)?,
        }
        response.end()
    }
}

/// A [`Receipt`] written without building its actor's text first.
struct ReceiptOf<'a> {
    node: &'a NodeId,
    incarnation: u64,
    seq: u64,
    second: u32,
}

impl Serialize for ReceiptOf<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut receipt = serializer.serialize_struct("Receipt", 3)?;
        // `tally_core::ActorId`'s text, `node#incarnation` (16 hex digits).
        let actor = format_args!("{}#{:016x}", self.node, self.incarnation);
        receipt.serialize_field("actor", &Text(&actor))?;
        receipt.serialize_field("seq", &self.seq)?;
        receipt.serialize_field("second", &self.second)?;
        receipt.end()
    }
}

/// Serializes a value as its text (`Display`), written straight into the output.
struct Text<'a, T: std::fmt::Display>(&'a T);

impl<T: std::fmt::Display> Serialize for Text<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self.0)
    }
}

async fn vote_inner(
    app: &AppState,
    poll: &str,
    headers: &HeaderMap,
    body: TimelyBody<VOTE_BODY_BYTES_MAX>,
) -> Result<VoteAnswer, ApiError> {
    let body = body.bytes()?;
    require_content_type(headers, &["application/json"])?;
    let (poll, snapshot) = poll_snapshot(app, poll)?;
    let voter_vote_id = token_vote_id(app, &poll, headers)?;
    let (option, vote_id) = parse_vote(
        &app.vote_id_key,
        &body,
        &snapshot.option_names,
        headers.get("idempotency-key"),
        voter_vote_id,
    )?;
    let ack = ask(app, |reply| Command::Vote {
        poll,
        option,
        vote_id,
        reply,
    })
    .await?;
    Ok(VoteAnswer { vote_id, ack })
}

/// With vote tokens on: verifies the request's token for `poll`, applies the per-voter rate
/// limit, and returns the voter's vote ID (which replaces any vote ID the client sent). `None`
/// with tokens off. Changes nothing.
fn token_vote_id(
    app: &AppState,
    poll: &PollId,
    headers: &HeaderMap,
) -> Result<Option<VoteId>, ApiError> {
    let Some(verifier) = &app.abuse.tokens else {
        return Ok(None);
    };
    let token = headers
        .get(VOTE_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::BadVoteToken(format!("send the {VOTE_TOKEN_HEADER} header")))?;
    let now = app.clock.now();
    let voter = verifier.verify(poll, token, now)?;
    let vote_id = voter_vote_id(&app.vote_id_key, &voter)?;
    if let Some(limiter) = &app.abuse.per_voter {
        limiter.check(vote_id, now).map_err(ApiError::RateLimited)?;
    }
    Ok(Some(vote_id))
}

/// With vote tokens on, batches come from the operator's own edge aggregators, not from
/// voters: they need the admin bearer token.
fn require_aggregator(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match app.abuse.tokens {
        None => Ok(()),
        Some(_) => super::admin_token::authorize(app, headers),
    }
}

/// Parses a single vote's JSON body (and the `Idempotency-Key` header, if the body has no
/// vote ID) into the option index and vote ID. Changes nothing.
fn parse_vote(
    vote_id_key: &VoteIdKey,
    body: &[u8],
    option_names: &[String],
    idempotency_key: Option<&HeaderValue>,
    voter_vote_id: Option<VoteId>,
) -> Result<(OptionIndex, VoteId), ApiError> {
    let request: VoteRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::Malformed(e.to_string()))?;
    let option = option_index(option_names, &request.option)
        .ok_or_else(|| ApiError::UnknownOption(request.option.clone()))?;
    if let Some(vote_id) = voter_vote_id {
        return Ok((option, vote_id));
    }
    let key = match request.vote_id.as_deref() {
        Some(key) => key,
        None => idempotency_key
            .ok_or_else(|| {
                ApiError::BadVoteId("send vote_id in the body or an Idempotency-Key header".into())
            })?
            .to_str()
            .map_err(|_| ApiError::BadVoteId("Idempotency-Key is not text".into()))?,
    };
    let vote_id = vote_id_key
        .vote_id(key)
        .map_err(|e| ApiError::BadVoteId(e.to_string()))?;
    Ok((option, vote_id))
}

/// A batch vote after parsing: either ready for the engine or already refused.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Vote(OptionIndex, VoteId),
    Refused(BatchVoteStatus),
}

/// Cast many votes for one poll (edge aggregators).
///
/// Up to 10,000 votes, as JSON or as a compact postcard body (`application/x-postcard`,
/// `BinaryBatch`: option indexes and 16-byte vote IDs). Answered once every vote counted is
/// durable, with a status per vote in the order sent. A poll-level refusal (unknown poll, poll
/// not open) refuses the whole batch, and then no vote of it was counted.
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
        (status = 401, description = "Vote tokens are on and the admin bearer token is missing \
            (batches then come only from the operator's aggregators)", body = ErrorBody),
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
    let (headers, body) = TimelyBody::<BATCH_BODY_BYTES_MAX>::with_headers(request, &app);
    let result = batch_inner(&app, &poll, &headers, body.read().await).await;
    match &result {
        Ok(response) => count_batch(&app, response),
        Err(error) => app.metrics.count_rejections(error.code(), 1),
    }
    let response = result?;
    if !accepts_postcard(&headers) {
        return Ok(Json(response).into_response());
    }
    match postcard::to_allocvec(&response) {
        Ok(bytes) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(POSTCARD_MEDIA_TYPE),
            )],
            bytes,
        )
            .into_response()),
        // Encoding counts and unit variants into a Vec cannot fail; should it ever, the
        // votes are durable all the same, so answer them in JSON.
        Err(_) => Ok(Json(response).into_response()),
    }
}

/// Whether the request's `Accept` names the postcard media type (without `q=0`).
fn accepts_postcard(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            let media_type = parts.next().unwrap_or("").trim();
            media_type.eq_ignore_ascii_case(POSTCARD_MEDIA_TYPE)
                && !parts.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        })
}

async fn batch_inner(
    app: &AppState,
    poll: &str,
    headers: &HeaderMap,
    body: TimelyBody<BATCH_BODY_BYTES_MAX>,
) -> Result<BatchResponse, ApiError> {
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
    let mut response = BatchResponse {
        counted: 0,
        duplicate: 0,
        rejected: 0,
        statuses: Vec::with_capacity(parsed.len()),
    };
    for vote in parsed {
        let status = match vote {
            Parsed::Refused(reason) => reason,
            Parsed::Vote(..) => match acks.next() {
                Some(BatchVoteAck::Ack(VoteAck::Counted { .. })) => BatchVoteStatus::Counted,
                Some(BatchVoteAck::Ack(VoteAck::Duplicate)) => BatchVoteStatus::Duplicate,
                Some(BatchVoteAck::Overloaded) | None => BatchVoteStatus::Overloaded,
            },
        };
        match status {
            BatchVoteStatus::Counted => response.counted += 1,
            BatchVoteStatus::Duplicate => response.duplicate += 1,
            _ => response.rejected += 1,
        }
        response.statuses.push(status);
    }
    Ok(response)
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

/// Refuses more than [`BATCH_VOTES_MAX`] votes (or vote IDs) in one request.
pub(super) fn check_count(count: usize) -> Result<(), ApiError> {
    if count > BATCH_VOTES_MAX {
        return Err(ApiError::TooManyVotes {
            count,
            max: BATCH_VOTES_MAX,
        });
    }
    Ok(())
}

fn parse_json(
    vote_id_key: &VoteIdKey,
    body: &[u8],
    option_names: &[String],
) -> Result<Vec<Parsed>, ApiError> {
    let request: BatchRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::Malformed(e.to_string()))?;
    check_count(request.votes.len())?;
    Ok(request
        .votes
        .iter()
        .map(|vote| {
            let Some(option) = option_index(option_names, &vote.option) else {
                return Parsed::Refused(BatchVoteStatus::UnknownOption);
            };
            match vote_id_key.vote_id(&vote.vote_id) {
                Ok(id) => Parsed::Vote(option, id),
                Err(_) => Parsed::Refused(BatchVoteStatus::BadVoteId),
            }
        })
        .collect())
}

fn parse_binary(body: &[u8], option_names: &[String]) -> Result<Vec<Parsed>, ApiError> {
    let request: BinaryBatch = postcard::from_bytes(body)
        .map_err(|e| ApiError::Malformed(format!("postcard batch: {e}")))?;
    check_count(request.votes.len())?;
    let options = option_names.len();
    Ok(request
        .votes
        .iter()
        .map(|vote| {
            if usize::from(vote.option) >= options {
                Parsed::Refused(BatchVoteStatus::UnknownOption)
            } else {
                Parsed::Vote(OptionIndex(vote.option), VoteId::from_bytes(vote.vote_id))
            }
        })
        .collect())
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

#[cfg(test)]
mod tests {
    //! Goal: the single vote's answer, written field by field, is byte for byte what
    //! serializing the API's `VoteResponse` gives. Method: both ways, for a counted vote (with
    //! a receipt) and a duplicate.

    use super::*;

    #[test]
    fn a_vote_answer_is_written_as_a_vote_response_is() {
        let node = NodeId::new("us-east-1b").unwrap();
        let vote_id = VoteId(0x67e5_5044_10b1_426f_9247_bb68_0e5f_e0c8);
        let counted = VoteAck::Counted {
            seq: 12_345,
            second: 29,
            incarnation: 0x00ab_cdef_0123_4567,
        };
        let expected = |ack| {
            let (status, receipt) = match ack {
                VoteAck::Counted {
                    seq,
                    second,
                    incarnation,
                } => (
                    VoteStatus::Counted,
                    Some(Receipt {
                        actor: tally_core::ActorId {
                            node: node.clone(),
                            incarnation,
                        }
                        .to_string(),
                        seq,
                        second,
                    }),
                ),
                VoteAck::Duplicate => (VoteStatus::Duplicate, None),
            };
            serde_json::to_string(&VoteResponse {
                status,
                vote_id: vote_id.to_string(),
                receipt,
            })
            .unwrap()
        };
        for ack in [counted, VoteAck::Duplicate] {
            let answer = VoteAnswer { vote_id, ack };
            let written = serde_json::to_string(&WithNode(&answer, &node)).unwrap();
            assert_eq!(written, expected(ack));
            assert!(written.len() <= VOTE_ANSWER_BYTES, "{}", written.len());
        }
    }
}
