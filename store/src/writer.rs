//! The store writer: a thread that owns the capture's SQLite connection,
//! batches flows ([`FlowBatcher`]) and commits each batch as one hot-tier
//! row (an Arrow IPC stream, see [`crate::hot`]), with the domains the DNS
//! answers taught and the counters, in one transaction, so that a captured
//! flow is committed within `batch_age` (250 ms by default) and, with a WAL
//! checkpoint every second, durable on disk within about a second.
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
use flowsql_event::{DomainObservation, FlowBegin, FlowEnd};

use crate::database::{Database, MemoryUse};
use crate::dir::DataDir;
use crate::ends::EndBatcher;
use crate::flows::FlowBatcher;
use crate::hot::{self, EncodedBatch};
use crate::ipc::HOT_COMPRESSION;
use crate::latency::{LatencyHistogram, LatencySnapshot};
use crate::live::LiveRows;
use crate::migrations::MIGRATIONS;
use crate::schema::{flow_ends_table, flows_table};
use crate::stats::{self, SessionCounters};
use crate::table::EventTable;
use crate::{StoreError, domains, now_ns};

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
    /// Flows (and other messages) waiting for the writer at most; beyond
    /// this, [`StoreWriter::send`] counts them as not stored rather than
    /// block the capture. Memory is only used for the flows actually
    /// waiting (about 120 bytes each).
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

/// The default bound of the writer's backlog: seconds of the highest
/// connection rates measured, while the database is busy (about 50 MB
/// while they wait).
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
    /// Domain observations dropped (backlog full, failed write).
    pub domains_not_stored: u64,
    /// Transactions committed (batches, domains) and how long each took,
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
    domains_not_stored: AtomicU64,
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
            domains_not_stored: self.domains_not_stored.load(Ordering::Relaxed),
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
    End(FlowEnd),
    /// A batch of any event table, committed as it is.
    Batch(EventTable, RecordBatch),
    Domains(Vec<DomainObservation>),
    Counters(CaptureCounters),
    Flush(mpsc::SyncSender<()>),
    Stop,
}

