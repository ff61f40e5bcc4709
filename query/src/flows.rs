//! The `flows` table: every flow exactly once, from the cold Parquet tier,
//! the hot SQLite tier and, in a capturing process, the rows not committed
//! yet.
//!
//! A scan takes one snapshot of the store: inside a single SQLite read
//! transaction it lists the complete cold files from the manifest and reads
//! the hot rows. An export moves rows from hot to cold in one transaction
//! (manifest insert and row delete together), so the snapshot sees each row
//! in exactly one tier whatever runs concurrently. Files are read only when
//! the manifest lists them, never by listing directories, so a file an
//! export renamed but has not committed is not counted.
//!
//! The filters' time range selects the cold files (by the manifest's min and
//! max timestamps) and the hot rows (through the timestamp index); the
//! filters also go to the Parquet reader as a predicate, which skips row
//! groups by their statistics.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use flowsql_store::{ColdFile, Store, StoreError, TimeRange};

use crate::live::LiveFlows;
use crate::time_range;

/// Rows per batch read from the hot tier.
const HOT_BATCH_ROWS: usize = 64 * 1024;

/// What one scan reads: the cold files, and the hot and live rows.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub cold: Vec<ColdFile>,
    pub batches: Vec<RecordBatch>,
}

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

    /// Runs `f` on the store inside one read transaction.
    pub fn read<T>(&self, f: impl FnOnce(&Store) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let store = self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let conn = store.hot().connection();
        let begin = conn.execute_batch("BEGIN DEFERRED");
        begin.map_err(|e| StoreError::Sqlite {
            action: "start a read",
            path: store.dir().db_path(),
            source: e,
        })?;
        let result = f(&store);
        // A read transaction has nothing to keep: end it either way.
        let _ = conn.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" });
        result
    }

    /// The cold files, hot rows and live rows of `range`, each flow once.
    pub fn snapshot(&self, range: TimeRange, live: Option<&dyn LiveFlows>) -> Result<Snapshot, StoreError> {
        self.read(|store| {
            let mut snapshot = Snapshot::default();
            match live {
                None => snapshot.cold = store.cold_files(range)?,
                Some(live) => {
                    // The first read of the transaction fixes SQLite's
                    // snapshot: do it while the writer cannot commit.
                    let mut cold = None;
                    snapshot.batches = live.snapshot(range, &mut || {
                        cold = Some(store.cold_files(range)?);
                        Ok(())
                    })?;
                    snapshot.cold = cold.unwrap_or_default();
                }
            }
            snapshot.batches.extend(store.hot().flows_in_range(range, HOT_BATCH_ROWS)?);
            Ok(snapshot)
        })
    }
}

/// The `flows` table provider.
#[derive(Debug)]
pub struct FlowsTable {
    schema: SchemaRef,
    reader: Arc<StoreReader>,
    live: Option<Arc<dyn LiveFlows>>,
}

impl FlowsTable {
    pub fn new(reader: Arc<StoreReader>, live: Option<Arc<dyn LiveFlows>>) -> Self {
        let schema = crate::view_types::with_view_types(&flowsql_store::flows_schema());
        FlowsTable { schema, reader, live }
    }
}

/// What the manifest knows of a file, as the planner's statistics: its rows
/// (so a join builds its hash table on the smaller side) and its time span.
fn file_statistics(file: &ColdFile, schema: &SchemaRef) -> Statistics {
    let mut columns = Statistics::unknown_column(schema);
    let utc = Some(Arc::<str>::from("UTC"));
    if let Some(timestamp) = columns.first_mut() {
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
impl TableProvider for FlowsTable {
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
        let range = time_range::from_filters(filters);
        let snapshot = self.reader.snapshot(range, self.live.as_deref()).map_err(store_error)?;
        tracing::debug!(?range, files = snapshot.cold.len(), batches = snapshot.batches.len(), "flows scan");

        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !snapshot.cold.is_empty() {
            let mut source = ParquetSource::new(Arc::clone(&self.schema));
            if let Some(filter) = conjunction(filters.iter().cloned()) {
                let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
                source = source.with_predicate(state.create_physical_expr(filter, &df_schema)?);
            }
            let per_file: Vec<Arc<Statistics>> =
                snapshot.cold.iter().map(|file| Arc::new(file_statistics(file, &self.schema))).collect();
            let groups = file_groups(&snapshot.cold, &per_file, state.config().target_partitions());
            // The table's statistics (the planner reads these, not the
            // files'): its rows let a join build on the smaller side.
            let statistics = Statistics::try_merge_iter(per_file.iter().map(Arc::as_ref), &self.schema)?;
            let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
                .with_file_groups(groups)
                .with_statistics(statistics)
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            inputs.push(DataSourceExec::from_data_source(config));
        }
        if !snapshot.batches.is_empty() {
            let batches = snapshot
                .batches
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
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => Arc::clone(&self.schema),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        UnionExec::try_new(inputs)
    }
}
