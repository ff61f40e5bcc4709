//! [`Store`]: a data directory as a whole, the entry point for everything
//! that reads or moves events (shell commands, the query crate, tests). It
//! only calls down into the modules that do the work.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use flowsql_event::DomainObservation;

use crate::cold::{self, ColdFile};
use crate::copy;
use crate::database::{Database, MemoryUse};
use crate::dir::{DataDir, ExportLock};
use crate::export::{self, ExportEvent, ExportOptions, ExportReport};
use crate::hot::{self, EncodedBatch, HotSummary};
use crate::ipc::HOT_COMPRESSION;
use crate::migrations::MIGRATIONS;
use crate::recovery::{self, RecoveryReport};
use crate::retention::{self, RetentionReport};
use crate::schema::{event_tables, flows_table};
use crate::snapshot::TableSnapshot;
use crate::status::StoreStatus;
use crate::table::EventTable;
use crate::uploads::{self, LastUpload, PendingUpload, UploadStatus};
use crate::{StoreError, TimeRange, domains, manifest, state, stats};

/// An open data directory: its database plus the cold tier's files, and
/// the event tables it keeps.
#[derive(Debug)]
pub struct Store {
    dir: DataDir,
    db: Database,
    store_id: String,
    tables: Vec<EventTable>,
}

