//! Table modes: aligned columns, numbers on the right, drawn in one of three
//! styles, with a row count below (but in Markdown).
//!
//! ```text
//! table                  box                    markdown
//! +---------+-------+    ┌─────────┬───────┐    | dstPort | flows |
//! | dstPort | flows |    │ dstPort │ flows │    |--------:|------:|
//! +---------+-------+    ├─────────┼───────┤    |     443 |     2 |
//! |     443 |     2 |    │     443 │     2 │
//! +---------+-------+    └─────────┴───────┘
//! (1 row)                (1 row)
//! ```
//!
//! Column widths come from the rows themselves, so rows are held back until
//! [`CHUNK_ROWS`] of them are known; a longer result is printed chunk by
//! chunk, each chunk with widths at least those of the chunks before it.
//!
//! With a maximum width (the terminal's, or `.maxwidth N`), a table that
//! would be wider is fitted, as DuckDB's shell does: long values are cut and
//! end in `…`, and if that is not enough, columns in the middle are left
//! out, a `…` column standing in their place; a note under the table says
//! what was hidden. The layout is chosen from the first chunk. With a
//! maximum of rows (`.maxrows N`), the rows after the first N are counted
//! but not shown, a row of `…` standing in their place.

use std::io::{self, Write};

use arrow::array::ArrayRef;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::value::value_at;
use super::{PrintOptions, terminal};

/// Rows held to size the columns before printing.
pub const CHUNK_ROWS: usize = 10_000;

/// When every column fits cut to this width (or wider), all are shown;
/// past it, columns are left out instead.
const MIN_FITTED_WIDTH: usize = 16;

/// When columns are left out, those shown are chosen at their width cut to
/// this (a time, `2026-11-28T07:10:00.123456789Z`, fits whole).
const KEPT_WIDTH: usize = 32;

/// What marks something left out.
const ELLIPSIS: &str = "…";

/// How the table is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Ascii,
    Box,
    Markdown,
}

/// Where a border runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Border {
    Top,
    Middle,
    Bottom,
}

#[derive(Debug)]
pub struct TablePrinter {
    style: Style,
    headers: Vec<String>,
    right_aligned: Vec<bool>,
    /// The widest cell of each column so far.
    natural: Vec<usize>,
    /// Rows not printed yet; each cell is its text, already escaped.
    pending: Vec<Vec<String>>,
    /// The columns shown and their widths, once chosen.
    layout: Option<Layout>,
    header_written: bool,
    options: PrintOptions,
    /// Rows given to the printer, and rows shown.
    rows: u64,
    shown: u64,
}

/// The columns a table shows.
#[derive(Debug, Clone)]
struct Layout {
    /// Each shown column: a column's index, or `None` for the `…` column
    /// that stands for those left out.
    columns: Vec<Option<usize>>,
    /// The width of each shown column.
    widths: Vec<usize>,
    /// Whether the layout was fitted: it no longer grows.
    fitted: bool,
    /// Whether a value (or header) was cut.
    cut: bool,
}

impl TablePrinter {
    pub fn new(names: &[&str], numeric: &[bool], style: Style, options: PrintOptions) -> Self {
        let headers: Vec<String> = names.iter().map(|n| escape_cell(n, style, false)).collect();
        // Headers not shown take no room.
        let shown = options.headers || style == Style::Markdown;
        let natural = headers.iter().map(|h| if shown { cell_width(h) } else { 0 }).collect();
        TablePrinter {
            style,
            headers,
            right_aligned: numeric.to_vec(),
            natural,
            pending: Vec::new(),
            layout: None,
            header_written: false,
            options,
            rows: 0,
            shown: 0,
        }
    }

