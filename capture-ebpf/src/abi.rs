//! The Rust mirror of `bpf/flowsql.h`: the records the kernel programs put in
//! the ring buffer, the map names and the counter slots.
//!
//! Every struct here is `#[repr(C)]` and made only of integers and byte
//! arrays, so any bytes are a valid value; [`decode`] checks lengths before it
//! reads. The layout is checked against the compiled object's debug info by
//! the test at the bottom of this file, not trusted by eye.

use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The compiled kernel programs, built by `build-bpf.sh` and committed.
pub static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/flowsql.bpf.o");

pub const MAP_EVENTS: &str = "flowsql_events";
pub const MAP_COUNTERS: &str = "flowsql_counters";
pub const MAP_CONNECTIONS: &str = "flowsql_connections";
pub const MAP_DNS_SCRATCH: &str = "flowsql_dns_scratch";
pub const MAP_SOCKETS: &str = "flowsql_sockets";
pub const MAP_SCRATCH: &str = "flowsql_scratch";
pub const MAP_LISTEN_PORTS: &str = "flowsql_listen_ports";
pub const PROGRAM_INGRESS: &str = "flowsql_ingress";
pub const PROGRAM_EGRESS: &str = "flowsql_egress";

/// The settings the loader writes into the object (`.rodata`).
pub const GLOBAL_FEATURES: &str = "flowsql_features";
pub const GLOBAL_WATCHED_CGROUP_ID: &str = "flowsql_watched_cgroup_id";
pub const GLOBAL_WATCHED_LEVEL: &str = "flowsql_watched_level";
/// Bits of [`GLOBAL_FEATURES`].
pub const FEATURE_ATTRIBUTION: u32 = 1;
pub const FEATURE_ENDS: u32 = 2;

pub const KIND_FLOW_BEGIN: u16 = 1;
pub const KIND_DNS_RESPONSE: u16 = 2;
pub const KIND_FLOW_END: u16 = 3;
pub const KIND_EXEC: u16 = 4;
pub const KIND_CGROUP: u16 = 5;
pub const KIND_SOCKET: u16 = 6;

/// `flowsql_flow_event.flags`: reported at the ESTABLISHED transition, the
/// SYN-ACK went unseen (SYN cookies).
pub const BEGIN_RECOVERED: u8 = 1;

/// `flowsql_socket.role`.
pub const ROLE_ACTIVE: u8 = 1;
pub const ROLE_LISTENER: u8 = 2;
pub const ROLE_PASSIVE: u8 = 3;

/// Bits of `flowsql_socket.flags`.
pub mod socket_flag {
    pub const PRECAPTURE: u16 = 1;
    pub const ESTABLISHED: u16 = 2;
    pub const RST_RECEIVED: u16 = 4;
    pub const RST_SENT: u16 = 8;
    pub const RST_PENDING: u16 = 16;
    pub const ENDED: u16 = 32;
    pub const DEFERRED: u16 = 64;
    pub const RELEASED: u16 = 128;
    pub const REPORTED: u16 = 256;
}

/// Bytes of an executable's path an exec record carries at most.
pub const EXEC_PATH_MAX: usize = 1024;
/// `flowsql_exec_event.components`: some of the path's names are missing.
pub const EXEC_TRUNCATED: u16 = 0x8000;
/// `flowsql_cgroup_event.op`.
pub const CGROUP_MKDIR: u8 = 1;
pub const CGROUP_RMDIR: u8 = 2;
pub const CGROUP_RENAME: u8 = 3;
/// Bytes of a cgroup path a record carries at most (with its NUL).
pub const CGROUP_PATH_MAX: usize = 512;

pub const DIRECTION_OUTGOING: u8 = 1;
pub const DIRECTION_INCOMING: u8 = 2;

/// Bytes of a DNS message the kernel copies at most.
pub const DNS_PAYLOAD_MAX: usize = 4096;
/// `flowsql_dns_event.flags`: the message was longer than what was copied.
pub const DNS_TRUNCATED: u8 = 1;
pub const TRANSPORT_TCP: u8 = 6;
pub const TRANSPORT_UDP: u8 = 17;

/// Slots of the kernel's per-CPU counter array (`FLOWSQL_COUNTER_*`).
pub mod counter_slot {
    pub const FLOW_EVENTS: u32 = 0;
    pub const FLOW_RINGBUF_FULL: u32 = 1;
    pub const SYNACK_DUPLICATE: u32 = 2;
    pub const HEADER_UNREADABLE: u32 = 3;
    pub const IPV6_EXT_TOO_DEEP: u32 = 4;
    pub const CONNECTION_MAP_ERROR: u32 = 5;
    pub const DNS_EVENTS: u32 = 6;
    pub const DNS_RINGBUF_FULL: u32 = 7;
    pub const DNS_TRUNCATED: u32 = 8;
    pub const END_EVENTS: u32 = 9;
    pub const END_RINGBUF_FULL: u32 = 10;
    pub const BEGIN_RECOVERED: u32 = 11;
    pub const STORAGE_FAILED: u32 = 12;
    pub const INFO_EVENTS: u32 = 13;
    pub const INFO_RINGBUF_FULL: u32 = 14;
    pub const SLOTS: u32 = 32;
}

