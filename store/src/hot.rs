//! The hot tier: the `batches` table of `flowsql.db` (migrations/0003), one
//! row per committed batch of an event table, an Arrow IPC stream with its
//! rows in time order. This module owns that table's SQL.
//!
//! Batches are inserted by the capture's writer (one per commit, of up to
//! thousands of rows), read whole by queries and exports (selected by their
//! time span without reading them), and removed, or replaced by their
//! unexported rest, only by an export, in the transaction that lists the
//! Parquet file that took their rows.

use arrow::compute::{SortOptions, sort_to_indices, take_record_batch};
use arrow::record_batch::RecordBatch;
use rusqlite::{Connection, OptionalExtension as _, params};

use crate::ipc::{self, Compression};
use crate::table::EventTable;
use crate::{StoreError, TimeRange};

/// What the hot tier knows of a batch without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMeta {
    /// Commit order, never reused.
    pub seq: i64,
    /// Oldest and newest event time, UTC ns.
    pub min_time: i64,
    pub max_time: i64,
    pub rows: u64,
    /// Size of the stored (compressed) batch.
    pub bytes: u64,
}

/// A batch ready to store: its rows in time order, encoded.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    pub min_time: i64,
    pub max_time: i64,
    pub rows: u64,
    pub data: Vec<u8>,
}

/// Sorts `batch` by the table's time column (unless it already is) and
/// encodes it; `None` for an empty batch. The batch must have passed
/// [`EventTable::check`].
pub fn encode(
    table: &EventTable,
    batch: &RecordBatch,
    compression: Compression,
) -> Result<Option<EncodedBatch>, StoreError> {
    let Some((min_time, max_time)) = table.time_span(batch) else { return Ok(None) };
    let sorted = sort_by_time(table, batch)?;
    let data = ipc::encode(&sorted, compression)?;
    Ok(Some(EncodedBatch { min_time, max_time, rows: batch.num_rows() as u64, data }))
}

/// `batch` in time order (itself when it already is).
pub(crate) fn sort_by_time(table: &EventTable, batch: &RecordBatch) -> Result<RecordBatch, StoreError> {
    let times = table.times(batch);
    if times.windows(2).all(|w| w[0] <= w[1]) {
        return Ok(batch.clone());
    }
    let invalid =
        |e: arrow::error::ArrowError| StoreError::InvalidBatch { table: table.name(), reason: e.to_string() };
    let options = SortOptions { descending: false, nulls_first: false };
    let indices = sort_to_indices(batch.column(table.time_column()), Some(options), None).map_err(invalid)?;
    take_record_batch(batch, &indices).map_err(invalid)
}

/// Inserts an encoded batch of `table`; returns its sequence number.
pub(crate) fn insert(
    conn: &Connection,
    table: &str,
    batch: &EncodedBatch,
    now_ns: i64,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO batches (tableName, minTime, maxTime, rows, bytes, committedAt, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING seq",
    )?
    .query_row(
        params![
            table,
            batch.min_time,
            batch.max_time,
            batch.rows as i64,
            batch.data.len() as i64,
            now_ns,
            batch.data
        ],
        |r| r.get(0),
    )
}

/// The batches of `table` whose time span overlaps `range`, oldest first
/// (by first event, then commit order).
pub(crate) fn list(conn: &Connection, table: &str, range: TimeRange) -> rusqlite::Result<Vec<BatchMeta>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, minTime, maxTime, rows, bytes FROM batches
         WHERE tableName = ?1 AND minTime < ?3 AND maxTime >= ?2
         ORDER BY minTime, seq",
    )?;
    let rows = stmt.query_map(params![table, range.start(), range.end()], meta)?;
    rows.collect()
}

fn meta(r: &rusqlite::Row<'_>) -> rusqlite::Result<BatchMeta> {
    Ok(BatchMeta {
        seq: r.get(0)?,
        min_time: r.get(1)?,
        max_time: r.get(2)?,
        rows: r.get::<_, i64>(3)? as u64,
        bytes: r.get::<_, i64>(4)? as u64,
    })
}

