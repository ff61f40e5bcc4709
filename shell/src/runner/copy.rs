//! `COPY ... TO 'FILE.csv'` as flowsql prints CSV.
//!
//! DataFusion's CSV writer refuses list columns (`dstDomains`) and writes
//! times its own way. A COPY to one CSV file is therefore run here: the
//! query's rows go through the same printer as `.mode csv` and
//! `--format csv` (lists and structs as JSON in one field, times in
//! RFC 3339, NULL as an empty field), so the three agree. Other COPYs
//! (Parquet, JSON, partitioned, to a directory, options beyond the header)
//! are DataFusion's.

use std::sync::Arc;

use anyhow::Context as _;
use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::sql::parser::{CopyToSource, Statement};
use datafusion::sql::sqlparser::ast::{Statement as SqlStatement, Value};

/// A COPY this module runs.
#[derive(Debug)]
pub struct CsvCopy {
    /// The rows to write: a query, or `SELECT * FROM` a table.
    pub source: CopySource,
    /// The file.
    pub target: String,
    /// A header row (`OPTIONS ('format.has_header' 'false')` leaves it out).
    pub header: bool,
}

/// What a COPY copies.
#[derive(Debug)]
pub enum CopySource {
    Query(Statement),
    /// A table's name, as SQL.
    Table(String),
}

/// The COPY of `statement` when it writes one CSV file that flowsql
/// writes itself (see the module documentation).
pub fn csv_target(statement: &Statement) -> Option<CsvCopy> {
    let Statement::CopyTo(copy) = statement else { return None };
    let by_extension = std::path::Path::new(&copy.target)
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("csv"));
    let csv = match &copy.stored_as {
        Some(format) => format.eq_ignore_ascii_case("csv") && by_extension,
        None => by_extension,
    };
    if !csv || !copy.partitioned_by.is_empty() || copy.target.contains("://") {
        return None;
    }
    let mut header = true;
    for (key, value) in &copy.options {
        match key.to_ascii_lowercase().as_str() {
            "format.has_header" | "has_header" | "header" => header = option_true(value)?,
            _ => return None,
        }
    }
    let source = match &copy.source {
        CopyToSource::Query(query) => {
            CopySource::Query(Statement::Statement(Box::new(SqlStatement::Query(query.clone()))))
        }
        CopyToSource::Relation(name) => CopySource::Table(name.to_string()),
    };
    Some(CsvCopy { source, target: copy.target.clone(), header })
}

/// `'true'`, `true`, `'false'`, `false`; anything else is DataFusion's to judge.
fn option_true(value: &Value) -> Option<bool> {
    let text = match value {
        Value::SingleQuotedString(text) | Value::DoubleQuotedString(text) => text.as_str(),
        Value::Boolean(on) => return Some(*on),
        _ => return None,
    };
    match text.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// What a COPY answers, as DataFusion's does: one row, `count`.
pub fn count_batch(rows: u64) -> anyhow::Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![Field::new("count", DataType::UInt64, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(UInt64Array::from(vec![rows]))])
        .context("cannot build the result")
}
