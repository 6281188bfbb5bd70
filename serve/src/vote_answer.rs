//! A single vote's JSON answer, as node and edge both write it: byte for byte what serializing
//! the API's `VoteResponse` gives (`a_vote_answer_is_written_as_a_vote_response_is` holds the
//! two equal), but written field by field into one buffer, without building the vote ID's and
//! the receipt's actor's strings first: one allocation per answer instead of four (the
//! answer's share of a single vote's CPU, BENCHMARKS.md, "Single votes against durable
//! Redis").

use std::fmt::Display;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use tally_client::api::{Receipt, VoteStatus};
use tally_core::VoteId;

use crate::error::ApiError;

/// Room for a vote's answer, in bytes: ~140 with a node name of 20 characters (a longer name
/// only costs the buffer a second allocation).
pub const VOTE_ANSWER_BYTES: usize = 192;

/// A counted vote's receipt, its actor as text (`node#incarnation`) written straight into the
/// answer.
#[derive(Debug, Clone, Copy)]
pub struct ReceiptFields<A> {
    /// The actor that counted it, as `tally_core::ActorId` displays it.
    pub actor: A,
    /// The record's sequence number.
    pub seq: u64,
    /// Its poll second.
    pub second: u32,
}

/// The answer to a single vote: `counted` with its receipt, or `duplicate` (`receipt` is
/// `None`), as `application/json`.
pub fn vote_answer<A: Display>(vote_id: VoteId, receipt: Option<ReceiptFields<A>>) -> Response {
    let mut body = Vec::with_capacity(VOTE_ANSWER_BYTES);
    match serde_json::to_writer(&mut body, &Answer { vote_id, receipt }) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        // Text and integers always serialize; should it ever fail, the vote stands (it is
        // durable) and the client retries with the same vote ID.
        Err(_) => ApiError::Unavailable("could not write the answer").into_response(),
    }
}

/// A vote's answer as it serializes.
struct Answer<A> {
    vote_id: VoteId,
    receipt: Option<ReceiptFields<A>>,
}

impl<A: Display> Serialize for Answer<A> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let status = match self.receipt {
            Some(_) => VoteStatus::Counted,
            None => VoteStatus::Duplicate,
        };
        let mut response = serializer.serialize_struct("VoteResponse", 3)?;
        response.serialize_field("status", &status)?;
        response.serialize_field("vote_id", &Text(&self.vote_id))?;
        match &self.receipt {
            Some(receipt) => response.serialize_field("receipt", &Some(receipt))?,
            None => response.serialize_field("receipt", &None::<Receipt>)?,
        }
        response.end()
    }
}

impl<A: Display> Serialize for ReceiptFields<A> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut receipt = serializer.serialize_struct("Receipt", 3)?;
        receipt.serialize_field("actor", &Text(&self.actor))?;
        receipt.serialize_field("seq", &self.seq)?;
        receipt.serialize_field("second", &self.second)?;
        receipt.end()
    }
}

/// Serializes a value as its text (`Display`), written straight into the output.
struct Text<'a, T: Display>(&'a T);

impl<T: Display> Serialize for Text<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the single vote's answer, written field by field, is byte for byte what
    //! serializing the API's `VoteResponse` gives. Method: both ways, for a counted vote (with
    //! a receipt) and a duplicate, through the response's body.

    use super::*;
    use axum::body::to_bytes;
    use tally_client::api::VoteResponse;
    use tally_core::{ActorId, ActorText, NodeId};

    #[tokio::test]
    async fn a_vote_answer_is_written_as_a_vote_response_is() {
        let node = NodeId::new("us-east-1b").unwrap();
        let vote_id = VoteId(0x67e5_5044_10b1_426f_9247_bb68_0e5f_e0c8);
        let incarnation = 0x00ab_cdef_0123_4567;
        let fields = ReceiptFields {
            actor: ActorText(&node, incarnation),
            seq: 12_345,
            second: 29,
        };
        let counted = VoteResponse {
            status: VoteStatus::Counted,
            vote_id: vote_id.to_string(),
            receipt: Some(Receipt {
                actor: ActorId {
                    node: node.clone(),
                    incarnation,
                }
                .to_string(),
                seq: 12_345,
                second: 29,
            }),
        };
        let duplicate = VoteResponse {
            status: VoteStatus::Duplicate,
            vote_id: vote_id.to_string(),
            receipt: None,
        };
        for (receipt, expected) in [(Some(fields), counted), (None, duplicate)] {
            let response = vote_answer(vote_id, receipt);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let written = to_bytes(response.into_body(), usize::MAX).await.unwrap();
            assert_eq!(written, serde_json::to_vec(&expected).unwrap());
            assert!(written.len() <= VOTE_ANSWER_BYTES, "{}", written.len());
        }
    }
}
