//! `tally-client`: the HTTP API's types ([`api`]) and the Rust client for Tally nodes: votes
//! that count exactly once however often they are retried, results, and live results. An app
//! (or the edge tier) depends on this crate alone, not on the server.
//!
//! [`TallyClient::vote`] makes one vote ID (a v4 UUID) per call and sends that same ID on every
//! retry, to any region: the node answers `counted` once and `duplicate` ever after, so a retry
//! after a lost answer can never count twice. It retries timeouts, connection errors, 5xx and
//! 429 with jittered exponential backoff ([`retry`]) that honours `Retry-After`, fails over
//! along the endpoint list (nearest region first) within a total deadline, and says, when it
//! gives up, whether the vote may have been counted ([`VoteError::may_have_been_counted`]).
//! [`TallyClient::live`] follows results over SSE, reconnecting with `Last-Event-ID` and falling
//! back to polling ([`live`]).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use tally_client::{ClientConfig, TallyClient};
//! let client = TallyClient::new(ClientConfig::new(&[
//!     "http://us-east.tally.internal:8080",
//!     "http://us-west.tally.internal:8080",
//! ])?);
//! let receipt = client.vote("superbowl", "green").await?;
//! println!("{} ({})", receipt.vote_id, if receipt.counted { "counted" } else { "already counted" });
//! # Ok(()) }
//! ```

pub mod api;
mod config;
pub mod http;
pub mod live;
pub mod retry;

use std::sync::Mutex;

use ::http::{StatusCode, header};
use bytes::Bytes;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;

use api::{ErrorBody, VoteResponse, VoteStatus};
pub use api::{OptionResult, PollResults};
pub use config::{
    ATTEMPT_TIMEOUT_MS_DEFAULT, ATTEMPTS_MAX, ClientConfig, ClientError, DEADLINE_MS_DEFAULT,
};
use http::AttemptError;
pub use http::Endpoint;
use retry::{AttemptClass, Backoff, classify_status, parse_retry_after};

/// A vote the cluster holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The vote ID sent (UUID form); keep it to prove the vote.
    pub vote_id: String,
    /// True when this call's vote was counted now; false when the ID was already counted
    /// (an earlier attempt of this call, or an earlier call with the same ID, got through).
    pub counted: bool,
    /// For a fresh count: the actor (`node#incarnation`) and seq that record it.
    pub recorded_by: Option<(String, u64)>,
    /// The endpoint that answered.
    pub endpoint: String,
    /// Attempts made, this one included.
    pub attempts: u32,
}

/// Why a vote did not end in a receipt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteError {
    /// A node refused the vote for good (unknown poll or option, poll not open, bad vote ID):
    /// this request was **not counted**, and retrying it will not change that. An earlier
    /// attempt of the same call may still have been: `may_have_been_counted` is set when one
    /// was sent and its answer lost (say region A took the vote, the answer was lost, and
    /// region B, not yet synced, refused the retry because the poll had closed meanwhile).
    #[error("refused ({status} {code}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The error code (`unknown_option`, `poll_not_open`, …).
        code: String,
        /// The node's explanation.
        message: String,
        /// An earlier attempt of this call was sent and its answer lost.
        may_have_been_counted: bool,
    },
    /// Out of time or attempts, and no attempt can have reached a node that took the vote:
    /// every one failed to connect or was shed (503/429). The vote was **not counted**.
    #[error("not counted: no region took the vote in {attempts} attempts ({last})")]
    NotCounted {
        /// The vote ID tried.
        vote_id: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// Out of time or attempts after at least one attempt whose answer was lost: the vote
    /// **may have been counted**. Retry later with the same `vote_id` ([`TallyClient::vote_with_id`])
    /// to learn which: the answer will be `counted` or `duplicate`, never a second count.
    #[error(
        "may have been counted: {attempts} attempts, answers lost ({last}); retry with vote ID {vote_id}"
    )]
    Unknown {
        /// The vote ID to retry with.
        vote_id: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
}

impl VoteError {
    /// Whether the vote may have been counted: [`VoteError::Unknown`], and a refusal that
    /// followed a lost answer.
    pub fn may_have_been_counted(&self) -> bool {
        match self {
            Self::Unknown { .. } => true,
            Self::Refused {
                may_have_been_counted,
                ..
            } => *may_have_been_counted,
            Self::NotCounted { .. } => false,
        }
    }
}

