//! Poll administration: create, open and close polls (bearer token), and the public poll list.
//!
//! Changes are logged and replicated like votes; a route answers once its change is durable.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tally_core::limits::RESERVED_VOTE_IDS_MAX;
use tally_core::{OptionName, PollId, PollSpec, PollWindow, ReservedIndex};
use utoipa::ToSchema;

use super::admin_token::authorize;
use super::body::TimelyBody;
use super::integral::WholeNumber;
use super::votes::{ask, require_content_type};
use super::{ApiError, AppState, ErrorBody, SharedState};
use crate::config::{
    ADMIN_BODY_BYTES_MAX, RESERVED_VOTE_IDS_TOTAL_MAX, check_duration_seconds,
    check_expected_votes, within_reservation_budget,
};
use crate::engine::Command;
pub use tally_client::api::PollSummary;

// The OpenAPI text of the create route quotes this limit: change it with it.
const _: () = assert!(ADMIN_BODY_BYTES_MAX == 16 * 1024);
// `CreatePoll`'s schema and doc (and the 409 below) quote these: change them with them.
const _: () = assert!(RESERVED_VOTE_IDS_MAX == 500_000_000);
const _: () = assert!(RESERVED_VOTE_IDS_TOTAL_MAX == 1_000_000_000);
const _: () = assert!(
    tally_core::limits::POLL_SECONDS_MAX == 2_678_400
        && tally_core::limits::NAME_BYTES_MAX == 64
        && tally_core::limits::OPTIONS_MIN == 2
        && tally_core::limits::OPTIONS_MAX == 16
        && tally_core::limits::POLLS_MAX == 1_024
);

/// Dedupe indexes being built for `expected_votes` at once, in this process: one (up to
/// ~5.4 GB each at the limit), so concurrent create requests wait their turn instead of
/// allocating several at the same time.
static INDEXES_BUILDING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// An empty dedupe index for `vote_ids`, built on tokio's blocking pool, not on the engine
/// (which answers every vote) nor on an HTTP worker: for 30 million IDs the allocation takes
/// tens to hundreds of milliseconds here. `None` if it could not be built (the runtime is
/// stopping): the engine then reserves in place.
async fn build_index(vote_ids: u64) -> Option<ReservedIndex> {
    let _turn = INDEXES_BUILDING.acquire().await.ok()?;
    let vote_ids = usize::try_from(vote_ids).unwrap_or(usize::MAX);
    tokio::task::spawn_blocking(move || ReservedIndex::for_vote_ids(vote_ids))
        .await
        .ok()
}

/// `POST /v1/admin/polls` body. Integers may be written as JSON numbers with a zero
/// fraction (`600.0`), as JSON Schema counts those integers; any other fraction is refused
/// with 422, as is a value out of range.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "halftime", "options": ["yes", "no"], "open": true}))]
pub struct CreatePoll {
    /// The poll's name (letters, digits, `-`, `_`, `.`; 1 to 64 bytes).
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub id: String,
    /// 2–16 distinct option names (each like a poll's name).
    #[schema(schema_with = option_names_schema)]
    pub options: Vec<String>,
    /// Open at once (default false: a draft, opened later with `/open`).
    #[serde(default)]
    pub open: bool,
    /// Close this many seconds after opening (1 to 2,678,400: 31 days).
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 2_678_400)]
    pub duration_seconds: Option<WholeNumber>,
    /// Size the poll's dedupe index for this many distinct vote IDs now (1 to 500,000,000;
    /// ~5 bytes a slot), so its growth work is done before the burst. Optional; as
    /// `expected_votes` in the config file, kept across restarts, and relayed to every peer
    /// (the largest reservation wins). Asked of a poll that exists, it enlarges that poll's
    /// index step by step; it never shrinks one.
    #[schema(value_type = Option<u64>, example = 30_000_000, minimum = 1, maximum = 500_000_000)]
    pub expected_votes: Option<WholeNumber>,
}

/// The schema of [`CreatePoll::options`]: 2–16 distinct names, each as a poll's name.
fn option_names_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let name = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(64))
        .pattern(Some("^[A-Za-z0-9._-]{1,64}$"));
    ArrayBuilder::new()
        .items(name)
        .min_items(Some(2))
        .max_items(Some(16))
        .unique_items(true)
        .description(Some("2–16 distinct option names (each like a poll's name)"))
        .build()
}

