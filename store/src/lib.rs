//! The store: captured flows as Arrow [`RecordBatch`]es, kept in a SQLite
//! hot tier and moved, exactly once, to a Parquet cold tier (DESIGN.md
//! section 4).
//!
//! ```text
//! <data-dir>/flowsql.db                                SQLite (WAL): hot flows, domains,
//!                                                      exports manifest, capture_stats
//! <data-dir>/flows/date=YYYY-MM-DD/hour=HH/*.parquet   cold flows (only files in the manifest)
//! <data-dir>/quarantine/                               corrupt files set aside, never read
//! ```
//!
//! - [`schema`] defines the one Arrow schema of `flows` and of `domains`.
//! - [`batch`] turns [`FlowBegin`](flowsql_event::FlowBegin)s into batches
//!   and back.
//! - [`hot`] is the SQLite tier, [`cold`] the Parquet files, [`export`] the
//!   exactly-once move between them (and retention, and copies for others).
//! - [`writer`] is the capture's store writer thread, [`schedule`] its
//!   periodic export.
//! - [`Store`] is the data directory as a whole: open it, then read, export
//!   or ask for its [`status`](Store::status).

pub mod batch;
pub mod cold;
pub mod domains;
pub mod export;
pub mod hot;
mod json_list;
pub mod latency;
pub mod live;
pub mod migrations;
pub mod schedule;
pub mod schema;
pub mod status;
pub mod synthetic;
pub mod writer;

mod error;
mod store;
#[cfg(test)]
mod test_util;

pub use arrow::record_batch::RecordBatch;
pub use batch::{FlowBatcher, FlowColumns, flows_from_batch};
pub use cold::ColdFile;
pub use error::StoreError;
pub use export::{ExportEvent, ExportOptions, ExportReport, RetentionReport};
pub use hot::{HotStore, MemoryUse};
pub use live::LiveRows;
/// The SQLite binding the hot tier uses, for code that runs inside a write
/// transaction ([`HotStore::with_write_transaction`]).
pub use rusqlite;
pub use schedule::{ExportSchedule, ScheduledExport};
pub use schema::{domains_schema, flows_schema};
pub use status::StoreStatus;
pub use store::{DataDir, Store};
pub use writer::{CaptureCounters, StoreWriter, WriterConfig, WriterCounters};

/// A half-open time range `[since, until)` in UTC nanoseconds since the
/// epoch; `None` leaves that side open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
}

impl TimeRange {
    /// Every time.
    pub const ALL: TimeRange = TimeRange { since_ns: None, until_ns: None };

    pub fn new(since_ns: Option<i64>, until_ns: Option<i64>) -> Self {
        TimeRange { since_ns, until_ns }
    }

    /// The lower bound, `i64::MIN` when open.
    pub fn start(&self) -> i64 {
        self.since_ns.unwrap_or(i64::MIN)
    }

    /// The (exclusive) upper bound, `i64::MAX` when open.
    pub fn end(&self) -> i64 {
        self.until_ns.unwrap_or(i64::MAX)
    }

    pub fn contains(&self, ts: i64) -> bool {
        ts >= self.start() && ts < self.end()
    }

    /// Whether `[start, end)` and this range share any instant.
    pub fn overlaps(&self, start: i64, end: i64) -> bool {
        start < self.end() && end > self.start()
    }
}

/// The current time in UTC nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}
