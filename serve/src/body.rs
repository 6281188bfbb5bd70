//! Request bodies read against a deadline. The header-read deadline ([`crate::connections`])
//! ends once a request's head is in; a client could then send its body a byte at a time and
//! hold the connection for hours while staying under the body's size limit. A handler reads
//! its body with [`read_within`]: whole within the deadline of the handler starting (the head
//! is in by then), or refused. A refused body changes nothing, and hyper closes the connection,
//! as the rest of the body was never read.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};

/// Default limit on how long a request body may take to arrive after its headers, in ms.
pub const BODY_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyFailure {
    /// Too large for the route's `DefaultBodyLimit`, or the connection failed (axum's
    /// rejection says which).
    Rejected(BytesRejection),
    /// Not all there when the deadline passed.
    TimedOut(Duration),
}

/// Reads `request`'s body within `deadline`. A body already whole when first polled (a small
/// vote usually arrives with its head) sets no timer.
pub async fn read_within(request: Request, deadline: Duration) -> Result<Bytes, BodyFailure> {
    let mut read = std::pin::pin!(Bytes::from_request(request, &()));
    let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
    let read = match first {
        Poll::Ready(result) => Ok(result),
        Poll::Pending => tokio::time::timeout(deadline, read).await,
    };
    match read {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(rejection)) => Err(BodyFailure::Rejected(rejection)),
        Err(_) => Err(BodyFailure::TimedOut(deadline)),
    }
}

/// `request`'s headers, moved out rather than cloned as the `HeaderMap` extractor would, and
/// its body, read as [`read_within`] does.
pub async fn headers_and_body(
    request: Request,
    deadline: Duration,
) -> (axum::http::HeaderMap, Result<Bytes, BodyFailure>) {
    let (mut parts, body) = request.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    let body = read_within(Request::from_parts(parts, body), deadline).await;
    (headers, body)
}
