//! The command line: every subcommand and option, with the help users see.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "flowsql",
    version,
    about = "Record every TCP connection begin with eBPF and query the flows with SQL"
)]
pub struct Cli {
    /// Log level or filter for messages on stderr (error, warn, info, debug,
    /// trace, or a tracing filter such as flowsql_capture=debug). Default: RUST_LOG, else warn.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record TCP connection begins of the sockets in a cgroup (needs root, or CAP_BPF and CAP_NET_ADMIN).
    Capture(CaptureArgs),
    /// Move recorded flows from the hot tier (SQLite) to Parquet now, or copy a time range out with --to.
    Export(ExportArgs),
    /// Show what the data directory holds: rows per tier, files, bytes, capture counters, last export.
    Status(StatusArgs),
    /// Interactive SQL shell over the flows (statements end with ';', .help for help).
    Shell(ShellArgs),
    /// Run SQL and print the results, for scripts: exit status 0 only if every statement worked.
    Query(QueryArgs),
    /// Test harness only: write generated flows through the store writer and the scheduled export.
    #[command(hide = true)]
    StoreStress(StoreStressArgs),
}

/// Where the flows are stored.
#[derive(Debug, Args)]
pub struct DataDirArgs {
    /// Data directory (created 0750): flowsql.db and flows/date=YYYY-MM-DD/hour=HH/*.parquet.
    /// Default: /var/lib/flowsql as root, else $XDG_DATA_HOME/flowsql (~/.local/share/flowsql).
    #[arg(long, env = "FLOWSQL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Print one JSON object per flow on stdout.
    #[arg(long)]
    pub json: bool,

    /// cgroup v2 directory to watch, with everything below it. Default: the
    /// root of the unified hierarchy (found in /proc/mounts), i.e. the whole host.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Stop after this many seconds. Default: run until SIGINT or SIGTERM.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Size of the kernel ring buffer in bytes (a power of two).
    #[arg(long, value_name = "BYTES", default_value_t = flowsql_capture::loader::DEFAULT_RING_BUFFER_BYTES)]
    pub ring_buffer_bytes: u32,

    #[command(flatten)]
    pub store: DataDirArgs,

    /// Do not store the flows, only print them (needs --json).
    #[arg(long)]
    pub no_store: bool,

    /// Move closed windows of this length from SQLite to Parquet this often (e.g. 5m, 1h).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub export_every: Duration,

    /// Remove Parquet partitions older than this (e.g. 30d); never touches rows not yet exported.
    /// Default: keep everything.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retain: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub store: DataDirArgs,

    /// Instead of moving rows to the cold tier, copy the flows of a time range (both tiers) into DIR
    /// as a self-contained Parquet dataset, DIR/date=YYYY-MM-DD/hour=HH/part-0.parquet. DIR must be
    /// empty or not exist.
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,

    /// With --to: start of the range (RFC 3339 such as 2026-11-28T07:00:00Z, a date such as
    /// 2026-11-28 meaning its midnight UTC, or a duration such as 2h meaning that long ago).
    #[arg(long, value_name = "TIME", requires = "to")]
    pub since: Option<String>,

    /// End of the range (exclusive), same forms as --since. Without --to: export only rows older
    /// than this. Default: now.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    #[command(flatten)]
    pub store: DataDirArgs,

    /// Record flows in this process while the shell runs (needs root, or
    /// CAP_BPF and CAP_NET_ADMIN): queries see them at once, before they are
    /// committed. Stored in the data directory like `flowsql capture`.
    #[arg(long)]
    pub capture: bool,

    /// With --capture: the cgroup v2 directory to watch. Default: the root of
    /// the unified hierarchy, i.e. the whole host.
    #[arg(long, value_name = "PATH", requires = "capture")]
    pub cgroup: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["sql", "file"]))]
pub struct QueryArgs {
    /// SQL to run: one or more statements separated by ';'.
    #[arg(value_name = "SQL")]
    pub sql: Option<String>,

    /// Run the SQL statements and dot commands (.mode csv, ...) of FILE instead; - reads stdin.
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// How to print results.
    #[arg(long, value_name = "FORMAT", default_value = "table")]
    pub format: crate::output::OutputMode,

    #[command(flatten)]
    pub store: DataDirArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub store: DataDirArgs,

    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Writes flows `synthetic::indexed_flow(run, i)` for i = start.. through the
/// store writer and the scheduled export, printing `committed N` after each
/// commit, `renamed PATH` and `exported PATH` for export files.
#[derive(Debug, Args)]
pub struct StoreStressArgs {
    #[command(flatten)]
    pub store: DataDirArgs,
    #[arg(long)]
    pub run: u32,
    /// Flows to write; default: until killed.
    #[arg(long)]
    pub count: Option<u64>,
    /// Flows per millisecond.
    #[arg(long, default_value_t = 20)]
    pub rate: u64,
    #[arg(long, default_value_t = 500)]
    pub batch_rows: usize,
    #[arg(long, default_value_t = 200)]
    pub export_every_ms: u64,
    /// Sleep this long between renaming an export file and committing it.
    #[arg(long)]
    pub pause_after_rename_ms: Option<u64>,
    /// Rows per export file at most. Small, so that exports commit often and
    /// an export renames its first file soon after it starts however many
    /// rows are hot (the writer keeps committing while an export runs, so
    /// runs killed before their exports commit leave more and more).
    #[arg(long, default_value_t = 20_000)]
    pub max_file_rows: u64,
}

/// `5m`, `30d`, `1h 30m`, `90s` (humantime).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 90s, 5m, 1h, 30d)"))?;
    if duration.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(duration)
}
