//! Runs SQL and dot commands against a [`Session`] and prints the results:
//! the part that `flowsql shell`, `.read FILE` and `flowsql query` share.
//!
//! Results stream from DataFusion to the printer batch by batch. Errors come
//! back as one-line messages, with the position in the SQL where DataFusion
//! knows it (`... at Line: 2, Column: 8`).

pub mod dot_command;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::DataFusionError;
use datafusion::common::runtime::SpawnedTask;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::sql::parser::Statement;
use flowsql_query::{QueryError, Session};
use futures::StreamExt as _;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::mpsc;

use self::dot_command::{DotCommand, OutputTarget, help_text, is_dot_command};
use crate::output::{OutputMode, ResultPrinter, print_batches};
use crate::sql_text::{InputState, input_state};

/// `.read` files may read files, up to this depth (a file that reads itself
/// stops here).
const MAX_READ_DEPTH: usize = 16;

/// What to do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

/// Where results go: the terminal (stdout) or a file from `.output`.
#[derive(Debug)]
enum Output {
    Stdout,
    File { path: PathBuf, file: BufWriter<File> },
}

/// Runs statements and dot commands, keeping the settings they change.
#[derive(Debug)]
pub struct Runner<'s> {
    session: &'s Session,
    runtime: QueryRuntime,
    mode: OutputMode,
    timer: bool,
    output: Output,
    read_depth: usize,
}

impl<'s> Runner<'s> {
    /// A runner printing in `mode`. It also asks DataFusion to keep the
    /// positions of names in the SQL, so that errors can say where they are.
    pub fn new(session: &'s Session, mode: OutputMode) -> anyhow::Result<Self> {
        session.context().state_ref().write().config_mut().options_mut().sql_parser.collect_spans = true;
        let runtime = QueryRuntime::start()?;
        Ok(Runner { session, runtime, mode, timer: false, output: Output::Stdout, read_depth: 0 })
    }

    /// After a cancelled query: gives its tasks a moment to stop and, if
    /// they do not (an operator that computes for long without yielding, such
    /// as a large cross join), leaves them to end on their own and moves on
    /// to a fresh runtime, so that the next query does not wait behind them.
    pub async fn recover_from_cancel(&mut self) {
        self.runtime.settle().await;
    }

    /// Runs every statement of `sql` in order, printing each result; stops
    /// at the first error.
    pub async fn run_sql(&mut self, sql: &str) -> anyhow::Result<()> {
        let statements = self.session.parse(sql).map_err(describe)?;
        for statement in statements {
            self.run_statement(statement).await?;
        }
        Ok(())
    }

