//! `ops_listen`: serving `/metrics` and `/v1/admin/*` on a separate (private) address, and
//! not on the public listener, where they then answer the JSON 404 of any unknown route. The
//! operations listener serves connections as the public one does ([`crate::connections`]), so
//! the header-read deadline holds there too.

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use super::ApiError;

/// Whether `path` belongs on the operations listener.
fn is_ops_path(path: &str) -> bool {
    path == "/metrics" || path == "/v1/admin" || path.starts_with("/v1/admin/")
}

async fn public_only(request: Request, next: Next) -> Response {
    if is_ops_path(request.uri().path()) {
        return ApiError::NotFound(request.uri().path().to_owned()).into_response();
    }
    next.run(request).await
}

async fn ops_only(request: Request, next: Next) -> Response {
    if !is_ops_path(request.uri().path()) {
        return ApiError::NotFound(request.uri().path().to_owned()).into_response();
    }
    next.run(request).await
}

/// With an operations listener: the public router without the operations routes, and a task
/// serving only those on `listener` until `stopping` is set. Without one: `router` unchanged.
pub fn split_ops(
    router: Router,
    listener: Option<tokio::net::TcpListener>,
    header_read_timeout: std::time::Duration,
    stopping: &watch::Sender<bool>,
) -> (Router, Option<tokio::task::JoinHandle<()>>) {
    let Some(listener) = listener else {
        return (router, None);
    };
    let ops = router.clone().layer(middleware::from_fn(ops_only));
    let mut stopped = stopping.subscribe();
    let task = tokio::spawn(tally_serve::connections::serve(
        listener,
        ops,
        header_read_timeout,
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        },
    ));
    (router.layer(middleware::from_fn(public_only)), Some(task))
}
