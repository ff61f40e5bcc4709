//! The cold tier: Parquet files under
//! `<data-dir>/<table>/date=YYYY-MM-DD/hour=HH/` (UTC), readable as they are
//! by pyarrow, pandas, polars, DuckDB and Spark as a hive-partitioned
//! dataset.
//!
//! Files are zstd-compressed, dictionary-encoded (except the timestamp,
//! which is DELTA_BINARY_PACKED), carry page statistics and column indexes,
//! hold rows sorted by time (declared in the footer), and use only the
//! types every engine reads as-is (Spark, Trino/Athena, ClickHouse, DuckDB,
//! pandas, polars, pyarrow), with no flag ([`file_schema`]):
//! - time columns are `TIMESTAMP(MICROS, UTC)`: Spark refuses
//!   `TIMESTAMP(NANOS)`, Trino rounds it and Snowflake misreads it. The
//!   capture's times are whole microseconds (the sub-microsecond part of a
//!   time, when there is one, is dropped: rounded down);
//! - 64-bit unsigned columns (`cgroupId`, `flowId`, byte and packet counts)
//!   are signed `INT64`: Spark reads an unsigned 64-bit column as
//!   `DECIMAL(20,0)` and Trino wraps it negative. flowsql's values of these
//!   columns stay below 2^63 (a flowId has 63 random bits), so every engine
//!   shows the same numbers flowsql does;
//! - 16- and 32-bit unsigned columns keep their `INT(16|32, unsigned)`
//!   annotation, which every engine above widens exactly (Spark to `int`
//!   and `bigint`);
//! - lists are `LIST<STRING>` with the element named `element`, as the
//!   Parquet specification says (arrow's own name is `item`).
//!
//! Files written by flowsql 0.1 (`TIMESTAMP(NANOS)`, unsigned 64-bit
//! columns, `item` lists) stay readable: [`EventTable::conform`] and the
//! query engine cast them to the logical schema by column name.
//!
//! A file is written under a dot-prefixed temporary name (which every reader
//! ignores), synced, then renamed to its final name; see [`crate::export`]
//! for how it becomes part of the tier.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
    TimestampNanosecondType, UInt64Type,
};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{KeyValue, ParquetMetaDataReader, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

use crate::StoreError;
use crate::table::EventTable;

/// Footer key naming the store that wrote a file (see
/// [`crate::Store::store_id`]).
pub const STORE_ID_KEY: &str = "flowsql.storeId";

/// Mode of the files flowsql creates: owner read-write, group read.
pub const FILE_MODE: u32 = 0o640;
/// Mode of the directories flowsql creates: owner all, group read and enter.
pub const DIR_MODE: u32 = 0o750;

/// One hour, the partition width.
pub const HOUR_NS: i64 = 3_600_000_000_000;

/// Rows per row group: large enough for fast scans (a few MB per group at
/// ~10 bytes a row), small enough that a time predicate can skip groups.
pub const ROW_GROUP_ROWS: usize = 1 << 20;

/// The zstd level of every file.
pub const ZSTD_LEVEL: i32 = 3;

/// A complete file of the cold tier, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColdFile {
    /// Absolute path.
    pub path: PathBuf,
    /// Path relative to the data directory (as in the manifest).
    pub relative: String,
    /// Start of its hourly partition, UTC ns.
    pub partition_start: i64,
    pub rows: u64,
    pub bytes: u64,
    /// Oldest and newest timestamp in the file.
    pub min_timestamp: i64,
    pub max_timestamp: i64,
}

/// The type a column of logical type `logical` has in a file (see the
/// module documentation): microsecond times, signed 64-bit integers.
pub fn file_type(logical: &DataType) -> DataType {
    match logical {
        DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
            DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
        }
        DataType::UInt64 => DataType::Int64,
        DataType::List(item) => DataType::List(Arc::new(item.as_ref().clone().with_name("element"))),
        other => other.clone(),
    }
}

/// The schema of the files of a table whose logical schema is `logical`.
pub fn file_schema(logical: &Schema) -> SchemaRef {
    let fields: Vec<Field> = logical
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(file_type(f.data_type())))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, logical.metadata().clone()))
}

