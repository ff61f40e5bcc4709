//! Store benchmarks (release build, not part of the tests):
//!
//! ```sh
//! cargo bench -p flowsql-store --bench store            # 2,000,000 flows
//! cargo bench -p flowsql-store --bench store -- 500000  # fewer
//! ```
//!
//! On one realistic mix of flows ([`RealisticMix`]: many flows to a few
//! popular destinations, a long tail, 30% IPv6), measures in one run:
//! - ingest into the hot tier on one core: `FlowBegin`s through the batcher
//!   into SQLite in transactions of 16,384 rows (WAL, synchronous=NORMAL);
//! - export hot -> cold (SQLite -> Parquet, exactly-once protocol included),
//!   as `flowsql export` does it (reads through mmap) and as the capturing
//!   process's scheduled export does (no mmap, a small page cache), and how
//!   long each holds the database's write lock;
//! - bytes per flow: Parquet, SQLite, and gzip'd NDJSON of the same flows;
//! - the parts of ingest and export alone, to show what limits them;
//!
//! and prints a Markdown table with the ratios to the targets.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use flowsql_store::synthetic::RealisticMix;
use flowsql_store::{ExportEvent, ExportOptions, ExportReport, FlowColumns, Store, TimeRange, cold};

const INGEST_TARGET: f64 = 500_000.0;
const EXPORT_TARGET: f64 = 2_000_000.0;
const PARQUET_TARGET: f64 = 12.0;
const BATCH_ROWS: usize = 16 * 1024;

fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let meta = entry.metadata().expect("stat");
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

/// Every row of the hot tier, as batches, and the seconds the read took.
fn read_all(store: &Store) -> (Vec<flowsql_store::RecordBatch>, f64) {
    let started = Instant::now();
    let mut batches = Vec::new();
    store
        .hot()
        .for_each_flow_batch(TimeRange::ALL, 64 * 1024, |b| {
            batches.push(b);
            Ok(())
        })
        .expect("read");
    (batches, started.elapsed().as_secs_f64())
}

/// Seconds to delete every row of `store` in one transaction.
fn delete_all(store: &Store) -> f64 {
    let started = Instant::now();
    store
        .hot()
        .connection()
        .execute_batch("BEGIN IMMEDIATE; DELETE FROM flows WHERE timestamp < 9223372036854775807 AND id <= 9223372036854775807; COMMIT;")
        .expect("delete");
    started.elapsed().as_secs_f64()
}

/// Exports everything; returns the report, the seconds it took, and the
/// longest write-lock hold of one file (from its rename to its commit: the
/// delete and the manifest row).
fn export_all(store: &mut Store) -> (ExportReport, f64, f64) {
    let started = Instant::now();
    let mut renamed = None;
    let mut longest_lock = 0f64;
    let report = store
        .export(&ExportOptions::up_to(i64::MAX), &mut |event| match event {
            ExportEvent::Renamed(_) => renamed = Some(Instant::now()),
            ExportEvent::Committed(_) => {
                if let Some(at) = renamed.take() {
                    longest_lock = longest_lock.max(at.elapsed().as_secs_f64());
                }
            }
            _ => {}
        })
        .expect("export");
    (report, started.elapsed().as_secs_f64(), longest_lock)
}

