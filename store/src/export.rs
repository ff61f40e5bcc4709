//! Moving flows from the hot tier to the cold tier exactly once, keeping the
//! cold tier clean after crashes, retention, and copies for others.
//!
//! # The export protocol
//!
//! Under the data directory's export lock (`flock`, so one exporter at a
//! time across processes, released if the process dies):
//!
//! 1. Clean up (below), so that no leftover of an earlier crash remains.
//! 2. Take `max_id`, the largest hot row id now. Only rows with
//!    `id <= max_id` and `timestamp < cutoff` are exported; the capture
//!    keeps inserting meanwhile, with larger ids (taken from `flow_ids` in
//!    each write transaction, never reused), so the set of rows an export
//!    takes cannot change under it.
//! 3. For each hour that has such rows (split into files of at most
//!    `max_file_rows`):
//!    - first, with no lock held, read them (one statement, so one
//!      snapshot) and write them, in time order, to
//!      `flows/date=D/hour=H/.part-X.parquet.tmp`, sync it, rename it to
//!      `part-X.parquet`, sync the directory;
//!    - then ONE short SQLite write transaction deletes exactly those rows
//!      (`timestamp` in the window and `id <= max_id`), checks that it
//!      deleted as many as the file holds (else it rolls back and the file
//!      is removed), records the file in the `exports` manifest, and
//!      commits.
//!
//!    Until that commit the rows are hot and the file is not in the
//!    manifest (an orphan, should the process die: recovery deletes it);
//!    after it, the file is listed and the rows are gone. A crash at any
//!    instant leaves each row in exactly one tier.
//!
//! The database's write lock is held only for that transaction (the delete
//! and one insert: about half a second per million rows), never while a file is
//! read, encoded or synced, so the capture's writer, which commits every
//! 250 ms, waits at most that long.
//!
//! # Cleanup and recovery
//!
//! - A temporary (`.*.tmp`) is an export that never finished: deleted.
//! - A `*.parquet` file not in the manifest that carries this store's id in
//!   its footer was renamed by an export (or left by retention) that died
//!   before committing: its rows are still hot, so it is deleted.
//! - A `*.parquet` file without this store's id came from elsewhere (another
//!   host, or a database that was recreated): its rows are not in this hot
//!   tier, so it is adopted into the manifest.
//! - On open, every listed file's footer is checked against the manifest;
//!   a file that fails is moved to `quarantine/`, marked `quarantined` in the
//!   manifest, and reported by name; it is never read again. A listed file
//!   that vanished is marked `missing` and reported.
//!
//! Readers list complete files from the manifest ([`cold_files`]), never by
//! walking the directory.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use arrow::datatypes::TimestampNanosecondType;
use arrow::record_batch::RecordBatch;
use parquet::file::metadata::{KeyValue, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;
use rusqlite::params;

use crate::cold::{self, ColdFile, HOUR_NS, PendingFile, WrittenFile};
use crate::hot::{self, HotStore};
use crate::schema::flow_column;
use crate::store::{DataDir, ExportLock, Store};
use crate::{StoreError, TimeRange};

/// Footer key naming the store that wrote a file.
pub const STORE_ID_KEY: &str = "flowsql.storeId";

/// The default of [`ExportOptions::max_file_rows`]: a file's delete holds
/// SQLite's write lock for about 0.25 s on an idle core. With 2,000,000
/// rows, at 75,000 connections/s the capture's writer waited more than 5 s
/// for it on a loaded machine, and its backlog overflowed (capture_bench).
pub const DEFAULT_MAX_FILE_ROWS: u64 = 500_000;

/// The table name of flows in the manifest.
const FLOWS: &str = "flows";

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Rows with `timestamp < cutoff_ns` are exported.
    pub cutoff_ns: i64,
    /// Rows read from SQLite per batch: the export's memory is about one
    /// batch (the Parquet encoder holds its column chunks compressed). A
    /// row can hold many names (a CDN address answered for 32 names gives
    /// each flow to it 32), so batches stay small: 8,192 rows of 32 names
    /// are ~5 MB, 65,536 were ~45 MB of resident memory in the capture.
    pub batch_rows: usize,
    /// Rows per file at most (an hour with more is split by time): bounds
    /// the export's memory and how long its transaction holds SQLite's write
    /// lock (the delete: about half a second per million rows).
    pub max_file_rows: u64,
    /// Set to true (by a stopping capture) to end the export early: at the
    /// next batch, the file being written is abandoned (its rows stay hot)
    /// and the files committed so far stay; the report says `interrupted`.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Test hook: sleep this long after a file is renamed into place and
    /// before the manifest commit, so a crash harness can kill the process
    /// in that window.
    #[doc(hidden)]
    pub pause_after_rename: Option<Duration>,
}

