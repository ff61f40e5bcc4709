//! `flowsql serve` over a store with known flows (attributed to processes and
//! a container, one cgroup not, with connection ends: bytes and failed
//! attempts), in headless Chromium: the map shows the expected nodes and edge
//! counts, the timeline's per-minute
//! counts equal the same SQL run through `flowsql query`, the SQL view's
//! table (and its CSV download) equals `flowsql query --format csv`, errors
//! say where, refused statements say why, and a hostile DNS name is shown
//! as text. Writes a screenshot of each view (`target/screenshots/`, or
//! `FLOWSQL_TEST_SCREENSHOTS`: the README's come from this test).
//!
//! One test function, so that Chromium and chromedriver start once.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use flowsql_event::{Attribution, Direction, DomainList, DomainObservation, EndReason, FlowBegin, FlowEnd};
use flowsql_store::synthetic::end_of;
use flowsql_store::{ExportOptions, Store, TimeRange, batch_from_ends, batch_from_flows};
use flowsql_tests::TempDir;
use flowsql_tests::browser::{Browser, Serve, http, screenshot_dir};
use serde_json::{Value, json};

const FLOWSQL: &str = env!("CARGO_BIN_EXE_flowsql");
const HOSTILE: &str = "<img src=x onerror=alert(1)>.evil.test";
/// An edge's remote end, direction, bytes, failed attempts and whether it
/// is drawn as failing.
type EdgeEnds = (String, String, Option<String>, Option<String>, bool);

/// The container of cgroup 202's outgoing flows.
const CONTAINER: &str = "4f2a0c9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f";

/// 2026-11-28T10:`minute`:`second`Z in nanoseconds.
fn at(minute: i64, second: i64) -> i64 {
    (1_795_824_000 + 10 * 3600 + minute * 60 + second) * 1_000_000_000
}

const SINCE_MS: i64 = (1_795_824_000 + 10 * 3600) * 1000;
const UNTIL_MS: i64 = SINCE_MS + 3_600_000;

fn names(list: &[&str]) -> DomainList {
    list.iter().map(|n| Arc::<str>::from(*n)).collect()
}

#[expect(clippy::too_many_arguments, reason = "one flow per line reads best below")]
fn flow(
    ts: i64,
    direction: Direction,
    src: &str,
    src_port: u16,
    dst: &str,
    dst_port: u16,
    domains: &[&str],
    cgroup: u64,
) -> FlowBegin {
    let (src_domains, dst_domains) = if direction == Direction::Incoming {
        (names(domains), names(&[]))
    } else {
        (names(&[]), names(domains))
    };
    FlowBegin {
        timestamp_ns: ts,
        direction,
        src_ip: src.parse::<IpAddr>().expect("address"),
        dst_ip: dst.parse::<IpAddr>().expect("address"),
        src_port,
        dst_port,
        src_domains,
        dst_domains,
        cgroup_id: cgroup,
        host_name: Arc::from("testhost"),
        flow_id: 0,
        attribution: who(direction, cgroup),
    }
}

/// Who made the flows of each cgroup: curl in 101, a container's process in
/// 202 (and sshd listening there), nobody known in 303 (the map names it by
/// its cgroup).
fn who(direction: Direction, cgroup: u64) -> Attribution {
    let (pid, name, container) = match (cgroup, direction) {
        (101, _) => (Some(4101), "curl", ""),
        (202, Direction::Outgoing) => (Some(4202), "python3", CONTAINER),
        (202, Direction::Incoming) => (Some(4222), "sshd", ""),
        _ => (None, "", ""),
    };
    Attribution {
        process_id: pid,
        process_name: Arc::from(name),
        container_id: Arc::from(container),
        ..Attribution::default()
    }
}

/// The known ends: the five flows of curl to www.example.com with their
/// bytes, and two attempts of curl to 192.0.2.10:5432 refused at 10:02.
fn known_ends(flows: &[FlowBegin]) -> Vec<FlowEnd> {
    let mut ends: Vec<FlowEnd> = flows
        .iter()
        .filter(|f| f.cgroup_id == 101 && f.dst_port == 443)
        .map(|f| end_of(f, EndReason::Fin, 100, 10_000))
        .collect();
    for second in [40, 41] {
        let attempt = flow(
            at(2, second),
            Direction::Outgoing,
            "10.0.0.5",
            50_150 + second as u16,
            "192.0.2.10",
            5432,
            &[],
            101,
        );
        ends.push(FlowEnd { flow_id: 1_000 + second as u64, ..end_of(&attempt, EndReason::Refused, 0, 0) });
    }
    ends.sort_by_key(|e| e.timestamp_ns);
    ends
}

