//! Connection begins across network namespaces (veth pairs), with IP options
//! and IPv6 extension headers on the SYN-ACK, and with a SYN-ACK that the
//! server has to retransmit. nftables counters in the namespaces prove that
//! each test really put on the wire what it is about.

use std::time::Duration;

use flowsql_event::Direction::{Incoming, Outgoing};
use flowsql_tests::{
    Netns, Place, Recorded, Recording, Server, TestCgroup, addr, all_endpoints, connect, veth_pair,
};

const NETPEER: &str = env!("CARGO_BIN_EXE_netpeer");

fn assert_clean(recorded: &Recorded, cgroup: &TestCgroup) {
    assert_eq!(recorded.counters.lost(), 0, "ring buffer losses: {:?}", recorded.counters);
    assert_eq!(recorded.undecodable, 0);
    for row in &recorded.rows {
        assert_eq!(row.cgroup_id, cgroup.id(), "row from another cgroup: {row:?}");
    }
}

/// Packets counted by the first `counter` rule of chain `chain` in table
/// `inet flowsql`.
fn nft_packets(netns: &Netns, chain: &str) -> u64 {
    let listing = netns.nft_list(&["chain", "inet", "flowsql", chain]);
    listing
        .split("counter packets ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in chain {chain}:\n{listing}"))
}

/// A client namespace and a server namespace joined by a veth pair, with
/// addresses 10.77.0.1 / fd77::1 (client) and 10.77.0.2 / fd77::2 (server).
struct TwoHosts {
    client: Netns,
    server: Netns,
}

impl TwoHosts {
    fn new() -> Self {
        let client = Netns::new("c");
        let server = Netns::new("s");
        veth_pair(&client, &["10.77.0.1/24", "fd77::1/64"], &server, &["10.77.0.2/24", "fd77::2/64"]);
        TwoHosts { client, server }
    }
}

fn across_veth(server_ip: &str, listen: &str) {
    let hosts = TwoHosts::new();
    let cgroup = TestCgroup::new("veth");
    let server = Server::start(NETPEER, Place::cgroup(&cgroup).in_netns(&hosts.server), listen, &[]);
    let recording = Recording::start(&cgroup);
    let server_addr = addr(&format!("{server_ip}:{}", server.port));
    let locals = connect(
        NETPEER,
        Place::cgroup(&cgroup).in_netns(&hosts.client),
        &server_addr.to_string(),
        &["--count", "2"],
    );
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
fn ipv4_across_a_veth_pair_gives_one_row_per_side() {
    across_veth("10.77.0.2", "10.77.0.2:0");
}

#[test]
fn ipv6_across_a_veth_pair_gives_one_row_per_side() {
    across_veth("[fd77::2]", "[fd77::2]:0");
}

#[test]
fn unanswered_syn_gives_no_row() {
    let hosts = TwoHosts::new();
    hosts.server.nft(
        "table inet flowsql {
           chain input {
             type filter hook input priority 0;
             tcp dport 9 counter drop
           }
         }",
    );
    let cgroup = TestCgroup::new("unans");
    let recording = Recording::start(&cgroup);
    connect(
        NETPEER,
        Place::cgroup(&cgroup).in_netns(&hosts.client),
        "10.77.0.2:9",
        &["--expect", "timeout", "--timeout-ms", "1500"],
    );
    let recorded = recording.finish();
    assert!(nft_packets(&hosts.server, "input") >= 1, "the SYN reached the server and was dropped");
    assert_eq!(all_endpoints(&recorded.rows), vec![]);
    assert_clean(&recorded, &cgroup);
}

