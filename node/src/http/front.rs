//! The front of the HTTP API: what every request passes once, around the whole router. CORS
//! (tower-http, where a browser reads it: [`tally_serve::cors`]), then [`Front`], which looks
//! the request's path up among the route templates to time the request into its route's
//! latency histogram (and log a failure), and answers a single vote itself.
//!
//! Why one service around the router and not `Router::layer`: axum wraps every route in a boxed
//! service of its own for each layer, so a request paid, per layer, a clone of a boxed service,
//! a boxed future and dynamic calls. With CORS, the timer and the body limits as route layers,
//! that was ~3 µs of a single vote's CPU with the layers' own work, against ~0.3–0.4 µs per
//! boxed level around the router (BENCHMARKS.md, "Single votes against durable Redis"). (The
//! body limits are the handlers' own: [`super::body::TimelyBody`].)
//! Around the router, the request is not matched yet, so [`RouteTable`] matches its path
//! itself, with the matcher axum's router uses (matchit): the same template, the same label.
//! Having matched it, the front calls the single vote's handler itself (`POST` to
//! `/v1/polls/{poll}/votes`, without a per-IP limit configured, whose layer is the router's):
//! axum would match the path again, box the route's service call, and copy the poll's name
//! out of a map of path parameters it adds to the request. A name with a `%` (which axum
//! decodes) goes through the router as before.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::histogram::Histogram;
use tally_serve::cors::BrowserCors;
use tally_serve::either::{BoxedAnswer, Either};

use super::SharedState;
use crate::metrics::Metrics;

/// `routes` with CORS and [`Front`] around it, as one router (the routes' fallback service).
pub(super) fn around(routes: Router, state: &SharedState) -> Router {
    let front = Front {
        table: Arc::new(RouteTable::new(&state.metrics)),
        routes,
        // With a per-IP limit, votes pass the router's layer that applies it.
        votes: state.abuse.per_ip.is_none().then(|| Arc::clone(state)),
    };
    Router::new().fallback_service(BrowserCors::new(&cors(), front))
}

/// Cross-origin access for browser clients of other regions' pages (a voting page served by one
/// region fails over to another): any origin may read and vote, with no credentials. The admin
/// API's `authorization` header is not allowed, so browsers cannot call it cross-origin. No
/// `Vary` header: every answer is the same whatever the origin (`*`) and the preflight's
/// requested method and headers (the lists are fixed), so a cache need not keep one per origin.
pub(super) fn cors() -> tower_http::cors::CorsLayer {
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
        .vary([])
}

/// How long browsers may cache a CORS preflight answer, in seconds.
const CORS_MAX_AGE_SECONDS: u64 = 600;

/// The single vote's route, its position in [`ROUTES`].
const VOTE_ROUTE: usize = 0;