impl ExportOptions {
    fn interrupted(&self) -> bool {
        self.interrupt.as_ref().is_some_and(|flag| flag.load(Ordering::Relaxed))
    }

    /// Export every hot row older than `cutoff_ns`.
    pub fn up_to(cutoff_ns: i64) -> Self {
        ExportOptions {
            cutoff_ns,
            batch_rows: 8 * 1024,
            max_file_rows: DEFAULT_MAX_FILE_ROWS,
            interrupt: None,
            pause_after_rename: None,
        }
    }
}

/// Progress of an export, for progress bars and harnesses.
#[derive(Debug, Clone, Copy)]
pub enum ExportEvent<'a> {
    /// The export will move this many rows.
    Planned { rows: u64 },
    /// This many more rows were written.
    Rows(u64),
    /// A file has its final name but is not in the manifest yet.
    Renamed(&'a Path),
    /// A file is in the manifest (and its rows left the hot tier).
    Committed(&'a ColdFile),
}

/// What an export did.
#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    pub files: Vec<ColdFile>,
    pub rows: u64,
    pub bytes: u64,
    /// Ended early by [`ExportOptions::interrupt`]: rows older than the
    /// cutoff may still be hot.
    pub interrupted: bool,
}

/// What a recovery found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Unfinished temporaries, deleted.
    pub temporaries_removed: Vec<PathBuf>,
    /// This store's files that were not in the manifest, deleted.
    pub orphans_removed: Vec<PathBuf>,
    /// Files from elsewhere, added to the manifest.
    pub adopted: Vec<PathBuf>,
    /// Corrupt files moved to `quarantine/`, with the reason.
    pub quarantined: Vec<(PathBuf, String)>,
    /// Listed files that no longer exist.
    pub missing: Vec<PathBuf>,
}

impl RecoveryReport {
    /// Whether recovery found nothing to do.
    pub fn is_clean(&self) -> bool {
        self.temporaries_removed.is_empty()
            && self.orphans_removed.is_empty()
            && self.adopted.is_empty()
            && self.quarantined.is_empty()
            && self.missing.is_empty()
    }

    pub(crate) fn log(&self) {
        for path in &self.temporaries_removed {
            tracing::info!(file = %path.display(), "deleted an unfinished temporary export file");
        }
        for path in &self.orphans_removed {
            tracing::warn!(file = %path.display(), "deleted an export file that was never committed (its rows are still in the hot tier)");
        }
        for path in &self.adopted {
            tracing::warn!(file = %path.display(), "adopted a Parquet file written by another store");
        }
        for (path, reason) in &self.quarantined {
            tracing::error!(file = %path.display(), %reason, "corrupt Parquet file moved to quarantine; its rows are not queried");
        }
        for path in &self.missing {
            tracing::error!(file = %path.display(), "a Parquet file listed in the manifest is missing");
        }
    }
}

/// What retention removed.
#[derive(Debug, Clone, Default)]
pub struct RetentionReport {
    /// Partitions removed, as `date=YYYY-MM-DD/hour=HH`.
    pub partitions: Vec<String>,
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
}

