//! A real browser for the tests of `flowsql serve`: Debian's headless
//! Chromium driven through its chromedriver (WebDriver), both started once
//! per test process and stopped in `Drop` (the session first, which ends
//! Chromium, then the driver), with a fresh profile directory.
//!
//! The calls are blocking and panic with a message, like the rest of the
//! harness. Chromium runs without its background network traffic (no
//! component updates, no sync, no QUIC): the machine has no network.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::TempDir;

/// Debian's packages (`apt-get install chromium chromium-driver`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One line of the browser's console log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub level: String,
    pub message: String,
}

/// Headless Chromium under chromedriver.
#[derive(Debug)]
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: TempDir,
}

/// `POST /session/{id}/se/log`: chromedriver's browser log since the last call.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({ "type": "browser" }).to_string()))
    }
}

impl Browser {
    /// Starts chromedriver and a Chromium session (window 1400x1000).
    pub fn start() -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(Path::new(path).exists(), "{path} is missing: apt-get install {package}");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the browser's runtime");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port for chromedriver")
            .port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {CHROMEDRIVER}: {e}"));
        let mut out = BufReader::new(driver.stdout.take().expect("chromedriver stdout"));
        let mut line = String::new();
        while !line.contains("started successfully") {
            line.clear();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = driver.kill();
                panic!("chromedriver did not start");
            }
        }
        std::thread::spawn(move || for _ in out.lines() {});
        let profile = TempDir::new("chromium");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!("an object literal") };
        let client = runtime.block_on(async {
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
        });
        let client = match client {
            Ok(client) => client,
            Err(error) => {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("cannot start a Chromium session: {error}");
            }
        };
        Browser { runtime, client: Some(client), driver, _profile: profile }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open until drop")
    }

    pub fn goto(&self, url: &str) {
        self.runtime.block_on(self.client().goto(url)).unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.runtime
            .block_on(self.client().execute(script, args))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns true, up to `timeout`; returns whether it did.
    pub fn wait_until(&self, timeout: Duration, script: &str, args: Vec<Value>) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.execute(script, args.clone()) == Value::Bool(true) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The text of every element matching `css`, in document order.
    pub fn texts(&self, css: &str) -> Vec<String> {
        let value = self.execute(
            "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent);",
            vec![json!(css)],
        );
        serde_json::from_value(value).expect("a list of strings")
    }

    pub fn click(&self, css: &str) {
        self.runtime.block_on(async {
            let element =
                self.client().find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}"));
            element.click().await.unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
        });
    }

    /// Replaces the value of the input or text area `css` with `text`, as typed.
    pub fn type_into(&self, css: &str, text: &str) {
        self.runtime.block_on(async {
            let element =
                self.client().find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}"));
            element.clear().await.unwrap_or_else(|e| panic!("cannot clear {css}: {e}"));
            element.send_keys(text).await.unwrap_or_else(|e| panic!("cannot type into {css}: {e}"));
        });
    }

    /// Writes a PNG of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        let png = self.runtime.block_on(self.client().screenshot()).expect("a screenshot");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// The console messages since the last call (errors, warnings, logs,
    /// Content-Security-Policy violations).
    pub fn console(&self) -> Vec<LogEntry> {
        let value = self.runtime.block_on(self.client().issue_cmd(BrowserLog)).expect("the browser log");
        value
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| LogEntry {
                        level: e["level"].as_str().unwrap_or_default().to_owned(),
                        message: e["message"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), client.close()).await });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where a test writes its screenshots: `target/screenshots/` of the
/// workspace (next to the build), or `FLOWSQL_TEST_SCREENSHOTS` when set (the
/// README's pictures are made with `FLOWSQL_TEST_SCREENSHOTS=docs/screenshots`).
pub fn screenshot_dir(beside_binary: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("FLOWSQL_TEST_SCREENSHOTS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // target/debug/flowsql -> target/screenshots
    let binary = Path::new(beside_binary);
    binary
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("screenshots"), |t| t.join("screenshots"))
}

/// A running `flowsql serve`, stopped with SIGTERM on drop.
#[derive(Debug)]
pub struct Serve {
    child: Child,
    /// The address it printed (with `?token=` when it needs one).
    pub url: String,
    /// What it printed before the address (the capture's banner).
    pub banner: String,
}

impl Serve {
    /// Starts `command` (a `flowsql serve ...` command line) and waits for
    /// the address it serves at.
    pub fn start(mut command: Command) -> Serve {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run flowsql serve: {e}"));
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut banner = String::new();
        let url = loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                let status = child.wait().ok();
                panic!("flowsql serve exited ({status:?}) before serving; it printed: {banner}");
            }
            if let Some(rest) = line.strip_prefix("serving ") {
                let url =
                    rest.split(" at ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_default();
                break url.to_owned();
            }
            banner.push_str(&line);
        };
        std::thread::spawn(move || for _ in out.lines() {});
        Serve { child, url, banner }
    }

    /// `host:port` of the server.
    pub fn authority(&self) -> &str {
        let rest = self.url.strip_prefix("http://").unwrap_or(&self.url);
        rest.split('/').next().unwrap_or(rest)
    }

    /// The address without the token.
    pub fn base(&self) -> String {
        format!("http://{}", self.authority())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 answer.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    /// Header lines, names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request to `authority` (`host:port`) over a new connection
/// and reads the whole answer (`Connection: close`). `headers` are extra
/// header lines; `Host` is `authority` unless given.
pub fn http(authority: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpAnswer {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(authority).unwrap_or_else(|e| panic!("connect {authority}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {authority}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send request");
    stream.write_all(body).expect("send body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read answer");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    HttpAnswer { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
}
