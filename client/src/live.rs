//! Live results: follow a poll over Server-Sent Events, reconnect with `Last-Event-ID` (the
//! node answers a reconnect with its current results at once), fail over along the endpoint
//! list, and fall back to polling `GET …/results` when SSE keeps failing (a proxy that buffers
//! or blocks event streams), trying SSE again after a while.
//!
//! Bounded by design: the consumer sees the latest results (a `watch` channel, not a queue),
//! so a slow consumer skips stale updates instead of buffering them; one SSE event may be at
//! most [`SSE_EVENT_BYTES_MAX`]. The background task ends when the [`LiveResults`] is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ::http::{StatusCode, header};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;

use crate::api::PollResults;
use crate::config::ClientConfig;
use crate::http::{self, Endpoint};
use crate::retry::Backoff;

/// Consecutive SSE failures (no event received) before falling back to polling.
pub const SSE_FAILURES_BEFORE_POLLING: u32 = 3;
/// How long a polling phase lasts before SSE is tried again, in milliseconds.
pub const POLLING_PHASE_MS: u64 = 30_000;
/// Pause between polls, in milliseconds.
pub const POLL_INTERVAL_MS: u64 = 1_000;
/// An SSE stream silent this long (no event, no heartbeat) is dropped, in milliseconds.
pub const SSE_SILENCE_MS: u64 = 15_000;
/// Largest SSE event accepted, in bytes; a larger one ends the stream as garbage.
pub const SSE_EVENT_BYTES_MAX: usize = 256 * 1024;

/// How an update arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A `results` event of the SSE stream.
    Sse,
    /// A poll of `GET …/results`.
    Polling,
}

/// One update of a poll's live results.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveUpdate {
    /// The results.
    pub results: PollResults,
    /// How they arrived.
    pub via: Via,
    /// Which endpoint sent them.
    pub endpoint: String,
}

/// A `Stream` of the latest results of one poll (see the module doc).
pub struct LiveResults {
    updates: WatchStream<Option<LiveUpdate>>,
    task: tokio::task::JoinHandle<()>,
}

impl LiveResults {
    pub(super) fn start(config: ClientConfig, poll: String, seed: u64) -> Self {
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(follow(config, poll, seed, tx));
        Self {
            updates: WatchStream::new(rx),
            task,
        }
    }
}

