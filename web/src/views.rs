//! The queries behind the map, the timeline and the flow lists. DataFusion
//! aggregates; the browser gets at most a few hundred edges and a point per
//! time bucket, whatever the store holds.
//!
//! What the views use depends on the session's columns, looked up when the
//! server starts ([`Columns`]):
//! - local nodes are containers, else processes, where flows carry the
//!   attribution columns (`containerId`, `processName`), else cgroups
//!   (`cgroupId`);
//! - remote nodes are the first DNS name of the remote end, else its address;
//! - with a `flow_ends` table, edges also carry bytes, failed attempts
//!   (`refused`, `timeout`, `unreachable`) and resets, and the timeline has
//!   failed attempts per bucket; without it, edges are sized by count.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use flowsql_query::Session;
use serde::{Deserialize, Serialize};

use crate::cells;
use crate::statement::{Limits, SqlError, read_only_options};

const MINUTE_MS: i64 = 60_000;
/// Time buckets on the timeline at most.
const MAX_BUCKETS: i64 = 1_500;
/// Bucket widths, smallest first.
const BUCKETS_MS: [i64; 8] = [
    MINUTE_MS,
    5 * MINUTE_MS,
    15 * MINUTE_MS,
    60 * MINUTE_MS,
    360 * MINUTE_MS,
    1_440 * MINUTE_MS,
    10_080 * MINUTE_MS,
    43_200 * MINUTE_MS,
];
/// Edges on the map at most (the heaviest).
pub const MAX_EDGES: usize = 300;
/// Flows listed for a node or an edge at most (the newest).
pub const MAX_FLOWS: usize = 200;
/// Series on the timeline when stacked by destination.
pub const TOP_DESTINATIONS: usize = 6;
/// End reasons of a connection attempt that never began.
const FAILED: &str = "('refused', 'timeout', 'unreachable')";
const RESETS: &str = "('reset-received', 'reset-sent')";

/// The columns the views can use, from the session's schema.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Columns {
    /// `flows` has `processName` and `containerId`.
    pub attribution: bool,
    /// A `flow_ends` table with `srcBytes`, `dstBytes` and `endReason`.
    pub ends: bool,
    /// `flow_ends` has the attribution columns too.
    pub ends_attribution: bool,
}

impl Columns {
    pub fn of(session: &Session) -> Columns {
        let schema = |name: &str| session.tables().iter().find(|t| t.name == name).map(|t| t.schema.clone());
        let has = |schema: &Option<SchemaRef>, columns: &[&str]| {
            schema.as_ref().is_some_and(|s| columns.iter().all(|c| s.field_with_name(c).is_ok()))
        };
        let flows = schema("flows");
        let ends = schema("flow_ends");
        let attribution = ["processName", "containerId"];
        Columns {
            attribution: has(&flows, &attribution),
            ends: has(
                &ends,
                &[
                    "timestamp",
                    "connectionDirection",
                    "srcIP",
                    "dstIP",
                    "srcBytes",
                    "dstBytes",
                    "endReason",
                    "cgroupId",
                ],
            ),
            ends_attribution: has(&ends, &attribution),
        }
    }
}

/// The filters every view takes (query string).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filters {
    /// Start, milliseconds since the epoch (with `until`, instead of `last`).
    pub since: Option<i64>,
    /// End (exclusive), milliseconds since the epoch.
    pub until: Option<i64>,
    /// A window ending now: `15m`, `1h`, `6h`, `24h`, `7d`, `30d`.
    pub last: Option<String>,
    /// `outgoing` or `incoming`; empty for both.
    pub direction: Option<String>,
    /// An address, a DNS name or a host name: either end, or the recording host.
    pub host: Option<String>,
    /// The responder's port.
    pub port: Option<u16>,
}

/// The time range a view covers, milliseconds since the epoch.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Range {
    pub since: i64,
    pub until: i64,
}

/// A filter that cannot be applied.
fn bad(message: impl Into<String>) -> SqlError {
    SqlError::Refused { message: message.into() }
}

/// `15m`, `1h`, `7d` in milliseconds.
fn window_ms(text: &str) -> Option<i64> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = number.parse().ok()?;
    let unit_ms = match unit {
        "m" => MINUTE_MS,
        "h" => 60 * MINUTE_MS,
        "d" => 1_440 * MINUTE_MS,
        _ => return None,
    };
    n.checked_mul(unit_ms).filter(|&ms| ms > 0 && ms <= 366 * 1_440 * MINUTE_MS)
}

