//! The capture's numbers, in two places from one list: the Prometheus text
//! format served at `GET /metrics` ([`http`]), and the `counters` of the
//! `capture_stats` rows the store writer records every few seconds
//! ([`capture_stats_counters`]; the writer adds its own).
//!
//! Every counter of the metrics is in `capture_stats` under the name shown
//! in [`CAPTURE_SERIES`] and [`WRITER_SERIES`] (`rowsStored`,
//! `rowsNotStored` and `storeFailures` are columns of their own); the rows
//! and bytes per tier and the last export are the store's own state, read
//! from it at each scrape ([`probe`]).

pub mod http;
pub mod probe;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use flowsql_capture::{AttributionStats, DnsStats, KernelCounters, RingBufFill};
use flowsql_store::WriterCounters;
use flowsql_store::latency::BUCKET_BOUNDS_NS;

/// What the capture loop reports when asked.
#[derive(Debug, Clone, Default)]
pub struct CaptureSnapshot {
    pub kernel: KernelCounters,
    pub dns: DnsStats,
    /// Who-connected: rows not attributed, caches' size.
    pub attribution: AttributionStats,
    pub ring: RingBufFill,
    /// Kernel records that could not be decoded.
    pub undecodable: u64,
    /// DNS observations the writer had no room for.
    pub domains_not_stored: u64,
    /// The store writer's counters, when the capture stores.
    pub writer: Option<WriterCounters>,
    /// Messages waiting for the writer.
    pub backlog: usize,
}

/// What the store holds, read at a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreSnapshot {
    pub hot_rows: u64,
    pub hot_bytes: u64,
    pub cold_rows: u64,
    pub cold_bytes: u64,
    pub cold_files: u64,
    /// Unix seconds of the last export that succeeded.
    pub last_export_success: Option<f64>,
    /// Whether the last export run failed.
    pub last_export_failed: bool,
    /// Uploads to object storage, when a remote is set: files and bytes
    /// not uploaded yet, files uploaded, whether the last attempt failed.
    pub upload: Option<(u64, u64, u64, bool)>,
}

impl StoreSnapshot {
    /// The numbers of a store's status.
    pub fn from_status(status: &flowsql_store::StoreStatus) -> StoreSnapshot {
        StoreSnapshot {
            hot_rows: status.hot_rows,
            hot_bytes: status.database_bytes,
            cold_rows: status.cold_rows,
            cold_bytes: status.cold_bytes,
            cold_files: status.cold_files,
            last_export_success: status.last_export_success_ns.map(|ns| ns as f64 / 1e9),
            last_export_failed: status.last_export.as_ref().is_some_and(|e| e.error.is_some()),
            upload: status.upload.as_ref().map(|u| {
                let failed = u.last.as_ref().is_some_and(|l| l.error.is_some());
                (u.backlog_files, u.backlog_bytes, u.uploaded_files, failed)
            }),
        }
    }
}

/// A metric family: name, type and help.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const fn family(name: &'static str, kind: &'static str, help: &'static str) -> Family {
    Family { name, kind, help }
}

