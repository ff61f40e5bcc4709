//! The as-of join: each flow with the names its address had at the flow's
//! time, without a general hash join.
//!
//! `flows JOIN domains ON d.ip = f.dstIP AND f.timestamp BETWEEN d.firstSeen
//! AND d.expiresAt` is planned by DataFusion as a hash join on the address
//! whose every candidate pair is then tested by the time filter: a popular
//! address has one `domains` row per name and validity period, so each flow
//! walks a chain of string-keyed candidates and compares strings and times
//! for each. [`AsOfJoinRule`] replaces such a join with [`AsOfJoinExec`],
//! which indexes the small side once: for each address, its periods sorted
//! by start, with the longest period and a running maximum of the ends.
//! Each flow then costs one hash lookup of its address and a binary search
//! of its time; only periods that can contain the time are visited.
//!
//! The rule applies to any equi-join on one string column whose filter is
//! exactly a range test of a column of the streamed side between two
//! columns of the collected side (`>=`/`>` below, `<=`/`<` above; what
//! `BETWEEN` becomes), of the same integer or timestamp type, for inner joins
//! and for outer joins that keep the streamed rows (`flows LEFT JOIN
//! domains`), whichever input DataFusion chose to build its hash table on
//! (the operator always collects the periods). Any other join is left as
//! it was. The results are the same
//! rows as the hash join's (the sqllogictests and a randomized test run
//! both); `SET flowsql.as_of_join = false` turns the rule off.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, RecordBatchOptions, UInt32Array,
};
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::{ConfigExtension, ConfigOptions};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{
    DataFusionError, HashMap, JoinSide, JoinType, NullEquality, Result, extensions_options,
};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::{StreamExt as _, TryStreamExt as _};
use tokio::sync::OnceCell;

extensions_options! {
    /// flowsql's own settings (`SET flowsql.<name> = <value>`).
    pub struct FlowsqlOptions {
        /// Plan range joins on an address (`domains` as of a flow's time)
        /// with the as-of join operator instead of a hash join and a filter.
        pub as_of_join: bool, default = true
    }
}

impl ConfigExtension for FlowsqlOptions {
    const PREFIX: &'static str = "flowsql";
}

/// How a bound of the period compares with the streamed time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Inclusive,
    Exclusive,
}

/// The join's shape, as the rule found it.
#[derive(Debug, Clone)]
struct AsOfJoin {
    /// The address column of each side.
    build_key: usize,
    probe_key: usize,
    /// The period's columns (collected side) and the time (streamed side).
    build_start: usize,
    build_end: usize,
    probe_time: usize,
    start_bound: Bound,
    end_bound: Bound,
    /// Streamed rows without a period are kept, with nulls (an outer join).
    keep_unmatched: bool,
    /// The output's columns: which input and which column of it.
    output: Vec<(Role, usize)>,
}

/// The operator's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The periods, collected and indexed.
    Periods,
    /// The rows streamed past them.
    Points,
}

/// See the module documentation.
#[derive(Debug)]
pub struct AsOfJoinExec {
    /// The periods: collected into one index, shared by every partition.
    build: Arc<dyn ExecutionPlan>,
    /// The rows streamed past it (the flows).
    probe: Arc<dyn ExecutionPlan>,
    join: AsOfJoin,
    schema: SchemaRef,
    index: Arc<OnceCell<Arc<PeriodIndex>>>,
    properties: Arc<PlanProperties>,
}

impl AsOfJoinExec {
    fn new(
        build: Arc<dyn ExecutionPlan>,
        probe: Arc<dyn ExecutionPlan>,
        join: AsOfJoin,
        schema: SchemaRef,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(probe.output_partitioning().partition_count()),
            EmissionType::Incremental,
            probe.boundedness(),
        ));
        AsOfJoinExec { build, probe, join, schema, index: Arc::new(OnceCell::new()), properties }
    }
}

impl DisplayAs for AsOfJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let j = &self.join;
        let (lower, upper) = (
            if j.start_bound == Bound::Inclusive { ">=" } else { ">" },
            if j.end_bound == Bound::Inclusive { "<=" } else { "<" },
        );
        write!(
            f,
            "AsOfJoinExec: key=(build@{} = probe@{}), probe@{} {lower} build@{} and probe@{} {upper} build@{}{}",
            j.build_key,
            j.probe_key,
            j.probe_time,
            j.build_start,
            j.probe_time,
            j.build_end,
            if j.keep_unmatched { ", keeps unmatched probe rows" } else { "" }
        )
    }
}

