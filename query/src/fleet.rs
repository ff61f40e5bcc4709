//! The fleet: event tables over the files every host uploaded to object
//! storage (`<prefix>/<table>/host=<host>/date=YYYY-MM-DD/hour=HH/*.parquet`,
//! see `export.remote`), for `flowsql query --source s3://bucket/prefix`.
//!
//! A scan lists only what its filters can match, and reads only the objects
//! it listed:
//! - `hostName = 'x'` (or `IN (...)`) lists `host=x/` alone (the partition
//!   name is the host made safe for a path, as the uploader makes it);
//! - a time range of at most [`MAX_LISTED_HOURS`] hours lists each hour's
//!   `date=.../hour=.../` on its own; a wider one lists the host and keeps
//!   the objects whose partition falls in the range.
//!
//! The files are read as the local cold tier's are ([`crate::file_columns`]),
//! so files of every flowsql version answer one query.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session as CatalogSession;
use datafusion::common::{Result, ScalarValue, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::FileGroup;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use flowsql_store::{EventTable, cold};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;

use crate::file_columns::cold_scan;
use crate::time_range;

/// A time range of at most this many hours lists each hour on its own.
pub const MAX_LISTED_HOURS: i64 = 24 * 7;

/// Where the fleet's files are.
#[derive(Debug, Clone)]
pub struct FleetSource {
    /// The store's URL for DataFusion (`s3://bucket`).
    pub url: ObjectStoreUrl,
    pub store: Arc<dyn ObjectStore>,
    /// The prefix in the bucket, without slashes at either end.
    pub prefix: String,
}

impl FleetSource {
    fn table_prefix(&self, table: &str) -> String {
        if self.prefix.is_empty() { table.to_owned() } else { format!("{}/{table}", self.prefix) }
    }
}

/// `host` as the uploader names its partition (`host=<this>`).
pub fn path_safe_host(host: &str) -> String {
    let safe: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    match safe.as_str() {
        "" | "." | ".." => format!("_{safe}"),
        _ => safe,
    }
}

/// An event table over the fleet's files.
#[derive(Debug)]
pub struct FleetTableProvider {
    table: EventTable,
    schema: SchemaRef,
    source: FleetSource,
}

impl FleetTableProvider {
    pub fn new(table: EventTable, source: FleetSource) -> Self {
        let schema = crate::view_types::with_view_types(table.schema());
        FleetTableProvider { table, schema, source }
    }

    /// The host names the filters allow, if they name some.
    fn hosts(&self, filters: &[Expr]) -> Option<BTreeSet<String>> {
        let column = flowsql_event::columns::HOST_NAME;
        let mut allowed: Option<BTreeSet<String>> = None;
        for filter in filters {
            if let Some(names) = host_names(filter, column) {
                allowed = Some(match allowed {
                    None => names,
                    Some(before) => before.intersection(&names).cloned().collect(),
                });
            }
        }
        allowed
    }

    /// The objects a scan with `filters` must read.
    async fn objects(&self, filters: &[Expr]) -> Result<Vec<object_store::ObjectMeta>> {
        let time_column = self.table.schema().field(self.table.time_column()).name();
        let range = time_range::from_filters(filters, time_column);
        let base = self.source.table_prefix(self.table.name());
        let hosts: Vec<String> = match self.hosts(filters) {
            Some(names) => names.iter().map(|h| format!("host={}", path_safe_host(h))).collect(),
            None => {
                let listed =
                    self.source.store.list_with_delimiter(Some(&ObjectPath::from(base.as_str()))).await?;
                listed
                    .common_prefixes
                    .iter()
                    .filter_map(|p| p.filename().map(str::to_owned))
                    .filter(|name| name.starts_with("host="))
                    .collect()
            }
        };
        let (start, end) = (range.start(), range.end());
        let hours = if end > start && end != i64::MAX && start != i64::MIN {
            let first = cold::hour_start(start);
            let count = (end - first + cold::HOUR_NS - 1) / cold::HOUR_NS;
            (count <= MAX_LISTED_HOURS)
                .then(|| (0..count).map(|i| first + i * cold::HOUR_NS).collect::<Vec<_>>())
        } else {
            None
        };
        let mut objects = Vec::new();
        for host in &hosts {
            let host_prefix = format!("{base}/{host}");
            match &hours {
                Some(hours) => {
                    for hour in hours {
                        let prefix =
                            ObjectPath::from(format!("{host_prefix}/{}", cold::partition_name(*hour)));
                        let listed: Vec<_> = self.source.store.list(Some(&prefix)).try_collect().await?;
                        objects.extend(listed.into_iter().filter(is_parquet));
                    }
                }
                None => {
                    let prefix = ObjectPath::from(host_prefix.as_str());
                    let listed: Vec<_> = self.source.store.list(Some(&prefix)).try_collect().await?;
                    objects.extend(listed.into_iter().filter(is_parquet).filter(|o| {
                        partition_of(&o.location)
                            .is_none_or(|hour| hour < end && hour + cold::HOUR_NS > start)
                    }));
                }
            }
        }
        Ok(objects)
    }
}

fn is_parquet(object: &object_store::ObjectMeta) -> bool {
    object.location.filename().is_some_and(|name| name.ends_with(".parquet") && !name.starts_with('.'))
}

/// The hour an object's `date=.../hour=...` partition starts.
fn partition_of(location: &ObjectPath) -> Option<i64> {
    let parts: Vec<&str> = location.as_ref().split('/').collect();
    let date = parts.iter().find(|p| p.starts_with("date="))?;
    let hour = parts.iter().find(|p| p.starts_with("hour="))?;
    cold::parse_partition(date, hour)
}

/// The names `filter` restricts `column` to (`column = 'a'`,
/// `column IN ('a', 'b')`, `'a' = column`), if it is such a filter.
fn host_names(filter: &Expr, column: &str) -> Option<BTreeSet<String>> {
    let is_column = |e: &Expr| matches!(e, Expr::Column(c) if c.name.eq_ignore_ascii_case(column));
    let text = |e: &Expr| match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s.clone()),
        Expr::Cast(cast) => match cast.expr.as_ref() {
            Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    };
    match filter {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => {
            if is_column(left) {
                text(right).map(|s| BTreeSet::from([s]))
            } else if is_column(right) {
                text(left).map(|s| BTreeSet::from([s]))
            } else {
                None
            }
        }
        Expr::InList(list) if !list.negated && is_column(&list.expr) => {
            list.list.iter().map(text).collect::<Option<BTreeSet<String>>>()
        }
        _ => None,
    }
}

