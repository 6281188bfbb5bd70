//! What one poll's subscription publishes to its viewers and readers: the latest results as
//! the node sent them, encoded once for everyone (the results route's JSON and its strong
//! `ETag`, the SSE event), the history the same way, and whether the figures are stale.
//!
//! A viewer's stream sends, for each publication it wakes to, either [`Latest::update`] (what
//! this publication adds: a results event, a `stale` event, or a heartbeat) or, when it has
//! not sent the current results yet (it was slow and skipped publications),
//! [`Latest::catch_up`]. Both are shared bytes: no viewer encodes anything.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tally_serve::caching::etag_of;

/// A body encoded once, with its strong `ETag`.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The JSON.
    pub json: Bytes,
    /// Its strong `ETag`.
    pub etag: Arc<str>,
}

impl Encoded {
    /// `json` with its tag.
    pub fn new(json: Bytes) -> Self {
        Self {
            etag: etag_of(&json),
            json,
        }
    }
}

/// The latest results of a poll, as a node sent them.
#[derive(Debug, Clone)]
pub struct Results {
    /// The results route's body and tag (the node's bytes, so the tag is the node's too).
    pub body: Encoded,
    /// The `results` SSE event carrying it.
    pub event: Bytes,
    /// When the node captured them (Unix ms).
    pub as_of_ms: u64,
    /// Whether the poll is closed (its reads cache for long).
    pub closed: bool,
}

/// The fields of the node's results the edge reads (the rest pass through as bytes).
#[derive(Debug, Deserialize)]
struct ResultsHead {
    poll: String,
    status: String,
    as_of_ms: u64,
}

impl Results {
    /// Reads a `results` event's data for poll `poll`.
    pub fn from_data(poll: &str, data: Bytes) -> Result<Self, String> {
        let head: ResultsHead = serde_json::from_slice(&data)
            .map_err(|e| format!("a results event that is not the results JSON: {e}"))?;
        if head.poll != poll {
            return Err(format!(
                "results of poll {:?} on the stream of {poll:?}",
                head.poll
            ));
        }
        let event = format!(
            "event: results\nid: {}\ndata: {}\n\n",
            head.as_of_ms,
            String::from_utf8_lossy(&data)
        );
        Ok(Self {
            body: Encoded::new(data),
            event: Bytes::from(event),
            as_of_ms: head.as_of_ms,
            closed: head.status == "closed",
        })
    }
}

/// Why viewers see old figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleReason {
    /// No node's stream has been heard from for longer than the staleness limit.
    Upstream,
    /// The edge is shedding votes: results go out on the slower tick.
    Shedding,
}

/// The `stale` event's data.
#[derive(Debug, Clone, Serialize)]
pub struct Stale {
    /// Why.
    pub reason: StaleReason,
    /// The capture time of the results viewers hold (Unix ms), if any.
    pub as_of_ms: Option<u64>,
    /// Seconds since the edge last heard from a node's stream (0 when shedding).
    pub stale_seconds: u64,
    /// How often viewers hear from the edge meanwhile, in ms.
    pub tick_ms: u64,
}

impl Stale {
    /// As an SSE event (`event: stale`).
    pub fn event(&self) -> Bytes {
        // A struct of numbers and a fixed name: serializing cannot fail.
        let json = serde_json::to_string(self).unwrap_or_default();
        Bytes::from(format!("event: stale\ndata: {json}\n\n"))
    }
}

/// A `: heartbeat` comment, so proxies keep a quiet stream open.
pub const HEARTBEAT_EVENT: &[u8] = b": heartbeat\n\n";

/// One publication of a poll's subscription.
#[derive(Debug, Clone, Default)]
pub struct Latest {
    /// The latest results (none before the first frame from a node).
    pub results: Option<Arc<Results>>,
    /// Bumped whenever `results` changes.
    pub results_generation: u64,
    /// The latest history (none before the first read of it).
    pub history: Option<Arc<Encoded>>,
    /// Set while the figures are stale, or go out on the slower tick.
    pub stale: Option<Stale>,
    /// What this publication adds for a viewer that holds the current results.
    pub update: Bytes,
    /// What a viewer that does not hold the current results gets: the results event, then
    /// the `stale` event if stale.
    pub catch_up: Bytes,
}

impl Latest {
    /// Sets `catch_up` from `results` and `stale`.
    pub fn encode_catch_up(&mut self) {
        let mut bytes = Vec::new();
        if let Some(results) = &self.results {
            bytes.extend_from_slice(&results.event);
        }
        if let Some(stale) = &self.stale {
            bytes.extend_from_slice(&stale.event());
        }
        self.catch_up = Bytes::from(bytes);
    }
}
