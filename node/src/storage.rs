//! Where the node's durable files live: a flat directory of named files behind the [`Storage`]
//! trait, so production hands the node a real directory ([`DirStorage`]), benchmarks and tests a
//! memory-only one ([`MemoryStorage`]), and the simulation turmoil's simulated filesystem.
//!
//! What it promises: the traits use only operations that turmoil's `unstable-fs` shim supports
//! (`OpenOptions::open`, `FileExt::{read_at, write_at}`, `File::{set_len, sync_data, metadata}`,
//! `read_dir`, `rename`, `remove_file`, `create_dir_all`, `sync_dir`), so a simulated disk is a
//! thin adapter in `sim/`. Durability follows POSIX: a file's bytes are durable after
//! [`StorageFile::sync_data`]; its name (creation, rename, removal) after [`Storage::sync_dir`].
//! All methods are synchronous: the write-ahead log runs on its own thread in production, and the
//! simulated filesystem is instant.
//!
//! One process per directory: [`Storage::lock`] takes the directory's exclusive lock, and the log
//! takes it before it reads or writes anything and holds it for its life. Two processes on one
//! directory would overwrite each other's log and snapshot writes and lose acknowledged votes
//! (PostgreSQL's `postmaster.pid`, RocksDB's `LOCK`, Kafka's `.lock`, bbolt's flock guard the
//! same). The lock dies with its holder (an OS `flock`), so a SIGKILLed node's successor takes
//! the directory at once.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Longest file name a [`Storage`] accepts, in bytes.
pub const STORAGE_NAME_BYTES_MAX: usize = 128;

/// The file in a [`DirStorage`]'s directory that carries its lock, and names its holder.
pub const LOCK_FILE_NAME: &str = "tally.lock";

/// Bytes of the lock file read to name the holder in an error.
const LOCK_HOLDER_BYTES_MAX: usize = 256;

/// Proof that this process holds a storage's exclusive lock. Dropping it releases the lock
/// (so does the process's end, however it ends).
pub struct StorageLock {
    _held: Box<dyn Send + Sync>,
}

impl StorageLock {
    /// A lock held as long as `held` lives (its `Drop` releases it).
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        Self {
            _held: Box::new(held),
        }
    }
}

impl std::fmt::Debug for StorageLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageLock")
    }
}

/// Why [`Storage::lock`] failed. Nothing in the storage was read or changed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LockError {
    /// Another process (or another open log in this process) holds the directory.
    #[error(
        "the data directory {dir} is in use by another process{}: two processes on one data \
         directory overwrite each other's log and lose acknowledged votes, so this one does \
         not start (stop the other process, or give this one its own --data-dir)",
        holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    Held {
        /// The directory.
        dir: String,
        /// What the holder wrote about itself (`pid 1234, node us-east`), if readable.
        holder: Option<String>,
    },
    /// The lock could not be taken or recorded.
    #[error("cannot lock the data directory {dir}: {source}")]
    Io {
        /// The directory.
        dir: String,
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },
}

/// A directory of named files: the node's disk.
///
/// Names are plain file names (ASCII letters, digits, `.`, `_`, `-`; not `.` or `..`; at most
/// [`STORAGE_NAME_BYTES_MAX`] bytes): a storage never reaches outside its directory.
pub trait Storage: Send {
    /// An open file of this storage.
    type File: StorageFile;

    /// The names of the regular files in the directory, sorted (not the lock's own file).
    fn list(&self) -> io::Result<Vec<String>>;

    /// Opens an existing file for reading and writing. `NotFound` if there is none.
    fn open(&self, name: &str) -> io::Result<Self::File>;

    /// Creates an empty file for reading and writing, truncating any file of that name. The
    /// new name is durable only after [`Storage::sync_dir`].
    fn create(&self, name: &str) -> io::Result<Self::File>;

    /// Renames `from` to `to` atomically, replacing any file named `to`. Durable only after
    /// [`Storage::sync_dir`].
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;

    /// Removes a file. Durable only after [`Storage::sync_dir`].
    fn remove(&self, name: &str) -> io::Result<()>;

    /// Makes every creation, rename and removal so far durable (fsync of the directory).
    fn sync_dir(&self) -> io::Result<()>;

