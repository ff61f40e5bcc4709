//! Flows through both tiers: round trips, the export protocol, recovery of
//! the cold tier, retention, copies for others, the writer thread.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use flowsql_event::FlowBegin;
use flowsql_store::cold::{self, HOUR_NS};
use flowsql_store::synthetic::{self, BASE_NS};
use flowsql_store::test_util::TempDir;
use flowsql_store::{
    ExportEvent, ExportOptions, RecordBatch, Store, StoreWriter, TimeRange, WriterConfig, batch_from_flows,
    flows_from_batch, flows_schema, flows_table,
};

fn rows(batches: &[RecordBatch]) -> Vec<FlowBegin> {
    batches.iter().flat_map(|b| flows_from_batch(b).expect("valid batch")).collect()
}

/// A canonical order for multiset comparisons.
fn sorted(mut flows: Vec<FlowBegin>) -> Vec<FlowBegin> {
    flows.sort_by(|a, b| {
        (a.timestamp_ns, a.cgroup_id, a.direction, a.src_ip, a.src_port, a.dst_ip, a.dst_port).cmp(&(
            b.timestamp_ns,
            b.cgroup_id,
            b.direction,
            b.src_ip,
            b.src_port,
            b.dst_ip,
            b.dst_port,
        ))
    });
    flows
}

fn test_flows() -> Vec<FlowBegin> {
    let mut flows = synthetic::edge_flows();
    flows.extend((0..2000).map(|i| synthetic::indexed_flow(1, i)));
    flows
}

/// A new store in `dir` holding `count` flows of synthetic run `run` in its
/// hot tier (50 ms apart: all in one hour for a few thousand), and the flows.
fn store_with_hot_flows(dir: &TempDir, run: u32, count: u64) -> (Store, Vec<FlowBegin>) {
    let mut store = Store::open(dir.path()).expect("open");
    let flows: Vec<_> = (0..count).map(|i| synthetic::indexed_flow(run, i)).collect();
    store.insert_flows(&batch_from_flows(&flows)).expect("insert");
    (store, flows)
}

fn export_all(store: &mut Store) -> flowsql_store::ExportReport {
    store.export(&ExportOptions::up_to(i64::MAX), &mut |_| {}).expect("export")
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn flows_round_trip_through_both_tiers() {
    let dir = TempDir::new("roundtrip");
    let flows = test_flows();
    let mut store = Store::open(dir.path()).expect("open");
    store.insert_flows(&batch_from_flows(&flows)).expect("insert");

    // Hot tier: identical rows, in time order.
    let hot = rows(&store.hot_flows(TimeRange::ALL).expect("hot read"));
    assert_eq!(sorted(hot.clone()), sorted(flows.clone()));
    assert!(hot.windows(2).all(|w| w[0].timestamp_ns <= w[1].timestamp_ns));

    // Cold tier: everything exported, one file per hour, nothing left hot.
    let report = export_all(&mut store);
    assert_eq!(report.rows, flows.len() as u64);
    assert_eq!(store.hot_flow_count(TimeRange::ALL).expect("count"), 0);
    let hours: std::collections::BTreeSet<_> =
        flows.iter().map(|f| cold::hour_start(f.timestamp_ns)).collect();
    assert_eq!(report.files.len(), hours.len());
    for file in &report.files {
        assert!(
            file.relative.starts_with(&format!("flows/{}/part-", cold::partition_name(file.partition_start)))
        );
        assert!(file.relative.ends_with(".parquet"));
        let batches = cold::read_file(flows_table(), &file.path).expect("read file");
        assert_eq!(batches[0].schema(), flows_schema());
        let in_file = rows(&batches);
        assert!(in_file.windows(2).all(|w| w[0].timestamp_ns <= w[1].timestamp_ns), "sorted by time");
        assert!(in_file.iter().all(|f| cold::hour_start(f.timestamp_ns) == file.partition_start));
    }
    let cold_rows = rows(&store.flows(TimeRange::ALL).expect("read both"));
    assert_eq!(sorted(cold_rows), sorted(flows.clone()));

    // The manifest lists exactly the files on disk.
    let listed: Vec<_> =
        store.cold_files(TimeRange::ALL).expect("list").into_iter().map(|f| f.path).collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, parquet_files(&dir.path().join("flows")));

    // A range reads only what is inside it, from the right files.
    let range = TimeRange::new(Some(BASE_NS), Some(BASE_NS + 10 * 50_000_000));
    let some = rows(&store.flows(range).expect("range"));
    let expected: Vec<_> = flows.iter().filter(|f| range.contains(f.timestamp_ns)).cloned().collect();
    assert_eq!(sorted(some), sorted(expected));

    // More rows later: in both tiers at once, and again after a reopen.
    let later: Vec<_> = (2000..2100).map(|i| synthetic::indexed_flow(1, i)).collect();
    store.insert_flows(&batch_from_flows(&later)).expect("insert");
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    let mut all = flows.clone();
    all.extend(later);
    assert_eq!(sorted(rows(&store.flows(TimeRange::ALL).expect("read"))), sorted(all));
}

