//! Domains: one row per (ip, name) the host resolved and validity period,
//! with when it was first and last seen and when its TTL runs out
//! (docs/architecture.md, "Domains"). This module owns the `domains` table
//! of `flowsql.db` (migrations/0002; see its comment for why a row is a
//! period).
//!
//! Writes go through the capture's store writer, in the same transactions
//! as the event batches ([`crate::StoreWriter::record_domains`]). Domains
//! stay in SQLite (they are few); they are not exported to Parquet.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{ArrayBuilder, ArrayRef, StringBuilder, TimestampNanosecondBuilder};
use arrow::record_batch::RecordBatch;
use flowsql_event::{DomainName, DomainObservation, canonical_ip};
use rusqlite::{Connection, params};

use crate::schema::{UTC, domains_schema};
use crate::{StoreError, TimeRange};

fn sqlite<'a>(action: &'static str, conn: &'a Connection) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
    move |e| StoreError::sqlite(action, conn.path().unwrap_or("flowsql.db"), e)
}

/// The domain rows seen during `range` (`lastSeen >= since` and
/// `firstSeen < until`), as batches of [`domains_schema`] of at most
/// `batch_rows` rows.
pub(crate) fn in_range(
    conn: &Connection,
    range: TimeRange,
    batch_rows: usize,
) -> Result<Vec<RecordBatch>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT ip, name, question, firstSeen, lastSeen, expiresAt FROM domains
             WHERE lastSeen >= ?1 AND firstSeen < ?2 ORDER BY firstSeen",
        )
        .map_err(sqlite("read domains", conn))?;
    let mut rows = stmt.query(params![range.start(), range.end()]).map_err(sqlite("read domains", conn))?;
    let batch_rows = batch_rows.max(1);
    let mut builders = DomainColumns::default();
    let mut batches = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite("read domains", conn))? {
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
        let (ip, name, question, first, last, expires) = read().map_err(sqlite("read domains", conn))?;
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

/// What the domain rows still valid at `now_ns` say: one observation per
/// (ip, name) whose period has not run out (`expiresAt > now`), as first
/// seen in its period and expiring when its TTL does. A restarted capture
/// teaches them to its name cache, so that names learned before the
/// restart keep naming flows while they are valid.
pub(crate) fn valid_at(conn: &Connection, now_ns: i64) -> Result<Vec<DomainObservation>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT ip, name, question, firstSeen, expiresAt FROM domains
             WHERE expiresAt > ?1 AND firstSeen <= ?1 ORDER BY ip, firstSeen, rowid",
        )
        .map_err(sqlite("read valid domains", conn))?;
    let rows = stmt
        .query_map([now_ns], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get(3)?, r.get(4)?))
        })
        .map_err(sqlite("read valid domains", conn))?;
    let mut observations = Vec::new();
    for row in rows {
        let (ip, name, question, seen_ns, expires_ns) = row.map_err(sqlite("read valid domains", conn))?;
        // A row this flowsql did not write (hand-edited) is skipped, not fatal.
        let Ok(ip) = ip.parse() else { continue };
        observations.push(DomainObservation {
            ip,
            name: DomainName::from(name.as_str()),
            question: DomainName::from(question.as_str()),
            seen_ns,
            expires_ns,
        });
    }
    Ok(observations)
}

/// Records what DNS answers taught, inside the caller's write transaction:
/// an observation inside a period still valid when it was seen extends that
/// period (`lastSeen`, and `expiresAt` if later); any other starts a new
/// period. Returns the number of observations recorded.
pub(crate) fn record(conn: &Connection, observations: &[DomainObservation]) -> Result<usize, StoreError> {
    let mut extend = conn
        .prepare_cached(
            "UPDATE domains SET lastSeen = max(lastSeen, ?3), expiresAt = max(expiresAt, ?4)
             WHERE ip = ?1 AND name = ?2 AND firstSeen <= ?3 AND expiresAt >= ?3",
        )
        .map_err(sqlite("record domains", conn))?;
    let mut start = conn
        .prepare_cached(
            "INSERT INTO domains (ip, name, question, firstSeen, lastSeen, expiresAt)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5)
             ON CONFLICT (ip, name, firstSeen) DO UPDATE SET expiresAt = max(expiresAt, excluded.expiresAt)",
        )
        .map_err(sqlite("record domains", conn))?;
    let mut ip_text = String::new();
    for o in observations {
        ip_text.clear();
        let _ = write!(ip_text, "{}", canonical_ip(o.ip));
        let extended = extend
            .execute(params![ip_text, &*o.name, o.seen_ns, o.expires_ns])
            .map_err(sqlite("record domains", conn))?;
        if extended == 0 {
            start
                .execute(params![ip_text, &*o.name, &*o.question, o.seen_ns, o.expires_ns])
                .map_err(sqlite("record domains", conn))?;
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
        RecordBatch::try_new(domains_schema(), columns)
            .map_err(|e| StoreError::InvalidBatch { table: "domains", reason: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::{Database, MemoryUse};
    use crate::migrations::MIGRATIONS;
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

    fn rows(db: &Database) -> Vec<(String, String, String, i64, i64, i64)> {
        let mut stmt = db
            .conn()
            .prepare("SELECT ip, name, question, firstSeen, lastSeen, expiresAt FROM domains ORDER BY ip, name, firstSeen")
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    fn open(dir: &TempDir) -> Database {
        Database::open(&dir.path().join("flowsql.db"), MIGRATIONS, MemoryUse::Fast).expect("open")
    }

    #[test]
    fn answers_extend_a_valid_period_and_start_a_new_one_after_it_ran_out() {
        let dir = TempDir::new("domains-periods");
        let mut db = open(&dir);
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
        db.write(|tx| record(tx, &learned)).expect("record");
        assert_eq!(
            rows(&db),
            vec![
                ("192.0.2.1".into(), "a.test".into(), "a.test".into(), 100, 200, 210),
                ("192.0.2.1".into(), "a.test".into(), "x.test".into(), 300, 300, 360),
                ("192.0.2.1".into(), "b.test".into(), "a.test".into(), 100, 100, 400),
                ("2001:db8::1".into(), "c.test".into(), "c.test".into(), 10, 10, 20),
            ]
        );
        // At 350: the second period of a.test and b.test are valid; c.test ran out.
        let valid = valid_at(db.conn(), 350).expect("valid");
        let names: Vec<_> =
            valid.iter().map(|o| (o.ip.to_string(), o.name.to_string(), o.expires_ns)).collect();
        assert_eq!(
            names,
            [("192.0.2.1".into(), "b.test".into(), 400), ("192.0.2.1".into(), "a.test".into(), 360)]
        );
    }

    #[test]
    fn domains_read_back_as_arrow() {
        let dir = TempDir::new("domains");
        let mut db = open(&dir);
        assert!(in_range(db.conn(), TimeRange::ALL, 10).expect("empty").is_empty());
        db.write(|tx| {
            record(
                tx,
                &[
                    observation("192.0.2.1", "a.example", "a.example", 10, 30),
                    observation("192.0.2.2", "b.example", "c.example", 100, 300),
                ],
            )
        })
        .expect("write");
        let batches = in_range(db.conn(), TimeRange::new(Some(5), Some(50)), 10).expect("read");
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].schema(), domains_schema());
        assert_eq!(batches[0].num_rows(), 1);
    }
}
