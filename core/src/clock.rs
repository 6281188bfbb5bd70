//! Clock offsets between nodes, and the rule that says whether a node's wall clock may stamp
//! votes. Pure arithmetic: the caller reads its clocks and passes the readings in.
//!
//! **The estimate.** A puller notes its wall clock `t0` as its request leaves; the peer answers
//! with its wall clock `t1`; the answer arrives after a round trip `rtt` measured on the
//! puller's monotonic clock (so a wall-clock step during the round cannot bend it). With
//! `t2 = t0 + rtt`, the peer's clock is ahead of the puller's by `t1 − (t0 + t2) / 2`, give or
//! take `rtt / 2`: `t1` was read somewhere inside the round trip. [`OffsetFilter`] keeps a
//! peer's last [`OFFSET_SAMPLES_MAX`] samples and answers with the one of the shortest round
//! trip (NTP's clock filter): queueing only ever lengthens a round trip, so the fastest one
//! carries the least error.
//!
//! **The rule** ([`judge`]). A peer is *far* when even the most favourable reading of its
//! estimate is over the bound (`|offset| − error > max`), *near* when even the least
//! favourable is within it (`|offset| + error ≤ max`), and otherwise *uncertain* (not counted).
//! A node's clock is skewed when the far peers outnumber the near ones plus itself: it
//! disagrees with a strict majority of the clocks it can reach. A tie (one far peer and no
//! near one, say) has no majority; then the side whose longest-stable clock has run without
//! a step for longer (by [`ClockPolicy::seniority_margin_ms`]) keeps stamping, the other
//! defers, equal sides both defer, and a node that already defers keeps deferring (a tie is
//! never evidence that a skewed clock was fixed).

use std::collections::VecDeque;

use crate::ids::UnixMillis;

/// Where wall-clock time comes from: the system clock in production, simulated time in the
/// simulation, a hand-moved one in tests. The core never reads it; the node and the edge do,
/// and pass the readings in.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now(&self) -> UnixMillis;
}

/// Samples an [`OffsetFilter`] keeps per peer (8 sync rounds: under a second at the default
/// 100 ms tick).
pub const OFFSET_SAMPLES_MAX: usize = 8;

/// One round trip's readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// The puller's wall clock as its request left (`t0`).
    pub sent_at: UnixMillis,
    /// The peer's wall clock as it answered (`t1`).
    pub peer_at: UnixMillis,
    /// The round trip on the puller's monotonic clock, in ms.
    pub round_trip_ms: u64,
    /// How long the peer's wall clock had run without a step when it answered, in ms.
    pub peer_stable_ms: u64,
    /// When the answer arrived, on the puller's monotonic clock (ms since any fixed origin).
    pub received_at_ms: u64,
}

impl ClockSample {
    /// How far the peer's wall clock is ahead of the puller's (negative: behind), in ms.
    pub fn offset_ms(&self) -> i64 {
        // i128: any pair of u64 readings fits, so a peer's absurd clock cannot overflow.
        let t0 = i128::from(self.sent_at.0);
        let t1 = i128::from(self.peer_at.0);
        let half_trip = i128::from(self.round_trip_ms) / 2;
        let offset = t1 - t0 - half_trip;
        offset.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// How far the true offset may be from [`Self::offset_ms`], in ms (half the round trip,
    /// rounded up).
    pub fn error_ms(&self) -> u64 {
        self.round_trip_ms.div_ceil(2)
    }
}

/// A peer's offset as estimated from its recent samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEstimate {
    /// The peer's wall clock minus this node's, in ms.
    pub offset_ms: i64,
    /// The estimate is within this many ms of the true offset.
    pub error_ms: u64,
    /// How long the peer's clock had run without a step, as of its latest sample, in ms.
    pub peer_stable_ms: u64,
    /// When the latest sample arrived (the caller's monotonic ms).
    pub received_at_ms: u64,
}

/// The recent samples of one peer (at most [`OFFSET_SAMPLES_MAX`]).
#[derive(Debug, Clone, Default)]
pub struct OffsetFilter {
    samples: VecDeque<ClockSample>,
}

