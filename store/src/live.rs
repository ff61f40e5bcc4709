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
use flowsql_event::{FlowBegin, FlowEnd};

use crate::ends::batch_from_ends;
use crate::flows::batch_from_flows;
use crate::schema::{flow_ends_table, flows_table};
use crate::{StoreError, TimeRange};

/// The rows of each table waiting for a commit, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) flows: VecDeque<FlowBegin>,
    pub(crate) ends: VecDeque<FlowEnd>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct LiveRows {
    pending: Mutex<Pending>,
}

impl LiveRows {
    pub fn new() -> Arc<LiveRows> {
        Arc::new(LiveRows::default())
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rows waiting for a commit.
    pub fn len(&self) -> usize {
        let pending = self.lock();
        pending.flows.len() + pending.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `begin` (which starts the reader's SQLite snapshot) while no
    /// commit can happen, then returns the pending rows of `table` (`flows`
    /// or `flow_ends`) in `range`.
    pub fn snapshot(
        &self,
        table: &str,
        range: TimeRange,
        begin: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<Vec<RecordBatch>, StoreError> {
        let pending = self.lock();
        begin()?;
        if table == flows_table().name() {
            let flows: Vec<&FlowBegin> =
                pending.flows.iter().filter(|f| range.contains(f.timestamp_ns)).collect();
            if !flows.is_empty() {
                return Ok(vec![batch_from_flows(flows)]);
            }
        } else if table == flow_ends_table().name() {
            let ends: Vec<&FlowEnd> =
                pending.ends.iter().filter(|e| range.contains(e.timestamp_ns)).collect();
            if !ends.is_empty() {
                return Ok(vec![batch_from_ends(ends)]);
            }
        }
        Ok(Vec::new())
    }
}