pub(crate) fn export(
    dir: &DataDir,
    hot: &mut HotStore,
    store_id: &str,
    options: &ExportOptions,
    on_event: &mut dyn FnMut(ExportEvent<'_>),
) -> Result<ExportReport, StoreError> {
    let _lock = ExportLock::acquire(dir)?;
    recover(dir, hot, store_id, false)?.log();
    let result = export_locked(dir, hot, store_id, options, on_event);
    let state = match &result {
        Ok(report) => format!(
            r#"{{"at":{},"files":{},"rows":{},"bytes":{}}}"#,
            crate::now_ns(),
            report.files.len(),
            report.rows,
            report.bytes
        ),
        Err(e) => serde_json::json!({ "at": crate::now_ns(), "error": error_chain(e) }).to_string(),
    };
    if let Err(e) = hot.set_state("lastExport", &state) {
        tracing::warn!(error = %e, "failed to record the last export");
    }
    result
}

fn export_locked(
    dir: &DataDir,
    hot: &mut HotStore,
    store_id: &str,
    options: &ExportOptions,
    on_event: &mut dyn FnMut(ExportEvent<'_>),
) -> Result<ExportReport, StoreError> {
    let cutoff = options.cutoff_ns;
    let (max_id, planned): (i64, i64) = {
        let conn = hot.connection();
        let max_id: i64 = conn
            .query_row("SELECT next - 1 FROM flow_ids", [], |r| r.get(0))
            .map_err(hot.err("read the newest hot row id"))?;
        let planned: i64 = conn
            .query_row(
                "SELECT count(*) FROM flows WHERE timestamp < ?1 AND id <= ?2",
                params![cutoff, max_id],
                |r| r.get(0),
            )
            .map_err(hot.err("count the rows to export"))?;
        (max_id, planned)
    };
    on_event(ExportEvent::Planned { rows: planned as u64 });
    let mut report = ExportReport::default();
    if planned == 0 {
        return Ok(report);
    }
    let exported_at = crate::now_ns();
    let mut from = i64::MIN;
    for seq in 0u64.. {
        if options.interrupted() {
            report.interrupted = true;
            break;
        }
        let first: Option<i64> = {
            use rusqlite::OptionalExtension as _;
            hot.connection()
                .query_row(
                    "SELECT timestamp FROM flows WHERE timestamp >= ?1 AND timestamp < ?2 AND id <= ?3
                     ORDER BY timestamp LIMIT 1",
                    params![from, cutoff, max_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(hot.err("find the next hour to export"))?
        };
        let Some(first) = first else { break };
        let start = cold::hour_start(first);
        let mut end = start.saturating_add(HOUR_NS).min(cutoff);
        // At most max_file_rows rows per file (and per transaction).
        let split: Option<i64> = {
            use rusqlite::OptionalExtension as _;
            hot.connection()
                .query_row(
                    "SELECT timestamp FROM flows WHERE timestamp >= ?1 AND timestamp < ?2 AND id <= ?3
                     ORDER BY timestamp, id LIMIT 1 OFFSET ?4",
                    params![first, end, max_id, options.max_file_rows.max(1) as i64],
                    |r| r.get(0),
                )
                .optional()
                .map_err(hot.err("split a large hour"))?
        };
        if let Some(split) = split
            && split > first
        {
            end = split;
        }
        let file = match export_hour(
            dir,
            hot,
            store_id,
            (start, end),
            max_id,
            exported_at,
            seq,
            options,
            on_event,
        ) {
            Ok(file) => file,
            Err(StoreError::ExportInterrupted) => {
                report.interrupted = true;
                break;
            }
            Err(e) => return Err(e),
        };
        report.rows += file.rows;
        report.bytes += file.bytes;
        report.files.push(file);
        from = end;
    }
    Ok(report)
}

/// Exports the rows of `[start, end)` with `id <= max_id` to one file: the
/// file first, complete and in place, with no lock held; then one short
/// write transaction that deletes exactly those rows and lists the file.
#[expect(clippy::too_many_arguments, reason = "one step of export_locked, spelled out")]
fn export_hour(
    dir: &DataDir,
    hot: &mut HotStore,
    store_id: &str,
    (start, end): (i64, i64),
    max_id: i64,
    exported_at: i64,
    seq: u64,
    options: &ExportOptions,
    on_event: &mut dyn FnMut(ExportEvent<'_>),
) -> Result<ColdFile, StoreError> {
    let partition_start = cold::hour_start(start);
    let relative_dir = format!("{FLOWS}/{}", cold::partition_name(partition_start));
    let name = format!("part-{exported_at}-{seq}.parquet");
    let metadata = vec![KeyValue::new(STORE_ID_KEY.to_owned(), store_id.to_owned())];
    let pending = PendingFile::create_with(&dir.root().join(&relative_dir), &name, metadata)?;
    let range = TimeRange::new(Some(start), Some(end));
    // Read (one statement: one snapshot; the rows with id <= max_id in the
    // range cannot change meanwhile, as only an exporter deletes them) while
    // another thread encodes; the file is synced and renamed into place.
    // The capture's writer commits all along: nothing here takes the
    // database's write lock.
    let written = write_pipelined(pending, |send| {
        hot::read_flows(hot.connection(), hot.path(), range, max_id, options.batch_rows, |batch| {
            if options.interrupted() {
                return Err(StoreError::ExportInterrupted);
            }
            let rows = batch.num_rows() as u64;
            send(batch)?;
            on_event(ExportEvent::Rows(rows));
            Ok(())
        })
    })?;
    let file = cold_file(dir, format!("{relative_dir}/{name}"), partition_start, &written);
    on_event(ExportEvent::Renamed(&written.path));
    if let Some(pause) = options.pause_after_rename {
        std::thread::sleep(pause);
    }
    // The one write transaction: delete exactly the rows written (checking
    // the count) and list the file. Rolled back on any failure, and the file
    // removed: its rows stay hot.
    let db_path = hot.path().to_owned();
    let committed = hot.with_write_transaction(|tx, _| {
        let deleted =
            tx.prepare_cached("DELETE FROM flows WHERE timestamp >= ?1 AND timestamp < ?2 AND id <= ?3")
                .and_then(|mut stmt| stmt.execute(params![start, end, max_id]))
                .map_err(|e| StoreError::sqlite("delete exported rows", &db_path, e))? as u64;
        if deleted != written.rows {
            return Err(StoreError::ExportConflict {
                path: written.path.clone(),
                written: written.rows,
                deleted,
            });
        }
        insert_manifest(tx, &file, exported_at)
            .map_err(|e| StoreError::sqlite("record an export in the manifest", &db_path, e))?;
        Ok(())
    });
    if let Err(e) = committed {
        remove_uncommitted(&written.path);
        return Err(e);
    }
    on_event(ExportEvent::Committed(&file));
    tracing::debug!(file = %file.path.display(), rows = file.rows, bytes = file.bytes, "exported");
    Ok(file)
}

/// Removes a renamed file whose manifest commit failed (or recovery will).
fn remove_uncommitted(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(file = %path.display(), error = %e, "failed to remove an uncommitted export file");
    }
}

/// Runs `produce` (reading SQLite on this thread) while another thread
/// encodes its batches into `pending`: reading and Parquet encoding overlap.
/// If `produce` fails (or is interrupted), the file is abandoned: never
/// finished or renamed, its temporary removed.
fn write_pipelined(
    mut pending: PendingFile,
    produce: impl FnOnce(&mut dyn FnMut(RecordBatch) -> Result<(), StoreError>) -> Result<(), StoreError>,
) -> Result<WrittenFile, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<RecordBatch>(1);
    let abandoned = AtomicBool::new(false);
    let abandoned = &abandoned;
    std::thread::scope(|scope| {
        let encoder = scope.spawn(move || -> Result<Option<WrittenFile>, StoreError> {
            for batch in rx {
                pending.write(&batch)?;
            }
            if abandoned.load(Ordering::Acquire) {
                // Dropping `pending` removes the temporary.
                return Ok(None);
            }
            pending.finish().map(Some)
        });
        let produced = produce(&mut |batch| {
            // A closed channel means the encoder failed: its error wins below.
            let _ = tx.send(batch);
            Ok(())
        });
        if produced.is_err() {
            abandoned.store(true, Ordering::Release);
        }
        drop(tx);
        let encoded =
            encoder.join().unwrap_or_else(|_| Err(StoreError::ThreadFailed { thread: "Parquet encoder" }));
        match (produced, encoded) {
            (Ok(()), Ok(Some(written))) => Ok(written),
            (Ok(()), Ok(None)) => Err(StoreError::ThreadFailed { thread: "Parquet encoder" }),
            (Ok(()), Err(e)) | (Err(e), _) => Err(e),
        }
    })
}

fn cold_file(dir: &DataDir, relative: String, partition_start: i64, written: &WrittenFile) -> ColdFile {
    ColdFile {
        path: dir.root().join(&relative),
        relative,
        partition_start,
        rows: written.rows,
        bytes: written.bytes,
        min_timestamp: written.min_timestamp,
        max_timestamp: written.max_timestamp,
    }
}

fn insert_manifest(tx: &rusqlite::Connection, file: &ColdFile, exported_at: i64) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT INTO exports (tableName, path, partitionStart, rows, bytes, minTimestamp, maxTimestamp, exportedAt)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            FLOWS,
            file.relative,
            file.partition_start,
            file.rows as i64,
            file.bytes as i64,
            file.min_timestamp,
            file.max_timestamp,
            exported_at
        ],
    )
}

