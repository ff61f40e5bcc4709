//! flowsql against DuckDB on the same Parquet files, for the queries
//! analysts run most: top destinations by domain over a day, per-hour
//! counts, incoming connections by port, a CIDR filter, the as-of join of
//! flows with the names valid at their time, the join of begins with their
//! ends (top talkers by bytes per domain), processes by domain, failed
//! attempts by destination, a point lookup of one 5-tuple over a day, and
//! the last minute's rows as `shell --capture` sees them (hot and live rows
//! included). For each query: both engines' times, their ratio, whether the
//! results are the same, and each engine's peak memory during the query.
//!
//! ```text
//! cargo bench -p flowsql-query --bench analyst_queries
//! FLOWSQL_BENCH_ROWS=10000000 cargo bench -p flowsql-query --bench analyst_queries   # smaller
//! ```
//!
//! The data set (one day of a busy host, `FLOWSQL_BENCH_ROWS` flows, default
//! 100 million) is generated once into `FLOWSQL_BENCH_DIR` (default
//! `/work/bench-data/<rows>`) through the store's own export, and reused
//! (the `bench-rows` marker names the rows and the data set's version; a
//! directory of an older version is generated again). Every begin has its
//! end in `flow_ends` (mostly `fin`, some resets; bytes skewed: most
//! connections small, a few large), and about 3 % of the outgoing attempts
//! failed (`refused`, `timeout`, `unreachable`): an end with no begin, as a
//! capture records them. The data's last minute stays out of the export, as
//! a capture's recent rows: in the hot tier, and its last 5 seconds are
//! handed to the session as a capturing process's live (uncommitted) rows
//! (kept between runs in a side store, `bench-live/`). `bench-params` holds
//! the 5-tuple the point lookup looks for (a flow of the data) and where the
//! last minute begins.
//!
//! DuckDB (the `duckdb` Python package) reads the same `flows/` and
//! `flow_ends/` directories with hive partitioning, plus `duckdb-hot/` (the
//! hot and live rows, exported by a side store into files of the same
//! types), so that both engines see the same rows in every query, and the
//! same domains rows from a Parquet copy.
//!
//! Each query runs once to warm up, then three times; the median counts. Each
//! query runs on flowsql and then on DuckDB before the next one, so both see
//! the same load on the machine.
//! Both engines use the machine's cores. Results are compared (as text, with
//! timestamp spellings unified), so a ratio is never of two different
//! answers. Peak memory is each process's peak resident set (`VmHWM`, reset
//! through `/proc/self/clear_refs` before the query) over the four runs: it
//! includes what the process held before the query (the baseline, printed
//! once), not only what the query added.
//!
//! `FLOWSQL_BENCH_ONLY=<text>` runs the queries whose name contains it;
//! `FLOWSQL_BENCH_SKIP_DUCKDB=1` runs flowsql's side only;
//! `FLOWSQL_BENCH_SQL="stmt; stmt"` times these statements in flowsql and
//! stops.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use flowsql_event::{Direction, DomainName, DomainObservation, EndReason, FlowBegin, FlowEnd, Side};
use flowsql_query::{LiveFlows, Session, SessionOptions};
use flowsql_store::synthetic::{BASE_NS, RealisticMix, Rng, end_of};
use flowsql_store::{ExportOptions, Store, StoreError, TimeRange};
use flowsql_store::{batch_from_ends, batch_from_flows, ends_from_batch, flow_ends_table, flows_from_batch};

const DAY_NS: i64 = 86_400_000_000_000;
const HOUR_NS: i64 = 3_600_000_000_000;
const SECOND_NS: i64 = 1_000_000_000;
/// TTL of the popular names (re-resolved all day) and of the long tail.
const POPULAR_TTL_NS: i64 = 300_000_000_000;
const TAIL_TTL_NS: i64 = 3_600_000_000_000;
/// The version of the generated data set, in the `bench-rows` marker after
/// the rows: a directory of another version is generated again.
const DATA_VERSION: &str = "v2 (flow_ends, hot and live rows)";
/// The side store of the live rows, and the one whose export gives DuckDB
/// the hot and live rows as files.
const LIVE_DIR: &str = "bench-live";
const DUCKDB_HOT_DIR: &str = "duckdb-hot";

