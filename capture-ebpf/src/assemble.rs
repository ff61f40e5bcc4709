//! Turning kernel records into [`FlowBegin`] rows: decode, convert the
//! timestamp to UTC, attach the host name (and, with DNS capture, the names
//! of both ends).

use std::sync::Arc;

use flowsql_event::{Direction, DomainList, FlowBegin};

use crate::abi::{self, DecodeError, KernelRecord};
use crate::clock::BootClock;

/// How often the boot-time-to-UTC offset is sampled again.
const CLOCK_RESYNC_NS: u64 = 1_000_000_000;

/// Builds rows from ring buffer records. One per capture; not shared.
#[derive(Debug)]
pub struct FlowAssembler {
    clock: BootClock,
    clock_synced_boot_ns: u64,
    host_name: Arc<str>,
}

/// What one ring buffer record turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembled {
    Flow(FlowBegin),
    /// A DNS response (feeds the name cache; produces no row).
    Dns,
}

/// The host's name as the kernel knows it (UTS namespace).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

impl FlowAssembler {
    pub fn new(host_name: impl Into<Arc<str>>) -> Self {
        FlowAssembler {
            clock: BootClock::new(),
            clock_synced_boot_ns: BootClock::boot_now_ns(),
            host_name: host_name.into(),
        }
    }

    /// Interprets one ring buffer item.
    pub fn assemble(&mut self, item: &[u8]) -> Result<Assembled, DecodeError> {
        match abi::decode(item)? {
            KernelRecord::FlowBegin(flow) => {
                let boot_ns = flow.header.boot_ns;
                if boot_ns.saturating_sub(self.clock_synced_boot_ns) > CLOCK_RESYNC_NS {
                    self.clock.resync();
                    self.clock_synced_boot_ns = boot_ns;
                }
                let direction = if flow.direction == abi::DIRECTION_OUTGOING {
                    Direction::Outgoing
                } else {
                    Direction::Incoming
                };
                Ok(Assembled::Flow(FlowBegin {
                    timestamp_ns: self.clock.to_utc_ns(boot_ns),
                    direction,
                    src_ip: flow.src_ip()?,
                    dst_ip: flow.dst_ip()?,
                    src_port: flow.src_port(),
                    dst_port: flow.dst_port(),
                    src_domains: DomainList::default(),
                    dst_domains: DomainList::default(),
                    cgroup_id: flow.cgroup_id,
                    host_name: Arc::clone(&self.host_name),
                }))
            }
            KernelRecord::DnsResponse(..) => Ok(Assembled::Dns),
        }
    }
}
