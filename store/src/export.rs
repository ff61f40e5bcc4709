//! Moving events from the hot tier to the cold tier exactly once.
//!
//! # The export protocol
//!
//! Under the data directory's export lock (`flock`, so one exporter at a
//! time across processes, released if the process dies), for each event
//! table:
//!
//! 1. Clean up ([`crate::recovery`]), so that no leftover of an earlier
//!    crash remains.
//! 2. List the hot batches whose first event is before the cutoff. Only
//!    an exporter removes or changes a batch, and the capture only adds new
//!    ones (which this export does not see), so what the export takes
//!    cannot change under it.
//! 3. Read those batches as one stream in time order ([`crate::merge`]) and
//!    cut it into files: one hourly partition per file, at most
//!    `max_file_rows` rows, nothing at or after the cutoff. For each file:
//!    - first, with no lock held, write its rows to
//!      `<table>/date=D/hour=H/.part-X.parquet.tmp`, sync it, rename it to
//!      `part-X.parquet`, sync the directory;
//!    - then ONE short SQLite write transaction removes the batches whose
//!      rows are now all in files, replaces a batch the file took only part
//!      of by the rest of its rows, checks that each batch is still as it
//!      was read, lists the file in the manifest, and commits.
//!
//!    Until that commit the batches are as they were and the file is not in
//!    the manifest (an orphan, should the process die: recovery deletes
//!    it); after it, the file is listed and the rows it holds are gone from
//!    the hot tier. A crash at any instant leaves each row in exactly one
//!    tier.
//!
//! The database's write lock is held only for that transaction (a few rows
//! of `batches` and one of `exports`), never while a file is read, encoded
//! or synced.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::record_batch::RecordBatch;
use parquet::file::metadata::KeyValue;

use crate::cold::{self, ColdFile, HOUR_NS, PendingFile, STORE_ID_KEY, WrittenFile};
use crate::database::Database;
use crate::dir::{DataDir, ExportLock};
use crate::hot::{self, BatchMeta};
use crate::ipc::HOT_COMPRESSION;
use crate::merge::{Loader, TimeMerge};
use crate::state::{self, LastExport};
use crate::table::EventTable;
use crate::{StoreError, TimeRange, manifest, recovery};

/// The default of [`ExportOptions::max_file_rows`]: rows per file at most,
/// bounding the memory of a file's row group and how much of the hot tier
/// one transaction moves.
pub const DEFAULT_MAX_FILE_ROWS: u64 = 2_000_000;

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Events with a time before `cutoff_ns` are exported.
    pub cutoff_ns: i64,
    /// Rows handed to the Parquet encoder at a time.
    pub batch_rows: usize,
    /// Rows per file at most (an hour with more is split by time).
    pub max_file_rows: u64,
    /// Set to true (by a stopping capture) to end the export early: at the
    /// next batch, the file being written is abandoned (its rows stay hot)
    /// and the files committed so far stay; the report says `interrupted`.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Test hook: sleep this long after a file is renamed into place and
    /// before the manifest commit, so a crash harness can kill the process
    /// in that window.
    #[cfg(feature = "test-support")]
    pub pause_after_rename: Option<std::time::Duration>,
}

impl ExportOptions {
    fn interrupted(&self) -> bool {
        self.interrupt.as_ref().is_some_and(|flag| flag.load(Ordering::Relaxed))
    }

