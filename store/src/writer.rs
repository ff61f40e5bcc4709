//! The store writer: a thread that owns the capture's SQLite connection,
//! batches flows ([`FlowBatcher`]) and commits each batch in one
//! transaction, so that a captured flow is committed within
//! `batch_age` (250 ms by default) and, with a WAL checkpoint every second,
//! durable on disk within about a second.
//!
//! Nothing is lost silently. A flow the writer cannot keep (channel full, a
//! full disk, a read-only or vanished data directory) is counted in
//! `rowsNotStored`; failures are logged (at most every few seconds) and the
//! writer keeps trying: a full disk is retried on the next batch, any other
//! failure reopens the database. The counters go to `capture_stats` every
//! few seconds and when the writer stops, so `flowsql status` shows them
//! once the disk accepts writes again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use flowsql_event::FlowBegin;
use rusqlite::{Transaction, params};

use crate::batch::FlowBatcher;
use crate::hot::insert_flows_in;
use crate::live::LiveRows;
use crate::store::Store;
use crate::{StoreError, now_ns};

/// Work for the writer's next transaction (e.g. domain rows), given the
/// transaction and a scratch string. A job that fails is rolled back alone
/// (a savepoint) and logged; the flows of the transaction still commit.
pub type WriteJob = Box<dyn FnOnce(&Transaction<'_>, &mut String) -> Result<(), StoreError> + Send>;

/// Counters from the capture itself (the kernel's), recorded with the
/// writer's own in `capture_stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureCounters {
    /// Records the kernel delivered.
    pub events: u64,
    /// Records the kernel lost.
    pub lost: u64,
    /// Any further counters, by name (stored in `capture_stats.counters`).
    pub counters: BTreeMap<String, u64>,
}

/// How the writer batches and reports.
#[derive(Clone)]
pub struct WriterConfig {
    /// Rows per transaction at most.
    pub batch_rows: usize,
    /// A buffered row is committed at most this late.
    pub batch_age: Duration,
    /// Flows waiting for the writer; beyond this, [`StoreWriter::send`]
    /// counts them as not stored rather than block the capture.
    pub channel_capacity: usize,
    /// How often the counters are written to `capture_stats`.
    pub stats_every: Duration,
    /// How often the WAL is checkpointed after writes (power-loss durability).
    pub checkpoint_every: Duration,
    /// How often to retry opening an unavailable database.
    pub reopen_every: Duration,
    /// Whether to write `capture_stats` rows.
    pub record_stats: bool,
    /// Called after each commit with the total rows committed so far.
    pub on_commit: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    /// Rows received and not committed yet, shared with this process's
    /// queries (see [`LiveRows`]).
    pub live: Option<Arc<LiveRows>>,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            batch_rows: 16 * 1024,
            batch_age: Duration::from_millis(250),
            channel_capacity: 256 * 1024,
            stats_every: Duration::from_secs(5),
            checkpoint_every: Duration::from_secs(1),
            reopen_every: Duration::from_secs(1),
            record_stats: true,
            on_commit: None,
            live: None,
        }
    }
}

impl std::fmt::Debug for WriterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterConfig")
            .field("batch_rows", &self.batch_rows)
            .field("batch_age", &self.batch_age)
            .field("channel_capacity", &self.channel_capacity)
            .field("stats_every", &self.stats_every)
            .field("checkpoint_every", &self.checkpoint_every)
            .field("reopen_every", &self.reopen_every)
            .field("record_stats", &self.record_stats)
            .field("live", &self.live.is_some())
            .finish_non_exhaustive()
    }
}

/// What the writer did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterCounters {
    pub rows_received: u64,
    pub rows_stored: u64,
    /// Rows lost in the store (failed writes, unavailable database, backlog).
    pub rows_not_stored: u64,
    /// Failed write attempts.
    pub store_failures: u64,
}

#[derive(Debug, Default)]
struct Shared {
    received: AtomicU64,
    stored: AtomicU64,
    not_stored: AtomicU64,
    failures: AtomicU64,
}

