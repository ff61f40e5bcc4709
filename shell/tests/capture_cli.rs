//! The real `flowsql capture` binary: its JSON lines, its shutdown on
//! signals, and the one clear line it prints when it cannot capture.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use flowsql_tests::TestCgroup;

const FLOWSQL: &str = env!("CARGO_BIN_EXE_flowsql");

/// Opens one TCP connection from a bash process that joins `cgroup` first
/// (bash's /dev/tcp: no other tool needed).
fn connect_from_cgroup(cgroup: &TestCgroup, port: u16) {
    let script =
        format!("echo $$ > {}/cgroup.procs && exec 3<>/dev/tcp/127.0.0.1/{port}", cgroup.path().display());
    let status = Command::new("bash").args(["-c", &script]).status().expect("bash runs");
    assert!(status.success(), "the client in the cgroup failed to connect");
}

fn listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (listener, port)
}

/// Waits for capture to be attached: it logs "capture attached" at info
/// level once every program is attached; give the reader a moment after it.
fn wait_attached(stderr: &mut BufReader<std::process::ChildStderr>) {
    let mut line = String::new();
    loop {
        line.clear();
        let n = stderr.read_line(&mut line).expect("read stderr");
        assert!(n > 0, "flowsql capture exited before attaching");
        if line.contains("capture attached") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn capture_json_prints_one_complete_object_per_flow_and_stops_on_sigint() {
    let cgroup = TestCgroup::new("cli");
    let data = flowsql_tests::TempDir::new("clidata");
    let (_listener, port) = listener();
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
    wait_attached(&mut stderr);
    for _ in 0..3 {
        connect_from_cgroup(&cgroup, port);
    }
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().expect("flowsql exits");
    assert!(output.status.success(), "exit status {:?}", output.status);
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(stdout.ends_with('\n'), "the last line is complete");
    let rows: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).expect("every line is one JSON object")).collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    for row in &rows {
        let object = row.as_object().expect("object");
        let mut keys: Vec<_> = object.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "cgroupId",
                "cgroupPath",
                "connectionDirection",
                "containerId",
                "dstDomains",
                "dstIP",
                "dstPort",
                "executable",
                "flowId",
                "hostName",
                "processId",
                "processName",
                "srcDomains",
                "srcIP",
                "srcPort",
                "timestamp",
                "userId"
            ]
        );
        assert_eq!(row["connectionDirection"], "outgoing");
        assert_eq!(row["srcIP"], "127.0.0.1");
        assert_eq!(row["dstIP"], "127.0.0.1");
        assert_eq!(row["dstPort"], port);
        assert_eq!(row["srcDomains"], serde_json::json!([]));
        assert_eq!(row["dstDomains"], serde_json::json!([]));
        assert_eq!(row["cgroupId"], cgroup.id());
        // Who: the bash that connected, as root, in the test's cgroup.
        assert_eq!(row["processName"], "bash");
        assert!(row["processId"].as_u64().is_some_and(|pid| pid > 0), "{row}");
        assert_eq!(row["userId"], 0);
        assert_eq!(row["executable"], "/usr/bin/bash");
        assert_eq!(row["cgroupPath"], cgroup.relative_path());
        assert_eq!(row["containerId"], "");
        assert!(row["flowId"].as_u64().is_some(), "{row}");
        let ts = row["timestamp"].as_str().expect("timestamp string");
        assert!(ts.ends_with('Z'), "UTC: {ts}");
        chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339");
    }
    // By default the flows are also stored: the same three rows.
    let store = flowsql_store::Store::open(data.path()).expect("the data directory exists");
    let mut stored: Vec<u16> = store
        .flows(flowsql_store::TimeRange::ALL)
        .expect("read")
        .iter()
        .flat_map(|b| flowsql_store::flows_from_batch(b).expect("valid"))
        .map(|f| f.src_port)
        .collect();
    let mut printed: Vec<u16> = rows.iter().map(|r| r["srcPort"].as_u64().expect("port") as u16).collect();
    stored.sort_unstable();
    printed.sort_unstable();
    assert_eq!(stored, printed);
}

#[test]
fn capture_json_stops_after_its_duration() {
    let cgroup = TestCgroup::new("dur");
    let started = std::time::Instant::now();
    let output = Command::new(FLOWSQL)
        .args(["capture", "--json", "--no-store", "--duration", "1", "--cgroup"])
        .arg(cgroup.path())
        .output()
        .expect("flowsql runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(output.stdout, b"");
}

/// Runs flowsql, expecting failure with exactly one `error:` line that
/// contains `expected`.
fn fails_with(command: &mut Command, expected: &str) {
    let output = command.output().expect("flowsql runs");
    assert!(!output.status.success(), "must fail");
    assert_eq!(output.stdout, b"", "nothing on stdout");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(expected), "{stderr:?} does not say {expected:?}");
}

