//! Uploads to object storage (`export.remote`) against a real S3 protocol
//! server on loopback (moto, with authentication on; started once per
//! test by `python/s3_server.py`), through the real binary: two hosts
//! upload to one bucket, each file exactly once under
//! `<prefix>/<table>/host=<host>/date=.../hour=.../`, pyarrow reads the
//! bucket itself; wrong credentials give one clear error and lose nothing;
//! a store that is down keeps the files queued (status shows the backlog)
//! until it is back.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use flowsql_event::FlowBegin;
use flowsql_store::synthetic;
use flowsql_store::{Store, batch_from_flows};
use flowsql_tests::TempDir;
use serde_json::Value;

const FLOWSQL: &str = env!("CARGO_BIN_EXE_flowsql");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/s3_server.py");
const BUCKET: &str = "flows";

/// moto on a free loopback port, killed when dropped; its request log
/// goes to a file.
struct S3Server {
    child: Child,
    port: u16,
    key: String,
    secret: String,
    log: PathBuf,
}

impl S3Server {
    /// A server that accepts any key.
    fn start(dir: &Path) -> S3Server {
        S3Server::start_in(dir, "open")
    }

    /// A server that accepts only the key it prints.
    fn start_with_auth(dir: &Path) -> S3Server {
        S3Server::start_in(dir, "auth")
    }

