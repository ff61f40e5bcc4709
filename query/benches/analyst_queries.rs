//! flowsql against DuckDB on the same Parquet files, for the queries
//! analysts run most: top destinations by domain over a day, per-hour
//! counts, incoming connections by port, a CIDR filter, and the as-of join
//! of flows with the names valid at their time.
//!
//! ```text
//! cargo bench -p flowsql-query --bench analyst_queries
//! FLOWSQL_BENCH_ROWS=10000000 cargo bench -p flowsql-query --bench analyst_queries   # smaller
//! ```
//!
//! The data set (one day of a busy host, `FLOWSQL_BENCH_ROWS` flows, default
//! 100 million) is generated once into `FLOWSQL_BENCH_DIR` (default
//! `/work/bench-data/<rows>`) through the store's own export, and reused.
//! DuckDB (the `duckdb` Python package) reads the same `flows/` directory
//! with hive partitioning, and the same domains rows from a Parquet copy.
//! Each query runs once to warm up, then three times; the median counts.
//! Both engines use the machine's cores. Results are compared, so a ratio
//! is never of two different answers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use flowsql_event::{DomainName, DomainObservation, FlowBegin};
use flowsql_query::{Session, SessionOptions};
use flowsql_store::batch_from_flows;
use flowsql_store::synthetic::{BASE_NS, RealisticMix};
use flowsql_store::{ExportOptions, Store};

const DAY_NS: i64 = 86_400_000_000_000;
const HOUR_NS: i64 = 3_600_000_000_000;
/// TTL of the popular names (re-resolved all day) and of the long tail.
const POPULAR_TTL_NS: i64 = 300_000_000_000;
const TAIL_TTL_NS: i64 = 3_600_000_000_000;

struct Query {
    name: &'static str,
    flowsql: String,
    duckdb: String,
}

fn ts(ns: i64) -> String {
    flowsql_event::format_timestamp(ns)
}

fn queries() -> Vec<Query> {
    let day = (ts(BASE_NS), ts(BASE_NS + DAY_NS));
    let hour = (ts(BASE_NS + 12 * HOUR_NS), ts(BASE_NS + 13 * HOUR_NS));
    let top_domains = format!(
        "SELECT name, count(*) AS flows FROM (SELECT unnest(dstDomains) AS name FROM flows \
         WHERE timestamp >= TIMESTAMP '{}' AND timestamp < TIMESTAMP '{}') GROUP BY name ORDER BY flows DESC, name LIMIT 10",
        day.0, day.1
    );
    let per_hour =
        "SELECT date_trunc('hour', timestamp) AS hour, count(*) AS flows FROM flows GROUP BY 1 ORDER BY 1"
            .to_owned();
    let incoming = "SELECT dstPort, count(*) AS flows FROM flows WHERE connectionDirection = 'incoming' \
                    GROUP BY dstPort ORDER BY flows DESC, dstPort LIMIT 10"
        .to_owned();
    let cidr_flowsql = "SELECT count(*) AS flows, count(DISTINCT dstIP) AS addresses FROM flows \
                        WHERE ip_in_cidr(dstIP, '10.0.0.0/8')"
        .to_owned();
    // DuckDB's inet extension needs a download; for dotted quads (flowsql
    // never stores IPv4 any other way) this prefix test is the same set.
    let cidr_duckdb = "SELECT count(*) AS flows, count(DISTINCT dstIP) AS addresses FROM flows \
                       WHERE starts_with(dstIP, '10.')"
        .to_owned();
    let as_of = format!(
        "SELECT d.name, count(*) AS flows FROM flows f JOIN domains d \
         ON d.ip = f.dstIP AND f.timestamp BETWEEN d.firstSeen AND d.expiresAt \
         WHERE f.timestamp >= TIMESTAMP '{0}' AND f.timestamp < TIMESTAMP '{1}' \
         AND d.expiresAt >= TIMESTAMP '{0}' AND d.firstSeen < TIMESTAMP '{1}' \
         GROUP BY d.name ORDER BY flows DESC, d.name LIMIT 10",
        hour.0, hour.1
    );
    vec![
        Query { name: "top dstDomains over a day", flowsql: top_domains.clone(), duckdb: top_domains },
        Query { name: "flows per hour", flowsql: per_hour.clone(), duckdb: per_hour },
        Query { name: "incoming by port", flowsql: incoming.clone(), duckdb: incoming },
        Query { name: "CIDR filter (10.0.0.0/8)", flowsql: cidr_flowsql, duckdb: cidr_duckdb },
        Query { name: "as-of join with domains (1 hour)", flowsql: as_of.clone(), duckdb: as_of },
    ]
}

