//! One cell of an Arrow result as a printable value: the small set of shapes
//! flowsql prints (numbers, strings, timestamps, lists, structs), with
//! Arrow's own display as the fallback for every other type; and the text of
//! a value where programs read it, in CSV and JSON. `flowsql query` and
//! `flowsql shell` print through these (the shell's output modes), and the
//! web view's SQL table and CSV download too, so the CLI and the page agree
//! on every value.

use std::fmt::Write as _;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, Utc};

/// A cell, borrowing its strings from the array.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// A decimal, exactly as Arrow writes it (a JSON number).
    Decimal(String),
    Str(&'a str),
    /// A point in time, printed as RFC 3339 in UTC with nanoseconds.
    Timestamp(DateTime<Utc>),
    /// Any other type, as Arrow displays it (a JSON string).
    Text(String),
    List(Vec<Value<'a>>),
    Struct(Vec<(&'a str, Value<'a>)>),
}

/// The value at `row` of `array`.
pub fn value_at(array: &dyn Array, row: usize) -> Value<'_> {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => Value::Int(array.as_primitive::<Int8Type>().value(row).into()),
        DataType::Int16 => Value::Int(array.as_primitive::<Int16Type>().value(row).into()),
        DataType::Int32 => Value::Int(array.as_primitive::<Int32Type>().value(row).into()),
        DataType::Int64 => Value::Int(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => Value::UInt(array.as_primitive::<UInt8Type>().value(row).into()),
        DataType::UInt16 => Value::UInt(array.as_primitive::<UInt16Type>().value(row).into()),
        DataType::UInt32 => Value::UInt(array.as_primitive::<UInt32Type>().value(row).into()),
        DataType::UInt64 => Value::UInt(array.as_primitive::<UInt64Type>().value(row)),
        DataType::Float16 => Value::Float(array.as_primitive::<Float16Type>().value(row).to_f64()),
        DataType::Float32 => Value::Float(array.as_primitive::<Float32Type>().value(row).into()),
        DataType::Float64 => Value::Float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::Str(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Value::Str(array.as_string::<i64>().value(row)),
        DataType::Utf8View => Value::Str(array.as_string_view().value(row)),
        DataType::Timestamp(unit, _) => timestamp(array, *unit, row),
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => Value::Decimal(display(array, row)),
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
        DataType::Struct(fields) => {
            let columns = array.as_struct().columns();
            Value::Struct(
                fields
                    .iter()
                    .zip(columns)
                    .map(|(field, column)| (field.name().as_str(), value_at(column, row)))
                    .collect(),
            )
        }
        _ => Value::Text(display(array, row)),
    }
}

fn elements(values: &dyn Array, start: usize, end: usize) -> Value<'_> {
    Value::List((start..end).map(|i| value_at(values, i)).collect())
}

fn timestamp(array: &dyn Array, unit: TimeUnit, row: usize) -> Value<'_> {
    let (secs, nanos) = match unit {
        TimeUnit::Second => (array.as_primitive::<TimestampSecondType>().value(row), 0),
        TimeUnit::Millisecond => {
            let ms = array.as_primitive::<TimestampMillisecondType>().value(row);
            (ms.div_euclid(1_000), ms.rem_euclid(1_000) * 1_000_000)
        }
        TimeUnit::Microsecond => {
            let us = array.as_primitive::<TimestampMicrosecondType>().value(row);
            (us.div_euclid(1_000_000), us.rem_euclid(1_000_000) * 1_000)
        }
        TimeUnit::Nanosecond => {
            let ns = array.as_primitive::<TimestampNanosecondType>().value(row);
            (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
        }
    };
    // The remainders above are in 0..1e9, so the cast cannot truncate.
    match DateTime::from_timestamp(secs, nanos as u32) {
        Some(time) => Value::Timestamp(time),
        None => Value::Text(display(array, row)),
    }
}

/// Arrow's display of one cell, for the types without a shape of their own.
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

/// `2026-11-28T07:10:00.123456789Z`: always UTC, always nine digits.
pub fn rfc3339(time: &DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

/// Whether the values of a column are numbers, aligned right in tables.
pub fn is_numeric(data_type: &DataType) -> bool {
    data_type.is_numeric()
}

/// The text of `value` as a program reads it (a CSV field before quoting,
/// a cell of the web view's table); `None` for NULL. Strings as they are,
/// lists and structs as JSON, timestamps as [`rfc3339`].
pub fn text(value: &Value<'_>) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Str(text) => Some((*text).to_owned()),
        Value::Decimal(text) | Value::Text(text) => Some(text.clone()),
        Value::List(_) | Value::Struct(_) => Some(to_json(value)),
        scalar => {
            let mut text = String::new();
            push_scalar(scalar, &mut text);
            Some(text)
        }
    }
}

