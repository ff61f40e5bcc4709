//! Turning kernel records into rows: a flow record becomes a [`FlowBegin`]
//! with UTC time, host name, the DNS names of both ends and who made it; an
//! end record becomes a [`FlowEnd`]; a DNS record teaches the name cache and
//! yields [`DomainObservation`]s for the domains table; exec and cgroup
//! records teach the [`Attributor`].
//!
//! Records arrive in ring-buffer order, so the answer that led to a
//! connection, the exec of the program that made it and the creation of its
//! cgroup are all learned before its SYN-ACK is turned into a row.

use std::net::IpAddr;
use std::sync::Arc;

use flowsql_event::{Direction, DomainList, DomainObservation, EndReason, FlowBegin, FlowEnd, Side};

use crate::abi::{self, DecodeError, DnsEvent, KernelRecord, SocketEvent, socket_flag};
use crate::attribution::{AttributionLimits, AttributionStats, Attributor, Bounded};
use crate::clock::BootClock;
use crate::dns::tcp::{Segment, StreamKey, TcpDnsStreams, TcpStreamStats};
use crate::dns::{NameCache, NameCacheConfig, NameCacheStats, parse_response};

/// How often the boot-time-to-UTC offset is sampled again, and expired names
/// are purged.
const HOUSEKEEPING_NS: u64 = 1_000_000_000;

/// What one ring buffer record turned into.
#[derive(Debug, Clone, PartialEq)]
pub enum Assembled {
    Flow(FlowBegin),
    /// A connection ended (or an attempt failed).
    End(FlowEnd),
    /// A DNS response (or TCP segment of one): what it taught, possibly nothing.
    Dns(Vec<DomainObservation>),
    /// A record that only taught the capture a name (an exec, a cgroup, a
    /// socket older than the capture).
    Learned,
}

/// Open connections whose begin carried DNS names, remembered until their
/// end so that the end names what the begin named.
const BEGIN_NAMES_MAX: usize = 131_072;

/// Counters of the DNS side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// DNS messages read (UDP datagrams, reassembled TCP messages).
    pub messages: u64,
    /// Messages that taught nothing: malformed, not an answer, a failure rcode.
    pub rejected: u64,
    /// Messages whose records were cut short (parsed as far as they went).
    pub incomplete: u64,
    /// (address, name) pairs learned.
    pub observations: u64,
    pub cache: NameCacheStats,
    pub tcp: TcpStreamStats,
}

/// The host's name as the kernel knows it (UTS namespace).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Builds rows from ring buffer records. One per capture; not shared.
#[derive(Debug)]
pub struct FlowAssembler {
    clock: BootClock,
    housekeeping_boot_ns: u64,
    host_name: Arc<str>,
    names: NameCache,
    tcp: TcpDnsStreams,
    stats: DnsStats,
    attributor: Attributor,
    /// flowId = this + the kernel's flow number: random per capture, so that
    /// flowIds do not repeat across captures and reboots of a host.
    flow_id_base: u64,
    /// The names a begin carried, by flow number (only begins with names).
    begin_names: Bounded<u64, (DomainList, DomainList)>,
    /// The highest flow number pushed out of `begin_names`.
    begin_names_evicted: u64,
}

/// A random 64-bit number.
/// The bits a flowId may use (see [`FlowAssembler::flow_id`]).
const FLOW_ID_MASK: u64 = i64::MAX as u64;

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most bytes.len() bytes into the buffer.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled != 8 {
        // No getrandom: the clock still differs between captures.
        return BootClock::new().to_utc_ns(BootClock::boot_now_ns()) as u64 ^ u64::from(std::process::id());
    }
    u64::from_ne_bytes(bytes)
}

/// The facts of a connection's end, from the kernel's record alone (no
/// names): see [`end_facts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndFacts {
    pub direction: Direction,
    pub src: std::net::SocketAddr,
    pub dst: std::net::SocketAddr,
    pub src_bytes: u64,
    pub dst_bytes: u64,
    pub src_packets: u64,
    pub dst_packets: u64,
    pub reason: EndReason,
    pub closed_by: Option<Side>,
    /// From the begin (a failed attempt: from connect()), in nanoseconds.
    pub duration_ns: Option<i64>,
    pub begun_before_capture: bool,
}