    /// Takes this storage's exclusive lock without waiting, naming `holder` (who this process
    /// is, for the error another process gets) where the storage can record it. Held until
    /// the returned [`StorageLock`] is dropped or the process ends; a second lock of the same
    /// storage, from this process or another, fails with [`LockError::Held`] meanwhile.
    fn lock(&self, holder: &str) -> Result<StorageLock, LockError>;
    /// Bytes still free for new data where this storage keeps its files, as an unprivileged
    /// writer sees them (a real filesystem's available blocks, without the share reserved for
    /// root): the disk watch refuses new votes below `disk_reserve_bytes`. `Ok(None)`: no
    /// limit worth watching (memory).
    fn free_bytes(&self) -> io::Result<Option<u64>> {
        Ok(None)
    }
    /// Bytes of fill the write-ahead log keeps written ahead of its appends in a segment
    /// (`Wal::fill_ahead`), so that its fsyncs change no file length: worth it where an
    /// `fdatasync` that grows a file also commits a filesystem journal transaction (a real
    /// disk). 0: none (memory, where a sync costs nothing).
    fn fill_ahead_bytes(&self) -> u64 {
        0
    }
}

/// One open file of a [`Storage`]: positional reads and writes, no cursor.
pub trait StorageFile: Send {
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file holds no bytes.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes up to `buf.len()` bytes at `offset`, extending the file if needed; returns how
    /// many were written. Not durable until [`StorageFile::sync_data`].
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize>;

    /// Truncates or extends the file to `len` bytes. Not durable until
    /// [`StorageFile::sync_data`].
    fn set_len(&mut self, len: u64) -> io::Result<()>;

    /// Makes the file's bytes and length durable (`fdatasync`). After an error the file's
    /// durable contents are unknown: callers must not retry and assume success.
    fn sync_data(&mut self) -> io::Result<()>;

