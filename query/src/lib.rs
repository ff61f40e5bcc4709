//! flowsql's SQL: one DataFusion session over a data directory, with the
//! tables
//!
//! - `flows`: every flow once, from the cold Parquet tier, the hot tier's
//!   batches and (in a capturing process) rows not committed yet
//!   ([`event_tables`], [`hot_scan`]); `flow_ends`, how each connection
//!   ended, the same way;
//! - `open_flows`: in a capturing process, the connections open now as the
//!   kernel sees them ([`open_flows`]);
//! - `domains`: what DNS answers taught, one row per address, name and
//!   validity period, for as-of joins ([`store_tables`]);
//! - `capture_stats`: the capture's counters over time, loss included;
//!
//! the address functions of [`functions`], and column names that resolve
//! case-insensitively ([`identifiers`]).
//!
//! ```no_run
//! # async fn example() -> Result<(), flowsql_query::QueryError> {
//! use flowsql_query::{Session, SessionOptions};
//! let session = Session::open(SessionOptions::new("/var/lib/flowsql"))?;
//! let batches = session.sql("SELECT dstDomains, count(*) FROM flows GROUP BY 1").await?;
//! # Ok(()) }
//! ```

pub mod as_of_join;
pub mod event_tables;
pub mod fast_array_element;
pub mod fast_date_trunc;
pub mod file_columns;
pub mod fleet;
pub mod functions;
pub mod hot_scan;
pub mod identifiers;
pub mod live;
pub mod open_flows;
pub mod store_tables;
pub mod time_range;
pub mod view_types;

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::registry::FunctionRegistry;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::sql::parser::{CopyToSource, DFParser, Statement};
use datafusion::sql::sqlparser::parser::ParserError;
use flowsql_store::{EventTable, Store, StoreError};
use futures::TryStreamExt;

use crate::event_tables::{EventTableProvider, StoreReader};
use crate::identifiers::ColumnNames;
pub use crate::live::LiveFlows;
pub use crate::open_flows::OpenFlows;
use crate::store_tables::{StoreTable, StoreTableProvider};

/// What to open.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub data_dir: PathBuf,
    /// The uncommitted rows of this process's own capture, if it captures.
    pub live: Option<Arc<dyn LiveFlows>>,
    /// The open connections of this process's own capture, if it captures.
    pub open_flows: Option<Arc<dyn OpenFlows>>,
    /// Parallelism of scans and operators; default: the number of cores.
    pub target_partitions: Option<usize>,
    /// The event tables to query (each becomes a SQL table of its name);
    /// default: flowsql's own.
    pub event_tables: Vec<EventTable>,
}

impl SessionOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        SessionOptions {
            data_dir: data_dir.into(),
            live: None,
            open_flows: None,
            target_partitions: None,
            event_tables: flowsql_store::event_tables(),
        }
    }
}

/// A query that could not run, or a store that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cannot open the flowsql store in {dir}")]
    Open {
        dir: PathBuf,
        #[source]
        source: Box<StoreError>,
    },
    /// The SQL did not parse: the message says where.
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("{}", describe(.0))]
    Sql(#[source] Box<DataFusionError>),
}

/// DataFusion's message without its internal wrappers and backtraces.
fn describe(error: &DataFusionError) -> String {
    match error {
        DataFusionError::Context(context, inner) => format!("{context}: {}", describe(inner)),
        DataFusionError::External(inner) => {
            let mut text = inner.to_string();
            let mut source = inner.source();
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
        other => other.strip_backtrace(),
    }
}

impl From<DataFusionError> for QueryError {
    fn from(error: DataFusionError) -> Self {
        match error {
            DataFusionError::SQL(parser, _) => match *parser {
                ParserError::ParserError(message) | ParserError::TokenizerError(message) => {
                    QueryError::Syntax(message)
                }
                ParserError::RecursionLimitExceeded => {
                    QueryError::Syntax("the statement nests too deeply".to_owned())
                }
            },
            other => QueryError::Sql(Box::new(other)),
        }
    }
}

/// A table of the session, for `.tables`, `.schema` and completion.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: &'static str,
    pub schema: SchemaRef,
    pub description: &'static str,
}