impl ExecutionPlan for AsOfJoinExec {
    fn name(&self) -> &str {
        "AsOfJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.build, &self.probe]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition, Distribution::UnspecifiedDistribution]
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
        let [build, probe]: [Arc<dyn ExecutionPlan>; 2] = children
            .try_into()
            .map_err(|_| DataFusionError::Internal("AsOfJoinExec has two children".into()))?;
        Ok(Arc::new(AsOfJoinExec::new(build, probe, self.join.clone(), Arc::clone(&self.schema))))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let build = Arc::clone(&self.build);
        let cell = Arc::clone(&self.index);
        let join = Arc::new(self.join.clone());
        let schema = Arc::clone(&self.schema);
        let build_context = Arc::clone(&context);
        let index_join = Arc::clone(&join);
        let index = async move {
            cell.get_or_try_init(|| async move {
                // One partition once the planner placed its coalesce (see
                // `required_input_distribution`); every one regardless.
                let mut batches: Vec<RecordBatch> = Vec::new();
                for part in 0..build.output_partitioning().partition_count() {
                    let stream = build.execute(part, Arc::clone(&build_context))?;
                    batches.extend(stream.try_collect::<Vec<_>>().await?);
                }
                let batch = concat_batches(&build.schema(), &batches)?;
                Ok::<_, DataFusionError>(Arc::new(PeriodIndex::new(batch, &index_join)?))
            })
            .await
            .cloned()
        };
        let probe = self.probe.execute(partition, context)?;
        let out_schema = Arc::clone(&schema);
        let stream = futures::stream::once(async move {
            let index = index.await?;
            Ok::<_, DataFusionError>(probe.map(move |batch| index.join(&batch?, &join, &out_schema)))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// One period of the collected side.
#[derive(Debug, Clone, Copy)]
struct Period {
    start: i64,
    end: i64,
    row: u32,
}

/// The periods of one address, sorted by start.
#[derive(Debug, Default)]
struct AddressPeriods {
    periods: Vec<Period>,
    /// `max_end[i]`: the latest end among `periods[..=i]`.
    max_end: Vec<i64>,
    /// The longest period (end - start).
    longest: i64,
}

/// The collected side, indexed by address.
#[derive(Debug)]
struct PeriodIndex {
    batch: RecordBatch,
    by_key: HashMap<Box<[u8]>, AddressPeriods>,
}

/// A string column of any of Arrow's string layouts.
enum Keys<'a> {
    Utf8(&'a datafusion::arrow::array::StringArray),
    LargeUtf8(&'a datafusion::arrow::array::LargeStringArray),
    View(&'a datafusion::arrow::array::StringViewArray),
}

impl<'a> Keys<'a> {
    fn of(array: &'a ArrayRef) -> Result<Keys<'a>> {
        Ok(match array.data_type() {
            DataType::Utf8 => Keys::Utf8(array.as_string::<i32>()),
            DataType::LargeUtf8 => Keys::LargeUtf8(array.as_string::<i64>()),
            DataType::Utf8View => Keys::View(array.as_string_view()),
            other => {
                return Err(DataFusionError::Internal(format!("as-of join key of type {other}")));
            }
        })
    }

    fn get(&self, row: usize) -> Option<&'a [u8]> {
        match self {
            Keys::Utf8(a) => a.is_valid(row).then(|| a.value(row).as_bytes()),
            Keys::LargeUtf8(a) => a.is_valid(row).then(|| a.value(row).as_bytes()),
            Keys::View(a) => a.is_valid(row).then(|| a.value(row).as_bytes()),
        }
    }
}

/// A time column (any timestamp unit, or integers) as i64.
fn times(array: &ArrayRef) -> Result<Int64Array> {
    Ok(cast(array, &DataType::Int64)?.as_primitive().clone())
}

impl PeriodIndex {
    fn new(batch: RecordBatch, join: &AsOfJoin) -> Result<PeriodIndex> {
        let keys = Keys::of(batch.column(join.build_key))?;
        let starts = times(batch.column(join.build_start))?;
        let ends = times(batch.column(join.build_end))?;
        let mut by_key: HashMap<Box<[u8]>, AddressPeriods> = HashMap::default();
        for row in 0..batch.num_rows() {
            let (Some(key), true, true) = (keys.get(row), starts.is_valid(row), ends.is_valid(row)) else {
                continue;
            };
            let row32 = u32::try_from(row)
                .map_err(|_| DataFusionError::ResourcesExhausted("as-of join side over 4G rows".into()))?;
            let period = Period { start: starts.value(row), end: ends.value(row), row: row32 };
            match by_key.get_mut(key) {
                Some(address) => address.periods.push(period),
                None => {
                    by_key.insert(key.into(), AddressPeriods { periods: vec![period], ..Default::default() });
                }
            }
        }
        for address in by_key.values_mut() {
            address.periods.sort_unstable_by_key(|p| (p.start, p.row));
            let mut latest = i64::MIN;
            address.max_end = address
                .periods
                .iter()
                .map(|p| {
                    latest = latest.max(p.end);
                    latest
                })
                .collect();
            address.longest =
                address.periods.iter().map(|p| p.end.saturating_sub(p.start)).max().unwrap_or(0).max(0);
        }
        Ok(PeriodIndex { batch, by_key })
    }

    /// The joined rows of one streamed batch.
    fn join(&self, probe: &RecordBatch, join: &AsOfJoin, schema: &SchemaRef) -> Result<RecordBatch> {
        let keys = Keys::of(probe.column(join.probe_key))?;
        let times = times(probe.column(join.probe_time))?;
        let mut probe_rows: Vec<u32> = Vec::with_capacity(probe.num_rows());
        let mut build_rows: Vec<Option<u32>> = Vec::with_capacity(probe.num_rows());
        for row in 0..probe.num_rows() {
            let before = probe_rows.len();
            if let (Some(key), true) = (keys.get(row), times.is_valid(row))
                && let Some(address) = self.by_key.get(key)
            {
                let time = times.value(row);
                // Periods that start at or before the time (after, if the
                // start is exclusive), latest first.
                let starts_before = match join.start_bound {
                    Bound::Inclusive => address.periods.partition_point(|p| p.start <= time),
                    Bound::Exclusive => address.periods.partition_point(|p| p.start < time),
                };
                let earliest_start = time.saturating_sub(address.longest);
                for i in (0..starts_before).rev() {
                    let period = address.periods[i];
                    // Every earlier period starts too early to reach the
                    // time, or ended before it.
                    if period.start < earliest_start || address.max_end[i] < time {
                        break;
                    }
                    let inside = match join.end_bound {
                        Bound::Inclusive => time <= period.end,
                        Bound::Exclusive => time < period.end,
                    };
                    if inside {
                        probe_rows.push(row as u32);
                        build_rows.push(Some(period.row));
                    }
                }
            }
            if join.keep_unmatched && probe_rows.len() == before {
                probe_rows.push(row as u32);
                build_rows.push(None);
            }
        }
        let probe_rows = UInt32Array::from(probe_rows);
        let build_rows = UInt32Array::from(build_rows);
        let columns = join
            .output
            .iter()
            .map(|&(side, column)| match side {
                Role::Periods => take(self.batch.column(column), &build_rows, None),
                Role::Points => take(probe.column(column), &probe_rows, None),
            })
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(probe_rows.len()));
        Ok(RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)?)
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct AsOfJoinRule;

impl PhysicalOptimizerRule for AsOfJoinRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !config.extensions.get::<FlowsqlOptions>().is_none_or(|o| o.as_of_join) {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(hash_join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            match as_of_join(hash_join) {
                Some((join, periods)) => {
                    let (left, right) = (Arc::clone(hash_join.left()), Arc::clone(hash_join.right()));
                    let (build, probe) =
                        if periods == JoinSide::Left { (left, right) } else { (right, left) };
                    let exec = AsOfJoinExec::new(build, probe, join, hash_join.schema());
                    Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>))
                }
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "flowsql_as_of_join"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The as-of join `join` is, if it is one (see the module documentation).
/// Either input may hold the periods: the operator always collects them and
/// streams the other side, whichever side DataFusion chose to build.
fn as_of_join(join: &HashJoinExec) -> Option<(AsOfJoin, JoinSide)> {
    if join.null_equality() != NullEquality::NullEqualsNothing || join.null_aware || join.fetch().is_some() {
        return None;
    }
    [JoinSide::Left, JoinSide::Right]
        .into_iter()
        .find_map(|periods| Some((as_of_join_with(join, periods)?, periods)))
}

/// The as-of join `join` is if its `periods` input holds the periods.
fn as_of_join_with(join: &HashJoinExec, periods: JoinSide) -> Option<AsOfJoin> {
    let points = if periods == JoinSide::Left { JoinSide::Right } else { JoinSide::Left };
    let keep_unmatched = match join.join_type() {
        JoinType::Inner => false,
        // The side of the points keeps its rows.
        JoinType::Left if points == JoinSide::Left => true,
        JoinType::Right if points == JoinSide::Right => true,
        _ => return None,
    };
    let input = |side: JoinSide| if side == JoinSide::Left { join.left() } else { join.right() };
    let (build_schema, probe_schema) = (input(periods).schema(), input(points).schema());
    let [(left_key, right_key)] = join.on() else { return None };
    let (left_key, right_key) =
        (left_key.downcast_ref::<Column>()?.index(), right_key.downcast_ref::<Column>()?.index());
    let (build_key, probe_key) =
        if periods == JoinSide::Left { (left_key, right_key) } else { (right_key, left_key) };
    let is_string = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    if !is_string(build_schema.field(build_key).data_type())
        || !is_string(probe_schema.field(probe_key).data_type())
    {
        return None;
    }

    // The filter: exactly `time >= start AND time <= end` (either way round).
    let filter = join.filter()?;
    let and = filter.expression().downcast_ref::<BinaryExpr>()?;
    if *and.op() != Operator::And {
        return None;
    }
    let side_of = |expr: &Arc<dyn PhysicalExpr>| {
        let column = expr.downcast_ref::<Column>()?;
        filter.column_indices().get(column.index()).map(|c| (c.side, c.index))
    };
    let mut probe_time = None;
    let (mut start, mut end) = (None, None);
    for comparison in [and.left(), and.right()] {
        let comparison = comparison.downcast_ref::<BinaryExpr>()?;
        let (left, right) = (side_of(comparison.left())?, side_of(comparison.right())?);
        // As `time <op> bound`.
        let (time, bound, op) = if left.0 == points && right.0 == periods {
            (left.1, right.1, *comparison.op())
        } else if left.0 == periods && right.0 == points {
            (right.1, left.1, comparison.op().swap()?)
        } else {
            return None;
        };
        if probe_time.replace(time).is_some_and(|t| t != time) {
            return None;
        }
        let slot = match op {
            Operator::GtEq => start.replace((bound, Bound::Inclusive)),
            Operator::Gt => start.replace((bound, Bound::Exclusive)),
            Operator::LtEq => end.replace((bound, Bound::Inclusive)),
            Operator::Lt => end.replace((bound, Bound::Exclusive)),
            _ => return None,
        };
        if slot.is_some() {
            return None;
        }
    }
    let (probe_time, (build_start, start_bound), (build_end, end_bound)) = (probe_time?, start?, end?);
    let time_type = probe_schema.field(probe_time).data_type();
    let is_time = matches!(time_type, DataType::Timestamp(_, _) | DataType::Int64);
    if !is_time
        || build_schema.field(build_start).data_type() != time_type
        || build_schema.field(build_end).data_type() != time_type
    {
        return None;
    }

    // The hash join's columns (its left input's, then its right's), as the
    // operator's sides.
    let role = |side: JoinSide| if side == periods { Role::Periods } else { Role::Points };
    let mut output: Vec<(Role, usize)> = (0..join.left().schema().fields().len())
        .map(|i| (role(JoinSide::Left), i))
        .chain((0..join.right().schema().fields().len()).map(|i| (role(JoinSide::Right), i)))
        .collect();
    if let Some(projection) = &join.projection {
        output = projection.iter().map(|&i| output.get(i).copied()).collect::<Option<Vec<_>>>()?;
    }
    if output.len() != join.schema().fields().len() {
        return None;
    }
    Some(AsOfJoin {
        build_key,
        probe_key,
        build_start,
        build_end,
        probe_time,
        start_bound,
        end_bound,
        keep_unmatched,
        output,
    })
}