/// The known capture: 15 flows between 10:01 and 10:40, five edges.
fn known_flows() -> Vec<FlowBegin> {
    use Direction::{Incoming, Outgoing};
    let mut flows = Vec::new();
    let web = ["www.example.com", "example.com"];
    for (i, minute) in [1, 1, 2, 20, 33].into_iter().enumerate() {
        flows.push(flow(
            at(minute, i as i64),
            Outgoing,
            "10.0.0.5",
            50_000 + i as u16,
            "93.184.216.34",
            443,
            &web,
            101,
        ));
    }
    for (i, minute) in [2, 21, 21].into_iter().enumerate() {
        flows.push(flow(
            at(minute, 10 + i as i64),
            Outgoing,
            "10.0.0.5",
            50_100 + i as u16,
            "192.0.2.10",
            5432,
            &[],
            101,
        ));
    }
    for (i, minute) in [5, 25].into_iter().enumerate() {
        flows.push(flow(
            at(minute, 3),
            Outgoing,
            "10.0.0.6",
            50_200 + i as u16,
            "93.184.216.34",
            443,
            &web[..1],
            202,
        ));
    }
    for (i, minute) in [3, 3, 30, 40].into_iter().enumerate() {
        flows.push(flow(
            at(minute, 7 + i as i64),
            Incoming,
            "198.51.100.7",
            40_000 + i as u16,
            "10.0.0.6",
            22,
            &["scanner.example.net"],
            202,
        ));
    }
    flows.push(flow(at(22, 0), Outgoing, "10.0.0.7", 50_300, "203.0.113.66", 443, &[HOSTILE], 303));
    flows.sort_by_key(|f| f.timestamp_ns);
    for (i, flow) in flows.iter_mut().enumerate() {
        flow.flow_id = i as u64 + 1;
    }
    flows
}

/// A data directory with the known flows: those before 10:15 in Parquet,
/// the others in the hot tier, and the names in `domains`.
fn known_store(dir: &Path) {
    let flows = known_flows();
    let mut store = Store::open(dir).expect("store");
    store.insert_flows(&batch_from_flows(&flows)).expect("insert");
    store.insert("flow_ends", &batch_from_ends(&known_ends(&flows))).expect("insert ends");
    store.export(&ExportOptions::up_to(at(15, 0)), &mut |_| {}).expect("export");
    assert!(!store.cold_files(TimeRange::ALL).expect("cold").is_empty(), "some flows in Parquet");
    assert!(store.hot_flow_count(TimeRange::ALL).expect("hot") > 0, "some flows hot");
    // What the DNS answers taught: the names of each flow's remote end.
    let observations: Vec<DomainObservation> = flows
        .iter()
        .flat_map(|f| {
            let (ip, names) = match f.direction {
                Direction::Outgoing => (f.dst_ip, &f.dst_domains),
                Direction::Incoming => (f.src_ip, &f.src_domains),
            };
            names.iter().map(move |name| DomainObservation {
                ip,
                name: name.clone(),
                question: names[0].clone(),
                seen_ns: f.timestamp_ns - 1_000_000,
                expires_ns: f.timestamp_ns + 60_000_000_000,
            })
        })
        .collect();
    store.record_domains(&observations).expect("domains");
}

/// `flowsql query --format csv SQL` on `dir`.
fn cli_csv(dir: &Path, sql: &str) -> String {
    let output = Command::new(FLOWSQL)
        .args(["query", "--format", "csv", "--data-dir"])
        .arg(dir)
        .arg(sql)
        .output()
        .expect("flowsql query runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8")
}

