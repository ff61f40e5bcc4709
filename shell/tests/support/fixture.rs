//! A small data directory for the shell's tests: five hand-written flows,
//! three exported to Parquet (hours 07 and 08 of 2026-11-28) and two still
//! in SQLite, one of them carrying a hostile DNS name (`evil\x1b[2J.test`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowsql_event::{Attribution, Direction, DomainList, FlowBegin};
use flowsql_store::batch_from_flows;
use flowsql_store::test_util::TempDir;
use flowsql_store::{ExportOptions, Store, TimeRange};

/// A temporary data directory, removed on drop.
pub struct Fixture {
    /// Holds the data directory; removed with it.
    _temp: TempDir,
    dir: PathBuf,
}

impl Fixture {
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// 2026-11-28T`hh`:`mm`:00Z plus `ns`, as UTC nanoseconds.
fn at(hour: i64, minute: i64, ns: i64) -> i64 {
    const DAY: i64 = 1_795_824_000; // 2026-11-28T00:00:00Z
    (DAY + hour * 3600 + minute * 60) * 1_000_000_000 + ns
}

fn names(names: &[&str]) -> DomainList {
    names.iter().map(|n| Arc::<str>::from(*n)).collect()
}

#[expect(clippy::too_many_arguments, reason = "one flow per line reads best in the table below")]
fn flow(
    timestamp_ns: i64,
    direction: Direction,
    src: &str,
    src_port: u16,
    dst: &str,
    dst_port: u16,
    src_domains: &[&str],
    dst_domains: &[&str],
) -> FlowBegin {
    FlowBegin {
        timestamp_ns,
        direction,
        src_ip: src.parse::<IpAddr>().expect("address"),
        dst_ip: dst.parse::<IpAddr>().expect("address"),
        src_port,
        dst_port,
        src_domains: names(src_domains),
        dst_domains: names(dst_domains),
        cgroup_id: 4242,
        host_name: Arc::from("testhost"),
        flow_id: 0,
        attribution: Attribution::default(),
    }
}

/// Who made a flow of the fixture.
fn by(pid: u32, name: &str, uid: u32, executable: &str, cgroup: &str) -> Attribution {
    Attribution {
        process_id: Some(pid),
        process_name: name.into(),
        user_id: Some(uid),
        executable: executable.into(),
        cgroup_path: cgroup.into(),
        container_id: "".into(),
    }
}

/// The flows of the fixture, in time order, flowIds 1 to 5, each made by
/// a process (the last one's unknown).
pub fn flows() -> Vec<FlowBegin> {
    use Direction::{Incoming, Outgoing};
    let curl = by(4100, "curl", 1000, "/usr/bin/curl", "/user.slice/user-1000.slice/session-3.scope");
    let who = [
        curl.clone(),
        curl,
        by(812, "sshd", 0, "/usr/sbin/sshd", "/system.slice/ssh.service"),
        by(4200, "python3", 1000, "/usr/bin/python3.11", "/user.slice/user-1000.slice/session-3.scope"),
        Attribution::default(),
    ];
    let flows = vec![
        flow(
            // Whole microseconds, as the capture records them (and files keep).
            at(7, 10, 123_456_000),
            Outgoing,
            "10.0.0.5",
            51000,
            "93.184.216.34",
            443,
            &[],
            &["www.example.com", "example.com"],
        ),
        flow(at(7, 20, 0), Outgoing, "10.0.0.5", 51001, "192.0.2.10", 443, &[], &["evil\x1b[2J.test"]),
        flow(
            at(8, 5, 500_000_000),
            Incoming,
            "198.51.100.7",
            40000,
            "10.0.0.5",
            22,
            &["scanner.example.net"],
            &[],
        ),
        flow(at(9, 0, 0), Outgoing, "2001:db8::5", 51002, "2001:db8::53", 443, &[], &["ipv6.example.org"]),
        flow(at(9, 30, 1), Outgoing, "10.0.0.5", 51003, "10.1.2.3", 5432, &[], &[]),
    ];
    flows
        .into_iter()
        .zip(who)
        .enumerate()
        .map(|(i, (flow, attribution))| FlowBegin { flow_id: i as u64 + 1, attribution, ..flow })
        .collect()
}

/// A new data directory holding [`flows`]: the first three in Parquet, the
/// last two in SQLite.
pub fn fixture(name: &str) -> Fixture {
    let temp = TempDir::new(&format!("shell-{name}"));
    let dir = temp.path().join("data");
    let flows = flows();
    let mut store = Store::open(&dir).expect("open the store");
    store.insert_flows(&batch_from_flows(&flows)).expect("insert flows");
    store.export(&ExportOptions::up_to(at(9, 0, 0)), &mut |_| {}).expect("export");
    assert_eq!(store.cold_files(TimeRange::ALL).expect("cold files").len(), 2, "two hourly Parquet files");
    assert_eq!(store.hot_flow_count(TimeRange::ALL).expect("hot count"), 2, "two rows still hot");
    Fixture { _temp: temp, dir }
}
