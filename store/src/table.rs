//! Event tables: everything the store needs to know of a table to keep its
//! rows in both tiers. An [`EventTable`] is a name, an Arrow schema (the
//! *logical* schema: what SQL, Parquet and readers see) and the column that
//! holds each row's time. The store's ingest, hot tier, export, recovery and
//! retention work from this alone: adding a table is declaring one.
//!
//! A batch handed to the store may hold any column dictionary-encoded
//! (`Dictionary<Int32, T>` where the table says `T`): the capture builds
//! addresses and name lists that way, so that a value shared by many rows
//! (the host name, a popular address, the 32 names of a CDN address) is
//! stored once per batch. [`EventTable::conform`] turns a stored batch back
//! into the logical types.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_null_array};
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampNanosecondType};

use crate::StoreError;

/// The time zone of every time column.
pub const UTC: &str = "UTC";

/// A table of events: see the module documentation.
#[derive(Debug, Clone)]
pub struct EventTable {
    name: &'static str,
    schema: SchemaRef,
    time_column: usize,
}

impl PartialEq for EventTable {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.schema == other.schema && self.time_column == other.time_column
    }
}

impl EventTable {
    /// Declares a table. `name` is also the directory of its cold tier
    /// (`<data-dir>/<name>/date=.../hour=.../`), so it is a plain
    /// identifier; `time_column` must be a non-nullable
    /// `timestamp[ns, UTC]` column of `schema`.
    pub fn new(name: &'static str, schema: SchemaRef, time_column: &str) -> Result<Self, StoreError> {
        let invalid = |reason: String| StoreError::InvalidTable { table: name.to_owned(), reason };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid("the name must be lower-case letters, digits and '_'".into()));
        }
        let (index, field) = schema
            .column_with_name(time_column)
            .ok_or_else(|| invalid(format!("no column {time_column}")))?;
        if field.data_type() != &time_type() || field.is_nullable() {
            return Err(invalid(format!(
                "the time column {time_column} must be a non-nullable {}, not {}",
                time_type(),
                field.data_type()
            )));
        }
        Ok(EventTable { name, schema, time_column: index })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The logical schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Position of the time column.
    pub fn time_column(&self) -> usize {
        self.time_column
    }

    /// Checks that `batch` may be stored as rows of this table: the
    /// table's columns in order, each of its type or a dictionary of it, and
    /// a time column without nulls. Columns the table says are not nullable
    /// must have no nulls.
    pub fn check(&self, batch: &RecordBatch) -> Result<(), StoreError> {
        let invalid = |reason: String| StoreError::InvalidBatch { table: self.name, reason };
        let fields = batch.schema_ref().fields();
        if fields.len() != self.schema.fields().len() {
            return Err(invalid(format!(
                "{} columns, expected {}",
                fields.len(),
                self.schema.fields().len()
            )));
        }
        for ((field, want), column) in fields.iter().zip(self.schema.fields()).zip(batch.columns()) {
            if field.name() != want.name() || !stores_as(field.data_type(), want.data_type()) {
                return Err(invalid(format!(
                    "column {} {}, expected {} {}",
                    field.name(),
                    field.data_type(),
                    want.name(),
                    want.data_type()
                )));
            }
            if !want.is_nullable() && column.logical_null_count() > 0 {
                return Err(invalid(format!("column {} has nulls", want.name())));
            }
        }
        Ok(())
    }

    /// `batch` (as stored, possibly by an older flowsql) in the table's
    /// logical schema: dictionary columns unpacked, columns matched by name,
    /// columns it lacks filled with NULL (nullable) or the type's zero or
    /// empty value, columns the table no longer has dropped.
    pub fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch, StoreError> {
        conform_to(self.name, &self.schema, batch)
    }

    /// The time column of a batch of this table, in UTC nanoseconds.
    pub fn times<'a>(&self, batch: &'a RecordBatch) -> &'a [i64] {
        times_of(batch.column(self.time_column))
    }

    /// Oldest and newest time of a batch of this table.
    pub fn time_span(&self, batch: &RecordBatch) -> Option<(i64, i64)> {
        let times = self.times(batch);
        let min = times.iter().copied().min()?;
        let max = times.iter().copied().max()?;
        Some((min, max))
    }
}

/// `batch` in `schema` (columns matched by name, cast to the schema's types,
/// missing ones filled): see [`EventTable::conform`]. `schema` may use other
/// representations of the same values than the table's logical schema
/// (string views, for a query engine).
pub fn conform_to(
    table: &'static str,
    schema: &SchemaRef,
    batch: &RecordBatch,
) -> Result<RecordBatch, StoreError> {
    if batch.schema_ref() == schema {
        return Ok(batch.clone());
    }
    let invalid = |reason: String| StoreError::InvalidBatch { table, reason };
    let rows = batch.num_rows();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Arc::clone(column),
            // A file's signed 64-bit column (crate::cold): the same bits.
            Some(column)
                if column.data_type() == &DataType::Int64 && field.data_type() == &DataType::UInt64 =>
            {
                let unsigned: arrow::array::UInt64Array = column
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .unary(|v| u64::from_ne_bytes(v.to_ne_bytes()));
                Arc::new(unsigned)
            }
            Some(column) => {
                arrow::compute::cast_with_options(column, field.data_type(), &CastOptions::default())
                    .map_err(|e| invalid(format!("column {}: {e}", field.name())))?
            }
            None => default_column(table, field, rows)?,
        };
        columns.push(column);
    }
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
        .map_err(|e| invalid(e.to_string()))
}