/// RFC 4180 fields; an empty unquoted field is NULL.
fn parse_csv(text: &str) -> Vec<Vec<Option<String>>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let (mut quoted, mut was_quoted) = (false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => (quoted, was_quoted) = (true, true),
            (false, ',' | '\n') => {
                let value = std::mem::take(&mut field);
                row.push((was_quoted || !value.is_empty()).then_some(value));
                was_quoted = false;
                if c == '\n' {
                    rows.push(std::mem::take(&mut row));
                }
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

/// The cells of a table on the page, NULL cells as `None`.
fn page_table(browser: &Browser, css: &str) -> Vec<Vec<Option<String>>> {
    let value = browser.execute(
        "return Array.from(document.querySelectorAll(arguments[0] + ' tr')).map(tr => \
           Array.from(tr.children).map(c => c.classList.contains('null') ? null : c.textContent));",
        vec![json!(css)],
    );
    serde_json::from_value(value).expect("rows of cells")
}

fn wait_for_render(browser: &Browser, after: u64) {
    assert!(
        browser.wait_until(
            Duration::from_secs(20),
            "return Number(document.body.dataset.renders || 0) > arguments[0];",
            vec![json!(after)]
        ),
        "the view did not render; status: {:?}",
        browser.texts("#status")
    );
}

fn renders(browser: &Browser) -> u64 {
    browser.execute("return Number(document.body.dataset.renders || 0);", vec![]).as_u64().unwrap_or(0)
}

fn no_errors_nor_injected_markup(browser: &Browser) {
    let console = browser.console();
    // The SQL view's refused statements answer 400, which Chromium logs.
    let expected = |message: &str| {
        message.contains("/api/sql - Failed to load resource: the server responded with a status of 400")
    };
    let bad: Vec<_> = console
        .iter()
        .filter(|e| {
            e.level == "SEVERE"
                || e.message.contains("Content Security Policy")
                || e.message.contains("Refused")
        })
        .filter(|e| !expected(&e.message))
        .collect();
    assert!(bad.is_empty(), "the browser reported: {bad:?}");
    let images = browser.execute("return document.querySelectorAll('img').length;", vec![]);
    assert_eq!(images, json!(0), "no markup from data");
}

#[test]
fn map_timeline_and_sql_views_show_the_store_as_the_cli_does() {
    let data = TempDir::new("serve-store");
    known_store(data.path());
    let mut command = Command::new(FLOWSQL);
    command.args(["serve", "--listen", "127.0.0.1:0", "--max-rows", "50", "--data-dir"]).arg(data.path());
    let serve = Serve::start(command);
    assert!(serve.url.starts_with("http://127.0.0.1:"), "{}", serve.url);
    let shots = screenshot_dir(FLOWSQL);
    let browser = Browser::start();

    // The map of 10:00-11:00.
    browser.goto(&format!("{}/#view=map&since={SINCE_MS}&until={UNTIL_MS}", serve.base()));
    wait_for_render(&browser, 0);
    let edges: Vec<(String, String, String, u64, String)> = serde_json::from_value(browser.execute(
        "return Array.from(document.querySelectorAll('#map-svg g.edge')).map(g => \
           [g.dataset.local, g.dataset.remote, g.dataset.direction, Number(g.dataset.flows), \
            g.querySelector('text.edge-count').textContent]);",
        vec![],
    ))
    .expect("edges");
    let mut edges: Vec<_> = edges
        .into_iter()
        .map(|(l, r, d, n, shown)| {
            assert_eq!(shown, n.to_string(), "the edge's label is its count");
            (l, r, d, n)
        })
        .collect();
    edges.sort();
    let edge = |l: &str, r: &str, d: &str, n: u64| (l.to_owned(), r.to_owned(), d.to_owned(), n);
    assert_eq!(
        edges,
        vec![
            edge("cgroup 303", HOSTILE, "outgoing", 1),
            edge(&format!("container {}", &CONTAINER[..12]), "www.example.com", "outgoing", 2),
            edge("curl", "192.0.2.10", "outgoing", 3),
            edge("curl", "www.example.com", "outgoing", 5),
            edge("sshd", "scanner.example.net", "incoming", 4),
        ]
    );
    let mut nodes: Vec<(String, String)> = serde_json::from_value(browser.execute(
        "return Array.from(document.querySelectorAll('#map-svg g.node')).map(g => [g.dataset.kind, g.querySelector('text').textContent]);",
        vec![],
    ))
    .expect("nodes");
    nodes.sort();
    let node = |k: &str, l: &str| (k.to_owned(), l.to_owned());
    assert_eq!(
        nodes,
        vec![
            node("local", "cgroup 303"),
            node("local", &format!("container {}", &CONTAINER[..12])),
            node("local", "curl"),
            node("local", "sshd"),
            node("remote", "192.0.2.10"),
            node("remote", HOSTILE),
            node("remote", "scanner.example.net"),
            node("remote", "www.example.com"),
        ]
    );
    // With connection ends: bytes both ways, failed attempts in red.
    let ends: Vec<EdgeEnds> = serde_json::from_value(browser.execute(
        "return Array.from(document.querySelectorAll('#map-svg g.edge')).filter(g => g.dataset.local === 'curl').map(g => \
           [g.dataset.remote, g.dataset.direction, g.dataset.bytes || null, g.dataset.failed || null, g.classList.contains('failing')]);",
        vec![],
    ))
    .expect("curl's edges");
    let mut ends = ends;
    ends.sort();
    assert_eq!(
        ends,
        vec![
            (
                "192.0.2.10".to_owned(),
                "outgoing".to_owned(),
                Some("0".to_owned()),
                Some("2".to_owned()),
                true
            ),
            (
                "www.example.com".to_owned(),
                "outgoing".to_owned(),
                Some("50500".to_owned()),
                Some("0".to_owned()),
                false
            ),
        ],
        "curl's edges: 5 x (100 + 10,000) bytes to www.example.com, 2 refused attempts to 192.0.2.10"
    );
    // Clicking an edge lists its flows.
    browser.execute(
        "Array.from(document.querySelectorAll('#map-svg g.edge')).find(g => g.dataset.local === 'curl' \
           && g.dataset.remote === 'www.example.com').dispatchEvent(new MouseEvent('click', {bubbles: true}));",
        vec![],
    );
    assert!(
        browser.wait_until(
            Duration::from_secs(10),
            "return document.querySelectorAll('#details-table tbody tr').length === 5;",
            vec![]
        ),
        "the edge lists its 5 flows: {:?}",
        page_table(&browser, "#details-table")
    );
    no_errors_nor_injected_markup(&browser);
    browser.screenshot(&shots.join("map.png"));

    // A filter change: only incoming flows.
    let before = renders(&browser);
    browser.execute("document.getElementById('f-direction').value = 'incoming'; document.getElementById('filters').requestSubmit();", vec![]);
    wait_for_render(&browser, before);
    assert_eq!(browser.texts("#map-svg g.edge text.edge-count"), ["4"]);
    browser.execute("document.getElementById('f-direction').value = ''; document.getElementById('filters').requestSubmit();", vec![]);
    wait_for_render(&browser, before + 1);

    // The timeline: its per-minute counts are those of the same SQL.
    let before = renders(&browser);
    browser.click("#tab-timeline");
    wait_for_render(&browser, before);
    let table = page_table(&browser, "#timeline-table");
    // The store has connection ends: failed attempts per minute beside the counts.
    assert_eq!(
        table[0],
        vec![
            Some("bucket".into()),
            Some("outgoing".into()),
            Some("incoming".into()),
            Some("failed attempts".into())
        ]
    );
    let expected = cli_csv(
        data.path(),
        &format!(
            "WITH range AS (SELECT to_timestamp_millis({SINCE_MS}) AS since, to_timestamp_millis({UNTIL_MS}) AS until), \
                  b AS (SELECT date_trunc('minute', timestamp) AS minute, \
                          count(*) FILTER (WHERE connectionDirection = 'outgoing') AS outgoing, \
                          count(*) FILTER (WHERE connectionDirection = 'incoming') AS incoming \
                        FROM flows, range WHERE timestamp >= since AND timestamp < until GROUP BY 1), \
                  f AS (SELECT date_trunc('minute', timestamp) AS minute, count(*) AS failed \
                        FROM flow_ends, range WHERE timestamp >= since AND timestamp < until \
                          AND endReason IN ('refused', 'timeout', 'unreachable') GROUP BY 1) \
             SELECT coalesce(b.minute, f.minute) AS minute, coalesce(b.outgoing, 0) AS outgoing, \
               coalesce(b.incoming, 0) AS incoming, coalesce(f.failed, 0) AS failed \
             FROM b FULL JOIN f ON b.minute = f.minute ORDER BY 1"
        ),
    );
    let expected: Vec<Vec<Option<String>>> = parse_csv(&expected)
        .into_iter()
        .skip(1)
        .map(|row| {
            let mut row = row;
            row[0] = row[0].as_ref().map(|t| t.replace(".000000000Z", "Z"));
            row
        })
        .collect();
    assert_eq!(table[1..].to_vec(), expected, "per-minute counts as flowsql query says");
    assert_eq!(expected.len(), 11, "eleven minutes have flows");
    browser.execute("document.getElementById('timeline-data').open = true;", vec![]);
    no_errors_nor_injected_markup(&browser);
    browser.screenshot(&shots.join("timeline.png"));
    // Stacked by destination, the hostile name is a legend entry, as text.
    let before = renders(&browser);
    browser.execute("const s = document.getElementById('t-stack'); s.value = 'destination'; s.dispatchEvent(new Event('change'));", vec![]);
    wait_for_render(&browser, before);
    let legend = browser.texts("#timeline-legend li");
    assert!(legend.contains(&format!("{HOSTILE} (1)")), "{legend:?}");
    assert!(legend.contains(&"www.example.com (7)".to_owned()), "{legend:?}");
    no_errors_nor_injected_markup(&browser);

    // The SQL view: its table is the CLI's CSV.
    browser.click("#tab-sql");
    let sql = "SELECT timestamp, connectionDirection, srcIP, srcPort, dstIP, dstPort, dstDomains, srcDomains, cgroupId \
               FROM flows ORDER BY timestamp, srcPort";
    browser.type_into("#sql-editor", sql);
    browser.click("#sql-run");
    assert!(
        browser.wait_until(Duration::from_secs(20), "return document.querySelectorAll('#sql-table tbody tr').length > 0 || !document.getElementById('sql-error').hidden;", vec![]),
        "the query ran"
    );
    let table = page_table(&browser, "#sql-table");
    let cli = cli_csv(data.path(), sql);
    assert_eq!(table, parse_csv(&cli), "the SQL view's table is the CLI's CSV");
    assert_eq!(table.len(), 16);
    assert_eq!(browser.texts("#sql-meta")[0].split(' ').take(2).collect::<Vec<_>>(), ["15", "rows"]);
    no_errors_nor_injected_markup(&browser);
    browser.screenshot(&shots.join("sql.png"));
    // Its CSV download is the CLI's, byte for byte.
    let body = serde_json::to_vec(&json!({ "sql": sql })).expect("json");
    let download =
        http(serve.authority(), "POST", "/api/sql/csv", &[("Content-Type", "application/json")], &body);
    assert_eq!(download.status, 200);
    assert_eq!(download.text(), cli);
    let parquet =
        http(serve.authority(), "POST", "/api/sql/parquet", &[("Content-Type", "application/json")], &body);
    assert_eq!(parquet.status, 200);
    assert!(parquet.body.starts_with(b"PAR1") && parquet.body.ends_with(b"PAR1"), "a Parquet file");

    // Errors say where; refused statements say why.
    browser.type_into("#sql-editor", "SELECT dstDomains FROM flow");
    browser.click("#sql-run");
    assert!(browser.wait_until(
        Duration::from_secs(10),
        "return !document.getElementById('sql-error').hidden;",
        vec![]
    ));
    let error = browser.texts("#sql-error")[0].clone();
    assert!(
        error.contains("table 'datafusion.public.flow' not found") && error.contains("(line 1, column 24)"),
        "{error}"
    );
    let caret = browser.execute("return document.getElementById('sql-editor').selectionStart;", vec![]);
    assert_eq!(caret, json!(23), "the caret is at the error");
    browser.type_into("#sql-editor", "COPY (SELECT 1) TO '/tmp/flowsql-serve-copy.csv'");
    browser.click("#sql-run");
    assert!(browser.wait_until(
        Duration::from_secs(10),
        "return document.getElementById('sql-error').textContent.startsWith('COPY is refused');",
        vec![]
    ));
    assert!(!Path::new("/tmp/flowsql-serve-copy.csv").exists());
    browser.type_into("#sql-editor", "SELECT * FROM flows, flows AS again");
    browser.click("#sql-run");
    assert!(browser.wait_until(
        Duration::from_secs(10),
        "return document.getElementById('sql-error').textContent.startsWith('the result has more than 50 rows');",
        vec![]
    ));
    // Completion offers the shell's words.
    browser.type_into("#sql-editor", "SELECT dstDom");
    browser.execute(
        "const e = document.getElementById('sql-editor'); e.focus(); e.setSelectionRange(e.value.length, e.value.length); \
         e.dispatchEvent(new KeyboardEvent('keydown', {key: 'Tab', bubbles: true, cancelable: true}));",
        vec![],
    );
    assert_eq!(
        browser.execute("return document.getElementById('sql-editor').value;", vec![]),
        json!("SELECT dstDomains")
    );
    no_errors_nor_injected_markup(&browser);
    let _: Value = browser.execute("return null;", vec![]);
}
