//! The capture's counters over time: the `capture_stats` table of
//! `flowsql.db` (migrations/0001). Each capture process (a session, named
//! by its start in UTC ns) adds a row of its cumulative counters every few
//! seconds and when it stops. This module owns that table's SQL.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder, TimestampNanosecondBuilder, UInt64Builder};
use arrow::record_batch::RecordBatch;
use rusqlite::{Connection, params};

use crate::StoreError;
use crate::schema::{UTC, capture_stats_schema};

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

    pub(crate) fn add(&mut self, other: &SessionCounters) {
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

/// Records `counters` (their `time_ns` and `session_ns`) as a row.
pub(crate) fn record(conn: &Connection, counters: &SessionCounters) -> rusqlite::Result<()> {
    let named = serde_json::to_string(&counters.counters).unwrap_or_else(|_| "{}".to_owned());
    conn.prepare_cached(
        "INSERT OR REPLACE INTO capture_stats
           (time, session, events, lost, rowsStored, rowsNotStored, storeFailures, counters)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        counters.time_ns,
        counters.session_ns,
        counters.events as i64,
        counters.lost as i64,
        counters.rows_stored as i64,
        counters.rows_not_stored as i64,
        counters.store_failures as i64,
        named
    ])
    .map(|_| ())
}

/// The latest row of every session, oldest session first.
pub(crate) fn latest_per_session(conn: &Connection) -> rusqlite::Result<Vec<SessionCounters>> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.session, s.time, s.events, s.lost, s.rowsStored, s.rowsNotStored, s.storeFailures, s.counters
         FROM capture_stats s
         JOIN (SELECT session, max(time) AS time FROM capture_stats GROUP BY session) latest
           USING (session, time)
         ORDER BY s.session",
    )?;
    let rows = stmt.query_map([], |r| {
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
    })?;
    rows.collect()
}

/// Every row, oldest first, as one batch of [`capture_stats_schema`].
pub(crate) fn all(conn: &Connection) -> Result<RecordBatch, StoreError> {
    let path = conn.path().unwrap_or("flowsql.db").to_owned();
    let sqlite = |e| StoreError::sqlite("read capture_stats", &path, e);
    let mut stmt = conn
        .prepare_cached(
            "SELECT time, session, events, lost, rowsStored, rowsNotStored, storeFailures, counters
             FROM capture_stats ORDER BY time",
        )
        .map_err(sqlite)?;
    let mut time = TimestampNanosecondBuilder::new().with_timezone(UTC);
    let mut session = TimestampNanosecondBuilder::new().with_timezone(UTC);
    let mut counts: Vec<UInt64Builder> = (0..5).map(|_| UInt64Builder::new()).collect();
    let mut named = StringBuilder::new();
    let mut rows = stmt.query([]).map_err(sqlite)?;
    while let Some(row) = rows.next().map_err(sqlite)? {
        time.append_value(row.get(0).map_err(sqlite)?);
        session.append_value(row.get(1).map_err(sqlite)?);
        for (i, builder) in counts.iter_mut().enumerate() {
            let value: i64 = row.get(2 + i).map_err(sqlite)?;
            builder.append_value(value.max(0) as u64);
        }
        named.append_value(row.get::<_, String>(7).map_err(sqlite)?);
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(time.finish()), Arc::new(session.finish())];
    columns.extend(counts.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(Arc::new(named.finish()));
    RecordBatch::try_new(capture_stats_schema(), columns)
        .map_err(|e| StoreError::InvalidBatch { table: "capture_stats", reason: e.to_string() })
}
