//! Small facts about the store itself, in the `store_state` table of
//! `flowsql.db` (migrations/0001): its identity and how the last export
//! went. This module owns that table's SQL.

use rusqlite::{Connection, OptionalExtension as _};

/// The key of the store's identity (see [`crate::Store::store_id`]).
pub(crate) const STORE_ID: &str = "storeId";
/// The key of the last export run's outcome (JSON, see [`LastExport`]).
pub(crate) const LAST_EXPORT: &str = "lastExport";

/// The value of `key`, if set.
pub(crate) fn get(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT value FROM store_state WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

/// Sets `key` to `value`.
pub(crate) fn set(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO store_state (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])
    .map(|_| ())
}

/// Sets `key` to `value` unless it is set already.
pub(crate) fn set_if_absent(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute("INSERT OR IGNORE INTO store_state (key, value) VALUES (?1, ?2)", [key, value]).map(|_| ())
}

/// The last export run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastExport {
    pub at_ns: i64,
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl LastExport {
    pub(crate) fn to_json(&self) -> String {
        match &self.error {
            None => serde_json::json!({
                "at": self.at_ns, "files": self.files, "rows": self.rows, "bytes": self.bytes
            })
            .to_string(),
            Some(error) => serde_json::json!({ "at": self.at_ns, "error": error }).to_string(),
        }
    }

    pub(crate) fn from_json(text: &str) -> Option<LastExport> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        let int = |key: &str| value.get(key).and_then(serde_json::Value::as_i64).unwrap_or(0);
        Some(LastExport {
            at_ns: int("at"),
            files: int("files") as u64,
            rows: int("rows") as u64,
            bytes: int("bytes") as u64,
            error: value.get("error").and_then(|e| e.as_str()).map(str::to_owned),
        })
    }
}
