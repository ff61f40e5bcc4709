//! A consistent read of one event table, for queries: the cold files and
//! the hot batches of a time range as of one instant, each row in exactly
//! one of them.
//!
//! A snapshot holds a read transaction on a connection of its own for as
//! long as it lives: it lists the manifest's files and the hot batches in
//! that transaction, and reads the batches' data later, lazily, in the same
//! one. An export moves rows from hot to cold in one transaction (batches
//! removed, file listed), so whatever runs meanwhile, the snapshot sees
//! either the batches or the file, never both, never neither; and a batch it
//! listed is still there when it reads it.

use std::sync::{Arc, Mutex, PoisonError};

use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::cold::ColdFile;
use crate::database::{Database, MemoryUse};
use crate::dir::DataDir;
use crate::hot::{self, BatchMeta};
use crate::table::EventTable;
use crate::{StoreError, TimeRange, ipc, manifest};

/// See the module documentation.
#[derive(Debug)]
pub struct TableSnapshot {
    cold: Vec<ColdFile>,
    hot: Vec<BatchMeta>,
    reader: Arc<HotReader>,
}

impl TableSnapshot {
    /// Opens a connection, starts its read transaction and lists what
    /// `table` holds in `range`.
    pub(crate) fn take(dir: &DataDir, table: &EventTable, range: TimeRange) -> Result<Self, StoreError> {
        let db = Database::open_read_only(&dir.db_path(), MemoryUse::Fast)?;
        db.conn().execute_batch("BEGIN DEFERRED").map_err(db.err("start a read"))?;
        // The first read fixes the transaction's snapshot.
        let listed = (|| {
            let cold = manifest::complete_files(db.conn(), dir.root(), table.name(), range)
                .map_err(db.err("list cold files"))?;
            let hot = hot::list(db.conn(), table.name(), range).map_err(db.err("list hot batches"))?;
            Ok::<_, StoreError>((cold, hot))
        })();
        let reader = Arc::new(HotReader { db: Mutex::new(db), table: table.clone() });
        let (cold, hot) = listed?;
        Ok(TableSnapshot { cold, hot, reader })
    }

    /// The complete cold files that may hold rows of the range, oldest first.
    pub fn cold_files(&self) -> &[ColdFile] {
        &self.cold
    }

    /// The hot batches whose time span overlaps the range, oldest first.
    pub fn hot_batches(&self) -> &[BatchMeta] {
        &self.hot
    }

    /// Reads the hot batches (shareable between threads; keeps the
    /// snapshot's transaction open while any clone lives).
    pub fn reader(&self) -> Arc<HotReader> {
        Arc::clone(&self.reader)
    }
}

/// Reads the hot batches of a [`TableSnapshot`], inside its transaction.
#[derive(Debug)]
pub struct HotReader {
    db: Mutex<Database>,
    table: EventTable,
}

impl HotReader {
    /// Batch `meta` in the table's logical schema; with `columns`
    /// (positions in the table's schema), only those, in that order, and
    /// only they are decompressed and decoded.
    pub fn read(&self, meta: &BatchMeta, columns: Option<&[usize]>) -> Result<RecordBatch, StoreError> {
        let schema =
            match columns {
                None => Arc::clone(self.table.schema()),
                Some(columns) => Arc::new(self.table.schema().project(columns).map_err(|e| {
                    StoreError::InvalidBatch { table: self.table.name(), reason: e.to_string() }
                })?),
            };
        self.read_as(meta, columns, &schema)
    }

    /// [`read`](Self::read) into `schema`: the columns at `columns` (all
    /// with `None`), in that order, in `schema`'s types (such as string
    /// views, made straight from the stored dictionaries).
    pub fn read_as(
        &self,
        meta: &BatchMeta,
        columns: Option<&[usize]>,
        schema: &arrow::datatypes::SchemaRef,
    ) -> Result<RecordBatch, StoreError> {
        if let Some(columns) = columns
            && columns.is_empty()
        {
            // count(*): the number of rows is all that is asked.
            let schema = Arc::new(arrow::datatypes::Schema::empty());
            let options = RecordBatchOptions::new().with_row_count(Some(meta.rows as usize));
            return RecordBatch::try_new_with_options(schema, Vec::new(), &options)
                .map_err(|e| StoreError::InvalidBatch { table: self.table.name(), reason: e.to_string() });
        }
        let bytes = self.bytes(meta.seq)?;
        let corrupt = |e| StoreError::CorruptBatch { seq: meta.seq, source: Box::new(e) };
        let stored = match columns {
            None => ipc::decode(&bytes, None).map_err(corrupt)?,
            Some(columns) => {
                let logical = self.table.schema();
                let names: Vec<&str> = columns.iter().map(|&i| logical.field(i).name().as_str()).collect();
                ipc::decode_columns(&bytes, &names).map_err(corrupt)?
            }
        };
        crate::table::conform_to(self.table.name(), schema, &stored)
    }

    /// The stored bytes of batch `seq` (copied out, so that decoding holds
    /// no lock).
    fn bytes(&self, seq: i64) -> Result<Vec<u8>, StoreError> {
        let db = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = hot::read_bytes(db.conn(), seq).map_err(db.err("read a hot batch"))?;
        // Listed in this transaction, so still there: anything else is a
        // broken database.
        bytes.ok_or(StoreError::MissingBatch { seq })
    }
}

impl Drop for HotReader {
    fn drop(&mut self) {
        let db = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = db.conn().execute_batch("COMMIT");
    }
}
