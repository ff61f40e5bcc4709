//! The `flows` table: [`FlowBegin`] records into Arrow record batches and
//! back.
//!
//! [`FlowColumns`] appends rows straight into Arrow builders and stores
//! every value that many rows share once per batch, as a dictionary: the
//! direction, the host name, each address (formatted once per batch, not
//! once per row) and each list of domain names. The capture's name cache
//! hands every flow to an address the same shared list, so a flow that
//! carries 32 names costs a dictionary key, not 32 strings. Batches built
//! here are what the hot tier stores; [`crate::EventTable::conform`] (or
//! [`batch_from_flows`]) gives the plain `flows` schema SQL sees.
//!
//! [`FlowBatcher`] cuts batches by size or age, whichever comes first;
//! [`flows_from_batch`] turns a batch back into records.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, DictionaryArray, Int32Builder, ListBuilder, StringArray,
    StringBuilder, TimestampNanosecondBuilder, UInt16Builder, UInt32Array, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{
    DataType, Field, Int32Type, Schema, SchemaRef, TimestampNanosecondType, UInt16Type, UInt32Type,
    UInt64Type,
};
use arrow::record_batch::RecordBatch;
use flowsql_event::{Attribution, Direction, DomainList, DomainName, FlowBegin};

use crate::StoreError;
use crate::schema::{flow_column, flows_schema, flows_table};
use crate::table::UTC;

/// A fast hash map, seeded per map (addresses come from the network).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// `logical` with the columns at `dictionary` as `Dictionary<Int32, _>`.
pub(crate) fn storage_schema(logical: &Schema, dictionary: &[usize]) -> SchemaRef {
    let fields: Vec<Field> = logical
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if dictionary.contains(&i) {
                f.as_ref().clone().with_data_type(DataType::Dictionary(
                    Box::new(DataType::Int32),
                    Box::new(f.data_type().clone()),
                ))
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The schema of the batches [`FlowColumns`] builds: `flows` with the
/// shared values as `Dictionary<Int32, _>`.
pub fn flows_storage_schema() -> SchemaRef {
    use flow_column as c;
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        storage_schema(
            &flows_schema(),
            &[
                c::CONNECTION_DIRECTION,
                c::SRC_IP,
                c::DST_IP,
                c::SRC_DOMAINS,
                c::DST_DOMAINS,
                c::HOST_NAME,
                c::PROCESS_NAME,
                c::EXECUTABLE,
                c::CGROUP_PATH,
                c::CONTAINER_ID,
            ],
        )
    }))
}

/// Values seen in this batch, each with its dictionary key. `K` identifies
/// a value (an address, or the allocation of a shared string or list, kept
/// alive here so that its address cannot be reused for another value
/// while the batch is built).
#[derive(Debug)]
pub(crate) struct Interner<K, B> {
    keys: FastMap<K, i32>,
    values: B,
    /// The dictionary key of each row.
    rows: Int32Builder,
}

impl<K: Hash + Eq, B: ArrayBuilder> Interner<K, B> {
    pub(crate) fn new(values: B, rows: usize) -> Self {
        Interner { keys: FastMap::default(), values, rows: Int32Builder::with_capacity(rows) }
    }

    /// Appends the row's key for `key`, adding its value with `add` the
    /// first time.
    pub(crate) fn push(&mut self, key: K, add: impl FnOnce(&mut B)) {
        let next = i32::try_from(self.keys.len()).unwrap_or(i32::MAX);
        let values = &mut self.values;
        let index = *self.keys.entry(key).or_insert_with(|| {
            add(values);
            next
        });
        self.rows.append_value(index);
    }

    pub(crate) fn finish(&mut self) -> ArrayRef {
        self.keys.clear();
        let keys = self.rows.finish();
        let values = self.values.finish();
        // Keys index values appended in the same order: always valid.
        Arc::new(
            DictionaryArray::<Int32Type>::try_new(keys, values)
                .unwrap_or_else(|e| unreachable!("interned keys point past their values: {e}")),
        )
    }
}

/// A shared allocation as a map key: its address, with the allocation kept
/// alive by the map entry's owner.
#[derive(Debug)]
pub(crate) struct Shared<T: ?Sized>(pub(crate) Arc<T>);

impl<T: ?Sized> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<T: ?Sized> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T: ?Sized> Eq for Shared<T> {}

impl<T: ?Sized> Hash for Shared<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as *const u8 as usize).hash(state);
    }
}

