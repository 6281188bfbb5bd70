//! Operational routes: Prometheus metrics, liveness, readiness, and the JSON 404 and 405.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::IntoResponse;

use super::{ApiError, SharedState};

/// Prometheus metrics (OpenMetrics text).
///
/// Votes by outcome and refusal reason, request latency by route, write-ahead log fsync
/// latency and group sizes, SSE subscribers, queue depths, readiness.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "The metrics", body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")),
)]
pub(super) async fn metrics(State(app): State<SharedState>) -> impl IntoResponse {
    let ready = app.ready.load(Ordering::Acquire);
    app.metrics.ready.set(i64::from(ready));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
}

/// Liveness: the process is alive and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", body = String, example = "ok\n")),
)]
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: 200 once the log is recovered and votes are accepted, 503 otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Serving votes", body = String, example = "ready\n"),
        (status = 503, description = "Starting or stopping", body = String,
            example = "not ready\n"),
    ),
)]
pub(super) async fn readyz(State(app): State<SharedState>) -> (StatusCode, &'static str) {
    if app.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Any other path.
pub(super) async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

/// A route's path with a method it does not answer (axum adds the `Allow` header).
pub(super) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}
