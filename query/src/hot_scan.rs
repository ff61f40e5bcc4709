//! Scanning the hot tier: an execution plan that reads a snapshot's hot
//! batches lazily, one at a time, decoding only the columns the query asks
//! for (a `count(*)` decodes nothing: a batch's row count is in its
//! listing). The batches are split between partitions, so each core reads
//! its share.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, Statistics};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, StatisticsArgs,
};
use flowsql_store::{BatchMeta, HotReader};
use futures::StreamExt as _;

/// See the module documentation.
#[derive(Debug)]
pub struct HotScanExec {
    reader: Arc<HotReader>,
    /// The batches of each partition.
    partitions: Vec<Vec<BatchMeta>>,
    /// Positions of the columns read, in the table's schema (`None`: all).
    columns: Option<Vec<usize>>,
    /// The output schema: those columns, as the query sees them (views).
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl HotScanExec {
    /// Reads `batches` through `reader`, split into at most `partitions`
    /// partitions of similar row counts; `schema` is the projected output
    /// schema.
    pub fn new(
        reader: Arc<HotReader>,
        batches: &[BatchMeta],
        partitions: usize,
        columns: Option<Vec<usize>>,
        schema: SchemaRef,
    ) -> Self {
        let count = partitions.clamp(1, batches.len().max(1));
        let mut split: Vec<(u64, Vec<BatchMeta>)> = (0..count).map(|_| (0, Vec::new())).collect();
        let mut by_size: Vec<&BatchMeta> = batches.iter().collect();
        by_size.sort_by_key(|b| std::cmp::Reverse(b.rows));
        for batch in by_size {
            if let Some(part) = split.iter_mut().min_by_key(|(rows, _)| *rows) {
                part.0 += batch.rows;
                part.1.push(batch.clone());
            }
        }
        let partitions: Vec<Vec<BatchMeta>> = split.into_iter().map(|(_, b)| b).collect();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        HotScanExec { reader, partitions, columns, schema, properties }
    }

    fn rows(&self, partition: Option<usize>) -> u64 {
        match partition {
            Some(p) => self.partitions.get(p).map_or(0, |b| b.iter().map(|m| m.rows).sum()),
            None => self.partitions.iter().flatten().map(|m| m.rows).sum(),
        }
    }
}

impl DisplayAs for HotScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let batches: usize = self.partitions.iter().map(Vec::len).sum();
        write!(
            f,
            "HotScanExec: batches={batches}, rows={}, partitions={}",
            self.rows(None),
            self.partitions.len()
        )
    }
}

impl ExecutionPlan for HotScanExec {
    fn name(&self) -> &str {
        "HotScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal("HotScanExec has no children".into()))
        }
    }

    fn execute(&self, partition: usize, _context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let batches =
            self.partitions.get(partition).cloned().ok_or_else(|| {
                DataFusionError::Internal(format!("HotScanExec has no partition {partition}"))
            })?;
        let reader = Arc::clone(&self.reader);
        let columns = self.columns.clone();
        let schema = Arc::clone(&self.schema);
        let out_schema = Arc::clone(&schema);
        // Straight into the query's types (string views made from the
        // stored dictionaries), not decoded to strings and cast again.
        let stream = futures::stream::iter(batches).map(move |meta| {
            reader
                .read_as(&meta, columns.as_deref(), &out_schema)
                .map_err(|e| DataFusionError::External(Box::new(e)))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn statistics_from_inputs(
        &self,
        _inputs: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let mut statistics = Statistics::new_unknown(&self.schema);
        statistics.num_rows =
            Precision::Exact(usize::try_from(self.rows(args.partition())).unwrap_or(usize::MAX));
        Ok(Arc::new(statistics))
    }
}
