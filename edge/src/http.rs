//! The edge's HTTP API: the voting route exactly as a node serves it (same body, headers,
//! answers, receipts and error codes, so the browser and Rust clients and the voting page work
//! unchanged against an edge), the poll list, results and history passed to a node (a bridge
//! until the viewers' tier, [`reads`]), and `/healthz`, `/readyz`, `/metrics`. Every other
//! path is the node's JSON 404.
//!
//! The door's bound: at most `votes_waiting_max` votes are waiting at once (tower's
//! `GlobalConcurrencyLimit`); one more is shed at once with 503 `overloaded` and `Retry-After`
//! (tower's `LoadShed`), before its body is read.

mod batch;
mod ops;
mod reads;
mod vote;

pub use batch::BATCHES_IN_FLIGHT_MAX;
pub use reads::{READ_TIMEOUT_MS, READS_IN_FLIGHT_MAX};

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::routing::{get, post};
use tally_core::abuse::{AbuseControls, TrustedProxies};
use tally_core::{Clock, VoteIdKey};
use tally_serve::error::ApiError;
use tokio::sync::watch;

use crate::dispatch::Dispatch;
use crate::metrics::EdgeMetrics;

/// What every handler can reach.
pub struct EdgeState {
    /// The dispatcher's door.
    pub dispatch: Dispatch,
    /// Maps client keys to vote IDs (the cluster's key).
    pub vote_id_key: VoteIdKey,
    /// Rate limits and vote tokens.
    pub abuse: AbuseControls,
    /// Whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// The wall clock (vote tokens' expiry, rate limits).
    pub clock: Arc<dyn Clock>,
    /// The metrics.
    pub metrics: Arc<EdgeMetrics>,
    /// How long a body may take after its headers.
    pub body_read_timeout: Duration,
    /// How long a vote may wait for its answer (the dispatcher answers by then).
    pub vote_deadline: Duration,
    /// Becomes true when the edge begins to stop.
    pub stopping: watch::Receiver<bool>,
    /// The nodes, nearest first (reads are passed to them).
    pub upstreams: Vec<tally_client::Endpoint>,
    /// How reads reach them.
    pub connector: Arc<dyn crate::upstream::Connector>,
    /// The batch token: callers of the edge's batch route present it (as the edge does to
    /// nodes) whenever it is set or vote tokens are on.
    pub batch_token: Arc<str>,
}

/// The whole router; at most `votes_waiting_max` votes wait at once.
pub fn router(state: EdgeState, votes_waiting_max: usize) -> Router {
    let state = Arc::new(state);
    let votes = Router::new()
        .route("/v1/polls/{poll}/votes", post(vote::vote))
        .layer(shedding_limit(votes_waiting_max));
    let batches = Router::new()
        .route("/v1/polls/{poll}/votes/batch", post(batch::batch))
        .layer(shedding_limit(BATCHES_IN_FLIGHT_MAX));
    let reads = Router::new()
        .route("/v1/polls", get(reads::pass))
        .route("/v1/polls/{poll}/results", get(reads::pass))
        .route("/v1/polls/{poll}/history", get(reads::pass))
        .layer(shedding_limit(READS_IN_FLIGHT_MAX));
    let routes = votes
        .merge(batches)
        .merge(reads)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .with_state(state);
    // CORS around the whole router once: `Router::layer` would wrap every route in a boxed
    // service of its own, a clone and a boxed future per request (as on a node).
    Router::new().fallback_service(tower::Layer::layer(&cors(), routes))
}

/// What a full door answers: 503 `overloaded`, `Retry-After: 1`.
type Overloaded = fn(tower::BoxError) -> std::future::Ready<ApiError>;

/// The layers of [`shedding_limit`], outermost first.
type SheddingLimit = tower::layer::util::Stack<
    tower::limit::GlobalConcurrencyLimitLayer,
    tower::layer::util::Stack<
        tower::load_shed::LoadShedLayer,
        tower::layer::util::Stack<HandleErrorLayer<Overloaded, ()>, tower::layer::util::Identity>,
    >,
>;

/// Sheds requests past `max` at once with 503 `overloaded` (tower's `LoadShed` over a
/// `GlobalConcurrencyLimit`).
fn shedding_limit(max: usize) -> tower::ServiceBuilder<SheddingLimit> {
    let overloaded: Overloaded = |_| std::future::ready(ApiError::Overloaded(1));
    tower::ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(max))
}

/// As on a node: any origin may vote (a voting page of one region fails over to another's
/// edges), with no credentials.
fn cors() -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, Method, header};
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static(tally_core::abuse::VOTE_TOKEN_HEADER),
        ])
        .max_age(Duration::from_secs(CORS_MAX_AGE_SECONDS))
}

/// How long browsers may cache a CORS preflight answer, in seconds.
const CORS_MAX_AGE_SECONDS: u64 = 600;
