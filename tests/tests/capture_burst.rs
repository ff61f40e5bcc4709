//! A burst of short connections: every one is recorded, exactly once per
//! side, and the kernel's loss counter stays at zero.

use std::collections::HashMap;

use flowsql_event::Direction::{Incoming, Outgoing};
use flowsql_tests::{Place, Recording, Server, TestCgroup, addr, connect, endpoints};

const NETPEER: &str = env!("CARGO_BIN_EXE_netpeer");
const CONNECTIONS: usize = 10_000;

#[test]
fn ten_thousand_short_connections_give_ten_thousand_rows_per_side() {
    let cgroup = TestCgroup::new("burst");
    let server = Server::start(NETPEER, Place::cgroup(&cgroup), "127.0.0.1:0", &[]);
    let recording = Recording::start(&cgroup);
    let server_addr = addr(&format!("127.0.0.1:{}", server.port));
    let started = std::time::Instant::now();
    let locals = connect(
        NETPEER,
        Place::cgroup(&cgroup),
        &server_addr.to_string(),
        &["--count", &CONNECTIONS.to_string()],
    );
    let elapsed = started.elapsed();
    let recorded = recording.finish();
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
}
