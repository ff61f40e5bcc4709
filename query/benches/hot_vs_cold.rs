//! The same flows queried in the hot tier (batches in SQLite) and in the
//! cold tier (Parquet), side by side in one run:
//!
//! ```text
//! cargo bench -p flowsql-query --bench hot_vs_cold                 # 10,000,000 flows
//! FLOWSQL_BENCH_ROWS=1000000 cargo bench -p flowsql-query --bench hot_vs_cold
//! ```
//!
//! Two data directories get the same flows ([`RealisticMix`], seed 42)
//! through the capture's own path (batches of 16,384 rows); one keeps them
//! hot, the other exports them to Parquet. Each query runs once to warm up,
//! then three times on each; the medians are compared, and so are the
//! results.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion::arrow::util::pretty::pretty_format_batches;
use flowsql_query::{Session, SessionOptions};
use flowsql_store::synthetic::RealisticMix;
use flowsql_store::{ExportOptions, FlowColumns, Store, flows_table, hot, ipc};

const BATCH_ROWS: usize = 16 * 1024;

fn fill(dir: &Path, rows: usize) {
    let _ = std::fs::remove_dir_all(dir);
    let mut store = Store::open(dir).expect("store");
    let mut mix = RealisticMix::new(42, 1000.0);
    let mut columns = FlowColumns::with_capacity(BATCH_ROWS);
    for _ in 0..rows {
        columns.push(&mix.next_flow());
        if columns.len() == BATCH_ROWS {
            let encoded =
                hot::encode(flows_table(), &columns.finish(), ipc::HOT_COMPRESSION).expect("encode");
            store.insert_encoded("flows", &encoded.expect("rows")).expect("insert");
        }
    }
    if !columns.is_empty() {
        let encoded = hot::encode(flows_table(), &columns.finish(), ipc::HOT_COMPRESSION).expect("encode");
        store.insert_encoded("flows", &encoded.expect("rows")).expect("insert");
    }
    store.checkpoint().expect("checkpoint");
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

async fn run(session: &Session, sql: &str) -> (Duration, String) {
    let started = Instant::now();
    let batches = session.sql(sql).await.expect("query");
    let elapsed = started.elapsed();
    (elapsed, pretty_format_batches(&batches).expect("format").to_string())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows: usize =
        std::env::var("FLOWSQL_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let base = PathBuf::from(std::env::var("FLOWSQL_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))
        .join(format!("flowsql-hot-vs-cold-{}", std::process::id()));
    let hot_dir = base.join("hot");
    let cold_dir = base.join("cold");
    eprintln!("writing {rows} flows twice...");
    fill(&hot_dir, rows);
    fill(&cold_dir, rows);
    let report = Store::open(&cold_dir)
        .expect("store")
        .export(&ExportOptions::up_to(i64::MAX), &mut |_| {})
        .expect("export");
    assert_eq!(report.rows as usize, rows);
    let open = |dir: &Path| {
        Session::open(SessionOptions { target_partitions: Some(2), ..SessionOptions::new(dir) })
            .expect("session")
    };
    let hot_session = open(&hot_dir);
    let cold_session = open(&cold_dir);
    let queries = [
        ("count", "SELECT count(*) AS flows FROM flows"),
        (
            "group by port",
            "SELECT dstPort, count(*) AS flows FROM flows GROUP BY dstPort ORDER BY flows DESC, dstPort LIMIT 10",
        ),
        (
            "group by direction and address",
            "SELECT connectionDirection, count(DISTINCT dstIP) AS addresses, count(*) AS flows FROM flows \
             GROUP BY connectionDirection ORDER BY connectionDirection",
        ),
        (
            "ten minutes, group by destination",
            "SELECT dstIP, count(*) AS flows FROM flows \
             WHERE timestamp >= TIMESTAMP '2026-01-01T00:10:00Z' AND timestamp < TIMESTAMP '2026-01-01T00:20:00Z' \
             GROUP BY dstIP ORDER BY flows DESC, dstIP LIMIT 5",
        ),
    ];
    println!("flows: {rows} (realistic mix, seed 42), 2 threads; median of 3 after a warm-up");
    println!();
    println!("| query | hot tier (batches in SQLite) | cold tier (Parquet) | hot/cold | target |");
    println!("|---|---|---|---|---|");
    for (name, sql) in queries {
        let (_, hot_result) = run(&hot_session, sql).await;
        let (_, cold_result) = run(&cold_session, sql).await;
        assert_eq!(hot_result, cold_result, "{name}: the tiers disagree");
        let mut hot_times = Vec::new();
        let mut cold_times = Vec::new();
        for _ in 0..3 {
            hot_times.push(run(&hot_session, sql).await.0);
            cold_times.push(run(&cold_session, sql).await.0);
        }
        let (h, c) = (median(hot_times), median(cold_times));
        println!(
            "| {name} | {:.3} s | {:.3} s | {:.2} | <= 1.0 |",
            h.as_secs_f64(),
            c.as_secs_f64(),
            h.as_secs_f64() / c.as_secs_f64()
        );
    }
    drop((hot_session, cold_session));
    let _ = std::fs::remove_dir_all(&base);
}
