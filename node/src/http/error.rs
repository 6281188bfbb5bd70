//! The one error type of the HTTP API. Every refusal is JSON, `{"error": code, "message": …}`,
//! with the status the API documents; load shedding adds `Retry-After`. Turning an error into a
//! response has no side effects: counting and logging happen in the handlers and middleware.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tally_core::AcceptError;

use crate::engine::EngineError;

/// Why a request was refused. No vote was counted by a refused request (batches report per
/// vote, and a batch refused as a whole counted none).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The body is not what the route expects.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// Missing or wrong admin token.
    #[error("this route needs the admin bearer token")]
    Unauthorized,
    /// No such poll.
    #[error("no poll named {0:?}")]
    UnknownPoll(String),
    /// No such route.
    #[error("no route {0}")]
    NotFound(String),
    /// The poll is not taking votes.
    #[error("poll is {0}")]
    PollNotOpen(&'static str),
    /// A poll with that name exists with other options.
    #[error("{0}")]
    Conflict(String),
    /// The body is over the route's limit.
    #[error("request body is over the limit of {0} bytes")]
    TooLarge(usize),
    /// Too many votes in one batch.
    #[error("batch holds {count} votes; at most {max} are allowed")]
    TooManyVotes {
        /// Votes sent.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The content type is not one the route reads.
    #[error("content type must be {0}")]
    UnsupportedMediaType(&'static str),
    /// The option is not one of the poll's.
    #[error("poll has no option {0:?}")]
    UnknownOption(String),
    /// The vote ID is missing or unusable.
    #[error("bad vote ID: {0}")]
    BadVoteId(String),
    /// A setting in the request is out of range.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The node is shedding load; retry after the given seconds.
    #[error("node is overloaded; retry in {0} s")]
    Overloaded(u32),
    /// The node is not serving votes (starting, stopping or failed).
    #[error("node is unavailable: {0}")]
    Unavailable(&'static str),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    message: &'a str,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::UnknownPoll(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PollNotOpen(_) | Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) | Self::TooManyVotes { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::UnknownOption(_) | Self::BadVoteId(_) | Self::Invalid(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::Overloaded(_) | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Unauthorized => "unauthorized",
            Self::UnknownPoll(_) => "unknown_poll",
            Self::NotFound(_) => "not_found",
            Self::PollNotOpen(_) => "poll_not_open",
            Self::Conflict(_) => "conflict",
            Self::TooLarge(_) => "body_too_large",
            Self::TooManyVotes { .. } => "too_many_votes",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::UnknownOption(_) => "unknown_option",
            Self::BadVoteId(_) => "bad_vote_id",
            Self::Invalid(_) => "invalid",
            Self::Overloaded(_) => "overloaded",
            Self::Unavailable(_) => "unavailable",
        }
    }

    /// Maps a body-reading failure, keeping the limit in the message.
    pub fn from_body(rejection: BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::TooLarge(limit)
        } else {
            Self::Malformed(rejection.body_text())
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Accept(AcceptError::UnknownPoll(poll)) => {
                Self::UnknownPoll(poll.to_string())
            }
            EngineError::Accept(AcceptError::UnknownOption(index)) => {
                Self::UnknownOption(index.to_string())
            }
            EngineError::Accept(AcceptError::NotOpen) => Self::PollNotOpen("not open yet"),
            EngineError::Accept(AcceptError::Closed) => Self::PollNotOpen("closed"),
            EngineError::Accept(AcceptError::Overloaded) => Self::Overloaded(1),
            EngineError::Poll(error) => Self::Conflict(error.to_string()),
            EngineError::LogFailed => Self::Unavailable("the write-ahead log failed"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let body = ErrorBody {
            error: self.code(),
            message: &message,
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Self::Overloaded(seconds) = self {
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if let Self::Unavailable(_) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}
