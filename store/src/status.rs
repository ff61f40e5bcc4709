//! `flowsql status`: what is in a data directory and how the capture fared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::StoreError;
use crate::hot::HotStore;
use crate::store::DataDir;

/// The state of a data directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStatus {
    pub data_dir: PathBuf,
    /// `flowsql.db` with its WAL and shared-memory files.
    pub database_bytes: u64,
    pub hot_rows: u64,
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
    /// Counters of every capture that wrote here.
    pub capture: CaptureTotals,
}

/// The last export run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastExport {
    pub at_ns: i64,
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Capture counters summed over capture sessions (each session's latest
/// snapshot), plus the latest session on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureTotals {
    pub sessions: u64,
    pub total: SessionCounters,
    pub latest: Option<SessionCounters>,
}

/// One capture session's cumulative counters (a `capture_stats` row).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// Session start and time of this snapshot, UTC ns (0 in sums).
    pub session_ns: i64,
    pub time_ns: i64,
    /// Records the kernel delivered.
    pub events: u64,
    /// Records the kernel lost (ring buffer full).
    pub lost: u64,
    pub rows_stored: u64,
    /// Rows the store could not keep (disk full, read-only, backlog): loss.
    pub rows_not_stored: u64,
    /// Failed write attempts.
    pub store_failures: u64,
    /// Further named counters.
    pub counters: BTreeMap<String, u64>,
}

impl SessionCounters {
    /// Everything lost: in the kernel and in the store.
    pub fn loss(&self) -> u64 {
        self.lost + self.rows_not_stored
    }

    fn add(&mut self, other: &SessionCounters) {
        self.events += other.events;
        self.lost += other.lost;
        self.rows_stored += other.rows_stored;
        self.rows_not_stored += other.rows_not_stored;
        self.store_failures += other.store_failures;
        for (name, value) in &other.counters {
            *self.counters.entry(name.clone()).or_default() += value;
        }
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

pub(crate) fn status(dir: &DataDir, hot: &HotStore) -> Result<StoreStatus, StoreError> {
    let conn = hot.connection();
    let db = dir.db_path();
    let mut status = StoreStatus { data_dir: dir.root().to_owned(), ..StoreStatus::default() };
    let mut with_suffix = db.clone().into_os_string();
    status.database_bytes = file_len(&db);
    for suffix in ["-wal", "-shm"] {
        with_suffix.push(suffix);
        status.database_bytes += file_len(Path::new(&with_suffix));
        with_suffix = db.clone().into_os_string();
    }
    status.hot_rows = hot.flow_count(crate::TimeRange::ALL)?;
    status.hot_span = hot.time_span()?;
    let err = hot.err("read the manifest");
    let (files, partitions, rows, bytes, min, max, quarantined, missing): (
        i64,
        i64,
        i64,
        i64,
        Option<i64>,
        Option<i64>,
        i64,
        i64,
    ) = conn
        .query_row(
            "SELECT
                count(*) FILTER (WHERE state = 'complete'),
                count(DISTINCT partitionStart) FILTER (WHERE state = 'complete'),
                coalesce(sum(rows) FILTER (WHERE state = 'complete'), 0),
                coalesce(sum(bytes) FILTER (WHERE state = 'complete'), 0),
                min(minTimestamp) FILTER (WHERE state = 'complete'),
                max(maxTimestamp) FILTER (WHERE state = 'complete'),
                count(*) FILTER (WHERE state = 'quarantined'),
                count(*) FILTER (WHERE state = 'missing')
             FROM exports WHERE tableName = 'flows'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)),
        )
        .map_err(err)?;
    status.cold_files = files as u64;
    status.cold_partitions = partitions as u64;
    status.cold_rows = rows as u64;
    status.cold_bytes = bytes as u64;
    status.cold_span = min.zip(max);
    // Files set aside without a manifest row count too.
    let in_quarantine = std::fs::read_dir(dir.quarantine_dir()).map(|d| d.count() as u64).unwrap_or(0);
    status.quarantined_files = (quarantined as u64).max(in_quarantine);
    status.missing_files = missing as u64;
    status.last_export = match hot.state("lastExport")? {
        Some(text) => parse_last_export(&text),
        None => None,
    };
    status.capture = capture_totals(hot)?;
    Ok(status)
}

fn parse_last_export(text: &str) -> Option<LastExport> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let int = |key: &str| value.get(key).and_then(serde_json::Value::as_i64).unwrap_or(0);
    Some(LastExport {
        at_ns: int("at"),
        files: int("files") as u64,
        rows: int("rows") as u64,
        bytes: int("bytes") as u64,
        error: value.get("error").and_then(|e| e.as_str()).map(str::to_owned),
    })
}

fn capture_totals(hot: &HotStore) -> Result<CaptureTotals, StoreError> {
    let mut stmt = hot
        .connection()
        .prepare(
            "SELECT s.session, s.time, s.events, s.lost, s.rowsStored, s.rowsNotStored, s.storeFailures, s.counters
             FROM capture_stats s
             JOIN (SELECT session, max(time) AS time FROM capture_stats GROUP BY session) latest
               USING (session, time)
             ORDER BY s.session",
        )
        .map_err(hot.err("read capture_stats"))?;
    let sessions = stmt
        .query_map([], |r| {
            let counters: String = r.get(7)?;
            Ok(SessionCounters {
                session_ns: r.get(0)?,
                time_ns: r.get(1)?,
                events: r.get::<_, i64>(2)? as u64,
                lost: r.get::<_, i64>(3)? as u64,
                rows_stored: r.get::<_, i64>(4)? as u64,
                rows_not_stored: r.get::<_, i64>(5)? as u64,
                store_failures: r.get::<_, i64>(6)? as u64,
                counters: serde_json::from_str(&counters).unwrap_or_default(),
            })
        })
        .map_err(hot.err("read capture_stats"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(hot.err("read capture_stats"))?;
    let mut totals = CaptureTotals { sessions: sessions.len() as u64, ..CaptureTotals::default() };
    for session in &sessions {
        totals.total.add(session);
    }
    totals.latest = sessions.last().cloned();
    Ok(totals)
}