/// An SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn timestamp_literal(ms: i64) -> String {
    format!("TIMESTAMP '{}'", flowsql_event::format_timestamp(ms.saturating_mul(1_000_000)))
}

impl Filters {
    /// The range, `now_ms` standing for now (default: the last hour).
    pub fn range(&self, now_ms: i64) -> Result<Range, SqlError> {
        match (self.since, self.until) {
            (Some(since), Some(until)) if since < until => Ok(Range { since, until }),
            (Some(_), Some(_)) => Err(bad("the time range is empty: since must be before until")),
            (Some(_), None) | (None, Some(_)) => Err(bad("give both since and until, or last")),
            (None, None) => {
                let last = self.last.as_deref().unwrap_or("1h");
                let window = window_ms(last)
                    .ok_or_else(|| bad(format!("last={last:?} is not a window such as 15m, 1h or 7d")))?;
                Ok(Range { since: now_ms - window, until: now_ms })
            }
        }
    }

    /// The WHERE clause for `range` and the other filters over a table
    /// with the flow columns.
    pub fn predicate(&self, range: Range) -> Result<String, SqlError> {
        let mut sql = format!(
            "\"timestamp\" >= {} AND \"timestamp\" < {}",
            timestamp_literal(range.since),
            timestamp_literal(range.until)
        );
        match self.direction.as_deref() {
            None | Some("") => {}
            Some(direction @ ("outgoing" | "incoming")) => {
                let _ = write!(sql, " AND \"connectionDirection\" = '{direction}'");
            }
            Some(other) => return Err(bad(format!("direction={other:?} is neither outgoing nor incoming"))),
        }
        if let Some(host) = self.host.as_deref().map(str::trim).filter(|h| !h.is_empty()) {
            if host.len() > 255 || host.chars().any(char::is_control) {
                return Err(bad("the host filter is not an address or a name"));
            }
            // An address is not a DNS name: its flows are found by the
            // address columns, without reading every flow's name lists.
            let is_address = host.parse::<std::net::IpAddr>().is_ok();
            let host = literal(host);
            let _ = write!(sql, " AND (\"srcIP\" = {host} OR \"dstIP\" = {host} OR \"hostName\" = {host}");
            if !is_address {
                let _ =
                    write!(sql, " OR array_has(\"dstDomains\", {host}) OR array_has(\"srcDomains\", {host})");
            }
            sql.push(')');
        }
        if let Some(port) = self.port {
            let _ = write!(sql, " AND \"dstPort\" = {port}");
        }
        Ok(sql)
    }
}

/// The local end of a flow: its container, else its process, else its cgroup.
fn local_key(attribution: bool) -> &'static str {
    if attribution {
        "CASE WHEN \"containerId\" <> '' THEN 'container ' || substr(\"containerId\", 1, 12) \
         WHEN \"processName\" <> '' THEN \"processName\" \
         ELSE 'cgroup ' || CAST(\"cgroupId\" AS VARCHAR) END"
    } else {
        "'cgroup ' || CAST(\"cgroupId\" AS VARCHAR)"
    }
}

/// The remote end's address.
const REMOTE_IP: &str = "CASE WHEN \"connectionDirection\" = 'outgoing' THEN \"dstIP\" ELSE \"srcIP\" END";

/// `names`: one name per address, the question of its newest DNS answer
/// valid in `range` (the first name a flow to it carries). Flows are
/// grouped by address first and named after: taking the first name of
/// every flow's list costs more than the whole grouping.
fn names_cte(range: Range) -> String {
    format!(
        "names AS (SELECT \"ip\", first_value(\"question\" ORDER BY \"lastSeen\" DESC) AS name FROM domains \
         WHERE \"firstSeen\" < {} AND \"expiresAt\" >= {} GROUP BY \"ip\")",
        timestamp_literal(range.until),
        timestamp_literal(range.since)
    )
}

/// The names of [`names_cte`] for one range, as a map from address to name.
type NameMap = HashMap<String, Option<String>>;

/// The names of addresses for the map and the timeline, kept across calls:
/// the newest-answer-per-address aggregate reads all of the range's
/// `domains` rows (1.2 M for a busy day, ~0.7 s), and a page asks again for
/// the same range on every filter change. Kept while `domains` has not
/// changed (SQLite's `data_version`), for the last range asked.
#[derive(Debug, Default)]
pub struct Names {
    last: tokio::sync::Mutex<Option<(Range, i64, Arc<NameMap>)>>,
}