/// The answer to an admin change.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminResponse {
    /// The poll.
    pub poll: String,
    /// Whether anything changed.
    pub changed: bool,
}

fn ensure_ready(app: &AppState) -> Result<(), ApiError> {
    if app.health.is_ready() {
        Ok(())
    } else {
        Err(ApiError::Unavailable("the node is not ready"))
    }
}

/// Refuses a reservation of `votes` for `poll` that would size the node's indexes past
/// [`RESERVED_VOTE_IDS_TOTAL_MAX`] (as the latest results snapshot shows them).
fn check_reservation_budget(app: &AppState, poll: &PollId, votes: u64) -> Result<(), ApiError> {
    let others: u64 = app
        .results
        .borrow()
        .polls
        .iter()
        .filter(|(id, _)| *id != poll)
        .map(|(_, snapshot)| snapshot.vote_id_capacity as u64)
        .sum();
    within_reservation_budget(others, votes).map_err(ApiError::Conflict)
}

/// Create a poll.
///
/// Creating a poll that exists with the same options changes nothing (200, or 201 if it
/// now opens earlier); with other options it is refused (409). Answered once durable.
#[utoipa::path(
    post,
    path = "/v1/admin/polls",
    tag = "admin",
    security(("admin_token" = [])),
    request_body(content = CreatePoll, content_type = "application/json"),
    responses(
        (status = 201, description = "Created (or changed), and durable", body = AdminResponse),
        (status = 200, description = "Already there as asked: the definition is unchanged (a \
            larger expected_votes still enlarges its index)",
            body = AdminResponse),
        (status = 400, description = "The body is not valid JSON for this route", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token, or the admin API is off",
            body = ErrorBody),
        (status = 408, description = "The body did not arrive within body_read_timeout_ms of \
            the headers; nothing changed", body = ErrorBody),
        (status = 409, description = "A poll of that name exists with other options, the \
            node holds 1,024 polls (the most it may), or expected_votes would size its indexes \
            past 1,000,000,000 vote IDs over all polls; nothing changed",
            body = ErrorBody),
        (status = 413, description = "The body is over 16 KiB", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
        (status = 422, description = "Bad name, not 2 to 16 distinct valid options, or a \
            number out of range or not whole", body = ErrorBody),
        (status = 503, description = "Not ready, shedding load or stopping", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ),
)]
pub(super) async fn create_poll(
    State(app): State<SharedState>,
    headers: HeaderMap,
    body: TimelyBody<ADMIN_BODY_BYTES_MAX>,
) -> Result<(StatusCode, Json<AdminResponse>), ApiError> {
    authorize(&app, &headers)?;
    let body = body.bytes()?;
    require_content_type(&headers, &["application/json"])?;
    ensure_ready(&app)?;
    let request: CreatePoll =
        serde_json::from_slice(&body).map_err(|e| ApiError::Malformed(e.to_string()))?;
    let whole = |number: &Option<WholeNumber>, field| {
        number
            .as_ref()
            .map(|n| n.to_u64(field))
            .transpose()
            .map_err(ApiError::Invalid)
    };
    let duration_seconds = whole(&request.duration_seconds, "duration_seconds")?;
    let expected_votes = whole(&request.expected_votes, "expected_votes")?;
    let id = PollId::new(request.id.clone()).map_err(|e| ApiError::Invalid(format!("id: {e}")))?;
    let options = request
        .options
        .iter()
        .map(|o| OptionName::new(o.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Invalid(format!("option: {e}")))?;
    if let Some(seconds) = duration_seconds {
        check_duration_seconds(seconds).map_err(ApiError::Invalid)?;
    }
    let now = app.clock.now();
    let opens_at = request.open.then_some(now);
    let closes_at = opens_at.zip(duration_seconds).map(|(open, seconds)| {
        tally_core::UnixMillis(open.0.saturating_add(seconds.saturating_mul(1000)))
    });
    let spec = PollSpec::new(
        id.clone(),
        options,
        PollWindow {
            opens_at,
            closes_at,
        },
    )
    .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let mut prepared_index = None;
    if let Some(votes) = expected_votes {
        check_expected_votes(votes).map_err(ApiError::Invalid)?;
        check_reservation_budget(&app, &id, votes)?;
        // Only a poll whose index is still empty and smaller can take a prebuilt one, and
        // only one the request does not conflict with (other options: refused with 409, so
        // building an index of up to 500 million IDs for it would be seconds for nothing),
        // as the last results snapshot shows it; the engine decides for sure.
        let usable = app.results.borrow().polls.get(&id).is_none_or(|poll| {
            poll.vote_ids == 0
                && (poll.vote_id_capacity as u64) < votes
                && poll.option_names.iter().eq(request.options.iter())
        });
        if usable {
            prepared_index = build_index(votes).await;
        }
    }
    let changed = ask(&app, |reply| Command::UpsertPoll {
        spec,
        expected_votes,
        prepared_index,
        reply,
    })
    .await?;
    let status = if changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(AdminResponse {
            poll: id.to_string(),
            changed,
        }),
    ))
}

