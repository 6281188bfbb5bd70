//! The viewers' tier (issue 23): an edge keeps one subscription per poll to a node's live
//! stream and serves every viewer and reader of that poll from it.
//!
//! - A subscription ([`follow`]) reads `GET /v1/polls/{poll}/stream` from the nearest ready
//!   node, fails over along the upstream order when the stream ends, errs, falls silent for
//!   `fanout_stale_after_ms`, or its node stops being ready, and publishes each change into
//!   one latest-value slot per poll (a `tokio::sync::watch`, [`Latest`]): the results JSON
//!   with its strong `ETag` and the SSE event, each encoded once; and into the poll's hub of
//!   viewers ([`tally_serve::broadcast`]).
//! - A viewer below hyper (a connection whose first request is the stream: nearly all) joins
//!   the poll's hub, whose broadcaster writes each publication's shared bytes to every
//!   viewer's socket in one loop; the viewer's own task runs only when its socket would block.
//!   A viewer served through hyper (a stream asked for on a keep-alive connection) has a
//!   stream of its own ([`viewer`]) that waits on the slot. Either way a viewer that stops
//!   reading skips to the latest publication when it reads again (one frame held; nothing is
//!   queued per viewer), and the connection's write-stall guard drops it if it never does.
//! - Results, history and the poll list are answered from the cached bytes with the node's
//!   `Cache-Control`, `ETag` and `304` ([`tally_serve::caching`]); history and the poll list are
//!   read from a node at most once per [`HISTORY_REFRESH_MS`] / [`POLL_LIST_REFRESH_MS`]
//!   whatever the number of readers (one read in flight per poll; the rest wait for it).
//! - Degrade, do not fail: when no node's stream has been heard for `fanout_stale_after_ms`,
//!   viewers keep the last results and get a `stale` event (the results' `as_of_ms`, how long,
//!   why) every [`STALE_TICK_MS`]; reads answer the last bytes with `Tally-Stale-Seconds`. While
//!   the edge sheds votes, results go out at most every [`SHEDDING_TICK_MS`].
//!
//! Bounded: at most `fanout_polls_max` polls subscribed (a read of another poll gets 503
//! `overloaded` and `Retry-After`); viewers within the memory budget `viewer_memory_bytes`,
//! each charged what its path costs ([`tally_serve::viewers::ViewerBudget`]: [`VIEWER_BYTES`]
//! below hyper, more through it; one more gets 503 `overloaded` and is told to poll the
//! cacheable results route instead). A subscription without viewers or reads
//! for [`SUBSCRIPTION_IDLE_MS`] ends.

mod follow;
pub mod latest;
mod reads;
pub mod sse;
mod viewer;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally_client::Endpoint;
use tally_core::PollId;
use tally_serve::broadcast::Hub;
use tally_serve::error::ApiError;
use tally_serve::viewers::{ViewerBudget, ViewerCharge, ViewerPath};
use tokio::sync::watch;
use tokio::time::Instant;

pub use latest::{Encoded, Latest, Results, Stale, StaleReason};
pub use reads::STALE_HEADER;
pub use viewer::ViewerStream;

use crate::catalogue::Catalogue;
use crate::dispatch::Availability;
use crate::metrics::EdgeMetrics;
use crate::upstream::Connector;

pub use crate::config::{
    FANOUT_POLLS_DEFAULT, STALE_AFTER_MS_DEFAULT, VIEWER_BYTES, VIEWER_MEMORY_BYTES_DEFAULT,
};

/// While stale, viewers get a `stale` event this often, in ms (the slower tick).
pub const STALE_TICK_MS: u64 = 5_000;

/// While the edge sheds votes, results go to viewers at most this often, in ms.
pub const SHEDDING_TICK_MS: u64 = 2_000;

/// The edge counts as shedding for this long after it last shed a vote, in ms.
pub const SHEDDING_HOLD_MS: u64 = 5_000;

/// A quiet stream gets a heartbeat this often, in ms (proxies close silent connections).
pub const HEARTBEAT_MS: u64 = 5_000;

/// How often a subscription checks staleness, heartbeats, its node and its idleness, in ms.
pub const TICK_MS: u64 = 250;

/// How long a first read of a poll waits for the subscription's first results, in ms.
pub const FIRST_RESULTS_WAIT_MS: u64 = 2_000;

/// A subscription with no viewer and no read for this long ends, in ms.
pub const SUBSCRIPTION_IDLE_MS: u64 = 60_000;

/// History is read from a node at most this often per poll, in ms.
pub const HISTORY_REFRESH_MS: u64 = 1_000;

/// The poll list is read from a node at most this often, in ms.
pub const POLL_LIST_REFRESH_MS: u64 = 1_000;

