//! Deterministic generated flows for tests, the crash-safety harness and the
//! benchmarks: the same seed always gives the same flows, on any machine.
//!
//! - [`edge_flows`]: a small fixed set covering the edges (IPv4 and IPv6,
//!   ports 0 and 65535, empty and non-empty domain lists, a name with an
//!   escape, `cgroupId` 0 and 2^63 - 1, several hours and days).
//! - [`indexed_flow`]: flow number `index` of writer run `run`, so a harness
//!   can say exactly which flows a run committed.
//! - [`RealisticMix`]: what a busy host sees: many flows to a few popular
//!   destinations, a long tail, 30% IPv6, made by a few dozen processes.
//! - [`edge_ends`]: connection ends covering every reason and the edges of
//!   the `flow_ends` columns.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use flowsql_event::{Attribution, Direction, DomainList, DomainName, EndReason, FlowBegin, FlowEnd, Side};

/// 2026-01-01T00:00:00Z in nanoseconds.
pub const BASE_NS: i64 = 1_767_225_600_000_000_000;

const HOUR_NS: i64 = 3_600_000_000_000;

/// SplitMix64: tiny, fast, and good enough for test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

fn names(list: &[&str]) -> DomainList {
    list.iter().map(|n| DomainName::from(*n)).collect()
}

/// A process as a row names it.
fn process(pid: u32, name: &str, uid: u32, executable: &str, cgroup: &str, container: &str) -> Attribution {
    Attribution {
        process_id: Some(pid),
        process_name: name.into(),
        user_id: Some(uid),
        executable: executable.into(),
        cgroup_path: cgroup.into(),
        container_id: container.into(),
    }
}

const CONTAINER: &str = "4f1c9e3a2b7d6e5f4f1c9e3a2b7d6e5f4f1c9e3a2b7d6e5f4f1c9e3a2b7d6e5f";

/// The largest id (`cgroupId`, `flowId`) flowsql's files hold as the same
/// number in every engine (they are signed 64-bit there).
pub const LARGEST_ID: u64 = i64::MAX as u64;

