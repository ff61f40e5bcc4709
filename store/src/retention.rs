//! Retention: removing whole hourly partitions of the cold tier older than
//! a given age. Only files listed in the manifest count; the hot tier is
//! never touched, so rows not exported yet stay whatever their age.

use std::io;
use std::time::Duration;

use crate::cold::{self, HOUR_NS};
use crate::database::Database;
use crate::dir::{DataDir, ExportLock};
use crate::table::EventTable;
use crate::{StoreError, manifest};

/// What retention removed.
#[derive(Debug, Clone, Default)]
pub struct RetentionReport {
    /// Partitions removed, as `<table>/date=YYYY-MM-DD/hour=HH`.
    pub partitions: Vec<String>,
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
}

/// Removes the partitions of every table that ended more than `max_age`
/// before `now_ns`.
pub(crate) fn apply(
    dir: &DataDir,
    db: &mut Database,
    tables: &[EventTable],
    max_age: Duration,
    now_ns: i64,
) -> Result<RetentionReport, StoreError> {
    let _lock = ExportLock::acquire(dir)?;
    let max_age_ns = i64::try_from(max_age.as_nanos()).unwrap_or(i64::MAX);
    let mut cutoff = now_ns.saturating_sub(max_age_ns);
    // While files are uploaded to object storage, none is removed before
    // it is: the partitions from the oldest one not uploaded on stay.
    let pending = db.read(|conn| {
        let read = |e| StoreError::sqlite("read the upload backlog", db.path(), e);
        if crate::uploads::remote(conn).map_err(read)?.is_none() {
            return Ok(None);
        }
        crate::uploads::oldest_pending_partition(conn).map_err(read)
    })?;
    if let Some(oldest) = pending {
        if oldest < cutoff {
            tracing::info!(partition = %cold::partition_name(oldest), "retention waits for the upload of older files");
        }
        cutoff = cutoff.min(oldest);
    }
    let mut report = RetentionReport::default();
    for table in tables {
        // First the manifest (one transaction), then the files: a crash
        // between the two leaves files that recovery deletes as this
        // store's orphans.
        let (files, rows, bytes) = db.write(|tx| {
            let sqlite = |e| StoreError::sqlite("apply retention", tx.path().unwrap_or(""), e);
            let sums = manifest::ended_before(tx, table.name(), cutoff).map_err(sqlite)?;
            manifest::remove_ended_before(tx, table.name(), cutoff).map_err(sqlite)?;
            Ok(sums)
        })?;
        report.files += files;
        report.rows += rows;
        report.bytes += bytes;
        let table_dir = dir.table_dir(table.name());
        let dates = match std::fs::read_dir(&table_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io("list", table_dir, e)),
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
                    report.partitions.push(format!("{}/{date_name}/{hour_name}", table.name()));
                }
            }
            let _ = std::fs::remove_dir(date.path());
        }
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