/// Opens the store read-only: queries never write, so reading the data
/// directory is all they need (a member of its group can query a store
/// that root's capture writes). A data directory with no database yet is
/// created first, when the user may: for a program's own sessions (tests,
/// benchmarks). The `flowsql` commands refuse such a directory before they
/// get here (`DataDir::check_holds_store`), unless they capture.
fn open_for_reading(
    dir: &std::path::Path,
    tables: &[EventTable],
) -> Result<Store, flowsql_store::StoreError> {
    let db = flowsql_store::DataDir::new(dir).db_path();
    // A database this user may not even look at (in a directory of a group
    // it is not in) is not missing: opening it says why it cannot be read.
    let hidden = matches!(db.try_exists(), Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied);
    if !hidden && !db.exists() {
        drop(Store::open_without_recovery(dir)?);
    }
    match Store::open_read_only_with_tables(dir, tables.to_vec()) {
        // A database of an older flowsql: upgraded in place by whoever may
        // write it (for anyone else the error says what to run).
        Err(flowsql_store::StoreError::SchemaTooOld { .. }) if writable(&db) => {
            drop(Store::open_without_recovery(dir)?);
            Store::open_read_only_with_tables(dir, tables.to_vec())
        }
        other => other,
    }
}

fn writable(path: &std::path::Path) -> bool {
    std::fs::OpenOptions::new().append(true).open(path).is_ok()
}

/// What `.tables` says of an event table.
fn describe_table(name: &str) -> &'static str {
    match name {
        "flows" => "every TCP connection begin, one row per monitored endpoint",
        "flow_ends" => "how each connection ended (and failed attempts), one row per monitored endpoint",
        _ => "events recorded by the capture",
    }
}

/// A context with flowsql's settings, functions and planner rules, and no
/// tables yet.
pub fn base_context(target_partitions: Option<usize>) -> SessionContext {
    let mut config = SessionConfig::new().with_information_schema(true);
    // A join whose smaller side (e.g. the domains of an hour, tens of
    // thousands of rows) fits these bounds builds one hash table and
    // streams the flows past it, instead of repartitioning millions of
    // flows by hash first (DataFusion's defaults: 1 MB, 128K rows).
    let optimizer = &mut config.options_mut().optimizer;
    optimizer.hash_join_single_partition_threshold = 128 << 20;
    optimizer.hash_join_single_partition_threshold_rows = 1 << 20;
    if let Some(partitions) = target_partitions {
        config = config.with_target_partitions(partitions.max(1));
    }
    config.options_mut().extensions.insert(as_of_join::FlowsqlOptions::default());
    // The as-of join replaces hash joins right after DataFusion chose
    // their sides and partitioning, before the rules that place
    // repartitions and push filters.
    let mut rules = PhysicalOptimizer::new().rules;
    let after = rules.iter().position(|r| r.name() == "join_selection").map_or(0, |i| i + 1);
    rules.insert(after, Arc::new(as_of_join::AsOfJoinRule));
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_physical_optimizer_rules(rules)
        .build();
    let mut ctx = SessionContext::new_with_state(state);
    for function in functions::all() {
        ctx.register_udf(function);
    }
    // Replaces DataFusion's date_trunc (same name, same results).
    ctx.register_udf(datafusion::logical_expr::ScalarUDF::from(fast_date_trunc::FastDateTrunc::new()));
    // And its array_element, `list[i]` included (same name, same results).
    let array_element = fast_array_element::FastArrayElementRewrite::new();
    ctx.register_udf(array_element.function());
    if let Err(error) = FunctionRegistry::register_function_rewrite(&mut ctx, Arc::new(array_element)) {
        tracing::warn!(%error, "list[i] keeps DataFusion's array_element");
    }
    ctx
}

/// A SQL session over one data directory (or a fleet's files).
pub struct Session {
    ctx: SessionContext,
    columns: ColumnNames,
    tables: Vec<TableInfo>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("tables", &self.tables).finish_non_exhaustive()
    }
}

