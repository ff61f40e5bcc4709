//! The schema of `flowsql.db`: append-only SQL files in `migrations/`,
//! applied in order, in one transaction, on open. `PRAGMA user_version` is
//! the number of migrations applied, so applying twice is a no-op and an old
//! database is upgraded in place.
//!
//! To change the schema, add `migrations/NNNN_name.sql` and append it to
//! [`MIGRATIONS`]; never edit, remove or reorder a migration that shipped.
//! A step SQL cannot express (re-encoding rows) runs as Rust code right
//! after its file, in the same transaction.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// Rust code that completes a migration, inside its transaction.
pub type Step = fn(&Connection) -> Result<(), StoreError>;

/// One schema step.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The file name without `.sql`, e.g. `0001_hot_tier`.
    pub name: &'static str,
    pub sql: &'static str,
    /// Runs after `sql`, in the same transaction.
    pub then: Option<Step>,
}

/// Every migration, in order. Append here.
pub const MIGRATIONS: &[Migration] = &[
    Migration { name: "0001_hot_tier", sql: include_str!("../../migrations/0001_hot_tier.sql"), then: None },
    Migration { name: "0002_domains", sql: include_str!("../../migrations/0002_domains.sql"), then: None },
    Migration {
        name: "0003_batches",
        sql: include_str!("../../migrations/0003_batches.sql"),
        then: Some(crate::upgrade::move_rows_into_batches),
    },
    Migration { name: "0004_uploads", sql: include_str!("../../migrations/0004_uploads.sql"), then: None },
];

/// The schema version a database has (`PRAGMA user_version`).
pub fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Applies the migrations of `list` that `conn` lacks, all in one immediate
/// transaction; returns how many it applied. `path` names the database in
/// errors.
pub fn apply(conn: &mut Connection, list: &[Migration], path: &Path) -> Result<usize, StoreError> {
    let sqlite = |action, source| StoreError::sqlite(action, path, source);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sqlite("start the migration transaction", e))?;
    let version = schema_version(&tx).map_err(|e| sqlite("read the schema version", e))?;
    let applied = usize::try_from(version).unwrap_or(usize::MAX);
    if applied > list.len() {
        return Err(StoreError::SchemaTooNew { path: path.to_owned(), found: version, known: list.len() });
    }
    for migration in &list[applied..] {
        tracing::info!(migration = migration.name, database = %path.display(), "applying migration");
        tx.execute_batch(migration.sql).map_err(|source| StoreError::Migration {
            name: migration.name,
            path: path.to_owned(),
            source,
        })?;
        if let Some(step) = migration.then {
            step(&tx).map_err(|e| StoreError::MigrationStep { name: migration.name, source: Box::new(e) })?;
        }
    }
    let pending = list.len() - applied;
    if pending > 0 {
        tx.pragma_update(None, "user_version", list.len() as i64)
            .map_err(|e| sqlite("record the schema version", e))?;
    }
    tx.commit().map_err(|e| sqlite("commit the migrations", e))?;
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_names(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type IN ('table', 'index') ORDER BY name")
            .expect("prepare");
        stmt.query_map([], |row| row.get(0)).expect("query").map(|r| r.expect("row")).collect()
    }

    #[test]
    fn migration_names_match_the_files_in_order() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("migrations/ exists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let names: Vec<String> = MIGRATIONS.iter().map(|m| format!("{}.sql", m.name)).collect();
        assert_eq!(names, files, "every file in migrations/ is in MIGRATIONS, in order");
        for (i, migration) in MIGRATIONS.iter().enumerate() {
            assert!(
                migration.name.starts_with(&format!("{:04}_", i + 1)),
                "{} is number {}",
                migration.name,
                i + 1
            );
            assert!(
                migration.sql.trim_start().starts_with("--"),
                "{} starts with a comment saying why",
                migration.name
            );
        }
    }

    #[test]
    fn applying_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().expect("open");
        let path = Path::new(":memory:");
        assert_eq!(apply(&mut conn, MIGRATIONS, path).expect("first"), MIGRATIONS.len());
        let schema = table_names(&conn);
        assert!(
            schema.contains(&"batches".to_owned()) && schema.contains(&"exports".to_owned()),
            "{schema:?}"
        );
        assert!(!schema.contains(&"flows".to_owned()), "the row-per-flow table is gone: {schema:?}");
        assert_eq!(apply(&mut conn, MIGRATIONS, path).expect("second"), 0);
        assert_eq!(table_names(&conn), schema);
        assert_eq!(schema_version(&conn).expect("version"), MIGRATIONS.len() as i64);
    }

    #[test]
    fn an_old_database_is_upgraded_in_place_keeping_its_rows() {
        let dir = crate::test_util::TempDir::new("migrate");
        let path = dir.path().join("old.db");
        let later = Migration {
            name: "0099_test_later",
            sql: "-- a later step\nALTER TABLE batches ADD COLUMN note TEXT NOT NULL DEFAULT '';\n\
                  CREATE TABLE later (x INTEGER);",
            then: None,
        };
        {
            let mut conn = Connection::open(&path).expect("open");
            apply(&mut conn, &MIGRATIONS[..1], &path).expect("version 1");
            conn.execute(
                "INSERT INTO flows (timestamp, id, connectionDirection, srcIP, dstIP, srcPort, dstPort, hostName, cgroupId)
                 VALUES (1, 1, 'outgoing', '10.0.0.1', '10.0.0.2', 1, 2, 'h', 3)",
                [],
            )
            .expect("insert");
        }
        let mut list = MIGRATIONS.to_vec();
        list.push(later);
        let mut conn = Connection::open(&path).expect("reopen");
        assert_eq!(apply(&mut conn, &list, &path).expect("upgrade"), list.len() - 1);
        assert_eq!(schema_version(&conn).expect("version"), list.len() as i64);
        let (n, note): (i64, String) = conn
            .query_row("SELECT sum(rows), max(note) FROM batches WHERE tableName = 'flows'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("old rows kept");
        assert_eq!((n, note.as_str()), (1, ""));
        assert_eq!(apply(&mut conn, &list, &path).expect("again"), 0);
        // A database newer than this binary is refused, untouched.
        let err = apply(&mut conn, MIGRATIONS, &path).expect_err("too new");
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
    }

    #[test]
    fn a_failing_migration_leaves_the_database_as_it_was() {
        let mut conn = Connection::open_in_memory().expect("open");
        let path = Path::new(":memory:");
        let broken =
            Migration { name: "0002_broken", sql: "-- broken\nCREATE TABLE t (x); SELEKT 1;", then: None };
        let list = [MIGRATIONS[0], broken];
        let err = apply(&mut conn, &list, path).expect_err("fails");
        assert!(err.to_string().contains("0002_broken"), "{err}");
        assert_eq!(schema_version(&conn).expect("version"), 0);
        assert!(table_names(&conn).is_empty(), "nothing half-applied");
    }
}
