//! Voting routes: one vote, and batches for edge aggregators (JSON or compact postcard).
//!
//! A vote is answered only once it is durable: `counted` if its vote ID is new, `duplicate` if
//! it was seen before (then the earlier vote is durable too). The vote ID comes in the body or
//! as an `Idempotency-Key` header: a UUID as sent, or any other key of up to 128 bytes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use tally_core::{OptionIndex, PollId, VoteId};
use tokio::sync::oneshot;

use super::{ApiError, AppState};
use crate::config::{BATCH_BODY_BYTES_MAX, BATCH_VOTES_MAX, VOTE_BODY_BYTES_MAX};
use crate::engine::{BatchVoteAck, Command, VoteAck};
use crate::results::PollSnapshot;

/// Media type of the compact batch body: postcard-encoded [`BinaryBatch`].
pub const POSTCARD_MEDIA_TYPE: &str = "application/x-postcard";

/// `POST /v1/polls/{poll}/votes` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    /// The option's name.
    pub option: String,
    /// The idempotency key (or send it as an `Idempotency-Key` header).
    pub vote_id: Option<String>,
}

/// Proof that a vote is durable.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Receipt {
    /// The node incarnation that recorded the vote, `node#incarnation`.
    pub actor: String,
    /// The record's seq in that actor's log.
    pub seq: u64,
    /// The poll-relative second it was stamped with.
    pub second: u32,
}

/// The answer to a vote.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct VoteResponse {
    /// `counted` or `duplicate`.
    pub status: &'static str,
    /// The vote ID as this node understood it (UUID form).
    pub vote_id: String,
    /// For `counted`: where the vote is recorded.
    pub receipt: Option<Receipt>,
}

/// One vote of a JSON batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchVote {
    /// The option's name.
    pub option: String,
    /// The idempotency key.
    pub vote_id: String,
}

/// `POST /v1/polls/{poll}/votes/batch` JSON body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Up to [`BATCH_VOTES_MAX`] votes.
    pub votes: Vec<BatchVote>,
}

/// The compact batch body (`application/x-postcard`): option indexes and 16-byte vote IDs
/// (big-endian UUID bytes).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BinaryBatch {
    /// The votes.
    pub votes: Vec<BinaryVote>,
}

/// One vote of a compact batch.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Clone, Copy)]
pub struct BinaryVote {
    /// The option's index in the poll's option list.
    pub option: u8,
    /// The vote ID's 16 bytes.
    pub vote_id: [u8; 16],
}

/// The answer to a batch: one status per vote, in order.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct BatchResponse {
    /// Votes newly counted.
    pub counted: usize,
    /// Votes seen before.
    pub duplicate: usize,
    /// Votes refused (see each status).
    pub rejected: usize,
    /// Per vote: `counted`, `duplicate`, `unknown_option`, `bad_vote_id` or `overloaded`.
    pub statuses: Vec<&'static str>,
}

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

fn option_index(snapshot: &PollSnapshot, name: &str) -> Option<OptionIndex> {
    let position = snapshot.option_names.iter().position(|o| o == name)?;
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
        Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
            app.metrics.count_rejections("overloaded", 1);
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

/// `POST /v1/polls/{poll}/votes`
pub(super) async fn vote(
    State(app): State<AppState>,
    Path(poll): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<VoteResponse>, ApiError> {
    let result = vote_inner(&app, &poll, &headers, body).await;
    match &result {
        Ok(response) => app.metrics.count_votes(response.status, 1),
        Err(error) => app.metrics.count_rejections(error.code(), 1),
    }
    result.map(Json)
}

async fn vote_inner(
    app: &AppState,
    poll: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<VoteResponse, ApiError> {
    let body = body.map_err(|r| ApiError::from_body(r, VOTE_BODY_BYTES_MAX))?;
    require_content_type(headers, &["application/json"])?;
    let request: VoteRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::Malformed(e.to_string()))?;
    let (poll, snapshot) = poll_snapshot(app, poll)?;
    let option = option_index(&snapshot, &request.option)
        .ok_or_else(|| ApiError::UnknownOption(request.option.clone()))?;
    let header_key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::BadVoteId("Idempotency-Key is not text".into()))
        })
        .transpose()?;
    let key = request.vote_id.as_deref().or(header_key).ok_or_else(|| {
        ApiError::BadVoteId("send vote_id in the body or an Idempotency-Key header".into())
    })?;
    let vote_id = app
        .vote_id_key
        .vote_id(key)
        .map_err(|e| ApiError::BadVoteId(e.to_string()))?;
    let ack = ask(app, |reply| Command::Vote {
        poll,
        option,
        vote_id,
        reply,
    })
    .await?;
    Ok(match ack {
        VoteAck::Counted { seq, second } => VoteResponse {
            status: "counted",
            vote_id: vote_id.to_string(),
            receipt: Some(Receipt {
                actor: app.actor.clone(),
                seq,
                second,
            }),
        },
        VoteAck::Duplicate => VoteResponse {
            status: "duplicate",
            vote_id: vote_id.to_string(),
            receipt: None,
        },
    })
}

