//! Who connected: the process, user, executable, cgroup and container on
//! each row, as they were when the connection was made (README, "Who
//! connected"). Real processes in child cgroups, real sockets, the real
//! kernel programs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use flowsql_event::Direction::{Incoming, Outgoing};
use flowsql_event::{FlowBegin, FlowEnd};
use flowsql_tests::{
    OutsideServer, Place, Recorded, Recording, Server, TempDir, TestCgroup, addr, endpoints, netpeer_run,
};

const NETPEER: &str = env!("CARGO_BIN_EXE_netpeer");

/// The one row of `direction`.
fn only(recorded: &Recorded, direction: flowsql_event::Direction) -> &FlowBegin {
    let rows: Vec<&FlowBegin> = recorded.rows.iter().filter(|r| r.direction == direction).collect();
    assert_eq!(rows.len(), 1, "one {direction} row: {:?}", recorded.rows);
    rows[0]
}

fn assert_clean(recorded: &Recorded) {
    assert_eq!(recorded.counters.lost(), 0, "nothing lost: {:?}", recorded.counters);
    assert_eq!(recorded.undecodable, 0);
    assert_eq!(recorded.attribution.unattributed, 0, "every row attributed");
}

/// netpeer copied under a name of our own, in a directory anyone may read
/// and run (the copy's directory is removed on drop).
struct RenamedPeer {
    _dir: TempDir,
    path: std::path::PathBuf,
}

impl RenamedPeer {
    fn new(name: &str) -> RenamedPeer {
        let dir = TempDir::new("exe");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let path = dir.path().join(name);
        std::fs::copy(NETPEER, &path).expect("copy netpeer");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        RenamedPeer { _dir: dir, path: std::fs::canonicalize(&path).expect("canonical") }
    }

    fn as_str(&self) -> &str {
        self.path.to_str().expect("UTF-8 path")
    }
}

#[test]
fn a_renamed_client_running_as_nobody_is_named_with_its_uid_and_executable() {
    let cgroup = TestCgroup::new("who");
    let client = RenamedPeer::new("fsqlclient");
    let server = OutsideServer::start("127.0.0.1:0");
    let recording = Recording::start(&cgroup);
    let peer = netpeer_run(
        client.as_str(),
        Place::cgroup(&cgroup),
        &["--uid", "65534", "connect", "--to", &server.addr.to_string()],
    );
    let recorded = recording.finish();
    let row = only(&recorded, Outgoing);
    assert_eq!(endpoints(row), (Outgoing, peer.locals[0], server.addr));
    let who = &row.attribution;
    assert_eq!(who.process_id, Some(peer.pid));
    assert_eq!(&*who.process_name, "fsqlclient");
    assert_eq!(who.user_id, Some(65534));
    assert_eq!(&*who.executable, client.as_str());
    assert_eq!(&*who.cgroup_path, cgroup.relative_path());
    assert_eq!(&*who.container_id, "");
    assert_clean(&recorded);
}

#[test]
fn a_pre_fork_server_names_the_listening_parent_and_its_ends_the_workers() {
    let cgroup = TestCgroup::new("fork");
    let recording = Recording::start(&cgroup);
    let server = Server::start(NETPEER, Place::cgroup(&cgroup), "127.0.0.1:0", &["--prefork", "3"]);
    let parent = server.pid();
    let workers: Vec<u32> = std::fs::read_to_string(cgroup.path().join("cgroup.procs"))
        .expect("cgroup.procs")
        .lines()
        .filter_map(|l| l.parse().ok())
        .filter(|&pid| pid != parent)
        .collect();
    assert_eq!(workers.len(), 3, "three workers: {workers:?}");
    let to = format!("127.0.0.1:{}", server.port);
    for _ in 0..6 {
        let client = std::net::TcpStream::connect(&to).expect("connects");
        // The worker closes first; wait for it.
        let mut buf = [0u8; 1];
        let _ = std::io::Read::read(&mut &client, &mut buf);
    }
    std::thread::sleep(Duration::from_millis(300));
    let recorded = recording.finish();
    let incoming: Vec<&FlowBegin> = recorded.rows.iter().filter(|r| r.direction == Incoming).collect();
    assert_eq!(incoming.len(), 6);
    for row in incoming {
        assert_eq!(row.attribution.process_id, Some(parent), "the begin names the process that listened");
        assert_eq!(&*row.attribution.process_name, "netpeer");
    }
    let ends: Vec<&FlowEnd> = recorded.ends.iter().filter(|e| e.direction == Incoming).collect();
    assert_eq!(ends.len(), 6, "{:?}", recorded.ends);
    for end in ends {
        assert_eq!(end.attribution.process_id, Some(parent), "as on the begin");
        let acceptor = end.accepting_process_id.expect("the accepting process");
        assert!(workers.contains(&acceptor), "accepted by a worker, not {acceptor}");
        assert_eq!(&*end.accepting_process_name, "netpeer");
    }
    assert_clean(&recorded);
}

