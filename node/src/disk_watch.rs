//! The disk watch: a small task that reads the free space where the write-ahead log lives
//! ([`Storage::free_bytes`]) every [`DISK_WATCH_INTERVAL`] and holds the node
//! ([`Hold::DiskLow`]) while it is below `disk_reserve_bytes`, so the node refuses new votes
//! *before* a write can fail for want of space (etcd's NOSPACE alarm, not PostgreSQL's
//! panic).
//!
//! What it promises: the hold is set as soon as a reading is below the reserve, and lifted
//! only once a reading is at least a quarter above it ([`resume_bytes`]), so a node hovering
//! at the edge does not flap between ready and not-ready; every change is logged once, with
//! the figures; `tally_disk_free_bytes` follows every reading. A storage without a limit
//! (`Ok(None)`: memory) is never held, a reading that fails leaves the hold as it was (logged
//! once per spell of failures), and the watch lifts only a hold it set itself. While the hold is set the engine refuses new votes
//! and stops taking records from peers; what it had accepted is still written, and the
//! reserve is sized for that ([`DISK_RESERVE_BYTES_DEFAULT`]).

use std::sync::Arc;
use std::time::Duration;

use tally_core::limits::IN_FLIGHT_RECORDS_MAX;
use tokio::sync::watch;

use crate::health::{Health, Hold};
use crate::metrics::Metrics;
use crate::storage::Storage;
use crate::wal::WAL_GROUP_BYTES_MAX;