async fn change_window(
    app: &AppState,
    headers: &HeaderMap,
    poll: &str,
    window: PollWindow,
) -> Result<Json<AdminResponse>, ApiError> {
    authorize(app, headers)?;
    ensure_ready(app)?;
    let id = PollId::new(poll).map_err(|_| ApiError::UnknownPoll(poll.to_owned()))?;
    let changed = ask(app, |reply| Command::MergeWindow {
        poll: id.clone(),
        window,
        reply,
    })
    .await?;
    Ok(Json(AdminResponse {
        poll: id.to_string(),
        changed,
    }))
}

/// Open a poll now (an earlier opening stands).
#[utoipa::path(
    post,
    path = "/v1/admin/polls/{poll}/open",
    tag = "admin",
    security(("admin_token" = [])),
    params(("poll" = String, Path, description = "The poll's name", example = "superbowl")),
    responses(
        (status = 200, description = "Durable; `changed` says whether it was not open before",
            body = AdminResponse),
        (status = 401, description = "Missing or wrong bearer token, or the admin API is off",
            body = ErrorBody),
        (status = 404, description = "No such poll", body = ErrorBody),
        (status = 503, description = "Not ready, shedding load or stopping", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ),
)]
pub(super) async fn open_poll(
    State(app): State<SharedState>,
    Path(poll): Path<String>,
    headers: HeaderMap,
) -> Result<Json<AdminResponse>, ApiError> {
    let window = PollWindow::open_from(app.clock.now());
    change_window(&app, &headers, &poll, window).await
}

/// Close a poll now (an earlier closing stands).
#[utoipa::path(
    post,
    path = "/v1/admin/polls/{poll}/close",
    tag = "admin",
    security(("admin_token" = [])),
    params(("poll" = String, Path, description = "The poll's name", example = "superbowl")),
    responses(
        (status = 200, description = "Durable; `changed` says whether it was open before",
            body = AdminResponse),
        (status = 401, description = "Missing or wrong bearer token, or the admin API is off",
            body = ErrorBody),
        (status = 404, description = "No such poll", body = ErrorBody),
        (status = 503, description = "Not ready, shedding load or stopping", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ),
)]
pub(super) async fn close_poll(
    State(app): State<SharedState>,
    Path(poll): Path<String>,
    headers: HeaderMap,
) -> Result<Json<AdminResponse>, ApiError> {
    let window = PollWindow {
        opens_at: None,
        closes_at: Some(app.clock.now()),
    };
    change_window(&app, &headers, &poll, window).await
}

/// List every poll with its options and window.
#[utoipa::path(
    get,
    path = "/v1/polls",
    tag = "results",
    responses(
        (status = 200, description = "Every poll, by name; `ETag` and `Cache-Control` \
            (`max-age=1`) let caches hold it", body = Vec<PollSummary>,
            headers(("ETag" = String, description = "Strong tag of these bytes"),
                ("Cache-Control" = String, description = "How long caches may serve them"))),
        (status = 304, description = "`If-None-Match` names the current `ETag`: no body"),
    ),
)]
pub(super) async fn list_polls(State(app): State<SharedState>, headers: HeaderMap) -> Response {
    let snapshot = app.results.borrow().clone();
    let polls: Vec<PollSummary> = snapshot
        .polls
        .values()
        .map(|poll| PollSummary {
            id: poll.results.poll.clone(),
            options: poll.option_names.clone(),
            status: poll.results.status.clone(),
            opens_at_ms: poll.window.opens_at.map(|t| t.0),
            closes_at_ms: poll.window.closes_at.map(|t| t.0),
        })
        .collect();
    // Names, options and times: serializing cannot fail.
    let body = serde_json::to_vec(&polls).unwrap_or_default();
    let etag = crate::results::etag_of(&body);
    super::caching::json(&headers, &etag, super::caching::CACHE_OPEN, body.into())
}