    async fn run_statement(&mut self, statement: Statement) -> anyhow::Result<()> {
        let started = Instant::now();
        // Plans are text flowsql writes itself: their lines stay lines.
        let keep_newlines = matches!(statement, Statement::Explain(_));
        let mut batches = {
            // DataFusion spawns its tasks on the current runtime: the query runtime.
            let handle = self.runtime.handle()?;
            let _context = handle.enter();
            let stream = self.session.execute(statement).await.map_err(describe)?;
            Batches::spawn(stream)
        };
        let mut printer = ResultPrinter::new(self.mode, &batches.schema, keep_newlines);
        let mut stdout;
        let out: &mut dyn Write = match &mut self.output {
            Output::Stdout => {
                stdout = BufWriter::with_capacity(64 * 1024, io::stdout());
                &mut stdout
            }
            Output::File { file, .. } => file,
        };
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(|e| describe(QueryError::from(e)))?;
            printer.write_batch(out, &batch)?;
            out.flush()?;
        }
        printer.finish(out)?;
        if self.timer {
            say(format_args!("Time: {:.3} s", started.elapsed().as_secs_f64()))?;
        }
        Ok(())
    }

    /// Runs one dot command.
    pub async fn run_dot(&mut self, command: DotCommand) -> anyhow::Result<Flow> {
        match command {
            DotCommand::Help => io::stdout().write_all(help_text().as_bytes())?,
            DotCommand::Tables => {
                let batch = self.tables_batch().await?;
                self.print_batch(&batch)?;
            }
            DotCommand::Schema(table) => {
                let batch = self.schema_batch(table.as_deref()).await?;
                self.print_batch(&batch)?;
            }
            DotCommand::Mode(Some(mode)) => self.mode = mode,
            DotCommand::Mode(None) => say(format_args!("mode: {}", self.mode))?,
            DotCommand::Timer(Some(on)) => self.timer = on,
            DotCommand::Timer(None) => say(format_args!("timer: {}", if self.timer { "on" } else { "off" }))?,
            DotCommand::Output(Some(target)) => self.set_output(target)?,
            DotCommand::Output(None) => match &self.output {
                Output::Stdout => say(format_args!("output: stdout"))?,
                Output::File { path, .. } => say(format_args!("output: {}", path.display()))?,
            },
            DotCommand::Read(path) => return self.read_file(&path).await,
            DotCommand::Quit => return Ok(Flow::Quit),
        }
        Ok(Flow::Continue)
    }

    /// Runs a script: SQL statements ending with `;` and dot commands on
    /// lines of their own, in order, stopping at the first error. Errors
    /// name `source`; their line numbers are the script's own.
    pub async fn run_script(&mut self, script: &str, source: &str) -> anyhow::Result<Flow> {
        let mut pending = String::new();
        let mut first_line = 0;
        for (index, line) in script.lines().enumerate() {
            if pending.is_empty() && is_dot_command(line) {
                let command: DotCommand =
                    line.parse().map_err(|message| anyhow!("{source}:{}: {message}", index + 1))?;
                let flow = self.run_dot(command).await.with_context(|| format!("{source}:{}", index + 1))?;
                if flow == Flow::Quit {
                    return Ok(Flow::Quit);
                }
                continue;
            }
            if pending.is_empty() {
                first_line = index;
            }
            pending.push_str(line);
            pending.push('\n');
            match input_state(&pending) {
                InputState::Empty => pending.clear(),
                InputState::Incomplete => {}
                InputState::Complete => {
                    self.run_script_sql(&pending, first_line, source).await?;
                    pending.clear();
                }
            }
        }
        // The last statement may lack its semicolon.
        if input_state(&pending) != InputState::Empty {
            self.run_script_sql(&pending, first_line, source).await?;
        }
        Ok(Flow::Continue)
    }

    /// Runs SQL that starts on line `first_line` (0-based) of a script:
    /// blank lines in front keep DataFusion's line numbers the script's.
    async fn run_script_sql(&mut self, sql: &str, first_line: usize, source: &str) -> anyhow::Result<()> {
        let mut text = "\n".repeat(first_line);
        text.push_str(sql);
        self.run_sql(&text).await.with_context(|| source.to_owned())
    }

    async fn read_file(&mut self, path: &Path) -> anyhow::Result<Flow> {
        if self.read_depth >= MAX_READ_DEPTH {
            anyhow::bail!(".read nests more than {MAX_READ_DEPTH} files deep");
        }
        let script =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        self.read_depth += 1;
        let flow = Box::pin(self.run_script(&script, &path.display().to_string())).await;
        self.read_depth -= 1;
        flow
    }

    fn set_output(&mut self, target: OutputTarget) -> anyhow::Result<()> {
        if let Output::File { file, path } = &mut self.output {
            file.flush().with_context(|| format!("cannot write {}", path.display()))?;
        }
        self.output = match target {
            OutputTarget::Stdout => Output::Stdout,
            OutputTarget::File(path) => {
                let file =
                    File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
                Output::File { path, file: BufWriter::new(file) }
            }
        };
        Ok(())
    }

    fn print_batch(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        let batches = std::slice::from_ref(batch);
        match &mut self.output {
            Output::Stdout => print_batches(&mut io::stdout().lock(), self.mode, &batch.schema(), batches)?,
            Output::File { file, .. } => print_batches(file, self.mode, &batch.schema(), batches)?,
        };
        Ok(())
    }

    /// flowsql's tables, then any the user made (`CREATE VIEW`).
    async fn all_tables(&self) -> anyhow::Result<Vec<(String, SchemaRef, &'static str)>> {
        let mut tables: Vec<(String, SchemaRef, &'static str)> = self
            .session
            .tables()
            .iter()
            .map(|t| (t.name.to_owned(), Arc::clone(&t.schema), t.description))
            .collect();
        let ctx = self.session.context();
        let state = ctx.state();
        let defaults = &state.config_options().catalog;
        if let Some(schema) =
            ctx.catalog(&defaults.default_catalog).and_then(|c| c.schema(&defaults.default_schema))
        {
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                if tables.iter().any(|(known, _, _)| *known == name) {
                    continue;
                }
                if let Ok(Some(table)) = schema.table(&name).await {
                    tables.push((name, table.schema(), ""));
                }
            }
        }
        Ok(tables)
    }

    async fn tables_batch(&self) -> anyhow::Result<RecordBatch> {
        let tables = self.all_tables().await?;
        let names: Vec<&str> = tables.iter().map(|(name, _, _)| name.as_str()).collect();
        let descriptions: Vec<&str> = tables.iter().map(|(_, _, d)| *d).collect();
        string_batch(&["table", "description"], vec![names, descriptions])
    }

    async fn schema_batch(&self, table: Option<&str>) -> anyhow::Result<RecordBatch> {
        let tables = self.all_tables().await?;
        let chosen: Vec<&(String, SchemaRef, &str)> = match table {
            None => tables.iter().collect(),
            Some(wanted) => {
                let found: Vec<_> =
                    tables.iter().filter(|(name, _, _)| name.eq_ignore_ascii_case(wanted)).collect();
                if found.is_empty() {
                    let names: Vec<&str> = tables.iter().map(|(name, _, _)| name.as_str()).collect();
                    anyhow::bail!("no table named {wanted:?}: the tables are {}", names.join(", "));
                }
                found
            }
        };
        let (mut table_names, mut columns, mut types) = (Vec::new(), Vec::new(), Vec::new());
        for (name, schema, _) in chosen {
            for field in schema.fields() {
                table_names.push(name.clone());
                columns.push(field.name().clone());
                types.push(type_name(field.data_type()));
            }
        }
        if table.is_some() {
            string_batch(&["column", "type"], vec![as_strs(&columns), as_strs(&types)])
        } else {
            string_batch(
                &["table", "column", "type"],
                vec![as_strs(&table_names), as_strs(&columns), as_strs(&types)],
            )
        }
    }
}

