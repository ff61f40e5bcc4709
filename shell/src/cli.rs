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
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes. Each setting also comes from the
/// environment (FLOWSQL_*) and the configuration file: flags win over the
/// environment, which wins over the file (see `flowsql config`).
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML). Default: FLOWSQL_CONFIG, else /etc/flowsql/config.toml if it exists.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log level or filter (error, warn, info, debug, trace, or a tracing filter such as
    /// flowsql_capture=debug). Default: FLOWSQL_LOG_LEVEL, else RUST_LOG, else log.level, else warn.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Write log messages to this file instead of stderr (reopened on SIGHUP, for log rotation).
    #[arg(long, global = true, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
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
    /// Print the configuration in effect (TOML), with where each value comes from.
    Config(ConfigArgs),
    /// Serve a web view of the flows (service map, timeline, SQL) over HTTP, on loopback by default.
    Serve(ServeArgs),
    /// Test harness only: write generated flows through the store writer and the scheduled export.
    #[command(hide = true)]
    StoreStress(StoreStressArgs),
}

/// Where the flows are stored.
#[derive(Debug, Clone, Default, Args)]
pub struct DataDirArgs {
    /// Data directory (created 0750): flowsql.db and flows/date=YYYY-MM-DD/hour=HH/*.parquet.
    /// Default: FLOWSQL_DATA_DIR, else data_dir in the configuration file, else /var/lib/flowsql as
    /// root, else $XDG_DATA_HOME/flowsql (~/.local/share/flowsql).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Print one JSON object per flow on stdout.
    #[arg(long)]
    pub json: bool,

    /// Stop after this many seconds. Default: run until SIGINT or SIGTERM.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Do not store the flows, only print them (needs --json).
    #[arg(long)]
    pub no_store: bool,

    #[command(flatten)]
    pub settings: CaptureSettingsArgs,
}

/// The capture's settings as flags; each also has a key in the
/// configuration file and an environment variable (`flowsql config`).
#[derive(Debug, Clone, Default, Args)]
pub struct CaptureSettingsArgs {
    #[command(flatten)]
    pub store: DataDirArgs,

    /// cgroup v2 directory to watch, with everything below it. Default: the
    /// root of the unified hierarchy (found in /proc/mounts), i.e. the whole host.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Size of the kernel ring buffer in bytes, a power of two (4194304, 4MiB). Default: 4 MiB.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub ring_buffer_bytes: Option<u64>,

    /// Move closed windows of this length from SQLite to Parquet this often (e.g. 5m, 1h).
    /// Default: 5m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub export_every: Option<Duration>,

    /// Remove Parquet partitions older than this (e.g. 30d); never touches rows not yet exported.
    /// Default: keep everything.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retain: Option<Duration>,

    /// Serve Prometheus metrics over HTTP on HOST:PORT (GET /metrics), e.g. 127.0.0.1:9464
    /// (port 0: any free port, logged). Default: no metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,

    /// On SIGTERM or SIGINT, exit after this long at most, even if the store has not committed
    /// every row (they are then counted in the log). Default: 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,

    /// DNS name cache: addresses held at most. Default: 65536.
    #[arg(long, value_name = "N")]
    pub name_cache_max_addresses: Option<usize>,

    /// DNS name cache: names held per address at most. Default: 32.
    #[arg(long, value_name = "N")]
    pub name_cache_max_names_per_address: Option<usize>,

    /// DNS name cache: memory held at most (16777216, 16MiB). Default: 16 MiB.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub name_cache_max_bytes: Option<u64>,
}

/// `flowsql config`: the same settings as `flowsql capture`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub settings: CaptureSettingsArgs,
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
pub struct ServeArgs {
    #[command(flatten)]
    pub store: DataDirArgs,

    /// Record flows in this process while serving (needs root, or CAP_BPF and
    /// CAP_NET_ADMIN): the timeline and the map follow them as they arrive.
    #[arg(long)]
    pub capture: bool,

    /// With --capture: the cgroup v2 directory to watch. Default: the whole host.
    #[arg(long, value_name = "PATH", requires = "capture")]
    pub cgroup: Option<PathBuf>,

    /// Address to listen on. A loopback address (127.0.0.0/8, ::1, localhost) needs no token;
    /// any other needs the token, FLOWSQL_SERVE_TOKEN or a random one printed at start.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8686")]
    pub listen: String,

    /// Rows a SQL view result may have at most (a larger result is refused).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_rows: usize,

    /// Time a statement of the SQL view (or a view's query) may take at most.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub query_timeout: Duration,
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

/// A byte count: `4194304`, `4MiB`, `512KiB`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    crate::config::parse_size(text)
}

/// `5m`, `30d`, `1h 30m`, `90s` (humantime).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|_| format!("{text:?} is not a duration (e.g. 90s, 5m, 1h, 30d)"))?;
    if duration.is_zero() {
        return Err(format!("{text:?} is not a duration longer than zero"));
    }
    Ok(duration)
}
