//! Printing query results in the output modes of `flowsql shell` and
//! `flowsql query`: `table`, `box`, `markdown`, `csv`, `json`, `ndjson` and
//! `line`.
//!
//! Every printer writes to any [`io::Write`] one batch at a time, so a result
//! streams from DataFusion to the terminal or a file without being collected
//! (the table printer keeps a bounded chunk of rows to size its columns).
//!
//! How values look, by mode:
//!
//! | value      | table, line                  | csv                     | json, ndjson          |
//! |------------|------------------------------|-------------------------|-----------------------|
//! | NULL       | `NULL`                       | empty field             | `null`                |
//! | string     | escaped for the terminal     | as is, quoted as needed | JSON string           |
//! | list       | `[a.test, b.test]`           | JSON array in one field | JSON array            |
//! | timestamp  | `2026-11-28T07:10:00.123456789Z` (RFC 3339, UTC, nanoseconds, in every mode) |||
//!
//! Table and line modes are for people at a terminal: strings pass through
//! [`terminal::escape`], so a hostile DNS name cannot send escape sequences
//! to it. csv, json and ndjson are for programs and keep the data exact.

pub mod csv;
pub mod json;
pub mod line;
pub mod table;
pub mod terminal;
/// One cell as a value, and its CSV and JSON text (shared with the web view).
pub use flowsql_cells as value;

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use arrow::array::ArrayRef;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;

use self::value::Value;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputMode {
    /// Aligned columns in an ASCII box, with a row count (for people).
    #[default]
    Table,
    /// As table, drawn with Unicode box-drawing characters (DuckDB's and sqlite3's `.mode box`).
    Box,
    /// A Markdown (GitHub) table, numbers aligned right.
    Markdown,
    /// Comma-separated values with a header row (RFC 4180).
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// One `column = value` line per column, a blank line between rows (sqlite3's `.mode line`).
    Line,
}

impl OutputMode {
    pub const ALL: [OutputMode; 7] = [
        OutputMode::Table,
        OutputMode::Box,
        OutputMode::Markdown,
        OutputMode::Csv,
        OutputMode::Json,
        OutputMode::Ndjson,
        OutputMode::Line,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OutputMode::Table => "table",
            OutputMode::Box => "box",
            OutputMode::Markdown => "markdown",
            OutputMode::Csv => "csv",
            OutputMode::Json => "json",
            OutputMode::Ndjson => "ndjson",
            OutputMode::Line => "line",
        }
    }
}

impl fmt::Display for OutputMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OutputMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        OutputMode::ALL.into_iter().find(|mode| mode.name().eq_ignore_ascii_case(text)).ok_or_else(|| {
            let names: Vec<&str> = OutputMode::ALL.iter().map(|m| m.name()).collect();
            format!("unknown output mode {text:?}: use one of {}", names.join(", "))
        })
    }
}

/// How a result is laid out, beyond its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrintOptions {
    /// A header row (table, box and csv modes; markdown always has one).
    pub headers: bool,
    /// Line breaks in strings stay line breaks in table and line modes
    /// instead of `\n`: only for text flowsql itself wrote (query plans).
    pub keep_newlines: bool,
    /// Fit tables (table, box, markdown) into this many characters a line,
    /// cutting long values and leaving out middle columns; `None`: no limit.
    pub max_width: Option<usize>,
    /// Print at most this many rows of a table; `None`: all.
    pub max_rows: Option<usize>,
    /// Whether the result is a query's: one without columns then says so
    /// (a `SET` or `CREATE VIEW` prints nothing).
    pub query: bool,
}

impl Default for PrintOptions {
    fn default() -> Self {
        PrintOptions { headers: true, keep_newlines: false, max_width: None, max_rows: None, query: true }
    }
}

/// Prints one result, batch by batch.
#[derive(Debug)]
pub struct ResultPrinter {
    format: Format,
    /// A result without columns.
    no_columns: bool,
    /// Say how many rows a query without columns gave.
    say_no_columns: bool,
    rows: u64,
}