impl Names {
    /// The names valid in `range`.
    async fn of(&self, session: &Session, range: Range, limits: Limits) -> Result<Arc<NameMap>, SqlError> {
        let version = domains_version(session).await;
        let mut last = self.last.lock().await;
        if let (Some(version), Some((cached_range, cached_version, names))) = (version, last.as_ref())
            && *cached_range == range
            && *cached_version == version
        {
            return Ok(Arc::clone(names));
        }
        let sql = format!("WITH {} SELECT \"ip\", name FROM names", names_cte(range));
        let mut names = NameMap::new();
        for batch in run(session, &sql, limits).await? {
            let (ips, questions) = (strings(&batch, 0), strings(&batch, 1));
            for (ip, question) in ips.into_iter().zip(questions) {
                if let Some(ip) = ip {
                    names.insert(ip, question);
                }
            }
        }
        let names = Arc::new(names);
        *last = version.map(|version| (range, version, Arc::clone(&names)));
        Ok(names)
    }
}

/// The `data_version` of the store's `domains`, `None` when the session's
/// `domains` is not the store's (then nothing is kept).
async fn domains_version(session: &Session) -> Option<i64> {
    let provider = session.context().table_provider("domains").await.ok()?;
    let store = provider.downcast_ref::<flowsql_query::store_tables::StoreTableProvider>()?;
    store.data_version().ok()
}

/// What an address is called on the map and the timeline: its name, else itself.
fn remote_of(names: &NameMap, ip: Option<String>) -> Option<String> {
    let ip = ip?;
    match names.get(&ip) {
        Some(Some(name)) => Some(name.clone()),
        _ => Some(ip),
    }
}

/// SQL's `sum`: NULLs skipped, NULL when all are.
fn add(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// An ascending key that sorts `None` last (SQL's `NULLS LAST`).
fn nulls_last(value: &Option<String>) -> (bool, &str) {
    (value.is_none(), value.as_deref().unwrap_or(""))
}

/// Runs generated SQL under the limits (read-only, time-limited).
pub async fn run(session: &Session, sql: &str, limits: Limits) -> Result<Vec<RecordBatch>, SqlError> {
    Ok(run_with_schema(session, sql, limits).await?.1)
}

/// [`run`], with the result's schema (known even when it has no rows).
pub async fn run_with_schema(
    session: &Session,
    sql: &str,
    limits: Limits,
) -> Result<(SchemaRef, Vec<RecordBatch>), SqlError> {
    let failed = |e: datafusion::error::DataFusionError| SqlError::Failed {
        message: flowsql_query::QueryError::from(e).to_string(),
        line: None,
        column: None,
    };
    let work = async {
        let frame = session.context().sql_with_options(sql, read_only_options()).await.map_err(failed)?;
        let schema: SchemaRef = std::sync::Arc::new(frame.schema().as_arrow().clone());
        Ok((schema, frame.collect().await.map_err(failed)?))
    };
    tokio::time::timeout(limits.timeout, work).await.unwrap_or_else(|_| {
        Err(SqlError::TimedOut {
            message: format!("the view took longer than {} s", limits.timeout.as_secs_f64()),
        })
    })
}

fn strings(batch: &RecordBatch, column: usize) -> Vec<Option<String>> {
    let array = batch.column(column);
    (0..batch.num_rows()).map(|row| cells::text_at(array.as_ref(), row)).collect()
}

fn integers(batch: &RecordBatch, column: usize) -> Vec<Option<i64>> {
    let array = batch.column(column);
    let Ok(array) = datafusion::arrow::compute::cast(array, &DataType::Int64) else {
        return vec![None; batch.num_rows()];
    };
    let values = array.as_primitive::<Int64Type>();
    (0..values.len()).map(|i| (!values.is_null(i)).then(|| values.value(i))).collect()
}

/// A node of the map.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub id: String,
    pub label: String,
    /// `local` (a process, container or cgroup) or `remote` (a name or an address).
    pub kind: &'static str,
}

/// An edge: the flows between a local and a remote node in one direction.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Edge {
    pub local: String,
    pub remote: String,
    pub direction: String,
    pub flows: i64,
    /// Payload bytes both ways (with `flow_ends`).
    pub bytes: Option<i64>,
    /// Failed connection attempts (with `flow_ends`).
    pub failed: Option<i64>,
    /// Connections that ended with a reset (with `flow_ends`).
    pub resets: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MapView {
    pub range: Range,
    pub columns: Columns,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Edges in the range; only the heaviest [`MAX_EDGES`] are in `edges`.
    pub edges_total: i64,
}

