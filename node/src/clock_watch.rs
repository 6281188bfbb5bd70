//! The clock watch: measures every peer's wall-clock offset (from the readings the sync
//! sessions carry), watches this node's own wall clock for steps against its monotonic
//! clock, and sets or lifts [`Hold::ClockSkew`] by the rule of [`tally_core::clock::judge`].
//!
//! What it promises:
//! - a node with peers stamps votes only while its clock is *checked*: a majority of the
//!   clocks it can reach (itself included) agree with it within `max_clock_offset_ms`, or it
//!   is the senior side of a tie (DESIGN.md §2, "Clocks"). Until the first check after it
//!   starts, and from the moment it sees its own wall clock step by more than half the bound
//!   until peers confirm the new reading, it holds; the engine reads the same step guard on
//!   every vote, so no vote is stamped between a step and the watch's next look;
//! - a node whose peers all stay unreachable for `catch_up_timeout_ms` after it starts
//!   trusts its own clock (a region cut off must serve); one that loses its peers later keeps
//!   the verdict it had; a node with no peers never holds;
//! - the configured start-up windows (`open = true`, `duration_seconds`) are proposed at
//!   the clock's reading only once the clock is checked (or trusted alone) and not held, so
//!   a skewed node never opens or closes a poll for the cluster;
//! - each verdict change is logged once, with the offsets that decided it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tally_core::clock::{ClockPolicy, ClockSample, ClockVerdict, OffsetEstimate, OffsetFilter};
use tally_core::{PollId, PollWindow, UnixMillis};

use tokio::time::Instant;

use crate::health::{Health, Hold};
use crate::metrics::{Metrics, PeerMetrics};
use crate::peer::status::PeerOffset;
use tally_core::Clock;

/// How often the watch reads its clocks and re-judges.
pub const CLOCK_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// A peer's latest sample counts as "reachable" evidence for at least this long.
pub const CLOCK_SAMPLE_TTL_MS_MIN: u64 = 5_000;

/// Sync ticks a peer's latest sample stays fresh for (when that is longer than the minimum).
pub const CLOCK_SAMPLE_TTL_TICKS: u64 = 10;

/// In a tie, one side's clock must have been stable this much longer to count as senior.
pub const CLOCK_SENIORITY_MARGIN_MS: u64 = 1_000;

/// The default `max_clock_offset_ms` (CockroachDB's `--max-offset` default).
pub const MAX_CLOCK_OFFSET_MS_DEFAULT: u64 = 500;

/// What the watch needs to know at start-up.
#[derive(Debug, Clone)]
pub struct ClockSettings {
    /// Clocks further apart than this disagree, in ms.
    pub max_offset_ms: u64,
    /// Whether the node syncs with peers (a lone node trusts its own clock).
    pub has_peers: bool,
    /// With peers: trust the own clock after this long with no peer reachable since start.
    pub trust_alone_after: Duration,
    /// How long a peer's latest sample counts as evidence, in ms.
    pub sample_ttl_ms: u64,
    /// Start-up windows to propose once the clock may be trusted: each poll's window as
    /// a function of the clock's reading then.
    pub startup_windows: Vec<(PollId, StartupWindow)>,
}

/// A configured start-up window: open at the proposal's time, for `duration_seconds` if set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartupWindow {
    /// Close this many seconds after opening (none: no end).
    pub duration_seconds: Option<u64>,
}

impl StartupWindow {
    /// The window proposed at `now`.
    pub fn at(&self, now: UnixMillis) -> PollWindow {
        PollWindow {
            opens_at: Some(now),
            closes_at: self
                .duration_seconds
                .map(|s| UnixMillis(now.0.saturating_add(s.saturating_mul(1000)))),
        }
    }
}

