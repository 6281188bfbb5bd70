//! CORS where a browser reads it. Node and edge answer any origin (a voting page served by one
//! region fails over to another's nodes and edges), so every answer carries the same CORS
//! headers; but tower-http's `Cors` builds a header map for every request and merges it into
//! every answer (~0.3 µs of a single vote's CPU, BENCHMARKS.md, "Single votes against durable
//! Redis"). [`BrowserCors`] skips it for a `POST` without an `Origin` header: browsers send
//! `Origin` with every `POST`, cross-origin or not, so such a request comes from a program that
//! reads no CORS header, and an answer to a `POST` is never served from a cache to anyone
//! else. Every other request (reads, which caches keep and may hand to a browser of any origin;
//! preflights; anything a browser sent) gets CORS as before.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{Method, header};
use axum::response::Response;
use tower::{Layer, Service};
use tower_http::cors::{Cors, CorsLayer};

use crate::either::Either;

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
        let cors = CorsLayer::new()
            .allow_origin(tower_http::cors::Any)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::CONTENT_TYPE]);
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
}
