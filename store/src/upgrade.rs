//! The move of a data directory written before the hot tier held batches
//! (schema version 2: a SQLite row per flow in `flows`, domain lists as
//! JSON text) to the batch layout of migrations/0003: every old row becomes
//! part of a `flows` batch, then the old `flows` and `flow_ids` tables are
//! dropped. It runs inside the migration's transaction, so a process killed
//! during it leaves the directory as it was, and the next open does it
//! again: each flow ends up exactly once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use flowsql_event::{Attribution, Direction, DomainList, DomainName, FlowBegin};
use rusqlite::Connection;
use rusqlite::types::ValueRef;

use crate::flows::FlowColumns;
use crate::ipc::HOT_COMPRESSION;
use crate::schema::flows_table;
use crate::{StoreError, hot, json_list};

/// Rows per batch made from old rows.
const UPGRADE_BATCH_ROWS: usize = 16 * 1024;

/// Moves the rows of the old `flows` table into batches and drops the old
/// tables (the upgrade step of migrations/0003).
pub(crate) fn move_rows_into_batches(conn: &Connection) -> Result<(), StoreError> {
    let path = conn.path().unwrap_or("flowsql.db").to_owned();
    let sqlite = |e| StoreError::sqlite("move old flows rows into batches", &path, e);
    let invalid =
        |reason: String| StoreError::InvalidRow { table: "flows", path: path.clone().into(), reason };
    let table = flows_table();
    let now = crate::now_ns();
    let mut moved = 0u64;
    {
        let mut stmt = conn
            .prepare(
                "SELECT timestamp, connectionDirection, srcIP, dstIP, srcPort, dstPort, srcDomains, dstDomains,
                        hostName, cgroupId
                 FROM flows ORDER BY timestamp, id",
            )
            .map_err(sqlite)?;
        let mut rows = stmt.query([]).map_err(sqlite)?;
        let mut columns = FlowColumns::with_capacity(UPGRADE_BATCH_ROWS);
        // Equal values share one allocation, so a batch stores each once.
        let mut lists: HashMap<String, DomainList> = HashMap::new();
        let mut hosts: HashMap<String, Arc<str>> = HashMap::new();
        let flush = |columns: &mut FlowColumns| -> Result<(), StoreError> {
            let batch = columns.finish();
            if let Some(encoded) = hot::encode(table, &batch, HOT_COMPRESSION)? {
                hot::insert(conn, table.name(), &encoded, now).map_err(sqlite)?;
            }
            Ok(())
        };
        while let Some(row) = rows.next().map_err(sqlite)? {
            let text = |i: usize| -> Result<&str, StoreError> {
                match row.get_ref(i).map_err(sqlite)? {
                    ValueRef::Text(bytes) => std::str::from_utf8(bytes)
                        .map_err(|e| invalid(format!("column {i} is not UTF-8: {e}"))),
                    other => Err(invalid(format!("column {i} is {:?}, not text", other.data_type()))),
                }
            };
            let int = |i: usize| -> Result<i64, StoreError> {
                match row.get_ref(i).map_err(sqlite)? {
                    ValueRef::Integer(v) => Ok(v),
                    other => Err(invalid(format!("column {i} is {:?}, not an integer", other.data_type()))),
                }
            };
            let port = |i: usize| -> Result<u16, StoreError> {
                let v = int(i)?;
                u16::try_from(v).map_err(|_| invalid(format!("port {v} out of range")))
            };
            let ip = |i: usize| -> Result<IpAddr, StoreError> {
                let t = text(i)?;
                t.parse().map_err(|e| invalid(format!("address {t:?}: {e}")))
            };
            let mut list = |i: usize| -> Result<DomainList, StoreError> {
                let t = text(i)?;
                if let Some(list) = lists.get(t) {
                    return Ok(Arc::clone(list));
                }
                let mut names = Vec::new();
                json_list::decode(t.as_bytes(), |name| names.push(DomainName::from(name)))
                    .map_err(|e| invalid(format!("domain list {}", e.0)))?;
                let list: DomainList = names.into();
                lists.insert(t.to_owned(), Arc::clone(&list));
                Ok(list)
            };
            let src_domains = list(6)?;
            let dst_domains = list(7)?;
            let host = text(8)?;
            let host_name = match hosts.get(host) {
                Some(h) => Arc::clone(h),
                None => {
                    let h: Arc<str> = host.into();
                    hosts.insert(host.to_owned(), Arc::clone(&h));
                    h
                }
            };
            let direction: Direction = text(1)?.parse().map_err(|e| invalid(format!("{e}")))?;
            columns.push(&FlowBegin {
                timestamp_ns: int(0)?,
                direction,
                src_ip: ip(2)?,
                dst_ip: ip(3)?,
                src_port: port(4)?,
                dst_port: port(5)?,
                src_domains,
                dst_domains,
                // The same 64 bits, stored as i64.
                cgroup_id: int(9)? as u64,
                host_name,
                // Not recorded by that flowsql: 0 and not known.
                flow_id: 0,
                attribution: Attribution::default(),
            });
            moved += 1;
            if columns.len() >= UPGRADE_BATCH_ROWS {
                flush(&mut columns)?;
                // Names of one batch need not stay for the next.
                lists.clear();
            }
        }
        if !columns.is_empty() {
            flush(&mut columns)?;
        }
    }
    conn.execute_batch("DROP TABLE flows; DROP TABLE flow_ids;").map_err(sqlite)?;
    if moved > 0 {
        tracing::info!(rows = moved, database = %path, "moved the hot flows of an older flowsql into batches");
    }
    Ok(())
}