impl Store {
    /// Opens the data directory `root`, creating it (0750) and its database
    /// (0640) if needed, applying migrations, and, unless another process is
    /// exporting right now, recovering the cold tier: temporaries and crash
    /// orphans deleted, foreign files adopted, corrupt files quarantined
    /// (each reported by name in the log).
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        Store::open_with_tables(root, event_tables())
    }

    /// [`open`](Self::open) keeping `tables` (instead of flowsql's own).
    pub fn open_with_tables(root: impl Into<PathBuf>, tables: Vec<EventTable>) -> Result<Store, StoreError> {
        let mut store = Store::open_using(root, MemoryUse::Fast, tables)?;
        if let Some(lock) = ExportLock::try_acquire(&store.dir)? {
            let report = recovery::recover(&store.dir, &mut store.db, &store.store_id, &store.tables, true)?;
            drop(lock);
            report.log();
        } else {
            tracing::debug!(dir = %store.dir.root().display(), "another process is exporting: recovery left to it");
        }
        Ok(store)
    }

    /// Opens the directory and database without touching the cold tier.
    pub fn open_without_recovery(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        Store::open_using(root, MemoryUse::Fast, event_tables())
    }

    /// [`open_without_recovery`](Self::open_without_recovery) for the
    /// capturing process (its scheduled export): a small page cache and no
    /// memory map, so that its resident memory does not grow with the
    /// database (see [`MemoryUse`]).
    pub fn open_for_capture(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        Store::open_using(root, MemoryUse::Lean, event_tables())
    }

    fn open_using(
        root: impl Into<PathBuf>,
        memory: MemoryUse,
        tables: Vec<EventTable>,
    ) -> Result<Store, StoreError> {
        let dir = DataDir::new(root);
        dir.create()?;
        let db = Database::open(&dir.db_path(), MIGRATIONS, memory)?;
        let store_id = store_id(&db)?;
        Ok(Store { dir, db, store_id, tables })
    }

    /// Opens the data directory `root` for reading only (queries, status):
    /// nothing is created, migrated, recovered or written, so a user who may
    /// only read the directory and its files (the data directory's group)
    /// can use it, whether a capture is writing to it or not. Such a store
    /// must not export.
    pub fn open_read_only(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        Store::open_read_only_with_tables(root, event_tables())
    }

    /// [`open_read_only`](Self::open_read_only) knowing `tables` (instead
    /// of flowsql's own).
    pub fn open_read_only_with_tables(
        root: impl Into<PathBuf>,
        tables: Vec<EventTable>,
    ) -> Result<Store, StoreError> {
        let dir = DataDir::new(root);
        let db = Database::open_read_only(&dir.db_path(), MemoryUse::Fast)?;
        let store_id =
            state::get(db.conn(), state::STORE_ID).map_err(db.err("read store_state"))?.unwrap_or_default();
        Ok(Store { dir, db, store_id, tables })
    }

    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// The event tables this store keeps.
    pub fn tables(&self) -> &[EventTable] {
        &self.tables
    }

    /// The event table named `name`.
    pub fn table(&self, name: &str) -> Result<&EventTable, StoreError> {
        self.tables.iter().find(|t| t.name() == name).ok_or_else(|| StoreError::UnknownTable(name.to_owned()))
    }

    /// This store's identity, written into every file it exports: a file
    /// under a table's directory that carries it but is not in the manifest
    /// is a crash leftover (its rows are still hot); one without it came
    /// from elsewhere.
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// Runs the cold-tier recovery now (waiting for the export lock); with
    /// `verify`, every listed file's footer is checked too.
    pub fn recover(&mut self, verify: bool) -> Result<RecoveryReport, StoreError> {
        let _lock = ExportLock::acquire(&self.dir)?;
        let report = recovery::recover(&self.dir, &mut self.db, &self.store_id, &self.tables, verify)?;
        report.log();
        Ok(report)
    }

    /// Moves the hot rows of every table older than `options.cutoff_ns` to
    /// Parquet, exactly once (see [`crate::export`]).
    pub fn export(
        &mut self,
        options: &ExportOptions,
        on_event: &mut dyn FnMut(ExportEvent<'_>),
    ) -> Result<ExportReport, StoreError> {
        export::export(&self.dir, &mut self.db, &self.store_id, &self.tables, options, on_event)
    }

    /// Removes the cold partitions that ended more than `max_age` before
    /// `now_ns`. Never touches the hot tier.
    pub fn apply_retention(&mut self, max_age: Duration, now_ns: i64) -> Result<RetentionReport, StoreError> {
        retention::apply(&self.dir, &mut self.db, &self.tables, max_age, now_ns)
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
        copy::copy_range(&self.dir, &self.db, &self.store_id, flows_table(), dest, range, on_event)
    }

    /// Stores `batch` (rows of `table`, see [`EventTable::check`]) in the hot
    /// tier as one batch; returns the rows stored.
    pub fn insert(&mut self, table: &str, batch: &RecordBatch) -> Result<u64, StoreError> {
        let table = self.table(table)?.clone();
        table.check(batch)?;
        let Some(encoded) = hot::encode(&table, batch, HOT_COMPRESSION)? else { return Ok(0) };
        self.insert_encoded(table.name(), &encoded)
    }

    /// Stores a batch of `table` encoded by [`hot::encode`] as one hot-tier
    /// row; returns the rows stored.
    pub fn insert_encoded(&mut self, table: &str, encoded: &EncodedBatch) -> Result<u64, StoreError> {
        let table = self.table(table)?.name();
        let now = crate::now_ns();
        self.db.write(|tx| {
            hot::insert(tx, table, encoded, now)
                .map_err(|e| StoreError::sqlite("store a batch", tx.path().unwrap_or(""), e))
        })?;
        Ok(encoded.rows)
    }

    /// [`insert`](Self::insert) into `flows`.
    pub fn insert_flows(&mut self, batch: &RecordBatch) -> Result<u64, StoreError> {
        self.insert(flows_table().name(), batch)
    }

    /// The complete cold files of `flows` that may hold rows of `range`,
    /// oldest first: the files a reader should scan.
    pub fn cold_files(&self, range: TimeRange) -> Result<Vec<ColdFile>, StoreError> {
        self.table_cold_files(flows_table().name(), range)
    }

    /// [`cold_files`](Self::cold_files) of any table.
    pub fn table_cold_files(&self, table: &str, range: TimeRange) -> Result<Vec<ColdFile>, StoreError> {
        manifest::complete_files(self.db.conn(), self.dir.root(), table, range)
            .map_err(self.db.err("list cold files"))
    }

    /// The hot rows of `table` in `range`, in time order, in the table's
    /// logical schema.
    pub fn hot_rows(&self, table: &str, range: TimeRange) -> Result<Vec<RecordBatch>, StoreError> {
        let table = self.table(table)?;
        self.db.read(|conn| {
            let metas = hot::list(conn, table.name(), range).map_err(self.db.err("list hot batches"))?;
            let mut rows = Vec::new();
            for meta in metas {
                let Some(stored) = hot::read(conn, meta.seq, None)? else { continue };
                let logical = table.conform(&hot::sort_by_time(table, &stored)?)?;
                rows.extend(copy::slice_to_range(table, &logical, range));
            }
            if rows.len() > 1 {
                // Batches may overlap in time: one batch in time order.
                let all = arrow::compute::concat_batches(table.schema(), &rows)
                    .map_err(|e| StoreError::InvalidBatch { table: table.name(), reason: e.to_string() })?;
                rows = vec![hot::sort_by_time(table, &all)?];
            }
            Ok(rows)
        })
    }

    /// The hot rows of `flows` in `range`, in time order.
    pub fn hot_flows(&self, range: TimeRange) -> Result<Vec<RecordBatch>, StoreError> {
        self.hot_rows(flows_table().name(), range)
    }

    /// How many hot rows of `table` fall in `range`.
    pub fn hot_row_count(&self, table: &str, range: TimeRange) -> Result<u64, StoreError> {
        let table = self.table(table)?;
        self.db.read(|conn| hot::count(conn, table, range))
    }

    /// How many hot `flows` rows fall in `range`.
    pub fn hot_flow_count(&self, range: TimeRange) -> Result<u64, StoreError> {
        self.hot_row_count(flows_table().name(), range)
    }

    /// The hot tier's batches, rows and bytes, of one table or of all.
    pub fn hot_summary(&self, table: Option<&str>) -> Result<HotSummary, StoreError> {
        hot::summary(self.db.conn(), table).map_err(self.db.err("summarize the hot tier"))
    }

    /// Every row of `table` in `range`: the cold files' rows, then the hot
    /// rows; each batch in time order.
    pub fn rows(&self, table: &str, range: TimeRange) -> Result<Vec<RecordBatch>, StoreError> {
        let event_table = self.table(table)?;
        let mut batches = Vec::new();
        for file in self.table_cold_files(table, range)? {
            cold::for_each_batch(event_table, &file.path, 64 * 1024, |batch| {
                batches.extend(copy::slice_to_range(event_table, &batch, range));
                Ok(())
            })?;
        }
        batches.extend(self.hot_rows(table, range)?);
        Ok(batches)
    }

    /// Every flow of `range` in both tiers, as batches.
    pub fn flows(&self, range: TimeRange) -> Result<Vec<RecordBatch>, StoreError> {
        self.rows(flows_table().name(), range)
    }

    /// A consistent read of `table` over `range` for a query, on a
    /// connection of its own (see [`crate::snapshot`]).
    pub fn snapshot(&self, table: &str, range: TimeRange) -> Result<TableSnapshot, StoreError> {
        TableSnapshot::take(&self.dir, self.table(table)?, range)
    }

    /// The `domains` rows seen during `range`, as batches of
    /// [`crate::domains_schema`].
    pub fn domains(&self, range: TimeRange) -> Result<Vec<RecordBatch>, StoreError> {
        self.db.read(|conn| domains::in_range(conn, range, 64 * 1024))
    }

    /// What the domain rows still valid at `now_ns` say (see
    /// [`crate::domains`]): a restarted capture's name cache starts from
    /// them.
    pub fn domains_valid_at(&self, now_ns: i64) -> Result<Vec<DomainObservation>, StoreError> {
        self.db.read(|conn| domains::valid_at(conn, now_ns))
    }

    /// Records domain observations now (outside a capture: tests, tools).
    pub fn record_domains(&mut self, observations: &[DomainObservation]) -> Result<usize, StoreError> {
        self.db.write(|tx| domains::record(tx, observations))
    }

    /// Every `capture_stats` row, as one batch of
    /// [`crate::capture_stats_schema`].
    pub fn capture_stats(&self) -> Result<RecordBatch, StoreError> {
        self.db.read(stats::all)
    }

    /// A number that changes whenever another connection commits to the
    /// database: readers cache what they read until it moves.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.db.data_version()
    }

    /// Copies the WAL into the database file and syncs it.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.db.checkpoint()
    }

    /// Rows (of every event table), files and bytes per tier, capture
    /// counters, last export.
    pub fn status(&self) -> Result<StoreStatus, StoreError> {
        crate::status::status(&self.dir, &self.db, None)
    }

    /// Up to `limit` complete cold files not uploaded to object storage yet,
    /// oldest partition first (see [`crate::uploads`]).
    pub fn pending_uploads(&self, limit: usize) -> Result<Vec<PendingUpload>, StoreError> {
        uploads::pending(self.db.conn(), limit).map_err(self.db.err("list the files to upload"))
    }

    /// Records that the file of manifest row `id` is uploaded; false if it
    /// was already (or is no longer listed).
    pub fn mark_uploaded(&mut self, id: i64, at_ns: i64) -> Result<bool, StoreError> {
        self.db.write(|tx| {
            uploads::mark_uploaded(tx, id, at_ns)
                .map_err(|e| StoreError::sqlite("record an upload", tx.path().unwrap_or(""), e))
        })
    }

    /// Sets (or with `None`, clears) the remote cold files are uploaded to:
    /// while one is set, retention keeps every file not uploaded yet.
    pub fn set_upload_remote(&mut self, remote: Option<&str>) -> Result<(), StoreError> {
        self.db.write(|tx| {
            state::set(tx, uploads::REMOTE, remote.unwrap_or(""))
                .map_err(|e| StoreError::sqlite("record the upload remote", tx.path().unwrap_or(""), e))
        })
    }

    /// Records the outcome of the uploader's last attempt.
    pub fn record_upload(&mut self, outcome: &LastUpload) -> Result<(), StoreError> {
        self.db.write(|tx| {
            state::set(tx, uploads::LAST_UPLOAD, &outcome.to_json())
                .map_err(|e| StoreError::sqlite("record the last upload", tx.path().unwrap_or(""), e))
        })
    }

    /// The upload backlog and last outcome, when a remote is set.
    pub fn upload_status(&self) -> Result<Option<UploadStatus>, StoreError> {
        self.db.read(|conn| uploads::status(conn).map_err(self.db.err("read the upload status")))
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        self.db.path()
    }
}

/// The store's id from `store_state`, made on first use.
fn store_id(db: &Database) -> Result<String, StoreError> {
    if db.is_read_only() {
        return Ok(state::get(db.conn(), state::STORE_ID)
            .map_err(db.err("read store_state"))?
            .unwrap_or_default());
    }
    if let Some(id) = state::get(db.conn(), state::STORE_ID).map_err(db.err("read store_state"))? {
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
    state::set_if_absent(db.conn(), state::STORE_ID, &id).map_err(db.err("record the store id"))?;
    // Another process may have won the race: read back what is there.
    Ok(state::get(db.conn(), state::STORE_ID).map_err(db.err("read store_state"))?.unwrap_or(id))
}
