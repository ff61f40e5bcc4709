//! DNS names on flows: a client in the monitored cgroup resolves a name through
//! a real DNS server (dnsmasq, or a small server of our own where the test
//! needs control of the TCP segments) on loopback inside the test's network
//! namespace, then connects to the answered address.

use std::net::IpAddr;
use std::time::Duration;

use flowsql_event::{Direction, FlowBegin};
use flowsql_tests::{Dnsmasq, Netns, Place, Recorded, Recording, Server, TestCgroup, connect, resolve};

const NETPEER: &str = env!("CARGO_BIN_EXE_netpeer");

/// A namespace with a TCP server on every loopback address (outside the
/// cgroup) and a cgroup for the client.
struct Lab {
    netns: Netns,
    cgroup: TestCgroup,
    server: Server,
}

impl Lab {
    fn new() -> Lab {
        let netns = Netns::new("dns");
        netns.ip(&["addr", "add", "fd00::7/128", "dev", "lo", "nodad"]);
        let cgroup = TestCgroup::new("dns");
        let server = Server::start(NETPEER, Place::outside().in_netns(&netns), "[::]:0", &["--dual-stack"]);
        Lab { netns, cgroup, server }
    }

    fn client(&self) -> Place<'_> {
        Place::cgroup(&self.cgroup).in_netns(&self.netns)
    }

    fn resolve(&self, name: &str, extra: &[&str]) -> Vec<IpAddr> {
        resolve(NETPEER, self.client(), name, extra)
    }

    /// Connects from the cgroup to `ip` on the lab's server port.
    fn connect(&self, ip: IpAddr) {
        let to = std::net::SocketAddr::new(ip, self.server.port);
        connect(NETPEER, self.client(), &to.to_string(), &[]);
    }
}

/// The outgoing row to `ip`; exactly one must exist.
fn row_to(recorded: &Recorded, ip: &str) -> FlowBegin {
    let ip: IpAddr = ip.parse().expect("ip");
    let rows: Vec<_> =
        recorded.rows.iter().filter(|r| r.dst_ip == ip && r.direction == Direction::Outgoing).collect();
    assert_eq!(rows.len(), 1, "one outgoing row to {ip}: {:#?}", recorded.rows);
    rows[0].clone()
}

fn names(list: &[std::sync::Arc<str>]) -> Vec<&str> {
    list.iter().map(|n| n.as_ref()).collect()
}

