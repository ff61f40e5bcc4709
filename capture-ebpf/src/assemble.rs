//! Turning kernel records into rows: a flow record becomes a [`FlowBegin`]
//! with UTC time, host name and the DNS names of both ends; a DNS record
//! teaches the name cache and yields [`DomainObservation`]s for the domains
//! table.
//!
//! Records arrive in ring-buffer order, so the answer that led to a
//! connection is learned before its SYN-ACK is turned into a row.

use std::sync::Arc;

use flowsql_event::{Direction, DomainObservation, FlowBegin};

use crate::abi::{self, DecodeError, DnsEvent, KernelRecord};
use crate::clock::BootClock;
use crate::dns::tcp::{Segment, StreamKey, TcpDnsStreams, TcpStreamStats};
use crate::dns::{NameCache, NameCacheConfig, NameCacheStats, parse_response};

/// How often the boot-time-to-UTC offset is sampled again, and expired names
/// are purged.
const HOUSEKEEPING_NS: u64 = 1_000_000_000;

/// What one ring buffer record turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembled {
    Flow(FlowBegin),
    /// A DNS response (or TCP segment of one): what it taught, possibly nothing.
    Dns(Vec<DomainObservation>),
}

/// Counters of the DNS side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// DNS messages read (UDP datagrams, reassembled TCP messages).
    pub messages: u64,
    /// Messages that taught nothing: malformed, not an answer, a failure rcode.
    pub rejected: u64,
    /// Messages whose records were cut short (parsed as far as they went).
    pub incomplete: u64,
    /// (address, name) pairs learned.
    pub observations: u64,
    pub cache: NameCacheStats,
    pub tcp: TcpStreamStats,
}

/// The host's name as the kernel knows it (UTS namespace).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Builds rows from ring buffer records. One per capture; not shared.
#[derive(Debug)]
pub struct FlowAssembler {
    clock: BootClock,
    housekeeping_boot_ns: u64,
    host_name: Arc<str>,
    names: NameCache,
    tcp: TcpDnsStreams,
    stats: DnsStats,
}

/// Parses one DNS message and learns from it.
fn learn(
    message: &[u8],
    complete: bool,
    seen_ns: i64,
    names: &mut NameCache,
    stats: &mut DnsStats,
    out: &mut Vec<DomainObservation>,
) {
    stats.messages += 1;
    let answer = match parse_response(message) {
        Ok(answer) => answer,
        Err(error) => {
            stats.rejected += 1;
            tracing::debug!(%error, "DNS message taught nothing");
            return;
        }
    };
    if answer.incomplete || !complete {
        stats.incomplete += 1;
    }
    for association in answer.associations() {
        let expires_ns = seen_ns.saturating_add(i64::from(association.ttl).saturating_mul(1_000_000_000));
        names.insert(association.ip, association.name.clone(), seen_ns, expires_ns);
        stats.observations += 1;
        out.push(DomainObservation {
            ip: association.ip,
            name: association.name,
            question: answer.question.clone(),
            seen_ns,
            expires_ns,
        });
    }
}

impl FlowAssembler {
    pub fn new(host_name: impl Into<Arc<str>>) -> Self {
        Self::with_name_cache(host_name, NameCacheConfig::default())
    }

    pub fn with_name_cache(host_name: impl Into<Arc<str>>, config: NameCacheConfig) -> Self {
        FlowAssembler {
            clock: BootClock::new(),
            housekeeping_boot_ns: BootClock::boot_now_ns(),
            host_name: host_name.into(),
            names: NameCache::new(config),
            tcp: TcpDnsStreams::new(),
            stats: DnsStats::default(),
        }
    }

    /// Teaches the name cache what earlier captures learned (the store's
    /// unexpired `domains` rows, oldest first), as of `now_ns`: names
    /// resolved before a restart keep naming flows until their own expiry.
    /// Returns how many were still valid. They are not counted as DNS
    /// observations: no answer taught them to this capture.
    pub fn remember(&mut self, known: &[DomainObservation], now_ns: i64) -> usize {
        let mut remembered = 0;
        for observation in known.iter().filter(|o| o.expires_ns > now_ns) {
            self.names.insert(observation.ip, observation.name.clone(), now_ns, observation.expires_ns);
            remembered += 1;
        }
        remembered
    }

