//! Read routes: results, the per-second history, and the live SSE stream.
//!
//! All of them read the engine's latest immutable snapshot, never the replica itself. The SSE
//! stream is pull-based: each subscriber's stream wakes every tick and, if the snapshot of its
//! poll changed, sends the snapshot's pre-encoded JSON (shared bytes, no per-subscriber
//! encoding). Nothing is queued per subscriber: a client that does not read holds at most its
//! socket buffer, and the connection-level write-stall guard drops it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tally_core::Second;
use tally_core::limits::POLL_SECONDS_MAX;

// The document quotes this limit for `at`: change it with it.
const _: () = assert!(POLL_SECONDS_MAX == 2_678_400);
use utoipa::IntoParams;

use super::votes::poll_snapshot;
use super::{ApiError, SharedState, caching};
use crate::results::{PollSnapshot, etag_of};
use tally_client::api::{ErrorBody, History, PollResults};
use tally_serve::viewers::{ViewerBudget, ViewerCharge, ViewerPath};

/// Query of the results route.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// Answer "what was the split at second N": votes of poll seconds ≤ N (0 to 2,678,400,
    /// the 31 days a poll's seconds are counted).
    #[param(value_type = Option<u32>, minimum = 0, maximum = 2_678_400)]
    pub at: Option<Second>,
}

/// The poll's current results: counts, shares, total, and whose votes they include.
///
/// With `?at=N`, the split as it stood at poll second N (every node answers the same once
/// converged).
#[utoipa::path(
    get,
    path = "/v1/polls/{poll}/results",
    tag = "results",
    params(("poll" = String, Path, description = "The poll's name", example = "superbowl"), ResultsQuery),
    responses(
        (status = 200, description = "The results; `ETag` and `Cache-Control` (`max-age=1` \
            while the poll is open, 60 once closed) let caches hold them",
            body = PollResults,
            headers(("ETag" = String, description = "Strong tag of these bytes"),
                ("Cache-Control" = String, description = "How long caches may serve them"))),
        (status = 304, description = "`If-None-Match` names the current `ETag`: no body"),
        (status = 404, description = "No such poll", body = ErrorBody),
        (status = 422, description = "`at` is not a poll second (0 to 2,678,400), or an \
            unknown query parameter", body = ErrorBody),
    ),
)]
pub(super) async fn results(
    State(app): State<SharedState>,
    Path(poll): Path<String>,
    headers: HeaderMap,
    query: Result<Query<ResultsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Invalid(e.body_text()))?;
    if let Some(at) = query.at.filter(|&at| at > POLL_SECONDS_MAX) {
        return Err(ApiError::Invalid(format!(
            "at must be a poll second from 0 to {POLL_SECONDS_MAX}, not {at}"
        )));
    }
    let (_, snapshot) = poll_snapshot(&app, &poll)?;
    let policy = caching::cache_control(&snapshot.results.status);
    Ok(match query.at {
        None => caching::json(
            &headers,
            &snapshot.results_etag,
            policy,
            snapshot.results_json.clone(),
        ),
        Some(at) => {
            // Strings, integers and shares: serializing cannot fail.
            let body = serde_json::to_vec(&snapshot.results_at(at)).unwrap_or_default();
            caching::json(&headers, &etag_of(&body), policy, Bytes::from(body))
        }
    })
}

/// The poll's per-second series: net votes per option in each second that had any.
#[utoipa::path(
    get,
    path = "/v1/polls/{poll}/history",
    tag = "results",
    params(("poll" = String, Path, description = "The poll's name", example = "superbowl")),
    responses(
        (status = 200, description = "The series, with `ETag` and `Cache-Control` as the \
            results", body = History,
            headers(("ETag" = String, description = "Strong tag of these bytes"),
                ("Cache-Control" = String, description = "How long caches may serve them"))),
        (status = 304, description = "`If-None-Match` names the current `ETag`: no body"),
        (status = 404, description = "No such poll", body = ErrorBody),
    ),
)]
pub(super) async fn history(
    State(app): State<SharedState>,
    Path(poll): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, snapshot) = poll_snapshot(&app, &poll)?;
    Ok(caching::json(
        &headers,
        &snapshot.history_etag,
        caching::cache_control(&snapshot.results.status),
        snapshot.history_json.clone(),
    ))
}

/// Keeps the subscriber gauge and the memory budget true however the stream ends.
struct SubscriberGuard {
    metrics: Arc<crate::metrics::Metrics>,
    /// Given back to the budget when the stream ends.
    _charge: ViewerCharge,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.metrics.sse_subscribers.dec();
    }
}

/// Sent when nothing changed for [`HEARTBEAT_TICKS`] ticks, so proxies keep the stream open.
const HEARTBEAT_FRAME: &[u8] = b": heartbeat\n\n";

