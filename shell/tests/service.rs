//! flowsql as a service, through the real binary: configuration precedence
//! and every kind of rejection, Prometheus metrics scraped over HTTP during
//! a real capture and checked against the store, SIGTERM during a burst of
//! connections losing nothing, a store that a group member can query but
//! not modify, and the systemd unit under `contrib/`.
//!
//! Every process a test starts is killed by a guard when the test ends,
//! failed or not; cgroups and directories are removed by theirs.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowsql_tests::{Place, Server, TempDir, TestCgroup, wait_until};

const FLOWSQL: &str = env!("CARGO_BIN_EXE_flowsql");

/// The user the unprivileged tests run as, and a group only the store has.
const NOBODY: u32 = 65534;
const STORE_GROUP: u32 = 64_123;

/// netpeer is a binary of the flowsql-tests package, built beside flowsql.
fn netpeer() -> String {
    flowsql_tests::workspace_binary(FLOWSQL, "netpeer").display().to_string()
}

/// `flowsql ARGS` with no `FLOWSQL_*` or `RUST_LOG` variable of this
/// process, and no configuration file unless the test names one.
fn flowsql() -> Command {
    let mut command = Command::new(FLOWSQL);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("FLOWSQL_") || name == "RUST_LOG" || name == "NOTIFY_SOCKET" {
            command.env_remove(name);
        }
    }
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs and expects success; returns stdout.
fn succeeds(command: &mut Command) -> String {
    let output = command.output().expect("flowsql runs");
    assert!(output.status.success(), "{command:?} failed ({:?}):\n{}", output.status, text(&output.stderr));
    text(&output.stdout)
}

/// Runs and expects failure with nothing on stdout and exactly one line on
/// stderr, `error: ...`, containing every one of `expected`; returns it.
fn fails_with_one_line(command: &mut Command, expected: &[&str]) -> String {
    let output = command.output().expect("flowsql runs");
    assert!(!output.status.success(), "{command:?} must fail; stdout:\n{}", text(&output.stdout));
    assert_eq!(text(&output.stdout), "", "{command:?}: nothing on stdout");
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{command:?}: one line on stderr, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for part in expected {
        assert!(lines[0].contains(part), "{command:?}:\n  got      {stderr}  expected {part:?}");
    }
    lines[0].to_owned()
}

// ---------------------------------------------------------------------------
// Configuration