impl Session {
    /// Opens the data directory for queries. Cheap: no data is read until a
    /// query runs (cold files are found through the manifest at scan time).
    pub fn open(options: SessionOptions) -> Result<Session, QueryError> {
        let dir = options.data_dir.clone();
        let store = open_for_reading(&options.data_dir, &options.event_tables)
            .map_err(|source| QueryError::Open { dir, source: Box::new(source) })?;
        let reader = Arc::new(StoreReader::new(store));
        let ctx = base_context(options.target_partitions);
        let mut tables: Vec<TableInfo> = options
            .event_tables
            .iter()
            .map(|table| TableInfo {
                name: table.name(),
                schema: view_types::with_view_types(table.schema()),
                description: describe_table(table.name()),
            })
            .collect();
        tables.extend([
            TableInfo {
                name: "open_flows",
                schema: view_types::with_view_types(&flowsql_store::flow_ends_schema()),
                description: "connections begun and not ended, with their counters now (with --capture)",
            },
            TableInfo {
                name: "domains",
                schema: view_types::with_view_types(&flowsql_store::domains_schema()),
                description: "DNS names of addresses, one row per address, name and validity period",
            },
            TableInfo {
                name: "capture_stats",
                schema: view_types::with_view_types(&flowsql_store::capture_stats_schema()),
                description: "the capture's counters over time, loss included",
            },
        ]);
        for table in &options.event_tables {
            ctx.register_table(
                table.name(),
                Arc::new(EventTableProvider::new(table.clone(), Arc::clone(&reader), options.live.clone())),
            )?;
        }
        ctx.register_table(
            "open_flows",
            Arc::new(open_flows::OpenFlowsProvider::new(options.open_flows.clone())),
        )?;
        ctx.register_table(
            "domains",
            Arc::new(StoreTableProvider::new(StoreTable::Domains, Arc::clone(&reader))),
        )?;
        ctx.register_table(
            "capture_stats",
            Arc::new(StoreTableProvider::new(StoreTable::CaptureStats, reader)),
        )?;
        let columns =
            ColumnNames::new(tables.iter().flat_map(|t| t.schema.fields().iter().map(|f| f.name().as_str())));
        Ok(Session { ctx, columns, tables })
    }

    /// A session over the files a fleet uploaded to object storage
    /// ([`fleet`]): its event tables only (each host's `domains` and
    /// `capture_stats` stay in its data directory).
    pub fn open_fleet(
        source: fleet::FleetSource,
        event_tables: &[EventTable],
        target_partitions: Option<usize>,
    ) -> Result<Session, QueryError> {
        let ctx = base_context(target_partitions);
        ctx.register_object_store(source.url.as_ref(), Arc::clone(&source.store));
        let mut tables = Vec::new();
        for table in event_tables {
            tables.push(TableInfo {
                name: table.name(),
                schema: view_types::with_view_types(table.schema()),
                description: describe_table(table.name()),
            });
            ctx.register_table(
                table.name(),
                Arc::new(fleet::FleetTableProvider::new(table.clone(), source.clone())),
            )?;
        }
        let columns =
            ColumnNames::new(tables.iter().flat_map(|t| t.schema.fields().iter().map(|f| f.name().as_str())));
        Ok(Session { ctx, columns, tables })
    }

    /// The tables flowsql provides.
    pub fn tables(&self) -> &[TableInfo] {
        &self.tables
    }

    /// Names of every function the session knows (scalar, aggregate, window).
    pub fn function_names(&self) -> Vec<String> {
        let state = self.ctx.state();
        let mut names: Vec<String> = state
            .scalar_functions()
            .keys()
            .chain(state.aggregate_functions().keys())
            .chain(state.window_functions().keys())
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The underlying DataFusion context.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Splits `sql` into statements and resolves column names in them.
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>, QueryError> {
        let mut statements: Vec<Statement> = DFParser::parse_sql(sql)?.into_iter().collect();
        for statement in &mut statements {
            self.resolve_names(statement);
        }
        Ok(statements)
    }

    fn resolve_names(&self, statement: &mut Statement) {
        match statement {
            Statement::Statement(inner) => self.columns.rewrite(inner.as_mut()),
            Statement::Explain(explain) => self.resolve_names(explain.statement.as_mut()),
            Statement::CopyTo(copy) => {
                if let CopyToSource::Query(query) = &mut copy.source {
                    self.columns.rewrite(query.as_mut());
                }
            }
            _ => {}
        }
    }

    /// Runs one statement and streams its result.
    pub async fn execute(&self, statement: Statement) -> Result<SendableRecordBatchStream, QueryError> {
        self.execute_with(statement, &SQLOptions::new()).await
    }

    /// Runs one statement if its plan is of a kind `options` allows (e.g.
    /// no DDL, DML or `SET` for a read-only caller) and streams its result.
    pub async fn execute_with(
        &self,
        statement: Statement,
        options: &SQLOptions,
    ) -> Result<SendableRecordBatchStream, QueryError> {
        let state = self.ctx.state();
        let plan = state.statement_to_plan(statement).await?;
        options.verify_plan(&plan)?;
        let frame = self.ctx.execute_logical_plan(plan).await?;
        Ok(frame.execute_stream().await?)
    }

    /// Runs every statement of `sql`; returns the last one's result.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        let mut last = Vec::new();
        for statement in self.parse(sql)? {
            let stream = self.execute(statement).await?;
            last = stream.try_collect().await?;
        }
        Ok(last)
    }
}
