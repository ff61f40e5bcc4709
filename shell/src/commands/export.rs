//! `flowsql export`: move the hot tier's rows to Parquet now, or copy a
//! time range out as a self-contained dataset (`--to DIR`).

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use flowsql_store::{ExportEvent, ExportOptions, ExportReport, Store, TimeRange, now_ns};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::ExportArgs;
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
    Ok(ExitCode::SUCCESS)
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
