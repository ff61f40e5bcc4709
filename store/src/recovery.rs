//! Keeping the cold tier clean after crashes (the caller holds the export
//! lock).
//!
//! - A temporary (`.*.tmp`) is an export that never finished: deleted.
//! - A `*.parquet` file not in the manifest that carries this store's id in
//!   its footer was renamed by an export (or left by retention) that died
//!   before committing: its rows are still hot, so it is deleted.
//! - A `*.parquet` file without this store's id came from elsewhere (another
//!   host, or a database that was recreated): its rows are not in this hot
//!   tier, so it is adopted into the manifest.
//! - With `verify` (on open), every listed file's footer is checked against
//!   the manifest; a file that fails is moved to `quarantine/`, marked
//!   `quarantined` in the manifest, and reported by name; it is never read
//!   again. A listed file that vanished is marked `missing` and reported.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::statistics::Statistics;

use crate::cold::{self, ColdFile, STORE_ID_KEY};
use crate::database::Database;
use crate::dir::DataDir;
use crate::export::error_chain;
use crate::table::EventTable;
use crate::{StoreError, manifest};

/// What a recovery found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Unfinished temporaries, deleted.
    pub temporaries_removed: Vec<PathBuf>,
    /// This store's files that were not in the manifest, deleted.
    pub orphans_removed: Vec<PathBuf>,
    /// Files from elsewhere, added to the manifest.
    pub adopted: Vec<PathBuf>,
    /// Corrupt files moved to `quarantine/`, with the reason.
    pub quarantined: Vec<(PathBuf, String)>,
    /// Listed files that no longer exist.
    pub missing: Vec<PathBuf>,
}

impl RecoveryReport {
    /// Whether recovery found nothing to do.
    pub fn is_clean(&self) -> bool {
        self.temporaries_removed.is_empty()
            && self.orphans_removed.is_empty()
            && self.adopted.is_empty()
            && self.quarantined.is_empty()
            && self.missing.is_empty()
    }

    pub(crate) fn log(&self) {
        for path in &self.temporaries_removed {
            tracing::info!(file = %path.display(), "deleted an unfinished temporary export file");
        }
        for path in &self.orphans_removed {
            tracing::warn!(file = %path.display(), "deleted an export file that was never committed (its rows are still in the hot tier)");
        }
        for path in &self.adopted {
            tracing::warn!(file = %path.display(), "adopted a Parquet file written by another store");
        }
        for (path, reason) in &self.quarantined {
            tracing::error!(file = %path.display(), %reason, "corrupt Parquet file moved to quarantine; its rows are not queried");
        }
        for path in &self.missing {
            tracing::error!(file = %path.display(), "a Parquet file listed in the manifest is missing");
        }
    }
}

/// Cleans the cold tier of every table of `tables`; with `verify`, also
/// checks every listed file.
pub(crate) fn recover(
    dir: &DataDir,
    db: &mut Database,
    store_id: &str,
    tables: &[EventTable],
    verify: bool,
) -> Result<RecoveryReport, StoreError> {
    let mut report = RecoveryReport::default();
    let listed = manifest::all(db.conn()).map_err(db.err("read the manifest"))?;
    let mut on_disk = HashSet::new();
    let mut empty_dirs = Vec::new();
    for table in tables {
        let tree = walk(dir, table.name())?;
        empty_dirs.extend(tree.dirs);
        for relative in &tree.files {
            let path = dir.root().join(relative);
            let name = relative.rsplit('/').next().unwrap_or(relative);
            if name.starts_with('.') && name.ends_with(".tmp") {
                remove_file(&path)?;
                report.temporaries_removed.push(path);
                continue;
            }
            if !name.ends_with(".parquet") {
                continue;
            }
            on_disk.insert(relative.clone());
            match listed.get(relative) {
                Some(entry) if entry.complete => {
                    if verify && let Err(e) = cold::verify(table, &path, entry.rows, entry.bytes) {
                        quarantine(dir, db, relative, Some(entry.id), &error_chain(&e), &mut report)?;
                    }
                }
                Some(entry) => {
                    // Listed as quarantined or missing, and back in place
                    // (restored by hand): listed again if it is intact.
                    if cold::verify(table, &path, entry.rows, entry.bytes).is_ok() {
                        manifest::mark_complete(db.conn(), entry.id)
                            .map_err(db.err("restore a file in the manifest"))?;
                        tracing::warn!(file = %path.display(), "a file set aside earlier is back and intact: listed again");
                    }
                }
                None => match inspect(table, &path) {
                    Ok(facts) if facts.store_id.as_deref() == Some(store_id) => {
                        remove_file(&path)?;
                        report.orphans_removed.push(path);
                    }
                    Ok(facts) => adopt(dir, db, table, relative, &facts, &mut report)?,
                    Err(e) => quarantine(dir, db, relative, None, &error_chain(&e), &mut report)?,
                },
            }
        }
    }
    let known: HashSet<&str> = tables.iter().map(EventTable::name).collect();
    for (relative, entry) in &listed {
        let table = relative.split('/').next().unwrap_or_default();
        if entry.complete && known.contains(table) && !on_disk.contains(relative) {
            manifest::mark_missing(db.conn(), entry.id)
                .map_err(db.err("mark a missing file in the manifest"))?;
            report.missing.push(dir.root().join(relative));
        }
    }
    // Deepest first, so emptied parents can be removed after children.
    empty_dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for empty in &empty_dirs {
        // Only succeeds on empty directories.
        let _ = std::fs::remove_dir(empty);
    }
    Ok(report)
}