/// A column of the logical schema as the file holds it: times rounded down
/// to the microsecond, 64-bit unsigned values as the same bits signed
/// (the same number below 2^63, see the module documentation).
fn to_file_column(column: &ArrayRef, file_type: &DataType) -> Result<ArrayRef, arrow::error::ArrowError> {
    if column.data_type() == file_type {
        return Ok(Arc::clone(column));
    }
    Ok(match (column.data_type(), file_type) {
        (DataType::Timestamp(TimeUnit::Nanosecond, _), DataType::Timestamp(TimeUnit::Microsecond, tz)) => {
            let micros: PrimitiveArray<TimestampMicrosecondType> =
                column.as_primitive::<TimestampNanosecondType>().unary(|ns| ns.div_euclid(1000));
            Arc::new(micros.with_timezone_opt(tz.clone()))
        }
        (DataType::UInt64, DataType::Int64) => {
            let signed: PrimitiveArray<Int64Type> =
                column.as_primitive::<UInt64Type>().unary(|v| i64::from_ne_bytes(v.to_ne_bytes()));
            Arc::new(signed)
        }
        _ => arrow::compute::cast(column, file_type)?,
    })
}

/// `batch` (of the logical schema) in `file_schema`.
pub fn to_file_batch(
    batch: &RecordBatch,
    file_schema: &SchemaRef,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(file_schema.fields())
        .map(|(column, field)| to_file_column(column, field.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(file_schema), columns)
}

/// The Parquet writer settings of `table`'s cold tier, with key-value
/// metadata for the footer.
pub fn writer_properties(table: &EventTable, metadata: Vec<KeyValue>) -> WriterProperties {
    let zstd = ZstdLevel::try_new(ZSTD_LEVEL).unwrap_or_default();
    let ts = ColumnPath::from(table.schema().field(table.time_column()).name().as_str());
    let mut builder = WriterProperties::builder();
    // The items of list columns (the names of an address) get no min/max:
    // no query prunes on them, and computing them compared every name of
    // every row (a sixth of the encoding time).
    for field in table.schema().fields() {
        if let DataType::List(_) = field.data_type() {
            let path = ColumnPath::from(vec![field.name().clone(), "list".to_owned(), "element".to_owned()]);
            builder = builder.set_column_statistics_enabled(path, EnabledStatistics::None);
        }
    }
    builder
        // Lists as the Parquet specification names them (`element`).
        .set_coerce_types(true)
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::ZSTD(zstd))
        .set_dictionary_enabled(true)
        .set_dictionary_page_size_limit(4 << 20)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_column_dictionary_enabled(ts.clone(), false)
        .set_column_encoding(ts, Encoding::DELTA_BINARY_PACKED)
        .set_key_value_metadata((!metadata.is_empty()).then_some(metadata))
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: i32::try_from(table.time_column()).unwrap_or(0),
            descending: false,
            nulls_first: false,
        }]))
        .build()
}

/// Start of the hour `ts` falls in.
pub fn hour_start(ts: i64) -> i64 {
    ts.div_euclid(HOUR_NS) * HOUR_NS
}

/// `date=YYYY-MM-DD/hour=HH` of the hour starting at `hour_start` (UTC).
pub fn partition_name(hour_start: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(hour_start).format("date=%Y-%m-%d/hour=%H").to_string()
}

/// Parses `date=YYYY-MM-DD/hour=HH` back into the hour's start.
pub fn parse_partition(date: &str, hour: &str) -> Option<i64> {
    let date = chrono::NaiveDate::parse_from_str(date.strip_prefix("date=")?, "%Y-%m-%d").ok()?;
    let hour: u32 = hour.strip_prefix("hour=")?.parse().ok()?;
    date.and_hms_opt(hour, 0, 0)?.and_utc().timestamp_nanos_opt()
}

/// Creates `dir` and its missing parents with mode 0750.
pub fn create_dir_all(dir: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| StoreError::io("create directory", dir, e))
}

/// Syncs a directory, so that a rename or removal in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io("sync directory", dir, e))
}

/// The temporary name of `final_name`: dot-prefixed (hidden from readers)
/// and not ending in `.parquet`.
pub fn temp_name(final_name: &str) -> String {
    format!(".{final_name}.tmp")
}