/// The map's query: flows per (local end, direction, remote address), with
/// their bytes and failures where the session has `flow_ends`. The local
/// end's label is built per row (11 distinct at 10 M flows: grouping on the
/// raw columns instead makes 1.6 M groups, slower); the addresses are named
/// and the groups merged by name after ([`map_edges`]), on ~250 k rows
/// instead of a join in the query.
pub fn map_sql(columns: Columns, predicate: &str) -> String {
    let local = local_key(columns.attribution);
    if !columns.ends {
        return format!(
            "SELECT {local} AS local, \"connectionDirection\" AS direction, {REMOTE_IP} AS ip, \
               count(*) AS flows, NULL AS bytes, NULL AS failed, NULL AS resets \
             FROM flows WHERE {predicate} GROUP BY 1, 2, 3"
        );
    }
    let end_local = local_key(columns.ends_attribution);
    format!(
        "WITH b AS (SELECT {local} AS local, \"connectionDirection\" AS direction, {REMOTE_IP} AS ip, \
                      count(*) AS flows \
                    FROM flows WHERE {predicate} GROUP BY 1, 2, 3), \
              e AS (SELECT {end_local} AS local, \"connectionDirection\" AS direction, {REMOTE_IP} AS ip, \
                      sum(CAST(\"srcBytes\" AS BIGINT) + CAST(\"dstBytes\" AS BIGINT)) AS bytes, \
                      count(*) FILTER (WHERE \"endReason\" IN {FAILED}) AS failed, \
                      count(*) FILTER (WHERE \"endReason\" IN {RESETS}) AS resets \
                    FROM flow_ends WHERE {predicate} GROUP BY 1, 2, 3) \
         SELECT coalesce(b.local, e.local) AS local, coalesce(b.direction, e.direction) AS direction, \
           coalesce(b.ip, e.ip) AS ip, coalesce(b.flows, 0) AS flows, coalesce(e.bytes, 0) AS bytes, \
           coalesce(e.failed, 0) AS failed, coalesce(e.resets, 0) AS resets \
         FROM b FULL JOIN e ON b.local = e.local AND b.direction = e.direction AND b.ip = e.ip"
    )
}

/// Flows, bytes, failed attempts and resets of an edge.
type Weights = (i64, Option<i64>, Option<i64>, Option<i64>);

/// The edges of the map from [`map_sql`]'s rows: the remote address named,
/// the rows of one (local, name, direction) summed, the heaviest
/// [`MAX_EDGES`] (flows, plus failed attempts with `flow_ends`) first, ties
/// by local, remote and direction (missing ones last, as SQL's `NULLS
/// LAST`); and how many edges there are.
fn map_edges(batches: &[RecordBatch], names: &NameMap, ends: bool) -> (Vec<Edge>, i64) {
    type Key = (Option<String>, Option<String>, Option<String>);
    let mut groups: HashMap<Key, Weights> = HashMap::new();
    for batch in batches {
        let (local, ip, direction) = (strings(batch, 0), strings(batch, 2), strings(batch, 1));
        let (flows, bytes, failed, resets) =
            (integers(batch, 3), integers(batch, 4), integers(batch, 5), integers(batch, 6));
        for (row, ((local, ip), direction)) in local.into_iter().zip(ip).zip(direction).enumerate() {
            let group =
                groups.entry((local, remote_of(names, ip), direction)).or_insert((0, None, None, None));
            group.0 = group.0.saturating_add(flows[row].unwrap_or(0));
            group.1 = add(group.1, bytes[row]);
            group.2 = add(group.2, failed[row]);
            group.3 = add(group.3, resets[row]);
        }
    }
    let total = i64::try_from(groups.len()).unwrap_or(i64::MAX);
    let mut edges: Vec<(Key, Weights)> = groups.into_iter().collect();
    let weight = |w: &Weights| if ends { w.0.saturating_add(w.2.unwrap_or(0)) } else { w.0 };
    edges.sort_by(|(a, wa), (b, wb)| {
        weight(wb)
            .cmp(&weight(wa))
            .then_with(|| nulls_last(&a.0).cmp(&nulls_last(&b.0)))
            .then_with(|| nulls_last(&a.1).cmp(&nulls_last(&b.1)))
            .then_with(|| nulls_last(&a.2).cmp(&nulls_last(&b.2)))
    });
    edges.truncate(MAX_EDGES);
    let edges = edges
        .into_iter()
        .map(|((local, remote, direction), (flows, bytes, failed, resets))| Edge {
            local: local.unwrap_or_default(),
            remote: remote.unwrap_or_default(),
            direction: direction.unwrap_or_default(),
            flows,
            bytes,
            failed,
            resets,
        })
        .collect();
    (edges, total)
}