/// Reads and decodes batch `seq` (with `projection`, only those columns of
/// the stored batch); `None` if it is gone.
pub(crate) fn read(
    conn: &Connection,
    seq: i64,
    projection: Option<Vec<usize>>,
) -> Result<Option<RecordBatch>, StoreError> {
    let path = conn.path().unwrap_or("flowsql.db").to_owned();
    let sqlite = |e| StoreError::sqlite("read a hot batch", &path, e);
    let mut stmt = conn.prepare_cached("SELECT data FROM batches WHERE seq = ?1").map_err(sqlite)?;
    let mut rows = stmt.query([seq]).map_err(sqlite)?;
    let Some(row) = rows.next().map_err(sqlite)? else { return Ok(None) };
    let bytes = row.get_ref(0).map_err(sqlite)?.as_blob().map_err(|e| sqlite(e.into()))?;
    ipc::decode(bytes, projection)
        .map(Some)
        .map_err(|e| StoreError::CorruptBatch { seq, source: Box::new(e) })
}

/// The stored bytes of batch `seq`, copied; `None` if it is gone.
pub(crate) fn read_bytes(conn: &Connection, seq: i64) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT data FROM batches WHERE seq = ?1")?.query_row([seq], |r| r.get(0)).optional()
}

/// Removes batch `seq` if it still holds `rows` rows; returns whether it did.
pub(crate) fn delete(conn: &Connection, seq: i64, rows: u64) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM batches WHERE seq = ?1 AND rows = ?2")?
        .execute(params![seq, rows as i64])?;
    Ok(n == 1)
}

/// Replaces batch `seq` (if it still holds `rows` rows) by `rest`, keeping
/// its sequence number; returns whether it did.
pub(crate) fn replace(
    conn: &Connection,
    seq: i64,
    rows: u64,
    rest: &EncodedBatch,
    now_ns: i64,
) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE batches SET minTime = ?3, maxTime = ?4, rows = ?5, bytes = ?6, committedAt = ?7, data = ?8
             WHERE seq = ?1 AND rows = ?2",
        )?
        .execute(params![
            seq,
            rows as i64,
            rest.min_time,
            rest.max_time,
            rest.rows as i64,
            rest.data.len() as i64,
            now_ns,
            rest.data
        ])?;
    Ok(n == 1)
}

/// Rows and batches of `table` (every table with `None`), and the oldest
/// and newest event time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HotSummary {
    pub batches: u64,
    pub rows: u64,
    pub bytes: u64,
    pub span: Option<(i64, i64)>,
}

pub(crate) fn summary(conn: &Connection, table: Option<&str>) -> rusqlite::Result<HotSummary> {
    let (batches, rows, bytes, min, max): (i64, i64, i64, Option<i64>, Option<i64>) = conn
        .prepare_cached(
            "SELECT count(*), coalesce(sum(rows), 0), coalesce(sum(bytes), 0), min(minTime), max(maxTime)
             FROM batches WHERE ?1 IS NULL OR tableName = ?1",
        )?
        .query_row([table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?;
    Ok(HotSummary { batches: batches as u64, rows: rows as u64, bytes: bytes as u64, span: min.zip(max) })
}

/// The rows of `table` in `range`, counted exactly: batches inside the
/// range by their row count, those across its edges by their times.
pub(crate) fn count(conn: &Connection, table: &EventTable, range: TimeRange) -> Result<u64, StoreError> {
    let path = conn.path().unwrap_or("flowsql.db").to_owned();
    let metas =
        list(conn, table.name(), range).map_err(|e| StoreError::sqlite("list hot batches", &path, e))?;
    let mut total = 0;
    for batch in metas {
        if batch.min_time >= range.start() && batch.max_time < range.end() {
            total += batch.rows;
            continue;
        }
        let Some(times) = read_times(conn, table, batch.seq)? else { continue };
        total += times.iter().filter(|t| range.contains(**t)).count() as u64;
    }
    Ok(total)
}

/// The event times of batch `seq`, decoding nothing else.
pub(crate) fn read_times(
    conn: &Connection,
    table: &EventTable,
    seq: i64,
) -> Result<Option<Vec<i64>>, StoreError> {
    let batch = read(conn, seq, Some(vec![table.time_column()]))?;
    Ok(batch.map(|b| crate::table::times_of(b.column(0)).to_vec()))
}
