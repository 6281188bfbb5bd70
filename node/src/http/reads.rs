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

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tally_core::Second;

use super::votes::poll_snapshot;
use super::{ApiError, AppState};
use crate::results::{HistoryPoint, PollResults, PollSnapshot};

/// Query of the results route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsQuery {
    /// Answer "what was the split at second N": votes of seconds ≤ N.
    pub at: Option<Second>,
}

/// `GET /v1/polls/{poll}/results[?at=SECONDS]`
pub(super) async fn results(
    State(app): State<AppState>,
    Path(poll): Path<String>,
    query: Result<Query<ResultsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PollResults>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Invalid(e.body_text()))?;
    let (_, snapshot) = poll_snapshot(&app, &poll)?;
    Ok(Json(match query.at {
        Some(at) => snapshot.results_at(at),
        None => snapshot.results.clone(),
    }))
}

/// `GET /v1/polls/{poll}/history` body.
#[derive(Debug, Serialize)]
pub struct History {
    /// The poll.
    pub poll: String,
    /// Option names, in the order of each point's `votes`.
    pub options: Vec<String>,
    /// Net votes per second, ascending; seconds without votes are absent.
    pub points: Vec<HistoryPoint>,
}

/// `GET /v1/polls/{poll}/history`
pub(super) async fn history(
    State(app): State<AppState>,
    Path(poll): Path<String>,
) -> Result<Json<History>, ApiError> {
    let (id, snapshot) = poll_snapshot(&app, &poll)?;
    Ok(Json(History {
        poll: id.to_string(),
        options: snapshot.option_names.clone(),
        points: snapshot.history.clone(),
    }))
}

/// Keeps the subscriber gauge true however the stream ends.
struct SubscriberGuard(Arc<crate::metrics::Metrics>);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.sse_subscribers.dec();
    }
}

/// Sent when nothing changed for [`HEARTBEAT_TICKS`] ticks, so proxies keep the stream open.
const HEARTBEAT_FRAME: &[u8] = b": heartbeat\n\n";

/// Ticks without a change before a heartbeat is sent.
const HEARTBEAT_TICKS: u32 = 10;

/// `GET /v1/polls/{poll}/stream`: a `results` event whenever the results change (checked every
/// SSE tick), a heartbeat comment after [`HEARTBEAT_TICKS`] quiet ticks.
pub(super) async fn stream(
    State(app): State<AppState>,
    Path(poll): Path<String>,
) -> Result<Response, ApiError> {
    let (id, _) = poll_snapshot(&app, &poll)?;
    if app.metrics.sse_subscribers.get() >= app.sse_subscribers_max as i64 {
        return Err(ApiError::Overloaded(5));
    }
    app.metrics.sse_subscribers.inc();
    let guard = SubscriberGuard(app.metrics.clone());
    let mut interval = tokio::time::interval(Duration::from_millis(app.sse_tick_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = (guard, None::<Arc<PollSnapshot>>, interval, 0u32);
    let results = app.results.clone();
    let stopping = app.stopping.clone();
    let frames =
        futures_util::stream::unfold(state, move |(guard, mut last, mut interval, mut quiet)| {
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
                    if last.as_ref().is_none_or(|l| !Arc::ptr_eq(l, &current)) {
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
        });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(frames),
    )
        .into_response())
}
