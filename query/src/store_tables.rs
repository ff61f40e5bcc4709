//! The small tables that live only in SQLite: `domains` (what DNS answers
//! taught, see migrations/0002) and `capture_stats` (the capture's counters
//! over time, including loss).
//!
//! A scan reads the table again only when the database changed since the
//! last one (SQLite's `PRAGMA data_version` moves when another connection
//! commits); otherwise it reuses the batches it read, so joins with
//! `domains` do not pay for SQLite on every query.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use flowsql_store::{StoreError, TimeRange};

use crate::event_tables::StoreReader;

/// Which SQLite table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreTable {
    Domains,
    CaptureStats,
}

/// A table provider over one of the SQLite-only tables.
#[derive(Debug)]
pub struct StoreTableProvider {
    table: StoreTable,
    schema: SchemaRef,
    reader: Arc<StoreReader>,
    /// The batches last read, and the `data_version` they were read at.
    cache: Mutex<Option<(i64, Vec<RecordBatch>)>>,
}

impl StoreTableProvider {
    pub fn new(table: StoreTable, reader: Arc<StoreReader>) -> Self {
        let stored = match table {
            StoreTable::Domains => flowsql_store::domains_schema(),
            StoreTable::CaptureStats => flowsql_store::capture_stats_schema(),
        };
        let schema = crate::view_types::with_view_types(&stored);
        StoreTableProvider { table, schema, reader, cache: Mutex::new(None) }
    }

    /// SQLite's `data_version` now: it moves when another connection
    /// commits, so results derived from this table can be kept while it
    /// stays the same.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.reader.with(|store| store.data_version())
    }

    /// The table's rows, from the cache when the database has not changed.
    fn batches(&self) -> Result<Vec<RecordBatch>, StoreError> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        self.reader.with(|store| {
            let version = store.data_version()?;
            if let Some((cached, batches)) = cache.as_ref()
                && *cached == version
            {
                return Ok(batches.clone());
            }
            let batches = match self.table {
                StoreTable::Domains => store.domains(TimeRange::ALL)?,
                StoreTable::CaptureStats => vec![store.capture_stats()?],
            };
            let batches = batches
                .iter()
                .map(|b| crate::view_types::cast_batch(b, &self.schema))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::InvalidBatch { table: "query", reason: e.to_string() })?;
            *cache = Some((version, batches.clone()));
            Ok(batches)
        })
    }
}

#[async_trait]
impl TableProvider for StoreTableProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batches = self.batches().map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(MemorySourceConfig::try_new_exec(&[batches], Arc::clone(&self.schema), projection.cloned())?)
    }
}
