//! capture_bench: what flowsql's capture costs the traffic it watches, and
//! what it keeps under load. Side by side in one run, as root:
//!
//! ```text
//! cargo build --release -p flowsql -p flowsql-tests
//! sudo target/release/capture_bench            # about 10 minutes
//! sudo target/release/capture_bench --quick    # about 2 minutes
//! sudo target/release/capture_bench --only resources   # one part: traffic,
//!                                   # program, completeness or resources
//! ```
//!
//! 1. bulk TCP throughput, 1 and 4 streams, loopback and a veth pair between
//!    two network namespaces: rounds alternate detached / attached (the order
//!    flips every round), the medians are compared;
//! 2. short connections (connect, 64-byte request, close) as fast as one
//!    client goes, the same way;
//! 3. the programs' own cost per packet from the kernel's BPF statistics:
//!    during bulk traffic (the fast path: established sockets) and during
//!    short connections (every packet of a handshake, one event each side);
//! 4. completeness: the real `flowsql capture` process storing, with DNS
//!    answers mixed in, while two clients connect as fast as they can for
//!    60 s (`--quick`: 15 s): rows stored per side against connections made,
//!    and the loss counters; with one DNS name on each flow and with 32 (the
//!    store's worst case), each with the capture at nice 0 and at the
//!    unit's nice -5;
//! 5. that process's CPU and resident memory at 1,000 and 10,000
//!    connections per second, with DNS answers (a tenth of the rate);
//! 6. what who-connected (attribution) and how-it-ended (end tracking)
//!    cost, side by side in one run (`--only features`): short connections
//!    and bulk throughput on loopback with the capture detached, attached
//!    with begins only, with attribution, with end tracking and with both
//!    (rounds rotate the order), and each program's kernel time per
//!    connection from the kernel's BPF statistics. The capture loads
//!    without a feature's programs through `CaptureConfig::features`, an
//!    internal option of the loader for this comparison.
//!
//! Everything runs inside cgroups and namespaces the benchmark makes and
//! removes; no traffic leaves the machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowsql_capture::{
    Assembled, Capture, CaptureConfig, Features, FlowAssembler, KernelCounters, ProgramStats,
};
use flowsql_tests::{
    Dnsmasq, Netns, Place, Server, StoringCapture, TempDir, TestCgroup, require_root, veth_pair,
};

/// The programs attached to a cgroup, with a thread draining the ring buffer
/// as the real capture does; dropped to detach.
struct Attached {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    stats: std::sync::mpsc::Receiver<Vec<ProgramStats>>,
    thread: Option<std::thread::JoinHandle<KernelCounters>>,
}

impl Attached {
    fn start(cgroup: &TestCgroup) -> Attached {
        Attached::start_with(cgroup, Features::default())
    }

