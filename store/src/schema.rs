//! The Arrow schemas of flowsql's tables, defined here once and used by
//! every tier (batches, the hot tier, Parquet files) and by the query crate:
//! the event tables `flows` and `flow_ends`, `open_flows` (never stored: a
//! capture's view of the kernel), and the SQLite-only tables `domains` and
//! `capture_stats`.
//!
//! Columns added after a table's first release are NULL (ids) or empty
//! (strings) or zero in rows stored before them (see
//! [`EventTable::conform`]): a process id or user id of NULL means "not
//! known", as it does for a row the capture could not attribute.
//!
//! Column names are the event's own ([`flowsql_event::columns`]); lists stay
//! lists; timestamps are UTC nanoseconds.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use flowsql_event::columns;

use crate::table::EventTable;
pub use crate::table::UTC;

/// Positions of the `flows` columns in [`flows_schema`].
pub mod flow_column {
    pub const TIMESTAMP: usize = 0;
    pub const CONNECTION_DIRECTION: usize = 1;
    pub const SRC_IP: usize = 2;
    pub const DST_IP: usize = 3;
    pub const SRC_PORT: usize = 4;
    pub const DST_PORT: usize = 5;
    pub const SRC_DOMAINS: usize = 6;
    pub const DST_DOMAINS: usize = 7;
    pub const HOST_NAME: usize = 8;
    pub const CGROUP_ID: usize = 9;
    pub const FLOW_ID: usize = 10;
    pub const PROCESS_ID: usize = 11;
    pub const PROCESS_NAME: usize = 12;
    pub const USER_ID: usize = 13;
    pub const EXECUTABLE: usize = 14;
    pub const CGROUP_PATH: usize = 15;
    pub const CONTAINER_ID: usize = 16;
    /// Number of columns.
    pub const COUNT: usize = 17;
}

/// Positions of the `flow_ends` (and `open_flows`) columns in [`flow_ends_schema`].
pub mod end_column {
    pub const TIMESTAMP: usize = 0;
    pub const CONNECTION_DIRECTION: usize = 1;
    pub const SRC_IP: usize = 2;
    pub const DST_IP: usize = 3;
    pub const SRC_PORT: usize = 4;
    pub const DST_PORT: usize = 5;
    pub const SRC_DOMAINS: usize = 6;
    pub const DST_DOMAINS: usize = 7;
    pub const DURATION: usize = 8;
    pub const SRC_BYTES: usize = 9;
    pub const DST_BYTES: usize = 10;
    pub const SRC_PACKETS: usize = 11;
    pub const DST_PACKETS: usize = 12;
    pub const RETRANSMITS: usize = 13;
    pub const RTT_MICROS: usize = 14;
    pub const END_REASON: usize = 15;
    pub const CLOSED_BY: usize = 16;
    pub const BEGUN_BEFORE_CAPTURE: usize = 17;
    pub const HOST_NAME: usize = 18;
    pub const CGROUP_ID: usize = 19;
    pub const FLOW_ID: usize = 20;
    pub const PROCESS_ID: usize = 21;
    pub const PROCESS_NAME: usize = 22;
    pub const USER_ID: usize = 23;
    pub const EXECUTABLE: usize = 24;
    pub const CGROUP_PATH: usize = 25;
    pub const CONTAINER_ID: usize = 26;
    pub const ACCEPTING_PROCESS_ID: usize = 27;
    pub const ACCEPTING_PROCESS_NAME: usize = 28;
    /// Number of columns.
    pub const COUNT: usize = 29;
}

/// Column names of the `domains` table, the same in SQLite and Arrow.
pub mod domain_columns {
    pub const IP: &str = "ip";
    pub const NAME: &str = "name";
    pub const QUESTION: &str = "question";
    pub const FIRST_SEEN: &str = "firstSeen";
    pub const LAST_SEEN: &str = "lastSeen";
    pub const EXPIRES_AT: &str = "expiresAt";
}

/// `timestamp[ns, UTC]`.
pub fn timestamp_type() -> DataType {
    crate::table::time_type()
}

/// `list<utf8>`, with Arrow's conventional item field (`item`, nullable), the
/// type `ListBuilder<StringBuilder>` produces.
pub fn domain_list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