#[test]
fn a_socket_passed_over_scm_rights_names_the_process_that_connected() {
    let cgroup = TestCgroup::new("scm");
    let server = OutsideServer::start("127.0.0.1:0");
    let recording = Recording::start(&cgroup);
    let child = RenamedPeer::new("fsqlscm");
    let spawned = std::process::Command::new(child.as_str())
        .args(["--cgroup"])
        .arg(cgroup.path())
        .args(["scm-connect", "--to", &server.addr.to_string()])
        .output()
        .expect("runs");
    assert!(spawned.status.success(), "{}", String::from_utf8_lossy(&spawned.stderr));
    let stdout = String::from_utf8_lossy(&spawned.stdout);
    let pid: u32 =
        stdout.lines().find_map(|l| l.strip_prefix("pid ")).and_then(|p| p.parse().ok()).expect("pid");
    let local: SocketAddr = stdout.lines().find_map(|l| l.strip_prefix("local ")).map(addr).expect("local");
    let recorded = recording.finish();
    let row = only(&recorded, Outgoing);
    assert_eq!(endpoints(row), (Outgoing, local, server.addr));
    assert_eq!(row.attribution.process_id, Some(pid), "the child that called connect(), not the creator");
    assert_clean(&recorded);
}

#[test]
fn a_connection_from_a_thread_names_the_thread_group_and_its_leader() {
    let cgroup = TestCgroup::new("thread");
    let server = OutsideServer::start("[::1]:0");
    let recording = Recording::start(&cgroup);
    let peer = netpeer_run(
        NETPEER,
        Place::cgroup(&cgroup),
        &["thread-connect", "--to", &server.addr.to_string(), "--thread-name", "fsqlworker"],
    );
    let recorded = recording.finish();
    let row = only(&recorded, Outgoing);
    assert_eq!(endpoints(row), (Outgoing, peer.locals[0], server.addr));
    assert_eq!(row.attribution.process_id, Some(peer.pid), "the thread group, not the thread");
    assert_eq!(&*row.attribution.process_name, "netpeer", "the leader's name, not the thread's");
    assert_clean(&recorded);
}

#[test]
fn container_cgroups_removed_right_after_the_connection_are_still_named() {
    let cgroup = TestCgroup::new("ctr");
    let server = OutsideServer::start("127.0.0.1:0");
    let recording = Recording::start(&cgroup);
    let id = |seed: u64| format!("{:016x}", seed).repeat(4);
    let cases = [
        (format!("docker-{}.scope", id(0xd0c4e5)), id(0xd0c4e5)),
        (format!("cri-containerd-{}.scope", id(0xc0471e)), id(0xc0471e)),
    ];
    let mut expected = HashMap::new();
    for (name, container) in &cases {
        // Made after the capture started: its path comes from the kernel's record.
        let child = cgroup.child(name);
        let peer =
            netpeer_run(NETPEER, Place::cgroup(&child), &["connect", "--to", &server.addr.to_string()]);
        let path = child.relative_path();
        std::thread::sleep(Duration::from_millis(10));
        child.remove();
        expected.insert(peer.locals[0], (path, container.clone(), peer.pid));
    }
    let recorded = recording.finish();
    assert_eq!(recorded.rows.len(), 2);
    for row in &recorded.rows {
        let (path, container, pid) = &expected[&SocketAddr::new(row.src_ip, row.src_port)];
        assert_eq!(&*row.attribution.cgroup_path, path);
        assert_eq!(&*row.attribution.container_id, container);
        assert_eq!(row.attribution.process_id, Some(*pid));
    }
    // The ends were reported after the cgroups were gone: named all the same.
    assert_eq!(recorded.ends.len(), 2);
    for end in &recorded.ends {
        let (path, container, _) = &expected[&SocketAddr::new(end.src_ip, end.src_port)];
        assert_eq!(
            (&*end.attribution.cgroup_path, &*end.attribution.container_id),
            (path.as_str(), container.as_str())
        );
    }
    assert_clean(&recorded);
}

