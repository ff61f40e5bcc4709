//! CSV mode (RFC 4180): a header row, then one line per row. A field is
//! quoted when it holds a comma, a quote, a line break or surrounding spaces,
//! or is the empty string (so that it differs from NULL, an empty field). A
//! list or struct is one field holding its JSON. Strings are written as they
//! are: CSV is for programs, not terminals.

use std::io::{self, Write};

use arrow::array::ArrayRef;

use super::value::{push_csv_field, push_csv_text, value_at};

#[derive(Debug)]
pub struct CsvPrinter {
    header: String,
    header_written: bool,
}

impl CsvPrinter {
    /// Without `headers`, no header row.
    pub fn new(names: &[&str], headers: bool) -> Self {
        let mut header = String::new();
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                header.push(',');
            }
            push_csv_text(&mut header, name);
        }
        header.push('\n');
        CsvPrinter { header, header_written: !headers }
    }

    pub fn write_rows<W: Write + ?Sized>(
        &mut self,
        out: &mut W,
        columns: &[ArrayRef],
        rows: usize,
    ) -> io::Result<()> {
        self.write_header(out)?;
        let mut text = String::new();
        for row in 0..rows {
            for (i, column) in columns.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                push_csv_field(&value_at(column.as_ref(), row), &mut text);
            }
            text.push('\n');
        }
        out.write_all(text.as_bytes())
    }

    pub fn finish<W: Write + ?Sized>(mut self, out: &mut W) -> io::Result<()> {
        self.write_header(out)
    }

    fn write_header<W: Write + ?Sized>(&mut self, out: &mut W) -> io::Result<()> {
        if !self.header_written {
            self.header_written = true;
            out.write_all(self.header.as_bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    use crate::output::OutputMode;
    use crate::output::testing::{render, sample};

    #[test]
    fn header_then_rows_with_lists_as_json_fields() {
        assert_eq!(
            render(OutputMode::Csv, &sample()),
            "timestamp,dstIP,dstPort,dstDomains\n\
             2026-11-28T07:10:00.123456789Z,192.0.2.1,443,\"[\"\"a.test\"\",\"\"b.test\"\"]\"\n\
             2026-11-28T07:10:01.000000000Z,2001:db8::1,80,\"[\"\"evil\\u001b[2J\"\"]\"\n\
             2026-11-28T07:10:02.000000001Z,,8080,[]\n"
        );
    }

    #[test]
    fn quoting_keeps_strings_exact() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("plain"),
                    Some("a,b"),
                    Some("say \"hi\""),
                    Some("two\nlines"),
                    Some(""),
                    None,
                    Some(" padded "),
                    Some("esc\x1b[2J"),
                ])),
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    None,
                    Some(-3),
                    Some(0),
                    Some(5),
                    Some(6),
                    Some(7),
                    Some(8),
                ])),
                Arc::new(Float64Array::from(vec![0.5, 1.0, f64::NAN, 2.5, 3.0, 4.0, 5.0, 6.0])),
            ],
        )
        .expect("batch");
        assert_eq!(
            render(OutputMode::Csv, &batch),
            "s,n,x\nplain,1,0.5\n\"a,b\",,1.0\n\"say \"\"hi\"\"\",-3,NaN\n\"two\nlines\",0,2.5\n\"\",5,3.0\n,6,4.0\n\" padded \",7,5.0\nesc\x1b[2J,8,6.0\n"
        );
    }

    #[test]
    fn an_empty_result_is_its_header() {
        assert_eq!(render(OutputMode::Csv, &sample().slice(0, 0)), "timestamp,dstIP,dstPort,dstDomains\n");
    }
}
