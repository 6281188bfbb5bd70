//! A circuit breaker per upstream node: closed → open after consecutive failures (errors,
//! timeouts, answers slower than `slow_batch_ms`) → half-open after a cool-down, when one
//! batch probes the node → closed again on its success, open again (for twice as long, up to
//! a limit) on its failure.
//!
//! Pure state: time comes in as an argument (tokio's clock in the edge, so the simulation and
//! paused-clock tests drive it), and the breaker never sends anything itself.

use std::time::Duration;

use tokio::time::Instant;

/// The longest cool-down, however often half-open probes fail (they double it).
pub const BREAKER_OPEN_MAX: Duration = Duration::from_secs(30);

/// What a breaker says of its node now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Batches flow.
    Closed,
    /// One probe batch may go (or is out).
    HalfOpen,
    /// No batch goes until the cool-down ends.
    Open,
}

impl BreakerState {
    /// The metric value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }

    /// The name logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half-open",
            Self::Open => "open",
        }
    }
}

/// One node's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    failures_to_open: u32,
    open_for: Duration,
    consecutive_failures: u32,
    state: Inner,
}

#[derive(Debug, Clone, Copy)]
enum Inner {
    Closed,
    Open { until: Instant, cool_down: Duration },
    HalfOpen { probing: bool, cool_down: Duration },
}

impl Breaker {
    /// A closed breaker that opens after `failures_to_open` consecutive failures, for
    /// `open_for` at first.
    pub fn new(failures_to_open: u32, open_for: Duration) -> Self {
        assert!(failures_to_open >= 1, "a breaker that opens on no failure");
        Self {
            failures_to_open,
            open_for,
            consecutive_failures: 0,
            state: Inner::Closed,
        }
    }

    /// The state at `now` (an open breaker whose cool-down is over reads half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            Inner::Closed => BreakerState::Closed,
            Inner::Open { until, .. } if now < until => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a batch may be sent at `now`; when it may, the breaker counts it as sent (in
    /// half-open, it is the one probe). Answer it with [`Breaker::succeeded`] or
    /// [`Breaker::failed`].
    pub fn try_send(&mut self, now: Instant) -> bool {
        match self.state {
            Inner::Closed => true,
            Inner::Open { until, .. } if now < until => false,
            Inner::Open { cool_down, .. } => {
                self.state = Inner::HalfOpen {
                    probing: true,
                    cool_down,
                };
                true
            }
            Inner::HalfOpen { probing: true, .. } => false,
            Inner::HalfOpen { cool_down, .. } => {
                self.state = Inner::HalfOpen {
                    probing: true,
                    cool_down,
                };
                true
            }
        }
    }

    /// Whether [`Breaker::try_send`] would let a batch go at `now` (asking changes nothing).
    pub fn would_send(&self, now: Instant) -> bool {
        match self.state {
            Inner::Closed => true,
            Inner::Open { until, .. } => now >= until,
            Inner::HalfOpen { probing, .. } => !probing,
        }
    }

    /// When an open breaker lets its probe go (`None` if it is not open).
    pub fn opens_at(&self) -> Option<Instant> {
        match self.state {
            Inner::Open { until, .. } => Some(until),
            _ => None,
        }
    }

    /// A batch was answered in time: the node is well. Returns whether the breaker closed.
    pub fn succeeded(&mut self) -> bool {
        self.consecutive_failures = 0;
        let was_closed = matches!(self.state, Inner::Closed);
        self.state = Inner::Closed;
        !was_closed
    }

    /// A batch failed at `now` (no answer, a refusal that speaks of the node, or a slow
    /// answer). Returns whether the breaker opened.
    pub fn failed(&mut self, now: Instant) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match self.state {
            Inner::Closed if self.consecutive_failures >= self.failures_to_open => {
                self.state = Inner::Open {
                    until: now + self.open_for,
                    cool_down: self.open_for,
                };
                true
            }
            Inner::Closed | Inner::Open { .. } => false,
            Inner::HalfOpen { cool_down, .. } => {
                let cool_down = (cool_down * 2).min(BREAKER_OPEN_MAX.max(self.open_for));
                self.state = Inner::Open {
                    until: now + cool_down,
                    cool_down,
                };
                true
            }
        }
    }

    /// A half-open probe batch ended without saying anything of the node (it was not sent,
    /// say): another batch may probe.
    pub fn probe_abandoned(&mut self) {
        if let Inner::HalfOpen { cool_down, .. } = self.state {
            self.state = Inner::HalfOpen {
                probing: false,
                cool_down,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the breaker's transitions, each at its moment. Method: explicit instants.

    use super::*;

    const COOL: Duration = Duration::from_secs(1);

    #[test]
    fn consecutive_failures_open_it_and_a_success_in_between_resets_the_count() {
        let t = Instant::now();
        let mut breaker = Breaker::new(3, COOL);
        assert!(!breaker.failed(t));
        assert!(!breaker.failed(t));
        breaker.succeeded();
        assert!(!breaker.failed(t));
        assert!(!breaker.failed(t));
        assert_eq!(breaker.state(t), BreakerState::Closed);
        assert!(breaker.failed(t), "the third in a row opens it");
        assert_eq!(breaker.state(t), BreakerState::Open);
        assert!(!breaker.try_send(t + COOL / 2));
    }

    #[test]
    fn after_the_cool_down_one_probe_goes_and_its_success_closes_it() {
        let t = Instant::now();
        let mut breaker = Breaker::new(1, COOL);
        breaker.failed(t);
        assert_eq!(breaker.state(t + COOL), BreakerState::HalfOpen);
        assert!(breaker.try_send(t + COOL), "the probe");
        assert!(!breaker.try_send(t + COOL), "only one probe at a time");
        assert!(breaker.succeeded(), "closed by the probe's success");
        assert!(breaker.try_send(t + COOL));
    }

    #[test]
    fn a_failed_probe_opens_it_again_for_twice_as_long_up_to_the_limit() {
        let t = Instant::now();
        let mut breaker = Breaker::new(1, COOL);
        breaker.failed(t);
        assert!(breaker.try_send(t + COOL));
        assert!(breaker.failed(t + COOL));
        assert_eq!(breaker.opens_at(), Some(t + COOL + 2 * COOL));
        let mut at = t + 3 * COOL;
        for _ in 0..10 {
            assert!(breaker.try_send(at));
            breaker.failed(at);
            at = breaker.opens_at().unwrap();
        }
        assert!(at - t <= Duration::from_secs(3) + BREAKER_OPEN_MAX * 10);
        let last = breaker.opens_at().unwrap();
        assert!(breaker.try_send(last));
        breaker.failed(last);
        assert_eq!(breaker.opens_at(), Some(last + BREAKER_OPEN_MAX));
    }

    #[test]
    fn an_abandoned_probe_lets_another_batch_probe() {
        let t = Instant::now();
        let mut breaker = Breaker::new(1, COOL);
        breaker.failed(t);
        assert!(breaker.try_send(t + COOL));
        breaker.probe_abandoned();
        assert!(breaker.would_send(t + COOL));
        assert!(breaker.try_send(t + COOL));
    }
}
