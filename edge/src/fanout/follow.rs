//! One poll's subscription: follows a node's live stream, fails over along the upstream
//! order, and publishes into the poll's slot what viewers and readers are served (see the
//! module above). One task per subscribed poll; it alone writes the slot.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tally_core::PollId;
use tally_serve::broadcast::{Current, Publisher};
use tokio::sync::watch;
use tokio::time::Instant;

use super::latest::{HEARTBEAT_EVENT, Latest, Results, Stale, StaleReason};
use super::sse::{self, Event};
use super::{
    HEARTBEAT_MS, RECONNECT_BACKOFF_MS_MAX, SHEDDING_TICK_MS, STALE_TICK_MS, Shared, TICK_MS,
    retire_if_idle,
};
use crate::upstream::{open, request};

/// Why a node's stream was left.
enum Left {
    /// The edge stops, or nobody reads the poll any more.
    Done,
    /// Ended, erred, fell silent, or its node is no longer ready: try the next.
    Failed(String),
}

/// The subscription task's state.
pub(super) struct Follow {
    poll: PollId,
    shared: Arc<Shared>,
    slot: watch::Sender<Arc<Latest>>,
    /// The hub of the viewers below hyper (dropped with the subscription: their streams end).
    publisher: Publisher,
    last_read_ms: Arc<AtomicU64>,
    latest: Latest,
    /// When a node's stream was last heard from (a frame, a heartbeat, or its opening).
    heard_at: Instant,
    /// When anything was last published.
    published_at: Instant,
    /// When results were last published.
    results_published_at: Instant,
    /// Results held back by the shedding tick.
    held_back: Option<Arc<Results>>,
}

impl Follow {
    pub(super) fn new(
        poll: PollId,
        shared: Arc<Shared>,
        slot: watch::Sender<Arc<Latest>>,
        publisher: Publisher,
        last_read_ms: Arc<AtomicU64>,
    ) -> Self {
        let now = Instant::now();
        Self {
            poll,
            shared,
            slot,
            publisher,
            last_read_ms,
            latest: Latest::default(),
            heard_at: now,
            published_at: now,
            results_published_at: now,
            held_back: None,
        }
    }

