//! Table mode: aligned columns in an ASCII box, numbers on the right, and a
//! row count below.
//!
//! ```text
//! +---------+-------+
//! | dstPort | flows |
//! +---------+-------+
//! |     443 |     2 |
//! +---------+-------+
//! (1 row)
//! ```
//!
//! Column widths come from the rows themselves, so rows are held back until
//! [`CHUNK_ROWS`] of them are known; a longer result is printed chunk by
//! chunk, each chunk with widths at least those of the chunks before it.

use std::io::{self, Write};

use datafusion::arrow::array::ArrayRef;
use unicode_width::UnicodeWidthStr;

use super::terminal;
use super::value::value_at;

/// Rows held to size the columns before printing.
pub const CHUNK_ROWS: usize = 10_000;

#[derive(Debug)]
pub struct TablePrinter {
    headers: Vec<String>,
    right_aligned: Vec<bool>,
    widths: Vec<usize>,
    /// Rows not printed yet; each cell is its text, already escaped.
    pending: Vec<Vec<String>>,
    header_written: bool,
    keep_newlines: bool,
}

impl TablePrinter {
    pub fn new(names: &[&str], numeric: &[bool], keep_newlines: bool) -> Self {
        let headers: Vec<String> = names.iter().map(|n| terminal::escape(n)).collect();
        let widths = headers.iter().map(|h| cell_width(h)).collect();
        TablePrinter {
            headers,
            right_aligned: numeric.to_vec(),
            widths,
            pending: Vec::new(),
            header_written: false,
            keep_newlines,
        }
    }

    pub fn write_rows<W: Write + ?Sized>(
        &mut self,
        out: &mut W,
        columns: &[ArrayRef],
        rows: usize,
    ) -> io::Result<()> {
        for row in 0..rows {
            let cells = columns
                .iter()
                .map(|column| {
                    let mut text = String::new();
                    super::human_into(&value_at(column.as_ref(), row), self.keep_newlines, &mut text);
                    text
                })
                .collect();
            self.pending.push(cells);
            if self.pending.len() >= CHUNK_ROWS {
                self.flush_chunk(out)?;
            }
        }
        Ok(())
    }

    pub fn finish<W: Write + ?Sized>(mut self, out: &mut W, rows: u64) -> io::Result<()> {
        self.flush_chunk(out)?;
        if !self.header_written {
            self.write_header(out)?;
        }
        self.write_border(out)?;
        writeln!(out, "({rows} {})", if rows == 1 { "row" } else { "rows" })
    }

    fn flush_chunk<W: Write + ?Sized>(&mut self, out: &mut W) -> io::Result<()> {
        for row in &self.pending {
            for (width, cell) in self.widths.iter_mut().zip(row) {
                *width = (*width).max(cell_width(cell));
            }
        }
        if !self.header_written && !self.pending.is_empty() {
            self.write_header(out)?;
        }
        let pending = std::mem::take(&mut self.pending);
        for row in &pending {
            self.write_row(out, row)?;
        }
        Ok(())
    }

    fn write_header<W: Write + ?Sized>(&mut self, out: &mut W) -> io::Result<()> {
        self.header_written = true;
        self.write_border(out)?;
        let mut line = String::from("|");
        for (header, width) in self.headers.iter().zip(&self.widths) {
            line.push(' ');
            pad(&mut line, header, *width, false);
            line.push_str(" |");
        }
        writeln!(out, "{line}")?;
        self.write_border(out)
    }

    fn write_border<W: Write + ?Sized>(&self, out: &mut W) -> io::Result<()> {
        let mut line = String::from("+");
        for width in &self.widths {
            line.extend(std::iter::repeat_n('-', width + 2));
            line.push('+');
        }
        writeln!(out, "{line}")
    }