/// `struct flowsql_event_header`: the start of every record.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u16,
    /// Bytes of the whole record, this header included.
    pub length: u16,
    pub reserved: u32,
    /// CLOCK_BOOTTIME when the packet was seen.
    pub boot_ns: u64,
}

/// `struct flowsql_process`: the process that called connect() or listen()
/// on a socket, as the kernel read it in that call.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Process {
    /// Thread group id; 0: not known.
    pub tgid: u32,
    pub uid: u32,
    /// Inode of its executable; 0: none.
    pub exe_ino: u64,
    /// Device of the executable's file system, kernel encoding.
    pub exe_dev: u32,
    pub reserved: u32,
    /// The thread-group leader's command name, NUL-padded.
    pub comm: [u8; 16],
}

impl Process {
    pub fn known(&self) -> bool {
        self.tgid != 0
    }
}

/// `struct flowsql_flow_event`: one TCP connection begin.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowEvent {
    pub header: EventHeader,
    pub cgroup_id: u64,
    pub socket_cookie: u64,
    /// The flow's number in this capture; flowId = the capture's base + it.
    pub flow_seq: u64,
    pub ip_version: u8,
    pub direction: u8,
    pub src_port_be: u16,
    pub dst_port_be: u16,
    /// `BEGIN_*` bits.
    pub flags: u8,
    pub reserved: u8,
    pub src_addr_be: [u8; 16],
    pub dst_addr_be: [u8; 16],
    /// Outgoing: connect()'s caller; incoming: listen()'s.
    pub owner: Process,
}

impl FlowEvent {
    pub fn src_ip(&self) -> Result<IpAddr, DecodeError> {
        ip_from_be(self.ip_version, &self.src_addr_be)
    }

    pub fn dst_ip(&self) -> Result<IpAddr, DecodeError> {
        ip_from_be(self.ip_version, &self.dst_addr_be)
    }

    pub fn src_port(&self) -> u16 {
        u16::from_be(self.src_port_be)
    }

    pub fn dst_port(&self) -> u16 {
        u16::from_be(self.dst_port_be)
    }
}

/// `struct flowsql_tcp_snapshot`: a TCP socket's addresses and counters.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpSnapshot {
    pub local_addr_be: [u8; 16],
    pub remote_addr_be: [u8; 16],
    pub local_port_be: u16,
    pub remote_port_be: u16,
    pub ip_version: u8,
    /// At an end: the state the connection left for CLOSE; else the state now.
    pub state: u8,
    /// The peer's FIN arrived (and is counted in `bytes_received`).
    pub fin_received: u8,
    pub reserved: u8,
    pub sk_err: i32,
    pub sk_err_soft: i32,
    pub srtt_us: u32,
    pub total_retrans: u32,
    pub segs_in: u32,
    pub segs_out: u32,
    pub snd_una: u32,
    pub write_seq: u32,
    pub bytes_acked: u64,
    pub bytes_received: u64,
}

impl TcpSnapshot {
    pub fn local(&self) -> Result<SocketAddr, DecodeError> {
        Ok(SocketAddr::new(
            ip_from_be(self.ip_version, &self.local_addr_be)?,
            u16::from_be(self.local_port_be),
        ))
    }

    pub fn remote(&self) -> Result<SocketAddr, DecodeError> {
        Ok(SocketAddr::new(
            ip_from_be(self.ip_version, &self.remote_addr_be)?,
            u16::from_be(self.remote_port_be),
        ))
    }
}

/// `struct flowsql_socket`: what the kernel keeps on a socket it follows.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Socket {
    pub flow_seq: u64,
    /// CLOCK_BOOTTIME of the begin; 0: unknown (before the capture).
    pub begin_ns: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub listener_cookie: u64,
    pub owner: Process,
    /// Passive: the process that held the socket when it was closed last.
    pub acceptor_tgid: u32,
    pub acceptor_comm: [u8; 16],
    /// `ROLE_*`.
    pub role: u8,
    /// The state first entered from ESTABLISHED (0: none yet).
    pub first_close: u8,
    /// `socket_flag` bits.
    pub flags: u16,
    pub reserved: u32,
    pub tcp: TcpSnapshot,
}

impl Socket {
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// `struct flowsql_socket_event`: a connection end, or a socket an
/// iterator found.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketEvent {
    pub header: EventHeader,
    pub cgroup_id: u64,
    pub socket_cookie: u64,
    /// Iterator records: the inode of the socket's file (0: none).
    pub socket_inode: u64,
    pub socket: Socket,
}

/// `struct flowsql_exec_event` up to its path.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub tgid: u32,
    pub exe_dev: u32,
    pub exe_ino: u64,
    pub path_len: u16,
    /// Names in the path; `EXEC_TRUNCATED` when some are missing.
    pub components: u16,
    pub reserved: u32,
}