/// Why results could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The poll does not exist (404) or another final refusal.
    #[error("refused ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The body.
        message: String,
    },
    /// No endpoint answered in time.
    #[error("no region answered: {0}")]
    Unavailable(String),
}

/// A new client-made vote ID: a version-4 UUID from `rng`'s 128 random bits (`tally load`
/// makes its IDs here too).
pub fn new_vote_id(rng: &mut StdRng) -> [u8; 16] {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .into_bytes()
}

/// A client for one cluster. Cheap to share: calls take `&self`.
#[derive(Debug)]
pub struct TallyClient {
    config: ClientConfig,
    rng: Mutex<StdRng>,
}

impl TallyClient {
    /// A client over `config.endpoints`.
    pub fn new(config: ClientConfig) -> Self {
        let seed = config.rng_seed.unwrap_or_else(rand::random);
        Self {
            config,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// The endpoints, nearest first.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.config.endpoints
    }

    fn draw(&self) -> ([u8; 16], u64) {
        // Poisoning cannot corrupt an RNG; take it back.
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (new_vote_id(&mut rng), rng.random())
    }

    /// Votes for `option` in `poll` with a new vote ID, retried and failed over until a node
    /// answers or the deadline passes.
    pub async fn vote(&self, poll: &str, option: &str) -> Result<Receipt, VoteError> {
        let (id, _) = self.draw();
        self.vote_with_id(poll, option, &uuid::Uuid::from_bytes(id).to_string())
            .await
    }

    /// Votes with a vote ID the caller made (a UUID, or any key of at most 128 bytes): to
    /// finish a vote that ended in [`VoteError::Unknown`], or to key votes by the app's own
    /// tap IDs. The same ID always counts once.
    pub async fn vote_with_id(
        &self,
        poll: &str,
        option: &str,
        vote_id: &str,
    ) -> Result<Receipt, VoteError> {
        let (_, seed) = self.draw();
        let mut backoff = Backoff::new(seed);
        let body =
            Bytes::from(serde_json::json!({ "option": option, "vote_id": vote_id }).to_string());
        let path = format!("/v1/polls/{poll}/votes");
        let give_up_at = Instant::now() + self.config.deadline;
        let mut may_be_counted = false;
        let mut last = String::from("no attempt made");
        let endpoints = &self.config.endpoints;
        // When each region may be tried again: a failure benches its region for the backoff,
        // or for as long as its `Retry-After` asked; the other regions stay free, so one
        // region shedding load (or stopping: `Retry-After: 5`) does not hold up the failover.
        let mut free_at = vec![Instant::now(); endpoints.len()];
        for attempt in 0..ATTEMPTS_MAX {
            let (index, at) = next_region(&free_at);
            if at >= give_up_at {
                return Err(gave_up(may_be_counted, vote_id, attempt, last));
            }
            tokio::time::sleep_until(at).await;
            let endpoint = &endpoints[index];
            let timeout = self
                .config
                .attempt_timeout
                .min(give_up_at.saturating_duration_since(Instant::now()));
            let request = http::request(
                endpoint,
                "POST",
                &path,
                &[(header::CONTENT_TYPE, "application/json".into())],
                body.clone(),
            )
            .map_err(|e| VoteError::Refused {
                status: 0,
                code: "bad_request".into(),
                message: e,
                may_have_been_counted: may_be_counted,
            })?;
            let retry_after = match http::exchange(endpoint, request, timeout).await {
                Ok(answer) => match classify_status(answer.status.as_u16()) {
                    AttemptClass::Final => {
                        return finish(answer, vote_id, endpoint, attempt + 1, may_be_counted);
                    }
                    AttemptClass::Retry => {
                        // A 5xx other than 503 may come from a proxy after the node took the
                        // vote; 503 and 429 are Tally's sheds, which take nothing, but for an
                        // edge's `unconfirmed` (it sent the vote on and lost the answer).
                        if !matches!(
                            answer.status,
                            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
                        ) || refusal_code(&answer.body)
                            .is_some_and(|code| api::refusal_may_follow_a_count(&code))
                        {
                            may_be_counted = true;
                        }
                        last = format!("{} answered {}", endpoint.url, answer.status);
                        answer
                            .headers
                            .get(header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(parse_retry_after)
                    }
                },
                Err(AttemptError::NotSent(why)) => {
                    last = why;
                    None
                }
                Err(AttemptError::NoAnswer(why)) => {
                    may_be_counted = true;
                    last = why;
                    None
                }
            };
            free_at[index] = Instant::now() + backoff.next_delay(retry_after);
        }
        Err(gave_up(may_be_counted, vote_id, ATTEMPTS_MAX, last))
    }

    /// The current results of `poll` from the first endpoint that answers.
    pub async fn results(&self, poll: &str) -> Result<PollResults, ReadError> {
        let path = format!("/v1/polls/{poll}/results");
        let mut last = String::new();
        for endpoint in &self.config.endpoints {
            let request = http::request(endpoint, "GET", &path, &[], Bytes::new())
                .map_err(ReadError::Unavailable)?;
            match http::exchange(endpoint, request, self.config.attempt_timeout).await {
                Ok(answer) if answer.status == StatusCode::OK => {
                    return serde_json::from_slice(&answer.body).map_err(|e| {
                        ReadError::Unavailable(format!("{}: unexpected results: {e}", endpoint.url))
                    });
                }
                Ok(answer) if classify_status(answer.status.as_u16()) == AttemptClass::Final => {
                    return Err(ReadError::Refused {
                        status: answer.status.as_u16(),
                        message: String::from_utf8_lossy(&answer.body).into_owned(),
                    });
                }
                Ok(answer) => last = format!("{} answered {}", endpoint.url, answer.status),
                Err(AttemptError::NotSent(why) | AttemptError::NoAnswer(why)) => last = why,
            }
        }
        Err(ReadError::Unavailable(last))
    }

    /// Live results of `poll`: see [`live::LiveResults`].
    pub fn live(&self, poll: &str) -> live::LiveResults {
        let (_, seed) = self.draw();
        live::LiveResults::start(self.config.clone(), poll.to_owned(), seed)
    }
}

fn finish(
    answer: http::Answer,
    vote_id: &str,
    endpoint: &Endpoint,
    attempts: u32,
    may_have_been_counted: bool,
) -> Result<Receipt, VoteError> {
    if answer.status == StatusCode::OK {
        let parsed: VoteResponse =
            serde_json::from_slice(&answer.body).map_err(|e| VoteError::Unknown {
                vote_id: vote_id.to_owned(),
                attempts,
                last: format!("{}: unexpected answer: {e}", endpoint.url),
            })?;
        return Ok(Receipt {
            vote_id: vote_id.to_owned(),
            counted: parsed.status == VoteStatus::Counted,
            recorded_by: parsed.receipt.map(|r| (r.actor, r.seq)),
            endpoint: endpoint.url.clone(),
            attempts,
        });
    }
    let (code, message) = serde_json::from_slice::<ErrorBody>(&answer.body)
        .map(|e| (e.error.as_str().to_owned(), e.message))
        .unwrap_or_else(|_| {
            (
                "unexpected".to_owned(),
                String::from_utf8_lossy(&answer.body).into_owned(),
            )
        });
    Err(VoteError::Refused {
        status: answer.status.as_u16(),
        code,
        message,
        may_have_been_counted,
    })
}

/// The `error` code of a refusal's body, as sent (unknown codes too).
fn refusal_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Code {
        error: String,
    }
    serde_json::from_slice::<Code>(body).ok().map(|c| c.error)
}

/// The region to try next: the one free soonest, the nearest (first listed) among equals.
fn next_region(free_at: &[Instant]) -> (usize, Instant) {
    free_at
        .iter()
        .copied()
        .enumerate()
        .min_by_key(|(index, at)| (*at, *index))
        .unwrap_or((0, Instant::now()))
}

fn gave_up(may_be_counted: bool, vote_id: &str, attempts: u32, last: String) -> VoteError {
    let vote_id = vote_id.to_owned();
    if may_be_counted {
        VoteError::Unknown {
            vote_id,
            attempts,
            last,
        }
    } else {
        VoteError::NotCounted {
            vote_id,
            attempts,
            last,
        }
    }
}
