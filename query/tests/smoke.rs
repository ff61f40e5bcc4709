//! A first end-to-end check of the session over a store with rows in both
//! tiers (the sqllogictest files cover SQL behaviour in depth).

use flowsql_query::{Session, SessionOptions};
use flowsql_store::batch::batch_from_flows;
use flowsql_store::{ExportOptions, Store, synthetic};

#[tokio::test]
async fn counts_each_flow_once_across_tiers() {
    let dir = std::env::temp_dir().join(format!("flowsql-query-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let flows: Vec<_> = (0..1000).map(|i| synthetic::indexed_flow(1, i)).collect();
    let cutoff = flows[500].timestamp_ns;
    {
        let mut store = Store::open(&dir).expect("store");
        store.hot_mut().insert_flows(&batch_from_flows(&flows)).expect("insert");
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
    let _ = std::fs::remove_dir_all(&dir);
}