#[async_trait]
impl TableProvider for FleetTableProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let objects = self.objects(filters).await?;
        tracing::debug!(table = self.table.name(), objects = objects.len(), "fleet scan");
        let projected = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => Arc::clone(&self.schema),
        };
        if objects.is_empty() {
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let groups = state.config().target_partitions().clamp(1, objects.len());
        let mut buckets: Vec<Vec<PartitionedFile>> = (0..groups).map(|_| Vec::new()).collect();
        for (i, object) in objects.into_iter().enumerate() {
            buckets[i % groups].push(PartitionedFile::from(object));
        }
        cold_scan(
            state,
            &self.schema,
            self.source.url.clone(),
            buckets.into_iter().map(FileGroup::new).collect(),
            Statistics::new_unknown(&self.schema),
            projection,
            filters,
            limit,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn host_filters_name_partitions() {
        let eq = col("hostName").eq(lit("web-1"));
        assert_eq!(host_names(&eq, "hostName"), Some(BTreeSet::from(["web-1".to_owned()])));
        let list = col("hostName").in_list(vec![lit("a"), lit("b/c")], false);
        assert_eq!(host_names(&list, "hostName").map(|s| s.len()), Some(2));
        assert_eq!(host_names(&col("srcPort").eq(lit(1)), "hostName"), None);
        assert_eq!(path_safe_host("b/c"), "b_c");
        let located = ObjectPath::from("p/flows/host=a/date=2026-01-01/hour=07/part-1.parquet");
        assert_eq!(partition_of(&located), cold::parse_partition("date=2026-01-01", "hour=07"));
    }
}
