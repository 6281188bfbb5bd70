//! Logging a recurring peer problem once, not on every round: the first occurrence of each
//! (peer, cause) is logged with its details, and while it recurs, one line at most every
//! [`RELOG_INTERVAL_MS`] says how many times it happened since. The counters in `/metrics`
//! count every occurrence; the log stays readable when a peer is refused every few seconds
//! (a reconnect with backoff) or part of its answer every sync tick.

use std::collections::BTreeMap;

use tally_core::UnixMillis;

/// Least time between two lines about the same (peer, cause), in milliseconds.
pub const RELOG_INTERVAL_MS: u64 = 10 * 60 * 1000;

/// Most (peer, cause) pairs remembered; when full, the memory starts over (each pair is then
/// logged once more), so a flood of names cannot grow it.
pub const REMEMBERED_PAIRS_MAX: usize = 4_096;

/// When each (peer, cause) was last logged, and how often it happened since.
#[derive(Debug, Default)]
pub struct LogOnce {
    seen: BTreeMap<(String, &'static str), (UnixMillis, u64)>,
}

impl LogOnce {
    /// Notes one occurrence at `now`; returns `Some(n)` if it should be logged now (`n`
    /// occurrences went unlogged since the last line), `None` if it should not.
    pub fn note(&mut self, peer: &str, cause: &'static str, now: UnixMillis) -> Option<u64> {
        if self.seen.len() >= REMEMBERED_PAIRS_MAX {
            self.seen.clear();
        }
        let key = (peer.to_owned(), cause);
        match self.seen.get_mut(&key) {
            None => {
                self.seen.insert(key, (now, 0));
                Some(0)
            }
            Some((last, since)) if now.0.saturating_sub(last.0) >= RELOG_INTERVAL_MS => {
                let unlogged = *since;
                *last = now;
                *since = 0;
                Some(unlogged)
            }
            Some((_, since)) => {
                *since += 1;
                None
            }
        }
    }

    /// Forgets `peer`'s `cause`: it stopped, and its next occurrence is logged at once.
    pub fn forget(&mut self, peer: &str, cause: &'static str) {
        self.seen.remove(&(peer.to_owned(), cause));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recurring_cause_is_logged_once_then_at_most_every_interval_with_a_count() {
        // Goal: one line per peer and cause, not one per round. Method: note the same cause
        // every 100 ms for 25 minutes, and another cause and peer once.
        let mut log = LogOnce::default();
        let mut lines = Vec::new();
        for step in 0..15_000u64 {
            if let Some(unlogged) = log.note("us-west", "records", UnixMillis(step * 100)) {
                lines.push((step * 100, unlogged));
            }
        }
        assert_eq!(
            lines,
            vec![(0, 0), (600_000, 5_999), (1_200_000, 5_999)],
            "first, then every ten minutes with the count"
        );
        assert_eq!(log.note("us-west", "counters", UnixMillis(5)), Some(0));
        assert_eq!(log.note("eu", "records", UnixMillis(5)), Some(0));
        assert_eq!(log.note("eu", "records", UnixMillis(6)), None);
        log.forget("eu", "records");
        assert_eq!(
            log.note("eu", "records", UnixMillis(7)),
            Some(0),
            "after it stopped"
        );
    }
}
