//! The kernel programs' packet parser, fed crafted packets through
//! BPF_PROG_TEST_RUN: extension header chains and IP options a socket cannot
//! easily be made to send, fragments, truncated and malformed packets, and
//! random bytes. Every packet must be allowed (return 1); exactly the
//! well-formed SYN-ACKs may produce a record.
//!
//! In a test run the packet's socket is a dummy in state CLOSE. On ingress
//! that is how an unconnected UDP socket looks, so every packet is parsed
//! (a SYN-ACK reads as outgoing, src = the packet's destination). On egress a
//! CLOSE socket sends nothing of interest unless from port 53, and the
//! programs leave at once: egress SYN-ACKs (from listeners) are tested with
//! real sockets in capture_loopback.rs and capture_netns.rs.

use std::net::{IpAddr, SocketAddr};

use flowsql_capture::abi::{self, KernelRecord};
use flowsql_capture::{Capture, EventReader, Hook, KernelCounters};
use flowsql_event::Direction;
use flowsql_tests::require_root;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const RST: u8 = 0x04;
const FIN: u8 = 0x01;

struct Programs {
    capture: Capture,
    reader: EventReader,
    _runtime: tokio::runtime::Runtime,
}

/// A flow record reduced to what the parser decided.
#[derive(Debug, PartialEq, Eq)]
struct Begin {
    direction: Direction,
    src: SocketAddr,
    dst: SocketAddr,
}

impl Programs {
    fn load() -> Self {
        require_root();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (capture, reader) = {
            let _guard = runtime.enter();
            Capture::load(1 << 20).unwrap_or_else(|e| panic!("programs load: {e}"))
        };
        Programs { capture, reader, _runtime: runtime }
    }

    /// Runs `frame` through one program and returns the records it produced.
    fn run(&mut self, hook: Hook, frame: &[u8]) -> Vec<Begin> {
        self.try_run(hook, frame)
            .unwrap_or_else(|| panic!("the kernel refused to build a {}-byte test packet", frame.len()))
    }

    /// Like `run`, but `None` when the kernel refuses to build an skb from
    /// `frame` at all (EINVAL: e.g. an IP header shorter than its IHL, which
    /// the IP stack drops before any socket sees it), so the program never ran.
    fn try_run(&mut self, hook: Hook, frame: &[u8]) -> Option<Vec<Begin>> {
        let verdict = match self.capture.test_run(hook, frame) {
            Ok(verdict) => verdict,
            Err(flowsql_capture::CaptureError::TestRun {
                source: aya::programs::ProgramError::SyscallError(e),
                ..
            }) if e.io_error.raw_os_error() == Some(libc::EINVAL) => return None,
            Err(e) => panic!("test run of {} bytes: {e}", frame.len()),
        };
        assert_eq!(verdict, 1, "the program must allow every packet; frame {frame:02x?}");
        let mut begins = Vec::new();
        self.reader.drain(|item| match abi::decode(item).expect("records decode") {
            KernelRecord::FlowBegin(flow) => {
                let direction = match flow.direction {
                    abi::DIRECTION_OUTGOING => Direction::Outgoing,
                    _ => Direction::Incoming,
                };
                let src = SocketAddr::new(flow.src_ip().expect("ip"), flow.src_port());
                let dst = SocketAddr::new(flow.dst_ip().expect("ip"), flow.dst_port());
                begins.push(Begin { direction, src, dst });
            }
            // Test runs carry no socket: nothing but begins and DNS.
            other => assert!(matches!(other, KernelRecord::DnsResponse(..)), "unexpected record {other:?}"),
        });
        Some(begins)
    }

    fn counters(&self) -> KernelCounters {
        self.capture.counters().expect("counters")
    }
}

fn tcp_header(src_port: u16, dst_port: u16, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&src_port.to_be_bytes());
    tcp.extend_from_slice(&dst_port.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push(5 << 4);
    tcp.push(flags);
    tcp.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent
    tcp
}

fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 frame: `options` (a multiple of 4 bytes) go after the fixed header.
fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, options: &[u8], fragment: u16, l4: &[u8]) -> Vec<u8> {
    let header_len = 20 + options.len();
    let mut ip = vec![0x40 | (header_len / 4) as u8, 0];
    ip.extend_from_slice(&((header_len + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1]);
    ip.extend_from_slice(&fragment.to_be_bytes());
    ip.extend_from_slice(&[64, protocol, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(options);
    ip.extend_from_slice(l4);
    ethernet(0x0800, &ip)
}

/// An IPv6 frame whose `chain` is a list of (header type, header bytes); the
/// next-header field of each is filled in here.
/// IPv6 extension headers: (header type, header bytes).
type Chain = Vec<(u8, Vec<u8>)>;

fn ipv6(src: &str, dst: &str, chain: &[(u8, Vec<u8>)], l4_protocol: u8, l4: &[u8]) -> Vec<u8> {
    let src: std::net::Ipv6Addr = src.parse().expect("v6");
    let dst: std::net::Ipv6Addr = dst.parse().expect("v6");
    let first = chain.first().map_or(l4_protocol, |(kind, _)| *kind);
    let mut rest = Vec::new();
    for (i, (_, bytes)) in chain.iter().enumerate() {
        let next = chain.get(i + 1).map_or(l4_protocol, |(kind, _)| *kind);
        let mut header = bytes.clone();
        header[0] = next;
        rest.extend_from_slice(&header);
    }
    rest.extend_from_slice(l4);
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    ip.push(first);
    ip.push(64);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&rest);
    ethernet(0x86dd, &ip)
}

const HOPOPTS: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AH: u8 = 51;
const DSTOPTS: u8 = 60;
const TCP: u8 = 6;
const UDP: u8 = 17;

/// An 8-byte options header (hop-by-hop or destination options) with PadN.
fn options_header() -> Vec<u8> {
    vec![0, 0, 1, 4, 0, 0, 0, 0]
}

/// A 24-byte routing header (type 0 with one address; length 2 = 16 + 8).
fn routing_header() -> Vec<u8> {
    let mut header = vec![0, 2, 0, 1, 0, 0, 0, 0];
    header.extend_from_slice(&[0u8; 16]);
    header
}

fn fragment_header(offset_units: u16, more: bool) -> Vec<u8> {
    let field = (offset_units << 3) | u16::from(more);
    let mut header = vec![0, 0];
    header.extend_from_slice(&field.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 7]);
    header
}

/// An AH header of 16 bytes: length field counts 4-byte units minus 2.
fn ah_header() -> Vec<u8> {
    let mut header = vec![0, 2, 0, 0];
    header.extend_from_slice(&[0u8; 12]);
    header
}

fn sa(text: &str) -> SocketAddr {
    text.parse().expect("socket address")
}

fn outgoing(src: &str, dst: &str) -> Begin {
    Begin { direction: Direction::Outgoing, src: sa(src), dst: sa(dst) }
}

#[test]
fn ipv4_synack_on_ingress_is_one_begin_with_initiator_as_source() {
    let mut programs = Programs::load();
    let synack = tcp_header(80, 40000, 1000, 2001, SYN | ACK);
    let frame = ipv4([10, 0, 0, 2], [10, 0, 0, 1], TCP, &[], 0, &synack);
    // Ingress: the server 10.0.0.2:80 answered our SYN from 10.0.0.1:40000.
    assert_eq!(programs.run(Hook::Ingress, &frame), vec![outgoing("10.0.0.1:40000", "10.0.0.2:80")]);
    // Egress from a socket in state CLOSE: not a listener, nothing to parse.
    let synack = tcp_header(80, 40000, 5000, 6001, SYN | ACK);
    let frame = ipv4([10, 0, 0, 2], [10, 0, 0, 1], TCP, &[], 0, &synack);
    assert_eq!(programs.run(Hook::Egress, &frame), vec![]);
}

#[test]
fn ipv4_options_of_every_length_are_skipped() {
    let mut programs = Programs::load();
    for words in 1..=10u32 {
        let mut options = vec![1u8; (words * 4) as usize]; // NOPs
        options[0] = 7; // Record Route, then NOPs
        options[1] = (words * 4).min(39) as u8;
        options[2] = 4;
        let synack = tcp_header(443, 50000 + words as u16, words, 77, SYN | ACK);
        let frame = ipv4([192, 0, 2, 1], [192, 0, 2, 9], TCP, &options, 0, &synack);
        let expected = outgoing(&format!("192.0.2.9:{}", 50000 + words), "192.0.2.1:443");
        assert_eq!(programs.run(Hook::Ingress, &frame), vec![expected], "IHL {}", 5 + words);
    }
}

#[test]
fn not_a_synack_gives_nothing() {
    let mut programs = Programs::load();
    for flags in [SYN, ACK, SYN | ACK | RST, SYN | ACK | FIN, RST | ACK, 0, 0xff] {
        let tcp = tcp_header(80, 40000, 1, 2, flags);
        let frame = ipv4([10, 0, 0, 2], [10, 0, 0, 1], TCP, &[], 0, &tcp);
        assert_eq!(programs.run(Hook::Ingress, &frame), vec![], "flags {flags:#04x}");
        let frame = ipv6("fd00::2", "fd00::1", &[], TCP, &tcp);
        assert_eq!(programs.run(Hook::Egress, &frame), vec![], "flags {flags:#04x}");
    }
    // A UDP datagram that happens to carry SYN-ACK-looking bytes.
    let fake = tcp_header(80, 40000, 1, 2, SYN | ACK);
    let frame = ipv4([10, 0, 0, 2], [10, 0, 0, 1], UDP, &[], 0, &fake);
    assert_eq!(programs.run(Hook::Ingress, &frame), vec![]);
}

// Deduplication (retransmissions, simultaneous open) is keyed by the socket
// cookie, and every test run gets a new dummy socket: it is tested with real
// sockets in capture_netns.rs and capture_loopback.rs instead.

#[test]
fn ipv4_fragments_other_than_the_first_give_nothing() {
    let mut programs = Programs::load();
    let synack = tcp_header(80, 40002, 11, 12, SYN | ACK);
    // Offset 8 bytes (1 unit): not the first fragment.
    let frame = ipv4([10, 0, 0, 2], [10, 0, 0, 1], TCP, &[], 1, &synack);
    assert_eq!(programs.run(Hook::Ingress, &frame), vec![]);
    // First fragment with More Fragments set: the TCP header is there.
    let frame = ipv4([10, 0, 0, 2], [10, 0, 0, 1], TCP, &[], 0x2000, &synack);
    assert_eq!(programs.run(Hook::Ingress, &frame), vec![outgoing("10.0.0.1:40002", "10.0.0.2:80")]);
}

#[test]
fn ipv6_extension_header_chains_are_walked() {
    let mut programs = Programs::load();
    let chains: Vec<(&str, Chain)> = vec![
        ("none", vec![]),
        ("hop-by-hop", vec![(HOPOPTS, options_header())]),
        ("destination options", vec![(DSTOPTS, options_header())]),
        ("routing", vec![(ROUTING, routing_header())]),
        ("first fragment", vec![(FRAGMENT, fragment_header(0, true))]),
        ("authentication", vec![(AH, ah_header())]),
        (
            "all of them",
            vec![
                (HOPOPTS, options_header()),
                (DSTOPTS, options_header()),
                (ROUTING, routing_header()),
                (FRAGMENT, fragment_header(0, true)),
                (AH, ah_header()),
                (DSTOPTS, options_header()),
            ],
        ),
    ];
    for (i, (name, chain)) in chains.into_iter().enumerate() {
        let port = 41000 + i as u16;
        let synack = tcp_header(443, port, 7 + i as u32, 9, SYN | ACK);
        let frame = ipv6("2001:db8::2", "2001:db8::1", &chain, TCP, &synack);
        let expected = outgoing(&format!("[2001:db8::1]:{port}"), "[2001:db8::2]:443");
        assert_eq!(programs.run(Hook::Ingress, &frame), vec![expected], "chain: {name}");
    }
}

#[test]
fn ipv6_chains_that_hide_the_tcp_header_give_nothing() {
    let mut programs = Programs::load();
    let synack = tcp_header(443, 42000, 1, 2, SYN | ACK);
    // A later fragment: the TCP header is in the first one.
    let frame = ipv6("2001:db8::2", "2001:db8::1", &[(FRAGMENT, fragment_header(10, false))], TCP, &synack);
    assert_eq!(programs.run(Hook::Ingress, &frame), vec![]);
    // ESP (50) encrypts what follows.
    let frame = ipv6("2001:db8::2", "2001:db8::1", &[(50, vec![0; 8])], TCP, &synack);
    assert_eq!(programs.run(Hook::Ingress, &frame), vec![]);
    // More extension headers than the walk's bound: counted, not followed.
    let before = programs.counters().ipv6_ext_too_deep;
    let chain: Vec<_> = (0..9).map(|_| (DSTOPTS, options_header())).collect();
    let frame = ipv6("2001:db8::2", "2001:db8::1", &chain, TCP, &synack);
    assert_eq!(programs.run(Hook::Ingress, &frame), vec![]);
    assert_eq!(programs.counters().ipv6_ext_too_deep - before, 1);
}

#[test]
fn truncated_packets_are_allowed_counted_and_give_nothing() {
    let mut programs = Programs::load();
    let before = programs.counters().header_unreadable;
    let synack = tcp_header(80, 40003, 1, 2, SYN | ACK);
    let full = ipv4([10, 0, 0, 2], [10, 0, 0, 1], TCP, &[], 0, &synack);
    let mut unreadable_runs = 0;
    // Cut inside the TCP header: the program runs and cannot read the flags.
    for cut in [14 + 20, 14 + 20 + 10, 14 + 20 + 13] {
        assert_eq!(programs.run(Hook::Ingress, &full[..cut]), vec![], "cut at {cut}");
        unreadable_runs += 1;
    }
    // An IPv6 hop-by-hop header whose length runs past the end.
    let mut long_ext = options_header();
    long_ext[1] = 200;
    let frame = ipv6("2001:db8::2", "2001:db8::1", &[(HOPOPTS, long_ext)], TCP, &synack);
    assert_eq!(programs.run(Hook::Ingress, &frame), vec![]);
    unreadable_runs += 1;
    // Cut inside the IPv6 header, or an IPv4 IHL longer than the packet: the
    // kernel may refuse to build such a packet; if it runs, nothing comes out.
    let v6 = ipv6("2001:db8::2", "2001:db8::1", &[], TCP, &synack);
    let mut lying = ipv4([10, 0, 0, 2], [10, 0, 0, 1], TCP, &[1, 1, 1, 1], 0, &[]);
    lying[14] = 0x4f;
    for frame in [&full[..14 + 10], &v6[..14 + 30], &lying[..]] {
        if let Some(begins) = programs.try_run(Hook::Ingress, frame) {
            assert_eq!(begins, vec![]);
            unreadable_runs += 1;
        }
    }
    assert_eq!(programs.counters().header_unreadable - before, unreadable_runs);
}

#[test]
fn the_packet_version_wins_over_anything_else() {
    let mut programs = Programs::load();
    let synack = tcp_header(80, 40004, 1, 2, SYN | ACK);
    // EtherType says IPv4, the header says 6: not parsed as either.
    let mut frame = ipv4([10, 0, 0, 2], [10, 0, 0, 1], TCP, &[], 0, &synack);
    frame[14] = 0x65;
    assert_eq!(programs.run(Hook::Ingress, &frame), vec![]);
    // An IHL below the minimum.
    let mut frame = ipv4([10, 0, 0, 2], [10, 0, 0, 1], TCP, &[], 0, &synack);
    frame[14] = 0x44;
    assert_eq!(programs.run(Hook::Ingress, &frame), vec![]);
}

#[test]
fn random_bytes_are_always_allowed() {
    let mut programs = Programs::load();
    // xorshift64*: deterministic, so a failure reproduces.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut ran = 0;
    let rounds = 3000;
    for round in 0..rounds {
        let len = 14 + (next() % 120) as usize;
        let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Mostly IPv4/IPv6 with a plausible version nibble and TCP, so the
        // random bytes reach deep into the parser.
        let ethertype: u16 = if round % 2 == 0 { 0x0800 } else { 0x86dd };
        frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
        if len > 24 && round % 3 != 0 {
            if ethertype == 0x0800 {
                frame[14] = 0x40 | (frame[14] & 0x0f);
                frame[14 + 9] = TCP;
            } else {
                frame[14] = 0x60 | (frame[14] & 0x0f);
                frame[14 + 6] = [TCP, HOPOPTS, DSTOPTS, ROUTING, FRAGMENT, AH][(next() % 6) as usize];
            }
        }
        let hook = if round % 4 < 2 { Hook::Ingress } else { Hook::Egress };
        if let Some(begins) = programs.try_run(hook, &frame) {
            ran += 1;
            for begin in begins {
                // Whatever was reported must be a consistent record.
                assert!(matches!(begin.src.ip(), IpAddr::V4(_) | IpAddr::V6(_)));
            }
        }
    }
    assert!(ran > rounds / 2, "only {ran} of {rounds} random packets reached the program");
}