/// `struct flowsql_cgroup_event` up to its path.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupEvent {
    pub header: EventHeader,
    pub cgroup_id: u64,
    /// `CGROUP_*`.
    pub op: u8,
    pub truncated: u8,
    /// Bytes of the path, its NUL included.
    pub path_len: u16,
    pub reserved: u32,
}

/// `struct flowsql_dns_event` up to (not including) its payload: a DNS
/// message or a TCP segment of one, from port 53.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsEvent {
    pub header: EventHeader,
    pub cgroup_id: u64,
    pub socket_cookie: u64,
    /// TCP: sequence number of the first payload byte; UDP: 0.
    pub tcp_seq: u32,
    /// Payload bytes in the packet (at most 65535).
    pub payload_len: u16,
    /// Payload bytes copied (what follows this struct in the record).
    pub captured_len: u16,
    pub ip_version: u8,
    pub transport: u8,
    /// 1: sent by a local socket; 0: received.
    pub egress: u8,
    pub flags: u8,
    pub src_port_be: u16,
    pub dst_port_be: u16,
    pub src_addr_be: [u8; 16],
    pub dst_addr_be: [u8; 16],
}

impl DnsEvent {
    pub fn src(&self) -> Result<SocketAddr, DecodeError> {
        Ok(SocketAddr::new(ip_from_be(self.ip_version, &self.src_addr_be)?, u16::from_be(self.src_port_be)))
    }

    pub fn dst(&self) -> Result<SocketAddr, DecodeError> {
        Ok(SocketAddr::new(ip_from_be(self.ip_version, &self.dst_addr_be)?, u16::from_be(self.dst_port_be)))
    }

    pub fn is_tcp(&self) -> bool {
        self.transport == TRANSPORT_TCP
    }

    /// The kernel copied less than the packet carried.
    pub fn truncated(&self) -> bool {
        self.flags & DNS_TRUNCATED != 0
    }
}

/// An address from its network-order bytes; IPv4 sits in the first four.
pub fn ip_from_be(ip_version: u8, bytes: &[u8; 16]) -> Result<IpAddr, DecodeError> {
    match ip_version {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
        6 => Ok(IpAddr::V6(Ipv6Addr::from(*bytes))),
        other => Err(DecodeError::IpVersion(other)),
    }
}