/// A fixed set of flows that covers the edges of every column. Times are
/// whole microseconds, as the capture's are.
pub fn edge_flows() -> Vec<FlowBegin> {
    let host: Arc<str> = "edge-host".into();
    let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let v6 = |text: &str| text.parse::<IpAddr>().unwrap_or(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let attributions = [
        Attribution::default(),
        process(1, "systemd", 0, "/usr/lib/systemd/systemd", "/init.scope", ""),
        process(u32::MAX, "a name of 15 b", u32::MAX, "", "/", ""),
        process(
            4242,
            "nginx",
            33,
            "/usr/sbin/nginx",
            &format!("/system.slice/docker-{CONTAINER}.scope"),
            CONTAINER,
        ),
        process(77, "späť\x1b", 65534, "/tmp/dir with space/x", "/user.slice/user-1000.slice", ""),
    ];
    let mut next = 0usize;
    let mut flow = |ts: i64, direction, src, dst, sp, dp, sd: DomainList, dd: DomainList, cg| {
        next += 1;
        FlowBegin {
            timestamp_ns: ts,
            direction,
            src_ip: src,
            dst_ip: dst,
            src_port: sp,
            dst_port: dp,
            src_domains: sd,
            dst_domains: dd,
            cgroup_id: cg,
            host_name: Arc::clone(&host),
            flow_id: if next == 2 { LARGEST_ID } else { next as u64 },
            attribution: attributions[next % attributions.len()].clone(),
        }
    };
    use Direction::{Incoming, Outgoing};
    vec![
        flow(0, Outgoing, v4(0, 0, 0, 0), v4(255, 255, 255, 255), 0, 65535, names(&[]), names(&[]), 0),
        flow(
            BASE_NS,
            Outgoing,
            v4(10, 0, 0, 1),
            v4(93, 184, 215, 14),
            65535,
            0,
            names(&[]),
            names(&["example.com"]),
            1,
        ),
        flow(
            BASE_NS + 1_000,
            Incoming,
            v6("2001:db8::7"),
            v6("2001:db8:0:1::1"),
            1,
            443,
            names(&["client.example"]),
            names(&["www.example.org", "cdn.example.net", "edge.example.net"]),
            LARGEST_ID,
        ),
        flow(BASE_NS + HOUR_NS - 1_000, Outgoing, v6("::1"), v6("::1"), 40000, 22, names(&[]), names(&[]), 7),
        flow(
            BASE_NS + HOUR_NS,
            Outgoing,
            v6("fe80::1ff:fe23:4567:890a"),
            v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            32768,
            65535,
            names(&[]),
            names(&["weird\\003name.example", "quote\".example"]),
            LARGEST_ID - 1,
        ),
        flow(
            BASE_NS + 25 * HOUR_NS + 123_456_000,
            Incoming,
            v4(192, 0, 2, 200),
            v4(127, 0, 0, 1),
            54321,
            8080,
            names(&[]),
            names(&["localhost"]),
            12345,
        ),
        flow(
            BASE_NS + 25 * HOUR_NS + 123_456_000,
            Outgoing,
            v4(192, 0, 2, 200),
            v4(127, 0, 0, 1),
            54321,
            8080,
            names(&[]),
            names(&["localhost"]),
            12345,
        ),
    ]
}

/// Flow number `index` of writer run `run`: a pure function of both, unique
/// across runs (`cgroupId` is the run, the timestamp grows with the index).
/// Timestamps start at [`BASE_NS`] and advance 50 ms per flow, so a run of
/// a few hundred thousand flows spans several hourly partitions, and runs
/// overlap in time.
pub fn indexed_flow(run: u32, index: u64) -> FlowBegin {
    let i = index as i64;
    let family_v6 = index % 3 == 2;
    let (src_ip, dst_ip) = if family_v6 {
        let low = (index & 0xffff) as u16;
        (
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, run as u16, 0, 0, 0, low)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, (index % 97) as u16)),
        )
    } else {
        let b = index.to_be_bytes();
        (
            IpAddr::V4(Ipv4Addr::new(10, b[5], b[6], b[7])),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, (index % 251) as u8)),
        )
    };
    let dst_domains = match index % 4 {
        0 => DomainList::default(),
        1 => names(&["one.example"]),
        2 => names(&["two.example", "alias.example"]),
        _ => names(&[&format!("n{}.r{run}.example", index % 1000)]),
    };
    FlowBegin {
        timestamp_ns: BASE_NS + i * 50_000_000,
        direction: if index.is_multiple_of(5) { Direction::Incoming } else { Direction::Outgoing },
        src_ip,
        dst_ip,
        src_port: (index % 65536) as u16,
        dst_port: (65535 - index % 65536) as u16,
        src_domains: if index.is_multiple_of(7) { names(&["src.example"]) } else { DomainList::default() },
        dst_domains,
        cgroup_id: u64::from(run),
        host_name: "crash-host".into(),
        flow_id: (u64::from(run) << 40) | index,
        attribution: process(
            1000 + (index % 50) as u32,
            &format!("worker{}", index % 50),
            (index % 3) as u32,
            &format!("/usr/bin/worker{}", index % 50),
            &format!("/system.slice/run{run}.service"),
            "",
        ),
    }
}

/// Flows as a busy host sees them, in time order: about `rate` per second;
/// 80% to a few popular destinations (skewed), 20% to a long tail of
/// thousands; 30% IPv6; 8% incoming; names for nearly every destination.
#[derive(Debug, Clone)]
pub struct RealisticMix {
    rng: Rng,
    time_ns: i64,
    mean_gap_ns: f64,
    popular: [Vec<Destination>; 2],
    tail: [Vec<Destination>; 2],
    locals: [Vec<IpAddr>; 2],
    clients: Vec<IpAddr>,
    cgroups: Vec<u64>,
    host: Arc<str>,
    /// The processes that connect (skewed: a few make most flows) and those
    /// that listen.
    clients_processes: Vec<Attribution>,
    servers_processes: Vec<Attribution>,
    next_flow_id: u64,
}

#[derive(Debug, Clone)]
struct Destination {
    ip: IpAddr,
    port: u16,
    names: DomainList,
}