#[derive(Debug)]
enum Format {
    Table(table::TablePrinter),
    Csv(csv::CsvPrinter),
    Json(json::JsonPrinter),
    Line(line::LinePrinter),
}

impl ResultPrinter {
    /// A printer for results of `schema`.
    pub fn new(mode: OutputMode, schema: &Schema, options: PrintOptions) -> Self {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let table = |style| {
            let numeric: Vec<bool> =
                schema.fields().iter().map(|f| value::is_numeric(f.data_type())).collect();
            Format::Table(table::TablePrinter::new(&names, &numeric, style, options))
        };
        let format = match mode {
            OutputMode::Table => table(table::Style::Ascii),
            OutputMode::Box => table(table::Style::Box),
            OutputMode::Markdown => table(table::Style::Markdown),
            OutputMode::Csv => Format::Csv(csv::CsvPrinter::new(&names, options.headers)),
            OutputMode::Json => Format::Json(json::JsonPrinter::new(&names, json::Layout::Array)),
            OutputMode::Ndjson => Format::Json(json::JsonPrinter::new(&names, json::Layout::Lines)),
            OutputMode::Line => Format::Line(line::LinePrinter::new(&names, options.keep_newlines)),
        };
        let no_columns = names.is_empty();
        ResultPrinter { format, no_columns, say_no_columns: no_columns && options.query, rows: 0 }
    }

    /// Prints the rows of `batch`.
    pub fn write_batch<W: Write + ?Sized>(&mut self, out: &mut W, batch: &RecordBatch) -> io::Result<()> {
        if self.no_columns {
            self.rows += batch.num_rows() as u64;
            // JSON has a way to write a row without columns: `{}`.
            if self.say_no_columns
                && let Format::Json(p) = &mut self.format
            {
                p.write_rows(out, &[], batch.num_rows())?;
            }
            return Ok(());
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = batch.columns().iter().map(plain).collect::<io::Result<_>>()?;
        self.rows += batch.num_rows() as u64;
        match &mut self.format {
            Format::Table(p) => p.write_rows(out, &columns, batch.num_rows()),
            Format::Csv(p) => p.write_rows(out, &columns, batch.num_rows()),
            Format::Json(p) => p.write_rows(out, &columns, batch.num_rows()),
            Format::Line(p) => p.write_rows(out, &columns, batch.num_rows()),
        }
    }

    /// Ends the result (closing brackets, the table's last rows and footer);
    /// returns the number of rows printed.
    pub fn finish<W: Write + ?Sized>(self, out: &mut W) -> io::Result<u64> {
        if self.say_no_columns {
            // A query that selects no columns (`SELECT FROM flows`) still
            // says what it gave: in JSON, its empty objects; in CSV, which
            // cannot hold a row without fields, a note on stderr.
            let rows = format!("{} {}", self.rows, if self.rows == 1 { "row" } else { "rows" });
            match self.format {
                Format::Json(p) => p.finish(out)?,
                Format::Csv(_) => eprintln!("note: the result has {rows} and no columns"),
                Format::Table(_) | Format::Line(_) => writeln!(out, "({rows}, no columns)")?,
            }
        } else if !self.no_columns {
            match self.format {
                Format::Table(p) => p.finish(out, self.rows)?,
                Format::Csv(p) => p.finish(out)?,
                Format::Json(p) => p.finish(out)?,
                Format::Line(_) => {}
            }
        }
        out.flush()?;
        Ok(self.rows)
    }
}

/// Prints a whole result held in memory.
#[cfg(any(feature = "sql", test))]
pub fn print_batches<W: Write + ?Sized>(
    out: &mut W,
    mode: OutputMode,
    schema: &Schema,
    batches: &[RecordBatch],
    options: PrintOptions,
) -> io::Result<u64> {
    let mut printer = ResultPrinter::new(mode, schema, options);
    for batch in batches {
        printer.write_batch(out, batch)?;
    }
    printer.finish(out)
}

/// Dictionary-encoded columns (as Parquet readers may produce) decoded to
/// their value type, so that they print like any other column.
fn plain(column: &ArrayRef) -> io::Result<ArrayRef> {
    match column.data_type() {
        DataType::Dictionary(_, value_type) => cast(column, value_type).map_err(io::Error::other),
        _ => Ok(ArrayRef::clone(column)),
    }
}

/// A value for people: strings escaped for the terminal, NULL spelled out,
/// lists as `[a, b]`.
pub fn human_into(value: &Value<'_>, keep_newlines: bool, out: &mut String) {
    match value {
        Value::Null => out.push_str("NULL"),
        Value::Decimal(text) | Value::Text(text) => terminal::escape_into(text, keep_newlines, out),
        Value::Str(text) => terminal::escape_into(text, keep_newlines, out),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                human_into(item, keep_newlines, out);
            }
            out.push(']');
        }
        Value::Struct(fields) => {
            out.push('{');
            for (i, (name, item)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                terminal::escape_into(name, keep_newlines, out);
                out.push_str(": ");
                human_into(item, keep_newlines, out);
            }
            out.push('}');
        }
        scalar => value::push_scalar(scalar, out),
    }
}