pub async fn map(
    session: &Session,
    columns: Columns,
    filters: &Filters,
    range: Range,
    limits: Limits,
) -> Result<MapView, SqlError> {
    map_named(session, &Names::default(), columns, filters, range, limits).await
}

/// [`map`], with names kept across calls.
pub async fn map_named(
    session: &Session,
    names: &Names,
    columns: Columns,
    filters: &Filters,
    range: Range,
    limits: Limits,
) -> Result<MapView, SqlError> {
    let sql = map_sql(columns, &filters.predicate(range)?);
    let batches = run(session, &sql, limits).await?;
    let names = names.of(session, range, limits).await?;
    let (edges, edges_total) = map_edges(&batches, &names, columns.ends);
    let mut nodes: Vec<Node> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for edge in &edges {
        for (label, kind) in [(&edge.local, "local"), (&edge.remote, "remote")] {
            let id = format!("{kind}:{label}");
            if seen.insert(id.clone()) {
                nodes.push(Node { id, label: label.clone(), kind });
            }
        }
    }
    Ok(MapView { range, columns, nodes, edges, edges_total })
}

/// How to stack the timeline.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Stack {
    #[default]
    Direction,
    Destination,
}

/// The timeline's own parameter (beside the [`Filters`]; serde cannot
/// flatten numbers out of a query string).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TimelineParams {
    pub stack: Option<Stack>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    /// A direction, a destination, or `None` for all other destinations.
    pub name: Option<String>,
    pub counts: Vec<i64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineView {
    pub range: Range,
    pub columns: Columns,
    pub bucket_ms: i64,
    /// Start of each bucket, milliseconds since the epoch.
    pub buckets: Vec<i64>,
    pub series: Vec<Series>,
    /// Failed connection attempts per bucket (with `flow_ends`).
    pub failed: Option<Vec<i64>>,
}

/// The narrowest bucket that keeps the range within [`MAX_BUCKETS`].
pub fn bucket_ms(range: Range) -> i64 {
    let span = (range.until - range.since).max(1);
    BUCKETS_MS.into_iter().find(|b| span / b <= MAX_BUCKETS).unwrap_or(BUCKETS_MS[BUCKETS_MS.len() - 1])
}

fn bucket_expr(bucket_ms: i64) -> String {
    format!(
        "CAST(date_bin(INTERVAL '{} seconds', \"timestamp\", TIMESTAMP '1970-01-01T00:00:00Z') AS BIGINT) / 1000000",
        bucket_ms / 1000
    )
}

/// The timeline's query. Stacked by destination, `leaders` are the
/// [`TOP_DESTINATIONS`] busiest (from [`leaders`]) with their addresses:
/// each flow to one of those addresses counts for its name, the others for
/// `NULL` (all other destinations).
pub fn timeline_sql(
    stack: Stack,
    predicate: &str,
    bucket_ms: i64,
    leaders: &[(String, Vec<String>)],
) -> String {
    let bucket = bucket_expr(bucket_ms);
    match stack {
        Stack::Direction => format!(
            "SELECT {bucket} AS bucket, \"connectionDirection\" AS series, count(*) AS flows \
             FROM flows WHERE {predicate} GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        Stack::Destination => {
            let mut series = String::from("CASE");
            for (name, ips) in leaders.iter().filter(|(_, ips)| !ips.is_empty()) {
                let ips: Vec<String> = ips.iter().map(|ip| literal(ip)).collect();
                let _ = write!(series, " WHEN ip IN ({}) THEN {}", ips.join(", "), literal(name));
            }
            series.push_str(" ELSE CAST(NULL AS VARCHAR) END");
            format!(
                "SELECT bucket, {series} AS series, count(*) AS flows \
                 FROM (SELECT {bucket} AS bucket, {REMOTE_IP} AS ip FROM flows WHERE {predicate}) \
                 GROUP BY 1, 2 ORDER BY 1, 2"
            )
        }
    }
}

/// Flows per remote address, to choose the timeline's [`leaders`] from
/// (28 k groups for a day of 10 M flows, where (minute, address) has 2.4 M).
fn destinations_sql(predicate: &str) -> String {
    format!("SELECT {REMOTE_IP} AS ip, count(*) AS n FROM flows WHERE {predicate} GROUP BY 1")
}

