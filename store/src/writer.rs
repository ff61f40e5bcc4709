//! The store writer: a thread that owns the capture's SQLite connection,
//! batches flows ([`FlowBatcher`]) and commits each batch in one
//! transaction, so that a captured flow is committed within
//! `batch_age` (250 ms by default) and, with a WAL checkpoint every second,
//! durable on disk within about a second.
//!
//! Flows reach the thread through an unbounded channel whose length is
//! counted: memory follows the actual backlog, and beyond
//! `channel_capacity` waiting flows [`StoreWriter::send`] counts a flow as
//! not stored rather than block the capture.
//!
//! A busy or locked database (another connection holds the write lock: an
//! export's delete, `flowsql export`, a migration) is transient: the writer
//! keeps its batch and its connection and tries again after a short pause,
//! while new flows wait in the channel. Only when the database stays
//! unusable for `busy_retry_for` (30 s), or the error is not one that
//! waiting clears (a full disk, a read-only or vanished data directory, a
//! corrupt database), are the batch's rows lost.
//!
//! Nothing is lost silently. A flow the writer cannot keep (backlog full,
//! failed write) is counted in `rowsNotStored`; failures are logged (at
//! most every few seconds) and the writer keeps trying: a full disk is
//! tried again with the next batch, any other failure reopens the
//! database. The counters go to `capture_stats` every few seconds and when
//! the writer stops, so `flowsql status` shows them once the disk accepts
//! writes again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use flowsql_event::FlowBegin;
use rusqlite::{Transaction, params};

use crate::batch::FlowBatcher;
use crate::hot::insert_flows_in;
use crate::latency::{LatencyHistogram, LatencySnapshot};
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
    /// Flows (and write jobs) waiting for the writer at most; beyond this,
    /// [`StoreWriter::send`] counts them as not stored rather than block the
    /// capture. Memory is only used for the flows actually waiting (about
    /// 120 bytes each).
    pub channel_capacity: usize,
    /// How long a batch is tried again while the database is busy or locked
    /// by another connection before its rows count as not stored.
    pub busy_retry_for: Duration,
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

/// The default bound of the writer's backlog. The longest the writer waits
/// for the database is an export's write transaction (deleting up to
/// `max_file_rows`, 500,000 rows, at about half a second per million on
/// an idle core: 0.25 s, a second or more on a loaded machine) plus its own
/// commit; at 150,000 flows/s, 2.7 s of waiting is 400,000 flows (about
/// 50 MB while they wait).
pub const DEFAULT_CHANNEL_CAPACITY: usize = 400_000;

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            batch_rows: 16 * 1024,
            batch_age: Duration::from_millis(250),
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
            busy_retry_for: Duration::from_secs(30),
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
            .field("busy_retry_for", &self.busy_retry_for)
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
    /// Failed write attempts whose rows were lost.
    pub store_failures: u64,
    /// Write attempts that found the database busy or locked and were tried
    /// again (no loss).
    pub busy_retries: u64,
    /// Transactions committed (flows and write jobs) and how long each took,
    /// from its start to its commit.
    pub commit_latency: LatencySnapshot,
}

#[derive(Debug, Default)]
struct Shared {
    received: AtomicU64,
    stored: AtomicU64,
    not_stored: AtomicU64,
    failures: AtomicU64,
    busy_retries: AtomicU64,
    commit_latency: LatencyHistogram,
    /// Messages in the channel that count against `channel_capacity`.
    queued: AtomicUsize,
}

impl Shared {
    fn snapshot(&self) -> WriterCounters {
        WriterCounters {
            rows_received: self.received.load(Ordering::Relaxed),
            rows_stored: self.stored.load(Ordering::Relaxed),
            rows_not_stored: self.not_stored.load(Ordering::Relaxed),
            store_failures: self.failures.load(Ordering::Relaxed),
            busy_retries: self.busy_retries.load(Ordering::Relaxed),
            commit_latency: self.commit_latency.snapshot(),
        }
    }

