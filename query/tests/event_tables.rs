//! The store keeps any event table it is given, with no code of its own:
//! a table declared here (its Arrow schema and time column, nothing else)
//! goes through ingest, SQL, export, crash recovery and retention; and
//! flows with 0, 1 and 32 names come back exactly through every tier.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, ListArray, RecordBatch, StringArray, TimestampNanosecondArray,
    UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use flowsql_event::{Direction, DomainList, DomainName, FlowBegin};
use flowsql_query::{Session, SessionOptions};
use flowsql_store::cold::HOUR_NS;
use flowsql_store::synthetic::BASE_NS;
use flowsql_store::test_util::TempDir;
use flowsql_store::{EventTable, ExportOptions, Store, StoreWriter, TimeRange, WriterConfig, event_tables};

/// A table flowsql does not have: probes, timed by `at`.
fn probes() -> EventTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "at",
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("target", DataType::Utf8, false),
        Field::new("latencyMicros", DataType::UInt64, false),
    ]));
    EventTable::new("probes", schema, "at").expect("a valid table")
}

/// `count` probes, 10 minutes apart from `start` (several hourly partitions).
fn probe_batch(table: &EventTable, start: i64, count: u64) -> RecordBatch {
    let at: Vec<i64> = (0..count as i64).map(|i| start + i * 600_000_000_000).collect();
    let targets: Vec<String> = (0..count).map(|i| format!("t{}.example", i % 3)).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampNanosecondArray::from(at).with_timezone("UTC")),
        Arc::new(StringArray::from(targets)),
        Arc::new(UInt64Array::from((0..count).collect::<Vec<_>>())),
    ];
    RecordBatch::try_new(Arc::clone(table.schema()), columns).expect("batch")
}

async fn count(session: &Session, sql: &str) -> i64 {
    let batches = session.sql(sql).await.expect("query");
    batches[0].column(0).as_any().downcast_ref::<Int64Array>().expect("a count").value(0)
}

