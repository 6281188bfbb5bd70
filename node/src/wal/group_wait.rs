//! How long the group-commit writer holds a group open before it syncs it.
//!
//! With many clients each waiting for its vote's answer before it sends the next (a phone's
//! retry loop, an edge's in-flight window), the votes a sync acknowledges come back as new
//! votes one round trip later: answer, client, request, handler, engine. When a sync takes
//! much longer than that round trip (a disk shared with other tenants, network block storage:
//! 2 ms and more), syncing the next group at once leaves those votes for the group after,
//! and every sync carries half the clients; holding the group open for up to one round trip
//! lets each sync carry nearly all of them, as Redis's one-thread loop does with
//! `appendfsync always` (PostgreSQL's `commit_delay` is the same idea). When syncs are fast,
//! the writer never waits: the next group goes at once.
//!
//! What it promises: the writer holds a group for at most [`WAL_GROUP_WAIT_MAX`], and only
//! after a sync of at least [`WAL_SLOW_SYNC_MIN`] (so the wait is at most half a sync);
//! it stops waiting as soon as the group holds as many records as the last one did, and no
//! vote is answered before the sync that covers it, whatever it waited.

use std::time::Duration;

/// Longest the writer holds a group open for more records once its disk is slow.
pub const WAL_GROUP_WAIT_MAX: Duration = Duration::from_millis(1);

/// A sync at least this long makes the writer hold the next group open (up to
/// [`WAL_GROUP_WAIT_MAX`]).
pub const WAL_SLOW_SYNC_MIN: Duration = Duration::from_millis(2);

// The wait is at most half of the sync that made it worth it.
const _: () = assert!(WAL_SLOW_SYNC_MIN.as_micros() >= 2 * WAL_GROUP_WAIT_MAX.as_micros());

/// What the last group told the writer: how many records it carried and how long its sync
/// took.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct GroupWait {
    last_records: usize,
    last_sync: Duration,
}

impl GroupWait {
    /// How long the next group may be held open for more records: none unless the last sync
    /// was slow.
    pub(super) fn budget(&self) -> Option<Duration> {
        (self.last_sync >= WAL_SLOW_SYNC_MIN).then_some(WAL_GROUP_WAIT_MAX)
    }

    /// Whether a group of `records` records is worth holding open for more: it holds fewer
    /// than the last group did (whose answered votes are on their way back).
    pub(super) fn wants_more(&self, records: usize) -> bool {
        records < self.last_records
    }

    /// Notes a group that was synced: `records` records in a sync of `sync`.
    pub(super) fn observe(&mut self, records: usize, sync: Duration) {
        self.last_records = records;
        self.last_sync = sync;
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the writer waits only after a slow sync, for at most the limit, and only while its
    //! group is smaller than the last one. Method: the policy on made-up groups.

    use super::*;

    #[test]
    fn a_group_is_held_open_only_after_a_slow_sync_and_while_it_is_smaller_than_the_last() {
        let mut wait = GroupWait::default();
        assert_eq!(wait.budget(), None, "no sync yet");
        wait.observe(40, Duration::from_micros(300));
        assert_eq!(
            wait.budget(),
            None,
            "a fast sync: the next group goes at once"
        );
        wait.observe(40, WAL_SLOW_SYNC_MIN);
        assert_eq!(wait.budget(), Some(WAL_GROUP_WAIT_MAX));
        assert!(wait.wants_more(39));
        assert!(!wait.wants_more(40));
        // The load fell: a group that waited out its budget for 3 records sets the next bar.
        wait.observe(3, Duration::from_millis(4));
        assert!(!wait.wants_more(3));
        assert!(wait.wants_more(2));
    }
}