#[test]
fn the_data_directory_is_private_to_owner_and_group() {
    let temp = TempDir::new("modes");
    // A directory the store creates itself.
    let dir = temp.path().join("data");
    let mut store = Store::open(&dir).expect("open");
    store.insert_flows(&batch_from_flows(&test_flows())).expect("insert");
    export_all(&mut store);
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o750);
    assert_eq!(mode(&dir.join("flowsql.db")), 0o640);
    assert_eq!(mode(&dir.join("flowsql.db-wal")), 0o640);
    for file in parquet_files(&dir.join("flows")) {
        assert_eq!(mode(&file), 0o640, "{}", file.display());
        assert_eq!(mode(file.parent().expect("hour dir")), 0o750);
    }
}

#[test]
fn an_export_takes_only_the_rows_that_existed_when_it_started() {
    let dir = TempDir::new("snapshot");
    let (mut store, first) = store_with_hot_flows(&dir, 1, 500);
    // While the export runs, another connection commits rows into the very
    // hour being exported; they must stay hot, not be deleted unexported.
    let late: Vec<_> = (0..300).map(|i| synthetic::indexed_flow(2, i)).collect();
    let mut other = Store::open(dir.path()).expect("second connection");
    let mut inserted = false;
    let report = store
        .export(&ExportOptions::up_to(i64::MAX), &mut |event| {
            // After the export fixed the rows it takes (before its delete
            // transaction holds the write lock).
            if let ExportEvent::Planned { .. } = event
                && !inserted
            {
                other.insert_flows(&batch_from_flows(&late)).expect("insert during export");
                inserted = true;
            }
        })
        .expect("export");
    assert!(inserted);
    assert_eq!(report.rows, 500);
    assert_eq!(sorted(rows(&store.hot_flows(TimeRange::ALL).expect("hot"))), sorted(late.clone()));
    let mut all = first;
    all.extend(late);
    assert_eq!(sorted(rows(&store.flows(TimeRange::ALL).expect("all"))), sorted(all));
}

#[test]
fn only_rows_before_the_cutoff_are_exported() {
    let dir = TempDir::new("cutoff");
    let mut store = Store::open(dir.path()).expect("open");
    let flows = test_flows();
    store.insert_flows(&batch_from_flows(&flows)).expect("insert");
    let cutoff = BASE_NS + 1000 * 50_000_000 + 1;
    let report = store.export(&ExportOptions::up_to(cutoff), &mut |_| {}).expect("export");
    assert_eq!(report.rows as usize, flows.iter().filter(|f| f.timestamp_ns < cutoff).count());
    let hot = rows(&store.hot_flows(TimeRange::ALL).expect("hot"));
    assert!(hot.iter().all(|f| f.timestamp_ns >= cutoff));
    assert_eq!(sorted(rows(&store.flows(TimeRange::ALL).expect("all"))), sorted(flows));
}

