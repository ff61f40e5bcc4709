//! Every value as text, as `flowsql query --format csv` writes it, so that
//! the SQL view's table, its CSV download and the CLI agree:
//!
//! | value | text |
//! |---|---|
//! | NULL | none (`null` in JSON, an empty CSV field) |
//! | timestamp | `2026-11-28T07:10:00.123456789Z` (UTC, nine digits) |
//! | float | Rust's shortest round trip, with a `.0` on whole numbers (`1.0`, `NaN`) |
//! | list, struct | JSON (`["a.test","b.test"]`) |
//! | string, anything else | as it is (Arrow's display for other types) |
//!
//! The values and their text come from `flowsql-cells`, the code the CLI
//! prints with. The page puts these strings into the document as text, never
//! as markup.

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use flowsql_cells::{push_csv_field, push_csv_text, value_at};

/// The text of each cell of `batch`, row by row.
pub fn rows(batch: &RecordBatch) -> Vec<Vec<Option<String>>> {
    let columns: Vec<ArrayRef> = batch.columns().iter().map(plain).collect();
    (0..batch.num_rows()).map(|row| columns.iter().map(|c| text_at(c.as_ref(), row)).collect()).collect()
}

/// Dictionary-encoded columns decoded to their values.
fn plain(column: &ArrayRef) -> ArrayRef {
    match column.data_type() {
        DataType::Dictionary(_, value_type) => {
            cast(column, value_type).unwrap_or_else(|_| ArrayRef::clone(column))
        }
        _ => ArrayRef::clone(column),
    }
}

/// The text of one cell, as the CLI's CSV holds it; `None` for NULL.
pub fn text_at(array: &dyn Array, row: usize) -> Option<String> {
    flowsql_cells::text(&value_at(array, row))
}

/// RFC 4180 CSV of a result, exactly as `flowsql query --format csv` writes
/// it: a header row, then one line per row.
pub fn csv(names: &[&str], batches: &[RecordBatch]) -> String {
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_csv_text(&mut out, name);
    }
    out.push('\n');
    for batch in batches {
        let columns: Vec<ArrayRef> = batch.columns().iter().map(plain).collect();
        for row in 0..batch.num_rows() {
            for (i, column) in columns.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_csv_field(&value_at(column.as_ref(), row), &mut out);
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        Float64Array, ListBuilder, StringArray, StringBuilder, TimestampNanosecondArray, UInt16Array,
    };
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};

    use super::*;

    #[test]
    fn cells_as_the_cli_writes_them() {
        let mut domains = ListBuilder::new(StringBuilder::new());
        domains.values().append_value("a.test");
        domains.values().append_value("<img src=x onerror=alert(1)>.evil.test");
        domains.append(true);
        domains.append(true);
        let schema = Schema::new(vec![
            Field::new("t", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
            Field::new("ip", DataType::Utf8, true),
            Field::new("port", DataType::UInt16, false),
            Field::new("x", DataType::Float64, false),
            Field::new("d", DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))), true),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(
                    TimestampNanosecondArray::from(vec![1_795_849_800_123_456_789, 0]).with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec![Some("192.0.2.1"), None])),
                Arc::new(UInt16Array::from(vec![443, 8080])),
                Arc::new(Float64Array::from(vec![1.0, 0.25])),
                Arc::new(domains.finish()),
            ],
        )
        .expect("batch");
        assert_eq!(
            rows(&batch)[0],
            vec![
                Some("2026-11-28T07:10:00.123456789Z".to_owned()),
                Some("192.0.2.1".to_owned()),
                Some("443".to_owned()),
                Some("1.0".to_owned()),
                Some(r#"["a.test","<img src=x onerror=alert(1)>.evil.test"]"#.to_owned()),
            ]
        );
        assert_eq!(
            csv(&["t", "ip", "port", "x", "d"], &[batch]),
            "t,ip,port,x,d\n\
             2026-11-28T07:10:00.123456789Z,192.0.2.1,443,1.0,\"[\"\"a.test\"\",\"\"<img src=x onerror=alert(1)>.evil.test\"\"]\"\n\
             1970-01-01T00:00:00.000000000Z,,8080,0.25,[]\n"
        );
    }
}
