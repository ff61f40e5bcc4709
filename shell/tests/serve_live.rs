//! `flowsql serve --capture` in headless Chromium, on a real capture of a
//! child cgroup (root): a connection made during the test appears on the map
//! and the timeline within 3 s; hostile DNS names, answered by a real DNS
//! server (dnsmasq) and captured, are shown as the characters they are and
//! run nothing (the browser's console and the DOM say so).
//!
//! One test function, so that Chromium and chromedriver start once.

use std::process::Command;
use std::time::{Duration, Instant};

use flowsql_tests::browser::{Browser, Serve, screenshot_dir};
use flowsql_tests::{Dnsmasq, Netns, Place, Server, TempDir, TestCgroup, connect, resolve};
use serde_json::json;

const FLOWSQL: &str = env!("CARGO_BIN_EXE_flowsql");

/// The name of the issue, as dnsmasq answers it (flowsql stores the spaces
/// inside a label as `\032`, as every byte that is not printable ASCII).
const HOSTILE: &str = "<img src=x onerror=alert(1)>.evil.test";
const HOSTILE_STORED: &str = r"<img\032src=x\032onerror=alert(1)>.evil.test";
/// A name that survives as it is, and would run if it were ever parsed as
/// markup (`/` separates attributes as a space would).
const HOSTILE_BARE: &str = "<img/src/onerror=alert(2)>.evil.test";

fn netpeer() -> String {
    flowsql_tests::workspace_binary(FLOWSQL, "netpeer").display().to_string()
}

fn edges(browser: &Browser) -> Vec<(String, String, u64)> {
    serde_json::from_value(browser.execute(
        "return Array.from(document.querySelectorAll('#map-svg g.edge')).map(g => \
           [g.dataset.local, g.dataset.remote, Number(g.dataset.flows)]);",
        vec![],
    ))
    .expect("edges")
}

#[test]
fn a_connection_made_now_shows_within_3_s_and_hostile_names_are_text() {
    let netpeer = netpeer();
    let cgroup = TestCgroup::new("serve");
    let netns = Netns::new("serve");
    let data = TempDir::new("serve-live");
    let _dns = Dnsmasq::start(
        Place::outside().in_netns(&netns),
        &[
            &format!("--host-record={HOSTILE},127.0.0.50,60"),
            &format!("--host-record={HOSTILE_BARE},127.0.0.51,60"),
        ],
    );
    let server = Server::start(&netpeer, Place::outside().in_netns(&netns), "0.0.0.0:0", &[]);
    let client = Place::cgroup(&cgroup).in_netns(&netns);

    let mut command = Command::new(FLOWSQL);
    command
        .args(["serve", "--capture", "--listen", "127.0.0.1:0", "--cgroup"])
        .arg(cgroup.path())
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("RUST_LOG");
    let serve = Serve::start(command);
    assert!(serve.banner.contains("capturing TCP connections of"), "{}", serve.banner);
    let browser = Browser::start();
    browser.goto(&format!("{}/#view=map&last=15m&port={}", serve.base(), server.port));
    assert!(
        browser.wait_until(Duration::from_secs(20), "return document.body.dataset.renders === '1';", vec![]),
        "the map rendered"
    );
    assert!(edges(&browser).is_empty(), "nothing to port {} yet", server.port);
    assert_eq!(browser.execute("return document.getElementById('live').hidden;", vec![]), json!(false));

    // A connection made now: on the map, then on the timeline, within 3 s.
    let connected = Instant::now();
    let locals = connect(&netpeer, client, &format!("127.0.0.1:{}", server.port), &[]);
    assert_eq!(locals.len(), 1);
    let on_map = browser.wait_until(
        Duration::from_secs(3),
        "return Array.from(document.querySelectorAll('#map-svg g.edge')).some(g => g.dataset.remote === '127.0.0.1');",
        vec![],
    );
    let map_after = connected.elapsed();
    assert!(on_map, "not on the map within 3 s: {:?}", edges(&browser));
    // The local node is the process that connected (netpeer, attributed).
    let process_label = "netpeer".to_owned();
    assert_eq!(edges(&browser), vec![(process_label.clone(), "127.0.0.1".to_owned(), 1)]);
    browser.click("#tab-timeline");
    let on_timeline = browser.wait_until(
        Duration::from_secs(3).saturating_sub(connected.elapsed()),
        "const rows = Array.from(document.querySelectorAll('#timeline-table tbody tr')); \
         return rows.reduce((n, tr) => n + Number(tr.children[1].textContent), 0) === 1;",
        vec![],
    );
    let timeline_after = connected.elapsed();
    assert!(on_timeline, "not on the timeline within 3 s of the connection");
    eprintln!("on the map {map_after:?} and the timeline {timeline_after:?} after the connection");
    browser.screenshot(&screenshot_dir(FLOWSQL).join("live-timeline.png"));

    // Hostile names from real DNS answers, then connections to them.
    browser.click("#tab-map");
    for (name, address) in [(HOSTILE, "127.0.0.50"), (HOSTILE_BARE, "127.0.0.51")] {
        let answered = resolve(&netpeer, client, name, &[]);
        assert_eq!(answered, [address.parse::<std::net::IpAddr>().expect("ip")], "{name}");
        connect(&netpeer, client, &format!("{address}:{}", server.port), &[]);
    }
    assert!(
        browser.wait_until(
            Duration::from_secs(5),
            "return document.querySelectorAll('#map-svg g.edge').length === 3;",
            vec![]
        ),
        "three edges: {:?}",
        edges(&browser)
    );
    let labels = browser.texts("#map-svg g.node.remote text");
    assert!(labels.contains(&HOSTILE_STORED.to_owned()), "{labels:?}");
    assert!(labels.contains(&HOSTILE_BARE.to_owned()), "{labels:?}");
    browser.screenshot(&screenshot_dir(FLOWSQL).join("live-map.png"));

    // In the SQL view too, the cells are those characters.
    browser.click("#tab-sql");
    browser.type_into(
        "#sql-editor",
        &format!("SELECT dstDomains[1] AS name FROM flows WHERE dstPort = {} AND cardinality(dstDomains) > 0 ORDER BY name", server.port),
    );
    browser.click("#sql-run");
    assert!(browser.wait_until(
        Duration::from_secs(10),
        "return document.querySelectorAll('#sql-table tbody tr').length === 2;",
        vec![]
    ));
    assert_eq!(browser.texts("#sql-table tbody td"), [HOSTILE_BARE, HOSTILE_STORED]);

    // Nothing ran: no dialog (WebDriver would refuse the next command), no
    // image element, no blocked inline handler in the console.
    assert_eq!(browser.execute("return document.querySelectorAll('img').length;", vec![]), json!(0));
    let console = browser.console();
    let bad: Vec<_> = console
        .iter()
        .filter(|e| {
            e.level == "SEVERE"
                || e.message.contains("Content Security Policy")
                || e.message.contains("alert")
        })
        .collect();
    assert!(bad.is_empty(), "the browser reported: {bad:?}");
    assert_eq!(locals.len(), 1);
}