/// Every family, in the order served.
const FAMILIES: &[Family] = &[
    family("flowsql_build_info", "gauge", "flowsql's version (always 1)."),
    family("flowsql_start_time_seconds", "gauge", "When this capture started, Unix seconds."),
    family(
        "flowsql_events_total",
        "counter",
        "Records the kernel programs delivered through the ring buffer, by kind (flow: begins, end: connection ends, info: execs and cgroups).",
    ),
    family(
        "flowsql_lost_total",
        "counter",
        "What was lost, by cause: ring_buffer_full (the kernel found no room; kind flow, end, dns or info), not_stored (the store could not keep it; kind flow (begins and ends) or domain).",
    ),
    family(
        "flowsql_begins_recovered_total",
        "counter",
        "Connection begins reported when the handshake completed because no SYN-ACK was seen (SYN cookies).",
    ),
    family(
        "flowsql_socket_storage_failures_total",
        "counter",
        "Sockets the kernel could not give flowsql's storage to (memory): not followed.",
    ),
    family(
        "flowsql_unattributed_rows_total",
        "counter",
        "Rows whose process could not be named (sockets older than the capture whose holder is unknown).",
    ),
    family("flowsql_cgroup_unknown_rows_total", "counter", "Rows whose socket's cgroup had no known path."),
    family(
        "flowsql_executable_unknown_rows_total",
        "counter",
        "Rows whose process's executable could not be named.",
    ),
    family("flowsql_attribution_cache_entries", "gauge", "Cgroups, executables, names and owners held."),
    family("flowsql_attribution_cache_bytes", "gauge", "Approximate memory held by the attribution caches."),
    family(
        "flowsql_synack_duplicates_total",
        "counter",
        "SYN-ACKs of connections already reported (retransmissions), not reported again.",
    ),
    family(
        "flowsql_packets_unreadable_total",
        "counter",
        "Packets whose headers the kernel program could not read.",
    ),
    family(
        "flowsql_ipv6_ext_too_deep_total",
        "counter",
        "IPv6 packets with more extension headers than the program follows.",
    ),
    family(
        "flowsql_connection_map_errors_total",
        "counter",
        "Connection-map insert failures in the kernel (the flow was still reported).",
    ),
    family("flowsql_records_undecodable_total", "counter", "Ring buffer records that could not be decoded."),
    family(
        "flowsql_dns_truncated_total",
        "counter",
        "DNS messages longer than the kernel copies (parsed as far as they go).",
    ),
    family(
        "flowsql_dns_messages_total",
        "counter",
        "DNS messages read (UDP datagrams, reassembled TCP messages).",
    ),
    family(
        "flowsql_dns_messages_rejected_total",
        "counter",
        "DNS messages that taught nothing: malformed, not an answer, or an error rcode.",
    ),
    family("flowsql_dns_messages_incomplete_total", "counter", "DNS messages whose records were cut short."),
    family("flowsql_dns_observations_total", "counter", "(address, name) pairs learned from DNS answers."),
    family("flowsql_name_cache_entries", "gauge", "Addresses in the DNS name cache."),
    family("flowsql_name_cache_bytes", "gauge", "Approximate memory held by the DNS name cache."),
    family(
        "flowsql_name_cache_evictions_total",
        "counter",
        "Addresses dropped from the DNS name cache to stay within its limits.",
    ),
    family(
        "flowsql_name_cache_names_refused_total",
        "counter",
        "Names not cached because their address had max_names_per_address.",
    ),
    family("flowsql_dns_tcp_segments_total", "counter", "DNS-over-TCP segments with payload."),
    family("flowsql_dns_tcp_gaps_total", "counter", "Times bytes were missing from a DNS-over-TCP stream."),
    family("flowsql_ring_buffer_pending_bytes", "gauge", "Bytes in the ring buffer not read yet."),
    family(
        "flowsql_ring_buffer_max_pending_bytes",
        "gauge",
        "The most bytes found pending when the reader began a drain.",
    ),
    family("flowsql_ring_buffer_size_bytes", "gauge", "Size of the ring buffer."),
    family(
        "flowsql_store_rows_received_total",
        "counter",
        "Rows (flows and flow_ends) handed to the store writer.",
    ),
    family("flowsql_store_rows_stored_total", "counter", "Rows (flows and flow_ends) committed to SQLite."),
    family(
        "flowsql_store_failures_total",
        "counter",
        "Write attempts that failed (their rows are in flowsql_lost_total{cause=\"not_stored\"}).",
    ),
    family(
        "flowsql_store_busy_retries_total",
        "counter",
        "Write attempts that found the database locked and were tried again (no loss).",
    ),
    family("flowsql_store_commits_total", "counter", "Write transactions committed."),
    family(
        "flowsql_store_commit_duration_seconds",
        "histogram",
        "Time from the start of a write transaction to its commit.",
    ),
    family("flowsql_store_backlog", "gauge", "Rows and writes waiting for the store writer."),
    family("flowsql_store_rows", "gauge", "Flows in the store, by tier (hot: SQLite, cold: Parquet)."),
    family(
        "flowsql_store_bytes",
        "gauge",
        "Bytes of the store, by tier (hot: flowsql.db with its WAL, cold: Parquet files).",
    ),
    family("flowsql_store_cold_files", "gauge", "Parquet files of the cold tier."),
    family(
        "flowsql_export_last_success_timestamp_seconds",
        "gauge",
        "When the last export that succeeded ran, Unix seconds.",
    ),
    family("flowsql_export_last_run_failed", "gauge", "1 if the last export run failed, else 0."),
    family("flowsql_store_readable", "gauge", "1 if the store could be read for this scrape, else 0."),
    family(
        "flowsql_upload_backlog_files",
        "gauge",
        "Parquet files exported but not uploaded to export.remote yet.",
    ),
    family("flowsql_upload_backlog_bytes", "gauge", "Bytes of the files not uploaded to export.remote yet."),
    family("flowsql_uploaded_files", "gauge", "Parquet files of the cold tier uploaded to export.remote."),
    family("flowsql_upload_last_attempt_failed", "gauge", "1 if the last upload attempt failed, else 0."),
];