impl Drop for LiveResults {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream for LiveResults {
    type Item = LiveUpdate;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LiveUpdate>> {
        loop {
            match Pin::new(&mut self.updates).poll_next(cx) {
                Poll::Ready(Some(None)) => continue,
                Poll::Ready(Some(Some(update))) => return Poll::Ready(Some(update)),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

async fn follow(
    config: ClientConfig,
    poll: String,
    seed: u64,
    updates: watch::Sender<Option<LiveUpdate>>,
) {
    let mut backoff = Backoff::new(seed);
    let mut last_event_id: Option<String> = None;
    let mut sse_failures = 0u32;
    let mut index = 0usize;
    let endpoints = &config.endpoints;
    while !updates.is_closed() {
        let endpoint = &endpoints[index % endpoints.len()];
        if sse_failures < SSE_FAILURES_BEFORE_POLLING {
            let events = follow_sse(&config, endpoint, &poll, &mut last_event_id, &updates).await;
            if events > 0 {
                sse_failures = 0;
                backoff = Backoff::new(seed.wrapping_add(1));
            } else {
                sse_failures += 1;
                index += 1;
            }
            tokio::time::sleep(backoff.next_delay(None)).await;
        } else {
            poll_for_a_while(&config, &poll, &mut index, &updates).await;
            sse_failures = 0;
        }
    }
}

/// Follows one SSE connection until it fails or ends; returns the events received.
async fn follow_sse(
    config: &ClientConfig,
    endpoint: &Endpoint,
    poll: &str,
    last_event_id: &mut Option<String>,
    updates: &watch::Sender<Option<LiveUpdate>>,
) -> usize {
    let path = format!("/v1/polls/{poll}/stream");
    let mut headers = vec![(header::ACCEPT, "text/event-stream".to_owned())];
    if let Some(id) = last_event_id.as_ref() {
        headers.push((header::HeaderName::from_static("last-event-id"), id.clone()));
    }
    let Ok(request) = http::request(endpoint, "GET", &path, &headers, Bytes::new()) else {
        return 0;
    };
    let Ok(response) = http::send(endpoint, request, config.attempt_timeout).await else {
        return 0;
    };
    let is_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if response.status() != StatusCode::OK || !is_stream {
        return 0;
    }
    let mut body = response.into_body();
    let mut buffer = BytesMut::new();
    let mut events = 0;
    loop {
        let silence = Duration::from_millis(SSE_SILENCE_MS);
        let frame = match tokio::time::timeout(silence, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            _ => return events,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        while let Some(end) = find_event_end(&buffer) {
            let event = buffer.split_to(end);
            if let Some(update) = parse_event(&event, last_event_id) {
                events += 1;
                updates.send_replace(Some(LiveUpdate {
                    results: update,
                    via: Via::Sse,
                    endpoint: endpoint.url.clone(),
                }));
            }
        }
        if buffer.len() > SSE_EVENT_BYTES_MAX || updates.is_closed() {
            return events;
        }
    }
}

/// The length of the first complete event in `buffer` (through its blank line), if any.
fn find_event_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| at + 2)
}

/// A `results` event's results; records its `id:` in `last_event_id`. Other events
/// (heartbeats, comments) yield `None`.
fn parse_event(event: &[u8], last_event_id: &mut Option<String>) -> Option<PollResults> {
    let text = std::str::from_utf8(event).ok()?;
    let (mut name, mut data) = ("message", String::new());
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = value.trim();
        } else if let Some(value) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        } else if let Some(value) = line.strip_prefix("id:") {
            *last_event_id = Some(value.trim().to_owned());
        }
    }
    if name != "results" {
        return None;
    }
    serde_json::from_str(&data).ok()
}

/// Polls `GET …/results` for [`POLLING_PHASE_MS`], failing over on errors.
async fn poll_for_a_while(
    config: &ClientConfig,
    poll: &str,
    index: &mut usize,
    updates: &watch::Sender<Option<LiveUpdate>>,
) {
    let path = format!("/v1/polls/{poll}/results");
    let until = tokio::time::Instant::now() + Duration::from_millis(POLLING_PHASE_MS);
    while tokio::time::Instant::now() < until && !updates.is_closed() {
        let endpoint = &config.endpoints[*index % config.endpoints.len()];
        let answer = match http::request(endpoint, "GET", &path, &[], Bytes::new()) {
            Ok(request) => http::exchange(endpoint, request, config.attempt_timeout).await,
            Err(_) => return,
        };
        match answer {
            Ok(answer) if answer.status == StatusCode::OK => {
                if let Ok(results) = serde_json::from_slice::<PollResults>(&answer.body) {
                    updates.send_replace(Some(LiveUpdate {
                        results,
                        via: Via::Polling,
                        endpoint: endpoint.url.clone(),
                    }));
                }
            }
            _ => *index += 1,
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_events_parse_and_record_their_id_and_other_events_do_not() {
        let mut id = None;
        let results = r#"{"poll":"p","status":"open","options":[{"name":"a","votes":2,"share":1.0}],"total":2,"as_of_ms":5,"served_by":"n","includes":[],"peers":[],"clock_offsets_ms":{}}"#;
        let event = format!("event: results\nid: 17\ndata: {results}\n\n");
        let parsed = parse_event(event.as_bytes(), &mut id).unwrap();
        assert_eq!(parsed.total, 2);
        assert_eq!(id.as_deref(), Some("17"));
        assert!(parse_event(b": heartbeat\n\n", &mut id).is_none());
        assert!(parse_event(b"event: results\ndata: {not json\n\n", &mut id).is_none());
        assert_eq!(find_event_end(b"data: x\n\nrest"), Some(9));
        assert_eq!(find_event_end(b"data: x\n"), None);
    }
}
