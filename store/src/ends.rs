//! The `flow_ends` table: [`FlowEnd`] records into Arrow record batches and
//! back, built like `flows` ([`crate::flows`]): values many rows share
//! (addresses, names, reasons, processes) are stored once per batch as
//! dictionaries. The same batches, in the plain schema, are `open_flows`.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BooleanBuilder, Float64Builder, ListBuilder, StringBuilder,
    TimestampNanosecondBuilder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{Float64Type, SchemaRef, TimestampNanosecondType, UInt16Type, UInt32Type, UInt64Type};
use arrow::record_batch::RecordBatch;
use flowsql_event::{Direction, DomainList, DomainName, EndReason, FlowEnd, Side};

use crate::StoreError;
use crate::flows::{
    AttributionColumns, AttributionReader, Batcher, Interner, ListKey, RowColumns, Shared, push_ip,
    push_list, push_string, storage_schema,
};
use crate::schema::{end_column, flow_ends_schema, flow_ends_table};
use crate::table::UTC;

/// The schema of the batches [`EndColumns`] builds: `flow_ends` with the
/// shared values as `Dictionary<Int32, _>`.
pub fn flow_ends_storage_schema() -> SchemaRef {
    use end_column as c;
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        storage_schema(
            &flow_ends_schema(),
            &[
                c::CONNECTION_DIRECTION,
                c::SRC_IP,
                c::DST_IP,
                c::SRC_DOMAINS,
                c::DST_DOMAINS,
                c::END_REASON,
                c::CLOSED_BY,
                c::HOST_NAME,
                c::PROCESS_NAME,
                c::EXECUTABLE,
                c::CGROUP_PATH,
                c::CONTAINER_ID,
                c::ACCEPTING_PROCESS_NAME,
            ],
        )
    }))
}

/// Arrow builders for the `flow_ends` columns.
#[derive(Debug)]
pub struct EndColumns {
    timestamp: TimestampNanosecondBuilder,
    direction: Interner<Direction, StringBuilder>,
    src_ip: Interner<IpAddr, StringBuilder>,
    dst_ip: Interner<IpAddr, StringBuilder>,
    src_port: UInt16Builder,
    dst_port: UInt16Builder,
    src_domains: Interner<ListKey, ListBuilder<StringBuilder>>,
    dst_domains: Interner<ListKey, ListBuilder<StringBuilder>>,
    duration: Float64Builder,
    src_bytes: UInt64Builder,
    dst_bytes: UInt64Builder,
    src_packets: UInt64Builder,
    dst_packets: UInt64Builder,
    retransmits: UInt32Builder,
    rtt_micros: UInt32Builder,
    reason: Interner<EndReason, StringBuilder>,
    closed_by: Interner<Option<Side>, StringBuilder>,
    begun_before_capture: BooleanBuilder,
    host_name: Interner<Shared<str>, StringBuilder>,
    cgroup_id: UInt64Builder,
    flow_id: UInt64Builder,
    attribution: AttributionColumns,
    accepting_process_id: UInt32Builder,
    accepting_process_name: Interner<Arc<str>, StringBuilder>,
}

impl Default for EndColumns {
    fn default() -> Self {
        EndColumns::with_capacity(1024)
    }
}

impl EndColumns {
    pub fn with_capacity(rows: usize) -> Self {
        fn strings<K: std::hash::Hash + Eq>(rows: usize) -> Interner<K, StringBuilder> {
            Interner::new(StringBuilder::new(), rows)
        }
        let lists = || Interner::new(ListBuilder::new(StringBuilder::new()), rows);
        EndColumns {
            timestamp: TimestampNanosecondBuilder::with_capacity(rows).with_timezone(UTC),
            direction: strings(rows),
            src_ip: strings(rows),
            dst_ip: strings(rows),
            src_port: UInt16Builder::with_capacity(rows),
            dst_port: UInt16Builder::with_capacity(rows),
            src_domains: lists(),
            dst_domains: lists(),
            duration: Float64Builder::with_capacity(rows),
            src_bytes: UInt64Builder::with_capacity(rows),
            dst_bytes: UInt64Builder::with_capacity(rows),
            src_packets: UInt64Builder::with_capacity(rows),
            dst_packets: UInt64Builder::with_capacity(rows),
            retransmits: UInt32Builder::with_capacity(rows),
            rtt_micros: UInt32Builder::with_capacity(rows),
            reason: strings(rows),
            closed_by: strings(rows),
            begun_before_capture: BooleanBuilder::with_capacity(rows),
            host_name: strings(rows),
            cgroup_id: UInt64Builder::with_capacity(rows),
            flow_id: UInt64Builder::with_capacity(rows),
            attribution: AttributionColumns::with_capacity(rows),
            accepting_process_id: UInt32Builder::with_capacity(rows),
            accepting_process_name: strings(rows),
        }
    }

