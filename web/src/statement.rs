//! What the SQL view may run, and how long and how much.
//!
//! Only reads: `SELECT` (and `WITH`, `VALUES`), `EXPLAIN` of a read,
//! `SHOW` and `DESCRIBE`. Anything else, `COPY` (writes files), `CREATE
//! EXTERNAL TABLE` (reads any file), `SET`, `CREATE`, `INSERT`, is refused
//! before it is planned, naming the statement. The plan is checked again
//! with DataFusion's own switches (no DDL, no DML, no statements), so a read
//! that turns out to write (`SELECT ... INTO`) is refused too. One
//! statement per request; each runs under a time limit and a row limit, and
//! a result over the row limit is refused, not cut.

use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::context::SQLOptions;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use flowsql_query::{QueryError, Session};
use futures::StreamExt;
use serde::Serialize;

/// How long and how much a statement may run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rows a result may have at most.
    pub max_rows: usize,
    /// Time a statement may take at most, planning included.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_rows: 10_000, timeout: Duration::from_secs(30) }
    }
}

/// Why a statement gave no result, as the SQL view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum SqlError {
    #[error("{message}")]
    Syntax {
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        line: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        column: Option<u64>,
    },
    #[error("{message}")]
    Refused { message: String },
    #[error("{message}")]
    TooManyRows { message: String, limit: usize },
    #[error("{message}")]
    TimedOut { message: String },
    #[error("{message}")]
    Failed {
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        line: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        column: Option<u64>,
    },
}

impl SqlError {
    fn refused(message: impl Into<String>) -> Self {
        SqlError::Refused { message: message.into() }
    }

    /// The first line of the message (DataFusion adds candidate lists
    /// below it), with the position the parser or the planner found.
    fn from_query(error: QueryError) -> Self {
        let text = error.to_string();
        let message = text.lines().next().unwrap_or_default().trim_end().to_owned();
        let (mut line, mut column) = position(&message);
        if let QueryError::Sql(inner) = &error
            && line.is_none()
            && let Some(span) = inner.diagnostic().and_then(|d| d.span)
        {
            (line, column) = (Some(span.start.line), Some(span.start.column));
        }
        match error {
            QueryError::Syntax(_) => SqlError::Syntax { message, line, column },
            _ => SqlError::Failed { message, line, column },
        }
    }
}

