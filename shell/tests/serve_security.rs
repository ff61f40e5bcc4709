//! What `flowsql serve` refuses, over plain HTTP: statements that are not
//! reads (`COPY`, `CREATE EXTERNAL TABLE`, `SET`), a result over the row
//! limit, requests for another host name on a loopback listener (DNS
//! rebinding), cross-site requests, and, on a listener that is not loopback
//! (0.0.0.0, and an address in a network namespace reached over a veth
//! pair), every request without the token (401). Every answer carries the
//! Content-Security-Policy.

use std::process::Command;

use flowsql_store::{Store, batch_from_flows};
use flowsql_tests::browser::{HttpAnswer, Serve, http};
use flowsql_tests::{Netns, TempDir};

const FLOWSQL: &str = env!("CARGO_BIN_EXE_flowsql");

/// A store with a few flows.
fn store(tag: &str) -> TempDir {
    let data = TempDir::new(tag);
    let mut store = Store::open(data.path()).expect("store");
    let flows = flowsql_store::synthetic::edge_flows();
    store.insert_flows(&batch_from_flows(&flows)).expect("insert");
    data
}

fn serve(data: &TempDir, listen: &str, extra: &[&str]) -> Serve {
    let mut command = Command::new(FLOWSQL);
    command.args(["serve", "--listen", listen, "--data-dir"]).arg(data.path()).args(extra);
    Serve::start(command)
}

fn post_sql(authority: &str, sql: &str, headers: &[(&str, &str)]) -> HttpAnswer {
    let body = serde_json::to_vec(&serde_json::json!({ "sql": sql })).expect("json");
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    http(authority, "POST", "/api/sql", &all, &body)
}

