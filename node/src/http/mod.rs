//! The HTTP API (axum): routes, shared state, and the middleware that times and logs requests.
//!
//! Handlers never touch the replica: writes go to the engine through its bounded queue (full
//! queue → 503 with `Retry-After`), reads come from the engine's latest snapshot.

mod admin;
mod error;
mod ops;
mod reads;
mod votes;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tally_core::VoteIdKey;
use tokio::sync::{mpsc, watch};

pub use admin::{AdminResponse, CreatePoll, PollSummary};
pub use error::ApiError;
pub use reads::{History, ResultsQuery};
pub use votes::{
    BatchRequest, BatchResponse, BatchVote, BinaryBatch, BinaryVote, POSTCARD_MEDIA_TYPE, Receipt,
    VoteRequest, VoteResponse,
};

use crate::Clock;
use crate::config::{ADMIN_BODY_BYTES_MAX, BATCH_BODY_BYTES_MAX, VOTE_BODY_BYTES_MAX};
use crate::engine::Command;
use crate::metrics::Metrics;
use crate::results::ResultsSnapshot;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The engine's command queue.
    pub engine: mpsc::Sender<Command>,
    /// The latest results snapshot.
    pub results: watch::Receiver<Arc<ResultsSnapshot>>,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
    /// Maps client keys to vote IDs.
    pub vote_id_key: Arc<VoteIdKey>,
    /// This node's actor, `node#incarnation`, for receipts.
    pub actor: String,
    /// Admin bearer token; empty disables the admin API.
    pub admin_token: Arc<str>,
    /// The clock, for admin open/close.
    pub clock: Arc<dyn Clock>,
    /// SSE tick in milliseconds.
    pub sse_tick_ms: u64,
    /// Most SSE subscribers at once.
    pub sse_subscribers_max: usize,
    /// Whether the node serves votes (recovered and not stopping).
    pub ready: Arc<AtomicBool>,
    /// Becomes true when the node begins to stop; long-lived streams end then.
    pub stopping: watch::Receiver<bool>,
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    let votes = Router::new()
        .route("/v1/polls/{poll}/votes", post(votes::vote))
        .layer(DefaultBodyLimit::max(VOTE_BODY_BYTES_MAX));
    let batches = Router::new()
        .route("/v1/polls/{poll}/votes/batch", post(votes::batch))
        .layer(DefaultBodyLimit::max(BATCH_BODY_BYTES_MAX));
    let admin = Router::new()
        .route("/v1/admin/polls", post(admin::create_poll))
        .route("/v1/admin/polls/{poll}/open", post(admin::open_poll))
        .route("/v1/admin/polls/{poll}/close", post(admin::close_poll))
        .layer(DefaultBodyLimit::max(ADMIN_BODY_BYTES_MAX));
    Router::new()
        .merge(votes)
        .merge(batches)
        .merge(admin)
        .route("/v1/polls", get(admin::list_polls))
        .route("/v1/polls/{poll}/results", get(reads::results))
        .route("/v1/polls/{poll}/history", get(reads::history))
        .route("/v1/polls/{poll}/stream", get(reads::stream))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .merge(crate::dashboard::routes())
        .fallback(ops::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Times every request by route and logs failures.
async fn observe(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| route_label(p.as_str()))
        .unwrap_or("unmatched");
    let method = request.method().clone();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    app.metrics
        .request_seconds
        .get_or_create(&vec![("route", route)])
        .observe(elapsed.as_secs_f64());
    let status = response.status();
    if status.is_server_error() {
        tracing::warn!(%method, route, %status, ?elapsed, "request failed");
    } else if status.is_client_error() {
        tracing::debug!(%method, route, %status, ?elapsed, "request refused");
    }
    response
}

/// Route templates as static labels (metric label values must not grow without bound).
fn route_label(path: &str) -> &'static str {
    const ROUTES: &[&str] = &[
        "/v1/polls/{poll}/votes",
        "/v1/polls/{poll}/votes/batch",
        "/v1/polls/{poll}/results",
        "/v1/polls/{poll}/history",
        "/v1/polls/{poll}/stream",
        "/v1/polls",
        "/v1/admin/polls",
        "/v1/admin/polls/{poll}/open",
        "/v1/admin/polls/{poll}/close",
        "/metrics",
        "/healthz",
        "/readyz",
        "/",
        "/polls/{poll}",
    ];
    ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or("other")
}