/// One number of the capture, its metric and its `capture_stats` key.
#[derive(Debug)]
pub struct Series<T> {
    /// The name in `capture_stats.counters` (or the column's name).
    pub key: &'static str,
    pub metric: &'static str,
    pub labels: &'static str,
    pub value: fn(&T) -> u64,
}

const fn series<T>(
    key: &'static str,
    metric: &'static str,
    labels: &'static str,
    value: fn(&T) -> u64,
) -> Series<T> {
    Series { key, metric, labels, value }
}

/// The capture's own numbers (kernel, DNS, ring buffer).
pub const CAPTURE_SERIES: &[Series<CaptureSnapshot>] = &[
    series("flowEvents", "flowsql_events_total", r#"kind="flow""#, |s| s.kernel.flow_events),
    series("dnsEvents", "flowsql_events_total", r#"kind="dns""#, |s| s.kernel.dns_events),
    series("flowRingbufFull", "flowsql_lost_total", r#"cause="ring_buffer_full",kind="flow""#, |s| {
        s.kernel.flow_ringbuf_full
    }),
    series("dnsRingbufFull", "flowsql_lost_total", r#"cause="ring_buffer_full",kind="dns""#, |s| {
        s.kernel.dns_ringbuf_full
    }),
    series("endEvents", "flowsql_events_total", r#"kind="end""#, |s| s.kernel.end_events),
    series("endRingbufFull", "flowsql_lost_total", r#"cause="ring_buffer_full",kind="end""#, |s| {
        s.kernel.end_ringbuf_full
    }),
    series("infoEvents", "flowsql_events_total", r#"kind="info""#, |s| s.kernel.info_events),
    series("infoRingbufFull", "flowsql_lost_total", r#"cause="ring_buffer_full",kind="info""#, |s| {
        s.kernel.info_ringbuf_full
    }),
    series("beginsRecovered", "flowsql_begins_recovered_total", "", |s| s.kernel.begins_recovered),
    series("storageFailed", "flowsql_socket_storage_failures_total", "", |s| s.kernel.storage_failed),
    series("unattributedRows", "flowsql_unattributed_rows_total", "", |s| s.attribution.unattributed),
    series("cgroupUnknownRows", "flowsql_cgroup_unknown_rows_total", "", |s| s.attribution.cgroup_unknown),
    series("executableUnknownRows", "flowsql_executable_unknown_rows_total", "", |s| {
        s.attribution.executable_unknown
    }),
    series("attributionCacheEntries", "flowsql_attribution_cache_entries", "", |s| {
        s.attribution.entries as u64
    }),
    series("attributionCacheBytes", "flowsql_attribution_cache_bytes", "", |s| s.attribution.bytes as u64),
    series("domainsNotStored", "flowsql_lost_total", r#"cause="not_stored",kind="domain""#, |s| {
        s.domains_not_stored
    }),
    series("synackDuplicates", "flowsql_synack_duplicates_total", "", |s| s.kernel.synack_duplicates),
    series("headerUnreadable", "flowsql_packets_unreadable_total", "", |s| s.kernel.header_unreadable),
    series("ipv6ExtTooDeep", "flowsql_ipv6_ext_too_deep_total", "", |s| s.kernel.ipv6_ext_too_deep),
    series("connectionMapErrors", "flowsql_connection_map_errors_total", "", |s| {
        s.kernel.connection_map_errors
    }),
    series("undecodable", "flowsql_records_undecodable_total", "", |s| s.undecodable),
    series("dnsTruncated", "flowsql_dns_truncated_total", "", |s| s.kernel.dns_truncated),
    series("dnsMessages", "flowsql_dns_messages_total", "", |s| s.dns.messages),
    series("dnsRejected", "flowsql_dns_messages_rejected_total", "", |s| s.dns.rejected),
    series("dnsIncomplete", "flowsql_dns_messages_incomplete_total", "", |s| s.dns.incomplete),
    series("dnsObservations", "flowsql_dns_observations_total", "", |s| s.dns.observations),
    series("dnsCacheAddresses", "flowsql_name_cache_entries", "", |s| s.dns.cache.addresses as u64),
    series("dnsCacheBytes", "flowsql_name_cache_bytes", "", |s| s.dns.cache.bytes as u64),
    series("dnsCacheEvicted", "flowsql_name_cache_evictions_total", "", |s| s.dns.cache.evicted),
    series("dnsCacheNamesRefused", "flowsql_name_cache_names_refused_total", "", |s| {
        s.dns.cache.names_refused
    }),
    series("dnsTcpSegments", "flowsql_dns_tcp_segments_total", "", |s| s.dns.tcp.segments),
    series("dnsTcpGaps", "flowsql_dns_tcp_gaps_total", "", |s| s.dns.tcp.gaps),
    series("ringBufferPendingBytes", "flowsql_ring_buffer_pending_bytes", "", |s| s.ring.pending_bytes),
    series("ringBufferMaxPendingBytes", "flowsql_ring_buffer_max_pending_bytes", "", |s| {
        s.ring.max_pending_bytes
    }),
    series("ringBufferBytes", "flowsql_ring_buffer_size_bytes", "", |s| s.ring.size_bytes),
];

