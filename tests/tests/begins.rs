//! Begins whose SYN-ACK the cgroup_skb hook does not see the usual way:
//! under SYN cookies the SYN-ACK leaves with no socket (no program sees it;
//! the begin is taken when the handshake completes), and with TCP Fast Open
//! the server's SYN-ACK leaves from the accepted socket itself, not from
//! the listener. Every established connection gets exactly one begin per
//! side either way, and its end joins it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use flowsql_event::Direction::{Incoming, Outgoing};
use flowsql_event::{Direction, EndReason};
use flowsql_tests::{Netns, Place, Recorded, Recording, Server, TestCgroup, endpoints, netpeer_run};

const NETPEER: &str = env!("CARGO_BIN_EXE_netpeer");

/// Each connection made once per side among the begins, each end joined to
/// its begin, nothing lost.
fn assert_one_begin_and_end_per_side(recorded: &Recorded, locals: &[SocketAddr], server: SocketAddr) {
    assert_eq!(recorded.counters.lost(), 0, "{:?}", recorded.counters);
    let mut begins: HashMap<(Direction, SocketAddr, SocketAddr), u64> = HashMap::new();
    for begin in &recorded.rows {
        assert!(begins.insert(endpoints(begin), begin.flow_id).is_none(), "one begin per side: {begin:?}");
        assert!(begin.attribution.is_known(), "attributed: {begin:?}");
    }
    let mut expected: Vec<_> =
        locals.iter().flat_map(|&l| [(Outgoing, l, server), (Incoming, l, server)]).collect();
    expected.sort();
    let mut seen: Vec<_> = begins.keys().copied().collect();
    seen.sort();
    assert_eq!(seen, expected, "every connection, once per side");
    assert_eq!(recorded.ends.len(), 2 * locals.len(), "one end per side: {:#?}", recorded.ends);
    for end in &recorded.ends {
        let key = (
            end.direction,
            SocketAddr::new(end.src_ip, end.src_port),
            SocketAddr::new(end.dst_ip, end.dst_port),
        );
        assert_eq!(begins.get(&key), Some(&end.flow_id), "the end joins its begin: {end:?}");
    }
}

#[test]
fn syn_cookies_forced_on_still_give_every_begin_and_end() {
    let netns = Netns::new("ck");
    netns.sysctl("net.ipv4.tcp_syncookies", "2");
    let cgroup = TestCgroup::new("cookies");
    let recording = Recording::start(&cgroup);
    let server = Server::start(NETPEER, Place::cgroup(&cgroup).in_netns(&netns), "127.0.0.1:0", &[]);
    let to = format!("127.0.0.1:{}", server.port);
    let peer = netpeer_run(
        NETPEER,
        Place::cgroup(&cgroup).in_netns(&netns),
        &["connect", "--to", &to, "--count", "20"],
    );
    assert_eq!(peer.locals.len(), 20);
    let ended = flowsql_tests::wait_until(Duration::from_secs(5), || recording.ends_so_far().len() >= 40);
    assert!(ended, "40 ends: {}", recording.ends_so_far().len());
    let recorded = recording.finish();
    assert!(netns.netstat("TcpExt", "SyncookiesSent") >= 20, "the SYN-ACKs were cookies");
    assert_eq!(recorded.counters.begins_recovered, 20, "the incoming begins came from the handshake's end");
    let incoming = recorded.rows.iter().filter(|r| r.direction == Incoming).count();
    let outgoing = recorded.rows.len() - incoming;
    assert_eq!((incoming, outgoing), (20, 20));
    assert_one_begin_and_end_per_side(&recorded, &peer.locals, server_addr(&to));
}

fn server_addr(to: &str) -> SocketAddr {
    to.parse().expect("address")
}

#[test]
fn tcp_fast_open_begins_are_incoming_on_the_server() {
    let netns = Netns::new("tfo");
    // Client and server (bit 1 and 2), no cookie needed by the server's
    // side for the first connection to get one.
    netns.sysctl("net.ipv4.tcp_fastopen", "3");
    let cgroup = TestCgroup::new("tfo");
    let recording = Recording::start(&cgroup);
    let server = Server::start(
        NETPEER,
        Place::cgroup(&cgroup).in_netns(&netns),
        "127.0.0.1:0",
        &["--fastopen", "--read"],
    );
    let to = format!("127.0.0.1:{}", server.port);
    let peer = netpeer_run(
        NETPEER,
        Place::cgroup(&cgroup).in_netns(&netns),
        &[
            "connect",
            "--to",
            &to,
            "--count",
            "5",
            "--fastopen",
            "--send-bytes",
            "100",
            "--fin",
            "--hold-ms",
            "50",
        ],
    );
    let ended = flowsql_tests::wait_until(Duration::from_secs(5), || recording.ends_so_far().len() >= 10);
    assert!(ended, "10 ends: {:?}", recording.ends_so_far());
    let recorded = recording.finish();
    let passive = netns.netstat("TcpExt", "TCPFastOpenPassive");
    assert!(
        passive >= 4,
        "the later connections carried their request in the SYN (TCPFastOpenPassive {passive})"
    );
    assert_one_begin_and_end_per_side(&recorded, &peer.locals, server_addr(&to));
    for end in &recorded.ends {
        assert_eq!(end.src_bytes, 100, "the request, SYN data included: {end:?}");
        assert_eq!(end.reason, EndReason::Fin);
    }
    for begin in recorded.rows.iter().filter(|r| r.direction == Incoming) {
        assert_eq!(begin.attribution.process_id, Some(server.pid()), "the listener's owner");
    }
}
