//! `flowsql status`: what is in a data directory and how the capture fared.

use std::path::PathBuf;

use crate::database::Database;
use crate::dir::DataDir;
pub use crate::state::LastExport;
pub use crate::stats::SessionCounters;
use crate::{StoreError, hot, manifest, state, stats};

/// The state of a data directory (the rows of its event tables, `flows` and
/// `flow_ends` together, and the capture).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStatus {
    pub data_dir: PathBuf,
    /// `flowsql.db` with its WAL and shared-memory files.
    pub database_bytes: u64,
    pub hot_rows: u64,
    /// Batches the hot rows are kept in.
    pub hot_batches: u64,
    /// Oldest and newest hot timestamp.
    pub hot_span: Option<(i64, i64)>,
    pub cold_files: u64,
    pub cold_partitions: u64,
    pub cold_rows: u64,
    pub cold_bytes: u64,
    /// Oldest and newest cold timestamp.
    pub cold_span: Option<(i64, i64)>,
    /// Files set aside as corrupt (`quarantine/`), and listed files gone.
    pub quarantined_files: u64,
    pub missing_files: u64,
    pub last_export: Option<LastExport>,
    /// When an export last succeeded: the last run, if it succeeded, else
    /// the newest file in the manifest.
    pub last_export_success_ns: Option<i64>,
    /// Counters of every capture that wrote here.
    pub capture: CaptureTotals,
}

/// Capture counters summed over capture sessions (each session's latest
/// snapshot), plus the latest session on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureTotals {
    pub sessions: u64,
    pub total: SessionCounters,
    pub latest: Option<SessionCounters>,
}

/// The status of `table`'s rows, or (`None`) of every event table's.
pub(crate) fn status(dir: &DataDir, db: &Database, table: Option<&str>) -> Result<StoreStatus, StoreError> {
    db.read(|conn| {
        let hot = hot::summary(conn, table).map_err(db.err("summarize the hot tier"))?;
        let cold = manifest::summary(conn, table).map_err(db.err("read the manifest"))?;
        let last_export = state::get(conn, state::LAST_EXPORT)
            .map_err(db.err("read store_state"))?
            .and_then(|text| LastExport::from_json(&text));
        let sessions = stats::latest_per_session(conn).map_err(db.err("read capture_stats"))?;
        // Files set aside without a manifest row count too.
        let in_quarantine = std::fs::read_dir(dir.quarantine_dir()).map(|d| d.count() as u64).unwrap_or(0);
        let mut capture = CaptureTotals { sessions: sessions.len() as u64, ..CaptureTotals::default() };
        for session in &sessions {
            capture.total.add(session);
        }
        capture.latest = sessions.last().cloned();
        let last_ok = last_export.as_ref().filter(|e| e.error.is_none()).map(|e| e.at_ns);
        Ok(StoreStatus {
            data_dir: dir.root().to_owned(),
            database_bytes: db.bytes_on_disk(),
            hot_rows: hot.rows,
            hot_batches: hot.batches,
            hot_span: hot.span,
            cold_files: cold.files,
            cold_partitions: cold.partitions,
            cold_rows: cold.rows,
            cold_bytes: cold.bytes,
            cold_span: cold.span,
            quarantined_files: cold.quarantined.max(in_quarantine),
            missing_files: cold.missing,
            last_export_success_ns: last_ok.or(cold.last_exported_at),
            last_export,
            capture,
        })
    })
}