    /// Follows the poll until the edge stops or nobody reads it.
    pub(super) async fn run(mut self) {
        tracing::info!(poll = %self.poll, "following a poll for its viewers");
        let mut node = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            let next = self.pick(node);
            if node.is_some_and(|n| n != next) {
                self.shared.metrics.fanout_failovers.inc();
            }
            node = Some(next);
            match self.follow(next).await {
                Left::Done => break,
                Left::Failed(why) => {
                    tracing::warn!(poll = %self.poll, upstream = %self.shared.upstreams[next].url, %why, "a poll's live stream failed; trying the next node");
                }
            }
            if self.pause(backoff).await {
                break;
            }
            backoff = (backoff * 2).min(Duration::from_millis(RECONNECT_BACKOFF_MS_MAX));
            if self.heard_at.elapsed() < self.shared.settings.stale_after {
                backoff = Duration::from_millis(50);
            }
        }
        self.shared.set_staleness(&self.poll, None);
        tracing::info!(poll = %self.poll, "no longer following a poll: no viewers or readers");
    }

    /// The node to follow next: the nearest ready one at first; after `previous`, the next
    /// ready one in the upstream order (wrapping); with none ready, simply the next one.
    fn pick(&self, previous: Option<usize>) -> usize {
        let count = self.shared.upstreams.len();
        let Some(previous) = previous else {
            return self.shared.availability.nearest().unwrap_or(0);
        };
        (1..=count)
            .map(|step| (previous + step) % count)
            .find(|&n| self.shared.availability.is_available(n))
            .unwrap_or((previous + 1) % count)
    }

    /// Waits `pause` while keeping the slot's ticks; true if the subscription should end.
    async fn pause(&mut self, pause: Duration) -> bool {
        let until = Instant::now() + pause;
        while Instant::now() < until {
            if self.tick() {
                return true;
            }
            tokio::time::sleep_until(until.min(Instant::now() + Duration::from_millis(TICK_MS)))
                .await;
        }
        self.tick()
    }

    /// Opens node `node`'s stream of the poll and follows it until it is left.
    async fn follow(&mut self, node: usize) -> Left {
        let body = match self.open(node).await {
            Ok(body) => body,
            Err(why) => return Left::Failed(why),
        };
        self.heard_at = Instant::now();
        let mut reader = sse::Reader::default();
        let mut body = body;
        let mut ticks = tokio::time::interval(Duration::from_millis(TICK_MS));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = self.shared.stopping.clone();
        loop {
            tokio::select! {
                biased;
                _ = stopping.wait_for(|stop| *stop) => return Left::Done,
                frame = body.frame() => {
                    let chunk = match frame {
                        Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
                        Some(Err(e)) => return Left::Failed(format!("reading the stream: {e}")),
                        None => return Left::Failed("the node ended the stream".into()),
                    };
                    match reader.feed(&chunk) {
                        Ok(events) => {
                            for event in events {
                                if let Err(why) = self.take(event) {
                                    return Left::Failed(why);
                                }
                            }
                        }
                        Err(why) => return Left::Failed(why.0),
                    }
                }
                _ = ticks.tick() => {
                    if self.tick() {
                        return Left::Done;
                    }
                    if self.heard_at.elapsed() >= self.shared.settings.stale_after {
                        return Left::Failed("no frame or heartbeat within the staleness limit".into());
                    }
                    let others_ready = self.shared.availability.nodes() > 0;
                    if !self.shared.availability.is_available(node) && others_ready {
                        return Left::Failed("its node is no longer ready".into());
                    }
                }
            }
        }
    }

    /// Opens the poll's stream on node `node`.
    async fn open(&self, node: usize) -> Result<Incoming, String> {
        let endpoint = &self.shared.upstreams[node];
        let timeout = self.shared.settings.stale_after;
        let path = format!("/v1/polls/{}/stream", self.poll);
        let accept = [(hyper::header::ACCEPT, "text/event-stream")];
        let outgoing = request(endpoint, hyper::Method::GET, &path, &accept, Bytes::new())
            .ok_or_else(|| format!("cannot build a request for {path}"))?;
        let mut sender = open(&*self.shared.connector, endpoint, timeout).await?;
        let response = tokio::time::timeout(timeout, async {
            sender.ready().await?;
            sender.send_request(outgoing).await
        })
        .await
        .map_err(|_| format!("{}: no answer within {timeout:?}", endpoint.url))?
        .map_err(|e| format!("{}: {e}", endpoint.url))?;
        if response.status() != hyper::StatusCode::OK {
            return Err(format!("{path} answered {}", response.status()));
        }
        Ok(response.into_body())
    }

    /// Takes in one event of the stream.
    fn take(&mut self, event: Event) -> Result<(), String> {
        self.heard_at = Instant::now();
        match event {
            Event::Comment => Ok(()),
            Event::Named { name, data } if name == "results" => {
                let results = Results::from_data(self.poll.as_str(), data)?;
                self.shared.metrics.fanout_frames.inc();
                if self.shared.shedding()
                    && self.results_published_at.elapsed() < Duration::from_millis(SHEDDING_TICK_MS)
                {
                    self.held_back = Some(Arc::new(results));
                } else {
                    self.publish_results(Arc::new(results));
                }
                Ok(())
            }
            Event::Named { .. } => Ok(()),
        }
    }

    fn publish_results(&mut self, results: Arc<Results>) {
        self.held_back = None;
        self.latest.results_generation += 1;
        self.latest.results = Some(results);
        self.latest.stale = self.stale_now();
        self.latest.encode_catch_up();
        self.latest.update = self.latest.catch_up.clone();
        self.results_published_at = Instant::now();
        self.publish();
    }

    fn publish(&mut self) {
        self.published_at = Instant::now();
        self.publisher.publish(Current {
            results_generation: self.latest.results_generation,
            update: self.latest.update.clone(),
            catch_up: self.latest.catch_up.clone(),
        });
        self.slot.send_replace(Arc::new(self.latest.clone()));
    }

    /// What viewers should be told about staleness now.
    fn stale_now(&self) -> Option<Stale> {
        let silent = self.heard_at.elapsed();
        let as_of_ms = self.latest.results.as_ref().map(|r| r.as_of_ms);
        if silent >= self.shared.settings.stale_after {
            return Some(Stale {
                reason: StaleReason::Upstream,
                as_of_ms,
                stale_seconds: silent.as_secs(),
                tick_ms: STALE_TICK_MS,
            });
        }
        self.shared.shedding().then_some(Stale {
            reason: StaleReason::Shedding,
            as_of_ms,
            stale_seconds: 0,
            tick_ms: SHEDDING_TICK_MS,
        })
    }

    /// The subscription's clock: held-back results, `stale` events, heartbeats, the
    /// staleness gauge. Returns true if the subscription should end.
    fn tick(&mut self) -> bool {
        let hub_viewers = self.publisher.viewers();
        if retire_if_idle(
            &self.shared,
            &self.poll,
            &self.slot,
            hub_viewers,
            &self.last_read_ms,
        ) {
            return true;
        }
        let since_results = self.results_published_at.elapsed();
        if let Some(results) = self.held_back.take() {
            if since_results >= Duration::from_millis(SHEDDING_TICK_MS) {
                self.publish_results(results);
            } else {
                self.held_back = Some(results);
            }
        }
        let stale = self.stale_now();
        let seconds = match &stale {
            Some(s) if s.reason == StaleReason::Upstream => s.stale_seconds as i64,
            _ => 0,
        };
        self.shared.set_staleness(&self.poll, Some(seconds));
        let since = self.published_at.elapsed();
        let upstream_stale = stale
            .as_ref()
            .is_some_and(|s| s.reason == StaleReason::Upstream);
        let was_stale = self
            .latest
            .stale
            .as_ref()
            .is_some_and(|s| s.reason == StaleReason::Upstream);
        if upstream_stale && (!was_stale || since >= Duration::from_millis(STALE_TICK_MS)) {
            self.latest.stale = stale;
            self.latest.encode_catch_up();
            self.latest.update = self
                .latest
                .stale
                .as_ref()
                .map(Stale::event)
                .unwrap_or_default();
            self.publish();
        } else if since >= Duration::from_millis(HEARTBEAT_MS) {
            if !upstream_stale && was_stale {
                // Heard again, nothing new yet: the viewers' `stale` notice is lifted by the
                // next results; meanwhile the staleness no longer shows on reads.
                self.latest.stale = None;
                self.latest.encode_catch_up();
            }
            self.latest.update = Bytes::from_static(HEARTBEAT_EVENT);
            self.publish();
        }
        false
    }
}
