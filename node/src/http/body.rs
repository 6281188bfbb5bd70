//! Request bodies read against the node's body deadline (`body_read_timeout_ms`) and each
//! route's size limit, through [`tally_serve::body`]: the vote, batch, admin and audit handlers
//! take their body as [`TimelyBody`], read whole within the deadline or refused with 408, at
//! most `LIMIT` bytes (the route's limit, part of the type) or refused with 413; nothing
//! changed either way. The single vote's and the batch's handlers split the request first
//! ([`TimelyBody::split`]) so that their futures hold no request while the body is read.

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use tally_serve::body::{BodyFailure, UnreadBody};

use super::{ApiError, SharedState};

pub use tally_serve::body::BODY_READ_TIMEOUT_MS_DEFAULT;

/// A request body of at most `LIMIT` bytes, read whole within the node's body deadline, or
/// why it was not.
pub(super) struct TimelyBody<const LIMIT: usize>(Result<Bytes, BodyFailure>);

impl<const LIMIT: usize> TimelyBody<LIMIT> {
    /// The body, or the refusal to answer with.
    pub(super) fn bytes(self) -> Result<Bytes, ApiError> {
        self.0.map_err(ApiError::from_body_failure)
    }

    /// `request`'s headers, moved out, and its body still to be read (within the deadline and
    /// `LIMIT`): nothing is awaited here.
    pub(super) fn split(
        request: Request,
        state: &SharedState,
    ) -> (axum::http::HeaderMap, UnreadBody) {
        tally_serve::body::split(request, LIMIT, state.body_read_timeout)
    }

    /// Reads `body` (from [`Self::split`]).
    pub(super) async fn read(body: UnreadBody) -> Self {
        Self(body.read().await)
    }
}

impl<const LIMIT: usize> FromRequest<SharedState> for TimelyBody<LIMIT> {
    type Rejection = Infallible;

    async fn from_request(request: Request, state: &SharedState) -> Result<Self, Infallible> {
        let body = UnreadBody::new(request.into_body(), LIMIT, state.body_read_timeout);
        Ok(Self::read(body).await)
    }
}
