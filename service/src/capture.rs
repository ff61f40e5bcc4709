//! One capture from start to stop, in three steps:
//!
//! 1. [`CaptureService::start`] attaches the programs, prepares the data
//!    directory, teaches the name cache the names still valid in it,
//!    starts the store writer and the scheduled export (and, as a service,
//!    drops capabilities, serves metrics and tells systemd it is ready);
//! 2. [`CaptureService::run`] reads the ring buffer until it is told to
//!    stop (a signal, the caller's stop, its duration, a closed output),
//!    recording the kernel's counters every second and answering metrics
//!    scrapes (and, as a service, reloading on SIGHUP);
//! 3. [`CaptureService::shutdown`] detaches the programs first, waits
//!    [`DETACH_GRACE`] for program runs already under way, reads the
//!    kernel's final counters, drains what the kernel had submitted, commits
//!    every row and stops the export (an export in progress ends at its next
//!    batch; its rows stay hot). As a service this is bounded by
//!    `capture.shutdown_timeout` and cut short by a second SIGINT or SIGTERM.
//!
//! [`run_service`] is the three for `flowsql capture`; the shell runs them
//! on a thread of its own ([`crate::BackgroundCapture`]).

mod sink;

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flowsql_capture::loader::DETACH_GRACE;
use flowsql_capture::{Capture, CaptureConfig, EventReader, FlowAssembler, KernelCounters};
use flowsql_store::{
    CaptureCounters, ExportSchedule, LiveRows, ScheduledExport, Store, StoreError, StoreWriter, WriterConfig,
    WriterCounters,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use self::sink::FlowSink;
use crate::error::error_chain;
use crate::metrics::probe::{self, ScrapeRequest};
use crate::remote::{Remote, Uploader};
use crate::settings::Config;
use crate::shutdown::{self, Cut};
use crate::supervision::{Request, Service, Supervision};
use crate::{ServiceError, allocator};

/// What one capture needs.
pub struct CaptureOptions {
    /// The settings in effect: cgroup, ring buffer, data directory, export
    /// schedule, name cache, metrics, shutdown bound.
    pub config: Config,
    /// Store the flows in the data directory; false: only print them.
    pub store: bool,
    /// Where to print each flow as one JSON line, if anywhere.
    pub json: Option<Box<dyn Write + Send>>,
    /// Stop after this long; `None`: until stopped.
    pub duration: Option<Duration>,
    /// Share the uncommitted rows with this process's queries.
    pub live: Option<Arc<LiveRows>>,
    /// Answer this process's queries of `open_flows` ([`OpenFlows::channel`]).
    pub open_flows: Option<OpenFlowsRequests>,
}

/// A query of `open_flows`: the reply gets the open connections as rows.
type OpenFlowsRequest = oneshot::Sender<Result<Vec<flowsql_event::FlowEnd>, String>>;

/// Where a capture receives `open_flows` queries.
pub type OpenFlowsRequests = mpsc::Receiver<OpenFlowsRequest>;

/// `open_flows` of this process's capture: each read asks the capture loop,
/// which walks the kernel's socket storage.
#[derive(Debug, Clone)]
pub struct OpenFlows {
    requests: mpsc::Sender<OpenFlowsRequest>,
}

impl OpenFlows {
    /// The query side, and the receiver for [`CaptureOptions::open_flows`].
    pub fn channel() -> (OpenFlows, OpenFlowsRequests) {
        let (requests, receiver) = mpsc::channel(4);
        (OpenFlows { requests }, receiver)
    }

    /// The connections open now, as rows of `open_flows`; an error when the
    /// capture has stopped or does not follow connection ends here.
    pub async fn read(&self) -> Result<Vec<flowsql_store::RecordBatch>, String> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(reply).await.map_err(|_| "the capture has stopped".to_owned())?;
        let rows = answer.await.map_err(|_| "the capture has stopped".to_owned())??;
        Ok(vec![flowsql_store::batch_from_ends(&rows)])
    }
}

/// The next `open_flows` query; never, without a receiver.
async fn next_open_flows_request(requests: &mut Option<OpenFlowsRequests>) -> Option<OpenFlowsRequest> {
    match requests {
        Some(requests) => requests.recv().await,
        None => std::future::pending().await,
    }
}

impl std::fmt::Debug for CaptureOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureOptions")
            .field("store", &self.store)
            .field("json", &self.json.is_some())
            .field("duration", &self.duration)
            .field("live", &self.live.is_some())
            .field("open_flows", &self.open_flows.is_some())
            .finish_non_exhaustive()
    }
}

/// Why [`CaptureService::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// SIGINT or SIGTERM.
    Signal(&'static str),
    /// The caller's stop completed.
    Requested,
    /// The duration ran out.
    Duration,
    /// Printing failed (or its reader went away).
    Output,
}