/// The attribution columns, the same on `flows` and `flow_ends`: ids
/// nullable (NULL: not known), strings empty when not known.
fn attribution_fields() -> [Field; 6] {
    [
        Field::new(columns::PROCESS_ID, DataType::UInt32, true),
        Field::new(columns::PROCESS_NAME, DataType::Utf8, false),
        Field::new(columns::USER_ID, DataType::UInt32, true),
        Field::new(columns::EXECUTABLE, DataType::Utf8, false),
        Field::new(columns::CGROUP_PATH, DataType::Utf8, false),
        Field::new(columns::CONTAINER_ID, DataType::Utf8, false),
    ]
}

/// The seven event columns after `timestamp`.
fn seed_fields() -> [Field; 8] {
    [
        Field::new(columns::TIMESTAMP, timestamp_type(), false),
        Field::new(columns::CONNECTION_DIRECTION, DataType::Utf8, false),
        Field::new(columns::SRC_IP, DataType::Utf8, false),
        Field::new(columns::DST_IP, DataType::Utf8, false),
        Field::new(columns::SRC_PORT, DataType::UInt16, false),
        Field::new(columns::DST_PORT, DataType::UInt16, false),
        Field::new(columns::SRC_DOMAINS, domain_list_type(), false),
        Field::new(columns::DST_DOMAINS, domain_list_type(), false),
    ]
}

/// The schema of `flows`, in column order: `timestamp`, the seven event
/// columns, `hostName`, `cgroupId`, `flowId` and the attribution columns.
/// Only `processId` and `userId` are nullable.
pub fn flows_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        let mut fields = seed_fields().to_vec();
        fields.extend([
            Field::new(columns::HOST_NAME, DataType::Utf8, false),
            Field::new(columns::CGROUP_ID, DataType::UInt64, false),
            Field::new(columns::FLOW_ID, DataType::UInt64, false),
        ]);
        fields.extend(attribution_fields());
        Arc::new(Schema::new(fields))
    }))
}

/// The schema of `flow_ends` (and of `open_flows`): `timestamp` (when it
/// ended), the seven event columns as on the begin, `duration` (seconds;
/// NULL when the connection began before the capture), bytes, segments,
/// retransmits, RTT, `endReason`, `closedBy`, `begunBeforeCapture`,
/// `hostName`, `cgroupId`, `flowId`, the attribution columns, and the
/// accepting process.
pub fn flow_ends_schema() -> SchemaRef {
    use columns as c;
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        let mut fields = seed_fields().to_vec();
        fields.extend([
            Field::new(c::DURATION, DataType::Float64, true),
            Field::new(c::SRC_BYTES, DataType::UInt64, false),
            Field::new(c::DST_BYTES, DataType::UInt64, false),
            Field::new(c::SRC_PACKETS, DataType::UInt64, false),
            Field::new(c::DST_PACKETS, DataType::UInt64, false),
            Field::new(c::RETRANSMITS, DataType::UInt32, false),
            Field::new(c::RTT_MICROS, DataType::UInt32, false),
            Field::new(c::END_REASON, DataType::Utf8, false),
            Field::new(c::CLOSED_BY, DataType::Utf8, false),
            Field::new(c::BEGUN_BEFORE_CAPTURE, DataType::Boolean, false),
            Field::new(c::HOST_NAME, DataType::Utf8, false),
            Field::new(c::CGROUP_ID, DataType::UInt64, false),
            Field::new(c::FLOW_ID, DataType::UInt64, false),
        ]);
        fields.extend(attribution_fields());
        fields.extend([
            Field::new(c::ACCEPTING_PROCESS_ID, DataType::UInt32, true),
            Field::new(c::ACCEPTING_PROCESS_NAME, DataType::Utf8, false),
        ]);
        Arc::new(Schema::new(fields))
    }))
}

/// The `flow_ends` event table: [`flow_ends_schema`], timed by `timestamp`
/// (the end).
pub fn flow_ends_table() -> &'static EventTable {
    static TABLE: OnceLock<EventTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        EventTable::new("flow_ends", flow_ends_schema(), columns::TIMESTAMP)
            .unwrap_or_else(|e| unreachable!("the flow_ends schema is a valid event table: {e}"))
    })
}

