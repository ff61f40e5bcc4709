//! Runs SQL and dot commands against a [`Session`] and prints the results:
//! the part that `flowsql shell`, `.read FILE` and `flowsql query` share.
//!
//! Results stream from DataFusion to the printer batch by batch. Errors come
//! back as one-line messages, with the position in the SQL where DataFusion
//! knows it (`... at Line: 2, Column: 8`).

mod copy;
pub mod dot_command;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DataFusionError;
use datafusion::common::runtime::SpawnedTask;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use flowsql_query::{QueryError, Session};
use futures::StreamExt as _;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::mpsc;

use self::dot_command::{DotCommand, MaxWidth, OutputTarget, help_text, is_dot_command};
use crate::output::{OutputMode, PrintOptions, ResultPrinter, print_batches, terminal};
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
    /// `.once FILE`: where the next result goes.
    once: Option<(PathBuf, BufWriter<File>)>,
    headers: bool,
    max_width: MaxWidth,
    /// Rows of a table shown at most; 0: all.
    max_rows: usize,
    /// Whether a script stops at its first error (`.bail on`).
    bail: bool,
    /// Errors a script went on after (with `.bail off`).
    failures: u64,
    read_depth: usize,
}

impl<'s> Runner<'s> {
    /// A runner printing in `mode`. It also asks DataFusion to keep the
    /// positions of names in the SQL, so that errors can say where they are.
    pub fn new(session: &'s Session, mode: OutputMode) -> anyhow::Result<Self> {
        session.context().state_ref().write().config_mut().options_mut().sql_parser.collect_spans = true;
        let runtime = QueryRuntime::start()?;
        Ok(Runner {
            session,
            runtime,
            mode,
            timer: false,
            output: Output::Stdout,
            once: None,
            headers: true,
            max_width: MaxWidth::Terminal,
            max_rows: 0,
            bail: true,
            failures: 0,
            read_depth: 0,
        })
    }

    /// Whether scripts stop at their first error (`.bail on`, the default)
    /// or print it and go on (`.bail off`, as sqlite3 reading its input).
    pub fn set_bail(&mut self, bail: bool) {
        self.bail = bail;
    }

    /// How many errors scripts went on after (with `.bail off`).
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// How a result is printed to a destination (`to_stdout`: standard
    /// output, fitted to its terminal if it is one).
    fn print_options(&self, to_stdout: bool, keep_newlines: bool, query: bool) -> PrintOptions {
        let max_width = match self.max_width {
            MaxWidth::Terminal if to_stdout => terminal::stdout_columns(),
            MaxWidth::Terminal | MaxWidth::Fixed(0) => None,
            MaxWidth::Fixed(width) => Some(width),
        };
        PrintOptions {
            headers: self.headers,
            keep_newlines,
            max_width,
            max_rows: (self.max_rows > 0).then_some(self.max_rows),
            query,
        }
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
        // `.once FILE` takes this result, whatever becomes of it.
        let mut once = self.once.take();
        if let Some(copy) = copy::csv_target(&statement) {
            let count = self.copy_to_csv(copy).await?;
            self.print_result(&copy::count_batch(count)?, &mut once)?;
        } else {
            // Plans are text flowsql writes itself: their lines stay lines.
            let keep_newlines = matches!(statement, Statement::Explain(_));
            let query =
                matches!(&statement, Statement::Statement(s) if matches!(**s, SqlStatement::Query(_)));
            let mut batches = self.execute(statement).await?;
            let to_stdout = once.is_none() && matches!(self.output, Output::Stdout);
            let options = self.print_options(to_stdout, keep_newlines, query);
            let mut printer = ResultPrinter::new(self.mode, &batches.schema, options);
            let mut stdout;
            let out: &mut dyn Write = match (&mut once, &mut self.output) {
                (Some((_, file)), _) | (None, Output::File { file, .. }) => file,
                (None, Output::Stdout) => {
                    stdout = BufWriter::with_capacity(64 * 1024, io::stdout());
                    &mut stdout
                }
            };
            while let Some(batch) = batches.next().await {
                let batch = batch.map_err(|e| describe(QueryError::from(e)))?;
                printer.write_batch(out, &batch)?;
                out.flush()?;
            }
            printer.finish(out)?;
        }
        if let Some((path, mut file)) = once {
            file.flush().with_context(|| format!("cannot write {}", path.display()))?;
        }
        if self.timer {
            say(format_args!("Time: {:.3} s", started.elapsed().as_secs_f64()))?;
        }
        Ok(())
    }

