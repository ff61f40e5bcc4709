//! [`FlowBegin`] records into Arrow [`RecordBatch`]es of [`flows_schema`],
//! and back.
//!
//! [`FlowColumns`] appends rows straight into Arrow builders (addresses are
//! formatted into the string buffer, no `String` per row); [`FlowBatcher`]
//! cuts batches by size or age, whichever comes first;
//! [`flows_from_batch`] turns a batch back into records (round-trip tests,
//! and any reader that wants rows).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, ListBuilder, StringBuilder, TimestampNanosecondBuilder,
    UInt16Builder, UInt64Builder,
};
use arrow::datatypes::{TimestampNanosecondType, UInt16Type, UInt64Type};
use arrow::record_batch::RecordBatch;
use flowsql_event::{Direction, DomainList, DomainName, FlowBegin};

use crate::StoreError;
use crate::schema::{UTC, flow_column, flows_schema};

/// Arrow builders for the `flows` columns.
#[derive(Debug)]
pub struct FlowColumns {
    timestamp: TimestampNanosecondBuilder,
    direction: StringBuilder,
    src_ip: StringBuilder,
    dst_ip: StringBuilder,
    src_port: UInt16Builder,
    dst_port: UInt16Builder,
    src_domains: ListBuilder<StringBuilder>,
    dst_domains: ListBuilder<StringBuilder>,
    host_name: StringBuilder,
    cgroup_id: UInt64Builder,
}

impl Default for FlowColumns {
    fn default() -> Self {
        FlowColumns::with_capacity(1024)
    }
}

impl FlowColumns {
    pub fn with_capacity(rows: usize) -> Self {
        FlowColumns {
            timestamp: TimestampNanosecondBuilder::with_capacity(rows).with_timezone(UTC),
            direction: StringBuilder::with_capacity(rows, rows * 8),
            src_ip: StringBuilder::with_capacity(rows, rows * 16),
            dst_ip: StringBuilder::with_capacity(rows, rows * 16),
            src_port: UInt16Builder::with_capacity(rows),
            dst_port: UInt16Builder::with_capacity(rows),
            src_domains: ListBuilder::with_capacity(StringBuilder::new(), rows),
            dst_domains: ListBuilder::with_capacity(StringBuilder::new(), rows),
            host_name: StringBuilder::with_capacity(rows, rows * 8),
            cgroup_id: UInt64Builder::with_capacity(rows),
        }
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.timestamp.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one flow.
    pub fn push(&mut self, flow: &FlowBegin) {
        self.push_row(RowRef {
            timestamp_ns: flow.timestamp_ns,
            direction: flow.direction.as_str(),
            src_ip: IpText::Addr(flow.src_ip),
            dst_ip: IpText::Addr(flow.dst_ip),
            src_port: flow.src_port,
            dst_port: flow.dst_port,
            host_name: &flow.host_name,
            cgroup_id: flow.cgroup_id,
        });
        append_list(&mut self.src_domains, flow.src_domains.iter().map(|d| &**d));
        append_list(&mut self.dst_domains, flow.dst_domains.iter().map(|d| &**d));
    }

    /// Appends the scalar columns of a row; the caller then appends exactly
    /// one list to each of [`src_domains`](Self::src_domains) and
    /// [`dst_domains`](Self::dst_domains).
    pub(crate) fn push_row(&mut self, row: RowRef<'_>) {
        self.timestamp.append_value(row.timestamp_ns);
        self.direction.append_value(row.direction);
        row.src_ip.append_to(&mut self.src_ip);
        row.dst_ip.append_to(&mut self.dst_ip);
        self.src_port.append_value(row.src_port);
        self.dst_port.append_value(row.dst_port);
        self.host_name.append_value(row.host_name);
        self.cgroup_id.append_value(row.cgroup_id);
    }

    pub(crate) fn src_domains(&mut self) -> &mut ListBuilder<StringBuilder> {
        &mut self.src_domains
    }

    pub(crate) fn dst_domains(&mut self) -> &mut ListBuilder<StringBuilder> {
        &mut self.dst_domains
    }

    /// The rows appended so far as one batch; the builders start over empty.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish()),
            Arc::new(self.direction.finish()),
            Arc::new(self.src_ip.finish()),
            Arc::new(self.dst_ip.finish()),
            Arc::new(self.src_port.finish()),
            Arc::new(self.dst_port.finish()),
            Arc::new(self.src_domains.finish()),
            Arc::new(self.dst_domains.finish()),
            Arc::new(self.host_name.finish()),
            Arc::new(self.cgroup_id.finish()),
        ];
        // The builders make exactly the schema's types, non-null, of one length.
        RecordBatch::try_new(flows_schema(), columns)
            .unwrap_or_else(|e| unreachable!("flow builders disagree with the flows schema: {e}"))
    }
}