    /// Fills `buf` from `offset`; `UnexpectedEof` if the file ends first.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file ended before the requested bytes",
                    ));
                }
                Ok(read) => {
                    buf = &mut buf[read..];
                    offset += read as u64;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset`.
    fn write_all_at(&mut self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "storage accepted no bytes",
                    ));
                }
                Ok(written) => {
                    buf = &buf[written..];
                    offset += written as u64;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// Refuses names that could leave the directory or that other tools would misread.
pub fn check_name(name: &str) -> io::Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let well_formed = !name.is_empty()
        && name.len() <= STORAGE_NAME_BYTES_MAX
        && name != "."
        && name != ".."
        && name.chars().all(allowed);
    if well_formed {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name of at most {STORAGE_NAME_BYTES_MAX} bytes"),
        ))
    }
}

/// A real directory on the local filesystem. Durable: `sync_data` is `fdatasync`, and
/// `sync_dir` fsyncs the directory itself (Linux allows opening a directory read-only).
#[derive(Debug, Clone)]
pub struct DirStorage {
    dir: PathBuf,
    fill_ahead_bytes: u64,
}

/// Bytes of fill the log keeps ahead of its appends on a [`DirStorage`]
/// ([`Storage::fill_ahead_bytes`]): refilled every half of it, ~0.7-1.2 ms of writing and
/// syncing here (BENCHMARKS.md, "The log's fill"), once per ~30,000 single votes or per
/// ~30 batches of 1,000. At most this much more disk than the log's frames.
pub const DIR_FILL_AHEAD_BYTES: u64 = 1 << 20;

impl DirStorage {
    /// Uses `dir`, creating it (and its parents) if missing and making its creation durable.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent)?;
            }
        }
        Ok(Self {
            dir,
            fill_ahead_bytes: DIR_FILL_AHEAD_BYTES,
        })
    }

    /// The same directory with `bytes` of fill kept ahead of the log's appends instead of
    /// [`DIR_FILL_AHEAD_BYTES`] (0: none, every fsync grows the file).
    pub fn with_fill_ahead_bytes(mut self, bytes: u64) -> Self {
        self.fill_ahead_bytes = bytes;
        self
    }

    /// The directory this storage writes to.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file_path(&self, name: &str) -> io::Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(name))
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Storage for DirStorage {
    type File = DirFile;

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            // A name that is not UTF-8 is not one of ours: leave it alone. The lock file is
            // the storage's own, not one of its files.
            if let Ok(name) = entry.file_name().into_string() {
                if name != LOCK_FILE_NAME {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<DirFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.file_path(name)?)?;
        Ok(DirFile { file })
    }

    fn create(&self, name: &str) -> io::Result<DirFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.file_path(name)?)?;
        Ok(DirFile { file })
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.file_path(from)?, self.file_path(to)?)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.file_path(name)?)
    }

    fn sync_dir(&self) -> io::Result<()> {
        fsync_dir(&self.dir)
    }

    fn lock(&self, holder: &str) -> Result<StorageLock, LockError> {
        let dir = self.dir.display().to_string();
        let io_error = |source| LockError::Io {
            dir: dir.clone(),
            source: Arc::new(source),
        };
        // Not truncated on open: the holder's own words must survive a refused attempt.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.dir.join(LOCK_FILE_NAME))
            .map_err(io_error)?;
        // Stable since 1.89; the workspace's rust-version is raised to it with the let-chain
        // rewrites that clippy then asks for (one mechanical commit after the parallel work).
        #[allow(clippy::incompatible_msrv)]
        let locked = file.try_lock();
        match locked {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    holder: read_holder(&file),
                    dir,
                });
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(io_error(error)),
        }
        let words = format!("pid {}, {holder}\n", std::process::id());
        file.set_len(0).map_err(io_error)?;
        std::io::Write::write_all(&mut file, words.as_bytes()).map_err(io_error)?;
        Ok(StorageLock::new(file))
    }

    fn free_bytes(&self) -> io::Result<Option<u64>> {
        // statvfs reads the filesystem's counters; it does not wait for the disk.
        let stats = rustix::fs::statvfs(&self.dir)?;
        Ok(Some(stats.f_bavail.saturating_mul(stats.f_frsize)))
    }

    fn fill_ahead_bytes(&self) -> u64 {
        self.fill_ahead_bytes
    }
}

/// The first line of a lock file: what its holder wrote about itself.
fn read_holder(file: &File) -> Option<String> {
    let mut bytes = [0u8; LOCK_HOLDER_BYTES_MAX];
    let read = file.read_at(&mut bytes, 0).ok()?;
    let text = String::from_utf8_lossy(&bytes[..read]);
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_owned())
}

/// A file of a [`DirStorage`].
#[derive(Debug)]
pub struct DirFile {
    file: File,
}

impl StorageFile for DirFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.file.write_at(buf, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// The bytes of one memory file, shared by every handle to it (like an inode).
type MemoryBytes = Arc<Mutex<Vec<u8>>>;

/// A memory-only storage for benchmarks and tests. NOT DURABLE: everything is gone when the
/// process exits, and `sync_data`/`sync_dir` do nothing. Numbers measured with it must say so.
///
/// Clones share the same files, so a test can drop a write-ahead log and reopen the same
/// "disk", or damage a file through [`MemoryStorage::with_file_bytes`].
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    files: Arc<Mutex<BTreeMap<String, MemoryBytes>>>,
    /// The lock, shared by clones like the files (a test may open one "disk" twice).
    lock: InProcessLock,
}

/// A storage lock kept in memory, for storages that live inside one process (memory-only,
/// and the simulation's disks, whose "processes" are tasks): clones share it, and it is
/// released when the [`StorageLock`] it gave is dropped.
#[derive(Debug, Clone, Default)]
pub struct InProcessLock {
    holder: Arc<Mutex<Option<String>>>,
}

/// Releases an [`InProcessLock`] when dropped.
struct InProcessLockGuard(Arc<Mutex<Option<String>>>);

impl Drop for InProcessLockGuard {
    fn drop(&mut self) {
        *lock(&self.0) = None;
    }
}

impl InProcessLock {
    /// Takes the lock for `holder`, or says who holds it; `dir` names the storage in the error.
    pub fn take(&self, dir: &str, holder: &str) -> Result<StorageLock, LockError> {
        let mut held = lock(&self.holder);
        if let Some(existing) = held.as_ref() {
            return Err(LockError::Held {
                dir: dir.to_owned(),
                holder: Some(existing.clone()),
            });
        }
        *held = Some(holder.to_owned());
        Ok(StorageLock::new(InProcessLockGuard(self.holder.clone())))
    }
}

/// Locks a mutex whose holder may have panicked: the bytes stay usable (they are only ever
/// replaced or extended under the lock, never left half-updated in a way we rely on).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file named {name:?}"))
}

impl MemoryStorage {
    /// An empty memory-only storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `change` on the bytes of file `name` (for tests that damage files on purpose).
    pub fn with_file_bytes<R>(
        &self,
        name: &str,
        change: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> io::Result<R> {
        let bytes = lock(&self.files)
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name))?;
        let mut bytes = lock(&bytes);
        Ok(change(&mut bytes))
    }

    /// Total bytes held in all files.
    pub fn bytes_held(&self) -> u64 {
        lock(&self.files)
            .values()
            .map(|bytes| lock(bytes).len() as u64)
            .sum()
    }
}

impl Storage for MemoryStorage {
    type File = MemoryFile;

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(lock(&self.files).keys().cloned().collect())
    }

    fn open(&self, name: &str) -> io::Result<MemoryFile> {
        check_name(name)?;
        let bytes = lock(&self.files)
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name))?;
        Ok(MemoryFile { bytes })
    }

    fn create(&self, name: &str) -> io::Result<MemoryFile> {
        check_name(name)?;
        let bytes = MemoryBytes::default();
        lock(&self.files).insert(name.to_owned(), Arc::clone(&bytes));
        Ok(MemoryFile { bytes })
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        let mut files = lock(&self.files);
        let bytes = files.remove(from).ok_or_else(|| not_found(from))?;
        files.insert(to.to_owned(), bytes);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        lock(&self.files)
            .remove(name)
            .map(drop)
            .ok_or_else(|| not_found(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        Ok(())
    }

    fn lock(&self, holder: &str) -> Result<StorageLock, LockError> {
        self.lock.take("(memory)", holder)
    }
}

/// A file of a [`MemoryStorage`] (not durable).
#[derive(Debug)]
pub struct MemoryFile {
    bytes: MemoryBytes,
}

fn memory_offset(offset: u64) -> io::Result<usize> {
    usize::try_from(offset).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "offset past this machine's memory",
        )
    })
}

impl StorageFile for MemoryFile {
    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.bytes).len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let bytes = lock(&self.bytes);
        let start = memory_offset(offset)?.min(bytes.len());
        let read = buf.len().min(bytes.len() - start);
        buf[..read].copy_from_slice(&bytes[start..start + read]);
        Ok(read)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let mut bytes = lock(&self.bytes);
        let start = memory_offset(offset)?;
        let end = start + buf.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[start..end].copy_from_slice(buf);
        Ok(buf.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let len = memory_offset(len)?;
        lock(&self.bytes).resize(len, 0);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: names that could escape the directory are refused. Method: try a few.
    #[test]
    fn names_that_leave_the_directory_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x", "a b", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?} was accepted");
        }
        for good in ["wal-00000000000000000001.log", "snapshot.tmp", "A_b-c.1"] {
            assert!(check_name(good).is_ok(), "{good:?} was refused");
        }
    }

    /// Goal: memory files behave like files (positional I/O, holes, rename keeps open handles).
    /// Method: write past the end, read back, rename, remove.
    #[test]
    fn memory_files_behave_like_files() -> io::Result<()> {
        let storage = MemoryStorage::new();
        let mut file = storage.create("a")?;
        file.write_all_at(b"xyz", 2)?;
        assert_eq!(file.len()?, 5);
        let mut buf = [9u8; 5];
        file.read_exact_at(&mut buf, 0)?;
        assert_eq!(&buf, b"\0\0xyz");
        assert!(file.read_exact_at(&mut buf, 1).is_err());
        storage.rename("a", "b")?;
        assert_eq!(storage.list()?, vec!["b".to_owned()]);
        file.set_len(1)?;
        assert_eq!(storage.open("b")?.len()?, 1);
        storage.remove("b")?;
        assert!(storage.open("b").is_err());
        assert_eq!(storage.bytes_held(), 0);
        Ok(())
    }
}
