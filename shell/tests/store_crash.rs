//! Crash safety of the store, with a real process: the `store_stress`
//! writer (a binary of flowsql-tests: the capture's store writer and
//! scheduled export on generated flows) is killed with SIGKILL at random moments, many times,
//! during inserts, during exports, and between an export file's rename and
//! its manifest commit; each run restarts on the same data directory. In the
//! end every flow a run reported committed is in the store exactly once,
//! across both tiers, and nothing else is: no duplicate, no loss.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flowsql_store::synthetic::{self, Rng};
use flowsql_store::{Store, TimeRange, flows_from_batch};
use flowsql_tests::TempDir;

const FLOWSQL: &str = env!("CARGO_BIN_EXE_flowsql");

/// store_stress is a binary of the flowsql-tests package, built beside flowsql.
fn store_stress() -> PathBuf {
    flowsql_tests::workspace_binary(FLOWSQL, "store_stress")
}

/// Kills the child on drop (a failing test leaves no writer behind).
struct Writer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Writer {
    fn start(dir: &Path, run: u32, pause_after_rename: bool) -> Writer {
        let mut command = Command::new(store_stress());
        command
            .arg("--data-dir")
            .arg(dir)
            .args([
                "--run",
                &run.to_string(),
                "--rate",
                "30",
                "--batch-rows",
                "400",
                "--export-every-ms",
                "150",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if pause_after_rename {
            command.args(["--pause-after-rename-ms", "5000"]);
        }
        let mut child = command.spawn().expect("store_stress starts");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Writer { child, lines }
    }

    /// Waits for a line starting with `prefix`; returns it, keeping track
    /// of commits on the way.
    fn wait_for(&self, prefix: &str, committed: &mut u64, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            if let Some(n) = line.strip_prefix("committed ") {
                *committed = (*committed).max(n.parse().expect("a count"));
            }
            if line.starts_with(prefix) {
                return Some(line);
            }
        }
    }

    /// SIGKILL, then every commit it reported before dying.
    fn kill(mut self, committed: &mut u64) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            if let Some(n) = line.strip_prefix("committed ") {
                *committed = (*committed).max(n.parse().expect("a count"));
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file under `dir`, relative.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).expect("inside").to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// At a random moment (mostly while inserting).
    Random,
    /// Shortly after an export started writing.
    DuringExport,
    /// After a file was renamed into place, before its manifest commit.
    BetweenRenameAndCommit,
}

#[test]
fn sigkill_at_any_moment_loses_and_duplicates_nothing() {
    let data = TempDir::new("crash");
    let dir = data.path().join("data");
    let mut rng = Rng::new(0x5eed_f10e);
    let mut reported: BTreeMap<u32, u64> = BTreeMap::new();
    let mut orphans_to_be_gone: Vec<PathBuf> = Vec::new();
    let modes = [KillAt::Random, KillAt::DuringExport, KillAt::BetweenRenameAndCommit];
    let mut killed_between = 0;
    let mut killed_during_export = 0;
    for run in 1..=30u32 {
        let mode = modes[run as usize % modes.len()];
        let writer = Writer::start(&dir, run, matches!(mode, KillAt::BetweenRenameAndCommit));
        let mut committed = 0u64;
        assert!(
            writer.wait_for("ready", &mut committed, Duration::from_secs(30)).is_some(),
            "run {run}: the writer did not start"
        );
        // The previous run's orphan was cleaned up when this one opened the store.
        for orphan in orphans_to_be_gone.drain(..) {
            assert!(!orphan.exists(), "run {run}: orphan {} survived the restart", orphan.display());
        }
        match mode {
            KillAt::Random => std::thread::sleep(Duration::from_millis(50 + rng.below(600))),
            KillAt::DuringExport => {
                std::thread::sleep(Duration::from_millis(rng.below(300)));
                if writer.wait_for("renamed ", &mut committed, Duration::from_secs(30)).is_some() {
                    killed_during_export += 1;
                }
                // The next file of this export, or the next export, is being written.
                std::thread::sleep(Duration::from_millis(rng.below(40)));
            }
            KillAt::BetweenRenameAndCommit => {
                std::thread::sleep(Duration::from_millis(rng.below(200)));
                let line = writer.wait_for("renamed ", &mut committed, Duration::from_secs(30));
                let path =
                    PathBuf::from(line.expect("an export renamed a file").trim_start_matches("renamed "));
                assert!(path.exists(), "the renamed file is in place while paused");
                orphans_to_be_gone.push(path);
                killed_between += 1;
            }
        }
        writer.kill(&mut committed);
        reported.insert(run, committed);
        // Whatever the moment, a reader never sees a partial file: every
        // `.parquet` listed by the manifest is complete (checked below), and
        // temporaries are dot-prefixed.
        for file in files_under(&dir.join("flows")) {
            let name = file.rsplit('/').next().unwrap_or(&file);
            assert!(name.ends_with(".parquet") || name.starts_with('.'), "unexpected file {file}");
        }
    }
    assert!(killed_between >= 8 && killed_during_export >= 6, "{killed_between} {killed_during_export}");

    // Restart once more (recovery), then check everything.
    let store = Store::open(&dir).expect("open after the last crash");
    for orphan in &orphans_to_be_gone {
        assert!(!orphan.exists(), "orphan {} survived", orphan.display());
    }
    let on_disk: Vec<String> =
        files_under(&dir.join("flows")).into_iter().map(|f| format!("flows/{f}")).collect();
    let mut listed: Vec<String> =
        store.cold_files(TimeRange::ALL).expect("manifest").into_iter().map(|f| f.relative).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "exactly the manifest's files are on disk: no temporary, no orphan");
    let status = store.status().expect("status");
    assert!(status.cold_files > 0 && status.hot_rows > 0, "both tiers were exercised: {status:?}");