/// The batches of a result, computed by a task on the runtime's workers
/// rather than on the thread that prints them. A query can compute for a long
/// time inside one poll of its stream; polled elsewhere, it cannot keep the
/// shell from noticing Ctrl-C. Dropping `Batches` aborts the task.
struct Batches {
    schema: SchemaRef,
    receiver: mpsc::Receiver<Result<RecordBatch, DataFusionError>>,
    _task: SpawnedTask<()>,
}

impl Batches {
    /// Spawns on the current runtime.
    fn spawn(mut stream: SendableRecordBatchStream) -> Batches {
        let schema = stream.schema();
        let (sender, receiver) = mpsc::channel(2);
        let task = SpawnedTask::spawn(async move {
            while let Some(batch) = stream.next().await {
                if sender.send(batch).await.is_err() {
                    break;
                }
            }
        });
        Batches { schema, receiver, _task: task }
    }

    async fn next(&mut self) -> Option<Result<RecordBatch, DataFusionError>> {
        self.receiver.recv().await
    }
}

/// The runtime queries compute on, apart from the caller's: a query that
/// will not stop can be left behind on it.
#[derive(Debug)]
struct QueryRuntime {
    runtime: Option<Runtime>,
}

impl QueryRuntime {
    /// How long the tasks of a cancelled query get to stop.
    const SETTLE: Duration = Duration::from_millis(300);

