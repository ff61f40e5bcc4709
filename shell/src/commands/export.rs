//! `flowsql export`: move the hot tier's rows to Parquet now, or copy a
//! time range out: as a self-contained Parquet dataset (`--to DIR`), or as
//! one CSV or NDJSON file (`--to FILE --format csv|ndjson`) written by the
//! printers of `flowsql query`, so that both print values the same way.

use std::fs::File;
use std::io::{BufWriter, IsTerminal as _};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use arrow::array::{Array as _, AsArray as _, BooleanArray, RecordBatch};
use arrow::datatypes::TimestampNanosecondType;
use flowsql_store::{ExportEvent, ExportOptions, ExportReport, Store, TimeRange, now_ns};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{ExportArgs, ExportFormat};
use crate::output::{OutputMode, PrintOptions, ResultPrinter};
use crate::units::{self, grouped, human_bytes};
use flowsql_service::Config;

pub fn run(args: ExportArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let dir = super::existing_store(config)?;
    let now = now_ns();
    let since = args.since.as_deref().map(|t| units::parse_time(t, now)).transpose()?;
    let until = args.until.as_deref().map(|t| units::parse_time(t, now)).transpose()?;
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        anyhow::bail!("--since must be before --until");
    }
    if let Some(dest) = &args.to {
        check_destination(dest, args.format)?;
        if args.format != ExportFormat::Parquet {
            let started = Instant::now();
            let (rows, bytes) = copy_to_file(&dir, dest, args.format, TimeRange::new(since, until))
                .with_context(|| format!("failed to copy flows to {}", dest.display()))?;
            println!(
                "copied {} {} into {} ({}) in {:.1} s",
                grouped(rows),
                if rows == 1 { "row" } else { "rows" },
                dest.display(),
                human_bytes(bytes),
                started.elapsed().as_secs_f64()
            );
            return Ok(ExitCode::SUCCESS);
        }
    }
    let mut store =
        Store::open(&dir).with_context(|| format!("failed to open the data directory {}", dir.display()))?;
    let progress = Progress::new();
    let started = Instant::now();
    let report = match &args.to {
        Some(dest) => store
            .export_to(dest, TimeRange::new(since, until), &mut |e| progress.on_event(e))
            .with_context(|| format!("failed to copy flows to {}", dest.display()))?,
        None => store
            .export(&ExportOptions::up_to(until.unwrap_or(now)), &mut |e| progress.on_event(e))
            .with_context(|| format!("failed to export the hot tier of {}", dir.display()))?,
    };
    progress.finish();
    print_report(&report, args.to.is_some(), started.elapsed().as_secs_f64());
    if args.to.is_none()
        && let Some(url) = &config.remote.value
    {
        return upload(&mut store, config, url);
    }
    Ok(ExitCode::SUCCESS)
}