fn unreachable_error(error: i32) -> bool {
    matches!(error, libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN)
}

/// How a connection ended, from the socket's flags and error (README,
/// "How each connection ended").
pub fn end_reason(socket: &abi::Socket) -> EndReason {
    let tcp = &socket.tcp;
    let error = tcp.sk_err;
    if !socket.has(socket_flag::ESTABLISHED) {
        if socket.role != abi::ROLE_ACTIVE {
            // An accepted connection that never completed its handshake.
            return if socket.has(socket_flag::RST_RECEIVED) {
                EndReason::ResetReceived
            } else {
                EndReason::Aborted
            };
        }
        return if error == libc::ECONNREFUSED || socket.has(socket_flag::RST_RECEIVED) {
            EndReason::Refused
        } else if unreachable_error(error) || (error == libc::ETIMEDOUT && unreachable_error(tcp.sk_err_soft))
        {
            EndReason::Unreachable
        } else if error == libc::ETIMEDOUT {
            EndReason::Timeout
        } else {
            // The application gave up (closed) before an answer, or another error.
            EndReason::Aborted
        };
    }
    if socket.has(socket_flag::RST_RECEIVED) {
        EndReason::ResetReceived
    } else if socket.has(socket_flag::RST_SENT) || socket.has(socket_flag::RST_PENDING) {
        EndReason::ResetSent
    } else if error == libc::ETIMEDOUT {
        EndReason::Timeout
    } else if unreachable_error(error) {
        EndReason::Unreachable
    } else if error != 0 {
        EndReason::Aborted
    } else {
        EndReason::Fin
    }
}

/// TCP states (include/net/tcp_states.h).
mod state {
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const CLOSING: u8 = 11;
}

/// Direction, endpoints, exact payload bytes, segments, reason and duration
/// of a socket record. `now_ns` is the record's time (CLOCK_BOOTTIME).
///
/// The kernel counts sequence space, not payload: `bytes_acked` includes
/// the active side's SYN (once the handshake is done) and our FIN once it
/// is acknowledged (`snd_una` reached `write_seq`, which counts the FIN);
/// `bytes_received` includes the peer's FIN (`SOCK_DONE`). Taking those out
/// leaves the payload each side sent and the other acknowledged.
pub fn end_facts(event: &SocketEvent, reason: EndReason) -> Result<EndFacts, DecodeError> {
    let socket = &event.socket;
    let tcp = &socket.tcp;
    let active = socket.role == abi::ROLE_ACTIVE;
    let established = socket.has(socket_flag::ESTABLISHED);
    let fin_sent = matches!(
        tcp.state,
        state::FIN_WAIT1 | state::FIN_WAIT2 | state::CLOSING | state::LAST_ACK | state::TIME_WAIT
    ) || socket.first_close == state::FIN_WAIT1;
    let fin_acked = fin_sent && tcp.snd_una == tcp.write_seq;
    let sent =
        tcp.bytes_acked.saturating_sub(u64::from(active && established)).saturating_sub(u64::from(fin_acked));
    let received = tcp.bytes_received.saturating_sub(u64::from(tcp.fin_received != 0));
    let (local, remote) = (tcp.local()?, tcp.remote()?);
    let local_side = if active { Side::Src } else { Side::Dst };
    let remote_side = if active { Side::Dst } else { Side::Src };
    let closed_by = match reason {
        EndReason::Fin => match socket.first_close {
            state::FIN_WAIT1 => Some(local_side),
            state::CLOSE_WAIT => Some(remote_side),
            _ => None,
        },
        EndReason::ResetSent | EndReason::Aborted => Some(local_side),
        EndReason::ResetReceived | EndReason::Refused => Some(remote_side),
        EndReason::Timeout | EndReason::Unreachable | EndReason::Open => None,
    };
    let end_ns = i64::try_from(event.header.boot_ns).unwrap_or(i64::MAX);
    let since = |ns: u64| end_ns.saturating_sub(i64::try_from(ns).unwrap_or(i64::MAX));
    let duration_ns = if socket.begin_ns != 0 {
        Some(since(socket.begin_ns))
    } else if !established && socket.start_ns != 0 {
        Some(since(socket.start_ns))
    } else {
        None
    };
    let (local_segs, remote_segs) = (u64::from(tcp.segs_out), u64::from(tcp.segs_in));
    Ok(if active {
        EndFacts {
            direction: Direction::Outgoing,
            src: local,
            dst: remote,
            src_bytes: sent,
            dst_bytes: received,
            src_packets: local_segs,
            dst_packets: remote_segs,
            reason,
            closed_by,
            duration_ns,
            begun_before_capture: socket.has(socket_flag::PRECAPTURE) && socket.begin_ns == 0,
        }
    } else {
        EndFacts {
            direction: Direction::Incoming,
            src: remote,
            dst: local,
            src_bytes: received,
            dst_bytes: sent,
            src_packets: remote_segs,
            dst_packets: local_segs,
            reason,
            closed_by,
            duration_ns,
            begun_before_capture: socket.has(socket_flag::PRECAPTURE) && socket.begin_ns == 0,
        }
    })
}

