//! The store's one error type.

use std::io;
use std::path::PathBuf;

use parquet::errors::ParquetError;

/// Everything that can go wrong in the store. Messages are lower case and
/// name the file or database involved; causes are chained as sources.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("{path} holds no flowsql data ({reason})")]
    NoStore { path: PathBuf, reason: &'static str },
    #[error("failed to {action} in database {path}")]
    Sqlite {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("migration {name} failed on database {path}")]
    Migration {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "database {path} has schema version {found}, newer than the {known} migrations this flowsql knows"
    )]
    SchemaTooNew { path: PathBuf, found: i64, known: usize },
    #[error(
        "database {path} has schema version {found}, older than the {known} migrations this flowsql knows; a read-only open cannot migrate it: run `flowsql export` (or a capture) on it once as its owner"
    )]
    SchemaTooOld { path: PathBuf, found: i64, known: usize },
    #[error("failed to write Parquet file {path}")]
    ParquetWrite {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
    #[error("failed to read Parquet file {path}")]
    ParquetRead {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
    #[error("Parquet file {path} is not what the manifest says: {reason}")]
    ParquetMismatch { path: PathBuf, reason: String },
    #[error("invalid {table} batch: {reason}")]
    InvalidBatch { table: &'static str, reason: String },
    #[error("invalid event table {table}: {reason}")]
    InvalidTable { table: String, reason: String },
    #[error("no event table named {0}")]
    UnknownTable(String),
    #[error("invalid row in table {table} of database {path}: {reason}")]
    InvalidRow { table: &'static str, path: PathBuf, reason: String },
    #[error("failed to {action} an Arrow IPC batch")]
    Ipc {
        action: &'static str,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("hot batch {seq} is unreadable")]
    CorruptBatch {
        seq: i64,
        #[source]
        source: Box<StoreError>,
    },
    #[error("hot batch {seq} vanished inside a read transaction")]
    MissingBatch { seq: i64 },
    #[error("the upgrade step of migration {name} failed")]
    MigrationStep {
        name: &'static str,
        #[source]
        source: Box<StoreError>,
    },
    #[error("export of {path} refused: {reason}")]
    ExportConflict { path: PathBuf, reason: String },
    #[error("export destination {path} is not empty")]
    DestinationNotEmpty { path: PathBuf },
    #[error("the {thread} thread stopped unexpectedly")]
    ThreadFailed { thread: &'static str },
    /// The export was asked to stop (the capture is stopping); the rows it
    /// had not committed stay hot.
    #[error("the export was interrupted: its remaining rows stay in the hot tier")]
    ExportInterrupted,
}

impl StoreError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io { action, path: path.into(), source }
    }

    pub(crate) fn sqlite(action: &'static str, path: impl Into<PathBuf>, source: rusqlite::Error) -> Self {
        StoreError::Sqlite { action, path: path.into(), source }
    }

    /// Whether waiting may clear the error: another connection holds a lock
    /// the operation needs (`SQLITE_BUSY` and its extended codes, such as
    /// `SQLITE_BUSY_RECOVERY` and `SQLITE_BUSY_SNAPSHOT`; `SQLITE_LOCKED`),
    /// or two connections raced for the WAL's locks (`SQLITE_PROTOCOL`).
    /// Not a full disk, a read-only or vanished directory, or corruption.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::MigrationStep { source, .. } | StoreError::CorruptBatch { source, .. } => {
                source.is_transient()
            }
            StoreError::Sqlite { source, .. } | StoreError::Migration { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::FileLockingProtocolFailed
                )
            ),
            _ => false,
        }
    }

    /// Whether the cause is a full disk (or quota): SQLite's `SQLITE_FULL`,
    /// or `ENOSPC`/`EDQUOT` from the file system.
    pub fn is_disk_full(&self) -> bool {
        fn io_full(e: &io::Error) -> bool {
            matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
        }
        match self {
            StoreError::Io { source, .. } => io_full(source),
            StoreError::Sqlite { source, .. } | StoreError::Migration { source, .. } => {
                source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
            }
            StoreError::ParquetWrite { source, .. } => match source {
                ParquetError::External(inner) => inner.downcast_ref::<io::Error>().is_some_and(io_full),
                other => other.to_string().contains("No space left"),
            },
            _ => false,
        }
    }
}
