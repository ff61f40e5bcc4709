//! The views over a store whose flows carry process attribution
//! (`processName`, `containerId`) and that has a `flow_ends` table (bytes,
//! `endReason`): local nodes are processes and containers, edges carry
//! bytes, failed attempts and resets, and the timeline counts failed
//! attempts. The tables are declared here with the columns flowsql's design
//! gives them, in a real store read by a real session.

use std::net::IpAddr;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use flowsql_event::{Direction, DomainList, FlowBegin};
use flowsql_query::{Session, SessionOptions};
use flowsql_store::{EventTable, Store, batch_from_flows, flows_schema};
use flowsql_web::Limits;
use flowsql_web::views::{self, Columns, Filters, Range, Stack, TimelineParams};

const MINUTE_NS: i64 = 60_000_000_000;
const T0: i64 = 1_795_824_000_000_000_000;

fn flow(minute: i64, direction: Direction, dst: &str, domains: &[&str], cgroup: u64) -> FlowBegin {
    let names: DomainList = domains.iter().map(|n| Arc::<str>::from(*n)).collect();
    FlowBegin {
        timestamp_ns: T0 + minute * MINUTE_NS,
        direction,
        src_ip: "10.0.0.5".parse::<IpAddr>().expect("ip"),
        dst_ip: dst.parse::<IpAddr>().expect("ip"),
        src_port: 50_000 + minute as u16,
        dst_port: 443,
        src_domains: DomainList::default(),
        dst_domains: names,
        cgroup_id: cgroup,
        host_name: Arc::from("h"),
    }
}

/// `batch` with string columns appended.
fn with_columns(batch: RecordBatch, extra: &[(&str, Vec<&str>)]) -> RecordBatch {
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for (name, values) in extra {
        fields.push(Field::new(*name, DataType::Utf8, false));
        columns.push(Arc::new(StringArray::from(values.clone())));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("batch")
}

#[tokio::test]
async fn processes_containers_bytes_and_failures_when_the_store_has_them() {
    let dir = std::env::temp_dir().join(format!("flowsql-web-extended-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    // Begins: curl (twice) and a container to one name; an incoming one.
    let begins = batch_from_flows(&[
        flow(1, Direction::Outgoing, "93.184.216.34", &["www.example.com"], 7),
        flow(2, Direction::Outgoing, "93.184.216.34", &["www.example.com"], 7),
        flow(3, Direction::Outgoing, "93.184.216.34", &["www.example.com"], 9),
    ]);
    let begins = with_columns(
        begins,
        &[("processName", vec!["curl", "curl", "nginx"]), ("containerId", vec!["", "", "c0ffee"])],
    );
    // Ends: the three begins with bytes, and two refused attempts and one
    // reset by curl to a name that never answered.
    let ends_flows = [
        flow(1, Direction::Outgoing, "93.184.216.34", &["www.example.com"], 7),
        flow(2, Direction::Outgoing, "93.184.216.34", &["www.example.com"], 7),
        flow(3, Direction::Outgoing, "93.184.216.34", &["www.example.com"], 9),
        flow(4, Direction::Outgoing, "192.0.2.9", &["down.example"], 7),
        flow(4, Direction::Outgoing, "192.0.2.9", &["down.example"], 7),
        flow(5, Direction::Outgoing, "192.0.2.9", &["down.example"], 7),
    ];
    let ends = batch_from_flows(&ends_flows);
    let ends = with_columns(
        ends,
        &[
            ("processName", vec!["curl", "curl", "nginx", "curl", "curl", "curl"]),
            ("containerId", vec!["", "", "c0ffee", "", "", ""]),
            ("endReason", vec!["fin", "fin", "fin", "refused", "refused", "reset-received"]),
        ],
    );
    let mut fields: Vec<Field> = ends.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns = ends.columns().to_vec();
    for (name, values) in
        [("srcBytes", vec![100u64, 200, 300, 0, 0, 5]), ("dstBytes", vec![1_000, 2_000, 3_000, 0, 0, 0])]
    {
        fields.push(Field::new(name, DataType::UInt64, false));
        columns.push(Arc::new(UInt64Array::from(values)));
    }
    let ends = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("ends batch");

    let tables = vec![
        EventTable::new("flows", begins.schema(), "timestamp").expect("flows table"),
        EventTable::new("flow_ends", ends.schema(), "timestamp").expect("flow_ends table"),
    ];
    assert_eq!(begins.schema().fields().len(), flows_schema().fields().len() + 2);
    let mut store = Store::open_with_tables(&dir, tables.clone()).expect("store");
    store.insert("flows", &begins).expect("insert begins");
    store.insert("flow_ends", &ends).expect("insert ends");
    let learned = |ip: &str, name: &str| flowsql_event::DomainObservation {
        ip: ip.parse().expect("ip"),
        name: Arc::from(name),
        question: Arc::from(name),
        seen_ns: T0,
        expires_ns: T0 + 60 * MINUTE_NS,
    };
    store
        .record_domains(&[learned("93.184.216.34", "www.example.com"), learned("192.0.2.9", "down.example")])
        .expect("domains");
    drop(store);

    let session =
        Session::open(SessionOptions { event_tables: tables, ..SessionOptions::new(&dir) }).expect("session");
    let columns = Columns::of(&session);
    assert_eq!(columns, Columns { attribution: true, ends: true, ends_attribution: true });
    let range = Range { since: T0 / 1_000_000, until: T0 / 1_000_000 + 3_600_000 };
    let filters = Filters::default();
    let map = views::map(&session, columns, &filters, range, Limits::default()).await.expect("map");
    let mut edges: Vec<_> = map
        .edges
        .iter()
        .map(|e| (e.local.as_str(), e.remote.as_str(), e.flows, e.bytes, e.failed, e.resets))
        .collect();
    edges.sort();
    assert_eq!(
        edges,
        vec![
            ("container c0ffee", "www.example.com", 1, Some(3_300), Some(0), Some(0)),
            ("curl", "down.example", 0, Some(5), Some(2), Some(1)),
            ("curl", "www.example.com", 2, Some(3_300), Some(0), Some(0)),
        ]
    );

    let timeline = views::timeline(
        &session,
        columns,
        &filters,
        &TimelineParams { stack: Some(Stack::Direction) },
        range,
        Limits::default(),
    )
    .await
    .expect("timeline");
    let failed = timeline.failed.expect("failed attempts per bucket");
    assert_eq!(failed.iter().sum::<i64>(), 2, "two refused attempts (a reset is not a failed attempt)");
    assert_eq!(failed[4], 2, "both at minute 4");
    let _ = std::fs::remove_dir_all(&dir);
}