/// How often the free space is read. `statvfs` reads the filesystem's counters (about a
/// microsecond); at 40 MB/s of log (2M batched votes/s) the log grows ~4 MB between readings.
pub const DISK_WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Most log bytes one local vote record takes (16 ID bytes, the option, a run of its second
/// as two 5-byte varints: the bound `wal/log.rs` asserts for a full record batch).
pub const RECORD_LOG_BYTES_MAX: u64 = 16 + 1 + 10;

/// The default `disk_reserve_bytes`, 64 MiB: what the node may still write once the watch has
/// seen the free space fall below the reserve — the group being written at that moment (at
/// most [`WAL_GROUP_BYTES_MAX`], 32 MiB), then every vote the engine had already accepted
/// but not yet logged ([`IN_FLIGHT_RECORDS_MAX`] records of at most [`RECORD_LOG_BYTES_MAX`]
/// bytes, 27 MiB) — rounded up to a power of two, which leaves ~4 MiB for the log's growth
/// during one [`DISK_WATCH_INTERVAL`].
pub const DISK_RESERVE_BYTES_DEFAULT: u64 = 64 << 20;

/// The largest `disk_reserve_bytes` accepted (1 TiB).
pub const DISK_RESERVE_BYTES_MAX: u64 = 1 << 40;

const _: () = assert!(
    WAL_GROUP_BYTES_MAX + IN_FLIGHT_RECORDS_MAX as u64 * RECORD_LOG_BYTES_MAX
        <= DISK_RESERVE_BYTES_DEFAULT
);
const _: () = assert!(DISK_RESERVE_BYTES_DEFAULT <= DISK_RESERVE_BYTES_MAX);

/// Free bytes at which a held node resumes: a quarter above the reserve.
pub fn resume_bytes(reserve: u64) -> u64 {
    reserve.saturating_add(reserve / 4)
}

/// The watch over one storage.
pub struct DiskWatch<S: Storage> {
    storage: S,
    reserve: u64,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// Whether the last reading failed (its error was logged).
    failing: bool,
    /// Whether this watch holds the node (it lifts only a hold it set).
    holding: bool,
}

impl<S: Storage> DiskWatch<S> {
    /// A watch holding `health` while `storage` has less than `reserve` bytes free.
    pub fn new(storage: S, reserve: u64, health: Arc<Health>, metrics: Arc<Metrics>) -> Self {
        Self {
            storage,
            reserve,
            health,
            metrics,
            failing: false,
            holding: false,
        }
    }

    /// Reads the free space once and sets or lifts the hold. Returns the reading.
    pub fn check(&mut self) -> Option<u64> {
        let free = match self.storage.free_bytes() {
            Ok(free) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("the data directory's free space can be read again");
                }
                free
            }
            Err(error) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(
                        %error,
                        "cannot read the data directory's free space; the disk hold stays as it is"
                    );
                }
                return None;
            }
        };
        let held = self.holding;
        let Some(free) = free else {
            // No limit (memory, or a simulated disk without a quota): both gauges read 0, so
            // no rule comparing them fires.
            self.metrics.disk_free_bytes.set(0);
            self.metrics.disk_reserve_bytes.set(0);
            if held {
                self.hold(false);
            }
            return None;
        };
        let gauge = |bytes: u64| i64::try_from(bytes).unwrap_or(i64::MAX);
        self.metrics.disk_free_bytes.set(gauge(free));
        self.metrics.disk_reserve_bytes.set(gauge(self.reserve));
        let resume = resume_bytes(self.reserve);
        if !held && free < self.reserve {
            tracing::warn!(
                free_bytes = free,
                disk_reserve_bytes = self.reserve,
                resume_bytes = resume,
                "the data directory has less free space than disk_reserve_bytes: refusing new \
                 votes and records from peers until {resume} bytes are free"
            );
            self.hold(true);
        } else if held && free >= resume {
            tracing::info!(
                free_bytes = free,
                disk_reserve_bytes = self.reserve,
                "free space is back: accepting votes again"
            );
            self.hold(false);
        }
        Some(free)
    }

    fn hold(&mut self, on: bool) {
        self.holding = on;
        self.health.set(Hold::DiskLow, on);
    }

    /// Checks every [`DISK_WATCH_INTERVAL`] until `stopping` is set.
    pub async fn run(mut self, mut stopping: watch::Receiver<bool>) {
        loop {
            self.check();
            tokio::select! {
                biased;
                _ = stopping.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(DISK_WATCH_INTERVAL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faulty_storage::FaultyStorage;
    use crate::storage::MemoryStorage;

    fn watch(reserve: u64) -> (DiskWatch<FaultyStorage<MemoryStorage>>, Arc<Health>) {
        let storage = FaultyStorage::new(MemoryStorage::new(), Arc::default());
        let health = Arc::new(Health::default());
        let watch = DiskWatch::new(storage, reserve, health.clone(), Arc::default());
        (watch, health)
    }

    #[test]
    fn the_hold_is_set_below_the_reserve_and_lifted_only_a_quarter_above_it() {
        // Goal: refusal starts below the reserve, does not flap at the edge, and ends by
        // itself when space comes back. Method: an empty storage under quotas around a
        // 1,000-byte reserve (its free space is the quota); the hold and gauges after each.
        let (mut watch, health) = watch(1_000);
        let steps: [(Option<u64>, bool); 7] = [
            (Some(5_000), false),
            (Some(999), true),
            (Some(1_100), true), // above the reserve, below resume (1,250): still held
            (Some(1_249), true),
            (Some(1_250), false),
            (Some(1_000), false), // at the reserve is not below it
            (None, false),
        ];
        for (i, (capacity, held)) in steps.into_iter().enumerate() {
            watch.storage.faults().set_capacity(capacity);
            assert_eq!(watch.check(), capacity, "step {i}");
            assert_eq!(health.has(Hold::DiskLow), held, "step {i}");
            let (free, reserve) = match capacity {
                Some(free) => (free as i64, 1_000),
                None => (0, 0),
            };
            assert_eq!(watch.metrics.disk_free_bytes.get(), free, "step {i}");
            assert_eq!(watch.metrics.disk_reserve_bytes.get(), reserve, "step {i}");
        }
        watch.storage.faults().set_capacity(Some(10));
        watch.check();
        assert!(health.has(Hold::DiskLow));
        watch.storage.faults().set_capacity(None);
        watch.check();
        assert!(
            !health.has(Hold::DiskLow),
            "a storage without a limit is never held"
        );
    }

    #[test]
    fn a_zero_reserve_never_holds() {
        // Goal: `disk_reserve_bytes = 0` turns the refusal off. Method: a reading of 0 free.
        let (mut watch, health) = watch(0);
        watch.storage.faults().set_capacity(Some(0));
        assert_eq!(watch.check(), Some(0));
        assert!(health.is_ready());
    }
}
