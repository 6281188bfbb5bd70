//! CORS where a browser reads it. Node and edge answer any origin (a voting page served by one
//! region fails over to another's nodes and edges), so every answer carries the same CORS
//! headers; but tower-http's `Cors` builds a header map for every request and merges it into
//! every answer (~0.3 µs of a single vote's CPU, BENCHMARKS.md, "Single votes against durable
//! Redis"). [`BrowserCors`] skips it for a `POST` without an `Origin` header: browsers send
//! `Origin` with every `POST`, cross-origin or not, so such a request comes from a program that
//! reads no CORS header, and an answer to a `POST` is never served from a cache to anyone
//! else. Every other request (reads, which caches keep and may hand to a browser of any origin;
//! preflights; anything a browser sent) gets CORS as before.
//!
//! [`policy`] is the one policy node and edge both serve, so a page that fails over from a
//! node to an edge (or back) may send and read the same headers at either.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderName, Method, header};
use axum::response::Response;
use tower::{Layer, Service};
use tower_http::cors::{Cors, CorsLayer};

use crate::either::Either;

/// How long browsers may cache a CORS preflight answer, in seconds.
pub const MAX_AGE_SECONDS: u64 = 600;

/// Headers a browser page may send cross-origin: the body's type, an idempotency key, the
/// voter's token (per-voter limits, `x-vote-token`) and the stream's `Last-Event-ID`.
pub const ALLOWED_HEADERS: [&str; 4] = [
    "content-type",
    "idempotency-key",
    tally_core::abuse::VOTE_TOKEN_HEADER,
    "last-event-id",
];

/// Answer headers a page reads besides the CORS-safelisted ones: `Retry-After` (the browser
/// client waits as long as a refusal asks before its retry) and an edge's
/// [`STALE_HEADER`](crate::caching::STALE_HEADER) (the page shows how old the figures are).
pub const EXPOSED_HEADERS: [&str; 2] = ["retry-after", crate::caching::STALE_HEADER];

/// Cross-origin access for browser clients of other regions' pages (a voting page served by one
/// region fails over to another's nodes and edges): any origin may read and vote, with no
/// credentials. The admin API's `authorization` header is not allowed, so browsers cannot call
/// it cross-origin. No `Vary` header: every answer is the same whatever the origin (`*`) and
/// the preflight's requested method and headers (the lists are fixed), so a cache need not keep
/// one per origin.
pub fn policy() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
        .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
        .max_age(Duration::from_secs(MAX_AGE_SECONDS))
        .vary([])
}

/// `inner` with `cors` around it for every request but a `POST` without `Origin`.
///
/// Cheap to clone, as axum's router clones its fallback service for every request: the CORS
/// half (tower-http's settings: header values and lists) is shared, and cloned only for a
/// request that takes it (~0.2 µs of a single vote's CPU when it was cloned for every one:
/// BENCHMARKS.md, "Edge: single votes through `tally edge`").
pub struct BrowserCors<S> {
    with_cors: Arc<Cors<S>>,
    plain: S,
}

impl<S: Clone> Clone for BrowserCors<S> {
    fn clone(&self) -> Self {
        Self {
            with_cors: Arc::clone(&self.with_cors),
            plain: self.plain.clone(),
        }
    }
}

impl<S: Clone> BrowserCors<S> {
    /// `inner`, with `cors` where a browser reads it.
    pub fn new(cors: &CorsLayer, inner: S) -> Self {
        Self {
            with_cors: Arc::new(cors.layer(inner.clone())),
            plain: inner,
        }
    }
}

/// Whether `request` may skip CORS (see the module's documentation).
fn skips_cors(request: &Request) -> bool {
    request.method() == Method::POST && !request.headers().contains_key(header::ORIGIN)
}

impl<S> Service<Request> for BrowserCors<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, <Cors<S> as Service<Request>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both halves wrap clones of one inner service; it must be ready for either.
        self.plain.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if skips_cors(&request) {
            Either::first(self.plain.call(request))
        } else {
            // Both halves wrap clones of one inner service, which `poll_ready` readied.
            Either::second(Cors::clone(&self.with_cors).call(request))
        }
    }
}

#[cfg(test)]
mod tests {
    //! Goal: CORS headers reach every answer a browser can read, and only a `POST` without
    //! `Origin` skips them. Method: a service that answers 200 behind `BrowserCors`, asked with
    //! and without `Origin`, by `GET`, `POST` and a preflight.

    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    fn service() -> BrowserCors<axum::Router> {
        let cors = policy();
        let router = axum::Router::new().route(
            "/v",
            axum::routing::get(|| async { "ok" }).post(|| async { "ok" }),
        );
        BrowserCors::new(&cors, router)
    }

    async fn allow_origin(method: Method, origin: Option<&str>, preflight: bool) -> Option<String> {
        let mut request = Request::builder().method(method).uri("/v");
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        if preflight {
            request = request.header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST");
        }
        let response = service()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        response
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn only_a_post_without_origin_skips_the_cors_headers() {
        let any = Some("*".to_owned());
        let page = Some("https://vote.example");
        assert_eq!(allow_origin(Method::POST, page, false).await, any);
        assert_eq!(allow_origin(Method::GET, page, false).await, any);
        assert_eq!(allow_origin(Method::GET, None, false).await, any);
        assert_eq!(allow_origin(Method::OPTIONS, page, true).await, any);
        assert_eq!(allow_origin(Method::POST, None, false).await, None);
    }

    #[tokio::test]
    async fn the_policy_lets_a_page_send_its_headers_and_read_a_refusals_wait() {
        // Goal: a cross-origin page may send every header the browser client sends (the vote
        // token too) and read `Retry-After` and the staleness header, and not `authorization`;
        // no `Vary` (one cached answer serves every origin). Method: a preflight and a `GET`
        // with `Origin` through `policy()`.
        let preflight = Request::builder()
            .method(Method::OPTIONS)
            .uri("/v")
            .header(header::ORIGIN, "https://vote.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "content-type,x-vote-token,idempotency-key",
            )
            .body(Body::empty())
            .unwrap();
        let answer = service().oneshot(preflight).await.unwrap();
        let allowed = answer.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .to_owned();
        for name in [
            "content-type",
            "x-vote-token",
            "idempotency-key",
            "last-event-id",
        ] {
            assert!(allowed.contains(name), "{name} not in {allowed}");
        }
        assert!(!allowed.contains("authorization"), "{allowed}");
        assert!(!answer.headers().contains_key(header::VARY));
        let read = Request::get("/v")
            .header(header::ORIGIN, "https://vote.example")
            .body(Body::empty())
            .unwrap();
        let answer = service().oneshot(read).await.unwrap();
        let exposed = answer.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(exposed.contains("retry-after"), "{exposed}");
        assert!(exposed.contains("tally-stale-seconds"), "{exposed}");
        assert!(!answer.headers().contains_key(header::VARY));
    }
}
