//! How a Parquet file's columns become the table's: DataFusion's own
//! adapter (columns matched by name, cast to the table's types: a
//! microsecond file time to nanoseconds, an `element` list to the table's
//! list), plus the two things it does not do for flowsql's files:
//!
//! - a signed 64-bit file column of an unsigned table column (cgroupId,
//!   flowId, byte counts; see `flowsql_store::cold`) is read as the same
//!   bits, not cast: a value at or above 2^63 (written by an older capture)
//!   comes back as it was instead of failing the query;
//! - a column the file lacks (added after the file was written, such as
//!   `flowId` in a flowsql 0.1 file) that the table says is never NULL
//!   reads as its type's zero or empty value, as the store's own reader
//!   fills it (`EventTable::conform`).

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray, UInt64Array, new_empty_array};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{DFSchema, Statistics};
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::ColumnarValue;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column, lit};
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapterFactory, PhysicalExprAdapter, PhysicalExprAdapterFactory,
};
use datafusion::physical_plan::ExecutionPlan;

/// The scan of an event table's cold files (local or in a bucket): Parquet
/// with the query's filters pushed down to row groups and pages, the
/// files' columns read through [`FileColumns`].
#[expect(clippy::too_many_arguments, reason = "the parts of one DataFusion file scan")]
pub(crate) fn cold_scan(
    state: &dyn Session,
    schema: &SchemaRef,
    url: ObjectStoreUrl,
    groups: Vec<FileGroup>,
    statistics: Statistics,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut source = ParquetSource::new(Arc::clone(schema));
    let mut parts: Vec<Expr> =
        filters.iter().flat_map(datafusion::logical_expr::utils::split_conjunction).cloned().collect();
    if picks_few_connections(filters) {
        source = source.with_pushdown_filters(true);
        // The reader applies the parts in this order, each to the rows the
        // ones before kept: the most selective (and cheapest) first.
        parts.sort_by_key(selectivity_rank);
    }
    if let Some(filter) = conjunction(parts) {
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        source = source.with_predicate(state.create_physical_expr(filter, &df_schema)?);
    }
    let config = FileScanConfigBuilder::new(url, Arc::new(source))
        .with_file_groups(groups)
        .with_statistics(statistics)
        .with_projection_indices(projection.cloned())?
        .with_limit(limit)
        .with_expr_adapter(Some(Arc::new(FileColumns)))
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// Whether `filters` look for a few connections: an equality on a column
/// that nearly identifies one (`srcPort`, `flowId`, `processId`), or on two
/// or more of the addresses and ports. Then the Parquet reader evaluates the
/// filters first and decodes the other columns only for the rows they keep
/// (late materialization): a 5-tuple looked up over a day reads 3x faster.
/// Filters that keep many rows (a direction, an end reason, a block of
/// addresses) stay after the scan, where they cost 2 to 4x less than in the
/// reader (BENCHMARKS.md, "Analyst queries").
fn picks_few_connections(filters: &[Expr]) -> bool {
    let equal: Vec<&str> = filters
        .iter()
        .flat_map(datafusion::logical_expr::utils::split_conjunction)
        .filter_map(equality_column)
        .collect();
    let endpoints = ["srcIP", "dstIP", "srcPort", "dstPort"];
    equal.iter().any(|c| IDENTIFYING.contains(c))
        || equal.iter().filter(|c| endpoints.contains(c)).count() >= 2
}

/// Columns whose value nearly identifies one connection.
const IDENTIFYING: [&str; 3] = ["srcPort", "flowId", "processId"];

/// The column of `column = value` (either way round).
fn equality_column(filter: &Expr) -> Option<&str> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) = filter else { return None };
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(..)) | (Expr::Literal(..), Expr::Column(c)) => Some(c.name.as_str()),
        _ => None,
    }
}

/// Where a filter goes in the reader's order: an equality on a column that
/// nearly identifies a connection first, then on a port, then on an
/// address, then everything else (as written).
fn selectivity_rank(filter: &Expr) -> u8 {
    match equality_column(filter) {
        Some(column) if IDENTIFYING.contains(&column) => 0,
        Some("dstPort") => 1,
        Some("srcIP" | "dstIP") => 2,
        _ => 3,
    }
}

/// The adapter factory of flowsql's cold files (see the module
/// documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct FileColumns;

impl PhysicalExprAdapterFactory for FileColumns {
    fn create(&self, logical: SchemaRef, physical: SchemaRef) -> Result<Arc<dyn PhysicalExprAdapter>> {
        let inner = DefaultPhysicalExprAdapterFactory.create(Arc::clone(&logical), Arc::clone(&physical))?;
        Ok(Arc::new(FileColumnsAdapter { logical, physical, inner }))
    }
}

#[derive(Debug)]
struct FileColumnsAdapter {
    logical: SchemaRef,
    physical: SchemaRef,
    inner: Arc<dyn PhysicalExprAdapter>,
}

