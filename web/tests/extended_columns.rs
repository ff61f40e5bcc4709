//! The views over a store whose flows carry process attribution
//! (`processName`, `containerId`) and that has a `flow_ends` table (bytes,
//! `endReason`): local nodes are processes and containers, edges carry
//! bytes, failed attempts and resets, and the timeline counts failed
//! attempts. Real rows of both tables, in a real store read by a real
//! session.

use std::net::IpAddr;
use std::sync::Arc;

use flowsql_event::{Attribution, Direction, DomainList, EndReason, FlowBegin};
use flowsql_query::{Session, SessionOptions};
use flowsql_store::synthetic::end_of;
use flowsql_store::test_util::TempDir;
use flowsql_store::{Store, batch_from_ends, batch_from_flows};
use flowsql_web::Limits;
use flowsql_web::views::{self, Columns, Filters, Range, Stack, TimelineParams};

const MINUTE_NS: i64 = 60_000_000_000;
const T0: i64 = 1_795_824_000_000_000_000;

/// Who: a process, in a container or not.
fn who(process: &str, container: &str) -> Attribution {
    Attribution {
        process_id: Some(4242),
        process_name: Arc::from(process),
        container_id: Arc::from(container),
        ..Attribution::default()
    }
}

fn flow(minute: i64, dst: &str, domains: &[&str], cgroup: u64, attribution: Attribution) -> FlowBegin {
    let names: DomainList = domains.iter().map(|n| Arc::<str>::from(*n)).collect();
    FlowBegin {
        timestamp_ns: T0 + minute * MINUTE_NS,
        direction: Direction::Outgoing,
        src_ip: "10.0.0.5".parse::<IpAddr>().expect("ip"),
        dst_ip: dst.parse::<IpAddr>().expect("ip"),
        src_port: 50_000 + minute as u16,
        dst_port: 443,
        src_domains: DomainList::default(),
        dst_domains: names,
        cgroup_id: cgroup,
        host_name: Arc::from("h"),
        flow_id: minute as u64,
        attribution,
    }
}

#[tokio::test]
async fn processes_containers_bytes_and_failures_when_the_store_has_them() {
    let dir = TempDir::new("web-extended");
    let dir = dir.path();

    // Begins: curl (twice) and a container to one name.
    let begins = [
        flow(1, "93.184.216.34", &["www.example.com"], 7, who("curl", "")),
        flow(2, "93.184.216.34", &["www.example.com"], 7, who("curl", "")),
        flow(3, "93.184.216.34", &["www.example.com"], 9, who("nginx", "c0ffee")),
    ];
    // Ends: the three begins with bytes, and two refused attempts and one
    // reset by curl to a name that never answered.
    let down = |minute| flow(minute, "192.0.2.9", &["down.example"], 7, who("curl", ""));
    let ends = [
        end_of(&begins[0], EndReason::Fin, 100, 1_000),
        end_of(&begins[1], EndReason::Fin, 200, 2_000),
        end_of(&begins[2], EndReason::Fin, 300, 3_000),
        end_of(&down(4), EndReason::Refused, 0, 0),
        end_of(&down(4), EndReason::Refused, 0, 0),
        end_of(&down(5), EndReason::ResetReceived, 5, 0),
    ];
    let mut store = Store::open(dir).expect("store");
    store.insert("flows", &batch_from_flows(&begins)).expect("insert begins");
    store.insert("flow_ends", &batch_from_ends(&ends)).expect("insert ends");
    let learned = |ip: &str, name: &str| flowsql_event::DomainObservation {
        ip: ip.parse().expect("ip"),
        name: Arc::from(name),
        question: Arc::from(name),
        seen_ns: T0,
        expires_ns: T0 + 60 * MINUTE_NS,
    };
    store
        .record_domains(&[learned("93.184.216.34", "www.example.com"), learned("192.0.2.9", "down.example")])
        .expect("domains");
    drop(store);

    let session = Session::open(SessionOptions::new(dir)).expect("session");
    let columns = Columns::of(&session);
    assert_eq!(columns, Columns { attribution: true, ends: true, ends_attribution: true });
    let range = Range { since: T0 / 1_000_000, until: T0 / 1_000_000 + 3_600_000 };
    let filters = Filters::default();
    let map = views::map(&session, columns, &filters, range, Limits::default()).await.expect("map");
    let mut edges: Vec<_> = map
        .edges
        .iter()
        .map(|e| (e.local.as_str(), e.remote.as_str(), e.flows, e.bytes, e.failed, e.resets))
        .collect();
    edges.sort();
    assert_eq!(
        edges,
        vec![
            ("container c0ffee", "www.example.com", 1, Some(3_300), Some(0), Some(0)),
            ("curl", "down.example", 0, Some(5), Some(2), Some(1)),
            ("curl", "www.example.com", 2, Some(3_300), Some(0), Some(0)),
        ]
    );

    let timeline = views::timeline(
        &session,
        columns,
        &filters,
        &TimelineParams { stack: Some(Stack::Direction) },
        range,
        Limits::default(),
    )
    .await
    .expect("timeline");
    let failed = timeline.failed.expect("failed attempts per bucket");
    assert_eq!(failed.iter().sum::<i64>(), 2, "two refused attempts (a reset is not a failed attempt)");
    assert_eq!(failed[4], 2, "both at minute 4");
}