/// A manifest row.
struct Listed {
    id: i64,
    rows: u64,
    bytes: u64,
    complete: bool,
}

fn manifest(hot: &HotStore) -> Result<HashMap<String, Listed>, StoreError> {
    let mut stmt = hot
        .connection()
        .prepare("SELECT id, path, rows, bytes, state FROM exports WHERE tableName = ?1")
        .map_err(hot.err("read the manifest"))?;
    let rows = stmt
        .query_map([FLOWS], |r| {
            let state: String = r.get(4)?;
            Ok((
                r.get::<_, String>(1)?,
                Listed {
                    id: r.get(0)?,
                    rows: r.get::<_, i64>(2)? as u64,
                    bytes: r.get::<_, i64>(3)? as u64,
                    complete: state == "complete",
                },
            ))
        })
        .map_err(hot.err("read the manifest"))?;
    rows.collect::<Result<HashMap<_, _>, _>>().map_err(hot.err("read the manifest"))
}

/// Files and directories under `flows/`, as paths relative to the data dir.
struct Tree {
    files: Vec<String>,
    dirs: Vec<PathBuf>,
}

fn walk(dir: &DataDir) -> Result<Tree, StoreError> {
    let mut tree = Tree { files: Vec::new(), dirs: Vec::new() };
    let root = dir.flows_dir();
    let mut stack = vec![(root.clone(), FLOWS.to_owned())];
    while let Some((path, relative)) = stack.pop() {
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound && path == root => return Ok(tree),
            Err(e) => return Err(StoreError::io("list", &path, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("list", &path, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = format!("{relative}/{name}");
            let kind = entry.file_type().map_err(|e| StoreError::io("stat", entry.path(), e))?;
            if kind.is_dir() {
                tree.dirs.push(entry.path());
                stack.push((entry.path(), child_rel));
            } else {
                tree.files.push(child_rel);
            }
        }
    }
    // Deepest first, so emptied parents can be removed after children.
    tree.dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    Ok(tree)
}

/// What a Parquet file's footer says.
struct Facts {
    rows: u64,
    min_ts: i64,
    max_ts: i64,
    store_id: Option<String>,
}

fn inspect(path: &Path) -> Result<Facts, StoreError> {
    let read_err = |source| StoreError::ParquetRead { path: path.to_owned(), source };
    let file = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
    let metadata = ParquetMetaDataReader::new().parse_and_finish(&file).map_err(read_err)?;
    let file_meta = metadata.file_metadata();
    let store_id = file_meta
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == STORE_ID_KEY))
        .and_then(|k| k.value.clone());
    let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
    for rg in metadata.row_groups() {
        match rg.column(flow_column::TIMESTAMP).statistics() {
            Some(Statistics::Int64(s)) if s.min_opt().is_some() && s.max_opt().is_some() => {
                min_ts = min_ts.min(*s.min_opt().unwrap_or(&i64::MAX));
                max_ts = max_ts.max(*s.max_opt().unwrap_or(&i64::MIN));
            }
            _ if rg.num_rows() == 0 => {}
            _ => {
                return Err(StoreError::ParquetMismatch {
                    path: path.to_owned(),
                    reason: "no timestamp statistics".into(),
                });
            }
        }
    }
    Ok(Facts { rows: file_meta.num_rows() as u64, min_ts, max_ts, store_id })
}