    pub fn len(&self) -> usize {
        self.timestamp.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, end: &FlowEnd) {
        self.timestamp.append_value(end.timestamp_ns);
        self.direction.push(end.direction, |b| b.append_value(end.direction.as_str()));
        push_ip(&mut self.src_ip, end.src_ip);
        push_ip(&mut self.dst_ip, end.dst_ip);
        self.src_port.append_value(end.src_port);
        self.dst_port.append_value(end.dst_port);
        push_list(&mut self.src_domains, &end.src_domains);
        push_list(&mut self.dst_domains, &end.dst_domains);
        self.duration.append_option(end.duration_ns.map(|ns| ns as f64 / 1e9));
        self.src_bytes.append_value(end.src_bytes);
        self.dst_bytes.append_value(end.dst_bytes);
        self.src_packets.append_value(end.src_packets);
        self.dst_packets.append_value(end.dst_packets);
        self.retransmits.append_value(end.retransmits);
        self.rtt_micros.append_value(end.rtt_micros);
        self.reason.push(end.reason, |b| b.append_value(end.reason.as_str()));
        self.closed_by.push(end.closed_by, |b| b.append_value(Side::column(end.closed_by)));
        self.begun_before_capture.append_value(end.begun_before_capture);
        self.host_name.push(Shared(Arc::clone(&end.host_name)), |b| b.append_value(&*end.host_name));
        self.cgroup_id.append_value(end.cgroup_id);
        self.flow_id.append_value(end.flow_id);
        self.attribution.push(&end.attribution);
        self.accepting_process_id.append_option(end.accepting_process_id);
        push_string(&mut self.accepting_process_name, &end.accepting_process_name);
    }

    /// The rows appended so far as one batch of [`flow_ends_storage_schema`].
    pub fn finish(&mut self) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish()),
            self.direction.finish(),
            self.src_ip.finish(),
            self.dst_ip.finish(),
            Arc::new(self.src_port.finish()),
            Arc::new(self.dst_port.finish()),
            self.src_domains.finish(),
            self.dst_domains.finish(),
            Arc::new(self.duration.finish()),
            Arc::new(self.src_bytes.finish()),
            Arc::new(self.dst_bytes.finish()),
            Arc::new(self.src_packets.finish()),
            Arc::new(self.dst_packets.finish()),
            Arc::new(self.retransmits.finish()),
            Arc::new(self.rtt_micros.finish()),
            self.reason.finish(),
            self.closed_by.finish(),
            Arc::new(self.begun_before_capture.finish()),
            self.host_name.finish(),
            Arc::new(self.cgroup_id.finish()),
            Arc::new(self.flow_id.finish()),
        ];
        columns.extend(self.attribution.finish());
        columns.push(Arc::new(self.accepting_process_id.finish()));
        columns.push(self.accepting_process_name.finish());
        RecordBatch::try_new(flow_ends_storage_schema(), columns)
            .unwrap_or_else(|e| unreachable!("end builders disagree with the flow_ends schema: {e}"))
    }
}

impl RowColumns for EndColumns {
    type Row = FlowEnd;

    fn with_capacity(rows: usize) -> Self {
        EndColumns::with_capacity(rows)
    }

    fn push(&mut self, row: &FlowEnd) {
        EndColumns::push(self, row);
    }

    fn len(&self) -> usize {
        EndColumns::len(self)
    }

    fn finish(&mut self) -> RecordBatch {
        EndColumns::finish(self)
    }
}

/// Batches of `flow_ends`.
pub type EndBatcher = Batcher<EndColumns>;

/// `ends` as one batch of the plain `flow_ends` schema (also `open_flows`'s).
pub fn batch_from_ends<'a>(ends: impl IntoIterator<Item = &'a FlowEnd>) -> RecordBatch {
    let mut columns = EndColumns::default();
    for end in ends {
        columns.push(end);
    }
    let stored = columns.finish();
    flow_ends_table()
        .conform(&stored)
        .unwrap_or_else(|e| unreachable!("flow_ends batch does not conform: {e}"))
}

