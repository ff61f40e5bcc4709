//! The records of a connection: [`FlowBegin`] (NetFlowTCPBegin, one row per
//! TCP connection begin per monitored endpoint, the `flows` table) and
//! [`FlowEnd`] (how it ended, the `flow_ends` table), with [`Attribution`]
//! (who made it) on both (docs/architecture.md, "The event contract").
//!
//! These are what the capture produces and what the store writes; the column
//! names in [`columns`] are the one spelling used everywhere: JSON, SQL and
//! Parquet.

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
    pub const FLOW_ID: &str = "flowId";
    pub const PROCESS_ID: &str = "processId";
    pub const PROCESS_NAME: &str = "processName";
    pub const USER_ID: &str = "userId";
    pub const EXECUTABLE: &str = "executable";
    pub const CGROUP_PATH: &str = "cgroupPath";
    pub const CONTAINER_ID: &str = "containerId";
    pub const DURATION: &str = "duration";
    pub const SRC_BYTES: &str = "srcBytes";
    pub const DST_BYTES: &str = "dstBytes";
    pub const SRC_PACKETS: &str = "srcPackets";
    pub const DST_PACKETS: &str = "dstPackets";
    pub const RETRANSMITS: &str = "retransmits";
    pub const RTT_MICROS: &str = "rttMicros";
    pub const END_REASON: &str = "endReason";
    pub const CLOSED_BY: &str = "closedBy";
    pub const BEGUN_BEFORE_CAPTURE: &str = "begunBeforeCapture";
    pub const ACCEPTING_PROCESS_ID: &str = "acceptingProcessId";
    pub const ACCEPTING_PROCESS_NAME: &str = "acceptingProcessName";
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

/// Who made a connection, as it was when they made it (README, "Who
/// connected"): for an outgoing connection the process that called
/// `connect()`; for an incoming one the process that called `listen()` on the
/// listening socket (the connection is seen before anyone accepts it). Ids
/// are `None` when not known; strings are empty when not known (or, for
/// `container_id`, when the cgroup is not a container's).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attribution {
    /// The thread group (what `ps` calls the process id).
    pub process_id: Option<u32>,
    /// The thread-group leader's command name.
    pub process_name: Arc<str>,
    /// In the initial user namespace.
    pub user_id: Option<u32>,
    /// Absolute path of the process's executable, as its own mount
    /// namespace sees it.
    pub executable: Arc<str>,
    /// The socket's cgroup v2 path, from the hierarchy's root.
    pub cgroup_path: Arc<str>,
    /// The container runtime's id, when `cgroup_path` follows a runtime's naming.
    pub container_id: Arc<str>,
}

impl Attribution {
    /// Whether the process is known.
    pub fn is_known(&self) -> bool {
        self.process_id.is_some()
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
    /// Shared with the connection's [`FlowEnd`] on this host (and side).
    pub flow_id: u64,
    pub attribution: Attribution,
}

/// How a connection ended (`endReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndReason {
    /// Closed with FINs (by either side: see `closedBy`).
    Fin,
    /// The peer reset it.
    ResetReceived,
    /// The local side reset it (closed with unread data, `SO_LINGER` 0, an abort).
    ResetSent,
    /// No answer: the SYN, or later data, was never acknowledged.
    Timeout,
    /// The peer answered the SYN with a RST: nothing listened.
    Refused,
    /// An ICMP error said the peer cannot be reached.
    Unreachable,
    /// Given up locally before it was established, or ended by an error
    /// other than these.
    Aborted,
    /// Not ended: a row of `open_flows`.
    Open,
}

impl EndReason {
    pub const ALL: [EndReason; 8] = [
        EndReason::Fin,
        EndReason::ResetReceived,
        EndReason::ResetSent,
        EndReason::Timeout,
        EndReason::Refused,
        EndReason::Unreachable,
        EndReason::Aborted,
        EndReason::Open,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EndReason::Fin => "fin",
            EndReason::ResetReceived => "reset-received",
            EndReason::ResetSent => "reset-sent",
            EndReason::Timeout => "timeout",
            EndReason::Refused => "refused",
            EndReason::Unreachable => "unreachable",
            EndReason::Aborted => "aborted",
            EndReason::Open => "open",
        }
    }

    /// Whether the connection was never established (a failed attempt).
    pub const fn is_failed_attempt(self) -> bool {
        matches!(self, EndReason::Refused | EndReason::Timeout | EndReason::Unreachable)
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EndReason {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EndReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownValue { what: "end reason", value: s.to_owned() })
    }
}

