//! Runs the SQL behaviour files in `tests/slt/*.slt` (sqllogictest format)
//! against a session over a fixture data directory whose flows are split
//! between the cold Parquet tier and the hot SQLite tier, with domains.
//!
//! Fixture (UTC, 2026-11-27):
//!
//! | # | time | tier | direction | src | dst | dstDomains |
//! |---|---|---|---|---|---|---|
//! | 1 | 10:00:00 | cold | outgoing | 10.0.0.5:40001 | 93.184.216.34:443 | example.com |
//! | 2 | 10:05:00 | cold | outgoing | 10.0.0.5:40002 | 93.184.216.34:443 | example.com |
//! | 3 | 10:10:00 | cold | incoming | 198.51.100.7:51000 | 10.0.0.5:22 | |
//! | 4 | 10:20:00 | cold | outgoing | 10.0.0.5:40003 | [2606:2800:220:1::1]:443 | www.example.com, example.com |
//! | 5 | 11:00:00 | hot | outgoing | 10.0.0.5:40004 | 140.82.112.3:443 | github.com |
//! | 6 | 11:30:00 | hot | outgoing | 10.0.0.5:40005 | 127.0.0.1:8080 | |
//! | 7 | 11:45:00 | hot | incoming | 192.168.1.20:60000 | 10.0.0.5:22 | |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use flowsql_event::{Direction, DomainList, DomainObservation, EndReason, FlowBegin, FlowEnd};
use flowsql_query::{QueryError, Session, SessionOptions};
use flowsql_store::batch_from_flows;
use flowsql_store::test_util::TempDir;
use flowsql_store::{ExportOptions, Store};
use futures::TryStreamExt;
use sqllogictest::{DBOutput, DefaultColumnType};

/// 2026-11-27T00:00:00Z in nanoseconds.
const DAY: i64 = 1_795_737_600_000_000_000;
const HOUR: i64 = 3_600_000_000_000;
const MINUTE: i64 = 60_000_000_000;
const SECOND: i64 = 1_000_000_000;

fn at(hour: i64, minute: i64, second: i64) -> i64 {
    DAY + hour * HOUR + minute * MINUTE + second * SECOND
}

fn flow(time: i64, direction: Direction, src: &str, dst: &str, dst_domains: &[&str]) -> FlowBegin {
    let src: std::net::SocketAddr = src.parse().expect("src");
    let dst: std::net::SocketAddr = dst.parse().expect("dst");
    let names: Vec<flowsql_event::DomainName> = dst_domains.iter().map(|n| (*n).into()).collect();
    FlowBegin {
        timestamp_ns: time,
        direction,
        src_ip: src.ip(),
        dst_ip: dst.ip(),
        src_port: src.port(),
        dst_port: dst.port(),
        src_domains: DomainList::default(),
        dst_domains: names.into(),
        cgroup_id: 1,
        host_name: "host1".into(),
        flow_id: 0,
        attribution: flowsql_event::Attribution::default(),
    }
}

fn observation(ip: &str, name: &str, question: &str, seen: i64, expires: i64) -> DomainObservation {
    DomainObservation {
        ip: ip.parse().expect("ip"),
        name: name.into(),
        question: question.into(),
        seen_ns: seen,
        expires_ns: expires,
    }
}