/// Batches shared by the printers' tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use arrow::array::{ListBuilder, StringArray, StringBuilder, TimestampNanosecondArray, UInt16Array};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use arrow::record_batch::RecordBatch;

    use super::{OutputMode, PrintOptions, print_batches};

    /// Three flows' worth of columns: a timestamp, a nullable string, a
    /// number and a list holding a hostile name and an empty list.
    pub fn sample() -> RecordBatch {
        let mut domains = ListBuilder::new(StringBuilder::new());
        domains.values().append_value("a.test");
        domains.values().append_value("b.test");
        domains.append(true);
        domains.values().append_value("evil\x1b[2J");
        domains.append(true);
        domains.append(true);
        let schema = Schema::new(vec![
            Field::new("timestamp", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
            Field::new("dstIP", DataType::Utf8, true),
            Field::new("dstPort", DataType::UInt16, false),
            Field::new(
                "dstDomains",
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                true,
            ),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(
                    TimestampNanosecondArray::from(vec![
                        1_795_849_800_123_456_789,
                        1_795_849_801_000_000_000,
                        1_795_849_802_000_000_001,
                    ])
                    .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec![Some("192.0.2.1"), Some("2001:db8::1"), None])),
                Arc::new(UInt16Array::from(vec![443, 80, 8080])),
                Arc::new(domains.finish()),
            ],
        )
        .expect("batch")
    }

    pub fn render(mode: OutputMode, batch: &RecordBatch) -> String {
        let mut out = Vec::new();
        print_batches(&mut out, mode, &batch.schema(), std::slice::from_ref(batch), PrintOptions::default())
            .expect("print");
        String::from_utf8(out).expect("utf-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_by_name() {
        assert_eq!("csv".parse::<OutputMode>(), Ok(OutputMode::Csv));
        assert_eq!("NDJSON".parse::<OutputMode>(), Ok(OutputMode::Ndjson));
        let error = "xml".parse::<OutputMode>().expect_err("xml");
        assert_eq!(
            error,
            "unknown output mode \"xml\": use one of table, box, markdown, csv, json, ndjson, line"
        );
        for mode in OutputMode::ALL {
            assert_eq!(mode.to_string().parse::<OutputMode>(), Ok(mode));
        }
    }

    #[test]
    fn human_values() {
        let text = |value: Value<'_>| {
            let mut out = String::new();
            human_into(&value, false, &mut out);
            out
        };
        assert_eq!(text(Value::Null), "NULL");
        assert_eq!(text(Value::Float(1.0)), "1.0");
        assert_eq!(text(Value::Float(0.25)), "0.25");
        assert_eq!(text(Value::List(vec![Value::Str("a.test"), Value::Str("b.test")])), "[a.test, b.test]");
        assert_eq!(text(Value::List(vec![Value::Str("evil\x1b[2J"), Value::Null])), r"[evil\x1b[2J, NULL]");
        assert_eq!(text(Value::Struct(vec![("n", Value::Int(1)), ("s", Value::Str("x"))])), "{n: 1, s: x}");
    }
}