fn remove_file(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("remove", path, e)),
    }
}

fn adopt(
    dir: &DataDir,
    db: &mut Database,
    table: &EventTable,
    relative: &str,
    facts: &Facts,
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    let path = dir.root().join(relative);
    let parts: Vec<&str> = relative.split('/').collect();
    let partition = match parts.as_slice() {
        [_, date, hour, _] => cold::parse_partition(date, hour),
        _ => None,
    };
    let bytes = std::fs::metadata(&path).map_err(|e| StoreError::io("stat", &path, e))?.len();
    let Some(partition_start) = partition else {
        return quarantine(dir, db, relative, None, "not in a date=/hour= partition", report);
    };
    if let Err(e) = cold::verify(table, &path, facts.rows, bytes) {
        return quarantine(dir, db, relative, None, &error_chain(&e), report);
    }
    let file = ColdFile {
        path: path.clone(),
        relative: relative.to_owned(),
        partition_start,
        rows: facts.rows,
        bytes,
        min_timestamp: facts.min_ts,
        max_timestamp: facts.max_ts,
    };
    manifest::insert(db.conn(), table.name(), &file, crate::now_ns())
        .map_err(db.err("adopt a file into the manifest"))?;
    report.adopted.push(path);
    Ok(())
}

/// Moves a file to `quarantine/` and marks its manifest row, if any.
fn quarantine(
    dir: &DataDir,
    db: &mut Database,
    relative: &str,
    manifest_id: Option<i64>,
    reason: &str,
    report: &mut RecoveryReport,
) -> Result<(), StoreError> {
    let from = dir.root().join(relative);
    let quarantine = dir.quarantine_dir();
    cold::create_dir_all(&quarantine)?;
    let flat = relative.replace('/', "__");
    let mut to = quarantine.join(&flat);
    let mut n = 1;
    while to.exists() {
        to = quarantine.join(format!("{flat}.{n}"));
        n += 1;
    }
    std::fs::rename(&from, &to).map_err(|e| StoreError::io("move to quarantine", &from, e))?;
    if let Some(id) = manifest_id {
        manifest::mark_quarantined(db.conn(), id, &format!("moved to {}: {reason}", to.display()))
            .map_err(db.err("mark a quarantined file in the manifest"))?;
    }
    report.quarantined.push((from, reason.to_owned()));
    Ok(())
}

/// Files and directories under `<root>/<table>/`, files as paths relative to
/// the data directory.
struct Tree {
    files: Vec<String>,
    dirs: Vec<PathBuf>,
}

fn walk(dir: &DataDir, table: &str) -> Result<Tree, StoreError> {
    let mut tree = Tree { files: Vec::new(), dirs: Vec::new() };
    let root = dir.table_dir(table);
    let mut stack = vec![(root.clone(), table.to_owned())];
    while let Some((path, relative)) = stack.pop() {
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound && path == root => return Ok(tree),
            Err(e) => return Err(StoreError::io("list", &path, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("list", &path, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = format!("{relative}/{name}");
            let kind = entry.file_type().map_err(|e| StoreError::io("stat", entry.path(), e))?;
            if kind.is_dir() {
                tree.dirs.push(entry.path());
                stack.push((entry.path(), child_rel));
            } else {
                tree.files.push(child_rel);
            }
        }
    }
    Ok(tree)
}

/// What a Parquet file's footer says.
struct Facts {
    rows: u64,
    min_ts: i64,
    max_ts: i64,
    store_id: Option<String>,
}

fn inspect(table: &EventTable, path: &Path) -> Result<Facts, StoreError> {
    let read_err = |source| StoreError::ParquetRead { path: path.to_owned(), source };
    let mismatch =
        |reason: &str| StoreError::ParquetMismatch { path: path.to_owned(), reason: reason.to_owned() };
    let file = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
    let metadata = ParquetMetaDataReader::new().parse_and_finish(&file).map_err(read_err)?;
    let file_meta = metadata.file_metadata();
    let store_id = file_meta
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == STORE_ID_KEY))
        .and_then(|k| k.value.clone());
    let time = table.schema().field(table.time_column()).name();
    let column = file_meta
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == *time)
        .ok_or_else(|| mismatch("no time column"))?;
    let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
    for rg in metadata.row_groups() {
        match rg.column(column).statistics() {
            Some(Statistics::Int64(s)) if s.min_opt().is_some() && s.max_opt().is_some() => {
                min_ts = min_ts.min(*s.min_opt().unwrap_or(&i64::MAX));
                max_ts = max_ts.max(*s.max_opt().unwrap_or(&i64::MIN));
            }
            _ if rg.num_rows() == 0 => {}
            _ => return Err(mismatch("no timestamp statistics")),
        }
    }
    Ok(Facts { rows: file_meta.num_rows() as u64, min_ts, max_ts, store_id })
}
