//! `flowsql capture`: attach the programs and record flows until told to stop.
//!
//! Flows go to the store (the data directory) by default, through the store
//! writer thread; the scheduled export moves closed windows to Parquet and
//! applies retention. `--json` also prints each flow on stdout.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use flowsql_capture::{Assembled, Capture, CaptureConfig, DnsStats, FlowAssembler, KernelCounters, assemble};
use flowsql_store::{
    CaptureCounters, ExportSchedule, LiveRows, ScheduledExport, Store, StoreWriter, WriterConfig,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::CaptureArgs;

pub fn run(args: CaptureArgs) -> anyhow::Result<ExitCode> {
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
        let dir = super::data_dir::resolve(&args.store)?;
        let schedule =
            ExportSchedule { every: args.export_every, retain: args.retain, ..ExportSchedule::default() };
        Some((dir, schedule))
    };
    let run = CaptureRun {
        config: CaptureConfig { cgroup: args.cgroup, ring_buffer_bytes: args.ring_buffer_bytes },
        duration,
        out: args.json.then(|| BufWriter::with_capacity(64 * 1024, io::stdout())),
        store,
        live: None,
        handle_signals: true,
    };
    runtime.block_on(capture(run, std::future::pending(), |_| {}))
}

/// Everything one capture needs.
pub struct CaptureRun {
    pub config: CaptureConfig,
    /// Stop after this long; `None`: until stopped.
    pub duration: Option<Duration>,
    /// Where to print JSON lines, if anywhere.
    pub out: Option<BufWriter<io::Stdout>>,
    /// The data directory and its export schedule; `None`: do not store.
    pub store: Option<(PathBuf, ExportSchedule)>,
    /// Share the uncommitted rows with this process's queries.
    pub live: Option<Arc<LiveRows>>,
    /// Stop on SIGINT and SIGTERM (the capture command). The shell handles
    /// Ctrl-C itself, to cancel queries.
    pub handle_signals: bool,
}

/// A capture running on its own thread, for `flowsql shell --capture`.
/// Dropping it stops the capture and commits what it has.
pub struct BackgroundCapture {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<ExitCode>>>,
}

impl BackgroundCapture {
    /// Starts capturing; returns once the programs are attached (or with the
    /// reason they could not be).
    pub fn start(run: CaptureRun) -> anyhow::Result<BackgroundCapture> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
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
            Ok(Ok(())) => Ok(BackgroundCapture { stop: Some(stop_tx), thread: Some(thread) }),
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

/// The store side of a capture: the writer thread and the scheduled export.
struct StoreOutput {
    writer: StoreWriter,
    export: ScheduledExport,
}

impl StoreOutput {
    fn start(
        dir: PathBuf,
        schedule: ExportSchedule,
        live: Option<Arc<LiveRows>>,
    ) -> anyhow::Result<StoreOutput> {
        // Create, migrate and recover now, so problems show before capturing.
        // A directory that cannot be written yet is not fatal: the writer
        // counts what it cannot store and retries.
        match Store::open(&dir) {
            Ok(store) => drop(store),
            Err(error @ flowsql_store::StoreError::SchemaTooNew { .. }) => return Err(error.into()),
            Err(error) => tracing::error!(
                error = %crate::error_chain(&anyhow::Error::from(error)),
                "the data directory is not usable yet: flows are counted as not stored until it is"
            ),
        }
        tracing::info!(dir = %dir.display(), "storing flows");
        let writer = StoreWriter::spawn(&dir, WriterConfig { live, ..WriterConfig::default() })
            .with_context(|| format!("failed to start the store writer for {}", dir.display()))?;
        let export = ScheduledExport::spawn(&dir, schedule)
            .with_context(|| format!("failed to start the scheduled export for {}", dir.display()))?;
        Ok(StoreOutput { writer, export })
    }

