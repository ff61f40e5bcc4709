//! `flowsql shell --capture`: the shell records in its own process, and a
//! connection made now is in `flows` within two seconds, in the same result
//! as rows exported to Parquet long ago.

#[path = "support/fixture.rs"]
mod fixture;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use flowsql_tests::TestCgroup;
use rexpect::session::spawn_command;

const PROMPT: &str = "flowsql> ";

#[test]
fn a_connection_made_now_is_queryable_at_once_beside_parquet_rows() {
    let cgroup = TestCgroup::new("live");
    let data = fixture::fixture("live");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();

    let mut command = Command::new(env!("CARGO_BIN_EXE_flowsql"));
    command
        .args(["shell", "--capture", "--cgroup"])
        .arg(cgroup.path())
        .arg("--data-dir")
        .arg(data.path())
        .env("FLOWSQL_HISTORY", data.path().join("history"))
        .env("FLOWSQL_LOG_FILE", data.path().join("shell.log"))
        .env("TERM", "xterm")
        .env_remove("RUST_LOG");
    let mut shell = spawn_command(command, Some(15_000)).expect("start flowsql shell --capture");
    shell.exp_string("capturing TCP connections of").expect("the capture banner");
    shell.exp_string(PROMPT).expect("the first prompt");

    // A connection from a process in the cgroup.
    let script =
        format!("echo $$ > {}/cgroup.procs && exec 3<>/dev/tcp/127.0.0.1/{port}", cgroup.path().display());
    let connected = Instant::now();
    assert!(Command::new("bash").args(["-c", &script]).status().expect("bash").success());

    // Poll until the flow shows up; it must within 2 seconds.
    let query = format!("SELECT 'seen=' || count(*) AS seen FROM flows WHERE dstPort = {port};");
    loop {
        shell.send_line(&query).expect("send");
        let (_, seen) = shell.exp_regex("seen=[0-9]+").expect("a count");
        shell.exp_string(PROMPT).expect("prompt");
        if seen == "seen=1" {
            break;
        }
        assert_eq!(seen, "seen=0", "the flow appears once");
        assert!(connected.elapsed() < Duration::from_secs(2), "not queryable within 2 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let waited = connected.elapsed();

    // One result with the Parquet rows of 07:00-08:59, the SQLite rows, and
    // the live one.
    shell
        .send_line(&format!(
            "SELECT 'tiers=' || count(*) FILTER (WHERE timestamp < '2026-11-28T09:00:00Z') || '/' || \
             count(*) FILTER (WHERE timestamp >= '2026-11-28T09:00:00Z' AND timestamp < '2026-11-28T10:00:00Z' \
             AND dstPort <> {port}) || '/' || \
             count(*) FILTER (WHERE dstPort = {port}) AS tiers FROM flows;"
        ))
        .expect("send");
    shell.exp_string("tiers=3/2/1").expect("cold, hot and live rows in one result");
    shell.exp_string(PROMPT).expect("prompt");
    shell.send_line(".quit").expect("quit");
    shell.exp_eof().expect("the shell exits");
    eprintln!("queryable {waited:?} after the connection");

    // On exit the capture committed the flow to the store.
    let store = flowsql_store::Store::open_read_only(data.path()).expect("store");
    let stored = store
        .flows(flowsql_store::TimeRange::ALL)
        .expect("flows")
        .iter()
        .flat_map(|b| flowsql_store::flows_from_batch(b).expect("valid"))
        .filter(|f| f.dst_port == port)
        .count();
    assert_eq!(stored, 1);
}

#[test]
fn shell_capture_without_privileges_says_so_before_any_prompt() {
    flowsql_tests::require_root();
    let data = fixture::fixture("live-noprivs");
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(env!("CARGO_BIN_EXE_flowsql"))
        .args(["shell", "--capture", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("flowsql runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("lacks CAP_BPF and CAP_NET_ADMIN"), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains(PROMPT));
}

#[test]
fn open_flows_lists_a_connection_while_it_is_open_and_flow_ends_after() {
    let cgroup = TestCgroup::new("liveopen");
    let data = fixture::fixture("live-open");
    let netpeer = flowsql_tests::workspace_binary(env!("CARGO_BIN_EXE_flowsql"), "netpeer");
    let netpeer = netpeer.to_str().expect("UTF-8 path");
    let server = flowsql_tests::Server::spawn(
        netpeer,
        flowsql_tests::Place::outside(),
        &["exchange-serve", "--listen", "127.0.0.1:0", "--receive", "4096", "--send", "0"],
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowsql"));
    command
        .args(["shell", "--capture", "--cgroup"])
        .arg(cgroup.path())
        .arg("--data-dir")
        .arg(data.path())
        .env("FLOWSQL_HISTORY", data.path().join("history"))
        .env("FLOWSQL_LOG_FILE", data.path().join("shell.log"))
        .env("TERM", "xterm")
        .env_remove("RUST_LOG");
    let mut shell = spawn_command(command, Some(15_000)).expect("start flowsql shell --capture");
    shell.exp_string(PROMPT).expect("the first prompt");

    // A connection from the cgroup, held open.
    let to = format!("127.0.0.1:{}", server.port);
    let mut client = flowsql_tests::Session::start(
        netpeer,
        flowsql_tests::Place::cgroup(&cgroup),
        &to,
        &["--send", "4096", "--receive", "0"],
    );
    client.exchange();
    let port = client.local.port();
    let open = format!(
        "SELECT 'open=' || count(*) || '/' || coalesce(max(srcBytes), 0) || '/' || coalesce(max(endReason), '-') AS o \
         FROM open_flows WHERE srcPort = {port};"
    );
    let ended = format!(
        "SELECT 'ended=' || count(*) || '/' || coalesce(max(srcBytes), 0) || '/' || coalesce(max(endReason), '-') AS e \
         FROM flow_ends WHERE srcPort = {port};"
    );
    let query = |shell: &mut rexpect::session::PtySession, sql: &str, pattern: &str| -> String {
        shell.send_line(sql).expect("send");
        let (_, found) = shell.exp_regex(pattern).expect("an answer");
        shell.exp_string(PROMPT).expect("prompt");
        found
    };
    // Open, with the bytes it sent so far (acknowledged: give it a moment).
    let mut seen = String::new();
    for _ in 0..40 {
        seen = query(&mut shell, &open, "open=[0-9]+/[0-9]+/[a-z-]+");
        if seen == "open=1/4096/open" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(seen, "open=1/4096/open", "listed while open, with its bytes so far");
    assert_eq!(query(&mut shell, &ended, "ended=[0-9]+/[0-9]+/[a-z-]+"), "ended=0/0/-");

    // Closed: gone from open_flows, in flow_ends at once.
    client.close();
    let started = Instant::now();
    loop {
        let seen = query(&mut shell, &ended, "ended=[0-9]+/[0-9]+/[a-z-]+");
        if seen == "ended=1/4096/fin" {
            break;
        }
        assert_eq!(seen, "ended=0/0/-", "one end, once");
        assert!(started.elapsed() < Duration::from_secs(5), "the end shows within 5 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(query(&mut shell, &open, "open=[0-9]+/[0-9]+/[a-z-]+"), "open=0/0/-", "not after it ended");
    // The begin and the end pair up by flowId.
    shell
        .send_line(&format!(
            "SELECT 'joined=' || count(*) AS j FROM flows JOIN flow_ends USING (hostName, flowId) WHERE flows.srcPort = {port};"
        ))
        .expect("send");
    shell.exp_string("joined=1").expect("the begin joins its end");
    shell.exp_string(PROMPT).expect("prompt");
    shell.send_line(".quit").expect("quit");
    shell.exp_eof().expect("the shell exits");
}
