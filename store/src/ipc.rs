//! A record batch as bytes: the Arrow IPC stream format (schema,
//! dictionaries, one batch), each buffer compressed. This is what a hot
//! tier row holds; any Arrow reader opens it (`pyarrow.ipc.open_stream`).

use std::io::Cursor;

use arrow::ipc::CompressionType;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow::record_batch::RecordBatch;

use crate::StoreError;

/// How the buffers of a stored batch are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// LZ4 frames: the fastest to write and read.
    Lz4,
    /// Zstandard (level 1 in arrow-rs): smaller, slower.
    Zstd,
}

/// The compression the hot tier writes (BENCHMARKS.md, "Store", compares
/// the two); readers take whatever a batch says.
pub const HOT_COMPRESSION: Compression = Compression::Lz4;

fn options(compression: Compression) -> Result<IpcWriteOptions, arrow::error::ArrowError> {
    let kind = match compression {
        Compression::Lz4 => CompressionType::LZ4_FRAME,
        Compression::Zstd => CompressionType::ZSTD,
    };
    IpcWriteOptions::default().try_with_compression(Some(kind))
}

/// `batch` as a compressed IPC stream.
pub fn encode(batch: &RecordBatch, compression: Compression) -> Result<Vec<u8>, StoreError> {
    let err = |e: arrow::error::ArrowError| StoreError::Ipc { action: "encode", source: e };
    let mut bytes = Vec::with_capacity(4096);
    let mut writer = StreamWriter::try_new_with_options(
        &mut bytes,
        batch.schema_ref(),
        options(compression).map_err(err)?,
    )
    .map_err(err)?;
    writer.write(batch).map_err(err)?;
    writer.finish().map_err(err)?;
    drop(writer);
    Ok(bytes)
}

/// The batch of an IPC stream made by [`encode`]; with `projection`, only
/// those columns (in that order) are decompressed and decoded.
pub fn decode(bytes: &[u8], projection: Option<Vec<usize>>) -> Result<RecordBatch, StoreError> {
    let err = |e: arrow::error::ArrowError| StoreError::Ipc { action: "decode", source: e };
    let mut reader = StreamReader::try_new(Cursor::new(bytes), projection).map_err(err)?;
    let schema = reader.schema();
    let mut batches = Vec::with_capacity(1);
    for batch in reader.by_ref() {
        batches.push(batch.map_err(err)?);
    }
    match batches.len() {
        1 => Ok(batches.remove(0)),
        0 => Ok(RecordBatch::new_empty(schema)),
        _ => arrow::compute::concat_batches(&schema, &batches).map_err(err),
    }
}

/// The columns named `names` (those the stored batch has, in that order)
/// of an IPC stream made by [`encode`]; other columns are neither
/// decompressed nor decoded.
pub fn decode_columns(bytes: &[u8], names: &[&str]) -> Result<RecordBatch, StoreError> {
    let err = |e: arrow::error::ArrowError| StoreError::Ipc { action: "decode", source: e };
    let schema = StreamReader::try_new(Cursor::new(bytes), None).map_err(err)?.schema();
    let projection: Vec<usize> = names.iter().filter_map(|name| schema.index_of(name).ok()).collect();
    decode(bytes, Some(projection))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        Array, AsArray, DictionaryArray, Int32Array, ListArray, StringArray, TimestampNanosecondArray,
    };
    use arrow::buffer::OffsetBuffer;
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};

    use super::*;

    /// A batch with a dictionary of name lists, as the capture stores them.
    fn batch() -> RecordBatch {
        let names = StringArray::from(vec!["a.example", "b.example", "c.example"]);
        let item = Arc::new(Field::new_list_field(DataType::Utf8, true));
        let lists = ListArray::new(
            Arc::clone(&item),
            OffsetBuffer::new(vec![0, 0, 1, 3].into()),
            Arc::new(names),
            None,
        );
        let dict = DictionaryArray::<Int32Type>::new(Int32Array::from(vec![2, 2, 0, 1]), Arc::new(lists));
        let schema = Arc::new(Schema::new(vec![
            Field::new("time", crate::table::time_type(), false),
            Field::new("names", dict.data_type().clone(), false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampNanosecondArray::from(vec![1, 2, 3, 4]).with_timezone("UTC")),
                Arc::new(dict),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn a_batch_with_dictionaries_of_lists_round_trips_in_both_compressions() {
        let batch = batch();
        for compression in [Compression::Lz4, Compression::Zstd] {
            let bytes = encode(&batch, compression).expect("encode");
            let back = decode(&bytes, None).expect("decode");
            assert_eq!(back, batch, "{compression:?}");
            let time_only = decode(&bytes, Some(vec![0])).expect("projected");
            assert_eq!(time_only.num_columns(), 1);
            assert_eq!(
                time_only.column(0).as_primitive::<arrow::datatypes::TimestampNanosecondType>().values(),
                &[1, 2, 3, 4]
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let bytes = encode(&batch(), Compression::Lz4).expect("encode");
        assert!(decode(&bytes[..bytes.len() / 2], None).is_err());
        assert!(decode(b"not arrow", None).is_err());
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n / 2..n / 2 + 16].fill(0xff);
        let _ = decode(&flipped, None);
    }
}
