//! Store benchmarks (release build, not part of the tests):
//!
//! ```sh
//! cargo bench -p flowsql-store --bench store            # 2,000,000 flows
//! cargo bench -p flowsql-store --bench store -- 500000  # fewer
//! ```
//!
//! On one realistic mix of flows ([`RealisticMix`]: many flows to a few
//! popular destinations, a long tail, 30% IPv6), and on the same flows with
//! 32 names on every named destination (the name cache's most), measures in
//! one run:
//! - ingest into the hot tier on one core: `FlowBegin`s into Arrow batches
//!   of 16,384 rows (shared values as dictionaries), each sorted, encoded as
//!   compressed Arrow IPC and committed as one SQLite row; with LZ4 and with
//!   ZSTD side by side;
//! - the hot tier's bytes per flow, both compressions;
//! - export hot -> cold (the exactly-once protocol included), as `flowsql
//!   export` does it and as the capturing process's scheduled export does
//!   (no mmap, a small page cache), and how long it holds the write lock;
//! - bytes per flow: Parquet (by column), and gzip'd NDJSON of the same
//!   flows;
//! - the parts of ingest and export alone, to show what limits them;
//!
//! and prints Markdown tables with the ratios to the targets.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use flowsql_event::{DomainList, DomainName, FlowBegin};
use flowsql_store::ipc::{self, Compression};
use flowsql_store::synthetic::RealisticMix;
use flowsql_store::{
    ExportEvent, ExportOptions, ExportReport, FlowColumns, RecordBatch, Store, TimeRange, cold, flows_table,
    hot,
};

const INGEST_TARGET: f64 = 2_000_000.0;
const EXPORT_TARGET: f64 = 2_000_000.0;
const HOT_BYTES_TARGET: f64 = 40.0;
const PARQUET_TARGET: f64 = 12.0;
const BATCH_ROWS: usize = 16 * 1024;

/// CPU seconds this process has used (all threads, user and system): the
/// machine may be shared, so a rate is reported with the CPU it took.
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the pointer it is given, which
    // points at enough room for one; RUSAGE_SELF is always valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let time = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Runs `f` and returns its result, its wall seconds and its CPU seconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let value = f();
    (value, wall.elapsed().as_secs_f64(), cpu_seconds() - cpu)
}

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

/// The same flows with every named destination carrying 32 names (one
/// shared list per address, as the name cache hands them out).
fn with_32_names(flows: &[FlowBegin]) -> Vec<FlowBegin> {
    let mut lists: HashMap<IpAddr, DomainList> = HashMap::new();
    flows
        .iter()
        .map(|flow| {
            if flow.dst_domains.is_empty() {
                return flow.clone();
            }
            let list = lists.entry(flow.dst_ip).or_insert_with(|| {
                (0..32)
                    .map(|i| DomainName::from(format!("n{i:02}.{}.cdn.example", flow.dst_ip).as_str()))
                    .collect()
            });
            FlowBegin { dst_domains: list.clone(), ..flow.clone() }
        })
        .collect()
}

/// Ingests `flows` into a new store at `root` as the capture's writer does
/// (batches of 16,384 rows, one transaction each), with `compression`;
/// returns the seconds it took and the hot tier's bytes afterwards.
fn ingest(root: &Path, flows: &[FlowBegin], compression: Compression) -> (f64, u64) {
    let _ = std::fs::remove_dir_all(root);
    let mut store = Store::open(root).expect("open store");
    let table = flows_table();
    let started = Instant::now();
    let mut columns = FlowColumns::with_capacity(BATCH_ROWS);
    let commit = |store: &mut Store, batch: RecordBatch| {
        let encoded = hot::encode(table, &batch, compression).expect("encode").expect("rows");
        store.insert_encoded(table.name(), &encoded).expect("insert");
    };
    for flow in flows {
        columns.push(flow);
        if columns.len() == BATCH_ROWS {
            commit(&mut store, columns.finish());
        }
    }
    if !columns.is_empty() {
        commit(&mut store, columns.finish());
    }
    let seconds = started.elapsed().as_secs_f64();
    let bytes = store.hot_summary(None).expect("summary").bytes;
    (seconds, bytes)
}

/// Exports everything; returns the report, the seconds it took, and the
/// longest write-lock hold of one file (from its rename to its commit).
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