    /// Attached with only `features`; the reader assembles every record
    /// into rows (names, processes, ends) as the real capture does, without
    /// storing them.
    fn start_with(cgroup: &TestCgroup, features: Features) -> Attached {
        let config =
            CaptureConfig { cgroup: Some(cgroup.path().to_owned()), features, ..CaptureConfig::default() };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stats_tx, stats_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let (capture, mut reader) = Capture::attach(&config).expect("attach");
                let _ = ready_tx.send(());
                let mut assembler = FlowAssembler::new("bench");
                let mut rows = 0u64;
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tokio::select! {
                        read = reader.read(|item| {
                            if let Ok(Assembled::Flow(_) | Assembled::End(_)) = assembler.assemble(item) {
                                rows += 1;
                            }
                        }) => { read.expect("ring buffer"); }
                        _ = tick.tick() => { let _ = stats_tx.send(capture.program_stats().unwrap_or_default()); }
                        _ = &mut stop_rx => break,
                    }
                }
                let counters = capture.counters().expect("counters");
                drop(capture);
                reader.drain(|_| {});
                counters
            })
        });
        ready_rx.recv().expect("attached");
        Attached { stop: Some(stop_tx), stats: stats_rx, thread: Some(thread) }
    }

    /// The latest program statistics.
    fn program_stats(&self) -> (u64, u64) {
        let latest = self.each_program_stats();
        latest.iter().fold((0, 0), |(t, n), s| (t + s.run_time_ns, n + s.run_count))
    }

    /// The latest statistics of each program.
    fn each_program_stats(&self) -> Vec<ProgramStats> {
        std::thread::sleep(Duration::from_millis(150));
        self.stats.try_iter().last().unwrap_or_default()
    }

    fn finish(mut self) -> KernelCounters {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread.take().expect("thread").join().expect("capture thread")
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sibling(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("own path");
    let path = me.with_file_name(name);
    assert!(path.exists(), "{} not found: cargo build --release -p flowsql -p flowsql-tests", path.display());
    path
}

/// Runs netpeer to completion; returns the value of its `key <n>` line.
fn netpeer_value(netpeer: &Path, place: Place<'_>, args: &[&str], key: &str) -> f64 {
    let mut command = Command::new(netpeer);
    if let Some(cgroup) = place.cgroup {
        command.arg("--cgroup").arg(cgroup.path());
    }
    if let Some(netns) = place.netns {
        command.arg("--netns").arg(netns.name());
    }
    let output = command.args(args).stderr(Stdio::inherit()).output().expect("netpeer");
    assert!(output.status.success(), "netpeer {args:?} failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().parse::<f64>().expect("number")))
        .unwrap_or_else(|| panic!("netpeer {args:?} printed no {key}"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Two namespaces on a veth pair: client 10.99.0.1, server 10.99.0.2.
struct Pair {
    client: Netns,
    server: Netns,
}

impl Pair {
    fn new() -> Pair {
        let client = Netns::new("bc");
        let server = Netns::new("bs");
        veth_pair(&client, &["10.99.0.1/24"], &server, &["10.99.0.2/24"]);
        Pair { client, server }
    }
}

/// Where the client and server of a measurement run.
struct Path2<'a> {
    name: &'static str,
    client: Place<'a>,
    server: Place<'a>,
    listen: &'static str,
    host: &'static str,
}

/// Alternating detached/attached rounds of `measure`; returns the medians.
fn alternate(cgroup: &TestCgroup, rounds: usize, mut measure: impl FnMut() -> f64) -> (f64, f64) {
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for attached in if round % 2 == 0 { [false, true] } else { [true, false] } {
            let guard = attached.then(|| Attached::start(cgroup));
            let value = measure();
            drop(guard);
            if attached { on.push(value) } else { off.push(value) }
        }
    }
    (median(off), median(on))
}

fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), 12 and 13 after the name.
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0)
}