/// `Line: 1, Column: 24` in a parser or planner message.
pub fn position(message: &str) -> (Option<u64>, Option<u64>) {
    let number_after = |label: &str| -> Option<u64> {
        let start = message.rfind(label)? + label.len();
        let digits: String = message[start..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    (number_after("Line: "), number_after("Column: "))
}

const READS: &str = "only reads run here (SELECT, EXPLAIN, SHOW, DESCRIBE)";

/// Refuses every statement that is not a read.
pub fn check_read_only(statement: &Statement) -> Result<(), SqlError> {
    match statement {
        Statement::Statement(inner) => check_sql(inner),
        Statement::Explain(explain) => check_read_only(&explain.statement),
        Statement::CopyTo(_) => Err(SqlError::refused(format!("COPY is refused: it writes files; {READS}"))),
        Statement::CreateExternalTable(_) => {
            Err(SqlError::refused(format!("CREATE EXTERNAL TABLE is refused: it reads files; {READS}")))
        }
        Statement::Reset(_) => {
            Err(SqlError::refused(format!("RESET is refused: it changes settings; {READS}")))
        }
    }
}

fn check_sql(statement: &SqlStatement) -> Result<(), SqlError> {
    match statement {
        SqlStatement::Query(_)
        | SqlStatement::ShowTables { .. }
        | SqlStatement::ShowColumns { .. }
        | SqlStatement::ShowVariable { .. }
        | SqlStatement::ShowFunctions { .. }
        | SqlStatement::ExplainTable { .. } => Ok(()),
        SqlStatement::Explain { statement, .. } => check_sql(statement),
        SqlStatement::Set(_) => {
            Err(SqlError::refused(format!("SET is refused: it changes settings; {READS}")))
        }
        other => {
            let text = other.to_string();
            let verb: String = text.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            Err(SqlError::refused(format!("{verb} ... is refused: {READS}")))
        }
    }
}

/// DataFusion's own check of a plan: no DDL, no DML (`COPY`, `INSERT`), no
/// statements (`SET`, transactions).
pub fn read_only_options() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// A result that fits the limits.
#[derive(Debug)]
pub struct Answer {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    pub elapsed: Duration,
}

/// Runs the one read statement of `sql` within `limits`.
pub async fn run_read_only(session: &Session, sql: &str, limits: Limits) -> Result<Answer, SqlError> {
    let started = std::time::Instant::now();
    let mut statements = session.parse(sql).map_err(SqlError::from_query)?;
    let statement = match (statements.pop(), statements.is_empty()) {
        (Some(statement), true) => statement,
        (None, _) => return Err(SqlError::refused("there is no statement to run")),
        (Some(_), false) => return Err(SqlError::refused("run one statement at a time")),
    };
    check_read_only(&statement)?;
    let run = async {
        let mut stream =
            session.execute_with(statement, &read_only_options()).await.map_err(SqlError::from_query)?;
        let schema = stream.schema();
        let mut batches = Vec::new();
        let mut rows = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| SqlError::from_query(e.into()))?;
            rows += batch.num_rows();
            if rows > limits.max_rows {
                return Err(SqlError::TooManyRows {
                    message: format!(
                        "the result has more than {} rows, the limit here: add a LIMIT, or aggregate",
                        limits.max_rows
                    ),
                    limit: limits.max_rows,
                });
            }
            batches.push(batch);
        }
        Ok((schema, batches, rows))
    };
    match tokio::time::timeout(limits.timeout, run).await {
        Ok(Ok((schema, batches, rows))) => Ok(Answer { schema, batches, rows, elapsed: started.elapsed() }),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(SqlError::TimedOut {
            message: format!(
                "the statement ran longer than {} s, the limit here, and was stopped",
                limits.timeout.as_secs_f64()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::parser::DFParser;

    use super::*;

    fn check(sql: &str) -> Result<(), SqlError> {
        let mut statements = DFParser::parse_sql(sql).expect("parses");
        check_read_only(&statements.pop_front().expect("one statement"))
    }

    #[test]
    fn reads_pass() {
        for sql in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "VALUES (1)",
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE SELECT 1",
            "SHOW TABLES",
            "SHOW COLUMNS FROM flows",
            "SHOW datafusion.execution.batch_size",
            "DESCRIBE flows",
        ] {
            assert_eq!(check(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn everything_else_is_refused_by_name() {
        for (sql, said) in [
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY is refused: it writes files"),
            ("COPY flows TO '/tmp/x.parquet'", "COPY is refused"),
            ("EXPLAIN COPY (SELECT 1) TO '/tmp/x.csv'", "COPY is refused"),
            (
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
                "CREATE EXTERNAL TABLE is refused",
            ),
            ("SET datafusion.execution.batch_size = 1", "SET is refused"),
            ("CREATE TABLE t AS SELECT 1", "CREATE TABLE ... is refused"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW ... is refused"),
            ("INSERT INTO flows VALUES (1)", "INSERT INTO ... is refused"),
            ("DROP TABLE flows", "DROP TABLE ... is refused"),
            ("EXPLAIN DROP TABLE flows", "DROP TABLE ... is refused"),
        ] {
            match check(sql) {
                Err(SqlError::Refused { message }) => assert!(message.contains(said), "{sql}: {message}"),
                other => panic!("{sql}: {other:?}"),
            }
        }
    }

    #[test]
    fn positions_come_from_the_message() {
        assert_eq!(position("table 'x' not found at Line: 1, Column: 24"), (Some(1), Some(24)));
        assert_eq!(position("no position"), (None, None));
    }
}
