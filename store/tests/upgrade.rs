//! A data directory written by flowsql 0.1 (a SQLite row per hot flow, see
//! `fixtures/datadir-0.1/README.md`) opens with this version and keeps every
//! flow, exactly once: the hot rows become batches, the exported files stay
//! as they are, the manifest, domains and counters with them.

use std::path::{Path, PathBuf};

use flowsql_store::test_util::TempDir;
use flowsql_store::{Store, StoreError, TimeRange, flows_from_batch};

/// A copy of the fixture in a directory of its own, removed on drop.
struct Copy {
    _temp: TempDir,
    dir: PathBuf,
}

impl Copy {
    fn of_fixture(tag: &str) -> Copy {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datadir-0.1");
        let temp = TempDir::new(&format!("upgrade-{tag}"));
        let dir = temp.path().join("data");
        copy_dir(&from, &dir);
        Copy { _temp: temp, dir }
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Every flow of the store, as the JSON lines `flowsql capture --json`
/// prints, sorted.
fn stored_lines(store: &Store) -> Vec<String> {
    let mut lines: Vec<String> = store
        .flows(TimeRange::ALL)
        .expect("read flows")
        .iter()
        .flat_map(|b| flows_from_batch(b).expect("valid batch"))
        .map(|f| serde_json::to_string(&f).expect("json"))
        .collect();
    lines.sort();
    lines
}

/// The fixture's flows as flowsql 0.1 printed them, with the columns added
/// since as they read for rows stored before them: flowId 0, the process
/// not known.
fn expected_lines(dir: &Path) -> Vec<String> {
    const ADDED: &str = r#","flowId":0,"processId":null,"processName":"","userId":null,"executable":"","cgroupPath":"","containerId":""}"#;
    let text = std::fs::read_to_string(dir.join("expected.ndjson")).expect("expected.ndjson");
    let mut lines: Vec<String> = text
        .lines()
        .map(|line| format!("{}{ADDED}", line.strip_suffix('}').expect("a JSON object")))
        .collect();
    lines.sort();
    lines
}

#[test]
fn an_old_data_directory_upgrades_in_place_keeping_every_flow_once() {
    let dir = Copy::of_fixture("keep");
    let expected = expected_lines(dir.path());
    assert_eq!(expected.len(), 307);

    // A reader cannot upgrade: it says what to do, and changes nothing.
    let err = Store::open_read_only(dir.path()).expect_err("an old schema");
    assert!(matches!(err, StoreError::SchemaTooOld { found: 2, .. }), "{err}");

    let store = Store::open(dir.path()).expect("the upgrade");
    let status = store.status().expect("status");
    assert_eq!((status.hot_rows, status.cold_rows, status.cold_files), (104, 203, 2), "{status:?}");
    assert!(status.hot_batches >= 1);
    assert_eq!(stored_lines(&store), expected, "every flow, once, with its names (0, 1 or 32)");
    // What else the old store held is still there.
    let domains = store.domains(TimeRange::ALL).expect("domains");
    assert_eq!(domains.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    assert_eq!(store.capture_stats().expect("capture_stats").num_rows(), 1);
    assert_eq!(status.capture.sessions, 1);
    drop(store);

    // Opening again changes nothing; a reader now opens it.
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(stored_lines(&store), expected);
    let reader = Store::open_read_only(dir.path()).expect("read-only");
    assert_eq!(stored_lines(&reader), expected);
    // The old row-per-flow tables are gone from the database.
    let db = rusqlite::Connection::open(dir.path().join("flowsql.db")).expect("sqlite");
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("names");
    assert!(!tables.iter().any(|t| t == "flows" || t == "flow_ids"), "{tables:?}");
}

#[test]
fn an_upgraded_directory_exports_its_old_hot_rows_once() {
    let dir = Copy::of_fixture("export");
    let expected = expected_lines(dir.path());
    let mut store = Store::open(dir.path()).expect("the upgrade");
    let report = store.export(&flowsql_store::ExportOptions::up_to(i64::MAX), &mut |_| {}).expect("export");
    assert_eq!(report.rows, 104);
    let status = store.status().expect("status");
    assert_eq!((status.hot_rows, status.cold_rows), (0, 307));
    assert_eq!(stored_lines(&store), expected);
}