/// A Parquet file being written under its temporary name. Dropped without
/// [`finish`](Self::finish), it deletes the temporary file.
#[derive(Debug)]
pub struct PendingFile {
    table: EventTable,
    temp: PathBuf,
    path: PathBuf,
    writer: Option<ArrowWriter<File>>,
    file_schema: SchemaRef,
    rows: u64,
    min_ts: i64,
    max_ts: i64,
}

/// A file renamed to its final name.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
}

impl PendingFile {
    /// Starts a file of `table` at `dir/name` (creating `dir`), writing to
    /// `dir/.name.tmp`, with key-value metadata for the footer.
    pub fn create(
        table: &EventTable,
        dir: &Path,
        name: &str,
        metadata: Vec<KeyValue>,
    ) -> Result<Self, StoreError> {
        create_dir_all(dir)?;
        let temp = dir.join(temp_name(name));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&temp)
            .map_err(|e| StoreError::io("create", &temp, e))?;
        let file_schema = file_schema(table.schema());
        let mut pending = PendingFile {
            table: table.clone(),
            temp,
            path: dir.join(name),
            writer: None,
            file_schema: Arc::clone(&file_schema),
            rows: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
        };
        let writer = ArrowWriter::try_new(file, file_schema, Some(writer_properties(table, metadata)))
            .map_err(|source| StoreError::ParquetWrite { path: pending.temp.clone(), source })?;
        pending.writer = Some(writer);
        Ok(pending)
    }

    /// Appends a batch of the table's logical schema (rows must come in time
    /// order across calls).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(StoreError::ParquetWrite {
                path: self.temp.clone(),
                source: ParquetError::General("file already finished".into()),
            });
        };
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let ts = self.table.times(batch);
        // The times as the file holds them (whole microseconds).
        self.min_ts = ts.iter().map(|t| t.div_euclid(1000) * 1000).fold(self.min_ts, i64::min);
        self.max_ts = ts.iter().map(|t| t.div_euclid(1000) * 1000).fold(self.max_ts, i64::max);
        self.rows += batch.num_rows() as u64;
        let write_err = |source| StoreError::ParquetWrite { path: self.temp.clone(), source };
        let file_batch = to_file_batch(batch, &self.file_schema)
            .map_err(|e| write_err(ParquetError::External(Box::new(e))))?;
        writer.write(&file_batch).map_err(write_err)
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The final path this file will have.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the footer, syncs the file, renames it to its final name and
    /// syncs the directory.
    pub fn finish(mut self) -> Result<WrittenFile, StoreError> {
        let mut writer = self.writer.take().ok_or_else(|| StoreError::ParquetWrite {
            path: self.temp.clone(),
            source: ParquetError::General("file already finished".into()),
        })?;
        writer.finish().map_err(|source| StoreError::ParquetWrite { path: self.temp.clone(), source })?;
        let file = writer.inner();
        file.sync_all().map_err(|e| StoreError::io("sync", &self.temp, e))?;
        let bytes = file.metadata().map_err(|e| StoreError::io("stat", &self.temp, e))?.len();
        drop(writer);
        std::fs::rename(&self.temp, &self.path)
            .map_err(|e| StoreError::io("rename into place", &self.path, e))?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        Ok(WrittenFile {
            path: self.path.clone(),
            rows: self.rows,
            bytes,
            min_timestamp: self.min_ts,
            max_timestamp: self.max_ts,
        })
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        // Not finished (an error, or a panic): the temporary must not stay.
        if let Err(e) = std::fs::remove_file(&self.temp)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(file = %self.temp.display(), error = %e, "failed to remove a temporary Parquet file");
        }
    }
}

/// Calls `f` with the batches of a Parquet file of `table`, `batch_rows` at
/// a time, in the table's logical schema (a file written before a column
/// was added gets it filled in, see [`EventTable::conform`]).
pub fn for_each_batch(
    table: &EventTable,
    path: &Path,
    batch_rows: usize,
    mut f: impl FnMut(RecordBatch) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let read_err = |source| StoreError::ParquetRead { path: path.to_owned(), source };
    let file = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(read_err)?
        .with_batch_size(batch_rows.max(1))
        .build()
        .map_err(read_err)?;
    for batch in reader {
        let batch = batch.map_err(|e| read_err(ParquetError::External(Box::new(e))))?;
        f(table.conform(&batch)?)?;
    }
    Ok(())
}

