//! json mode (one array of objects, one object per line) and ndjson mode
//! (one object per line, nothing around them). Keys are column names in
//! column order; NULL is `null`; lists are arrays; timestamps are RFC 3339
//! strings; non-finite floats are `null`. Strings keep every character, JSON
//! escaping control characters itself.

use std::io::{self, Write};

use arrow::array::ArrayRef;

use super::value::{json_into, push_json_string, value_at};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[{...},\n{...}]`
    Array,
    /// `{...}\n{...}\n`
    Lines,
}

#[derive(Debug)]
pub struct JsonPrinter {
    /// Each column name as a JSON string followed by `:`.
    keys: Vec<String>,
    layout: Layout,
    rows: u64,
}

impl JsonPrinter {
    pub fn new(names: &[&str], layout: Layout) -> Self {
        let keys = names
            .iter()
            .map(|name| {
                let mut key = String::new();
                push_json_string(&mut key, name);
                key.push(':');
                key
            })
            .collect();
        JsonPrinter { keys, layout, rows: 0 }
    }

    pub fn write_rows<W: Write + ?Sized>(
        &mut self,
        out: &mut W,
        columns: &[ArrayRef],
        rows: usize,
    ) -> io::Result<()> {
        let mut text = String::new();
        for row in 0..rows {
            match (self.layout, self.rows) {
                (Layout::Array, 0) => text.push('['),
                (Layout::Array, _) => text.push_str(",\n"),
                (Layout::Lines, _) => {}
            }
            self.rows += 1;
            text.push('{');
            for (i, (key, column)) in self.keys.iter().zip(columns).enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(key);
                json_into(&value_at(column.as_ref(), row), &mut text);
            }
            text.push('}');
            if self.layout == Layout::Lines {
                text.push('\n');
            }
        }
        out.write_all(text.as_bytes())
    }

    pub fn finish<W: Write + ?Sized>(self, out: &mut W) -> io::Result<()> {
        match (self.layout, self.rows) {
            (Layout::Array, 0) => out.write_all(b"[]\n"),
            (Layout::Array, _) => out.write_all(b"]\n"),
            (Layout::Lines, _) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::output::OutputMode;
    use crate::output::testing::{render, sample};

    #[test]
    fn json_is_one_array_with_lists_as_arrays() {
        let text = render(OutputMode::Json, &sample());
        assert_eq!(
            text,
            "[{\"timestamp\":\"2026-11-28T07:10:00.123456789Z\",\"dstIP\":\"192.0.2.1\",\"dstPort\":443,\"dstDomains\":[\"a.test\",\"b.test\"]},\n\
             {\"timestamp\":\"2026-11-28T07:10:01.000000000Z\",\"dstIP\":\"2001:db8::1\",\"dstPort\":80,\"dstDomains\":[\"evil\\u001b[2J\"]},\n\
             {\"timestamp\":\"2026-11-28T07:10:02.000000001Z\",\"dstIP\":null,\"dstPort\":8080,\"dstDomains\":[]}]\n"
        );
        // A JSON parser reads back exactly the data.
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed[1]["dstDomains"][0], "evil\x1b[2J");
        assert_eq!(parsed[2]["dstIP"], serde_json::Value::Null);
    }

    #[test]
    fn ndjson_is_one_object_per_line() {
        let text = render(OutputMode::Ndjson, &sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        for line in &lines {
            let _: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        }
        assert_eq!(
            lines[0],
            "{\"timestamp\":\"2026-11-28T07:10:00.123456789Z\",\"dstIP\":\"192.0.2.1\",\"dstPort\":443,\"dstDomains\":[\"a.test\",\"b.test\"]}"
        );
    }

    #[test]
    fn empty_results() {
        assert_eq!(render(OutputMode::Json, &sample().slice(0, 0)), "[]\n");
        assert_eq!(render(OutputMode::Ndjson, &sample().slice(0, 0)), "");
    }
}