impl Msg {
    /// Whether the message holds a place in the backlog.
    fn counted(&self) -> bool {
        matches!(self, Msg::Flow(_) | Msg::End(_) | Msg::Batch(..) | Msg::Domains(_) | Msg::Counters(_))
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

    /// Queues a connection end (a `flow_ends` row) without blocking, in
    /// the same transactions as the flows; returns false (and counts the
    /// row as not stored) when the writer is too far behind.
    pub fn send_end(&self, end: FlowEnd) -> bool {
        self.shared.received.fetch_add(1, Ordering::Relaxed);
        let queued = self.try_queue(Msg::End(end));
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

    /// Queues what DNS answers taught, for the `domains` table, in the
    /// writer's next transaction, without blocking; false when the writer
    /// is too far behind (they are dropped and counted in
    /// `domains_not_stored`).
    pub fn record_domains(&self, observations: Vec<DomainObservation>) -> bool {
        let count = observations.len() as u64;
        let queued = observations.is_empty() || self.try_queue(Msg::Domains(observations));
        if !queued {
            self.shared.domains_not_stored.fetch_add(count, Ordering::Relaxed);
        }
        queued
    }

    /// Queues a batch of `table` (any event table the store knows), waiting
    /// while the writer is behind; it is committed as one hot-tier row.
    /// Rows of a batch that does not fit the table are counted as not
    /// stored.
    pub fn send_batch(&self, table: &EventTable, batch: RecordBatch) {
        let rows = batch.num_rows() as u64;
        self.shared.received.fetch_add(rows, Ordering::Relaxed);
        if !self.queue_waiting(Msg::Batch(table.clone(), batch)) {
            self.shared.not_stored.fetch_add(rows, Ordering::Relaxed);
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

    /// Messages waiting for the writer now (flows, batches, domains, counters).
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
    dir: DataDir,
    config: WriterConfig,
    shared: Arc<Shared>,
    db: Option<Database>,
    batcher: FlowBatcher,
    ends: EndBatcher,
    /// Batches of other tables, committed with the next transaction.
    batches: Vec<(EventTable, RecordBatch)>,
    /// Rows of `flow_ends` among `batches` (they leave the live rows with them).
    end_rows: u64,
    domains: Vec<DomainObservation>,
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
            ends: EndBatcher::new(config.batch_rows, config.batch_age),
            end_rows: 0,
            dir: DataDir::new(dir),
            config,
            shared,
            db: None,
            batches: Vec::new(),
            domains: Vec::new(),
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
            for due in [self.batcher.due_in(now), self.ends.due_in(now)].into_iter().flatten() {
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
                        live.lock().flows.push_back(flow);
                    }
                    if let Some(batch) = batch {
                        self.commit(Some(batch));
                    }
                }
                Ok(Msg::End(end)) => {
                    let batch = self.ends.push(&end);
                    if let Some(live) = &self.config.live {
                        live.lock().ends.push_back(end);
                    }
                    if let Some(batch) = batch {
                        self.queue_ends(batch);
                        self.commit(None);
                    }
                }
                Ok(Msg::Counters(counters)) => {
                    self.stats_dirty |= counters != self.capture;
                    self.capture = counters;
                }
                Ok(Msg::Batch(table, batch)) => {
                    self.batches.push((table, batch));
                    self.commit(None);
                }
                Ok(Msg::Domains(observations)) => {
                    self.domains.extend(observations);
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
            if let Some(batch) = self.ends.poll(now) {
                self.queue_ends(batch);
            }
            if let Some(batch) = self.batcher.poll(now) {
                self.commit(Some(batch));
            } else if self.end_rows > 0 {
                self.commit(None);
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

    /// Adds a batch of ends to the next transaction.
    fn queue_ends(&mut self, batch: RecordBatch) {
        self.end_rows += batch.num_rows() as u64;
        self.batches.push((flow_ends_table().clone(), batch));
    }

    fn flush(&mut self) {
        if let Some(batch) = self.ends.flush() {
            self.queue_ends(batch);
        }
        if let Some(batch) = self.batcher.flush() {
            self.commit(Some(batch));
        } else if !self.domains.is_empty() || !self.batches.is_empty() {
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
        if self.db.is_some() {
            return Ok(true);
        }
        let now = Instant::now();
        if self.last_open_attempt.is_some_and(|t| now.duration_since(t) < self.config.reopen_every) {
            return Ok(false);
        }
        self.last_open_attempt = Some(now);
        let opened = self
            .dir
            .create()
            .and_then(|()| Database::open(&self.dir.db_path(), MIGRATIONS, MemoryUse::Lean))
            .inspect_err(|e| {
                if e.is_transient() {
                    // Busy, not broken: the caller may try again at once.
                    self.last_open_attempt = None;
                }
            })?;
        // Waits for the write lock are the writer's own (see `commit`), so
        // that it can count, log and bound them.
        opened.set_busy_timeout(BUSY_WAIT_PER_TRY)?;
        self.db = Some(opened);
        Ok(true)
    }

    /// Commits `batch` (the oldest flows received), the queued batches of
    /// other tables and the queued domains. While the database is busy or
    /// locked, they are kept and tried again after a short pause (new flows
    /// wait in the channel meanwhile), for up to `busy_retry_for`; their
    /// rows are lost only after that, or on an error that waiting does not
    /// clear.
    fn commit(&mut self, batch: Option<RecordBatch>) {
        let flow_rows = batch.as_ref().map_or(0, |b| b.num_rows() as u64);
        let rows = flow_rows + self.batches.iter().map(|(_, b)| b.num_rows() as u64).sum::<u64>();
        // Encoded once, before any lock is taken.
        let encoded = match self.encode(batch.as_ref()) {
            Ok(encoded) => encoded,
            Err(e) => {
                self.shared.failures.fetch_add(1, Ordering::Relaxed);
                self.record_failure(&e, rows);
                self.discard(flow_rows, rows);
                return;
            }
        };
        let started = Instant::now();
        let mut pause = RETRY_PAUSE_MIN;
        let mut last_logged: Option<Instant> = None;
        loop {
            let result = match (self.open(), self.db.as_mut()) {
                (Ok(true), Some(db)) => {
                    let began = Instant::now();
                    let result = try_commit(
                        db,
                        &encoded,
                        &self.domains,
                        self.config.live.as_deref(),
                        (flow_rows, self.end_rows),
                    );
                    if result.is_ok() {
                        self.shared.commit_latency.record(began.elapsed());
                    }
                    result
                }
                (Err(e), _) => Err(e),
                (Ok(_), _) => {
                    // A recent attempt to open failed (and was reported).
                    self.lose(flow_rows, rows);
                    return;
                }
            };
            let error = match result {
                Ok(()) => {
                    self.batches.clear();
                    self.end_rows = 0;
                    self.domains.clear();
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
            self.discard(flow_rows, rows);
            if !error.is_disk_full() && !error.is_transient() {
                // Read-only, removed, corrupt...: start over with a new connection.
                self.db = None;
            }
            return;
        }
    }

    /// The flows batch and the queued batches, each sorted and encoded, with
    /// its table's name.
    fn encode(&self, flows: Option<&RecordBatch>) -> Result<Vec<(&'static str, EncodedBatch)>, StoreError> {
        let mut encoded = Vec::with_capacity(1 + self.batches.len());
        let all =
            flows.map(|b| (flows_table(), b)).into_iter().chain(self.batches.iter().map(|(t, b)| (t, b)));
        for (table, batch) in all {
            table.check(batch)?;
            if let Some(batch) = hot::encode(table, batch, HOT_COMPRESSION)? {
                encoded.push((table.name(), batch));
            }
        }
        Ok(encoded)
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
    fn lose(&mut self, flow_rows: u64, rows: u64) {
        if let Some(failure) = &mut self.failing {
            failure.rows += rows;
        }
        self.discard(flow_rows, rows);
    }

    /// Counts `rows` rows (the oldest `flow_rows` flows received, and the
    /// queued batches), and the queued domains, as not stored; the flows
    /// leave the live rows.
    fn discard(&mut self, flow_rows: u64, rows: u64) {
        self.shared.not_stored.fetch_add(rows, Ordering::Relaxed);
        if let Some(live) = &self.config.live {
            let mut pending = live.lock();
            drain_oldest(&mut pending.flows, flow_rows);
            drain_oldest(&mut pending.ends, self.end_rows);
        }
        self.batches.clear();
        self.end_rows = 0;
        let domains = std::mem::take(&mut self.domains).len();
        if domains > 0 {
            self.shared.domains_not_stored.fetch_add(domains as u64, Ordering::Relaxed);
            tracing::warn!(domains, "the database is unavailable: domain observations dropped");
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
        if let Some(db) = &self.db {
            match db.checkpoint() {
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
        let Some(db) = self.db.as_mut() else { return Ok(()) };
        let counters = self.shared.snapshot();
        let capture = &self.capture;
        // The writer's own counters beside the capture's, as the metrics
        // show them.
        let mut named = capture.counters.clone();
        named.insert("rowsReceived".to_owned(), counters.rows_received);
        named.insert("busyRetries".to_owned(), counters.busy_retries);
        named.insert("commits".to_owned(), counters.commit_latency.count);
        named.insert("commitNanos".to_owned(), counters.commit_latency.sum_ns);
        named.insert("domainsNotStored".to_owned(), counters.domains_not_stored);
        let row = SessionCounters {
            session_ns: self.session_ns,
            time_ns: now_ns(),
            events: capture.events,
            lost: capture.lost,
            rows_stored: counters.rows_stored,
            rows_not_stored: counters.rows_not_stored,
            store_failures: counters.store_failures,
            counters: named,
        };
        db.write(|tx| {
            stats::record(tx, &row)
                .map_err(|e| StoreError::sqlite("record capture_stats", tx.path().unwrap_or(""), e))
        })?;
        self.stats_dirty = false;
        self.unsynced = true;
        Ok(())
    }
}

/// Removes the `count` oldest rows of a live queue.
fn drain_oldest<T>(queue: &mut std::collections::VecDeque<T>, count: u64) {
    let count = usize::try_from(count).unwrap_or(usize::MAX).min(queue.len());
    queue.drain(..count);
}

/// One try at committing the encoded batches and the `domains` in one
/// transaction. With live rows, their lock is held across the commit only,
/// and the oldest flows and ends committed (`committed`) leave them when it
/// succeeds.
fn try_commit(
    db: &mut Database,
    batches: &[(&'static str, EncodedBatch)],
    domains: &[DomainObservation],
    live: Option<&LiveRows>,
    (flow_rows, end_rows): (u64, u64),
) -> Result<(), StoreError> {
    let path = db.path().to_owned();
    let sqlite = |e| StoreError::sqlite("store a batch", &path, e);
    let now = now_ns();
    let conn = db.conn();
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| StoreError::sqlite("start a write transaction", &path, e))?;
    let written = (|| {
        for (table, batch) in batches {
            hot::insert(conn, table, batch, now).map_err(sqlite)?;
        }
        if !domains.is_empty() {
            domains::record(conn, domains)?;
        }
        Ok::<(), StoreError>(())
    })();
    if let Err(e) = written {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e);
    }
    let mut pending = live.map(LiveRows::lock);
    if let Err(e) = conn.execute_batch("COMMIT") {
        drop(pending);
        let _ = conn.execute_batch("ROLLBACK");
        return Err(StoreError::sqlite("commit", &path, e));
    }
    if let Some(pending) = pending.as_mut() {
        drain_oldest(&mut pending.flows, flow_rows);
        drain_oldest(&mut pending.ends, end_rows);
    }
    Ok(())
}
