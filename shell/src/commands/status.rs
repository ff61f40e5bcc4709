//! `flowsql status`: rows per tier, files, bytes, capture counters, last
//! export.

use std::process::ExitCode;

use anyhow::Context as _;
use flowsql_event::format_timestamp;
use flowsql_store::Store;
use flowsql_store::status::{SessionCounters, StoreStatus};

use super::data_dir::{self, grouped, human_bytes};
use crate::cli::StatusArgs;

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let dir = data_dir::resolve(&args.store)?;
    if !dir.join("flowsql.db").exists() {
        anyhow::bail!("{} holds no flowsql data (no flowsql.db)", dir.display());
    }
    let store =
        Store::open(&dir).with_context(|| format!("failed to open the data directory {}", dir.display()))?;
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

fn to_text(s: &StoreStatus) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("{label:<14}{value}\n"));
    line("data dir", s.data_dir.display().to_string());
    line(
        "hot (SQLite)",
        format!("{} rows, {}, {}", grouped(s.hot_rows), human_bytes(s.database_bytes), span(s.hot_span)),
    );
    line(
        "cold (Parquet)",
        format!(
            "{} rows in {} files, {} partitions, {}, {}",
            grouped(s.cold_rows),
            grouped(s.cold_files),
            grouped(s.cold_partitions),
            human_bytes(s.cold_bytes),
            span(s.cold_span)
        ),
    );
    if s.quarantined_files > 0 || s.missing_files > 0 {
        line(
            "set aside",
            format!(
                "{} corrupt files in quarantine/, {} missing files",
                s.quarantined_files, s.missing_files
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
                    "{}, {} rows in {} files",
                    format_timestamp(e.at_ns),
                    grouped(e.rows),
                    grouped(e.files)
                ),
            },
        },
    );
    let counters = |c: &SessionCounters| {
        format!(
            "{} events, {} lost in the kernel, {} rows stored, {} rows not stored",
            grouped(c.events),
            grouped(c.lost),
            grouped(c.rows_stored),
            grouped(c.rows_not_stored)
        )
    };
    match &s.capture.latest {
        None => line("capture", "never ran here".into()),
        Some(latest) => {
            line(
                "capture",
                format!(
                    "last session {} (updated {}): {}",
                    format_timestamp(latest.session_ns),
                    format_timestamp(latest.time_ns),
                    counters(latest)
                ),
            );
            line("", format!("all {} sessions: {}", s.capture.sessions, counters(&s.capture.total)));
            if s.capture.total.loss() > 0 {
                line(
                    "loss",
                    format!(
                        "{} flows lost ({} in the kernel, {} not stored)",
                        grouped(s.capture.total.loss()),
                        grouped(s.capture.total.lost),
                        grouped(s.capture.total.rows_not_stored)
                    ),
                );
            }
        }
    }
    out
}

fn session_json(c: &SessionCounters) -> serde_json::Value {
    serde_json::json!({
        "session": c.session_ns,
        "time": c.time_ns,
        "events": c.events,
        "lost": c.lost,
        "rowsStored": c.rows_stored,
        "rowsNotStored": c.rows_not_stored,
        "storeFailures": c.store_failures,
        "counters": c.counters,
    })
}

fn to_json(s: &StoreStatus) -> serde_json::Value {
    let span = |span: Option<(i64, i64)>| {
        span.map(|(a, b)| serde_json::json!([format_timestamp(a), format_timestamp(b)]))
    };
    serde_json::json!({
        "dataDir": s.data_dir,
        "hot": { "rows": s.hot_rows, "bytes": s.database_bytes, "span": span(s.hot_span) },
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
        "capture": {
            "sessions": s.capture.sessions,
            "total": session_json(&s.capture.total),
            "latest": s.capture.latest.as_ref().map(session_json),
            "loss": s.capture.total.loss(),
        },
    })
}
