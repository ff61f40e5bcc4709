//! Copies for others: the rows of a time range, from both tiers, written as
//! a self-contained hive-partitioned Parquet dataset
//! (`dest/date=YYYY-MM-DD/hour=HH/part-0.parquet`), leaving the store as it
//! is.

use std::io;
use std::path::Path;

use arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use arrow::record_batch::RecordBatch;
use parquet::file::metadata::KeyValue;

use crate::cold::{self, ColdFile, HOUR_NS, PendingFile, STORE_ID_KEY};
use crate::database::Database;
use crate::dir::{DataDir, ExportLock};
use crate::export::{ExportEvent, ExportReport};
use crate::table::EventTable;
use crate::{StoreError, TimeRange, hot, manifest};

pub(crate) fn copy_range(
    dir: &DataDir,
    db: &Database,
    store_id: &str,
    table: &EventTable,
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
    let _lock = ExportLock::acquire(dir)?;
    let conn = db.conn();
    let files =
        manifest::complete_files(conn, dir.root(), table.name(), range).map_err(db.err("list cold files"))?;
    let batches = hot::list(conn, table.name(), range).map_err(db.err("list hot batches"))?;
    // Hours to write: those of the cold files and of the hot batches in range.
    let mut hours: Vec<i64> = files.iter().map(|f| f.partition_start).collect();
    for batch in &batches {
        // The hours its rows fall in (a batch may span any time).
        let Some(times) = hot::read_times(conn, table, batch.seq)? else { continue };
        hours.extend(times.iter().filter(|t| range.contains(**t)).map(|t| cold::hour_start(*t)));
        hours.sort_unstable();
        hours.dedup();
    }
    hours.sort_unstable();
    hours.dedup();
    let planned = files.iter().map(|f| f.rows).sum::<u64>() + hot::count(conn, table, range)?;
    on_event(ExportEvent::Planned { rows: planned });
    let mut report = ExportReport::default();
    let metadata = || vec![KeyValue::new(STORE_ID_KEY.to_owned(), store_id.to_owned())];
    for hour in hours {
        let hour_range = TimeRange::new(
            Some(hour.max(range.start())),
            Some(hour.saturating_add(HOUR_NS).min(range.end())),
        );
        let mut rows = Vec::new();
        let mut sources = 0;
        for file in files.iter().filter(|f| f.partition_start == hour) {
            sources += 1;
            cold::for_each_batch(table, &file.path, 64 * 1024, |b| {
                rows.extend(slice_to_range(table, &b, hour_range));
                Ok(())
            })?;
        }
        for batch in batches.iter().filter(|b| hour_range.overlaps(b.min_time, b.max_time.saturating_add(1)))
        {
            let Some(stored) = hot::read(conn, batch.seq, None)? else { continue };
            sources += 1;
            let logical = table.conform(&stored)?;
            rows.extend(slice_to_range(table, &logical, hour_range));
        }
        let count = rows.iter().map(RecordBatch::num_rows).sum::<usize>();
        if count == 0 {
            continue;
        }
        let sorted = if sources > 1 { vec![sort_all(table, &rows)?] } else { rows };
        let partition = cold::partition_name(hour);
        let mut pending = PendingFile::create(table, &dest.join(&partition), "part-0.parquet", metadata())?;
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

/// The rows of several batches as one, in time order.
fn sort_all(table: &EventTable, batches: &[RecordBatch]) -> Result<RecordBatch, StoreError> {
    let invalid =
        |e: arrow::error::ArrowError| StoreError::InvalidBatch { table: table.name(), reason: e.to_string() };
    let all = concat_batches(table.schema(), batches).map_err(invalid)?;
    let indices = sort_to_indices(all.column(table.time_column()), None, None).map_err(invalid)?;
    take_record_batch(&all, &indices).map_err(invalid)
}

/// The part of a batch inside `range` (zero-copy when the batch is in time
/// order), `None` if nothing is.
pub(crate) fn slice_to_range(
    table: &EventTable,
    batch: &RecordBatch,
    range: TimeRange,
) -> Option<RecordBatch> {
    let ts = table.times(batch);
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