/// One row's scalar values, borrowed.
pub(crate) struct RowRef<'a> {
    pub timestamp_ns: i64,
    pub direction: &'a str,
    pub src_ip: IpText<'a>,
    pub dst_ip: IpText<'a>,
    pub src_port: u16,
    pub dst_port: u16,
    pub host_name: &'a str,
    pub cgroup_id: u64,
}

/// An address to append: parsed, or already text.
pub(crate) enum IpText<'a> {
    Addr(IpAddr),
    Text(&'a str),
}

impl IpText<'_> {
    fn append_to(&self, builder: &mut StringBuilder) {
        match self {
            IpText::Addr(ip) => {
                // Writing into the builder's own buffer cannot fail.
                let _ = write!(builder, "{ip}");
                builder.append_value("");
            }
            IpText::Text(text) => builder.append_value(text),
        }
    }
}

fn append_list<'a>(builder: &mut ListBuilder<StringBuilder>, names: impl Iterator<Item = &'a str>) {
    for name in names {
        builder.values().append_value(name);
    }
    builder.append(true);
}

/// Cuts a stream of flows into batches of at most `max_rows`, or sooner
/// when the oldest buffered row has waited `max_age`.
#[derive(Debug)]
pub struct FlowBatcher {
    columns: FlowColumns,
    max_rows: usize,
    max_age: Duration,
    first_at: Option<Instant>,
}

impl FlowBatcher {
    pub fn new(max_rows: usize, max_age: Duration) -> Self {
        let max_rows = max_rows.max(1);
        FlowBatcher { columns: FlowColumns::with_capacity(max_rows), max_rows, max_age, first_at: None }
    }

    /// Buffers `flow`; returns a full batch when this row filled one.
    pub fn push(&mut self, flow: &FlowBegin) -> Option<RecordBatch> {
        self.push_at(flow, Instant::now())
    }

    /// [`push`](Self::push) with the caller's clock.
    pub fn push_at(&mut self, flow: &FlowBegin, now: Instant) -> Option<RecordBatch> {
        if self.first_at.is_none() {
            self.first_at = Some(now);
        }
        self.columns.push(flow);
        (self.columns.len() >= self.max_rows).then(|| self.take())
    }

    /// The buffered rows as a batch if the oldest has waited `max_age`.
    pub fn poll(&mut self, now: Instant) -> Option<RecordBatch> {
        let first = self.first_at?;
        (now.saturating_duration_since(first) >= self.max_age).then(|| self.take())
    }

    /// How long until [`poll`](Self::poll) would cut a batch; `None` while empty.
    pub fn due_in(&self, now: Instant) -> Option<Duration> {
        let first = self.first_at?;
        Some(self.max_age.saturating_sub(now.saturating_duration_since(first)))
    }

    /// Whatever is buffered, as a batch, if anything.
    pub fn flush(&mut self) -> Option<RecordBatch> {
        (!self.columns.is_empty()).then(|| self.take())
    }

    /// Rows buffered now.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    fn take(&mut self) -> RecordBatch {
        self.first_at = None;
        self.columns.finish()
    }
}

/// Turns `flows` into one batch.
pub fn batch_from_flows<'a>(flows: impl IntoIterator<Item = &'a FlowBegin>) -> RecordBatch {
    let mut columns = FlowColumns::default();
    for flow in flows {
        columns.push(flow);
    }
    columns.finish()
}

/// Checks that `batch` has the flows schema (names and types; metadata and
/// nullability may differ, as they do in batches other readers made).
pub fn check_flows_batch(batch: &RecordBatch) -> Result<(), StoreError> {
    let expected = flows_schema();
    let schema = batch.schema();
    if schema.fields().len() != expected.fields().len() {
        return Err(StoreError::InvalidBatch(format!(
            "{} columns, expected {}",
            schema.fields().len(),
            expected.fields().len()
        )));
    }
    for (field, want) in schema.fields().iter().zip(expected.fields()) {
        if field.name() != want.name() || !field.data_type().equals_datatype(want.data_type()) {
            return Err(StoreError::InvalidBatch(format!(
                "column {} {}, expected {} {}",
                field.name(),
                field.data_type(),
                want.name(),
                want.data_type()
            )));
        }
    }
    for (i, column) in batch.columns().iter().enumerate() {
        if column.null_count() > 0 {
            return Err(StoreError::InvalidBatch(format!("column {} has nulls", schema.field(i).name())));
        }
    }
    Ok(())
}