/// Cleans the cold tier of `flows` (the caller holds the export lock); with
/// `verify`, also checks every listed file.
pub(crate) fn recover(
    dir: &DataDir,
    hot: &mut HotStore,
    store_id: &str,
    verify: bool,
) -> Result<RecoveryReport, StoreError> {
    let mut report = RecoveryReport::default();
    let listed = manifest(hot)?;
    let tree = walk(dir)?;
    let mut on_disk = HashSet::new();
    for relative in &tree.files {
        let path = dir.root().join(relative);
        let name = relative.rsplit('/').next().unwrap_or(relative);
        if name.starts_with('.') && name.ends_with(".tmp") {
            remove_file(&path)?;
            report.temporaries_removed.push(path);
            continue;
        }
        if !name.ends_with(".parquet") {
            continue;
        }
        on_disk.insert(relative.clone());
        match listed.get(relative) {
            Some(entry) if entry.complete => {
                if verify && let Err(e) = cold::verify(&path, entry.rows, entry.bytes) {
                    quarantine(dir, hot, relative, Some(entry.id), &error_chain(&e), &mut report)?;
                }
            }
            Some(entry) => {
                // Listed as quarantined or missing, and back in place (restored
                // by hand): listed again if it is intact, else left alone.
                if cold::verify(&path, entry.rows, entry.bytes).is_ok() {
                    hot.connection()
                        .execute(
                            "UPDATE exports SET state = 'complete', note = NULL WHERE id = ?1",
                            [entry.id],
                        )
                        .map_err(hot.err("restore a file in the manifest"))?;
                    tracing::warn!(file = %path.display(), "a file set aside earlier is back and intact: listed again");
                }
            }
            None => match inspect(&path) {
                Ok(facts) if facts.store_id.as_deref() == Some(store_id) => {
                    remove_file(&path)?;
                    report.orphans_removed.push(path);
                }
                Ok(facts) => adopt(dir, hot, relative, &facts, &mut report)?,
                Err(e) => quarantine(dir, hot, relative, None, &error_chain(&e), &mut report)?,
            },
        }
    }
    for (relative, entry) in &listed {
        if entry.complete && !on_disk.contains(relative) {
            hot.connection()
                .execute("UPDATE exports SET state = 'missing' WHERE id = ?1", [entry.id])
                .map_err(hot.err("mark a missing file in the manifest"))?;
            report.missing.push(dir.root().join(relative));
        }
    }
    for empty in &tree.dirs {
        // Only succeeds on empty directories.
        let _ = std::fs::remove_dir(empty);
    }
    Ok(report)
}