/// Uploads every exported file not uploaded yet to `url` (export.remote),
/// once; a failure leaves the rest queued for the next run or capture.
fn upload(store: &mut Store, config: &Config, url: &str) -> anyhow::Result<ExitCode> {
    use flowsql_service::remote::{self, Remote};
    let remote = Remote::new(url, config.remote_endpoint.value.as_deref())?;
    store.set_upload_remote(Some(url)).context("failed to record the upload remote")?;
    let host = remote::host_name(config);
    let started = Instant::now();
    let uploaded = remote::upload_backlog_now(store, &remote, &host)
        .context("the upload failed; the files not uploaded stay queued")?;
    println!("uploaded {} to {url} in {:.1} s", plural_files(uploaded), started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn plural_files(n: u64) -> String {
    format!("{} {}", grouped(n), if n == 1 { "file" } else { "files" })
}

/// Refuses a destination whose extension says another format than
/// `format`: Parquet is a directory (`--to out.csv` would make a directory
/// named `out.csv`), CSV and NDJSON one file.
fn check_destination(dest: &Path, format: ExportFormat) -> anyhow::Result<()> {
    let extension = dest.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let fits = match (format, extension.as_deref()) {
        (_, None) => true,
        (ExportFormat::Parquet, Some(ext)) => {
            !matches!(ext, "csv" | "tsv" | "json" | "ndjson" | "jsonl" | "txt" | "parquet")
        }
        (ExportFormat::Csv, Some(ext)) => ext == "csv",
        (ExportFormat::Ndjson, Some(ext)) => matches!(ext, "ndjson" | "jsonl" | "json"),
    };
    if !fits {
        let wanted = match format {
            ExportFormat::Parquet => {
                "Parquet is written as a directory of hive partitions: name a directory, or give --format csv or ndjson for one file"
            }
            ExportFormat::Csv => "--format csv writes one CSV file: name it FILE.csv",
            ExportFormat::Ndjson => "--format ndjson writes one file: name it FILE.ndjson (or .jsonl)",
        };
        anyhow::bail!("--to {}: {wanted}", dest.display());
    }
    if format != ExportFormat::Parquet && std::fs::symlink_metadata(dest).is_ok() {
        anyhow::bail!(
            "--to {}: it exists; flowsql export writes a new file and replaces nothing",
            dest.display()
        );
    }
    Ok(())
}

/// Copies the flows of `range`, from both tiers, into a new file at `dest`
/// in `format` (csv or ndjson): the cold files' rows, oldest file first,
/// then the hot rows. Returns the rows and bytes written.
fn copy_to_file(
    dir: &Path,
    dest: &Path,
    format: ExportFormat,
    range: TimeRange,
) -> anyhow::Result<(u64, u64)> {
    let store = Store::open_read_only(dir)
        .with_context(|| format!("failed to open the data directory {}", dir.display()))?;
    let table = flowsql_store::flows_table();
    let snapshot = store.snapshot(table.name(), range)?;
    let mode = if format == ExportFormat::Csv { OutputMode::Csv } else { OutputMode::Ndjson };
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(dest)
        .with_context(|| format!("cannot create {}", dest.display()))?;
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    let mut printer = ResultPrinter::new(mode, table.schema(), PrintOptions::default());
    let mut write = |batch: RecordBatch| -> anyhow::Result<()> {
        let batch = in_range(&batch, range)?;
        printer.write_batch(&mut out, &batch).with_context(|| format!("cannot write {}", dest.display()))
    };
    for file in snapshot.cold_files() {
        flowsql_store::cold::for_each_batch(table, &file.path, 64 * 1024, |batch| {
            write(batch).map_err(|e| flowsql_store::StoreError::InvalidBatch {
                table: "flows",
                reason: flowsql_service::error_chain(e.as_ref()),
            })
        })?;
    }
    let reader = snapshot.reader();
    for meta in snapshot.hot_batches() {
        write(reader.read(meta, None)?)?;
    }
    let rows = printer.finish(&mut out).with_context(|| format!("cannot write {}", dest.display()))?;
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("cannot write {}", dest.display()))?;
    file.sync_all().with_context(|| format!("cannot sync {}", dest.display()))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((rows, bytes))
}

/// The rows of `batch` whose `timestamp` falls in `range`.
fn in_range(batch: &RecordBatch, range: TimeRange) -> anyhow::Result<RecordBatch> {
    let column = batch.column_by_name(flowsql_event::columns::TIMESTAMP).context("no timestamp column")?;
    let times = column
        .as_primitive_opt::<TimestampNanosecondType>()
        .context("the timestamp column is not in nanoseconds")?;
    let keep: BooleanArray =
        (0..times.len()).map(|i| Some(times.is_valid(i) && range.contains(times.value(i)))).collect();
    arrow::compute::filter_record_batch(batch, &keep).context("cannot select the rows of the range")
}

fn print_report(report: &ExportReport, copy: bool, secs: f64) {
    let verb = if copy { "copied" } else { "exported" };
    let files = report.files.len();
    println!(
        "{verb} {} {} into {files} {} ({}) in {secs:.1} s",
        grouped(report.rows),
        if report.rows == 1 { "row" } else { "rows" },
        if files == 1 { "file" } else { "files" },
        human_bytes(report.bytes)
    );
    for file in &report.files {
        println!("  {}  {} rows  {}", file.path.display(), grouped(file.rows), human_bytes(file.bytes));
    }
}

/// A progress bar on stderr when it is a terminal, nothing otherwise.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new() -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style =
            ProgressStyle::with_template("{spinner} {bar:40} {pos}/{len} rows ({per_sec}, {eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Progress { bar: Some(bar) }
    }

    fn on_event(&self, event: ExportEvent<'_>) {
        let Some(bar) = &self.bar else { return };
        match event {
            ExportEvent::Planned { rows } => bar.set_length(rows),
            ExportEvent::Rows(rows) => bar.inc(rows),
            ExportEvent::Renamed(_) | ExportEvent::Committed(_) => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
