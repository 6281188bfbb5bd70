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
mod integral;
mod openapi;
mod ops;
mod ops_listener;
mod reads;
mod votes;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use tally_core::VoteIdKey;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
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

use crate::config::{
    ADMIN_BODY_BYTES_MAX, BATCH_BODY_BYTES_MAX, Config, ConfigError, VOTE_BODY_BYTES_MAX, Validated,
};
use crate::engine::Command;
use crate::metrics::Metrics;
use crate::results::ResultsSnapshot;
use prometheus_client::metrics::histogram::Histogram;
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
    /// Most SSE subscribers at once.
    pub sse_subscribers_max: usize,
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
            sse_subscribers_max: config.sse_subscribers_max,
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

/// The whole router.
pub fn router(state: AppState) -> Router {
    let state = Arc::new(state);
    let (api, document) = api_routes(&state).split_for_parts();
    let document = openapi::complete(document);
    let route_seconds = Arc::new(RouteSeconds::new(&state.metrics));
    api.route(OPENAPI_PATH, openapi::route(&document))
        .merge(tally_serve::pages::routes(state.public_endpoints.clone()))
        .fallback(ops::not_found)
        // After every route is in: it applies to the routes registered so far.
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(ObserveLayer(route_seconds))
        .layer(cors())
        .with_state(state)
}

/// Cross-origin access for browser clients of other regions' pages (a voting page served by one
/// region fails over to another): any origin may read and vote, with no credentials. The admin
/// API's `authorization` header is not allowed, so browsers cannot call it cross-origin.
fn cors() -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, Method, header};
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
        ])
        .max_age(std::time::Duration::from_secs(CORS_MAX_AGE_SECONDS))
}

/// How long browsers may cache a CORS preflight answer, in seconds.
const CORS_MAX_AGE_SECONDS: u64 = 600;

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

/// Every JSON API route, each with its body limit, and the document that describes them.
fn api_routes(state: &SharedState) -> OpenApiRouter<SharedState> {
    let mut votes = OpenApiRouter::new()
        .routes(routes!(votes::vote))
        .layer(DefaultBodyLimit::max(VOTE_BODY_BYTES_MAX));
    let mut batches = OpenApiRouter::new()
        .routes(routes!(votes::batch))
        .layer(DefaultBodyLimit::max(BATCH_BODY_BYTES_MAX));
    // Only with a per-IP limit configured: the layer boxes each request's service and future.
    if state.abuse.per_ip.is_some() {
        let limit_by_ip = middleware::from_fn_with_state(Arc::clone(state), limit_by_ip);
        votes = votes.layer(limit_by_ip.clone());
        batches = batches.layer(limit_by_ip);
    }
    let admin = OpenApiRouter::new()
        .routes(routes!(admin::create_poll))
        .routes(routes!(admin::open_poll))
        .routes(routes!(admin::close_poll))
        .layer(DefaultBodyLimit::max(ADMIN_BODY_BYTES_MAX));
    let audit = OpenApiRouter::new()
        .routes(routes!(audit::lookup))
        .layer(DefaultBodyLimit::max(BATCH_BODY_BYTES_MAX));
    OpenApiRouter::with_openapi(openapi::base())
        .merge(votes)
        .merge(batches)
        .merge(admin)
        .merge(audit)
        .routes(routes!(admin::list_polls))
        .routes(routes!(reads::results))
        .routes(routes!(reads::history))
        .routes(routes!(reads::stream))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
}

/// The request-latency histogram of every route label, looked up once when the router is built
/// (a label-set lookup per request allocates, hashes and locks).
struct RouteSeconds {
    /// Indexed like [`ROUTES`].
    routes: Vec<Histogram>,
    other: Histogram,
    unmatched: Histogram,
}

impl RouteSeconds {
    fn new(metrics: &Metrics) -> Self {
        Self {
            routes: ROUTES
                .iter()
                .map(|route| metrics.request_histogram(route))
                .collect(),
            other: metrics.request_histogram("other"),
            unmatched: metrics.request_histogram("unmatched"),
        }
    }