/// The DNS answers a host making these flows would have received: each
/// destination name is re-resolved when its TTL ran out.
struct DomainsOfFlows {
    valid_until: HashMap<(std::net::IpAddr, DomainName), i64>,
    observations: Vec<DomainObservation>,
    popular_ttl: HashMap<DomainName, bool>,
}

impl DomainsOfFlows {
    fn see(&mut self, flow: &FlowBegin) {
        for name in flow.dst_domains.iter() {
            let key = (flow.dst_ip, name.clone());
            let until = self.valid_until.get(&key).copied().unwrap_or(i64::MIN);
            if flow.timestamp_ns <= until {
                continue;
            }
            let popular = *self.popular_ttl.entry(name.clone()).or_insert_with(|| !name.contains(".tail"));
            let seen = flow.timestamp_ns - 1_000_000;
            let expires = seen + if popular { POPULAR_TTL_NS } else { TAIL_TTL_NS };
            self.valid_until.insert(key, expires);
            self.observations.push(DomainObservation {
                ip: flow.dst_ip,
                name: name.clone(),
                question: flow.dst_domains[0].clone(),
                seen_ns: seen,
                expires_ns: expires,
            });
        }
    }
}

fn generate(dir: &Path, rows: u64) {
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(dir);
    let mut store = Store::open(dir).expect("store opens");
    let mut mix = RealisticMix::new(42, rows as f64 / 86_400.0);
    let mut domains =
        DomainsOfFlows { valid_until: HashMap::new(), observations: Vec::new(), popular_ttl: HashMap::new() };
    let chunk = 2_000_000u64;
    let mut made = 0u64;
    while made < rows {
        let n = chunk.min(rows - made);
        let flows: Vec<FlowBegin> = (0..n).map(|_| mix.next_flow()).collect();
        for flow in &flows {
            domains.see(flow);
        }
        store.insert_flows(&batch_from_flows(&flows)).expect("insert");
        let cutoff = flows.last().map_or(i64::MAX, |f| f.timestamp_ns + 1);
        store.export(&ExportOptions::up_to(cutoff), &mut |_| {}).expect("export");
        made += n;
        eprint!("\rgenerated {made} of {rows} flows ({:.0} s)", started.elapsed().as_secs_f64());
    }
    for part in domains.observations.chunks(100_000) {
        store.record_domains(part).expect("domains");
    }
    eprintln!(
        "\ngenerated {rows} flows and {} domain observations in {:.0} s",
        domains.observations.len(),
        started.elapsed().as_secs_f64()
    );
    std::fs::write(dir.join("bench-rows"), rows.to_string()).expect("marker");
}

/// Runs `sql` once to warm up and three times timed; returns the median time
/// and the result as text lines.
/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: usage points to writable memory the size of a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    // SAFETY: getrusage fills the struct (it cannot fail for RUSAGE_SELF).
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn time_flowsql(runtime: &tokio::runtime::Runtime, session: &Session, sql: &str) -> (Duration, Vec<String>) {
    let mut times = Vec::new();
    let mut text = Vec::new();
    let cpu_before = cpu_time();
    for round in 0..4 {
        if round == 1 {
            eprint!("(warm-up CPU {:.3} s) ", (cpu_time() - cpu_before).as_secs_f64());
        }
        let started = Instant::now();
        let batches = runtime.block_on(session.sql(sql)).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let elapsed = started.elapsed();
        if round > 0 {
            times.push(elapsed);
        }
        text = result_lines(&batches);
    }
    times.sort();
    eprint!("CPU per run {:.3} s, ", (cpu_time() - cpu_before).as_secs_f64() / 4.0);
    (times[1], text)
}

fn result_lines(batches: &[datafusion::arrow::record_batch::RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut lines = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters.iter().map(|f| f.value(row).to_string()).collect();
            lines.push(cells.join("|"));
        }
    }
    lines
}

const DUCKDB_SCRIPT: &str = r#"
import duckdb, json, statistics, sys, time
data_dir, queries = sys.argv[1], json.loads(sys.stdin.read())
con = duckdb.connect()
con.execute(f"CREATE VIEW flows AS SELECT * FROM read_parquet('{data_dir}/flows/**/*.parquet', hive_partitioning = true)")
con.execute(f"CREATE VIEW domains AS SELECT * FROM read_parquet('{data_dir}/domains.parquet')")
con.execute("SET TimeZone = 'UTC'")
con.execute("SET enable_progress_bar = false")
out = []
for sql in queries:
    times, rows = [], None
    for round in range(4):
        started = time.perf_counter()
        rows = con.execute(sql).fetchall()
        elapsed = time.perf_counter() - started
        if round > 0:
            times.append(elapsed)
    out.append({"seconds": statistics.median(times), "rows": [[str(v) for v in row] for row in rows]})
