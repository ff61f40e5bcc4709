//! The real `flowsql capture` with DNS: a name resolved in the monitored
//! cgroup appears on the flow's JSON line, in the stored flow and in the
//! `domains` table of `flowsql.db`; and a capture that restarts on the same
//! data directory still knows the names whose TTL has not run out.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::Duration;

use flowsql_tests::{Dnsmasq, Netns, Place, Server, TempDir, TestCgroup, connect, resolve};

const FLOWSQL: &str = env!("CARGO_BIN_EXE_flowsql");

/// netpeer is a binary of the flowsql-tests package, built beside flowsql.
fn netpeer() -> String {
    flowsql_tests::workspace_binary(FLOWSQL, "netpeer").display().to_string()
}

/// `flowsql capture --json` storing into `data`, attached to `cgroup`;
/// killed on drop if a test fails before stopping it.
struct JsonCapture {
    child: Child,
    stderr: BufReader<ChildStderr>,
    log: String,
}

impl JsonCapture {
    /// Starts the capture and waits until it is attached.
    fn start(data: &Path, cgroup: &TestCgroup) -> JsonCapture {
        let mut child = Command::new(FLOWSQL)
            .args(["capture", "--json", "--log-level", "info", "--data-dir"])
            .arg(data)
            .arg("--cgroup")
            .arg(cgroup.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flowsql starts");
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut capture = JsonCapture { child, stderr, log: String::new() };
        // Logged once attached, as the store writer starts.
        while !capture.log.contains("storing flows") {
            let mut line = String::new();
            assert!(
                capture.stderr.read_line(&mut line).expect("stderr") > 0,
                "flowsql exited before storing:\n{}",
                capture.log
            );
            capture.log.push_str(&line);
        }
        std::thread::sleep(Duration::from_millis(300));
        capture
    }

    /// SIGINT; the JSON lines it printed, and its whole log.
    fn stop(mut self) -> (Vec<serde_json::Value>, String) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let mut stdout = String::new();
        self.child.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("stdout");
        self.stderr.read_to_string(&mut self.log).expect("stderr");
        let status = self.child.wait().expect("flowsql exits");
        assert!(status.success(), "flowsql capture exited with {status}:\n{}", self.log);
        let rows = stdout.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
        (rows, std::mem::take(&mut self.log))
    }
}

impl Drop for JsonCapture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

    let capture = JsonCapture::start(data.path(), &cgroup);
    let client = Place::cgroup(&cgroup).in_netns(&netns);
    assert_eq!(
        resolve(&netpeer, client, "www.shop.test", &[]),
        ["127.0.0.40".parse::<std::net::IpAddr>().expect("ip")]
    );
    let locals = connect(&netpeer, client, &format!("127.0.0.40:{}", server.port), &[]);
    let (rows, _) = capture.stop();
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

#[test]
fn names_resolved_before_a_restart_name_flows_after_it_until_their_ttl_runs_out() {
    let netpeer = netpeer();
    let netns = Netns::new("restart");
    let cgroup = TestCgroup::new("restart");
    let data = TempDir::new("restart");
    let _dns = Dnsmasq::start(
        Place::outside().in_netns(&netns),
        &["--host-record=long.test,127.0.0.41,3600", "--host-record=short.test,127.0.0.42,3"],
    );
    // One listener for every loopback address of the namespace.
    let server = Server::start(&netpeer, Place::outside().in_netns(&netns), "0.0.0.0:0", &[]);
    let client = Place::cgroup(&cgroup).in_netns(&netns);
    let ip = |text: &str| text.parse::<std::net::IpAddr>().expect("ip");

    // First run: the names are resolved, nothing connects.
    let first = JsonCapture::start(data.path(), &cgroup);
    assert_eq!(resolve(&netpeer, client, "long.test", &[]), [ip("127.0.0.41")]);
    assert_eq!(resolve(&netpeer, client, "short.test", &[]), [ip("127.0.0.42")]);
    let (rows, _) = first.stop();
    assert!(rows.is_empty(), "{rows:?}");

    // short.test's 3 seconds run out while no capture runs.
    std::thread::sleep(Duration::from_secs(4));

    // Second run, on the same data directory, with no DNS answer at all.
    let second = JsonCapture::start(data.path(), &cgroup);
    for to in ["127.0.0.41", "127.0.0.42"] {
        connect(&netpeer, client, &format!("{to}:{}", server.port), &[]);
    }
    let (rows, log) = second.stop();
    let to = |dst: &str| -> serde_json::Value {
        let found: Vec<&serde_json::Value> = rows.iter().filter(|r| r["dstIP"] == dst).collect();
        assert_eq!(found.len(), 1, "one flow to {dst}: {rows:?}");
        found[0]["dstDomains"].clone()
    };
    assert_eq!(to("127.0.0.41"), serde_json::json!(["long.test"]), "the name with an hour to live");
    assert_eq!(to("127.0.0.42"), serde_json::json!([]), "the name that expired during the restart");
    assert!(
        log.contains("names learned before this start are known again until they expire names=1"),
        "{log}"
    );
}