/// The [`TOP_DESTINATIONS`] busiest remote ends by name (the addresses
/// named, their flows summed by name; ties by name, a missing address
/// last), each with its addresses.
fn leaders(batches: &[RecordBatch], names: &NameMap) -> Vec<(String, Vec<String>)> {
    let mut remotes: HashMap<Option<String>, (i64, Vec<String>)> = HashMap::new();
    for batch in batches {
        let (ips, flows) = (strings(batch, 0), integers(batch, 1));
        for (row, ip) in ips.into_iter().enumerate() {
            let remote = remotes.entry(remote_of(names, ip.clone())).or_insert((0, Vec::new()));
            remote.0 = remote.0.saturating_add(flows[row].unwrap_or(0));
            remote.1.extend(ip);
        }
    }
    let mut remotes: Vec<_> = remotes.into_iter().collect();
    remotes.sort_by(|(a, (na, _)), (b, (nb, _))| nb.cmp(na).then_with(|| nulls_last(a).cmp(&nulls_last(b))));
    remotes.truncate(TOP_DESTINATIONS);
    remotes
        .into_iter()
        .filter_map(|(remote, (_, mut ips))| {
            ips.sort();
            ips.dedup();
            remote.map(|remote| (remote, ips))
        })
        .collect()
}

fn failed_sql(predicate: &str, bucket_ms: i64) -> String {
    format!(
        "SELECT {} AS bucket, count(*) AS failed FROM flow_ends \
         WHERE {predicate} AND \"endReason\" IN {FAILED} GROUP BY 1 ORDER BY 1",
        bucket_expr(bucket_ms)
    )
}

pub async fn timeline(
    session: &Session,
    columns: Columns,
    filters: &Filters,
    params: &TimelineParams,
    range: Range,
    limits: Limits,
) -> Result<TimelineView, SqlError> {
    timeline_named(session, &Names::default(), columns, filters, params, range, limits).await
}

/// [`timeline`], with names kept across calls.
pub async fn timeline_named(
    session: &Session,
    names: &Names,
    columns: Columns,
    filters: &Filters,
    params: &TimelineParams,
    range: Range,
    limits: Limits,
) -> Result<TimelineView, SqlError> {
    let predicate = filters.predicate(range)?;
    let bucket_ms = bucket_ms(range);
    let first = range.since.div_euclid(bucket_ms) * bucket_ms;
    let count = ((range.until - 1 - first).div_euclid(bucket_ms) + 1).max(1) as usize;
    let buckets: Vec<i64> = (0..count).map(|i| first + i as i64 * bucket_ms).collect();
    let index = |t: i64| usize::try_from((t - first).div_euclid(bucket_ms)).ok().filter(|&i| i < count);

    let leaders = match params.stack.unwrap_or_default() {
        Stack::Direction => Vec::new(),
        Stack::Destination => {
            let destinations = run(session, &destinations_sql(&predicate), limits).await?;
            leaders(&destinations, &*names.of(session, range, limits).await?)
        }
    };
    let sql = timeline_sql(params.stack.unwrap_or_default(), &predicate, bucket_ms, &leaders);
    let mut series: Vec<Series> = Vec::new();
    if params.stack.unwrap_or_default() == Stack::Direction {
        for name in ["outgoing", "incoming"] {
            series.push(Series { name: Some(name.to_owned()), counts: vec![0; count] });
        }
    }
    for batch in run(session, &sql, limits).await? {
        let (times, names, flows) = (integers(&batch, 0), strings(&batch, 1), integers(&batch, 2));
        for row in 0..batch.num_rows() {
            let Some(slot) = times[row].and_then(index) else { continue };
            let position = match series.iter().position(|s| s.name == names[row]) {
                Some(position) => position,
                None => {
                    series.push(Series { name: names[row].clone(), counts: vec![0; count] });
                    series.len() - 1
                }
            };
            series[position].counts[slot] += flows[row].unwrap_or(0);
        }
    }
    // The busiest destinations first, the others last.
    if params.stack == Some(Stack::Destination) {
        series.sort_by_key(|s| (s.name.is_none(), std::cmp::Reverse(s.counts.iter().sum::<i64>())));
    }
    let failed = if columns.ends {
        let mut failed = vec![0; count];
        for batch in run(session, &failed_sql(&predicate, bucket_ms), limits).await? {
            let (times, n) = (integers(&batch, 0), integers(&batch, 1));
            for row in 0..batch.num_rows() {
                if let Some(slot) = times[row].and_then(index) {
                    failed[slot] += n[row].unwrap_or(0);
                }
            }
        }
        Some(failed)
    } else {
        None
    };
    Ok(TimelineView { range, columns, bucket_ms, buckets, series, failed })
}

