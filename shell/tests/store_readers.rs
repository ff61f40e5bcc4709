//! Independent readers: the Parquet that `flowsql export` writes (the cold
//! tier as it is, and a `--to` copy) is read by pyarrow, pandas, polars,
//! DuckDB, ClickHouse (chdb) and Spark 4 (pyspark in local mode, on Debian's
//! OpenJDK 17), all installed by `.ci/run` (`.ci/requirements.txt`), with
//! no engine-specific flag, and their results are checked value by value
//! against what `flowsql query` prints for the same rows: exact column names
//! and types, `timestamp` in UTC to the microsecond, ports above 32767,
//! 64-bit ids, empty and 32-name lists, and the hive partition columns
//! `date` and `hour`. Spark starts once for the whole file.

use std::path::Path;
use std::process::Command;

use flowsql_event::FlowBegin;
use flowsql_store::batch_from_flows;
use flowsql_store::synthetic::{self, BASE_NS};
use flowsql_store::{Store, cold};
use flowsql_tests::TempDir;
use serde_json::{Value, json};

const FLOWSQL: &str = env!("CARGO_BIN_EXE_flowsql");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/parquet_readers.py");

fn flows() -> Vec<FlowBegin> {
    let mut flows = synthetic::edge_flows();
    flows.extend((0..200).map(|i| synthetic::indexed_flow(1, i)));
    // A CDN address with 32 names, the most the name cache keeps.
    let mut cdn = synthetic::indexed_flow(2, 7);
    let names: Vec<String> = (0..32).map(|i| format!("edge{i}.cdn.example")).collect();
    cdn.dst_domains = names.iter().map(|n| n.as_str().into()).collect();
    cdn.dst_port = 32768;
    cdn.src_port = 65535;
    flows.push(cdn);
    flows
}