/// Parses one DNS message and learns from it.
fn learn(
    message: &[u8],
    complete: bool,
    seen_ns: i64,
    names: &mut NameCache,
    stats: &mut DnsStats,
    out: &mut Vec<DomainObservation>,
) {
    stats.messages += 1;
    let answer = match parse_response(message) {
        Ok(answer) => answer,
        Err(error) => {
            stats.rejected += 1;
            tracing::debug!(%error, "DNS message taught nothing");
            return;
        }
    };
    if answer.incomplete || !complete {
        stats.incomplete += 1;
    }
    for association in answer.associations() {
        let expires_ns = seen_ns.saturating_add(i64::from(association.ttl).saturating_mul(1_000_000_000));
        names.insert(association.ip, association.name.clone(), seen_ns, expires_ns);
        stats.observations += 1;
        out.push(DomainObservation {
            ip: association.ip,
            name: association.name,
            question: answer.question.clone(),
            seen_ns,
            expires_ns,
        });
    }
}

impl FlowAssembler {
    pub fn new(host_name: impl Into<Arc<str>>) -> Self {
        Self::with_name_cache(host_name, NameCacheConfig::default())
    }

    pub fn with_name_cache(host_name: impl Into<Arc<str>>, config: NameCacheConfig) -> Self {
        let cgroup_root = crate::cgroup::unified_mount().ok();
        FlowAssembler::with_attributor(
            host_name,
            config,
            Attributor::new(AttributionLimits::default(), cgroup_root.as_deref()),
        )
    }

    pub fn with_attributor(
        host_name: impl Into<Arc<str>>,
        config: NameCacheConfig,
        attributor: Attributor,
    ) -> Self {
        FlowAssembler {
            clock: BootClock::new(),
            housekeeping_boot_ns: BootClock::boot_now_ns(),
            host_name: host_name.into(),
            names: NameCache::new(config),
            tcp: TcpDnsStreams::new(),
            stats: DnsStats::default(),
            attributor,
            flow_id_base: random_u64(),
            begin_names: Bounded::new(BEGIN_NAMES_MAX),
            begin_names_evicted: 0,
        }
    }

    /// Teaches the name cache what earlier captures learned (the store's
    /// unexpired `domains` rows, oldest first), as of `now_ns`: names
    /// resolved before a restart keep naming flows until their own expiry.
    /// Returns how many were still valid. They are not counted as DNS
    /// observations: no answer taught them to this capture.
    pub fn remember(&mut self, known: &[DomainObservation], now_ns: i64) -> usize {
        let mut remembered = 0;
        for observation in known.iter().filter(|o| o.expires_ns > now_ns) {
            self.names.insert(observation.ip, observation.name.clone(), now_ns, observation.expires_ns);
            remembered += 1;
        }
        remembered
    }