fn build_fixture(dir: &Path) {
    use Direction::{Incoming, Outgoing};
    let flows = vec![
        flow(at(10, 0, 0), Outgoing, "10.0.0.5:40001", "93.184.216.34:443", &["example.com"]),
        flow(at(10, 5, 0), Outgoing, "10.0.0.5:40002", "93.184.216.34:443", &["example.com"]),
        flow(at(10, 10, 0), Incoming, "198.51.100.7:51000", "10.0.0.5:22", &[]),
        flow(
            at(10, 20, 0),
            Outgoing,
            "10.0.0.5:40003",
            "[2606:2800:220:1::1]:443",
            &["www.example.com", "example.com"],
        ),
        flow(at(11, 0, 0), Outgoing, "10.0.0.5:40004", "140.82.112.3:443", &["github.com"]),
        flow(at(11, 30, 0), Outgoing, "10.0.0.5:40005", "127.0.0.1:8080", &[]),
        flow(at(11, 45, 0), Incoming, "192.168.1.20:60000", "10.0.0.5:22", &[]),
    ];
    let observations = vec![
        observation("93.184.216.34", "example.com", "example.com", at(9, 59, 59), at(10, 9, 59)),
        observation("93.184.216.34", "example.com", "example.com", at(10, 4, 0), at(10, 14, 0)),
        observation("2606:2800:220:1::1", "www.example.com", "www.example.com", at(10, 19, 0), at(10, 24, 0)),
        observation("2606:2800:220:1::1", "example.com", "www.example.com", at(10, 19, 0), at(10, 24, 0)),
        observation("140.82.112.3", "github.com", "github.com", at(10, 59, 50), at(11, 0, 50)),
        // A second period of example.com, after the first ran out.
        observation("93.184.216.34", "example.com", "example.com", at(12, 0, 0), at(12, 5, 0)),
    ];
    // flowIds 1..7; who made them.
    let flows: Vec<FlowBegin> = flows
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let incoming = f.direction == Incoming;
            FlowBegin {
                flow_id: i as u64 + 1,
                attribution: flowsql_event::Attribution {
                    process_id: Some(if incoming { 812 } else { 4100 + i as u32 % 2 }),
                    process_name: if incoming {
                        "sshd"
                    } else if i % 2 == 0 {
                        "curl"
                    } else {
                        "python3"
                    }
                    .into(),
                    user_id: Some(if incoming { 0 } else { 1000 }),
                    executable: if incoming { "/usr/sbin/sshd" } else { "/usr/bin/curl" }.into(),
                    cgroup_path: "/system.slice/x.service".into(),
                    container_id: "".into(),
                },
                ..f
            }
        })
        .collect();
    // How they ended: each a few seconds after its begin, flowId shared;
    // plus a failed attempt (no begin) with a flowId of its own.
    let mut ends: Vec<FlowEnd> = flows
        .iter()
        .enumerate()
        .map(|(i, f)| FlowEnd {
            timestamp_ns: f.timestamp_ns + (i as i64 + 1) * SECOND,
            direction: f.direction,
            src_ip: f.src_ip,
            dst_ip: f.dst_ip,
            src_port: f.src_port,
            dst_port: f.dst_port,
            src_domains: f.src_domains.clone(),
            dst_domains: f.dst_domains.clone(),
            duration_ns: Some((i as i64 + 1) * SECOND),
            src_bytes: 100 * (i as u64 + 1),
            dst_bytes: 1000 * (i as u64 + 1),
            src_packets: 3,
            dst_packets: 4,
            retransmits: 0,
            rtt_micros: 40,
            reason: if i == 2 { EndReason::ResetReceived } else { EndReason::Fin },
            closed_by: Some(flowsql_event::Side::Src),
            begun_before_capture: false,
            host_name: Arc::clone(&f.host_name),
            cgroup_id: f.cgroup_id,
            flow_id: f.flow_id,
            attribution: f.attribution.clone(),
            accepting_process_id: (f.direction == Incoming).then_some(813),
            accepting_process_name: if f.direction == Incoming { "sshd" } else { "" }.into(),
        })
        .collect();
    let attempt = &ends[0];
    ends.push(FlowEnd {
        timestamp_ns: at(11, 50, 0),
        src_port: 40006,
        dst_ip: "203.0.113.9".parse().expect("ip"),
        dst_port: 5432,
        dst_domains: DomainList::default(),
        duration_ns: Some(3 * SECOND),
        src_bytes: 0,
        dst_bytes: 0,
        src_packets: 2,
        dst_packets: 0,
        reason: EndReason::Timeout,
        closed_by: None,
        flow_id: 100,
        ..attempt.clone()
    });
    let mut store = Store::open(dir).expect("store opens");
    store.insert_flows(&batch_from_flows(&flows)).expect("insert flows");
    store
        .insert(flowsql_store::flow_ends_table().name(), &flowsql_store::batch_from_ends(&ends))
        .expect("insert ends");
    store.record_domains(&observations).expect("record domains");
    // Hour 10 goes to Parquet; hour 11 stays in SQLite.
    let report = store.export(&ExportOptions::up_to(at(11, 0, 0)), &mut |_| {}).expect("export");
    assert_eq!(report.rows, 8, "four flows and their ends in the cold tier");
}

/// The session as a sqllogictest database.
struct FlowSqlDb {
    session: Session,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SltError(String);

impl From<QueryError> for SltError {
    fn from(error: QueryError) -> Self {
        SltError(error.to_string())
    }
}

fn column_type(data_type: &DataType) -> DefaultColumnType {
    if data_type.is_integer() {
        DefaultColumnType::Integer
    } else if data_type.is_floating() || matches!(data_type, DataType::Decimal128(..)) {
        DefaultColumnType::FloatingPoint
    } else {
        DefaultColumnType::Text
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for FlowSqlDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let mut output = DBOutput::StatementComplete(0);
        for statement in self.session.parse(sql)? {
            let stream = self.session.execute(statement).await?;
            let schema = stream.schema();
            let batches: Vec<_> = stream.try_collect().await.map_err(|e| SltError(e.to_string()))?;
            let types = schema.fields().iter().map(|f| column_type(f.data_type())).collect();
            let options = FormatOptions::default().with_null("NULL");
            let mut rows = Vec::new();
            for batch in &batches {
                let formatters: Vec<_> = batch
                    .columns()
                    .iter()
                    .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                    .collect::<Result<_, _>>()
                    .map_err(|e| SltError(e.to_string()))?;
                for row in 0..batch.num_rows() {
                    rows.push(formatters.iter().map(|f| f.value(row).to_string()).collect());
                }
            }
            output = DBOutput::Rows { types, rows };
        }
        Ok(output)
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "flowsql"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_behaviour() {
    let temp = TempDir::new("slt");
    let dir = temp.path().join("data");
    build_fixture(&dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt"))
        .expect("slt directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files found");
    let mut failures = Vec::new();
    for file in &files {
        let data_dir = dir.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let data_dir = data_dir.clone();
            async move {
                let session = Session::open(SessionOptions::new(data_dir)).map_err(SltError::from)?;
                Ok::<_, SltError>(FlowSqlDb { session })
            }
        });
        if let Err(error) = runner.run_file_async(file).await {
            failures.push(format!("{}: {}", file.display(), error.display(true)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // The as-of join cases of 07_as_of_join.slt ran through the operator
    // (and, after `SET flowsql.as_of_join = false`, through the hash join).
    let session = Session::open(SessionOptions::new(&dir)).expect("session");
    let explain = "EXPLAIN SELECT f.srcPort, d.name FROM flows f LEFT JOIN domains d \
                   ON d.ip = f.dstIP AND f.timestamp BETWEEN d.firstSeen AND d.expiresAt";
    let plan = session.sql(explain).await.expect("explain");
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&plan).expect("plan").to_string();
    assert!(text.contains("AsOfJoinExec"), "{text}");
}