    let mut by_run: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for batch in store.flows(TimeRange::ALL).expect("read both tiers") {
        for flow in flows_from_batch(&batch).expect("valid") {
            let run = u32::try_from(flow.cgroup_id).expect("run id");
            let index = ((flow.timestamp_ns - synthetic::BASE_NS) / 50_000_000) as u64;
            assert_eq!(
                flow,
                synthetic::indexed_flow(run, index),
                "stored flows are the generated ones, intact"
            );
            by_run.entry(run).or_default().push(index);
        }
    }
    for (run, reported) in &reported {
        let mut indices = by_run.remove(run).unwrap_or_default();
        indices.sort_unstable();
        let stored = indices.len() as u64;
        let distinct = {
            let mut d = indices.clone();
            d.dedup();
            d.len() as u64
        };
        assert_eq!(distinct, stored, "run {run}: duplicated flows");
        assert!(stored >= *reported, "run {run}: {reported} reported committed, only {stored} stored");
        // Commits are whole prefixes: flows 0..stored, nothing skipped.
        assert!(indices.iter().enumerate().all(|(i, &x)| i as u64 == x), "run {run}: a hole in the flows");
    }
    assert!(by_run.is_empty(), "flows of runs that never ran: {:?}", by_run.keys());
}

/// A data directory as flowsql 0.1 left it (schema version 2: a SQLite row
/// per hot flow, domain lists as JSON text), holding `count` hot flows of
/// synthetic run 9.
fn old_layout_data_dir(dir: &Path, count: u64) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut db = rusqlite::Connection::open(dir.join("flowsql.db")).expect("create the old database");
    db.execute_batch("PRAGMA page_size = 32768; PRAGMA journal_mode = WAL;").expect("pragmas");
    db.execute_batch(include_str!("../../migrations/0001_hot_tier.sql")).expect("0001");
    db.execute_batch(include_str!("../../migrations/0002_domains.sql")).expect("0002");
    db.execute_batch("PRAGMA user_version = 2").expect("version 2");
    let tx = db.transaction().expect("transaction");
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO flows (timestamp, id, connectionDirection, srcIP, dstIP, srcPort, dstPort,
                                    srcDomains, dstDomains, hostName, cgroupId)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .expect("prepare");
        let json = |names: &flowsql_event::DomainList| {
            serde_json::to_string(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("json")
        };
        for index in 0..count {
            let f = synthetic::indexed_flow(9, index);
            insert
                .execute(rusqlite::params![
                    f.timestamp_ns,
                    index as i64 + 1,
                    f.direction.as_str(),
                    f.src_ip.to_string(),
                    f.dst_ip.to_string(),
                    f.src_port,
                    f.dst_port,
                    json(&f.src_domains),
                    json(&f.dst_domains),
                    &*f.host_name,
                    f.cgroup_id as i64
                ])
                .expect("insert an old row");
        }
    }
    tx.execute("UPDATE flow_ids SET next = ?1", [count as i64 + 1]).expect("ids");
    tx.commit().expect("commit");
}

