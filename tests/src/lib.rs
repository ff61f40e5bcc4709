//! The end-to-end test harness: real cgroups, network namespaces, processes and
//! captures, each owned by a guard that removes it in `Drop`, so a failing
//! test leaves nothing behind on the machine.
//!
//! Tests panic with a message instead of returning errors; a test that needs
//! root or a kernel feature fails loudly when it is missing, never skips.

pub mod browser;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use flowsql_capture::{
    Assembled, AttributionStats, Capture, CaptureConfig, DnsStats, FlowAssembler, KernelCounters,
};
use flowsql_event::{Direction, DomainObservation, FlowBegin, FlowEnd};
/// The workspace's one temporary-directory helper (the store's test support).
pub use flowsql_store::test_util::TempDir;

/// Fails the test unless it runs as root: these tests load BPF programs,
/// create cgroups and network namespaces.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (BPF programs, cgroups, network namespaces); CI runs it as root"
    );
}

/// A name unique to this process and call, short enough for interface names.
pub fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("fs{tag}{}x{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Runs a command, panicking with its stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A child cgroup of the unified hierarchy's root, removed on drop (after
/// killing anything still in it).
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    pub fn new(tag: &str) -> Self {
        require_root();
        let root = flowsql_capture::cgroup::unified_mount()
            .unwrap_or_else(|e| panic!("this test needs cgroup v2: {e}"));
        let path = root.join(unique_name(tag));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", path.display()));
        TestCgroup { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup id the kernel reports for sockets in it: its inode number.
    pub fn id(&self) -> u64 {
        std::fs::metadata(&self.path).expect("cgroup exists").ino()
    }

    /// Its path from the root of the unified hierarchy (`/fs...`), as
    /// `cgroupPath` says it.
    pub fn relative_path(&self) -> String {
        let root = flowsql_capture::cgroup::unified_mount().expect("cgroup v2");
        format!("/{}", self.path.strip_prefix(&root).expect("under the root").display())
    }

    /// A child cgroup named `name`, removed on drop (drop it before its parent).
    pub fn child(&self, name: &str) -> TestCgroup {
        let path = self.path.join(name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", path.display()));
        TestCgroup { path }
    }

    /// Removes it now (it must hold no process); panics if it cannot.
    pub fn remove(self) {
        std::fs::remove_dir(&self.path)
            .unwrap_or_else(|e| panic!("cannot remove cgroup {}: {e}", self.path.display()));
        std::mem::forget(self);
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not remove cgroup {}", self.path.display());
    }
}

/// A network namespace with its loopback up, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        require_root();
        let name = unique_name(tag);
        run("ip", &["netns", "add", &name]);
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <this> ARGS`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Loads an nftables ruleset into this namespace.
    pub fn nft(&self, ruleset: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nft (apt-get install nftables): {e}"));
        child.stdin.take().expect("stdin").write_all(ruleset.as_bytes()).expect("write ruleset");
        let output = child.wait_with_output().expect("nft runs");
        assert!(
            output.status.success(),
            "nft failed: {}\n{ruleset}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Sets a sysctl of this namespace (`net.ipv4.*` are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) {
        run("ip", &["netns", "exec", &self.name, "sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// A counter of `/proc/net/netstat` or `/proc/net/snmp` in this
    /// namespace, e.g. `TcpExt` `TCPFastOpenPassive`.
    pub fn netstat(&self, group: &str, name: &str) -> u64 {
        for file in ["/proc/net/netstat", "/proc/net/snmp"] {
            let text = run("ip", &["netns", "exec", &self.name, "cat", file]);
            let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&format!("{group}:"))).collect();
            for pair in lines.chunks(2) {
                if let [names, values] = pair {
                    let names = names.split_whitespace().skip(1);
                    let values = values.split_whitespace().skip(1);
                    if let Some((_, value)) = names.zip(values).find(|(n, _)| *n == name) {
                        return value.parse().unwrap_or_else(|_| panic!("{group} {name} = {value}"));
                    }
                }
            }
        }
        panic!("no counter {group} {name} in this namespace")
    }

    /// `nft list ...` in this namespace.
    pub fn nft_list(&self, what: &[&str]) -> String {
        let mut args = vec!["netns", "exec", self.name.as_str(), "nft", "list"];
        args.extend_from_slice(what);
        run("ip", &args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Connects `a` and `b` with a veth pair and gives each end its addresses
/// (CIDR notation). IPv6 addresses skip duplicate address detection.
pub fn veth_pair(a: &Netns, a_addrs: &[&str], b: &Netns, b_addrs: &[&str]) {
    let a_if = unique_name("va");
    let b_if = unique_name("vb");
    run(
        "ip",
        &["link", "add", &a_if, "netns", a.name(), "type", "veth", "peer", "name", &b_if, "netns", b.name()],
    );
    for (ns, ifname, addrs) in [(a, &a_if, a_addrs), (b, &b_if, b_addrs)] {
        for addr in addrs {
            if addr.contains(':') {
                ns.ip(&["addr", "add", addr, "dev", ifname, "nodad"]);
            } else {
                ns.ip(&["addr", "add", addr, "dev", ifname]);
            }
        }
        ns.ip(&["link", "set", ifname, "up"]);
    }
}

/// Where a `netpeer` process runs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Place<'a> {
    pub cgroup: Option<&'a TestCgroup>,
    pub netns: Option<&'a Netns>,
}

impl<'a> Place<'a> {
    pub fn outside() -> Self {
        Place::default()
    }
    pub fn cgroup(cgroup: &'a TestCgroup) -> Self {
        Place { cgroup: Some(cgroup), netns: None }
    }
    pub fn in_netns(self, netns: &'a Netns) -> Self {
        Place { netns: Some(netns), ..self }
    }

    /// A `netpeer` command that runs here (the wrapper options before its subcommand).
    pub fn command(&self, netpeer: &str) -> Command {
        let mut command = Command::new(netpeer);
        if let Some(cgroup) = self.cgroup {
            command.arg("--cgroup").arg(cgroup.path());
        }
        if let Some(netns) = self.netns {
            command.arg("--netns").arg(netns.name());
        }
        command
    }
}

/// A long-running netpeer process (`serve`, `dns-serve`, `udp-sink`) that
/// printed `ready <port>`; killed on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    _stdin: ChildStdin,
    _stdout: BufReader<ChildStdout>,
    pub port: u16,
}

impl Server {
    /// Starts `netpeer serve --listen ADDR <extra>` and waits until it listens.
    pub fn start(netpeer: &str, place: Place<'_>, listen: &str, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--listen", listen];
        args.extend_from_slice(extra);
        Server::spawn(netpeer, place, &args)
    }

    /// Starts `netpeer ARGS` and waits for its `ready <port>` line.
    pub fn spawn(netpeer: &str, place: Place<'_>, args: &[&str]) -> Server {
        let mut child = place
            .command(netpeer)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("netpeer starts");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("netpeer prints ready");
        let port = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("netpeer {args:?} did not start: {line:?}"));
        Server { child, _stdin: stdin, _stdout: stdout, port }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `netpeer exchange --wait-stdin` in progress: connected, waiting to be
/// told to exchange, then to close. Killed on drop.
#[derive(Debug)]
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub local: SocketAddr,
    pub pid: u32,
}

impl Session {
    /// Starts `netpeer exchange --to TO --wait-stdin EXTRA` and waits until
    /// it is connected.
    pub fn start(netpeer: &str, place: Place<'_>, to: &str, extra: &[&str]) -> Session {
        let mut child = place
            .command(netpeer)
            .args(["exchange", "--to", to, "--wait-stdin"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("netpeer starts");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = || {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("netpeer prints");
            line.trim().to_owned()
        };
        let local = line();
        let pid = line();
        let local = local
            .strip_prefix("local ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("netpeer exchange did not connect: {local:?}"));
        let pid = pid
            .strip_prefix("pid ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid: {pid:?}"));
        Session { child, stdin, stdout, local, pid }
    }

    fn step(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(b"go\n").and_then(|()| stdin.flush()).expect("tell netpeer to go on");
    }

    /// Lets it exchange its bytes (it then waits again before closing).
    pub fn exchange(&mut self) {
        self.step();
    }

    /// Lets it close; waits for it to end and returns the bytes it received.
    pub fn close(mut self) -> u64 {
        self.step();
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("netpeer prints");
        let status = self.child.wait().expect("netpeer ends");
        assert!(status.success(), "netpeer exchange failed");
        line.trim()
            .strip_prefix("received ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line:?}"))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `netpeer connect` to completion and returns the local address of
/// each connection it made.
pub fn connect(netpeer: &str, place: Place<'_>, to: &str, extra: &[&str]) -> Vec<SocketAddr> {
    let output = place
        .command(netpeer)
        .args(["connect", "--to", to])
        .args(extra)
        .stderr(Stdio::piped())
        .output()
        .expect("netpeer runs");
    assert!(output.status.success(), "netpeer connect failed: {}", String::from_utf8_lossy(&output.stderr));
    parse_locals(&output.stdout)
}

/// What a netpeer run printed: each `local <addr>` and its `pid <n>`.
#[derive(Debug, Clone)]
pub struct Peer {
    pub locals: Vec<SocketAddr>,
    pub pid: u32,
    pub stdout: String,
}

/// Runs any netpeer subcommand to completion; its `local` lines and the
/// process id it printed (`pid <n>`), or else the id of the process run.
pub fn netpeer_run(netpeer: &str, place: Place<'_>, args: &[&str]) -> Peer {
    let child = place
        .command(netpeer)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("netpeer runs");
    let spawned = child.id();
    let output = child.wait_with_output().expect("netpeer ends");
    assert!(output.status.success(), "netpeer {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let pid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("pid ").and_then(|p| p.trim().parse().ok()))
        .unwrap_or(spawned);
    Peer { locals: parse_locals(&output.stdout), pid, stdout }
}

/// Runs any netpeer subcommand to completion, returning its `local` lines.
pub fn netpeer(netpeer: &str, place: Place<'_>, args: &[&str]) -> Vec<SocketAddr> {
    let output = place.command(netpeer).args(args).stderr(Stdio::piped()).output().expect("netpeer runs");
    assert!(output.status.success(), "netpeer {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    parse_locals(&output.stdout)
}

fn parse_locals(stdout: &[u8]) -> Vec<SocketAddr> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("local "))
        .map(|a| a.parse().expect("netpeer prints socket addresses"))
        .collect()
}

/// A TCP listener in the test process itself (so outside any test cgroup)
/// that accepts and closes connections on a thread.
#[derive(Debug)]
pub struct OutsideServer {
    pub addr: SocketAddr,
}

impl OutsideServer {
    pub fn start(bind: &str) -> Self {
        let listener = std::net::TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let addr = listener.local_addr().expect("local addr");
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                drop(conn);
            }
        });
        OutsideServer { addr }
    }
}

/// The programs attached to a cgroup, recording rows on a background thread
/// until [`Recording::finish`].
#[derive(Debug)]
pub struct Recording {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Recorded>>,
    rows: Arc<Mutex<Vec<FlowBegin>>>,
    ends: Arc<Mutex<Vec<FlowEnd>>>,
    open: tokio::sync::mpsc::Sender<std::sync::mpsc::Sender<Vec<FlowEnd>>>,
    /// What the capture could not fill on this kernel.
    pub unavailable: Vec<String>,
}

/// What a recording saw.
#[derive(Debug)]
pub struct Recorded {
    pub rows: Vec<FlowBegin>,
    /// Connection ends (and failed attempts), in the order reported.
    pub ends: Vec<FlowEnd>,
    /// What DNS answers taught, in order.
    pub observations: Vec<DomainObservation>,
    pub counters: KernelCounters,
    pub dns: DnsStats,
    pub attribution: AttributionStats,
    /// Records that could not be decoded (must be zero).
    pub undecodable: u64,
}

impl Recording {
    pub fn start(cgroup: &TestCgroup) -> Self {
        Recording::start_with(CaptureConfig {
            cgroup: Some(cgroup.path().to_owned()),
            ..CaptureConfig::default()
        })
    }

    /// Starts a capture with `config`, assembling rows as `flowsql capture` does.
    pub fn start_with(config: CaptureConfig) -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<std::sync::mpsc::Sender<Vec<FlowEnd>>>(4);
        let rows = Arc::new(Mutex::new(Vec::new()));
        let ends = Arc::new(Mutex::new(Vec::new()));
        let (shared_rows, shared_ends) = (Arc::clone(&rows), Arc::clone(&ends));
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let (capture, mut reader) = match Capture::attach(&config) {
                    Ok(attached) => {
                        let unavailable = attached.0.unavailable().iter().map(ToString::to_string).collect();
                        let _ = ready_tx.send(Ok(unavailable));
                        attached
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e}")));
                        return Recorded {
                            rows: Vec::new(),
                            ends: Vec::new(),
                            observations: Vec::new(),
                            counters: KernelCounters::default(),
                            dns: DnsStats::default(),
                            attribution: AttributionStats::default(),
                            undecodable: 0,
                        };
                    }
                };
                let mut assembler = FlowAssembler::new("test-host");
                let mut undecodable = 0u64;
                let mut observations = Vec::new();
                let mut handle = |assembler: &mut FlowAssembler, item: &[u8]| match assembler.assemble(item) {
                    Ok(Assembled::Flow(flow)) => shared_rows.lock().expect("rows lock").push(flow),
                    Ok(Assembled::End(end)) => shared_ends.lock().expect("ends lock").push(end),
                    Ok(Assembled::Dns(learned)) => observations.extend(learned),
                    Ok(Assembled::Learned) => {}
                    Err(_) => undecodable += 1,
                };
                loop {
                    tokio::select! {
                        read = reader.read(|item| handle(&mut assembler, item)) => { read.expect("ring buffer readable"); }
                        Some(reply) = open_rx.recv() => {
                            // What the kernel reported so far first, as the capture loop does.
                            reader.drain(|item| handle(&mut assembler, item));
                            let open = capture.open_sockets().expect("open connections are followed");
                            let records = open.read().expect("the open-connections iterator runs");
                            let _ = reply.send(assembler.open_flows(&records));
                        }
                        _ = &mut stop_rx => break,
                    }
                }
                let counters = capture.counters().expect("counters readable");
                drop(capture);
                reader.drain(|item| handle(&mut assembler, item));
                let rows = std::mem::take(&mut *shared_rows.lock().expect("rows lock"));
                let ends = std::mem::take(&mut *shared_ends.lock().expect("ends lock"));
                Recorded {
                    rows,
                    ends,
                    observations,
                    counters,
                    dns: assembler.dns_stats(),
                    attribution: assembler.attribution_stats(),
                    undecodable,
                }
            })
        });
        let unavailable = match ready_rx.recv() {
            Ok(Ok(unavailable)) => unavailable,
            Ok(Err(e)) => panic!("capture failed to attach: {e}"),
            Err(_) => panic!("capture thread died before attaching"),
        };
        Recording { stop: Some(stop_tx), thread: Some(thread), rows, ends, open: open_tx, unavailable }
    }

    /// Rows seen so far.
    pub fn rows_so_far(&self) -> usize {
        self.rows.lock().expect("rows lock").len()
    }

    /// Begins seen so far (a copy).
    pub fn begins_so_far(&self) -> Vec<FlowBegin> {
        self.rows.lock().expect("rows lock").clone()
    }

    /// Ends seen so far (a copy).
    pub fn ends_so_far(&self) -> Vec<FlowEnd> {
        self.ends.lock().expect("ends lock").clone()
    }

    /// The connections open now, as the capture reads them from the kernel.
    pub fn open_flows(&self) -> Vec<FlowEnd> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.open.blocking_send(reply).expect("the recording runs");
        answer.recv_timeout(Duration::from_secs(10)).expect("open connections read")
    }

    /// Detaches, drains the ring buffer and returns everything recorded.
    pub fn finish(mut self) -> Recorded {
        self.stop_thread().expect("recording thread result")
    }

    fn stop_thread(&mut self) -> Option<Recorded> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread.take()?.join().ok()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}

/// A row reduced to what tests compare: direction and the two endpoints.
pub type Endpoints = (Direction, SocketAddr, SocketAddr);

pub fn endpoints(row: &FlowBegin) -> Endpoints {
    (row.direction, SocketAddr::new(row.src_ip, row.src_port), SocketAddr::new(row.dst_ip, row.dst_port))
}

/// Sorted endpoints of all rows, for exact comparisons.
pub fn all_endpoints(rows: &[FlowBegin]) -> Vec<Endpoints> {
    let mut all: Vec<_> = rows.iter().map(endpoints).collect();
    all.sort();
    all
}

/// Waits until `condition` holds, up to `timeout`; returns whether it did.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

pub fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap_or_else(|e| panic!("{text} is not a socket address: {e}"))
}

/// Debian's dnsmasq answering on 127.0.0.1:53 inside a network namespace
/// (optionally inside a cgroup), with the records given as dnsmasq options
/// (`--host-record=...`, `--cname=...`). Killed on drop.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
}

impl Dnsmasq {
    pub fn start(place: Place<'_>, records: &[&str]) -> Dnsmasq {
        let netns = place.netns.expect("dnsmasq runs in a test namespace (port 53 is shared otherwise)");
        let mut args = vec![
            "-d",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--group=root",
            "--pid-file=",
            "--port=53",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--local-ttl=60",
        ];
        args.extend_from_slice(records);
        // Join the cgroup (when asked) before dnsmasq opens its sockets.
        let join = match place.cgroup {
            Some(cgroup) => format!("echo $$ > {}/cgroup.procs && ", cgroup.path().display()),
            None => String::new(),
        };
        let script = format!("{join}exec ip netns exec {} dnsmasq \"$@\"", netns.name());
        let mut child = Command::new("bash")
            .args(["-c", &script, "dnsmasq"])
            .args(&args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run dnsmasq (apt-get install dnsmasq-base): {e}"));
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut log = String::new();
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    log.push_str(&line);
                    log.push('\n');
                    if line.contains("started") {
                        break;
                    }
                }
                _ => panic!("dnsmasq did not start:\n{log}"),
            }
        }
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Dnsmasq { child }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `netpeer resolve` and returns the addresses it was answered.
pub fn resolve(netpeer_path: &str, place: Place<'_>, name: &str, extra: &[&str]) -> Vec<std::net::IpAddr> {
    let mut args = vec!["resolve", "--server", "127.0.0.1:53", "--name", name];
    args.extend_from_slice(extra);
    let output =
        place.command(netpeer_path).args(&args).stderr(Stdio::piped()).output().expect("netpeer runs");
    assert!(output.status.success(), "resolving {name} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("answer "))
        .map(|a| a.parse().expect("netpeer prints addresses"))
        .collect()
}

/// A tmpfs of a fixed size mounted on a fresh directory (a small disk that
/// fills up, or turns read-only, on demand); unmounted and removed on drop.
#[derive(Debug)]
pub struct TmpfsMount {
    dir: TempDir,
}

impl TmpfsMount {
    /// Mounts a tmpfs of `size` (e.g. `8m`).
    pub fn new(tag: &str, size: &str) -> Self {
        require_root();
        let dir = TempDir::new(tag);
        let mount = TmpfsMount { dir };
        run("mount", &["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs", mount.path_str()]);
        mount
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn path_str(&self) -> &str {
        self.dir.path().to_str().expect("temp paths are UTF-8")
    }

    /// `mount -o remount,OPTIONS` (e.g. `ro`, `rw`, `size=16m`).
    pub fn remount(&self, options: &str) {
        run("mount", &["-o", &format!("remount,{options}"), self.path_str()]);
    }

    /// Fills the file system with a file `name` until it is full; returns
    /// the file's path (remove it to free the space).
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write as _;
        let path = self.path().join(name);
        let mut file = std::fs::File::create(&path).expect("create filler");
        // Large writes, then page-sized ones for the crumbs.
        for size in [64 * 1024, 4096] {
            let chunk = vec![0u8; size];
            while file.write_all(&chunk).is_ok() {}
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        // Lazy: a process that still has files open there must not keep it mounted.
        let status = Command::new("umount").args(["-l", self.path_str()]).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("warning: could not unmount {}", self.dir.path().display());
        }
    }
}

/// A real `flowsql capture` process storing the flows of `cgroup` into a
/// data directory, with the export schedule given; killed on drop if it was
/// not stopped.
#[derive(Debug)]
pub struct StoringCapture {
    child: Child,
}

impl StoringCapture {
    /// Starts `flowsql capture` and waits until it stores (its database
    /// exists: the store is opened after the programs are attached).
    pub fn start(flowsql: &Path, cgroup: &TestCgroup, data: &Path, export_every: &str) -> StoringCapture {
        let child = Command::new(flowsql)
            .args(["capture", "--log-level", "warn", "--export-every", export_every, "--cgroup"])
            .arg(cgroup.path())
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::null())
            .spawn()
            .expect("flowsql capture starts");
        let mut capture = StoringCapture { child };
        let started = std::time::Instant::now();
        while !data.join("flowsql.db").exists() {
            if let Ok(Some(status)) = capture.child.try_wait() {
                panic!("flowsql capture exited with {status} before opening its store");
            }
            assert!(started.elapsed() < Duration::from_secs(20), "flowsql capture did not open its store");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        capture
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it with SIGTERM (it commits what it holds and detaches) and
    /// checks that it exited successfully.
    pub fn stop(mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait for flowsql capture");
        assert!(status.success(), "flowsql capture exited with {status}");
    }
}

impl Drop for StoringCapture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace binary `name`, built in the same directory as `beside` (the
/// path of another binary of the same build, e.g. `CARGO_BIN_EXE_flowsql`):
/// `cargo nextest run --workspace` builds every package's binaries there.
pub fn workspace_binary(beside: &str, name: &str) -> PathBuf {
    let path = Path::new(beside).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo nextest run --workspace)",
        path.display()
    );
    path
}
