//! Uploads of cold files to object storage: which complete files of the
//! manifest are not uploaded yet (`exports.uploadedAt`, migrations/0004),
//! the remote they go to and how the last attempt went (`store_state`).
//! This module owns that SQL; the uploading itself (an object store
//! client) is the capture service's.
//!
//! A file is uploaded once its manifest row says `uploadedAt`; retention
//! keeps every partition from the oldest file not uploaded on while a
//! remote is set ([`crate::retention`]).

use rusqlite::{Connection, params};

use crate::state;

/// The key of the remote files go to (`export.remote`), set by a capture
/// that uploads.
pub(crate) const REMOTE: &str = "uploadRemote";
/// The key of the last upload attempt's outcome (JSON, see [`LastUpload`]).
pub(crate) const LAST_UPLOAD: &str = "lastUpload";

/// A complete file not uploaded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The manifest row.
    pub id: i64,
    pub table: String,
    /// Path relative to the data directory:
    /// `<table>/date=YYYY-MM-DD/hour=HH/<name>.parquet`.
    pub relative: String,
    pub partition_start: i64,
    pub bytes: u64,
}

/// Up to `limit` complete files not uploaded yet, oldest partition first.
pub(crate) fn pending(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<PendingUpload>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, tableName, path, partitionStart, bytes FROM exports
         WHERE uploadedAt IS NULL AND state = 'complete'
         ORDER BY partitionStart, id LIMIT ?1",
    )?;
    let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
        Ok(PendingUpload {
            id: r.get(0)?,
            table: r.get(1)?,
            relative: r.get(2)?,
            partition_start: r.get(3)?,
            bytes: r.get::<_, i64>(4)? as u64,
        })
    })?;
    rows.collect()
}

/// Records that manifest row `id` is uploaded (at `at_ns`).
pub(crate) fn mark_uploaded(conn: &Connection, id: i64, at_ns: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached("UPDATE exports SET uploadedAt = ?2 WHERE id = ?1 AND uploadedAt IS NULL")?
        .execute(params![id, at_ns])
        .map(|n| n == 1)
}

/// Files and bytes not uploaded yet, and files uploaded.
pub(crate) fn counts(conn: &Connection) -> rusqlite::Result<(u64, u64, u64)> {
    conn.prepare_cached(
        "SELECT count(*) FILTER (WHERE uploadedAt IS NULL),
                coalesce(sum(bytes) FILTER (WHERE uploadedAt IS NULL), 0),
                count(*) FILTER (WHERE uploadedAt IS NOT NULL)
         FROM exports WHERE state = 'complete'",
    )?
    .query_row([], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64))
    })
}

/// Start of the oldest partition holding a complete file not uploaded yet.
pub(crate) fn oldest_pending_partition(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT min(partitionStart) FROM exports WHERE uploadedAt IS NULL AND state = 'complete'",
    )?
    .query_row([], |r| r.get(0))
}

/// The remote files are uploaded to, if a capture set one.
pub(crate) fn remote(conn: &Connection) -> rusqlite::Result<Option<String>> {
    Ok(state::get(conn, REMOTE)?.filter(|r| !r.is_empty()))
}

/// The outcome of the uploader's last attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastUpload {
    pub at_ns: i64,
    /// Why it failed, if it did (one line).
    pub error: Option<String>,
    /// When an upload last succeeded.
    pub last_success_ns: Option<i64>,
}

impl LastUpload {
    pub(crate) fn to_json(&self) -> String {
        serde_json::json!({ "at": self.at_ns, "error": self.error, "lastSuccess": self.last_success_ns })
            .to_string()
    }

    pub(crate) fn from_json(text: &str) -> Option<LastUpload> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        Some(LastUpload {
            at_ns: value.get("at")?.as_i64()?,
            error: value.get("error").and_then(serde_json::Value::as_str).map(str::to_owned),
            last_success_ns: value.get("lastSuccess").and_then(serde_json::Value::as_i64),
        })
    }
}

/// What `flowsql status` shows of uploads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadStatus {
    /// Where files go (`export.remote`).
    pub remote: String,
    /// Complete files (and their bytes) not uploaded yet.
    pub backlog_files: u64,
    pub backlog_bytes: u64,
    pub uploaded_files: u64,
    pub last: Option<LastUpload>,
}

/// The upload status, when a remote is set.
pub(crate) fn status(conn: &Connection) -> rusqlite::Result<Option<UploadStatus>> {
    let Some(remote) = remote(conn)? else { return Ok(None) };
    let (backlog_files, backlog_bytes, uploaded_files) = counts(conn)?;
    let last = state::get(conn, LAST_UPLOAD)?.and_then(|t| LastUpload::from_json(&t));
    Ok(Some(UploadStatus { remote, backlog_files, backlog_bytes, uploaded_files, last }))
}