fn tables_with_probes() -> Vec<EventTable> {
    let mut tables = event_tables();
    tables.push(probes());
    tables
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn a_second_event_table_goes_through_every_tier_with_no_code_of_its_own() {
    let dir = TempDir::new("query-probes");
    let table = probes();
    // Ingest, through the capture's writer.
    Store::open_with_tables(dir.path(), tables_with_probes()).expect("store");
    let writer = StoreWriter::spawn(dir.path(), WriterConfig::default()).expect("writer");
    writer.send_batch(&table, probe_batch(&table, BASE_NS, 30));
    writer.send_batch(&table, probe_batch(&table, BASE_NS + 5, 30));
    let done = writer.finish();
    assert_eq!((done.rows_stored, done.rows_not_stored), (60, 0));

    // SQL over the hot tier.
    let options = || SessionOptions { event_tables: tables_with_probes(), ..SessionOptions::new(dir.path()) };
    let session = Session::open(options()).expect("session");
    assert_eq!(count(&session, "SELECT count(*) FROM probes").await, 60);
    assert_eq!(count(&session, "SELECT count(*) FROM probes WHERE target = 't1.example'").await, 20);

    // Export: one file per hour under probes/date=.../hour=.../.
    let mut store = Store::open_with_tables(dir.path(), tables_with_probes()).expect("store");
    let cutoff = BASE_NS + 3 * HOUR_NS;
    let report = store.export(&ExportOptions::up_to(cutoff), &mut |_| {}).expect("export");
    assert_eq!(report.rows, 36, "the probes of the first three hours");
    assert!(
        report.files.iter().all(|f| f.relative.starts_with("probes/date=2026-01-01/hour=0")),
        "{:?}",
        report.files
    );
    assert_eq!(store.hot_row_count("probes", TimeRange::ALL).expect("hot"), 24);
    assert_eq!(count(&session, "SELECT count(*) FROM probes").await, 60, "each row once across the tiers");
    assert_eq!(
        count(&session, "SELECT count(*) FROM probes WHERE at < TIMESTAMP '2026-01-01T01:00:00Z'").await,
        12
    );

    // Crash recovery: the leftovers of an export that died before its
    // manifest commit (a temporary, and a renamed file of this store).
    let hour_dir = report.files[0].path.parent().expect("hour dir").to_owned();
    let temporary = hour_dir.join(".part-9-9.parquet.tmp");
    std::fs::write(&temporary, b"half a file").expect("temporary");
    let orphan = hour_dir.join("part-9-9.parquet");
    std::fs::copy(&report.files[0].path, &orphan).expect("orphan");
    drop(store);
    let mut store = Store::open_with_tables(dir.path(), tables_with_probes()).expect("reopen recovers");
    assert!(!temporary.exists() && !orphan.exists(), "leftovers removed");
    assert_eq!(count(&session, "SELECT count(*) FROM probes").await, 60, "no row counted twice");

    // Retention: the first two hours' partitions go, nothing hot.
    let removed = store.apply_retention(Duration::from_secs(3600), BASE_NS + 3 * HOUR_NS).expect("retention");
    assert_eq!(removed.rows, 24, "{removed:?}");
    assert!(removed.partitions.iter().all(|p| p.starts_with("probes/")), "{:?}", removed.partitions);
    assert_eq!(count(&session, "SELECT count(*) FROM probes").await, 36);
    assert_eq!(
        store.hot_row_count("probes", TimeRange::ALL).expect("hot"),
        24,
        "hot rows never retained away"
    );
    let left: Vec<_> = files_under(&dir.path().join("probes"));
    assert_eq!(left.len(), 1, "{left:?}");
    // flows, untouched, still queryable beside it.
    assert_eq!(count(&session, "SELECT count(*) FROM flows").await, 0);
}

/// A flow to `dst` with `names` destination names.
fn flow(i: u16, names: &DomainList) -> FlowBegin {
    FlowBegin {
        timestamp_ns: BASE_NS + i64::from(i) * 1_000_000,
        direction: Direction::Outgoing,
        src_ip: "10.0.0.1".parse().expect("ip"),
        dst_ip: format!("192.0.2.{}", i % 3).parse().expect("ip"),
        src_port: 40_000 + i,
        dst_port: 443,
        src_domains: DomainList::default(),
        dst_domains: Arc::clone(names),
        cgroup_id: 7,
        host_name: "h".into(),
        flow_id: 0,
        attribution: flowsql_event::Attribution::default(),
    }
}

/// `(srcPort, dstDomains)` of every flow, by SQL.
async fn names_by_sql(session: &Session) -> Vec<(u16, Vec<String>)> {
    let batches = session.sql("SELECT srcPort, dstDomains FROM flows ORDER BY srcPort").await.expect("query");
    let mut out = Vec::new();
    for batch in &batches {
        let ports = batch.column(0).as_primitive::<datafusion::arrow::datatypes::UInt16Type>();
        let lists: &ListArray = batch.column(1).as_list::<i32>();
        for row in 0..batch.num_rows() {
            let names = lists.value(row);
            let names: Vec<String> =
                names.as_string::<i32>().iter().map(|n| n.expect("a name").to_owned()).collect();
            out.push((ports.value(row), names));
        }
    }
    out
}

#[tokio::test]
async fn flows_with_0_1_and_32_names_come_back_exactly_from_every_tier() {
    let dir = TempDir::new("query-names");
    let none = DomainList::default();
    let one: DomainList = vec![DomainName::from("one.example")].into();
    let many: DomainList =
        (0..32).map(|i| DomainName::from(format!("n{i:02}.cdn.example").as_str())).collect();
    let lists = [&none, &one, &many];
    let flows: Vec<FlowBegin> = (0..300u16).map(|i| flow(i, lists[usize::from(i) % 3])).collect();
    let expected: Vec<(u16, Vec<String>)> =
        flows.iter().map(|f| (f.src_port, f.dst_domains.iter().map(|n| n.to_string()).collect())).collect();
    let mut store = Store::open(dir.path()).expect("store");
    // Through the writer's batches (shared lists stored once) into the hot tier.
    let writer = StoreWriter::spawn(dir.path(), WriterConfig::default()).expect("writer");
    for flow in &flows {
        writer.send_blocking(flow.clone());
    }
    writer.finish();
    let session = Session::open(SessionOptions::new(dir.path())).expect("session");
    assert_eq!(names_by_sql(&session).await, expected, "hot tier");
    assert_eq!(count(&session, "SELECT count(*) FROM flows WHERE cardinality(dstDomains) = 32").await, 100);
    assert_eq!(
        count(&session, "SELECT count(*) FROM flows WHERE array_has(dstDomains, 'n31.cdn.example')").await,
        100
    );
    // Half to Parquet: both tiers at once, then all of it.
    store.export(&ExportOptions::up_to(flows[150].timestamp_ns), &mut |_| {}).expect("export");
    assert_eq!(names_by_sql(&session).await, expected, "both tiers");
    store.export(&ExportOptions::up_to(i64::MAX), &mut |_| {}).expect("export");
    assert_eq!(store.hot_flow_count(TimeRange::ALL).expect("hot"), 0);
    assert_eq!(names_by_sql(&session).await, expected, "Parquet");
    // And through the store's own read, as records.
    let back: Vec<FlowBegin> = store
        .flows(TimeRange::ALL)
        .expect("read")
        .iter()
        .flat_map(|b| flowsql_store::flows_from_batch(b).expect("valid"))
        .collect();
    let mut sorted = back.clone();
    sorted.sort_by_key(|f| f.src_port);
    assert_eq!(sorted, flows);
}