fn main() {
    let count: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let root = PathBuf::from(std::env::var("FLOWSQL_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))
        .join(format!("flowsql-store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);

    eprintln!("generating {count} flows...");
    let flows = RealisticMix::new(42, 1000.0).take_flows(count);
    let span_s = (flows[count - 1].timestamp_ns - flows[0].timestamp_ns) as f64 / 1e9;

    // Ingest: FlowBegin -> Arrow batch -> SQLite, one thread.
    let mut store = Store::open(&root).expect("open store");
    // The Arrow side alone: FlowBegin -> batches.
    let started = Instant::now();
    let mut columns = FlowColumns::with_capacity(BATCH_ROWS);
    for flow in &flows {
        columns.push(flow);
        if columns.len() == BATCH_ROWS {
            std::hint::black_box(columns.finish());
        }
    }
    std::hint::black_box(columns.finish());
    let batcher_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut columns = FlowColumns::with_capacity(BATCH_ROWS);
    for flow in &flows {
        columns.push(flow);
        if columns.len() == BATCH_ROWS {
            store.hot_mut().insert_flows(&columns.finish()).expect("insert");
        }
    }
    if !columns.is_empty() {
        store.hot_mut().insert_flows(&columns.finish()).expect("insert");
    }
    let ingest_s = started.elapsed().as_secs_f64();
    store.hot().checkpoint().expect("checkpoint");
    store.hot().connection().execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").expect("truncate WAL");
    let sqlite_bytes = dir_bytes(&root);

    // The same database for the capturing process's export (a copy, since
    // an export empties it).
    let lean_root = root.with_extension("lean");
    let _ = std::fs::remove_dir_all(&lean_root);
    std::fs::create_dir_all(&lean_root).expect("mkdir");
    std::fs::copy(root.join("flowsql.db"), lean_root.join("flowsql.db")).expect("copy the database");

    // Where the export's time goes, each part alone on one core: reading
    // SQLite into Arrow batches (through mmap, and as the capturing process
    // reads: no mmap, a small cache), encoding Parquet, deleting the rows.
    let (batches, read_s) = read_all(&store);
    let lean_read_s = read_all(&Store::open_for_capture(&lean_root).expect("open lean")).1;
    let scratch = root.with_extension("scratch");
    let started = Instant::now();
    let mut pending = cold::PendingFile::create(&scratch, "encode-only.parquet").expect("create");
    for batch in &batches {
        pending.write(batch).expect("encode");
    }
    pending.finish().expect("finish");
    let encode_s = started.elapsed().as_secs_f64();
    let mut other = Store::open(scratch.join("db")).expect("second store");
    for batch in &batches {
        other.hot_mut().insert_flows(batch).expect("insert");
    }
    let delete_s = delete_all(&other);
    drop(other);
    let _ = std::fs::remove_dir_all(&scratch);
    let mut other = Store::open_for_capture(scratch.join("db")).expect("second store");
    for batch in &batches {
        other.hot_mut().insert_flows(batch).expect("insert");
    }
    let lean_delete_s = delete_all(&other);
    drop((other, batches));
    let _ = std::fs::remove_dir_all(&scratch);

    // Export: everything hot -> Parquet, as `flowsql export` does, then as
    // the capture's scheduled export does.
    let (report, export_s, export_lock_s) = export_all(&mut store);
    assert_eq!(report.rows as usize, count);
    assert_eq!(store.hot().flow_count(TimeRange::ALL).expect("count"), 0);
    let mut lean = Store::open_for_capture(&lean_root).expect("open lean");
    let (lean_report, lean_export_s, lean_lock_s) = export_all(&mut lean);
    assert_eq!(lean_report.rows as usize, count);
    drop(lean);
    let _ = std::fs::remove_dir_all(&lean_root);
    let largest_file = report.files.iter().map(|f| f.rows).max().unwrap_or(0);
    let parquet_bytes = dir_bytes(&root.join("flows"));
    // Compressed bytes per column, from the files' footers.
    let mut by_column: Vec<(String, i64)> = Vec::new();
    for file in &report.files {
        let reader = std::fs::File::open(&file.path).expect("open");
        let metadata =
            parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&reader).expect("footer");
        for row_group in metadata.row_groups() {
            for (i, column) in row_group.columns().iter().enumerate() {
                if by_column.len() <= i {
                    by_column.push((column.column_path().string(), 0));
                }
                by_column[i].1 += column.compressed_size();
            }
        }
    }

    // The same flows as NDJSON, gzip'd (gzip -6, the default).
    let mut gzip = Command::new("gzip")
        .arg("-6")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip runs");
    let mut stdin = gzip.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let mut out = std::io::BufWriter::new(&mut stdin);
        let mut ndjson_bytes = 0u64;
        for flow in &flows {
            let mut line = serde_json::to_vec(flow).expect("json");
            line.push(b'\n');
            ndjson_bytes += line.len() as u64;
            out.write_all(&line).expect("write");
        }
        out.flush().expect("flush");
        drop(out);
        drop(stdin);
        ndjson_bytes
    });
    let output = gzip.wait_with_output().expect("gzip finishes");
    let ndjson_bytes = writer.join().expect("writer");
    let gzip_bytes = output.stdout.len() as u64;

    let n = count as f64;
    let ingest = n / ingest_s;
    let export = n / export_s;
    let parquet = parquet_bytes as f64 / n;
    println!("flows: {count} (realistic mix, seed 42, {:.0} s of traffic at ~1000 flows/s)", span_s);
    println!("files: {} Parquet files", report.files.len());
    println!();
    println!("| measure | result | target | ratio to target |");
    println!("|---|---|---|---|");
    println!(
        "| ingest into the hot tier (1 core, FlowBegin -> Arrow -> SQLite) | {:.0} flows/s | >= 500,000 flows/s | {:.2}x |",
        ingest,
        ingest / INGEST_TARGET
    );
    println!(
        "| export hot -> cold (SQLite -> Parquet, manifest commit; `flowsql export`: reads through mmap) | {:.0} flows/s | >= 2,000,000 flows/s | {:.2}x |",
        export,
        export / EXPORT_TARGET
    );
    println!(
        "| export hot -> cold in the capturing process (no mmap, 2 MiB page cache) | {:.0} flows/s | >= 2,000,000 flows/s | {:.2}x |",
        n / lean_export_s,
        n / lean_export_s / EXPORT_TARGET
    );
    println!(
        "| write lock held by the export, longest per file ({largest_file} rows: delete + manifest row) | {:.0} ms (capturing process: {:.0} ms) | | |",
        export_lock_s * 1e3,
        lean_lock_s * 1e3
    );
    println!(
        "| Parquet bytes per flow | {:.2} B | <= 12 B | {:.2}x (lower is better) |",
        parquet,
        parquet / PARQUET_TARGET
    );
    println!(
        "| &nbsp;&nbsp;part of ingest: FlowBegin -> Arrow batches alone | {:.0} flows/s | | |",
        n / batcher_s
    );
    println!(
        "| &nbsp;&nbsp;part of export: read SQLite -> Arrow alone (mmap) | {:.0} flows/s | | |",
        n / read_s
    );
    println!(
        "| &nbsp;&nbsp;part of export: read SQLite -> Arrow alone (no mmap, 2 MiB cache) | {:.0} flows/s | | |",
        n / lean_read_s
    );
    println!("| &nbsp;&nbsp;part of export: encode Parquet alone | {:.0} flows/s | | |", n / encode_s);
    println!(
        "| &nbsp;&nbsp;part of export: delete the rows from SQLite alone (32 MB cache) | {:.0} flows/s | | |",
        n / delete_s
    );
    println!(
        "| &nbsp;&nbsp;part of export: delete the rows from SQLite alone (2 MiB cache) | {:.0} flows/s | | |",
        n / lean_delete_s
    );
    println!(
        "| SQLite bytes per flow (hot tier, after checkpoint) | {:.2} B | | {:.1}x Parquet |",
        sqlite_bytes as f64 / n,
        sqlite_bytes as f64 / parquet_bytes as f64
    );
    println!(
        "| NDJSON bytes per flow | {:.2} B | | {:.1}x Parquet |",
        ndjson_bytes as f64 / n,
        ndjson_bytes as f64 / parquet_bytes as f64
    );
    println!(
        "| gzip -6 NDJSON bytes per flow | {:.2} B | | {:.1}x Parquet |",
        gzip_bytes as f64 / n,
        gzip_bytes as f64 / parquet_bytes as f64
    );
    println!();
    println!("Parquet bytes per flow by column:");
    println!();
    println!("| column | bytes per flow |");
    println!("|---|---|");
    for (column, bytes) in &by_column {
        println!("| `{column}` | {:.2} |", *bytes as f64 / n);
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&root);
}
