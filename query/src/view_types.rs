//! The string representation queries run on.
//!
//! The store's schemas use plain `Utf8`, the type every Parquet reader
//! understands. Inside the engine, flowsql reads the top-level string
//! columns (`connectionDirection`, `srcIP`, `dstIP`, `hostName`, ...) as
//! `Utf8View`, as DataFusion's own Parquet tables do: the dictionary-encoded
//! pages are decoded into views of their dictionary instead of copying every
//! string, and short strings (every IPv4 address, every direction) sit inline.
//! Measured on 100 million flows: 18 to 25% less CPU for filters and grouping
//! on those columns. List items (`dstDomains`) stay `Utf8`, where views made
//! `unnest` and grouping slower. The values are the same strings.

use std::sync::Arc;

use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

fn view_field(field: &FieldRef) -> FieldRef {
    match field.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 => {
            Arc::new(Field::new(field.name(), DataType::Utf8View, field.is_nullable()))
        }
        _ => Arc::clone(field),
    }
}

/// `schema` with every top-level string column as a view.
pub fn with_view_types(schema: &Schema) -> SchemaRef {
    let fields: Vec<FieldRef> = schema.fields().iter().map(view_field).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` cast to `schema` (the same columns, some as views).
pub fn cast_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    // A batch of no columns (`SELECT FROM flows`) keeps its row count.
    let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
}
