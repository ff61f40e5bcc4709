//! `open_flows`: the connections begun and not ended, with their bytes so
//! far, as the kernel sees them at the moment of the query. Only a process
//! that captures has them (`flowsql shell --capture`): its capture walks the
//! kernel's socket storage on each scan. The table has `flow_ends`' columns;
//! `timestamp` is the moment of the reading, `duration` the time since the
//! begin, `endReason` is `open`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

/// The open connections of this process's capture.
#[async_trait]
pub trait OpenFlows: Send + Sync + std::fmt::Debug {
    /// One reading: batches of the `flow_ends` schema, or why there is none.
    async fn read(&self) -> Result<Vec<RecordBatch>, String>;
}

/// Why a process without a capture has no open flows.
const NO_CAPTURE: &str = "open_flows lists the connections open now, as the kernel sees them: \
     it needs a capture in this process (flowsql shell --capture)";

/// The table provider of `open_flows`.
#[derive(Debug)]
pub struct OpenFlowsProvider {
    source: Option<Arc<dyn OpenFlows>>,
    schema: SchemaRef,
}

impl OpenFlowsProvider {
    pub fn new(source: Option<Arc<dyn OpenFlows>>) -> Self {
        OpenFlowsProvider {
            source,
            schema: crate::view_types::with_view_types(&flowsql_store::flow_ends_schema()),
        }
    }
}

#[async_trait]
impl TableProvider for OpenFlowsProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let source = self.source.as_ref().ok_or_else(|| DataFusionError::Plan(NO_CAPTURE.to_owned()))?;
        let batches = source.read().await.map_err(|message| {
            DataFusionError::Execution(format!("cannot read the open connections: {message}"))
        })?;
        let batches = batches
            .iter()
            .map(|b| crate::view_types::cast_batch(b, &self.schema))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MemorySourceConfig::try_new_exec(&[batches], Arc::clone(&self.schema), projection.cloned())?)
    }
}