/// The watch (shared: the sync sessions record samples, the engine reads the step guard, the
/// watch task judges).
pub struct ClockWatch {
    clock: Arc<dyn Clock>,
    origin: Instant,
    /// Wall clock minus monotonic clock at the watch's last look, in ms.
    baseline_ms: AtomicI64,
    /// Monotonic ms (since `origin`) at which the wall clock last stepped (0: the start).
    stable_since_ms: AtomicU64,
    /// Steps of the wall clock seen so far ([`ClockWatch::steps_seen`]).
    steps: AtomicU64,
    settings: ClockSettings,
    state: Mutex<WatchState>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct WatchState {
    filters: BTreeMap<String, OffsetFilter>,
    /// A verdict from peers, or trusted alone, since the start or the last step.
    checked: bool,
    /// Whether the last step (not the start) is why the clock is unchecked.
    stepped: bool,
    held: bool,
    /// Start-up windows not yet proposed.
    pending_windows: Vec<(PollId, StartupWindow)>,
    /// Polls a peer that defines them as this node does has answered a round about (its
    /// window, if any, merged): only their start-up windows may be proposed before
    /// `trust_alone_after`.
    heard: std::collections::BTreeSet<PollId>,
    last_verdict: Option<ClockVerdict>,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl ClockWatch {
    /// A watch reading `clock`; a node with peers starts unchecked (held).
    pub fn new(
        clock: Arc<dyn Clock>,
        settings: ClockSettings,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let origin = Instant::now();
        let baseline = clock.now().0 as i64;
        let state = WatchState {
            held: settings.has_peers,
            checked: !settings.has_peers,
            pending_windows: settings.startup_windows.clone(),
            ..WatchState::default()
        };
        if settings.has_peers {
            health.set_at_start(
                Hold::ClockSkew,
                "start-up: counting no votes until this node's clock is checked against its \
                 peers' (usually within a second of the first peer session)",
            );
        }
        Arc::new(Self {
            clock,
            origin,
            baseline_ms: AtomicI64::new(baseline),
            stable_since_ms: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            settings,
            state: Mutex::new(state),
            health,
            metrics,
        })
    }

    fn mono_ms(&self) -> u64 {
        millis(self.origin.elapsed())
    }

    /// How long this node's wall clock has run without a step, in ms.
    pub fn stable_ms(&self) -> u64 {
        self.mono_ms()
            .saturating_sub(self.stable_since_ms.load(Ordering::Acquire))
    }

    /// The wall clock's drift from the baseline at `wall`: (wall − monotonic, change since
    /// the last look), in ms.
    fn deviation(&self, wall: UnixMillis) -> (i64, i64) {
        let current = wall.0 as i64 - self.mono_ms() as i64;
        (current, current - self.baseline_ms.load(Ordering::Acquire))
    }

    fn step_ms(&self) -> u64 {
        self.settings.max_offset_ms / 2
    }

    /// The engine's guard, read with each vote's clock reading: whether the wall clock has
    /// stepped since the watch last looked (by more than half the bound). A lone node never
    /// holds, so it never reports a step here.
    pub fn stepped_at(&self, wall: UnixMillis) -> bool {
        self.settings.has_peers && self.deviation(wall).1.unsigned_abs() > self.step_ms()
    }

    /// Steps of this node's wall clock the watch has seen: a sync round notes it as it
    /// stamps its request and passes it to [`ClockWatch::record_unless_stepped`].
    pub fn steps_seen(&self) -> u64 {
        self.steps.load(Ordering::Acquire)
    }

    /// [`ClockWatch::record`], unless the watch has seen a step since `steps_seen_at_send`:
    /// a round whose request was stamped before a step and whose answer came after it
    /// measures the old reading, and would confirm a clock that just jumped (the watch
    /// cleared every sample at the step; this one would be the only evidence). The next
    /// round measures the new reading. `None`: not taken; else what [`ClockWatch::record`]
    /// returns.
    pub fn record_unless_stepped(
        &self,
        peer: &str,
        sample: ClockSample,
        steps_seen_at_send: u64,
    ) -> Option<Option<PeerOffset>> {
        (self.steps_seen() == steps_seen_at_send).then(|| self.record(peer, sample))
    }

    /// Adds a sample from a sync round with `peer`; returns the peer's estimate now.
    pub fn record(&self, peer: &str, mut sample: ClockSample) -> Option<PeerOffset> {
        sample.received_at_ms = self.mono_ms();
        let estimate = {
            let mut state = self.lock();
            let filter = state.filters.entry(peer.to_owned()).or_default();
            filter.add(sample);
            filter.estimate()
        }?;
        let labels = PeerMetrics::labels(peer);
        let peers = &self.metrics.peers;
        peers
            .clock_offset_seconds
            .get_or_create(&labels)
            .set(estimate.offset_ms as f64 / 1000.0);
        peers
            .clock_offset_error_seconds
            .get_or_create(&labels)
            .set(estimate.error_ms as f64 / 1000.0);
        Some(PeerOffset {
            offset_ms: estimate.offset_ms,
            error_ms: estimate.error_ms,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that a peer defining `polls` as this node does completed a sync round, its
    /// answer merged: whatever window it holds for them is in place, so their start-up
    /// windows may be proposed once the clock is checked. A peer that defines a poll
    /// otherwise (a mismatched configuration) checks the clock but shares no window: were
    /// its round enough, a node back on an empty disk would open the poll at its own
    /// restart, beside peers holding the cluster's earlier opening, and stamp its votes from
    /// second 0 (simulation seed 9006).
    pub fn note_shared(&self, polls: &std::collections::BTreeSet<PollId>) {
        let mut state = self.lock();
        if !state.pending_windows.is_empty() {
            state.heard.extend(polls.iter().cloned());
        }
    }

    /// Whether start-up windows wait for a clock check (readiness waits for them too).
    pub fn windows_pending(&self) -> bool {
        !self.lock().pending_windows.is_empty()
    }

    /// One look: the step check, the verdict, the hold. Returns the start-up windows to
    /// propose now (taken out of the pending list) with the clock reading to propose them at.
    pub fn check(&self) -> (UnixMillis, Vec<(PollId, PollWindow)>) {
        let wall = self.clock.now();
        let (current, deviation) = self.deviation(wall);
        self.baseline_ms.store(current, Ordering::Release);
        let stepped = deviation.unsigned_abs() > self.step_ms();
        let mono = self.mono_ms();
        let mut state = self.lock();
        if stepped {
            self.stable_since_ms.store(mono, Ordering::Release);
            self.steps.fetch_add(1, Ordering::AcqRel);
            self.metrics.clock_steps.inc();
            tracing::warn!(
                step_ms = deviation,
                "this node's wall clock stepped against its monotonic clock; its clock is \
                 unchecked until its peers confirm it"
            );
            if self.settings.has_peers {
                state.filters.values_mut().for_each(OffsetFilter::clear);
                state.checked = false;
                state.stepped = true;
            }
        }
        if self.settings.has_peers {
            self.judge(&mut state, mono);
        }
        let windows = if state.checked && !state.held {
            // A poll no peer defining it alike has answered about waits, until the node
            // would trust its clock alone: it may not know the cluster's window yet.
            let alone_long_enough = mono >= millis(self.settings.trust_alone_after);
            let heard = std::mem::take(&mut state.heard);
            let (ready, waiting) = std::mem::take(&mut state.pending_windows)
                .into_iter()
                .partition(|(poll, _)| {
                    !self.settings.has_peers || alone_long_enough || heard.contains(poll)
                });
            state.pending_windows = waiting;
            state.heard = heard;
            ready
                .into_iter()
                .map(|(poll, window): (PollId, StartupWindow)| (poll, window.at(wall)))
                .collect()
        } else {
            Vec::new()
        };
        (wall, windows)
    }

    fn judge(&self, state: &mut WatchState, mono: u64) {
        let ttl = self.settings.sample_ttl_ms;
        let peers: Vec<_> = state
            .filters
            .values()
            .filter_map(OffsetFilter::estimate)
            .filter(|e| mono.saturating_sub(e.received_at_ms) <= ttl)
            .map(|e| peer_clock(&e, mono))
            .collect();
        let policy = ClockPolicy {
            max_offset_ms: self.settings.max_offset_ms,
            seniority_margin_ms: CLOCK_SENIORITY_MARGIN_MS,
        };
        let verdict = tally_core::clock::judge(self.stable_ms(), state.held, &peers, policy);
        let was_held = state.held;
        if verdict.has_evidence() {
            state.checked = true;
            state.stepped = false;
            state.held = verdict.skewed;
        } else if !state.checked {
            let alone_long_enough = mono >= millis(self.settings.trust_alone_after);
            if !state.stepped && alone_long_enough {
                tracing::warn!(
                    "no peer answered within catch_up_timeout_ms of start-up; trusting this \
                     node's own clock until a peer can check it"
                );
                state.checked = true;
                state.held = false;
            } else {
                state.held = true;
            }
        }
        if state.held != was_held || (state.held && state.last_verdict != Some(verdict)) {
            log_verdict(state.held, &verdict, &peers, self.settings.max_offset_ms);
        }
        state.last_verdict = Some(verdict);
        self.health.set(Hold::ClockSkew, state.held);
    }
}

/// What `estimate` says of a peer now: its stability brought forward by the time since.
fn peer_clock(estimate: &OffsetEstimate, mono: u64) -> tally_core::clock::PeerClock {
    tally_core::clock::PeerClock {
        offset_ms: estimate.offset_ms,
        error_ms: estimate.error_ms,
        stable_ms: estimate
            .peer_stable_ms
            .saturating_add(mono.saturating_sub(estimate.received_at_ms)),
    }
}

fn log_verdict(
    held: bool,
    verdict: &ClockVerdict,
    peers: &[tally_core::clock::PeerClock],
    max_offset_ms: u64,
) {
    let offsets: Vec<String> = peers
        .iter()
        .map(|p| format!("{:+}±{} ms", p.offset_ms, p.error_ms))
        .collect();
    let offsets = offsets.join(", ");
    let (near, far, tie) = (verdict.near, verdict.far, verdict.tie);
    if !held {
        tracing::info!(near, far, tie, %offsets, "clock checked against peers: stamping votes");
    } else if verdict.has_evidence() {
        tracing::warn!(
            near,
            far,
            tie,
            %offsets,
            max_clock_offset_ms = max_offset_ms,
            "this node's clock disagrees with its peers' (peer minus this node): it counts \
             no votes until its clock agrees"
        );
    } else {
        tracing::info!("clock not yet checked against a peer: counting no votes until it is");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wall clock the test sets by hand.
    #[derive(Default)]
    struct HandClock(AtomicU64);

    impl Clock for HandClock {
        fn now(&self) -> UnixMillis {
            UnixMillis(self.0.load(Ordering::Relaxed))
        }
    }

    fn watch_with(clock: Arc<HandClock>, has_peers: bool) -> (Arc<ClockWatch>, Arc<Health>) {
        let health = Arc::new(Health::default());
        let settings = ClockSettings {
            max_offset_ms: 500,
            has_peers,
            trust_alone_after: Duration::from_secs(5),
            sample_ttl_ms: CLOCK_SAMPLE_TTL_MS_MIN,
            startup_windows: vec![(
                PollId::new("p").unwrap(),
                StartupWindow {
                    duration_seconds: Some(600),
                },
            )],
        };
        let watch = ClockWatch::new(clock, settings, health.clone(), Arc::new(Metrics::new()));
        (watch, health)
    }

    fn reading(
        watch: &ClockWatch,
        clock: &HandClock,
        peer_offset_ms: i64,
        stable_ms: u64,
    ) -> ClockSample {
        let t0 = clock.now();
        ClockSample {
            sent_at: t0,
            peer_at: UnixMillis((t0.0 as i64 + peer_offset_ms + 2) as u64),
            round_trip_ms: 4,
            peer_stable_ms: stable_ms,
            received_at_ms: watch.mono_ms(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_with_peers_holds_until_checked_and_proposes_its_window_only_then() {
        // Goal: a node with peers stamps nothing and opens nothing before a peer has checked
        // its clock; then its window opens at the checked clock. Method: a hand clock, one
        // agreeing peer sample after 300 ms.
        let clock = Arc::new(HandClock(AtomicU64::new(1_000_000)));
        let (watch, health) = watch_with(clock.clone(), true);
        assert_eq!(health.vote_refusal(), Some(Hold::ClockSkew));
        assert!(watch.check().1.is_empty());
        tokio::time::advance(Duration::from_millis(300)).await;
        clock.0.fetch_add(300, Ordering::Relaxed);
        watch.record("b", reading(&watch, &clock, 20, 10_000));
        assert!(
            watch.check().1.is_empty(),
            "checked, but no peer defining the poll alike has answered"
        );
        assert_eq!(health.vote_refusal(), None);
        watch.note_shared(&[PollId::new("q").unwrap()].into());
        assert!(
            watch.check().1.is_empty(),
            "a peer that shares another poll"
        );
        watch.note_shared(&[PollId::new("p").unwrap()].into());
        let (now, windows) = watch.check();
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].1.opens_at, Some(now));
        assert_eq!(windows[0].1.closes_at, Some(UnixMillis(now.0 + 600_000)));
        assert!(!watch.windows_pending());
        assert!(watch.check().1.is_empty(), "proposed once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_no_peer_defining_the_poll_alike_answered_about_waits_for_the_catch_up_timeout()
     {
        // Goal: a node whose only answering peer defines the poll otherwise (a mismatched
        // configuration: its clock counts, its window is not taken) does not open the poll
        // at its own clock while a peer may still bring the cluster's window; it does once
        // it would trust its clock alone (simulation seed 9006: a region back on an empty
        // disk stamped second 0 six seconds into the poll). Method: a hand clock, agreeing
        // samples and no shared poll, then past the catch-up timeout.
        let clock = Arc::new(HandClock(AtomicU64::new(1_000_000)));
        let (watch, health) = watch_with(clock.clone(), true);
        tokio::time::advance(Duration::from_millis(300)).await;
        clock.0.fetch_add(300, Ordering::Relaxed);
        watch.note_shared(&std::collections::BTreeSet::new());
        watch.record("b", reading(&watch, &clock, 20, 10_000));
        assert!(watch.check().1.is_empty());
        assert_eq!(health.vote_refusal(), None, "the clock itself is checked");
        assert!(watch.windows_pending(), "readiness waits for the window");
        tokio::time::advance(Duration::from_secs(5)).await;
        clock.0.fetch_add(5_000, Ordering::Relaxed);
        watch.record("b", reading(&watch, &clock, 20, 15_000));
        let (now, windows) = watch.check();
        assert_eq!(windows.len(), 1, "trusted alone for this poll: it opens");
        assert_eq!(windows[0].1.opens_at, Some(now));
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_of_the_own_clock_holds_at_once_until_peers_confirm_the_new_reading() {
        // Goal: the engine's guard sees a step before the watch does, the watch then holds
        // and forgets the old samples, and fresh agreeing samples lift the hold. Method:
        // a hand clock stepped back an hour, then forward again.
        let clock = Arc::new(HandClock(AtomicU64::new(10_000_000)));
        let (watch, health) = watch_with(clock.clone(), true);
        watch.record("b", reading(&watch, &clock, 0, 60_000));
        watch.check();
        assert!(health.is_ready());
        tokio::time::advance(Duration::from_secs(2)).await;
        clock.0.fetch_add(2_000, Ordering::Relaxed);
        assert!(!watch.stepped_at(clock.now()), "time passing is not a step");
        clock.0.fetch_sub(3_600_000, Ordering::Relaxed);
        assert!(watch.stepped_at(clock.now()));
        watch.check();
        assert_eq!(health.vote_refusal(), Some(Hold::ClockSkew));
        assert!(
            watch.stable_ms() < 10,
            "the step restarts the stable period"
        );
        watch.record("b", reading(&watch, &clock, 3_600_000, 62_000));
        watch.check();
        assert!(health.has(Hold::ClockSkew), "the senior peer disagrees");
        clock.0.fetch_add(3_600_000, Ordering::Relaxed);
        watch.check();
        watch.record("b", reading(&watch, &clock, 1, 62_100));
        watch.check();
        assert!(health.is_ready(), "the clock agrees again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sample_whose_round_straddled_a_step_of_the_own_clock_is_not_taken() {
        // Goal: a round stamped before a step and answered after it cannot confirm the new
        // reading (it measured the old one). Method: a hand clock stepped an hour forward
        // between a round's stamp and its record; then a round stamped after the step.
        let clock = Arc::new(HandClock(AtomicU64::new(10_000_000)));
        let (watch, health) = watch_with(clock.clone(), true);
        watch.record("b", reading(&watch, &clock, 0, 60_000));
        watch.check();
        assert!(health.is_ready());
        let steps = watch.steps_seen();
        let stale = reading(&watch, &clock, 0, 60_000);
        clock.0.fetch_add(3_600_000, Ordering::Relaxed);
        watch.check();
        assert_eq!(health.vote_refusal(), Some(Hold::ClockSkew));
        assert!(watch.record_unless_stepped("b", stale, steps).is_none());
        watch.check();
        assert_eq!(
            health.vote_refusal(),
            Some(Hold::ClockSkew),
            "the stale sample confirmed nothing"
        );
        let steps = watch.steps_seen();
        let fresh = reading(&watch, &clock, -3_600_000, 60_100);
        assert!(
            watch
                .record_unless_stepped("b", fresh, steps)
                .is_some_and(|o| o.is_some())
        );
        watch.check();
        assert!(health.has(Hold::ClockSkew), "the peer disagrees");
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_alone_trusts_its_clock_after_the_catch_up_timeout_and_a_lone_node_at_once() {
        // Goal: a region cut off at start-up still serves, and a node without peers never
        // holds. Method: no samples at all; advance past the catch-up timeout.
        let clock = Arc::new(HandClock(AtomicU64::new(5_000)));
        let (watch, health) = watch_with(clock.clone(), true);
        watch.check();
        assert!(health.has(Hold::ClockSkew));
        tokio::time::advance(Duration::from_secs(5)).await;
        clock.0.fetch_add(5_000, Ordering::Relaxed);
        assert_eq!(watch.check().1.len(), 1, "trusted alone: the window opens");
        assert!(health.is_ready());
        let (lone, health) = watch_with(clock.clone(), false);
        assert!(health.is_ready());
        assert_eq!(lone.check().1.len(), 1);
        clock.0.fetch_add(3_600_000, Ordering::Relaxed);
        assert!(!lone.stepped_at(clock.now()));
        lone.check();
        assert!(
            health.is_ready(),
            "a lone node trusts its clock through steps"
        );
    }
}