impl Shared {
    fn snapshot(&self) -> WriterCounters {
        WriterCounters {
            rows_received: self.received.load(Ordering::Relaxed),
            rows_stored: self.stored.load(Ordering::Relaxed),
            rows_not_stored: self.not_stored.load(Ordering::Relaxed),
            store_failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

enum Msg {
    Flow(FlowBegin),
    Counters(CaptureCounters),
    Job(WriteJob),
    Flush(mpsc::SyncSender<()>),
    Stop,
}

/// The writer thread and the way to feed it. Dropping it stops the thread
/// after committing what it has.
#[derive(Debug)]
pub struct StoreWriter {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl StoreWriter {
    /// Starts the writer for the data directory `dir`. It opens the
    /// database itself; if it cannot, it says so in the log, counts rows as
    /// not stored, and retries.
    pub fn spawn(dir: impl Into<PathBuf>, config: WriterConfig) -> Result<StoreWriter, StoreError> {
        let dir = dir.into();
        let (tx, rx) = mpsc::sync_channel(config.channel_capacity.max(1));
        let shared = Arc::new(Shared::default());
        let worker = Worker::new(dir.clone(), config, Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("flowsql-store".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| StoreError::io("start the store writer thread for", dir, e))?;
        Ok(StoreWriter { tx, shared, thread: Some(thread) })
    }

    /// Queues a flow without blocking; returns false (and counts the row as
    /// not stored) when the writer is too far behind.
    pub fn send(&self, flow: FlowBegin) -> bool {
        self.shared.received.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Msg::Flow(flow)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.not_stored.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Queues a flow, waiting while the writer is behind.
    pub fn send_blocking(&self, flow: FlowBegin) {
        self.shared.received.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Msg::Flow(flow)).is_err() {
            self.shared.not_stored.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The capture's own counters, for the next `capture_stats` row.
    pub fn set_capture_counters(&self, counters: CaptureCounters) {
        // A full queue only delays the update to the next call.
        let _ = self.tx.try_send(Msg::Counters(counters));
    }

    /// Queues `job` for the writer's next transaction without blocking;
    /// false when the writer is too far behind (the job is dropped: the
    /// caller counts it).
    pub fn try_run_in_write_transaction(&self, job: WriteJob) -> bool {
        self.tx.try_send(Msg::Job(job)).is_ok()
    }

    /// Runs `job` in the writer's next transaction (waits for room).
    pub fn run_in_write_transaction(&self, job: WriteJob) {
        if self.tx.send(Msg::Job(job)).is_err() {
            tracing::warn!("the store writer has stopped: a write job was dropped");
        }
    }

    /// Waits until everything queued before is committed (or counted as
    /// not stored).
    pub fn flush(&self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv();
        }
    }

    pub fn counters(&self) -> WriterCounters {
        self.shared.snapshot()
    }

    /// Commits what is queued, records the final counters and stops.
    pub fn finish(mut self) -> WriterCounters {
        self.stop();
        self.shared.snapshot()
    }

    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.tx.send(Msg::Stop);
            if thread.join().is_err() {
                tracing::error!("the store writer thread panicked");
            }
        }
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How often a persisting failure is logged again.
const LOG_EVERY: Duration = Duration::from_secs(5);

struct Worker {
    dir: PathBuf,
    config: WriterConfig,
    shared: Arc<Shared>,
    store: Option<Store>,
    batcher: FlowBatcher,
    jobs: Vec<WriteJob>,
    capture: CaptureCounters,
    session_ns: i64,
    last_open_attempt: Option<Instant>,
    last_checkpoint: Instant,
    unsynced: bool,
    last_stats: Instant,
    stats_dirty: bool,
    failing: Option<Failure>,
}

struct Failure {
    since: Instant,
    last_logged: Instant,
    rows: u64,
}

impl Worker {
    fn new(dir: PathBuf, config: WriterConfig, shared: Arc<Shared>) -> Self {
        let now = Instant::now();
        Worker {
            batcher: FlowBatcher::new(config.batch_rows, config.batch_age),
            dir,
            config,
            shared,
            store: None,
            jobs: Vec::new(),
            capture: CaptureCounters::default(),
            session_ns: now_ns(),
            last_open_attempt: None,
            last_checkpoint: now,
            unsynced: false,
            last_stats: now,
            stats_dirty: true,
            failing: None,
        }
    }

    fn run(mut self, rx: Receiver<Msg>) {
        self.ensure_open();
        loop {
            let now = Instant::now();
            let mut timeout = self.config.stats_every.saturating_sub(now.duration_since(self.last_stats));
            if let Some(due) = self.batcher.due_in(now) {
                timeout = timeout.min(due);
            }
            if self.unsynced {
                timeout = timeout.min(
                    self.config.checkpoint_every.saturating_sub(now.duration_since(self.last_checkpoint)),
                );
            }
            match rx.recv_timeout(timeout.max(Duration::from_millis(1))) {
                Ok(Msg::Flow(flow)) => {
                    let batch = self.batcher.push(&flow);
                    if let Some(live) = &self.config.live {
                        live.lock().push_back(flow);
                    }
                    if let Some(batch) = batch {
                        self.commit(Some(batch));
                    }
                }
                Ok(Msg::Counters(counters)) => {
                    self.stats_dirty |= counters != self.capture;
                    self.capture = counters;
                }
                Ok(Msg::Job(job)) => {
                    self.jobs.push(job);
                    if self.batcher.is_empty() {
                        self.commit(None);
                    }
                }
                Ok(Msg::Flush(ack)) => {
                    self.flush();
                    let _ = ack.send(());
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if let Some(batch) = self.batcher.poll(now) {
                self.commit(Some(batch));
            }
            if self.unsynced && now.duration_since(self.last_checkpoint) >= self.config.checkpoint_every {
                self.checkpoint(now);
            }
            if now.duration_since(self.last_stats) >= self.config.stats_every {
                self.write_stats(now);
            }
        }
        self.flush();
        self.stats_dirty = true;
        let now = Instant::now();
        self.write_stats(now);
        if self.unsynced {
            self.checkpoint(now);
        }
        if let Some(failure) = &self.failing {
            tracing::error!(
                rows = failure.rows,
                "the store writer stopped while failing: rows were not stored"
            );
        }
    }

    fn flush(&mut self) {
        if let Some(batch) = self.batcher.flush() {
            self.commit(Some(batch));
        } else if !self.jobs.is_empty() {
            self.commit(None);
        }
    }

    /// Opens the database if it is not open and the last attempt is old
    /// enough; returns whether it is open.
    fn ensure_open(&mut self) -> bool {
        if self.store.is_some() {
            return true;
        }
        let now = Instant::now();
        if self.last_open_attempt.is_some_and(|t| now.duration_since(t) < self.config.reopen_every) {
            return false;
        }
        self.last_open_attempt = Some(now);
        match Store::open_without_recovery(&self.dir) {
            Ok(store) => {
                self.store = Some(store);
                true
            }
            Err(e) => {
                self.record_failure(&e, 0);
                false
            }
        }
    }

    /// Commits `batch` (the oldest rows received) and the queued jobs. With
    /// live rows, the lock on them is held across the commit, and the rows
    /// of `batch` leave them whether the commit worked or they were lost.
    fn commit(&mut self, batch: Option<RecordBatch>) {
        let rows = batch.as_ref().map_or(0, |b| b.num_rows());
        let live = self.config.live.clone();
        let mut pending = live.as_deref().map(LiveRows::lock);
        self.commit_locked(batch);
        if let Some(pending) = pending.as_mut() {
            let committed = rows.min(pending.len());
            pending.drain(..committed);
        }
    }

    fn commit_locked(&mut self, batch: Option<RecordBatch>) {
        let rows = batch.as_ref().map_or(0, |b| b.num_rows() as u64);
        let jobs = std::mem::take(&mut self.jobs);
        if !self.ensure_open() {
            self.lose(rows, jobs.len());
            return;
        }
        let Some(store) = self.store.as_mut() else { return };
        let result = store.hot_mut().with_write_transaction(|tx, json| {
            if let Some(batch) = &batch {
                insert_flows_in(tx, batch, json)?;
            }
            for job in jobs {
                run_job(tx, json, job);
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                let total = self.shared.stored.fetch_add(rows, Ordering::Relaxed) + rows;
                self.unsynced = true;
                self.stats_dirty = true;
                if let Some(failure) = self.failing.take() {
                    tracing::warn!(
                        rows_lost = failure.rows,
                        failed_for = ?failure.since.elapsed(),
                        "the store accepts writes again"
                    );
                }
                if let Some(on_commit) = &self.config.on_commit {
                    on_commit(total);
                }
            }
            Err(e) => {
                self.shared.failures.fetch_add(1, Ordering::Relaxed);
                self.record_failure(&e, rows);
                self.shared.not_stored.fetch_add(rows, Ordering::Relaxed);
                if !e.is_disk_full() {
                    // Read-only, removed, corrupt...: start over with a new connection.
                    self.store = None;
                }
            }
        }
    }

    fn lose(&mut self, rows: u64, jobs: usize) {
        self.shared.not_stored.fetch_add(rows, Ordering::Relaxed);
        if let Some(failure) = &mut self.failing {
            failure.rows += rows;
        }
        if jobs > 0 {
            tracing::warn!(jobs, "the database is unavailable: write jobs dropped");
        }
    }

    fn record_failure(&mut self, error: &StoreError, rows: u64) {
        let now = Instant::now();
        let message = crate::export::error_chain(error);
        let log = match &mut self.failing {
            None => {
                self.failing = Some(Failure { since: now, last_logged: now, rows });
                true
            }
            Some(failure) => {
                failure.rows += rows;
                let due = now.duration_since(failure.last_logged) >= LOG_EVERY;
                if due {
                    failure.last_logged = now;
                }
                due
            }
        };
        if log {
            let lost = self.shared.not_stored.load(Ordering::Relaxed) + rows;
            if error.is_disk_full() {
                tracing::error!(error = %message, rows_not_stored = lost, "the disk is full: flows are not being stored");
            } else {
                tracing::error!(error = %message, rows_not_stored = lost, "flows are not being stored");
            }
        }
    }

    fn checkpoint(&mut self, now: Instant) {
        self.last_checkpoint = now;
        if let Some(store) = &self.store {
            match store.hot().checkpoint() {
                Ok(()) => self.unsynced = false,
                Err(e) => tracing::debug!(error = %e, "WAL checkpoint failed; retrying later"),
            }
        }
    }

    fn write_stats(&mut self, now: Instant) {
        self.last_stats = now;
        if !self.config.record_stats || !self.stats_dirty || !self.ensure_open() {
            return;
        }
        let Some(store) = self.store.as_mut() else { return };
        let counters = self.shared.snapshot();
        let capture = &self.capture;
        let session = self.session_ns;
        let extra = serde_json::to_string(&capture.counters).unwrap_or_else(|_| "{}".to_owned());
        let result = store.hot_mut().with_write_transaction(|tx, _| {
            tx.execute(
                "INSERT OR REPLACE INTO capture_stats
                   (time, session, events, lost, rowsStored, rowsNotStored, storeFailures, counters)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    now_ns(),
                    session,
                    capture.events as i64,
                    capture.lost as i64,
                    counters.rows_stored as i64,
                    counters.rows_not_stored as i64,
                    counters.store_failures as i64,
                    extra
                ],
            )
            .map_err(|e| StoreError::sqlite("record capture_stats", tx.path().unwrap_or(""), e))
        });
        match result {
            Ok(_) => {
                self.stats_dirty = false;
                self.unsynced = true;
            }
            Err(e) => tracing::debug!(error = %e, "capture_stats not recorded; retrying later"),
        }
    }
}

fn run_job(tx: &Transaction<'_>, json: &mut String, job: WriteJob) {
    if let Err(e) = tx.execute_batch("SAVEPOINT flowsql_job") {
        tracing::warn!(error = %e, "write job skipped: no savepoint");
        return;
    }
    match job(tx, json) {
        Ok(()) => {
            if let Err(e) = tx.execute_batch("RELEASE flowsql_job") {
                tracing::warn!(error = %e, "write job not released");
            }
        }
        Err(e) => {
            tracing::warn!(error = %crate::export::error_chain(&e), "write job failed and was rolled back");
            let _ = tx.execute_batch("ROLLBACK TO flowsql_job; RELEASE flowsql_job");
        }
    }
}
