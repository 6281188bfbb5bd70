//! The HTTP API (axum): routes, shared state, and the middleware that times and logs requests.
//!
//! Handlers never touch the replica: writes go to the engine through its bounded queue (full
//! queue → 503 with `Retry-After`), reads come from the engine's latest snapshot.
//!
//! Each API route is registered through its handler's `#[utoipa::path]` attribute, which also
//! describes it in the OpenAPI document served at `/openapi.json` ([`openapi`]): one source for
//! both, so the document cannot list a route the router lacks, or miss one it has.

mod admin;
mod admin_token;
mod audit;
mod body;
use tally_serve::caching;
mod engine_error;
mod front;
mod integral;
mod openapi;
mod ops;
mod ops_listener;
mod reads;
mod votes;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use tally_core::VoteIdKey;
use tokio::sync::{mpsc, watch};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use admin::{AdminResponse, CreatePoll, PollSummary};
pub use audit::{
    BinaryLookup, BinaryLookupResponse, LOOKUP_NOT_HELD, LookedUp, LookupRequest, LookupResponse,
};
pub use body::BODY_READ_TIMEOUT_MS_DEFAULT;
pub use openapi::OPENAPI_PATH;
pub use ops_listener::split_ops;
pub use reads::ResultsQuery;
pub use tally_core::abuse;
pub use tally_serve::error::ApiError;
#[doc(hidden)]
pub use votes::check_vote_body;
// The request and response bodies are defined once, in `tally_client::api` (the client and the
// edge read and write the same types).
pub use tally_client::api::{
    BatchRequest, BatchResponse, BatchVote, BatchVoteStatus, BinaryBatch, BinaryVote, ErrorBody,
    ErrorCode, History, POSTCARD_MEDIA_TYPE, Receipt, VoteRequest, VoteResponse, VoteStatus,
};

use crate::config::{Config, ConfigError, Validated};
use crate::engine::Command;
use crate::metrics::Metrics;
use crate::results::ResultsSnapshot;
use tally_core::Clock;

/// What every handler can reach. The router holds it in one [`Arc`] ([`SharedState`]), so a
/// request clones one pointer rather than every field.
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
    /// This node's ID: a receipt names the actor `node#incarnation` of the vote's answer.
    pub node: tally_core::NodeId,
    /// Admin bearer token; empty disables the admin API.
    pub admin_token: Arc<str>,
    /// The edges' bearer token: batches only (empty: none).
    pub batch_token: Arc<str>,
    /// The clock, for admin open/close.
    pub clock: Arc<dyn Clock>,
    /// SSE tick in milliseconds.
    pub sse_tick_ms: u64,
    /// The SSE subscribers' memory budget (shared by the route and the path below hyper).
    pub viewer_budget: Arc<tally_serve::viewers::ViewerBudget>,
    /// Why the node is not serving, if it is not.
    pub health: Arc<crate::health::Health>,
    /// Becomes true when the node begins to stop; long-lived streams end then.
    pub stopping: watch::Receiver<bool>,
    /// The regions' public base URLs the voting page votes through (nearest first).
    pub public_endpoints: Arc<[String]>,
    /// Rate limits and vote tokens (all off by default).
    pub abuse: Arc<abuse::AbuseControls>,
    /// How long a request body may take to arrive after its headers (then 408).
    pub body_read_timeout: std::time::Duration,
}

/// The node's running parts the router serves from; [`AppState::new`] takes the rest from the
/// configuration.
pub struct Wiring {
    /// The engine's command queue.
    pub engine: mpsc::Sender<Command>,
    /// The latest results snapshot.
    pub results: watch::Receiver<Arc<ResultsSnapshot>>,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Why the node is not serving, if it is not.
    pub health: Arc<crate::health::Health>,
    /// Becomes true when the node begins to stop.
    pub stopping: watch::Receiver<bool>,
}

impl AppState {
    /// The state of a node's router: its running parts, and every setting from `config` (with
    /// the pieces `validated` parsed from it). Fails only if the abuse controls are invalid.
    pub fn new(
        wiring: Wiring,
        config: &Config,
        validated: &Validated,
    ) -> Result<AppState, ConfigError> {
        let Wiring {
            engine,
            results,
            metrics,
            clock,
            health,
            stopping,
        } = wiring;
        Ok(AppState {
            engine,
            results,
            metrics,
            vote_id_key: Arc::new(validated.vote_id_key.clone()),
            node: validated.node_id.clone(),
            admin_token: Arc::from(config.admin_token.as_str()),
            batch_token: Arc::from(config.batch_token.as_str()),
            clock,
            sse_tick_ms: config.sse_tick_ms,
            viewer_budget: tally_serve::viewers::ViewerBudget::new(config.viewer_memory_bytes),
            health,
            stopping,
            public_endpoints: config.public_endpoints.clone().into(),
            abuse: Arc::new(config.abuse_controls()?),
            body_read_timeout: std::time::Duration::from_millis(config.body_read_timeout_ms),
        })
    }
}

