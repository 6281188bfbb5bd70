//! A [`Storage`] that fails the way full and failing disks do, for tests and the simulation:
//! wrap any storage in a [`FaultyStorage`] and steer its faults through the shared
//! [`DiskFaults`].
//!
//! What it models:
//! - **a quota** ([`DiskFaults::set_capacity`], [`DiskFaults::leave_room`]): the files may
//!   hold at most that many bytes in all; a write that would grow them past it writes what fits and then fails with the
//!   OS's `ENOSPC`, as a real filesystem does; [`Storage::free_bytes`] reports the room left,
//!   so the disk watch sees the disk fill up;
//! - **a failed fsync** ([`DiskFaults::fail_next_sync`]): the next `sync_data` of any file
//!   fails with `EIO`, and the bytes that file gained since its last successful sync are
//!   dropped, as a kernel that throws away the dirty pages of a failed writeback does
//!   (PostgreSQL's "fsyncgate": a retried fsync would then report success for lost data).
//!
//! Without faults set it only passes every call through (and costs a few atomic loads).

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::storage::{Storage, StorageFile};

/// A quota on a [`FaultyStorage`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Quota {
    /// No limit.
    #[default]
    None,
    /// At most this many bytes in all.
    Bytes(u64),
    /// This much room beyond what the files hold when the storage next looks: becomes
    /// `Bytes` then (the simulation's driver cannot read a host's files from outside it).
    Room(u64),
}

/// The faults of one [`FaultyStorage`] (and every clone of it), set by a test or the
/// simulation's driver while the node runs.
#[derive(Debug, Default)]
pub struct DiskFaults {
    /// The quota, if any.
    quota: Mutex<Quota>,
    /// Syncs still to fail.
    failing_syncs: AtomicU32,
    /// Syncs failed so far.
    failed_syncs: AtomicU64,
    /// Writes refused (in part or whole) for the quota so far.
    full_writes: AtomicU64,
}

impl DiskFaults {
    /// Limits the files to `bytes` in all (`None`: no limit). Files already larger stay as
    /// they are; they only cannot grow.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        *self.quota() = bytes.map_or(Quota::None, Quota::Bytes);
    }

    /// Fills the disk up to `bytes` short of full: the quota becomes what the files hold when
    /// the storage next looks, plus `bytes`.
    pub fn leave_room(&self, bytes: u64) {
        *self.quota() = Quota::Room(bytes);
    }

    fn quota(&self) -> std::sync::MutexGuard<'_, Quota> {
        self.quota.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the next `sync_data` fail (once more for each call).
    pub fn fail_next_sync(&self) {
        self.failing_syncs.fetch_add(1, Ordering::Relaxed);
    }

    /// Syncs failed on purpose so far.
    pub fn failed_syncs(&self) -> u64 {
        self.failed_syncs.load(Ordering::Relaxed)
    }

    /// Writes that hit the quota so far.
    pub fn full_writes(&self) -> u64 {
        self.full_writes.load(Ordering::Relaxed)
    }

    fn take_failing_sync(&self) -> bool {
        self.failing_syncs
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// The OS's "no space left on device".
pub fn no_space() -> io::Error {
    io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error())
}

/// The OS's "input/output error".
pub fn io_failure() -> io::Error {
    io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error())
}

/// A storage with injectable faults over `S`.
#[derive(Debug, Clone)]
pub struct FaultyStorage<S> {
    inner: S,
    faults: Arc<DiskFaults>,
}

impl<S: Storage + Clone> FaultyStorage<S> {
    /// `inner`, failing as `faults` says.
    pub fn new(inner: S, faults: Arc<DiskFaults>) -> Self {
        Self { inner, faults }
    }

    /// The faults (shared with every clone and every open file).
    pub fn faults(&self) -> &Arc<DiskFaults> {
        &self.faults
    }

    /// Bytes held in all files.
    fn used(&self) -> io::Result<u64> {
        let mut used = 0u64;
        for name in self.inner.list()? {
            used = used.saturating_add(self.inner.open(&name)?.len()?);
        }
        Ok(used)
    }

    /// The quota in bytes, if any (turning a pending [`DiskFaults::leave_room`] into one).
    fn capacity(&self) -> io::Result<Option<u64>> {
        let mut quota = self.faults.quota();
        Ok(match *quota {
            Quota::None => None,
            Quota::Bytes(bytes) => Some(bytes),
            Quota::Room(room) => {
                let bytes = self.used()?.saturating_add(room);
                *quota = Quota::Bytes(bytes);
                Some(bytes)
            }
        })
    }

    /// Under a quota: the room left, else `None`.
    fn room(&self) -> io::Result<Option<u64>> {
        match self.capacity()? {
            None => Ok(None),
            Some(capacity) => Ok(Some(capacity.saturating_sub(self.used()?))),
        }
    }

    /// Under a quota: how far a file of `len` bytes may grow (its end at most), else `None`.
    fn end_allowed(&self, len: u64) -> io::Result<Option<u64>> {
        Ok(self.room()?.map(|room| len.saturating_add(room)))
    }

    fn wrap(&self, file: S::File) -> io::Result<FaultyFile<S>> {
        Ok(FaultyFile {
            synced_len: file.len()?,
            file,
            storage: self.clone(),
        })
    }
}

