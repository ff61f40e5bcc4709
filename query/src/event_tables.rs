//! The event tables (`flows`): every row exactly once, from the cold
//! Parquet tier, the hot tier's batches and, in a capturing process, the rows
//! not committed yet.
//!
//! A scan takes one snapshot of the store ([`flowsql_store::TableSnapshot`]):
//! inside a single SQLite read transaction it lists the complete cold files
//! from the manifest and the hot batches, and it reads those batches later in
//! the same transaction. An export moves rows from hot to cold in one
//! transaction (manifest insert and batch removal together), so the
//! snapshot sees each row in exactly one tier whatever runs concurrently.
//! Files are read only when the manifest lists them, never by listing
//! directories, so a file an export renamed but has not committed is not
//! counted.
//!
//! The filters' time range selects the cold files (by the manifest's min and
//! max timestamps) and the hot batches (by their time spans); the filters
//! also go to the Parquet reader as a predicate, which skips row groups by
//! their statistics.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{DataFusionError, Result, ScalarValue, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::FileGroup;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use flowsql_store::{ColdFile, EventTable, Store, StoreError, TableSnapshot, TimeRange};

use crate::file_columns::cold_scan;
use crate::hot_scan::HotScanExec;
use crate::live::LiveFlows;
use crate::time_range;

/// The store a session reads, shared by its tables.
#[derive(Debug)]
pub struct StoreReader {
    store: Mutex<Store>,
}

fn store_error(e: StoreError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl StoreReader {
    pub fn new(store: Store) -> Self {
        StoreReader { store: Mutex::new(store) }
    }

    /// Runs `f` on the store.
    pub fn with<T>(&self, f: impl FnOnce(&Store) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let store = self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&store)
    }

    /// A snapshot of `table` over `range`, and the uncommitted rows of
    /// `live` as of the same instant: each row once.
    pub fn snapshot(
        &self,
        table: &str,
        range: TimeRange,
        live: Option<&dyn LiveFlows>,
    ) -> Result<(TableSnapshot, Vec<RecordBatch>), StoreError> {
        self.with(|store| match live {
            None => Ok((store.snapshot(table, range)?, Vec::new())),
            Some(live) => {
                // The snapshot's first read fixes what it sees: take it
                // while the writer cannot commit.
                let mut snapshot = None;
                let batches = live.snapshot(table, range, &mut || {
                    snapshot = Some(store.snapshot(table, range)?);
                    Ok(())
                })?;
                let snapshot = snapshot.ok_or(StoreError::ThreadFailed { thread: "live snapshot" })?;
                Ok((snapshot, batches))
            }
        })
    }
}

/// The table provider of an event table.
#[derive(Debug)]
pub struct EventTableProvider {
    table: EventTable,
    schema: SchemaRef,
    reader: Arc<StoreReader>,
    live: Option<Arc<dyn LiveFlows>>,
}

impl EventTableProvider {
    /// `table` as the query sees it; `live` are the uncommitted rows of this
    /// process's capture, if it captures.
    pub fn new(table: EventTable, reader: Arc<StoreReader>, live: Option<Arc<dyn LiveFlows>>) -> Self {
        let schema = crate::view_types::with_view_types(table.schema());
        EventTableProvider { table, schema, reader, live }
    }
}

/// What the manifest knows of a file, as the planner's statistics: its rows
/// (so a join builds its hash table on the smaller side) and its time span.
fn file_statistics(file: &ColdFile, schema: &SchemaRef, time_column: usize) -> Statistics {
    let mut columns = Statistics::unknown_column(schema);
    let utc = Some(Arc::<str>::from("UTC"));
    if let Some(timestamp) = columns.get_mut(time_column) {
        timestamp.min_value =
            Precision::Exact(ScalarValue::TimestampNanosecond(Some(file.min_timestamp), utc.clone()));
        timestamp.max_value =
            Precision::Exact(ScalarValue::TimestampNanosecond(Some(file.max_timestamp), utc));
        timestamp.null_count = Precision::Exact(0);
    }
    Statistics {
        num_rows: Precision::Exact(usize::try_from(file.rows).unwrap_or(usize::MAX)),
        // Unknown: the file's compressed size is not what a join holds in
        // memory (10 bytes a flow on disk, ~100 decoded), and a join that
        // compared it with another table's in-memory size would build its
        // hash table on millions of flows instead of on the domains.
        total_byte_size: Precision::Absent,
        column_statistics: columns,
    }
}

/// Splits files into at most `groups` groups of similar total size, so that
/// each core scans its share. `statistics[i]` is `files[i]`'s.
fn file_groups(files: &[ColdFile], statistics: &[Arc<Statistics>], groups: usize) -> Vec<FileGroup> {
    let groups = groups.clamp(1, files.len().max(1));
    let mut buckets: Vec<(u64, Vec<PartitionedFile>)> = (0..groups).map(|_| (0, Vec::new())).collect();
    let mut by_size: Vec<(&ColdFile, &Arc<Statistics>)> = files.iter().zip(statistics).collect();
    by_size.sort_by_key(|(f, _)| std::cmp::Reverse(f.bytes));
    for (file, stats) in by_size {
        if let Some(bucket) = buckets.iter_mut().min_by_key(|(bytes, _)| *bytes) {
            bucket.0 += file.bytes;
            let partitioned = PartitionedFile::new(file.path.to_string_lossy(), file.bytes)
                .with_statistics(Arc::clone(stats));
            bucket.1.push(partitioned);
        }
    }
    buckets.into_iter().filter(|(_, f)| !f.is_empty()).map(|(_, f)| FileGroup::new(f)).collect()
}

#[async_trait]
impl TableProvider for EventTableProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Used to choose files, rows and row groups; applied again after.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let time_column = self.table.schema().field(self.table.time_column()).name();
        let range = time_range::from_filters(filters, time_column);
        let (snapshot, live) =
            self.reader.snapshot(self.table.name(), range, self.live.as_deref()).map_err(store_error)?;
        let cold = snapshot.cold_files();
        let hot = snapshot.hot_batches();
        tracing::debug!(
            table = self.table.name(),
            ?range,
            files = cold.len(),
            batches = hot.len(),
            live = live.len(),
            "scan"
        );

        let projected = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => Arc::clone(&self.schema),
        };
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !cold.is_empty() {
            let per_file: Vec<Arc<Statistics>> = cold
                .iter()
                .map(|file| Arc::new(file_statistics(file, &self.schema, self.table.time_column())))
                .collect();
            let groups = file_groups(cold, &per_file, state.config().target_partitions());
            // The table's statistics (the planner reads these, not the
            // files'): its rows let a join build on the smaller side.
            let statistics = Statistics::try_merge_iter(per_file.iter().map(Arc::as_ref), &self.schema)?;
            inputs.push(cold_scan(
                state,
                &self.schema,
                ObjectStoreUrl::local_filesystem(),
                groups,
                statistics,
                projection,
                filters,
                limit,
            )?);
        }
        if !hot.is_empty() {
            inputs.push(Arc::new(HotScanExec::new(
                snapshot.reader(),
                hot,
                state.config().target_partitions(),
                projection.cloned(),
                Arc::clone(&projected),
            )));
        }
        if !live.is_empty() {
            let batches = live
                .iter()
                .map(|b| crate::view_types::cast_batch(b, &self.schema))
                .collect::<Result<Vec<_>, _>>()?;
            inputs.push(MemorySourceConfig::try_new_exec(
                &[batches],
                Arc::clone(&self.schema),
                projection.cloned(),
            )?);
        }
        if inputs.is_empty() {
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        UnionExec::try_new(inputs)
    }
}