#[test]
fn flags_beat_environment_beats_file_beats_defaults_and_bad_settings_are_named() {
    let dir = TempDir::new("svccfg");
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        r#"
data_dir = "/srv/from-file"
[capture]
export_every = "10m"
retain = "7d"
metrics_addr = "127.0.0.1:9001"
shutdown_timeout = "20s"
[capture.name_cache]
max_addresses = 1000
[log]
level = "info"
"#,
    )
    .expect("write config");
    let printed = succeeds(
        flowsql()
            .arg("config")
            .arg("--config")
            .arg(&file)
            .args(["--metrics-addr", "127.0.0.1:9003", "--name-cache-max-addresses", "3000"])
            .env("FLOWSQL_RETAIN", "30d")
            .env("FLOWSQL_METRICS_ADDR", "127.0.0.1:9002")
            .env("FLOWSQL_SHUTDOWN_TIMEOUT", "30s")
            .env("FLOWSQL_NAME_CACHE_MAX_ADDRESSES", "2000"),
    );
    let from_file = format!("# file {}", file.display());
    let expected_lines = [
        format!("data_dir = \"/srv/from-file\"  {from_file}"),
        // Defaults: nothing sets them.
        "ring_buffer_bytes = 4194304  # default".to_owned(),
        "max_names_per_address = 32  # default".to_owned(),
        "# cgroup = (not set: the root of the unified hierarchy, the whole host)  # default".to_owned(),
        // The file alone.
        format!("export_every = \"10m\"  {from_file}"),
        format!("level = \"info\"  {from_file}"),
        // The environment over the file.
        "retain = \"30days\"  # environment FLOWSQL_RETAIN".to_owned(),
        "shutdown_timeout = \"30s\"  # environment FLOWSQL_SHUTDOWN_TIMEOUT".to_owned(),
        // Flags over both.
        "metrics_addr = \"127.0.0.1:9003\"  # flag --metrics-addr".to_owned(),
        "max_addresses = 3000  # flag --name-cache-max-addresses".to_owned(),
    ];
    for line in &expected_lines {
        assert!(printed.lines().any(|l| l == line), "missing {line:?} in:\n{printed}");
    }
    assert!(printed.starts_with("# flowsql configuration in effect. Precedence: flags > environment"));
    assert!(printed.contains(&format!("# file: {}", file.display())), "{printed}");

    // What `flowsql config` prints is a valid configuration file that gives
    // the same settings (now all from the file).
    let again = dir.path().join("printed.toml");
    std::fs::write(&again, &printed).expect("write");
    let reread = succeeds(flowsql().arg("config").arg("--config").arg(&again));
    let values = |toml: &str| -> Vec<String> {
        toml.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split("  # ").next().unwrap_or(l).to_owned())
            .collect()
    };
    assert_eq!(values(&reread), values(&printed), "{reread}");
    assert!(reread.contains(&format!("metrics_addr = \"127.0.0.1:9003\"  # file {}", again.display())));

    // FLOWSQL_CONFIG names the file too; --config wins over it.
    let by_env = succeeds(flowsql().arg("config").env("FLOWSQL_CONFIG", &file));
    assert!(by_env.contains(&format!("export_every = \"10m\"  {from_file}")), "{by_env}");

    // Rejections: one line naming the place, the key and the reason.
    let bad_file = |name: &str, body: &str| -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write");
        path
    };
    let unknown = bad_file("unknown.toml", "[capture]\nexprt_every = \"5m\"\n");
    fails_with_one_line(
        flowsql().arg("config").arg("--config").arg(&unknown),
        &[
            &format!("{}: capture.exprt_every: unknown key", unknown.display()),
            "(known in [capture]: cgroup, ring_buffer_bytes, export_every, retain, metrics_addr, shutdown_timeout, [capture.name_cache])",
        ],
    );
    let top = bad_file("top.toml", "colour = \"blue\"\n");
    fails_with_one_line(
        flowsql().arg("config").arg("--config").arg(&top),
        &[&format!(
            "{}: colour: unknown key (known at the top level: data_dir, [capture], [serve], [log])",
            top.display()
        )],
    );
    let bad_value = bad_file("value.toml", "[capture]\nexport_every = \"soon\"\n");
    fails_with_one_line(
        flowsql().arg("config").arg("--config").arg(&bad_value),
        &[&format!(
            "{}: capture.export_every: \"soon\" is not a duration (e.g. 5m, 1h)",
            bad_value.display()
        )],
    );
    let bad_size = bad_file("size.toml", "[capture]\nring_buffer_bytes = 5000\n");
    fails_with_one_line(
        flowsql().arg("config").arg("--config").arg(&bad_size),
        &["capture.ring_buffer_bytes: 5000 is not a valid ring buffer size: it must be a power of two"],
    );
    let broken = bad_file("broken.toml", "[capture\n");
    // Not TOML at all: the parser's message, with the line it stopped at.
    let output = flowsql().arg("config").arg("--config").arg(&broken).output().expect("runs");
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(&format!("error: {}: TOML parse error at line 1, column 9\n", broken.display())),
        "{stderr}"
    );
    assert!(stderr.contains("unclosed table, expected `]`"), "{stderr}");
    let missing = dir.path().join("missing.toml");
    fails_with_one_line(
        flowsql().arg("config").arg("--config").arg(&missing),
        &[&format!("cannot read {}", missing.display()), "No such file or directory"],
    );
    fails_with_one_line(
        flowsql().arg("config").arg("--config").arg(&file).env("FLOWSQL_SHUTDOWN_TIMEOUT", "never"),
        &["FLOWSQL_SHUTDOWN_TIMEOUT: \"never\" is not a duration (e.g. 5m, 1h)"],
    );
    fails_with_one_line(
        flowsql().arg("config").env("FLOWSQL_RING_BUFFER_BYTES", "lots"),
        &["FLOWSQL_RING_BUFFER_BYTES: \"lots\" is not a size in bytes (e.g. 4194304, 4MiB)"],
    );
    fails_with_one_line(
        flowsql().arg("config").env("FLOWSQL_EXPORT_EVRY", "5m"),
        &["FLOWSQL_EXPORT_EVRY: unknown environment variable", "FLOWSQL_EXPORT_EVERY"],
    );
    fails_with_one_line(
        flowsql().args(["config", "--metrics-addr", "9464"]),
        &["--metrics-addr: \"9464\" is not HOST:PORT (e.g. 127.0.0.1:9464"],
    );
    fails_with_one_line(
        flowsql().args(["config", "--ring-buffer-bytes", "5000"]),
        &["--ring-buffer-bytes: 5000 is not a valid ring buffer size"],
    );
    fails_with_one_line(
        flowsql().args(["config", "--log-level", "loud"]),
        &["--log-level: \"loud\" is not a log level or filter", "\"loud\" is not a level"],
    );
    fails_with_one_line(
        flowsql().args(["config", "--name-cache-max-addresses", "0"]),
        &["--name-cache-max-addresses: must be at least 1"],
    );
    // A flag whose value does not even parse is refused by the command line
    // parser: its message names the flag and the reason too.
    let output = flowsql().args(["config", "--export-every", "soon"]).output().expect("runs");
    assert!(!output.status.success());
    assert_eq!(text(&output.stdout), "");
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(
            "error: invalid value 'soon' for '--export-every <DURATION>': \"soon\" is not a duration (e.g. 90s, 5m, 1h, 30d)\n"
        ),
        "{stderr}"
    );

    // The capture itself refuses a bad configuration before doing anything.
    let data = dir.path().join("never-created");
    fails_with_one_line(
        flowsql().arg("capture").arg("--config").arg(&bad_value).arg("--data-dir").arg(&data),
        &["capture.export_every: \"soon\" is not a duration"],
    );
    assert!(!data.exists(), "a refused configuration touches no data directory");
}

