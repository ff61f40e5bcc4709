//! The web view with 10 million flows in the store: how long the page takes
//! to its first paint, and to redraw after a filter change, in headless
//! Chromium against the real `flowsql serve` (release build).
//!
//! ```text
//! cargo bench -p flowsql --bench serve_page
//! FLOWSQL_BENCH_ROWS=1000000 cargo bench -p flowsql --bench serve_page   # smaller
//! ```
//!
//! The data set (one day of a busy host, `FLOWSQL_BENCH_ROWS` flows, default
//! 10 million, from `flowsql_store::synthetic::RealisticMix`) is generated
//! once into `FLOWSQL_BENCH_DIR` (default `/work/bench-data/serve-<rows>`)
//! through the store's own insert and export, with the DNS answers that
//! named its destinations (5-minute TTLs) in `domains`, and reused.
//!
//! - first paint: from navigation start to the end of the view's first
//!   drawing (`performance.now()`, which the page records), the page's
//!   `/api/info` and the view's query included;
//! - filter change: from the filter form's submit to the end of the redraw.
//!
//! Each is measured once to warm up and then five times; the median counts.
//! The server's own time for each API call is printed beside it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flowsql_event::{DomainName, DomainObservation, FlowBegin};
use flowsql_store::synthetic::{BASE_NS, RealisticMix};
use flowsql_store::{ExportOptions, Store, batch_from_flows};
use flowsql_tests::browser::{Browser, Serve, http};
use serde_json::json;

const FLOWSQL: &str = env!("CARGO_BIN_EXE_flowsql");
const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
const RUNS: usize = 5;

/// TTL of every name: each destination is re-resolved when it runs out.
const TTL_NS: i64 = 300_000_000_000;

