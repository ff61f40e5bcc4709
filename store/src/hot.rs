//! The hot tier: flows in SQLite (`flowsql.db`, WAL, `synchronous=NORMAL`),
//! written in batched transactions and read back by time through the
//! `flows_timestamp` index.
//!
//! SQLite columns have the event's names; `timestamp` is INTEGER ns UTC,
//! domain lists are JSON array text, `cgroupId` is the u64's bits as i64.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::{TimestampNanosecondType, UInt16Type, UInt64Type};
use arrow::record_batch::RecordBatch;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior, params};

use crate::batch::{FlowColumns, IpText, RowRef, check_flows_batch};
use crate::json_list;
use crate::migrations::{self, MIGRATIONS, Migration};
use crate::schema::flow_column;
use crate::{StoreError, TimeRange};

/// Mode of a database file flowsql creates: owner read-write, group read.
pub const DB_FILE_MODE: u32 = 0o640;

/// How a connection spends memory on the database.
///
/// Mapped database pages count as the process's resident memory once
/// touched, and SQLite's page cache fills up to its limit on every
/// connection that reads much: in the capturing process, whose writer and
/// scheduled export touch every page of the hot tier, both would grow with
/// the database. Readers (queries, `flowsql export`, `flowsql status`) trade
/// that memory for speed: reading rows out of SQLite runs about 1.4x faster
/// through the map (BENCHMARKS.md, "Store").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemoryUse {
    /// A 32 MB page cache and reads through a 256 MiB memory map.
    #[default]
    Fast,
    /// A 2 MiB page cache and no memory map: the capturing process's writer
    /// and scheduled export.
    Lean,
}

impl MemoryUse {
    /// `PRAGMA cache_size` (negative: KiB).
    fn cache_size(self) -> i64 {
        match self {
            MemoryUse::Fast => -32_000,
            MemoryUse::Lean => -2_048,
        }
    }

    /// `PRAGMA mmap_size` in bytes.
    fn mmap_size(self) -> i64 {
        match self {
            MemoryUse::Fast => 256 << 20,
            MemoryUse::Lean => 0,
        }
    }

    /// The memory settings every connection gets, writer or reader: page
    /// cache, memory map, temporary tables in memory, cached statements.
    fn configure(self, conn: &Connection) -> rusqlite::Result<()> {
        conn.pragma_update(None, "cache_size", self.cache_size())?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "mmap_size", self.mmap_size())?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(())
    }
}

/// Page size of a new database.
const PAGE_SIZE: i64 = 32 * 1024;

/// Rows per multi-row INSERT statement (10 parameters each).
const ROWS_PER_INSERT: usize = 64;

const FLOW_COLUMNS: &str = "timestamp, connectionDirection, srcIP, dstIP, srcPort, dstPort, srcDomains, dstDomains, hostName, cgroupId";

/// The insert's column order: the key first.
const INSERT_COLUMNS: &str = "timestamp, id, connectionDirection, srcIP, dstIP, srcPort, dstPort, srcDomains, dstDomains, hostName, cgroupId";

/// Parameters per inserted row.
const PARAMS_PER_ROW: usize = 11;

/// How long a connection waits for another connection's write lock before
/// its statement fails with SQLITE_BUSY (the store writer sets a shorter
/// wait and retries on its own, see [`crate::writer`]).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite database of a data directory.
#[derive(Debug)]
pub struct HotStore {
    conn: Connection,
    path: PathBuf,
    /// Scratch for domain lists as JSON.
    json: String,
}