// ---------------------------------------------------------------------------
// A running capture

/// A `flowsql capture` child: its stderr is collected on a thread (so that
/// it never blocks on a full pipe); killed on drop if still running.
struct RunningCapture {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl RunningCapture {
    fn start(args: &[&OsStr]) -> RunningCapture {
        RunningCapture::start_with(flowsql().arg("capture").args(args))
    }

    fn start_with(command: &mut Command) -> RunningCapture {
        let mut child =
            command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("flowsql capture starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let shared = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        });
        RunningCapture { child, log, reader: Some(reader) }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The first log line containing `needle`, waiting up to `timeout`;
    /// fails if the capture exits first.
    fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                panic!("flowsql capture exited ({status}) before logging {needle:?}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "no {needle:?} in the log after {timeout:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // child's, not yet reaped (we wait for it only after this).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits for the exit, at most `timeout`; returns the status and the
    /// whole log.
    fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "flowsql capture still runs after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status, self.log())
    }
}

impl Drop for RunningCapture {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A child process killed on drop (a netpeer burst).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// `GET /metrics` with a plain socket; checks the status line and content
/// type, returns the body.
fn scrape(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream
        .write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
    body.to_owned()
}

/// The samples of a Prometheus text page, `name{labels}` -> value, after
/// checking its shape: `# HELP` and `# TYPE` once per family, before its
/// samples, every sample of a declared family, no sample twice.
fn parse_metrics(page: &str) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "{name} declared twice");
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line:?}"));
        let name = series.split('{').next().expect("name");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix).filter(|base| types.get(*base).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{line:?} comes before its # TYPE");
        assert!(samples.insert(series.to_owned(), value).is_none(), "{series} twice");
    }
    samples
}

/// One number of a page; fails naming it when missing.
fn sample(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| panic!("no {series} in the metrics: {samples:#?}"))
}

/// `flowsql query SQL --format json --data-dir DIR` as rows of JSON.
fn query_json(data: &Path, sql: &str) -> Vec<serde_json::Value> {
    let stdout = succeeds(flowsql().args(["query", sql, "--format", "json", "--data-dir"]).arg(data));
    match serde_json::from_str(&stdout) {
        Ok(serde_json::Value::Array(rows)) => rows,
        _ => panic!("{sql}: not a JSON array: {stdout}"),
    }
}

fn query_count(data: &Path, sql: &str) -> u64 {
    let rows = query_json(data, sql);
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows[0]["n"].as_u64().unwrap_or_else(|| panic!("{sql}: no count n in {rows:?}"))
}

/// The newest `capture_stats` row, through `flowsql query`.
fn latest_capture_stats(data: &Path) -> Option<serde_json::Value> {
    query_json(
        data,
        "SELECT events, lost, rowsStored, rowsNotStored, storeFailures, counters FROM capture_stats ORDER BY time DESC LIMIT 1",
    )
    .into_iter()
    .next()
}

fn counters_of(stats: &serde_json::Value) -> serde_json::Value {
    let text = stats["counters"].as_str().expect("counters is JSON text");
    serde_json::from_str(text).expect("counters is a JSON object")
}

