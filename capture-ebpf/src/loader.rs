//! Loading the kernel programs, attaching them to a cgroup, and reading the
//! ring buffer they write to.
//!
//! [`Capture`] owns the loaded object: while it lives, both programs stay
//! attached; dropping it detaches them. [`EventReader`] owns the ring buffer
//! and can be drained after the programs are detached, so that a clean
//! shutdown loses nothing that the kernel already submitted.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError};
use aya::{Ebpf, EbpfError, EbpfLoader};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::abi::{self, counter_slot};
use crate::cgroup::{self, CgroupError};

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
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig { cgroup: None, ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES }
    }
}

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
}

/// What the kernel measured of one program (BPF statistics must be on, see
/// [`Capture::enable_run_time_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramStats {
    pub hook: Hook,
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
}

impl KernelCounters {
    /// Records the kernel could not deliver.
    pub fn lost(&self) -> u64 {
        self.flow_ringbuf_full + self.dns_ringbuf_full
    }
}

/// The loaded, attached programs. Dropping this detaches them.
pub struct Capture {
    cgroup: Option<PathBuf>,
    /// The attachments; dropping one detaches its program.
    links: Vec<aya::programs::cgroup_skb::CgroupSkbLink>,
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

/// One of the two programs.
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

impl Capture {
    /// Loads the programs and attaches them to the configured cgroup. Must be
    /// called inside a tokio runtime (the ring buffer is registered with it).
    pub fn attach(config: &CaptureConfig) -> Result<(Capture, EventReader), CaptureError> {
        let cgroup = match &config.cgroup {
            Some(path) => path.clone(),
            None => cgroup::unified_mount()?,
        };
        if let Some(missing) = missing_capabilities() {
            return Err(CaptureError::MissingPrivileges { missing });
        }
        cgroup::check_cgroup2_dir(&cgroup)?;
        let (mut capture, reader) = Capture::load(config.ring_buffer_bytes)?;
        tracing::info!(cgroup = %cgroup.display(), "capture attaching");
        capture.attach_programs(cgroup)?;
        Ok((capture, reader))
    }

    /// Loads the programs into the kernel without attaching them anywhere:
    /// they then only run through [`Capture::test_run`]. Must be called
    /// inside a tokio runtime.
    pub fn load(ring_buffer_bytes: u32) -> Result<(Capture, EventReader), CaptureError> {
        if let Some(missing) = missing_capabilities() {
            return Err(CaptureError::MissingPrivileges { missing });
        }
        // SAFETY: sysconf has no preconditions.
        let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        if !ring_buffer_bytes.is_power_of_two() || ring_buffer_bytes < page {
            return Err(CaptureError::RingBufferSize(ring_buffer_bytes));
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(abi::MAP_EVENTS, ring_buffer_bytes)
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
        Ok((Capture { cgroup: None, links: Vec::new(), counters, ebpf }, reader))
    }

    fn attach_programs(&mut self, cgroup: PathBuf) -> Result<(), CaptureError> {
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
            self.links.push(link);
        }
        self.cgroup = Some(cgroup);
        Ok(())
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

    /// Run time and run count of each program so far.
    pub fn program_stats(&self) -> Result<Vec<ProgramStats>, CaptureError> {
        [Hook::Ingress, Hook::Egress]
            .into_iter()
            .map(|hook| {
                let program = hook.program();
                let prog = self.cgroup_skb(hook)?;
                let info = prog.info().map_err(|source| CaptureError::Load { program, source })?;
                Ok(ProgramStats {
                    hook,
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
            self.links.clear();
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
        })
    }
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
        Ok(EventReader { ring, positions, size_bytes: u64::from(size_bytes), max_pending_bytes: 0 })
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
        self.note_fill();
        Self::drain_ring(self.ring.get_mut(), &mut handle)
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