    pub fn dns_stats(&self) -> DnsStats {
        DnsStats { cache: self.names.stats(), tcp: self.tcp.stats(), ..self.stats }
    }

    /// UTC time of a kernel timestamp; now and then resyncs the clock and
    /// purges expired names.
    fn utc(&mut self, boot_ns: u64) -> i64 {
        if boot_ns.saturating_sub(self.housekeeping_boot_ns) > HOUSEKEEPING_NS {
            self.clock.resync();
            self.housekeeping_boot_ns = boot_ns;
            let now = self.clock.to_utc_ns(boot_ns);
            self.names.purge_expired(now);
        }
        self.clock.to_utc_ns(boot_ns)
    }

    /// Interprets one ring buffer item.
    pub fn assemble(&mut self, item: &[u8]) -> Result<Assembled, DecodeError> {
        match abi::decode(item)? {
            KernelRecord::FlowBegin(flow) => {
                let timestamp_ns = self.utc(flow.header.boot_ns);
                let direction = if flow.direction == abi::DIRECTION_OUTGOING {
                    Direction::Outgoing
                } else {
                    Direction::Incoming
                };
                let src_ip = flow.src_ip()?;
                let dst_ip = flow.dst_ip()?;
                Ok(Assembled::Flow(FlowBegin {
                    timestamp_ns,
                    direction,
                    src_ip,
                    dst_ip,
                    src_port: flow.src_port(),
                    dst_port: flow.dst_port(),
                    src_domains: self.names.lookup(src_ip, timestamp_ns),
                    dst_domains: self.names.lookup(dst_ip, timestamp_ns),
                    cgroup_id: flow.cgroup_id,
                    host_name: Arc::clone(&self.host_name),
                }))
            }
            KernelRecord::DnsResponse(dns, payload) => Ok(Assembled::Dns(self.learn_dns(&dns, payload)?)),
        }
    }

    fn learn_dns(&mut self, dns: &DnsEvent, payload: &[u8]) -> Result<Vec<DomainObservation>, DecodeError> {
        let seen_ns = self.utc(dns.header.boot_ns);
        let mut observations = Vec::new();
        let (names, stats) = (&mut self.names, &mut self.stats);
        if dns.is_tcp() {
            let key = StreamKey { src: dns.src()?, dst: dns.dst()?, egress: dns.egress != 0 };
            let segment = Segment {
                seq: dns.tcp_seq,
                bytes: payload,
                length: usize::from(dns.payload_len).max(payload.len()),
            };
            self.tcp.push(key, segment, |message, complete| {
                learn(message, complete, seen_ns, names, stats, &mut observations)
            });
        } else {
            learn(payload, !dns.truncated(), seen_ns, names, stats, &mut observations);
        }
        Ok(observations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(ip: &str, name: &str, expires_ns: i64) -> DomainObservation {
        DomainObservation {
            ip: ip.parse().expect("ip"),
            name: name.into(),
            question: name.into(),
            seen_ns: 100,
            expires_ns,
        }
    }

    #[test]
    fn remembered_names_name_their_address_until_they_expire() {
        let mut assembler = FlowAssembler::new("host");
        let learned = [
            known("192.0.2.1", "www.a.test", 2_000),
            known("192.0.2.1", "edge.a.test", 2_000),
            known("192.0.2.2", "gone.test", 500),
        ];
        assert_eq!(assembler.remember(&learned, 1_000), 2);
        let ip = |text: &str| text.parse().expect("ip");
        let names = assembler.names.lookup(ip("192.0.2.1"), 1_500);
        assert_eq!(names.iter().map(|n| &**n).collect::<Vec<_>>(), ["www.a.test", "edge.a.test"]);
        assert!(assembler.names.lookup(ip("192.0.2.2"), 1_500).is_empty(), "expired before the start");
        assert!(assembler.names.lookup(ip("192.0.2.1"), 2_000).is_empty(), "expired since");
        assert_eq!(assembler.dns_stats().observations, 0, "no answer taught them to this capture");
    }
}
