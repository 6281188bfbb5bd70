//! The edge's operational routes: liveness, readiness, metrics, and the JSON 404 and 405.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::IntoResponse;
use tally_serve::error::ApiError;

use super::EdgeState;

/// Liveness: the process serves. (An edge holds nothing that can fail for good: a supervisor
/// restarting it would change nothing.)
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// Why the edge does not take votes, one line each; empty when it does.
pub(super) fn not_ready_reasons(edge: &EdgeState) -> Vec<&'static str> {
    let mut reasons = Vec::new();
    if *edge.stopping.borrow() {
        reasons.push("stopping: the edge is draining");
    }
    if !edge.dispatch.catalogue.borrow().learnt {
        reasons.push("no_polls: no node has answered with its polls yet");
    }
    if edge.dispatch.availability.nodes() == 0 {
        reasons.push("no_node: no node is ready with its breaker closed");
    }
    reasons
}

/// Readiness: 200 once a node has answered with its polls and some node can take votes,
/// until the edge begins to stop; 503 otherwise, one line per reason.
pub(super) async fn readyz(State(edge): State<Arc<EdgeState>>) -> (StatusCode, String) {
    let reasons = not_ready_reasons(&edge);
    edge.metrics.ready.set(i64::from(reasons.is_empty()));
    if reasons.is_empty() {
        return (StatusCode::OK, "ready\n".to_owned());
    }
    let mut body = "not ready\n".to_owned();
    for reason in reasons {
        body.push_str(reason);
        body.push('\n');
    }
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

/// Prometheus metrics (OpenMetrics text).
pub(super) async fn metrics(State(edge): State<Arc<EdgeState>>) -> impl IntoResponse {
    edge.metrics
        .ready
        .set(i64::from(not_ready_reasons(&edge).is_empty()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        edge.metrics.render(),
    )
}

/// Any other path.
pub(super) async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

/// A route's path with a method it does not answer.
pub(super) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}