#[test]
fn a_large_hour_is_split_into_files_of_bounded_size() {
    let dir = TempDir::new("split");
    // 3000 flows 50 ms apart: 150 s, all in one hour.
    let (mut store, flows) = store_with_hot_flows(&dir, 4, 3000);
    let options = ExportOptions { max_file_rows: 700, ..ExportOptions::up_to(i64::MAX) };
    let report = store.export(&options, &mut |_| {}).expect("export");
    assert_eq!(report.files.len(), 5, "{:?}", report.files.iter().map(|f| f.rows).collect::<Vec<_>>());
    assert!(
        report.files.iter().all(|f| f.rows <= 700 && f.partition_start == report.files[0].partition_start)
    );
    assert_eq!(report.rows, 3000);
    assert_eq!(sorted(rows(&store.flows(TimeRange::ALL).expect("all"))), sorted(flows));
}

#[test]
fn an_interrupted_export_keeps_what_it_committed_and_leaves_the_rest_hot() {
    let dir = TempDir::new("interrupt");
    let (mut store, flows) = store_with_hot_flows(&dir, 5, 3000);
    let flag = Arc::new(AtomicBool::new(false));
    let options = ExportOptions {
        max_file_rows: 700,
        batch_rows: 100,
        interrupt: Some(Arc::clone(&flag)),
        ..ExportOptions::up_to(i64::MAX)
    };
    let hot_count = |store: &Store| store.hot_flow_count(TimeRange::ALL).expect("count");
    // An export that raises the flag at the first event `at` matches.
    let export_interrupted_at = |store: &mut Store, at: fn(&ExportEvent<'_>) -> bool| {
        flag.store(false, Ordering::Relaxed);
        let report = store
            .export(&options, &mut |event| {
                if at(&event) {
                    flag.store(true, Ordering::Relaxed);
                }
            })
            .expect("an interrupted export is not an error");
        assert!(report.interrupted);
        report
    };

    // Interrupted in the middle of its first file: nothing committed, no
    // file left behind, every row still hot.
    let report = export_interrupted_at(&mut store, |event| matches!(event, ExportEvent::Rows(_)));
    assert_eq!((report.files.len(), report.rows), (0, 0));
    assert_eq!(hot_count(&store), 3000);
    assert_eq!(parquet_files(&dir.path().join("flows")), Vec::<PathBuf>::new());

    // Interrupted after its first file: that file stays, the rest is hot.
    let report = export_interrupted_at(&mut store, |event| matches!(event, ExportEvent::Committed(_)));
    assert_eq!((report.files.len(), report.rows), (1, 700));
    assert_eq!(hot_count(&store), 2300);
    assert_eq!(parquet_files(&dir.path().join("flows")).len(), 1);
    assert_eq!(sorted(rows(&store.flows(TimeRange::ALL).expect("all"))), sorted(flows.clone()));

    // The next export takes the rest: every flow exactly once.
    flag.store(false, Ordering::Relaxed);
    let report = store.export(&options, &mut |_| {}).expect("export");
    assert!(!report.interrupted);
    assert_eq!(report.rows, 2300);
    assert_eq!(hot_count(&store), 0);
    assert_eq!(sorted(rows(&store.flows(TimeRange::ALL).expect("all"))), sorted(flows));
}

#[test]
fn concurrent_exporters_never_duplicate() {
    let dir = TempDir::new("concurrent");
    let flows = test_flows();
    Store::open(dir.path()).expect("open").insert_flows(&batch_from_flows(&flows)).expect("insert");
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let path = dir.path().to_owned();
            std::thread::spawn(move || {
                let mut store = Store::open(&path).expect("open");
                store.export(&ExportOptions::up_to(i64::MAX), &mut |_| {}).expect("export").rows
            })
        })
        .collect();
    let exported: u64 = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    assert_eq!(exported, flows.len() as u64);
    let store = Store::open(dir.path()).expect("open");
    assert_eq!(sorted(rows(&store.flows(TimeRange::ALL).expect("all"))), sorted(flows));
}

/// Writes an exported file's bytes somewhere else first, for tests that
/// need a copy of a valid file.
fn some_exported_file(store: &Store) -> flowsql_store::ColdFile {
    store.cold_files(TimeRange::ALL).expect("list").into_iter().next().expect("a file")
}