    pub fn write_rows<W: Write + ?Sized>(
        &mut self,
        out: &mut W,
        columns: &[ArrayRef],
        rows: usize,
    ) -> io::Result<()> {
        for row in 0..rows {
            self.rows += 1;
            if self.options.max_rows.is_some_and(|max| self.shown >= max as u64) {
                continue;
            }
            self.shown += 1;
            let cells = columns
                .iter()
                .map(|column| {
                    let mut text = String::new();
                    super::human_into(&value_at(column.as_ref(), row), self.options.keep_newlines, &mut text);
                    if self.style == Style::Markdown {
                        text = escape_markdown(&text);
                    }
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
        let layout = self.layout.clone().unwrap_or_else(|| self.natural_layout());
        let rows_hidden = rows > self.shown;
        if rows_hidden {
            let marker: Vec<String> = vec![ELLIPSIS.to_owned(); self.headers.len()];
            self.write_row(out, &layout, &marker)?;
        }
        self.write_border(out, &layout, Border::Bottom)?;
        let plural = if rows == 1 { "row" } else { "rows" };
        match (self.style, rows_hidden) {
            (Style::Markdown, false) => {}
            (_, false) => writeln!(out, "({rows} {plural})")?,
            (_, true) => writeln!(out, "({rows} {plural}, {} shown: .maxrows 0 shows all)", self.shown)?,
        }
        let shown_columns = layout.columns.iter().filter(|c| c.is_some()).count();
        let total_columns = self.headers.len();
        let width = self.options.max_width.unwrap_or(0);
        match (shown_columns < total_columns, layout.cut) {
            (true, _) => writeln!(
                out,
                "({shown_columns} of {total_columns} columns shown{} to fit {width} characters: .maxwidth 0 shows all)",
                if layout.cut { ", long values cut" } else { "" }
            )?,
            (false, true) => {
                writeln!(out, "(long values cut to fit {width} characters: .maxwidth 0 shows them whole)")?
            }
            (false, false) => {}
        }
        Ok(())
    }

    /// Every column at its natural width.
    fn natural_layout(&self) -> Layout {
        Layout {
            columns: (0..self.headers.len()).map(Some).collect(),
            widths: self.natural.clone(),
            fitted: false,
            cut: false,
        }
    }

    /// Chooses the layout: fitted once, from what is known then, or the
    /// natural widths, growing with each chunk.
    fn update_layout(&mut self) {
        if self.layout.as_ref().is_some_and(|l| l.fitted) {
            return;
        }
        self.layout = Some(match self.options.max_width {
            Some(max) if max > 0 => fit(&self.natural, max),
            _ => self.natural_layout(),
        });
    }

    fn flush_chunk<W: Write + ?Sized>(&mut self, out: &mut W) -> io::Result<()> {
        for row in &self.pending {
            for (width, cell) in self.natural.iter_mut().zip(row) {
                *width = (*width).max(cell_width(cell));
            }
        }
        self.update_layout();
        if !self.header_written && !self.pending.is_empty() {
            self.write_header(out)?;
        }
        let pending = std::mem::take(&mut self.pending);
        let layout = self.layout.clone().unwrap_or_else(|| self.natural_layout());
        for row in &pending {
            self.write_row(out, &layout, row)?;
        }
        Ok(())
    }

    fn write_header<W: Write + ?Sized>(&mut self, out: &mut W) -> io::Result<()> {
        self.header_written = true;
        if self.layout.is_none() {
            self.update_layout();
        }
        let layout = self.layout.clone().unwrap_or_else(|| self.natural_layout());
        self.write_border(out, &layout, Border::Top)?;
        if self.options.headers || self.style == Style::Markdown {
            let headers = self.headers.clone();
            self.write_line(out, &layout, &headers, false)?;
            self.write_border(out, &layout, Border::Middle)?;
        }
        Ok(())
    }

    fn write_border<W: Write + ?Sized>(
        &self,
        out: &mut W,
        layout: &Layout,
        border: Border,
    ) -> io::Result<()> {
        let (left, fill, join, right) = match (self.style, border) {
            (Style::Ascii, _) => ("+", "-", "+", "+"),
            (Style::Box, Border::Top) => ("┌", "─", "┬", "┐"),
            (Style::Box, Border::Middle) => ("├", "─", "┼", "┤"),
            (Style::Box, Border::Bottom) => ("└", "─", "┴", "┘"),
            (Style::Markdown, Border::Middle) => ("|", "-", "|", "|"),
            (Style::Markdown, _) => return Ok(()),
        };
        let mut line = String::from(left);
        for (i, (width, column)) in layout.widths.iter().zip(&layout.columns).enumerate() {
            if i > 0 {
                line.push_str(join);
            }
            let right_aligned = column.is_some_and(|c| self.right_aligned[c]);
            if self.style == Style::Markdown && right_aligned {
                line.push_str(&fill.repeat(width + 1));
                line.push(':');
            } else {
                line.push_str(&fill.repeat(width + 2));
            }
        }
        line.push_str(right);
        writeln!(out, "{line}")
    }

    /// A row of cells (one per column of the result).
    fn write_row<W: Write + ?Sized>(&self, out: &mut W, layout: &Layout, row: &[String]) -> io::Result<()> {
        self.write_line(out, layout, row, true)
    }

    fn write_line<W: Write + ?Sized>(
        &self,
        out: &mut W,
        layout: &Layout,
        row: &[String],
        align: bool,
    ) -> io::Result<()> {
        let bar = if self.style == Style::Box { "│" } else { "|" };
        // A cell holds several lines only with keep_newlines.
        let cells: Vec<(Vec<String>, usize, bool)> = layout
            .columns
            .iter()
            .zip(&layout.widths)
            .map(|(column, width)| match column {
                Some(c) => {
                    let cell = row.get(*c).map_or("", String::as_str);
                    let lines = cell.trim_end_matches('\n').split('\n').map(|l| cut(l, *width)).collect();
                    (lines, *width, align && self.right_aligned[*c])
                }
                None => (vec![ELLIPSIS.to_owned()], *width, false),
            })
            .collect();
        let height = cells.iter().map(|(lines, _, _)| lines.len()).max().unwrap_or(1);
        let mut text = String::new();
        for i in 0..height {
            text.push_str(bar);
            for (lines, width, right) in &cells {
                text.push(' ');
                pad(&mut text, lines.get(i).map_or("", String::as_str), *width, *right);
                text.push(' ');
                text.push_str(bar);
            }
            text.push('\n');
        }
        out.write_all(text.as_bytes())
    }
}

/// The columns and widths that fit `max` characters a line: the natural
/// widths if they fit; else long columns cut to one width, as wide as still
/// fits; else, past [`MIN_FITTED_WIDTH`], the first and last columns (taken
/// in turn from both ends, each at most [`KEPT_WIDTH`] wide) around a `…`
/// column, then widened to fill the line.
fn fit(natural: &[usize], max: usize) -> Layout {
    let line_width = |widths: &[usize]| widths.iter().map(|w| w + 3).sum::<usize>() + 1;
    let all: Vec<Option<usize>> = (0..natural.len()).map(Some).collect();
    if line_width(natural) <= max {
        return Layout { columns: all, widths: natural.to_vec(), fitted: true, cut: false };
    }
    let capped = |columns: &[Option<usize>], cap: usize| -> Vec<usize> {
        columns.iter().map(|c| c.map_or(1, |c| natural[c].min(cap))).collect()
    };
    // The widest cap at which `columns` fit, if any is at least `floor`.
    let widest_cap = |columns: &[Option<usize>], floor: usize| -> Option<usize> {
        let top = natural.iter().copied().max().unwrap_or(0);
        (floor..=top).rev().find(|cap| line_width(&capped(columns, *cap)) <= max)
    };
    let floor = MIN_FITTED_WIDTH.min(max.saturating_sub(4).max(1));
    if let Some(cap) = widest_cap(&all, floor) {
        let widths = capped(&all, cap);
        return Layout { columns: all, widths, fitted: true, cut: true };
    }
    // Columns from both ends, in turn, while they fit with the `…` column;
    // an end whose next column does not fit is done, the other goes on.
    let (mut left, mut right) = (Vec::new(), Vec::new());
    let (mut front, mut back) = (0, natural.len());
    let mut ends = [true, true];
    let mut side = 0;
    while front < back && ends.iter().any(|open| *open) {
        if !ends[side] {
            side = 1 - side;
            continue;
        }
        let next = if side == 0 { front } else { back - 1 };
        let mut candidate: Vec<Option<usize>> =
            left.iter().chain(&right).chain([&next]).copied().map(Some).collect();
        candidate.push(None);
        let fits = line_width(&capped(&candidate, KEPT_WIDTH)) <= max;
        // At least one column is shown, however narrow the line.
        if fits || (left.is_empty() && right.is_empty()) {
            if side == 0 {
                left.push(next);
                front += 1;
            } else {
                right.push(next);
                back -= 1;
            }
        }
        if !fits {
            ends[side] = false;
        }
        side = 1 - side;
    }
    let mut columns: Vec<Option<usize>> = left.into_iter().map(Some).collect();
    if front < back {
        columns.push(None);
    }
    columns.extend(right.into_iter().rev().map(Some));
    let cap = widest_cap(&columns, 1).unwrap_or(1);
    let widths = capped(&columns, cap);
    let cut = columns.iter().zip(&widths).any(|(c, w)| c.is_some_and(|c| natural[c] > *w));
    Layout { columns, widths, fitted: true, cut }
}

/// `text` cut to `width` display columns, ending in `…` when cut.
fn cut(text: &str, width: usize) -> String {
    if UnicodeWidthStr::width(text) <= width {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push_str(ELLIPSIS);
    out
}

/// A header escaped for the terminal (and for Markdown).
fn escape_cell(text: &str, style: Style, keep_newlines: bool) -> String {
    let mut out = String::new();
    terminal::escape_into(text, keep_newlines, &mut out);
    if style == Style::Markdown { escape_markdown(&out) } else { out }
}

/// A cell of a Markdown table: `|` would end it.
fn escape_markdown(text: &str) -> String {
    text.replace('|', "\\|")
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

    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    use crate::output::{OutputMode, PrintOptions, ResultPrinter};

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
    fn cut_values_end_in_an_ellipsis_within_their_width() {
        assert_eq!(super::cut("short", 10), "short");
        assert_eq!(super::cut("www.example.com", 8), "www.exa…");
        // Wide characters count twice.
        assert_eq!(super::cut("例え.テスト", 6), "例え.…");
        assert_eq!(super::cut("例え.テスト", 5), "例え…");
    }

    #[test]
    fn fitting_keeps_both_ends_around_an_ellipsis_column() {
        let layout = super::fit(&[30, 19, 9, 9, 5, 5, 11], 60);
        assert_eq!(layout.columns, [Some(0), None, Some(5), Some(6)]);
        assert!(!layout.cut);
        let widths = layout.widths.iter().map(|w| w + 3).sum::<usize>() + 1;
        assert!(widths <= 60, "{widths}");
        // All columns cut to one width when that is enough.
        let layout = super::fit(&[40, 40], 60);
        assert_eq!(layout.columns, [Some(0), Some(1)]);
        assert_eq!(layout.widths, [26, 26]);
        assert!(layout.cut);
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
        let mut printer = ResultPrinter::new(
            OutputMode::Table,
            &schema,
            PrintOptions { keep_newlines: true, ..PrintOptions::default() },
        );
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
