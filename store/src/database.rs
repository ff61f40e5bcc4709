//! `flowsql.db`, the SQLite database of a data directory (WAL,
//! `synchronous=NORMAL`): opening it for writing (creating and migrating it)
//! or for reading only, and its transactions. What each table holds, and
//! its SQL, is in the module that owns the table: [`crate::hot`]
//! (`batches`), [`crate::manifest`] (`exports`), [`crate::domains`],
//! [`crate::stats`] (`capture_stats`) and [`crate::state`] (`store_state`).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::StoreError;
use crate::migrations::{self, MIGRATIONS, Migration};

/// Mode of a database file flowsql creates: owner read-write, group read.
pub const DB_FILE_MODE: u32 = 0o640;

/// How a connection spends memory on the database.
///
/// Mapped database pages count as the process's resident memory once
/// touched, and SQLite's page cache fills up to its limit on every
/// connection that reads much: in the capturing process, whose writer and
/// scheduled export touch every page of the hot tier, both would grow with
/// the database. Readers (queries, `flowsql export`, `flowsql status`) trade
/// that memory for speed.
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

/// Page size of a new database: large pages suit the hot tier's rows, each
/// a batch of tens to hundreds of KB.
const PAGE_SIZE: i64 = 32 * 1024;

/// How long a connection waits for another connection's write lock before
/// its statement fails with SQLITE_BUSY (the store writer sets a shorter
/// wait and retries on its own, see [`crate::writer`]).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// An open `flowsql.db`.
#[derive(Debug)]
pub struct Database {
    conn: Connection,
    path: PathBuf,
    read_only: bool,
}

impl Database {
    /// Opens (creating it with mode 0640 if needed) the database at `path`
    /// and brings its schema up to date with `list`.
    pub(crate) fn open(path: &Path, list: &[Migration], memory: MemoryUse) -> Result<Self, StoreError> {
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
            // Only takes effect on a new database (before the first table).
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
        Ok(Database { conn, path: path.to_owned(), read_only: false })
    }

    /// Opens an existing database for reading only: nothing is created,
    /// migrated or written (`SQLITE_OPEN_READONLY` and `PRAGMA query_only`),
    /// so read access to the data directory and its files is all it needs.
    ///
    /// A WAL database needs its `-wal` and `-shm` files to be read: they
    /// exist while a writer has it open, and stay after (writers keep them,
    /// see [`open`](Self::open)); a reader that cannot write the `-shm`
    /// reads it as it is, or, when no writer has it open, builds its index
    /// of the WAL in its own memory. Only a database whose last writer
    /// removed them (an older flowsql, another SQLite tool) is opened
    /// `immutable`: nobody has it open, and every commit is in the database
    /// file.
    pub(crate) fn open_read_only(path: &Path, memory: MemoryUse) -> Result<Self, StoreError> {
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
        Ok(Database { conn, path: path.to_owned(), read_only: true })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// An error of `action` on this database.
    pub(crate) fn err(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |e| StoreError::sqlite(action, &self.path, e)
    }

    /// How long a statement waits for another connection's write lock.
    pub(crate) fn set_busy_timeout(&self, wait: Duration) -> Result<(), StoreError> {
        self.conn.busy_timeout(wait).map_err(self.err("configure the busy timeout"))
    }

    /// Runs `f` in one immediate write transaction, committed if `f`
    /// succeeds and rolled back otherwise.
    pub(crate) fn write<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sqlite("start a write transaction", &self.path, e))?;
        let value = f(&tx)?;
        tx.commit().map_err(|e| StoreError::sqlite("commit", &self.path, e))?;
        Ok(value)
    }

    /// Runs `f` inside one read transaction: everything it reads comes
    /// from one snapshot of the database.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.conn.execute_batch("BEGIN DEFERRED").map_err(self.err("start a read"))?;
        let result = f(&self.conn);
        // A read transaction has nothing to keep: end it either way.
        let _ = self.conn.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" });
        result
    }

    /// Copies the WAL into the database file and syncs it: after this,
    /// every committed row survives a power loss, not only a crash.
    pub(crate) fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(self.err("checkpoint the WAL"))
    }

    /// `PRAGMA data_version`: moves whenever another connection commits.
    pub(crate) fn data_version(&self) -> Result<i64, StoreError> {
        self.conn
            .pragma_query_value(None, "data_version", |row| row.get(0))
            .map_err(self.err("read data_version"))
    }

    /// Bytes of `flowsql.db` with its WAL and shared-memory files.
    pub(crate) fn bytes_on_disk(&self) -> u64 {
        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut total = len(&self.path);
        for suffix in ["-wal", "-shm"] {
            let mut with_suffix = self.path.clone().into_os_string();
            with_suffix.push(suffix);
            total += len(Path::new(&with_suffix));
        }
        total
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;

    #[test]
    fn wal_and_normal_sync() {
        let dir = TempDir::new("db");
        let db = Database::open(&dir.path().join("flowsql.db"), MIGRATIONS, MemoryUse::Fast).expect("open");
        let journal: String = db.conn().query_row("PRAGMA journal_mode", [], |r| r.get(0)).expect("mode");
        assert_eq!(journal, "wal");
        let sync: i64 = db.conn().query_row("PRAGMA synchronous", [], |r| r.get(0)).expect("sync");
        assert_eq!(sync, 1, "NORMAL");
    }

    #[test]
    fn lean_connections_map_nothing_and_cache_little() {
        let dir = TempDir::new("dblean");
        let path = dir.path().join("flowsql.db");
        let pragmas = |db: &Database| -> (i64, i64) {
            let conn = db.conn();
            let mmap = conn.query_row("PRAGMA mmap_size", [], |r| r.get(0)).expect("mmap_size");
            let cache = conn.query_row("PRAGMA cache_size", [], |r| r.get(0)).expect("cache_size");
            (mmap, cache)
        };
        let fast = Database::open(&path, MIGRATIONS, MemoryUse::Fast).expect("open");
        assert_eq!(pragmas(&fast), (256 << 20, -32_000));
        let lean = Database::open(&path, MIGRATIONS, MemoryUse::Lean).expect("open lean");
        assert_eq!(pragmas(&lean), (0, -2_048));
    }
}