impl RealisticMix {
    pub fn new(seed: u64, rate_per_sec: f64) -> Self {
        let mut rng = Rng::new(seed);
        let v4 = |rng: &mut Rng| {
            let x = rng.next_u64() as u32;
            IpAddr::V4(Ipv4Addr::from(x.max(0x0100_0000)))
        };
        let v6 = |rng: &mut Rng| {
            let x = rng.next_u64();
            let y = rng.next_u64();
            IpAddr::V6(Ipv6Addr::new(
                0x2000 | (x as u16 & 0x0fff),
                (x >> 16) as u16,
                (x >> 32) as u16,
                (x >> 48) as u16,
                0,
                0,
                (y >> 16) as u16,
                y as u16,
            ))
        };
        let ports = [443, 443, 443, 443, 80, 443, 53, 8443, 22, 5432];
        let make = |rng: &mut Rng, v6_family: bool, count: usize, popular: bool| -> Vec<Destination> {
            (0..count)
                .map(|i| {
                    let ip = if v6_family { v6(rng) } else { v4(rng) };
                    let port = ports[rng.below(ports.len() as u64) as usize];
                    let names = if popular {
                        let service = format!("svc{i}.provider{}.example.com", i % 7);
                        match rng.below(3) {
                            0 => names(&[&service]),
                            1 => names(&[&format!("api{i}.example.org"), &service]),
                            _ => names(&[
                                &format!("www{i}.example.net"),
                                &format!("www{i}.example.net.cdn.example"),
                                &service,
                            ]),
                        }
                    } else if rng.below(4) == 0 {
                        DomainList::default()
                    } else {
                        names(&[&format!("host{}.tail{}.example", rng.below(1_000_000), i % 100)])
                    };
                    Destination { ip, port, names }
                })
                .collect()
        };
        let popular = [make(&mut rng, false, 40, true), make(&mut rng, true, 20, true)];
        let tail = [make(&mut rng, false, 20_000, false), make(&mut rng, true, 8_000, false)];
        let locals = [
            vec![IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), IpAddr::V4(Ipv4Addr::new(172, 17, 0, 1))],
            vec!["2001:db8:1:2::3".parse().unwrap_or(IpAddr::V6(Ipv6Addr::LOCALHOST))],
        ];
        let clients = (0..500).map(|i| if i % 3 == 0 { v6(&mut rng) } else { v4(&mut rng) }).collect();
        let cgroups = (0..20).map(|_| 2000 + rng.below(100_000)).collect();
        let programs = ["curl", "python3", "java", "node", "envoy", "postgres", "git", "apt-get"];
        let clients_processes = (0..30u32)
            .map(|i| {
                let name = programs[i as usize % programs.len()];
                let container = if i % 3 == 0 { format!("{:064x}", rng.next_u64()) } else { String::new() };
                let cgroup = if container.is_empty() {
                    format!("/system.slice/{name}-{i}.service")
                } else {
                    format!("/system.slice/docker-{container}.scope")
                };
                process(2000 + i * 37, name, 1000 + i % 4, &format!("/usr/bin/{name}"), &cgroup, &container)
            })
            .collect();
        let servers_processes = vec![
            process(812, "sshd", 0, "/usr/sbin/sshd", "/system.slice/ssh.service", ""),
            process(1290, "nginx", 0, "/usr/sbin/nginx", "/system.slice/nginx.service", ""),
        ];
        let next_flow_id = rng.next_u64() >> 1;
        RealisticMix {
            rng,
            time_ns: BASE_NS,
            mean_gap_ns: 1e9 / rate_per_sec.max(1e-3),
            popular,
            tail,
            locals,
            clients,
            cgroups,
            host: "web-1.prod.example".into(),
            clients_processes,
            servers_processes,
            next_flow_id,
        }
    }

    /// The next flow.
    pub fn next_flow(&mut self) -> FlowBegin {
        let rng = &mut self.rng;
        // Exponential gaps: a Poisson arrival process.
        let gap = -self.mean_gap_ns * (1.0 - rng.unit()).ln();
        // Whole microseconds, as the capture's times.
        self.time_ns += (gap / 1000.0).max(1.0) as i64 * 1000;
        let family = usize::from(rng.unit() < 0.3);
        let cgroup = self.cgroups[(rng.unit().powi(2) * self.cgroups.len() as f64) as usize];
        self.next_flow_id = self.next_flow_id.wrapping_add(1) & LARGEST_ID;
        let flow_id = self.next_flow_id;
        if rng.unit() < 0.08 {
            // Someone connects to a local service.
            let client = self.clients[rng.below(self.clients.len() as u64) as usize];
            let local = self.locals[usize::from(client.is_ipv6())][0];
            let port = [22u16, 443, 443, 8080][rng.below(4) as usize];
            return FlowBegin {
                timestamp_ns: self.time_ns,
                direction: Direction::Incoming,
                src_ip: client,
                dst_ip: local,
                src_port: 32768 + rng.below(28232) as u16,
                dst_port: port,
                src_domains: DomainList::default(),
                dst_domains: DomainList::default(),
                cgroup_id: cgroup,
                host_name: Arc::clone(&self.host),
                flow_id,
                attribution: self.servers_processes[usize::from(port != 22)].clone(),
            };
        }
        let destination = if rng.unit() < 0.8 {
            let set = &self.popular[family];
            // Skewed: a few of the popular ones take most flows.
            &set[(rng.unit().powi(3) * set.len() as f64) as usize]
        } else {
            let set = &self.tail[family];
            &set[rng.below(set.len() as u64) as usize]
        };
        let locals = &self.locals[family];
        let processes = &self.clients_processes;
        let attribution = processes[(rng.unit().powi(2) * processes.len() as f64) as usize].clone();
        FlowBegin {
            timestamp_ns: self.time_ns,
            direction: Direction::Outgoing,
            src_ip: locals[rng.below(locals.len() as u64) as usize],
            dst_ip: destination.ip,
            src_port: 32768 + rng.below(28232) as u16,
            dst_port: destination.port,
            src_domains: DomainList::default(),
            dst_domains: Arc::clone(&destination.names),
            cgroup_id: cgroup,
            host_name: Arc::clone(&self.host),
            flow_id,
            attribution,
        }
    }

    /// The next `count` flows.
    pub fn take_flows(&mut self, count: usize) -> Vec<FlowBegin> {
        (0..count).map(|_| self.next_flow()).collect()
    }
}

