//! Domains: one row per (ip, name) the host resolved, with when it was first
//! and last seen and when its TTL runs out (DESIGN.md section 2).
//!
//! The Arrow schema is [`crate::domains_schema`]; the SQLite table comes
//! from `migrations/0002_domains.sql`: one row per (ip, name) and validity
//! period, see [`record_observations`] and the migration's comment.
//!
//! Writes go through the capture's store writer, in the same transactions
//! as flows: [`StoreWriter::run_in_write_transaction`](crate::StoreWriter::run_in_write_transaction)
//! with a job that upserts rows, or [`HotStore::with_write_transaction`] from
//! any other holder of a [`HotStore`]. Domains stay in the hot tier (they
//! are few); they are not exported to Parquet.

use std::sync::Arc;

use arrow::array::{ArrayBuilder, ArrayRef, StringBuilder, TimestampNanosecondBuilder};
use arrow::record_batch::RecordBatch;
use flowsql_event::{DomainObservation, canonical_ip};
use rusqlite::{Connection, params};

use crate::hot::HotStore;
use crate::schema::{UTC, domains_schema};
use crate::{StoreError, TimeRange};

/// Whether the `domains` table exists yet (its migration ships with DNS
/// capture).
pub fn has_domains_table(hot: &HotStore) -> Result<bool, StoreError> {
    hot.connection()
        .query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'domains'", [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| n > 0)
        .map_err(hot.err("look for the domains table"))
}

