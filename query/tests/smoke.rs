//! A first end-to-end check of the session over a store with rows in both
//! tiers (the sqllogictest files cover SQL behaviour in depth).

use flowsql_query::{Session, SessionOptions};
use flowsql_store::batch_from_flows;
use flowsql_store::test_util::TempDir;
use flowsql_store::{ExportOptions, Store, synthetic};

#[tokio::test]
async fn counts_each_flow_once_across_tiers() {
    let temp = TempDir::new("query-smoke");
    let dir = temp.path().join("data");
    let flows: Vec<_> = (0..1000).map(|i| synthetic::indexed_flow(1, i)).collect();
    let cutoff = flows[500].timestamp_ns;
    {
        let mut store = Store::open(&dir).expect("store");
        store.insert_flows(&batch_from_flows(&flows)).expect("insert");
        let options = ExportOptions::up_to(cutoff);
        store.export(&options, &mut |_| {}).expect("export");
        assert!(!store.cold_files(flowsql_store::TimeRange::ALL).expect("files").is_empty());
    }
    let session = Session::open(SessionOptions::new(&dir)).expect("session");
    let batches = session.sql("SELECT count(*) AS n FROM flows").await.expect("count");
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).expect("format").to_string();
    assert!(text.contains("| 1000 |"), "{text}");
    let batches = session
        .sql("select count(*) from flows where srcport >= 0 and TIMESTAMP < (select min(timestamp) from flows) + interval '1 day'")
        .await
        .expect("mixed case");
    assert_eq!(batches[0].num_rows(), 1);
}

#[tokio::test]
async fn result_columns_print_as_the_event_spells_them() {
    let temp = TempDir::new("query-names");
    let dir = temp.path().join("data");
    {
        let mut store = Store::open(&dir).expect("store");
        let flows: Vec<_> = (0..3).map(|i| synthetic::indexed_flow(1, i)).collect();
        store.insert_flows(&batch_from_flows(&flows)).expect("insert");
    }
    let session = Session::open(SessionOptions::new(&dir)).expect("session");
    for sql in [
        "SELECT dstDomains, srcip FROM flows",
        "select dstdomains, SRCIP from flows",
        r#"SELECT "dstDomains", "srcIP" FROM flows"#,
    ] {
        let batches = session.sql(sql).await.expect("query");
        let names: Vec<_> = batches[0].schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["dstDomains", "srcIP"], "{sql}");
    }
}

/// Exports move rows from SQLite to Parquet while queries count them: every
/// count sees each row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_stay_exact_while_exports_run() {
    let temp = TempDir::new("query-race");
    let dir = temp.path().join("data");
    const HOUR: i64 = 3_600_000_000_000;
    let start = 1_795_737_600_000_000_000i64;
    // 40 hours of flows, 500 per hour.
    let flows: Vec<_> = (0..20_000u64)
        .map(|i| {
            let mut flow = synthetic::indexed_flow(2, i);
            flow.timestamp_ns = start + (i as i64 / 500) * HOUR + (i as i64 % 500) * 1_000_000;
            flow
        })
        .collect();
    Store::open(&dir).expect("store").insert_flows(&batch_from_flows(&flows)).expect("insert");
    let exporter_dir = dir.clone();
    let exporter = std::thread::spawn(move || {
        let mut store = Store::open(&exporter_dir).expect("store");
        for hour in 1..=40 {
            store.export(&ExportOptions::up_to(start + hour * HOUR), &mut |_| {}).expect("export");
        }
    });
    let session = Session::open(SessionOptions::new(&dir)).expect("session");
    let mut queries = 0;
    while !exporter.is_finished() || queries < 5 {
        let batches = session
            .sql("SELECT count(*) AS n, count(DISTINCT srcPort * 100000 + cgroupId) FROM flows")
            .await
            .expect("count");
        let n = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .expect("i64")
            .value(0);
        assert_eq!(n, 20_000, "query {queries} saw {n} rows");
        queries += 1;
    }
    exporter.join().expect("exporter");
    let cold =
        Store::open(&dir).expect("store").cold_files(flowsql_store::TimeRange::ALL).expect("files").len();
    assert!(cold >= 40, "the exports ran ({cold} files)");
    eprintln!("{queries} exact counts while 40 exports ran");
}

#[tokio::test]
async fn domains_written_by_another_process_show_up_in_the_next_query() {
    use flowsql_event::DomainObservation;
    let temp = TempDir::new("query-domcache");
    let dir = temp.path().join("data");
    let mut writer = Store::open(&dir).expect("store");
    let observe = |name: &str| DomainObservation {
        ip: "192.0.2.1".parse().expect("ip"),
        name: name.into(),
        question: name.into(),
        seen_ns: 10,
        expires_ns: 20,
    };
    writer.record_domains(&[observe("a.test")]).expect("a");
    let session = Session::open(SessionOptions::new(&dir)).expect("session");
    let count = |batches: Vec<datafusion::arrow::record_batch::RecordBatch>| {
        batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .expect("i64")
            .value(0)
    };
    assert_eq!(count(session.sql("SELECT count(*) FROM domains").await.expect("q")), 1);
    assert_eq!(count(session.sql("SELECT count(*) FROM domains").await.expect("q")), 1, "cached");
    writer.record_domains(&[observe("b.test")]).expect("b");
    assert_eq!(
        count(session.sql("SELECT count(*) FROM domains").await.expect("q")),
        2,
        "the cache saw the change"
    );
}