/// One end of a connection: `src` (the initiator) or `dst` (the responder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Src,
    Dst,
}

impl Side {
    pub const fn as_str(self) -> &'static str {
        match self {
            Side::Src => "src",
            Side::Dst => "dst",
        }
    }

    /// `closedBy` as stored: `src`, `dst`, or empty when neither closed it.
    pub fn column(side: Option<Side>) -> &'static str {
        side.map_or("", Side::as_str)
    }

    pub fn from_column(text: &str) -> Result<Option<Side>, UnknownValue> {
        match text {
            "" => Ok(None),
            "src" => Ok(Some(Side::Src)),
            "dst" => Ok(Some(Side::Dst)),
            other => Err(UnknownValue { what: "side", value: other.to_owned() }),
        }
    }
}

/// A string that is not one of a column's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {:?}", self.what, self.value)
    }
}

impl std::error::Error for UnknownValue {}

/// How one TCP connection ended, from one monitored endpoint's point of
/// view (or, with [`EndReason::Open`], how it is going). The seven seed
/// fields are the begin's: same direction, `src` the initiator, the names
/// valid at the begin.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowEnd {
    /// When it ended (open: when it was looked at): UTC nanoseconds.
    pub timestamp_ns: i64,
    pub direction: Direction,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub src_domains: DomainList,
    pub dst_domains: DomainList,
    /// From the begin (a failed attempt: from `connect()`) to the end;
    /// `None` when the connection began before the capture.
    pub duration_ns: Option<i64>,
    /// Payload bytes the initiator sent and the responder acknowledged.
    pub src_bytes: u64,
    /// Payload bytes the responder sent and the initiator acknowledged.
    pub dst_bytes: u64,
    /// Segments the initiator sent.
    pub src_packets: u64,
    /// Segments the responder sent.
    pub dst_packets: u64,
    /// Segments the local socket retransmitted.
    pub retransmits: u32,
    /// The local socket's smoothed round-trip time at the end.
    pub rtt_micros: u32,
    pub reason: EndReason,
    /// Which side sent the first FIN (or the RST).
    pub closed_by: Option<Side>,
    pub begun_before_capture: bool,
    pub host_name: Arc<str>,
    pub cgroup_id: u64,
    /// The begin's; a failed attempt's own.
    pub flow_id: u64,
    /// As on the begin.
    pub attribution: Attribution,
    /// Incoming: the process that held the accepted socket when it was last
    /// closed (the one that accepted it, unless it handed it on).
    pub accepting_process_id: Option<u32>,
    pub accepting_process_name: Arc<str>,
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

/// The attribution columns, in their order.
fn serialize_attribution<M: SerializeMap>(map: &mut M, a: &Attribution) -> Result<(), M::Error> {
    map.serialize_entry(columns::PROCESS_ID, &a.process_id)?;
    map.serialize_entry(columns::PROCESS_NAME, &*a.process_name)?;
    map.serialize_entry(columns::USER_ID, &a.user_id)?;
    map.serialize_entry(columns::EXECUTABLE, &*a.executable)?;
    map.serialize_entry(columns::CGROUP_PATH, &*a.cgroup_path)?;
    map.serialize_entry(columns::CONTAINER_ID, &*a.container_id)
}

/// JSON with exactly the event's column names; `timestamp` as RFC 3339 UTC.
impl serde::Serialize for FlowBegin {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(17))?;
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
        map.serialize_entry(columns::FLOW_ID, &self.flow_id)?;
        serialize_attribution(&mut map, &self.attribution)?;
        map.end()
    }
}