/// The state as handlers extract it: one reference count per request.
type SharedState = Arc<AppState>;

/// The whole router: every route, with CORS, the request timer and the body limits around it
/// ([`front`]).
pub fn router(state: AppState) -> Router {
    let state = Arc::new(state);
    let (api, document) = api_routes(&state).split_for_parts();
    let document = openapi::complete(document);
    let front_state = Arc::clone(&state);
    let routes = api
        .route(OPENAPI_PATH, openapi::route(&document))
        .merge(tally_serve::pages::routes(state.public_endpoints.clone()))
        .fallback(ops::not_found)
        // After every route is in: it applies to the routes registered so far.
        .method_not_allowed_fallback(ops::method_not_allowed)
        .with_state(state);
    front::around(routes, &front_state)
}

/// The live stream's route as served below hyper ([`tally_serve::viewers`]), with the headers
/// the router's answer carries.
pub fn streams(state: &AppState) -> tally_serve::viewers::Streams {
    let viewers = reads::Viewers::of(state, tally_serve::viewers::ViewerPath::BelowHyper);
    tally_serve::viewers::Streams::new(Arc::new(viewers), &tally_serve::cors::policy())
}

/// The OpenAPI document of [`router`], as served at [`OPENAPI_PATH`].
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let (engine, _) = mpsc::channel(1);
    let (_, results) = watch::channel(Arc::new(ResultsSnapshot::default()));
    let (_, stopping) = watch::channel(false);
    let wiring = Wiring {
        engine,
        results,
        metrics: Arc::new(Metrics::new()),
        clock: Arc::new(crate::clock::SystemClock),
        health: Arc::new(crate::health::Health::new(&[crate::health::Hold::Stopping])),
        stopping,
    };
    // Only the document is kept: the state is never served.
    let config = Config::default();
    let state = config
        .validate()
        .and_then(|validated| AppState::new(wiring, &config, &validated))
        .unwrap_or_else(|_| unreachable!("the default configuration is valid"));
    let state = Arc::new(state);
    openapi::complete(api_routes(&state).into_openapi())
}

/// Refuses a vote request with 429 when its client IP is over the per-IP rate limit, before
/// the body is read or the engine asked: a limited request changes nothing. A batch that
/// presents the batch token comes from an edge, which limits its own voters by IP: it is
/// not limited here (an edge's address would otherwise be one very busy client).
async fn limit_by_ip(State(app): State<SharedState>, request: Request, next: Next) -> Response {
    if admin_token::presents_batch_token(&app, request.headers()) {
        return next.run(request).await;
    }
    let client = request
        .extensions()
        .get::<axum::extract::ConnectInfo<tally_serve::connections::ClientAddr>>()
        .and_then(|info| info.0.0);
    if let (Some(limiter), Some(client)) = (&app.abuse.per_ip, client) {
        if let Err(seconds) = limiter.check(client.ip(), app.clock.now()) {
            app.metrics
                .count_rejections(ErrorCode::RateLimited.as_str(), 1);
            return axum::response::IntoResponse::into_response(ApiError::RateLimited(seconds));
        }
    }
    next.run(request).await
}

/// Every JSON API route and the document that describes them (their body limits are the
/// handlers' own: [`body`]).
fn api_routes(state: &SharedState) -> OpenApiRouter<SharedState> {
    let mut votes = OpenApiRouter::new().routes(routes!(votes::vote));
    let mut batches = OpenApiRouter::new().routes(routes!(votes::batch));
    // Only with a per-IP limit configured: the layer boxes each request's service and future.
    if state.abuse.per_ip.is_some() {
        let limit_by_ip = middleware::from_fn_with_state(Arc::clone(state), limit_by_ip);
        votes = votes.layer(limit_by_ip.clone());
        batches = batches.layer(limit_by_ip);
    }
    OpenApiRouter::with_openapi(openapi::base())
        .merge(votes)
        .merge(batches)
        .routes(routes!(admin::create_poll))
        .routes(routes!(admin::open_poll))
        .routes(routes!(admin::close_poll))
        .routes(routes!(audit::lookup))
        .routes(routes!(admin::list_polls))
        .routes(routes!(reads::results))
        .routes(routes!(reads::history))
        .routes(routes!(reads::stream))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
}
