//! The push journal's files: a view of the node's data directory in which only names that
//! start with [`PUSH_JOURNAL_PREFIX`] exist, so the journal is an ordinary write-ahead log
//! ([`crate::wal::Wal`]: its segments, snapshots, framing, checksums, torn-tail and damage
//! rules) whose files sit beside the main log's without either seeing the other's.
//!
//! What it promises: every name it is given goes to the directory with the prefix, every name
//! it lists comes back without it; durability (`sync_data`, `sync_dir`) is the directory's
//! own. It takes no lock of its own: the journal is opened only by start-up, after the main
//! log took the directory's lock ([`Storage::lock`]), which covers every file in it, the
//! journal's included (a second process is refused by that lock before it reads either).

use std::io;

use crate::storage::{LockError, Storage, StorageLock};

/// What every file of the push journal's name starts with (`push-journal-wal-…log`,
/// `push-journal-snapshot-…snap`): none of the main log's names does.
pub const PUSH_JOURNAL_PREFIX: &str = "push-journal-";

/// The data directory, as the push journal sees it.
#[derive(Debug, Clone)]
pub struct JournalStorage<S> {
    directory: S,
}

impl<S: Storage> JournalStorage<S> {
    /// The journal's view of `directory`. The caller holds the directory's lock (the main
    /// log's) for as long as the view is used.
    pub fn new(directory: S) -> Self {
        Self { directory }
    }

    fn name(name: &str) -> String {
        format!("{PUSH_JOURNAL_PREFIX}{name}")
    }
}

impl<S: Storage> Storage for JournalStorage<S> {
    type File = S::File;

    fn list(&self) -> io::Result<Vec<String>> {
        let names = self.directory.list()?;
        Ok(names
            .iter()
            .filter_map(|name| name.strip_prefix(PUSH_JOURNAL_PREFIX))
            .map(str::to_owned)
            .collect())
    }

    fn open(&self, name: &str) -> io::Result<S::File> {
        self.directory.open(&Self::name(name))
    }

    fn create(&self, name: &str) -> io::Result<S::File> {
        self.directory.create(&Self::name(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.directory.rename(&Self::name(from), &Self::name(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.directory.remove(&Self::name(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.directory.sync_dir()
    }

    fn lock(&self, _holder: &str) -> Result<StorageLock, LockError> {
        // The main log holds the directory's lock (see the module doc).
        Ok(StorageLock::new(()))
    }

    fn free_bytes(&self) -> io::Result<Option<u64>> {
        self.directory.free_bytes()
    }

    fn fill_ahead_bytes(&self) -> u64 {
        self.directory.fill_ahead_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    /// Goal: the journal's files and the main log's never see each other. Method: create a
    /// file through the view and one beside it, and list both ways.
    #[test]
    fn the_journal_sees_only_its_own_files_and_the_directory_sees_them_prefixed() {
        let directory = MemoryStorage::new();
        let journal = JournalStorage::new(directory.clone());
        journal.create("wal-1.log").unwrap();
        directory.create("wal-1.log").unwrap();
        assert_eq!(journal.list().unwrap(), vec!["wal-1.log".to_owned()]);
        assert_eq!(
            directory.list().unwrap(),
            vec!["push-journal-wal-1.log".to_owned(), "wal-1.log".to_owned()]
        );
        journal.rename("wal-1.log", "wal-2.log").unwrap();
        journal.remove("wal-2.log").unwrap();
        assert_eq!(directory.list().unwrap(), vec!["wal-1.log".to_owned()]);
    }
}