#[test]
fn without_privileges_capture_says_what_is_missing() {
    flowsql_tests::require_root();
    // Drop to nobody with no capabilities at all.
    fails_with(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", FLOWSQL])
            .args(["capture", "--json", "--no-store", "--duration", "1"]),
        "needs root, or the capabilities CAP_BPF and CAP_NET_ADMIN; this process lacks CAP_BPF and CAP_NET_ADMIN",
    );
    // Root without CAP_BPF/CAP_SYS_ADMIN.
    fails_with(
        Command::new("setpriv").args(["--inh-caps=-all", "--bounding-set=-bpf,-sys_admin", FLOWSQL]).args([
            "capture",
            "--json",
            "--no-store",
            "--duration",
            "1",
        ]),
        "lacks CAP_BPF",
    );
}

#[test]
fn a_directory_that_is_not_a_cgroup_is_refused() {
    flowsql_tests::require_root();
    fails_with(
        Command::new(FLOWSQL).args(["capture", "--json", "--no-store", "--cgroup", "/tmp"]),
        "/tmp is not a cgroup v2 directory",
    );
    fails_with(
        Command::new(FLOWSQL).args([
            "capture",
            "--json",
            "--no-store",
            "--cgroup",
            "/sys/fs/cgroup/flowsql-no-such-group",
        ]),
        "does not exist",
    );
}

#[test]
fn bad_options_are_refused() {
    fails_with(
        Command::new(FLOWSQL).args(["capture", "--json", "--no-store", "--duration=-1"]),
        "--duration",
    );
    fails_with(
        Command::new(FLOWSQL).args(["capture", "--json", "--no-store", "--ring-buffer-bytes", "5000"]),
        "ring buffer size",
    );
    fails_with(Command::new(FLOWSQL).args(["capture", "--no-store"]), "--json");
    // clap's own errors (several lines) name the option.
    let output = Command::new(FLOWSQL)
        .args(["capture", "--json", "--export-every", "soon"])
        .output()
        .expect("flowsql runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("'--export-every <DURATION>'"));
}

#[test]
fn capture_says_when_it_starts_and_what_it_did_when_it_stops() {
    let cgroup = TestCgroup::new("announce");
    let data = flowsql_tests::TempDir::new("announce");
    let (_listener, port) = listener();
    let mut child = Command::new(FLOWSQL)
        .args(["capture", "--data-dir"])
        .arg(data.path())
        .arg("--cgroup")
        .arg(cgroup.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flowsql starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    // The first line says it runs (the programs are attached by then).
    let mut started = String::new();
    stderr.read_line(&mut started).expect("read stderr");
    assert_eq!(
        started,
        format!(
            "capturing TCP connections of cgroup {} into {}; Ctrl-C to stop\n",
            cgroup.path().display(),
            data.path().display()
        )
    );
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..2 {
        connect_from_cgroup(&cgroup, port);
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).expect("read stderr");
    let output = child.wait_with_output().expect("flowsql exits");
    assert!(output.status.success(), "exit status {:?}: {rest}", output.status);
    assert_eq!(output.stdout, b"", "nothing on stdout without --json");
    // The last line says what it did: `stopped after 1.2 s: 2 connection
    // begins and ends, 2 rows stored, 0 lost`.
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(lines.len(), 1, "one line when it stops: {rest}");
    let summary = lines[0];
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .filter(|n| !n.is_empty() && !n.contains('.'))
        .map(|n| n.parse().expect("a number"))
        .collect();
    assert!(summary.starts_with("stopped after "), "{summary}");
    assert!(
        summary.contains(" connection begins and ends, ") && summary.ends_with(" rows stored, 0 lost"),
        "{summary}"
    );
    let [events, stored, lost] = numbers[..] else { panic!("three counts in {summary:?}") };
    assert!(events >= 2, "two connections began: {summary}");
    assert_eq!((stored, lost), (events, 0), "{summary}");
}

#[test]
fn a_file_as_the_data_directory_is_refused_before_capturing() {
    let temp = flowsql_tests::TempDir::new("datafile");
    let file = temp.path().join("not-a-directory");
    std::fs::write(&file, "").expect("write a file");
    fails_with(
        Command::new(FLOWSQL).arg("capture").arg("--data-dir").arg(&file).args(["--duration", "1"]),
        &format!("{} is not a directory", file.display()),
    );
    fails_with(
        Command::new(FLOWSQL)
            .arg("capture")
            .arg("--data-dir")
            .arg(file.join("data"))
            .args(["--duration", "1"]),
        &format!("{} is not a directory", file.display()),
    );
    assert_eq!(std::fs::read(&file).expect("the file"), b"", "the file is left as it was");
}