/// Appends a boolean, number or timestamp, whose text never needs quoting
/// or escaping (`true`, `1.0`, `NaN`, `2026-11-28T07:10:00.123456789Z`), in
/// every output; other values append nothing.
pub fn push_scalar(value: &Value<'_>, out: &mut String) {
    match value {
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::UInt(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Float(x) => {
            let _ = write!(out, "{x:?}");
        }
        Value::Timestamp(time) => out.push_str(&rfc3339(time)),
        Value::Null
        | Value::Decimal(_)
        | Value::Str(_)
        | Value::Text(_)
        | Value::List(_)
        | Value::Struct(_) => {}
    }
}

/// Appends `value` as one CSV field (RFC 4180): nothing for NULL, lists
/// and structs as their JSON, quoted as [`push_csv_text`] says.
pub fn push_csv_field(value: &Value<'_>, out: &mut String) {
    match value {
        Value::Null => {}
        Value::Str(text) => push_csv_text(out, text),
        Value::Decimal(text) | Value::Text(text) => push_csv_text(out, text),
        Value::List(_) | Value::Struct(_) => push_csv_text(out, &to_json(value)),
        scalar => push_scalar(scalar, out),
    }
}

/// Appends `text` as one CSV field, quoted when it holds a comma, a quote,
/// a line break or surrounding spaces, or is the empty string (so that it
/// differs from NULL, an empty field).
pub fn push_csv_text(out: &mut String, text: &str) {
    let needs_quotes = text.is_empty()
        || text.starts_with(' ')
        || text.ends_with(' ')
        || text.contains([',', '"', '\n', '\r']);
    if needs_quotes {
        out.push('"');
        for c in text.chars() {
            if c == '"' {
                out.push('"');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(text);
    }
}

/// `value` as JSON text: NULL and non-finite floats are `null`, lists are
/// arrays, structs objects, timestamps RFC 3339 strings.
pub fn to_json(value: &Value<'_>) -> String {
    let mut text = String::new();
    json_into(value, &mut text);
    text
}

/// Appends `value` as JSON (see [`to_json`]).
pub fn json_into(value: &Value<'_>, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Float(x) if !x.is_finite() => out.push_str("null"),
        Value::Decimal(text) => out.push_str(text),
        Value::Str(text) => push_json_string(out, text),
        Value::Text(text) => push_json_string(out, text),
        Value::Timestamp(time) => push_json_string(out, &rfc3339(time)),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_into(item, out);
            }
            out.push(']');
        }
        Value::Struct(fields) => {
            out.push('{');
            for (i, (name, item)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(out, name);
                out.push(':');
                json_into(item, out);
            }
            out.push('}');
        }
        scalar => push_scalar(scalar, out),
    }
}

/// Appends `text` as a JSON string (RFC 8259 escapes).
pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        Date32Array, Decimal128Array, DictionaryArray, Int32Array, ListBuilder, StringArray, StringBuilder,
        StructArray, TimestampMillisecondArray, TimestampNanosecondArray,
    };
    use arrow::datatypes::{Field, Int8Type as Key};

    use super::*;

    #[test]
    fn scalars() {
        let ints = Int32Array::from(vec![Some(-3), None]);
        assert_eq!(value_at(&ints, 0), Value::Int(-3));
        assert_eq!(value_at(&ints, 1), Value::Null);
        let strings = StringArray::from(vec!["a.test"]);
        assert_eq!(value_at(&strings, 0), Value::Str("a.test"));
        let decimals = Decimal128Array::from(vec![12345]).with_precision_and_scale(10, 2).expect("decimal");
        assert_eq!(value_at(&decimals, 0), Value::Decimal("123.45".into()));
        let dates = Date32Array::from(vec![20_000]);
        assert_eq!(value_at(&dates, 0), Value::Text("2024-10-04".into()));
    }

    #[test]
    fn timestamps_are_utc_with_nanoseconds() {
        let ns = TimestampNanosecondArray::from(vec![1_795_849_800_123_456_789]).with_timezone("UTC");
        let Value::Timestamp(time) = value_at(&ns, 0) else { panic!("not a timestamp") };
        assert_eq!(rfc3339(&time), "2026-11-28T07:10:00.123456789Z");
        // Other units and zones name the same instant the same way.
        let ms = TimestampMillisecondArray::from(vec![-1]).with_timezone("+02:00");
        let Value::Timestamp(time) = value_at(&ms, 0) else { panic!("not a timestamp") };
        assert_eq!(rfc3339(&time), "1969-12-31T23:59:59.999000000Z");
    }

    #[test]
    fn lists_and_structs() {
        let mut builder = ListBuilder::new(StringBuilder::new());
        builder.values().append_value("a.test");
        builder.values().append_null();
        builder.append(true);
        builder.append(true);
        builder.append(false);
        let lists = builder.finish();
        assert_eq!(value_at(&lists, 0), Value::List(vec![Value::Str("a.test"), Value::Null]));
        assert_eq!(value_at(&lists, 1), Value::List(vec![]));
        assert_eq!(value_at(&lists, 2), Value::Null);

        let structs = StructArray::from(vec![(
            Arc::new(Field::new("n", DataType::Int32, false)),
            Arc::new(Int32Array::from(vec![7])) as Arc<dyn Array>,
        )]);
        assert_eq!(value_at(&structs, 0), Value::Struct(vec![("n", Value::Int(7))]));
    }

    #[test]
    fn other_types_fall_back_to_arrow_display() {
        let dict: DictionaryArray<Key> = vec!["x", "y", "x"].into_iter().collect();
        assert_eq!(value_at(&dict, 2), Value::Text("x".into()));
    }

    #[test]
    fn json_of_values() {
        assert_eq!(to_json(&Value::Float(f64::NAN)), "null");
        assert_eq!(to_json(&Value::Float(1.0)), "1.0");
        assert_eq!(to_json(&Value::Float(1e21)), "1e21");
        assert_eq!(to_json(&Value::Decimal("-12.50".into())), "-12.50");
        assert_eq!(to_json(&Value::Str("q\"\\\u{7}\u{202e}")), "\"q\\\"\\\\\\u0007\u{202e}\"");
        assert_eq!(to_json(&Value::Struct(vec![("a", Value::List(vec![Value::Null]))])), "{\"a\":[null]}");
    }
}
