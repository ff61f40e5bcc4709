//! `flowsql store-stress` (hidden): the crash-safety harness's writer. It
//! writes the deterministic flows `indexed_flow(run, start..)` through the
//! same store writer and scheduled export as `flowsql capture`, and says on
//! stdout what it committed, so a harness that kills it with SIGKILL at any
//! moment knows which flows must be in the store afterwards:
//!
//! ```text
//! ready
//! committed 500          total rows of this run committed so far
//! renamed /d/flows/...   an export file has its final name, not yet in the manifest
//! exported /d/flows/...  that file is in the manifest
//! done
//! ```

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use flowsql_store::synthetic::indexed_flow;
use flowsql_store::{ExportEvent, ExportSchedule, ScheduledExport, Store, StoreWriter, WriterConfig};

use super::data_dir;
use crate::cli::StoreStressArgs;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // The harness reads these lines; if it is gone, so is the point.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn run(args: StoreStressArgs) -> anyhow::Result<ExitCode> {
    let dir = data_dir::resolve(&args.store)?;
    drop(Store::open(&dir).with_context(|| format!("failed to open the data directory {}", dir.display()))?);
    let config = WriterConfig {
        batch_rows: args.batch_rows,
        batch_age: Duration::from_millis(20),
        record_stats: false,
        on_commit: Some(Arc::new(|total| say(&format!("committed {total}")))),
        ..WriterConfig::default()
    };
    let writer = StoreWriter::spawn(&dir, config)?;
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
        after_export: None,
    };
    let export = ScheduledExport::spawn(&dir, schedule)?;
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
    Ok(ExitCode::SUCCESS)
}