/// Ticks without a change before a heartbeat is sent.
const HEARTBEAT_TICKS: u32 = 10;

// The OpenAPI text of the stream route says "ten quiet ticks": change it with this.
const _: () = assert!(HEARTBEAT_TICKS == 10);

/// Live results over server-sent events.
///
/// The current results at once, then a `results` event (`id:` the capture time in Unix ms,
/// `data:` the same JSON as the results route) whenever they change, checked every SSE tick;
/// a `: heartbeat` comment after ten quiet ticks. The stream ends when the node stops.
#[utoipa::path(
    get,
    path = "/v1/polls/{poll}/stream",
    tag = "results",
    params(("poll" = String, Path, description = "The poll's name", example = "superbowl")),
    responses(
        (status = 200, description = "An endless `text/event-stream` of `results` events",
            content_type = "text/event-stream", body = String,
            example = "event: results\nid: 1700000000000\ndata: {\"poll\":\"superbowl\",...}\n\n"),
        (status = 404, description = "No such poll", body = ErrorBody),
        (status = 503, description = "Too many subscribers", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    ),
)]
pub(super) async fn stream(
    State(app): State<SharedState>,
    Path(poll): Path<String>,
) -> Result<Response, ApiError> {
    let frames = Viewers::of(&app, ViewerPath::ThroughHyper).open(&poll)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(frames),
    )
        .into_response())
}

/// What a live stream reads: the route's ([`stream`]), and the path below hyper's
/// ([`tally_serve::viewers`]), which holds no more of the node (not the engine's queue: the
/// engine stops once every sender of it is gone).
#[derive(Clone)]
pub(super) struct Viewers {
    results: tokio::sync::watch::Receiver<Arc<crate::results::ResultsSnapshot>>,
    metrics: Arc<crate::metrics::Metrics>,
    budget: Arc<ViewerBudget>,
    /// How its subscribers are served, and so what each is charged.
    path: ViewerPath,
    tick: Duration,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Viewers {
    /// The live stream of the node whose state is `app`, served by `path`.
    pub(super) fn of(app: &super::AppState, path: ViewerPath) -> Self {
        Self {
            results: app.results.clone(),
            metrics: app.metrics.clone(),
            budget: app.viewer_budget.clone(),
            path,
            tick: Duration::from_millis(app.sse_tick_ms),
            stopping: app.stopping.clone(),
        }
    }

    /// A new subscriber's frames, its place taken: 404 for an unknown poll, 503 past the
    /// memory budget.
    fn open(&self, poll: &str) -> Result<tally_serve::viewers::Frames, ApiError> {
        let unknown = || ApiError::UnknownPoll(poll.to_owned());
        let id = tally_core::PollId::new(poll).map_err(|_| unknown())?;
        if !self.results.borrow().polls.contains_key(&id) {
            return Err(unknown());
        }
        let Some(charge) = self.budget.admit(self.path) else {
            return Err(ApiError::Overloaded(5));
        };
        self.metrics.sse_subscribers.inc();
        let guard = SubscriberGuard {
            metrics: self.metrics.clone(),
            _charge: charge,
        };
        let mut interval = tokio::time::interval(self.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let state = (guard, None::<Arc<PollSnapshot>>, interval, 0u32);
        let results = self.results.clone();
        let stopping = self.stopping.clone();
        Ok(Box::pin(futures_util::stream::unfold(
            state,
            move |(guard, mut last, mut interval, mut quiet)| {
                let results = results.clone();
                let id = id.clone();
                let mut stopping = stopping.clone();
                async move {
                    loop {
                        tokio::select! {
                            biased;
                            _ = stopping.wait_for(|stop| *stop) => return None,
                            _ = interval.tick() => {}
                        }
                        let current = results.borrow().polls.get(&id).cloned()?;
                        if last
                            .as_ref()
                            .is_none_or(|l: &Arc<PollSnapshot>| l.version != current.version)
                        {
                            let frame = current.sse_frame.clone();
                            last = Some(current);
                            return Some((Ok::<_, Infallible>(frame), (guard, last, interval, 0)));
                        }
                        quiet += 1;
                        if quiet >= HEARTBEAT_TICKS {
                            let frame = Bytes::from_static(HEARTBEAT_FRAME);
                            return Some((Ok(frame), (guard, last, interval, 0)));
                        }
                    }
                }
            },
        )))
    }
}

impl tally_serve::viewers::StreamRoute for Viewers {
    fn open(&self, poll: String) -> tally_serve::viewers::Opening {
        // Declined (unknown poll, the cap): the router answers, and counts, as it always did.
        let frames = Viewers::open(self, &poll).ok();
        Box::pin(std::future::ready(
            frames.map(tally_serve::viewers::Feed::Frames),
        ))
    }
}
