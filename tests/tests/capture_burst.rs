//! A burst of short connections: every one is recorded, exactly once per
//! side, attributed to its own side's process, ended exactly once per side
//! with its begin's flowId, and the kernel's loss counter stays at zero.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use flowsql_event::Direction::{Incoming, Outgoing};
use flowsql_tests::{Place, Recording, Server, TestCgroup, addr, endpoints, netpeer_run, wait_until};

const NETPEER: &str = env!("CARGO_BIN_EXE_netpeer");
const CONNECTIONS: usize = 10_000;

#[test]
fn ten_thousand_short_connections_give_ten_thousand_begins_and_ends_per_side_all_attributed() {
    let cgroup = TestCgroup::new("burst");
    let server = Server::start(NETPEER, Place::cgroup(&cgroup), "127.0.0.1:0", &[]);
    let recording = Recording::start(&cgroup);
    let server_addr = addr(&format!("127.0.0.1:{}", server.port));
    let started = std::time::Instant::now();
    let peer = netpeer_run(
        NETPEER,
        Place::cgroup(&cgroup),
        &["connect", "--to", &server_addr.to_string(), "--count", &CONNECTIONS.to_string()],
    );
    let elapsed = started.elapsed();
    let locals = peer.locals.clone();
    let ended = wait_until(Duration::from_secs(20), || recording.ends_so_far().len() >= 2 * CONNECTIONS);
    let recorded = recording.finish();
    if !ended {
        let ended_ids: std::collections::HashSet<u64> = recorded.ends.iter().map(|e| e.flow_id).collect();
        for row in recorded.rows.iter().filter(|r| !ended_ids.contains(&r.flow_id)) {
            eprintln!(
                "NO END: {:?} {}:{} -> {}:{} t={}",
                row.direction, row.src_ip, row.src_port, row.dst_ip, row.dst_port, row.timestamp_ns
            );
        }
        let last = recorded.rows.iter().map(|r| r.timestamp_ns).max().unwrap_or(0);
        let first = recorded.rows.iter().map(|r| r.timestamp_ns).min().unwrap_or(0);
        eprintln!(
            "rows {} ends {} first {first} last {last} end_events {} counters {:?}",
            recorded.rows.len(),
            recorded.ends.len(),
            recorded.counters.end_events,
            recorded.counters
        );
    }
    assert!(ended, "{} ends of {}", recorded.ends.len(), 2 * CONNECTIONS);
    assert_eq!(locals.len(), CONNECTIONS);
    eprintln!(
        "{CONNECTIONS} connections in {elapsed:?} ({:.0}/s), {} rows, counters {:?}",
        CONNECTIONS as f64 / elapsed.as_secs_f64(),
        recorded.rows.len(),
        recorded.counters
    );
    assert_eq!(recorded.counters.lost(), 0, "the kernel lost records: {:?}", recorded.counters);
    assert_eq!(recorded.undecodable, 0);

    // Every connection the client made appears once outgoing and once
    // incoming, and nothing else appears (client ports may repeat, so
    // compare multisets).
    let mut expected: HashMap<_, i64> = HashMap::new();
    for &local in &locals {
        *expected.entry((Outgoing, local, server_addr)).or_default() += 1;
        *expected.entry((Incoming, local, server_addr)).or_default() += 1;
    }
    let mut seen: HashMap<_, i64> = HashMap::new();
    for row in &recorded.rows {
        *seen.entry(endpoints(row)).or_default() += 1;
    }
    let outgoing = recorded.rows.iter().filter(|r| r.direction == Outgoing).count();
    let incoming = recorded.rows.len() - outgoing;
    assert_eq!((outgoing, incoming), (CONNECTIONS, CONNECTIONS), "rows per side");
    assert!(seen == expected, "the rows are not exactly the connections made");
    assert_eq!(recorded.counters.flow_events, 2 * CONNECTIONS as u64);

    // Every row names its own side's process: the client that connected,
    // the server that listened.
    for row in &recorded.rows {
        let (pid, name) = match row.direction {
            Outgoing => (peer.pid, "netpeer"),
            Incoming => (server.pid(), "netpeer"),
        };
        assert_eq!(row.attribution.process_id, Some(pid), "{row:?}");
        assert_eq!(&*row.attribution.process_name, name);
        assert_eq!(&*row.attribution.cgroup_path, cgroup.relative_path());
    }
    assert_eq!(recorded.attribution.unattributed, 0);

    // Exactly one end per side, each with its begin's flowId and endpoints.
    let mut begins: HashMap<u64, &flowsql_event::FlowBegin> = HashMap::new();
    for row in &recorded.rows {
        assert!(begins.insert(row.flow_id, row).is_none(), "flowIds are unique: {row:?}");
    }
    let mut ended_ids = std::collections::HashSet::new();
    for end in &recorded.ends {
        let begin = begins.get(&end.flow_id).unwrap_or_else(|| panic!("an end without its begin: {end:?}"));
        assert_eq!(
            endpoints(begin),
            (
                end.direction,
                SocketAddr::new(end.src_ip, end.src_port),
                SocketAddr::new(end.dst_ip, end.dst_port)
            )
        );
        assert!(ended_ids.insert(end.flow_id), "one end per begin: {end:?}");
        assert_eq!(end.src_bytes, 0);
    }
    let outgoing_ends = recorded.ends.iter().filter(|e| e.direction == Outgoing).count();
    assert_eq!(
        (outgoing_ends, recorded.ends.len() - outgoing_ends),
        (CONNECTIONS, CONNECTIONS),
        "ends per side"
    );
    assert_eq!(recorded.counters.end_events, 2 * CONNECTIONS as u64);
}
