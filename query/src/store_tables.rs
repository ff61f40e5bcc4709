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
use datafusion::arrow::array::{ArrayRef, StringBuilder, TimestampNanosecondBuilder, UInt64Builder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use flowsql_store::{StoreError, TimeRange};

use crate::flows::StoreReader;

/// Which SQLite table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreTable {
    Domains,
    CaptureStats,
}

fn utc_ns() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// The Arrow schema of `capture_stats`.
pub fn capture_stats_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("time", utc_ns(), false),
        Field::new("session", utc_ns(), false),
        Field::new("events", DataType::UInt64, false),
        Field::new("lost", DataType::UInt64, false),
        Field::new("rowsStored", DataType::UInt64, false),
        Field::new("rowsNotStored", DataType::UInt64, false),
        Field::new("storeFailures", DataType::UInt64, false),
        Field::new("counters", DataType::Utf8, false),
    ]))
}

fn read_capture_stats(store: &flowsql_store::Store) -> Result<Vec<RecordBatch>, StoreError> {
    {
        let conn = store.hot().connection();
        let sqlite =
            |e| StoreError::Sqlite { action: "read capture_stats", path: store.dir().db_path(), source: e };
        let mut stmt = conn
            .prepare(
                "SELECT time, session, events, lost, rowsStored, rowsNotStored, storeFailures, counters
                 FROM capture_stats ORDER BY time",
            )
            .map_err(sqlite)?;
        let mut time = TimestampNanosecondBuilder::new().with_timezone("UTC");
        let mut session = TimestampNanosecondBuilder::new().with_timezone("UTC");
        let mut counts: Vec<UInt64Builder> = (0..5).map(|_| UInt64Builder::new()).collect();
        let mut counters = StringBuilder::new();
        let mut rows = stmt.query([]).map_err(sqlite)?;
        while let Some(row) = rows.next().map_err(sqlite)? {
            time.append_value(row.get(0).map_err(sqlite)?);
            session.append_value(row.get(1).map_err(sqlite)?);
            for (i, builder) in counts.iter_mut().enumerate() {
                let value: i64 = row.get(2 + i).map_err(sqlite)?;
                builder.append_value(value.max(0) as u64);
            }
            counters.append_value(row.get::<_, String>(7).map_err(sqlite)?);
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(time.finish()), Arc::new(session.finish())];
        columns.extend(counts.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.push(Arc::new(counters.finish()));
        let batch = RecordBatch::try_new(capture_stats_schema(), columns)
            .map_err(|e| StoreError::InvalidBatch(e.to_string()))?;
        Ok(vec![batch])
    }
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
            StoreTable::CaptureStats => capture_stats_schema(),
        };
        let schema = crate::view_types::with_view_types(&stored);
        StoreTableProvider { table, schema, reader, cache: Mutex::new(None) }
    }

    /// The table's rows, from the cache when the database has not changed.
    fn batches(&self) -> Result<Vec<RecordBatch>, StoreError> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        self.reader.read(|store| {
            let conn = store.hot().connection();
            let version: i64 =
                conn.pragma_query_value(None, "data_version", |row| row.get(0)).map_err(|e| {
                    StoreError::Sqlite { action: "read data_version", path: store.dir().db_path(), source: e }
                })?;
            if let Some((cached, batches)) = cache.as_ref()
                && *cached == version
            {
                return Ok(batches.clone());
            }
            let batches = match self.table {
                StoreTable::Domains => {
                    flowsql_store::domains::domains_in_range(store.hot(), TimeRange::ALL, 64 * 1024)?
                }
                StoreTable::CaptureStats => read_capture_stats(store)?,
            };
            let batches = batches
                .iter()
                .map(|b| crate::view_types::cast_batch(b, &self.schema))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::InvalidBatch(e.to_string()))?;
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