/// The `flows` event table: [`flows_schema`], timed by `timestamp`.
pub fn flows_table() -> &'static EventTable {
    static TABLE: OnceLock<EventTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        EventTable::new("flows", flows_schema(), columns::TIMESTAMP)
            .unwrap_or_else(|e| unreachable!("the flows schema is a valid event table: {e}"))
    })
}

/// The event tables a store keeps by default, in the order they are
/// exported.
pub fn event_tables() -> Vec<EventTable> {
    vec![flows_table().clone(), flow_ends_table().clone()]
}

/// Column names of `capture_stats`, the same in SQLite and Arrow.
pub mod capture_stats_columns {
    pub const TIME: &str = "time";
    pub const SESSION: &str = "session";
    pub const EVENTS: &str = "events";
    pub const LOST: &str = "lost";
    pub const ROWS_STORED: &str = "rowsStored";
    pub const ROWS_NOT_STORED: &str = "rowsNotStored";
    pub const STORE_FAILURES: &str = "storeFailures";
    pub const COUNTERS: &str = "counters";
}

/// The schema of `capture_stats`: each capture session's cumulative
/// counters over time; `counters` is a JSON object of further counters by
/// name.
pub fn capture_stats_schema() -> SchemaRef {
    use capture_stats_columns as c;
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new(c::TIME, timestamp_type(), false),
            Field::new(c::SESSION, timestamp_type(), false),
            Field::new(c::EVENTS, DataType::UInt64, false),
            Field::new(c::LOST, DataType::UInt64, false),
            Field::new(c::ROWS_STORED, DataType::UInt64, false),
            Field::new(c::ROWS_NOT_STORED, DataType::UInt64, false),
            Field::new(c::STORE_FAILURES, DataType::UInt64, false),
            Field::new(c::COUNTERS, DataType::Utf8, false),
        ]))
    }))
}

/// The schema of `domains`: one row per (ip, name) the host resolved, with
/// when it was first and last seen and when its TTL runs out.
pub fn domains_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new(domain_columns::IP, DataType::Utf8, false),
            Field::new(domain_columns::NAME, DataType::Utf8, false),
            Field::new(domain_columns::QUESTION, DataType::Utf8, false),
            Field::new(domain_columns::FIRST_SEEN, timestamp_type(), false),
            Field::new(domain_columns::LAST_SEEN, timestamp_type(), false),
            Field::new(domain_columns::EXPIRES_AT, timestamp_type(), false),
        ]))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_columns_have_the_event_names_in_order() {
        let schema = flows_schema();
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "timestamp",
                "connectionDirection",
                "srcIP",
                "dstIP",
                "srcPort",
                "dstPort",
                "srcDomains",
                "dstDomains",
                "hostName",
                "cgroupId",
                "flowId",
                "processId",
                "processName",
                "userId",
                "executable",
                "cgroupPath",
                "containerId"
            ]
        );
        assert_eq!(names.len(), flow_column::COUNT);
        assert_eq!(schema.field(flow_column::SRC_PORT).data_type(), &DataType::UInt16);
        assert_eq!(schema.field(flow_column::DST_DOMAINS).data_type(), &domain_list_type());
        assert_eq!(schema.field(flow_column::TIMESTAMP).data_type().to_string(), r#"Timestamp(ns, "UTC")"#);
    }

    #[test]
    fn flow_ends_columns_have_their_names_in_order() {
        let schema = flow_ends_schema();
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names.len(), end_column::COUNT);
        assert_eq!(names[end_column::DURATION], "duration");
        assert_eq!(names[end_column::END_REASON], "endReason");
        assert_eq!(names[end_column::FLOW_ID], "flowId");
        assert_eq!(names[end_column::ACCEPTING_PROCESS_NAME], "acceptingProcessName");
        assert_eq!(names[end_column::CONTAINER_ID], "containerId");
        // The seven event columns exactly as on `flows`.
        assert_eq!(schema.fields()[..8], flows_schema().fields()[..8]);
    }

    #[test]
    fn domains_columns() {
        let names: Vec<_> = domains_schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["ip", "name", "question", "firstSeen", "lastSeen", "expiresAt"]);
    }
}