#[test]
fn recovery_removes_temporaries_and_orphans_and_adopts_foreign_files() {
    let dir = TempDir::new("recover");
    let flows = test_flows();
    let mut store = Store::open(dir.path()).expect("open");
    store.insert_flows(&batch_from_flows(&flows)).expect("insert");
    export_all(&mut store);
    let file = some_exported_file(&store);
    let hour_dir = file.path.parent().expect("hour dir").to_owned();

    // A temporary of an export that died while writing.
    let temp = hour_dir.join(".part-1-0.parquet.tmp");
    std::fs::write(&temp, b"half a file").expect("write temp");
    // An orphan: renamed into place, died before the manifest commit (its
    // rows would still be hot). Same store id, not in the manifest.
    let orphan = hour_dir.join("part-2-0.parquet");
    std::fs::copy(&file.path, &orphan).expect("copy");
    // A file from another store (another host): adopted.
    let foreign_dir = dir.path().join("flows").join(cold::partition_name(BASE_NS + 100 * HOUR_NS));
    std::fs::create_dir_all(&foreign_dir).expect("mkdir");
    let foreign = foreign_dir.join("part-from-elsewhere.parquet");
    let foreign_flows: Vec<_> = (0..10)
        .map(|i| synthetic::indexed_flow(9, i))
        .map(|mut f| {
            f.timestamp_ns += 100 * HOUR_NS;
            f
        })
        .collect();
    let mut pending =
        cold::PendingFile::create(flows_table(), &foreign_dir, "part-from-elsewhere.parquet", Vec::new())
            .expect("create");
    pending.write(&batch_from_flows(&foreign_flows)).expect("write");
    pending.finish().expect("finish");
    drop(store);

    let mut store = Store::open(dir.path()).expect("reopen recovers");
    assert!(!temp.exists(), "temporary deleted");
    assert!(!orphan.exists(), "orphan deleted");
    assert!(foreign.exists(), "foreign file kept");
    let mut expected = flows.clone();
    expected.extend(foreign_flows);
    assert_eq!(sorted(rows(&store.flows(TimeRange::ALL).expect("all"))), sorted(expected), "no double count");
    let report = store.recover(true).expect("recover again");
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn a_corrupt_file_is_reported_by_name_and_quarantined() {
    let dir = TempDir::new("corrupt");
    let flows = test_flows();
    let mut store = Store::open(dir.path()).expect("open");
    store.insert_flows(&batch_from_flows(&flows)).expect("insert");
    export_all(&mut store);
    let files = store.cold_files(TimeRange::ALL).expect("list");
    let (bad, good) = (&files[0], &files[1]);
    // Same size, footer destroyed.
    let mut bytes = std::fs::read(&bad.path).expect("read");
    let n = bytes.len();
    bytes[n - 100..n - 8].fill(0xAB);
    std::fs::write(&bad.path, &bytes).expect("corrupt");
    // Another one truncated.
    let file = std::fs::OpenOptions::new().write(true).open(&good.path).expect("open");
    file.set_len(good.bytes / 2).expect("truncate");
    drop(store);

    let mut store = Store::open_without_recovery(dir.path()).expect("open");
    let report = store.recover(true).expect("recover");
    let quarantined: Vec<_> = report.quarantined.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(quarantined.len(), 2, "{report:?}");
    assert!(
        quarantined.contains(&bad.path) && quarantined.contains(&good.path),
        "reported by name: {report:?}"
    );
    assert!(!bad.path.exists() && !good.path.exists());
    let in_quarantine = std::fs::read_dir(dir.path().join("quarantine")).expect("quarantine dir").count();
    assert_eq!(in_quarantine, 2);
    // Never read: the remaining rows are everything but those two files'.
    let remaining = rows(&store.flows(TimeRange::ALL).expect("all"));
    assert_eq!(remaining.len() as u64, flows.len() as u64 - bad.rows - good.rows);
    let status = store.status().expect("status");
    assert_eq!(status.quarantined_files, 2);
    assert_eq!(status.cold_files, files.len() as u64 - 2);
}

#[test]
fn retention_drops_old_partitions_and_never_hot_rows() {
    let dir = TempDir::new("retain");
    let mut store = Store::open(dir.path()).expect("open");
    let flows = test_flows();
    store.insert_flows(&batch_from_flows(&flows)).expect("insert");
    export_all(&mut store);
    // Old rows that were never exported stay hot whatever their age.
    let unexported: Vec<_> = synthetic::edge_flows();
    store.insert_flows(&batch_from_flows(&unexported)).expect("insert");
    let now = BASE_NS + 26 * HOUR_NS;
    let report = store.apply_retention(Duration::from_secs(2 * 3600), now).expect("retention");
    // Partitions ending at or before now - 2h = BASE + 24h are gone.
    assert!(!report.partitions.is_empty());
    let kept = rows(&store.flows(TimeRange::ALL).expect("all"));
    let cold_kept: Vec<_> = flows
        .iter()
        .filter(|f| cold::hour_start(f.timestamp_ns) + HOUR_NS > now - 2 * HOUR_NS)
        .cloned()
        .collect();
    let mut expected = cold_kept;
    expected.extend(unexported);
    assert_eq!(sorted(kept), sorted(expected));
    for file in parquet_files(&dir.path().join("flows")) {
        let start = store.cold_files(TimeRange::ALL).expect("list").iter().any(|f| f.path == file);
        assert!(start, "every file left is listed: {}", file.display());
    }
    assert_eq!(store.hot_flow_count(TimeRange::ALL).expect("count"), synthetic::edge_flows().len() as u64);
}

#[test]
fn export_to_copies_a_time_range_from_both_tiers() {
    let dir = TempDir::new("exportto");
    let dest = TempDir::new("exportto-dest");
    let mut store = Store::open(dir.path()).expect("open");
    let flows = test_flows();
    let (first, second) = flows.split_at(1000);
    store.insert_flows(&batch_from_flows(first)).expect("insert");
    export_all(&mut store);
    store.insert_flows(&batch_from_flows(second)).expect("insert");
    let range = TimeRange::new(Some(BASE_NS), Some(BASE_NS + 1500 * 50_000_000));
    let report = store.export_to(dest.path(), range, &mut |_| {}).expect("export to");
    let expected: Vec<_> = flows.iter().filter(|f| range.contains(f.timestamp_ns)).cloned().collect();
    assert_eq!(report.rows as usize, expected.len());
    let mut copied = Vec::new();
    for file in parquet_files(dest.path()) {
        let relative = file.strip_prefix(dest.path()).expect("inside").to_string_lossy().into_owned();
        assert!(relative.starts_with("date=") && relative.contains("/hour="), "{relative}");
        let in_file = rows(&cold::read_file(flows_table(), &file).expect("read"));
        assert!(in_file.windows(2).all(|w| w[0].timestamp_ns <= w[1].timestamp_ns), "sorted");
        copied.extend(in_file);
    }
    assert_eq!(sorted(copied), sorted(expected));
    // The store itself is unchanged.
    assert_eq!(sorted(rows(&store.flows(TimeRange::ALL).expect("all"))), sorted(flows));
    // A destination that has files is refused.
    assert!(store.export_to(dest.path(), range, &mut |_| {}).is_err());
}

#[test]
fn the_writer_commits_batches_and_records_its_counters() {
    let dir = TempDir::new("writer");
    let flows = test_flows();
    let commits = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&commits);
    let config = WriterConfig {
        batch_rows: 300,
        batch_age: Duration::from_millis(50),
        on_commit: Some(Arc::new(move |total| seen.lock().expect("lock").push(total))),
        ..WriterConfig::default()
    };
    let writer = StoreWriter::spawn(dir.path(), config).expect("spawn");
    for flow in &flows[..1000] {
        writer.send_blocking(flow.clone());
    }
    writer.flush();
    assert_eq!(writer.counters().rows_stored, 1000);
    // A row waits at most batch_age.
    writer.send_blocking(flows[1000].clone());
    let store = Store::open(dir.path()).expect("open");
    let appeared = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        store.hot_flow_count(TimeRange::ALL).expect("count") == 1001
    });
    assert!(appeared, "committed by age");
    writer.set_capture_counters(flowsql_store::CaptureCounters {
        events: 1234,
        lost: 5,
        counters: BTreeMap::from([("synackDuplicates".to_owned(), 7)]),
    });
    let done = writer.finish();
    assert_eq!(done.rows_stored, 1001);
    assert_eq!(done.rows_not_stored, 0);
    let commits = commits.lock().expect("lock").clone();
    assert!(commits.windows(2).all(|w| w[0] < w[1]) && commits.last() == Some(&1001), "{commits:?}");
    let status = store.status().expect("status");
    let latest = status.capture.latest.expect("a session");
    assert_eq!((latest.events, latest.lost, latest.rows_stored), (1234, 5, 1001));
    assert_eq!(latest.counters.get("synackDuplicates"), Some(&7));
    assert_eq!(status.hot_rows, 1001);
}