/// A capturing process's queries: rows the writer has not committed are
/// seen at once, and while it commits, no row is missing or seen twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_rows_are_seen_at_once_and_exactly_once_while_the_writer_commits() {
    use flowsql_store::{LiveRows, StoreWriter, WriterConfig};
    use std::sync::Arc;
    use std::time::Duration;

    let temp = TempDir::new("query-live");
    let dir = temp.path().join("data");
    Store::open(&dir).expect("store");
    let live = LiveRows::new();
    let config = WriterConfig {
        batch_rows: 97,
        batch_age: Duration::from_secs(3600),
        live: Some(Arc::clone(&live)),
        ..WriterConfig::default()
    };
    let writer = StoreWriter::spawn(&dir, config).expect("writer");
    let options = SessionOptions {
        live: Some(live.clone() as Arc<dyn flowsql_query::LiveFlows>),
        ..SessionOptions::new(&dir)
    };
    let session = Session::open(options).expect("session");

    // Uncommitted rows are visible at once.
    for i in 0..10 {
        writer.send_blocking(synthetic::indexed_flow(3, i));
    }
    let seen = |batches: Vec<datafusion::arrow::record_batch::RecordBatch>| -> (i64, i64) {
        let n = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .expect("i64");
        let d = batches[0]
            .column(1)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .expect("i64");
        (n.value(0), d.value(0))
    };
    let count_sql = "SELECT count(*), count(DISTINCT srcPort * 100000 + cgroupId) FROM flows";
    let started = std::time::Instant::now();
    loop {
        let (n, _) = seen(session.sql(count_sql).await.expect("count"));
        if n == 10 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "live rows not visible: {n}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!live.is_empty(), "nothing committed yet (batches of 97, no age)");

    // Many commits of 97 rows while queries count.
    let sender = std::thread::spawn(move || {
        for i in 10..20_000 {
            writer.send_blocking(synthetic::indexed_flow(3, i));
            if i % 40 == 0 {
                // Paced, so that queries interleave with many commits.
                std::thread::sleep(Duration::from_micros(400));
            }
        }
        writer.finish()
    });
    let mut last = 0;
    let mut queries = 0;
    while !sender.is_finished() {
        let (n, distinct) = seen(session.sql(count_sql).await.expect("count"));
        assert_eq!(n, distinct, "a row seen twice");
        assert!(n >= last, "rows went missing: {n} after {last}");
        last = n;
        queries += 1;
    }
    let counters = sender.join().expect("sender");
    assert_eq!(counters.rows_stored, 20_000);
    let (n, distinct) = seen(session.sql(count_sql).await.expect("count"));
    assert_eq!((n, distinct), (20_000, 20_000));
    assert!(live.is_empty());
    eprintln!("{queries} queries while the writer committed");
}

/// Ends travel like flows: live at once, committed in the same
/// transactions, each seen once, joined to their begins by flowId.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_ends_are_seen_at_once_and_exactly_once_beside_their_begins() {
    use flowsql_event::{EndReason, FlowEnd};
    use flowsql_store::{LiveRows, StoreWriter, WriterConfig};
    use std::sync::Arc;
    use std::time::Duration;

    let dir = std::env::temp_dir().join(format!("flowsql-query-live-ends-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Store::open(&dir).expect("store");
    let live = LiveRows::new();
    let config = WriterConfig {
        batch_rows: 61,
        batch_age: Duration::from_secs(3600),
        live: Some(Arc::clone(&live)),
        ..WriterConfig::default()
    };
    let writer = StoreWriter::spawn(&dir, config).expect("writer");
    let options = SessionOptions {
        live: Some(live.clone() as Arc<dyn flowsql_query::LiveFlows>),
        ..SessionOptions::new(&dir)
    };
    let session = Session::open(options).expect("session");
    let end_of = |i: u64| {
        let begin = synthetic::indexed_flow(4, i);
        FlowEnd {
            timestamp_ns: begin.timestamp_ns + 1_000,
            duration_ns: Some(1_000),
            src_packets: 1,
            dst_packets: 1,
            rtt_micros: 10,
            closed_by: None,
            ..synthetic::end_of(&begin, EndReason::Fin, i, 2 * i)
        }
    };
    let total = 5_000u64;
    let sender = std::thread::spawn(move || {
        for i in 0..total {
            writer.send_blocking(synthetic::indexed_flow(4, i));
            assert!(writer.send_end(end_of(i)), "queued");
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
        writer.finish()
    });
    // One scan: one snapshot of the store and the live rows.
    let sql = "SELECT count(*), count(DISTINCT flowId), 0 FROM flow_ends";
    let joined =
        "SELECT count(*), count(DISTINCT flowId), 0 FROM flows JOIN flow_ends USING (hostName, flowId)";
    let counts = |batches: Vec<datafusion::arrow::record_batch::RecordBatch>| -> [i64; 3] {
        let column = |c: usize| {
            batches[0]
                .column(c)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .expect("i64")
                .value(0)
        };
        [column(0), column(1), column(2)]
    };
    let mut last = 0;
    while !sender.is_finished() {
        let [n, distinct, _] = counts(session.sql(sql).await.expect("count"));
        assert_eq!(n, distinct, "an end seen twice");
        assert!(n >= last, "ends went missing: {n} after {last}");
        last = n;
    }
    let counters = sender.join().expect("sender");
    assert_eq!(counters.rows_stored, 2 * total, "flows and ends");
    assert_eq!(counts(session.sql(sql).await.expect("count")), [total as i64, total as i64, 0]);
    assert_eq!(counts(session.sql(joined).await.expect("join")), [total as i64, total as i64, 0]);
    assert!(live.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