impl PhysicalExprAdapter for FileColumnsAdapter {
    fn rewrite(&self, expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
        // Columns the file lacks but the table never has NULL in: a value.
        let filled = expr
            .transform(|e| {
                let Some(column) = e.downcast_ref::<Column>() else { return Ok(Transformed::no(e)) };
                if self.physical.index_of(column.name()).is_ok() {
                    return Ok(Transformed::no(e));
                }
                match self.logical.field_with_name(column.name()) {
                    Ok(field) if !field.is_nullable() => {
                        Ok(Transformed::yes(lit(default_value(field.data_type())?)))
                    }
                    _ => Ok(Transformed::no(e)),
                }
            })
            .data()?;
        let adapted = self.inner.rewrite(filled)?;
        // Signed file columns of unsigned table columns: the same bits.
        adapted
            .transform(|e| {
                let Some(cast) = e.downcast_ref::<CastExpr>() else { return Ok(Transformed::no(e)) };
                let Some(column) = cast.expr().downcast_ref::<Column>() else {
                    return Ok(Transformed::no(e));
                };
                let from = self.physical.field(column.index()).data_type();
                if from == &DataType::Int64 && cast.cast_type() == &DataType::UInt64 {
                    let child: Arc<dyn PhysicalExpr> = Arc::new(column.clone());
                    return Ok(Transformed::yes(Arc::new(SameBits { child })));
                }
                Ok(Transformed::no(e))
            })
            .data()
    }
}

/// The zero or empty value of `data_type`.
fn default_value(data_type: &DataType) -> Result<ScalarValue> {
    Ok(match data_type {
        DataType::Utf8 => ScalarValue::Utf8(Some(String::new())),
        DataType::Utf8View => ScalarValue::Utf8View(Some(String::new())),
        DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(String::new())),
        DataType::Boolean => ScalarValue::Boolean(Some(false)),
        DataType::List(item) => ScalarValue::List(Arc::new(ListArray::new(
            Arc::clone(item),
            OffsetBuffer::new(vec![0i32, 0].into()),
            new_empty_array(item.data_type()),
            None,
        ))),
        other => ScalarValue::new_zero(other)?,
    })
}

/// A signed 64-bit value read as the unsigned one with the same bits.
#[derive(Debug, Eq)]
struct SameBits {
    child: Arc<dyn PhysicalExpr>,
}

impl PartialEq for SameBits {
    fn eq(&self, other: &Self) -> bool {
        self.child.eq(&other.child)
    }
}

impl Hash for SameBits {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.child.hash(state);
    }
}

fn same_bits(array: &ArrayRef) -> ArrayRef {
    let unsigned: UInt64Array =
        array.as_primitive::<Int64Type>().unary(|v| u64::from_ne_bytes(v.to_ne_bytes()));
    Arc::new(unsigned)
}

impl PhysicalExpr for SameBits {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::UInt64)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.child.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        Ok(match self.child.evaluate(batch)? {
            ColumnarValue::Array(array) if array.data_type() == &DataType::Int64 => {
                ColumnarValue::Array(same_bits(&array))
            }
            ColumnarValue::Scalar(ScalarValue::Int64(v)) => {
                ColumnarValue::Scalar(ScalarValue::UInt64(v.map(|v| u64::from_ne_bytes(v.to_ne_bytes()))))
            }
            other => other,
        })
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.child]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        match children.pop() {
            Some(child) if children.is_empty() => Ok(Arc::new(SameBits { child })),
            _ => Err(datafusion::error::DataFusionError::Internal("SameBits takes one child".into())),
        }
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "same_bits_as_uint64(")?;
        self.child.fmt_sql(f)?;
        write!(f, ")")
    }
}

impl fmt::Display for SameBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "same_bits_as_uint64({})", self.child)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{ident as col, lit};

    use super::picks_few_connections;

    #[test]
    fn late_materialization_only_for_filters_that_find_a_few_connections() {
        let time = col("timestamp").gt_eq(lit(0i64));
        assert!(picks_few_connections(&[col("srcPort").eq(lit(40000u16)), time.clone()]));
        assert!(picks_few_connections(&[lit(7u64).eq(col("flowId"))]));
        assert!(picks_few_connections(&[col("dstIP")
            .eq(lit("10.0.0.1"))
            .and(col("dstPort").eq(lit(5432u16)))]));
        assert!(!picks_few_connections(&[col("dstPort").eq(lit(443u16)), time]));
        assert!(!picks_few_connections(&[col("connectionDirection").eq(lit("incoming"))]));
        assert!(!picks_few_connections(&[col("srcPort").gt(lit(40000u16))]));
        assert!(!picks_few_connections(&[]));
    }

    #[test]
    fn the_reader_applies_the_most_selective_filters_first() {
        let mut parts = [
            col("dstIP").eq(lit("10.0.0.1")),
            col("timestamp").gt_eq(lit(0i64)),
            col("dstPort").eq(lit(443u16)),
            lit(40000u16).eq(col("srcPort")),
        ];
        parts.sort_by_key(super::selectivity_rank);
        let order: Vec<String> = parts.iter().map(ToString::to_string).collect();
        assert_eq!(
            order,
            [
                "UInt16(40000) = srcPort",
                "dstPort = UInt16(443)",
                "dstIP = Utf8(\"10.0.0.1\")",
                "timestamp >= Int64(0)"
            ]
        );
    }
}
