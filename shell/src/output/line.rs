//! Line mode, as sqlite3's `.mode line`: one `column = value` line per
//! column, names aligned on the right, a blank line between rows. Values are
//! escaped for the terminal as in table mode.

use std::io::{self, Write};

use arrow::array::ArrayRef;

use super::terminal;
use super::value::value_at;

#[derive(Debug)]
pub struct LinePrinter {
    /// Column names, escaped and right-aligned to the longest.
    labels: Vec<String>,
    keep_newlines: bool,
    rows: u64,
}

impl LinePrinter {
    pub fn new(names: &[&str], keep_newlines: bool) -> Self {
        let names: Vec<String> = names.iter().map(|n| terminal::escape(n)).collect();
        let width =
            names.iter().map(|n| unicode_width::UnicodeWidthStr::width(n.as_str())).max().unwrap_or(0);
        let labels = names
            .iter()
            .map(|name| {
                let fill = width - unicode_width::UnicodeWidthStr::width(name.as_str());
                format!("{}{name} = ", " ".repeat(fill))
            })
            .collect();
        LinePrinter { labels, keep_newlines, rows: 0 }
    }

    pub fn write_rows<W: Write + ?Sized>(
        &mut self,
        out: &mut W,
        columns: &[ArrayRef],
        rows: usize,
    ) -> io::Result<()> {
        let mut text = String::new();
        for row in 0..rows {
            if self.rows > 0 {
                text.push('\n');
            }
            self.rows += 1;
            for (label, column) in self.labels.iter().zip(columns) {
                text.push_str(label);
                super::human_into(&value_at(column.as_ref(), row), self.keep_newlines, &mut text);
                text.push('\n');
            }
        }
        out.write_all(text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use crate::output::OutputMode;
    use crate::output::testing::{render, sample};

    #[test]
    fn one_line_per_column_and_a_blank_line_between_rows() {
        assert_eq!(
            render(OutputMode::Line, &sample()),
            " timestamp = 2026-11-28T07:10:00.123456789Z
     dstIP = 192.0.2.1
   dstPort = 443
dstDomains = [a.test, b.test]

 timestamp = 2026-11-28T07:10:01.000000000Z
     dstIP = 2001:db8::1
   dstPort = 80
dstDomains = [evil\\x1b[2J]

 timestamp = 2026-11-28T07:10:02.000000001Z
     dstIP = NULL
   dstPort = 8080
dstDomains = []
"
        );
    }

    #[test]
    fn an_empty_result_prints_nothing() {
        assert_eq!(render(OutputMode::Line, &sample().slice(0, 0)), "");
    }
}
