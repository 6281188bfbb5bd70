//! Request bodies read against a deadline. The header-read deadline ([`crate::connections`])
//! ends once a request's head is in; a client could then send its body a byte at a time and
//! hold the connection for hours while staying under the body's size limit. The vote, batch
//! and admin handlers take their body as [`TimelyBody`]: read whole within
//! `body_read_timeout_ms` of the handler starting (the head is in by then), or refused with 408.
//! A refused body changes nothing, and hyper closes the connection, as the rest of the body
//! was never read. The size limit is the route's (`DefaultBodyLimit`, set in [`super::front`]).
//!
//! The request is split before anything is awaited, and the timer is boxed only on the slow
//! path: the future axum boxes for each request then holds the headers and the body being
//! read, not the whole request several times over (a vote's future was 1,728 bytes, over
//! glibc's per-thread cache of small blocks, so every vote took malloc's slow path).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::RequestExt;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, LengthLimitError};
use tokio::time::Sleep;

use super::{ApiError, SharedState};

/// Default limit on how long a request body may take to arrive after its headers, in ms.
pub const BODY_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// A request body, read whole within the node's body deadline, or why it was not.
pub(super) struct TimelyBody(Result<Bytes, BodyFailure>);

enum BodyFailure {
    /// Over the route's limit.
    TooLarge,
    /// The connection failed while the body was read.
    Broken(axum::Error),
    /// Not all there when the deadline passed.
    TimedOut(Duration),
}

impl TimelyBody {
    /// The body, or the refusal to answer with (`limit`: the route's body limit, in bytes).
    pub(super) fn bytes(self, limit: usize) -> Result<Bytes, ApiError> {
        match self.0 {
            Ok(bytes) => Ok(bytes),
            Err(BodyFailure::TooLarge) => Err(ApiError::TooLarge(limit)),
            // axum's words for the same failure, as its `Bytes` extractor answered it.
            Err(BodyFailure::Broken(error)) => Err(ApiError::Malformed(format!(
                "Failed to buffer the request body: {error}"
            ))),
            Err(BodyFailure::TimedOut(deadline)) => Err(ApiError::BodyTimeout(
                u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
            )),
        }
    }

    /// `request`'s headers, moved out rather than cloned as the `HeaderMap` extractor would,
    /// and its body, still to be read (with [`UnreadBody::read`]). Nothing is awaited here, so
    /// the caller's future need not hold the request.
    pub(super) fn with_headers(
        request: Request,
        state: &SharedState,
    ) -> (axum::http::HeaderMap, UnreadBody) {
        let (mut parts, body) = request.into_parts();
        let headers = std::mem::take(&mut parts.headers);
        (
            headers,
            UnreadBody::of(Request::from_parts(parts, body), state),
        )
    }
}

/// A request's body under its route's size limit, not read yet.
pub(super) struct UnreadBody {
    body: Body,
    deadline: Duration,
}

impl UnreadBody {
    fn of(request: Request, state: &SharedState) -> Self {
        Self {
            body: request.into_limited_body(),
            deadline: state.body_read_timeout,
        }
    }

    /// Reads the body within the deadline and the size limit.
    pub(super) fn read(self) -> ReadBody {
        ReadBody {
            collect: self.body.collect(),
            deadline: self.deadline,
            timer: None,
        }
    }
}

/// Reading a body: a body already whole when first polled (a small vote usually arrives with
/// its head) sets no timer; a body still arriving arms one (boxed, so the common case does not
/// carry its room).
pub(super) struct ReadBody {
    collect: Collect<Body>,
    deadline: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Future for ReadBody {
    type Output = TimelyBody;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TimelyBody> {
        // `Collect` is `Unpin` (its body is boxed), so `ReadBody` is too.
        let this = &mut *self;
        let failure = match Pin::new(&mut this.collect).poll(cx) {
            Poll::Ready(Ok(collected)) => return Poll::Ready(TimelyBody(Ok(collected.to_bytes()))),
            Poll::Ready(Err(error)) if is_over_limit(&error) => BodyFailure::TooLarge,
            Poll::Ready(Err(error)) => BodyFailure::Broken(error),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => BodyFailure::TimedOut(deadline),
                    Poll::Pending => return Poll::Pending,
                }
            }
        };
        Poll::Ready(TimelyBody(Err(failure)))
    }
}

/// Whether reading a limited body failed because it is longer than its limit (the error
/// wraps `http_body_util`'s, once or twice, as axum's `Bytes` extractor unwraps it).
fn is_over_limit(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error.is::<LengthLimitError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

impl FromRequest<SharedState> for TimelyBody {
    type Rejection = Infallible;

    async fn from_request(request: Request, state: &SharedState) -> Result<Self, Infallible> {
        Ok(UnreadBody::of(request, state).read().await)
    }
}
