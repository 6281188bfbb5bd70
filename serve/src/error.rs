//! The one error type of the HTTP API, node and edge alike. Every refusal is JSON,
//! `{"error": code, "message": …}`, with the status its code has ([`ErrorCode::status`]);
//! load shedding adds `Retry-After`. Turning an error into a response has no side effects:
//! counting and logging happen in the handlers and middleware.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use tally_client::api::{ErrorBody, ErrorCode};

use crate::body::BodyFailure;

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
    /// The route exists, but not with this method.
    #[error("{path} does not answer {method}")]
    MethodNotAllowed {
        /// The method asked for.
        method: String,
        /// The path.
        path: String,
    },
    /// The poll is not taking votes.
    #[error("poll is {0}")]
    PollNotOpen(&'static str),
    /// A poll with that name exists with other options, or the node holds the most polls it
    /// may.
    #[error("{0}")]
    Conflict(String),
    /// The body is over the route's limit.
    #[error("request body is over the limit of {0} bytes")]
    TooLarge(usize),
    /// The body did not arrive whole within the body deadline (milliseconds) after its
    /// headers.
    #[error("request body did not arrive within {0} ms of its headers")]
    BodyTimeout(u64),
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
    /// A rate limit (per client IP or per voter) refused the request; retry after the given
    /// seconds. Nothing was counted.
    #[error("rate limited; retry in {0} s")]
    RateLimited(u32),
    /// The vote token is missing, malformed, forged, for another poll, or expired.
    #[error("bad vote token: {0}")]
    BadVoteToken(String),
    /// The node is shedding load; retry after the given seconds.
    #[error("node is overloaded; retry in {0} s")]
    Overloaded(u32),
    /// The node is not serving votes (starting, stopping or failed).
    #[error("node is unavailable: {0}")]
    Unavailable(&'static str),
    /// This node's definition of the poll lost the cluster's agreement: it counts none of the
    /// poll's votes; another node does.
    #[error("{0}")]
    PollDisputed(String),
    /// An edge sent the vote to a node, but no node's answer came within the vote's deadline:
    /// it may have been counted. Retry with the same vote ID (the answer is then `counted` or
    /// `duplicate`, never a second count).
    #[error("{0}")]
    Unconfirmed(String),
    /// `ack_mode = "replicated"`: the vote is durable on this node but no ack peer confirmed
    /// it in time. Not acknowledged; unlike the other 503s it may still be counted, so the
    /// client retries with the same vote ID (counted once).
    #[error(
        "no ack peer confirmed this vote in time; it is not acknowledged (it may still be \
         counted: retry with the same vote ID, here or at another node, and it counts once)"
    )]
    NotReplicated,
}

impl ApiError {
    /// The HTTP status (the code's).
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.error_code().status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    /// The code as its type.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::Malformed(_) => ErrorCode::Malformed,
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::UnknownPoll(_) => ErrorCode::UnknownPoll,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            Self::PollNotOpen(_) => ErrorCode::PollNotOpen,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::BodyTimeout(_) => ErrorCode::BodyTimeout,
            Self::TooLarge(_) => ErrorCode::BodyTooLarge,
            Self::TooManyVotes { .. } => ErrorCode::TooManyVotes,
            Self::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            Self::UnknownOption(_) => ErrorCode::UnknownOption,
            Self::BadVoteId(_) => ErrorCode::BadVoteId,
            Self::Invalid(_) => ErrorCode::Invalid,
            Self::RateLimited(_) => ErrorCode::RateLimited,
            Self::BadVoteToken(_) => ErrorCode::BadVoteToken,
            Self::Overloaded(_) => ErrorCode::Overloaded,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::PollDisputed(_) => ErrorCode::PollDisputed,
            Self::Unconfirmed(_) => ErrorCode::Unconfirmed,
            Self::NotReplicated => ErrorCode::NotReplicated,
        }
    }

    /// Maps a body read against the deadline and limit ([`crate::body`]) that failed.
    pub fn from_body_failure(failure: BodyFailure) -> Self {
        match failure {
            BodyFailure::TooLarge { limit } => Self::TooLarge(limit),
            // axum's words for the same failure, as its `Bytes` extractor answered it.
            BodyFailure::Broken(error) => {
                Self::Malformed(format!("Failed to buffer the request body: {error}"))
            }
            BodyFailure::TimedOut(deadline) => {
                Self::BodyTimeout(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX))
            }
        }
    }

    /// Seconds a client should wait before retrying, for the refusals that ask for it.
    pub fn retry_after_seconds(&self) -> Option<u32> {
        match self {
            Self::Overloaded(seconds) | Self::RateLimited(seconds) => Some(*seconds),
            Self::Unavailable(_) | Self::PollDisputed(_) => Some(UNAVAILABLE_RETRY_AFTER_SECONDS),
            Self::Unconfirmed(_) => Some(UNCONFIRMED_RETRY_AFTER_SECONDS),
            Self::NotReplicated => Some(NOT_REPLICATED_RETRY_AFTER_SECONDS),
            _ => None,
        }
    }
}

