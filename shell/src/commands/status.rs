//! `flowsql status`: rows per tier, files, bytes, capture counters, last
//! export. Every time it prints, in text and in JSON, is RFC 3339 in UTC.

use std::process::ExitCode;

use anyhow::Context as _;
use flowsql_event::format_timestamp;
use flowsql_store::Store;
use flowsql_store::status::{SessionCounters, StoreStatus};

use crate::cli::StatusArgs;
use crate::units::{grouped, human_bytes};
use flowsql_service::Config;

pub fn run(args: StatusArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let dir = super::existing_store(config)?;
    // Read-only: reading the directory is all `status` needs.
    let store = Store::open_read_only(&dir)
        .with_context(|| format!("failed to open the data directory {}", dir.display()))?;
    let status = store.status().with_context(|| format!("failed to read the status of {}", dir.display()))?;
    if args.json {
        println!("{}", to_json(&status));
    } else {
        print!("{}", to_text(&status));
    }
    Ok(ExitCode::SUCCESS)
}

fn span(span: Option<(i64, i64)>) -> String {
    match span {
        Some((from, to)) => format!("{} .. {}", format_timestamp(from), format_timestamp(to)),
        None => "-".into(),
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", grouped(n), if n == 1 { one } else { many })
}

fn to_text(s: &StoreStatus) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("{label:<16}{value}\n"));
    line("data dir", s.data_dir.display().to_string());
    line(
        "hot (SQLite)",
        format!(
            "{} in {}, {}, {}",
            plural(s.hot_rows, "row", "rows"),
            plural(s.hot_batches, "batch", "batches"),
            human_bytes(s.database_bytes),
            span(s.hot_span)
        ),
    );
    line(
        "cold (Parquet)",
        format!(
            "{} in {} ({}), {}, {}",
            plural(s.cold_rows, "row", "rows"),
            plural(s.cold_files, "file", "files"),
            plural(s.cold_partitions, "partition", "partitions"),
            human_bytes(s.cold_bytes),
            span(s.cold_span)
        ),
    );
    if s.quarantined_files > 0 || s.missing_files > 0 {
        line(
            "set aside",
            format!(
                "{} in quarantine/ (corrupt), {} missing",
                plural(s.quarantined_files, "file", "files"),
                plural(s.missing_files, "file", "files")
            ),
        );
    }
    line(
        "last export",
        match &s.last_export {
            None => "never".into(),
            Some(e) => match &e.error {
                Some(error) => format!("{} failed: {error}", format_timestamp(e.at_ns)),
                None => format!(
                    "{}, {} in {}",
                    format_timestamp(e.at_ns),
                    plural(e.rows, "row", "rows"),
                    plural(e.files, "file", "files")
                ),
            },
        },
    );
    if let Some(u) = &s.upload {
        let mut text = format!(
            "{}: {} uploaded, {} waiting ({})",
            u.remote,
            plural(u.uploaded_files, "file", "files"),
            plural(u.backlog_files, "file", "files"),
            human_bytes(u.backlog_bytes)
        );
        if let Some(last) = &u.last
            && let Some(error) = &last.error
        {
            text.push_str(&format!("; failing since {}: {error}", format_timestamp(last.at_ns)));
        }
        line("upload", text);
    }
    match &s.capture.latest {
        None => line("capture", "never ran here".into()),
        Some(latest) => {
            let total = &s.capture.total;
            line(
                "capture",
                format!(
                    "{}, the last from {} to {}",
                    plural(s.capture.sessions, "session", "sessions"),
                    format_timestamp(latest.session_ns),
                    format_timestamp(latest.time_ns)
                ),
            );
            line(
                "  events",
                format!("{} ({} lost in the kernel)", grouped(total.events), grouped(total.lost)),
            );
            line(
                "  stored",
                format!(
                    "{} ({} could not be stored)",
                    plural(total.rows_stored, "row", "rows"),
                    grouped(total.rows_not_stored)
                ),
            );
            line("  loss", plural(total.loss(), "row", "rows"));
        }
    }
    out
}

/// One session's counters, with its start (`session`) and the time of
/// the counters (`time`); a sum over sessions has no times.
fn session_json(c: &SessionCounters, times: bool) -> serde_json::Value {
    let mut json = serde_json::json!({
        "events": c.events,
        "lost": c.lost,
        "rowsStored": c.rows_stored,
        "rowsNotStored": c.rows_not_stored,
        "storeFailures": c.store_failures,
        "counters": c.counters,
    });
    if times && let Some(object) = json.as_object_mut() {
        object.insert("session".into(), format_timestamp(c.session_ns).into());
        object.insert("time".into(), format_timestamp(c.time_ns).into());
    }
    json
}

fn to_json(s: &StoreStatus) -> serde_json::Value {
    let span = |span: Option<(i64, i64)>| {
        span.map(|(a, b)| serde_json::json!([format_timestamp(a), format_timestamp(b)]))
    };
    serde_json::json!({
        "dataDir": s.data_dir,
        "hot": { "rows": s.hot_rows, "batches": s.hot_batches, "bytes": s.database_bytes, "span": span(s.hot_span) },
        "cold": {
            "rows": s.cold_rows,
            "files": s.cold_files,
            "partitions": s.cold_partitions,
            "bytes": s.cold_bytes,
            "span": span(s.cold_span),
            "quarantinedFiles": s.quarantined_files,
            "missingFiles": s.missing_files,
        },
        "lastExport": s.last_export.as_ref().map(|e| serde_json::json!({
            "at": format_timestamp(e.at_ns),
            "files": e.files,
            "rows": e.rows,
            "bytes": e.bytes,
            "error": e.error,
        })),
        "upload": s.upload.as_ref().map(|u| serde_json::json!({
            "remote": u.remote,
            "uploadedFiles": u.uploaded_files,
            "backlogFiles": u.backlog_files,
            "backlogBytes": u.backlog_bytes,
            "lastAttempt": u.last.as_ref().map(|l| format_timestamp(l.at_ns)),
            "lastSuccess": u.last.as_ref().and_then(|l| l.last_success_ns).map(format_timestamp),
            "error": u.last.as_ref().and_then(|l| l.error.clone()),
        })),
        "capture": {
            "sessions": s.capture.sessions,
            "total": session_json(&s.capture.total, false),
            "latest": s.capture.latest.as_ref().map(|latest| session_json(latest, true)),
            "loss": s.capture.total.loss(),
        },
    })
}
