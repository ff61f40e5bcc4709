//! The paths of a data directory, and the lock that lets one process at a
//! time change its cold tier.
//!
//! ```text
//! <data-dir>/flowsql.db                                  SQLite (WAL): hot batches, manifest,
//!                                                        domains, capture_stats, store_state
//! <data-dir>/<table>/date=YYYY-MM-DD/hour=HH/*.parquet   the cold tier of each event table
//! <data-dir>/quarantine/                                 corrupt files set aside, never read
//! <data-dir>/.export.lock                                held by whoever exports
//! ```

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::StoreError;
use crate::cold;

/// The paths of a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/flowsql.db`.
    pub fn db_path(&self) -> PathBuf {
        self.root.join("flowsql.db")
    }

    /// `<root>/<table>`: the cold tier of an event table.
    pub fn table_dir(&self, table: &str) -> PathBuf {
        self.root.join(table)
    }

    /// `<root>/quarantine`: corrupt files set aside.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    /// `<root>/.export.lock`: held by whoever exports, applies retention or
    /// cleans up, so that only one process changes the cold tier at a time.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join(".export.lock")
    }

    /// Creates the directory (mode 0750) if it does not exist.
    pub fn create(&self) -> Result<(), StoreError> {
        cold::create_dir_all(&self.root)
    }
}

/// An exclusive lock on a data directory's cold tier (`flock`), released
/// when dropped or when the process dies.
#[derive(Debug)]
pub(crate) struct ExportLock {
    _file: File,
}

impl ExportLock {
    /// Waits for the lock.
    pub(crate) fn acquire(dir: &DataDir) -> Result<Self, StoreError> {
        let file = ExportLock::open(dir)?;
        file.lock().map_err(|e| StoreError::io("lock", dir.lock_path(), e))?;
        Ok(ExportLock { _file: file })
    }

    /// The lock if nobody holds it.
    pub(crate) fn try_acquire(dir: &DataDir) -> Result<Option<Self>, StoreError> {
        let file = ExportLock::open(dir)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(ExportLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::io("lock", dir.lock_path(), e)),
        }
    }

    fn open(dir: &DataDir) -> Result<File, StoreError> {
        let path = dir.lock_path();
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(cold::FILE_MODE)
            .open(&path)
            .map_err(|e| StoreError::io("open lock file", path, e))
    }
}
