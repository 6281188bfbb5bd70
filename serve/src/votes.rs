//! Vote requests as node and edge both read them, so the two answer every bad input alike: a
//! single vote's content type, vote token (whose voter becomes the vote ID), option, and vote
//! ID from the body or the `Idempotency-Key` header; a batch's JSON or postcard body, vote by
//! vote, within the batch limit; and the batch answer in JSON or postcard as `Accept` asks.
//! Everything here changes nothing: it parses, or says why not.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tally_client::api::{
    BATCH_VOTES_MAX, BatchRequest, BatchVoteStatus, BinaryBatch, POSTCARD_MEDIA_TYPE,
    RECEIPTS_QUERY, VoteRequest,
};
use tally_core::abuse::{AbuseControls, VOTE_TOKEN_HEADER, voter_vote_id};
use tally_core::{OptionIndex, PollId, UnixMillis, VoteId, VoteIdKey};

use crate::error::ApiError;

/// The header that names a vote's ID when its body does not.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The request's media type if it is one of `accepted` (parameters ignored), or 415 naming
/// the first.
pub fn require_content_type(
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

/// The position of option `name` in the poll's `option_names`.
pub fn option_index(option_names: &[String], name: &str) -> Option<OptionIndex> {
    let position = option_names.iter().position(|o| o == name)?;
    u8::try_from(position).ok().map(OptionIndex)
}

/// With vote tokens on: verifies the request's token for `poll` at `now`, applies the
/// per-voter rate limit, and returns the voter's vote ID (which replaces any vote ID the
/// client sent). `None` with tokens off.
pub fn token_vote_id(
    abuse: &AbuseControls,
    vote_id_key: &VoteIdKey,
    now: UnixMillis,
    poll: &PollId,
    headers: &HeaderMap,
) -> Result<Option<VoteId>, ApiError> {
    let Some(verifier) = &abuse.tokens else {
        return Ok(None);
    };
    let token = headers
        .get(VOTE_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::BadVoteToken(format!("send the {VOTE_TOKEN_HEADER} header")))?;
    let bad = |e: tally_core::abuse::TokenError| ApiError::BadVoteToken(e.0);
    let voter = verifier.verify(poll, token, now).map_err(bad)?;
    let vote_id = voter_vote_id(vote_id_key, &voter).map_err(bad)?;
    if let Some(limiter) = &abuse.per_voter {
        limiter.check(vote_id, now).map_err(ApiError::RateLimited)?;
    }
    Ok(Some(vote_id))
}

/// Parses a single vote's JSON body (and the `Idempotency-Key` header, if the body has no
/// vote ID) into the option index and vote ID.
pub fn parse_vote(
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
pub enum Parsed {
    /// Ready: its option and vote ID.
    Vote(OptionIndex, VoteId),
    /// Refused on its own (the rest of the batch goes on).
    Refused(BatchVoteStatus),
}

/// Whether the batch's query asks for receipts (`receipts=true`).
pub fn wants_receipts(uri: &axum::http::Uri) -> bool {
    uri.query()
        .is_some_and(|query| query.split('&').any(|pair| pair == RECEIPTS_QUERY))
}

/// A batch answer as JSON, or as postcard when asked.
pub fn encode_answer<T: serde::Serialize>(answer: &T, postcard: bool) -> Response {
    if postcard {
        // Encoding counts, strings and unit variants into a Vec cannot fail; should it ever,
        // the votes are durable all the same, so the answer goes out as JSON.
        if let Ok(bytes) = postcard::to_allocvec(answer) {
            let content_type = HeaderValue::from_static(POSTCARD_MEDIA_TYPE);
            return ([(header::CONTENT_TYPE, content_type)], bytes).into_response();
        }
    }
    Json(answer).into_response()
}

/// Whether the request's `Accept` names the postcard media type (without `q=0`).
pub fn accepts_postcard(headers: &HeaderMap) -> bool {
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

/// Refuses more than [`BATCH_VOTES_MAX`] votes (or vote IDs) in one request.
pub fn check_count(count: usize) -> Result<(), ApiError> {
    if count > BATCH_VOTES_MAX {
        return Err(ApiError::TooManyVotes {
            count,
            max: BATCH_VOTES_MAX,
        });
    }
    Ok(())
}

/// Parses a JSON batch: each vote ready or refused on its own.
pub fn parse_json(
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

/// Parses a postcard batch (option indexes in `option_names` order, 16-byte vote IDs).
pub fn parse_binary(body: &[u8], option_names: &[String]) -> Result<Vec<Parsed>, ApiError> {
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