/// Route templates as static labels (metric label values must not grow without bound).
pub(super) const ROUTES: &[&str] = &[
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

/// The route templates, and per template its latency histogram (looked up once when the router
/// is built: a label-set lookup per request allocates, hashes and locks).
struct RouteTable {
    /// Each template of [`ROUTES`], to its index there.
    templates: matchit::Router<usize>,
    /// Indexed like [`ROUTES`].
    seconds: Vec<Histogram>,
    /// Requests no template matches.
    unmatched: Histogram,
}

/// A request's route: its template's index in [`ROUTES`], or `None` if none matches.
type RouteIndex = Option<usize>;

impl RouteTable {
    fn new(metrics: &Metrics) -> Self {
        let mut templates = matchit::Router::new();
        for (index, template) in ROUTES.iter().enumerate() {
            // The templates are constants that axum's router (the same matcher) takes too; one
            // refused here would leave its requests labelled `unmatched`, and the tests below
            // would fail.
            if let Err(error) = templates.insert(*template, index) {
                tracing::error!(template, %error, "a route template cannot be matched");
            }
        }
        Self {
            templates,
            seconds: ROUTES
                .iter()
                .map(|route| metrics.request_histogram(route))
                .collect(),
            unmatched: metrics.request_histogram("unmatched"),
        }
    }

    /// The route of a request for `path`, and the poll it names if it is the single vote's
    /// route and the name needs no decoding.
    fn vote_route_of(&self, path: &str) -> (RouteIndex, Option<String>) {
        let Ok(matched) = self.templates.at(path) else {
            return (None, None);
        };
        let route = *matched.value;
        let poll = (route == VOTE_ROUTE)
            .then(|| matched.params.get("poll"))
            .flatten()
            .filter(|poll| !poll.contains('%'))
            .map(str::to_owned);
        (Some(route), poll)
    }

    /// The metric label and histogram of `route`.
    fn seconds(&self, route: RouteIndex) -> (&'static str, &Histogram) {
        match route {
            Some(index) => (ROUTES[index], &self.seconds[index]),
            None => ("unmatched", &self.unmatched),
        }
    }
}

/// Times every request by route and logs failures; answers single votes itself, everything
/// else through the router. A service of its own rather than `middleware::from_fn`, which
/// clones the inner service into a box and boxes its future on every request.
#[derive(Clone)]
struct Front {
    table: Arc<RouteTable>,
    routes: Router,
    /// The state the vote handler takes, if the front answers votes itself.
    votes: Option<SharedState>,
}

/// A request's answer: from the vote handler, or through the router.
type Answer = Either<BoxedAnswer, <Router as tower::Service<Request>>::Future>;

impl tower::Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Timed<Answer>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready (axum's `Router::poll_ready`), under any limit.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let (route, poll) = self.table.vote_route_of(request.uri().path());
        let method = request.method().clone();
        let inner = match (poll, &self.votes) {
            (Some(poll), Some(app)) if method == Method::POST => {
                let vote = super::votes::vote(State(Arc::clone(app)), Path(poll), request);
                let answer: BoxedAnswer = Box::pin(async move { Ok(vote.await.into_response()) });
                Either::first(answer)
            }
            _ => Either::second(self.routes.call(request)),
        };
        Timed {
            inner,
            started,
            route,
            method,
            table: Arc::clone(&self.table),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being answered, timed from its call.
    struct Timed<F> {
        #[pin]
        inner: F,
        started: Instant,
        route: RouteIndex,
        method: axum::http::Method,
        table: Arc<RouteTable>,
    }
}

impl<F> Future for Timed<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            let elapsed = this.started.elapsed();
            let (route, histogram) = this.table.seconds(*this.route);
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

#[cfg(test)]
mod tests {
    //! Goal: requests are labelled by their route's template, never `unmatched` for a real
    //! route. Method: every path of the OpenAPI document (which lists every API route) is in
    //! [`ROUTES`]; each template, and a concrete path of it, is matched to itself.

    use super::*;

    fn label(table: &RouteTable, path: &str) -> &'static str {
        table.seconds(table.vote_route_of(path).0).0
    }

    #[test]
    fn every_documented_route_has_its_own_metric_label() {
        let document = super::super::openapi_document();
        for path in document.paths.paths.keys() {
            assert!(ROUTES.contains(&path.as_str()), "add {path} to ROUTES");
        }
    }

    #[test]
    fn requests_are_labelled_by_the_template_their_path_matches() {
        let table = RouteTable::new(&Metrics::new());
        for template in ROUTES {
            assert_eq!(label(&table, template), *template);
            let concrete = template.replace("{poll}", "superbowl");
            assert_eq!(label(&table, &concrete), *template, "{concrete}");
        }
        assert_eq!(label(&table, "/v1/polls/superbowl/nothing"), "unmatched");
        assert_eq!(label(&table, "/nothing/here"), "unmatched");
    }

    #[test]
    fn the_front_answers_only_the_single_votes_route_with_a_plain_poll_name() {
        // Goal: the front's own vote path takes exactly the requests axum would route to the
        // vote handler with the same poll name. Method: the vote route's template and
        // concrete paths, the batch route, and a name axum would percent-decode.
        let table = RouteTable::new(&Metrics::new());
        assert_eq!(ROUTES[VOTE_ROUTE], "/v1/polls/{poll}/votes");
        let poll = |path| table.vote_route_of(path).1;
        assert_eq!(
            poll("/v1/polls/superbowl/votes"),
            Some("superbowl".to_owned())
        );
        assert_eq!(poll("/v1/polls/superbowl/votes/batch"), None);
        assert_eq!(poll("/v1/polls/super%62owl/votes"), None);
        assert_eq!(poll("/v1/polls/superbowl/results"), None);
        assert_eq!(
            table.vote_route_of("/v1/polls/superbowl/votes").0,
            Some(VOTE_ROUTE)
        );
    }
}
