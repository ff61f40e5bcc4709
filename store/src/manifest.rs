//! The manifest: the `exports` table of `flowsql.db` (migrations/0001),
//! which says which Parquet files make up the cold tier. A file is part of
//! it if and only if it is listed here with state `complete`; readers take
//! their files from here, never from the directory tree. This module owns
//! that table's SQL.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, params};

use crate::TimeRange;
use crate::cold::{ColdFile, HOUR_NS};

/// A manifest row, as recovery needs it.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub id: i64,
    pub rows: u64,
    pub bytes: u64,
    pub complete: bool,
}

/// Lists `file` of `table` as complete.
pub(crate) fn insert(
    conn: &Connection,
    table: &str,
    file: &ColdFile,
    exported_at: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO exports (tableName, path, partitionStart, rows, bytes, minTimestamp, maxTimestamp, exportedAt)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        table,
        file.relative,
        file.partition_start,
        file.rows as i64,
        file.bytes as i64,
        file.min_timestamp,
        file.max_timestamp,
        exported_at
    ])?;
    Ok(())
}

/// Every manifest row, by path relative to the data directory.
pub(crate) fn all(conn: &Connection) -> rusqlite::Result<HashMap<String, Listed>> {
    let mut stmt = conn.prepare_cached("SELECT id, path, rows, bytes, state FROM exports")?;
    let rows = stmt.query_map([], |r| {
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
    })?;
    rows.collect()
}

/// The complete files of `table` whose rows may fall in `range`, oldest
/// first.
pub(crate) fn complete_files(
    conn: &Connection,
    root: &Path,
    table: &str,
    range: TimeRange,
) -> rusqlite::Result<Vec<ColdFile>> {
    let mut stmt = conn.prepare_cached(
        "SELECT path, partitionStart, rows, bytes, minTimestamp, maxTimestamp FROM exports
         WHERE tableName = ?1 AND state = 'complete' AND maxTimestamp >= ?2 AND minTimestamp < ?3
         ORDER BY minTimestamp, id",
    )?;
    let files = stmt.query_map(params![table, range.start(), range.end()], |r| {
        let relative: String = r.get(0)?;
        Ok(ColdFile {
            path: root.join(&relative),
            relative,
            partition_start: r.get(1)?,
            rows: r.get::<_, i64>(2)? as u64,
            bytes: r.get::<_, i64>(3)? as u64,
            min_timestamp: r.get(4)?,
            max_timestamp: r.get(5)?,
        })
    })?;
    files.collect()
}

/// Marks manifest row `id` as complete again (a file set aside came back).
pub(crate) fn mark_complete(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.execute("UPDATE exports SET state = 'complete', note = NULL WHERE id = ?1", [id]).map(|_| ())
}

/// Marks manifest row `id` as missing: its file is gone.
pub(crate) fn mark_missing(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.execute("UPDATE exports SET state = 'missing' WHERE id = ?1", [id]).map(|_| ())
}

/// Marks manifest row `id` as quarantined, with why and where it went.
pub(crate) fn mark_quarantined(conn: &Connection, id: i64, note: &str) -> rusqlite::Result<()> {
    conn.execute("UPDATE exports SET state = 'quarantined', note = ?2 WHERE id = ?1", params![id, note])
        .map(|_| ())
}

/// Files, rows and bytes of the complete files of `table` whose hourly
/// partition ended at or before `cutoff`.
pub(crate) fn ended_before(conn: &Connection, table: &str, cutoff: i64) -> rusqlite::Result<(u64, u64, u64)> {
    let (files, rows, bytes): (i64, i64, i64) = conn.query_row(
        "SELECT count(*), coalesce(sum(rows), 0), coalesce(sum(bytes), 0) FROM exports
         WHERE tableName = ?1 AND state = 'complete' AND partitionStart + ?2 <= ?3",
        params![table, HOUR_NS, cutoff],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok((files as u64, rows as u64, bytes as u64))
}

/// Removes every manifest row of `table` (whatever its state) whose hourly
/// partition ended at or before `cutoff`.
pub(crate) fn remove_ended_before(conn: &Connection, table: &str, cutoff: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM exports WHERE tableName = ?1 AND partitionStart + ?2 <= ?3",
        params![table, HOUR_NS, cutoff],
    )
}

/// What the manifest says of one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ColdSummary {
    pub files: u64,
    pub partitions: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Oldest and newest time in the complete files.
    pub span: Option<(i64, i64)>,
    pub quarantined: u64,
    pub missing: u64,
    /// When the newest complete file was exported.
    pub last_exported_at: Option<i64>,
}

pub(crate) fn summary(conn: &Connection, table: Option<&str>) -> rusqlite::Result<ColdSummary> {
    conn.prepare_cached(
        "SELECT
            count(*) FILTER (WHERE state = 'complete'),
            count(DISTINCT partitionStart) FILTER (WHERE state = 'complete'),
            coalesce(sum(rows) FILTER (WHERE state = 'complete'), 0),
            coalesce(sum(bytes) FILTER (WHERE state = 'complete'), 0),
            min(minTimestamp) FILTER (WHERE state = 'complete'),
            max(maxTimestamp) FILTER (WHERE state = 'complete'),
            count(*) FILTER (WHERE state = 'quarantined'),
            count(*) FILTER (WHERE state = 'missing'),
            max(exportedAt) FILTER (WHERE state = 'complete')
         FROM exports WHERE ?1 IS NULL OR tableName = ?1",
    )?
    .query_row([table], |r| {
        let min: Option<i64> = r.get(4)?;
        let max: Option<i64> = r.get(5)?;
        Ok(ColdSummary {
            files: r.get::<_, i64>(0)? as u64,
            partitions: r.get::<_, i64>(1)? as u64,
            rows: r.get::<_, i64>(2)? as u64,
            bytes: r.get::<_, i64>(3)? as u64,
            span: min.zip(max),
            quarantined: r.get::<_, i64>(6)? as u64,
            missing: r.get::<_, i64>(7)? as u64,
            last_exported_at: r.get(8)?,
        })
    })
}