/// All batches of a Parquet file of `table`.
pub fn read_file(table: &EventTable, path: &Path) -> Result<Vec<RecordBatch>, StoreError> {
    let mut batches = Vec::new();
    for_each_batch(table, path, 64 * 1024, |b| {
        batches.push(b);
        Ok(())
    })?;
    Ok(batches)
}

/// Checks that `path` is a readable Parquet file of `bytes` bytes and `rows`
/// rows whose columns are columns of `table`, its time column among them
/// (footer only; cheap).
pub fn verify(table: &EventTable, path: &Path, rows: u64, bytes: u64) -> Result<(), StoreError> {
    let mismatch = |reason: String| StoreError::ParquetMismatch { path: path.to_owned(), reason };
    let file = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
    let len = file.metadata().map_err(|e| StoreError::io("stat", path, e))?.len();
    if len != bytes {
        return Err(mismatch(format!("{len} bytes, the manifest says {bytes}")));
    }
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(|source| StoreError::ParquetRead { path: path.to_owned(), source })?;
    let found = metadata.file_metadata().num_rows();
    if u64::try_from(found).ok() != Some(rows) {
        return Err(mismatch(format!("{found} rows, the manifest says {rows}")));
    }
    let arrow_schema = parquet::arrow::parquet_to_arrow_schema(
        metadata.file_metadata().schema_descr(),
        metadata.file_metadata().key_value_metadata(),
    )
    .map_err(|source| StoreError::ParquetRead { path: path.to_owned(), source })?;
    let known = table.schema();
    if let Some(unknown) = arrow_schema.fields().iter().find(|f| known.field_with_name(f.name()).is_err()) {
        return Err(mismatch(format!("column {} is not a column of {}", unknown.name(), table.name())));
    }
    let time = known.field(table.time_column()).name();
    if arrow_schema.field_with_name(time).is_err() {
        return Err(mismatch(format!("no {time} column")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{batch_from_flows, flows_from_batch};
    use crate::schema::{flows_schema, flows_table};
    use crate::synthetic;
    use crate::test_util::TempDir;

    #[test]
    fn partitions_are_utc_hours() {
        let t = synthetic::BASE_NS + 25 * HOUR_NS + 5;
        assert_eq!(partition_name(hour_start(t)), "date=2026-01-02/hour=01");
        assert_eq!(parse_partition("date=2026-01-02", "hour=01"), Some(hour_start(t)));
        assert_eq!(partition_name(hour_start(0)), "date=1970-01-01/hour=00");
        assert_eq!(hour_start(-1), -HOUR_NS);
    }

    #[test]
    fn a_file_round_trips_and_its_temporary_is_gone() {
        let dir = TempDir::new("cold");
        let mut flows = synthetic::edge_flows();
        flows.sort_by_key(|f| f.timestamp_ns);
        let mut pending =
            PendingFile::create(flows_table(), dir.path(), "part-1.parquet", Vec::new()).expect("create");
        assert!(dir.path().join(".part-1.parquet.tmp").exists());
        pending.write(&batch_from_flows(&flows[..3])).expect("write");
        pending.write(&batch_from_flows(&flows[3..])).expect("write");
        let written = pending.finish().expect("finish");
        assert_eq!(written.rows, flows.len() as u64);
        assert!(!dir.path().join(".part-1.parquet.tmp").exists());
        verify(flows_table(), &written.path, written.rows, written.bytes).expect("verifies");
        let batches = read_file(flows_table(), &written.path).expect("read");
        assert_eq!(batches[0].schema(), flows_schema());
        let back: Vec<_> = batches.iter().flat_map(|b| flows_from_batch(b).expect("valid")).collect();
        assert_eq!(back, flows);
        assert!(verify(flows_table(), &written.path, written.rows + 1, written.bytes).is_err());
    }

    #[test]
    fn an_abandoned_file_leaves_no_temporary() {
        let dir = TempDir::new("coldabandon");
        let mut pending =
            PendingFile::create(flows_table(), dir.path(), "part-2.parquet", Vec::new()).expect("create");
        pending.write(&batch_from_flows(&synthetic::edge_flows())).expect("write");
        drop(pending);
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
    }
}