/// A domain list as a key: `Empty` for every empty list, whatever its
/// allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ListKey {
    Empty,
    Shared(Shared<[DomainName]>),
}

/// Arrow builders for the `flows` columns; see the module documentation.
#[derive(Debug)]
pub struct FlowColumns {
    timestamp: TimestampNanosecondBuilder,
    direction: Interner<Direction, StringBuilder>,
    src_ip: Interner<IpAddr, StringBuilder>,
    dst_ip: Interner<IpAddr, StringBuilder>,
    src_port: UInt16Builder,
    dst_port: UInt16Builder,
    src_domains: Interner<ListKey, ListBuilder<StringBuilder>>,
    dst_domains: Interner<ListKey, ListBuilder<StringBuilder>>,
    host_name: Interner<Shared<str>, StringBuilder>,
    cgroup_id: UInt64Builder,
    flow_id: UInt64Builder,
    attribution: AttributionColumns,
}

/// The attribution columns' builders, shared by `flows` and `flow_ends`:
/// names, executables and cgroups are few, so each is a dictionary.
#[derive(Debug)]
pub(crate) struct AttributionColumns {
    process_id: UInt32Builder,
    process_name: Interner<Arc<str>, StringBuilder>,
    user_id: UInt32Builder,
    executable: Interner<Arc<str>, StringBuilder>,
    cgroup_path: Interner<Arc<str>, StringBuilder>,
    container_id: Interner<Arc<str>, StringBuilder>,
}

impl AttributionColumns {
    pub(crate) fn with_capacity(rows: usize) -> Self {
        let strings = || Interner::<Arc<str>, _>::new(StringBuilder::new(), rows);
        AttributionColumns {
            process_id: UInt32Builder::with_capacity(rows),
            process_name: strings(),
            user_id: UInt32Builder::with_capacity(rows),
            executable: strings(),
            cgroup_path: strings(),
            container_id: strings(),
        }
    }

    pub(crate) fn push(&mut self, a: &Attribution) {
        self.process_id.append_option(a.process_id);
        push_string(&mut self.process_name, &a.process_name);
        self.user_id.append_option(a.user_id);
        push_string(&mut self.executable, &a.executable);
        push_string(&mut self.cgroup_path, &a.cgroup_path);
        push_string(&mut self.container_id, &a.container_id);
    }

    /// The six columns, in the schemas' order.
    pub(crate) fn finish(&mut self) -> [ArrayRef; 6] {
        [
            Arc::new(self.process_id.finish()),
            self.process_name.finish(),
            Arc::new(self.user_id.finish()),
            self.executable.finish(),
            self.cgroup_path.finish(),
            self.container_id.finish(),
        ]
    }
}

/// Appends a string shared by many rows (interned by its text).
pub(crate) fn push_string(column: &mut Interner<Arc<str>, StringBuilder>, value: &Arc<str>) {
    column.push(Arc::clone(value), |b| b.append_value(&**value));
}

/// Reads the six attribution columns (plain types) starting at `first`.
pub(crate) struct AttributionReader<'a> {
    process_id: &'a UInt32Array,
    process_name: &'a StringArray,
    user_id: &'a UInt32Array,
    executable: &'a StringArray,
    cgroup_path: &'a StringArray,
    container_id: &'a StringArray,
    /// The last strings read, shared while they repeat.
    last: [Option<Arc<str>>; 4],
}

impl<'a> AttributionReader<'a> {
    pub(crate) fn new(batch: &'a RecordBatch, first: usize) -> Self {
        AttributionReader {
            process_id: batch.column(first).as_primitive::<UInt32Type>(),
            process_name: batch.column(first + 1).as_string::<i32>(),
            user_id: batch.column(first + 2).as_primitive::<UInt32Type>(),
            executable: batch.column(first + 3).as_string::<i32>(),
            cgroup_path: batch.column(first + 4).as_string::<i32>(),
            container_id: batch.column(first + 5).as_string::<i32>(),
            last: Default::default(),
        }
    }

    pub(crate) fn row(&mut self, row: usize) -> Attribution {
        let mut shared = |slot: usize, value: &str| -> Arc<str> {
            match &self.last[slot] {
                Some(last) if &**last == value => Arc::clone(last),
                _ => {
                    let value: Arc<str> = value.into();
                    self.last[slot] = Some(Arc::clone(&value));
                    value
                }
            }
        };
        Attribution {
            process_id: self.process_id.is_valid(row).then(|| self.process_id.value(row)),
            process_name: shared(0, self.process_name.value(row)),
            user_id: self.user_id.is_valid(row).then(|| self.user_id.value(row)),
            executable: shared(1, self.executable.value(row)),
            cgroup_path: shared(2, self.cgroup_path.value(row)),
            container_id: shared(3, self.container_id.value(row)),
        }
    }
}