/// The schema version, and the flows the database holds by its own
/// account: old rows, hot batch rows, listed Parquet rows.
fn database_state(dir: &Path) -> (i64, u64) {
    let db = rusqlite::Connection::open(dir.join("flowsql.db")).expect("open");
    let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
    let count = |sql: &str| -> u64 { db.query_row(sql, [], |r| r.get::<_, i64>(0)).expect(sql) as u64 };
    let rows = if version < 3 {
        count("SELECT count(*) FROM flows")
    } else {
        count("SELECT coalesce(sum(rows), 0) FROM batches WHERE tableName = 'flows'")
            + count(
                "SELECT coalesce(sum(rows), 0) FROM exports WHERE state = 'complete' AND tableName = 'flows'",
            )
    };
    (version, rows)
}

#[test]
fn sigkill_during_the_upgrade_of_an_old_data_directory_keeps_every_flow_once() {
    let data = TempDir::new("upgrade-crash");
    let dir = data.path().join("data");
    let count = 200_000;
    old_layout_data_dir(&dir, count);
    assert_eq!(database_state(&dir), (2, count));
    // `flowsql export` upgrades the directory when it opens it, then moves
    // the flows to Parquet: kill it earlier and earlier... later and later,
    // until one run finishes by itself.
    let mut killed_during = 0;
    let mut killed_after = 0;
    let mut finished = false;
    for delay_ms in [5u64, 20, 60, 120, 200, 300, 450, 650, 900, 1300, 1800, 2500, 3500, 5000, 8000, 15000] {
        let mut child = Command::new(FLOWSQL)
            .args(["export", "--log-level", "info", "--data-dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("flowsql export starts");
        let stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let log = std::thread::spawn(move || stderr.lines().map_while(Result::ok).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().expect("poll").is_some() {
            finished = true;
            break;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let began = log.join().expect("log").iter().any(|l| l.contains("0003_batches"));
        // Either untouched or upgraded, with every flow, never in between.
        let (version, rows) = database_state(&dir);
        assert_eq!(rows, count, "killed after {delay_ms} ms: schema version {version}");
        match version {
            2 if began => killed_during += 1,
            2 => {}
            3 => killed_after += 1,
            other => panic!("schema version {other} after a kill"),
        }
    }
    assert!(killed_during >= 1, "no kill fell during the upgrade");
    eprintln!(
        "killed {killed_during} times during the upgrade, {killed_after} after it; finished: {finished}"
    );

    let store = Store::open(&dir).expect("open after the crashes");
    let mut indices: Vec<u64> = Vec::new();
    for batch in store.flows(TimeRange::ALL).expect("read both tiers") {
        for flow in flows_from_batch(&batch).expect("valid") {
            let index = ((flow.timestamp_ns - synthetic::BASE_NS) / 50_000_000) as u64;
            // Written before flowIds and attribution: 0 and not known.
            let old = flowsql_event::FlowBegin {
                flow_id: 0,
                attribution: flowsql_event::Attribution::default(),
                ..synthetic::indexed_flow(9, index)
            };
            assert_eq!(flow, old, "stored flows are the old ones, intact");
            indices.push(index);
        }
    }
    indices.sort_unstable();
    assert_eq!(indices, (0..count).collect::<Vec<_>>(), "every old flow exactly once");
}
