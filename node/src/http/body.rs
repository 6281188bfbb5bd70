//! Request bodies read against a deadline and a size limit. The header-read deadline
//! ([`crate::connections`]) ends once a request's head is in; a client could then send its
//! body a byte at a time and hold the connection for hours while staying under the body's size
//! limit. The vote, batch, admin and audit handlers take their body as [`TimelyBody`]: read
//! whole within `body_read_timeout_ms` of the handler starting (the head is in by then), or
//! refused with 408; at most `LIMIT` bytes (the route's limit, part of the type), or refused
//! with 413. A refused body changes nothing, and hyper closes the connection, as the rest of
//! the body was never read.
//!
//! Cheap on the single vote's path: the limit is the handler's, not a layer's (a layer on a
//! route, or axum's `DefaultBodyLimit` extension, costs every request a boxed service or an
//! extension); the request is split before anything is awaited, and the timer is boxed only
//! on the slow path, so the future axum boxes for each vote holds the headers and the body
//! being read, not the whole request several times over (a vote's future was 1,728 bytes,
//! over glibc's per-thread cache of small blocks, so every vote took malloc's slow path).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::Sleep;

use super::{ApiError, SharedState};

/// Default limit on how long a request body may take to arrive after its headers, in ms.
pub const BODY_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// A request body of at most `LIMIT` bytes, read whole within the node's body deadline, or
/// why it was not.
pub(super) struct TimelyBody<const LIMIT: usize>(Result<Bytes, BodyFailure>);

enum BodyFailure {
    /// Over the limit.
    TooLarge,
    /// The connection failed while the body was read.
    Broken(axum::BoxError),
    /// Not all there when the deadline passed.
    TimedOut(Duration),
}

impl<const LIMIT: usize> TimelyBody<LIMIT> {
    /// The body, or the refusal to answer with.
    pub(super) fn bytes(self) -> Result<Bytes, ApiError> {
        match self.0 {
            Ok(bytes) => Ok(bytes),
            Err(BodyFailure::TooLarge) => Err(ApiError::TooLarge(LIMIT)),
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
    ) -> (axum::http::HeaderMap, UnreadBody<LIMIT>) {
        let (parts, body) = request.into_parts();
        (parts.headers, UnreadBody::of(body, state))
    }
}

/// A request's body, not read yet.
pub(super) struct UnreadBody<const LIMIT: usize> {
    body: Body,
    deadline: Duration,
}

impl<const LIMIT: usize> UnreadBody<LIMIT> {
    fn of(body: Body, state: &SharedState) -> Self {
        Self {
            body,
            deadline: state.body_read_timeout,
        }
    }

    /// Reads the body within the deadline and the size limit.
    pub(super) fn read(self) -> ReadBody<LIMIT> {
        ReadBody {
            collect: Limited::new(self.body, LIMIT).collect(),
            deadline: self.deadline,
            timer: None,
        }
    }
}

/// Reading a body: a body already whole when first polled (a small vote usually arrives with
/// its head) sets no timer; a body still arriving arms one (boxed, so the common case does not
/// carry its room).
pub(super) struct ReadBody<const LIMIT: usize> {
    collect: Collect<Limited<Body>>,
    deadline: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<const LIMIT: usize> Future for ReadBody<LIMIT> {
    type Output = TimelyBody<LIMIT>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TimelyBody<LIMIT>> {
        // `Collect` is `Unpin` (its body is boxed), so `ReadBody` is too.
        let this = &mut *self;
        let failure = match Pin::new(&mut this.collect).poll(cx) {
            Poll::Ready(Ok(collected)) => return Poll::Ready(TimelyBody(Ok(collected.to_bytes()))),
            Poll::Ready(Err(error)) if error.is::<LengthLimitError>() => BodyFailure::TooLarge,
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

impl<const LIMIT: usize> FromRequest<SharedState> for TimelyBody<LIMIT> {
    type Rejection = Infallible;

    async fn from_request(request: Request, state: &SharedState) -> Result<Self, Infallible> {
        Ok(UnreadBody::of(request.into_body(), state).read().await)
    }
}