    pub fn dns_stats(&self) -> DnsStats {
        DnsStats { cache: self.names.stats(), tcp: self.tcp.stats(), ..self.stats }
    }

    pub fn attribution_stats(&self) -> AttributionStats {
        let mut stats = self.attributor.stats();
        // Two shared lists and a key per remembered begin.
        stats.entries += self.begin_names.len();
        stats.bytes += self.begin_names.len() * 64;
        stats
    }

    /// The flowId of the kernel's flow number `seq`: 63 random bits, below
    /// 2^63 so that every engine reading the Parquet files (which hold it
    /// as a signed 64-bit integer) shows the same number.
    pub fn flow_id(&self, seq: u64) -> u64 {
        self.flow_id_base.wrapping_add(seq) & FLOW_ID_MASK
    }

    /// UTC time of a kernel timestamp; now and then resyncs the clock and
    /// purges expired names.
    fn utc(&mut self, boot_ns: u64) -> i64 {
        if boot_ns.saturating_sub(self.housekeeping_boot_ns) > HOUSEKEEPING_NS {
            self.clock.resync();
            self.housekeeping_boot_ns = boot_ns;
            let now = self.clock.to_utc_ns(boot_ns);
            self.names.purge_expired(now);
        }
        // Whole microseconds: the precision of the Parquet files (a
        // `TIMESTAMP(MICROS)` every engine reads), so a row shows the same
        // time before and after its export.
        self.clock.to_utc_ns(boot_ns).div_euclid(1000) * 1000
    }

    /// Interprets one ring buffer item.
    pub fn assemble(&mut self, item: &[u8]) -> Result<Assembled, DecodeError> {
        match abi::decode(item)? {
            KernelRecord::FlowBegin(flow) => Ok(Assembled::Flow(self.begin(&flow)?)),
            KernelRecord::FlowEnd(event) => Ok(Assembled::End(self.end(&event, false)?)),
            KernelRecord::DnsResponse(dns, payload) => Ok(Assembled::Dns(self.learn_dns(&dns, payload)?)),
            KernelRecord::Socket(event) => {
                // A socket older than the capture, adopted by the iterator.
                if event.socket.has(socket_flag::PRECAPTURE) {
                    self.attributor.learn_precapture_socket(event.socket_cookie, &event.socket.owner);
                }
                Ok(Assembled::Learned)
            }
            KernelRecord::Exec(exec, names) => {
                self.attributor.learn_exec(
                    exec.exe_dev,
                    exec.exe_ino,
                    names,
                    exec.components & abi::EXEC_TRUNCATED != 0,
                );
                Ok(Assembled::Learned)
            }
            KernelRecord::Cgroup(cgroup, path) => {
                if cgroup.op != abi::CGROUP_RMDIR && cgroup.truncated == 0 {
                    self.attributor.learn_cgroup(cgroup.cgroup_id, &String::from_utf8_lossy(path));
                }
                Ok(Assembled::Learned)
            }
        }
    }

    fn begin(&mut self, flow: &abi::FlowEvent) -> Result<FlowBegin, DecodeError> {
        let timestamp_ns = self.utc(flow.header.boot_ns);
        let direction =
            if flow.direction == abi::DIRECTION_OUTGOING { Direction::Outgoing } else { Direction::Incoming };
        let src_ip = flow.src_ip()?;
        let dst_ip = flow.dst_ip()?;
        let src_domains = self.names.lookup(src_ip, timestamp_ns);
        let dst_domains = self.names.lookup(dst_ip, timestamp_ns);
        if !src_domains.is_empty() || !dst_domains.is_empty() {
            self.remember_names(flow.flow_seq, &src_domains, &dst_domains);
        }
        Ok(FlowBegin {
            timestamp_ns,
            direction,
            src_ip,
            dst_ip,
            src_port: flow.src_port(),
            dst_port: flow.dst_port(),
            src_domains,
            dst_domains,
            cgroup_id: flow.cgroup_id,
            host_name: Arc::clone(&self.host_name),
            flow_id: self.flow_id(flow.flow_seq),
            attribution: self.attributor.attribute(&flow.owner, flow.socket_cookie, flow.cgroup_id),
        })
    }

