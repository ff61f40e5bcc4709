//! `flowsql capture`: attach the programs and record flows until told to stop.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use flowsql_capture::{Assembled, Capture, CaptureConfig, FlowAssembler, assemble};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::CaptureArgs;

pub fn run(args: CaptureArgs) -> anyhow::Result<ExitCode> {
    if !args.json {
        anyhow::bail!("nothing to write the flows to: pass --json to print them");
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
    let config = CaptureConfig { cgroup: args.cgroup, ring_buffer_bytes: args.ring_buffer_bytes };
    runtime.block_on(capture_json(config, duration))
}

/// Writes each flow as one JSON line; a line is written whole or not at all.
struct JsonSink {
    assembler: FlowAssembler,
    out: BufWriter<io::Stdout>,
    failed: Option<io::Error>,
    undecodable: u64,
}

impl JsonSink {
    fn handle(&mut self, item: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        match self.assembler.assemble(item) {
            Ok(Assembled::Flow(flow)) => {
                let mut line = match serde_json::to_vec(&flow) {
                    Ok(line) => line,
                    Err(error) => {
                        tracing::warn!(%error, "flow not printable as JSON");
                        return;
                    }
                };
                line.push(b'\n');
                if let Err(error) = self.out.write_all(&line) {
                    self.failed = Some(error);
                }
            }
            Ok(Assembled::Dns(_)) => {}
            Err(error) => {
                self.undecodable += 1;
                tracing::warn!(%error, "skipped an undecodable kernel record");
            }
        }
    }

    fn flush(&mut self) {
        if self.failed.is_none()
            && let Err(error) = self.out.flush()
        {
            self.failed = Some(error);
        }
    }
}

async fn capture_json(config: CaptureConfig, duration: Option<Duration>) -> anyhow::Result<ExitCode> {
    let mut sigint = signal(SignalKind::interrupt()).context("failed to handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("failed to handle SIGTERM")?;
    let (capture, mut reader) = Capture::attach(&config)?;
    let mut sink = JsonSink {
        assembler: FlowAssembler::new(assemble::host_name()),
        out: BufWriter::with_capacity(64 * 1024, io::stdout()),
        failed: None,
        undecodable: 0,
    };
    let deadline = async {
        match duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            read = reader.read(|item| sink.handle(item)) => {
                read?;
                sink.flush();
                if sink.failed.is_some() {
                    break;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = &mut deadline => break,
        }
    }
    let counters = capture.counters()?;
    // Detach first, then take what the kernel had already submitted.
    drop(capture);
    reader.drain(|item| sink.handle(item));
    sink.flush();
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
