//! The real `flowsql capture` with DNS: a name resolved in the monitored
//! cgroup appears on the flow's JSON line, in the stored flow and in the
//! `domains` table of `flowsql.db`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use flowsql_tests::{Dnsmasq, Netns, Place, Server, TempDir, TestCgroup, connect, resolve};

const FLOWSQL: &str = env!("CARGO_BIN_EXE_flowsql");

/// netpeer is a binary of the flowsql-tests package, built beside flowsql.
fn netpeer() -> String {
    flowsql_tests::workspace_binary(FLOWSQL, "netpeer").display().to_string()
}

#[test]
fn capture_stores_the_names_of_a_resolved_destination() {
    let netpeer = netpeer();
    let netns = Netns::new("clidns");
    let cgroup = TestCgroup::new("clidns");
    let data = TempDir::new("clidns");
    let _dns = Dnsmasq::start(
        Place::outside().in_netns(&netns),
        &["--cname=www.shop.test,edge.cdn.test", "--host-record=edge.cdn.test,127.0.0.40,60"],
    );
    let server = Server::start(&netpeer, Place::outside().in_netns(&netns), "127.0.0.40:0", &[]);

    let mut child = Command::new(FLOWSQL)
        .args(["capture", "--json", "--log-level", "info", "--data-dir"])
        .arg(data.path())
        .arg("--cgroup")
        .arg(cgroup.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flowsql starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("capture attached") {
        line.clear();
        assert!(stderr.read_line(&mut line).expect("stderr") > 0, "flowsql exited before attaching");
    }
    std::thread::sleep(Duration::from_millis(300));
    let client = Place::cgroup(&cgroup).in_netns(&netns);
    assert_eq!(
        resolve(&netpeer, client, "www.shop.test", &[]),
        ["127.0.0.40".parse::<std::net::IpAddr>().expect("ip")]
    );
    let locals = connect(&netpeer, client, &format!("127.0.0.40:{}", server.port), &[]);
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().expect("flowsql exits");
    assert!(output.status.success());

    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["srcPort"], locals[0].port());
    assert_eq!(rows[0]["dstDomains"], serde_json::json!(["www.shop.test", "edge.cdn.test"]));

    let store = flowsql_store::Store::open_read_only(data.path()).expect("store");
    let stored: Vec<_> = store
        .flows(flowsql_store::TimeRange::ALL)
        .expect("flows")
        .iter()
        .flat_map(|b| flowsql_store::flows_from_batch(b).expect("valid"))
        .filter(|f| f.src_port == locals[0].port())
        .collect();
    assert_eq!(stored.len(), 1, "the flow is stored");
    let names: Vec<&str> = stored[0].dst_domains.iter().map(|n| &**n).collect();
    assert_eq!(names, ["www.shop.test", "edge.cdn.test"]);
    let db = rusqlite::Connection::open(data.path().join("flowsql.db")).expect("open db");
    let mut stmt = db
        .prepare(
            "SELECT name, question, expiresAt - firstSeen FROM domains WHERE ip = '127.0.0.40' ORDER BY name",
        )
        .expect("prepare");
    let domains: Vec<(String, String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        domains,
        vec![
            ("edge.cdn.test".into(), "www.shop.test".into(), 60_000_000_000),
            ("www.shop.test".into(), "www.shop.test".into(), 60_000_000_000),
        ]
    );
    let counters: String = db
        .query_row("SELECT counters FROM capture_stats ORDER BY time DESC LIMIT 1", [], |r| r.get(0))
        .expect("capture_stats row");
    let counters: serde_json::Value = serde_json::from_str(&counters).expect("JSON counters");
    assert!(counters["dnsMessages"].as_u64().expect("dnsMessages") >= 1, "{counters}");
    assert_eq!(counters["domainsNotStored"], 0);
}
