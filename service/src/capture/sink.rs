//! Where the kernel's records go: each is assembled into a flow begin, a
//! flow end, DNS observations, or something the attribution caches learn
//! (an exec, a cgroup); a begin is printed as one JSON line (written whole
//! or not at all) and/or handed to the store writer, ends go to the writer
//! for `flow_ends`, observations for the `domains` table. Everything that could not be handled is counted.

use std::io::{self, Write};

use flowsql_capture::{Assembled, FlowAssembler, KernelCounters, RingBufFill};
use flowsql_store::{CaptureCounters, StoreWriter};

use crate::metrics::{self, CaptureSnapshot};

/// The capture loop's consumer of ring buffer records.
pub(crate) struct FlowSink {
    pub assembler: FlowAssembler,
    pub out: Option<Box<dyn Write + Send>>,
    pub writer: Option<StoreWriter>,
    /// The first error writing `out`: nothing more is written after it.
    pub failed: Option<io::Error>,
    /// Kernel records that could not be decoded.
    pub undecodable: u64,
    /// DNS observations the writer had no room for.
    pub domains_not_stored: u64,
}

impl FlowSink {
    pub fn new(
        assembler: FlowAssembler,
        out: Option<Box<dyn Write + Send>>,
        writer: Option<StoreWriter>,
    ) -> FlowSink {
        FlowSink { assembler, out, writer, failed: None, undecodable: 0, domains_not_stored: 0 }
    }

    /// Everything the capture counts, with the kernel's counters and the
    /// ring buffer's fill as read by the caller.
    pub fn snapshot(&self, kernel: KernelCounters, ring: RingBufFill) -> CaptureSnapshot {
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
    pub fn counters(&self, kernel: KernelCounters, ring: RingBufFill) -> CaptureCounters {
        CaptureCounters {
            // Records that become rows: begins and ends.
            events: kernel.flow_events + kernel.end_events,
            lost: kernel.lost(),
            counters: metrics::capture_stats_counters(&self.snapshot(kernel, ring)),
        }
    }

    /// Handles one ring buffer record.
    pub fn handle(&mut self, item: &[u8]) {
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

    /// Flushes the JSON lines written so far.
    pub fn flush(&mut self) {
        if self.failed.is_none()
            && let Some(out) = &mut self.out
            && let Err(error) = out.flush()
        {
            self.failed = Some(error);
        }
    }
}
