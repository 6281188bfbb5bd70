//! Where and how patiently the client votes: the endpoints, nearest first, and its timeouts.

use std::time::Duration;

use crate::http::Endpoint;

/// Default longest time one attempt may take, in milliseconds.
pub const ATTEMPT_TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// Default total time a vote may take, retries included, in milliseconds.
pub const DEADLINE_MS_DEFAULT: u64 = 10_000;
/// Most attempts per vote, whatever the deadline.
pub const ATTEMPTS_MAX: u32 = 64;

/// Where and how patiently to vote.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The regions' nodes, nearest first; attempts fail over along this list.
    pub endpoints: Vec<Endpoint>,
    /// Longest time one attempt may take.
    pub attempt_timeout: Duration,
    /// Longest time one call may take, retries included.
    pub deadline: Duration,
    /// Seeds vote IDs and backoff jitter; `None` draws a seed from the OS.
    pub rng_seed: Option<u64>,
}

impl ClientConfig {
    /// Default timeouts for `urls` (each `http://HOST:PORT`, nearest region first).
    pub fn new(urls: &[&str]) -> Result<Self, ClientError> {
        if urls.is_empty() {
            return Err(ClientError::Config("give at least one endpoint".into()));
        }
        let endpoints = urls
            .iter()
            .map(|url| Endpoint::parse(url))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ClientError::Config)?;
        Ok(Self {
            endpoints,
            attempt_timeout: Duration::from_millis(ATTEMPT_TIMEOUT_MS_DEFAULT),
            deadline: Duration::from_millis(DEADLINE_MS_DEFAULT),
            rng_seed: None,
        })
    }
}

/// The client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A setting is unusable.
    #[error("client config: {0}")]
    Config(String),
}