fn remove_file(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("remove", path, e)),
    }
}

fn adopt(
    dir: &DataDir,
    hot: &mut HotStore,
    relative: &str,
    facts: &Facts,
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    let path = dir.root().join(relative);
    let parts: Vec<&str> = relative.split('/').collect();
    let partition = match parts.as_slice() {
        [_, date, hour, _] => cold::parse_partition(date, hour),
        _ => None,
    };
    let bytes = std::fs::metadata(&path).map_err(|e| StoreError::io("stat", &path, e))?.len();
    let valid_schema = cold::verify(&path, facts.rows, bytes);
    let Some(partition_start) = partition else {
        return quarantine(dir, hot, relative, None, "not in a date=/hour= partition", report);
    };
    if let Err(e) = valid_schema {
        return quarantine(dir, hot, relative, None, &error_chain(&e), report);
    }
    let file = ColdFile {
        path: path.clone(),
        relative: relative.to_owned(),
        partition_start,
        rows: facts.rows,
        bytes,
        min_timestamp: facts.min_ts,
        max_timestamp: facts.max_ts,
    };
    insert_manifest(hot.connection(), &file, crate::now_ns())
        .map_err(hot.err("adopt a file into the manifest"))?;
    report.adopted.push(path);
    Ok(())
}

/// Moves a file to `quarantine/` and marks its manifest row, if any.
fn quarantine(
    dir: &DataDir,
    hot: &mut HotStore,
    relative: &str,
    manifest_id: Option<i64>,
    reason: &str,
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    let from = dir.root().join(relative);
    let quarantine = dir.quarantine_dir();
    cold::create_dir_all(&quarantine)?;
    let flat = relative.replace('/', "__");
    let mut to = quarantine.join(&flat);
    let mut n = 1;
    while to.exists() {
        to = quarantine.join(format!("{flat}.{n}"));
        n += 1;
    }
    std::fs::rename(&from, &to).map_err(|e| StoreError::io("move to quarantine", &from, e))?;
    if let Some(id) = manifest_id {
        hot.connection()
            .execute(
                "UPDATE exports SET state = 'quarantined', note = ?2 WHERE id = ?1",
                params![id, format!("moved to {}: {reason}", to.display())],
            )
            .map_err(hot.err("mark a quarantined file in the manifest"))?;
    }
    report.quarantined.push((from, reason.to_owned()));
    Ok(())
}