/// How long one read of history or the poll list from a node may take, in ms.
pub const UPSTREAM_READ_TIMEOUT_MS: u64 = 2_000;

/// Longest wait between two attempts to open a node's stream, in ms.
pub const RECONNECT_BACKOFF_MS_MAX: u64 = 1_000;

// A viewer must hear something before a proxy's idle timeout (often 30–60 s).
const _: () = assert!(HEARTBEAT_MS <= 15_000 && STALE_TICK_MS <= 15_000);
const _: () = assert!(TICK_MS <= HEARTBEAT_MS && TICK_MS <= SHEDDING_TICK_MS);

/// The fan-out's settings, from the edge's configuration.
#[derive(Debug, Clone, Copy)]
pub struct FanoutSettings {
    /// Most polls subscribed at once.
    pub polls_max: usize,
    /// The SSE viewers' memory budget, in bytes ([`ViewerBudget`]).
    pub viewer_memory_bytes: u64,
    /// Silence after which the figures are stale and the next node is tried.
    pub stale_after: Duration,
}

/// What the fan-out's tasks share.
pub(crate) struct Shared {
    settings: FanoutSettings,
    upstreams: Vec<Endpoint>,
    connector: Arc<dyn Connector>,
    availability: Arc<Availability>,
    metrics: Arc<EdgeMetrics>,
    stopping: watch::Receiver<bool>,
    epoch: Instant,
    /// Votes shed, as last seen.
    shed_seen: AtomicU64,
    /// Until when (ms since `epoch`) the edge counts as shedding.
    shedding_until_ms: AtomicU64,
    subscriptions: Mutex<BTreeMap<PollId, Entry>>,
    /// Each followed poll's staleness in seconds (the gauge shows the largest).
    staleness: Mutex<BTreeMap<PollId, i64>>,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Records `poll`'s staleness (`None`: it is no longer followed) and shows the largest.
    fn set_staleness(&self, poll: &PollId, seconds: Option<i64>) {
        let mut staleness = self
            .staleness
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match seconds {
            Some(seconds) => {
                staleness.insert(poll.clone(), seconds);
            }
            None => {
                staleness.remove(poll);
            }
        }
        let largest = staleness.values().copied().max().unwrap_or(0);
        self.metrics.fanout_staleness.set(largest);
    }

    /// Whether the edge has shed votes within [`SHEDDING_HOLD_MS`].
    fn shedding(&self) -> bool {
        let shed = self.metrics.votes_shed();
        let now = self.now_ms();
        if shed > self.shed_seen.swap(shed, Ordering::Relaxed) {
            self.shedding_until_ms
                .store(now + SHEDDING_HOLD_MS, Ordering::Relaxed);
        }
        now < self.shedding_until_ms.load(Ordering::Relaxed)
    }
}

/// One poll's subscription, as readers find it.
#[derive(Clone)]
pub(crate) struct Entry {
    latest: watch::Receiver<Arc<Latest>>,
    /// The viewers served below hyper, written to by the hub's broadcaster.
    hub: Hub,
    /// When it was last read (ms since the epoch).
    last_read_ms: Arc<AtomicU64>,
    /// The history read from a node, behind a single-flight lock.
    history: Arc<tokio::sync::Mutex<Option<reads::Fetched>>>,
}

/// The fan-out of one edge.
pub struct Fanout {
    shared: Arc<Shared>,
    viewers: Arc<AtomicUsize>,
    budget: Arc<ViewerBudget>,
    poll_list: tokio::sync::Mutex<Option<reads::Fetched>>,
}

/// Why a poll cannot be followed.
#[derive(Debug)]
pub enum Unfollowable {
    /// The edge has not read any node's poll list yet.
    NotLearnt,
    /// No node lists it.
    Unknown,
    /// `fanout_polls_max` polls are subscribed.
    Full,
}

impl From<Unfollowable> for ApiError {
    fn from(why: Unfollowable) -> Self {
        match why {
            Unfollowable::NotLearnt => {
                ApiError::Unavailable("the edge has not heard from a node yet")
            }
            Unfollowable::Unknown => ApiError::UnknownPoll(String::new()),
            Unfollowable::Full => ApiError::Overloaded(5),
        }
    }
}

/// Wiring of [`Fanout::new`].
pub struct FanoutWiring {
    /// The nodes, nearest first.
    pub upstreams: Vec<Endpoint>,
    /// How to reach them.
    pub connector: Arc<dyn Connector>,
    /// Which are ready.
    pub availability: Arc<Availability>,
    /// The edge's metrics.
    pub metrics: Arc<EdgeMetrics>,
    /// Set when the edge stops: subscriptions end, and with them every viewer's stream.
    pub stopping: watch::Receiver<bool>,
}

