//! Operational routes: Prometheus metrics, liveness, readiness, and the JSON 404.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;

use super::{ApiError, AppState};

/// `GET /metrics`: OpenMetrics text.
pub(super) async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
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

/// `GET /healthz`: the process is alive and serving HTTP.
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 once the log is recovered and votes are accepted, 503 otherwise.
pub(super) async fn readyz(State(app): State<AppState>) -> (StatusCode, &'static str) {
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