/// `timestamp[ns, UTC]`, the type of every time column.
pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some(UTC.into()))
}

/// The values of a time column (checked to be `timestamp[ns]` by
/// [`EventTable::check`]); empty for any other array.
pub(crate) fn times_of(array: &ArrayRef) -> &[i64] {
    array.as_primitive_opt::<TimestampNanosecondType>().map_or(&[], |a| a.values())
}

/// Whether a column of type `stored` holds values of the logical type
/// `logical`: the same type, or a dictionary of it with 32-bit keys.
pub fn stores_as(stored: &DataType, logical: &DataType) -> bool {
    match stored {
        DataType::Dictionary(key, value) => {
            matches!(key.as_ref(), DataType::Int32) && value.as_ref().equals_datatype(logical)
        }
        other => other.equals_datatype(logical),
    }
}

/// A column of `rows` NULLs, or of the type's zero or empty value when the
/// field is not nullable (a column added after the batch was stored).
fn default_column(table: &'static str, field: &Field, rows: usize) -> Result<ArrayRef, StoreError> {
    if field.is_nullable() {
        return Ok(new_null_array(field.data_type(), rows));
    }
    let invalid = |reason: String| StoreError::InvalidBatch { table, reason };
    let one: ArrayRef = match field.data_type() {
        DataType::Utf8 => Arc::new(arrow::array::StringArray::from(vec![""])),
        DataType::List(item) => Arc::new(arrow::array::ListArray::new(
            Arc::clone(item),
            arrow::buffer::OffsetBuffer::new(vec![0i32, 0].into()),
            arrow::array::new_empty_array(item.data_type()),
            None,
        )),
        other if other.is_primitive() => {
            arrow::compute::cast(&arrow::array::Int8Array::from(vec![0i8]), other)
                .map_err(|e| invalid(format!("column {}: {e}", field.name())))?
        }
        other => {
            return Err(invalid(format!(
                "no default value for the missing non-nullable {other} column {}",
                field.name()
            )));
        }
    };
    let indices = arrow::array::UInt32Array::from(vec![0u32; rows]);
    arrow::compute::take(one.as_ref(), &indices, None).map_err(|e| invalid(e.to_string()))
}

/// A schema's fields as `name type` lines, for messages.
pub fn describe_schema(schema: &Schema) -> String {
    schema.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{DictionaryArray, Int32Array, StringArray, TimestampNanosecondArray, UInt16Array};
    use arrow::datatypes::Int32Type;

    fn table() -> EventTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("time", time_type(), false),
            Field::new("name", DataType::Utf8, false),
            Field::new("port", DataType::UInt16, false),
        ]));
        EventTable::new("things", schema, "time").expect("valid")
    }

    #[test]
    fn a_table_needs_a_utc_nanosecond_time_column_and_a_plain_name() {
        let schema = table().schema().clone();
        assert!(EventTable::new("Bad-Name", Arc::clone(&schema), "time").is_err());
        assert!(EventTable::new("things", Arc::clone(&schema), "name").is_err());
        assert!(EventTable::new("things", schema, "nope").is_err());
    }

    #[test]
    fn dictionary_columns_are_accepted_and_unpacked() {
        let t = table();
        let names: DictionaryArray<Int32Type> = DictionaryArray::new(
            Int32Array::from(vec![0, 1, 0]),
            Arc::new(StringArray::from(vec!["a", "b"])),
        );
        let stored_schema = Arc::new(Schema::new(vec![
            Field::new("time", time_type(), false),
            Field::new("name", names.data_type().clone(), false),
            Field::new("port", DataType::UInt16, false),
        ]));
        let batch = RecordBatch::try_new(
            stored_schema,
            vec![
                Arc::new(TimestampNanosecondArray::from(vec![3, 1, 2]).with_timezone(UTC)),
                Arc::new(names),
                Arc::new(UInt16Array::from(vec![1, 2, 3])),
            ],
        )
        .expect("batch");
        t.check(&batch).expect("accepted");
        assert_eq!(t.time_span(&batch), Some((1, 3)));
        let logical = t.conform(&batch).expect("conforms");
        assert_eq!(logical.schema_ref(), t.schema());
        assert_eq!(
            logical.column(1).as_string::<i32>().iter().collect::<Vec<_>>(),
            [Some("a"), Some("b"), Some("a")]
        );
    }

    #[test]
    fn an_older_batch_gets_the_columns_added_since() {
        let t = table();
        let old_schema = Arc::new(Schema::new(vec![
            Field::new("time", time_type(), false),
            Field::new("name", DataType::Utf8, false),
        ]));
        let old = RecordBatch::try_new(
            old_schema,
            vec![
                Arc::new(TimestampNanosecondArray::from(vec![1, 2]).with_timezone(UTC)),
                Arc::new(StringArray::from(vec!["x", "y"])),
            ],
        )
        .expect("batch");
        assert!(t.check(&old).is_err(), "not insertable as it is");
        let now = t.conform(&old).expect("conforms");
        assert_eq!(now.column(2).as_primitive::<arrow::datatypes::UInt16Type>().values(), &[0, 0]);
    }
}