/// The rows of a flows batch as records.
pub fn flows_from_batch(batch: &RecordBatch) -> Result<Vec<FlowBegin>, StoreError> {
    check_flows_batch(batch)?;
    let invalid = |what: String| StoreError::InvalidBatch(what);
    let timestamp = batch.column(flow_column::TIMESTAMP).as_primitive::<TimestampNanosecondType>();
    let direction = batch.column(flow_column::CONNECTION_DIRECTION).as_string::<i32>();
    let src_ip = batch.column(flow_column::SRC_IP).as_string::<i32>();
    let dst_ip = batch.column(flow_column::DST_IP).as_string::<i32>();
    let src_port = batch.column(flow_column::SRC_PORT).as_primitive::<UInt16Type>();
    let dst_port = batch.column(flow_column::DST_PORT).as_primitive::<UInt16Type>();
    let src_domains = batch.column(flow_column::SRC_DOMAINS).as_list::<i32>();
    let dst_domains = batch.column(flow_column::DST_DOMAINS).as_list::<i32>();
    let host_name = batch.column(flow_column::HOST_NAME).as_string::<i32>();
    let cgroup_id = batch.column(flow_column::CGROUP_ID).as_primitive::<UInt64Type>();
    let domains = |list: &arrow::array::ListArray, row: usize| -> Result<DomainList, StoreError> {
        let offsets = list.value_offsets();
        let values = list
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(|| invalid("domain list of non-strings".into()))?;
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        if start == end {
            return Ok(DomainList::default());
        }
        Ok((start..end).map(|i| DomainName::from(values.value(i))).collect())
    };
    let mut host: Option<Arc<str>> = None;
    let mut flows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let parse_ip = |text: &str| {
            text.parse::<IpAddr>().map_err(|e| invalid(format!("row {row}: address {text:?}: {e}")))
        };
        let name = host_name.value(row);
        let host_name = match &host {
            Some(h) if &**h == name => Arc::clone(h),
            _ => {
                let h: Arc<str> = name.into();
                host = Some(Arc::clone(&h));
                h
            }
        };
        flows.push(FlowBegin {
            timestamp_ns: timestamp.value(row),
            direction: direction
                .value(row)
                .parse::<Direction>()
                .map_err(|e| invalid(format!("row {row}: {e}")))?,
            src_ip: parse_ip(src_ip.value(row))?,
            dst_ip: parse_ip(dst_ip.value(row))?,
            src_port: src_port.value(row),
            dst_port: dst_port.value(row),
            src_domains: domains(src_domains, row)?,
            dst_domains: domains(dst_domains, row)?,
            cgroup_id: cgroup_id.value(row),
            host_name,
        });
    }
    Ok(flows)
}

/// The timestamps of a flows batch (checked to be one).
pub(crate) fn timestamps(batch: &RecordBatch) -> &[i64] {
    batch.column(flow_column::TIMESTAMP).as_primitive::<TimestampNanosecondType>().values()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic;

    #[test]
    fn flows_round_trip_through_a_batch() {
        let flows = synthetic::edge_flows();
        let batch = batch_from_flows(&flows);
        assert_eq!(batch.schema(), flows_schema());
        assert_eq!(batch.num_rows(), flows.len());
        assert_eq!(flows_from_batch(&batch).expect("valid"), flows);
    }

    #[test]
    fn batcher_cuts_by_size() {
        let flows = synthetic::edge_flows();
        let mut batcher = FlowBatcher::new(3, Duration::from_secs(3600));
        let now = Instant::now();
        let mut batches = Vec::new();
        for flow in &flows {
            batches.extend(batcher.push_at(flow, now));
        }
        batches.extend(batcher.flush());
        assert!(batches[..batches.len() - 1].iter().all(|b| b.num_rows() == 3));
        let back: Vec<_> = batches.iter().flat_map(|b| flows_from_batch(b).expect("valid")).collect();
        assert_eq!(back, flows);
        assert!(batcher.flush().is_none());
    }

    #[test]
    fn batcher_cuts_by_age() {
        let flows = synthetic::edge_flows();
        let mut batcher = FlowBatcher::new(1000, Duration::from_millis(100));
        let start = Instant::now();
        assert_eq!(batcher.due_in(start), None);
        assert!(batcher.push_at(&flows[0], start).is_none());
        assert!(batcher.push_at(&flows[1], start + Duration::from_millis(50)).is_none());
        assert_eq!(batcher.due_in(start + Duration::from_millis(60)), Some(Duration::from_millis(40)));
        assert!(batcher.poll(start + Duration::from_millis(99)).is_none());
        let batch = batcher.poll(start + Duration::from_millis(100)).expect("aged out");
        assert_eq!(batch.num_rows(), 2);
        assert!(batcher.is_empty());
        assert!(batcher.poll(start + Duration::from_secs(10)).is_none());
    }

    #[test]
    fn batches_of_another_schema_are_refused() {
        let batch = batch_from_flows(&synthetic::edge_flows());
        let projected = batch.project(&[0, 1]).expect("projects");
        assert!(flows_from_batch(&projected).is_err());
    }
}
