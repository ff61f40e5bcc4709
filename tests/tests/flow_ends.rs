//! How each connection ended: one `flow_ends` row per connection end per
//! watched side, with exact payload bytes, the reason, and the begin's
//! flowId; failed attempts with no begin; connections older than the
//! capture. Real sockets on loopback and between network namespaces, loss
//! and drops made with nftables (this kernel has no netem).

use std::net::SocketAddr;
use std::time::Duration;

use flowsql_event::Direction::{self, Incoming, Outgoing};
use flowsql_event::{EndReason, FlowBegin, FlowEnd, Side};
use flowsql_tests::{
    Netns, Place, Recorded, Recording, Server, Session, TestCgroup, addr, netpeer_run, veth_pair,
};

const NETPEER: &str = env!("CARGO_BIN_EXE_netpeer");

fn assert_clean(recorded: &Recorded) {
    assert_eq!(recorded.counters.lost(), 0, "nothing lost: {:?}", recorded.counters);
    assert_eq!(recorded.undecodable, 0);
}

fn end_of(recorded: &Recorded, direction: Direction) -> &FlowEnd {
    let ends: Vec<&FlowEnd> = recorded.ends.iter().filter(|e| e.direction == direction).collect();
    assert_eq!(ends.len(), 1, "one {direction} end: {:#?}", recorded.ends);
    ends[0]
}

fn begin_of(recorded: &Recorded, direction: Direction) -> &FlowBegin {
    let begins: Vec<&FlowBegin> = recorded.rows.iter().filter(|b| b.direction == direction).collect();
    assert_eq!(begins.len(), 1, "one {direction} begin: {:#?}", recorded.rows);
    begins[0]
}

/// The end carries its begin's seven fields and flowId.
fn assert_joins(begin: &FlowBegin, end: &FlowEnd) {
    assert_eq!(end.flow_id, begin.flow_id, "flowId shared with the begin");
    assert_eq!(
        (end.direction, end.src_ip, end.dst_ip, end.src_port, end.dst_port),
        (begin.direction, begin.src_ip, begin.dst_ip, begin.src_port, begin.dst_port)
    );
    assert_eq!((&end.src_domains, &end.dst_domains), (&begin.src_domains, &begin.dst_domains));
    assert_eq!(end.attribution, begin.attribution, "who, as on the begin");
    let duration = end.duration_ns.expect("a duration");
    assert_eq!(begin.timestamp_ns + duration, end.timestamp_ns, "from the begin to the end");
    assert!(!end.begun_before_capture);
}

/// A client and a server, both watched, exchanging exact amounts; both
/// sides' ends and begins.
fn exchange(listen: &str, server_args: &[&str], client_args: &[&str]) -> (Recorded, SocketAddr) {
    let cgroup = TestCgroup::new("end");
    let recording = Recording::start(&cgroup);
    let mut args = vec!["exchange-serve", "--listen", listen];
    args.extend_from_slice(server_args);
    let server = Server::spawn(NETPEER, Place::cgroup(&cgroup), &args);
    let to = SocketAddr::new(addr(listen).ip(), server.port);
    let mut args = vec!["exchange", "--to"];
    let to_text = to.to_string();
    args.push(&to_text);
    args.extend_from_slice(client_args);
    let peer = netpeer_run(NETPEER, Place::cgroup(&cgroup), &args);
    // The server's end follows the client's close.
    let ended = flowsql_tests::wait_until(Duration::from_secs(5), || recording.ends_so_far().len() >= 2);
    assert!(ended, "both ends reported: {:?}", recording.ends_so_far());
    drop(server);
    let recorded = recording.finish();
    assert_eq!(begin_of(&recorded, Outgoing).src_port, peer.locals[0].port());
    (recorded, peer.locals[0])
}