#[test]
fn metrics_scraped_during_a_capture_match_the_store_and_capture_stats() {
    let netpeer = netpeer();
    let cgroup = TestCgroup::new("svcmet");
    let dir = TempDir::new("svcmet");
    let data = dir.path().join("data");
    let server = Server::start(&netpeer, Place::outside(), "127.0.0.1:0", &[]);
    let started = flowsql_store::now_ns() as f64 / 1e9;
    // A configuration file to change and reload (SIGHUP), and a socket that
    // plays systemd's part for sd_notify.
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[capture]\nshutdown_timeout = \"10s\"\n").expect("write config");
    let notify_path = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    notify.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let notified = || -> String {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).expect("a message on NOTIFY_SOCKET");
        text(&buf[..n])
    };
    let args: [&OsStr; 12] = [
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--cgroup".as_ref(),
        cgroup.path().as_os_str(),
        "--metrics-addr".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--log-level".as_ref(),
        "info".as_ref(),
        // Through the configuration to the ring buffer.
        "--ring-buffer-bytes".as_ref(),
        "1MiB".as_ref(),
        // One-second windows, exported every second: both tiers and the
        // last export show within the test.
        "--export-every".as_ref(),
        "1s".as_ref(),
    ];
    let mut capture = RunningCapture::start_with(
        flowsql().arg("capture").arg("--config").arg(&config).args(args).env("NOTIFY_SOCKET", &notify_path),
    );
    // Type=notify: ready once attached.
    assert_eq!(notified(), "READY=1\nSTATUS=capturing");
    // Logged once attached and serving.
    let line = capture.wait_for_line("serving metrics at http://", Duration::from_secs(30));
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();

    const CONNECTIONS: u32 = 25;
    let locals = flowsql_tests::connect(
        &netpeer,
        Place::cgroup(&cgroup),
        &format!("127.0.0.1:{}", server.port),
        &["--count", &CONNECTIONS.to_string()],
    );
    assert_eq!(locals.len(), CONNECTIONS as usize);

    // Wait until every flow and its end are stored (rows: a begin and an
    // end per connection, only the client's side is watched) and an export
    // has moved some.
    let rows = f64::from(2 * CONNECTIONS);
    let mut samples = BTreeMap::new();
    let settled = wait_until(Duration::from_secs(30), || {
        samples = parse_metrics(&scrape(&addr));
        let stored = samples.get("flowsql_store_rows_stored_total").copied().unwrap_or(0.0);
        let hot = samples.get("flowsql_store_rows{tier=\"hot\"}").copied().unwrap_or(-1.0);
        let cold = samples.get("flowsql_store_rows{tier=\"cold\"}").copied().unwrap_or(-1.0);
        stored == rows
            && hot + cold == rows
            && cold > 0.0
            && samples.contains_key("flowsql_export_last_success_timestamp_seconds")
    });
    assert!(settled, "the flows did not settle in the store: {samples:#?}\nlog:\n{}", capture.log());
    let page = scrape(&addr);
    let samples = parse_metrics(&page);

    // Every family the issue names is there.
    for series in [
        "flowsql_events_total{kind=\"flow\"}",
        "flowsql_events_total{kind=\"dns\"}",
        "flowsql_lost_total{cause=\"ring_buffer_full\",kind=\"flow\"}",
        "flowsql_lost_total{cause=\"ring_buffer_full\",kind=\"dns\"}",
        "flowsql_lost_total{cause=\"not_stored\",kind=\"flow\"}",
        "flowsql_lost_total{cause=\"not_stored\",kind=\"domain\"}",
        "flowsql_dns_messages_total",
        "flowsql_dns_messages_rejected_total",
        "flowsql_dns_observations_total",
        "flowsql_name_cache_entries",
        "flowsql_name_cache_bytes",
        "flowsql_store_commit_duration_seconds_bucket{le=\"+Inf\"}",
        "flowsql_store_commit_duration_seconds_sum",
        "flowsql_store_commit_duration_seconds_count",
        "flowsql_store_rows{tier=\"hot\"}",
        "flowsql_store_rows{tier=\"cold\"}",
        "flowsql_store_bytes{tier=\"hot\"}",
        "flowsql_store_bytes{tier=\"cold\"}",
        "flowsql_store_cold_files",
        "flowsql_export_last_success_timestamp_seconds",
        "flowsql_export_last_run_failed",
        "flowsql_ring_buffer_pending_bytes",
        "flowsql_ring_buffer_max_pending_bytes",
        "flowsql_ring_buffer_size_bytes",
        "flowsql_store_backlog",
        "flowsql_store_readable",
        "flowsql_build_info{version=\"0.1.0\"}",
        "flowsql_start_time_seconds",
    ] {
        sample(&samples, series);
    }
    for kind in ["counter", "gauge", "histogram"] {
        assert!(page.contains(&format!(" {kind}\n")), "no {kind} family");
    }

    // The counts agree with each other and with the store.
    let stored_rows = query_count(&data, "SELECT count(*) AS n FROM flows");
    assert_eq!(stored_rows, u64::from(CONNECTIONS));
    let ends = query_count(&data, "SELECT count(*) AS n FROM flow_ends");
    assert_eq!(ends, u64::from(CONNECTIONS));
    let events = sample(&samples, "flowsql_events_total{kind=\"flow\"}");
    assert_eq!(events, stored_rows as f64, "flow events = flows stored");
    assert_eq!(
        sample(&samples, "flowsql_events_total{kind=\"end\"}"),
        ends as f64,
        "end events = ends stored"
    );
    let events = events + ends as f64;
    assert_eq!(sample(&samples, "flowsql_store_rows_received_total"), events);
    assert_eq!(sample(&samples, "flowsql_store_rows_stored_total"), events);
    assert_eq!(
        sample(&samples, "flowsql_store_rows{tier=\"hot\"}")
            + sample(&samples, "flowsql_store_rows{tier=\"cold\"}"),
        events
    );
    let lost: Vec<(&String, &f64)> =
        samples.iter().filter(|(s, _)| s.starts_with("flowsql_lost_total")).collect();
    assert_eq!(lost.len(), 6, "{lost:?}");
    assert!(lost.iter().all(|(_, v)| **v == 0.0), "nothing lost: {lost:?}");
    assert_eq!(sample(&samples, "flowsql_store_failures_total"), 0.0);
    assert_eq!(sample(&samples, "flowsql_records_undecodable_total"), 0.0);
    assert_eq!(sample(&samples, "flowsql_events_total{kind=\"dns\"}"), 0.0);
    assert_eq!(sample(&samples, "flowsql_ring_buffer_size_bytes"), f64::from(1u32 << 20));
    assert!(sample(&samples, "flowsql_ring_buffer_max_pending_bytes") <= f64::from(1u32 << 20));
    assert_eq!(sample(&samples, "flowsql_store_readable"), 1.0);
    assert_eq!(sample(&samples, "flowsql_export_last_run_failed"), 0.0);
    assert!(sample(&samples, "flowsql_store_cold_files") >= 1.0);
    assert!(sample(&samples, "flowsql_store_bytes{tier=\"hot\"}") > 0.0);
    assert!(sample(&samples, "flowsql_store_bytes{tier=\"cold\"}") > 0.0);
    let now = flowsql_store::now_ns() as f64 / 1e9;
    let export = sample(&samples, "flowsql_export_last_success_timestamp_seconds");
    assert!(
        started - 1.0 <= export && export <= now,
        "last export {export} within the test ({started}..{now})"
    );
    let start = sample(&samples, "flowsql_start_time_seconds");
    assert!(started - 1.0 <= start && start <= now, "{start}");
    // The commit latency histogram: cumulative buckets ending at the count.
    let count = sample(&samples, "flowsql_store_commit_duration_seconds_count");
    assert!(count >= 1.0);
    assert_eq!(sample(&samples, "flowsql_store_commit_duration_seconds_bucket{le=\"+Inf\"}"), count);
    assert_eq!(sample(&samples, "flowsql_store_commits_total"), count);
    let buckets: Vec<f64> = samples
        .iter()
        .filter(|(s, _)| s.starts_with("flowsql_store_commit_duration_seconds_bucket"))
        .map(|(_, v)| *v)
        .collect();
    assert!(buckets.len() > 2 && buckets.iter().all(|b| *b <= count), "{buckets:?}");
    assert!(sample(&samples, "flowsql_store_commit_duration_seconds_sum") > 0.0);

    // capture_stats holds the same counters, over time: its newest row
    // catches up within a few seconds.
    let mut stats = None;
    let caught_up = wait_until(Duration::from_secs(20), || {
        stats = latest_capture_stats(&data);
        stats.as_ref().is_some_and(|s| s["events"] == 2 * CONNECTIONS && s["rowsStored"] == 2 * CONNECTIONS)
    });
    assert!(caught_up, "capture_stats did not reach {} events (begins and ends): {stats:?}", 2 * CONNECTIONS);
    let stats = stats.expect("a row");
    let samples = parse_metrics(&scrape(&addr));
    let counters = counters_of(&stats);
    assert_eq!(stats["lost"], 0);
    assert_eq!(stats["rowsNotStored"], 0);
    assert_eq!(stats["storeFailures"], 0);
    for (key, series) in [
        ("flowEvents", "flowsql_events_total{kind=\"flow\"}"),
        ("endEvents", "flowsql_events_total{kind=\"end\"}"),
        ("unattributedRows", "flowsql_unattributed_rows_total"),
        ("dnsEvents", "flowsql_events_total{kind=\"dns\"}"),
        ("flowRingbufFull", "flowsql_lost_total{cause=\"ring_buffer_full\",kind=\"flow\"}"),
        ("dnsRingbufFull", "flowsql_lost_total{cause=\"ring_buffer_full\",kind=\"dns\"}"),
        ("domainsNotStored", "flowsql_lost_total{cause=\"not_stored\",kind=\"domain\"}"),
        ("synackDuplicates", "flowsql_synack_duplicates_total"),
        ("undecodable", "flowsql_records_undecodable_total"),
        ("dnsMessages", "flowsql_dns_messages_total"),
        ("dnsRejected", "flowsql_dns_messages_rejected_total"),
        ("dnsObservations", "flowsql_dns_observations_total"),
        ("dnsCacheAddresses", "flowsql_name_cache_entries"),
        ("ringBufferBytes", "flowsql_ring_buffer_size_bytes"),
        ("rowsReceived", "flowsql_store_rows_received_total"),
    ] {
        assert_eq!(
            counters[key].as_f64(),
            Some(sample(&samples, series)),
            "capture_stats counters.{key} and {series}: {counters}"
        );
    }

    // SIGHUP reloads the file: what can change without detaching does, the
    // rest is named as needing a restart; systemd hears of it.
    // (metrics_addr in the file changes nothing: the flag still wins.)
    std::fs::write(
        &config,
        "[capture]\nshutdown_timeout = \"12s\"\nmetrics_addr = \"127.0.0.1:1\"\n[capture.name_cache]\nmax_addresses = 1000\n",
    )
    .expect("rewrite config");
    capture.signal(libc::SIGHUP);
    assert!(notified().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(notified(), "READY=1");
    capture.wait_for_line("SIGHUP: shutdown timeout 12s", Duration::from_secs(10));
    let restart = capture.wait_for_line("take effect only after a restart", Duration::from_secs(1));
    assert!(restart.ends_with("settings=capture.name_cache.max_addresses"), "{restart}");
    // Still serving, on the same address.
    sample(&parse_metrics(&scrape(&addr)), "flowsql_events_total{kind=\"flow\"}");

    capture.signal(libc::SIGTERM);
    let (status, log) = capture.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}:\n{log}");
    assert_eq!(notified(), "STOPPING=1");
}