impl HotStore {
    /// Opens (creating it with mode 0640 if needed) the database at `path`
    /// and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        HotStore::open_with(path, MIGRATIONS, MemoryUse::Fast)
    }

    /// [`open`](Self::open) with a given list of migrations (tests of
    /// upgrades) and use of memory.
    pub fn open_with(path: &Path, list: &[Migration], memory: MemoryUse) -> Result<Self, StoreError> {
        if !path.exists() {
            // SQLite would create it with the umask's mode; give it ours.
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(DB_FILE_MODE)
                .open(path)
                .map_err(|e| StoreError::io("create database", path, e))?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn =
            Connection::open_with_flags(path, flags).map_err(|e| StoreError::sqlite("open", path, e))?;
        let setup = |conn: &Connection| -> rusqlite::Result<()> {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // Only takes effect on a new database (before the first table):
            // large pages make bulk inserts and the export's delete cheaper.
            conn.pragma_update(None, "page_size", PAGE_SIZE)?;
            let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(database = %path.display(), mode, "SQLite refused WAL mode");
            }
            // Keep the -wal and -shm files when the last connection closes:
            // readers without write access to the directory (flowsql query
            // as a member of the data directory's group) can only open a
            // WAL database whose -wal and -shm exist (see `open_read_only`).
            conn.file_control(Some(rusqlite::MAIN_DB), rusqlite::FileControl::PersistWal(&mut 1))?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            memory.configure(conn)
        };
        setup(&conn).map_err(|e| StoreError::sqlite("configure (WAL, synchronous=NORMAL)", path, e))?;
        migrations::apply(&mut conn, list, path)?;
        Ok(HotStore { conn, path: path.to_owned(), json: String::new() })
    }

    /// Opens an existing database for reading only: nothing is created,
    /// migrated or written (`SQLITE_OPEN_READONLY` and `PRAGMA query_only`),
    /// so read access to the data directory and its files is all it needs.
    ///
    /// A WAL database needs its `-wal` and `-shm` files to be read: they
    /// exist while a writer has it open, and stay after (writers keep them,
    /// see [`open_with`](Self::open_with)); a reader that cannot write the
    /// `-shm` reads it as it is, or, when no writer has it open, builds its
    /// index of the WAL in its own memory. Only a database whose last writer
    /// removed them (an older flowsql, another SQLite tool) is opened
    /// `immutable`: nobody has it open, and every commit is in the database
    /// file.
    pub fn open_read_only(path: &Path, memory: MemoryUse) -> Result<Self, StoreError> {
        let read_only = |immutable: bool| -> Result<Connection, StoreError> {
            let open = |e| StoreError::sqlite("open (read-only)", path, e);
            let conn = if immutable {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI;
                Connection::open_with_flags(format!("file:{}?immutable=1", uri_path(path)), flags)
                    .map_err(open)?
            } else {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                Connection::open_with_flags(path, flags).map_err(open)?
            };
            let setup = |conn: &Connection| -> rusqlite::Result<()> {
                conn.busy_timeout(BUSY_TIMEOUT)?;
                conn.pragma_update(None, "query_only", true)?;
                memory.configure(conn)
            };
            setup(&conn).map_err(|e| StoreError::sqlite("configure (read-only)", path, e))?;
            Ok(conn)
        };
        // A directory this user may not search is "permission denied", not
        // "not found".
        match std::fs::metadata(path) {
            Ok(metadata) if metadata.is_file() => {}
            Ok(_) => {
                let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
                return Err(StoreError::io("open", path, missing));
            }
            Err(e) => return Err(StoreError::io("open", path, e)),
        }
        let conn = read_only(false)?;
        // The first read opens the WAL: this is where a missing -wal that
        // cannot be created shows.
        let conn = match migrations::schema_version(&conn) {
            Ok(_) => conn,
            Err(e) if wal_missing(path) && cannot_open_wal(&e) => {
                tracing::debug!(database = %path.display(), "no -wal file and no right to create it: reading the database file as it is (immutable)");
                drop(conn);
                read_only(true)?
            }
            Err(e) => return Err(StoreError::sqlite("read the schema version", path, e)),
        };
        let version = migrations::schema_version(&conn)
            .map_err(|e| StoreError::sqlite("read the schema version", path, e))?;
        let known = MIGRATIONS.len();
        match usize::try_from(version).unwrap_or(usize::MAX) {
            found if found > known => {
                return Err(StoreError::SchemaTooNew { path: path.to_owned(), found: version, known });
            }
            found if found < known => {
                return Err(StoreError::SchemaTooOld { path: path.to_owned(), found: version, known });
            }
            _ => {}
        }
        Ok(HotStore { conn, path: path.to_owned(), json: String::new() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for reads this API does not cover.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn err(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |e| StoreError::sqlite(action, &self.path, e)
    }

    /// Inserts a flows batch in one transaction; returns the rows inserted.
    pub fn insert_flows(&mut self, batch: &RecordBatch) -> Result<usize, StoreError> {
        self.with_write_transaction(|tx, json| insert_flows_in(tx, batch, json))
    }

    /// Runs `f` in one immediate write transaction, committed if `f`
    /// succeeds and rolled back otherwise. `f` also gets a scratch string.
    /// This is where other tables' writes (domains) go.
    pub fn with_write_transaction<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>, &mut String) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let path = self.path.clone();
        let (tx, json) = self.begin_write()?;
        let value = f(&tx, json)?;
        tx.commit().map_err(|e| StoreError::sqlite("commit", path, e))?;
        Ok(value)
    }

    /// Starts an immediate write transaction (rolled back when dropped
    /// uncommitted), with the scratch string.
    pub fn begin_write(&mut self) -> Result<(Transaction<'_>, &mut String), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sqlite("start a write transaction", &self.path, e))?;
        Ok((tx, &mut self.json))
    }

    /// Calls `f` with the flows of `range`, in time order, in batches of at
    /// most `batch_rows`, read through the timestamp index.
    pub fn for_each_flow_batch(
        &self,
        range: TimeRange,
        batch_rows: usize,
        f: impl FnMut(RecordBatch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        read_flows(&self.conn, &self.path, range, i64::MAX, batch_rows, f)
    }

    /// The flows of `range` as batches of at most `batch_rows`, in time order.
    pub fn flows_in_range(
        &self,
        range: TimeRange,
        batch_rows: usize,
    ) -> Result<Vec<RecordBatch>, StoreError> {
        let mut batches = Vec::new();
        self.for_each_flow_batch(range, batch_rows, |b| {
            batches.push(b);
            Ok(())
        })?;
        Ok(batches)
    }

    /// Number of hot flows in `range`.
    pub fn flow_count(&self, range: TimeRange) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM flows WHERE timestamp >= ?1 AND timestamp < ?2",
                params![range.start(), range.end()],
                |r| r.get(0),
            )
            .map_err(self.err("count hot flows"))?;
        Ok(n as u64)
    }

    /// Oldest and newest hot timestamps.
    pub fn time_span(&self) -> Result<Option<(i64, i64)>, StoreError> {
        let span: (Option<i64>, Option<i64>) = self
            .conn
            .query_row("SELECT min(timestamp), max(timestamp) FROM flows", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err("read the hot time span"))?;
        Ok(span.0.zip(span.1))
    }

    /// Copies the WAL into the database file and syncs it: after this,
    /// every committed row survives a power loss, not only a crash.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(self.err("checkpoint the WAL"))
    }

    /// A value of the `store_state` table.
    pub fn state(&self, key: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension as _;
        self.conn
            .query_row("SELECT value FROM store_state WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(self.err("read store_state"))
    }

    pub(crate) fn set_state(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO store_state (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map(|_| ())
            .map_err(self.err("write store_state"))
    }
}

/// Whether the database at `path` has no `-wal` file beside it.
fn wal_missing(path: &Path) -> bool {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    !Path::new(&wal).exists()
}

/// Whether `error` is SQLite failing to open or create the WAL of a
/// read-only connection.
fn cannot_open_wal(error: &rusqlite::Error) -> bool {
    matches!(error.sqlite_error_code(), Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen))
}

