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
use std::io;
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

    /// Creates the directory (mode 0750) if it does not exist. A file in
    /// its place, or in place of one of its parents, is
    /// [`StoreError::NotADirectory`] naming that file.
    pub fn create(&self) -> Result<(), StoreError> {
        if let Some(file) = file_in_the_way(&self.root) {
            return Err(StoreError::NotADirectory { path: file });
        }
        cold::create_dir_all(&self.root)
    }

    /// Checks, without creating anything, that nothing keeps the directory
    /// from being created: a file in its place, or in place of one of its
    /// parents, is [`StoreError::NotADirectory`]. (A directory that cannot
    /// be written now, a read-only or full file system, may be later.)
    pub fn check_can_be_created(&self) -> Result<(), StoreError> {
        match file_in_the_way(&self.root) {
            Some(file) => Err(StoreError::NotADirectory { path: file }),
            None => Ok(()),
        }
    }

    /// Checks, without creating or changing anything, that the directory
    /// holds a store, for the commands that only read one: a missing
    /// directory, or one without `flowsql.db`, is [`StoreError::NoStore`];
    /// a file in its place is [`StoreError::NotADirectory`]. A database this
    /// user may not look at passes: opening it says why it cannot be read.
    pub fn check_holds_store(&self) -> Result<(), StoreError> {
        if let Some(file) = file_in_the_way(&self.root) {
            return Err(StoreError::NotADirectory { path: file });
        }
        match std::fs::metadata(&self.root) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoStore { path: self.root.clone(), reason: "it does not exist" });
            }
            Err(e) => return Err(StoreError::io("read", &self.root, e)),
        }
        match self.db_path().try_exists() {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::NoStore { path: self.root.clone(), reason: "no flowsql.db" }),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
            Err(e) => Err(StoreError::io("read", self.db_path(), e)),
        }
    }
}

/// `path`, or the nearest of its parents, when it exists and is not a
/// directory (following symbolic links): the file that keeps `path` from
/// being a directory.
fn file_in_the_way(path: &Path) -> Option<PathBuf> {
    path.ancestors().filter(|p| !p.as_os_str().is_empty()).find_map(|p| match std::fs::metadata(p) {
        Ok(meta) if !meta.is_dir() => Some(p.to_owned()),
        _ => None,
    })
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