/// A running capture: attached, storing, until it is shut down.
pub struct CaptureService {
    supervision: Supervision,
    /// The settings in effect (a reload changes some).
    config: Config,
    capture: Capture,
    reader: EventReader,
    sink: FlowSink,
    export: Option<ScheduledExport>,
    /// Uploads exported files to `export.remote` (stopped when dropped).
    _uploader: Option<Uploader>,
    store_dir: Option<PathBuf>,
    metrics: Option<tokio::task::JoinHandle<()>>,
    scrapes: mpsc::Receiver<ScrapeRequest>,
    /// Keeps `scrapes` open while no metrics are served.
    _scrape_sender: mpsc::Sender<ScrapeRequest>,
    open_flows: Option<OpenFlowsRequests>,
    /// What this kernel keeps the capture from filling (one line each).
    unavailable: Vec<String>,
    deadline: Option<Instant>,
}

impl std::fmt::Debug for CaptureService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureService")
            .field("supervision", &self.supervision)
            .field("capture", &self.capture)
            .field("store_dir", &self.store_dir)
            .finish_non_exhaustive()
    }
}

/// What a capture did, from its start to its stop: for the line a command
/// prints when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureSummary {
    /// Records that became rows (connection begins and ends).
    pub events: u64,
    /// Records the kernel could not deliver (ring buffer full).
    pub lost: u64,
    /// Rows committed to the data directory (`None`: not storing).
    pub rows_stored: Option<u64>,
    /// Rows the data directory could not keep.
    pub rows_not_stored: u64,
}

/// Runs a capture as `flowsql capture` does, on a runtime of its own: start,
/// run until SIGINT, SIGTERM or the duration, shut down. `started` is
/// called once the capture runs.
pub fn run_service(
    options: CaptureOptions,
    service: Service,
    started: impl FnOnce(),
) -> Result<CaptureSummary, ServiceError> {
    // Before any thread of the capture starts.
    allocator::tune_for_capture();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ServiceError::Start { what: "the async runtime", source })?;
    let result = runtime.block_on(async {
        let mut capture = CaptureService::start(options, Supervision::Service(service)).await?;
        started();
        capture.run(std::future::pending()).await?;
        capture.shutdown().await
    });
    // Whatever still runs on the blocking pool (a metrics read of the
    // store) is not waited for.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// The scheduled export `config` asks for; after each run the allocator
/// gives what the export freed back to the system.
pub(crate) fn export_schedule(config: &Config) -> ExportSchedule {
    ExportSchedule {
        every: config.export_every.value,
        retain: config.retain.value,
        after_export: Some(Arc::new(allocator::release_free_memory)),
        ..ExportSchedule::default()
    }
}

impl CaptureService {
    /// Attaches and starts storing (see the module documentation); returns
    /// once the capture runs, or with the reason it cannot.
    pub async fn start(
        options: CaptureOptions,
        mut supervision: Supervision,
    ) -> Result<CaptureService, ServiceError> {
        let CaptureOptions { config, store, json, duration, live, open_flows } = options;
        let store_dir = if store { Some(config.data_dir()?) } else { None };
        let metrics_server = supervision.prepare(&config).await?;
        // Attach first: without the privileges to capture, touch no data directory.
        let capture_config = CaptureConfig {
            cgroup: config.cgroup.value.clone(),
            ring_buffer_bytes: config.ring_buffer_bytes.value,
            ..CaptureConfig::default()
        };
        // A data directory that can never be one is refused before anything
        // is attached (one that cannot be written yet is waited for).
        if let Some(dir) = &store_dir {
            flowsql_store::DataDir::new(dir).check_can_be_created()?;
        }
        let (capture, reader) = Capture::attach(&capture_config)?;
        let host_name = crate::remote::host_name(&config);
        let mut assembler = FlowAssembler::with_name_cache(host_name.as_str(), config.name_cache());
        if let Some(dir) = &store_dir {
            let known = prepare_store(dir)?;
            remember_names(&mut assembler, &known);
        }
        supervision.attached(&capture);
        // Said once: what this kernel keeps the capture from filling.
        let unavailable: Vec<String> = capture.unavailable().iter().map(ToString::to_string).collect();
        for line in &unavailable {
            tracing::warn!("{line}");
        }
        let (writer, export, uploader) = match &store_dir {
            Some(dir) => {
                let (writer, export, uploader) = spawn_store(dir, &config, live, &host_name)?;
                (Some(writer), Some(export), uploader)
            }
            None => (None, None, None),
        };
        let (scrape_sender, scrapes) = mpsc::channel::<ScrapeRequest>(16);
        let metrics =
            metrics_server.map(|server| probe::serve(server, scrape_sender.clone(), store_dir.clone()));
        supervision.notify("READY=1\nSTATUS=capturing");
        Ok(CaptureService {
            supervision,
            config,
            capture,
            reader,
            sink: FlowSink::new(assembler, json, writer),
            export,
            _uploader: uploader,
            store_dir,
            metrics,
            scrapes,
            _scrape_sender: scrape_sender,
            open_flows,
            unavailable,
            deadline: duration.map(|d| Instant::now() + d),
        })
    }

