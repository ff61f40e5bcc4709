//! The NetFlowTCPBegin record: one row per TCP connection begin, per monitored
//! endpoint (docs/architecture.md, "The event contract").
//!
//! [`FlowBegin`] is what the capture produces and what the store writes; the
//! column names in [`columns`] are the one spelling used everywhere: JSON, SQL,
//! SQLite and Parquet.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::ser::{SerializeMap, Serializer};

/// The exact column names of the event, as users see them.
pub mod columns {
    pub const TIMESTAMP: &str = "timestamp";
    pub const CONNECTION_DIRECTION: &str = "connectionDirection";
    pub const SRC_IP: &str = "srcIP";
    pub const DST_IP: &str = "dstIP";
    pub const SRC_PORT: &str = "srcPort";
    pub const DST_PORT: &str = "dstPort";
    pub const SRC_DOMAINS: &str = "srcDomains";
    pub const DST_DOMAINS: &str = "dstDomains";
    pub const HOST_NAME: &str = "hostName";
    pub const CGROUP_ID: &str = "cgroupId";
}

/// A DNS name as flowsql stores it: lower case, no trailing dot, bytes that
/// are not printable ASCII escaped as `\DDD`; shared between every flow that
/// carries it.
pub type DomainName = Arc<str>;

/// The names of one address, in order: shared (not copied) between the DNS
/// cache and every flow that carries them. `DomainList::default()` is empty.
pub type DomainList = Arc<[DomainName]>;

/// Who initiated the connection, seen from the monitored endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// A local socket initiated (connect): seen as a SYN-ACK on ingress.
    Outgoing,
    /// A local socket accepted: seen as a SYN-ACK on egress.
    Incoming,
}

impl Direction {
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Outgoing => "outgoing",
            Direction::Incoming => "incoming",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is neither `outgoing` nor `incoming`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDirection(pub String);

impl fmt::Display for UnknownDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown connection direction {:?} (expected outgoing or incoming)", self.0)
    }
}

impl std::error::Error for UnknownDirection {}

impl FromStr for Direction {
    type Err = UnknownDirection;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "outgoing" => Ok(Direction::Outgoing),
            "incoming" => Ok(Direction::Incoming),
            other => Err(UnknownDirection(other.to_owned())),
        }
    }
}

/// One TCP connection begin, from one monitored endpoint's point of view.
///
/// `src` is always the initiator (client) and `dst` the responder (server),
/// whichever side the monitored socket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowBegin {
    /// When the SYN-ACK was seen: UTC, nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    pub direction: Direction,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// DNS names of `src_ip` valid at `timestamp_ns`; usually empty.
    pub src_domains: DomainList,
    /// DNS names of `dst_ip` valid at `timestamp_ns`.
    pub dst_domains: DomainList,
    /// cgroup v2 id of the local socket.
    pub cgroup_id: u64,
    /// Host that recorded the flow.
    pub host_name: Arc<str>,
}

/// What one DNS answer said about one address: `name` (the question or a
/// CNAME on the chain from it) resolved to `ip`, from `seen_ns` until
/// `expires_ns` (UTC nanoseconds). Feeds the `domains` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainObservation {
    pub ip: IpAddr,
    pub name: DomainName,
    /// The question the answer was for.
    pub question: DomainName,
    pub seen_ns: i64,
    pub expires_ns: i64,
}

/// Formats UTC nanoseconds since the epoch as RFC 3339 with nanoseconds,
/// e.g. `2026-11-28T07:10:00.123456789Z`.
pub fn format_timestamp(timestamp_ns: i64) -> String {
    let time = chrono::DateTime::from_timestamp_nanos(timestamp_ns);
    time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// An address as flowsql prints it: dotted quad for IPv4 (an IPv4-mapped IPv6
/// address prints as its IPv4 form), RFC 5952 for IPv6.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// JSON with exactly the event's column names; `timestamp` as RFC 3339 UTC.
impl serde::Serialize for FlowBegin {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(10))?;
        map.serialize_entry(columns::TIMESTAMP, &format_timestamp(self.timestamp_ns))?;
        map.serialize_entry(columns::CONNECTION_DIRECTION, self.direction.as_str())?;
        map.serialize_entry(columns::SRC_IP, &self.src_ip)?;
        map.serialize_entry(columns::DST_IP, &self.dst_ip)?;
        map.serialize_entry(columns::SRC_PORT, &self.src_port)?;
        map.serialize_entry(columns::DST_PORT, &self.dst_port)?;
        map.serialize_entry(columns::SRC_DOMAINS, &self.src_domains)?;
        map.serialize_entry(columns::DST_DOMAINS, &self.dst_domains)?;
        map.serialize_entry(columns::HOST_NAME, &*self.host_name)?;
        map.serialize_entry(columns::CGROUP_ID, &self.cgroup_id)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn sample() -> FlowBegin {
        FlowBegin {
            timestamp_ns: 1_764_313_800_123_456_789,
            direction: Direction::Outgoing,
            src_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            dst_ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            src_port: 40000,
            dst_port: 443,
            src_domains: DomainList::default(),
            dst_domains: vec!["a.example".into(), "b.example".into()].into(),
            cgroup_id: 42,
            host_name: "host1".into(),
        }
    }

    #[test]
    fn json_uses_the_event_column_names() {
        let json = serde_json::to_string(&sample()).expect("serializes");
        assert_eq!(
            json,
            r#"{"timestamp":"2025-11-28T07:10:00.123456789Z","connectionDirection":"outgoing","srcIP":"10.0.0.1","dstIP":"2001:db8::1","srcPort":40000,"dstPort":443,"srcDomains":[],"dstDomains":["a.example","b.example"],"hostName":"host1","cgroupId":42}"#
        );
    }

    #[test]
    fn direction_round_trips_through_text() {
        for d in [Direction::Outgoing, Direction::Incoming] {
            assert_eq!(d.as_str().parse::<Direction>(), Ok(d));
        }
        assert!("sideways".parse::<Direction>().is_err());
    }

    #[test]
    fn mapped_ipv4_prints_as_dotted_quad() {
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("valid");
        assert_eq!(canonical_ip(mapped).to_string(), "192.0.2.7");
        let v6: IpAddr = "2001:db8:0:0:0:0:0:1".parse().expect("valid");
        assert_eq!(canonical_ip(v6).to_string(), "2001:db8::1");
    }
}
