//! When and how a client tries again: which answers are worth retrying, jittered exponential
//! backoff from a seeded RNG, `Retry-After`, and a total deadline. Pure logic (time comes in as
//! arguments), shared by the Rust client and mirrored by the browser client (`assets/client.js`).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// First retry delay, in milliseconds.
pub const BACKOFF_INITIAL_MS: u64 = 50;
/// Largest retry delay, in milliseconds.
pub const BACKOFF_MAX_MS: u64 = 2_000;
/// Largest `Retry-After` honoured, in seconds (a longer one is capped: the deadline decides).
pub const RETRY_AFTER_SECONDS_MAX: u64 = 30;

const _: () = assert!(BACKOFF_INITIAL_MS <= BACKOFF_MAX_MS);

/// What one attempt came to, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptClass {
    /// A final answer: success, or a refusal no retry can change (4xx but 408/429).
    Final,
    /// Worth another try, at this node or another: timeouts, connection errors, 5xx, 408, 429.
    Retry,
}

/// Classifies an HTTP status.
pub fn classify_status(status: u16) -> AttemptClass {
    match status {
        408 | 429 => AttemptClass::Retry,
        500..=599 => AttemptClass::Retry,
        _ => AttemptClass::Final,
    }
}

/// Parses a `Retry-After` value given in seconds (the form Tally sends); an HTTP date or
/// garbage yields `None` and the backoff decides.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(seconds.min(RETRY_AFTER_SECONDS_MAX)))
}

/// "Full jitter" exponential backoff (AWS architecture blog): the n-th delay is uniform in
/// `[0, min(max, initial × 2ⁿ)]`, so retrying clients spread out instead of arriving together.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    /// A backoff whose jitter comes from `seed` (same seed, same delays).
    pub fn new(seed: u64) -> Self {
        Self {
            attempt: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The delay before the next attempt: the jittered backoff, but at least `retry_after`
    /// when the server asked for it.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let ceiling = BACKOFF_INITIAL_MS
            .saturating_mul(1u64 << self.attempt.min(20))
            .min(BACKOFF_MAX_MS);
        self.attempt = self.attempt.saturating_add(1);
        let jittered = Duration::from_millis(self.rng.random_range(0..=ceiling));
        retry_after.map_or(jittered, |asked| asked.max(jittered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_statuses_are_retried() {
        for status in [200, 400, 404, 409, 413, 415, 422] {
            assert_eq!(classify_status(status), AttemptClass::Final, "{status}");
        }
        for status in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify_status(status), AttemptClass::Retry, "{status}");
        }
    }

    #[test]
    fn retry_after_in_seconds_is_honoured_and_capped() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 5 "), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_retry_after("100000"),
            Some(Duration::from_secs(RETRY_AFTER_SECONDS_MAX))
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn delays_grow_stay_capped_replay_by_seed_and_respect_retry_after() {
        let delays = |seed| {
            let mut backoff = Backoff::new(seed);
            (0..12)
                .map(|_| backoff.next_delay(None))
                .collect::<Vec<_>>()
        };
        let first = delays(7);
        assert_eq!(first, delays(7), "the same seed gives the same delays");
        assert!(
            first
                .iter()
                .all(|d| *d <= Duration::from_millis(BACKOFF_MAX_MS))
        );
        assert!(first[0] <= Duration::from_millis(BACKOFF_INITIAL_MS));
        let mut backoff = Backoff::new(1);
        let asked = Duration::from_secs(2);
        assert!(backoff.next_delay(Some(asked)) >= asked);
    }
}