    /// What this kernel keeps the capture from filling (one line each, also
    /// logged as warnings at the start).
    pub fn unavailable(&self) -> &[String] {
        &self.unavailable
    }

    /// Captures until `stop` completes, the duration ends, printing fails,
    /// or (as a service) SIGINT or SIGTERM; a service reloads on SIGHUP.
    pub async fn run(&mut self, stop: impl Future<Output = ()>) -> Result<Stopped, ServiceError> {
        // The kernel's counters go to the store every second.
        let mut counters_tick = tokio::time::interval(Duration::from_secs(1));
        let until = self.deadline;
        let deadline = async {
            match until {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        tokio::pin!(stop);
        let Self {
            supervision, config, capture, reader, sink, export, store_dir, scrapes, open_flows, ..
        } = self;
        loop {
            tokio::select! {
                read = reader.read(|item| sink.handle(item)) => {
                    read?;
                    sink.flush();
                    if sink.failed.is_some() {
                        return Ok(Stopped::Output);
                    }
                }
                _ = counters_tick.tick() => {
                    if let Some(writer) = &sink.writer {
                        match capture.counters() {
                            Ok(kernel) => writer.set_capture_counters(sink.counters(kernel, reader.fill())),
                            Err(error) => tracing::debug!(%error, "kernel counters unreadable"),
                        }
                    }
                }
                Some(reply) = next_open_flows_request(open_flows) => {
                    let rows = match capture.open_sockets() {
                        Some(open) => open
                            .read()
                            .map(|records| sink.assembler.open_flows(&records))
                            .map_err(|error| error_chain(&error)),
                        None => Err("this capture does not follow connection ends on this kernel".to_owned()),
                    };
                    let _ = reply.send(rows);
                }
                Some(reply) = scrapes.recv() => {
                    let kernel = capture.counters().unwrap_or_else(|error| {
                        tracing::debug!(%error, "kernel counters unreadable");
                        KernelCounters::default()
                    });
                    let _ = reply.send(sink.snapshot(kernel, reader.fill()));
                }
                request = supervision.next_request() => match request {
                    Request::Stop(signal) => {
                        tracing::info!(signal, "stopping: detaching, then committing every row");
                        return Ok(Stopped::Signal(signal));
                    }
                    Request::Reload => supervision.reload(config, export, store_dir.as_deref()),
                },
                () = &mut stop => return Ok(Stopped::Requested),
                () = &mut deadline => return Ok(Stopped::Duration),
            }
        }
    }

    /// Detaches, drains, commits every row and stops the export (see the
    /// module documentation); the wait for the store is bounded for a
    /// service. Returns what the capture did.
    pub async fn shutdown(self) -> Result<CaptureSummary, ServiceError> {
        let CaptureService {
            mut supervision,
            config,
            mut capture,
            mut reader,
            mut sink,
            export,
            metrics,
            ..
        } = self;
        supervision.notify("STOPPING=1");
        let stopping = Instant::now();
        let deadline = supervision.stop_bound(&config).map(|bound| stopping + bound);
        if let Some(task) = &metrics {
            task.abort();
        }
        // Detach first, then take what the kernel had already submitted.
        capture.detach();
        tokio::time::sleep(DETACH_GRACE).await;
        let counters = capture.counters().unwrap_or_else(|error| {
            tracing::warn!(%error, "the kernel's final counters are unreadable");
            KernelCounters::default()
        });
        reader.drain(|item| sink.handle(item));
        sink.flush();
        drop(capture);
        let final_counters = sink.counters(counters, reader.fill());
        let (events, lost) = (final_counters.events, final_counters.lost);
        let waiting = sink.writer.as_ref().map_or(0, StoreWriter::backlog);
        let finished = finish_store(sink.writer.take(), export, final_counters)?;
        let done = match shutdown::within(finished, deadline, supervision.next_stop()).await {
            Ok(done) => done.ok().flatten(),
            Err(Cut::TimedOut) => {
                return Err(ServiceError::StopTimedOut { bound: config.shutdown_timeout.value, waiting });
            }
            Err(Cut::Again(signal)) => return Err(ServiceError::StoppedAgain { signal, waiting }),
        };
        if let Some(done) = &done {
            if done.rows_not_stored > 0 {
                tracing::warn!(rows = done.rows_not_stored, "some flows could not be stored");
            }
            tracing::info!(rows = done.rows_stored, "store closed");
        }
        if counters.lost() > 0 {
            tracing::warn!(lost = counters.lost(), "the ring buffer was full: flows were lost");
        }
        tracing::info!(?counters, undecodable = sink.undecodable, took = ?stopping.elapsed(), "capture stopped");
        let summary = CaptureSummary {
            events,
            lost,
            rows_stored: done.as_ref().map(|d| d.rows_stored),
            rows_not_stored: done.as_ref().map_or(0, |d| d.rows_not_stored),
        };
        match sink.failed {
            // A reader that went away (`| head`) is a normal way to stop.
            Some(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(summary),
            Some(error) => Err(ServiceError::Output(error)),
            None => Ok(summary),
        }
    }
}

/// Creates, migrates and recovers the store now, so that problems show
/// before capturing (and while the process still has every privilege), and
/// returns the DNS names still valid in it. A directory that cannot be
/// written yet is not fatal: the writer counts what it cannot store and
/// retries.
fn prepare_store(dir: &Path) -> Result<Vec<flowsql_event::DomainObservation>, ServiceError> {
    let store = match Store::open(dir) {
        Ok(store) => store,
        Err(error @ (StoreError::SchemaTooNew { .. } | StoreError::NotADirectory { .. })) => {
            return Err(error.into());
        }
        Err(error) => {
            tracing::error!(
                error = %error_chain(&error),
                "the data directory is not usable yet: flows are counted as not stored until it is"
            );
            return Ok(Vec::new());
        }
    };
    match store.domains_valid_at(flowsql_store::now_ns()) {
        Ok(known) => Ok(known),
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "the names learned before this start are not known again");
            Ok(Vec::new())
        }
    }
}

/// Teaches the name cache what earlier captures of this data directory
/// learned and is still valid: names resolved before a restart keep naming
/// flows while their TTL lasts.
fn remember_names(assembler: &mut FlowAssembler, known: &[flowsql_event::DomainObservation]) {
    if known.is_empty() {
        return;
    }
    let remembered = assembler.remember(known, flowsql_store::now_ns());
    tracing::info!(names = remembered, "names learned before this start are known again until they expire");
}

/// Starts the store writer thread and the scheduled export.
fn spawn_store(
    dir: &Path,
    config: &Config,
    live: Option<Arc<LiveRows>>,
    host_name: &str,
) -> Result<(StoreWriter, ScheduledExport, Option<Uploader>), ServiceError> {
    tracing::info!(dir = %dir.display(), "storing flows");
    let writer = StoreWriter::spawn(dir, WriterConfig { live, ..WriterConfig::default() })
        .map_err(|source| ServiceError::StoreWriter { dir: dir.to_owned(), source: Box::new(source) })?;
    let mut schedule = export_schedule(config);
    let uploader = match &config.remote.value {
        Some(url) => {
            let remote = Remote::new(url, config.remote_endpoint.value.as_deref())?;
            let uploader = Uploader::start(dir, remote, host_name.to_owned())?;
            let notify = uploader.notifier();
            schedule.after_export = Some(Arc::new(move || {
                allocator::release_free_memory();
                notify();
            }));
            Some(uploader)
        }
        None => {
            // Retention no longer waits for uploads.
            let mut store = flowsql_store::Store::open_without_recovery(dir)
                .map_err(|source| ServiceError::Store(Box::new(source)))?;
            if store.upload_status().ok().flatten().is_some() {
                store.set_upload_remote(None).map_err(|source| ServiceError::Store(Box::new(source)))?;
            }
            None
        }
    };
    let export = ScheduledExport::spawn(dir, schedule)
        .map_err(|source| ServiceError::ScheduledExport { dir: dir.to_owned(), source: Box::new(source) })?;
    Ok((writer, export, uploader))
}

/// Commits what the writer has and stops the scheduled export (an export in
/// progress ends at its next batch; its uncommitted rows stay hot for the
/// next run), on a thread of its own so that the caller can bound the wait.
fn finish_store(
    writer: Option<StoreWriter>,
    export: Option<ScheduledExport>,
    counters: CaptureCounters,
) -> Result<oneshot::Receiver<Option<WriterCounters>>, ServiceError> {
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("flowsql-stop".into())
        .spawn(move || {
            if let Some(export) = &export {
                export.interrupt();
            }
            let done = writer.map(|writer| {
                writer.set_capture_counters(counters);
                writer.finish()
            });
            if let Some(export) = export {
                export.stop();
            }
            let _ = done_tx.send(done);
        })
        .map_err(|source| ServiceError::Start { what: "the thread that stops the store", source })?;
    Ok(done_rx)
}