    fn start() -> anyhow::Result<QueryRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("flowsql-query")
            .enable_all()
            .build()
            .context("cannot start the query runtime")?;
        Ok(QueryRuntime { runtime: Some(runtime) })
    }

    fn handle(&mut self) -> anyhow::Result<Handle> {
        if self.runtime.is_none() {
            *self = QueryRuntime::start()?;
        }
        self.runtime.as_ref().map(|r| r.handle().clone()).context("no query runtime")
    }

    async fn settle(&mut self) {
        let Some(runtime) = &self.runtime else { return };
        let started = Instant::now();
        while runtime.metrics().num_alive_tasks() > 0 {
            if started.elapsed() >= Self::SETTLE {
                tracing::warn!(
                    tasks = runtime.metrics().num_alive_tasks(),
                    "a cancelled query is still computing: left to finish on its own threads"
                );
                if let Some(runtime) = self.runtime.take() {
                    runtime.shutdown_background();
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which may not be
        // allowed where the runner is dropped (in an async context).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A line for the user on stdout (an error, not a panic, if stdout is gone).
fn say(line: std::fmt::Arguments<'_>) -> io::Result<()> {
    writeln!(io::stdout(), "{line}")
}

fn as_strs(strings: &[String]) -> Vec<&str> {
    strings.iter().map(String::as_str).collect()
}

fn string_batch(names: &[&str], columns: Vec<Vec<&str>>) -> anyhow::Result<RecordBatch> {
    let schema =
        Schema::new(names.iter().map(|name| Field::new(*name, DataType::Utf8, false)).collect::<Vec<_>>());
    let arrays: Vec<ArrayRef> =
        columns.into_iter().map(|c| Arc::new(StringArray::from(c)) as ArrayRef).collect();
    RecordBatch::try_new(Arc::new(schema), arrays).context("cannot build the result")
}

/// A column type in the words of the design: `string`, `uint16`,
/// `list<string>`, `timestamp[ns, UTC]`.
pub fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "int8".into(),
        DataType::Int16 => "int16".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::UInt8 => "uint8".into(),
        DataType::UInt16 => "uint16".into(),
        DataType::UInt32 => "uint32".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Float32 => "float32".into(),
        DataType::Float64 => "float64".into(),
        DataType::Timestamp(unit, zone) => {
            let unit = match unit {
                TimeUnit::Second => "s",
                TimeUnit::Millisecond => "ms",
                TimeUnit::Microsecond => "us",
                TimeUnit::Nanosecond => "ns",
            };
            match zone {
                Some(zone) => format!("timestamp[{unit}, {zone}]"),
                None => format!("timestamp[{unit}]"),
            }
        }
        DataType::List(item) | DataType::LargeList(item) | DataType::ListView(item) => {
            format!("list<{}>", type_name(item.data_type()))
        }
        other => other.to_string(),
    }
}

/// A query error as one line, with the position DataFusion found for it
/// when its message does not already say. DataFusion adds lines to some
/// messages (`Valid fields are ...`, candidate signatures): only the first,
/// which says what is wrong, is kept.
pub fn describe(error: QueryError) -> anyhow::Error {
    let text = error.to_string();
    let mut message = text.lines().next().unwrap_or_default().trim_end().to_owned();
    if let QueryError::Sql(inner) = &error
        && !message.contains("at Line:")
        && let Some(span) = inner.diagnostic().and_then(|d| d.span)
    {
        message.truncate(message.trim_end_matches('.').len());
        message.push_str(&format!(" at Line: {}, Column: {}", span.start.line, span.start.column));
    }
    anyhow::Error::msg(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_read_like_the_design() {
        let schema = flowsql_store::flows_schema();
        let names: Vec<String> = schema.fields().iter().map(|f| type_name(f.data_type())).collect();
        assert_eq!(
            names,
            [
                "timestamp[ns, UTC]",
                "string",
                "string",
                "string",
                "uint16",
                "uint16",
                "list<string>",
                "list<string>",
                "string",
                "uint64",
                "uint64",
                "uint32",
                "string",
                "uint32",
                "string",
                "string",
                "string"
            ]
        );
    }
}
