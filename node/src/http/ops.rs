//! Operational routes: Prometheus metrics, liveness, readiness, and the JSON 404 and 405.

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
    app.metrics.observe_health(&app.health);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
}

/// Liveness: the process is alive and worth keeping. 503 once its write-ahead log has failed
/// (it is finishing what was durable and will exit; a supervisor should restart it).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "Alive", body = String, example = "ok\n"),
        (status = 503, description = "The write-ahead log failed; the node is exiting",
            body = String, example = "unhealthy: log_failed\n"),
    ),
)]
pub(super) async fn healthz(State(app): State<SharedState>) -> (StatusCode, String) {
    if app.health.is_live() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy: log_failed\n".to_owned(),
        )
    }
}

/// Readiness: 200 once the log is recovered, the node has caught up with its peers and
/// nothing holds it back; 503 otherwise, with one line per hold (`name: why`).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Serving votes", body = String, example = "ready\n"),
        (status = 503, description = "Starting, stopping, or held back (low disk, a skewed \
            clock, a failed log, a poll defined otherwise than the cluster): one line per \
            reason, and one per disputed poll", body = String,
            example = "not ready\ndisk_low: the data directory is low on free space\n"),
    ),
)]
pub(super) async fn readyz(State(app): State<SharedState>) -> (StatusCode, String) {
    let holds = app.health.holds();
    if holds.is_empty() {
        return (StatusCode::OK, "ready\n".to_owned());
    }
    let mut body = "not ready\n".to_owned();
    for hold in holds {
        body.push_str(&format!("{}: {}\n", hold.as_str(), hold.message()));
    }
    let results = app.results.borrow().clone();
    for snapshot in results.polls.values() {
        if let Some(dispute) = snapshot
            .results
            .dispute
            .as_ref()
            .filter(|d| d.refusing_votes)
        {
            body.push_str(&format!("  {}\n", dispute.message));
        }
    }
    (StatusCode::SERVICE_UNAVAILABLE, body)
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
