//! store_stress: the crash-safety harness's writer. It writes the
//! deterministic flows `indexed_flow(run, 0..)` through the same store
//! writer and scheduled export as `flowsql capture`, and says on stdout what
//! it committed, so a harness that kills it with SIGKILL at any moment knows
//! which flows must be in the store afterwards:
//!
//! ```text
//! ready
//! committed 500          total rows of this run committed so far
//! renamed /d/flows/...   an export file has its final name, not yet in the manifest
//! exported /d/flows/...  that file is in the manifest
//! done 1000              every flow committed, the writer and the export stopped
//! ```
//!
//! A binary of the test package, not a command of the product: the pause
//! hook and the generated flows are the store's `test-support` feature.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use flowsql_store::synthetic::indexed_flow;
use flowsql_store::{ExportEvent, ExportSchedule, ScheduledExport, Store, StoreWriter, WriterConfig};

/// Writes flows `synthetic::indexed_flow(run, i)` for i = 0, 1, ... through
/// the store writer and the scheduled export.
#[derive(Debug, Parser)]
struct Args {
    /// The data directory (created if needed).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Which run's flows to write (runs on one directory use different numbers).
    #[arg(long)]
    run: u32,
    /// Flows to write; default: until killed.
    #[arg(long)]
    count: Option<u64>,
    /// Flows per millisecond.
    #[arg(long, default_value_t = 20)]
    rate: u64,
    #[arg(long, default_value_t = 500)]
    batch_rows: usize,
    #[arg(long, default_value_t = 200)]
    export_every_ms: u64,
    /// Sleep this long between renaming an export file and committing it.
    #[arg(long)]
    pause_after_rename_ms: Option<u64>,
    /// Rows per export file at most. Small, so that exports commit often and
    /// an export renames its first file soon after it starts however many
    /// rows are hot (the writer keeps committing while an export runs, so
    /// runs killed before their exports commit leave more and more).
    #[arg(long, default_value_t = 20_000)]
    max_file_rows: u64,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // The harness reads these lines; if it is gone, so is the point.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), flowsql_store::StoreError> {
    let dir = &args.data_dir;
    drop(Store::open(dir)?);
    let config = WriterConfig {
        batch_rows: args.batch_rows,
        batch_age: Duration::from_millis(20),
        record_stats: false,
        on_commit: Some(Arc::new(|total| say(&format!("committed {total}")))),
        ..WriterConfig::default()
    };
    let writer = StoreWriter::spawn(dir, config)?;
    let schedule = ExportSchedule {
        every: Duration::from_millis(args.export_every_ms.max(1)),
        grace: Duration::ZERO,
        retain: None,
        max_file_rows: args.max_file_rows,
        pause_after_rename: args.pause_after_rename_ms.map(Duration::from_millis),
        on_event: Some(Arc::new(|event| match event {
            ExportEvent::Renamed(path) => say(&format!("renamed {}", path.display())),
            ExportEvent::Committed(file) => say(&format!("exported {}", file.path.display())),
            ExportEvent::Planned { .. } | ExportEvent::Rows(_) => {}
        })),
        ..ExportSchedule::default()
    };
    let export = ScheduledExport::spawn(dir, schedule)?;
    say("ready");
    let started = Instant::now();
    let rate = args.rate.max(1);
    for index in 0..args.count.unwrap_or(u64::MAX) {
        writer.send_blocking(indexed_flow(args.run, index));
        if index % rate == rate - 1 {
            // Keep to `rate` flows per millisecond.
            let due = Duration::from_millis((index + 1) / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let counters = writer.finish();
    export.stop();
    say(&format!("done {}", counters.rows_stored));
    Ok(())
}