/// `path` for a `file:` URI: `%`, `?` and `#` escaped.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let mut out = String::new();
    for &byte in path.as_os_str().as_bytes() {
        match byte {
            b'%' | b'?' | b'#' => out.push_str(&format!("%{byte:02X}")),
            _ if byte.is_ascii() && !byte.is_ascii_control() => out.push(char::from(byte)),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Inserts `batch` (flows schema) with multi-row prepared INSERTs inside the
/// caller's transaction.
pub fn insert_flows_in(tx: &Connection, batch: &RecordBatch, json: &mut String) -> Result<usize, StoreError> {
    check_flows_batch(batch)?;
    let path = PathBuf::from(tx.path().unwrap_or(""));
    let err = |e| StoreError::sqlite("insert flows", &path, e);
    let rows = batch.num_rows();
    // This transaction's ids: the next `rows` of flow_ids.
    let first_id: i64 = tx
        .prepare_cached("UPDATE flow_ids SET next = next + ?1 RETURNING next - ?1")
        .and_then(|mut stmt| stmt.query_row([rows as i64], |r| r.get(0)))
        .map_err(err)?;
    let columns = Columns::of(batch, first_id);
    let full = rows / ROWS_PER_INSERT * ROWS_PER_INSERT;
    if full > 0 {
        let mut stmt = tx.prepare_cached(&insert_sql(ROWS_PER_INSERT)).map_err(err)?;
        for chunk in (0..full).step_by(ROWS_PER_INSERT) {
            for (k, row) in (chunk..chunk + ROWS_PER_INSERT).enumerate() {
                columns.bind(&mut stmt, k * PARAMS_PER_ROW, row, json).map_err(err)?;
            }
            stmt.raw_execute().map_err(err)?;
        }
    }
    if full < rows {
        let mut stmt = tx.prepare_cached(&insert_sql(1)).map_err(err)?;
        for row in full..rows {
            columns.bind(&mut stmt, 0, row, json).map_err(err)?;
            stmt.raw_execute().map_err(err)?;
        }
    }
    Ok(rows)
}

fn insert_sql(rows: usize) -> String {
    let one = "(?,?,?,?,?,?,?,?,?,?,?)";
    let mut sql = format!("INSERT INTO flows ({INSERT_COLUMNS}) VALUES {one}");
    for _ in 1..rows {
        sql.push(',');
        sql.push_str(one);
    }
    sql
}

/// The arrays of a flows batch, typed.
struct Columns<'a> {
    first_id: i64,
    timestamp: &'a [i64],
    direction: &'a arrow::array::StringArray,
    src_ip: &'a arrow::array::StringArray,
    dst_ip: &'a arrow::array::StringArray,
    src_port: &'a [u16],
    dst_port: &'a [u16],
    src_domains: &'a arrow::array::ListArray,
    dst_domains: &'a arrow::array::ListArray,
    host_name: &'a arrow::array::StringArray,
    cgroup_id: &'a [u64],
}

impl<'a> Columns<'a> {
    /// `batch` must have passed [`check_flows_batch`].
    fn of(batch: &'a RecordBatch, first_id: i64) -> Self {
        Columns {
            first_id,
            timestamp: batch
                .column(flow_column::TIMESTAMP)
                .as_primitive::<TimestampNanosecondType>()
                .values(),
            direction: batch.column(flow_column::CONNECTION_DIRECTION).as_string::<i32>(),
            src_ip: batch.column(flow_column::SRC_IP).as_string::<i32>(),
            dst_ip: batch.column(flow_column::DST_IP).as_string::<i32>(),
            src_port: batch.column(flow_column::SRC_PORT).as_primitive::<UInt16Type>().values(),
            dst_port: batch.column(flow_column::DST_PORT).as_primitive::<UInt16Type>().values(),
            src_domains: batch.column(flow_column::SRC_DOMAINS).as_list::<i32>(),
            dst_domains: batch.column(flow_column::DST_DOMAINS).as_list::<i32>(),
            host_name: batch.column(flow_column::HOST_NAME).as_string::<i32>(),
            cgroup_id: batch.column(flow_column::CGROUP_ID).as_primitive::<UInt64Type>().values(),
        }
    }

    /// Binds row `row` to parameters `base + 1 ..= base + 11`.
    fn bind(
        &self,
        stmt: &mut rusqlite::Statement<'_>,
        base: usize,
        row: usize,
        json: &mut String,
    ) -> rusqlite::Result<()> {
        stmt.raw_bind_parameter(base + 1, self.timestamp[row])?;
        stmt.raw_bind_parameter(base + 2, self.first_id + row as i64)?;
        stmt.raw_bind_parameter(base + 3, self.direction.value(row))?;
        stmt.raw_bind_parameter(base + 4, self.src_ip.value(row))?;
        stmt.raw_bind_parameter(base + 5, self.dst_ip.value(row))?;
        stmt.raw_bind_parameter(base + 6, self.src_port[row])?;
        stmt.raw_bind_parameter(base + 7, self.dst_port[row])?;
        // SQLite copies text when it is bound, so one scratch string serves.
        list_json(self.src_domains, row, json);
        stmt.raw_bind_parameter(base + 8, json.as_str())?;
        list_json(self.dst_domains, row, json);
        stmt.raw_bind_parameter(base + 9, json.as_str())?;
        stmt.raw_bind_parameter(base + 10, self.host_name.value(row))?;
        // The same 64 bits, read as i64: u64 values above i64::MAX round-trip.
        stmt.raw_bind_parameter(base + 11, self.cgroup_id[row] as i64)?;
        Ok(())
    }
}

fn list_json(list: &arrow::array::ListArray, row: usize, out: &mut String) {
    out.clear();
    let offsets = list.value_offsets();
    let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
    if start == end {
        out.push_str("[]");
        return;
    }
    let values = list.values().as_string::<i32>();
    json_list::encode((start..end).map(|i| values.value(i)), out);
}

/// A batch read from the hot tier ends early once its rows' domain lists
/// reach this many bytes of text: a flow to a shared address can carry
/// dozens of names, and a batch of 8,192 such flows would hold tens of MB
/// (times the batches in flight during an export) where a typical one holds
/// a few hundred KB.
const BATCH_DOMAIN_BYTES: usize = 1 << 20;

/// Reads the flows of `range` with `id <= max_id`, in time order, as batches
/// of at most `batch_rows` (and at most about [`BATCH_DOMAIN_BYTES`] of
/// domain names).
pub(crate) fn read_flows(
    conn: &Connection,
    path: &Path,
    range: TimeRange,
    max_id: i64,
    batch_rows: usize,
    mut f: impl FnMut(RecordBatch) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let err = |e| StoreError::sqlite("read flows", path, e);
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {FLOW_COLUMNS} FROM flows
             WHERE timestamp >= ?1 AND timestamp < ?2 AND id <= ?3 ORDER BY timestamp, id"
        ))
        .map_err(err)?;
    let batch_rows = batch_rows.max(1);
    let mut columns = FlowColumns::with_capacity(batch_rows.min(64 * 1024));
    let mut domain_bytes = 0;
    let mut rows = stmt.query(params![range.start(), range.end(), max_id]).map_err(err)?;
    let invalid = |reason: String| StoreError::InvalidRow { table: "flows", path: path.to_owned(), reason };
    while let Some(row) = rows.next().map_err(err)? {
        let text = |i: usize| -> Result<&str, StoreError> {
            match row.get_ref(i).map_err(err)? {
                ValueRef::Text(bytes) => {
                    std::str::from_utf8(bytes).map_err(|e| invalid(format!("column {i} is not UTF-8: {e}")))
                }
                other => Err(invalid(format!("column {i} is {:?}, not text", other.data_type()))),
            }
        };
        let int = |i: usize| -> Result<i64, StoreError> {
            match row.get_ref(i).map_err(err)? {
                ValueRef::Integer(v) => Ok(v),
                other => Err(invalid(format!("column {i} is {:?}, not an integer", other.data_type()))),
            }
        };
        let port = |i: usize| -> Result<u16, StoreError> {
            let v = int(i)?;
            u16::try_from(v).map_err(|_| invalid(format!("port {v} out of range")))
        };
        let direction = text(1)?;
        if direction != "outgoing" && direction != "incoming" {
            return Err(invalid(format!("connectionDirection {direction:?}")));
        }
        columns.push_row(RowRef {
            timestamp_ns: int(0)?,
            direction,
            src_ip: IpText::Text(text(2)?),
            dst_ip: IpText::Text(text(3)?),
            src_port: port(4)?,
            dst_port: port(5)?,
            host_name: text(8)?,
            cgroup_id: int(9)? as u64,
        });
        let (src_domains, dst_domains) = (text(6)?, text(7)?);
        append_json_list(&mut columns, 6, src_domains).map_err(invalid)?;
        append_json_list(&mut columns, 7, dst_domains).map_err(invalid)?;
        domain_bytes += src_domains.len() + dst_domains.len();
        if columns.len() >= batch_rows || domain_bytes >= BATCH_DOMAIN_BYTES {
            f(columns.finish())?;
            domain_bytes = 0;
        }
    }
    if !columns.is_empty() {
        f(columns.finish())?;
    }
    Ok(())
}

