//! What the engine's refusals become in the HTTP API.

use tally_core::{AcceptError, PollError};

use super::ApiError;
use crate::engine::EngineError;

/// The API's refusal for an engine error.
impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Accept(AcceptError::UnknownPoll(poll)) => {
                ApiError::UnknownPoll(poll.to_string())
            }
            EngineError::Accept(AcceptError::UnknownOption(index)) => {
                ApiError::UnknownOption(index.to_string())
            }
            EngineError::Accept(AcceptError::NotOpen) => ApiError::PollNotOpen("not open yet"),
            EngineError::Accept(AcceptError::Closed) => ApiError::PollNotOpen("closed"),
            EngineError::Accept(AcceptError::Overloaded) => ApiError::Overloaded(1),
            EngineError::Poll(PollError::UnknownPoll(poll)) => {
                ApiError::UnknownPoll(poll.to_string())
            }
            EngineError::Accept(AcceptError::Disputed(poll)) => ApiError::PollDisputed(format!(
                "this node defines poll {poll:?} otherwise than the cluster does (its options \
             or their order differ) and counts none of its votes; nothing was counted: send \
             the vote to another node"
            )),
            EngineError::Poll(
                error @ (PollError::Conflict(_)
                | PollError::OptionsRemoved { .. }
                | PollError::TooManyPolls(_)),
            ) => ApiError::Conflict(error.to_string()),
            EngineError::LogFailed => ApiError::Unavailable("the write-ahead log failed"),
            EngineError::Held(hold) => ApiError::Unavailable(hold.message()),
            EngineError::NotReplicated => ApiError::NotReplicated,
        }
    }
}
