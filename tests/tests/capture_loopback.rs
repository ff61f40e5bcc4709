//! Connection begins on loopback, with the programs attached to a child cgroup
//! of the test's own: who is in the cgroup decides which rows appear.

use std::net::{SocketAddr, TcpStream};

use flowsql_event::Direction::{Incoming, Outgoing};
use flowsql_event::canonical_ip;
use flowsql_tests::{
    OutsideServer, Place, Recorded, Recording, Server, TestCgroup, addr, all_endpoints, connect, netpeer,
};

const NETPEER: &str = env!("CARGO_BIN_EXE_netpeer");

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_nanos() as i64
}

/// Nothing lost, nothing undecodable, every row from this cgroup.
fn assert_clean(recorded: &Recorded, cgroup: &TestCgroup) {
    assert_eq!(recorded.counters.lost(), 0, "ring buffer losses: {:?}", recorded.counters);
    assert_eq!(recorded.undecodable, 0);
    for row in &recorded.rows {
        assert_eq!(row.cgroup_id, cgroup.id(), "row from another cgroup: {row:?}");
        assert!(row.src_domains.is_empty() && row.dst_domains.is_empty());
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

fn client_in_cgroup_server_outside(bind: &str) {
    let cgroup = TestCgroup::new("out");
    let server = OutsideServer::start(bind);
    let recording = Recording::start(&cgroup);
    let before = now_ns();
    let locals = connect(NETPEER, Place::cgroup(&cgroup), &server.addr.to_string(), &[]);
    let after = now_ns();
    let recorded = recording.finish();
    assert_eq!(all_endpoints(&recorded.rows), vec![(Outgoing, locals[0], server.addr)]);
    let ts = recorded.rows[0].timestamp_ns;
    assert!(
        before - 50_000_000 <= ts && ts <= after + 50_000_000,
        "timestamp {ts} not in [{before}, {after}]"
    );
    assert_clean(&recorded, &cgroup);
}

#[test]
fn ipv4_client_in_cgroup_gives_one_outgoing_row() {
    client_in_cgroup_server_outside("127.0.0.1:0");
}

#[test]
fn ipv6_client_in_cgroup_gives_one_outgoing_row() {
    client_in_cgroup_server_outside("[::1]:0");
}

fn server_in_cgroup_client_outside(listen: &str, connect_to: &str) {
    let cgroup = TestCgroup::new("in");
    let server = Server::start(NETPEER, Place::cgroup(&cgroup), listen, &[]);
    let recording = Recording::start(&cgroup);
    let server_addr = addr(&connect_to.replace("PORT", &server.port.to_string()));
    let client = TcpStream::connect(server_addr).expect("connects");
    let client_addr = client.local_addr().expect("local addr");
    drop(client);
    let recorded = recording.finish();
    assert_eq!(all_endpoints(&recorded.rows), vec![(Incoming, client_addr, server_addr)]);
    assert_clean(&recorded, &cgroup);
}

#[test]
fn ipv4_server_in_cgroup_gives_one_incoming_row_from_the_client() {
    server_in_cgroup_client_outside("127.0.0.1:0", "127.0.0.1:PORT");
}

#[test]
fn ipv6_server_in_cgroup_gives_one_incoming_row_from_the_client() {
    server_in_cgroup_client_outside("[::1]:0", "[::1]:PORT");
}

fn both_in_cgroup(listen: &str, connect_to: &str) {
    let cgroup = TestCgroup::new("both");
    let server = Server::start(NETPEER, Place::cgroup(&cgroup), listen, &[]);
    let recording = Recording::start(&cgroup);
    let server_addr = addr(&connect_to.replace("PORT", &server.port.to_string()));
    let locals = connect(NETPEER, Place::cgroup(&cgroup), &server_addr.to_string(), &["--count", "3"]);
    let recorded = recording.finish();
    let mut expected: Vec<_> = locals
        .iter()
        .flat_map(|&client| [(Outgoing, client, server_addr), (Incoming, client, server_addr)])
        .collect();
    expected.sort();
    assert_eq!(all_endpoints(&recorded.rows), expected);
    assert_clean(&recorded, &cgroup);
}

#[test]
fn ipv4_both_ends_in_cgroup_give_two_rows_per_connection() {
    both_in_cgroup("127.0.0.1:0", "127.0.0.1:PORT");
}

#[test]
fn ipv6_both_ends_in_cgroup_give_two_rows_per_connection() {
    both_in_cgroup("[::1]:0", "[::1]:PORT");
}

fn refused(host: &str) {
    let cgroup = TestCgroup::new("ref");
    // A port that was just free: nothing listens on it.
    let port =
        std::net::TcpListener::bind(format!("{host}:0")).expect("bind").local_addr().expect("addr").port();
    let recording = Recording::start(&cgroup);
    connect(
        NETPEER,
        Place::cgroup(&cgroup),
        &format!("{host}:{port}"),
        &["--expect", "refused", "--count", "5"],
    );
    let recorded = recording.finish();
    assert_eq!(all_endpoints(&recorded.rows), vec![], "a refused connection has no begin");
    assert_clean(&recorded, &cgroup);
}

#[test]
fn ipv4_refused_connection_gives_no_row() {
    refused("127.0.0.1");
}

#[test]
fn ipv6_refused_connection_gives_no_row() {
    refused("[::1]");
}

#[test]
fn ipv4_peer_of_a_dual_stack_listener_prints_as_dotted_quad() {
    let cgroup = TestCgroup::new("dual");
    let server = Server::start(NETPEER, Place::cgroup(&cgroup), "[::]:0", &["--dual-stack"]);
    let recording = Recording::start(&cgroup);
    let server_addr = addr(&format!("127.0.0.1:{}", server.port));
    let client = TcpStream::connect(server_addr).expect("connects");
    let client_addr = client.local_addr().expect("local addr");
    drop(client);
    let recorded = recording.finish();
    assert_eq!(all_endpoints(&recorded.rows), vec![(Incoming, client_addr, server_addr)]);
    let row = &recorded.rows[0];
    assert_eq!((row.src_ip.to_string(), row.dst_ip.to_string()), ("127.0.0.1".into(), "127.0.0.1".into()));
    assert_clean(&recorded, &cgroup);
}

#[test]
fn v4_mapped_connect_from_an_ipv6_socket_prints_as_dotted_quad() {
    let cgroup = TestCgroup::new("mapped");
    let server = OutsideServer::start("127.0.0.1:0");
    let recording = Recording::start(&cgroup);
    let locals = connect(NETPEER, Place::cgroup(&cgroup), &server.addr.to_string(), &["--ipv6-socket"]);
    let recorded = recording.finish();
    assert!(locals[0].is_ipv6(), "the client socket is IPv6: {}", locals[0]);
    assert_eq!(all_endpoints(&recorded.rows), vec![(Outgoing, canonical(locals[0]), server.addr)]);
    let row = &recorded.rows[0];
    assert!(row.src_ip.is_ipv4() && row.dst_ip.is_ipv4(), "packet version, not socket family: {row:?}");
    assert_clean(&recorded, &cgroup);
}

#[test]
fn a_reused_four_tuple_after_close_is_a_new_connection() {
    let cgroup = TestCgroup::new("reuse");
    let server = Server::start(NETPEER, Place::cgroup(&cgroup), "127.0.0.1:0", &[]);
    let recording = Recording::start(&cgroup);
    let server_addr = addr(&format!("127.0.0.1:{}", server.port));
    // The client port: one that was just free.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let bind = format!("127.0.0.1:{port}");
    // Each connection closes with RST, so the same 4-tuple is free again at once.
    let locals = connect(
        NETPEER,
        Place::cgroup(&cgroup),
        &server_addr.to_string(),
        &["--count", "3", "--bind", &bind],
    );
    let recorded = recording.finish();
    assert_eq!(locals, vec![addr(&bind); 3]);
    let client = addr(&bind);
    let mut expected = [(Outgoing, client, server_addr), (Incoming, client, server_addr)].repeat(3);
    expected.sort();
    assert_eq!(
        all_endpoints(&recorded.rows),
        expected,
        "three connections on one 4-tuple are three begins per side"
    );
    assert_clean(&recorded, &cgroup);
}

#[test]
fn simultaneous_open_gives_one_row() {
    // A socket connected to its own address opens simultaneously: it sends a
    // SYN, receives it, sends a SYN-ACK and receives that too.
    let cgroup = TestCgroup::new("simul");
    let recording = Recording::start(&cgroup);
    let locals = netpeer(NETPEER, Place::cgroup(&cgroup), &["self-connect", "--addr", "127.0.0.1"]);
    let recorded = recording.finish();
    let me = locals[0];
    assert_eq!(all_endpoints(&recorded.rows), vec![(Outgoing, me, me)]);
    assert!(recorded.counters.synack_duplicates >= 1, "the second SYN-ACK was seen and suppressed");
    assert_clean(&recorded, &cgroup);
}
