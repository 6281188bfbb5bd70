//! Request bodies read against a deadline. The header-read deadline ([`crate::connections`])
//! ends once a request's head is in; a client could then send its body a byte at a time and
//! hold the connection for hours while staying under the body's size limit. The vote, batch
//! and admin handlers take their body as [`TimelyBody`]: read whole within
//! `body_read_timeout_ms` of the handler starting (the head is in by then), or refused with 408.
//! A refused body changes nothing, and hyper closes the connection, as the rest of the body
//! was never read.

use std::convert::Infallible;
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};

use super::{ApiError, SharedState};

/// Default limit on how long a request body may take to arrive after its headers, in ms.
pub const BODY_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// A request body, read whole within the node's body deadline, or why it was not.
pub(super) struct TimelyBody(Result<Bytes, BodyFailure>);

enum BodyFailure {
    /// Too large, or the connection failed (axum's rejection).
    Rejected(BytesRejection),
    /// Not all there when the deadline passed.
    TimedOut(Duration),
}

impl TimelyBody {
    /// The body, or the refusal to answer with (`limit`: the route's body limit, in bytes).
    pub(super) fn bytes(self, limit: usize) -> Result<Bytes, ApiError> {
        match self.0 {
            Ok(bytes) => Ok(bytes),
            Err(BodyFailure::Rejected(rejection)) => Err(ApiError::from_body(rejection, limit)),
            Err(BodyFailure::TimedOut(deadline)) => Err(ApiError::BodyTimeout(
                u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
            )),
        }
    }

    /// `request`'s headers, moved out rather than cloned as the `HeaderMap` extractor would,
    /// and its body, read as [`Self::read`] does.
    pub(super) async fn with_headers(
        request: Request,
        state: &SharedState,
    ) -> (axum::http::HeaderMap, Self) {
        let (mut parts, body) = request.into_parts();
        let headers = std::mem::take(&mut parts.headers);
        let body = Self::read(Request::from_parts(parts, body), state).await;
        (headers, body)
    }

    /// Reads `request`'s body within the deadline. A body already whole when first polled
    /// (a small vote usually arrives with its head) sets no timer.
    pub(super) async fn read(request: Request, state: &SharedState) -> Self {
        let deadline = state.body_read_timeout;
        let mut read = std::pin::pin!(Bytes::from_request(request, state));
        let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
        let read = match first {
            Poll::Ready(result) => Ok(result),
            Poll::Pending => tokio::time::timeout(deadline, read).await,
        };
        Self(match read {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(rejection)) => Err(BodyFailure::Rejected(rejection)),
            Err(_) => Err(BodyFailure::TimedOut(deadline)),
        })
    }
}

impl FromRequest<SharedState> for TimelyBody {
    type Rejection = Infallible;

    async fn from_request(request: Request, state: &SharedState) -> Result<Self, Infallible> {
        Ok(Self::read(request, state).await)
    }
}