fn message(answer: &HttpAnswer) -> String {
    let value: serde_json::Value = serde_json::from_slice(&answer.body).expect("a JSON error");
    value["message"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn only_reads_run_within_the_row_limit() {
    let data = store("serve-reads");
    let serve = serve(&data, "127.0.0.1:0", &["--max-rows", "3"]);
    let at = serve.authority();
    let target = data.path().join("copied.csv");

    let copy = post_sql(at, &format!("COPY (SELECT * FROM flows) TO '{}'", target.display()), &[]);
    assert_eq!(copy.status, 400);
    assert!(message(&copy).starts_with("COPY is refused: it writes files"), "{}", message(&copy));
    assert!(!target.exists(), "nothing written");

    let external = post_sql(at, "CREATE EXTERNAL TABLE secrets STORED AS CSV LOCATION '/etc/passwd'", &[]);
    assert_eq!(external.status, 400);
    assert!(
        message(&external).starts_with("CREATE EXTERNAL TABLE is refused: it reads files"),
        "{}",
        message(&external)
    );
    let after = post_sql(at, "SELECT * FROM secrets", &[]);
    assert!(
        message(&after).contains("secrets") && message(&after).contains("not found"),
        "{}",
        message(&after)
    );

    for (sql, said) in [
        ("SET datafusion.execution.batch_size = 1", "SET is refused"),
        ("CREATE VIEW v AS SELECT 1", "CREATE VIEW ... is refused"),
        ("SELECT 1 INTO t", "not supported"),
        ("SELECT 1; SELECT 2", "run one statement at a time"),
    ] {
        let answer = post_sql(at, sql, &[]);
        assert_eq!(answer.status, 400, "{sql}");
        assert!(message(&answer).contains(said), "{sql}: {}", message(&answer));
    }

    let over = post_sql(at, "SELECT * FROM flows", &[]);
    assert_eq!(over.status, 400);
    assert_eq!(message(&over), "the result has more than 3 rows, the limit here: add a LIMIT, or aggregate");
    let within = post_sql(at, "SELECT srcIP FROM flows ORDER BY srcIP LIMIT 3", &[]);
    assert_eq!(within.status, 200, "{}", within.text());
    let result: serde_json::Value = serde_json::from_slice(&within.body).expect("json");
    assert_eq!(result["rowCount"], 3);
    assert_eq!(result["columns"], serde_json::json!(["srcIP"]));
    for read in ["SHOW TABLES", "DESCRIBE flows", "EXPLAIN SELECT count(*) FROM flows"] {
        let answer = post_sql(at, read, &[]);
        assert!(
            answer.status == 200 || message(&answer).contains("more than 3 rows"),
            "{read}: {}",
            answer.text()
        );
    }
    let syntax = post_sql(at, "SELEC 1", &[]);
    let error: serde_json::Value = serde_json::from_slice(&syntax.body).expect("json");
    assert_eq!(error["kind"], "syntax", "{error}");
}

#[test]
fn a_loopback_listener_answers_only_loopback_host_names_and_sets_its_policy() {
    let data = store("serve-host");
    let serve = serve(&data, "127.0.0.1:0", &[]);
    let at = serve.authority();
    let page = http(at, "GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    let policy = page.header("content-security-policy").expect("a policy");
    assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline") && !policy.contains("http"), "{policy}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert!(page.text().contains("/assets/app.js"));
    for asset in ["app.js", "app.css", "uPlot.iife.min.js", "d3-force.min.js"] {
        assert_eq!(http(at, "GET", &format!("/assets/{asset}"), &[], b"").status, 200, "{asset}");
    }
    let port = at.rsplit(':').next().expect("port");
    for host in [format!("localhost:{port}"), "localhost:9999".to_owned(), format!("[::1]:{port}")] {
        assert_eq!(http(at, "GET", "/api/info", &[("Host", &host)], b"").status, 200, "{host}");
    }
    let rebound = http(at, "GET", "/api/info", &[("Host", "attacker.example:8686")], b"");
    assert_eq!(rebound.status, 403);
    assert!(rebound.text().contains("loopback"), "{}", rebound.text());
    assert!(rebound.header("content-security-policy").is_some());
    let cross = http(at, "GET", "/api/info", &[("Sec-Fetch-Site", "cross-site")], b"");
    assert_eq!(cross.status, 403);
}

#[test]
fn a_listener_on_every_address_needs_its_token() {
    let data = store("serve-any");
    let token = "0123456789abcdef0123456789abcdef";
    let mut command = Command::new(FLOWSQL);
    command
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(data.path())
        .env("FLOWSQL_SERVE_TOKEN", token);
    let serve = Serve::start(command);
    assert!(serve.url.ends_with(&format!("/?token={token}")), "{}", serve.url);
    let port = serve.authority().rsplit(':').next().expect("port").to_owned();
    let at = format!("127.0.0.1:{port}");
    checks_token(&at, token);
}

#[test]
fn a_listener_in_a_network_namespace_needs_its_generated_token() {
    let netns = Netns::new("srv");
    let root_if = flowsql_tests::unique_name("sr");
    let ns_if = flowsql_tests::unique_name("sn");
    // A /30 of the documentation-adjacent benchmarking range, on this machine only.
    let octet = std::process::id() % 250 + 1;
    let (root_addr, ns_addr) = (format!("198.18.{octet}.1"), format!("198.18.{octet}.2"));
    flowsql_tests::run(
        "ip",
        &["link", "add", &root_if, "type", "veth", "peer", "name", &ns_if, "netns", netns.name()],
    );
    let _link = LinkGuard(root_if.clone());
    flowsql_tests::run("ip", &["addr", "add", &format!("{root_addr}/30"), "dev", &root_if]);
    flowsql_tests::run("ip", &["link", "set", &root_if, "up"]);
    netns.ip(&["addr", "add", &format!("{ns_addr}/30"), "dev", &ns_if]);
    netns.ip(&["link", "set", &ns_if, "up"]);

    let data = store("serve-netns");
    let mut command = Command::new("ip");
    command
        .args([
            "netns",
            "exec",
            netns.name(),
            FLOWSQL,
            "serve",
            "--listen",
            &format!("{ns_addr}:8686"),
            "--data-dir",
        ])
        .arg(data.path())
        .env_remove("FLOWSQL_SERVE_TOKEN");
    let serve = Serve::start(command);
    let token = serve.url.rsplit_once("/?token=").map(|(_, t)| t.to_owned()).expect("a token in the address");
    assert_eq!(token.len(), 64, "a generated token: {}", serve.url);
    checks_token(&format!("{ns_addr}:8686"), &token);
}

/// Removes a veth pair (its peer goes with it).
struct LinkGuard(String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

fn checks_token(at: &str, token: &str) {
    for path in ["/", "/api/info", "/assets/app.js", "/api/events"] {
        let answer = http(at, "GET", path, &[], b"");
        assert_eq!(answer.status, 401, "{path} without the token");
        assert!(answer.text().contains("needs its token"), "{}", answer.text());
    }
    let sql = post_sql(at, "SELECT 1", &[]);
    assert_eq!(sql.status, 401);
    let wrong = http(at, "GET", "/api/info", &[("Authorization", "Bearer not-the-token-at-all-000")], b"");
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {token}");
    assert_eq!(http(at, "GET", "/api/info", &[("Authorization", &bearer)], b"").status, 200);
    // Opening the printed address sets the cookie and drops the token from the address bar.
    let opened = http(at, "GET", &format!("/?token={token}"), &[], b"");
    assert_eq!(opened.status, 303);
    assert_eq!(opened.header("location"), Some("/"));
    let cookie = opened.header("set-cookie").expect("a cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().expect("name=value");
    assert_eq!(http(at, "GET", "/", &[("Cookie", pair)], b"").status, 200);
    assert_eq!(post_sql(at, "SELECT 1", &[("Cookie", pair)]).status, 200);
    assert_eq!(http(at, "GET", "/?token=wrong", &[], b"").status, 401);
}
