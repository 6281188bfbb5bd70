//! The node's disk in the simulation: a [`Storage`] over turmoil's per-host simulated
//! filesystem (`unstable-fs`). A crash (`Sim::crash`) discards every write not yet made
//! durable by `sync_data` / `sync_dir`, exactly the POSIX promise the node's log relies on.
//!
//! A lost disk is modelled by a new directory: the node restarts on `/data/disk-N+1`, empty.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tally_node::storage::{
    InProcessLock, LockError, Storage, StorageFile, StorageLock, check_name,
};
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
        Ok(Self { dir, syncing, lock })
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

    fn sync_delay(&self) -> Option<Duration> {
        self.syncing.store(true, Ordering::Relaxed);
        Some(SIM_FSYNC)
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
