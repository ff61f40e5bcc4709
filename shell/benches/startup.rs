//! The shell's time from start to its first prompt, with a year of hourly
//! partitions (8,760 Parquet files) beside an empty data directory, in one
//! run.
//!
//! ```text
//! cargo bench -p flowsql --bench startup
//! ```
//!
//! Each start runs the real binary on a pseudo-terminal and stops the clock
//! when `flowsql> ` appears on it; the median of 21 starts counts.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use flowsql_store::batch_from_flows;
use flowsql_store::synthetic::indexed_flow;
use flowsql_store::{ExportOptions, Store, TimeRange};

const HOURS: i64 = 24 * 365;
const HOUR_NS: i64 = 3_600_000_000_000;
/// 2025-01-01T00:00:00Z.
const YEAR_START_NS: i64 = 1_735_689_600_000_000_000;
const STARTS: usize = 21;

/// A data directory with one small Parquet file in each hour of a year.
fn year_of_partitions(dir: &Path) {
    if dir.join("flowsql.db").exists() {
        let store = Store::open(dir).expect("open the year's store");
        if store.cold_files(TimeRange::ALL).expect("cold files").len() == HOURS as usize {
            return;
        }
        drop(store);
        std::fs::remove_dir_all(dir).expect("remove an incomplete data directory");
    }
    let mut store = Store::open(dir).expect("create the store");
    let flows: Vec<_> = (0..HOURS)
        .flat_map(|hour| {
            (0..4u64).map(move |i| {
                let mut flow = indexed_flow(1, hour as u64 * 4 + i);
                flow.timestamp_ns = YEAR_START_NS + hour * HOUR_NS + i as i64 * 1_000_000_000;
                flow
            })
        })
        .collect();
    for chunk in flows.chunks(16_384) {
        store.insert_flows(&batch_from_flows(chunk)).expect("insert");
    }
    store.export(&ExportOptions::up_to(YEAR_START_NS + HOURS * HOUR_NS), &mut |_| {}).expect("export");
    let files = store.cold_files(TimeRange::ALL).expect("cold files").len();
    assert_eq!(files, HOURS as usize, "one file per hour");
}

/// Milliseconds from spawning `flowsql shell` to its first prompt, read
/// straight from the pseudo-terminal's master side (no polling interval).
fn time_to_prompt(data: &Path, history: &Path) -> f64 {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};

    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two new descriptors into the two integers; the
    // name, termios and window size arguments may be null.
    let rc = unsafe {
        libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned here.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowsql"));
    command
        .arg("shell")
        .arg("--data-dir")
        .arg(data)
        .env("FLOWSQL_HISTORY", history)
        .env("TERM", "xterm")
        .stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave);
    let started = Instant::now();
    let mut child = command.spawn().expect("start flowsql shell");
    let mut terminal = std::fs::File::from(master);
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("flowsql> ") {
        let n = terminal.read(&mut buffer).expect("read the terminal");
        assert!(n > 0, "the shell ended before its prompt: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buffer[..n]);
    }
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    elapsed.as_secs_f64() * 1000.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let base = std::env::temp_dir().join("flowsql-bench-startup");
    let year = base.join("year");
    let empty = base.join("empty");
    std::fs::create_dir_all(&base).expect("bench directory");
    let generated = Instant::now();
    year_of_partitions(&year);
    eprintln!("a year of hourly partitions ready in {:?}", generated.elapsed());
    drop(Store::open(&empty).expect("empty store"));
    let history = base.join("history");

    let (mut with_year, mut with_empty) = (Vec::new(), Vec::new());
    for _ in 0..STARTS {
        with_empty.push(time_to_prompt(&empty, &history));
        with_year.push(time_to_prompt(&year, &history));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (year_ms, empty_ms) = (median(with_year), median(with_empty));
    println!("| data directory | start to first prompt (median of {STARTS}) |");
    println!("|---|---|");
    println!("| a year of hourly partitions ({HOURS} Parquet files) | {year_ms:.1} ms |");
    println!("| empty | {empty_ms:.1} ms |");
    println!("| ratio year/empty | {:.2} |", year_ms / empty_ms);
}