print(json.dumps({"version": duckdb.__version__, "threads": con.execute("SELECT current_setting('threads')").fetchone()[0], "results": out}))
"#;

fn main() {
    let rows: u64 =
        std::env::var("FLOWSQL_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000_000);
    let dir: PathBuf = std::env::var("FLOWSQL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(format!("/work/bench-data/{rows}")));
    let ready =
        std::fs::read_to_string(dir.join("bench-rows")).ok().and_then(|r| r.trim().parse::<u64>().ok());
    if ready != Some(rows) {
        generate(&dir, rows);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let session = Session::open(SessionOptions::new(&dir)).expect("session");

    // Experiments: FLOWSQL_BENCH_SQL="stmt; stmt; ..." runs each statement
    // (timed like the queries) and stops.
    if let Ok(sqls) = std::env::var("FLOWSQL_BENCH_SQL") {
        for sql in sqls.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let (time, lines) = time_flowsql(&runtime, &session, sql);
            eprintln!("{:.3} s  {sql}\n    {:?}", time.as_secs_f64(), &lines[..lines.len().min(2)]);
        }
        return;
    }

    // DuckDB reads the domains rows from a Parquet copy.
    let domains_parquet = dir.join("domains.parquet");
    if !domains_parquet.exists() {
        let copy =
            format!("COPY (SELECT * FROM domains) TO '{}' STORED AS PARQUET", domains_parquet.display());
        runtime.block_on(session.sql(&copy)).expect("copy domains");
    }
    let bytes: u64 = walk_bytes(&dir.join("flows"));

    let only = std::env::var("FLOWSQL_BENCH_ONLY").unwrap_or_default();
    let queries: Vec<Query> = queries().into_iter().filter(|q| q.name.contains(only.as_str())).collect();
    let mut flowsql_results = Vec::new();
    for query in &queries {
        let (time, lines) = time_flowsql(&runtime, &session, &query.flowsql);
        eprintln!("flowsql: {:.3} s  {}", time.as_secs_f64(), query.name);
        flowsql_results.push((time, lines));
    }
    if std::env::var_os("FLOWSQL_BENCH_SKIP_DUCKDB").is_some() {
        return;
    }
    let sqls: Vec<&str> = queries.iter().map(|q| q.duckdb.as_str()).collect();
    let mut child = Command::new("python3")
        .args(["-c", DUCKDB_SCRIPT, &dir.display().to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (pip install duckdb)");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::to_string(&sqls).expect("json").as_bytes())
        .expect("send queries");
    let output = child.wait_with_output().expect("duckdb finishes");
    assert!(output.status.success(), "the DuckDB side failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last_line = stdout.lines().last().unwrap_or_default();
    let duck: serde_json::Value = serde_json::from_str(last_line).expect("DuckDB side prints JSON");

    println!(
        "{rows} flows, {:.1} bytes/flow in Parquet ({:.2} GB), {} cores",
        bytes as f64 / rows as f64,
        bytes as f64 / 1e9,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "DuckDB {} with {} threads; flowsql with {} target partitions",
        duck["version"],
        duck["threads"],
        session.context().state().config().target_partitions()
    );
    println!("| query | flowsql | DuckDB | flowsql/DuckDB | same result |");
    println!("|---|---|---|---|---|");
    let duck_results: Vec<(f64, Vec<String>)> = duck["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let rows = r["rows"].as_array().expect("rows").iter();
            let lines = rows
                .map(|row| {
                    let cells = row.as_array().expect("row").iter();
                    cells.map(|c| c.as_str().unwrap_or_default().to_owned()).collect::<Vec<_>>().join("|")
                })
                .collect();
            (r["seconds"].as_f64().unwrap_or(f64::NAN), lines)
        })
        .collect();
    for ((query, (time, lines)), (duck_secs, duck_lines)) in
        queries.iter().zip(&flowsql_results).zip(&duck_results)
    {
        let same = normalize(lines) == normalize(duck_lines);
        println!(
            "| {} | {:.3} s | {:.3} s | {:.2} | {} |",
            query.name,
            time.as_secs_f64(),
            duck_secs,
            time.as_secs_f64() / duck_secs,
            if same { "yes" } else { "NO" }
        );
        if !same {
            eprintln!(
                "{}:\n  flowsql: {:?}\n  duckdb:  {:?}",
                query.name,
                &lines[..lines.len().min(3)],
                &duck_lines[..duck_lines.len().min(3)]
            );
        }
    }
}

/// Results compared as text, with timestamp spellings unified.
fn normalize(lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| l.replace('T', " ").replace('Z', "").replace("+00:00", "")).collect()
}

fn walk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() { walk_bytes(&path) } else { e.metadata().map_or(0, |m| m.len()) }
        })
        .sum()
}