/// The domain rows seen during `range` (`lastSeen >= since` and
/// `firstSeen < until`), as batches of [`domains_schema`] of at most
/// `batch_rows` rows; none if the table does not exist yet.
pub fn domains_in_range(
    hot: &HotStore,
    range: TimeRange,
    batch_rows: usize,
) -> Result<Vec<RecordBatch>, StoreError> {
    if !has_domains_table(hot)? {
        return Ok(Vec::new());
    }
    let err = hot.err("read domains");
    let mut stmt = hot
        .connection()
        .prepare_cached(
            "SELECT ip, name, question, firstSeen, lastSeen, expiresAt FROM domains
             WHERE lastSeen >= ?1 AND firstSeen < ?2 ORDER BY firstSeen",
        )
        .map_err(err)?;
    let mut rows = stmt.query(params![range.start(), range.end()]).map_err(hot.err("read domains"))?;
    let batch_rows = batch_rows.max(1);
    let mut builders = DomainColumns::default();
    let mut batches = Vec::new();
    while let Some(row) = rows.next().map_err(hot.err("read domains"))? {
        let text = |i| row.get_ref(i).and_then(|v| Ok(v.as_str()?.to_owned()));
        let read = || -> rusqlite::Result<_> {
            Ok((
                text(0)?,
                text(1)?,
                text(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, i64>(5)?,
            ))
        };
        let (ip, name, question, first, last, expires) = read().map_err(hot.err("read domains"))?;
        builders.ip.append_value(ip);
        builders.name.append_value(name);
        builders.question.append_value(question);
        builders.first_seen.append_value(first);
        builders.last_seen.append_value(last);
        builders.expires_at.append_value(expires);
        if builders.ip.len() >= batch_rows {
            batches.push(builders.finish()?);
        }
    }
    if builders.ip.len() > 0 {
        batches.push(builders.finish()?);
    }
    Ok(batches)
}

/// Records what DNS answers taught, inside the caller's write transaction
/// `tx`: an observation inside a period still valid when it was seen extends
/// that period (`lastSeen`, and `expiresAt` if later); any other starts a new
/// period. Returns the number of observations recorded.
pub fn record_observations(tx: &Connection, observations: &[DomainObservation]) -> Result<usize, StoreError> {
    let err = |e| StoreError::sqlite("record domains", "flowsql.db", e);
    let mut extend = tx
        .prepare_cached(
            "UPDATE domains SET lastSeen = max(lastSeen, ?3), expiresAt = max(expiresAt, ?4)
             WHERE ip = ?1 AND name = ?2 AND firstSeen <= ?3 AND expiresAt >= ?3",
        )
        .map_err(err)?;
    let mut start = tx
        .prepare_cached(
            "INSERT INTO domains (ip, name, question, firstSeen, lastSeen, expiresAt)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5)
             ON CONFLICT (ip, name, firstSeen) DO UPDATE SET expiresAt = max(expiresAt, excluded.expiresAt)",
        )
        .map_err(err)?;
    let mut ip_text = String::new();
    for o in observations {
        use std::fmt::Write as _;
        ip_text.clear();
        let _ = write!(ip_text, "{}", canonical_ip(o.ip));
        let extended = extend.execute(params![ip_text, &*o.name, o.seen_ns, o.expires_ns]).map_err(err)?;
        if extended == 0 {
            start.execute(params![ip_text, &*o.name, &*o.question, o.seen_ns, o.expires_ns]).map_err(err)?;
        }
    }
    Ok(observations.len())
}

struct DomainColumns {
    ip: StringBuilder,
    name: StringBuilder,
    question: StringBuilder,
    first_seen: TimestampNanosecondBuilder,
    last_seen: TimestampNanosecondBuilder,
    expires_at: TimestampNanosecondBuilder,
}

impl Default for DomainColumns {
    fn default() -> Self {
        DomainColumns {
            ip: StringBuilder::new(),
            name: StringBuilder::new(),
            question: StringBuilder::new(),
            first_seen: TimestampNanosecondBuilder::new().with_timezone(UTC),
            last_seen: TimestampNanosecondBuilder::new().with_timezone(UTC),
            expires_at: TimestampNanosecondBuilder::new().with_timezone(UTC),
        }
    }
}

impl DomainColumns {
    fn finish(&mut self) -> Result<RecordBatch, StoreError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.ip.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.question.finish()),
            Arc::new(self.first_seen.finish()),
            Arc::new(self.last_seen.finish()),
            Arc::new(self.expires_at.finish()),
        ];
        RecordBatch::try_new(domains_schema(), columns).map_err(|e| StoreError::InvalidBatch(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;

    fn observation(ip: &str, name: &str, question: &str, seen: i64, expires: i64) -> DomainObservation {
        DomainObservation {
            ip: ip.parse().expect("ip"),
            name: name.into(),
            question: question.into(),
            seen_ns: seen,
            expires_ns: expires,
        }
    }

    fn rows(hot: &HotStore) -> Vec<(String, String, String, i64, i64, i64)> {
        let mut stmt = hot
            .connection()
            .prepare("SELECT ip, name, question, firstSeen, lastSeen, expiresAt FROM domains ORDER BY ip, name, firstSeen")
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    #[test]
    fn answers_extend_a_valid_period_and_start_a_new_one_after_it_ran_out() {
        let dir = TempDir::new("domains-periods");
        let mut hot = HotStore::open(&dir.path().join("flowsql.db")).expect("open");
        let learned = [
            observation("192.0.2.1", "a.test", "a.test", 100, 160),
            // Within the period: extends it.
            observation("192.0.2.1", "a.test", "a.test", 150, 210),
            // A shorter TTL later does not shorten what was promised.
            observation("192.0.2.1", "a.test", "a.test", 200, 205),
            // After expiry (210): a new period.
            observation("192.0.2.1", "a.test", "x.test", 300, 360),
            // IPv4-mapped IPv6 is stored as IPv4; another name of the address.
            observation("::ffff:192.0.2.1", "b.test", "a.test", 100, 400),
            // The same observation twice changes nothing.
            observation("2001:db8::1", "c.test", "c.test", 10, 20),
            observation("2001:db8::1", "c.test", "c.test", 10, 20),
        ];
        hot.with_write_transaction(|tx, _| record_observations(tx, &learned)).expect("record");
        assert_eq!(
            rows(&hot),
            vec![
                ("192.0.2.1".into(), "a.test".into(), "a.test".into(), 100, 200, 210),
                ("192.0.2.1".into(), "a.test".into(), "x.test".into(), 300, 300, 360),
                ("192.0.2.1".into(), "b.test".into(), "a.test".into(), 100, 100, 400),
                ("2001:db8::1".into(), "c.test".into(), "c.test".into(), 10, 10, 20),
            ]
        );
    }

    #[test]
    fn domains_read_back_as_arrow_once_the_table_exists() {
        let dir = TempDir::new("domains");
        let mut hot = HotStore::open(&dir.path().join("flowsql.db")).expect("open");
        assert!(domains_in_range(&hot, TimeRange::ALL, 10).expect("no table yet").is_empty());
        hot.with_write_transaction(|tx, _| {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS domains (ip TEXT NOT NULL, name TEXT NOT NULL, question TEXT NOT NULL,
                   firstSeen INTEGER NOT NULL, lastSeen INTEGER NOT NULL, expiresAt INTEGER NOT NULL,
                   PRIMARY KEY (ip, name));
                 INSERT INTO domains VALUES ('192.0.2.1', 'a.example', 'a.example', 10, 20, 30);
                 INSERT INTO domains VALUES ('192.0.2.2', 'b.example', 'c.example', 100, 200, 300);",
            )
            .map_err(|e| StoreError::sqlite("test", "x", e))
        })
        .expect("write");
        let batches = domains_in_range(&hot, TimeRange::new(Some(15), Some(50)), 10).expect("read");
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].schema(), domains_schema());
        assert_eq!(batches[0].num_rows(), 1);
    }
}