    /// Commits what is queued, records the final counters, stops.
    fn finish(self, counters: Option<CaptureCounters>) {
        if let Some(counters) = counters {
            self.writer.set_capture_counters(counters);
        }
        let done = self.writer.finish();
        self.export.stop();
        if done.rows_not_stored > 0 {
            tracing::warn!(rows = done.rows_not_stored, "some flows could not be stored");
        }
        tracing::info!(rows = done.rows_stored, "store closed");
    }
}

/// The kernel's and the DNS side's counters as the store records them.
fn capture_counters(k: &KernelCounters, dns: &DnsStats, domains_not_stored: u64) -> CaptureCounters {
    CaptureCounters {
        events: k.flow_events,
        lost: k.lost(),
        counters: BTreeMap::from([
            ("flowEvents".to_owned(), k.flow_events),
            ("flowRingbufFull".to_owned(), k.flow_ringbuf_full),
            ("synackDuplicates".to_owned(), k.synack_duplicates),
            ("headerUnreadable".to_owned(), k.header_unreadable),
            ("ipv6ExtTooDeep".to_owned(), k.ipv6_ext_too_deep),
            ("connectionMapErrors".to_owned(), k.connection_map_errors),
            ("dnsEvents".to_owned(), k.dns_events),
            ("dnsRingbufFull".to_owned(), k.dns_ringbuf_full),
            ("dnsTruncated".to_owned(), k.dns_truncated),
            ("dnsMessages".to_owned(), dns.messages),
            ("dnsRejected".to_owned(), dns.rejected),
            ("dnsIncomplete".to_owned(), dns.incomplete),
            ("dnsObservations".to_owned(), dns.observations),
            ("dnsCacheAddresses".to_owned(), dns.cache.addresses as u64),
            ("dnsCacheBytes".to_owned(), dns.cache.bytes as u64),
            ("dnsCacheEvicted".to_owned(), dns.cache.evicted),
            ("domainsNotStored".to_owned(), domains_not_stored),
        ]),
    }
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
    fn counters(&self, kernel: &KernelCounters) -> CaptureCounters {
        capture_counters(kernel, &self.assembler.dns_stats(), self.domains_not_stored)
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
            Ok(Assembled::Dns(observations)) => {
                if let Some(writer) = &self.writer
                    && !observations.is_empty()
                {
                    let count = observations.len() as u64;
                    let job: flowsql_store::writer::WriteJob = Box::new(move |tx, _| {
                        flowsql_store::domains::record_observations(tx, &observations).map(|_| ())
                    });
                    if !writer.try_run_in_write_transaction(job) {
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

/// Runs a capture until `stop` completes, its duration ends, or (with
/// `handle_signals`) SIGINT or SIGTERM; `attached` learns whether the
/// programs and the store started.
async fn capture(
    run: CaptureRun,
    stop: impl Future<Output = ()>,
    attached: impl FnOnce(Result<(), String>),
) -> anyhow::Result<ExitCode> {
    let CaptureRun { config, duration, out, store, live, handle_signals } = run;
    let signals = if handle_signals {
        Some((
            signal(SignalKind::interrupt()).context("failed to handle SIGINT")?,
            signal(SignalKind::terminate()).context("failed to handle SIGTERM")?,
        ))
    } else {
        None
    };
    let next_signal = async {
        match signals {
            Some((mut sigint, mut sigterm)) => {
                tokio::select! {
                    _ = sigint.recv() => {}
                    _ = sigterm.recv() => {}
                }
            }
            None => std::future::pending().await,
        }
    };
    // Attach first: without the privileges to capture, touch no data directory.
    let (capture, mut reader) = Capture::attach(&config)?;
    let (writer, store) = match store {
        Some((dir, schedule)) => {
            let StoreOutput { writer, export } = StoreOutput::start(dir, schedule, live)?;
            (Some(writer), Some(export))
        }
        None => (None, None),
    };
    attached(Ok(()));
    let mut sink = FlowSink {
        assembler: FlowAssembler::new(assemble::host_name()),
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
    tokio::pin!(next_signal);
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
                        Ok(counters) => writer.set_capture_counters(sink.counters(&counters)),
                        Err(error) => tracing::debug!(%error, "kernel counters unreadable"),
                    }
                }
            }
            () = &mut next_signal => break,
            () = &mut stop => break,
            () = &mut deadline => break,
        }
    }
    let counters = capture.counters()?;
    // Detach first, then take what the kernel had already submitted.
    drop(capture);
    reader.drain(|item| sink.handle(item));
    sink.flush();
    let final_counters = sink.counters(&counters);
    if let (Some(writer), Some(export)) = (sink.writer.take(), store) {
        StoreOutput { writer, export }.finish(Some(final_counters));
    }
    if counters.lost() > 0 {
        tracing::warn!(lost = counters.lost(), "the ring buffer was full: flows were lost");
    }
    tracing::info!(?counters, undecodable = sink.undecodable, "capture stopped");
    match sink.failed {
        // A reader that went away (`| head`) is a normal way to stop.
        Some(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Some(error) => Err(error).context("failed to write to stdout"),
        None => Ok(ExitCode::SUCCESS),
    }
}
