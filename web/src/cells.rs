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
//! The page puts these strings into the document as text, never as markup.

use std::fmt::Write as _;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::Value as Json;

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

/// The text of one cell; `None` for NULL.
pub fn text_at(array: &dyn Array, row: usize) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).to_owned(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).to_owned(),
        DataType::Utf8View => array.as_string_view().value(row).to_owned(),
        DataType::Float16 => float(array.as_primitive::<Float16Type>().value(row).to_f64()),
        DataType::Float32 => float(array.as_primitive::<Float32Type>().value(row).into()),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Timestamp(unit, _) => timestamp(array, *unit, row).unwrap_or_else(|| display(array, row)),
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::FixedSizeList(_, _)
        | DataType::ListView(_)
        | DataType::Struct(_) => json_at(array, row).to_string(),
        _ => display(array, row),
    })
}

fn float(x: f64) -> String {
    format!("{x:?}")
}

/// Nanoseconds since the epoch of a timestamp cell.
fn timestamp_ns(array: &dyn Array, unit: TimeUnit, row: usize) -> Option<i64> {
    match unit {
        TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(row).checked_mul(1_000_000_000),
        TimeUnit::Millisecond => {
            array.as_primitive::<TimestampMillisecondType>().value(row).checked_mul(1_000_000)
        }
        TimeUnit::Microsecond => {
            array.as_primitive::<TimestampMicrosecondType>().value(row).checked_mul(1_000)
        }
        TimeUnit::Nanosecond => Some(array.as_primitive::<TimestampNanosecondType>().value(row)),
    }
}

fn timestamp(array: &dyn Array, unit: TimeUnit, row: usize) -> Option<String> {
    timestamp_ns(array, unit, row).map(flowsql_event::format_timestamp)
}

/// A cell as JSON: numbers as numbers, lists as arrays, structs as objects,
/// timestamps and everything else as their text.
pub fn json_at(array: &dyn Array, row: usize) -> Json {
    if array.is_null(row) {
        return Json::Null;
    }
    match array.data_type() {
        DataType::Boolean => Json::Bool(array.as_boolean().value(row)),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).into(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).into(),
        DataType::Float32 | DataType::Float64 | DataType::Float16 => {
            let x = match array.data_type() {
                DataType::Float32 => array.as_primitive::<Float32Type>().value(row).into(),
                DataType::Float16 => array.as_primitive::<Float16Type>().value(row).to_f64(),
                _ => array.as_primitive::<Float64Type>().value(row),
            };
            serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number)
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let offsets = list.value_offsets();
            elements(list.values().as_ref(), offsets[row] as usize, offsets[row + 1] as usize)
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>();
            let offsets = list.value_offsets();
            elements(list.values().as_ref(), offsets[row] as usize, offsets[row + 1] as usize)
        }
        DataType::FixedSizeList(_, _) => {
            let list = array.as_fixed_size_list();
            let start = list.value_offset(row) as usize;
            elements(list.values().as_ref(), start, start + list.value_length() as usize)
        }
        DataType::Struct(fields) => Json::Object(
            fields
                .iter()
                .zip(array.as_struct().columns())
                .map(|(field, column)| (field.name().clone(), json_at(column.as_ref(), row)))
                .collect(),
        ),
        _ => text_at(array, row).map_or(Json::Null, Json::String),
    }
}

fn elements(values: &dyn Array, start: usize, end: usize) -> Json {
    Json::Array((start..end).map(|i| json_at(values, i)).collect())
}

/// Arrow's display of one cell.
fn display(array: &dyn Array, row: usize) -> String {
    let options = FormatOptions::default();
    match ArrayFormatter::try_new(array, &options) {
        Ok(formatter) => {
            let mut text = String::new();
            match write!(text, "{}", formatter.value(row)) {
                Ok(()) => text,
                Err(_) => format!("<{} not printable>", array.data_type()),
            }
        }
        Err(_) => format!("<{}>", array.data_type()),
    }
}

/// RFC 4180 CSV of a result: a header row, then one line per row; a field
/// is quoted when it holds a comma, a quote, a line break or surrounding
/// spaces, or is the empty string (NULL is an empty field).
pub fn csv(names: &[&str], batches: &[RecordBatch]) -> String {
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_field(&mut out, name);
    }
    out.push('\n');
    for batch in batches {
        for row in rows(batch) {
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if let Some(text) = cell {
                    push_field(&mut out, text);
                }
            }
            out.push('\n');
        }
    }
    out
}

fn push_field(out: &mut String, text: &str) {
    let needs_quotes = text.is_empty()
        || text.starts_with(' ')
        || text.ends_with(' ')
        || text.contains([',', '"', '\n', '\r']);
    if needs_quotes {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(text);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        Float64Array, ListBuilder, StringArray, StringBuilder, TimestampNanosecondArray, UInt16Array,
    };
    use datafusion::arrow::datatypes::{Field, Schema};

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