#[test]
fn exact_bytes_both_ways_on_both_sides_joined_to_their_begins() {
    let (recorded, client) = exchange(
        "127.0.0.1:0",
        &["--receive", "1000000", "--send", "12345"],
        &["--send", "1000000", "--receive", "12345"],
    );
    for direction in [Outgoing, Incoming] {
        let end = end_of(&recorded, direction);
        assert_eq!((end.src_bytes, end.dst_bytes), (1_000_000, 12_345), "{direction}");
        assert_eq!(end.reason, EndReason::Fin, "{direction}");
        assert_eq!(end.closed_by, Some(Side::Src), "the client sent the first FIN");
        assert_eq!(SocketAddr::new(end.src_ip, end.src_port), client);
        assert!(end.src_packets > 0 && end.dst_packets > 0);
        assert!(end.rtt_micros > 0);
        assert_joins(begin_of(&recorded, direction), end);
    }
    let incoming = end_of(&recorded, Incoming);
    assert!(incoming.accepting_process_id.is_some(), "the accepting process");
    assert_eq!(end_of(&recorded, Outgoing).accepting_process_id, None);
    assert_clean(&recorded);
}

#[test]
fn a_half_closed_connection_ends_once_per_side_with_its_bytes() {
    let (recorded, _) =
        exchange("[::1]:0", &["--until-eof", "--send", "12345"], &["--send", "1000000", "--half-close"]);
    assert_eq!(recorded.ends.len(), 2, "one end per side: {:#?}", recorded.ends);
    for direction in [Outgoing, Incoming] {
        let end = end_of(&recorded, direction);
        assert_eq!((end.src_bytes, end.dst_bytes), (1_000_000, 12_345), "{direction}");
        assert_eq!(end.reason, EndReason::Fin);
        assert_eq!(end.closed_by, Some(Side::Src), "the client shut down writing first");
        assert!(end.src_ip.is_ipv6());
        assert_joins(begin_of(&recorded, direction), end);
    }
    assert_clean(&recorded);
}

#[test]
fn a_server_closing_with_unread_data_resets_and_the_client_is_reset() {
    let cgroup = TestCgroup::new("rst");
    let recording = Recording::start(&cgroup);
    let server = Server::spawn(
        NETPEER,
        Place::cgroup(&cgroup),
        &["exchange-serve", "--listen", "127.0.0.1:0", "--unread"],
    );
    let to = format!("127.0.0.1:{}", server.port);
    let mut client = Session::start(NETPEER, Place::cgroup(&cgroup), &to, &["--send", "100"]);
    client.exchange();
    let reset = flowsql_tests::wait_until(Duration::from_secs(5), || recording.ends_so_far().len() >= 2);
    assert!(reset, "both ends reported: {:?}", recording.ends_so_far());
    client.close();
    let recorded = recording.finish();
    let server_end = end_of(&recorded, Incoming);
    assert_eq!(server_end.reason, EndReason::ResetSent);
    assert_eq!(server_end.closed_by, Some(Side::Dst));
    assert_eq!((server_end.src_bytes, server_end.dst_bytes), (100, 0));
    let client_end = end_of(&recorded, Outgoing);
    assert_eq!(client_end.reason, EndReason::ResetReceived);
    assert_eq!(client_end.closed_by, Some(Side::Dst));
    assert_eq!(client_end.src_bytes, 100);
    assert_clean(&recorded);
}

#[test]
fn a_client_closing_with_linger_zero_resets_and_the_server_is_reset() {
    let (recorded, _) =
        exchange("127.0.0.1:0", &["--receive", "100"], &["--send", "100", "--receive", "0", "--linger0"]);
    let client_end = end_of(&recorded, Outgoing);
    assert_eq!(client_end.reason, EndReason::ResetSent);
    assert_eq!(client_end.closed_by, Some(Side::Src));
    let server_end = end_of(&recorded, Incoming);
    assert_eq!(server_end.reason, EndReason::ResetReceived);
    assert_eq!(server_end.closed_by, Some(Side::Src));
    assert_eq!(server_end.src_bytes, 100);
    // Reset while the server still held it: its end waited for that close,
    // and names the process.
    assert!(server_end.accepting_process_id.is_some());
    assert_clean(&recorded);
}