/// A record from the ring buffer that could not be decoded. The kernel and
/// user space come from one build, so any of these means a bug or a mismatched
/// object; the record is skipped and counted, never guessed at.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than its {needed}-byte {what}")]
    Short { what: &'static str, needed: usize, got: usize },
    #[error("record header says {header} bytes but the ring buffer item has {item}")]
    Length { header: usize, item: usize },
    #[error("unknown record kind {0}")]
    Kind(u16),
    #[error("unknown IP version {0} in a flow record")]
    IpVersion(u8),
    #[error("unknown direction {0} in a flow record")]
    Direction(u8),
    #[error("DNS record says {captured} payload bytes but carries {carried}")]
    DnsPayload { captured: usize, carried: usize },
    #[error("unknown transport {0} in a DNS record")]
    Transport(u8),
    #[error("{what} record says {said} path bytes but carries {carried}")]
    Path { what: &'static str, said: usize, carried: usize },
    #[error("unknown role {0} in a socket record")]
    Role(u8),
    #[error("unknown cgroup operation {0}")]
    CgroupOp(u8),
}

/// A record from the kernel, decoded but not yet interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelRecord<'a> {
    FlowBegin(FlowEvent),
    /// A DNS response (or TCP segment of one) and its captured payload.
    DnsResponse(DnsEvent, &'a [u8]),
    /// A connection ended.
    FlowEnd(SocketEvent),
    /// A socket as an iterator found it (adopted at start, or open now).
    Socket(SocketEvent),
    /// A program was executed; the path's names, leaf first, NUL-terminated.
    Exec(ExecEvent, &'a [u8]),
    /// A cgroup appeared, was renamed or removed; its path without the NUL.
    Cgroup(CgroupEvent, &'a [u8]),
}

/// Reads a `T` from the start of `bytes` after checking the length.
fn read_struct<T: Copy>(what: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    let needed = size_of::<T>();
    if bytes.len() < needed {
        return Err(DecodeError::Short { what, needed, got: bytes.len() });
    }
    // SAFETY: `bytes` holds at least size_of::<T>() bytes (checked above);
    // read_unaligned has no alignment requirement; the T used here are
    // #[repr(C)] structs of integers and byte arrays, valid for any bytes.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring buffer item.
pub fn decode(item: &[u8]) -> Result<KernelRecord<'_>, DecodeError> {
    let header: EventHeader = read_struct("header", item)?;
    let length = usize::from(header.length);
    if length > item.len() || length < size_of::<EventHeader>() {
        return Err(DecodeError::Length { header: length, item: item.len() });
    }
    let record = &item[..length];
    match header.kind {
        KIND_FLOW_BEGIN => {
            let flow: FlowEvent = read_struct("flow record", record)?;
            if flow.ip_version != 4 && flow.ip_version != 6 {
                return Err(DecodeError::IpVersion(flow.ip_version));
            }
            if flow.direction != DIRECTION_OUTGOING && flow.direction != DIRECTION_INCOMING {
                return Err(DecodeError::Direction(flow.direction));
            }
            Ok(KernelRecord::FlowBegin(flow))
        }
        KIND_DNS_RESPONSE => {
            let dns: DnsEvent = read_struct("DNS record", record)?;
            let payload = &record[size_of::<DnsEvent>()..];
            let captured = usize::from(dns.captured_len);
            if captured != payload.len() || captured > DNS_PAYLOAD_MAX {
                return Err(DecodeError::DnsPayload { captured, carried: payload.len() });
            }
            if dns.ip_version != 4 && dns.ip_version != 6 {
                return Err(DecodeError::IpVersion(dns.ip_version));
            }
            if dns.transport != TRANSPORT_TCP && dns.transport != TRANSPORT_UDP {
                return Err(DecodeError::Transport(dns.transport));
            }
            Ok(KernelRecord::DnsResponse(dns, payload))
        }
        KIND_FLOW_END | KIND_SOCKET => {
            let event: SocketEvent = read_struct("socket record", record)?;
            if !matches!(event.socket.role, ROLE_ACTIVE | ROLE_LISTENER | ROLE_PASSIVE) {
                return Err(DecodeError::Role(event.socket.role));
            }
            let version = event.socket.tcp.ip_version;
            if version != 4 && version != 6 {
                return Err(DecodeError::IpVersion(version));
            }
            Ok(if header.kind == KIND_FLOW_END {
                KernelRecord::FlowEnd(event)
            } else {
                KernelRecord::Socket(event)
            })
        }
        KIND_EXEC => {
            let exec: ExecEvent = read_struct("exec record", record)?;
            let path = &record[size_of::<ExecEvent>()..];
            let said = usize::from(exec.path_len);
            if said != path.len() || said > EXEC_PATH_MAX {
                return Err(DecodeError::Path { what: "exec", said, carried: path.len() });
            }
            Ok(KernelRecord::Exec(exec, path))
        }
        KIND_CGROUP => {
            let cgroup: CgroupEvent = read_struct("cgroup record", record)?;
            let path = &record[size_of::<CgroupEvent>()..];
            let said = usize::from(cgroup.path_len);
            if said != path.len() || said == 0 || said > CGROUP_PATH_MAX {
                return Err(DecodeError::Path { what: "cgroup", said, carried: path.len() });
            }
            if !matches!(cgroup.op, CGROUP_MKDIR | CGROUP_RMDIR | CGROUP_RENAME) {
                return Err(DecodeError::CgroupOp(cgroup.op));
            }
            // Without its NUL.
            Ok(KernelRecord::Cgroup(cgroup, &path[..said - 1]))
        }
        other => Err(DecodeError::Kind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow_bytes(flow: &FlowEvent) -> Vec<u8> {
        // SAFETY: FlowEvent is #[repr(C)] plain data without padding (its
        // layout test proves the fields tile it), so its bytes are initialized.
        let bytes = unsafe {
            std::slice::from_raw_parts((flow as *const FlowEvent).cast::<u8>(), size_of::<FlowEvent>())
        };
        bytes.to_vec()
    }

    fn sample_flow() -> FlowEvent {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[10, 1, 2, 3]);
        FlowEvent {
            header: EventHeader {
                kind: KIND_FLOW_BEGIN,
                length: size_of::<FlowEvent>() as u16,
                reserved: 0,
                boot_ns: 5,
            },
            cgroup_id: 7,
            socket_cookie: 9,
            flow_seq: 11,
            ip_version: 4,
            direction: DIRECTION_OUTGOING,
            src_port_be: 40000u16.to_be(),
            dst_port_be: 80u16.to_be(),
            flags: 0,
            reserved: 0,
            src_addr_be: src,
            dst_addr_be: dst,
            owner: Process::default(),
        }
    }

    fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
        // SAFETY: the T used here are #[repr(C)] plain data whose layout
        // test proves the fields tile them (no padding), so every byte is
        // initialized.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn sample_end() -> SocketEvent {
        SocketEvent {
            header: EventHeader {
                kind: KIND_FLOW_END,
                length: size_of::<SocketEvent>() as u16,
                reserved: 0,
                boot_ns: 9,
            },
            cgroup_id: 1,
            socket_cookie: 2,
            socket_inode: 0,
            socket: Socket {
                role: ROLE_ACTIVE,
                tcp: TcpSnapshot { ip_version: 4, ..TcpSnapshot::default() },
                ..Socket::default()
            },
        }
    }

    #[test]
    fn decodes_end_exec_and_cgroup_records() {
        let end = sample_end();
        assert_eq!(decode(&bytes_of(&end)), Ok(KernelRecord::FlowEnd(end)));
        let mut socket = end;
        socket.header.kind = KIND_SOCKET;
        assert_eq!(decode(&bytes_of(&socket)), Ok(KernelRecord::Socket(socket)));
        let mut bad_role = end;
        bad_role.socket.role = 9;
        assert_eq!(decode(&bytes_of(&bad_role)), Err(DecodeError::Role(9)));

        let path = b"netpeer\0bin\0usr\0";
        let exec = ExecEvent {
            header: EventHeader {
                kind: KIND_EXEC,
                length: (size_of::<ExecEvent>() + path.len()) as u16,
                reserved: 0,
                boot_ns: 3,
            },
            tgid: 42,
            exe_dev: 1,
            exe_ino: 2,
            path_len: path.len() as u16,
            components: 3,
            reserved: 0,
        };
        let mut bytes = bytes_of(&exec);
        bytes.extend_from_slice(path);
        assert_eq!(decode(&bytes), Ok(KernelRecord::Exec(exec, &path[..])));
        let mut lying = exec;
        lying.path_len += 1;
        let mut bytes = bytes_of(&lying);
        bytes.extend_from_slice(path);
        assert!(matches!(decode(&bytes), Err(DecodeError::Path { .. })));

        let path = b"/system.slice/x.service\0";
        let cgroup = CgroupEvent {
            header: EventHeader {
                kind: KIND_CGROUP,
                length: (size_of::<CgroupEvent>() + path.len()) as u16,
                reserved: 0,
                boot_ns: 3,
            },
            cgroup_id: 77,
            op: CGROUP_MKDIR,
            truncated: 0,
            path_len: path.len() as u16,
            reserved: 0,
        };
        let mut bytes = bytes_of(&cgroup);
        bytes.extend_from_slice(path);
        assert_eq!(decode(&bytes), Ok(KernelRecord::Cgroup(cgroup, &path[..path.len() - 1])));
    }

    #[test]
    fn decodes_a_flow_record() {
        let flow = sample_flow();
        let bytes = flow_bytes(&flow);
        let KernelRecord::FlowBegin(decoded) = decode(&bytes).expect("decodes") else {
            panic!("not a flow record");
        };
        assert_eq!(decoded, flow);
        assert_eq!(decoded.src_ip(), Ok("127.0.0.1".parse().expect("ip")));
        assert_eq!(decoded.dst_ip(), Ok("10.1.2.3".parse().expect("ip")));
        assert_eq!((decoded.src_port(), decoded.dst_port()), (40000, 80));
    }

    #[test]
    fn rejects_short_and_inconsistent_records() {
        let bytes = flow_bytes(&sample_flow());
        for cut in [0, 1, 15, 16, 40, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "a {cut}-byte prefix must not decode");
        }
        let mut wrong_kind = sample_flow();
        wrong_kind.header.kind = 99;
        assert_eq!(decode(&flow_bytes(&wrong_kind)), Err(DecodeError::Kind(99)));
        let mut short_length = sample_flow();
        short_length.header.length = 20;
        assert!(matches!(decode(&flow_bytes(&short_length)), Err(DecodeError::Short { .. })));
        let mut bad_version = sample_flow();
        bad_version.ip_version = 5;
        assert_eq!(decode(&flow_bytes(&bad_version)), Err(DecodeError::IpVersion(5)));
        let mut bad_direction = sample_flow();
        bad_direction.direction = 0;
        assert_eq!(decode(&flow_bytes(&bad_direction)), Err(DecodeError::Direction(0)));
    }

    /// Field offsets and sizes of each C struct, read from the object's DWARF.
    fn dwarf_layout(struct_name: &str) -> Vec<(String, u64)> {
        use gimli::{AttributeValue, EndianSlice, LittleEndian};
        use object::{Object, ObjectSection};

        let file = object::File::parse(BPF_OBJECT).expect("the committed object is ELF");
        let load = |id: gimli::SectionId| -> Result<EndianSlice<'_, LittleEndian>, gimli::Error> {
            let data = file.section_by_name(id.name()).and_then(|s| s.data().ok()).unwrap_or(&[]);
            Ok(EndianSlice::new(data, LittleEndian))
        };
        let dwarf = gimli::Dwarf::load(load).expect("DWARF loads");
        let mut units = dwarf.units();
        while let Some(header) = units.next().expect("unit header") {
            let unit = dwarf.unit(header).expect("unit");
            let mut tree = unit.entries_tree(None).expect("tree");
            let root = tree.root().expect("root");
            let mut children = root.children();
            while let Some(node) = children.next().expect("child") {
                let entry = node.entry();
                if entry.tag() != gimli::DW_TAG_structure_type {
                    continue;
                }
                let Some(name) = entry.attr_value(gimli::DW_AT_name) else { continue };
                let name = dwarf.attr_string(&unit, name).expect("name");
                if name.to_string_lossy() != struct_name {
                    continue;
                }
                let mut fields = Vec::new();
                let size = match entry.attr_value(gimli::DW_AT_byte_size) {
                    Some(AttributeValue::Udata(size)) => size,
                    other => panic!("struct {struct_name} has byte size {other:?}"),
                };
                let mut members = node.children();
                while let Some(member) = members.next().expect("member") {
                    let member = member.entry();
                    let name = member.attr_value(gimli::DW_AT_name).expect("member name");
                    let name = dwarf.attr_string(&unit, name).expect("name").to_string_lossy().into_owned();
                    let offset = match member.attr_value(gimli::DW_AT_data_member_location) {
                        Some(AttributeValue::Udata(offset)) => offset,
                        other => panic!("{struct_name}.{name} has location {other:?}"),
                    };
                    fields.push((name, offset));
                }
                fields.push(("<size>".to_owned(), size));
                return fields;
            }
        }
        panic!("struct {struct_name} not found in the object's DWARF");
    }

    #[test]
    fn rust_mirror_matches_the_compiled_object() {
        use std::mem::offset_of;
        let header = [
            ("kind".to_owned(), offset_of!(EventHeader, kind) as u64),
            ("length".to_owned(), offset_of!(EventHeader, length) as u64),
            ("reserved".to_owned(), offset_of!(EventHeader, reserved) as u64),
            ("boot_ns".to_owned(), offset_of!(EventHeader, boot_ns) as u64),
            ("<size>".to_owned(), size_of::<EventHeader>() as u64),
        ];
        assert_eq!(dwarf_layout("flowsql_event_header"), header);

        let flow = [
            ("header".to_owned(), offset_of!(FlowEvent, header) as u64),
            ("cgroup_id".to_owned(), offset_of!(FlowEvent, cgroup_id) as u64),
            ("socket_cookie".to_owned(), offset_of!(FlowEvent, socket_cookie) as u64),
            ("flow_seq".to_owned(), offset_of!(FlowEvent, flow_seq) as u64),
            ("ip_version".to_owned(), offset_of!(FlowEvent, ip_version) as u64),
            ("direction".to_owned(), offset_of!(FlowEvent, direction) as u64),
            ("src_port_be".to_owned(), offset_of!(FlowEvent, src_port_be) as u64),
            ("dst_port_be".to_owned(), offset_of!(FlowEvent, dst_port_be) as u64),
            ("flags".to_owned(), offset_of!(FlowEvent, flags) as u64),
            ("reserved".to_owned(), offset_of!(FlowEvent, reserved) as u64),
            ("src_addr_be".to_owned(), offset_of!(FlowEvent, src_addr_be) as u64),
            ("dst_addr_be".to_owned(), offset_of!(FlowEvent, dst_addr_be) as u64),
            ("owner".to_owned(), offset_of!(FlowEvent, owner) as u64),
            ("<size>".to_owned(), size_of::<FlowEvent>() as u64),
        ];
        assert_eq!(dwarf_layout("flowsql_flow_event"), flow);

        macro_rules! layout {
            ($ty:ty, [$($field:ident),* $(,)?]) => {
                vec![
                    $((stringify!($field).to_owned(), offset_of!($ty, $field) as u64),)*
                    ("<size>".to_owned(), size_of::<$ty>() as u64),
                ]
            };
        }
        assert_eq!(
            dwarf_layout("flowsql_process"),
            layout!(Process, [tgid, uid, exe_ino, exe_dev, reserved, comm])
        );
        assert_eq!(
            dwarf_layout("flowsql_tcp_snapshot"),
            layout!(
                TcpSnapshot,
                [
                    local_addr_be,
                    remote_addr_be,
                    local_port_be,
                    remote_port_be,
                    ip_version,
                    state,
                    fin_received,
                    reserved,
                    sk_err,
                    sk_err_soft,
                    srtt_us,
                    total_retrans,
                    segs_in,
                    segs_out,
                    snd_una,
                    write_seq,
                    bytes_acked,
                    bytes_received
                ]
            )
        );
        assert_eq!(
            dwarf_layout("flowsql_socket"),
            layout!(
                Socket,
                [
                    flow_seq,
                    begin_ns,
                    start_ns,
                    end_ns,
                    listener_cookie,
                    owner,
                    acceptor_tgid,
                    acceptor_comm,
                    role,
                    first_close,
                    flags,
                    reserved,
                    tcp
                ]
            )
        );
        assert_eq!(
            dwarf_layout("flowsql_socket_event"),
            layout!(SocketEvent, [header, cgroup_id, socket_cookie, socket_inode, socket])
        );
        let mut exec = layout!(ExecEvent, [header, tgid, exe_dev, exe_ino, path_len, components, reserved]);
        let size = exec.pop().expect("size");
        exec.push(("path".to_owned(), size.1));
        exec.push(("<size>".to_owned(), size.1 + EXEC_PATH_MAX as u64));
        assert_eq!(dwarf_layout("flowsql_exec_event"), exec);
        let mut cgroup = layout!(CgroupEvent, [header, cgroup_id, op, truncated, path_len, reserved]);
        let size = cgroup.pop().expect("size");
        cgroup.push(("path".to_owned(), size.1));
        cgroup.push(("<size>".to_owned(), size.1 + CGROUP_PATH_MAX as u64));
        assert_eq!(dwarf_layout("flowsql_cgroup_event"), cgroup);

        let mut dns = vec![
            ("header".to_owned(), offset_of!(DnsEvent, header) as u64),
            ("cgroup_id".to_owned(), offset_of!(DnsEvent, cgroup_id) as u64),
            ("socket_cookie".to_owned(), offset_of!(DnsEvent, socket_cookie) as u64),
            ("tcp_seq".to_owned(), offset_of!(DnsEvent, tcp_seq) as u64),
            ("payload_len".to_owned(), offset_of!(DnsEvent, payload_len) as u64),
            ("captured_len".to_owned(), offset_of!(DnsEvent, captured_len) as u64),
            ("ip_version".to_owned(), offset_of!(DnsEvent, ip_version) as u64),
            ("transport".to_owned(), offset_of!(DnsEvent, transport) as u64),
            ("egress".to_owned(), offset_of!(DnsEvent, egress) as u64),
            ("flags".to_owned(), offset_of!(DnsEvent, flags) as u64),
            ("src_port_be".to_owned(), offset_of!(DnsEvent, src_port_be) as u64),
            ("dst_port_be".to_owned(), offset_of!(DnsEvent, dst_port_be) as u64),
            ("src_addr_be".to_owned(), offset_of!(DnsEvent, src_addr_be) as u64),
            ("dst_addr_be".to_owned(), offset_of!(DnsEvent, dst_addr_be) as u64),
            // The payload follows the fixed part directly.
            ("payload".to_owned(), size_of::<DnsEvent>() as u64),
        ];
        dns.push(("<size>".to_owned(), (size_of::<DnsEvent>() + DNS_PAYLOAD_MAX) as u64));
        assert_eq!(dwarf_layout("flowsql_dns_event"), dns);
    }

    /// The numeric `#define`s of bpf/flowsql.h (kinds, directions, counter
    /// slots) and the map names, compared with their Rust twins: these are not
    /// in the object's debug info, so they are checked against the header.
    #[test]
    fn constants_match_the_c_header() {
        let header = include_str!("../bpf/flowsql.h");
        let define = |name: &str| -> String {
            header
                .lines()
                .find_map(|line| {
                    let mut words = line.split_whitespace();
                    (words.next() == Some("#define") && words.next() == Some(name))
                        .then(|| words.next().map(str::to_owned))
                        .flatten()
                })
                .unwrap_or_else(|| panic!("{name} is not defined in flowsql.h"))
        };
        let number = |name: &str| -> u64 { define(name).parse().expect("numeric define") };
        assert_eq!(number("FLOWSQL_KIND_FLOW_BEGIN"), u64::from(KIND_FLOW_BEGIN));
        assert_eq!(number("FLOWSQL_KIND_DNS_RESPONSE"), u64::from(KIND_DNS_RESPONSE));
        assert_eq!(number("FLOWSQL_DIRECTION_OUTGOING"), u64::from(DIRECTION_OUTGOING));
        assert_eq!(number("FLOWSQL_DIRECTION_INCOMING"), u64::from(DIRECTION_INCOMING));
        assert_eq!(number("FLOWSQL_DNS_PAYLOAD_MAX"), DNS_PAYLOAD_MAX as u64);
        assert_eq!(number("FLOWSQL_DNS_TRUNCATED"), u64::from(DNS_TRUNCATED));
        assert_eq!(number("FLOWSQL_TRANSPORT_TCP"), u64::from(TRANSPORT_TCP));
        assert_eq!(number("FLOWSQL_TRANSPORT_UDP"), u64::from(TRANSPORT_UDP));
        let small = [
            ("FLOWSQL_KIND_FLOW_END", u64::from(KIND_FLOW_END)),
            ("FLOWSQL_KIND_EXEC", u64::from(KIND_EXEC)),
            ("FLOWSQL_KIND_CGROUP", u64::from(KIND_CGROUP)),
            ("FLOWSQL_KIND_SOCKET", u64::from(KIND_SOCKET)),
            ("FLOWSQL_FEATURE_ATTRIBUTION", u64::from(FEATURE_ATTRIBUTION)),
            ("FLOWSQL_FEATURE_ENDS", u64::from(FEATURE_ENDS)),
            ("FLOWSQL_BEGIN_RECOVERED", u64::from(BEGIN_RECOVERED)),
            ("FLOWSQL_ROLE_ACTIVE", u64::from(ROLE_ACTIVE)),
            ("FLOWSQL_ROLE_LISTENER", u64::from(ROLE_LISTENER)),
            ("FLOWSQL_ROLE_PASSIVE", u64::from(ROLE_PASSIVE)),
            ("FLOWSQL_SOCKET_PRECAPTURE", u64::from(socket_flag::PRECAPTURE)),
            ("FLOWSQL_SOCKET_ESTABLISHED", u64::from(socket_flag::ESTABLISHED)),
            ("FLOWSQL_SOCKET_RST_RECEIVED", u64::from(socket_flag::RST_RECEIVED)),
            ("FLOWSQL_SOCKET_RST_SENT", u64::from(socket_flag::RST_SENT)),
            ("FLOWSQL_SOCKET_RST_PENDING", u64::from(socket_flag::RST_PENDING)),
            ("FLOWSQL_SOCKET_ENDED", u64::from(socket_flag::ENDED)),
            ("FLOWSQL_SOCKET_DEFERRED", u64::from(socket_flag::DEFERRED)),
            ("FLOWSQL_SOCKET_RELEASED", u64::from(socket_flag::RELEASED)),
            ("FLOWSQL_SOCKET_REPORTED", u64::from(socket_flag::REPORTED)),
            ("FLOWSQL_EXEC_PATH_MAX", EXEC_PATH_MAX as u64),
            ("FLOWSQL_EXEC_TRUNCATED", u64::from(EXEC_TRUNCATED)),
            ("FLOWSQL_CGROUP_MKDIR", u64::from(CGROUP_MKDIR)),
            ("FLOWSQL_CGROUP_RMDIR", u64::from(CGROUP_RMDIR)),
            ("FLOWSQL_CGROUP_RENAME", u64::from(CGROUP_RENAME)),
            ("FLOWSQL_CGROUP_PATH_MAX", CGROUP_PATH_MAX as u64),
        ];
        for (name, value) in small {
            let text = define(name);
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).expect("hex define"),
                None => text.parse().expect("numeric define"),
            };
            assert_eq!(parsed, value, "{name}");
        }
        let slots = [
            ("FLOWSQL_COUNTER_FLOW_EVENTS", counter_slot::FLOW_EVENTS),
            ("FLOWSQL_COUNTER_FLOW_RINGBUF_FULL", counter_slot::FLOW_RINGBUF_FULL),
            ("FLOWSQL_COUNTER_SYNACK_DUPLICATE", counter_slot::SYNACK_DUPLICATE),
            ("FLOWSQL_COUNTER_HEADER_UNREADABLE", counter_slot::HEADER_UNREADABLE),
            ("FLOWSQL_COUNTER_IPV6_EXT_TOO_DEEP", counter_slot::IPV6_EXT_TOO_DEEP),
            ("FLOWSQL_COUNTER_CONNECTION_MAP_ERROR", counter_slot::CONNECTION_MAP_ERROR),
            ("FLOWSQL_COUNTER_DNS_EVENTS", counter_slot::DNS_EVENTS),
            ("FLOWSQL_COUNTER_DNS_RINGBUF_FULL", counter_slot::DNS_RINGBUF_FULL),
            ("FLOWSQL_COUNTER_DNS_TRUNCATED", counter_slot::DNS_TRUNCATED),
            ("FLOWSQL_COUNTER_END_EVENTS", counter_slot::END_EVENTS),
            ("FLOWSQL_COUNTER_END_RINGBUF_FULL", counter_slot::END_RINGBUF_FULL),
            ("FLOWSQL_COUNTER_BEGIN_RECOVERED", counter_slot::BEGIN_RECOVERED),
            ("FLOWSQL_COUNTER_STORAGE_FAILED", counter_slot::STORAGE_FAILED),
            ("FLOWSQL_COUNTER_INFO_EVENTS", counter_slot::INFO_EVENTS),
            ("FLOWSQL_COUNTER_INFO_RINGBUF_FULL", counter_slot::INFO_RINGBUF_FULL),
            ("FLOWSQL_COUNTER_SLOTS", counter_slot::SLOTS),
        ];
        for (name, slot) in slots {
            assert_eq!(number(name), u64::from(slot), "{name}");
        }
        assert_eq!(define("FLOWSQL_MAP_EVENTS"), MAP_EVENTS);
        assert_eq!(define("FLOWSQL_MAP_COUNTERS"), MAP_COUNTERS);
        assert_eq!(define("FLOWSQL_MAP_CONNECTIONS"), MAP_CONNECTIONS);
        assert_eq!(define("FLOWSQL_MAP_DNS_SCRATCH"), MAP_DNS_SCRATCH);
        assert_eq!(define("FLOWSQL_MAP_SOCKETS"), MAP_SOCKETS);
        assert_eq!(define("FLOWSQL_MAP_SCRATCH"), MAP_SCRATCH);
        assert_eq!(define("FLOWSQL_MAP_LISTEN_PORTS"), MAP_LISTEN_PORTS);
        assert_eq!(define("FLOWSQL_GLOBAL_FEATURES"), GLOBAL_FEATURES);
        assert_eq!(define("FLOWSQL_GLOBAL_WATCHED_CGROUP_ID"), GLOBAL_WATCHED_CGROUP_ID);
        assert_eq!(define("FLOWSQL_GLOBAL_WATCHED_LEVEL"), GLOBAL_WATCHED_LEVEL);
    }
}
