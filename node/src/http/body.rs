//! Request bodies read against the node's body deadline (`body_read_timeout_ms`), through
//! [`tally_serve::body`]: the vote, batch and admin handlers take their body as
//! [`TimelyBody`], read whole within the deadline or refused with 408 (nothing changed).

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use tally_serve::body::BodyFailure;

use super::{ApiError, SharedState};

pub use tally_serve::body::BODY_READ_TIMEOUT_MS_DEFAULT;

/// A request body, read whole within the node's body deadline, or why it was not.
pub(super) struct TimelyBody(Result<Bytes, BodyFailure>);

impl TimelyBody {
    /// The body, or the refusal to answer with (`limit`: the route's body limit, in bytes).
    pub(super) fn bytes(self, limit: usize) -> Result<Bytes, ApiError> {
        self.0
            .map_err(|failure| ApiError::from_body_failure(failure, limit))
    }

    /// `request`'s headers and its body, read within the deadline.
    pub(super) async fn with_headers(
        request: Request,
        state: &SharedState,
    ) -> (axum::http::HeaderMap, Self) {
        let (headers, body) =
            tally_serve::body::headers_and_body(request, state.body_read_timeout).await;
        (headers, Self(body))
    }
}

impl FromRequest<SharedState> for TimelyBody {
    type Rejection = Infallible;

    async fn from_request(request: Request, state: &SharedState) -> Result<Self, Infallible> {
        Ok(Self(
            tally_serve::body::read_within(request, state.body_read_timeout).await,
        ))
    }
}
