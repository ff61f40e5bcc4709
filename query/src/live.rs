//! Rows a capturing process holds that are not committed to the store yet
//! (`flows` and `flow_ends`).
//!
//! `flowsql shell --capture` records in-process; its queries must see flows
//! at once, and each flow exactly once even while the writer commits. The
//! store writer's uncommitted rows, [`flowsql_store::LiveRows`], implement
//! [`LiveFlows`]: while a snapshot is taken the writer cannot commit, and
//! the query opens its SQLite read transaction inside that window. So a row
//! is either still live (and not yet in SQLite's snapshot) or committed (and
//! in it), never both, never neither.

use datafusion::arrow::record_batch::RecordBatch;
use flowsql_store::{StoreError, TimeRange};

/// The uncommitted rows of a capturing process.
pub trait LiveFlows: Send + Sync + std::fmt::Debug {
    /// Calls `begin` (which starts the store's read snapshot) while no
    /// commit can happen, then returns the uncommitted rows of the event
    /// table `table` in `range` as of that moment, as batches of its schema.
    fn snapshot(
        &self,
        table: &str,
        range: TimeRange,
        begin: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<Vec<RecordBatch>, StoreError>;
}

/// The store writer's uncommitted rows (a capturing process's own).
impl LiveFlows for flowsql_store::LiveRows {
    fn snapshot(
        &self,
        table: &str,
        range: TimeRange,
        begin: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<Vec<RecordBatch>, StoreError> {
        flowsql_store::LiveRows::snapshot(self, table, range, begin)
    }
}