fn generate(dir: &Path, rows: u64) {
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(dir);
    let mut store = Store::open(dir).expect("store opens");
    let mut mix = RealisticMix::new(42, rows as f64 / 86_400.0);
    // The DNS answers a host making these flows would have received.
    let mut valid_until: HashMap<(IpAddr, DomainName), i64> = HashMap::new();
    let mut observations: Vec<DomainObservation> = Vec::new();
    let chunk = 2_000_000u64;
    let mut made = 0u64;
    while made < rows {
        let n = chunk.min(rows - made);
        let flows: Vec<FlowBegin> = (0..n).map(|_| mix.next_flow()).collect();
        for flow in &flows {
            for name in flow.dst_domains.iter() {
                let until = valid_until.entry((flow.dst_ip, name.clone())).or_insert(i64::MIN);
                if flow.timestamp_ns > *until {
                    *until = flow.timestamp_ns + TTL_NS;
                    observations.push(DomainObservation {
                        ip: flow.dst_ip,
                        name: name.clone(),
                        question: flow.dst_domains[0].clone(),
                        seen_ns: flow.timestamp_ns - 1_000_000,
                        expires_ns: flow.timestamp_ns + TTL_NS,
                    });
                }
            }
        }
        store.insert_flows(&batch_from_flows(&flows)).expect("insert");
        let cutoff = flows.last().map_or(i64::MAX, |f| f.timestamp_ns + 1);
        store.export(&ExportOptions::up_to(cutoff), &mut |_| {}).expect("export");
        made += n;
        eprint!("\rgenerated {made} of {rows} flows ({:.0} s)", started.elapsed().as_secs_f64());
    }
    for part in observations.chunks(100_000) {
        store.record_domains(part).expect("domains");
    }
    eprintln!(" and {} domain observations", observations.len());
    std::fs::write(dir.join("bench-rows"), rows.to_string()).expect("marker");
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn number(browser: &Browser, script: &str) -> f64 {
    browser.execute(script, vec![]).as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

/// Opens `hash` in a new page load and returns the first paint in ms.
fn first_paint(browser: &Browser, base: &str, hash: &str) -> f64 {
    browser.goto("about:blank");
    browser.goto(&format!("{base}/#{hash}"));
    assert!(
        browser.wait_until(Duration::from_secs(60), "return document.body.dataset.renders === '1';", vec![]),
        "the page did not render {hash}: {:?}",
        browser.texts("#status")
    );
    number(browser, "return document.body.dataset.firstPaintMs;")
}

/// Applies a filter (JavaScript that sets the form) and returns the redraw time in ms.
fn filter_change(browser: &Browser, set: &str) -> f64 {
    let before = browser.execute("return Number(document.body.dataset.renders);", vec![]);
    browser.execute(&format!("{set}; document.getElementById('filters').requestSubmit();"), vec![]);
    assert!(
        browser.wait_until(
            Duration::from_secs(60),
            "return Number(document.body.dataset.renders) > arguments[0];",
            vec![before]
        ),
        "no redraw after {set}"
    );
    number(browser, "return document.body.dataset.lastRenderMs;")
}

fn api_ms(authority: &str, path: &str) -> f64 {
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let answer = http(authority, "GET", path, &[], b"");
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    median(times)
}

fn main() {
    let rows: u64 =
        std::env::var("FLOWSQL_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let dir: PathBuf = std::env::var("FLOWSQL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(format!("/work/bench-data/serve-{rows}")));
    let ready =
        std::fs::read_to_string(dir.join("bench-rows")).ok().and_then(|r| r.trim().parse::<u64>().ok());
    if ready != Some(rows) {
        generate(&dir, rows);
    }
    let mut command = Command::new(FLOWSQL);
    command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&dir);
    let serve = Serve::start(command);
    let base = serve.base();
    let browser = Browser::start();

    let day = (BASE_NS / 1_000_000, BASE_NS / 1_000_000 + DAY_MS);
    let hour = (day.0 + 12 * HOUR_MS, day.0 + 13 * HOUR_MS);
    let cases = [
        ("map, the whole day (all flows)", format!("view=map&since={}&until={}", day.0, day.1)),
        ("timeline by direction, the whole day", format!("view=timeline&since={}&until={}", day.0, day.1)),
        (
            "timeline by destination, the whole day",
            format!("view=timeline&stack=destination&since={}&until={}", day.0, day.1),
        ),
        ("map, one hour", format!("view=map&since={}&until={}", hour.0, hour.1)),
        ("timeline by direction, one hour", format!("view=timeline&since={}&until={}", hour.0, hour.1)),
    ];
    println!(
        "flowsql serve with {rows} flows in {} ({} threads), Chromium {}",
        dir.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        chromium_version()
    );
    println!("\n| first paint | median of {RUNS} | server time of the view's API call |\n|---|---|---|");
    for (name, hash) in &cases {
        first_paint(&browser, &base, hash);
        let times: Vec<f64> = (0..RUNS).map(|_| first_paint(&browser, &base, hash)).collect();
        let api = api_path(hash);
        println!("| {name} | {:.0} ms | {:.0} ms |", median(times), api_ms(serve.authority(), &api));
    }

    let changes = [
        (
            "direction = incoming",
            "document.getElementById('f-direction').value = 'incoming'",
            "&direction=incoming",
        ),
        (
            "port = 443",
            "document.getElementById('f-direction').value = ''; document.getElementById('f-port').value = '443'",
            "&port=443",
        ),
        (
            "host = a popular address",
            "document.getElementById('f-port').value = ''; document.getElementById('f-host').value = arguments_host",
            "&host=",
        ),
    ];
    let popular = popular_host(serve.authority(), day);
    println!("\n| filter change (whole day) | view | median of {RUNS} | server time |\n|---|---|---|---|");
    for view in ["map", "timeline"] {
        for (name, set, query) in &changes {
            let hash = format!("view={view}&since={}&until={}", day.0, day.1);
            first_paint(&browser, &base, &hash);
            let set = set.replace("arguments_host", &format!("{popular:?}"));
            filter_change(&browser, &set);
            let times: Vec<f64> = (0..RUNS).map(|_| filter_change(&browser, &set)).collect();
            let mut api = api_path(&hash) + query;
            if query.ends_with('=') {
                api.push_str(&popular);
            }
            println!(
                "| {name} | {view} | {:.0} ms | {:.0} ms |",
                median(times),
                api_ms(serve.authority(), &api)
            );
        }
    }
    let console = browser.console();
    assert!(console.iter().all(|e| e.level != "SEVERE"), "{console:?}");
    let _ = json!(null);
}

/// The API call a view hash makes.
fn api_path(hash: &str) -> String {
    let params: Vec<&str> = hash.split('&').filter(|p| !p.starts_with("view=")).collect();
    let view = if hash.contains("view=map") { "map" } else { "timeline" };
    format!("/api/{view}?{}", params.join("&"))
}

/// The destination address with the most flows.
fn popular_host(authority: &str, day: (i64, i64)) -> String {
    let answer = http(authority, "GET", &format!("/api/map?since={}&until={}", day.0, day.1), &[], b"");
    let map: serde_json::Value = serde_json::from_slice(&answer.body).expect("map json");
    map["edges"][0]["remote"].as_str().unwrap_or("10.0.0.1").to_owned()
}

fn chromium_version() -> String {
    Command::new(flowsql_tests::browser::CHROMIUM)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