impl Default for FlowColumns {
    fn default() -> Self {
        FlowColumns::with_capacity(1024)
    }
}

impl FlowColumns {
    pub fn with_capacity(rows: usize) -> Self {
        let strings = || StringBuilder::new();
        let lists = || ListBuilder::new(StringBuilder::new());
        FlowColumns {
            timestamp: TimestampNanosecondBuilder::with_capacity(rows).with_timezone(UTC),
            direction: Interner::new(strings(), rows),
            src_ip: Interner::new(strings(), rows),
            dst_ip: Interner::new(strings(), rows),
            src_port: UInt16Builder::with_capacity(rows),
            dst_port: UInt16Builder::with_capacity(rows),
            src_domains: Interner::new(lists(), rows),
            dst_domains: Interner::new(lists(), rows),
            host_name: Interner::new(strings(), rows),
            cgroup_id: UInt64Builder::with_capacity(rows),
            flow_id: UInt64Builder::with_capacity(rows),
            attribution: AttributionColumns::with_capacity(rows),
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
        self.timestamp.append_value(flow.timestamp_ns);
        self.direction.push(flow.direction, |b| b.append_value(flow.direction.as_str()));
        push_ip(&mut self.src_ip, flow.src_ip);
        push_ip(&mut self.dst_ip, flow.dst_ip);
        self.src_port.append_value(flow.src_port);
        self.dst_port.append_value(flow.dst_port);
        push_list(&mut self.src_domains, &flow.src_domains);
        push_list(&mut self.dst_domains, &flow.dst_domains);
        self.host_name.push(Shared(Arc::clone(&flow.host_name)), |b| b.append_value(&*flow.host_name));
        self.cgroup_id.append_value(flow.cgroup_id);
        self.flow_id.append_value(flow.flow_id);
        self.attribution.push(&flow.attribution);
    }

    /// The rows appended so far as one batch of [`flows_storage_schema`];
    /// the builders start over empty.
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
            self.host_name.finish(),
            Arc::new(self.cgroup_id.finish()),
            Arc::new(self.flow_id.finish()),
        ];
        columns.extend(self.attribution.finish());
        // The builders make exactly the storage schema's types, non-null, of one length.
        RecordBatch::try_new(flows_storage_schema(), columns)
            .unwrap_or_else(|e| unreachable!("flow builders disagree with the flows schema: {e}"))
    }
}

pub(crate) fn push_ip(column: &mut Interner<IpAddr, StringBuilder>, ip: IpAddr) {
    column.push(ip, |b| {
        // Writing into the builder's own buffer cannot fail.
        let _ = write!(b, "{ip}");
        b.append_value("");
    });
}

pub(crate) fn push_list(column: &mut Interner<ListKey, ListBuilder<StringBuilder>>, names: &DomainList) {
    let key = if names.is_empty() { ListKey::Empty } else { ListKey::Shared(Shared(Arc::clone(names))) };
    column.push(key, |b| {
        for name in names.iter() {
            b.values().append_value(&**name);
        }
        b.append(true);
    });
}

/// Builders that turn rows of one type into record batches.
pub trait RowColumns {
    type Row;
    fn with_capacity(rows: usize) -> Self;
    fn push(&mut self, row: &Self::Row);
    /// Rows appended since the last [`finish`](Self::finish).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The rows appended so far as one batch; the builders start over.
    fn finish(&mut self) -> RecordBatch;
}

impl RowColumns for FlowColumns {
    type Row = FlowBegin;

    fn with_capacity(rows: usize) -> Self {
        FlowColumns::with_capacity(rows)
    }

    fn push(&mut self, row: &FlowBegin) {
        FlowColumns::push(self, row);
    }

    fn len(&self) -> usize {
        FlowColumns::len(self)
    }

    fn finish(&mut self) -> RecordBatch {
        FlowColumns::finish(self)
    }
}

/// Cuts a stream of rows into batches of at most `max_rows`, or sooner
/// when the oldest buffered row has waited `max_age`.
#[derive(Debug)]
pub struct Batcher<C> {
    columns: C,
    max_rows: usize,
    max_age: Duration,
    first_at: Option<Instant>,
}

/// Batches of `flows`.
pub type FlowBatcher = Batcher<FlowColumns>;