impl OffsetFilter {
    /// Adds a sample, dropping the oldest past [`OFFSET_SAMPLES_MAX`]. A peer whose reported
    /// stability went down since the previous sample stepped its clock or restarted: its
    /// older samples measured another clock and are dropped.
    pub fn add(&mut self, sample: ClockSample) {
        if self
            .samples
            .back()
            .is_some_and(|last| sample.peer_stable_ms < last.peer_stable_ms)
        {
            self.samples.clear();
        }
        if self.samples.len() == OFFSET_SAMPLES_MAX {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// Forgets every sample (this node's own clock stepped: they measured the old one).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// The estimate: the offset and error of the sample with the shortest round trip (the
    /// latest of equals), the stability and arrival of the latest. `None` without samples.
    pub fn estimate(&self) -> Option<OffsetEstimate> {
        let latest = self.samples.back()?;
        let best = self
            .samples
            .iter()
            .rev()
            .min_by_key(|sample| sample.round_trip_ms)?;
        Some(OffsetEstimate {
            offset_ms: best.offset_ms(),
            error_ms: best.error_ms(),
            peer_stable_ms: latest.peer_stable_ms,
            received_at_ms: latest.received_at_ms,
        })
    }
}

/// The bound and the tie-break's margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockPolicy {
    /// Clocks further apart than this disagree, in ms.
    pub max_offset_ms: u64,
    /// In a tie, one side's clock must have been stable this much longer than the other's
    /// to count as the senior, in ms.
    pub seniority_margin_ms: u64,
}

/// How one peer's clock stands against this node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    /// Within the bound whatever the error.
    Near,
    /// Beyond the bound whatever the error.
    Far,
    /// The error straddles the bound: not counted either way.
    Uncertain,
}

/// What a node knows of one reachable peer's clock, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerClock {
    /// The peer's wall clock minus this node's, in ms.
    pub offset_ms: i64,
    /// Error bound of `offset_ms`.
    pub error_ms: u64,
    /// How long the peer's clock has run without a step, brought up to now, in ms.
    pub stable_ms: u64,
}

impl PeerClock {
    /// Where this peer stands under `max_offset_ms`.
    pub fn agreement(&self, max_offset_ms: u64) -> Agreement {
        let distance = self.offset_ms.unsigned_abs();
        if distance.saturating_sub(self.error_ms) > max_offset_ms {
            Agreement::Far
        } else if distance.saturating_add(self.error_ms) <= max_offset_ms {
            Agreement::Near
        } else {
            Agreement::Uncertain
        }
    }
}

/// What [`judge`] decided, with its counts for logs and `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockVerdict {
    /// Whether this node's clock must not stamp votes.
    pub skewed: bool,
    /// Peers within the bound.
    pub near: usize,
    /// Peers beyond it.
    pub far: usize,
    /// Peers whose error straddles the bound (not counted).
    pub uncertain: usize,
    /// Whether no side had a majority and seniority (or the standing hold) decided.
    pub tie: bool,
}

impl ClockVerdict {
    /// Whether any peer gave a usable (near or far) reading.
    pub fn has_evidence(&self) -> bool {
        self.near + self.far > 0
    }
}

