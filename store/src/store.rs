//! [`Store`]: a data directory as a whole, the entry point for everything
//! that reads or moves flows (shell commands, the query crate, tests).

use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::record_batch::RecordBatch;

use crate::cold::{self, ColdFile};
use crate::export::{self, ExportEvent, ExportOptions, ExportReport, RecoveryReport, RetentionReport};
use crate::hot::{HotStore, MemoryUse};
use crate::migrations::MIGRATIONS;
use crate::status::StoreStatus;
use crate::{StoreError, TimeRange};

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

    /// `<root>/flows`: the cold tier of `flows`.
    pub fn flows_dir(&self) -> PathBuf {
        self.root.join("flows")
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

/// An open data directory: the hot tier's database plus the cold tier's
/// files.
#[derive(Debug)]
pub struct Store {
    dir: DataDir,
    hot: HotStore,
    store_id: String,
}

impl Store {
    /// Opens the data directory `root`, creating it (0750) and its database
    /// (0640) if needed, applying migrations, and, unless another process is
    /// exporting right now, recovering the cold tier: temporaries and crash
    /// orphans deleted, foreign files adopted, corrupt files quarantined
    /// (each reported by name in the log).
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let mut store = Store::open_without_recovery(root)?;
        if let Some(lock) = ExportLock::try_acquire(&store.dir)? {
            let report = export::recover(&store.dir, &mut store.hot, &store.store_id, true)?;
            drop(lock);
            report.log();
        } else {
            tracing::debug!(dir = %store.dir.root.display(), "another process is exporting: recovery left to it");
        }
        Ok(store)
    }

    /// Opens the directory and database without touching the cold tier.
    pub fn open_without_recovery(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        Store::open_using(root, MemoryUse::Fast)
    }

    /// [`open_without_recovery`](Self::open_without_recovery) for the
    /// capturing process (its store writer and scheduled export): a small
    /// page cache and no memory map, so that its resident memory does not
    /// grow with the database (see [`MemoryUse`]).
    pub fn open_for_capture(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        Store::open_using(root, MemoryUse::Lean)
    }

    fn open_using(root: impl Into<PathBuf>, memory: MemoryUse) -> Result<Store, StoreError> {
        let dir = DataDir::new(root);
        dir.create()?;
        let mut hot = HotStore::open_with(&dir.db_path(), MIGRATIONS, memory)?;
        let store_id = store_id(&mut hot)?;
        Ok(Store { dir, hot, store_id })
    }

    /// Opens the data directory `root` for reading only (queries, status):
    /// nothing is created, migrated, recovered or written, so a user who may
    /// only read the directory and its files (the data directory's group)
    /// can use it, whether a capture is writing to it or not (see
    /// [`HotStore::open_read_only`]). Such a store must not export.
    pub fn open_read_only(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let dir = DataDir::new(root);
        let hot = HotStore::open_read_only(&dir.db_path(), MemoryUse::Fast)?;
        let store_id = hot.state("storeId")?.unwrap_or_default();
        Ok(Store { dir, hot, store_id })
    }

    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    pub fn hot(&self) -> &HotStore {
        &self.hot
    }

    pub fn hot_mut(&mut self) -> &mut HotStore {
        &mut self.hot
    }

    /// This store's identity, written into every file it exports: a file
    /// under `flows/` that carries it but is not in the manifest is a crash
    /// leftover (its rows are still hot); one without it came from elsewhere.
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// Runs the cold-tier recovery now (waiting for the export lock); with
    /// `verify`, every listed file's footer is checked too.
    pub fn recover(&mut self, verify: bool) -> Result<RecoveryReport, StoreError> {
        let _lock = ExportLock::acquire(&self.dir)?;
        let report = export::recover(&self.dir, &mut self.hot, &self.store_id, verify)?;
        report.log();
        Ok(report)
    }

    /// Moves the hot rows older than `options.cutoff_ns` to Parquet, exactly
    /// once (see [`crate::export`]).
    pub fn export(
        &mut self,
        options: &ExportOptions,
        on_event: &mut dyn FnMut(ExportEvent<'_>),
    ) -> Result<ExportReport, StoreError> {
        export::export(&self.dir, &mut self.hot, &self.store_id, options, on_event)
    }

    /// Removes the cold partitions that ended more than `max_age` before
    /// `now_ns`. Never touches the hot tier.
    pub fn apply_retention(&mut self, max_age: Duration, now_ns: i64) -> Result<RetentionReport, StoreError> {
        export::apply_retention(&self.dir, &mut self.hot, max_age, now_ns)
    }

    /// Copies the flows of `range`, from both tiers, into `dest` as a
    /// self-contained hive-partitioned Parquet dataset
    /// (`dest/date=YYYY-MM-DD/hour=HH/*.parquet`). `dest` must be empty or
    /// not exist.
    pub fn export_to(
        &self,
        dest: &Path,
        range: TimeRange,
        on_event: &mut dyn FnMut(ExportEvent<'_>),
    ) -> Result<ExportReport, StoreError> {
        export::export_to(self, dest, range, on_event)
    }

    /// The complete cold files of `flows` that may hold rows of `range`,
    /// oldest first: the files a reader should scan.
    pub fn cold_files(&self, range: TimeRange) -> Result<Vec<ColdFile>, StoreError> {
        export::cold_files(&self.dir, &self.hot, range)
    }

    /// Calls `f` with every flow of `range`: the cold files' rows, then the
    /// hot rows; each batch in time order.
    pub fn for_each_flow_batch(
        &self,
        range: TimeRange,
        mut f: impl FnMut(RecordBatch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for file in self.cold_files(range)? {
            cold::for_each_batch(&file.path, 64 * 1024, |batch| {
                match export::slice_to_range(&batch, range) {
                    Some(batch) => f(batch),
                    None => Ok(()),
                }
            })?;
        }
        self.hot.for_each_flow_batch(range, 64 * 1024, f)
    }

    /// Every flow of `range` in both tiers, as batches.
    pub fn flows(&self, range: TimeRange) -> Result<Vec<RecordBatch>, StoreError> {
        let mut batches = Vec::new();
        self.for_each_flow_batch(range, |b| {
            batches.push(b);
            Ok(())
        })?;
        Ok(batches)
    }

    /// Rows, files and bytes per tier, capture counters, last export.
    pub fn status(&self) -> Result<StoreStatus, StoreError> {
        crate::status::status(&self.dir, &self.hot)
    }
}

/// The store's id from `store_state`, made on first use.
fn store_id(hot: &mut HotStore) -> Result<String, StoreError> {
    if let Some(id) = hot.state("storeId")? {
        return Ok(id);
    }
    let mut bytes = [0u8; 16];
    let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        // Unique enough without randomness: time and process.
        bytes[..8].copy_from_slice(&crate::now_ns().to_le_bytes());
        bytes[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hot.with_write_transaction(|tx, _| {
        tx.execute("INSERT OR IGNORE INTO store_state (key, value) VALUES ('storeId', ?1)", [&id])
            .map_err(|e| StoreError::sqlite("record the store id", tx.path().unwrap_or(""), e))
    })?;
    // Another process may have won the race: read back what is there.
    Ok(hot.state("storeId")?.unwrap_or(id))
}