impl<S: Storage + Clone> Storage for FaultyStorage<S> {
    type File = FaultyFile<S>;

    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }

    fn open(&self, name: &str) -> io::Result<FaultyFile<S>> {
        self.wrap(self.inner.open(name)?)
    }

    fn create(&self, name: &str) -> io::Result<FaultyFile<S>> {
        self.wrap(self.inner.create(name)?)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.inner.sync_dir()
    }

    fn lock(&self, holder: &str) -> Result<crate::storage::StorageLock, crate::storage::LockError> {
        self.inner.lock(holder)
    }

    fn free_bytes(&self) -> io::Result<Option<u64>> {
        match self.room()? {
            Some(room) => Ok(Some(room)),
            None => self.inner.free_bytes(),
        }
    }

    fn fill_ahead_bytes(&self) -> u64 {
        self.inner.fill_ahead_bytes()
    }
}

impl<S: Storage + Clone> FaultyFile<S> {
    /// If growing the file to `end` bytes would pass the quota: the end it may grow to (and
    /// the write is counted as one that hit the quota).
    fn over_quota(&self, end: u64) -> io::Result<Option<u64>> {
        let len = self.file.len()?;
        if end <= len {
            return Ok(None);
        }
        match self.storage.end_allowed(len)? {
            Some(allowed) if end > allowed => {
                self.storage
                    .faults
                    .full_writes
                    .fetch_add(1, Ordering::Relaxed);
                Ok(Some(allowed))
            }
            _ => Ok(None),
        }
    }
}

/// A file of a [`FaultyStorage`].
pub struct FaultyFile<S: Storage> {
    file: S::File,
    storage: FaultyStorage<S>,
    /// The file's length after its last successful sync (or when opened).
    synced_len: u64,
}

impl<S: Storage + Clone> StorageFile for FaultyFile<S> {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let end = offset.saturating_add(buf.len() as u64);
        if let Some(allowed) = self.over_quota(end)? {
            // Write what fits, as a filesystem does; the next call fails.
            let fits = usize::try_from(allowed.saturating_sub(offset)).unwrap_or(0);
            if fits == 0 {
                return Err(no_space());
            }
            return self.file.write_at(&buf[..fits.min(buf.len())], offset);
        }
        self.file.write_at(buf, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        if self.over_quota(len)?.is_some() {
            return Err(no_space());
        }
        self.file.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if self.storage.faults.take_failing_sync() {
            self.storage
                .faults
                .failed_syncs
                .fetch_add(1, Ordering::Relaxed);
            // The failed writeback's pages are gone: the file is back at its last synced
            // length (the unsynced bytes past it; what the log wrote inside its fill is left,
            // and the log cuts it off itself when it rolls a failed group back).
            let len = self.file.len()?;
            if len > self.synced_len {
                self.file.set_len(self.synced_len)?;
            }
            return Err(io_failure());
        }
        self.file.sync_data()?;
        self.synced_len = self.file.len()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    fn storage() -> FaultyStorage<MemoryStorage> {
        FaultyStorage::new(MemoryStorage::new(), Arc::default())
    }

    #[test]
    fn a_quota_writes_what_fits_then_fails_with_enospc_and_reports_the_room_left() {
        // Goal: a full disk looks like a real one. Method: a 100-byte quota over two files.
        let storage = storage();
        assert_eq!(storage.free_bytes().unwrap(), None, "no quota, no limit");
        let mut a = storage.create("a").unwrap();
        a.write_all_at(&[1; 60], 0).unwrap();
        storage.faults().set_capacity(Some(100));
        assert_eq!(storage.free_bytes().unwrap(), Some(40));
        let mut b = storage.create("b").unwrap();
        let error = b.write_all_at(&[2; 50], 0).unwrap_err();
        assert_eq!(error.raw_os_error(), no_space().raw_os_error(), "{error}");
        assert_eq!(b.len().unwrap(), 40, "what fitted was written");
        assert_eq!(storage.free_bytes().unwrap(), Some(0));
        a.write_all_at(&[3; 10], 0).unwrap(); // overwriting takes no room
        assert!(a.set_len(61).is_err());
        a.set_len(50).unwrap(); // shrinking frees room
        assert_eq!(storage.free_bytes().unwrap(), Some(10));
        assert!(storage.faults().full_writes() >= 2);
        storage.faults().set_capacity(None);
        b.write_all_at(&[2; 50], 40).unwrap();
        storage.faults().leave_room(5);
        assert_eq!(
            storage.free_bytes().unwrap(),
            Some(5),
            "room beyond what is held"
        );
        b.write_all_at(&[4; 5], 90).unwrap();
        assert!(b.write_all_at(&[4; 1], 95).is_err());
    }

    #[test]
    fn a_failed_sync_reports_eio_once_and_drops_the_unsynced_bytes() {
        // Goal: the fsyncgate kernel: the failed writeback's bytes are gone, the next sync
        // succeeds. Method: sync 10 bytes, write 10 more, fail the sync, look at the file.
        let storage = storage();
        let mut file = storage.create("log").unwrap();
        file.write_all_at(&[1; 10], 0).unwrap();
        file.sync_data().unwrap();
        file.write_all_at(&[2; 10], 10).unwrap();
        storage.faults().fail_next_sync();
        let error = file.sync_data().unwrap_err();
        assert_eq!(error.raw_os_error(), io_failure().raw_os_error(), "{error}");
        assert_eq!(file.len().unwrap(), 10, "the unsynced bytes were dropped");
        assert_eq!(storage.faults().failed_syncs(), 1);
        file.sync_data().unwrap();
    }
}
