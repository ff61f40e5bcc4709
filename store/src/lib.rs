//! The store: events as Arrow [`RecordBatch`]es, kept in a SQLite hot tier
//! and moved, exactly once, to a Parquet cold tier (docs/architecture.md,
//! "The store").
//!
//! ```text
//! <data-dir>/flowsql.db                                  SQLite (WAL): hot batches, manifest,
//!                                                        domains, capture_stats, store_state
//! <data-dir>/<table>/date=YYYY-MM-DD/hour=HH/*.parquet   cold events (only files in the manifest)
//! <data-dir>/quarantine/                                 corrupt files set aside, never read
//! ```
//!
//! From the bottom up:
//! - plain types: [`table`] (what an event table is), [`schema`] (flowsql's
//!   tables), [`dir`] (the paths and the export lock), [`ipc`] (a batch as
//!   bytes), [`flows`] (flows records into batches and back);
//! - the database: [`database`] (opening it, [`migrations`]) and one module
//!   per table that owns its SQL: [`hot`] (`batches`, the hot tier),
//!   [`manifest`] (`exports`), [`domains`], [`stats`] (`capture_stats`),
//!   [`state`] (`store_state`);
//! - the jobs: [`cold`] (Parquet files), [`merge`] (hot batches in time
//!   order), [`export`] (the exactly-once move), [`recovery`],
//!   [`retention`], [`copy`] (copies for others), [`snapshot`] (consistent
//!   reads for queries), [`uploads`] (what is uploaded to object storage),
//!   [`status`], [`writer`] (the capture's writer
//!   thread) and [`schedule`] (its periodic export);
//! - on top, [`Store`]: the data directory as a whole.

pub mod cold;
pub mod copy;
pub mod database;
pub mod dir;
pub mod domains;
pub mod ends;
pub mod export;
pub mod flows;
pub mod hot;
pub mod ipc;
mod json_list;
pub mod latency;
pub mod live;
pub mod manifest;
pub mod merge;
pub mod migrations;
pub mod recovery;
pub mod retention;
pub mod schedule;
pub mod schema;
pub mod snapshot;
pub mod state;
pub mod stats;
pub mod status;
#[cfg(any(test, feature = "test-support"))]
pub mod synthetic;
pub mod table;
mod upgrade;
pub mod uploads;
pub mod writer;

mod error;
mod store;
#[cfg(any(test, feature = "test-support"))]
pub mod test_util;

pub use arrow;
pub use arrow::record_batch::RecordBatch;
pub use cold::ColdFile;
pub use database::MemoryUse;
pub use dir::DataDir;
pub use ends::{EndBatcher, EndColumns, batch_from_ends, ends_from_batch};
pub use error::StoreError;
pub use export::{ExportEvent, ExportOptions, ExportReport};
pub use flows::{Batcher, FlowBatcher, FlowColumns, RowColumns, batch_from_flows, flows_from_batch};
pub use hot::{BatchMeta, HotSummary};
pub use live::LiveRows;
pub use recovery::RecoveryReport;
pub use retention::RetentionReport;
pub use schedule::{ExportSchedule, ScheduledExport};
pub use schema::{
    capture_stats_schema, domains_schema, event_tables, flow_ends_schema, flow_ends_table, flows_schema,
    flows_table,
};
pub use snapshot::{HotReader, TableSnapshot};
pub use status::StoreStatus;
pub use store::Store;
pub use table::EventTable;
pub use uploads::{LastUpload, PendingUpload, UploadStatus};
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