/// JSON with the `flow_ends` column names; `duration` in seconds.
impl serde::Serialize for FlowEnd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(29))?;
        map.serialize_entry(columns::TIMESTAMP, &format_timestamp(self.timestamp_ns))?;
        map.serialize_entry(columns::CONNECTION_DIRECTION, self.direction.as_str())?;
        map.serialize_entry(columns::SRC_IP, &self.src_ip)?;
        map.serialize_entry(columns::DST_IP, &self.dst_ip)?;
        map.serialize_entry(columns::SRC_PORT, &self.src_port)?;
        map.serialize_entry(columns::DST_PORT, &self.dst_port)?;
        map.serialize_entry(columns::SRC_DOMAINS, &self.src_domains)?;
        map.serialize_entry(columns::DST_DOMAINS, &self.dst_domains)?;
        map.serialize_entry(columns::DURATION, &self.duration_ns.map(|ns| ns as f64 / 1e9))?;
        map.serialize_entry(columns::SRC_BYTES, &self.src_bytes)?;
        map.serialize_entry(columns::DST_BYTES, &self.dst_bytes)?;
        map.serialize_entry(columns::SRC_PACKETS, &self.src_packets)?;
        map.serialize_entry(columns::DST_PACKETS, &self.dst_packets)?;
        map.serialize_entry(columns::RETRANSMITS, &self.retransmits)?;
        map.serialize_entry(columns::RTT_MICROS, &self.rtt_micros)?;
        map.serialize_entry(columns::END_REASON, self.reason.as_str())?;
        map.serialize_entry(columns::CLOSED_BY, Side::column(self.closed_by))?;
        map.serialize_entry(columns::BEGUN_BEFORE_CAPTURE, &self.begun_before_capture)?;
        map.serialize_entry(columns::HOST_NAME, &*self.host_name)?;
        map.serialize_entry(columns::CGROUP_ID, &self.cgroup_id)?;
        map.serialize_entry(columns::FLOW_ID, &self.flow_id)?;
        serialize_attribution(&mut map, &self.attribution)?;
        map.serialize_entry(columns::ACCEPTING_PROCESS_ID, &self.accepting_process_id)?;
        map.serialize_entry(columns::ACCEPTING_PROCESS_NAME, &*self.accepting_process_name)?;
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
            flow_id: 7,
            attribution: Attribution {
                process_id: Some(1234),
                process_name: "curl".into(),
                user_id: Some(1000),
                executable: "/usr/bin/curl".into(),
                cgroup_path: "/user.slice".into(),
                container_id: "".into(),
            },
        }
    }

    #[test]
    fn json_uses_the_event_column_names() {
        let json = serde_json::to_string(&sample()).expect("serializes");
        assert_eq!(
            json,
            r#"{"timestamp":"2025-11-28T07:10:00.123456789Z","connectionDirection":"outgoing","srcIP":"10.0.0.1","dstIP":"2001:db8::1","srcPort":40000,"dstPort":443,"srcDomains":[],"dstDomains":["a.example","b.example"],"hostName":"host1","cgroupId":42,"flowId":7,"processId":1234,"processName":"curl","userId":1000,"executable":"/usr/bin/curl","cgroupPath":"/user.slice","containerId":""}"#
        );
        let unknown = FlowBegin { attribution: Attribution::default(), ..sample() };
        let json = serde_json::to_string(&unknown).expect("serializes");
        assert!(json.ends_with(r#""processId":null,"processName":"","userId":null,"executable":"","cgroupPath":"","containerId":""}"#), "{json}");
    }

    #[test]
    fn end_json_and_reasons() {
        let begin = sample();
        let end = FlowEnd {
            timestamp_ns: begin.timestamp_ns + 1_500_000_000,
            direction: begin.direction,
            src_ip: begin.src_ip,
            dst_ip: begin.dst_ip,
            src_port: begin.src_port,
            dst_port: begin.dst_port,
            src_domains: begin.src_domains.clone(),
            dst_domains: begin.dst_domains.clone(),
            duration_ns: Some(1_500_000_000),
            src_bytes: 100,
            dst_bytes: 2000,
            src_packets: 5,
            dst_packets: 6,
            retransmits: 0,
            rtt_micros: 35,
            reason: EndReason::Fin,
            closed_by: Some(Side::Src),
            begun_before_capture: false,
            host_name: begin.host_name.clone(),
            cgroup_id: 42,
            flow_id: 7,
            attribution: begin.attribution.clone(),
            accepting_process_id: None,
            accepting_process_name: "".into(),
        };
        let json = serde_json::to_value(&end).expect("serializes");
        assert_eq!(json["duration"], 1.5);
        assert_eq!(json["endReason"], "fin");
        assert_eq!(json["closedBy"], "src");
        assert_eq!(json["acceptingProcessId"], serde_json::Value::Null);
        for reason in EndReason::ALL {
            assert_eq!(reason.as_str().parse::<EndReason>(), Ok(reason));
        }
        assert!("closed".parse::<EndReason>().is_err());
        assert_eq!(Side::from_column(Side::column(Some(Side::Dst))), Ok(Some(Side::Dst)));
        assert_eq!(Side::from_column(""), Ok(None));
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