    fn remember_names(&mut self, seq: u64, src: &DomainList, dst: &DomainList) {
        if let Some(evicted) = self.begin_names.insert(seq, (Arc::clone(src), Arc::clone(dst))) {
            // Flow numbers grow with time: a begin at or below this one may
            // have had names that are gone.
            self.begin_names_evicted = self.begin_names_evicted.max(evicted);
        }
    }

    /// The names of both ends as the begin had them: remembered when it had
    /// any; none when it had none; for a connection begun before the capture
    /// (or one whose begin was pushed out of memory), those valid at `at`.
    fn end_names(
        &mut self,
        seq: u64,
        keep: bool,
        src: IpAddr,
        dst: IpAddr,
        at: i64,
        known_begin: bool,
    ) -> (DomainList, DomainList) {
        let remembered =
            if keep { self.begin_names.get(&seq).cloned() } else { self.begin_names.remove(&seq) };
        match remembered {
            Some(names) => names,
            None if known_begin && seq > self.begin_names_evicted => {
                (DomainList::default(), DomainList::default())
            }
            None => (self.names.lookup(src, at), self.names.lookup(dst, at)),
        }
    }

    /// A socket record as a row: a connection's end, or (`open`) how it is
    /// going now.
    fn end(&mut self, event: &SocketEvent, open: bool) -> Result<FlowEnd, DecodeError> {
        let socket = &event.socket;
        let reason = if open { EndReason::Open } else { end_reason(socket) };
        let facts = end_facts(event, reason)?;
        let timestamp_ns = self.utc(event.header.boot_ns);
        // Times are whole microseconds: the duration is the one between the
        // begin's recorded time and this one (begin + duration = end).
        let end_exact = self.clock.to_utc_ns(event.header.boot_ns);
        let duration_ns =
            facts.duration_ns.map(|d| timestamp_ns - end_exact.saturating_sub(d).div_euclid(1000) * 1000);
        let known_begin = socket.begin_ns != 0;
        let (src_domains, dst_domains) =
            self.end_names(socket.flow_seq, open, facts.src.ip(), facts.dst.ip(), timestamp_ns, known_begin);
        // A failed attempt has no begin: it gets a flow number of its own.
        let flow_id = self.flow_id(socket.flow_seq);
        let owner_cookie =
            if socket.listener_cookie != 0 { socket.listener_cookie } else { event.socket_cookie };
        let attribution = self.attributor.attribute(&socket.owner, owner_cookie, event.cgroup_id);
        let accepting = (socket.role == abi::ROLE_PASSIVE && socket.acceptor_tgid != 0).then(|| {
            let end = socket.acceptor_comm.iter().position(|&b| b == 0).unwrap_or(16);
            (socket.acceptor_tgid, Arc::<str>::from(String::from_utf8_lossy(&socket.acceptor_comm[..end])))
        });
        Ok(FlowEnd {
            timestamp_ns,
            direction: facts.direction,
            src_ip: facts.src.ip(),
            dst_ip: facts.dst.ip(),
            src_port: facts.src.port(),
            dst_port: facts.dst.port(),
            src_domains,
            dst_domains,
            duration_ns,
            src_bytes: facts.src_bytes,
            dst_bytes: facts.dst_bytes,
            src_packets: facts.src_packets,
            dst_packets: facts.dst_packets,
            retransmits: socket.tcp.total_retrans,
            rtt_micros: socket.tcp.srtt_us,
            reason,
            closed_by: facts.closed_by,
            begun_before_capture: facts.begun_before_capture,
            host_name: Arc::clone(&self.host_name),
            cgroup_id: event.cgroup_id,
            flow_id,
            attribution,
            accepting_process_id: accepting.as_ref().map(|(pid, _)| *pid),
            accepting_process_name: accepting.map(|(_, name)| name).unwrap_or_default(),
        })
    }