#[test]
fn a_process_that_exits_right_after_connecting_is_still_named() {
    let cgroup = TestCgroup::new("exit");
    let server = OutsideServer::start("127.0.0.1:0");
    let client = RenamedPeer::new("fsqlbrief");
    let recording = Recording::start(&cgroup);
    // It exits as soon as connect() returns; its row is read afterwards.
    let peer =
        netpeer_run(client.as_str(), Place::cgroup(&cgroup), &["connect", "--to", &server.addr.to_string()]);
    std::thread::sleep(Duration::from_millis(100));
    assert!(!std::path::Path::new(&format!("/proc/{}", peer.pid)).exists(), "the client is gone");
    let recorded = recording.finish();
    let row = only(&recorded, Outgoing);
    assert_eq!(row.attribution.process_id, Some(peer.pid));
    assert_eq!(&*row.attribution.process_name, "fsqlbrief");
    assert_eq!(&*row.attribution.executable, client.as_str());
    assert_clean(&recorded);
}

#[test]
fn loopback_with_both_ends_watched_names_each_side_own_process() {
    let cgroup = TestCgroup::new("both");
    let recording = Recording::start(&cgroup);
    let server = Server::start(NETPEER, Place::cgroup(&cgroup), "127.0.0.1:0", &[]);
    let to = format!("127.0.0.1:{}", server.port);
    let client = RenamedPeer::new("fsqlboth");
    let peer =
        netpeer_run(client.as_str(), Place::cgroup(&cgroup), &["connect", "--to", &to, "--count", "2"]);
    let recorded = recording.finish();
    assert_eq!(recorded.rows.len(), 4);
    for row in &recorded.rows {
        match row.direction {
            Outgoing => {
                assert_eq!(row.attribution.process_id, Some(peer.pid));
                assert_eq!(&*row.attribution.process_name, "fsqlboth");
            }
            Incoming => {
                assert_eq!(row.attribution.process_id, Some(server.pid()));
                assert_eq!(&*row.attribution.process_name, "netpeer");
            }
        }
    }
    assert_clean(&recorded);
}

#[test]
fn a_capture_without_a_hook_still_runs_and_says_which_columns_stay_empty() {
    let cgroup = TestCgroup::new("nohook");
    let server = OutsideServer::start("127.0.0.1:0");
    let config = flowsql_capture::CaptureConfig {
        cgroup: Some(cgroup.path().to_owned()),
        withhold: vec!["flowsql_state"],
        ..flowsql_capture::CaptureConfig::default()
    };
    let recording = Recording::start_with(config);
    assert_eq!(recording.unavailable.len(), 1, "said once: {:?}", recording.unavailable);
    let notice = &recording.unavailable[0];
    assert!(notice.contains("processId, processName, userId, executable"), "{notice}");
    assert!(notice.contains("tp_btf/inet_sock_set_state"), "{notice}");
    let peer = netpeer_run(NETPEER, Place::cgroup(&cgroup), &["connect", "--to", &server.addr.to_string()]);
    let recorded = recording.finish();
    let row = only(&recorded, Outgoing);
    assert_eq!(endpoints(row), (Outgoing, peer.locals[0], server.addr), "begins are still recorded");
    assert_eq!(row.attribution.process_id, None, "left empty, never guessed");
    assert_eq!(&*row.attribution.cgroup_path, cgroup.relative_path(), "the cgroup is still known");
}