fn flowsql(args: &[&str]) -> String {
    let output = Command::new(FLOWSQL).args(args).output().expect("flowsql runs");
    assert!(output.status.success(), "flowsql {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// What the readers print for each of `datasets` (one run: Spark starts
/// once).
fn read_with_python(datasets: &[&Path]) -> Vec<Value> {
    let output = Command::new("python3")
        .arg(SCRIPT)
        .args(datasets)
        .output()
        .unwrap_or_else(|e| panic!("python3 must be installed (.ci/run installs it): {e}"));
    assert!(
        output.status.success(),
        "the readers failed (pip install -r .ci/requirements.txt):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).expect("the script prints JSON");
    assert_eq!(results.len(), datasets.len());
    results
}

/// Every row of `flows` as `flowsql query --format ndjson` prints it,
/// normalized as the readers' rows are (time as ns), without the
/// partition columns.
fn flowsql_rows(dir: &Path) -> Vec<Value> {
    let out = flowsql(&[
        "query",
        "--data-dir",
        dir.to_str().expect("UTF-8"),
        "--format",
        "ndjson",
        "SELECT * FROM flows",
    ]);
    out.lines()
        .map(|line| {
            let mut row: Value = serde_json::from_str(line).expect("JSON row");
            let text = row["timestamp"].as_str().expect("a time as text").to_owned();
            let ns = chrono::DateTime::parse_from_rfc3339(&text).expect("RFC 3339").timestamp_nanos_opt();
            row["timestamp"] = json!(ns.expect("in range"));
            row
        })
        .collect()
}

/// `rows` without the partition columns.
fn without_partitions(rows: &Value) -> Vec<Value> {
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let object = r.as_object_mut().expect("object");
            object.remove("date");
            object.remove("hour");
            r
        })
        .collect()
}

/// The rows a reader should see, normalized as the script does; `hour` is
/// an integer, or the directory's text for readers that keep it as text.
fn expected_rows(flows: &[FlowBegin], hour_as_text: bool) -> Value {
    let mut rows: Vec<Value> = flows
        .iter()
        .map(|f| {
            let partition = cold::partition_name(cold::hour_start(f.timestamp_ns));
            let (date, hour) = partition.split_once('/').expect("date/hour");
            let date = date.trim_start_matches("date=");
            let hour_text = hour.trim_start_matches("hour=");
            let hour: Value =
                if hour_as_text { json!(hour_text) } else { json!(hour_text.parse::<u32>().expect("hour")) };
            json!({
                "timestamp": f.timestamp_ns,
                "connectionDirection": f.direction.as_str(),
                "srcIP": f.src_ip.to_string(),
                "dstIP": f.dst_ip.to_string(),
                "srcPort": f.src_port,
                "dstPort": f.dst_port,
                "srcDomains": f.src_domains.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                "dstDomains": f.dst_domains.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                "hostName": &*f.host_name,
                "cgroupId": f.cgroup_id,
                "flowId": f.flow_id,
                "processId": f.attribution.process_id,
                "processName": &*f.attribution.process_name,
                "userId": f.attribution.user_id,
                "executable": &*f.attribution.executable,
                "cgroupPath": &*f.attribution.cgroup_path,
                "containerId": &*f.attribution.container_id,
                "date": date,
                "hour": hour,
            })
        })
        .collect();
    rows.sort_by_key(row_key);
    Value::Array(rows)
}

/// The order the script sorts rows in.
fn row_key(v: &Value) -> (i64, String, u64, String, String, u64) {
    (
        v["timestamp"].as_i64().expect("ts"),
        v["hostName"].as_str().expect("host").to_owned(),
        v["cgroupId"].as_u64().expect("cgroup"),
        v["connectionDirection"].as_str().expect("dir").to_owned(),
        v["srcIP"].as_str().expect("ip").to_owned(),
        v["srcPort"].as_u64().expect("port"),
    )
}

fn schema(pairs: &[(&str, &str)]) -> Value {
    Value::Array(pairs.iter().map(|(n, t)| json!([n, t])).collect())
}

const COLUMNS: [&str; 19] = [
    "timestamp",
    "connectionDirection",
    "srcIP",
    "dstIP",
    "srcPort",
    "dstPort",
    "srcDomains",
    "dstDomains",
    "hostName",
    "cgroupId",
    "flowId",
    "processId",
    "processName",
    "userId",
    "executable",
    "cgroupPath",
    "containerId",
    "date",
    "hour",
];

fn check_readers(result: &Value, flows: &[FlowBegin], flowsql_printed: &[Value]) {
    // pandas holds an integer column with NULLs as floats (NaN for NULL).
    let nullable_ids =
        if flows.iter().any(|f| f.attribution.process_id.is_none()) { "float64" } else { "uint32" };
    let types: [(&str, [&str; 19]); 6] = [
        (
            "pyarrow",
            [
                "timestamp[us, tz=UTC]",
                "string",
                "string",
                "string",
                "uint16",
                "uint16",
                "list<element: string>",
                "list<element: string>",
                "string",
                "int64",
                "int64",
                "uint32",
                "string",
                "uint32",
                "string",
                "string",
                "string",
                "string",
                "int32",
            ],
        ),
        (
            "pandas",
            [
                "datetime64[us, UTC]",
                "str",
                "str",
                "str",
                "uint16",
                "uint16",
                "object",
                "object",
                "str",
                "int64",
                "int64",
                nullable_ids,
                "str",
                nullable_ids,
                "str",
                "str",
                "str",
                "category",
                "category",
            ],
        ),
        (
            "polars",
            [
                "Datetime(time_unit='us', time_zone='UTC')",
                "String",
                "String",
                "String",
                "UInt16",
                "UInt16",
                "List(String)",
                "List(String)",
                "String",
                "Int64",
                "Int64",
                "UInt32",
                "String",
                "UInt32",
                "String",
                "String",
                "String",
                "Date",
                "Int64",
            ],
        ),
        (
            "duckdb",
            [
                "TIMESTAMP WITH TIME ZONE",
                "VARCHAR",
                "VARCHAR",
                "VARCHAR",
                "USMALLINT",
                "USMALLINT",
                "VARCHAR[]",
                "VARCHAR[]",
                "VARCHAR",
                "BIGINT",
                "BIGINT",
                "UINTEGER",
                "VARCHAR",
                "UINTEGER",
                "VARCHAR",
                "VARCHAR",
                "VARCHAR",
                "DATE",
                "VARCHAR",
            ],
        ),
        (
            "chdb",
            [
                "DateTime64(6, 'UTC')",
                "String",
                "String",
                "String",
                "UInt16",
                "UInt16",
                "Array(Nullable(String))",
                "Array(Nullable(String))",
                "String",
                "Int64",
                "Int64",
                "Nullable(UInt32)",
                "String",
                "Nullable(UInt32)",
                "String",
                "String",
                "String",
                "Date",
                "Int64",
            ],
        ),
        (
            "spark",
            [
                "timestamp",
                "string",
                "string",
                "string",
                "int",
                "int",
                "array<string>",
                "array<string>",
                "string",
                "bigint",
                "bigint",
                "bigint",
                "string",
                "bigint",
                "string",
                "string",
                "string",
                "date",
                "int",
            ],
        ),
    ];
    for (reader, types) in types {
        let seen = &result[reader];
        let pairs: Vec<(&str, &str)> = COLUMNS.iter().copied().zip(types).collect();
        assert_eq!(seen["schema"], schema(&pairs), "{reader}: column names and types");
        // DuckDB keeps the hour directory's text ("07"); the others infer an integer.
        let expected = expected_rows(flows, reader == "duckdb");
        assert_eq!(
            seen["rows"].as_array().map(Vec::len),
            expected.as_array().map(Vec::len),
            "{reader}: rows"
        );
        assert_eq!(seen["rows"], expected, "{reader}: every value");
        // The same values flowsql prints.
        assert_eq!(without_partitions(&seen["rows"]), flowsql_printed, "{reader}: as flowsql prints them");
    }
    // pandas: a list column holds arrays of Python strings.
    assert_eq!(result["pandas"]["listType"], "ndarray");
    assert_eq!(result["pandas"]["listElementType"], "str");
}

#[test]
fn every_engine_reads_the_cold_tier_and_a_copy_as_flowsql_prints_them() {
    let data = TempDir::new("readers");
    let dest = TempDir::new("readers-copy");
    let dir = data.path().join("data");
    let flows = flows();
    Store::open(&dir).expect("open").insert_flows(&batch_from_flows(&flows)).expect("insert");
    let dir_text = dir.to_str().expect("UTF-8 path");

    let out = flowsql(&["export", "--data-dir", dir_text]);
    assert!(out.starts_with(&format!("exported {} rows into ", flows.len())), "{out}");
    let mut printed = flowsql_rows(&dir);
    printed.sort_by_key(row_key);
    assert_eq!(
        printed,
        without_partitions(&expected_rows(&flows, false)),
        "flowsql prints the flows as stored"
    );

    // A copy of a time range, read as its own dataset.
    let copy = dest.path().join("copy");
    let since = "2026-01-01T00:00:00Z";
    let until = "2026-01-01T00:00:05Z";
    let out = flowsql(&[
        "export",
        "--data-dir",
        dir_text,
        "--to",
        copy.to_str().expect("UTF-8"),
        "--since",
        since,
        "--until",
        until,
    ]);
    assert!(out.starts_with("copied "), "{out}");
    let in_range: Vec<FlowBegin> = flows
        .iter()
        .filter(|f| f.timestamp_ns >= BASE_NS && f.timestamp_ns < BASE_NS + 5_000_000_000)
        .cloned()
        .collect();
    assert!(in_range.len() > 50);
    let mut printed_in_range = without_partitions(&expected_rows(&in_range, false));
    printed_in_range.sort_by_key(row_key);

    let results = read_with_python(&[&dir.join("flows"), &copy]);
    check_readers(&results[0], &flows, &printed);
    check_readers(&results[1], &in_range, &printed_in_range);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Schema evolution on read: a data directory of flowsql 0.1 (files with
/// nanosecond timestamps and unsigned 64-bit columns, `item` lists) gets a
/// file of today's format (its old hot rows exported: microseconds, signed
/// 64-bit, `element` lists, a cgroupId of 2^64 - 1 stored as -1), and one
/// query over both gives each row once, as the store reads it.
#[test]
fn old_and_new_files_answer_one_query_consistently() {
    let tmp = TempDir::new("readers-old-new");
    let dir = tmp.path().join("data");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../store/tests/fixtures/datadir-0.1"), &dir);
    let dir_text = dir.to_str().expect("UTF-8");
    let out = flowsql(&["export", "--data-dir", dir_text]);
    assert!(out.starts_with("exported 104 rows into 3 files"), "{out}");
    let store = Store::open_read_only(&dir).expect("open");
    let files = store.table_cold_files("flows", flowsql_store::TimeRange::ALL).expect("files");
    assert_eq!(files.len(), 5, "two old files and three new ones");
    // What the store reads (each file cast to the table's schema by name).
    let mut expected: Vec<Value> = store
        .flows(flowsql_store::TimeRange::ALL)
        .expect("flows")
        .iter()
        .flat_map(|b| flowsql_store::flows_from_batch(b).expect("valid"))
        .map(|f| serde_json::to_value(&f).expect("json"))
        .map(|mut v| {
            let ns = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().expect("text"))
                .expect("RFC 3339")
                .timestamp_nanos_opt();
            v["timestamp"] = json!(ns.expect("in range"));
            v
        })
        .collect();
    expected.sort_by_key(row_key);
    assert_eq!(expected.len(), 307);
    assert!(expected.iter().any(|r| r["cgroupId"] == json!(u64::MAX)), "an id above 2^63");
    let mut printed = flowsql_rows(&dir);
    printed.sort_by_key(row_key);
    assert_eq!(printed.len(), 307);
    assert_eq!(printed, expected);
    // Aggregates and filters over both kinds of files.
    let out = flowsql(&[
        "query",
        "--data-dir",
        dir_text,
        "--format",
        "csv",
        "SELECT count(*), count(DISTINCT cgroupId), max(cgroupId), sum(srcPort) FROM flows WHERE timestamp >= '2026-01-01T00:00:00Z'",
    ]);
    let sum_ports: u64 = expected
        .iter()
        .filter(|r| r["timestamp"].as_i64().expect("ts") >= BASE_NS)
        .map(|r| r["srcPort"].as_u64().expect("port"))
        .sum();
    let rows = expected.iter().filter(|r| r["timestamp"].as_i64().expect("ts") >= BASE_NS).count();
    assert!(out.lines().nth(1).expect("a row").starts_with(&format!("{rows},")), "{out}");
    assert!(out.contains(&format!(",{},{sum_ports}", u64::MAX)), "{out}");
}
