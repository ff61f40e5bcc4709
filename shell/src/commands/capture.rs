//! `flowsql capture`: attach the programs and record flows until told to stop.
//!
//! Flows go to the store (the data directory) by default, through the store
//! writer thread; the scheduled export moves closed windows to Parquet and
//! applies retention. `--json` also prints each flow on stdout.

use std::future::Future;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use flowsql_capture::dns::NameCacheConfig;
use flowsql_capture::loader::DETACH_GRACE;
use flowsql_capture::{
    Assembled, Capture, CaptureConfig, FlowAssembler, KernelCounters, RingBufFill, assemble,
};
use flowsql_store::{
    CaptureCounters, ExportSchedule, LiveRows, ScheduledExport, Store, StoreWriter, WriterConfig,
    WriterCounters,
};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::cli::{CaptureArgs, CaptureSettingsArgs, GlobalArgs};
use crate::config::Config;
use crate::logging::Logging;
use crate::metrics::{self, CaptureSnapshot, StoreSnapshot};
use crate::{privileges, systemd};

pub fn run(
    args: CaptureArgs,
    global: GlobalArgs,
    config: Config,
    logging: Logging,
) -> anyhow::Result<ExitCode> {
    tune_allocator();
    if !args.json && args.no_store {
        anyhow::bail!("nothing to write the flows to: --no-store needs --json to print them");
    }
    let duration = match args.duration {
        Some(secs) if !(secs.is_finite() && secs >= 0.0) => {
            anyhow::bail!("--duration must be a number of seconds >= 0, not {secs}")
        }
        Some(secs) => Some(Duration::from_secs_f64(secs)),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let store = if args.no_store {
        None
    } else {
        Some(StoreSettings { dir: config.data_dir()?, schedule: export_schedule(&config) })
    };
    let run = CaptureRun {
        config: CaptureConfig {
            cgroup: config.cgroup.value.clone(),
            ring_buffer_bytes: config.ring_buffer_bytes.value,
            ..CaptureConfig::default()
        },
        name_cache: config.name_cache(),
        duration,
        out: args.json.then(|| BufWriter::with_capacity(64 * 1024, io::stdout())),
        store,
        live: None,
        open_flows: None,
        service: Some(Service { global, flags: args.settings, config, logging }),
    };
    let result = runtime.block_on(capture(run, std::future::pending(), |_| {}));
    // Whatever still runs on the blocking pool (a metrics read of the
    // store) is not waited for.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// Tunes the C allocator for a long-running capture:
/// - two malloc arenas instead of eight per core: the capture's threads (ring
///   buffer reader, store writer, export and its encoder, metrics) each
///   allocated in an arena of their own, and every arena keeps what it once
///   held (about 14 MB more resident after an export, measured in the soak
///   test);
/// - a fixed mmap threshold: by default glibc raises the threshold to the
///   size of each large block freed, so from the second export on, an
///   export's batch buffers came from the heap instead of their own
///   mappings and stayed resident afterwards (the level between exports
///   rose from 14 to 24 MB in the soak test); at a fixed 256 KiB they are
///   unmapped when freed.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt changes tuning parameters of the C allocator; called
    // before the capture's threads start, it races with no allocation that
    // depends on it.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// The export schedule the configuration asks for.
pub fn export_schedule(config: &Config) -> ExportSchedule {
    ExportSchedule {
        every: config.export_every.value,
        retain: config.retain.value,
        after_export: Some(Arc::new(release_free_memory)),
        ..ExportSchedule::default()
    }
}

/// Gives the memory an export freed back to the system. An export's
/// batches and encoder buffers are freed when it ends, but the C allocator
/// keeps freed memory in its arenas: without this, the capture's resident
/// memory would stay at its largest export's peak until the next one.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator's own
    // arenas to the system; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Where and how a capture stores its flows.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub dir: PathBuf,
    pub schedule: ExportSchedule,
}

/// What `flowsql capture` adds to a capture, as a service: SIGINT and
/// SIGTERM stop it within `capture.shutdown_timeout`, SIGHUP reloads the
/// configuration, metrics are served, capabilities are dropped once
/// attached, and systemd is told how it goes.
pub struct Service {
    /// The command line, to read the configuration again on SIGHUP.
    pub global: GlobalArgs,
    pub flags: CaptureSettingsArgs,
    /// The configuration in effect.
    pub config: Config,
    pub logging: Logging,
}

/// Everything one capture needs.
pub struct CaptureRun {
    pub config: CaptureConfig,
    /// The DNS name cache's limits.
    pub name_cache: NameCacheConfig,
    /// Stop after this long; `None`: until stopped.
    pub duration: Option<Duration>,
    /// Where to print JSON lines, if anywhere.
    pub out: Option<BufWriter<io::Stdout>>,
    /// The data directory and its export schedule; `None`: do not store.
    pub store: Option<StoreSettings>,
    /// Share the uncommitted rows with this process's queries.
    pub live: Option<Arc<LiveRows>>,
    /// Answer this process's queries of `open_flows`.
    pub open_flows: Option<OpenFlowsRequests>,
    /// The service side (the capture command). The shell has none: it
    /// handles Ctrl-C itself, to cancel queries, and keeps its privileges.
    pub service: Option<Service>,
}

/// A query of `open_flows`: the reply gets the open connections as rows.
type OpenFlowsRequest = tokio::sync::oneshot::Sender<Result<Vec<flowsql_event::FlowEnd>, String>>;

/// Where a capture receives `open_flows` queries.
pub type OpenFlowsRequests = tokio::sync::mpsc::Receiver<OpenFlowsRequest>;

/// `open_flows` of this process's capture: each read asks the capture loop,
/// which walks the kernel's socket storage.
#[derive(Debug)]
pub struct CaptureOpenFlows {
    requests: tokio::sync::mpsc::Sender<OpenFlowsRequest>,
}

impl CaptureOpenFlows {
    /// The query side, and the receiver for [`CaptureRun::open_flows`].
    pub fn channel() -> (CaptureOpenFlows, OpenFlowsRequests) {
        let (requests, receiver) = tokio::sync::mpsc::channel(4);
        (CaptureOpenFlows { requests }, receiver)
    }
}

#[async_trait::async_trait]
impl flowsql_query::OpenFlows for CaptureOpenFlows {
    async fn read(&self) -> Result<Vec<flowsql_store::RecordBatch>, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
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

/// A capture running on its own thread, for `flowsql shell --capture`.
/// Dropping it stops the capture and commits what it has.
pub struct BackgroundCapture {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<ExitCode>>>,
    /// What the capture cannot fill on this kernel (one line each).
    pub unavailable: Vec<String>,
}

impl BackgroundCapture {
    /// Starts capturing; returns once the programs are attached (or with the
    /// reason they could not be).
    pub fn start(run: CaptureRun) -> anyhow::Result<BackgroundCapture> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Vec<String>, String>>();
        let thread = std::thread::Builder::new()
            .name("flowsql-capture".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("failed to start the capture's async runtime")?;
                let ready = ready_tx.clone();
                let result = runtime.block_on(capture(
                    run,
                    async {
                        let _ = stop_rx.await;
                    },
                    move |attached| {
                        let _ = ready.send(attached);
                    },
                ));
                if let Err(error) = &result {
                    let _ = ready_tx.send(Err(crate::error_chain(error)));
                }
                result
            })
            .context("failed to start the capture thread")?;
        match ready_rx.recv() {
            Ok(Ok(unavailable)) => {
                Ok(BackgroundCapture { stop: Some(stop_tx), thread: Some(thread), unavailable })
            }
            Ok(Err(message)) => {
                let _ = thread.join();
                Err(anyhow::anyhow!(message))
            }
            Err(_) => match thread.join() {
                Ok(Err(error)) => Err(error),
                _ => Err(anyhow::anyhow!("the capture thread stopped before attaching")),
            },
        }
    }

    /// Stops capturing: detaches, commits what was captured.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result.map(|_| ()),
            Some(Err(_)) => Err(anyhow::anyhow!("the capture thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for BackgroundCapture {
    fn drop(&mut self) {
        if let Err(error) = self.stop_thread() {
            tracing::error!(error = %crate::error_chain(&error), "capture stopped with an error");
        }
    }
}

/// Creates, migrates and recovers the store now, so that problems show
/// before capturing (and while the process still has every privilege). A
/// directory that cannot be written yet is not fatal: the writer counts
/// what it cannot store and retries.
fn prepare_store(dir: &Path) -> anyhow::Result<()> {
    match Store::open(dir) {
        Ok(store) => drop(store),
        Err(error @ flowsql_store::StoreError::SchemaTooNew { .. }) => return Err(error.into()),
        Err(error) => tracing::error!(
            error = %crate::error_chain(&anyhow::Error::from(error)),
            "the data directory is not usable yet: flows are counted as not stored until it is"
        ),
    }
    Ok(())
}

/// Starts the store writer thread and the scheduled export.
fn spawn_store(
    settings: &StoreSettings,
    live: Option<Arc<LiveRows>>,
) -> anyhow::Result<(StoreWriter, ScheduledExport)> {
    let dir = &settings.dir;
    tracing::info!(dir = %dir.display(), "storing flows");
    let writer = StoreWriter::spawn(dir, WriterConfig { live, ..WriterConfig::default() })
        .with_context(|| format!("failed to start the store writer for {}", dir.display()))?;
    let export = ScheduledExport::spawn(dir, settings.schedule.clone())
        .with_context(|| format!("failed to start the scheduled export for {}", dir.display()))?;
    Ok((writer, export))
}

/// Prints each flow as one JSON line (a line is written whole or not at
/// all) and/or hands it to the store writer.
struct FlowSink {
    assembler: FlowAssembler,
    out: Option<BufWriter<io::Stdout>>,
    writer: Option<StoreWriter>,
    failed: Option<io::Error>,
    undecodable: u64,
    /// DNS observations the writer had no room for.
    domains_not_stored: u64,
}

impl FlowSink {
    /// Everything the capture counts, with the kernel's counters and the
    /// ring buffer's fill as read by the caller.
    fn snapshot(&self, kernel: KernelCounters, ring: RingBufFill) -> CaptureSnapshot {
        CaptureSnapshot {
            kernel,
            dns: self.assembler.dns_stats(),
            attribution: self.assembler.attribution_stats(),
            ring,
            undecodable: self.undecodable,
            domains_not_stored: self.domains_not_stored,
            writer: self.writer.as_ref().map(StoreWriter::counters),
            backlog: self.writer.as_ref().map_or(0, StoreWriter::backlog),
        }
    }

    /// The counters as the store records them in `capture_stats`.
    fn counters(&self, kernel: KernelCounters, ring: RingBufFill) -> CaptureCounters {
        CaptureCounters {
            // Records that become rows: begins and ends.
            events: kernel.flow_events + kernel.end_events,
            lost: kernel.lost(),
            counters: metrics::capture_stats_counters(&self.snapshot(kernel, ring)),
        }
    }

    fn handle(&mut self, item: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        match self.assembler.assemble(item) {
            Ok(Assembled::Flow(flow)) => {
                if let Some(out) = &mut self.out {
                    match serde_json::to_vec(&flow) {
                        Ok(mut line) => {
                            line.push(b'\n');
                            if let Err(error) = out.write_all(&line) {
                                self.failed = Some(error);
                            }
                        }
                        Err(error) => tracing::warn!(%error, "flow not printable as JSON"),
                    }
                }
                if let Some(writer) = &self.writer {
                    // A full queue is counted as loss by the writer.
                    writer.send(flow);
                }
            }
            Ok(Assembled::End(end)) => {
                if let Some(writer) = &self.writer {
                    // A full queue is counted as loss by the writer.
                    writer.send_end(end);
                }
            }
            Ok(Assembled::Learned) => {}
            Ok(Assembled::Dns(observations)) => {
                if let Some(writer) = &self.writer
                    && !observations.is_empty()
                {
                    let count = observations.len() as u64;
                    if !writer.record_domains(observations) {
                        self.domains_not_stored += count;
                    }
                }
            }
            Err(error) => {
                self.undecodable += 1;
                tracing::warn!(%error, "skipped an undecodable kernel record");
            }
        }
    }

    fn flush(&mut self) {
        if self.failed.is_none()
            && let Some(out) = &mut self.out
            && let Err(error) = out.flush()
        {
            self.failed = Some(error);
        }
    }
}

/// The signals a service handles.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

/// What a signal asks for.
enum Request {
    Stop(&'static str),
    Reload,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("failed to handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("failed to handle SIGTERM")?,
            hangup: signal(SignalKind::hangup()).context("failed to handle SIGHUP")?,
        })
    }
}

/// The next signal; never, without signal handling.
async fn next_signal(signals: &mut Option<Signals>) -> Request {
    match signals {
        Some(signals) => tokio::select! {
            _ = signals.interrupt.recv() => Request::Stop("SIGINT"),
            _ = signals.terminate.recv() => Request::Stop("SIGTERM"),
            _ = signals.hangup.recv() => Request::Reload,
        },
        None => std::future::pending().await,
    }
}

/// The store as the metrics see it: opened read-only on first use.
struct StoreProbe {
    dir: PathBuf,
    store: std::sync::Mutex<Option<Store>>,
}

impl StoreProbe {
    /// Rows, bytes and files per tier, and the last export; `None` when
    /// the store cannot be read now.
    fn read(&self) -> Option<StoreSnapshot> {
        let mut store = self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if store.is_none() {
            *store = Store::open_read_only(&self.dir)
                .inspect_err(|e| tracing::debug!(error = %e, "metrics: the store is not readable"))
                .ok();
        }
        let open = store.as_ref()?;
        let status = match open.status() {
            Ok(status) => status,
            Err(error) => {
                tracing::debug!(%error, "metrics: cannot read the store's status");
                *store = None;
                return None;
            }
        };
        let last_export_failed = status.last_export.as_ref().is_some_and(|e| e.error.is_some());
        let last_export_success = status.last_export_success_ns.map(|ns| ns as f64 / 1e9);
        Some(StoreSnapshot {
            hot_rows: status.hot_rows,
            hot_bytes: status.database_bytes,
            cold_rows: status.cold_rows,
            cold_bytes: status.cold_bytes,
            cold_files: status.cold_files,
            last_export_success,
            last_export_failed,
        })
    }
}

/// A request for the capture's numbers, answered by the capture loop.
type ScrapeRequest = tokio::sync::oneshot::Sender<CaptureSnapshot>;

/// Starts serving the metrics: each page asks the capture loop for its
/// numbers and reads the store on the blocking pool.
fn serve_metrics(
    server: metrics::http::Server,
    scrapes: tokio::sync::mpsc::Sender<ScrapeRequest>,
    store_dir: Option<PathBuf>,
) -> tokio::task::JoinHandle<()> {
    let probe = store_dir.map(|dir| Arc::new(StoreProbe { dir, store: std::sync::Mutex::new(None) }));
    let start_time = flowsql_store::now_ns() as f64 / 1e9;
    if let Ok(addr) = server.local_addr() {
        tracing::info!(%addr, "serving metrics at http://{addr}/metrics");
    }
    let page = move || {
        let scrapes = scrapes.clone();
        let probe = probe.clone();
        async move {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let capture = match scrapes.send(reply).await {
                Ok(()) => answer.await.unwrap_or_default(),
                Err(_) => CaptureSnapshot::default(),
            };
            let store = match probe {
                Some(probe) => tokio::task::spawn_blocking(move || probe.read()).await.ok().flatten(),
                None => None,
            };
            metrics::render(env!("CARGO_PKG_VERSION"), start_time, &capture, store.as_ref())
        }
    };
    tokio::spawn(server.serve(page))
}

impl Service {
    /// SIGHUP: reopens the log file and applies what can change without
    /// detaching (log level, export schedule, shutdown timeout); says what
    /// it did, and which changed settings need a restart.
    fn reload(&mut self, export: &mut Option<ScheduledExport>, store_dir: Option<&Path>) {
        systemd::notify_reloading();
        let mut done: Vec<String> = Vec::new();
        match self.logging.reopen() {
            Ok(true) => done.push(format!(
                "reopened the log file {}",
                self.logging.file().unwrap_or(Path::new("")).display()
            )),
            Ok(false) => {}
            Err(error) => {
                tracing::error!(%error, "SIGHUP: cannot reopen the log file: logging to the old one")
            }
        }
        match Config::load(&self.global, None, Some(&self.flags)) {
            Err(error) => tracing::error!(
                error = %crate::error_chain(&error),
                "SIGHUP: the configuration has errors: keeping the one in effect"
            ),
            Ok(new) => self.apply(new, export, store_dir, &mut done),
        }
        if done.is_empty() {
            tracing::info!("SIGHUP: configuration reloaded, nothing changed");
        } else {
            tracing::info!("SIGHUP: {}", done.join("; "));
        }
        systemd::notify("READY=1");
    }

    fn apply(
        &mut self,
        new: Config,
        export: &mut Option<ScheduledExport>,
        store_dir: Option<&Path>,
        done: &mut Vec<String>,
    ) {
        let old = &mut self.config;
        if new.log_level.value != old.log_level.value {
            match self.logging.set_level(&new.log_level.value) {
                Ok(_) => {
                    done.push(format!("log level {} (was {})", new.log_level.value, old.log_level.value));
                    old.log_level = new.log_level.clone();
                }
                Err(error) => {
                    tracing::error!(error = %crate::error_chain(&error), "SIGHUP: log level unchanged")
                }
            }
        }
        if (new.export_every.value, new.retain.value) != (old.export_every.value, old.retain.value) {
            let schedule = export_schedule(&new);
            let restarted = match (store_dir, export.take()) {
                (Some(dir), Some(previous)) => match ScheduledExport::spawn(dir, schedule) {
                    Ok(next) => {
                        *export = Some(next);
                        // An export in progress ends at its next batch (its
                        // rows stay hot for the new schedule); the two never
                        // overlap (they take the export lock).
                        let _ = std::thread::Builder::new()
                            .name("flowsql-export-stop".into())
                            .spawn(move || previous.stop());
                        true
                    }
                    Err(error) => {
                        *export = Some(previous);
                        tracing::error!(error = %crate::error_chain(&error.into()), "SIGHUP: export schedule unchanged");
                        false
                    }
                },
                (_, previous) => {
                    *export = previous;
                    true
                }
            };
            if restarted {
                let retain = new.retain.value.map_or("everything kept".to_owned(), |r| {
                    format!("retain {}", humantime::format_duration(r))
                });
                done.push(format!(
                    "export every {}, {retain}",
                    humantime::format_duration(new.export_every.value)
                ));
                old.export_every = new.export_every.clone();
                old.retain = new.retain.clone();
            }
        }
        if new.shutdown_timeout.value != old.shutdown_timeout.value {
            done.push(format!("shutdown timeout {}", humantime::format_duration(new.shutdown_timeout.value)));
            old.shutdown_timeout = new.shutdown_timeout.clone();
        }
        let restart: Vec<&str> = [
            ("data_dir", new.data_dir.value != old.data_dir.value),
            ("capture.cgroup", new.cgroup.value != old.cgroup.value),
            ("capture.ring_buffer_bytes", new.ring_buffer_bytes.value != old.ring_buffer_bytes.value),
            ("capture.metrics_addr", new.metrics_addr.value != old.metrics_addr.value),
            ("capture.name_cache", new.name_cache() != old.name_cache()),
            ("log.file", new.log_file.value != old.log_file.value),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        if !restart.is_empty() {
            tracing::warn!(settings = %restart.join(", "), "SIGHUP: these settings changed and take effect only after a restart");
        }
    }
}

/// Commits what the writer has and stops the scheduled export (an export in
/// progress ends at its next batch; its uncommitted rows stay hot for the
/// next run), on a thread of its own so that the caller can bound the wait.
fn finish_store(
    writer: Option<StoreWriter>,
    export: Option<ScheduledExport>,
    counters: CaptureCounters,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<Option<WriterCounters>>> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
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
        .context("failed to start the thread that stops the store")?;
    Ok(done_rx)
}

/// Runs a capture until `stop` completes, its duration ends, or (as a
/// service) SIGINT or SIGTERM; `attached` learns whether the programs and
/// the store started.
///
/// A stop detaches the programs first, waits [`DETACH_GRACE`] for program
/// runs already under way, reads the kernel's final counters, drains what
/// the kernel had submitted, commits every row and stops the export. As a
/// service this is bounded by `capture.shutdown_timeout` (and cut short by
/// a second SIGINT or SIGTERM): past it, the process exits with an error
/// that says how many rows were still waiting for the store.
async fn capture(
    run: CaptureRun,
    stop: impl Future<Output = ()>,
    attached: impl FnOnce(Result<Vec<String>, String>),
) -> anyhow::Result<ExitCode> {
    let CaptureRun { config, name_cache, duration, out, store, live, mut open_flows, mut service } = run;
    let mut signals = match &service {
        Some(_) => Some(Signals::new()?),
        None => None,
    };
    // Bound before attaching: a port in use is an error before anything
    // else, and a privileged port needs capabilities dropped below.
    let metrics_server = match service.as_ref().and_then(|s| s.config.metrics_addr.value.as_deref()) {
        Some(addr) => Some(metrics::http::Server::bind(addr).await?),
        None => None,
    };
    // Attach first: without the privileges to capture, touch no data directory.
    let (mut capture, mut reader) = Capture::attach(&config)?;
    if let Some(settings) = &store {
        prepare_store(&settings.dir)?;
    }
    if service.is_some() {
        // Before any other thread starts: threads inherit what is left.
        match privileges::drop_after_attach(&|| capture.counters().is_ok()) {
            Ok(dropped) => tracing::info!(
                kept = %dropped.kept_names(),
                bounding_set = dropped.bounding_set,
                "capabilities dropped: the capture keeps only what reading its maps needs"
            ),
            Err(error) => tracing::warn!(error = %crate::error_chain(&error), "capabilities not dropped"),
        }
    }
    let (writer, mut export) = match &store {
        Some(settings) => {
            let (writer, export) = spawn_store(settings, live)?;
            (Some(writer), Some(export))
        }
        None => (None, None),
    };
    let store_dir = store.map(|settings| settings.dir);
    let (scrape_tx, mut scrape_rx) = tokio::sync::mpsc::channel::<ScrapeRequest>(16);
    let metrics_task =
        metrics_server.map(|server| serve_metrics(server, scrape_tx.clone(), store_dir.clone()));
    // Said once: what this kernel keeps the capture from filling.
    let unavailable: Vec<String> = capture.unavailable().iter().map(ToString::to_string).collect();
    for line in &unavailable {
        tracing::warn!("{line}");
    }
    attached(Ok(unavailable));
    if service.is_some() {
        systemd::notify("READY=1\nSTATUS=capturing");
    }
    let mut sink = FlowSink {
        assembler: FlowAssembler::with_name_cache(assemble::host_name(), name_cache),
        out,
        writer,
        failed: None,
        undecodable: 0,
        domains_not_stored: 0,
    };
    // The kernel's counters go to the store every second.
    let mut counters_tick = tokio::time::interval(Duration::from_secs(1));
    let deadline = async {
        match duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            read = reader.read(|item| sink.handle(item)) => {
                read?;
                sink.flush();
                if sink.failed.is_some() {
                    break;
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
            Some(reply) = next_open_flows_request(&mut open_flows) => {
                let rows = match capture.open_sockets() {
                    Some(open) => open
                        .read()
                        .map(|records| sink.assembler.open_flows(&records))
                        .map_err(|error| crate::error_chain(&error.into())),
                    None => Err("this capture does not follow connection ends on this kernel".to_owned()),
                };
                let _ = reply.send(rows);
            }
            Some(reply) = scrape_rx.recv() => {
                let kernel = capture.counters().unwrap_or_else(|error| {
                    tracing::debug!(%error, "kernel counters unreadable");
                    KernelCounters::default()
                });
                let _ = reply.send(sink.snapshot(kernel, reader.fill()));
            }
            request = next_signal(&mut signals) => match (request, service.as_mut()) {
                (Request::Stop(name), _) => {
                    tracing::info!(signal = name, "stopping: detaching, then committing every row");
                    break;
                }
                (Request::Reload, Some(service)) => service.reload(&mut export, store_dir.as_deref()),
                (Request::Reload, None) => {}
            },
            () = &mut stop => break,
            () = &mut deadline => break,
        }
    }
    if service.is_some() {
        systemd::notify("STOPPING=1");
    }
    let stopping = Instant::now();
    let bound = service.as_ref().map(|s| s.config.shutdown_timeout.value);
    if let Some(task) = &metrics_task {
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
    let waiting = sink.writer.as_ref().map_or(0, StoreWriter::backlog);
    let finished = finish_store(sink.writer.take(), export.take(), final_counters)?;
    let done = match bound {
        None => finished.await.ok().flatten(),
        Some(bound) => {
            let timeout = tokio::time::sleep(bound.saturating_sub(stopping.elapsed()));
            tokio::pin!(timeout);
            tokio::pin!(finished);
            loop {
                tokio::select! {
                    done = &mut finished => break done.ok().flatten(),
                    () = &mut timeout => anyhow::bail!(
                        "the stop took longer than {} (capture.shutdown_timeout): exiting before the store committed every row ({waiting} were waiting when the stop began)",
                        humantime::format_duration(bound)
                    ),
                    // A reload while stopping is ignored.
                    request = next_signal(&mut signals) => if let Request::Stop(name) = request {
                        anyhow::bail!(
                            "{name} again: exiting before the store committed every row ({waiting} were waiting when the stop began)"
                        );
                    },
                }
            }
        }
    };
    if let Some(done) = done {
        if done.rows_not_stored > 0 {
            tracing::warn!(rows = done.rows_not_stored, "some flows could not be stored");
        }
        tracing::info!(rows = done.rows_stored, "store closed");
    }
    if counters.lost() > 0 {
        tracing::warn!(lost = counters.lost(), "the ring buffer was full: flows were lost");
    }
    tracing::info!(?counters, undecodable = sink.undecodable, took = ?stopping.elapsed(), "capture stopped");
    drop(scrape_tx);
    match sink.failed {
        // A reader that went away (`| head`) is a normal way to stop.
        Some(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Some(error) => Err(error).context("failed to write to stdout"),
        None => Ok(ExitCode::SUCCESS),
    }
}
