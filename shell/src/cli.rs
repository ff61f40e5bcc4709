//! The command line: every subcommand and option, with the help users see.

use std::path::PathBuf;

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
}