    /// The open connections, from the records of
    /// [`crate::OpenSockets::read`]: one row each, with
    /// [`EndReason::Open`], the time of the reading as `timestamp` and the
    /// counters so far.
    pub fn open_flows(&mut self, records: &[Vec<u8>]) -> Vec<FlowEnd> {
        records
            .iter()
            .filter_map(|record| match abi::decode(record) {
                Ok(KernelRecord::Socket(event)) => self.end(&event, true).ok(),
                Ok(_) => None,
                Err(error) => {
                    tracing::warn!(%error, "skipped an undecodable open-connection record");
                    None
                }
            })
            .collect()
    }

    fn learn_dns(&mut self, dns: &DnsEvent, payload: &[u8]) -> Result<Vec<DomainObservation>, DecodeError> {
        let seen_ns = self.utc(dns.header.boot_ns);
        let mut observations = Vec::new();
        let (names, stats) = (&mut self.names, &mut self.stats);
        if dns.is_tcp() {
            let key = StreamKey { src: dns.src()?, dst: dns.dst()?, egress: dns.egress != 0 };
            let segment = Segment {
                seq: dns.tcp_seq,
                bytes: payload,
                length: usize::from(dns.payload_len).max(payload.len()),
            };
            self.tcp.push(key, segment, |message, complete| {
                learn(message, complete, seen_ns, names, stats, &mut observations)
            });
        } else {
            learn(payload, !dns.truncated(), seen_ns, names, stats, &mut observations);
        }
        Ok(observations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{EventHeader, ROLE_ACTIVE, ROLE_PASSIVE, Socket, TcpSnapshot};

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&a);
        out
    }

    /// The kernel's counters at the end of the 1,000,000 / 12,345 byte
    /// exchange on loopback, as a probe read them (client: active close).
    fn exchange(role: u8) -> SocketEvent {
        let client = role == ROLE_ACTIVE;
        let tcp = TcpSnapshot {
            local_addr_be: v4([127, 0, 0, 1]),
            remote_addr_be: v4([127, 0, 0, 1]),
            local_port_be: if client { 56344u16.to_be() } else { 7101u16.to_be() },
            remote_port_be: if client { 7101u16.to_be() } else { 56344u16.to_be() },
            ip_version: 4,
            state: if client { state::FIN_WAIT2 } else { state::LAST_ACK },
            fin_received: 1,
            segs_in: if client { 20 } else { 29 },
            segs_out: if client { 29 } else { 19 },
            snd_una: 10,
            write_seq: 10,
            bytes_acked: if client { 1_000_002 } else { 12_346 },
            bytes_received: if client { 12_346 } else { 1_000_001 },
            ..TcpSnapshot::default()
        };
        SocketEvent {
            header: EventHeader { kind: abi::KIND_FLOW_END, length: 0, reserved: 0, boot_ns: 3_000 },
            cgroup_id: 1,
            socket_cookie: 2,
            socket_inode: 0,
            socket: Socket {
                flow_seq: 5,
                begin_ns: 1_000,
                start_ns: 900,
                end_ns: 3_000,
                role,
                first_close: if client { state::FIN_WAIT1 } else { state::CLOSE_WAIT },
                flags: socket_flag::ESTABLISHED | socket_flag::ENDED,
                tcp,
                ..Socket::default()
            },
        }
    }

    fn known(ip: &str, name: &str, expires_ns: i64) -> DomainObservation {
        DomainObservation {
            ip: ip.parse().expect("ip"),
            name: name.into(),
            question: name.into(),
            seen_ns: 100,
            expires_ns,
        }
    }

    #[test]
    fn payload_bytes_are_exact_on_both_sides() {
        for role in [ROLE_ACTIVE, ROLE_PASSIVE] {
            let event = exchange(role);
            assert_eq!(end_reason(&event.socket), EndReason::Fin);
            let facts = end_facts(&event, EndReason::Fin).expect("facts");
            assert_eq!((facts.src_bytes, facts.dst_bytes), (1_000_000, 12_345), "role {role}");
            assert_eq!(facts.src.port(), 56344);
            assert_eq!(facts.dst.port(), 7101);
            assert_eq!(facts.closed_by, Some(Side::Src), "the client sent the first FIN");
            assert_eq!(facts.duration_ns, Some(2_000));
            let dst_packets = if role == ROLE_ACTIVE { 20 } else { 19 };
            assert_eq!((facts.src_packets, facts.dst_packets), (29, dst_packets), "segments by sender");
            assert!(!facts.begun_before_capture);
        }
        // A FIN sent but not acknowledged is not a byte either way.
        let mut unacked = exchange(ROLE_ACTIVE);
        unacked.socket.tcp.snd_una = 9;
        unacked.socket.tcp.bytes_acked = 1_000_001;
        assert_eq!(end_facts(&unacked, EndReason::Fin).expect("facts").src_bytes, 1_000_000);
    }