impl Fanout {
    /// A fan-out with nothing subscribed yet.
    pub fn new(settings: FanoutSettings, wiring: FanoutWiring) -> Self {
        let budget = ViewerBudget::new(settings.viewer_memory_bytes);
        wiring
            .metrics
            .fanout_viewers_max
            .set(budget.viewers_max() as i64);
        Self {
            shared: Arc::new(Shared {
                settings,
                upstreams: wiring.upstreams,
                connector: wiring.connector,
                availability: wiring.availability,
                metrics: wiring.metrics,
                stopping: wiring.stopping,
                epoch: Instant::now(),
                shed_seen: AtomicU64::new(0),
                shedding_until_ms: AtomicU64::new(0),
                subscriptions: Mutex::new(BTreeMap::new()),
                staleness: Mutex::new(BTreeMap::new()),
            }),
            viewers: Arc::new(AtomicUsize::new(0)),
            budget,
            poll_list: tokio::sync::Mutex::new(None),
        }
    }

    /// The subscription of `poll` (a name from the request), started if need be.
    pub(crate) fn entry(&self, catalogue: &Catalogue, poll: &str) -> Result<Entry, Unfollowable> {
        if !catalogue.learnt {
            return Err(Unfollowable::NotLearnt);
        }
        let Some(known) = catalogue.polls.get(poll) else {
            return Err(Unfollowable::Unknown);
        };
        let now = self.shared.now_ms();
        // A poisoned lock means a panic while holding it; the map is still whole (every
        // change is one insert or remove).
        let mut subscriptions = self
            .shared
            .subscriptions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = subscriptions.get(&known.id) {
            entry.last_read_ms.store(now, Ordering::Relaxed);
            return Ok(entry.clone());
        }
        if subscriptions.len() >= self.shared.settings.polls_max {
            return Err(Unfollowable::Full);
        }
        let (slot, latest) = watch::channel(Arc::new(Latest::default()));
        let (publisher, hub) = Hub::new();
        let entry = Entry {
            latest,
            hub,
            last_read_ms: Arc::new(AtomicU64::new(now)),
            history: Arc::new(tokio::sync::Mutex::new(None)),
        };
        subscriptions.insert(known.id.clone(), entry.clone());
        self.shared
            .metrics
            .fanout_polls
            .set(subscriptions.len() as i64);
        tokio::spawn(
            follow::Follow::new(
                known.id.clone(),
                self.shared.clone(),
                slot,
                publisher,
                entry.last_read_ms.clone(),
            )
            .run(),
        );
        Ok(entry)
    }

    /// Takes a viewer's place, charged what `path` costs against the memory budget, or says
    /// the edge is full. A refusal through hyper is counted (one below hyper goes to the
    /// router next, which counts it).
    pub(crate) fn admit(&self, path: ViewerPath) -> Option<ViewerPlace> {
        let Some(charge) = self.budget.admit(path) else {
            if path == ViewerPath::ThroughHyper {
                self.shared.metrics.fanout_viewers_refused.inc();
            }
            return None;
        };
        self.viewers.fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.fanout_viewers.inc();
        Some(ViewerPlace {
            viewers: self.viewers.clone(),
            metrics: self.shared.metrics.clone(),
            _charge: charge,
        })
    }

    /// SSE viewers now.
    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }
}

/// One viewer's place: given back when its stream ends, however it ends.
pub struct ViewerPlace {
    viewers: Arc<AtomicUsize>,
    metrics: Arc<EdgeMetrics>,
    _charge: ViewerCharge,
}

impl Drop for ViewerPlace {
    fn drop(&mut self) {
        self.viewers.fetch_sub(1, Ordering::Relaxed);
        self.metrics.fanout_viewers.dec();
    }
}

/// Whether a subscription should end now: the edge stops, or nobody has read it for
/// [`SUBSCRIPTION_IDLE_MS`] and no viewer holds it. Removes it from the registry if so (under
/// the registry's lock, so no reader can pick it up meanwhile).
fn retire_if_idle(
    shared: &Shared,
    poll: &PollId,
    slot: &watch::Sender<Arc<Latest>>,
    hub_viewers: usize,
    last_read_ms: &AtomicU64,
) -> bool {
    let stopping = *shared.stopping.borrow();
    let idle = shared
        .now_ms()
        .saturating_sub(last_read_ms.load(Ordering::Relaxed))
        >= SUBSCRIPTION_IDLE_MS;
    let mut subscriptions = shared
        .subscriptions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // The registry's own receiver is the one left when no viewer through hyper holds the
    // slot; the viewers below hyper are the hub's.
    if stopping || (idle && slot.receiver_count() <= 1 && hub_viewers == 0) {
        subscriptions.remove(poll);
        shared.metrics.fanout_polls.set(subscriptions.len() as i64);
        return true;
    }
    false
}