/// The end of `begin` half a second later, as a capture reports it: its
/// seven fields, who and flowId, `reason`, the payload bytes each side sent,
/// closed by the initiator (a failed attempt's fields are those of the
/// attempt; give it a flowId of its own).
pub fn end_of(begin: &FlowBegin, reason: EndReason, src_bytes: u64, dst_bytes: u64) -> FlowEnd {
    FlowEnd {
        timestamp_ns: begin.timestamp_ns + 500_000_000,
        direction: begin.direction,
        src_ip: begin.src_ip,
        dst_ip: begin.dst_ip,
        src_port: begin.src_port,
        dst_port: begin.dst_port,
        src_domains: begin.src_domains.clone(),
        dst_domains: begin.dst_domains.clone(),
        duration_ns: Some(500_000_000),
        src_bytes,
        dst_bytes,
        src_packets: 4,
        dst_packets: 4,
        retransmits: 0,
        rtt_micros: 80,
        reason,
        closed_by: Some(Side::Src),
        begun_before_capture: false,
        host_name: Arc::clone(&begin.host_name),
        cgroup_id: begin.cgroup_id,
        flow_id: begin.flow_id,
        attribution: begin.attribution.clone(),
        accepting_process_id: None,
        accepting_process_name: "".into(),
    }
}

/// A fixed set of connection ends: every reason, failed attempts (no
/// duration from a begin), a connection begun before the capture (no
/// duration), an accepting process, edge values of every counter.
pub fn edge_ends() -> Vec<FlowEnd> {
    let flows = edge_flows();
    let reasons = EndReason::ALL;
    flows
        .iter()
        .chain(flows.iter())
        .enumerate()
        .map(|(i, begin)| {
            let reason = reasons[i % reasons.len()];
            let incoming = begin.direction == Direction::Incoming;
            FlowEnd {
                timestamp_ns: begin.timestamp_ns.saturating_add(i as i64 * 1_000_001_000),
                duration_ns: if i % 5 == 4 { None } else { Some(i as i64 * 1_000_000_007) },
                src_packets: i as u64,
                dst_packets: LARGEST_ID - i as u64,
                retransmits: if i == 3 { u32::MAX } else { i as u32 % 2 },
                rtt_micros: 35 * i as u32,
                closed_by: [None, Some(Side::Src), Some(Side::Dst)][i % 3],
                begun_before_capture: i % 5 == 4,
                accepting_process_id: incoming.then_some(4243),
                accepting_process_name: if incoming { "nginx".into() } else { "".into() },
                ..end_of(
                    begin,
                    reason,
                    if i == 0 { LARGEST_ID } else { i as u64 * 1000 },
                    if i == 1 { 0 } else { 12_345 },
                )
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_are_deterministic() {
        assert_eq!(
            RealisticMix::new(7, 1000.0).take_flows(100),
            RealisticMix::new(7, 1000.0).take_flows(100)
        );
        assert_eq!(indexed_flow(3, 12345), indexed_flow(3, 12345));
        assert_ne!(indexed_flow(3, 12345), indexed_flow(4, 12345));
    }

    #[test]
    fn realistic_mix_has_the_advertised_shape() {
        let flows = RealisticMix::new(1, 1000.0).take_flows(20_000);
        let v6 = flows.iter().filter(|f| f.dst_ip.is_ipv6()).count() as f64 / flows.len() as f64;
        assert!((0.25..0.35).contains(&v6), "{v6}");
        assert!(flows.windows(2).all(|w| w[0].timestamp_ns <= w[1].timestamp_ns));
        let distinct: std::collections::HashSet<_> = flows.iter().map(|f| f.dst_ip).collect();
        assert!(distinct.len() > 2000, "a long tail: {}", distinct.len());
    }
}
