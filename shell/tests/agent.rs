//! The agent build (`cargo build -p flowsql --no-default-features`): a
//! flowsql that captures, stores, exports and reports its status and
//! configuration, without SQL (no DataFusion in its build). CI builds the
//! agent and runs this file and `capture_cli.rs` against it
//! (`cargo nextest run -p flowsql --no-default-features --test agent --test
//! capture_cli`); in the default build the same tests run against the full
//! binary, which does everything the agent does.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flowsql_tests::{TempDir, TestCgroup};

const FLOWSQL: &str = env!("CARGO_BIN_EXE_flowsql");

/// A `flowsql capture` child, killed on drop if a test fails before it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn succeeds(command: &mut Command) -> String {
    let output = command.output().expect("flowsql runs");
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn status(data: &std::path::Path) -> serde_json::Value {
    let text = succeeds(Command::new(FLOWSQL).args(["status", "--json", "--data-dir"]).arg(data));
    serde_json::from_str(&text).expect("status --json is JSON")
}

#[test]
fn the_agent_captures_stores_exports_and_reports() {
    let cgroup = TestCgroup::new("agent");
    let dir = TempDir::new("agent");
    let data = dir.path().join("data");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let child = Command::new(FLOWSQL)
        .args(["capture", "--json", "--log-level", "info", "--data-dir"])
        .arg(&data)
        .arg("--cgroup")
        .arg(cgroup.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flowsql capture starts");
    let mut capture = Running(child);
    let mut stderr = BufReader::new(capture.0.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("storing flows") {
        line.clear();
        assert!(stderr.read_line(&mut line).expect("stderr") > 0, "flowsql capture exited before storing");
    }
    std::thread::sleep(Duration::from_millis(300));
    // Three connections from a process in the cgroup.
    let script = format!(
        "echo $$ > {}/cgroup.procs && for i in 1 2 3; do exec 3<>/dev/tcp/127.0.0.1/{port}; exec 3>&-; done",
        cgroup.path().display()
    );
    assert!(Command::new("bash").args(["-c", &script]).status().expect("bash").success());
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(capture.0.id() as i32, libc::SIGINT) };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut capture.0.stdout.take().expect("stdout"), &mut stdout)
        .expect("stdout");
    let exit = capture.0.wait().expect("flowsql capture exits");
    assert!(exit.success(), "flowsql capture exited with {exit}");
    let flows: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(flows.len(), 3, "{flows:?}");
    assert!(
        flows.iter().all(|f| f["dstPort"] == port && f["connectionDirection"] == "outgoing"),
        "{flows:?}"
    );

    // Stored (three begins in flows, three ends in flow_ends), exported, reported.
    let before = status(&data);
    assert_eq!(before["hot"]["rows"], 6, "{before}");
    assert_eq!(before["capture"]["total"]["rowsStored"], 6, "{before}");
    // Times in JSON are RFC 3339 in UTC, as everywhere the CLI prints them.
    let session = before["capture"]["latest"]["session"].as_str().expect("the session's start, as text");
    assert!(chrono::DateTime::parse_from_rfc3339(session).is_ok() && session.ends_with('Z'), "{session}");
    let exported = succeeds(Command::new(FLOWSQL).arg("export").arg("--data-dir").arg(&data));
    assert!(exported.starts_with("exported 6 rows into 2 files"), "{exported}");
    let after = status(&data);
    assert_eq!(
        (after["hot"]["rows"].clone(), after["cold"]["rows"].clone()),
        (0.into(), 6.into()),
        "{after}"
    );
    let config = succeeds(Command::new(FLOWSQL).arg("config").arg("--data-dir").arg(&data));
    assert!(config.contains(&format!("data_dir = \"{}\"  # flag --data-dir", data.display())), "{config}");
}

#[cfg(not(feature = "sql"))]
#[test]
fn the_agent_has_no_sql_commands() {
    for command in ["shell", "query"] {
        let output = Command::new(FLOWSQL).arg(command).output().expect("flowsql runs");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&format!("unrecognized subcommand '{command}'")), "{stderr}");
    }
}

#[cfg(feature = "sql")]
#[test]
fn the_full_build_has_the_sql_commands() {
    for command in ["shell", "query"] {
        succeeds(Command::new(FLOWSQL).args([command, "--help"]));
    }
}