/// Runs a server with `server_flags` and a client with `client_flags`, both in
/// the cgroup and in one namespace, counting SYN-ACKs that match `nft_match`.
fn synack_with_headers(
    listen: &str,
    host: &str,
    server_flags: &[&str],
    client_flags: &[&str],
    nft_match: &str,
) {
    let netns = Netns::new("hdr");
    netns.nft(&format!(
        "table inet flowsql {{
           chain output {{
             type filter hook output priority 0;
             {nft_match} tcp flags & (syn | ack) == (syn | ack) counter
           }}
         }}"
    ));
    let cgroup = TestCgroup::new("hdr");
    let server = Server::start(NETPEER, Place::cgroup(&cgroup).in_netns(&netns), listen, server_flags);
    let recording = Recording::start(&cgroup);
    let server_addr = addr(&format!("{host}:{}", server.port));
    let locals =
        connect(NETPEER, Place::cgroup(&cgroup).in_netns(&netns), &server_addr.to_string(), client_flags);
    let recorded = recording.finish();
    assert!(
        nft_packets(&netns, "output") >= 1,
        "the SYN-ACK did not carry the header this test is about ({nft_match})"
    );
    let mut expected = vec![(Outgoing, locals[0], server_addr), (Incoming, locals[0], server_addr)];
    expected.sort();
    assert_eq!(all_endpoints(&recorded.rows), expected);
    assert_clean(&recorded, &cgroup);
}

#[test]
fn ipv6_synack_with_a_hop_by_hop_header_is_parsed() {
    synack_with_headers("[::1]:0", "[::1]", &["--hopopts"], &[], "exthdr hbh exists");
}

#[test]
fn ipv6_synack_with_a_destination_options_header_is_parsed() {
    synack_with_headers("[::1]:0", "[::1]", &["--dstopts"], &[], "exthdr dst exists");
}

#[test]
fn ipv6_synack_with_two_extension_headers_is_parsed() {
    synack_with_headers(
        "[::1]:0",
        "[::1]",
        &["--hopopts", "--dstopts"],
        &[],
        "exthdr hbh exists exthdr dst exists",
    );
}

#[test]
fn ipv4_synack_with_ip_options_is_parsed() {
    // Record Route set by the client is echoed on the server's SYN-ACK.
    synack_with_headers("127.0.0.1:0", "127.0.0.1", &[], &["--record-route"], "ip hdrlength > 5");
}

#[test]
fn a_retransmitted_synack_gives_one_row_per_side() {
    let hosts = TwoHosts::new();
    // The server never gets the client's handshake ACK, so it retransmits
    // its SYN-ACK (after ~1 s) while the client holds the connection open.
    hosts.server.nft(
        "table inet flowsql {
           chain output {
             type filter hook output priority 0;
             tcp flags & (syn | ack) == (syn | ack) counter
           }
           chain input {
             type filter hook input priority 0;
             tcp flags & (syn | ack | fin | rst | psh) == ack drop
           }
         }",
    );
    let cgroup = TestCgroup::new("rtx");
    let server = Server::start(
        NETPEER,
        Place::cgroup(&cgroup).in_netns(&hosts.server),
        "10.77.0.2:0",
        &["--no-accept"],
    );
    let recording = Recording::start(&cgroup);
    let server_addr = addr(&format!("10.77.0.2:{}", server.port));
    let locals = connect(
        NETPEER,
        Place::cgroup(&cgroup).in_netns(&hosts.client),
        &server_addr.to_string(),
        &["--hold-ms", "2500"],
    );
    std::thread::sleep(Duration::from_millis(100));
    let synacks = nft_packets(&hosts.server, "output");
    let recorded = recording.finish();
    assert!(synacks >= 2, "the server sent {synacks} SYN-ACK(s): no retransmission happened");
    let mut expected = vec![(Outgoing, locals[0], server_addr), (Incoming, locals[0], server_addr)];
    expected.sort();
    assert_eq!(all_endpoints(&recorded.rows), expected, "{synacks} SYN-ACKs must give one row per side");
    assert!(recorded.counters.synack_duplicates >= 1, "the retransmission was seen and suppressed");
    assert_clean(&recorded, &cgroup);
}