#[test]
fn a_refused_attempt_is_one_end_row_and_no_begin() {
    let cgroup = TestCgroup::new("refused");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let recording = Recording::start(&cgroup);
    let to = format!("127.0.0.1:{port}");
    let peer = netpeer_run(NETPEER, Place::cgroup(&cgroup), &["connect", "--to", &to, "--expect", "refused"]);
    let recorded = recording.finish();
    assert_eq!(recorded.rows, vec![], "a refused connection is never a begin");
    let end = end_of(&recorded, Outgoing);
    assert_eq!(end.reason, EndReason::Refused);
    assert_eq!(end.closed_by, Some(Side::Dst));
    assert_eq!(end.dst_port, port);
    assert_eq!((end.src_bytes, end.dst_bytes), (0, 0));
    assert_eq!(end.attribution.process_id, Some(peer.pid), "who tried");
    assert!(end.duration_ns.expect("from connect()") < 1_000_000_000);
    assert!(!end.begun_before_capture);
    assert_clean(&recorded);
}

#[test]
fn an_unanswered_syn_times_out_in_seconds() {
    let netns = Netns::new("to");
    netns.ip(&["addr", "add", "10.66.0.1/24", "dev", "lo"]);
    netns.nft(
        "table inet flowsql {
           chain output {
             type filter hook output priority 0;
             tcp dport 9 counter drop
           }
         }",
    );
    let cgroup = TestCgroup::new("timeout");
    let recording = Recording::start(&cgroup);
    netpeer_run(
        NETPEER,
        Place::cgroup(&cgroup).in_netns(&netns),
        &[
            "connect",
            "--to",
            "10.66.0.1:9",
            "--syn-count",
            "1",
            "--expect",
            "timeout",
            "--timeout-ms",
            "20000",
        ],
    );
    let recorded = recording.finish();
    assert_eq!(recorded.rows, vec![]);
    let end = end_of(&recorded, Outgoing);
    assert_eq!(end.reason, EndReason::Timeout);
    let seconds = end.duration_ns.expect("from connect()") as f64 / 1e9;
    assert!((1.0..10.0).contains(&seconds), "timed out after {seconds} s, not minutes");
    assert!(end.src_packets >= 2, "the SYN and its retransmissions: {end:?}");
    assert_eq!((end.dst_packets, end.src_bytes, end.dst_bytes), (0, 0, 0));
    assert_clean(&recorded);
}

#[test]
fn loss_is_retransmitted_and_bytes_stay_exact() {
    let client_ns = Netns::new("lc");
    let server_ns = Netns::new("ls");
    veth_pair(&client_ns, &["10.67.0.1/24"], &server_ns, &["10.67.0.2/24"]);
    // One packet in ten into the server is dropped (only that way: both
    // ways stalls the transfer for long).
    server_ns.nft(
        "table inet flowsql {
           chain input {
             type filter hook input priority 0;
             ip daddr 10.67.0.2 meta l4proto tcp numgen random mod 10 0 counter drop
           }
         }",
    );
    let cgroup = TestCgroup::new("loss");
    let recording = Recording::start(&cgroup);
    let server = Server::spawn(
        NETPEER,
        Place::cgroup(&cgroup).in_netns(&server_ns),
        &["exchange-serve", "--listen", "10.67.0.2:0", "--receive", "8000000", "--send", "12345"],
    );
    let to = format!("10.67.0.2:{}", server.port);
    netpeer_run(
        NETPEER,
        Place::cgroup(&cgroup).in_netns(&client_ns),
        &["exchange", "--to", &to, "--send", "8000000", "--receive", "12345"],
    );
    let ended = flowsql_tests::wait_until(Duration::from_secs(30), || recording.ends_so_far().len() >= 2);
    assert!(ended, "both ends reported: {:?}", recording.ends_so_far());
    drop(server);
    let recorded = recording.finish();
    let dropped = server_ns.nft_list(&["chain", "inet", "flowsql", "input"]);
    assert!(!dropped.contains("counter packets 0 "), "nftables dropped packets: {dropped}");
    let client_end = end_of(&recorded, Outgoing);
    assert!(client_end.retransmits > 0, "the client retransmitted: {client_end:?}");
    for direction in [Outgoing, Incoming] {
        let end = end_of(&recorded, direction);
        assert_eq!((end.src_bytes, end.dst_bytes), (8_000_000, 12_345), "{direction}: exact despite loss");
        assert_eq!(end.reason, EndReason::Fin);
        assert_joins(begin_of(&recorded, direction), end);
    }
    assert_clean(&recorded);
}

