//! The rows a capturing process has handed to its writer but not committed
//! yet, so that the same process's queries see flows at once (`flowsql shell
//! --capture`), each exactly once.
//!
//! The writer adds each row it receives and, holding this buffer's lock for
//! the whole SQLite commit, removes the rows it committed (or lost). A query
//! takes its snapshot under the same lock: it starts its SQLite read
//! transaction (whose first read fixes what it sees) and copies the pending
//! rows. So a row is either pending and not in the query's SQLite snapshot,
//! or committed and in it: never both, never neither.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arrow::record_batch::RecordBatch;
use flowsql_event::FlowBegin;

use crate::flows::batch_from_flows;
use crate::{StoreError, TimeRange};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct LiveRows {
    pending: Mutex<VecDeque<FlowBegin>>,
}

impl LiveRows {
    pub fn new() -> Arc<LiveRows> {
        Arc::new(LiveRows::default())
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, VecDeque<FlowBegin>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rows waiting for a commit.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `begin` (which starts the reader's SQLite snapshot) while no
    /// commit can happen, then returns the pending flows of `range`.
    pub fn snapshot(
        &self,
        range: TimeRange,
        begin: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<Vec<RecordBatch>, StoreError> {
        let pending = self.lock();
        begin()?;
        let flows: Vec<&FlowBegin> = pending.iter().filter(|f| range.contains(f.timestamp_ns)).collect();
        if flows.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![batch_from_flows(flows)])
    }
}
