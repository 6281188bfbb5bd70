//! The node's disk in the simulation: a [`Storage`] over turmoil's per-host simulated
//! filesystem (`unstable-fs`). A crash (`Sim::crash`) discards every write not yet made
//! durable by `sync_data` / `sync_dir`, exactly the POSIX promise the node's log relies on.
//!
//! A lost disk is modelled by a new directory: the node restarts on `/data/disk-N+1`, empty.
//! A rotting disk by [`corrupt`]: a flipped byte or a zeroed 512-byte sector in a synced log
//! file, applied while the node is down.

use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tally_node::storage::{
    InProcessLock, LockError, Storage, StorageFile, StorageLock, check_name,
};
use tally_node::wal::{SyncPause, WalEntry};
use turmoil::fs::shim::std::fs as sim_fs;

/// How long one fsync takes on a simulated disk (a cloud block volume's order of magnitude):
/// the window in which a crash loses a group commit's written but unsynced bytes.
pub const SIM_FSYNC: Duration = Duration::from_millis(5);

/// One directory of the current host's simulated filesystem.
///
/// `syncing` is raised while a group commit waits out its fsync ([`SIM_FSYNC`]) and lowered
/// when the sync completes: the driver uses it to strike crashes mid-fsync. `lock` is the
/// host's directory lock: a crash drops the host's tasks, and with them the log that held it,
/// as the OS releases a dead process's `flock`.
#[derive(Debug, Clone)]
pub struct SimDisk {
    dir: PathBuf,
    syncing: Arc<AtomicBool>,
    lock: InProcessLock,
    fill_ahead_bytes: u64,
}

impl SimDisk {
    /// Opens (creating it if needed) disk number `generation` of the current host.
    pub fn open(
        generation: u32,
        syncing: Arc<AtomicBool>,
        lock: InProcessLock,
    ) -> io::Result<Self> {
        let dir = PathBuf::from(format!("/data/disk-{generation}"));
        sim_fs::create_dir_all(&dir)?;
        sim_fs::sync_dir("/data")?;
        syncing.store(false, Ordering::Relaxed);
        Ok(Self {
            dir,
            syncing,
            lock,
            fill_ahead_bytes: 0,
        })
    }

    /// The same disk with `bytes` of fill kept ahead of the log's appends, as a real
    /// directory keeps ([`Storage::fill_ahead_bytes`]; 0: none).
    pub fn with_fill_ahead_bytes(mut self, bytes: u64) -> Self {
        self.fill_ahead_bytes = bytes;
        self
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(name))
    }
}

impl Storage for SimDisk {
    type File = SimFile;

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in sim_fs::read_dir(&self.dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<SimFile> {
        let file = sim_fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(name)?)?;
        Ok(SimFile {
            file,
            syncing: self.syncing.clone(),
        })
    }

    fn create(&self, name: &str) -> io::Result<SimFile> {
        let file = sim_fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.path(name)?)?;
        Ok(SimFile {
            file,
            syncing: self.syncing.clone(),
        })
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        sim_fs::rename(self.path(from)?, self.path(to)?)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        sim_fs::remove_file(self.path(name)?)
    }

    fn sync_dir(&self) -> io::Result<()> {
        sim_fs::sync_dir(&self.dir)
    }

    fn lock(&self, holder: &str) -> Result<StorageLock, LockError> {
        self.lock.take(&self.dir.display().to_string(), holder)
    }

    fn fill_ahead_bytes(&self) -> u64 {
        self.fill_ahead_bytes
    }
}

/// The disk's fsync takes [`SIM_FSYNC`] of simulated time, during which `syncing` is raised
/// (the log writer awaits it between writing a group and syncing it).
impl SyncPause for SimDisk {
    fn pause(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.syncing.store(true, Ordering::Relaxed);
        Box::pin(tokio::time::sleep(SIM_FSYNC))
    }
}

/// A file of a [`SimDisk`].
#[derive(Debug)]
pub struct SimFile {
    file: sim_fs::File,
    syncing: Arc<AtomicBool>,
}

impl StorageFile for SimFile {
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
        let synced = self.file.sync_data();
        self.syncing.store(false, Ordering::Relaxed);
        synced
    }
}

/// Bytes of a disk sector: the unit a failing disk loses.
pub const SECTOR_BYTES: u64 = 512;

/// What [`corrupt`] did to a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The log file damaged.
    pub file: String,
    /// The bytes changed: one flipped byte, or a zeroed sector (cut at the file's end).
    pub bytes: std::ops::Range<u64>,
    /// Whether a sector was zeroed (otherwise a byte was flipped).
    pub zeroed: bool,
    /// The vote IDs whose records lay in a frame the damage touched: the only copy of each
    /// on this disk is gone (a peer may hold another).
    pub destroyed: Vec<u128>,
}

/// Damages one log file of `disk` (a segment or a snapshot, never a damaged file's copy) as a
/// failing disk does, durably: flips one bit of a byte, or zeroes the 512-byte sector holding
/// a byte, chosen by `seed` (anywhere in the file, or one time in four in its last 512
/// bytes). `None` if the disk holds no log file yet.
pub fn corrupt(disk: &SimDisk, seed: u64) -> io::Result<Option<Corruption>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let files: Vec<String> = disk
        .list()?
        .into_iter()
        .filter(|n| {
            (n.starts_with("wal-") && n.ends_with(".log"))
                || (n.starts_with("snapshot-") && n.ends_with(".snap"))
        })
        .collect();
    if files.is_empty() {
        return Ok(None);
    }
    let file = files[rng.random_range(0..files.len())].clone();
    let mut handle = disk.open(&file)?;
    let len = handle.len()?;
    if len == 0 {
        return Ok(None);
    }
    let mut original = vec![0u8; len as usize];
    handle.read_exact_at(&mut original, 0)?;
    // Damage to the last entries reads as a torn tail (recovery cannot tell them apart), the
    // case where a node may lose records a peer holds: one time in four it strikes the last
    // sector, so seeds exercise it more than a uniform draw over the file would.
    let at = if rng.random_bool(0.25) {
        len - rng.random_range(1..=SECTOR_BYTES.min(len))
    } else {
        rng.random_range(0..len)
    };
    let zeroed = rng.random_bool(0.5);
    let bytes = if zeroed {
        let start = at / SECTOR_BYTES * SECTOR_BYTES;
        start..(start + SECTOR_BYTES).min(len)
    } else {
        at..at + 1
    };
    let mut damaged = original[bytes.start as usize..bytes.end as usize].to_vec();
    if zeroed {
        damaged.fill(0);
    } else {
        damaged[0] ^= 1 << rng.random_range(0..8u32);
    }
    handle.write_all_at(&damaged, bytes.start)?;
    handle.sync_data()?;
    let destroyed = tally_node::wal::inspect::frames(&original)
        .into_iter()
        .filter(|frame| frame.bytes.start < bytes.end && bytes.start < frame.bytes.end)
        .filter_map(|frame| match frame.entry {
            Some(WalEntry::Records(batch)) => Some(batch),
            _ => None,
        })
        .flat_map(|batch| batch.iter().map(|r| r.vote_id.0).collect::<Vec<_>>())
        .collect();
    Ok(Some(Corruption {
        file,
        bytes,
        zeroed,
        destroyed,
    }))
}