fn assert_clean(recorded: &Recorded) {
    assert_eq!(recorded.counters.lost(), 0, "{:?}", recorded.counters);
    assert_eq!(recorded.undecodable, 0);
    for observation in &recorded.observations {
        assert!(
            observation.name.chars().all(|c| c.is_ascii_graphic()),
            "a stored name must be printable ASCII: {:?}",
            observation.name
        );
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

#[test]
fn an_a_record_names_the_destination() {
    let lab = Lab::new();
    let _dns =
        Dnsmasq::start(Place::outside().in_netns(&lab.netns), &["--host-record=web.test,127.0.0.7,60"]);
    let recording = Recording::start(&lab.cgroup);
    assert_eq!(lab.resolve("web.test", &[]), [ip("127.0.0.7")]);
    lab.connect(ip("127.0.0.7"));
    let recorded = recording.finish();
    let row = row_to(&recorded, "127.0.0.7");
    assert_eq!(names(&row.dst_domains), ["web.test"]);
    assert_eq!(names(&row.src_domains), Vec::<&str>::new());
    assert_clean(&recorded);
}

#[test]
fn a_cname_chain_names_the_destination_in_chain_order() {
    let lab = Lab::new();
    let _dns = Dnsmasq::start(
        Place::outside().in_netns(&lab.netns),
        &["--cname=a.test,b.test", "--cname=b.test,c.test", "--host-record=c.test,127.0.0.8,60"],
    );
    let recording = Recording::start(&lab.cgroup);
    assert_eq!(lab.resolve("A.Test", &[]), [ip("127.0.0.8")]);
    lab.connect(ip("127.0.0.8"));
    let recorded = recording.finish();
    assert_eq!(names(&row_to(&recorded, "127.0.0.8").dst_domains), ["a.test", "b.test", "c.test"]);
    assert_clean(&recorded);
}

#[test]
fn an_aaaa_answer_names_an_ipv6_destination() {
    let lab = Lab::new();
    let _dns = Dnsmasq::start(Place::outside().in_netns(&lab.netns), &["--host-record=six.test,fd00::7,60"]);
    let recording = Recording::start(&lab.cgroup);
    assert_eq!(lab.resolve("six.test", &["--aaaa"]), [ip("fd00::7")]);
    lab.connect(ip("fd00::7"));
    let recorded = recording.finish();
    let row = row_to(&recorded, "fd00::7");
    assert!(row.src_ip.is_ipv6());
    assert_eq!(names(&row.dst_domains), ["six.test"]);
    assert_clean(&recorded);
}

#[test]
fn names_expire_with_their_own_ttl() {
    let lab = Lab::new();
    let _dns = Dnsmasq::start(
        Place::outside().in_netns(&lab.netns),
        &[
            "--host-record=short.test,127.0.0.9,1",
            // A chain whose CNAME lives 1 s and whose address lives 60 s.
            "--cname=old.test,fresh.test,1",
            "--host-record=fresh.test,127.0.0.10,60",
        ],
    );
    let recording = Recording::start(&lab.cgroup);
    assert_eq!(lab.resolve("short.test", &[]), [ip("127.0.0.9")]);
    assert_eq!(lab.resolve("old.test", &[]), [ip("127.0.0.10")]);
    // At once: every name is valid.
    lab.connect(ip("127.0.0.9"));
    lab.connect(ip("127.0.0.10"));
    std::thread::sleep(Duration::from_secs(3));
    // 3 s later: the 1 s names have expired, the 60 s one has not.
    lab.connect(ip("127.0.0.9"));
    lab.connect(ip("127.0.0.10"));
    let recorded = recording.finish();
    let mut to_short: Vec<_> = recorded.rows.iter().filter(|r| r.dst_ip == ip("127.0.0.9")).collect();
    let mut to_fresh: Vec<_> = recorded.rows.iter().filter(|r| r.dst_ip == ip("127.0.0.10")).collect();
    to_short.sort_by_key(|r| r.timestamp_ns);
    to_fresh.sort_by_key(|r| r.timestamp_ns);
    assert_eq!(to_short.len(), 2);
    assert_eq!(to_fresh.len(), 2);
    assert_eq!(names(&to_short[0].dst_domains), ["short.test"]);
    assert_eq!(names(&to_short[1].dst_domains), Vec::<&str>::new(), "TTL 1, connected 3 s later");
    assert_eq!(names(&to_fresh[0].dst_domains), ["old.test", "fresh.test"]);
    assert_eq!(names(&to_fresh[1].dst_domains), ["fresh.test"], "the expired CNAME is gone, the rest stays");
    assert_clean(&recorded);
}

#[test]
fn one_address_answered_for_two_names_carries_both_once() {
    let lab = Lab::new();
    let _dns = Dnsmasq::start(
        Place::outside().in_netns(&lab.netns),
        &["--host-record=one.test,127.0.0.11,60", "--host-record=two.test,127.0.0.11,60"],
    );
    let recording = Recording::start(&lab.cgroup);
    for name in ["one.test", "two.test", "one.test", "ONE.test"] {
        assert_eq!(lab.resolve(name, &[]), [ip("127.0.0.11")]);
    }
    lab.connect(ip("127.0.0.11"));
    let recorded = recording.finish();
    assert_eq!(names(&row_to(&recorded, "127.0.0.11").dst_domains), ["one.test", "two.test"]);
    assert_clean(&recorded);
}

#[test]
fn an_answer_too_large_for_udp_is_read_from_tcp() {
    let lab = Lab::new();
    // 40 addresses: dnsmasq truncates the UDP answer (TC) and the client asks
    // again over TCP, which carries all 40 (666 bytes).
    let records: Vec<String> = (1..=40).map(|i| format!("--host-record=big.test,127.0.1.{i},60")).collect();
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    let _dns = Dnsmasq::start(Place::outside().in_netns(&lab.netns), &records);
    let recording = Recording::start(&lab.cgroup);
    let answered = lab.resolve("big.test", &[]);
    assert_eq!(answered.len(), 40, "the client got the full answer over TCP");
    for last in ["127.0.1.40", "127.0.1.1"] {
        lab.connect(ip(last));
    }
    let recorded = recording.finish();
    for last in ["127.0.1.40", "127.0.1.1"] {
        assert_eq!(names(&row_to(&recorded, last).dst_domains), ["big.test"]);
    }
    let tcp_observations = recorded.observations.iter().filter(|o| o.name.as_ref() == "big.test").count();
    assert!(tcp_observations >= 40, "all 40 addresses learned: {tcp_observations}");
    assert_clean(&recorded);
}

#[test]
fn a_tcp_answer_split_across_segments_is_reassembled() {
    let lab = Lab::new();
    // Our own server writes the length prefix split in two and the message in
    // two halves, 40 ms apart: four TCP segments for one answer.
    let server = Server::spawn(
        NETPEER,
        Place::outside().in_netns(&lab.netns),
        &[
            "dns-serve",
            "--listen",
            "127.0.0.1:53",
            "--split-tcp",
            "--record",
            "split.test,CNAME,target.test,60",
            "--record",
            "target.test,A,127.0.0.20,60",
        ],
    );
    let recording = Recording::start(&lab.cgroup);
    assert_eq!(lab.resolve("split.test", &["--tcp"]), [ip("127.0.0.20")]);
    lab.connect(ip("127.0.0.20"));
    let recorded = recording.finish();
    drop(server);
    assert_eq!(names(&row_to(&recorded, "127.0.0.20").dst_domains), ["split.test", "target.test"]);
    assert_eq!(recorded.dns.tcp.gaps, 0);
    assert!(recorded.dns.tcp.segments >= 3, "the answer came in {} segment(s)", recorded.dns.tcp.segments);
    assert_clean(&recorded);
}

#[test]
fn a_resolver_inside_the_cgroup_teaches_names_from_its_own_answers() {
    // The resolver is the monitored one (egress answers); the client that
    // asks is not. Another monitored process then connects to the address.
    let lab = Lab::new();
    let _dns = Dnsmasq::start(
        Place::cgroup(&lab.cgroup).in_netns(&lab.netns),
        &["--host-record=local.test,127.0.0.21,60"],
    );
    let recording = Recording::start(&lab.cgroup);
    assert_eq!(
        resolve(NETPEER, Place::outside().in_netns(&lab.netns), "local.test", &[]),
        [ip("127.0.0.21")]
    );
    lab.connect(ip("127.0.0.21"));
    let recorded = recording.finish();
    assert_eq!(names(&row_to(&recorded, "127.0.0.21").dst_domains), ["local.test"]);
    assert_clean(&recorded);
}

/// Hand-made DNS messages: what hostile servers send is by definition not
/// what a DNS library would serialize.
mod craft {
    pub fn header(answers: u16) -> Vec<u8> {
        let mut h = vec![0x12, 0x34, 0x81, 0x80, 0, 1];
        h.extend_from_slice(&answers.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        h
    }

    pub fn name(labels: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for label in labels {
            out.push(label.len() as u8);
            out.extend_from_slice(label);
        }
        out.push(0);
        out
    }

    pub fn question(name: &[u8]) -> Vec<u8> {
        let mut q = name.to_vec();
        q.extend_from_slice(&[0, 1, 0, 1]);
        q
    }

    pub fn record(owner: &[u8], kind: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
        let mut r = owner.to_vec();
        r.extend_from_slice(&kind.to_be_bytes());
        r.extend_from_slice(&[0, 1]);
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(rdata);
        r
    }

    pub fn a(owner: &[u8], ttl: u32, ip: [u8; 4]) -> Vec<u8> {
        record(owner, 1, ttl, &ip)
    }

    pub fn message(question_name: &[u8], answers: &[Vec<u8>]) -> Vec<u8> {
        let mut m = header(answers.len() as u16);
        m.extend(question(question_name));
        for answer in answers {
            m.extend_from_slice(answer);
        }
        m
    }

    pub fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[test]
fn hostile_answers_never_crash_capture_nor_store_a_malformed_name() {
    use craft::*;
    let lab = Lab::new();
    let sink = Server::spawn(NETPEER, lab.client(), &["udp-sink", "--bind", "127.0.0.1:0"]);
    let recording = Recording::start(&lab.cgroup);

    let evil = name(&[b"evil\x1b[2J\x07", b"test"]);
    let cafe = name(&[b"caf\xc3\xa9", b"test"]);
    let x = name(&[b"x", b"test"]);
    let bank = name(&[b"bank", b"test"]);
    let forever = name(&[b"forever", b"test"]);
    let long_label = [b'a'; 63];
    let oversized = name(&[&long_label, &long_label, &long_label, &long_label, &long_label]);
    let mut datagrams: Vec<Vec<u8>> = vec![
        // A question whose name is a compression pointer to itself.
        [header(1), vec![0xc0, 12, 0, 1, 0, 1]].concat(),
        // 65535 answers claimed, none present.
        message(&x, &[])
            .into_iter()
            .enumerate()
            .map(|(i, b)| if i == 6 || i == 7 { 0xff } else { b })
            .collect(),
        // An answer cut in the middle of its data.
        message(&x, &[a(&x, 60, [127, 0, 0, 99])])[..40].to_vec(),
        // A name over 255 octets.
        message(&oversized, &[a(&oversized, 60, [127, 0, 0, 98])]),
        // Escape sequences and a bell in a label: stored escaped.
        message(&evil, &[a(&evil, 60, [127, 0, 0, 12])]),
        // UTF-8 in a label: stored escaped.
        message(&cafe, &[a(&cafe, 60, [127, 0, 0, 13])]),
        // A record for a name that was not asked: ignored.
        message(&x, &[a(&x, 60, [127, 0, 0, 14]), a(&bank, 60, [127, 0, 0, 15])]),
        // A CNAME whose target points forward, past the end.
        message(&x, &[record(&x, 5, 60, &[0xc0, 0xff])]),
        // Record data longer than the message.
        [message(&x, &[]), x.clone(), vec![0, 1, 0, 1, 0, 0, 0, 60, 0xea, 0x60, 127, 0, 0, 97]].concat(),
        // An A record of 5 bytes.
        message(&x, &[record(&x, 1, 60, &[127, 0, 0, 96, 0])]),
        // The largest TTL there is.
        message(&forever, &[a(&forever, u32::MAX, [127, 0, 0, 16])]),
        // The root as the question.
        message(&[0], &[a(&[0], 60, [127, 0, 0, 95])]),
    ];
    // A CNAME chain of 40 links: longer than followed.
    let links: Vec<Vec<u8>> = (0..=40).map(|i| name(&[format!("l{i}").as_bytes(), b"test"])).collect();
    let mut chain: Vec<Vec<u8>> = (0..40).map(|i| record(&links[i], 5, 60, &links[i + 1])).collect();
    chain.push(a(&links[40], 60, [127, 0, 0, 17]));
    datagrams.push(message(&links[0], &chain));
    // Random bytes behind a response header (deterministic).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..300 {
        let mut d = header(3);
        for _ in 0..(state % 200) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            d.push(state as u8);
        }
        datagrams.push(d);
    }
    let sent = datagrams.len() as u64;
    let mut args = vec![
        "udp-send".to_owned(),
        "--bind".to_owned(),
        "127.0.0.1:53".to_owned(),
        "--to".to_owned(),
        format!("127.0.0.1:{}", sink.port),
    ];
    for datagram in &datagrams {
        args.push("--hex".to_owned());
        args.push(hex(datagram));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    flowsql_tests::netpeer(NETPEER, Place::outside().in_netns(&lab.netns), &args);
    std::thread::sleep(Duration::from_millis(200));

    for last in [12, 13, 14, 15, 16, 17] {
        lab.connect(IpAddr::from([127, 0, 0, last]));
    }
    let recorded = recording.finish();
    drop(sink);

    assert_eq!(recorded.counters.dns_events, sent, "every datagram reached user space");
    assert_eq!(recorded.dns.messages, sent);
    assert!(recorded.dns.rejected >= 5, "the malformed ones taught nothing: {:?}", recorded.dns);
    assert_eq!(names(&row_to(&recorded, "127.0.0.12").dst_domains), ["evil\\027[2j\\007.test"]);
    assert_eq!(names(&row_to(&recorded, "127.0.0.13").dst_domains), ["caf\\195\\169.test"]);
    assert_eq!(names(&row_to(&recorded, "127.0.0.14").dst_domains), ["x.test"]);
    assert_eq!(
        names(&row_to(&recorded, "127.0.0.15").dst_domains),
        Vec::<&str>::new(),
        "not asked, not learned"
    );
    assert_eq!(names(&row_to(&recorded, "127.0.0.16").dst_domains), ["forever.test"]);
    assert_eq!(
        names(&row_to(&recorded, "127.0.0.17").dst_domains),
        Vec::<&str>::new(),
        "chain longer than followed"
    );
    for bad in [99u8, 98, 97, 96, 95] {
        let bad_ip = IpAddr::from([127, 0, 0, bad]);
        assert!(
            !recorded.observations.iter().any(|o| o.ip == bad_ip),
            "learned from a malformed answer: {bad_ip}"
        );
    }
    assert_clean(&recorded);
}

#[test]
fn the_domains_table_gives_each_flow_the_names_valid_at_its_time() {
    use flowsql_store::arrow::array::{AsArray, RecordBatch};
    use flowsql_store::arrow::datatypes::TimestampNanosecondType;
    use flowsql_store::{Store, TimeRange, batch_from_flows};

    let lab = Lab::new();
    let _dns = Dnsmasq::start(
        Place::outside().in_netns(&lab.netns),
        &["--cname=alias.test,web.test,2", "--host-record=web.test,127.0.0.30,2"],
    );
    let recording = Recording::start(&lab.cgroup);
    // Flow A: right after resolving the alias: both names valid.
    assert_eq!(lab.resolve("alias.test", &[]), [ip("127.0.0.30")]);
    lab.connect(ip("127.0.0.30"));
    // Flow B: 3 s later, both expired (TTL 2).
    std::thread::sleep(Duration::from_secs(3));
    lab.connect(ip("127.0.0.30"));
    // Flow C: web.test resolved again: a second period, for web.test only.
    assert_eq!(lab.resolve("web.test", &[]), [ip("127.0.0.30")]);
    lab.connect(ip("127.0.0.30"));
    let recorded = recording.finish();
    assert_clean(&recorded);

    let mut flows: Vec<_> = recorded.rows.iter().filter(|r| r.dst_ip == ip("127.0.0.30")).cloned().collect();
    flows.sort_by_key(|r| r.timestamp_ns);
    assert_eq!(flows.len(), 3);

    let temp = flowsql_tests::TempDir::new("domdb");
    let dir = temp.path().join("data");
    let mut store = Store::open(&dir).expect("open store");
    store.insert_flows(&batch_from_flows(&flows)).expect("insert flows");
    store.record_domains(&recorded.observations).expect("record domains");

    // The table: one row per name and validity period, times from the answers.
    let first_answer = recorded.observations[0].seen_ns;
    let second_answer = recorded.observations.last().expect("observations").seen_ns;
    assert!(first_answer < flows[0].timestamp_ns && flows[1].timestamp_ns < second_answer);
    let batches: Vec<RecordBatch> = store.domains(TimeRange::ALL).expect("domains");
    let mut rows: Vec<(String, String, i64, i64, i64)> = Vec::new();
    for batch in &batches {
        let text = |i: usize| batch.column(i).as_string::<i32>();
        let time = |i: usize| batch.column(i).as_primitive::<TimestampNanosecondType>();
        for row in 0..batch.num_rows() {
            if text(0).value(row) == "127.0.0.30" {
                rows.push((
                    text(1).value(row).to_owned(),
                    text(2).value(row).to_owned(),
                    time(3).value(row),
                    time(4).value(row),
                    time(5).value(row),
                ));
            }
        }
    }
    rows.sort_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)));
    let two_s = 2_000_000_000;
    assert_eq!(
        rows,
        vec![
            ("alias.test".into(), "alias.test".into(), first_answer, first_answer, first_answer + two_s),
            ("web.test".into(), "alias.test".into(), first_answer, first_answer, first_answer + two_s),
            ("web.test".into(), "web.test".into(), second_answer, second_answer, second_answer + two_s),
        ]
    );

    // The as-of join gives each flow the names valid at its time, the same
    // names the live capture put on the flow.
    let expected = ["alias.test,web.test", "", "web.test"];
    for (flow, expected) in flows.iter().zip(expected) {
        let mut names_then: Vec<&str> = rows
            .iter()
            .filter(|(_, _, first, _, expires)| *first <= flow.timestamp_ns && flow.timestamp_ns <= *expires)
            .map(|(name, ..)| name.as_str())
            .collect();
        names_then.sort_unstable();
        names_then.dedup();
        assert_eq!(names_then.join(","), expected);
        let mut live: Vec<&str> = flow.dst_domains.iter().map(|n| n.as_ref()).collect();
        live.sort_unstable();
        assert_eq!(live.join(","), expected, "the live names and the as-of join agree");
    }
}