/// Decides whether a node's clock may stamp votes (see the module doc): `own_stable_ms` is how
/// long its own clock has run without a step, `held` whether it defers already, `peers` the
/// reachable peers' clocks. Without usable evidence (no near or far peer) it is not skewed;
/// the caller decides what "no evidence" means for it.
pub fn judge(
    own_stable_ms: u64,
    held: bool,
    peers: &[PeerClock],
    policy: ClockPolicy,
) -> ClockVerdict {
    let mut verdict = ClockVerdict {
        skewed: false,
        near: 0,
        far: 0,
        uncertain: 0,
        tie: false,
    };
    let mut near_stable_ms = own_stable_ms;
    let mut far_stable_ms = 0u64;
    for peer in peers {
        match peer.agreement(policy.max_offset_ms) {
            Agreement::Near => {
                verdict.near += 1;
                near_stable_ms = near_stable_ms.max(peer.stable_ms);
            }
            Agreement::Far => {
                verdict.far += 1;
                far_stable_ms = far_stable_ms.max(peer.stable_ms);
            }
            Agreement::Uncertain => verdict.uncertain += 1,
        }
    }
    let agreeing = verdict.near + 1;
    verdict.skewed = if verdict.far > agreeing {
        true
    } else if verdict.far < agreeing {
        false
    } else {
        verdict.tie = true;
        let senior = near_stable_ms > far_stable_ms.saturating_add(policy.seniority_margin_ms);
        held || !senior
    };
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t0: u64, t1: u64, rtt: u64, received: u64) -> ClockSample {
        ClockSample {
            sent_at: UnixMillis(t0),
            peer_at: UnixMillis(t1),
            round_trip_ms: rtt,
            peer_stable_ms: received,
            received_at_ms: received,
        }
    }

    const POLICY: ClockPolicy = ClockPolicy {
        max_offset_ms: 500,
        seniority_margin_ms: 1_000,
    };

    fn peer(offset_ms: i64, stable_ms: u64) -> PeerClock {
        PeerClock {
            offset_ms,
            error_ms: 2,
            stable_ms,
        }
    }

    #[test]
    fn the_offset_is_the_peer_reading_against_the_midpoint_of_the_round_trip() {
        // Goal: the formula t1 − (t0 + t2)/2 with its rtt/2 bound, signs both ways.
        // Method: a peer an hour behind and one 250 ms ahead, 10 ms round trips.
        let behind = sample(10_000_000, 10_000_000 - 3_600_000 + 5, 10, 0);
        assert_eq!(behind.offset_ms(), -3_600_000);
        assert_eq!(behind.error_ms(), 5);
        let ahead = sample(1_000, 1_255, 10, 0);
        assert_eq!(ahead.offset_ms(), 250);
        assert_eq!(sample(0, 0, 7, 0).error_ms(), 4, "rounded up");
        let absurd = sample(u64::MAX, 0, u64::MAX, 0);
        assert_eq!(absurd.offset_ms(), i64::MIN, "clamped, not overflowed");
    }

    #[test]
    fn the_filter_answers_with_the_fastest_recent_round_trip_and_forgets_a_restarted_peer() {
        // Goal: a queued (slow) answer does not drag the estimate, old samples age out, and a
        // peer whose stability went down starts afresh. Method: feed samples by hand.
        let mut filter = OffsetFilter::default();
        assert_eq!(filter.estimate(), None);
        filter.add(sample(0, 100, 400, 1)); // true offset ~ -100, error 200
        filter.add(sample(1_000, 1_002, 4, 2)); // true offset ~ 0, error 2
        filter.add(sample(2_000, 2_300, 600, 3));
        let estimate = filter.estimate().unwrap();
        assert_eq!((estimate.offset_ms, estimate.error_ms), (0, 2));
        assert_eq!(estimate.received_at_ms, 3, "arrival of the latest sample");
        for i in 0..OFFSET_SAMPLES_MAX as u64 {
            filter.add(sample(10_000 + i, 10_000 + i + 60, 20, 10 + i));
        }
        assert_eq!(
            filter.estimate().unwrap().offset_ms,
            50,
            "the 4 ms sample aged out"
        );
        let mut restarted = sample(20_000, 20_000 - 5_000, 30, 5);
        restarted.peer_stable_ms = 5;
        filter.add(restarted);
        assert_eq!(filter.estimate().unwrap().offset_ms, -5_015);
    }

    #[test]
    fn a_peer_is_near_far_or_uncertain_by_its_error_bound() {
        let at = |offset_ms, error_ms| PeerClock {
            offset_ms,
            error_ms,
            stable_ms: 0,
        };
        assert_eq!(at(490, 10).agreement(500), Agreement::Near);
        assert_eq!(at(-490, 11).agreement(500), Agreement::Uncertain);
        assert_eq!(at(-3_600_000, 5).agreement(500), Agreement::Far);
        assert_eq!(at(511, 10).agreement(500), Agreement::Far);
        assert_eq!(at(510, 10).agreement(500), Agreement::Uncertain);
    }

    #[test]
    fn a_clock_far_from_a_strict_majority_is_skewed_and_a_majority_clock_is_not() {
        // Goal: the majority rule, the node itself counted on its own side. Method: three
        // nodes with one an hour behind, from both points of view; five with two skewed.
        let skewed = judge(60_000, false, &[peer(3_600_000, 60_000); 2], POLICY);
        assert!(skewed.skewed && !skewed.tie);
        let healthy = judge(
            60_000,
            false,
            &[peer(3, 60_000), peer(-3_600_000, 60_000)],
            POLICY,
        );
        assert!(!healthy.skewed && !healthy.tie);
        let two_of_five = [peer(9_000, 1), peer(-9_000, 1), peer(1, 1), peer(2, 1)];
        assert!(
            !judge(1, false, &two_of_five, POLICY).skewed,
            "2 near + me vs 2 far"
        );
        let one_of_the_two = [
            peer(-9_000, 1),
            peer(-9_001, 1),
            peer(-9_002, 1),
            peer(-18_000, 1),
        ];
        assert!(
            judge(1, false, &one_of_the_two, POLICY).skewed,
            "4 far vs me"
        );
        let lone = judge(1, false, &[], POLICY);
        assert!(!lone.skewed && !lone.has_evidence());
        let unsure = judge(1, false, &[peer(499, 1), peer(-501, 1)], POLICY);
        assert_eq!((unsure.uncertain, unsure.skewed), (2, false));
    }

    #[test]
    fn in_a_tie_the_longer_stable_clock_stamps_and_a_deferring_node_keeps_deferring() {
        // Goal: the two-node case. Method: one far peer, with each side senior in turn,
        // equal, and this node already held.
        let far_junior = [peer(-3_600_000, 2_000)];
        let senior = judge(60_000, false, &far_junior, POLICY);
        assert!(senior.tie && !senior.skewed, "the senior keeps stamping");
        let far_senior = [peer(3_600_000, 60_000)];
        assert!(
            judge(2_000, false, &far_senior, POLICY).skewed,
            "the junior defers"
        );
        let equal = [peer(3_600_000, 60_500)];
        assert!(
            judge(60_000, false, &equal, POLICY).skewed,
            "within the margin both defer"
        );
        assert!(
            judge(60_000, true, &far_junior, POLICY).skewed,
            "a tie does not lift a hold"
        );
        let near = [peer(3, 1)];
        assert!(!judge(1, true, &near, POLICY).skewed, "agreement lifts it");
    }
}