impl<C: RowColumns> Batcher<C> {
    pub fn new(max_rows: usize, max_age: Duration) -> Self {
        let max_rows = max_rows.max(1);
        Batcher { columns: C::with_capacity(max_rows.min(16 * 1024)), max_rows, max_age, first_at: None }
    }

    /// Buffers `row`; returns a full batch when this row filled one.
    pub fn push(&mut self, row: &C::Row) -> Option<RecordBatch> {
        self.push_at(row, Instant::now())
    }

    /// [`push`](Self::push) with the caller's clock.
    pub fn push_at(&mut self, row: &C::Row, now: Instant) -> Option<RecordBatch> {
        if self.first_at.is_none() {
            self.first_at = Some(now);
        }
        self.columns.push(row);
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

/// `flows` as one batch of the plain `flows` schema.
pub fn batch_from_flows<'a>(flows: impl IntoIterator<Item = &'a FlowBegin>) -> RecordBatch {
    let mut columns = FlowColumns::default();
    for flow in flows {
        columns.push(flow);
    }
    let stored = columns.finish();
    // Unpacking the dictionaries the builders made cannot fail.
    flows_table().conform(&stored).unwrap_or_else(|e| unreachable!("flows batch does not conform: {e}"))
}

/// The rows of a flows batch (plain or as stored) as records.
pub fn flows_from_batch(batch: &RecordBatch) -> Result<Vec<FlowBegin>, StoreError> {
    let table = flows_table();
    table.check(batch)?;
    let batch = table.conform(batch)?;
    let invalid = |reason: String| StoreError::InvalidBatch { table: table.name(), reason };
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
    let flow_id = batch.column(flow_column::FLOW_ID).as_primitive::<UInt64Type>();
    let mut attribution = AttributionReader::new(&batch, flow_column::PROCESS_ID);
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
            flow_id: flow_id.value(row),
            attribution: attribution.row(row),
        });
    }
    Ok(flows)
}

/// The number of distinct values each dictionary column of a stored flows
/// batch holds (benchmarks, tests).
pub fn dictionary_sizes(batch: &RecordBatch) -> Vec<(String, usize)> {
    batch
        .schema_ref()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter_map(|(field, column)| {
            column.as_any_dictionary_opt().map(|dict| (field.name().clone(), dict.values().len()))
        })
        .collect()
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
    fn shared_values_are_stored_once_per_batch() {
        // 100 flows to one address that carries 32 names (the cache's shared
        // list), from two local addresses.
        let names: DomainList =
            (0..32).map(|i| DomainName::from(format!("n{i}.cdn.example").as_str())).collect();
        let host: Arc<str> = "h".into();
        let flows: Vec<FlowBegin> = (0..100u16)
            .map(|i| FlowBegin {
                timestamp_ns: i64::from(i),
                direction: Direction::Outgoing,
                src_ip: if i % 2 == 0 {
                    "10.0.0.1".parse().expect("ip")
                } else {
                    "10.0.0.2".parse().expect("ip")
                },
                dst_ip: "192.0.2.9".parse().expect("ip"),
                src_port: 40000 + i,
                dst_port: 443,
                src_domains: DomainList::default(),
                dst_domains: Arc::clone(&names),
                cgroup_id: 1,
                host_name: Arc::clone(&host),
                flow_id: u64::from(i),
                attribution: Attribution {
                    process_id: Some(7),
                    process_name: format!("curl{}", i % 2).into(),
                    ..Attribution::default()
                },
            })
            .collect();
        let mut columns = FlowColumns::default();
        for flow in &flows {
            columns.push(flow);
        }
        let stored = columns.finish();
        let sizes: std::collections::BTreeMap<_, _> = dictionary_sizes(&stored).into_iter().collect();
        assert_eq!(sizes["srcIP"], 2);
        assert_eq!(sizes["dstIP"], 1);
        assert_eq!(sizes["dstDomains"], 1, "one list of 32 names for 100 rows");
        assert_eq!(sizes["srcDomains"], 1);
        assert_eq!(sizes["hostName"], 1);
        assert_eq!(sizes["processName"], 2, "two names, by their text");
        assert_eq!(sizes["executable"], 1);
        let list_values = stored.column(flow_column::DST_DOMAINS).as_any_dictionary().values().len();
        assert_eq!(list_values, 1);
        assert_eq!(flows_from_batch(&stored).expect("valid"), flows, "the same values as SQL sees them");
        // The next batch starts over.
        columns.push(&flows[0]);
        assert_eq!(columns.finish().num_rows(), 1);
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