    fn write_row<W: Write + ?Sized>(&self, out: &mut W, row: &[String]) -> io::Result<()> {
        // A cell holds several lines only with keep_newlines.
        let cell_lines: Vec<Vec<&str>> =
            row.iter().map(|cell| cell.trim_end_matches('\n').split('\n').collect()).collect();
        let height = cell_lines.iter().map(Vec::len).max().unwrap_or(1);
        let mut text = String::new();
        for i in 0..height {
            text.push('|');
            for ((lines, width), right) in cell_lines.iter().zip(&self.widths).zip(&self.right_aligned) {
                text.push(' ');
                pad(&mut text, lines.get(i).copied().unwrap_or(""), *width, *right);
                text.push_str(" |");
            }
            text.push('\n');
        }
        out.write_all(text.as_bytes())
    }
}

/// Display width of a cell: its widest line.
fn cell_width(cell: &str) -> usize {
    cell.trim_end_matches('\n').split('\n').map(UnicodeWidthStr::width).max().unwrap_or(0)
}

fn pad(line: &mut String, text: &str, width: usize, right: bool) {
    let fill = width.saturating_sub(UnicodeWidthStr::width(text));
    if right {
        line.extend(std::iter::repeat_n(' ', fill));
        line.push_str(text);
    } else {
        line.push_str(text);
        line.extend(std::iter::repeat_n(' ', fill));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    use crate::output::{OutputMode, ResultPrinter};

    fn render(batch: &RecordBatch) -> String {
        crate::output::testing::render(OutputMode::Table, batch)
    }

    fn sample() -> RecordBatch {
        crate::output::testing::sample()
    }

    #[test]
    fn aligned_with_numbers_right_and_a_row_count() {
        assert_eq!(
            render(&sample()),
            "\
+--------------------------------+-------------+---------+------------------+
| timestamp                      | dstIP       | dstPort | dstDomains       |
+--------------------------------+-------------+---------+------------------+
| 2026-11-28T07:10:00.123456789Z | 192.0.2.1   |     443 | [a.test, b.test] |
| 2026-11-28T07:10:01.000000000Z | 2001:db8::1 |      80 | [evil\\x1b[2J]    |
| 2026-11-28T07:10:02.000000001Z | NULL        |    8080 | []               |
+--------------------------------+-------------+---------+------------------+
(3 rows)
"
        );
    }

    #[test]
    fn an_empty_result_still_shows_its_columns() {
        let batch = sample().slice(0, 0);
        assert_eq!(
            render(&batch),
            "\
+-----------+-------+---------+------------+
| timestamp | dstIP | dstPort | dstDomains |
+-----------+-------+---------+------------+
+-----------+-------+---------+------------+
(0 rows)
"
        );
        let one = render(&sample().slice(2, 1));
        assert!(one.ends_with("(1 row)\n"), "{one}");
    }

    #[test]
    fn plans_keep_their_lines() {
        let schema = Arc::new(Schema::new(vec![Field::new("plan", DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(StringArray::from(vec!["Projection\n  Scan\n"]))],
        )
        .expect("batch");
        let mut out = Vec::new();
        let mut printer = ResultPrinter::new(OutputMode::Table, &schema, true);
        printer.write_batch(&mut out, &batch).expect("write");
        printer.finish(&mut out).expect("finish");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "\
+------------+
| plan       |
+------------+
| Projection |
|   Scan     |
+------------+
(1 row)
"
        );
    }

    #[test]
    fn long_results_print_in_chunks() {
        let schema = Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, false)]));
        let names: Vec<String> = (0..super::CHUNK_ROWS + 1)
            .map(|i| if i == super::CHUNK_ROWS { "wider".into() } else { "x".into() })
            .collect();
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(StringArray::from(names))])
            .expect("batch");
        let text = render(&batch);
        assert!(text.starts_with("+------+\n| name |\n+------+\n| x    |\n"), "{}", &text[..40]);
        assert!(text.ends_with("| wider |\n+-------+\n(10001 rows)\n"));
    }
}