/// `Retry-After` of a node or edge that is not serving (stopping, held, disputed), seconds.
pub const UNAVAILABLE_RETRY_AFTER_SECONDS: u32 = 5;

/// `Retry-After` of an unconfirmed vote, in seconds: retry soon, with the same vote ID.
pub const UNCONFIRMED_RETRY_AFTER_SECONDS: u32 = 1;

/// `Retry-After` of a vote no ack peer confirmed in time (`ack_mode = "replicated"`), in
/// seconds: retry soon, with the same vote ID.
pub const NOT_REPLICATED_RETRY_AFTER_SECONDS: u32 = 1;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error_code(),
            message: self.to_string(),
        };
        let retry_after = self.retry_after_seconds();
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the codes a client reads are the ones the document lists. Method: one error of each
    //! variant, its body parsed back, its code compared with the metric label.

    use super::*;

    fn one_of_each() -> Vec<ApiError> {
        vec![
            ApiError::Malformed("x".into()),
            ApiError::Unauthorized,
            ApiError::UnknownPoll("x".into()),
            ApiError::NotFound("/x".into()),
            ApiError::MethodNotAllowed {
                method: "PUT".into(),
                path: "/x".into(),
            },
            ApiError::PollNotOpen("closed"),
            ApiError::Conflict("x".into()),
            ApiError::BodyTimeout(1),
            ApiError::TooLarge(1),
            ApiError::TooManyVotes { count: 2, max: 1 },
            ApiError::UnsupportedMediaType("application/json"),
            ApiError::UnknownOption("x".into()),
            ApiError::BadVoteId("x".into()),
            ApiError::Invalid("x".into()),
            ApiError::RateLimited(1),
            ApiError::BadVoteToken("x".into()),
            ApiError::Overloaded(1),
            ApiError::Unavailable("x"),
            ApiError::PollDisputed("x".into()),
            ApiError::Unconfirmed("x".into()),
            ApiError::NotReplicated,
        ]
    }

    #[test]
    fn every_error_serializes_its_code_as_the_metric_label_says() {
        // Goal: the body's code, the metric label and the status agree for every variant.
        for error in one_of_each() {
            let body = ErrorBody {
                error: error.error_code(),
                message: error.to_string(),
            };
            let json = serde_json::to_value(&body).unwrap();
            assert_eq!(json["error"], error.code(), "{error:?}");
            assert!(error.status().is_client_error() || error.status().is_server_error());
        }
    }

    #[test]
    fn only_load_shedding_and_rate_limit_errors_carry_retry_after() {
        for error in one_of_each() {
            let sheds = error.status() == StatusCode::SERVICE_UNAVAILABLE
                || error.status() == StatusCode::TOO_MANY_REQUESTS;
            let response = error.clone().into_response();
            let retry_after = response.headers().get(header::RETRY_AFTER);
            assert_eq!(retry_after.is_some(), sheds, "{error:?}");
        }
    }
}