/// A batch vote after parsing: either ready for the engine or already refused.
enum Parsed {
    Vote(OptionIndex, VoteId),
    Refused(&'static str),
}

/// `POST /v1/polls/{poll}/votes/batch`
pub(super) async fn batch(
    State(app): State<AppState>,
    Path(poll): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BatchResponse>, ApiError> {
    let result = batch_inner(&app, &poll, &headers, body).await;
    match &result {
        Ok(response) => {
            app.metrics.count_votes("counted", response.counted as u64);
            app.metrics
                .count_votes("duplicate", response.duplicate as u64);
        }
        Err(error) => app.metrics.count_rejections(error.code(), 1),
    }
    result.map(Json)
}

async fn batch_inner(
    app: &AppState,
    poll: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<BatchResponse, ApiError> {
    let body = body.map_err(|r| ApiError::from_body(r, BATCH_BODY_BYTES_MAX))?;
    let media_type = require_content_type(headers, &["application/json", POSTCARD_MEDIA_TYPE])?;
    let (poll, snapshot) = poll_snapshot(app, poll)?;
    let parsed = if media_type == POSTCARD_MEDIA_TYPE {
        parse_binary(&body, &snapshot)?
    } else {
        parse_json(app, &body, &snapshot)?
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
                Some(BatchVoteAck::Ack(VoteAck::Counted { .. })) => "counted",
                Some(BatchVoteAck::Ack(VoteAck::Duplicate)) => "duplicate",
                Some(BatchVoteAck::Overloaded) | None => "overloaded",
            },
        };
        match status {
            "counted" => response.counted += 1,
            "duplicate" => response.duplicate += 1,
            _ => response.rejected += 1,
        }
        response.statuses.push(status);
    }
    Ok(response)
}

fn check_count(count: usize) -> Result<(), ApiError> {
    if count > BATCH_VOTES_MAX {
        return Err(ApiError::TooManyVotes {
            count,
            max: BATCH_VOTES_MAX,
        });
    }
    Ok(())
}

fn parse_json(
    app: &AppState,
    body: &[u8],
    snapshot: &PollSnapshot,
) -> Result<Vec<Parsed>, ApiError> {
    let request: BatchRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::Malformed(e.to_string()))?;
    check_count(request.votes.len())?;
    Ok(request
        .votes
        .iter()
        .map(|vote| {
            let Some(option) = option_index(snapshot, &vote.option) else {
                return Parsed::Refused("unknown_option");
            };
            match app.vote_id_key.vote_id(&vote.vote_id) {
                Ok(id) => Parsed::Vote(option, id),
                Err(_) => Parsed::Refused("bad_vote_id"),
            }
        })
        .collect())
}

fn parse_binary(body: &[u8], snapshot: &PollSnapshot) -> Result<Vec<Parsed>, ApiError> {
    let request: BinaryBatch = postcard::from_bytes(body)
        .map_err(|e| ApiError::Malformed(format!("postcard batch: {e}")))?;
    check_count(request.votes.len())?;
    let options = snapshot.option_names.len();
    Ok(request
        .votes
        .iter()
        .map(|vote| {
            if usize::from(vote.option) >= options {
                Parsed::Refused("unknown_option")
            } else {
                Parsed::Vote(OptionIndex(vote.option), VoteId::from_bytes(vote.vote_id))
            }
        })
        .collect())
}
