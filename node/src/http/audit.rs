//! Auditing votes (admin bearer token): which option each vote ID counts for on this node.
//!
//! For an operator answering "my vote went to the wrong option", and for the simulation's
//! checker, which asks every node about every vote after a run: every acknowledged vote must
//! count for the option it was cast for, on every node. Read-only; answered from the engine's
//! state at once (a lookup is one probe of the poll's dedupe index per vote ID).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tally_core::VoteId;
use utoipa::ToSchema;

use super::admin_token::authorize;
use super::body::TimelyBody;
use super::votes::{ask, check_count, poll_snapshot, require_content_type};
use super::{ApiError, ErrorBody, SharedState};
use crate::config::BATCH_BODY_BYTES_MAX;
use crate::engine::Command;
use tally_client::api::POSTCARD_MEDIA_TYPE;

/// The option byte of a postcard lookup answer for a vote ID the node does not hold.
pub const LOOKUP_NOT_HELD: u8 = u8::MAX;

/// `POST /v1/admin/polls/{poll}/lookup` JSON body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"vote_ids": ["67e55044-10b1-426f-9247-bb680e5fe0c8", "tap-123"]}))]
pub struct LookupRequest {
    /// Up to 10,000 vote IDs, as clients send them (a UUID, or a key hashed with the
    /// cluster's `vote_id_key`).
    pub vote_ids: Vec<String>,
}

/// The compact lookup body (`application/x-postcard`): 16-byte vote IDs.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct BinaryLookup {
    /// The vote IDs' 16 bytes each.
    pub vote_ids: Vec<[u8; 16]>,
}

/// One vote ID's standing on this node.
#[derive(Debug, Serialize, PartialEq, Eq, ToSchema)]
pub struct LookedUp {
    /// The vote ID as this node understood it (UUID form); absent if it was not a usable ID.
    pub vote_id: Option<String>,
    /// The option its winning record names, if this node holds the vote ID.
    pub option: Option<String>,
}

/// The answer: one entry per vote ID asked, in order. As JSON for a JSON request; for a
/// postcard request, postcard `{options: [u8]}` with one byte per vote ID: the option's index
/// in the poll's option list (`GET /v1/polls`), or 255 if the node does not hold it.
#[derive(Debug, Serialize, PartialEq, Eq, ToSchema)]
pub struct LookupResponse {
    /// Per vote ID, in the order asked.
    pub votes: Vec<LookedUp>,
}

/// The postcard answer (see [`LookupResponse`]).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct BinaryLookupResponse {
    /// Per vote ID: the option index, or [`LOOKUP_NOT_HELD`].
    pub options: Vec<u8>,
}

/// Which option each vote ID counts for here.
///
/// Read-only. A vote ID counted at several nodes counts once, for its winning record's
/// option (the winner rule, DESIGN.md §2), which this answers.
#[utoipa::path(
    post,
    path = "/v1/admin/polls/{poll}/lookup",
    tag = "admin",
    security(("admin_token" = [])),
    params(("poll" = String, Path, description = "The poll's name")),
    request_body(content(
        (LookupRequest = "application/json"),
        (BinaryLookup = "application/x-postcard"),
    )),
    responses(
        (status = 200, description = "One entry per vote ID, in order", content(
            (LookupResponse = "application/json"),
            (BinaryLookupResponse = "application/x-postcard"),
        )),
        (status = 400, description = "The body does not parse", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token, or the admin API is off",
            body = ErrorBody),
        (status = 404, description = "No such poll", body = ErrorBody),
        (status = 413, description = "Over 10,000 vote IDs or 2 MiB", body = ErrorBody),
        (status = 415, description = "Content-Type is not JSON or postcard", body = ErrorBody),
        (status = 503, description = "Shedding load or stopping", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ),
)]
pub(super) async fn lookup(
    State(app): State<SharedState>,
    Path(poll): Path<String>,
    headers: HeaderMap,
    body: TimelyBody<BATCH_BODY_BYTES_MAX>,
) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    let body = body.bytes()?;
    let media_type = require_content_type(&headers, &["application/json", POSTCARD_MEDIA_TYPE])
        .map_err(|_| {
            ApiError::UnsupportedMediaType("application/json or application/x-postcard")
        })?;
    let (poll, snapshot) = poll_snapshot(&app, &poll)?;
    if media_type == POSTCARD_MEDIA_TYPE {
        let request: BinaryLookup = postcard::from_bytes(&body)
            .map_err(|e| ApiError::Malformed(format!("postcard lookup: {e}")))?;
        check_count(request.vote_ids.len())?;
        let vote_ids = request
            .vote_ids
            .into_iter()
            .map(VoteId::from_bytes)
            .collect();
        let found = ask(&app, |reply| Command::Lookup {
            poll,
            vote_ids,
            reply,
        })
        .await?;
        let answer = BinaryLookupResponse {
            options: found
                .into_iter()
                .map(|o| o.map_or(LOOKUP_NOT_HELD, |o| o.0))
                .collect(),
        };
        let bytes = postcard::to_allocvec(&answer)
            .map_err(|e| ApiError::Malformed(format!("postcard answer: {e}")))?;
        let content_type = HeaderValue::from_static(POSTCARD_MEDIA_TYPE);
        return Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response());
    }
    let request: LookupRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::Malformed(e.to_string()))?;
    check_count(request.vote_ids.len())?;
    let parsed: Vec<Option<VoteId>> = request
        .vote_ids
        .iter()
        .map(|key| app.vote_id_key.vote_id(key).ok())
        .collect();
    let vote_ids = parsed.iter().flatten().copied().collect();
    let found = ask(&app, |reply| Command::Lookup {
        poll,
        vote_ids,
        reply,
    })
    .await?;
    let mut found = found.into_iter();
    let votes = parsed
        .into_iter()
        .map(|id| LookedUp {
            vote_id: id.map(|id| id.to_string()),
            option: id
                .and_then(|_| found.next().flatten())
                .and_then(|o| snapshot.option_names.get(o.get()).cloned()),
        })
        .collect();
    Ok(Json(LookupResponse { votes }).into_response())
}