/// The store writer's numbers; in `capture_stats`, `rowsStored`,
/// `rowsNotStored` and `storeFailures` are columns, the others are
/// `counters` the writer records itself.
pub const WRITER_SERIES: &[Series<WriterCounters>] = &[
    series("rowsReceived", "flowsql_store_rows_received_total", "", |w| w.rows_received),
    series("rowsStored", "flowsql_store_rows_stored_total", "", |w| w.rows_stored),
    series("rowsNotStored", "flowsql_lost_total", r#"cause="not_stored",kind="flow""#, |w| w.rows_not_stored),
    series("storeFailures", "flowsql_store_failures_total", "", |w| w.store_failures),
    series("busyRetries", "flowsql_store_busy_retries_total", "", |w| w.busy_retries),
    series("commits", "flowsql_store_commits_total", "", |w| w.commit_latency.count),
];

/// The `counters` of a `capture_stats` row, from the capture's side.
pub fn capture_stats_counters(snapshot: &CaptureSnapshot) -> BTreeMap<String, u64> {
    CAPTURE_SERIES.iter().map(|s| (s.key.to_owned(), (s.value)(snapshot))).collect()
}

/// The page served at `/metrics`.
pub fn render(
    version: &str,
    start_time: f64,
    capture: &CaptureSnapshot,
    store: Option<&StoreSnapshot>,
) -> String {
    // (metric, labels, value) of every sample, grouped by family below.
    let mut samples: Vec<(&str, String, String)> = Vec::new();
    let mut add = |metric: &'static str, labels: String, value: String| samples.push((metric, labels, value));
    add("flowsql_build_info", format!("version=\"{version}\""), "1".into());
    add("flowsql_start_time_seconds", String::new(), format_float(start_time));
    for s in CAPTURE_SERIES {
        add(s.metric, s.labels.to_owned(), (s.value)(capture).to_string());
    }
    if let Some(writer) = &capture.writer {
        for s in WRITER_SERIES {
            add(s.metric, s.labels.to_owned(), (s.value)(writer).to_string());
        }
        let latency = &writer.commit_latency;
        let name = "flowsql_store_commit_duration_seconds";
        for (bound, count) in BUCKET_BOUNDS_NS.iter().zip(latency.buckets) {
            add(name, format!("le=\"{}\"", format_float(*bound as f64 / 1e9)), count.to_string());
        }
        add(name, "le=\"+Inf\"".into(), latency.count.to_string());
        add("flowsql_store_backlog", String::new(), capture.backlog.to_string());
    }
    if capture.writer.is_some() {
        add("flowsql_store_readable", String::new(), u8::from(store.is_some()).to_string());
    }
    if let Some(store) = store {
        add("flowsql_store_rows", "tier=\"hot\"".into(), store.hot_rows.to_string());
        add("flowsql_store_rows", "tier=\"cold\"".into(), store.cold_rows.to_string());
        add("flowsql_store_bytes", "tier=\"hot\"".into(), store.hot_bytes.to_string());
        add("flowsql_store_bytes", "tier=\"cold\"".into(), store.cold_bytes.to_string());
        add("flowsql_store_cold_files", String::new(), store.cold_files.to_string());
        if let Some(at) = store.last_export_success {
            add("flowsql_export_last_success_timestamp_seconds", String::new(), format_float(at));
        }
        add("flowsql_export_last_run_failed", String::new(), u8::from(store.last_export_failed).to_string());
        if let Some((files, bytes, uploaded, failed)) = store.upload {
            add("flowsql_upload_backlog_files", String::new(), files.to_string());
            add("flowsql_upload_backlog_bytes", String::new(), bytes.to_string());
            add("flowsql_uploaded_files", String::new(), uploaded.to_string());
            add("flowsql_upload_last_attempt_failed", String::new(), u8::from(failed).to_string());
        }
    }
    let mut out = String::new();
    for family in FAMILIES {
        let mut members = samples.iter().filter(|(metric, _, _)| *metric == family.name).peekable();
        if members.peek().is_none() {
            continue;
        }
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for (metric, labels, value) in members {
            let metric =
                if family.kind == "histogram" { format!("{metric}_bucket") } else { (*metric).to_owned() };
            if labels.is_empty() {
                let _ = writeln!(out, "{metric} {value}");
            } else {
                let _ = writeln!(out, "{metric}{{{labels}}} {value}");
            }
        }
        if family.kind == "histogram"
            && let Some(writer) = &capture.writer
        {
            let latency = &writer.commit_latency;
            let _ = writeln!(out, "{}_sum {}", family.name, format_float(latency.sum_ns as f64 / 1e9));
            let _ = writeln!(out, "{}_count {}", family.name, latency.count);
        }
    }
    out
}

/// A float as Prometheus reads it: no exponent for ordinary values.
fn format_float(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 { format!("{value:.0}") } else { format!("{value}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(page: &str) -> BTreeMap<String, String> {
        page.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (name, value) = l.rsplit_once(' ').expect("name value");
                (name.to_owned(), value.to_owned())
            })
            .collect()
    }

    #[test]
    fn the_page_is_prometheus_text_with_every_family_once() {
        let mut writer =
            WriterCounters { rows_received: 7, rows_stored: 5, rows_not_stored: 2, ..Default::default() };
        let histogram = flowsql_store::latency::LatencyHistogram::default();
        histogram.record(std::time::Duration::from_millis(3));
        writer.commit_latency = histogram.snapshot();
        let capture = CaptureSnapshot {
            kernel: KernelCounters { flow_events: 9, dns_ringbuf_full: 1, ..Default::default() },
            ring: RingBufFill { pending_bytes: 64, max_pending_bytes: 128, size_bytes: 4096 },
            writer: Some(writer),
            ..Default::default()
        };
        let store =
            StoreSnapshot { hot_rows: 5, last_export_success: Some(1_764_313_200.5), ..Default::default() };
        let page = render("0.1.0", 1_764_313_100.0, &capture, Some(&store));
        let values = parse(&page);
        assert_eq!(values["flowsql_events_total{kind=\"flow\"}"], "9");
        assert_eq!(values["flowsql_lost_total{cause=\"ring_buffer_full\",kind=\"dns\"}"], "1");
        assert_eq!(values["flowsql_lost_total{cause=\"not_stored\",kind=\"flow\"}"], "2");
        assert_eq!(values["flowsql_store_rows{tier=\"hot\"}"], "5");
        assert_eq!(values["flowsql_store_commit_duration_seconds_bucket{le=\"0.0025\"}"], "0");
        assert_eq!(values["flowsql_store_commit_duration_seconds_bucket{le=\"0.005\"}"], "1");
        assert_eq!(values["flowsql_store_commit_duration_seconds_bucket{le=\"+Inf\"}"], "1");
        assert_eq!(values["flowsql_store_commit_duration_seconds_count"], "1");
        assert_eq!(values["flowsql_store_commit_duration_seconds_sum"], "0.003");
        assert_eq!(values["flowsql_export_last_success_timestamp_seconds"], "1764313200.5");
        assert_eq!(values["flowsql_start_time_seconds"], "1764313100");
        assert_eq!(values["flowsql_ring_buffer_pending_bytes"], "64");
        // Each family's lines are together, after one HELP and one TYPE.
        for family in FAMILIES {
            assert!(page.matches(&format!("# TYPE {} ", family.name)).count() <= 1, "{}", family.name);
        }
        let mut seen = Vec::new();
        for line in page.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().expect("name");
            let family = FAMILIES.iter().find(|f| name.starts_with(f.name)).expect("a known family").name;
            if seen.last() != Some(&family) {
                assert!(!seen.contains(&family), "{family} is split");
                seen.push(family);
            }
        }
        for line in page.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().expect("name");
            assert!(name.starts_with("flowsql_"), "{line}");
        }
        for family in FAMILIES.iter().filter(|f| f.kind == "counter") {
            assert!(family.name.ends_with("_total"), "{}", family.name);
        }
    }

    #[test]
    fn capture_stats_holds_every_capture_counter() {
        let snapshot = CaptureSnapshot {
            kernel: KernelCounters { flow_events: 3, dns_events: 4, ..Default::default() },
            domains_not_stored: 2,
            ..Default::default()
        };
        let counters = capture_stats_counters(&snapshot);
        assert_eq!(counters["flowEvents"], 3);
        assert_eq!(counters["dnsEvents"], 4);
        assert_eq!(counters["domainsNotStored"], 2);
        assert_eq!(counters.len(), CAPTURE_SERIES.len());
    }
}