#[test]
fn domains_go_in_the_writers_transactions_with_the_flows() {
    let dir = TempDir::new("domains");
    let writer = StoreWriter::spawn(dir.path(), WriterConfig::default()).expect("spawn");
    let observation = |ip: &str, name: &str, seen_ns: i64| flowsql_event::DomainObservation {
        ip: ip.parse().expect("ip"),
        name: name.into(),
        question: name.into(),
        seen_ns,
        expires_ns: seen_ns + 60_000_000_000,
    };
    assert!(writer.record_domains(vec![observation("192.0.2.1", "a.example", BASE_NS)]));
    writer.send_blocking(synthetic::indexed_flow(1, 1));
    assert!(writer.record_domains(vec![observation("2001:db8::1", "b.example", BASE_NS + 1)]));
    assert!(writer.record_domains(Vec::new()), "nothing to record is not a refusal");
    let done = writer.finish();
    assert_eq!(done.domains_not_stored, 0);
    let store = Store::open(dir.path()).expect("open");
    let domains = store.domains(TimeRange::ALL).expect("domains");
    assert_eq!(domains.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
    assert_eq!(store.hot_flow_count(TimeRange::ALL).expect("count"), 1);
    let valid = store.domains_valid_at(BASE_NS + 30_000_000_000).expect("valid");
    assert_eq!(valid.len(), 2);
}

/// Another connection on `dir`'s database that takes the write lock and
/// keeps it until told to commit.
fn hold_write_lock(dir: &Path) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let db = dir.join("flowsql.db");
    let (locked_tx, locked_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).expect("second connection");
        conn.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
        locked_tx.send(()).expect("tell");
        let _ = release_rx.recv();
        conn.execute_batch("COMMIT").expect("release the write lock");
    });
    locked_rx.recv().expect("the lock is taken");
    (release_tx, holder)
}