fn query(flowsql: &Path, data: &Path, sql: &str) -> String {
    let output = Command::new(flowsql)
        .args(["query", "--format", "csv", "--data-dir"])
        .arg(data)
        .arg(sql)
        .output()
        .expect("flowsql query");
    assert!(output.status.success(), "{sql}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The capture's nice value in `contrib/flowsql.service` (`Nice=`).
const CAPTURE_NICE: i32 = -5;

fn main() {
    require_root();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args.iter().position(|a| a == "--only").map(|i| match args.get(i + 1).map(String::as_str) {
        Some(part @ ("traffic" | "program" | "completeness" | "resources" | "features")) => part.to_owned(),
        other => panic!("--only takes traffic, program, completeness, resources or features, not {other:?}"),
    });
    let wants = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let netpeer = sibling("netpeer");
    let flowsql = sibling("flowsql");
    let np = netpeer.to_string_lossy().into_owned();
    let (rounds, seconds) = if quick { (3, 1.0) } else { (7, 2.0) };
    let secs = seconds.to_string();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("capture-bench{}: {cores} cores, kernel {}", if quick { " --quick" } else { "" }, kernel());

    let cgroup = TestCgroup::new("bench");
    let pair = Pair::new();
    let paths = [
        Path2 {
            name: "loopback",
            client: Place::cgroup(&cgroup),
            server: Place::cgroup(&cgroup),
            listen: "127.0.0.1:0",
            host: "127.0.0.1",
        },
        Path2 {
            name: "veth",
            client: Place::cgroup(&cgroup).in_netns(&pair.client),
            server: Place::cgroup(&cgroup).in_netns(&pair.server),
            listen: "10.99.0.2:0",
            host: "10.99.0.2",
        },
    ];

    if wants("traffic") {
        println!("\n| measure | path | detached | attached | attached/detached |");
        println!("|---|---|---|---|---|");
        for path in &paths {
            let sink = Server::spawn(&np, path.server, &["sink-tcp", "--listen", path.listen]);
            let to = format!("{}:{}", path.host, sink.port);
            for streams in ["1", "4"] {
                let (off, on) = alternate(&cgroup, rounds, || {
                    netpeer_value(
                        &netpeer,
                        path.client,
                        &["blast", "--to", &to, "--streams", streams, "--seconds", &secs],
                        "sent ",
                    ) * 8.0
                        / seconds
                        / 1e9
                });
                println!(
                    "| bulk throughput, {streams} stream(s) | {} | {off:.2} Gbit/s | {on:.2} Gbit/s | {:.3} |",
                    path.name,
                    on / off
                );
            }
            drop(sink);
            let server = Server::start(&np, path.server, path.listen, &[]);
            let to = format!("{}:{}", path.host, server.port);
            let (off, on) = alternate(&cgroup, rounds, || {
                netpeer_value(
                    &netpeer,
                    path.client,
                    &["connect", "--to", &to, "--seconds", &secs, "--send-bytes", "64", "--quiet"],
                    "connections ",
                ) / seconds
            });
            println!(
                "| short connections (connect, 64 B, close) | {} | {off:.0}/s | {on:.0}/s | {:.3} |",
                path.name,
                on / off
            );
        }
    }

    if wants("program") {
        // 3a. The cost of each path, timed by the kernel over many test runs
        // (BPF_PROG_TEST_RUN; its dummy socket is in state CLOSE).
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (loaded, _reader) = {
            let _guard = runtime.enter();
            Capture::load(1 << 20).expect("load the programs")
        };
        let mut tcp = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
        tcp.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0, 0, 64, 6, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1]);
        tcp.extend_from_slice(&[
            0, 80, 0x9c, 0x40, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        let per_run = |hook, frame: &[u8]| {
            let (verdict, duration) = loaded.test_run_repeat(hook, frame, 2_000_000).expect("test run");
            assert_eq!(verdict, 1);
            duration.as_nanos() as f64
        };
        let fast = per_run(flowsql_capture::Hook::Egress, &tcp);
        let parsed = per_run(flowsql_capture::Hook::Ingress, &tcp);
        println!("\n| program path (kernel-timed test runs, 2,000,000 each) | per packet |");
        println!("|---|---|");
        println!("| fast path: the socket's state rules the packet out | {fast:.1} ns |");
        println!("| parsed: IPv4 and TCP headers read, not a SYN-ACK | {parsed:.1} ns |");
        drop(loaded);

        // 3b. The programs' own cost under real traffic, from the kernel's statistics.
        let stats = Capture::enable_run_time_stats().expect("BPF statistics");
        let sink = Server::spawn(&np, Place::cgroup(&cgroup), &["sink-tcp", "--listen", "127.0.0.1:0"]);
        let server = Server::start(&np, Place::cgroup(&cgroup), "127.0.0.1:0", &[]);
        let attached = Attached::start(&cgroup);
        let (t0, n0) = attached.program_stats();
        netpeer_value(
            &netpeer,
            Place::cgroup(&cgroup),
            &["blast", "--to", &format!("127.0.0.1:{}", sink.port), "--seconds", &secs],
            "sent ",
        );
        let (t1, n1) = attached.program_stats();
        let made = netpeer_value(
            &netpeer,
            Place::cgroup(&cgroup),
            &[
                "connect",
                "--to",
                &format!("127.0.0.1:{}", server.port),
                "--seconds",
                &secs,
                "--send-bytes",
                "64",
                "--quiet",
            ],
            "connections ",
        );
        let (t2, n2) = attached.program_stats();
        let counters = attached.finish();
        drop(stats);
        let fast = (t1 - t0) as f64 / (n1 - n0).max(1) as f64;
        let churn = (t2 - t1) as f64 / (n2 - n1).max(1) as f64;
        let events = counters.flow_events as f64;
        // Per event: the churn run's time beyond what its packets cost at the
        // fast-path rate, divided over the begins it reported.
        let per_event = ((t2 - t1) as f64 - fast * (n2 - n1) as f64).max(0.0) / events.max(1.0);
        println!("\n| program cost (kernel BPF statistics) | result |");
        println!("|---|---|");
        println!("| bulk traffic (fast path), per packet | {fast:.1} ns over {} runs |", n1 - n0);
        println!(
            "| short connections, per packet (all packets) | {churn:.1} ns over {} runs, {:.0} connections |",
            n2 - n1,
            made
        );
        println!("| beyond the fast path, per reported begin | {per_event:.0} ns ({events:.0} begins) |");
        drop(sink);
        drop(server);
    }

    if wants("features") {
        features(&cgroup, &netpeer, &np, rounds, seconds);
    }

    // 4 and 5: the real capture process, storing, with DNS.
    let lab = Netns::new("bl");
    lab.ip(&["addr", "add", "10.98.0.1/32", "dev", "lo"]);
    // Every name on the server's address: each flow carries the 32 names the
    // cache keeps for one address at most (a CDN's shared address; the
    // store's worst case). Or one name on it and the rest on an address no
    // flow goes to: a flow carries one name, as most do.
    let shared_address: &[&str] = &["--address=/load.test/10.98.0.1"];
    let one_name: &[&str] = &["--address=/n0.load.test/10.98.0.1", "--address=/load.test/10.98.200.1"];
    let client = Place::cgroup(&cgroup).in_netns(&lab);
    let server = Server::start(&np, client, "10.98.0.1:0", &[]);
    let to = format!("10.98.0.1:{}", server.port);

    let run_seconds = if quick { 15.0 } else { 60.0 };
    let spawn_clients = |rate: Option<u32>, seconds: f64| -> Vec<std::thread::JoinHandle<f64>> {
        let mut handles = Vec::new();
        for _ in 0..2 {
            let netpeer = netpeer.clone();
            let (cg, ns) = (cgroup.path().to_owned(), lab.name().to_owned());
            let to = to.clone();
            handles.push(std::thread::spawn(move || {
                let mut args =
                    vec!["--cgroup".to_owned(), cg.display().to_string(), "--netns".to_owned(), ns];
                args.extend(
                    ["connect", "--to", &to, "--seconds", &seconds.to_string(), "--quiet"].map(str::to_owned),
                );
                if let Some(rate) = rate {
                    args.extend(["--rate".to_owned(), (rate / 2).to_string()]);
                }
                let output = Command::new(&netpeer).args(&args).output().expect("netpeer");
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("connections ").and_then(|v| v.parse().ok()))
                    .unwrap_or(0.0)
            }));
        }
        let netpeer = netpeer.clone();
        let (cg, ns) = (cgroup.path().to_owned(), lab.name().to_owned());
        let dns_rate = rate.map_or(500, |r| (r / 10).max(1));
        handles.push(std::thread::spawn(move || {
            let _ = Command::new(&netpeer)
                .args([
                    "--cgroup",
                    &cg.display().to_string(),
                    "--netns",
                    &ns,
                    "dns-load",
                    "--server",
                    "127.0.0.1:53",
                ])
                .args(["--domain", "load.test", "--names", "5000", "--rate", &dns_rate.to_string()])
                .args(["--seconds", &seconds.to_string()])
                .output();
            0.0
        }));
        handles
    };
    if wants("completeness") {
        // With one name a flow and with 32; each with the capture at the
        // load's priority (every thread of the load generator competes with
        // it one for one), then at the priority the systemd unit gives it.
        println!(
            "\n| completeness at the highest rate ({run_seconds:.0} s, capture + store + DNS) | 1 name a flow, capture at nice 0 | 1 name a flow, capture at nice {CAPTURE_NICE} (the unit's `Nice=`) | 32 names a flow, nice 0 | 32 names a flow, nice {CAPTURE_NICE} |"
        );
        println!("|---|---|---|---|---|");
        let mut results = Vec::new();
        for records in [one_name, shared_address] {
            let _dns = Dnsmasq::start(Place::outside().in_netns(&lab), records);
            for raised in [false, true] {
                let data = TempDir::new("benchdata");
                let capture = StoringCapture::start(&flowsql, &cgroup, data.path(), "20s");
                if raised {
                    renice(capture.pid(), CAPTURE_NICE);
                }
                let cpu0 = proc_cpu_seconds(capture.pid());
                let started = Instant::now();
                let made: f64 =
                    spawn_clients(None, run_seconds).into_iter().map(|h| h.join().expect("client")).sum();
                let elapsed = started.elapsed().as_secs_f64();
                let cpu = (proc_cpu_seconds(capture.pid()) - cpu0) / elapsed;
                capture.stop();
                let rows = query(
                    &flowsql,
                    data.path(),
                    "SELECT connectionDirection, count(*) FROM flows GROUP BY 1 ORDER BY 1",
                );
                let status = Command::new(&flowsql)
                    .args(["status", "--json", "--data-dir"])
                    .arg(data.path())
                    .output()
                    .expect("status");
                let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
                let domains = query(&flowsql, data.path(), "SELECT count(*) FROM domains");
                let rows: Vec<String> = rows.lines().skip(1).map(|line| line.replace(',', " ")).collect();
                results.push([
                    format!("{made:.0} ({:.0}/s)", made / elapsed),
                    rows.join(", "),
                    domains.lines().nth(1).unwrap_or("?").to_owned(),
                    format!("{:.0} % of one core", cpu * 100.0),
                    status["capture"]["loss"].to_string(),
                ]);
            }
        }
        let measures = [
            "connections made",
            "rows stored per side",
            "domain rows stored",
            "capture CPU",
            "loss (kernel ring buffer + store)",
        ];
        for (i, measure) in measures.iter().enumerate() {
            let cells: Vec<&str> = results.iter().map(|r| r[i].as_str()).collect();
            println!("| {measure} | {} |", cells.join(" | "));
        }
    }
    if !wants("resources") {
        return;
    }
    let _dns = Dnsmasq::start(Place::outside().in_netns(&lab), shared_address);

    println!(
        "\n| capture process at a steady rate, with DNS answers | CPU (of one core) | resident memory (peak) |"
    );
    println!("|---|---|---|");
    for rate in [1_000u32, 10_000] {
        let data = TempDir::new("benchrate");
        let capture = StoringCapture::start(&flowsql, &cgroup, data.path(), "20s");
        let pid = capture.pid();
        let cpu0 = proc_cpu_seconds(pid);
        let t0 = Instant::now();
        let seconds = if quick { 10.0 } else { 30.0 };
        let made: f64 =
            spawn_clients(Some(rate), seconds).into_iter().map(|h| h.join().expect("client")).sum();
        let cpu = (proc_cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
        let rss = proc_status_kib(pid, "VmRSS:");
        let hwm = proc_status_kib(pid, "VmHWM:");
        capture.stop();
        println!(
            "| {rate} connections/s ({:.0}/s achieved) + {} DNS answers/s | {:.1} % | {:.1} MiB ({:.1} MiB) |",
            made / seconds,
            rate / 10,
            cpu * 100.0,
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
}

/// The configurations compared by `features`, in a stable order.
const CONFIGURATIONS: [(&str, Option<Features>); 5] = [
    ("detached", None),
    ("begins only", Some(Features::NONE)),
    ("+ attribution", Some(Features { attribution: true, ends: false })),
    ("+ end tracking", Some(Features { attribution: false, ends: true })),
    ("+ both (the default)", Some(Features { attribution: true, ends: true })),
];

/// Rounds of `measure` under every configuration, the order rotating each
/// round; the median of each.
fn rotate(cgroup: &TestCgroup, rounds: usize, mut measure: impl FnMut() -> f64) -> Vec<f64> {
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); CONFIGURATIONS.len()];
    for round in 0..rounds {
        for k in 0..CONFIGURATIONS.len() {
            let i = (k + round) % CONFIGURATIONS.len();
            let guard = CONFIGURATIONS[i].1.map(|features| Attached::start_with(cgroup, features));
            // Let the attach's own work (adopting existing sockets) settle.
            std::thread::sleep(Duration::from_millis(200));
            values[i].push(measure());
            drop(guard);
        }
    }
    values.into_iter().map(median).collect()
}

/// 6. The cost of attribution and of end tracking, side by side.
fn features(cgroup: &TestCgroup, netpeer: &Path, np: &str, rounds: usize, seconds: f64) {
    let secs = seconds.to_string();
    let server = Server::start(np, Place::cgroup(cgroup), "127.0.0.1:0", &[]);
    let to = format!("127.0.0.1:{}", server.port);
    let short = rotate(cgroup, rounds, || {
        netpeer_value(
            netpeer,
            Place::cgroup(cgroup),
            &["connect", "--to", &to, "--seconds", &secs, "--send-bytes", "64", "--quiet"],
            "connections ",
        ) / seconds
    });
    drop(server);
    let sink = Server::spawn(np, Place::cgroup(cgroup), &["sink-tcp", "--listen", "127.0.0.1:0"]);
    let sink_to = format!("127.0.0.1:{}", sink.port);
    let bulk = rotate(cgroup, rounds, || {
        netpeer_value(
            netpeer,
            Place::cgroup(cgroup),
            &["blast", "--to", &sink_to, "--seconds", &secs],
            "sent ",
        ) * 8.0
            / seconds
            / 1e9
    });
    drop(sink);
    println!(
        "\n| loopback, client and server watched | short connections (connect, 64 B, close) | vs begins only | bulk, 1 stream | vs begins only |"
    );
    println!("|---|---|---|---|---|");
    for (i, (name, _)) in CONFIGURATIONS.iter().enumerate() {
        println!(
            "| {name} | {:.0}/s | {:.3} | {:.2} Gbit/s | {:.3} |",
            short[i],
            short[i] / short[1],
            bulk[i],
            bulk[i] / bulk[1]
        );
    }
    println!(
        "\n| feature on its own | short connections | bulk |\n|---|---|---|\n| attribution (+ attribution / begins only) | {:.3} | {:.3} |\n| end tracking (+ end tracking / begins only) | {:.3} | {:.3} |\n| attribution on top of end tracking (both / + end tracking) | {:.3} | {:.3} |\n| end tracking on top of attribution (both / + attribution) | {:.3} | {:.3} |",
        short[2] / short[1],
        bulk[2] / bulk[1],
        short[3] / short[1],
        bulk[3] / bulk[1],
        short[4] / short[3],
        bulk[4] / bulk[3],
        short[4] / short[2],
        bulk[4] / bulk[2],
    );

    // Kernel time per connection, by program, from the kernel's statistics.
    let stats = Capture::enable_run_time_stats().expect("BPF statistics");
    let server = Server::start(np, Place::cgroup(cgroup), "127.0.0.1:0", &[]);
    let connections = 20_000u32;
    println!(
        "\n| program (kernel BPF statistics, {connections} loopback connections, both ends watched) | runs per connection | ns per run | ns per connection |"
    );
    println!("|---|---|---|---|");
    let mut totals = Vec::new();
    for (name, features) in CONFIGURATIONS.iter().skip(1) {
        let attached = Attached::start_with(cgroup, features.expect("attached"));
        std::thread::sleep(Duration::from_millis(200));
        let before = attached.each_program_stats();
        let made = netpeer_value(
            netpeer,
            Place::cgroup(cgroup),
            &[
                "connect",
                "--to",
                &to_of(&server),
                "--count",
                &connections.to_string(),
                "--send-bytes",
                "64",
                "--quiet",
            ],
            "connections ",
        );
        std::thread::sleep(Duration::from_millis(300));
        let after = attached.each_program_stats();
        drop(attached);
        let mut total = 0.0;
        for stat in &after {
            let old = before.iter().find(|b| b.program == stat.program);
            let time = stat.run_time_ns - old.map_or(0, |o| o.run_time_ns);
            let runs = stat.run_count - old.map_or(0, |o| o.run_count);
            let per_connection = time as f64 / made;
            total += per_connection;
            if name.starts_with("+ both") && runs > 0 {
                println!(
                    "| {} | {:.2} | {:.0} | {:.0} |",
                    stat.program,
                    runs as f64 / made,
                    time as f64 / runs as f64,
                    per_connection
                );
            }
        }
        totals.push((name, total));
    }
    drop(stats);
    drop(server);
    println!(
        "\n| configuration | kernel time per connection (all programs, both ends) | beyond begins only |"
    );
    println!("|---|---|---|");
    let base = totals.first().map_or(0.0, |t| t.1);
    for (name, total) in &totals {
        println!("| {name} | {total:.0} ns | {:.0} ns |", total - base);
    }
}

fn to_of(server: &Server) -> String {
    format!("127.0.0.1:{}", server.port)
}

/// Gives every thread of `pid` the nice value `nice` (a process's threads
/// each have their own; threads they start later inherit it).
fn renice(pid: u32, nice: i32) {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/PID/task").flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<libc::id_t>().ok()) else {
            continue;
        };
        // SAFETY: setpriority has no memory-safety preconditions.
        let done = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
        assert_eq!(done, 0, "setpriority({tid}, {nice}): {}", std::io::Error::last_os_error());
    }
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default()
}