    /// Starts `statement` on the query runtime; its batches come as they
    /// are computed.
    async fn execute(&mut self, statement: Statement) -> anyhow::Result<Batches> {
        // DataFusion spawns its tasks on the current runtime: the query runtime.
        let handle = self.runtime.handle()?;
        let _context = handle.enter();
        let stream = self.session.execute(statement).await.map_err(describe)?;
        Ok(Batches::spawn(stream))
    }

    /// `COPY ... TO 'FILE.csv'`, written by flowsql's own CSV printer (as
    /// `.mode csv` and `--format csv` print): lists and structs as JSON in
    /// one field, times in RFC 3339. Returns the rows written.
    async fn copy_to_csv(&mut self, copy: copy::CsvCopy) -> anyhow::Result<u64> {
        let query = match copy.source {
            copy::CopySource::Query(query) => query,
            copy::CopySource::Table(name) => {
                let mut statements =
                    self.session.parse(&format!("SELECT * FROM {name}")).map_err(describe)?;
                statements.pop().context("no statement")?
            }
        };
        let mut batches = self.execute(query).await?;
        let path = PathBuf::from(&copy.target);
        let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        let options = PrintOptions { headers: copy.header, ..PrintOptions::default() };
        let mut printer = ResultPrinter::new(OutputMode::Csv, &batches.schema, options);
        let written = async {
            while let Some(batch) = batches.next().await {
                let batch = batch.map_err(|e| describe(QueryError::from(e)))?;
                printer.write_batch(&mut out, &batch)?;
            }
            let rows = printer.finish(&mut out)?;
            out.flush()?;
            Ok::<u64, anyhow::Error>(rows)
        };
        written.await.with_context(|| format!("cannot write {}", path.display()))
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
            DotCommand::Timer(None) => say(format_args!("timer: {}", on_off(self.timer)))?,
            DotCommand::Output(Some(target)) => self.set_output(target)?,
            DotCommand::Output(None) => match &self.output {
                Output::Stdout => say(format_args!("output: stdout"))?,
                Output::File { path, .. } => say(format_args!("output: {}", path.display()))?,
            },
            DotCommand::Once(path) => {
                let file =
                    File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
                self.once = Some((path, BufWriter::new(file)));
            }
            DotCommand::Headers(Some(on)) => self.headers = on,
            DotCommand::Headers(None) => say(format_args!("headers: {}", on_off(self.headers)))?,
            DotCommand::MaxWidth(Some(width)) => self.max_width = width,
            DotCommand::MaxWidth(None) => match self.max_width {
                MaxWidth::Terminal => match terminal::stdout_columns() {
                    Some(columns) => say(format_args!("maxwidth: the terminal's ({columns})"))?,
                    None => say(format_args!("maxwidth: the terminal's (none: not a terminal)"))?,
                },
                MaxWidth::Fixed(0) => say(format_args!("maxwidth: 0 (no limit)"))?,
                MaxWidth::Fixed(width) => say(format_args!("maxwidth: {width}"))?,
            },
            DotCommand::MaxRows(Some(rows)) => self.max_rows = rows,
            DotCommand::MaxRows(None) if self.max_rows == 0 => say(format_args!("maxrows: 0 (all rows)"))?,
            DotCommand::MaxRows(None) => say(format_args!("maxrows: {}", self.max_rows))?,
            DotCommand::Bail(Some(on)) => self.bail = on,
            DotCommand::Bail(None) => say(format_args!("bail: {}", on_off(self.bail)))?,
            DotCommand::Read(path) => return self.read_file(&path).await,
            DotCommand::Quit => return Ok(Flow::Quit),
        }
        Ok(Flow::Continue)
    }

    /// Runs a script: SQL statements ending with `;` and dot commands on
    /// lines of their own, in order. Errors name `source` (when there is
    /// one: a file, `<stdin>`) and the line. At an error the script stops
    /// (`.bail on`, the default), or prints it on stderr and goes on
    /// (`.bail off`; [`failures`](Self::failures) counts them).
    pub async fn run_script(&mut self, script: &str, source: Option<&str>) -> anyhow::Result<Flow> {
        let mut pending = String::new();
        let mut first_line = 0;
        for (index, line) in script.lines().enumerate() {
            if pending.is_empty() && is_dot_command(line) {
                let place = |message: String| match source {
                    Some(source) => format!("{source}:{}: {message}", index + 1),
                    None => message,
                };
                let result = match line.parse::<DotCommand>() {
                    Ok(command) => self
                        .run_dot(command)
                        .await
                        .map_err(|e| anyhow!(place(flowsql_service::error_chain(e.as_ref())))),
                    Err(message) => Err(anyhow!(place(message))),
                };
                match result {
                    Ok(Flow::Quit) => return Ok(Flow::Quit),
                    Ok(Flow::Continue) => {}
                    Err(error) => self.script_error(error)?,
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
                    let result = self.run_script_sql(&pending, first_line, source).await;
                    pending.clear();
                    if let Err(error) = result {
                        self.script_error(error)?;
                    }
                }
            }
        }
        // The last statement may lack its semicolon.
        if input_state(&pending) != InputState::Empty
            && let Err(error) = self.run_script_sql(&pending, first_line, source).await
        {
            self.script_error(error)?;
        }
        Ok(Flow::Continue)
    }

    /// An error in a script: the script's end (`.bail on`), or a line on
    /// stderr and a count (`.bail off`). Output that is gone ends it either way.
    fn script_error(&mut self, error: anyhow::Error) -> anyhow::Result<()> {
        if self.bail || is_broken_pipe(&error) {
            return Err(error);
        }
        self.failures += 1;
        eprintln!("error: {}", flowsql_service::error_chain(error.as_ref()));
        Ok(())
    }

    /// Runs SQL that starts on line `first_line` (0-based) of a script:
    /// blank lines in front keep DataFusion's line numbers the script's.
    async fn run_script_sql(
        &mut self,
        sql: &str,
        first_line: usize,
        source: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut text = "\n".repeat(first_line);
        text.push_str(sql);
        let result = self.run_sql(&text).await;
        match source {
            Some(source) => result.with_context(|| source.to_owned()),
            None => result,
        }
    }

    async fn read_file(&mut self, path: &Path) -> anyhow::Result<Flow> {
        if self.read_depth >= MAX_READ_DEPTH {
            anyhow::bail!(".read nests more than {MAX_READ_DEPTH} files deep");
        }
        let script =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        self.read_depth += 1;
        let flow = Box::pin(self.run_script(&script, Some(&path.display().to_string()))).await;
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

    /// Prints a result flowsql made itself (`.tables`, `.schema`, a
    /// COPY's count), to `.once`'s file if given, else to `.output`'s.
    fn print_result(
        &mut self,
        batch: &RecordBatch,
        once: &mut Option<(PathBuf, BufWriter<File>)>,
    ) -> anyhow::Result<()> {
        let batches = std::slice::from_ref(batch);
        let to_stdout = once.is_none() && matches!(self.output, Output::Stdout);
        let options = self.print_options(to_stdout, false, true);
        let schema = batch.schema();
        match (once, &mut self.output) {
            (Some((_, file)), _) | (None, Output::File { file, .. }) => {
                print_batches(file, self.mode, &schema, batches, options)?
            }
            (None, Output::Stdout) => {
                print_batches(&mut io::stdout().lock(), self.mode, &schema, batches, options)?
            }
        };
        Ok(())
    }

    /// [`print_result`](Self::print_result) for a dot command: `.once`
    /// takes it.
    fn print_batch(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        let mut once = self.once.take();
        self.print_result(batch, &mut once)?;
        if let Some((path, mut file)) = once {
            file.flush().with_context(|| format!("cannot write {}", path.display()))?;
        }
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

/// Whether `error` comes from writing to a reader that went away
/// (`flowsql query ... | head`).
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A line for the user on stdout (an error, not a panic, if stdout is gone).
fn say(line: std::fmt::Arguments<'_>) -> io::Result<()> {
    writeln!(io::stdout(), "{line}")
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
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

/// A column type as DESCRIBE, `arrow_typeof()` and DataFusion's messages
/// name it: Arrow's names (`Utf8View`, `UInt16`, `List(Utf8)`,
/// `Timestamp(ns, "UTC")`), which `arrow_cast(value, 'type')` accepts.
pub fn type_name(data_type: &DataType) -> String {
    data_type.to_string()
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
