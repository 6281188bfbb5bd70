//! The viewers' routes: results, history, the poll list and the live stream, answered by the
//! fan-out ([`crate::fanout`]) from its cached bytes. `results?at=N` (history, the same on
//! every node once converged) is passed to a node ([`super::reads`]).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::EdgeState;

/// `GET /v1/polls/{poll}/results`; with a query, passed to a node.
pub(super) async fn results(
    State(edge): State<Arc<EdgeState>>,
    Path(poll): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    if query.is_some_and(|q| !q.is_empty()) {
        return super::reads::pass(State(edge), request).await;
    }
    let catalogue = edge.dispatch.catalogue.borrow().clone();
    answer(
        edge.fanout
            .results(&catalogue, &poll, request.headers())
            .await,
    )
}

/// `GET /v1/polls/{poll}/history`.
pub(super) async fn history(
    State(edge): State<Arc<EdgeState>>,
    Path(poll): Path<String>,
    headers: HeaderMap,
) -> Response {
    let catalogue = edge.dispatch.catalogue.borrow().clone();
    answer(edge.fanout.history(&catalogue, &poll, &headers).await)
}

/// `GET /v1/polls`.
pub(super) async fn poll_list(State(edge): State<Arc<EdgeState>>, headers: HeaderMap) -> Response {
    answer(edge.fanout.poll_list(&headers).await)
}

/// `GET /v1/polls/{poll}/stream`.
pub(super) async fn stream(
    State(edge): State<Arc<EdgeState>>,
    Path(poll): Path<String>,
) -> Response {
    let catalogue = edge.dispatch.catalogue.borrow().clone();
    answer(edge.fanout.stream(&catalogue, &poll).await)
}

fn answer(result: Result<Response, tally_serve::error::ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The live stream as served below hyper ([`tally_serve::viewers`]): a place in the poll's
/// hub of viewers ([`tally_serve::broadcast`]), sent what [`stream`]'s viewer is sent, or
/// `None` (the router then answers, with the error).
pub(super) struct Viewers(pub(super) Arc<EdgeState>);

impl tally_serve::viewers::StreamRoute for Viewers {
    fn open(&self, poll: String) -> tally_serve::viewers::Opening {
        let edge = Arc::clone(&self.0);
        Box::pin(async move {
            let catalogue = edge.dispatch.catalogue.borrow().clone();
            edge.fanout.join_viewer(&catalogue, &poll).await.ok()
        })
    }
}
