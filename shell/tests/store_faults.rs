//! Faults under the store: a disk that fills up (a small tmpfs) and a data
//! directory on a read-only file system. Nothing panics, the error is
//! reported, every flow that could not be stored is counted as loss (and
//! shown by `flowsql status`), writing resumes when space or write access
//! returns, and no corrupt or unlisted file is left behind.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use flowsql_store::synthetic::indexed_flow;
use flowsql_store::{ExportOptions, Store, StoreWriter, TimeRange, WriterConfig, flows_from_batch};
use flowsql_tests::{TestCgroup, TmpfsMount};

const FLOWSQL: &str = env!("CARGO_BIN_EXE_flowsql");

fn status_json(dir: &Path) -> serde_json::Value {
    let output = Command::new(FLOWSQL)
        .args(["status", "--json", "--data-dir"])
        .arg(dir)
        .output()
        .expect("flowsql status runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// Every file under `flows/` is complete and listed in the manifest.
fn assert_cold_tier_clean(store: &Store) {
    let mut on_disk = Vec::new();
    let mut stack = vec![store.dir().table_dir("flows")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else {
                on_disk.push(entry.path());
            }
        }
    }
    on_disk.sort();
    let mut listed: Vec<_> =
        store.cold_files(TimeRange::ALL).expect("manifest").into_iter().map(|f| f.path).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "no temporary or unlisted file");
    for file in &listed {
        flowsql_store::cold::read_file(flowsql_store::flows_table(), file)
            .expect("every listed file reads whole");
    }
}

fn integrity_ok(store: &Store) {
    let db = rusqlite::Connection::open(store.db_path()).expect("open the database");
    let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
    assert_eq!(check, "ok");
}

#[test]
fn a_full_disk_counts_loss_and_recovers_with_no_corrupt_file() {
    let disk = TmpfsMount::new("full", "12m");
    let dir = disk.path().join("data");
    {
        let mut store = Store::open(&dir).expect("open");
        let flows: Vec<_> = (0..2000).map(|i| indexed_flow(1, i)).collect();
        store.insert_flows(&flowsql_store::batch_from_flows(&flows)).expect("insert");
        store.export(&ExportOptions::up_to(i64::MAX), &mut |_| {}).expect("export while there is room");
    }
    let config = WriterConfig {
        batch_rows: 1000,
        batch_age: Duration::from_millis(20),
        stats_every: Duration::from_millis(100),
        checkpoint_every: Duration::from_millis(50),
        reopen_every: Duration::from_millis(50),
        ..WriterConfig::default()
    };
    let writer = StoreWriter::spawn(&dir, config).expect("writer");
    for i in 0..2000 {
        writer.send_blocking(indexed_flow(2, i));
    }
    writer.flush();
    assert_eq!(writer.counters().rows_stored, 2000);

    let filler = disk.fill("filler");
    // Far more than the free pages of the database and its WAL can take.
    for i in 2000..80_000 {
        writer.send_blocking(indexed_flow(2, i));
    }
    writer.flush();
    let full = writer.counters();
    assert!(full.rows_not_stored > 0 && full.store_failures > 0, "the full disk was noticed: {full:?}");
    assert_eq!(full.rows_stored + full.rows_not_stored, full.rows_received);

    // An export on the full disk fails cleanly: the rows stay hot, no file is left.
    let mut store = Store::open_without_recovery(&dir).expect("open on a full disk");
    let hot_before = store.hot_flow_count(TimeRange::ALL).expect("count");
    let error = store.export(&ExportOptions::up_to(i64::MAX), &mut |_| {}).expect_err("no room for Parquet");
    assert!(error.is_disk_full(), "reported as a full disk: {error}");
    assert_eq!(store.hot_flow_count(TimeRange::ALL).expect("count"), hot_before, "nothing moved");
    assert_cold_tier_clean(&store);

    // Space returns: writing and exporting resume.
    std::fs::remove_file(&filler).expect("free the space");
    for i in 0..1000 {
        writer.send_blocking(indexed_flow(3, i));
    }
    writer.flush();
    let after = writer.finish();
    assert_eq!(after.rows_stored, full.rows_stored + 1000, "stores again once there is room");
    assert_eq!(after.rows_not_stored, full.rows_not_stored);
    let report =
        store.export(&ExportOptions::up_to(i64::MAX), &mut |_| {}).expect("export once there is room");
    assert!(report.rows >= 1000);
    integrity_ok(&store);
    assert_cold_tier_clean(&store);

    // Every stored flow is intact and there once; the count is what the writer said.
    let mut seen = std::collections::HashSet::new();
    for batch in store.flows(TimeRange::ALL).expect("read") {
        for flow in flows_from_batch(&batch).expect("valid") {
            let index = ((flow.timestamp_ns - flowsql_store::synthetic::BASE_NS) / 50_000_000) as u64;
            assert_eq!(flow, indexed_flow(flow.cgroup_id as u32, index));
            assert!(seen.insert((flow.cgroup_id, index)), "duplicate {flow:?}");
        }
    }
    assert_eq!(seen.len() as u64, 2000 + after.rows_stored);

    // The loss is visible in status.
    let status = status_json(&dir);
    assert_eq!(status["capture"]["latest"]["rowsNotStored"], after.rows_not_stored, "{status}");
    assert_eq!(status["capture"]["latest"]["rowsStored"], after.rows_stored, "{status}");
    assert!(status["capture"]["loss"].as_u64().expect("loss") >= after.rows_not_stored);
}