/// Which flows to list: those of a node, or of an edge (beside the
/// [`Filters`]).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FlowsParams {
    pub local: Option<String>,
    pub remote: Option<String>,
}

/// A table of text cells.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub fn from_batches(schema: &SchemaRef, batches: &[RecordBatch]) -> Table {
        Table {
            columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
            rows: batches.iter().flat_map(cells::rows).collect(),
        }
    }
}

pub fn flows_sql(
    columns: Columns,
    filters: &Filters,
    params: &FlowsParams,
    range: Range,
) -> Result<String, SqlError> {
    let mut predicate = filters.predicate(range)?;
    if let Some(local) = &params.local {
        let _ = write!(predicate, " AND {} = {}", local_key(columns.attribution), literal(local));
    }
    if let Some(remote) = &params.remote {
        let _ = write!(predicate, " AND coalesce(names.name, {REMOTE_IP}) = {}", literal(remote));
    }
    let attribution = if columns.attribution { ", \"processName\", \"containerId\"" } else { "" };
    Ok(format!(
        "WITH {names} \
         SELECT \"timestamp\", \"connectionDirection\", \"srcIP\", \"srcPort\", \"dstIP\", \"dstPort\", \
           \"srcDomains\", \"dstDomains\", \"hostName\", \"cgroupId\"{attribution} \
         FROM flows LEFT JOIN names ON names.ip = {REMOTE_IP} \
         WHERE {predicate} ORDER BY \"timestamp\" DESC LIMIT {MAX_FLOWS}",
        names = names_cte(range)
    ))
}

pub async fn flows(
    session: &Session,
    columns: Columns,
    filters: &Filters,
    params: &FlowsParams,
    range: Range,
    limits: Limits,
) -> Result<Table, SqlError> {
    let sql = flows_sql(columns, filters, params, range)?;
    let (schema, batches) = run_with_schema(session, &sql, limits).await?;
    Ok(Table::from_batches(&schema, &batches))
}