/// The complete files of `flows` whose rows may fall in `range`, oldest
/// first.
pub(crate) fn cold_files(
    dir: &DataDir,
    hot: &HotStore,
    range: TimeRange,
) -> Result<Vec<ColdFile>, StoreError> {
    let mut stmt = hot
        .connection()
        .prepare_cached(
            "SELECT path, partitionStart, rows, bytes, minTimestamp, maxTimestamp FROM exports
             WHERE tableName = ?1 AND state = 'complete' AND maxTimestamp >= ?2 AND minTimestamp < ?3
             ORDER BY minTimestamp, id",
        )
        .map_err(hot.err("list cold files"))?;
    let files = stmt
        .query_map(params![FLOWS, range.start(), range.end()], |r| {
            let relative: String = r.get(0)?;
            Ok(ColdFile {
                path: dir.root().join(&relative),
                relative,
                partition_start: r.get(1)?,
                rows: r.get::<_, i64>(2)? as u64,
                bytes: r.get::<_, i64>(3)? as u64,
                min_timestamp: r.get(4)?,
                max_timestamp: r.get(5)?,
            })
        })
        .map_err(hot.err("list cold files"))?;
    files.collect::<Result<Vec<_>, _>>().map_err(hot.err("list cold files"))
}

/// The part of a time-sorted batch inside `range` (zero-copy), `None` if
/// nothing is.
pub(crate) fn slice_to_range(batch: &RecordBatch, range: TimeRange) -> Option<RecordBatch> {
    let ts = batch.column(flow_column::TIMESTAMP).as_primitive::<TimestampNanosecondType>().values();
    let sorted = ts.windows(2).all(|w| w[0] <= w[1]);
    if !sorted {
        let mask: arrow::array::BooleanArray = ts.iter().map(|t| Some(range.contains(*t))).collect();
        let filtered = arrow::compute::filter_record_batch(batch, &mask).ok()?;
        return (filtered.num_rows() > 0).then_some(filtered);
    }
    let from = ts.partition_point(|t| *t < range.start());
    let to = ts.partition_point(|t| *t < range.end());
    (to > from).then(|| batch.slice(from, to - from))
}

pub(crate) fn apply_retention(
    dir: &DataDir,
    hot: &mut HotStore,
    max_age: Duration,
    now_ns: i64,
) -> Result<RetentionReport, StoreError> {
    let _lock = ExportLock::acquire(dir)?;
    let max_age_ns = i64::try_from(max_age.as_nanos()).unwrap_or(i64::MAX);
    let cutoff = now_ns.saturating_sub(max_age_ns);
    let mut report = RetentionReport::default();
    // First the manifest (one transaction), then the files: a crash between
    // the two leaves files that recovery deletes as this store's orphans.
    let (files, rows, bytes): (i64, i64, i64) = hot.with_write_transaction(|tx, _| {
        let err = |e| StoreError::sqlite("apply retention", tx.path().unwrap_or(""), e);
        let sums = tx
            .query_row(
                "SELECT count(*), coalesce(sum(rows), 0), coalesce(sum(bytes), 0) FROM exports
                 WHERE tableName = ?1 AND state = 'complete' AND partitionStart + ?2 <= ?3",
                params![FLOWS, HOUR_NS, cutoff],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(err)?;
        tx.execute(
            "DELETE FROM exports WHERE tableName = ?1 AND partitionStart + ?2 <= ?3",
            params![FLOWS, HOUR_NS, cutoff],
        )
        .map_err(err)?;
        Ok(sums)
    })?;
    report.files = files as u64;
    report.rows = rows as u64;
    report.bytes = bytes as u64;
    let flows = dir.flows_dir();
    let dates = match std::fs::read_dir(&flows) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(StoreError::io("list", flows, e)),
    };
    for date in dates.flatten() {
        let date_name = date.file_name().to_string_lossy().into_owned();
        let Ok(hours) = std::fs::read_dir(date.path()) else { continue };
        for hour in hours.flatten() {
            let hour_name = hour.file_name().to_string_lossy().into_owned();
            let Some(start) = cold::parse_partition(&date_name, &hour_name) else { continue };
            if start.saturating_add(HOUR_NS) <= cutoff {
                std::fs::remove_dir_all(hour.path())
                    .map_err(|e| StoreError::io("remove partition", hour.path(), e))?;
                report.partitions.push(format!("{date_name}/{hour_name}"));
            }
        }
        let _ = std::fs::remove_dir(date.path());
    }
    report.partitions.sort();
    if !report.partitions.is_empty() {
        tracing::info!(
            partitions = report.partitions.len(),
            rows = report.rows,
            "retention removed old partitions"
        );
    }
    Ok(report)
}