struct Query {
    name: &'static str,
    flowsql: String,
    duckdb: String,
}

fn ts(ns: i64) -> String {
    flowsql_event::format_timestamp(ns)
}

/// The 5-tuple the point lookup looks for (TCP: the protocol is implied).
struct FiveTuple {
    src_ip: String,
    src_port: u16,
    dst_ip: String,
    dst_port: u16,
}

impl FiveTuple {
    fn of(flow: &FlowBegin) -> FiveTuple {
        FiveTuple {
            src_ip: flowsql_event::canonical_ip(flow.src_ip).to_string(),
            src_port: flow.src_port,
            dst_ip: flowsql_event::canonical_ip(flow.dst_ip).to_string(),
            dst_port: flow.dst_port,
        }
    }

    fn to_line(&self) -> String {
        format!("{} {} {} {}", self.src_ip, self.src_port, self.dst_ip, self.dst_port)
    }

    fn parse(line: &str) -> Option<FiveTuple> {
        let mut parts = line.split_whitespace();
        Some(FiveTuple {
            src_ip: parts.next()?.to_owned(),
            src_port: parts.next()?.parse().ok()?,
            dst_ip: parts.next()?.to_owned(),
            dst_port: parts.next()?.parse().ok()?,
        })
    }
}

fn queries(params: &Params) -> Vec<Query> {
    let lookup = &params.lookup;
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
    // The joins are bounded to one hour of begins: what an analyst runs
    // interactively (a whole day's 100 M begins with 100 M ends is a batch
    // job, not a question at the prompt).
    let as_of = format!(
        "SELECT d.name, count(*) AS flows FROM flows f JOIN domains d \
         ON d.ip = f.dstIP AND f.timestamp BETWEEN d.firstSeen AND d.expiresAt \
         WHERE f.timestamp >= TIMESTAMP '{0}' AND f.timestamp < TIMESTAMP '{1}' \
         AND d.expiresAt >= TIMESTAMP '{0}' AND d.firstSeen < TIMESTAMP '{1}' \
         GROUP BY d.name ORDER BY flows DESC, d.name LIMIT 10",
        hour.0, hour.1
    );
    // Each begin of the hour with its own end; ends are looked for up to an
    // hour after the last begin (a connection may last), as a user bounds
    // both sides of such a join.
    let talkers = format!(
        "SELECT f.dstDomains[1] AS domain, count(*) AS connections, sum(e.srcBytes + e.dstBytes) AS bytes \
         FROM flows f JOIN flow_ends e ON e.hostName = f.hostName AND e.flowId = f.flowId \
         WHERE f.timestamp >= TIMESTAMP '{0}' AND f.timestamp < TIMESTAMP '{1}' \
         AND e.timestamp >= TIMESTAMP '{0}' AND e.timestamp < TIMESTAMP '{2}' \
         GROUP BY 1 ORDER BY bytes DESC, domain NULLS LAST LIMIT 10",
        hour.0,
        hour.1,
        ts(BASE_NS + 14 * HOUR_NS)
    );
    let processes = format!(
        "SELECT processName, dstDomains[1] AS domain, count(*) AS flows FROM flows \
         WHERE timestamp >= TIMESTAMP '{}' AND timestamp < TIMESTAMP '{}' \
         GROUP BY 1, 2 ORDER BY flows DESC, processName, domain NULLS LAST LIMIT 10",
        day.0, day.1
    );
    let failed = format!(
        "SELECT dstIP, dstPort, count(*) AS attempts FROM flow_ends \
         WHERE endReason IN ('refused', 'timeout', 'unreachable') \
         AND timestamp >= TIMESTAMP '{}' AND timestamp < TIMESTAMP '{}' \
         GROUP BY dstIP, dstPort ORDER BY attempts DESC, dstIP, dstPort LIMIT 10",
        day.0, day.1
    );
    let point = format!(
        "SELECT timestamp, flowId, processName, dstDomains FROM flows \
         WHERE srcIP = '{}' AND srcPort = {} AND dstIP = '{}' AND dstPort = {} \
         AND timestamp >= TIMESTAMP '{}' AND timestamp < TIMESTAMP '{}' ORDER BY timestamp, flowId",
        lookup.src_ip, lookup.src_port, lookup.dst_ip, lookup.dst_port, day.0, day.1
    );
    // Every column; DuckDB's `*` would add the hive partition columns, so
    // it is given flowsql's columns by name.
    let last_minute = |columns: &str| {
        format!(
            "SELECT {columns} FROM flows WHERE timestamp >= TIMESTAMP '{}' ORDER BY timestamp, flowId",
            ts(params.hot_from_ns)
        )
    };
    let flows_columns: Vec<String> =
        flowsql_store::flows_schema().fields().iter().map(|f| format!("\"{}\"", f.name())).collect();
    vec![
        Query { name: "top dstDomains over a day", flowsql: top_domains.clone(), duckdb: top_domains },
        Query { name: "flows per hour", flowsql: per_hour.clone(), duckdb: per_hour },
        Query { name: "incoming by port", flowsql: incoming.clone(), duckdb: incoming },
        Query { name: "CIDR filter (10.0.0.0/8)", flowsql: cidr_flowsql, duckdb: cidr_duckdb },
        Query { name: "as-of join with domains (1 hour)", flowsql: as_of.clone(), duckdb: as_of },
        Query {
            name: "top talkers by bytes per domain (join with ends, 1 hour)",
            flowsql: talkers.clone(),
            duckdb: talkers,
        },
        Query { name: "processes by domain over a day", flowsql: processes.clone(), duckdb: processes },
        Query { name: "failed attempts by destination over a day", flowsql: failed.clone(), duckdb: failed },
        Query { name: "point lookup of a 5-tuple over a day", flowsql: point.clone(), duckdb: point },
        Query {
            name: "last minute, every column (hot and live rows)",
            flowsql: last_minute("*"),
            duckdb: last_minute(&flows_columns.join(", ")),
        },
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

/// How the generated connections end: mostly `fin`, some resets, about 3 %
/// of the outgoing attempts failed; payload bytes skewed (most connections
/// carry a few kB, a few carry hundreds of MB).
struct EndMix {
    rng: Rng,
}

impl EndMix {
    /// The end of `begin`, and whether it is a failed attempt (which has no
    /// begin: the connection never established).
    fn end(&mut self, begin: &FlowBegin) -> (FlowEnd, bool) {
        let rng = &mut self.rng;
        let draw = rng.unit();
        if begin.direction == Direction::Outgoing && draw < 0.033 {
            let reason =
                [EndReason::Refused, EndReason::Timeout, EndReason::Unreachable][rng.below(3) as usize];
            let mut end = end_of(begin, reason, 0, 0);
            end.duration_ns = None;
            end.src_packets = 1;
            end.dst_packets = u64::from(reason == EndReason::Refused);
            end.rtt_micros = 0;
            end.closed_by = (reason == EndReason::Refused).then_some(Side::Dst);
            return (end, true);
        }
        let reason = if draw < 0.08 {
            EndReason::ResetReceived
        } else if draw < 0.10 {
            EndReason::ResetSent
        } else {
            EndReason::Fin
        };
        // Requests: small. Responses: Pareto (alpha 0.8) from 1 kB, at
        // most 2 GB.
        let src_bytes = 100 + (rng.unit().powi(4) * 20_000.0) as u64;
        let dst_bytes = (1000.0 * (1.0 - rng.unit()).powf(-1.25)).min(2e9) as u64;
        let mut end = end_of(begin, reason, src_bytes, dst_bytes);
        end.src_packets = 2 + src_bytes / 1448;
        end.dst_packets = 2 + dst_bytes / 1448;
        if reason == EndReason::ResetReceived {
            end.closed_by = Some(Side::Dst);
        }
        (end, false)
    }
}

/// Rows of both event tables.
#[derive(Default)]
struct Rows {
    flows: Vec<FlowBegin>,
    ends: Vec<FlowEnd>,
}

impl Rows {
    fn add(&mut self, flow: FlowBegin, end: FlowEnd, attempt_failed: bool) {
        if !attempt_failed {
            self.flows.push(flow);
        }
        self.ends.push(end);
    }

    fn insert_into(&self, store: &mut Store) {
        if !self.flows.is_empty() {
            store.insert_flows(&batch_from_flows(&self.flows)).expect("insert flows");
        }
        if !self.ends.is_empty() {
            store.insert(flow_ends_table().name(), &batch_from_ends(&self.ends)).expect("insert ends");
        }
    }
}

/// What the queries need to know of the generated data: the 5-tuple to look
/// up, and where the last minute (kept hot) begins.
struct Params {
    lookup: FiveTuple,
    hot_from_ns: i64,
}

impl Params {
    fn save(&self, dir: &Path) {
        let text = format!("{}\n{}\n", self.lookup.to_line(), self.hot_from_ns);
        std::fs::write(dir.join("bench-params"), text).expect("params");
    }

    fn load(dir: &Path) -> Params {
        let text = std::fs::read_to_string(dir.join("bench-params")).expect("bench-params");
        let mut lines = text.lines();
        let lookup = lines.next().and_then(FiveTuple::parse).expect("bench-params names a 5-tuple");
        let hot_from_ns = lines.next().and_then(|l| l.trim().parse().ok()).expect("bench-params: hot from");
        Params { lookup, hot_from_ns }
    }
}

/// A generated connection: its begin, its end, whether it was a failed
/// attempt (then its begin is not recorded).
type Connection = (FlowBegin, FlowEnd, bool);

fn generate(dir: &Path, rows: u64) {
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(dir);
    let mut store = Store::open(dir).expect("store opens");
    let chunk = 250_000u64;
    let export_every = 2_000_000u64;
    // The last two chunks are held back until the last flow's time is
    // known: they hold the last minute (at up to 360 M flows a day).
    let mut held: std::collections::VecDeque<Vec<Connection>> = std::collections::VecDeque::new();
    // One thread makes the connections (and the names resolved for them),
    // this one stores and exports them: the two overlap.
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<Connection>>(0);
    let (domains, lookup, failed) = std::thread::scope(|scope| {
        let maker = scope.spawn(move || {
            let mut mix = RealisticMix::new(42, rows as f64 / 86_400.0);
            let mut end_mix = EndMix { rng: Rng::new(4242) };
            let mut domains = DomainsOfFlows {
                valid_until: HashMap::new(),
                observations: Vec::new(),
                popular_ttl: HashMap::new(),
            };
            let (mut lookup, mut failed, mut made) = (None, 0u64, 0u64);
            while made < rows {
                let n = chunk.min(rows - made);
                let mut connections = Vec::with_capacity(n as usize);
                for i in 0..n {
                    let flow = mix.next_flow();
                    domains.see(&flow);
                    let (end, attempt_failed) = end_mix.end(&flow);
                    if lookup.is_none() && made + i >= rows / 2 && !attempt_failed {
                        lookup = Some(FiveTuple::of(&flow));
                    }
                    failed += u64::from(attempt_failed);
                    connections.push((flow, end, attempt_failed));
                }
                made += n;
                sender.send(connections).expect("the storing thread runs");
            }
            (domains, lookup, failed)
        });
        let (mut made, mut unexported) = (0u64, 0u64);
        for connections in receiver {
            made += connections.len() as u64;
            held.push_back(connections);
            if held.len() > 2 {
                let connections = held.pop_front().expect("a chunk");
                let mut stored = Rows::default();
                for (flow, end, attempt_failed) in connections {
                    stored.add(flow, end, attempt_failed);
                }
                stored.insert_into(&mut store);
                unexported += stored.ends.len() as u64;
                if unexported >= export_every {
                    let cutoff = stored.flows.last().map_or(i64::MIN, |f| f.timestamp_ns + 1);
                    store.export(&ExportOptions::up_to(cutoff), &mut |_| {}).expect("export");
                    unexported = 0;
                }
            }
            eprint!("\rgenerated {made} of {rows} flows ({:.0} s)", started.elapsed().as_secs_f64());
        }
        maker.join().expect("the generating thread")
    });
    // The last minute (whole seconds) stays hot; the last 5 seconds are the
    // capture's live rows.
    let last_ns = held.back().and_then(|c| c.last()).map_or(BASE_NS, |c| c.0.timestamp_ns);
    let hot_from_ns = (last_ns - 60 * SECOND_NS).div_euclid(SECOND_NS) * SECOND_NS;
    let live_from_ns = last_ns - 5 * SECOND_NS;
    let first_held_ns = held.front().and_then(|c| c.first()).map_or(BASE_NS, |c| c.0.timestamp_ns);
    assert!(rows <= 2 * chunk || first_held_ns < hot_from_ns, "the held chunks hold the last minute");
    // The last minute (hot and live), for DuckDB's files, and the live rows.
    let (mut stored, mut recent, mut live) = (Rows::default(), Rows::default(), Rows::default());
    for (flow, end, attempt_failed) in held.into_iter().flatten() {
        if flow.timestamp_ns >= hot_from_ns && !attempt_failed {
            recent.flows.push(flow.clone());
        }
        if end.timestamp_ns >= hot_from_ns {
            recent.ends.push(end.clone());
        }
        let target = if flow.timestamp_ns >= live_from_ns { &mut live } else { &mut stored };
        target.add(flow, end, attempt_failed);
    }
    stored.insert_into(&mut store);
    store.export(&ExportOptions::up_to(hot_from_ns), &mut |_| {}).expect("export");
    for part in domains.observations.chunks(100_000) {
        store.record_domains(part).expect("domains");
    }
    // The live rows, kept for the next runs in a side store (never
    // exported), and the last minute (hot and live) exported for DuckDB.
    live.insert_into(&mut Store::open(dir.join(LIVE_DIR)).expect("live store opens"));
    let mut duckdb_hot = Store::open(dir.join(DUCKDB_HOT_DIR)).expect("side store opens");
    recent.insert_into(&mut duckdb_hot);
    duckdb_hot.export(&ExportOptions::up_to(i64::MAX), &mut |_| {}).expect("export for DuckDB");
    eprintln!(
        "\ngenerated {rows} connections ({} begins, {failed} failed attempts; {} flows in the last minute, \
         {} of them live) and {} domain observations in {:.0} s (peak RSS {})",
        rows - failed,
        recent.flows.len(),
        live.flows.len(),
        domains.observations.len(),
        started.elapsed().as_secs_f64(),
        mib(status_mib("VmHWM"))
    );
    Params { lookup: lookup.expect("a flow to look up"), hot_from_ns }.save(dir);
    std::fs::write(dir.join("bench-rows"), format!("{rows} {DATA_VERSION}")).expect("marker");
}

/// A capturing process's uncommitted rows, as the bench hands them to the
/// session.
#[derive(Debug)]
struct BenchLive {
    flows: Vec<FlowBegin>,
    ends: Vec<FlowEnd>,
}

impl BenchLive {
    fn load(dir: &Path) -> BenchLive {
        let store = Store::open(dir.join(LIVE_DIR)).expect("live store opens");
        let mut live = BenchLive { flows: Vec::new(), ends: Vec::new() };
        for batch in store.rows("flows", TimeRange::ALL).expect("live flows") {
            live.flows.extend(flows_from_batch(&batch).expect("flows"));
        }
        for batch in store.rows(flow_ends_table().name(), TimeRange::ALL).expect("live ends") {
            live.ends.extend(ends_from_batch(&batch).expect("ends"));
        }
        live
    }
}

impl LiveFlows for BenchLive {
    fn snapshot(
        &self,
        table: &str,
        range: TimeRange,
        begin: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<Vec<RecordBatch>, StoreError> {
        begin()?;
        let batch = match table {
            "flows" => batch_from_flows(self.flows.iter().filter(|f| range.contains(f.timestamp_ns))),
            "flow_ends" => batch_from_ends(self.ends.iter().filter(|e| range.contains(e.timestamp_ns))),
            _ => return Ok(Vec::new()),
        };
        Ok(if batch.num_rows() == 0 { Vec::new() } else { vec![batch] })
    }
}

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

/// A field of /proc/self/status in MiB (`VmRSS`, `VmHWM`).
fn status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets the peak resident set (`VmHWM`) to the current one; false if the
/// kernel does not allow it.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Runs `sql` once to warm up and three times timed; returns the median
/// time, the result as text lines, and the peak resident set (MiB) over the
/// four runs.
fn time_flowsql(
    runtime: &tokio::runtime::Runtime,
    session: &Session,
    sql: &str,
) -> (Duration, Vec<String>, Option<f64>) {
    let mut times = Vec::new();
    let mut text = Vec::new();
    let cpu_before = cpu_time();
    let peak_reset = reset_peak_rss();
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
    let peak = if peak_reset { status_mib("VmHWM") } else { None };
    times.sort();
    eprint!("CPU per run {:.3} s, ", (cpu_time() - cpu_before).as_secs_f64() / 4.0);
    (times[1], text, peak)
}

fn result_lines(batches: &[RecordBatch]) -> Vec<String> {
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

/// DuckDB's side: the same views over the same files, each query warmed up
/// and run three times, the process's peak resident set per query. Values
/// are printed as flowsql prints them (NULL, true/false, `[a, b]` lists,
/// timestamps with microseconds; `normalize` unifies the rest).
const DUCKDB_SCRIPT: &str = r#"
import datetime, duckdb, json, statistics, sys, time
data_dir, hot_dir = sys.argv[1], sys.argv[2]

def status_mib(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024
    return None

def reset_peak():
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False

def fmt(v):
    if v is None:
        return 'NULL'
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, (list, tuple)):
        return '[' + ', '.join(fmt(x) for x in v) + ']'
    if isinstance(v, datetime.datetime):
        return v.strftime('%Y-%m-%d %H:%M:%S.%f')
    return str(v)

con = duckdb.connect()
for table in ['flows', 'flow_ends']:
    con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet(['{data_dir}/{table}/**/*.parquet', "
                f"'{hot_dir}/{table}/**/*.parquet'], hive_partitioning = true)")
con.execute(f"CREATE VIEW domains AS SELECT * FROM read_parquet('{data_dir}/domains.parquet')")
con.execute("SET TimeZone = 'UTC'")
con.execute("SET enable_progress_bar = false")
print(json.dumps({"version": duckdb.__version__, "threads": con.execute("SELECT current_setting('threads')").fetchone()[0],
                  "baseline_mib": status_mib('VmRSS')}), flush=True)
# One query a line, answered with one line: the benchmark runs each query
# on flowsql and then here, so both see the same load on the machine.
for line in sys.stdin:
    sql = json.loads(line)
    times, rows = [], None
    peak_reset = reset_peak()
    for round in range(4):
        started = time.perf_counter()
        rows = con.execute(sql).fetchall()
        elapsed = time.perf_counter() - started
        if round > 0:
            times.append(elapsed)
    peak = status_mib('VmHWM') if peak_reset else None
    print(json.dumps({"seconds": statistics.median(times), "peak_mib": peak,
                      "rows": [[fmt(v) for v in row] for row in rows]}), flush=True)
"#;

fn mib(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0} MiB"))
}

/// The DuckDB side: a Python process that answers one query at a time.
struct DuckDb {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    /// Its first line: version, threads, resident set before the queries.
    info: serde_json::Value,
}

impl DuckDb {
    fn start(data_dir: &str, hot_dir: &str) -> DuckDb {
        let mut child = Command::new("python3")
            .args(["-c", DUCKDB_SCRIPT, data_dir, hot_dir])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs (pip install duckdb)");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let info = Self::read_line(&mut stdout);
        DuckDb { child, stdin, stdout, info }
    }

    fn read_line(stdout: &mut std::io::BufReader<std::process::ChildStdout>) -> serde_json::Value {
        use std::io::BufRead as _;
        let mut line = String::new();
        stdout.read_line(&mut line).expect("DuckDB side answers");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("the DuckDB side failed ({e}): {line:?}"))
    }

    /// Median time, peak resident set and result lines of `sql`.
    fn run(&mut self, sql: &str) -> (f64, Option<f64>, Vec<String>) {
        use std::io::Write as _;
        writeln!(self.stdin, "{}", serde_json::to_string(sql).expect("json")).expect("send the query");
        self.stdin.flush().expect("send the query");
        let answer = Self::read_line(&mut self.stdout);
        let rows = answer["rows"].as_array().expect("rows").iter();
        let lines = rows
            .map(|row| {
                let cells = row.as_array().expect("row").iter();
                cells.map(|c| c.as_str().unwrap_or_default().to_owned()).collect::<Vec<_>>().join("|")
            })
            .collect();
        (answer["seconds"].as_f64().unwrap_or(f64::NAN), answer["peak_mib"].as_f64(), lines)
    }

    /// Ends the process; returns its first line.
    fn finish(self) -> serde_json::Value {
        let DuckDb { mut child, stdin, info, .. } = self;
        drop(stdin);
        let status = child.wait().expect("DuckDB side exits");
        assert!(status.success(), "the DuckDB side failed");
        info
    }
}

fn main() {
    let rows: u64 =
        std::env::var("FLOWSQL_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000_000);
    let dir: PathBuf = std::env::var("FLOWSQL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(format!("/work/bench-data/{rows}")));
    let marker = std::fs::read_to_string(dir.join("bench-rows")).unwrap_or_default();
    if marker.trim() != format!("{rows} {DATA_VERSION}") {
        generate(&dir, rows);
        // Give the generation's memory back, so that the resident sets
        // measured below are the queries'.
        // SAFETY: malloc_trim only releases free memory of the C heap.
        unsafe { libc::malloc_trim(0) };
    }
    let params = Params::load(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    // As `shell --capture`: the committed rows (cold and hot) and the
    // capture's live ones.
    let live = BenchLive::load(&dir);
    let live_rows = (live.flows.len(), live.ends.len());
    let options = SessionOptions { live: Some(Arc::new(live)), ..SessionOptions::new(&dir) };
    let session = Session::open(options).expect("session");

    // Experiments: FLOWSQL_BENCH_SQL="stmt; stmt; ..." runs each statement
    // (timed like the queries) and stops.
    if let Ok(sqls) = std::env::var("FLOWSQL_BENCH_SQL") {
        for sql in sqls.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let (time, lines, peak) = time_flowsql(&runtime, &session, sql);
            eprintln!(
                "{:.3} s, peak RSS {}  {sql}\n    {:?}",
                time.as_secs_f64(),
                mib(peak),
                &lines[..lines.len().min(2)]
            );
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
    let ends_bytes: u64 = walk_bytes(&dir.join("flow_ends"));

    let only = std::env::var("FLOWSQL_BENCH_ONLY").unwrap_or_default();
    let queries: Vec<Query> =
        queries(&params).into_iter().filter(|q| q.name.contains(only.as_str())).collect();
    let flowsql_baseline = status_mib("VmRSS");
    let mut duckdb = (std::env::var_os("FLOWSQL_BENCH_SKIP_DUCKDB").is_none())
        .then(|| DuckDb::start(&dir.display().to_string(), &dir.join(DUCKDB_HOT_DIR).display().to_string()));
    let mut flowsql_results = Vec::new();
    let mut duck_results: Vec<(f64, Option<f64>, Vec<String>)> = Vec::new();
    for query in &queries {
        let (time, lines, peak) = time_flowsql(&runtime, &session, &query.flowsql);
        eprintln!("flowsql: {:.3} s, peak RSS {}  {}", time.as_secs_f64(), mib(peak), query.name);
        flowsql_results.push((time, lines, peak));
        if let Some(duckdb) = duckdb.as_mut() {
            let answer = duckdb.run(&query.duckdb);
            eprintln!("DuckDB:  {:.3} s, peak RSS {}  {}", answer.0, mib(answer.1), query.name);
            duck_results.push(answer);
        }
    }
    let Some(duckdb) = duckdb else { return };
    let duck = duckdb.finish();

    println!(
        "{rows} flows, {:.1} bytes/flow in Parquet ({:.2} GB; flow_ends {:.2} GB), \
         the last minute hot, {} begins and {} ends live, {} cores",
        bytes as f64 / rows as f64,
        bytes as f64 / 1e9,
        ends_bytes as f64 / 1e9,
        live_rows.0,
        live_rows.1,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "DuckDB {} with {} threads; flowsql with {} target partitions",
        duck["version"],
        duck["threads"],
        session.context().state().config().target_partitions()
    );
    println!(
        "resident set before the queries: flowsql {}, DuckDB (Python) {}",
        mib(flowsql_baseline),
        mib(duck["baseline_mib"].as_f64())
    );
    println!(
        "| query | flowsql | DuckDB | flowsql/DuckDB | flowsql peak RSS | DuckDB peak RSS | same result |"
    );
    println!("|---|---|---|---|---|---|---|");
    for ((query, (time, lines, peak)), (duck_secs, duck_peak, duck_lines)) in
        queries.iter().zip(&flowsql_results).zip(&duck_results)
    {
        let same = normalize(lines) == normalize(duck_lines);
        println!(
            "| {} | {:.3} s | {:.3} s | {:.2} | {} | {} | {} |",
            query.name,
            time.as_secs_f64(),
            duck_secs,
            time.as_secs_f64() / duck_secs,
            mib(*peak),
            mib(*duck_peak),
            if same { format!("yes ({} rows)", lines.len()) } else { "NO".to_owned() }
        );
        if !same {
            let (ours, theirs) = (normalize(lines), normalize(duck_lines));
            let first = ours.iter().zip(&theirs).position(|(a, b)| a != b).unwrap_or(0);
            eprintln!(
                "{}: {} rows against {}; first difference at row {first}:\n  flowsql: {:?}\n  duckdb:  {:?}",
                query.name,
                ours.len(),
                theirs.len(),
                ours.get(first),
                theirs.get(first)
            );
        }
    }
}

/// Results compared as text, cell by cell, with timestamp spellings unified
/// (`T` or space, `Z` or `+00:00` or nothing, trailing zeros of the
/// fraction).
fn normalize(lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| l.split('|').map(timestamp_cell).collect::<Vec<_>>().join("|")).collect()
}

/// `cell` as `YYYY-MM-DD HH:MM:SS[.fraction]` if it is a UTC timestamp.
fn timestamp_cell(cell: &str) -> String {
    let b = cell.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    let looks_like = b.len() >= 19
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b' ')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !looks_like {
        return cell.to_owned();
    }
    let rest = &cell[19..];
    let rest = rest.strip_suffix('Z').or_else(|| rest.strip_suffix("+00:00")).unwrap_or(rest);
    let fraction = match rest.strip_prefix('.') {
        Some(f) if f.bytes().all(|c| c.is_ascii_digit()) => f.trim_end_matches('0'),
        _ if rest.is_empty() => "",
        _ => return cell.to_owned(),
    };
    let dot = if fraction.is_empty() { "" } else { "." };
    format!("{} {}{dot}{fraction}", &cell[..10], &cell[11..19])
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