/// Waits for capture to log that it is attaching (at info level).
fn wait_attached(stderr: &mut BufReader<std::process::ChildStderr>, log: &mut String) {
    let mut line = String::new();
    loop {
        line.clear();
        let n = stderr.read_line(&mut line).expect("read stderr");
        assert!(n > 0, "flowsql capture exited before attaching: {log}");
        log.push_str(&line);
        if line.contains("capture attached") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
}

fn connect_from_cgroup(cgroup: &TestCgroup, port: u16) {
    let script =
        format!("echo $$ > {}/cgroup.procs && exec 3<>/dev/tcp/127.0.0.1/{port}", cgroup.path().display());
    let status = Command::new("bash").args(["-c", &script]).status().expect("bash runs");
    assert!(status.success(), "the client in the cgroup failed to connect");
}

#[test]
fn capture_on_a_read_only_data_directory_counts_loss_and_recovers() {
    let disk = TmpfsMount::new("ro", "16m");
    let dir = disk.path().join("data");
    drop(Store::open(&dir).expect("create the data directory"));
    disk.remount("ro");

    let cgroup = TestCgroup::new("rostore");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut child = Command::new(FLOWSQL)
        .args(["capture", "--log-level", "info", "--duration", "8", "--data-dir"])
        .arg(&dir)
        .arg("--cgroup")
        .arg(cgroup.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flowsql capture starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut log = String::new();
    wait_attached(&mut stderr, &mut log);
    for _ in 0..3 {
        connect_from_cgroup(&cgroup, port);
    }
    // Let the writer try (and fail) to commit them.
    std::thread::sleep(Duration::from_millis(1200));
    disk.remount("rw");
    // The writer reopens within a second.
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..2 {
        connect_from_cgroup(&cgroup, port);
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).expect("stderr");
    log.push_str(&rest);
    let status = child.wait().expect("capture exits");
    assert!(status.success(), "capture keeps running on a read-only directory: {log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("not being stored") || log.contains("not usable"), "the error is reported: {log}");

    let status = status_json(&dir);
    // Two rows per connection: its begin and its end (the client's close
    // is acknowledged at once, and its socket then ends).
    let latest = &status["capture"]["latest"];
    assert_eq!(latest["rowsNotStored"], 6, "{status}");
    assert_eq!(latest["rowsStored"], 4, "{status}");
    assert_eq!(status["hot"]["rows"], 4, "{status}");
    assert_eq!(status["capture"]["loss"], 6, "{status}");
    let store = Store::open(&dir).expect("open");
    integrity_ok(&store);
}
