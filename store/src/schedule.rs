//! The capture's scheduled export: a thread that, every `every`, moves the
//! closed windows of the hot tier to Parquet and applies retention.
//!
//! Windows are aligned to multiples of `every` since the epoch (UTC): with
//! `every = 5m` and `grace = 5s`, the export at 07:10:05 takes every hot row
//! before 07:10:00. Rows that arrive late for a window already exported are
//! taken by the next export (into another file of their hour).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::export::{DEFAULT_MAX_FILE_ROWS, ExportOptions, SharedExportEvents, error_chain};
use crate::store::Store;
use crate::{StoreError, now_ns};

/// When and what the scheduled export does.
#[derive(Clone)]
pub struct ExportSchedule {
    /// Export period and window width.
    pub every: Duration,
    /// How long after a window ends before it counts as closed (rows
    /// still on their way from the kernel to SQLite).
    pub grace: Duration,
    /// Remove cold partitions older than this after each export.
    pub retain: Option<Duration>,
    /// Rows per file at most, see [`ExportOptions::max_file_rows`].
    pub max_file_rows: u64,
    /// Test hook, see [`ExportOptions::pause_after_rename`].
    #[cfg(feature = "test-support")]
    pub pause_after_rename: Option<Duration>,
    /// Progress events of every export (harnesses, logs).
    pub on_event: Option<SharedExportEvents>,
    /// Called after each export run (whatever its outcome), on the export
    /// thread: the capture returns the memory the export freed to the
    /// system here.
    pub after_export: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Default for ExportSchedule {
    fn default() -> Self {
        ExportSchedule {
            every: Duration::from_secs(300),
            grace: Duration::from_secs(5),
            retain: None,
            max_file_rows: DEFAULT_MAX_FILE_ROWS,
            #[cfg(feature = "test-support")]
            pause_after_rename: None,
            on_event: None,
            after_export: None,
        }
    }
}

impl std::fmt::Debug for ExportSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportSchedule")
            .field("every", &self.every)
            .field("grace", &self.grace)
            .field("retain", &self.retain)
            .field("max_file_rows", &self.max_file_rows)
            .finish_non_exhaustive()
    }
}

/// The running schedule; stopping or dropping it stops the thread, ending
/// an export in progress at its next batch (its uncommitted rows stay hot).
#[derive(Debug)]
pub struct ScheduledExport {
    stop: Option<mpsc::Sender<()>>,
    interrupt: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ScheduledExport {
    pub fn spawn(dir: impl Into<PathBuf>, schedule: ExportSchedule) -> Result<ScheduledExport, StoreError> {
        let dir = dir.into();
        let (stop, stopped) = mpsc::channel();
        let interrupt = Arc::new(AtomicBool::new(false));
        let thread_dir = dir.clone();
        let thread_interrupt = Arc::clone(&interrupt);
        let thread = std::thread::Builder::new()
            .name("flowsql-export".into())
            .spawn(move || run(thread_dir, schedule, stopped, thread_interrupt))
            .map_err(|e| StoreError::io("start the export thread for", dir, e))?;
        Ok(ScheduledExport { stop: Some(stop), interrupt, thread: Some(thread) })
    }

    /// Asks an export in progress to end at its next batch, without waiting
    /// (a stopping capture does this first, so that the export's write
    /// transactions stop competing with the writer's last commits).
    pub fn interrupt(&self) {
        self.interrupt.store(true, Ordering::Relaxed);
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.interrupt();
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the export thread panicked");
        }
    }
}

impl Drop for ScheduledExport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The next window boundary after `now - grace`, and when to act on it.
fn next_boundary(now: i64, every: i64, grace: i64) -> (i64, i64) {
    let boundary = (now - grace).div_euclid(every).saturating_add(1).saturating_mul(every);
    (boundary, boundary.saturating_add(grace))
}

fn run(dir: PathBuf, schedule: ExportSchedule, stopped: mpsc::Receiver<()>, interrupt: Arc<AtomicBool>) {
    let every = i64::try_from(schedule.every.as_nanos()).unwrap_or(i64::MAX).max(1_000_000);
    let grace = i64::try_from(schedule.grace.as_nanos()).unwrap_or(i64::MAX);
    let mut store: Option<Store> = None;
    loop {
        let now = now_ns();
        let (boundary, wake_at) = next_boundary(now, every, grace);
        let wait = Duration::from_nanos(u64::try_from(wake_at - now).unwrap_or(0));
        match stopped.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        if store.is_none() {
            match Store::open_for_capture(&dir) {
                Ok(opened) => store = Some(opened),
                Err(e) => {
                    tracing::error!(error = %error_chain(&e), "scheduled export: cannot open the store");
                    continue;
                }
            }
        }
        let Some(open) = store.as_mut() else { continue };
        let options = ExportOptions {
            cutoff_ns: boundary,
            max_file_rows: schedule.max_file_rows,
            #[cfg(feature = "test-support")]
            pause_after_rename: schedule.pause_after_rename,
            interrupt: Some(Arc::clone(&interrupt)),
            ..ExportOptions::up_to(boundary)
        };
        let on_event = schedule.on_event.clone();
        let result = open.export(&options, &mut |event| {
            if let Some(on_event) = &on_event {
                on_event(event);
            }
        });
        if let Some(after_export) = &schedule.after_export {
            after_export();
        }
        match result {
            Ok(report) if report.interrupted => {
                tracing::info!(
                    files = report.files.len(),
                    rows = report.rows,
                    "export interrupted by the stop; the rows it had not committed stay in the hot tier"
                );
                return;
            }
            Ok(report) if !report.files.is_empty() => {
                tracing::info!(
                    files = report.files.len(),
                    rows = report.rows,
                    bytes = report.bytes,
                    "exported"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "scheduled export failed; the rows stay in the hot tier");
                if !e.is_disk_full() {
                    store = None;
                }
                continue;
            }
        }
        if let Some(retain) = schedule.retain
            && let Err(e) = open.apply_retention(retain, now_ns())
        {
            tracing::error!(error = %error_chain(&e), "retention failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_and_close_after_the_grace() {
        let s = 1_000_000_000;
        // At 07:05:03 the window ending 07:05:00 closes at 07:05:05.
        assert_eq!(next_boundary(303 * s, 300 * s, 5 * s), (300 * s, 305 * s));
        assert_eq!(next_boundary(304 * s, 300 * s, 5 * s), (300 * s, 305 * s));
        assert_eq!(next_boundary(305 * s, 300 * s, 5 * s), (600 * s, 605 * s));
        assert_eq!(next_boundary(299 * s, 300 * s, 5 * s), (300 * s, 305 * s));
    }
}