/// Seconds to read and decode every hot batch into the logical schema.
fn decode_all(store: &Store) -> (Vec<RecordBatch>, f64) {
    let started = Instant::now();
    let batches = store.hot_flows(TimeRange::ALL).expect("read");
    (batches, started.elapsed().as_secs_f64())
}

fn main() {
    let count: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let base = PathBuf::from(std::env::var("FLOWSQL_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))
        .join(format!("flowsql-store-bench-{}", std::process::id()));

    eprintln!("generating {count} flows...");
    let flows = RealisticMix::new(42, 1000.0).take_flows(count);
    let flows32 = with_32_names(&flows);
    let span_s = (flows[count - 1].timestamp_ns - flows[0].timestamp_ns) as f64 / 1e9;
    let n = count as f64;

    // The Arrow side of ingest alone: FlowBegin -> batches.
    let started = Instant::now();
    let mut columns = FlowColumns::with_capacity(BATCH_ROWS);
    let mut sample = None;
    for flow in &flows {
        columns.push(flow);
        if columns.len() == BATCH_ROWS {
            let batch = columns.finish();
            if sample.is_none() {
                sample = Some(batch.clone());
            }
            std::hint::black_box(batch);
        }
    }
    std::hint::black_box(columns.finish());
    let batcher_s = started.elapsed().as_secs_f64();
    let sample = sample.expect("a full batch");
    let started = Instant::now();
    let rounds = 20;
    for _ in 0..rounds {
        std::hint::black_box(ipc::encode(&sample, Compression::Lz4).expect("encode"));
    }
    let encode_lz4_s = started.elapsed().as_secs_f64() / rounds as f64 / sample.num_rows() as f64 * n;

    eprintln!("ingest...");
    let root = base.join("lz4");
    let ((ingest_lz4_s, hot_lz4), _, ingest_lz4_cpu) = timed(|| ingest(&root, &flows, Compression::Lz4));
    let (ingest_zstd_s, hot_zstd) = ingest(&base.join("zstd"), &flows, Compression::Zstd);
    let (ingest32_lz4_s, hot32_lz4) = ingest(&base.join("lz4-32"), &flows32, Compression::Lz4);
    let (ingest32_zstd_s, hot32_zstd) = ingest(&base.join("zstd-32"), &flows32, Compression::Zstd);
    let _ = std::fs::remove_dir_all(base.join("zstd"));
    let _ = std::fs::remove_dir_all(base.join("zstd-32"));

    // The same database for the capturing process's export (a copy, since
    // an export empties it).
    let lean_root = base.join("lean");
    std::fs::create_dir_all(&lean_root).expect("mkdir");
    let mut store = Store::open(&root).expect("open");
    store.checkpoint().expect("checkpoint");
    std::fs::copy(root.join("flowsql.db"), lean_root.join("flowsql.db")).expect("copy the database");
    let _ = std::fs::copy(root.join("flowsql.db-wal"), lean_root.join("flowsql.db-wal"));

    eprintln!("export...");
    // Parts of the export alone: decode the hot batches, encode Parquet.
    let ((batches, _), decode_s, decode_cpu) = timed(|| decode_all(&store));
    let scratch = base.join("scratch");
    let ((), encode_s, encode_cpu) = timed(|| {
        let mut pending =
            cold::PendingFile::create(flows_table(), &scratch, "encode-only.parquet", Vec::new())
                .expect("create");
        for batch in &batches {
            pending.write(batch).expect("encode");
        }
        pending.finish().expect("finish");
    });
    drop(batches);
    let _ = std::fs::remove_dir_all(&scratch);

    let ((report, export_s, export_lock_s), _, export_cpu) = timed(|| export_all(&mut store));
    assert_eq!(report.rows as usize, count);
    assert_eq!(store.hot_flow_count(TimeRange::ALL).expect("count"), 0);
    let mut lean = Store::open_for_capture(&lean_root).expect("open lean");
    let (lean_report, lean_export_s, lean_lock_s) = export_all(&mut lean);
    assert_eq!(lean_report.rows as usize, count);
    drop(lean);
    let _ = std::fs::remove_dir_all(&lean_root);
    let mut store32 = Store::open(base.join("lz4-32")).expect("open");
    let (report32, export32_s, _) = export_all(&mut store32);
    assert_eq!(report32.rows as usize, count);
    let parquet32 = dir_bytes(&base.join("lz4-32").join("flows")) as f64 / n;
    drop(store32);
    let _ = std::fs::remove_dir_all(base.join("lz4-32"));

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

    let parquet = parquet_bytes as f64 / n;
    let rate = |s: f64| format!("{:.0} flows/s", n / s);
    let per_flow = |cpu: f64| format!("{:.2} µs CPU/flow", cpu / n * 1e6);
    println!("flows: {count} (realistic mix, seed 42, {span_s:.0} s of traffic at ~1000 flows/s)");
    println!("files: {} Parquet files ({largest_file} rows in the largest)", report.files.len());
    println!();
    println!("| measure | result | target | ratio to target |");
    println!("|---|---|---|---|");
    println!(
        "| ingest into the hot tier, 1 core (FlowBegin -> Arrow batch -> LZ4 IPC -> one SQLite row per 16,384 flows) | {} ({}) | >= 2,000,000 flows/s | {:.2}x |",
        rate(ingest_lz4_s),
        per_flow(ingest_lz4_cpu),
        n / ingest_lz4_s / INGEST_TARGET
    );
    println!(
        "| &nbsp;&nbsp;the same with ZSTD | {} | | {:.2}x |",
        rate(ingest_zstd_s),
        n / ingest_zstd_s / INGEST_TARGET
    );
    println!(
        "| &nbsp;&nbsp;32 names on every named flow, LZ4 (ZSTD) | {} ({}) | | {:.2}x |",
        rate(ingest32_lz4_s),
        rate(ingest32_zstd_s),
        n / ingest32_lz4_s / INGEST_TARGET
    );
    println!(
        "| hot-tier bytes per flow, LZ4 (ZSTD) | {:.2} B ({:.2} B) | <= 40 B | {:.2}x (lower is better) |",
        hot_lz4 as f64 / n,
        hot_zstd as f64 / n,
        hot_lz4 as f64 / n / HOT_BYTES_TARGET
    );
    println!(
        "| &nbsp;&nbsp;32 names on every named flow, LZ4 (ZSTD) | {:.2} B ({:.2} B) | | {:.2}x |",
        hot32_lz4 as f64 / n,
        hot32_zstd as f64 / n,
        hot32_lz4 as f64 / n / HOT_BYTES_TARGET
    );
    println!(
        "| export hot -> cold (exactly-once protocol; `flowsql export`: reading and encoding on two threads) | {} ({}) | >= 2,000,000 flows/s | {:.2}x |",
        rate(export_s),
        per_flow(export_cpu),
        n / export_s / EXPORT_TARGET
    );
    println!(
        "| &nbsp;&nbsp;the same in the capturing process (no mmap, 2 MiB page cache) | {} | | {:.2}x |",
        rate(lean_export_s),
        n / lean_export_s / EXPORT_TARGET
    );
    println!(
        "| &nbsp;&nbsp;32 names on every named flow | {} | | {:.2}x |",
        rate(export32_s),
        n / export32_s / EXPORT_TARGET
    );
    println!(
        "| write lock held by the export, longest per file (batches removed + manifest row) | {:.1} ms (capturing process: {:.1} ms) | | |",
        export_lock_s * 1e3,
        lean_lock_s * 1e3
    );
    println!(
        "| Parquet bytes per flow (32 names: {parquet32:.2} B) | {parquet:.2} B | <= 12 B | {:.2}x (lower is better) |",
        parquet / PARQUET_TARGET
    );
    println!("| &nbsp;&nbsp;part of ingest: FlowBegin -> Arrow batches alone | {} | | |", rate(batcher_s));
    println!("| &nbsp;&nbsp;part of ingest: LZ4 IPC encode alone | {} | | |", rate(encode_lz4_s));
    println!(
        "| &nbsp;&nbsp;part of export: read + decode the hot batches alone | {} ({}) | | |",
        rate(decode_s),
        per_flow(decode_cpu)
    );
    println!(
        "| &nbsp;&nbsp;part of export: encode Parquet alone | {} ({}) | | |",
        rate(encode_s),
        per_flow(encode_cpu)
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
    let _ = std::fs::remove_dir_all(&base);
}
