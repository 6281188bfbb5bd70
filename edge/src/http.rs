//! The edge's HTTP API: the voting route exactly as a node serves it (same body, headers,
//! answers, receipts and error codes, so the browser and Rust clients and the voting page work
//! unchanged against an edge), the viewers' routes (live stream, results, history, poll list)
//! answered by the fan-out from one subscription per poll ([`views`], [`crate::fanout`]), the
//! dashboard, the voting page and `/client.js` as a node serves them, and `/healthz`,
//! `/readyz`, `/metrics`. Every other path is the node's JSON 404.
//!
//! The door's bound: at most `votes_waiting_max` votes are waiting at once, and at most
//! [`BATCHES_IN_FLIGHT_MAX`] batch requests (a semaphore each, [`EdgeState::door`]); one more
//! is shed at once with 503 `overloaded` and `Retry-After`, before its body is read.
//!
//! The single vote's path is the cheapest the edge can make it, as it carries the burst:
//! [`Front`] answers `POST /v1/polls/{poll}/votes` itself, without axum's router (which would
//! match the path again, box the route's service call and copy the poll's name out of a map
//! of path parameters), CORS applies only where a browser reads it
//! ([`tally_serve::cors`]), and the door's bounds are semaphores in the handlers rather than
//! route layers (each of which boxes a service clone and a future per request).

mod batch;
mod ops;
mod reads;
mod views;
mod vote;

pub use batch::BATCHES_IN_FLIGHT_MAX;
pub use reads::{READ_TIMEOUT_MS, READS_IN_FLIGHT_MAX};

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Path, Request, State};
use axum::http::Method;
use axum::response::Response;
use axum::routing::{get, post};
use tally_core::abuse::{AbuseControls, TrustedProxies};
use tally_core::{Clock, VoteIdKey};
use tally_serve::cors::BrowserCors;
use tally_serve::either::{BoxedAnswer, Either};
use tally_serve::error::ApiError;
use tokio::sync::{Semaphore, SemaphorePermit, watch};

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
    /// The viewers' tier: live streams and cached reads.
    pub fanout: crate::fanout::Fanout,
    /// The regions' public URLs the voting page votes through.
    pub public_endpoints: Arc<[String]>,
    /// The door's bounds on requests waiting.
    pub door: Door,
}

/// The door's bounds: a permit per single vote or batch request waiting for its answer.
pub struct Door {
    /// Single votes waiting (`votes_waiting_max` permits).
    pub votes: Semaphore,
    /// Batch requests waiting ([`BATCHES_IN_FLIGHT_MAX`] permits).
    pub batches: Semaphore,
}

impl Door {
    /// A door for at most `votes_waiting_max` single votes waiting.
    pub fn new(votes_waiting_max: usize) -> Self {
        Self {
            votes: Semaphore::new(votes_waiting_max),
            batches: Semaphore::new(BATCHES_IN_FLIGHT_MAX),
        }
    }
}

/// A permit of `bound`, or 503 `overloaded` at once (counted as a refusal at the door).
pub(crate) fn enter<'a>(
    edge: &EdgeState,
    bound: &'a Semaphore,
) -> Result<SemaphorePermit<'a>, ApiError> {
    bound.try_acquire().map_err(|_| {
        let shed = ApiError::Overloaded(1);
        edge.metrics.rejected(shed.code());
        shed
    })
}

/// The whole router, with [`Front`] and CORS around it, and the live stream's route as served
/// below hyper ([`tally_serve::viewers`]) from the same state.
pub fn router(state: EdgeState) -> (Router, tally_serve::viewers::Streams) {
    let state = Arc::new(state);
    let streams = tally_serve::viewers::Streams::new(
        Arc::new(views::Viewers(Arc::clone(&state))),
        &tally_serve::cors::policy(),
    );
    let reads = Router::new()
        .route("/v1/polls", get(views::poll_list))
        .route("/v1/polls/{poll}/results", get(views::results))
        .route("/v1/polls/{poll}/history", get(views::history))
        .layer(shedding_limit(READS_IN_FLIGHT_MAX));
    // Not under the reads' limit: a stream holds its place for as long as it is watched (the
    // viewer cap bounds them).
    let stream = Router::new().route("/v1/polls/{poll}/stream", get(views::stream));
    let routes = Router::new()
        .route(VOTE_ROUTE, post(vote::vote))
        .route("/v1/polls/{poll}/votes/batch", post(batch::batch))
        .merge(reads)
        .merge(stream)
        .merge(tally_serve::pages::routes(state.public_endpoints.clone()))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .with_state(Arc::clone(&state));
    let front = Front { routes, state };
    // CORS around the whole router once: `Router::layer` would wrap every route in a boxed
    // service of its own, a clone and a boxed future per request (as on a node).
    let router =
        Router::new().fallback_service(BrowserCors::new(&tally_serve::cors::policy(), front));
    (router, streams)
}

/// The single vote's route.
const VOTE_ROUTE: &str = "/v1/polls/{poll}/votes";

/// The poll a single vote's path names (`/v1/polls/{poll}/votes`), if the name needs no
/// decoding (a `%` goes through the router, which decodes it).
fn vote_poll(path: &str) -> Option<&str> {
    let poll = path.strip_prefix("/v1/polls/")?.strip_suffix("/votes")?;
    (!poll.is_empty() && !poll.contains(['/', '%'])).then_some(poll)
}

/// Answers single votes itself, everything else through the router.
#[derive(Clone)]
struct Front {
    routes: Router,
    state: Arc<EdgeState>,
}

impl tower::Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<BoxedAnswer, <Router as tower::Service<Request>>::Future>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready (axum's `Router::poll_ready`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let poll = (request.method() == Method::POST)
            .then(|| vote_poll(request.uri().path()))
            .flatten()
            .map(str::to_owned);
        match poll {
            Some(poll) => {
                let vote = vote::vote(State(Arc::clone(&self.state)), Path(poll), request);
                Either::first(Box::pin(async move { Ok(vote.await) }))
            }
            None => Either::second(self.routes.call(request)),
        }
    }
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

#[cfg(test)]
mod tests {
    //! Goal: the front's own vote path takes exactly the requests axum would route to the vote
    //! handler with the same poll name. Method: the vote route's paths, near misses, and a name
    //! axum would percent-decode.

    use super::*;

    #[test]
    fn the_front_answers_only_the_single_votes_route_with_a_plain_poll_name() {
        assert_eq!(vote_poll("/v1/polls/superbowl/votes"), Some("superbowl"));
        for path in [
            "/v1/polls/superbowl/votes/batch",
            "/v1/polls/superbowl/votes/",
            "/v1/polls//votes",
            "/v1/polls/a/b/votes",
            "/v1/polls/super%62owl/votes",
            "/v1/polls/superbowl/results",
            "/v1/polls/votes",
        ] {
            assert_eq!(vote_poll(path), None, "{path}");
        }
    }
}
