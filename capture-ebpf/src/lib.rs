//! flowsql's capture: cgroup_skb eBPF programs (C, in `bpf/`) that see the
//! beginning of every TCP connection of the sockets in a cgroup, and the aya
//! loader that attaches them and turns their records into
//! [`flowsql_event::FlowBegin`] rows.
//!
//! ```text
//! bpf/flowsql.bpf.c  --ring buffer-->  loader::EventReader  --bytes-->  assemble::FlowAssembler  --> FlowBegin
//! ```
//!
//! Nothing here knows about Arrow, SQLite or SQL.

pub mod abi;
pub mod assemble;
pub mod attribution;
pub mod cgroup;
pub mod clock;
pub mod dns;
mod existing;
pub mod iter;
pub mod loader;

pub use assemble::{Assembled, DnsStats, FlowAssembler};
pub use attribution::AttributionStats;
pub use loader::{
    Capture, CaptureConfig, CaptureError, EventReader, Features, Hook, KernelCounters, OpenSockets,
    ProgramStats, RingBufFill, RunTimeStats, Unavailable,
};