    /// Export every hot row older than `cutoff_ns`.
    pub fn up_to(cutoff_ns: i64) -> Self {
        ExportOptions {
            cutoff_ns,
            batch_rows: 64 * 1024,
            max_file_rows: DEFAULT_MAX_FILE_ROWS,
            interrupt: None,
            #[cfg(feature = "test-support")]
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

/// Shares an event callback between threads.
pub type SharedExportEvents = Arc<dyn Fn(ExportEvent<'_>) + Send + Sync>;

pub(crate) fn export(
    dir: &DataDir,
    db: &mut Database,
    store_id: &str,
    tables: &[EventTable],
    options: &ExportOptions,
    on_event: &mut dyn FnMut(ExportEvent<'_>),
) -> Result<ExportReport, StoreError> {
    let _lock = ExportLock::acquire(dir)?;
    recovery::recover(dir, db, store_id, tables, false)?.log();
    // What this export takes is fixed here: batches committed from now on
    // stay hot, whatever their time.
    let mut work = Vec::with_capacity(tables.len());
    let mut planned = 0;
    for table in tables {
        let batches = hot::list(db.conn(), table.name(), TimeRange::new(None, Some(options.cutoff_ns)))
            .map_err(db.err("list hot batches"))?;
        for batch in &batches {
            planned += if batch.max_time < options.cutoff_ns {
                batch.rows
            } else {
                let times = hot::read_times(db.conn(), table, batch.seq)?.unwrap_or_default();
                times.iter().filter(|t| **t < options.cutoff_ns).count() as u64
            };
        }
        work.push((table, batches));
    }
    on_event(ExportEvent::Planned { rows: planned });
    let mut report = ExportReport::default();
    let mut result = Ok(());
    for (table, batches) in work {
        if batches.is_empty() || report.interrupted {
            continue;
        }
        result = export_table(dir, db, store_id, table, batches, options, on_event, &mut report);
        if result.is_err() {
            break;
        }
    }
    let outcome = match &result {
        Ok(()) => LastExport {
            at_ns: crate::now_ns(),
            files: report.files.len() as u64,
            rows: report.rows,
            bytes: report.bytes,
            error: None,
        },
        Err(e) => LastExport { at_ns: crate::now_ns(), error: Some(error_chain(e)), ..LastExport::default() },
    };
    if let Err(e) = state::set(db.conn(), state::LAST_EXPORT, &outcome.to_json()) {
        tracing::warn!(error = %e, "failed to record the last export");
    }
    result.map(|()| report)
}

#[expect(clippy::too_many_arguments, reason = "one step of export, spelled out")]
fn export_table(
    dir: &DataDir,
    db: &mut Database,
    store_id: &str,
    table: &EventTable,
    batches: Vec<BatchMeta>,
    options: &ExportOptions,
    on_event: &mut dyn FnMut(ExportEvent<'_>),
    report: &mut ExportReport,
) -> Result<(), StoreError> {
    let cutoff = options.cutoff_ns;
    let load: Loader<Database> = |db, meta| hot::read(db.conn(), meta.seq, None);
    let mut merge = TimeMerge::new(table, batches, load);
    let exported_at = crate::now_ns();
    for seq in 0u64.. {
        if options.interrupted() {
            report.interrupted = true;
            break;
        }
        let Some(first) = merge.peek_time(db)? else { break };
        if first >= cutoff {
            break;
        }
        let start = cold::hour_start(first);
        let end = start.saturating_add(HOUR_NS).min(cutoff);
        let name = format!("part-{exported_at}-{seq}.parquet");
        match export_file(
            dir,
            db,
            store_id,
            table,
            &mut merge,
            (start, end),
            &name,
            exported_at,
            options,
            on_event,
        ) {
            Ok(file) => {
                report.rows += file.rows;
                report.bytes += file.bytes;
                report.files.push(file);
            }
            Err(StoreError::ExportInterrupted) => {
                report.interrupted = true;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes the next rows of `merge` before `end` (one hourly partition
/// starting at `partition_start`, at most `max_file_rows`) to one file,
/// complete and in place, with no lock held; then one short write
/// transaction takes those rows out of the hot tier and lists the file.
#[expect(clippy::too_many_arguments, reason = "one step of export_table, spelled out")]
fn export_file(
    dir: &DataDir,
    db: &mut Database,
    store_id: &str,
    table: &EventTable,
    merge: &mut TimeMerge<'_, Database>,
    (partition_start, end): (i64, i64),
    name: &str,
    exported_at: i64,
    options: &ExportOptions,
    on_event: &mut dyn FnMut(ExportEvent<'_>),
) -> Result<ColdFile, StoreError> {
    let relative_dir = format!("{}/{}", table.name(), cold::partition_name(partition_start));
    let metadata = vec![KeyValue::new(STORE_ID_KEY.to_owned(), store_id.to_owned())];
    let pending = PendingFile::create(table, &dir.root().join(&relative_dir), name, metadata)?;
    let max_rows = usize::try_from(options.max_file_rows.max(1)).unwrap_or(usize::MAX);
    let written = write_pipelined(pending, |send| {
        let mut rows = 0;
        while rows < max_rows {
            if options.interrupted() {
                return Err(StoreError::ExportInterrupted);
            }
            let Some(run) = merge.next_run(db, end, options.batch_rows.min(max_rows - rows))? else { break };
            rows += run.num_rows();
            let n = run.num_rows() as u64;
            send(run)?;
            on_event(ExportEvent::Rows(n));
        }
        Ok(())
    })?;
    let file = ColdFile {
        path: written.path.clone(),
        relative: format!("{relative_dir}/{name}"),
        partition_start,
        rows: written.rows,
        bytes: written.bytes,
        min_timestamp: written.min_timestamp,
        max_timestamp: written.max_timestamp,
    };
    on_event(ExportEvent::Renamed(&written.path));
    #[cfg(feature = "test-support")]
    if let Some(pause) = options.pause_after_rename {
        std::thread::sleep(pause);
    }
    if let Err(e) = commit_file(db, table, merge, &file, exported_at) {
        remove_uncommitted(&written.path);
        return Err(e);
    }
    on_event(ExportEvent::Committed(&file));
    tracing::debug!(file = %file.path.display(), rows = file.rows, bytes = file.bytes, "exported");
    Ok(file)
}

/// The one write transaction of a file: the batches it emptied removed,
/// the one it cut replaced by its rest, the file listed.
fn commit_file(
    db: &mut Database,
    table: &EventTable,
    merge: &mut TimeMerge<'_, Database>,
    file: &ColdFile,
    exported_at: i64,
) -> Result<(), StoreError> {
    // Encode the rests before taking the lock.
    let mut changes = Vec::new();
    for progress in merge.take_progress() {
        let rest = match &progress.rest {
            Some(rest) => hot::encode(table, rest, HOT_COMPRESSION)?,
            None => None,
        };
        changes.push((progress.meta, rest));
    }
    let now = crate::now_ns();
    let path = db.path().to_owned();
    db.write(|tx| {
        let sqlite = |e| StoreError::sqlite("commit an export", &path, e);
        let rows_taken: u64 =
            changes.iter().map(|(meta, rest)| meta.rows - rest.as_ref().map_or(0, |r| r.rows)).sum();
        if rows_taken != file.rows {
            return Err(StoreError::ExportConflict {
                path: file.path.clone(),
                reason: format!("the file holds {} rows, the batches it took {rows_taken}", file.rows),
            });
        }
        for (meta, rest) in &changes {
            let done = match rest {
                None => hot::delete(tx, meta.seq, meta.rows).map_err(sqlite)?,
                Some(rest) => hot::replace(tx, meta.seq, meta.rows, rest, now).map_err(sqlite)?,
            };
            if !done {
                return Err(StoreError::ExportConflict {
                    path: file.path.clone(),
                    reason: format!("hot batch {} changed while it was exported", meta.seq),
                });
            }
        }
        manifest::insert(tx, table.name(), file, exported_at).map_err(sqlite)
    })
}

/// Removes a renamed file whose manifest commit failed (or recovery will).
fn remove_uncommitted(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(file = %path.display(), error = %e, "failed to remove an uncommitted export file");
    }
}

/// Runs `produce` (reading the hot tier on this thread) while another
/// thread encodes its batches into `pending`: reading and Parquet encoding
/// overlap. If `produce` fails (or is interrupted), the file is abandoned:
/// never finished or renamed, its temporary removed.
pub(crate) fn write_pipelined(
    mut pending: PendingFile,
    produce: impl FnOnce(&mut dyn FnMut(RecordBatch) -> Result<(), StoreError>) -> Result<(), StoreError>,
) -> Result<WrittenFile, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<RecordBatch>(2);
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
