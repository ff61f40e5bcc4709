//! The as-of join operator gives exactly the rows of the hash join with a
//! `BETWEEN` filter that it replaces, over randomized inputs: addresses of
//! both families, periods that overlap, touch, are empty or share their
//! bounds with flow times, NULL keys and times, inputs split into several
//! partitions, empty inputs; for inner and outer joins and for inclusive
//! and strict bounds. Each query runs with the operator and without it
//! (`SET flowsql.as_of_join = false`), and the plans are checked to be the
//! ones meant.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringViewArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const ADDRESSES: [&str; 8] = [
    "10.0.0.1",
    "10.0.0.2",
    "93.184.216.34",
    "2001:db8::1",
    "2001:db8::2",
    "::ffff:10.0.0.1",
    "fe80::1",
    "192.0.2.9",
];

fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn address(rng: &mut Rng) -> Option<&'static str> {
    // One in twelve NULL; the last address only on the flows' side.
    if rng.below(12) == 0 { None } else { Some(ADDRESSES[rng.below(ADDRESSES.len() as u64) as usize]) }
}

/// Flows: (id, dst_ip, timestamp) in `partitions` partitions.
fn flows(rng: &mut Rng, rows: usize, partitions: usize) -> MemTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("dst_ip", DataType::Utf8View, true),
        Field::new("timestamp", time_type(), true),
    ]));
    let mut parts = vec![Vec::new(); partitions.max(1)];
    let per = rows.div_ceil(partitions.max(1)).max(1);
    for (p, part) in parts.iter_mut().enumerate() {
        let ids: Vec<i64> = ((p * per)..((p + 1) * per).min(rows)).map(|i| i as i64).collect();
        let ips: Vec<Option<&str>> = ids.iter().map(|_| address(rng)).collect();
        // Times on a coarse grid (whole seconds of 0..100 s), so that many
        // fall exactly on period bounds.
        let times: Vec<Option<i64>> = ids
            .iter()
            .map(|_| if rng.below(20) == 0 { None } else { Some(rng.below(100) as i64 * 1_000_000) })
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringViewArray::from(ips)),
            Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
        ];
        part.push(RecordBatch::try_new(Arc::clone(&schema), columns).expect("flows batch"));
    }
    MemTable::try_new(schema, parts).expect("flows table")
}

/// Periods: (ip, name, first_seen, expires_at), one partition.
fn domains(rng: &mut Rng, rows: usize) -> MemTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ip", DataType::Utf8View, true),
        Field::new("name", DataType::Utf8View, false),
        Field::new("first_seen", time_type(), true),
        Field::new("expires_at", time_type(), true),
    ]));
    let mut ips = Vec::new();
    let mut names = Vec::new();
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    for i in 0..rows {
        let ip = address(rng).filter(|a| *a != "192.0.2.9");
        let start = rng.below(100) as i64;
        // Mostly short periods, a few long ones, some empty (end < start),
        // some a single instant.
        let length = match rng.below(10) {
            0 => -(rng.below(5) as i64) - 1,
            1 => 0,
            2 => 60 + rng.below(40) as i64,
            _ => rng.below(12) as i64,
        };
        ips.push(ip);
        names.push(format!("n{}.example", i % 17));
        starts.push((rng.below(30) != 0).then_some(start * 1_000_000));
        ends.push((rng.below(30) != 0).then_some((start + length) * 1_000_000));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringViewArray::from(ips)),
        Arc::new(StringViewArray::from(names)),
        Arc::new(TimestampMicrosecondArray::from(starts).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(ends).with_timezone("UTC")),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).expect("domains batch");
    MemTable::try_new(schema, vec![vec![batch]]).expect("domains table")
}

async fn rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let batches = ctx.sql(sql).await.expect(sql).collect().await.expect(sql);
    let options = FormatOptions::default().with_null("NULL");
    let mut lines = Vec::new();
    for batch in &batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("fmt"))
            .collect();
        for row in 0..batch.num_rows() {
            lines.push(formatters.iter().map(|f| f.value(row).to_string()).collect::<Vec<_>>().join("|"));
        }
    }
    lines.sort();
    lines
}

async fn plan(ctx: &SessionContext, sql: &str) -> String {
    rows(ctx, &format!("EXPLAIN {sql}")).await.join("\n")
}

const QUERIES: [&str; 5] = [
    "SELECT f.id, d.name, d.first_seen FROM flows f JOIN domains d \
     ON d.ip = f.dst_ip AND f.timestamp BETWEEN d.first_seen AND d.expires_at",
    "SELECT f.id, d.name FROM flows f LEFT JOIN domains d \
     ON d.ip = f.dst_ip AND f.timestamp BETWEEN d.first_seen AND d.expires_at",
    "SELECT f.id, d.name FROM flows f JOIN domains d \
     ON f.dst_ip = d.ip AND d.first_seen < f.timestamp AND f.timestamp < d.expires_at",
    "SELECT f.id, d.name FROM flows f JOIN domains d \
     ON d.ip = f.dst_ip AND f.timestamp > d.first_seen AND d.expires_at >= f.timestamp",
    "SELECT d.name, count(*) FROM flows f JOIN domains d \
     ON d.ip = f.dst_ip AND f.timestamp BETWEEN d.first_seen AND d.expires_at GROUP BY d.name",
];

async fn same_rows_both_ways(seed: u64, flow_rows: usize, domain_rows: usize, partitions: usize) {
    let mut rng = Rng(seed);
    let ctx = flowsql_query::base_context(Some(partitions));
    ctx.register_table("flows", Arc::new(flows(&mut rng, flow_rows, partitions))).expect("flows");
    ctx.register_table("domains", Arc::new(domains(&mut rng, domain_rows))).expect("domains");
    for sql in QUERIES {
        ctx.sql("SET flowsql.as_of_join = true").await.expect("set");
        let with = rows(&ctx, sql).await;
        let with_plan = plan(&ctx, sql).await;
        ctx.sql("SET flowsql.as_of_join = false").await.expect("set");
        let without = rows(&ctx, sql).await;
        let without_plan = plan(&ctx, sql).await;
        // Whichever side DataFusion chose to build, the operator collects
        // the periods.
        assert!(with_plan.contains("AsOfJoinExec"), "seed {seed}: {sql}\n{with_plan}");
        assert!(!without_plan.contains("AsOfJoinExec"), "{without_plan}");
        assert!(without_plan.contains("HashJoinExec"), "{without_plan}");
        assert_eq!(with, without, "seed {seed}, {flow_rows} flows, {domain_rows} periods: {sql}");
        if flow_rows > 0 && domain_rows > 0 {
            assert!(!with.is_empty(), "seed {seed}: the fixture joins nothing: {sql}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_join_gives_the_rows_of_the_between_join() {
    for seed in 1..=12u64 {
        let seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        same_rows_both_ways(seed, 3_000, 150, 1 + (seed % 3) as usize).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_join_with_empty_inputs() {
    same_rows_both_ways(7, 500, 0, 2).await;
    same_rows_both_ways(8, 0, 40, 2).await;
    same_rows_both_ways(9, 0, 0, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_join_with_more_periods_than_flows() {
    // DataFusion builds its hash table on the flows here; the operator
    // still indexes the periods.
    for seed in [21u64, 22, 23] {
        same_rows_both_ways(seed, 100, 2_000, 2).await;
    }
}
