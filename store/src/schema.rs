//! The Arrow schemas of flowsql's tables, defined here once and used by
//! every tier (batches, the hot tier, Parquet files) and by the query crate:
//! the event table `flows`, and the SQLite-only tables `domains` and
//! `capture_stats`.
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
    /// Number of columns.
    pub const COUNT: usize = 10;
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

/// The schema of `flows`, in column order: `timestamp`, the seven event
/// columns, `hostName`, `cgroupId`. No column is nullable.
pub fn flows_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new(columns::TIMESTAMP, timestamp_type(), false),
            Field::new(columns::CONNECTION_DIRECTION, DataType::Utf8, false),
            Field::new(columns::SRC_IP, DataType::Utf8, false),
            Field::new(columns::DST_IP, DataType::Utf8, false),
            Field::new(columns::SRC_PORT, DataType::UInt16, false),
            Field::new(columns::DST_PORT, DataType::UInt16, false),
            Field::new(columns::SRC_DOMAINS, domain_list_type(), false),
            Field::new(columns::DST_DOMAINS, domain_list_type(), false),
            Field::new(columns::HOST_NAME, DataType::Utf8, false),
            Field::new(columns::CGROUP_ID, DataType::UInt64, false),
        ]))
    }))
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
    vec![flows_table().clone()]
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
                "cgroupId"
            ]
        );
        assert_eq!(names.len(), flow_column::COUNT);
        assert_eq!(schema.field(flow_column::SRC_PORT).data_type(), &DataType::UInt16);
        assert_eq!(schema.field(flow_column::DST_DOMAINS).data_type(), &domain_list_type());
        assert_eq!(schema.field(flow_column::TIMESTAMP).data_type().to_string(), r#"Timestamp(ns, "UTC")"#);
    }

    #[test]
    fn domains_columns() {
        let names: Vec<_> = domains_schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["ip", "name", "question", "firstSeen", "lastSeen", "expiresAt"]);
    }
}
