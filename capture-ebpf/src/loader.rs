//! Loading the kernel programs, attaching them to a cgroup, and reading the
//! ring buffer they write to.
//!
//! The two cgroup_skb programs (connection begins, DNS) are required: without
//! them there is no capture. The others (who connected, how connections
//! ended, see `bpf/flowsql.bpf.c`) are optional: a program this kernel
//! refuses leaves the capture running without what it provides, and
//! [`Capture::unavailable`] says which columns stay empty and why.
//!
//! [`Capture`] owns the loaded object: while it lives, the programs stay
//! attached; dropping it detaches them. [`EventReader`] owns the ring buffer
//! and can be drained after the programs are detached, so that a clean
//! shutdown loses nothing that the kernel already submitted.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use aya::programs::{
    BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, Iter, ProgramError,
};
use aya::{Btf, Ebpf, EbpfError, EbpfLoader};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::abi::{self, counter_slot};
use crate::cgroup::{self, CgroupError};
use crate::iter::IterLink;

/// How long a program run that began before [`Capture::detach`] may still
/// take: its record and counter updates land within it (runs take
/// microseconds; the kernel frees the detached programs after an RCU grace
/// period).
pub const DETACH_GRACE: std::time::Duration = std::time::Duration::from_millis(20);

/// How often the reader drains the ring buffer without being woken.
pub const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// Default ring buffer size: 4 MiB holds about 50,000 flow records, several
/// seconds of the highest connection rate measured on a 2-core machine.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 4 << 20;

/// Where and how to capture.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// cgroup v2 directory whose sockets are watched (and all its
    /// descendants'). `None`: the root of the unified hierarchy, i.e. the
    /// whole host.
    pub cgroup: Option<PathBuf>,
    /// Size of the ring buffer in bytes: a power of two, a multiple of the
    /// page size.
    pub ring_buffer_bytes: u32,
    /// What is recorded beyond connection begins and DNS answers.
    pub features: Features,
    /// Optional programs (by function name) not to load, as if this kernel
    /// refused them: for testing the capture without them. Empty in use.
    pub withhold: Vec<&'static str>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            cgroup: None,
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
            features: Features::default(),
            withhold: Vec::new(),
        }
    }
}

/// What the capture records beyond connection begins and DNS answers. Both
/// are on; turning one off (and with it the programs only it needs) is an
/// internal option, for measuring what each costs (`capture_bench`), not a
/// setting users have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// Who connected: process, user, executable, cgroup path, container.
    pub attribution: bool,
    /// How connections ended (`flow_ends`), begins the SYN-ACK hook misses,
    /// connections older than the capture, `open_flows`.
    pub ends: bool,
}

impl Default for Features {
    fn default() -> Self {
        Features { attribution: true, ends: true }
    }
}

impl Features {
    /// Connection begins and DNS only.
    pub const NONE: Features = Features { attribution: false, ends: false };

    fn bits(self) -> u32 {
        (if self.attribution { abi::FEATURE_ATTRIBUTION } else { 0 })
            | (if self.ends { abi::FEATURE_ENDS } else { 0 })
    }
}

/// A program the kernel refused (or could not attach): what the capture
/// cannot fill without it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// The program, by its section (`tp_btf/inet_sock_set_state`).
    pub program: &'static str,
    /// What stays empty, in the user's terms (columns, tables).
    pub leaves_empty: &'static str,
    /// The kernel's answer.
    pub reason: String,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot fill {}: {} is unavailable on this kernel ({})",
            self.leaves_empty, self.program, self.reason
        )
    }
}

