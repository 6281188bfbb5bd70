//! A single vote's request as node and edge both read it, so the two answer every bad input
//! alike: the content type, the vote token (whose voter becomes the vote ID), the option, and
//! the vote ID from the body or the `Idempotency-Key` header. Everything here changes nothing:
//! it parses, or says why not.

use axum::http::{HeaderMap, HeaderValue, header};
use tally_client::api::VoteRequest;
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