    #[test]
    fn reasons_follow_the_socket() {
        let mut socket = exchange(ROLE_ACTIVE).socket;
        socket.flags = socket_flag::ENDED; // never established
        socket.tcp.sk_err = libc::ECONNREFUSED;
        assert_eq!(end_reason(&socket), EndReason::Refused);
        socket.tcp.sk_err = libc::ETIMEDOUT;
        assert_eq!(end_reason(&socket), EndReason::Timeout);
        socket.tcp.sk_err_soft = libc::EHOSTUNREACH;
        assert_eq!(end_reason(&socket), EndReason::Unreachable);
        socket.tcp = TcpSnapshot { ip_version: 4, ..TcpSnapshot::default() };
        assert_eq!(end_reason(&socket), EndReason::Aborted, "closed before an answer");
        socket.flags = socket_flag::ESTABLISHED | socket_flag::RST_RECEIVED;
        assert_eq!(end_reason(&socket), EndReason::ResetReceived);
        socket.flags = socket_flag::ESTABLISHED | socket_flag::RST_SENT;
        assert_eq!(end_reason(&socket), EndReason::ResetSent);
        socket.flags = socket_flag::ESTABLISHED;
        socket.tcp.sk_err = libc::ETIMEDOUT;
        assert_eq!(end_reason(&socket), EndReason::Timeout);
        socket.tcp.sk_err = libc::EPIPE;
        assert_eq!(end_reason(&socket), EndReason::Aborted);
        socket.role = ROLE_PASSIVE;
        socket.flags = socket_flag::RST_RECEIVED;
        assert_eq!(end_reason(&socket), EndReason::ResetReceived, "reset before the handshake completed");
    }

    #[test]
    fn a_failed_attempt_lasts_from_connect_and_a_precapture_one_is_marked() {
        let mut event = exchange(ROLE_ACTIVE);
        event.socket.begin_ns = 0;
        event.socket.flags = socket_flag::ENDED;
        assert_eq!(end_facts(&event, EndReason::Timeout).expect("facts").duration_ns, Some(2_100));
        let mut old = exchange(ROLE_PASSIVE);
        old.socket.begin_ns = 0;
        old.socket.start_ns = 0;
        old.socket.flags |= socket_flag::PRECAPTURE;
        let facts = end_facts(&old, EndReason::Fin).expect("facts");
        assert!(facts.begun_before_capture);
        assert_eq!(facts.duration_ns, None);
    }

    #[test]
    fn remembered_names_name_their_address_until_they_expire() {
        let mut assembler = FlowAssembler::new("host");
        let learned = [
            known("192.0.2.1", "www.a.test", 2_000),
            known("192.0.2.1", "edge.a.test", 2_000),
            known("192.0.2.2", "gone.test", 500),
        ];
        assert_eq!(assembler.remember(&learned, 1_000), 2);
        let ip = |text: &str| text.parse().expect("ip");
        let names = assembler.names.lookup(ip("192.0.2.1"), 1_500);
        assert_eq!(names.iter().map(|n| &**n).collect::<Vec<_>>(), ["www.a.test", "edge.a.test"]);
        assert!(assembler.names.lookup(ip("192.0.2.2"), 1_500).is_empty(), "expired before the start");
        assert!(assembler.names.lookup(ip("192.0.2.1"), 2_000).is_empty(), "expired since");
        assert_eq!(assembler.dns_stats().observations, 0, "no answer taught them to this capture");
    }
}
