//! The poll list, results and history through an edge: each request passed to the nearest
//! node that is ready, and its answer passed back as it came (status, type, body). A bridge
//! so that pages and clients pointed at edges read results too: the viewers' tier proper (one
//! subscription per poll, shared, cached answers) replaces it (issue 23). SSE streams are not
//! passed: clients fall back to polling `results`.
//!
//! Bounded: at most [`READS_IN_FLIGHT_MAX`] at once (more get 503 `overloaded` at once),
//! each within [`READ_TIMEOUT_MS`]; no node ready: 503 `unavailable`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tally_serve::error::ApiError;

use super::EdgeState;
use crate::upstream::{Exchanged, exchange, request};

/// Reads passed to nodes at once.
pub const READS_IN_FLIGHT_MAX: usize = 256;

/// How long a passed read may take, in ms.
pub const READ_TIMEOUT_MS: u64 = 2_000;

/// Passes a read to the nearest ready node.
pub(super) async fn pass(State(edge): State<Arc<EdgeState>>, incoming: Request) -> Response {
    let Some(node) = edge.dispatch.availability.nearest() else {
        return ApiError::Unavailable("no node can answer now").into_response();
    };
    let Some(endpoint) = edge.upstreams.get(node) else {
        return ApiError::Unavailable("no node can answer now").into_response();
    };
    let path = incoming
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let Some(outgoing) = request(endpoint, hyper::Method::GET, &path, &[], Bytes::new()) else {
        return ApiError::NotFound(path).into_response();
    };
    let timeout = Duration::from_millis(READ_TIMEOUT_MS);
    match exchange(&*edge.connector, endpoint, None, outgoing, timeout)
        .await
        .0
    {
        Exchanged::Answered { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let json = HeaderValue::from_static("application/json");
            (status, [(header::CONTENT_TYPE, json)], body).into_response()
        }
        Exchanged::NotSent(_) | Exchanged::Lost(_) => {
            ApiError::Unavailable("the node did not answer in time").into_response()
        }
    }
}
