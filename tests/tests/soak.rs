//! Soak: the real `flowsql capture` process (kernel programs, DNS cache,
//! store writer, scheduled export) under a steady mix of short connections
//! and DNS answers for a bounded time: `SOAK_SECONDS`, 60 in CI,
//! 600 for the full run of issue 6.
//!
//! What must hold: every connection made is stored once per side, the loss
//! counter stays at zero, and the process does not grow: after the warm-up,
//! the resident memory between exports (the median of each export period's
//! samples) stays within a small margin of where it was at the end of the
//! warm-up, no sample (an export's peak included) rises far above it, and
//! the open file descriptors (BPF maps and programs, the database, sockets)
//! do not multiply.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowsql_tests::{Dnsmasq, Netns, Place, Server, StoringCapture, TempDir, TestCgroup, workspace_binary};

const NETPEER: &str = env!("CARGO_BIN_EXE_netpeer");

/// Connections per second the clients aim for (two clients share it).
const CONNECTION_RATE: u32 = 1_000;
/// DNS answers per second, over many names of one address (the cache's
/// per-address bound is reached and held).
const DNS_RATE: u32 = 200;
/// The capture's export schedule, and so the period over which its memory
/// rises (an export's batches) and falls back.
const EXPORT_EVERY: Duration = Duration::from_secs(10);
/// How often the process is sampled: several samples per export period, so
/// that a period's median is its level between exports.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How much the level between exports may rise from the end of the warm-up
/// to any later export period: room for allocator noise, never for a leak
/// of ~40,000 connections' worth of anything.
const RSS_MARGIN_KIB: u64 = 8 * 1024;
/// How far above that level any single sample may be: an export's batches
/// in flight (bounded by rows and by bytes of names), its encoder, and the
/// copy of each batch's times and 64-bit counters in the file's types
/// (microseconds, signed), up to 4 MiB for a batch of `flow_ends`. (24 MiB
/// before the file types; runs of the current code peaked 20-25.5 MiB above.)
const EXPORT_PEAK_KIB: u64 = 28 * 1024;

/// `flowsql` is built beside netpeer.
fn flowsql() -> PathBuf {
    workspace_binary(NETPEER, "flowsql")
}

fn soak_seconds() -> u64 {
    match std::env::var("SOAK_SECONDS") {
        Ok(text) => {
            text.parse().unwrap_or_else(|_| panic!("SOAK_SECONDS={text:?} is not a number of seconds"))
        }
        Err(_) => 60,
    }
}

/// What the process holds at one moment.
#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    /// Of which anonymous memory (the heap) and file pages (the binary,
    /// mapped files).
    anon_kib: u64,
    file_kib: u64,
    /// The largest resident size so far (VmHWM).
    peak_kib: u64,
    /// Open descriptors by what they are: `bpf-map`, `bpf-prog`,
    /// `bpf-link`, `socket`, `file`, ...
    fds: BTreeMap<String, usize>,
}

impl Sample {
    fn take(pid: u32, at: Duration) -> Sample {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{key} in /proc/PID/status"))
        };
        let (rss_kib, anon_kib, file_kib) = (kib("VmRSS:"), kib("RssAnon:"), kib("RssFile:"));
        let peak_kib = kib("VmHWM:");
        let mut fds = BTreeMap::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/PID/fd").flatten() {
            let Ok(target) = std::fs::read_link(entry.path()) else { continue };
            let target = target.display().to_string();
            let kind = if let Some(kind) = target.strip_prefix("anon_inode:") {
                kind.trim_matches(|c| c == '[' || c == ']').to_owned()
            } else if target.starts_with("socket:") {
                "socket".to_owned()
            } else if target.starts_with("pipe:") {
                "pipe".to_owned()
            } else {
                "file".to_owned()
            };
            *fds.entry(kind).or_default() += 1;
        }
        Sample { at, rss_kib, anon_kib, file_kib, peak_kib, fds }
    }

    fn count(&self, kind: &str) -> usize {
        self.fds.get(kind).copied().unwrap_or(0)
    }

    fn total_fds(&self) -> usize {
        self.fds.values().sum()
    }
}