/// The rows of a `flow_ends` batch (plain or as stored) as records.
pub fn ends_from_batch(batch: &RecordBatch) -> Result<Vec<FlowEnd>, StoreError> {
    use end_column as c;
    let table = flow_ends_table();
    table.check(batch)?;
    let batch = table.conform(batch)?;
    let invalid = |reason: String| StoreError::InvalidBatch { table: table.name(), reason };
    let string = |i: usize| batch.column(i).as_string::<i32>();
    let u64s = |i: usize| batch.column(i).as_primitive::<UInt64Type>();
    let timestamp = batch.column(c::TIMESTAMP).as_primitive::<TimestampNanosecondType>();
    let (direction, src_ip, dst_ip) = (string(c::CONNECTION_DIRECTION), string(c::SRC_IP), string(c::DST_IP));
    let src_port = batch.column(c::SRC_PORT).as_primitive::<UInt16Type>();
    let dst_port = batch.column(c::DST_PORT).as_primitive::<UInt16Type>();
    let src_domains = batch.column(c::SRC_DOMAINS).as_list::<i32>();
    let dst_domains = batch.column(c::DST_DOMAINS).as_list::<i32>();
    let duration = batch.column(c::DURATION).as_primitive::<Float64Type>();
    let retransmits = batch.column(c::RETRANSMITS).as_primitive::<UInt32Type>();
    let rtt = batch.column(c::RTT_MICROS).as_primitive::<UInt32Type>();
    let begun_before = batch.column(c::BEGUN_BEFORE_CAPTURE).as_boolean();
    let accepting_id = batch.column(c::ACCEPTING_PROCESS_ID).as_primitive::<UInt32Type>();
    let mut attribution = AttributionReader::new(&batch, c::PROCESS_ID);
    let domains = |list: &arrow::array::ListArray, row: usize| -> Result<DomainList, StoreError> {
        let offsets = list.value_offsets();
        let values = list
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(|| invalid("domain list of non-strings".into()))?;
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        Ok((start..end).map(|i| DomainName::from(values.value(i))).collect())
    };
    let mut ends = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let parse_ip = |text: &str| {
            text.parse::<IpAddr>().map_err(|e| invalid(format!("row {row}: address {text:?}: {e}")))
        };
        let at_row = |e: &dyn std::fmt::Display| invalid(format!("row {row}: {e}"));
        ends.push(FlowEnd {
            timestamp_ns: timestamp.value(row),
            direction: direction.value(row).parse::<Direction>().map_err(|e| at_row(&e))?,
            src_ip: parse_ip(src_ip.value(row))?,
            dst_ip: parse_ip(dst_ip.value(row))?,
            src_port: src_port.value(row),
            dst_port: dst_port.value(row),
            src_domains: domains(src_domains, row)?,
            dst_domains: domains(dst_domains, row)?,
            duration_ns: duration.is_valid(row).then(|| (duration.value(row) * 1e9).round() as i64),
            src_bytes: u64s(c::SRC_BYTES).value(row),
            dst_bytes: u64s(c::DST_BYTES).value(row),
            src_packets: u64s(c::SRC_PACKETS).value(row),
            dst_packets: u64s(c::DST_PACKETS).value(row),
            retransmits: retransmits.value(row),
            rtt_micros: rtt.value(row),
            reason: string(c::END_REASON).value(row).parse::<EndReason>().map_err(|e| at_row(&e))?,
            closed_by: Side::from_column(string(c::CLOSED_BY).value(row)).map_err(|e| at_row(&e))?,
            begun_before_capture: begun_before.value(row),
            host_name: string(c::HOST_NAME).value(row).into(),
            cgroup_id: u64s(c::CGROUP_ID).value(row),
            flow_id: u64s(c::FLOW_ID).value(row),
            attribution: attribution.row(row),
            accepting_process_id: accepting_id.is_valid(row).then(|| accepting_id.value(row)),
            accepting_process_name: string(c::ACCEPTING_PROCESS_NAME).value(row).into(),
        });
    }
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic;

    #[test]
    fn ends_round_trip_through_a_batch() {
        let ends = synthetic::edge_ends();
        let batch = batch_from_ends(&ends);
        assert_eq!(batch.schema(), flow_ends_schema());
        assert_eq!(ends_from_batch(&batch).expect("valid"), ends);
        let mut columns = EndColumns::default();
        for end in &ends {
            columns.push(end);
        }
        let stored = columns.finish();
        flow_ends_table().check(&stored).expect("storable");
        assert_eq!(ends_from_batch(&stored).expect("valid"), ends);
    }
}