    fn start_in(dir: &Path, mode: &str) -> S3Server {
        let port = free_port();
        let log = dir.join(format!("s3-requests-{port}.log"));
        let mut child = Command::new("python3")
            .args([SCRIPT, "serve", &port.to_string(), BUCKET, mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("python3 must be installed (.ci/run installs it): {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
        let keys: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "the S3 server did not start (pip install -r .ci/requirements.txt): {e}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        S3Server {
            child,
            port,
            key: keys["key"].as_str().expect("key").to_owned(),
            secret: keys["secret"].as_str().expect("secret").to_owned(),
            log,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every object of the bucket and its size.
    fn objects(&self) -> BTreeMap<String, u64> {
        let out = python(&["list", &self.url(), &self.key, &self.secret, BUCKET]);
        serde_json::from_str(&out).expect("JSON")
    }

    /// The request lines of the log so far (`"PUT /flows/... HTTP/1.1" 200`).
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("] \"").map(|(_, r)| r.to_owned()))
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(b"");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn python(args: &[&str]) -> String {
    let output = Command::new("python3").arg(SCRIPT).args(args).output().expect("python3 runs");
    assert!(output.status.success(), "s3_server.py {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// `flowsql` with only the variables a test gives.
fn flowsql(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(FLOWSQL);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("FLOWSQL_") || name.starts_with("AWS_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command.args(args).envs(env.iter().copied()).env("HOME", "/nonexistent");
    command.output().expect("flowsql runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A data directory holding `count` flows of host `host`, spread over three
/// hours (three files).
fn data_dir(root: &Path, host: &str, run: u32, count: u64) -> (PathBuf, Vec<FlowBegin>) {
    let dir = root.join(format!("data-{run}"));
    let step = 3 * 3_600_000_000_000 / count as i64 / 1000 * 1000;
    let flows: Vec<FlowBegin> = (0..count)
        .map(|i| {
            let mut flow = synthetic::indexed_flow(run, i);
            flow.host_name = host.into();
            flow.timestamp_ns = synthetic::BASE_NS + i as i64 * step;
            flow
        })
        .collect();
    Store::open(&dir).expect("open").insert_flows(&batch_from_flows(&flows)).expect("insert");
    (dir, flows)
}

/// The environment of a host uploading to `server`.
fn upload_env<'a>(
    server: &'a S3Server,
    endpoint: &'a str,
    host: &'a str,
    secret: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("FLOWSQL_EXPORT_REMOTE", "s3://flows/fleet"),
        ("FLOWSQL_EXPORT_REMOTE_ENDPOINT", endpoint),
        ("FLOWSQL_HOST_NAME", host),
        ("AWS_ACCESS_KEY_ID", server.key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_REGION", "us-east-1"),
    ]
}

/// The objects the files of `dir`'s manifest must be, with their sizes.
fn expected_objects(dir: &Path, host_segment: &str) -> BTreeMap<String, u64> {
    let store = Store::open_read_only(dir).expect("open");
    let mut expected = BTreeMap::new();
    for table in ["flows", "flow_ends"] {
        for file in store.table_cold_files(table, flowsql_store::TimeRange::new(None, None)).expect("files") {
            let (table, rest) = file.relative.split_once('/').expect("table/partition/name");
            expected.insert(format!("fleet/{table}/host={host_segment}/{rest}"), file.bytes);
        }
    }
    expected
}

fn status(dir: &Path) -> Value {
    let out = flowsql(&["status", "--json", "--data-dir", dir.to_str().expect("UTF-8")], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn two_hosts_upload_each_file_exactly_once_and_pyarrow_reads_the_bucket() {
    let tmp = TempDir::new("remote-two");
    let server = S3Server::start(tmp.path());
    let endpoint = server.url();
    let (a, a_flows) = data_dir(tmp.path(), "web-1", 1, 3000);
    let (b, b_flows) = data_dir(tmp.path(), "db/2", 2, 2000);
    for (dir, host) in [(&a, "web-1"), (&b, "db/2")] {
        let out = flowsql(
            &["export", "--data-dir", dir.to_str().expect("UTF-8")],
            &upload_env(&server, &endpoint, host, &server.secret),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("uploaded "), "{}", text(&out.stdout));
    }
    let mut expected = expected_objects(&a, "web-1");
    expected.extend(expected_objects(&b, "db_2"));
    assert_eq!(expected.len(), 6, "{expected:?}");
    assert_eq!(server.objects(), expected, "every file once, whole, under its host's partition");

    // Again: nothing new, nothing sent twice.
    let puts_before = server.requests().iter().filter(|r| r.starts_with("PUT /flows/fleet/")).count();
    let out = flowsql(
        &["export", "--data-dir", a.to_str().expect("UTF-8")],
        &upload_env(&server, &endpoint, "web-1", &server.secret),
    );
    assert!(text(&out.stdout).contains("uploaded 0 files"), "{}", text(&out.stdout));
    let puts_after = server.requests().iter().filter(|r| r.starts_with("PUT /flows/fleet/")).count();
    assert_eq!(puts_before, puts_after, "no file is uploaded twice");
    assert_eq!(puts_after, expected.len(), "one PUT per file: {:?}", server.requests());
    assert_eq!(server.objects(), expected);

    let status_a = status(&a);
    assert_eq!(status_a["upload"]["backlogFiles"], 0, "{status_a}");
    assert_eq!(status_a["upload"]["remote"], "s3://flows/fleet");
    assert_eq!(status_a["upload"]["error"], Value::Null);

    // pyarrow reads the bucket through its own S3 filesystem.
    let read: Value =
        serde_json::from_str(&python(&["read", &endpoint, &server.key, &server.secret, "flows/fleet/flows"]))
            .expect("JSON");
    assert_eq!(read["rows"], (a_flows.len() + b_flows.len()) as u64);
    assert_eq!(read["byPartition"]["web-1"]["web-1"], a_flows.len() as u64, "{read}");
    assert_eq!(read["byPartition"]["db_2"]["db/2"], b_flows.len() as u64, "{read}");
    assert_eq!(read["timestamp"], "timestamp[us, tz=UTC]");

    // flowsql over the bucket: each host's flows exactly.
    let query = |sql: &str| {
        let mut env = upload_env(&server, &endpoint, "querier", &server.secret);
        env.retain(|(name, _)| *name != "FLOWSQL_EXPORT_REMOTE");
        let data = tmp.path().join("querier");
        let data = data.to_str().expect("UTF-8");
        let out = flowsql(
            &["query", "--data-dir", data, "--format", "csv", "--source", "s3://flows/fleet", sql],
            &env,
        );
        assert!(out.status.success(), "{sql}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let out = query("SELECT hostName, count(*) AS n FROM flows GROUP BY hostName ORDER BY hostName");
    assert_eq!(out, format!("hostName,n\ndb/2,{}\nweb-1,{}\n", b_flows.len(), a_flows.len()));
    let out = query("SELECT count(*) FROM flows WHERE hostName = 'db/2'");
    assert_eq!(out.lines().nth(1), Some(b_flows.len().to_string().as_str()));

    // An hour's query reads that hour's objects and no other.
    let hour = synthetic::BASE_NS + 3_600_000_000_000;
    let in_hour = |flows: &[FlowBegin]| {
        flows.iter().filter(|f| f.timestamp_ns >= hour && f.timestamp_ns < hour + 3_600_000_000_000).count()
    };
    let before = server.requests().len();
    let out = query(
        "SELECT count(*) FROM flows WHERE timestamp >= '2026-01-01T01:00:00Z' AND timestamp < '2026-01-01T02:00:00Z'",
    );
    assert_eq!(out.lines().nth(1), Some((in_hour(&a_flows) + in_hour(&b_flows)).to_string().as_str()));
    let requests: Vec<String> = server.requests()[before..].to_vec();
    let reads: Vec<&String> = requests.iter().filter(|r| r.starts_with("GET /flows/fleet/")).collect();
    assert!(!reads.is_empty(), "{requests:?}");
    for read in &reads {
        assert!(read.contains("/date=2026-01-01/hour=01/"), "a read outside the hour: {read}\n{requests:?}");
    }
    for list in requests.iter().filter(|r| r.starts_with("GET /flows?")) {
        assert!(
            list.contains("hour%3D01")
                || list.contains("hour=01")
                || (list.contains("delimiter") && !list.contains("date")),
            "a listing outside the hour: {list}\n{requests:?}"
        );
    }
    // One host, one hour: that host's objects of that hour alone.
    let before = server.requests().len();
    let out = query(
        "SELECT count(*) FROM flows WHERE hostName = 'web-1' AND timestamp >= '2026-01-01T01:00:00Z' AND timestamp < '2026-01-01T02:00:00Z'",
    );
    assert_eq!(out.lines().nth(1), Some(in_hour(&a_flows).to_string().as_str()));
    for read in server.requests()[before..].iter().filter(|r| r.starts_with("GET /flows/fleet/")) {
        assert!(read.contains("/host=web-1/date=2026-01-01/hour=01/"), "{read}");
    }
}

#[test]
fn wrong_credentials_give_one_clear_error_and_lose_nothing() {
    let tmp = TempDir::new("remote-creds");
    let server = S3Server::start_with_auth(tmp.path());
    let endpoint = server.url();
    let (dir, _) = data_dir(tmp.path(), "web-1", 3, 1000);
    let dir_text = dir.to_str().expect("UTF-8");
    let mut env = upload_env(&server, &endpoint, "web-1", "wrong");
    env.retain(|(name, _)| *name != "AWS_ACCESS_KEY_ID");
    env.push(("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY"));
    let out = flowsql(&["export", "--data-dir", dir_text], &env);
    assert!(!out.status.success(), "a refused upload fails the command");
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line:\n{stderr}");
    assert!(errors[0].contains("stay queued"), "{stderr}");
    assert!(errors[0].contains("403 Forbidden"), "{stderr}");
    assert!(server.objects().is_empty());
    // One attempt per file at most: no retry storm.
    let refused = server.requests().iter().filter(|r| r.contains(" 403")).count();
    assert!((1..=3).contains(&refused), "{:?}", server.requests());

    let s = status(&dir);
    let backlog = s["upload"]["backlogFiles"].as_u64().expect("backlog");
    assert_eq!(backlog, 3, "{s}");
    assert!(s["upload"]["error"].as_str().is_some_and(|e| e.contains("403 Forbidden")), "{s}");

    // A store that takes the key: everything goes up, nothing was lost.
    let server = S3Server::start(tmp.path());
    let endpoint = server.url();
    let out = flowsql(
        &["export", "--data-dir", dir_text],
        &upload_env(&server, &endpoint, "web-1", &server.secret),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(server.objects(), expected_objects(&dir, "web-1"));
    let s = status(&dir);
    assert_eq!(s["upload"]["backlogFiles"], 0, "{s}");
    assert_eq!(s["upload"]["error"], Value::Null, "{s}");
}

#[test]
fn a_store_that_is_down_keeps_files_queued_until_it_is_back() {
    let tmp = TempDir::new("remote-down");
    let server = S3Server::start(tmp.path());
    let (dir, _) = data_dir(tmp.path(), "web-1", 4, 1000);
    let dir_text = dir.to_str().expect("UTF-8");
    // Nothing listens on this port: the store is down.
    let down = format!("http://127.0.0.1:{}", free_port());
    let out =
        flowsql(&["export", "--data-dir", dir_text], &upload_env(&server, &down, "web-1", &server.secret));
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).starts_with("exported 1,000 rows"),
        "the local export is done: {}",
        text(&out.stdout)
    );
    let s = status(&dir);
    assert_eq!(s["upload"]["backlogFiles"], 3, "{s}");
    assert_eq!(s["cold"]["rows"], 1000, "{s}");
    // Retention removes nothing that is not uploaded.
    let up = server.url();
    let out =
        flowsql(&["export", "--data-dir", dir_text], &upload_env(&server, &up, "web-1", &server.secret));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(server.objects(), expected_objects(&dir, "web-1"));
}

/// A TCP proxy to `upstream` that forwards everything, except that it
/// stalls the `stall_at`-th `PUT` (counting from 1) after its headers and a
/// few bytes of its body, and says so on the channel: an upload in flight
/// for as long as the test wants.
fn stalling_proxy(upstream: u16, stall_at: usize) -> (u16, std::sync::mpsc::Receiver<()>) {
    proxy_on(0, upstream, stall_at)
}

/// [`stalling_proxy`] listening on `port` (0: any).
fn proxy_on(port: u16, upstream: u16, stall_at: usize) -> (u16, std::sync::mpsc::Receiver<()>) {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stalled, stalls) = std::sync::mpsc::channel();
    let puts = std::sync::Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
            let (mut client_back, mut server_back) =
                (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server_back, &mut client_back);
            });
            let stalled = stalled.clone();
            let puts = std::sync::Arc::clone(&puts);
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; 64 * 1024];
                loop {
                    let Ok(n) = client.read(&mut buffer) else { return };
                    if n == 0 {
                        return;
                    }
                    let chunk = &buffer[..n];
                    if chunk.starts_with(b"PUT ") && puts.fetch_add(1, Ordering::SeqCst) + 1 == stall_at {
                        let head = chunk.windows(4).position(|w| w == b"\r\n\r\n").map_or(n, |p| p + 4);
                        let _ = server.write_all(&chunk[..(head + 16).min(n)]);
                        let _ = stalled.send(());
                        // Hold the rest until the client goes away.
                        while client.read(&mut buffer).is_ok_and(|n| n > 0) {}
                        return;
                    }
                    if server.write_all(chunk).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, stalls)
}

#[test]
fn sigkill_during_an_upload_then_a_restart_leaves_every_file_once_and_nothing_partial() {
    let tmp = TempDir::new("remote-kill");
    let server = S3Server::start(tmp.path());
    let (dir, _) = data_dir(tmp.path(), "web-1", 5, 30_000);
    let dir_text = dir.to_str().expect("UTF-8");
    let (proxy, stalls) = stalling_proxy(server.port, 2);
    let through_proxy = format!("http://127.0.0.1:{proxy}");
    let env = upload_env(&server, &through_proxy, "web-1", &server.secret);
    let mut command = Command::new(FLOWSQL);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("FLOWSQL_") || name.starts_with("AWS_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(["export", "--data-dir", dir_text])
        .envs(env.iter().copied())
        .env("HOME", "/nonexistent")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("flowsql runs");
    // The second file's PUT is on its way: kill -9.
    stalls.recv_timeout(std::time::Duration::from_secs(60)).expect("the second upload started");
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let expected = expected_objects(&dir, "web-1");
    assert_eq!(expected.len(), 3);
    let after_kill = server.objects();
    assert_eq!(after_kill.len(), 1, "the first file only, whole: {after_kill:?}");
    for (key, size) in &after_kill {
        assert_eq!(expected.get(key), Some(size), "no partial object: {key}");
    }
    assert_eq!(status(&dir)["upload"]["backlogFiles"], 2);

    // Restart (straight to the store): the rest goes up, nothing twice.
    let direct = server.url();
    let out =
        flowsql(&["export", "--data-dir", dir_text], &upload_env(&server, &direct, "web-1", &server.secret));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("uploaded 2 files"), "{}", text(&out.stdout));
    assert_eq!(server.objects(), expected);
    let puts: Vec<String> =
        server.requests().into_iter().filter(|r| r.starts_with("PUT /flows/fleet/")).collect();
    assert_eq!(puts.len(), 3, "one complete PUT per file: {puts:?}");
}

/// The metrics page of a capture.
fn scrape(addr: &str) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    stream
        .write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A capture (root, eBPF) whose store is down for a while: it captures and
/// exports on, the backlog shows in `flowsql status` and the metrics, the
/// failure is logged once while the uploader backs off, and every file goes
/// up once the store is back.
#[test]
fn a_capture_uploads_its_backlog_once_the_store_is_back() {
    use std::time::{Duration, Instant};
    let tmp = TempDir::new("remote-capture");
    let server = S3Server::start(tmp.path());
    let dir = tmp.path().join("data");
    let dir_text = dir.to_str().expect("UTF-8").to_owned();
    // Nothing listens here until the store comes back.
    let store_port = free_port();
    let endpoint = format!("http://127.0.0.1:{store_port}");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut env = upload_env(&server, &endpoint, "cap-1", &server.secret);
    env.push(("FLOWSQL_LOG_LEVEL", "info"));
    let mut command = Command::new(FLOWSQL);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("FLOWSQL_")
            || name.starts_with("AWS_")
            || name == "RUST_LOG"
            || name == "NOTIFY_SOCKET"
        {
            command.env_remove(name);
        }
    }
    let log_path = tmp.path().join("capture.log");
    let mut capture = command
        .args(["capture", "--data-dir", &dir_text, "--export-every", "1s", "--metrics-addr", &metrics_addr])
        .envs(env.iter().copied())
        .env("HOME", "/nonexistent")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("flowsql capture starts");
    struct Stop<'a>(&'a mut Child);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let capture = Stop(&mut capture);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let wait = |what: &str, timeout: Duration, mut done: Box<dyn FnMut() -> bool + '_>| {
        let deadline = Instant::now() + timeout;
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not after {timeout:?}; log:\n{}", log());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait(
        "the uploader starts",
        Duration::from_secs(30),
        Box::new(|| log().contains("uploading exported files")),
    );
    // Connections on loopback for a few seconds: flows, exported every second.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let target = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let traffic = std::thread::spawn(move || {
        for _ in 0..30 {
            for _ in 0..5 {
                let _ = std::net::TcpStream::connect(target);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    wait(
        "exported files waiting for the store",
        Duration::from_secs(30),
        Box::new(|| {
            let s = status(&dir);
            s["upload"]["backlogFiles"].as_u64().is_some_and(|n| n >= 2) && s["upload"]["error"].is_string()
        }),
    );
    let page = scrape(&metrics_addr);
    assert!(metric(&page, "flowsql_upload_backlog_files").is_some_and(|n| n >= 2.0), "{page}");
    assert_eq!(metric(&page, "flowsql_upload_last_attempt_failed"), Some(1.0), "{page}");
    let s = status(&dir);
    assert!(s["cold"]["rows"].as_u64().is_some_and(|n| n > 0), "the local export goes on: {s}");
    assert!(s["upload"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{s}");
    traffic.join().expect("traffic");
    // Backing off, the failure is logged once, not at every attempt.
    std::thread::sleep(Duration::from_secs(4));
    let failures = log().lines().filter(|l| l.contains("upload failed, files stay queued")).count();
    assert_eq!(failures, 1, "one warning while failing:\n{}", log());
    assert!(server.objects().is_empty());

    // The store comes back.
    let _proxy = proxy_on(store_port, server.port, usize::MAX);
    wait(
        "the backlog goes up",
        Duration::from_secs(60),
        Box::new(|| status(&dir)["upload"]["backlogFiles"] == 0),
    );
    assert!(log().contains("uploads recovered"), "{}", log());
    wait(
        "the bucket holds every exported file once",
        Duration::from_secs(30),
        Box::new(|| server.objects() == expected_objects(&dir, "cap-1")),
    );
    // Stopped (the capture exports on meanwhile): every object is a file of
    // the manifest, whole, sent once.
    drop(capture);
    std::thread::sleep(Duration::from_millis(500));
    let objects = server.objects();
    let expected = expected_objects(&dir, "cap-1");
    for (key, size) in &objects {
        assert_eq!(expected.get(key), Some(size), "{key}");
    }
    let puts = server.requests().into_iter().filter(|r| r.starts_with("PUT /flows/fleet/")).count();
    assert_eq!(puts, objects.len(), "one PUT per file");
}