/// How an optional program is attached.
#[derive(Debug, Clone, Copy)]
enum OptionalKind {
    /// `tp_btf/<tracepoint>`.
    Tracepoint(&'static str),
    /// `cgroup/sock_release`, on the watched cgroup.
    SockRelease,
    /// `iter/<type>`, linked (not attached); `bool`: walks flowsql's socket storage.
    Iter(&'static str, bool),
}

/// A program beyond the two cgroup_skb ones.
#[derive(Debug)]
struct Optional {
    program: &'static str,
    section: &'static str,
    kind: OptionalKind,
    needed: fn(Features) -> bool,
    leaves_empty: &'static str,
}

const OPTIONAL: &[Optional] = &[
    Optional {
        program: "flowsql_state",
        section: "tp_btf/inet_sock_set_state",
        kind: OptionalKind::Tracepoint("inet_sock_set_state"),
        needed: |f| f.attribution || f.ends,
        leaves_empty: "processId, processName, userId, executable (flows, flow_ends) and every flow_ends row",
    },
    Optional {
        program: "flowsql_receive_reset",
        section: "tp_btf/tcp_receive_reset",
        kind: OptionalKind::Tracepoint("tcp_receive_reset"),
        needed: |f| f.ends,
        leaves_empty: "endReason reset-received (such ends read as fin)",
    },
    Optional {
        program: "flowsql_send_reset",
        section: "tp_btf/tcp_send_reset",
        kind: OptionalKind::Tracepoint("tcp_send_reset"),
        needed: |f| f.ends,
        leaves_empty: "endReason reset-sent (such ends are reported when their socket goes, as fin)",
    },
    Optional {
        program: "flowsql_destroy",
        section: "tp_btf/tcp_destroy_sock",
        kind: OptionalKind::Tracepoint("tcp_destroy_sock"),
        needed: |f| f.ends,
        leaves_empty: "flow_ends rows of accepted connections reset or timed out while a process held them",
    },
    Optional {
        program: "flowsql_release",
        section: "cgroup/sock_release",
        kind: OptionalKind::SockRelease,
        needed: |f| f.attribution && f.ends,
        leaves_empty: "acceptingProcessId, acceptingProcessName (flow_ends)",
    },
    Optional {
        program: "flowsql_exec",
        section: "tp_btf/sched_process_exec",
        kind: OptionalKind::Tracepoint("sched_process_exec"),
        needed: |f| f.attribution,
        leaves_empty: "executable of programs started after the capture and gone before their flow was read",
    },
    Optional {
        program: "flowsql_cgroup_mkdir",
        section: "tp_btf/cgroup_mkdir",
        kind: OptionalKind::Tracepoint("cgroup_mkdir"),
        needed: |f| f.attribution,
        leaves_empty: "cgroupPath, containerId of cgroups made after the capture started",
    },
    Optional {
        program: "flowsql_cgroup_rmdir",
        section: "tp_btf/cgroup_rmdir",
        kind: OptionalKind::Tracepoint("cgroup_rmdir"),
        needed: |f| f.attribution,
        leaves_empty: "nothing (removed cgroups are kept longer)",
    },
    Optional {
        program: "flowsql_cgroup_rename",
        section: "tp_btf/cgroup_rename",
        kind: OptionalKind::Tracepoint("cgroup_rename"),
        needed: |f| f.attribution,
        leaves_empty: "the new cgroupPath of renamed cgroups",
    },
    Optional {
        program: "flowsql_iter_tcp",
        section: "iter/tcp",
        kind: OptionalKind::Iter("tcp", false),
        needed: |f| f.attribution || f.ends,
        leaves_empty: "who owns listeners older than the capture, and the ends of connections older than it",
    },
    Optional {
        program: "flowsql_iter_open",
        section: "iter/bpf_sk_storage_map",
        kind: OptionalKind::Iter("bpf_sk_storage_map", true),
        needed: |f| f.ends,
        leaves_empty: "open_flows",
    },
];

/// Why capture could not start (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "capturing needs root, or the capabilities CAP_BPF and CAP_NET_ADMIN; this process lacks {missing}"
    )]
    MissingPrivileges { missing: String },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("this kernel has no BPF support (the bpf() system call is not implemented)")]
    NoBpf,
    #[error("invalid ring buffer size {0}: it must be a power of two and at least the page size")]
    RingBufferSize(u32),
    #[error("failed to load the BPF object")]
    Object(#[source] EbpfError),
    #[error("the kernel refused to load {program}: {source}\nverifier log:\n{verifier_log}")]
    Refused {
        program: &'static str,
        #[source]
        source: io::Error,
        verifier_log: String,
    },
    #[error("failed to load {program}")]
    Load {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("failed to attach {program} to cgroup {cgroup}")]
    Attach {
        program: &'static str,
        cgroup: PathBuf,
        #[source]
        source: ProgramError,
    },
    #[error("BPF_PROG_TEST_RUN of {program} failed")]
    TestRun {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("the BPF object has no {0}")]
    MissingInObject(&'static str),
    #[error("failed to use map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("failed to watch the ring buffer")]
    Poll(#[source] io::Error),
    #[error("failed to turn on the kernel's BPF run-time statistics")]
    Stats(#[source] io::Error),
    #[error("failed to read the kernel's BTF (needed by the tracing programs)")]
    Btf(#[source] aya::BtfError),
    #[error("failed to run the iterator {program}")]
    Iterator {
        program: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{0} is not available: {1}")]
    NotAvailable(&'static str, String),
}

/// What the kernel measured of one program (BPF statistics must be on, see
/// [`Capture::enable_run_time_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramStats {
    /// The program's function name (`flowsql_ingress`, `flowsql_state`, ...).
    pub program: &'static str,
    /// Total time spent in the program.
    pub run_time_ns: u64,
    /// Times it ran (packets).
    pub run_count: u64,
}

/// Keeps the kernel's BPF run-time statistics on while it lives.
#[derive(Debug)]
pub struct RunTimeStats {
    _fd: std::os::fd::OwnedFd,
}

/// Sums of the kernel's per-CPU counters since the programs were loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Flow records submitted to the ring buffer.
    pub flow_events: u64,
    /// Flow records lost because the ring buffer was full.
    pub flow_ringbuf_full: u64,
    /// SYN-ACKs of connections already reported (retransmissions).
    pub synack_duplicates: u64,
    /// Packets whose headers could not be read.
    pub header_unreadable: u64,
    /// IPv6 packets with more extension headers than the walk follows.
    pub ipv6_ext_too_deep: u64,
    /// Connection-map insert failures (the row was still reported).
    pub connection_map_errors: u64,
    /// DNS records submitted to the ring buffer.
    pub dns_events: u64,
    /// DNS records lost because the ring buffer was full.
    pub dns_ringbuf_full: u64,
    /// DNS messages longer than the kernel copies (parsed as far as they go).
    pub dns_truncated: u64,
    /// Connection end records submitted to the ring buffer.
    pub end_events: u64,
    /// Connection end records lost because the ring buffer was full.
    pub end_ringbuf_full: u64,
    /// Begins reported at the ESTABLISHED transition: the SYN-ACK went
    /// unseen (SYN cookies) or its record was lost.
    pub begins_recovered: u64,
    /// Sockets that could not be given storage (memory): not followed.
    pub storage_failed: u64,
    /// Exec and cgroup records submitted.
    pub info_events: u64,
    /// Exec and cgroup records lost because the ring buffer was full.
    pub info_ringbuf_full: u64,
}

impl KernelCounters {
    /// Records the kernel could not deliver: begins, ends, DNS answers, and
    /// the exec and cgroup records that name processes and cgroups.
    pub fn lost(&self) -> u64 {
        self.flow_ringbuf_full + self.dns_ringbuf_full + self.end_ringbuf_full + self.info_ringbuf_full
    }
}

/// An attached program; dropping it detaches the program.
#[derive(Debug)]
enum Attachment {
    Skb(#[expect(dead_code, reason = "held to stay attached")] aya::programs::cgroup_skb::CgroupSkbLink),
    Tracepoint(
        #[expect(dead_code, reason = "held to stay attached")] aya::programs::tp_btf::BtfTracePointLink,
    ),
    Sock(#[expect(dead_code, reason = "held to stay attached")] aya::programs::cgroup_sock::CgroupSockLink),
}

/// The open connections as the kernel sees them: runs
/// `iter/bpf_sk_storage_map` over flowsql's socket storage. Shareable; each
/// [`read`](Self::read) is a new walk.
#[derive(Debug, Clone)]
pub struct OpenSockets {
    link: Arc<IterLink>,
}

impl OpenSockets {
    /// One record (`KIND_SOCKET`) per connection begun and not ended.
    pub fn read(&self) -> Result<Vec<Vec<u8>>, CaptureError> {
        let bytes = self
            .link
            .read()
            .map_err(|source| CaptureError::Iterator { program: "iter/bpf_sk_storage_map", source })?;
        Ok(split_records(&bytes))
    }
}

/// Splits an iterator's output into its records (each starts with its header).
pub(crate) fn split_records(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    let header = std::mem::size_of::<abi::EventHeader>();
    while bytes.len() >= header {
        let length = usize::from(u16::from_ne_bytes([bytes[2], bytes[3]]));
        if length < header || length > bytes.len() {
            tracing::warn!(length, left = bytes.len(), "an iterator wrote a record of an impossible length");
            break;
        }
        records.push(bytes[..length].to_vec());
        bytes = &bytes[length..];
    }
    records
}

/// The loaded, attached programs. Dropping this detaches them.
pub struct Capture {
    cgroup: Option<PathBuf>,
    features: Features,
    /// The attachments; dropping one detaches its program.
    links: Vec<Attachment>,
    /// Optional programs this kernel refused.
    unavailable: Vec<Unavailable>,
    /// Programs loaded (for their statistics).
    loaded: Vec<&'static str>,
    iter_tcp: Option<IterLink>,
    open: Option<OpenSockets>,
    counters: PerCpuArray<MapData, u64>,
    // Declared last: dropped after the maps taken from it.
    ebpf: Ebpf,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("cgroup", &self.cgroup).finish_non_exhaustive()
    }
}

/// The capabilities this process has in its effective set, from
/// /proc/self/status.
fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Names the capabilities missing for loading and attaching cgroup_skb
/// programs, or `None` when the process has them.
fn missing_capabilities() -> Option<String> {
    let caps = effective_capabilities()?;
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    (!missing.is_empty()).then(|| missing.join(" and "))
}

fn is_permission_error(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

fn privileges_error() -> CaptureError {
    CaptureError::MissingPrivileges {
        missing: missing_capabilities()
            .unwrap_or_else(|| "a permission the kernel requires (it answered EPERM)".to_owned()),
    }
}

fn map_create_io_error(error: &EbpfError) -> Option<&io::Error> {
    match error {
        EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. }) => Some(io_error),
        _ => None,
    }
}

/// One of the two cgroup_skb programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    fn program(self) -> &'static str {
        match self {
            Hook::Ingress => abi::PROGRAM_INGRESS,
            Hook::Egress => abi::PROGRAM_EGRESS,
        }
    }
}

/// The watched cgroup's id (its directory's inode) and its depth below the
/// root of the unified hierarchy (the root is 0).
fn watched_cgroup(path: &Path) -> Result<(u64, u32), CgroupError> {
    let inspect =
        |p: &Path| std::fs::metadata(p).map_err(|source| CgroupError::Inspect { path: p.to_owned(), source });
    let path = std::fs::canonicalize(path)
        .map_err(|source| CgroupError::Inspect { path: path.to_owned(), source })?;
    let metadata = inspect(&path)?;
    let mut level = 0u32;
    let mut dir = path.as_path();
    while let Some(parent) = dir.parent() {
        if inspect(parent)?.dev() != metadata.dev() {
            break;
        }
        level += 1;
        dir = parent;
    }
    Ok((metadata.ino(), level))
}

impl Capture {
    /// Loads the programs and attaches them to the configured cgroup. Must be
    /// called inside a tokio runtime (the ring buffer is registered with it).
    ///
    /// The reader first yields the sockets older than the capture that were
    /// adopted ([`abi::KIND_SOCKET`] records), then what the kernel reports.
    pub fn attach(config: &CaptureConfig) -> Result<(Capture, EventReader), CaptureError> {
        let cgroup = match &config.cgroup {
            Some(path) => path.clone(),
            None => cgroup::unified_mount()?,
        };
        if let Some(missing) = missing_capabilities() {
            return Err(CaptureError::MissingPrivileges { missing });
        }
        cgroup::check_cgroup2_dir(&cgroup)?;
        let watched = watched_cgroup(&cgroup)?;
        let (mut capture, mut reader) =
            Capture::load_with(config.ring_buffer_bytes, config.features, watched)?;
        tracing::info!(cgroup = %cgroup.display(), features = ?config.features, "capture attaching");
        capture.attach_programs(cgroup, &config.withhold)?;
        for unavailable in &capture.unavailable {
            tracing::debug!(%unavailable, "optional program unavailable");
        }
        if let Some(link) = &capture.iter_tcp {
            reader.pending.extend(crate::existing::adopt(link));
        }
        tracing::info!(
            programs = capture.loaded.len(),
            unavailable = capture.unavailable.len(),
            adopted = reader.pending.len(),
            "capture attached"
        );
        Ok((capture, reader))
    }

    /// Loads the programs into the kernel without attaching them anywhere:
    /// they then only run through [`Capture::test_run`]. Must be called
    /// inside a tokio runtime.
    pub fn load(ring_buffer_bytes: u32) -> Result<(Capture, EventReader), CaptureError> {
        Capture::load_with(ring_buffer_bytes, Features::default(), (0, 0))
    }

    fn load_with(
        ring_buffer_bytes: u32,
        features: Features,
        (watched_id, watched_level): (u64, u32),
    ) -> Result<(Capture, EventReader), CaptureError> {
        if let Some(missing) = missing_capabilities() {
            return Err(CaptureError::MissingPrivileges { missing });
        }
        // SAFETY: sysconf has no preconditions.
        let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        if !ring_buffer_bytes.is_power_of_two() || ring_buffer_bytes < page {
            return Err(CaptureError::RingBufferSize(ring_buffer_bytes));
        }
        let bits = features.bits();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(abi::MAP_EVENTS, ring_buffer_bytes)
            .override_global(abi::GLOBAL_FEATURES, &bits, true)
            .override_global(abi::GLOBAL_WATCHED_CGROUP_ID, &watched_id, true)
            .override_global(abi::GLOBAL_WATCHED_LEVEL, &watched_level, true)
            .load(abi::BPF_OBJECT)
            .map_err(|error| match map_create_io_error(&error) {
                Some(io) if is_permission_error(io) => privileges_error(),
                Some(io) if io.raw_os_error() == Some(libc::ENOSYS) => CaptureError::NoBpf,
                _ => CaptureError::Object(error),
            })?;
        for hook in [Hook::Ingress, Hook::Egress] {
            let program = hook.program();
            let prog = cgroup_skb_mut(&mut ebpf, hook)?;
            prog.load().map_err(|source| match source {
                ProgramError::LoadError { io_error, verifier_log } => {
                    if is_permission_error(&io_error) && verifier_log.to_string().trim().is_empty() {
                        privileges_error()
                    } else {
                        CaptureError::Refused {
                            program,
                            source: io_error,
                            verifier_log: verifier_log.to_string(),
                        }
                    }
                }
                other => CaptureError::Load { program, source: other },
            })?;
        }
        let counters = PerCpuArray::try_from(
            ebpf.take_map(abi::MAP_COUNTERS).ok_or(CaptureError::MissingInObject(abi::MAP_COUNTERS))?,
        )
        .map_err(|source| CaptureError::Map { map: abi::MAP_COUNTERS, source })?;
        let ring = RingBuf::try_from(
            ebpf.take_map(abi::MAP_EVENTS).ok_or(CaptureError::MissingInObject(abi::MAP_EVENTS))?,
        )
        .map_err(|source| CaptureError::Map { map: abi::MAP_EVENTS, source })?;
        let reader = EventReader::new(ring, ring_buffer_bytes)?;
        let capture = Capture {
            cgroup: None,
            features,
            links: Vec::new(),
            unavailable: Vec::new(),
            loaded: vec![abi::PROGRAM_INGRESS, abi::PROGRAM_EGRESS],
            iter_tcp: None,
            open: None,
            counters,
            ebpf,
        };
        Ok((capture, reader))
    }

    fn attach_programs(&mut self, cgroup: PathBuf, withhold: &[&'static str]) -> Result<(), CaptureError> {
        let cgroup_file =
            File::open(&cgroup).map_err(|source| CgroupError::Inspect { path: cgroup.clone(), source })?;
        for (hook, attach_type) in
            [(Hook::Ingress, CgroupSkbAttachType::Ingress), (Hook::Egress, CgroupSkbAttachType::Egress)]
        {
            let program = hook.program();
            let prog = cgroup_skb_mut(&mut self.ebpf, hook)?;
            // Single: on kernels >= 5.7 aya attaches through a bpf_link, which
            // still coexists with other programs on the cgroup.
            let link = prog
                .attach(&cgroup_file, attach_type, CgroupAttachMode::Single)
                .and_then(|id| prog.take_link(id))
                .map_err(|source| match &source {
                    ProgramError::SyscallError(e) if is_permission_error(&e.io_error) => privileges_error(),
                    _ => CaptureError::Attach { program, cgroup: cgroup.clone(), source },
                })?;
            self.links.push(Attachment::Skb(link));
        }
        self.cgroup = Some(cgroup);
        let needed: Vec<&Optional> = OPTIONAL.iter().filter(|o| (o.needed)(self.features)).collect();
        if needed.is_empty() {
            return Ok(());
        }
        let btf = match Btf::from_sys_fs() {
            Ok(btf) => btf,
            Err(error) => {
                let reason = format!("no kernel BTF: {error}");
                self.unavailable.extend(needed.iter().map(|o| Unavailable {
                    program: o.section,
                    leaves_empty: o.leaves_empty,
                    reason: reason.clone(),
                }));
                return Ok(());
            }
        };
        for optional in needed {
            let started = if withhold.contains(&optional.program) {
                Err("not loaded: withheld by the capture's configuration".to_owned())
            } else {
                self.start_optional(optional, &btf, &cgroup_file)
            };
            if let Err(reason) = started {
                self.unavailable.push(Unavailable {
                    program: optional.section,
                    leaves_empty: optional.leaves_empty,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Loads and attaches (or links) one optional program; the reason it
    /// could not, in one line.
    fn start_optional(&mut self, optional: &Optional, btf: &Btf, cgroup: &File) -> Result<(), String> {
        let describe = |error: ProgramError| match error {
            ProgramError::LoadError { io_error, verifier_log } => {
                let log = verifier_log.to_string();
                tracing::debug!(program = optional.program, %log, "verifier log");
                if std::env::var_os("FLOWSQL_PROBE").is_some() {
                    eprintln!("{log}");
                }
                // The verifier's reason comes before its statistics.
                let statistics = ["verification time", "stack depth", "processed "];
                let last = log
                    .lines()
                    .rev()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !statistics.iter().any(|s| l.starts_with(s)))
                    .unwrap_or("")
                    .to_owned();
                if last.is_empty() {
                    format!("refused: {io_error}")
                } else {
                    format!("refused: {io_error}: {last}")
                }
            }
            other => error_chain(&other),
        };
        let program =
            self.ebpf.program_mut(optional.program).ok_or_else(|| "not in the object".to_owned())?;
        match optional.kind {
            OptionalKind::Tracepoint(tracepoint) => {
                let prog: &mut BtfTracePoint = program.try_into().map_err(describe)?;
                prog.load(tracepoint, btf).map_err(describe)?;
                let link = prog.attach().and_then(|id| prog.take_link(id)).map_err(describe)?;
                self.links.push(Attachment::Tracepoint(link));
            }
            OptionalKind::SockRelease => {
                let prog: &mut CgroupSock = program.try_into().map_err(describe)?;
                prog.load().map_err(describe)?;
                let link = prog
                    .attach(cgroup, CgroupAttachMode::Single)
                    .and_then(|id| prog.take_link(id))
                    .map_err(describe)?;
                self.links.push(Attachment::Sock(link));
            }
            OptionalKind::Iter(iter_type, over_sockets) => {
                let prog: &mut Iter = program.try_into().map_err(describe)?;
                prog.load(iter_type, btf).map_err(describe)?;
                let prog_fd = prog.fd().map_err(describe)?.try_clone().map_err(|e| e.to_string())?;
                let prog_fd = prog_fd.as_fd();
                let link = if over_sockets {
                    let map = match self.ebpf.map(abi::MAP_SOCKETS) {
                        Some(Map::SkStorage(data)) => data,
                        _ => {
                            return Err(format!("the object has no socket storage map {}", abi::MAP_SOCKETS));
                        }
                    };
                    IterLink::create(prog_fd, Some(map.fd().as_fd()))
                } else {
                    IterLink::create(prog_fd, None)
                }
                .map_err(|e| format!("cannot link it: {e}"))?;
                if over_sockets {
                    self.open = Some(OpenSockets { link: Arc::new(link) });
                } else {
                    self.iter_tcp = Some(link);
                }
            }
        }
        self.loaded.push(optional.program);
        Ok(())
    }

    /// The optional programs this kernel refused, each once: what the capture
    /// cannot fill, and why. Empty when everything runs.
    pub fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }

    /// What the capture records.
    pub fn features(&self) -> Features {
        self.features
    }

    /// The open connections, read on demand (`None` when connection ends
    /// are not followed).
    pub fn open_sockets(&self) -> Option<OpenSockets> {
        self.open.clone()
    }

    /// Turns on the kernel's BPF run-time statistics (`BPF_ENABLE_STATS`)
    /// until the returned guard is dropped. They cost a clock read per
    /// program run, so they are for measuring, not for normal capture.
    pub fn enable_run_time_stats() -> Result<RunTimeStats, CaptureError> {
        let fd =
            aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| CaptureError::Stats(e.io_error))?;
        Ok(RunTimeStats { _fd: fd })
    }

    /// The program of `hook`.
    fn cgroup_skb(&self, hook: Hook) -> Result<&CgroupSkb, CaptureError> {
        let program = hook.program();
        self.ebpf
            .program(program)
            .ok_or(CaptureError::MissingInObject(program))?
            .try_into()
            .map_err(|source| CaptureError::Load { program, source })
    }

    /// Run time and run count of each loaded program so far.
    pub fn program_stats(&self) -> Result<Vec<ProgramStats>, CaptureError> {
        self.loaded
            .iter()
            .map(|&program| {
                let prog = self.ebpf.program(program).ok_or(CaptureError::MissingInObject(program))?;
                let info = prog.info().map_err(|source| CaptureError::Load { program, source })?;
                Ok(ProgramStats {
                    program,
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                    run_count: info.run_count(),
                })
            })
            .collect()
    }

    /// Runs one program once on `frame` (an Ethernet frame; the program sees
    /// it from the IP header on, as on a real socket) with BPF_PROG_TEST_RUN,
    /// and returns the program's verdict. For testing the packet parser.
    pub fn test_run(&self, hook: Hook, frame: &[u8]) -> Result<u32, CaptureError> {
        self.test_run_repeat(hook, frame, 1).map(|(verdict, _)| verdict)
    }

    /// Runs one program `repeat` times on `frame` in the kernel and returns
    /// its verdict and the kernel's measured time per run: a precise cost of
    /// the path that packet takes.
    pub fn test_run_repeat(
        &self,
        hook: Hook,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, std::time::Duration), CaptureError> {
        use aya::programs::{TestRun, TestRunOptions};
        let program = hook.program();
        let prog = self.cgroup_skb(hook)?;
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: repeat.max(1),
                ..TestRunOptions::default()
            })
            .map_err(|source| CaptureError::TestRun { program, source })?;
        Ok((result.return_value, result.duration))
    }

    /// Detaches both programs now, keeping the maps: the counters can
    /// still be read, and they no longer move (but for a program run that
    /// began before, see [`DETACH_GRACE`]). With bpf_link attachments
    /// (kernel 5.7 and later) this closes file descriptors and needs no
    /// capability.
    pub fn detach(&mut self) {
        if !self.links.is_empty() {
            // In the reverse order of attaching: the end and state hooks go
            // before the begin hooks, so no connection is reported ending
            // whose begin could no longer be reported (an end without its
            // begin is a failed attempt or one begun before the capture).
            while let Some(link) = self.links.pop() {
                drop(link);
            }
            tracing::info!(cgroup = ?self.cgroup, "capture detached");
        }
    }

    /// The cgroup the programs are attached to (`None`: loaded only).
    pub fn cgroup(&self) -> Option<&Path> {
        self.cgroup.as_deref()
    }

    /// Reads and sums the kernel's per-CPU counters.
    pub fn counters(&self) -> Result<KernelCounters, CaptureError> {
        let read = |slot: u32| -> Result<u64, CaptureError> {
            let values = self
                .counters
                .get(&slot, 0)
                .map_err(|source| CaptureError::Map { map: abi::MAP_COUNTERS, source })?;
            Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
        };
        Ok(KernelCounters {
            flow_events: read(counter_slot::FLOW_EVENTS)?,
            flow_ringbuf_full: read(counter_slot::FLOW_RINGBUF_FULL)?,
            synack_duplicates: read(counter_slot::SYNACK_DUPLICATE)?,
            header_unreadable: read(counter_slot::HEADER_UNREADABLE)?,
            ipv6_ext_too_deep: read(counter_slot::IPV6_EXT_TOO_DEEP)?,
            connection_map_errors: read(counter_slot::CONNECTION_MAP_ERROR)?,
            dns_events: read(counter_slot::DNS_EVENTS)?,
            dns_ringbuf_full: read(counter_slot::DNS_RINGBUF_FULL)?,
            dns_truncated: read(counter_slot::DNS_TRUNCATED)?,
            end_events: read(counter_slot::END_EVENTS)?,
            end_ringbuf_full: read(counter_slot::END_RINGBUF_FULL)?,
            begins_recovered: read(counter_slot::BEGIN_RECOVERED)?,
            storage_failed: read(counter_slot::STORAGE_FAILED)?,
            info_events: read(counter_slot::INFO_EVENTS)?,
            info_ringbuf_full: read(counter_slot::INFO_RINGBUF_FULL)?,
        })
    }
}

/// An error and its causes, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The program of `hook` in `ebpf`, to load or attach.
fn cgroup_skb_mut(ebpf: &mut Ebpf, hook: Hook) -> Result<&mut CgroupSkb, CaptureError> {
    let program = hook.program();
    ebpf.program_mut(program)
        .ok_or(CaptureError::MissingInObject(program))?
        .try_into()
        .map_err(|source| CaptureError::Load { program, source })
}

/// How full the ring buffer is: bytes the kernel has submitted (or
/// reserved) that the reader has not consumed yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingBufFill {
    /// Pending bytes now.
    pub pending_bytes: u64,
    /// The most bytes found pending when the reader began a drain, since
    /// the capture started.
    pub max_pending_bytes: u64,
    /// Size of the ring buffer's data area.
    pub size_bytes: u64,
}

/// The ring buffer's consumer and producer positions, read through a
/// read-only mapping of its first two pages (aya keeps its own mappings
/// private). Reading them costs two loads, no system call.
struct RingPositions {
    base: std::ptr::NonNull<libc::c_void>,
    page: usize,
}

// SAFETY: the mapping is read-only shared memory that only ever is read
// with atomic loads; it is unmapped once, in Drop.
unsafe impl Send for RingPositions {}
// SAFETY: as above: concurrent atomic loads of shared memory are sound.
unsafe impl Sync for RingPositions {}

impl RingPositions {
    fn map(fd: std::os::fd::BorrowedFd<'_>) -> Result<Self, CaptureError> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        // SAFETY: a new shared, read-only mapping of the ring buffer's
        // consumer page (offset 0) and producer page (offset one page),
        // which the kernel allows for any holder of the map's fd; it
        // aliases no Rust object.
        let base = unsafe {
            libc::mmap(std::ptr::null_mut(), 2 * page, libc::PROT_READ, libc::MAP_SHARED, fd.as_raw_fd(), 0)
        };
        if base == libc::MAP_FAILED {
            return Err(CaptureError::Poll(io::Error::last_os_error()));
        }
        let base =
            std::ptr::NonNull::new(base).ok_or(CaptureError::Poll(io::Error::other("mmap returned null")))?;
        Ok(RingPositions { base, page })
    }

    fn load(&self, offset: usize) -> u64 {
        // SAFETY: `offset` is 0 or one page, inside the two mapped pages;
        // the kernel keeps an aligned 64-bit position at the start of each,
        // updated atomically, so an atomic load of it is sound.
        let position =
            unsafe { &*self.base.as_ptr().cast::<u8>().add(offset).cast::<std::sync::atomic::AtomicU64>() };
        position.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Bytes between the consumer and the producer.
    fn pending(&self) -> u64 {
        let consumer = self.load(0);
        self.load(self.page).wrapping_sub(consumer)
    }
}

impl Drop for RingPositions {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`, used by nothing else.
        unsafe { libc::munmap(self.base.as_ptr(), 2 * self.page) };
    }
}

/// Reads records from the ring buffer as they arrive.
pub struct EventReader {
    /// Records to hand out before the ring buffer's (sockets adopted at start).
    pending: VecDeque<Vec<u8>>,
    ring: AsyncFd<RingBuf<MapData>>,
    positions: RingPositions,
    size_bytes: u64,
    max_pending_bytes: u64,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader").field("fd", &self.ring.get_ref().as_raw_fd()).finish()
    }
}

impl EventReader {
    fn new(ring: RingBuf<MapData>, size_bytes: u32) -> Result<Self, CaptureError> {
        use std::os::fd::AsFd as _;
        let positions = RingPositions::map(ring.as_fd())?;
        // SAFETY: the RingBuf owns its map's file descriptor and keeps it open,
        // unchanged, for as long as it lives; the AsyncFd owns the RingBuf, so
        // the descriptor outlives the registration.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| CaptureError::Poll(e.into_parts().1))?;
        Ok(EventReader {
            pending: VecDeque::new(),
            ring,
            positions,
            size_bytes: u64::from(size_bytes),
            max_pending_bytes: 0,
        })
    }

    /// How full the ring buffer is now, and was at its fullest.
    pub fn fill(&self) -> RingBufFill {
        let pending_bytes = self.positions.pending();
        RingBufFill {
            pending_bytes,
            max_pending_bytes: self.max_pending_bytes.max(pending_bytes),
            size_bytes: self.size_bytes,
        }
    }

    /// Notes the fill before a drain.
    fn note_fill(&mut self) {
        self.max_pending_bytes = self.max_pending_bytes.max(self.positions.pending());
    }

    /// Waits until records are available, then hands each one to `handle`
    /// until the ring buffer is empty. Returns how many records were read.
    ///
    /// The kernel programs wake this reader only when the ring buffer is
    /// filling up (a wakeup per record costs more than the record), so it
    /// also looks every [`DRAIN_INTERVAL`]: a record waits at most that long.
    pub async fn read(&mut self, mut handle: impl FnMut(&[u8])) -> Result<usize, CaptureError> {
        if !self.pending.is_empty() {
            let read = self.pending.len();
            for record in self.pending.drain(..) {
                handle(&record);
            }
            return Ok(read);
        }
        loop {
            let read = match tokio::time::timeout(DRAIN_INTERVAL, self.ring.readable_mut()).await {
                Ok(guard) => {
                    let mut guard = guard.map_err(CaptureError::Poll)?;
                    self.max_pending_bytes = self.max_pending_bytes.max(self.positions.pending());
                    let read = Self::drain_ring(guard.get_inner_mut(), &mut handle);
                    guard.clear_ready();
                    read
                }
                Err(_) => {
                    self.note_fill();
                    Self::drain_ring(self.ring.get_mut(), &mut handle)
                }
            };
            if read > 0 {
                return Ok(read);
            }
        }
    }

    /// Hands every record already in the ring buffer to `handle`, without
    /// waiting. Used at shutdown, after the programs are detached.
    pub fn drain(&mut self, mut handle: impl FnMut(&[u8])) -> usize {
        let pending = self.pending.len();
        for record in self.pending.drain(..) {
            handle(&record);
        }
        self.note_fill();
        pending + Self::drain_ring(self.ring.get_mut(), &mut handle)
    }

    fn drain_ring(ring: &mut RingBuf<MapData>, handle: &mut impl FnMut(&[u8])) -> usize {
        let mut read = 0;
        // Each item is released (consumer position advanced) when dropped, at
        // the end of the loop body.
        while let Some(item) = ring.next() {
            handle(&item);
            read += 1;
        }
        read
    }
}