    /// Takes a place in the backlog; false when it is full.
    fn reserve(&self, capacity: usize) -> bool {
        if self.queued.fetch_add(1, Ordering::Relaxed) < capacity {
            true
        } else {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }

    /// Gives a place back (the writer took the message, or it was not sent).
    fn release(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Msg {
    Flow(FlowBegin),
    Counters(CaptureCounters),
    Job(WriteJob),
    Flush(mpsc::SyncSender<()>),
    Stop,
}

impl Msg {
    /// Whether the message holds a place in the backlog.
    fn counted(&self) -> bool {
        matches!(self, Msg::Flow(_) | Msg::Counters(_) | Msg::Job(_))
    }
}

/// The writer thread and the way to feed it. Dropping it stops the thread
/// after committing what it has.
#[derive(Debug)]
pub struct StoreWriter {
    tx: Sender<Msg>,
    capacity: usize,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl StoreWriter {
    /// Starts the writer for the data directory `dir`. It opens the
    /// database itself; if it cannot, it says so in the log, counts rows as
    /// not stored, and retries.
    pub fn spawn(dir: impl Into<PathBuf>, config: WriterConfig) -> Result<StoreWriter, StoreError> {
        let dir = dir.into();
        let (tx, rx) = mpsc::channel();
        let capacity = config.channel_capacity.max(1);
        let shared = Arc::new(Shared::default());
        let worker = Worker::new(dir.clone(), config, Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("flowsql-store".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| StoreError::io("start the store writer thread for", dir, e))?;
        Ok(StoreWriter { tx, capacity, shared, thread: Some(thread) })
    }

    /// Queues a counted message if the backlog has room.
    fn try_queue(&self, msg: Msg) -> bool {
        if !self.shared.reserve(self.capacity) {
            return false;
        }
        if self.tx.send(msg).is_err() {
            self.shared.release();
            return false;
        }
        true
    }

    /// Queues a counted message, waiting while the backlog is full; false
    /// if the writer has stopped.
    fn queue_waiting(&self, msg: Msg) -> bool {
        let mut pause = Duration::from_micros(100);
        while !self.shared.reserve(self.capacity) {
            if self.thread.as_ref().is_none_or(JoinHandle::is_finished) {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
        if self.tx.send(msg).is_err() {
            self.shared.release();
            return false;
        }
        true
    }

    /// Queues a flow without blocking; returns false (and counts the row as
    /// not stored) when the writer is too far behind.
    pub fn send(&self, flow: FlowBegin) -> bool {
        self.shared.received.fetch_add(1, Ordering::Relaxed);
        let queued = self.try_queue(Msg::Flow(flow));
        if !queued {
            self.shared.not_stored.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    /// Queues a flow, waiting while the writer is behind.
    pub fn send_blocking(&self, flow: FlowBegin) {
        self.shared.received.fetch_add(1, Ordering::Relaxed);
        if !self.queue_waiting(Msg::Flow(flow)) {
            self.shared.not_stored.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The capture's own counters, for the next `capture_stats` row.
    pub fn set_capture_counters(&self, counters: CaptureCounters) {
        // A full queue only delays the update to the next call.
        let _ = self.try_queue(Msg::Counters(counters));
    }

    /// Queues `job` for the writer's next transaction without blocking;
    /// false when the writer is too far behind (the job is dropped: the
    /// caller counts it).
    pub fn try_run_in_write_transaction(&self, job: WriteJob) -> bool {
        self.try_queue(Msg::Job(job))
    }

    /// Runs `job` in the writer's next transaction (waits for room).
    pub fn run_in_write_transaction(&self, job: WriteJob) {
        if !self.queue_waiting(Msg::Job(job)) {
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

    /// Messages waiting for the writer now (flows, jobs, counters).
    pub fn backlog(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
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

/// How long one try waits for another connection's write lock (SQLite's
/// busy handler) before the writer pauses and tries again.
const BUSY_WAIT_PER_TRY: Duration = Duration::from_millis(200);

/// The writer's pause between tries on a busy database: doubling from the
/// first to the last.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(5);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(100);

/// A wait for the database longer than this is logged (shorter ones, such
/// as an export's delete, are routine).
const BUSY_LOG_AFTER: Duration = Duration::from_secs(5);

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
            let msg = rx.recv_timeout(timeout.max(Duration::from_millis(1)));
            if let Ok(msg) = &msg
                && msg.counted()
            {
                self.shared.release();
            }
            match msg {
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
                self.write_stats(now, Duration::ZERO);
            }
        }
        self.flush();
        self.stats_dirty = true;
        let now = Instant::now();
        // The last counters are the ones `flowsql status` shows: wait for a
        // busy database as for flows.
        self.write_stats(now, self.config.busy_retry_for);
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
        match self.open() {
            Ok(open) => open,
            Err(e) if e.is_transient() => {
                tracing::debug!(error = %e, "the database is busy: opening it later");
                false
            }
            Err(e) => {
                self.record_failure(&e, 0);
                false
            }
        }
    }

    /// Opens the database if it is not open: `Ok(true)` if it is,
    /// `Ok(false)` if the last failed attempt is too recent to try again,
    /// the error if this attempt failed.
    fn open(&mut self) -> Result<bool, StoreError> {
        if self.store.is_some() {
            return Ok(true);
        }
        let now = Instant::now();
        if self.last_open_attempt.is_some_and(|t| now.duration_since(t) < self.config.reopen_every) {
            return Ok(false);
        }
        self.last_open_attempt = Some(now);
        let store = Store::open_for_capture(&self.dir).inspect_err(|e| {
            if e.is_transient() {
                // Busy, not broken: the caller may try again at once.
                self.last_open_attempt = None;
            }
        })?;
        // Waits for the write lock are the writer's own (see `commit`), so
        // that it can count, log and bound them.
        store
            .hot()
            .connection()
            .busy_timeout(BUSY_WAIT_PER_TRY)
            .map_err(|e| StoreError::sqlite("configure", store.hot().path(), e))?;
        self.store = Some(store);
        Ok(true)
    }

    /// Commits `batch` (the oldest rows received) and the queued jobs. While
    /// the database is busy or locked, the batch is kept and tried again
    /// after a short pause (new flows wait in the channel meanwhile), for up
    /// to `busy_retry_for`; its rows are lost only after that, or on an
    /// error that waiting does not clear.
    fn commit(&mut self, batch: Option<RecordBatch>) {
        let rows = batch.as_ref().map_or(0, |b| b.num_rows() as u64);
        let started = Instant::now();
        let mut pause = RETRY_PAUSE_MIN;
        let mut last_logged: Option<Instant> = None;
        loop {
            let result = match (self.open(), self.store.as_mut()) {
                (Ok(true), Some(store)) => {
                    let began = Instant::now();
                    let result =
                        try_commit(store, &mut self.jobs, self.config.live.as_deref(), batch.as_ref());
                    if result.is_ok() {
                        self.shared.commit_latency.record(began.elapsed());
                    }
                    result
                }
                (Err(e), _) => Err(e),
                (Ok(_), _) => {
                    // A recent attempt to open failed (and was reported).
                    self.lose(rows);
                    return;
                }
            };
            let error = match result {
                Ok(()) => {
                    self.committed(rows);
                    if started.elapsed() >= BUSY_LOG_AFTER {
                        tracing::info!(waited = ?started.elapsed(), rows, "flows stored after waiting for the database");
                    }
                    return;
                }
                Err(e) => e,
            };
            let waited = started.elapsed();
            if error.is_transient() && waited < self.config.busy_retry_for {
                self.shared.busy_retries.fetch_add(1, Ordering::Relaxed);
                if waited >= BUSY_LOG_AFTER && last_logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    last_logged = Some(Instant::now());
                    tracing::warn!(
                        error = %crate::export::error_chain(&error),
                        waited = ?waited,
                        rows_waiting = rows as usize + self.shared.queued.load(Ordering::Relaxed),
                        "the database is busy: flows wait in memory"
                    );
                } else {
                    tracing::debug!(error = %error, "the database is busy: trying again");
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(RETRY_PAUSE_MAX);
                continue;
            }
            self.shared.failures.fetch_add(1, Ordering::Relaxed);
            self.record_failure(&error, rows);
            self.discard(rows);
            if !error.is_disk_full() && !error.is_transient() {
                // Read-only, removed, corrupt...: start over with a new connection.
                self.store = None;
            }
            return;
        }
    }

    /// Bookkeeping after a commit of `rows` rows.
    fn committed(&mut self, rows: u64) {
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

    /// [`discard`](Self::discard), counted in the failure going on.
    fn lose(&mut self, rows: u64) {
        if let Some(failure) = &mut self.failing {
            failure.rows += rows;
        }
        self.discard(rows);
    }

    /// Counts the oldest `rows` received rows, and the queued jobs, as not
    /// stored; they leave the live rows.
    fn discard(&mut self, rows: u64) {
        self.shared.not_stored.fetch_add(rows, Ordering::Relaxed);
        if let Some(live) = &self.config.live {
            let mut pending = live.lock();
            let lost = usize::try_from(rows).unwrap_or(usize::MAX).min(pending.len());
            pending.drain(..lost);
        }
        let jobs = std::mem::take(&mut self.jobs).len();
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

    /// Writes the counters to `capture_stats` if they changed; a busy
    /// database is waited for up to `busy_wait`, else tried again next time.
    fn write_stats(&mut self, now: Instant, busy_wait: Duration) {
        self.last_stats = now;
        let mut pause = RETRY_PAUSE_MIN;
        loop {
            match self.try_write_stats() {
                Err(e) if e.is_transient() && now.elapsed() < busy_wait => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(RETRY_PAUSE_MAX);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "capture_stats not recorded; retrying later");
                    return;
                }
                Ok(()) => return,
            }
        }
    }

    fn try_write_stats(&mut self) -> Result<(), StoreError> {
        if !self.config.record_stats || !self.stats_dirty || !self.ensure_open() {
            return Ok(());
        }
        let Some(store) = self.store.as_mut() else { return Ok(()) };
        let counters = self.shared.snapshot();
        let capture = &self.capture;
        let session = self.session_ns;
        // The writer's own counters beside the capture's, as the metrics
        // show them.
        let mut named = capture.counters.clone();
        named.insert("rowsReceived".to_owned(), counters.rows_received);
        named.insert("busyRetries".to_owned(), counters.busy_retries);
        named.insert("commits".to_owned(), counters.commit_latency.count);
        named.insert("commitNanos".to_owned(), counters.commit_latency.sum_ns);
        let extra = serde_json::to_string(&named).unwrap_or_else(|_| "{}".to_owned());
        store.hot_mut().with_write_transaction(|tx, _| {
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
        })?;
        self.stats_dirty = false;
        self.unsynced = true;
        Ok(())
    }
}

/// One try at committing `batch` and the queued `jobs` in one transaction.
/// The jobs are taken only once the flows are in, so a busy database (which
/// fails the transaction's start) keeps them for the next try. With live
/// rows, their lock is held across the commit only, and the rows of `batch`
/// leave them when it succeeds.
fn try_commit(
    store: &mut Store,
    jobs: &mut Vec<WriteJob>,
    live: Option<&LiveRows>,
    batch: Option<&RecordBatch>,
) -> Result<(), StoreError> {
    let hot = store.hot_mut();
    let path = hot.path().to_owned();
    let (tx, json) = hot.begin_write()?;
    if let Some(batch) = batch {
        insert_flows_in(&tx, batch, json)?;
    }
    for job in jobs.drain(..) {
        run_job(&tx, json, job);
    }
    let mut pending = live.map(LiveRows::lock);
    tx.commit().map_err(|e| StoreError::sqlite("commit", path, e))?;
    if let (Some(pending), Some(batch)) = (pending.as_mut(), batch) {
        let committed = batch.num_rows().min(pending.len());
        pending.drain(..committed);
    }
    Ok(())
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