#[test]
fn the_writer_waits_out_a_locked_database_and_loses_nothing() {
    let dir = TempDir::new("locked");
    let config =
        WriterConfig { batch_rows: 200, batch_age: Duration::from_millis(20), ..WriterConfig::default() };
    let writer = StoreWriter::spawn(dir.path(), config).expect("spawn");
    writer.send_blocking(synthetic::indexed_flow(1, 0));
    writer.flush();
    let store = Store::open(dir.path()).expect("open");

    // For about 2 s (ten times the writer's own wait for the lock), another
    // connection holds an IMMEDIATE transaction while flows keep coming.
    let (release, holder) = hold_write_lock(dir.path());
    let locked_at = Instant::now();
    let mut sent = 1;
    while locked_at.elapsed() < Duration::from_millis(1800) {
        for _ in 0..50 {
            assert!(writer.send(synthetic::indexed_flow(1, sent)), "flow {sent} refused");
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(store.hot_flow_count(TimeRange::ALL).expect("count"), 1, "nothing committed while locked");
    std::thread::sleep(Duration::from_millis(2000).saturating_sub(locked_at.elapsed()));
    release.send(()).expect("release");
    holder.join().expect("holder");

    writer.flush();
    let done = writer.finish();
    assert_eq!(done.rows_received, sent);
    assert_eq!(done.rows_stored, sent, "{done:?}");
    assert_eq!(done.rows_not_stored, 0, "{done:?}");
    assert_eq!(done.store_failures, 0, "{done:?}");
    assert!(done.busy_retries > 0, "the writer found the database locked and tried again: {done:?}");
    let stored = sorted(rows(&store.flows(TimeRange::ALL).expect("read")));
    assert_eq!(stored, sorted((0..sent).map(|i| synthetic::indexed_flow(1, i)).collect()), "each flow once");
    let latest = store.status().expect("status").capture.latest.expect("a session");
    assert_eq!((latest.rows_stored, latest.rows_not_stored), (sent, 0));
}

#[test]
fn a_database_locked_beyond_the_bound_loses_counted_rows_and_writing_resumes() {
    let dir = TempDir::new("lockedlong");
    let config = WriterConfig {
        batch_rows: 100,
        batch_age: Duration::from_millis(20),
        busy_retry_for: Duration::from_millis(300),
        ..WriterConfig::default()
    };
    let writer = StoreWriter::spawn(dir.path(), config).expect("spawn");
    writer.send_blocking(synthetic::indexed_flow(1, 0));
    writer.flush();
    let (release, holder) = hold_write_lock(dir.path());
    for i in 1..=300 {
        writer.send_blocking(synthetic::indexed_flow(1, i));
    }
    writer.flush();
    let locked = writer.counters();
    assert_eq!(locked.rows_stored, 1, "{locked:?}");
    assert_eq!(locked.rows_not_stored, 300, "counted as loss after the bound: {locked:?}");
    assert!(locked.store_failures > 0 && locked.busy_retries > 0, "{locked:?}");
    release.send(()).expect("release");
    holder.join().expect("holder");
    for i in 301..=400 {
        writer.send_blocking(synthetic::indexed_flow(1, i));
    }
    let done = writer.finish();
    assert_eq!(done.rows_stored, 101, "writing resumed: {done:?}");
    assert_eq!(done.rows_stored + done.rows_not_stored, done.rows_received);
}

#[test]
fn beyond_the_backlog_bound_flows_are_counted_as_not_stored() {
    let dir = TempDir::new("backlog");
    let config = WriterConfig {
        batch_rows: 100,
        batch_age: Duration::from_millis(20),
        channel_capacity: 500,
        ..WriterConfig::default()
    };
    let writer = StoreWriter::spawn(dir.path(), config).expect("spawn");
    writer.send_blocking(synthetic::indexed_flow(1, 0));
    writer.flush();
    let (release, holder) = hold_write_lock(dir.path());
    // The writer is stuck on its first batch of 100; 500 more may wait.
    let accepted = (1..=2000).filter(|&i| writer.send(synthetic::indexed_flow(1, i))).count() as u64;
    assert!(writer.backlog() <= 500, "{}", writer.backlog());
    assert!((500..=600).contains(&accepted), "{accepted}");
    release.send(()).expect("release");
    holder.join().expect("holder");
    let done = writer.finish();
    assert_eq!(done.rows_received, 2001);
    assert_eq!(done.rows_stored, 1 + accepted, "{done:?}");
    assert_eq!(done.rows_not_stored, 2000 - accepted, "{done:?}");
}

#[test]
fn an_export_does_not_hold_the_write_lock_while_it_writes_its_file() {
    let dir = TempDir::new("shortlock");
    let mut store = Store::open(dir.path()).expect("open");
    let flows: Vec<_> = (0..3000).map(|i| synthetic::indexed_flow(1, i)).collect();
    store.insert_flows(&batch_from_flows(&flows)).expect("insert");
    let other = rusqlite::Connection::open(dir.path().join("flowsql.db")).expect("connection");
    // No waiting: a write fails at once if the export holds the lock.
    other.busy_timeout(Duration::ZERO).expect("no busy wait");
    let mut writes = Vec::new();
    let options = ExportOptions { batch_rows: 500, ..ExportOptions::up_to(i64::MAX) };
    let report = store
        .export(&options, &mut |event| {
            let moment = match event {
                ExportEvent::Rows(_) => "while reading and encoding",
                ExportEvent::Renamed(_) => "after the rename",
                _ => return,
            };
            let result = other.execute_batch(
                "BEGIN IMMEDIATE; INSERT INTO store_state (key, value) VALUES ('probe', 'x')
                 ON CONFLICT (key) DO UPDATE SET value = value || 'x'; COMMIT;",
            );
            writes.push((moment, result.map_err(|e| e.to_string())));
        })
        .expect("export");
    assert_eq!(report.rows, 3000);
    assert!(writes.len() >= 6, "{writes:?}");
    assert!(writes.iter().all(|(_, r)| r.is_ok()), "another connection could write all along: {writes:?}");
    assert_eq!(store.hot_flow_count(TimeRange::ALL).expect("count"), 0);
}
