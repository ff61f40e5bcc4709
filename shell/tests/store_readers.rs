//! Independent readers: the Parquet that `flowsql export` writes (the cold
//! tier as it is, and a `--to` copy) is read by pyarrow, pandas, polars and
//! DuckDB (installed by `.ci/run` from `.ci/requirements.txt`), and their
//! results are checked value by value: exact column names and types,
//! `timestamp` in UTC with every nanosecond, lists of strings, and the hive
//! partition columns `date` and `hour`.

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
    flows
}

fn flowsql(args: &[&str]) -> String {
    let output = Command::new(FLOWSQL).args(args).output().expect("flowsql runs");
    assert!(output.status.success(), "flowsql {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// What the readers print for `dataset`.
fn read_with_python(dataset: &Path) -> Value {
    let output = Command::new("python3")
        .arg(SCRIPT)
        .arg(dataset)
        .output()
        .unwrap_or_else(|e| panic!("python3 must be installed (.ci/run installs it): {e}"));
    assert!(
        output.status.success(),
        "the readers failed (pip install -r .ci/requirements.txt):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
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
    let key = |v: &Value| {
        (
            v["timestamp"].as_i64().expect("ts"),
            v["cgroupId"].as_u64().expect("cgroup"),
            v["connectionDirection"].as_str().expect("dir").to_owned(),
            v["srcIP"].as_str().expect("ip").to_owned(),
            v["srcPort"].as_u64().expect("port"),
        )
    };
    rows.sort_by_key(key);
    Value::Array(rows)
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

fn check_readers(result: &Value, flows: &[FlowBegin]) {
    // pandas holds an integer column with NULLs as floats (NaN for NULL).
    let nullable_ids =
        if flows.iter().any(|f| f.attribution.process_id.is_none()) { "float64" } else { "uint32" };
    let types: [(&str, [&str; 19]); 4] = [
        (
            "pyarrow",
            [
                "timestamp[ns, tz=UTC]",
                "string",
                "string",
                "string",
                "uint16",
                "uint16",
                "list<item: string>",
                "list<item: string>",
                "string",
                "uint64",
                "uint64",
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
                "datetime64[ns, UTC]",
                "str",
                "str",
                "str",
                "uint16",
                "uint16",
                "object",
                "object",
                "str",
                "uint64",
                "uint64",
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
                "Datetime(time_unit='ns', time_zone='UTC')",
                "String",
                "String",
                "String",
                "UInt16",
                "UInt16",
                "List(String)",
                "List(String)",
                "String",
                "UInt64",
                "UInt64",
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
                "TIMESTAMPTZ_NS",
                "VARCHAR",
                "VARCHAR",
                "VARCHAR",
                "USMALLINT",
                "USMALLINT",
                "VARCHAR[]",
                "VARCHAR[]",
                "VARCHAR",
                "UBIGINT",
                "UBIGINT",
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
    }
    // pandas: a list column holds arrays of Python strings.
    assert_eq!(result["pandas"]["listType"], "ndarray");
    assert_eq!(result["pandas"]["listElementType"], "str");
}

#[test]
fn pyarrow_pandas_polars_and_duckdb_read_the_cold_tier_and_a_copy() {
    let data = TempDir::new("readers");
    let dest = TempDir::new("readers-copy");
    let dir = data.path().join("data");
    let flows = flows();
    Store::open(&dir).expect("open").insert_flows(&batch_from_flows(&flows)).expect("insert");
    let dir_text = dir.to_str().expect("UTF-8 path");

    let out = flowsql(&["export", "--data-dir", dir_text]);
    assert!(out.starts_with(&format!("exported {} rows into ", flows.len())), "{out}");
    check_readers(&read_with_python(&dir.join("flows")), &flows);

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
    check_readers(&read_with_python(&copy), &in_range);
}