/// The newest flow's time, to open a store whose flows are older than the
/// default window where its flows are.
pub async fn newest(session: &Session, limits: Limits) -> Result<Option<i64>, SqlError> {
    let batches =
        run(session, "SELECT CAST(max(\"timestamp\") AS BIGINT) / 1000000 FROM flows", limits).await?;
    Ok(batches.first().filter(|b| b.num_rows() > 0).and_then(|b| integers(b, 0)[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_ranges() {
        assert_eq!(window_ms("15m"), Some(15 * MINUTE_MS));
        assert_eq!(window_ms("7d"), Some(7 * 1_440 * MINUTE_MS));
        assert_eq!(window_ms("0h"), None);
        assert_eq!(window_ms("h"), None);
        assert_eq!(window_ms("5y"), None);
        let now = 1_000 * MINUTE_MS;
        assert_eq!(Filters::default().range(now), Ok(Range { since: now - 60 * MINUTE_MS, until: now }));
        let fixed = Filters { since: Some(1), until: Some(2), ..Filters::default() };
        assert_eq!(fixed.range(now), Ok(Range { since: 1, until: 2 }));
        assert!(Filters { since: Some(2), until: Some(1), ..Filters::default() }.range(now).is_err());
    }

    #[test]
    fn buckets_keep_the_timeline_small() {
        let range = |minutes: i64| Range { since: 0, until: minutes * MINUTE_MS };
        assert_eq!(bucket_ms(range(60)), MINUTE_MS);
        assert_eq!(bucket_ms(range(1_440)), MINUTE_MS);
        assert_eq!(bucket_ms(range(7 * 1_440)), 15 * MINUTE_MS);
        assert_eq!(bucket_ms(range(30 * 1_440)), 60 * MINUTE_MS);
    }

    fn batch(columns: Vec<(&str, datafusion::arrow::array::ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).expect("batch")
    }

    #[test]
    fn map_edges_merge_addresses_by_name_heaviest_first() {
        use datafusion::arrow::array::{Int64Array, StringArray};
        let names: NameMap = [
            ("10.0.0.1".to_owned(), Some("a.example".to_owned())),
            ("10.0.0.2".to_owned(), Some("a.example".to_owned())),
            ("10.0.0.3".to_owned(), None),
        ]
        .into();
        let text = |v: Vec<Option<&str>>| std::sync::Arc::new(StringArray::from(v)) as _;
        let rows = batch(vec![
            ("local", text(vec![Some("p"), Some("p"), Some("q"), None, Some("p")])),
            ("direction", text(vec![Some("outgoing"); 5])),
            ("ip", text(vec![Some("10.0.0.1"), Some("10.0.0.2"), Some("10.0.0.3"), Some("10.0.0.9"), None])),
            ("flows", std::sync::Arc::new(Int64Array::from(vec![2, 3, 5, 5, 1])) as _),
            ("bytes", std::sync::Arc::new(Int64Array::from(vec![Some(1), None, None, None, None])) as _),
            ("failed", std::sync::Arc::new(Int64Array::from(vec![None::<i64>; 5])) as _),
            ("resets", std::sync::Arc::new(Int64Array::from(vec![None::<i64>; 5])) as _),
        ]);
        let (edges, total) = map_edges(&[rows], &names, false);
        assert_eq!(total, 4);
        let got: Vec<(&str, &str, i64, Option<i64>)> =
            edges.iter().map(|e| (e.local.as_str(), e.remote.as_str(), e.flows, e.bytes)).collect();
        // 5 and 5: "p" before "q" before no local at all; an unnamed address is itself.
        assert_eq!(
            got,
            vec![
                ("p", "a.example", 5, Some(1)),
                ("q", "10.0.0.3", 5, None),
                ("", "10.0.0.9", 5, None),
                ("p", "", 1, None)
            ]
        );
    }

    #[test]
    fn leaders_are_the_busiest_names_with_their_addresses() {
        use datafusion::arrow::array::{Int64Array, StringArray};
        let names: NameMap = [
            ("10.0.0.1".to_owned(), Some("b.example".to_owned())),
            ("10.0.0.2".to_owned(), Some("b.example".to_owned())),
        ]
        .into();
        let ips: Vec<Option<String>> = (1..=9).map(|i| Some(format!("10.0.0.{i}"))).chain([None]).collect();
        let flows: Vec<i64> = vec![4, 4, 1, 2, 3, 4, 5, 6, 7, 100];
        let rows = batch(vec![
            ("ip", std::sync::Arc::new(StringArray::from(ips)) as _),
            ("n", std::sync::Arc::new(Int64Array::from(flows)) as _),
        ]);
        let leaders = leaders(&[rows], &names);
        // The missing address is the busiest but names no series; b.example is 8.
        let expected: Vec<(String, Vec<String>)> = vec![
            ("b.example".into(), vec!["10.0.0.1".into(), "10.0.0.2".into()]),
            ("10.0.0.9".into(), vec!["10.0.0.9".into()]),
            ("10.0.0.8".into(), vec!["10.0.0.8".into()]),
            ("10.0.0.7".into(), vec!["10.0.0.7".into()]),
            ("10.0.0.6".into(), vec!["10.0.0.6".into()]),
        ];
        assert_eq!(leaders, expected);
        let sql = timeline_sql(Stack::Destination, "true", MINUTE_MS, &leaders);
        assert!(sql.contains("WHEN ip IN ('10.0.0.1', '10.0.0.2') THEN 'b.example'"), "{sql}");
    }

    #[test]
    fn filters_quote_what_users_type() {
        let filters = Filters {
            direction: Some("outgoing".into()),
            host: Some("x' OR 1=1 --".into()),
            port: Some(443),
            ..Filters::default()
        };
        let sql = filters.predicate(Range { since: 0, until: 60_000 }).expect("valid");
        assert!(sql.contains("\"srcIP\" = 'x'' OR 1=1 --'"), "{sql}");
        assert!(sql.contains("\"dstPort\" = 443"), "{sql}");
        assert!(sql.contains("TIMESTAMP '1970-01-01T00:01:00.000000000Z'"), "{sql}");
        assert!(
            Filters { direction: Some("sideways".into()), ..Filters::default() }
                .predicate(Range { since: 0, until: 1 })
                .is_err()
        );
        let address = Filters { host: Some("10.0.0.1".into()), ..Filters::default() };
        let sql = address.predicate(Range { since: 0, until: 1 }).expect("valid");
        assert!(sql.contains("\"dstIP\" = '10.0.0.1'") && !sql.contains("array_has"), "{sql}");
        let name = Filters { host: Some("example.com".into()), ..Filters::default() };
        let sql = name.predicate(Range { since: 0, until: 1 }).expect("valid");
        assert!(sql.contains("array_has(\"dstDomains\", 'example.com')"), "{sql}");
        assert!(
            Filters { host: Some("a\nb".into()), ..Filters::default() }
                .predicate(Range { since: 0, until: 1 })
                .is_err()
        );
    }
}