#[test]
fn a_connection_older_than_the_capture_ends_once_marked_as_such() {
    let cgroup = TestCgroup::new("old");
    // The server is not watched: only the client's side has a row.
    let server = Server::spawn(
        NETPEER,
        Place::outside(),
        &["exchange-serve", "--listen", "127.0.0.1:0", "--until-eof", "--send", "0"],
    );
    let to = format!("127.0.0.1:{}", server.port);
    let mut client =
        Session::start(NETPEER, Place::cgroup(&cgroup), &to, &["--send", "5000", "--half-close"]);
    let (local, pid) = (client.local, client.pid);
    let recording = Recording::start(&cgroup);
    client.exchange();
    client.close();
    let ended = flowsql_tests::wait_until(Duration::from_secs(5), || !recording.ends_so_far().is_empty());
    assert!(ended, "the end is reported");
    let recorded = recording.finish();
    assert_eq!(recorded.rows, vec![], "no begin: it began before the capture");
    let end = end_of(&recorded, Outgoing);
    assert!(end.begun_before_capture);
    assert_eq!(end.duration_ns, None, "its begin is unknown");
    assert_eq!(SocketAddr::new(end.src_ip, end.src_port), local);
    assert_eq!(end.src_bytes, 5000);
    assert_eq!(end.reason, EndReason::Fin);
    assert_eq!(end.attribution.process_id, Some(pid), "named from /proc at the start");
    assert_clean(&recorded);
}

#[test]
fn open_connections_are_listed_while_open_and_not_after() {
    let cgroup = TestCgroup::new("open");
    let sink = Server::spawn(
        NETPEER,
        Place::outside(),
        &["exchange-serve", "--listen", "127.0.0.1:0", "--until-eof", "--send", "0"],
    );
    let recording = Recording::start(&cgroup);
    let to = format!("127.0.0.1:{}", sink.port);
    let mut client =
        Session::start(NETPEER, Place::cgroup(&cgroup), &to, &["--send", "3000", "--half-close"]);
    let local = client.local;
    let open = recording.open_flows();
    let mine: Vec<&FlowEnd> =
        open.iter().filter(|o| SocketAddr::new(o.src_ip, o.src_port) == local).collect();
    assert_eq!(mine.len(), 1, "listed while open: {open:?}");
    assert_eq!(mine[0].reason, EndReason::Open);
    let begin =
        recording.begins_so_far().into_iter().find(|b| SocketAddr::new(b.src_ip, b.src_port) == local);
    assert_eq!(mine[0].flow_id, begin.expect("its begin").flow_id);
    client.exchange();
    client.close();
    let ended = flowsql_tests::wait_until(Duration::from_secs(5), || !recording.ends_so_far().is_empty());
    assert!(ended);
    let open = recording.open_flows();
    assert!(
        open.iter().all(|o| SocketAddr::new(o.src_ip, o.src_port) != local),
        "not after it ended: {open:?}"
    );
    let recorded = recording.finish();
    assert_eq!(end_of(&recorded, Outgoing).src_bytes, 3000);
}