pub(crate) fn export_to(
    store: &Store,
    dest: &Path,
    range: TimeRange,
    on_event: &mut dyn FnMut(ExportEvent<'_>),
) -> Result<ExportReport, StoreError> {
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(StoreError::DestinationNotEmpty { path: dest.to_owned() });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => cold::create_dir_all(dest)?,
        Err(e) => return Err(StoreError::io("list", dest, e)),
    }
    // No export or retention may move rows while we copy.
    let _lock = ExportLock::acquire(store.dir())?;
    let hot = store.hot();
    let files = store.cold_files(range)?;
    // Hours to write: those of the cold files and of the hot rows in range.
    let mut hours: Vec<i64> = files.iter().map(|f| f.partition_start).collect();
    let mut from = range.start();
    loop {
        use rusqlite::OptionalExtension as _;
        let next: Option<i64> = hot
            .connection()
            .query_row(
                "SELECT timestamp FROM flows WHERE timestamp >= ?1 AND timestamp < ?2 ORDER BY timestamp LIMIT 1",
                params![from, range.end()],
                |r| r.get(0),
            )
            .optional()
            .map_err(hot.err("find hot hours"))?;
        let Some(next) = next else { break };
        let start = cold::hour_start(next);
        hours.push(start);
        from = start.saturating_add(HOUR_NS);
    }
    hours.sort_unstable();
    hours.dedup();
    let planned = files.iter().map(|f| f.rows).sum::<u64>() + hot.flow_count(range)?;
    on_event(ExportEvent::Planned { rows: planned });
    let mut report = ExportReport::default();
    let schema = crate::schema::flows_schema();
    let metadata = || vec![KeyValue::new(STORE_ID_KEY.to_owned(), store.store_id().to_owned())];
    for hour in hours {
        let hour_range = TimeRange::new(
            Some(hour.max(range.start())),
            Some(hour.saturating_add(HOUR_NS).min(range.end())),
        );
        let mut batches = Vec::new();
        for file in files.iter().filter(|f| f.partition_start == hour) {
            cold::for_each_batch(&file.path, 64 * 1024, |b| {
                batches.extend(slice_to_range(&b, hour_range));
                Ok(())
            })?;
        }
        let cold_rows = batches.iter().map(RecordBatch::num_rows).sum::<usize>();
        hot.for_each_flow_batch(hour_range, 64 * 1024, |b| {
            batches.push(b);
            Ok(())
        })?;
        let rows = batches.iter().map(RecordBatch::num_rows).sum::<usize>();
        if rows == 0 {
            continue;
        }
        let arrow_err = |e: arrow::error::ArrowError| StoreError::InvalidBatch(e.to_string());
        // Sort when rows come from more than one sorted source.
        let sorted = if batches.len() > 1 && cold_rows > 0 {
            let all = concat_batches(&schema, &batches).map_err(arrow_err)?;
            let indices =
                sort_to_indices(all.column(flow_column::TIMESTAMP), None, None).map_err(arrow_err)?;
            vec![take_record_batch(&all, &indices).map_err(arrow_err)?]
        } else {
            batches
        };
        let partition = cold::partition_name(hour);
        let mut pending = PendingFile::create_with(&dest.join(&partition), "part-0.parquet", metadata())?;
        for batch in &sorted {
            pending.write(batch)?;
        }
        let written = pending.finish()?;
        on_event(ExportEvent::Rows(written.rows));
        report.rows += written.rows;
        report.bytes += written.bytes;
        report.files.push(ColdFile {
            path: written.path.clone(),
            relative: format!("{partition}/part-0.parquet"),
            partition_start: hour,
            rows: written.rows,
            bytes: written.bytes,
            min_timestamp: written.min_timestamp,
            max_timestamp: written.max_timestamp,
        });
    }
    cold::sync_dir(dest)?;
    Ok(report)
}

/// An error and its causes on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

/// Shares an event callback between threads.
pub type SharedExportEvents = Arc<dyn Fn(ExportEvent<'_>) + Send + Sync>;