fn append_json_list(columns: &mut FlowColumns, column: usize, text: &str) -> Result<(), String> {
    let list = if column == 6 { columns.src_domains() } else { columns.dst_domains() };
    json_list::decode(text.as_bytes(), |name| list.values().append_value(name))
        .map_err(|e| format!("domain list {}", e.0))?;
    list.append(true);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{batch_from_flows, flows_from_batch};
    use crate::synthetic;
    use crate::test_util::TempDir;

    #[test]
    fn flows_round_trip_through_sqlite_in_time_order() {
        let dir = TempDir::new("hot");
        let mut hot = HotStore::open(&dir.path().join("flowsql.db")).expect("open");
        let mut flows = synthetic::edge_flows();
        // Insert out of order, more than one multi-row statement's worth.
        flows.reverse();
        let mut many: Vec<_> = (0..150).map(|i| synthetic::indexed_flow(1, i)).collect();
        many.extend(flows.iter().cloned());
        assert_eq!(hot.insert_flows(&batch_from_flows(&many)).expect("insert"), many.len());
        let back: Vec<_> = hot
            .flows_in_range(TimeRange::ALL, 100)
            .expect("read")
            .iter()
            .flat_map(|b| flows_from_batch(b).expect("valid"))
            .collect();
        let mut expected = many.clone();
        expected.sort_by_key(|f| f.timestamp_ns);
        let key = |f: &flowsql_event::FlowBegin| (f.timestamp_ns, f.cgroup_id, f.direction);
        let mut back_sorted = back.clone();
        back_sorted.sort_by_key(key);
        expected.sort_by_key(key);
        assert_eq!(back_sorted, expected);
        assert!(back.windows(2).all(|w| w[0].timestamp_ns <= w[1].timestamp_ns), "time order");
        // A range uses the index and is half-open.
        let t = synthetic::BASE_NS;
        let some = hot.flows_in_range(TimeRange::new(Some(t), Some(t + 2)), 10).expect("range");
        let some: Vec<_> = some.iter().flat_map(|b| flows_from_batch(b).expect("valid")).collect();
        assert!(some.iter().all(|f| f.timestamp_ns >= t && f.timestamp_ns < t + 2));
        assert_eq!(some.len(), many.iter().filter(|f| f.timestamp_ns >= t && f.timestamp_ns < t + 2).count());
        assert_eq!(hot.flow_count(TimeRange::ALL).expect("count"), many.len() as u64);
    }

    #[test]
    fn a_batch_ends_early_when_its_domain_names_reach_the_byte_bound() {
        let dir = TempDir::new("hotbytes");
        let mut hot = HotStore::open(&dir.path().join("flowsql.db")).expect("open");
        // A shared address: 32 long names on every flow, ~2.3 KB of JSON a row.
        let names: flowsql_event::DomainList = (0..32)
            .map(|i| {
                flowsql_event::DomainName::from(format!("{i:02}-{}.cdn.example", "x".repeat(50)).as_str())
            })
            .collect();
        let flows: Vec<_> = (0..1_000)
            .map(|i| flowsql_event::FlowBegin { dst_domains: names.clone(), ..synthetic::indexed_flow(1, i) })
            .collect();
        hot.insert_flows(&batch_from_flows(&flows)).expect("insert");
        let row_bytes = 2 + names.iter().map(|n| n.len() + 3).sum::<usize>() + 2;
        let batches = hot.flows_in_range(TimeRange::ALL, 8 * 1024).expect("read");
        assert!(batches.len() >= 2, "1,000 rows of {row_bytes} bytes in {} batch(es)", batches.len());
        for batch in &batches {
            assert!(
                batch.num_rows() * row_bytes < BATCH_DOMAIN_BYTES + row_bytes,
                "{} rows",
                batch.num_rows()
            );
        }
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), flows.len(), "no row lost at a cut");
    }

    #[test]
    fn sqlite_columns_are_the_event_columns_with_json_lists() {
        let dir = TempDir::new("hotcols");
        let mut hot = HotStore::open(&dir.path().join("flowsql.db")).expect("open");
        hot.insert_flows(&batch_from_flows(&synthetic::edge_flows())).expect("insert");
        let conn = hot.connection();
        let (dst_domains, cgroup, dir_text): (String, i64, String) = conn
            .query_row(
                "SELECT dstDomains, cgroupId, connectionDirection FROM flows WHERE srcIP = '2001:db8::7'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("row");
        assert_eq!(dst_domains, r#"["www.example.org","cdn.example.net","edge.example.net"]"#);
        assert_eq!(cgroup, -1, "u64::MAX keeps its bits");
        assert_eq!(dir_text, "incoming");
        let empty: String = conn
            .query_row("SELECT srcDomains FROM flows WHERE timestamp = 0", [], |r| r.get(0))
            .expect("row");
        assert_eq!(empty, "[]");
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT * FROM flows WHERE timestamp >= 1 AND timestamp < 2",
                [],
                |r| r.get(3),
            )
            .expect("plan");
        assert!(plan.contains("PRIMARY KEY (timestamp>? AND timestamp<?)"), "{plan}");
        let journal: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).expect("mode");
        assert_eq!(journal, "wal");
        let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).expect("sync");
        assert_eq!(sync, 1, "NORMAL");
    }

    #[test]
    fn lean_connections_map_nothing_and_cache_little() {
        let dir = TempDir::new("hotlean");
        let path = dir.path().join("flowsql.db");
        let pragmas = |hot: &HotStore| -> (i64, i64) {
            let conn = hot.connection();
            let mmap = conn.query_row("PRAGMA mmap_size", [], |r| r.get(0)).expect("mmap_size");
            let cache = conn.query_row("PRAGMA cache_size", [], |r| r.get(0)).expect("cache_size");
            (mmap, cache)
        };
        let fast = HotStore::open(&path).expect("open");
        assert_eq!(pragmas(&fast), (256 << 20, -32_000));
        let lean = HotStore::open_with(&path, MIGRATIONS, MemoryUse::Lean).expect("open lean");
        assert_eq!(pragmas(&lean), (0, -2_048));
    }

    #[test]
    fn a_failed_transaction_leaves_nothing() {
        let dir = TempDir::new("hotfail");
        let mut hot = HotStore::open(&dir.path().join("flowsql.db")).expect("open");
        let batch = batch_from_flows(&synthetic::edge_flows());
        let result: Result<(), StoreError> = hot.with_write_transaction(|tx, json| {
            insert_flows_in(tx, &batch, json)?;
            Err(StoreError::InvalidBatch("stop".into()))
        });
        assert!(result.is_err());
        assert_eq!(hot.flow_count(TimeRange::ALL).expect("count"), 0);
    }
}