/// The samples of one export period.
struct ExportPeriod {
    median_kib: u64,
    max_kib: u64,
    samples: usize,
}

/// The samples grouped by export period (from the start of the load); a last
/// period with fewer than half its samples (the one taken after the load
/// ended) is left out.
fn export_periods(samples: &[Sample]) -> Vec<ExportPeriod> {
    let mut by_period: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for sample in samples {
        let period = sample.at.as_millis() as u64 / EXPORT_EVERY.as_millis() as u64;
        by_period.entry(period).or_default().push(sample.rss_kib);
    }
    let full = (EXPORT_EVERY.as_millis() / SAMPLE_EVERY.as_millis()) as usize;
    by_period
        .into_values()
        .filter(|rss| rss.len() * 2 >= full)
        .map(|mut rss| {
            rss.sort_unstable();
            ExportPeriod { median_kib: rss[rss.len() / 2], max_kib: rss[rss.len() - 1], samples: rss.len() }
        })
        .collect()
}

fn query(data: &Path, sql: &str) -> Vec<Vec<String>> {
    let output = Command::new(flowsql())
        .args(["query", "--format", "csv", "--data-dir"])
        .arg(data)
        .arg(sql)
        .output()
        .expect("flowsql query runs");
    assert!(output.status.success(), "{sql}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .map(|line| line.split(',').map(str::to_owned).collect())
        .collect()
}

fn netpeer_count(output: &std::process::Output, key: &str) -> u64 {
    assert!(output.status.success(), "netpeer failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("netpeer printed no {key:?} line"))
}

#[test]
fn steady_connections_and_dns_for_minutes_lose_nothing_and_do_not_grow() {
    let seconds = soak_seconds();
    let lab = Netns::new("soak");
    lab.ip(&["addr", "add", "10.97.0.1/32", "dev", "lo"]);
    let _dns = Dnsmasq::start(Place::outside().in_netns(&lab), &["--address=/soak.test/10.97.0.1"]);
    let cgroup = TestCgroup::new("soak");
    let client = Place::cgroup(&cgroup).in_netns(&lab);
    let server = Server::start(NETPEER, client, "10.97.0.1:0", &[]);
    let to = format!("10.97.0.1:{}", server.port);
    let data = TempDir::new("soak");
    let capture =
        StoringCapture::start(&flowsql(), &cgroup, data.path(), &format!("{}s", EXPORT_EVERY.as_secs()));
    let pid = capture.pid();

    let started = Instant::now();
    let run = |args: Vec<String>| {
        let mut command = client.command(NETPEER);
        command.args(args).stderr(Stdio::piped()).stdout(Stdio::piped());
        std::thread::spawn(move || command.output().expect("netpeer runs"))
    };
    let secs = seconds.to_string();
    let connectors: Vec<_> = (0..2)
        .map(|_| {
            run([
                "connect",
                "--to",
                &to,
                "--seconds",
                &secs,
                "--rate",
                &(CONNECTION_RATE / 2).to_string(),
                "--quiet",
            ]
            .map(str::to_owned)
            .to_vec())
        })
        .collect();
    let resolver = run([
        "dns-load",
        "--server",
        "127.0.0.1:53",
        "--domain",
        "soak.test",
        "--names",
        "20000",
        "--rate",
        &DNS_RATE.to_string(),
        "--seconds",
        &secs,
    ]
    .map(str::to_owned)
    .to_vec());

    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(SAMPLE_EVERY);
        samples.push(Sample::take(pid, started.elapsed()));
    }
    let made: u64 =
        connectors.into_iter().map(|h| netpeer_count(&h.join().expect("connector"), "connections ")).sum();
    let answers = netpeer_count(&resolver.join().expect("resolver"), "answers ");
    samples.push(Sample::take(pid, started.elapsed()));
    capture.stop();

    for sample in samples.iter().step_by(5) {
        eprintln!(
            "{:>6.1} s  RSS {:>7} KiB (anonymous {:>7} KiB, file {:>7} KiB)  fds {:?}",
            sample.at.as_secs_f64(),
            sample.rss_kib,
            sample.anon_kib,
            sample.file_kib,
            sample.fds
        );
    }
    eprintln!("{made} connections, {answers} DNS answers in {seconds} s");
    assert!(made >= u64::from(CONNECTION_RATE) * seconds / 4, "the clients made only {made} connections");
    assert!(answers > 0, "no DNS answer came back");

    // Flat: the samples by export period; the warm-up (the DNS cache
    // filling, the first exports) is the first 40 % of the run and at least
    // two periods. A period's median is its level between exports.
    let periods = export_periods(&samples);
    for (i, period) in periods.iter().enumerate() {
        eprintln!(
            "export period {i}: RSS median {:>7} KiB, max {:>7} KiB over {} samples",
            period.median_kib, period.max_kib, period.samples
        );
    }
    eprintln!("peak RSS (VmHWM) {} KiB", samples.last().expect("samples").peak_kib);
    let warm_periods = (seconds * 2 / 5).div_ceil(EXPORT_EVERY.as_secs()).max(2) as usize;
    assert!(periods.len() > warm_periods, "the run is too short for its warm-up: raise SOAK_SECONDS");
    let baseline = periods[warm_periods - 1].median_kib;
    for (i, period) in periods.iter().enumerate().skip(warm_periods) {
        assert!(
            period.median_kib <= baseline + RSS_MARGIN_KIB,
            "resident memory between exports grew from {baseline} KiB (end of the warm-up) to {} KiB in export period {i}",
            period.median_kib
        );
        assert!(
            period.max_kib <= baseline + EXPORT_PEAK_KIB,
            "resident memory peaked at {} KiB in export period {i}, {} KiB above the level of {baseline} KiB",
            period.max_kib,
            period.max_kib - baseline
        );
    }
    // No descriptor growth: BPF objects exactly constant, the rest within a
    // few (an export holds a Parquet file open for a moment).
    let first = &samples[0];
    for sample in &samples {
        for kind in ["bpf-map", "bpf-prog", "bpf_link", "bpf-link"] {
            assert_eq!(
                sample.count(kind),
                first.count(kind),
                "{kind} descriptors changed at {:?}",
                sample.at
            );
        }
        assert!(
            sample.total_fds() <= first.total_fds() + 4,
            "descriptors grew from {:?} to {:?} at {:?}",
            first.fds,
            sample.fds,
            sample.at
        );
    }
    assert!(first.count("bpf-map") > 0, "the capture process holds no BPF map: {:?}", first.fds);

    // Nothing lost: each connection once per side, across both tiers.
    let by_direction: BTreeMap<String, u64> =
        query(data.path(), "SELECT connectionDirection, count(*) FROM flows GROUP BY 1 ORDER BY 1")
            .into_iter()
            .map(|row| (row[0].clone(), row[1].parse().expect("count")))
            .collect();
    let expected: BTreeMap<String, u64> =
        [("incoming".to_owned(), made), ("outgoing".to_owned(), made)].into();
    assert_eq!(by_direction, expected, "rows per side vs connections made");
    let distinct = query(
        data.path(),
        "SELECT count(*) FROM (SELECT DISTINCT connectionDirection, srcPort, timestamp FROM flows)",
    );
    assert_eq!(distinct[0][0].parse::<u64>().expect("count"), 2 * made, "a row was stored twice");
    let status = Command::new(flowsql())
        .args(["status", "--json", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("flowsql status");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["capture"]["loss"], 0, "loss: {}", status["capture"]);
    assert!(status["cold"]["rows"].as_u64().unwrap_or(0) > 0, "the scheduled export never ran: {status}");
    // The names were used: flows to the address carry names from the cache.
    let named = query(data.path(), "SELECT count(*) FROM flows WHERE cardinality(dstDomains) > 0");
    assert!(named[0][0].parse::<u64>().expect("count") > 0, "no flow carries a DNS name");
    let domains = query(data.path(), "SELECT count(DISTINCT name) FROM domains");
    assert!(domains[0][0].parse::<u64>().expect("count") > 0, "the domains table is empty");
}