    /// Which histogram times `request`.
    fn index_of(&self, request: &Request) -> RouteIndex {
        match request.extensions().get::<MatchedPath>() {
            None => RouteIndex::Unmatched,
            Some(path) => route_index(path.as_str()).map_or(RouteIndex::Other, RouteIndex::Route),
        }
    }

    /// The label and histogram of `index`.
    fn get(&self, index: RouteIndex) -> (&'static str, &Histogram) {
        match index {
            RouteIndex::Route(index) => (ROUTES[index], &self.routes[index]),
            RouteIndex::Other => ("other", &self.other),
            RouteIndex::Unmatched => ("unmatched", &self.unmatched),
        }
    }
}

/// A request's route, as [`RouteSeconds`] labels it.
#[derive(Debug, Clone, Copy)]
enum RouteIndex {
    /// Its template's position in [`ROUTES`].
    Route(usize),
    /// A matched template missing from [`ROUTES`].
    Other,
    /// No route matched.
    Unmatched,
}

/// Times every request by route and logs failures. A tower layer of its own rather than
/// `middleware::from_fn`, which clones the inner service into a box and boxes its future on
/// every request (measured in BENCHMARKS.md, "Single votes: the HTTP layers and the engine on the HTTP runtime").
#[derive(Clone)]
struct ObserveLayer(Arc<RouteSeconds>);

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            seconds: Arc::clone(&self.0),
        }
    }
}

/// [`ObserveLayer`]'s service.
#[derive(Clone)]
struct Observe<S> {
    inner: S,
    seconds: Arc<RouteSeconds>,
}

impl<S> tower::Service<Request> for Observe<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = self.seconds.index_of(&request);
        let method = request.method().clone();
        Observed {
            inner: self.inner.call(request),
            started: Instant::now(),
            route,
            method,
            seconds: Arc::clone(&self.seconds),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being answered, timed from its call.
    struct Observed<F> {
        #[pin]
        inner: F,
        started: Instant,
        route: RouteIndex,
        method: axum::http::Method,
        seconds: Arc<RouteSeconds>,
    }
}

impl<F, E> Future for Observed<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            let elapsed = this.started.elapsed();
            let (route, histogram) = this.seconds.get(*this.route);
            histogram.observe(elapsed.as_secs_f64());
            let status = response.status();
            let method = &*this.method;
            // A 503 is a deliberate refusal (shedding, a hold, a disputed poll): counted in
            // `tally_vote_rejections_total` and logged once where its cause arises, not once
            // per refused vote, which at peak would be a flood of identical lines.
            if status == axum::http::StatusCode::SERVICE_UNAVAILABLE {
                tracing::debug!(%method, route, %status, ?elapsed, "request refused for now");
            } else if status.is_server_error() {
                tracing::warn!(%method, route, %status, ?elapsed, "request failed");
            } else if status.is_client_error() {
                tracing::debug!(%method, route, %status, ?elapsed, "request refused");
            }
        }
        Poll::Ready(result)
    }
}

/// Route templates as static labels (metric label values must not grow without bound).
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
    "/v1/admin/polls/{poll}/lookup",
    "/metrics",
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/",
    "/polls/{poll}",
    "/assets/dashboard.css",
    "/assets/dashboard.js",
    "/client.js",
    "/vote/{poll}",
    "/assets/vote.js",
    "/assets/vote.css",
];

/// The position of `path` in [`ROUTES`], if it is a route template there.
fn route_index(path: &str) -> Option<usize> {
    ROUTES.iter().position(|r| *r == path)
}

/// The metric label of a route template: itself, or "other".
#[cfg(test)]
fn route_label(path: &str) -> &'static str {
    route_index(path).map_or("other", |index| ROUTES[index])
}

#[cfg(test)]
mod tests {
    //! Goal: request metrics are labelled by every route template, never "other" for a real
    //! route. Method: every path of the OpenAPI document (which lists every route) has a label.

    use super::*;

    #[test]
    fn every_documented_route_has_its_own_metric_label() {
        let document = openapi_document();
        for path in document.paths.paths.keys() {
            assert_eq!(
                route_label(path),
                path.as_str(),
                "add {path} to route_label"
            );
        }
    }
}