#[test]
fn sigterm_during_a_burst_stores_every_captured_flow_once() {
    let netpeer = netpeer();
    let cgroup = TestCgroup::new("svcterm");
    let dir = TempDir::new("svcterm");
    let data = dir.path().join("data");
    let server = Server::start(&netpeer, Place::outside(), "127.0.0.1:0", &[]);
    let mut capture = RunningCapture::start(&[
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--cgroup".as_ref(),
        cgroup.path().as_os_str(),
        "--log-level".as_ref(),
        "info".as_ref(),
        "--shutdown-timeout".as_ref(),
        "10s".as_ref(),
    ]);
    // Logged after attaching, once the store writer starts.
    capture.wait_for_line("storing flows", Duration::from_secs(30));

    // Thousands of short connections from the cgroup for 4 s; SIGTERM after
    // 1.5 s, in the middle of it.
    let burst = Place::cgroup(&cgroup)
        .command(&netpeer)
        .args(["connect", "--to", &format!("127.0.0.1:{}", server.port)])
        .args(["--rate", "4000", "--seconds", "4", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("netpeer starts");
    let mut burst = KillOnDrop(burst);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(matches!(burst.0.try_wait(), Ok(None)), "the burst is still going when SIGTERM is sent");
    let stopping = Instant::now();
    capture.signal(libc::SIGTERM);
    let (status, log) = capture.wait_exit(Duration::from_secs(15));
    let took = stopping.elapsed();
    assert!(status.success(), "the capture exits 0 after SIGTERM ({status}):\n{log}");
    assert!(took < Duration::from_secs(10), "the stop took {took:?}, more than the shutdown timeout");
    assert!(log.contains("stopping: detaching, then committing every row signal=\"SIGTERM\""), "{log}");

    // The burst goes on after the capture stopped.
    let mut stdout = String::new();
    burst.0.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("netpeer's output");
    let burst_status = burst.0.wait().expect("netpeer ends");
    let mut stderr = String::new();
    if let Some(mut pipe) = burst.0.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(burst_status.success(), "netpeer connect failed: {stderr}");
    let made: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("connections "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("netpeer did not say how many connections it made: {stdout:?}"));

    // What the kernel programs counted, as the capture recorded it last
    // (the final row is written when the store closes).
    let stats = latest_capture_stats(&data).expect("a capture_stats row");
    let counters = counters_of(&stats);
    let events = stats["events"].as_u64().expect("events");
    assert_eq!(stats["lost"], 0, "the ring buffer lost nothing: {stats}");
    assert_eq!(counters["flowRingbufFull"], 0, "{counters}");
    assert_eq!(counters["undecodable"], 0, "{counters}");
    assert_eq!(stats["rowsNotStored"], 0, "the store lost nothing: {stats}");
    assert_eq!(stats["storeFailures"], 0, "{stats}");
    // The log's final counters say the same.
    // Events are the records that become rows: begins and ends.
    let flow_events = counters["flowEvents"].as_u64().expect("flowEvents");
    let end_events = counters["endEvents"].as_u64().expect("endEvents");
    assert_eq!(events, flow_events + end_events);
    let final_line = log.lines().find(|l| l.contains("capture stopped")).expect("a final log line");
    assert!(final_line.contains(&format!("flow_events: {flow_events},")), "{final_line} vs {stats}");
    assert!(final_line.contains(&format!("end_events: {end_events},")), "{final_line} vs {stats}");
    assert!(final_line.contains("flow_ringbuf_full: 0,"), "{final_line}");
    assert!(final_line.contains("end_ringbuf_full: 0,"), "{final_line}");
    assert!(log.contains(&format!("store closed rows={events}")), "{log}");

    let ends = query_count(&data, "SELECT count(*) AS n FROM flow_ends");
    assert_eq!(ends, end_events, "every end the kernel delivered is stored");
    let stored = query_count(&data, "SELECT count(*) AS n FROM flows");
    let distinct = query_count(
        &data,
        "SELECT count(*) AS n FROM (SELECT DISTINCT timestamp, connectionDirection, srcIP, srcPort, dstIP, dstPort FROM flows)",
    );
    eprintln!("{made} connections made, {flow_events} flows captured, {stored} stored, stop took {took:?}");
    assert_eq!(distinct, stored, "no flow is stored twice");
    assert_eq!(stored, flow_events, "every flow the kernel delivered is stored ({made} connections made)");
    assert!(ends <= stored, "an end only after its begin: {ends} ends, {stored} flows");
    assert_eq!(stats["rowsStored"].as_u64(), Some(stored + ends));
    assert!(stored > 1000, "thousands of flows before SIGTERM: {stored}");
    assert!(stored < made, "connections made after the stop are not captured: {stored} of {made}");
    // Every stored flow is one of the burst's.
    let others = query_count(
        &data,
        &format!(
            "SELECT count(*) AS n FROM flows WHERE connectionDirection <> 'outgoing' OR dstPort <> {} OR dstIP <> '127.0.0.1'",
            server.port
        ),
    );
    assert_eq!(others, 0);
}

// ---------------------------------------------------------------------------
// Permissions

/// Every file and directory under `dir` (itself included) with its mode.
fn modes(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut found = vec![(dir.to_owned(), std::fs::symlink_metadata(dir).expect("stat"))];
    let mut i = 0;
    while i < found.len() {
        if found[i].1.is_dir() {
            let path = found[i].0.clone();
            for entry in std::fs::read_dir(&path).expect("read_dir") {
                let entry = entry.expect("entry");
                found.push((entry.path(), entry.metadata().expect("stat")));
            }
        }
        i += 1;
    }
    found
}

/// What a change to the store would change: every file's name, size and
/// modification time, and the database's bytes.
/// A file's path, size, modification time (s, ns) and, for the database,
/// its bytes.
type FileState = (PathBuf, u64, i64, i64, Option<Vec<u8>>);

fn fingerprint(dir: &Path) -> Vec<FileState> {
    let mut all: Vec<_> = modes(dir)
        .into_iter()
        .filter(|(_, m)| m.is_file())
        .map(|(path, m)| {
            let bytes =
                path.to_string_lossy().contains("flowsql.db").then(|| std::fs::read(&path).expect("read"));
            (path, m.len(), m.mtime(), m.mtime_nsec(), bytes)
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// `flowsql ARGS` as user nobody with only `gid` as group, no capabilities,
/// and an environment of its own (nobody's HOME may not exist).
fn as_nobody(gid: u32, home: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "--inh-caps=-all", FLOWSQL])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_CONFIG_HOME", home.join("config"));
    command
}

#[test]
fn a_group_member_can_query_the_store_but_not_modify_it_and_others_cannot_read_it() {
    flowsql_tests::require_root();
    let dir = TempDir::new("svcperm");
    let data = dir.path().join("data");
    // Flows in both tiers: 1000 exported to Parquet, then 500 hot ones.
    for (run, count) in [("1", "1000"), ("2", "500")] {
        let out = succeeds(
            Command::new(flowsql_tests::workspace_binary(FLOWSQL, "store_stress"))
                .args(["--run", run, "--count", count, "--export-every-ms", "3600000"])
                .arg("--data-dir")
                .arg(&data),
        );
        assert!(out.contains(&format!("done {count}")), "{out}");
        if run == "1" {
            let out = succeeds(flowsql().arg("export").arg("--data-dir").arg(&data));
            assert!(out.contains("exported 1,000 rows"), "{out}");
        }
    }
    assert_eq!(query_count(&data, "SELECT count(*) AS n FROM flows"), 1500);

    // Created without any access for others, whatever the umask: files
    // 0640, directories 0750.
    let entries = modes(&data);
    assert!(entries.iter().any(|(p, _)| p.extension().is_some_and(|e| e == "parquet")), "{entries:?}");
    for (path, metadata) in &entries {
        let mode = metadata.permissions().mode() & 0o7777;
        let expected = if metadata.is_dir() { 0o750 } else { 0o640 };
        assert_eq!(mode, expected, "{} is {mode:o}", path.display());
    }

    // Give the store to a group, as an administrator would (chgrp -R).
    for (path, _) in &entries {
        std::os::unix::fs::chown(path, None, Some(STORE_GROUP)).expect("chgrp");
    }
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("home");
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).expect("chown home");
    let before = fingerprint(&data);

    // A member of the group reads it all.
    let stdout = succeeds(
        as_nobody(STORE_GROUP, &home)
            .args(["query", "SELECT count(*) AS n FROM flows", "--format", "csv", "--data-dir"])
            .arg(&data),
    );
    assert_eq!(stdout, "n\n1500\n");
    let stdout = succeeds(
        as_nobody(STORE_GROUP, &home)
            .args(["query", "SELECT count(*) AS n FROM capture_stats", "--format", "csv", "--data-dir"])
            .arg(&data),
    );
    assert!(stdout.starts_with("n\n"), "{stdout}");
    // ...but cannot change it.
    fails_with_one_line(
        as_nobody(STORE_GROUP, &home).arg("export").arg("--data-dir").arg(&data),
        &[&data.display().to_string(), "Permission denied"],
    );
    assert_eq!(fingerprint(&data), before, "the store is unchanged");

    // Someone outside the group cannot read it, and is told why.
    fails_with_one_line(
        as_nobody(NOBODY, &home).args(["query", "SELECT count(*) AS n FROM flows", "--data-dir"]).arg(&data),
        &[&format!("cannot open the flowsql store in {}", data.display()), "flowsql.db: Permission denied"],
    );
    assert_eq!(fingerprint(&data), before, "the store is unchanged");
    assert_eq!(query_count(&data, "SELECT count(*) AS n FROM flows"), 1500);
}

// ---------------------------------------------------------------------------
// The systemd unit

fn contrib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib").join(name)
}

/// `Key=value` of a unit file (the last one wins, as in systemd).
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines().rev().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn the_systemd_unit_verifies_and_matches_the_example_configuration() {
    let unit = std::fs::read_to_string(contrib("flowsql.service")).expect("contrib/flowsql.service");
    // systemd-analyze verify checks that ExecStart exists: point it at the
    // binary under test.
    let exec = unit_value(&unit, "ExecStart").expect("ExecStart");
    assert!(exec.starts_with("/usr/local/bin/flowsql capture"), "{exec}");
    let dir = TempDir::new("svcunit");
    let copy = dir.path().join("flowsql.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/flowsql", FLOWSQL)).expect("write the unit");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze runs (Debian package systemd; .ci/run installs it)");
    let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "systemd-analyze verify failed:\n{said}");
    let about_the_unit: Vec<&str> = said.lines().filter(|l| l.contains("flowsql")).collect();
    assert!(about_the_unit.is_empty(), "systemd-analyze verify warns:\n{}", about_the_unit.join("\n"));

    for (key, value) in [
        ("Type", "notify"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
        ("Restart", "on-failure"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("StateDirectory", "flowsql"),
        ("StateDirectoryMode", "0750"),
        ("UMask", "0027"),
        ("CapabilityBoundingSet", "CAP_BPF CAP_NET_ADMIN"),
        ("SystemCallArchitectures", "native"),
        ("MemoryDenyWriteExecute", "yes"),
    ] {
        assert_eq!(unit_value(&unit, key), Some(value), "{key}");
    }
    assert!(exec.contains("--data-dir /var/lib/flowsql"), "the data dir is the StateDirectory: {exec}");

    // The example configuration is valid, sets every key it shows, and stops
    // within the time systemd waits.
    let config = contrib("config.toml");
    let printed = succeeds(flowsql().arg("config").arg("--config").arg(&config));
    assert!(printed.contains("data_dir = \"/var/lib/flowsql\"  # file"), "{printed}");
    let timeout = |text: &str| -> Duration {
        let text = text.trim().trim_matches('"');
        let seconds: u64 = text.strip_suffix('s').and_then(|n| n.parse().ok()).expect("a timeout in seconds");
        Duration::from_secs(seconds)
    };
    let shutdown = printed
        .lines()
        .find_map(|l| l.strip_prefix("shutdown_timeout = "))
        .and_then(|l| l.split("  #").next())
        .map(timeout)
        .expect("shutdown_timeout");
    let stop = timeout(unit_value(&unit, "TimeoutStopSec").expect("TimeoutStopSec"));
    assert!(shutdown < stop, "capture.shutdown_timeout {shutdown:?} < TimeoutStopSec {stop:?}");
}
