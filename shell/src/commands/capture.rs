//! `flowsql capture`: attach the programs and record flows until told to
//! stop, as a service: the capture, its signals, reload, metrics,
//! privileges and systemd readiness are `flowsql_service`'s; this command
//! checks its own options, runs it, and says on stderr when it starts and
//! what it did when it stops.

use std::cell::Cell;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use flowsql_service::logging::Logging;
use flowsql_service::{CaptureOptions, CaptureSummary, Config, Layers, Service, run_service};

use crate::cli::CaptureArgs;
use crate::units::grouped;

pub fn run(args: CaptureArgs, layers: Layers, config: Config, logging: Logging) -> anyhow::Result<ExitCode> {
    if !args.json && args.no_store {
        anyhow::bail!("nothing to write the flows to: --no-store needs --json to print them");
    }
    let duration = match args.duration {
        Some(secs) if !(secs.is_finite() && secs >= 0.0) => {
            anyhow::bail!("--duration must be a number of seconds >= 0, not {secs}")
        }
        Some(secs) => Some(Duration::from_secs_f64(secs)),
        None => None,
    };
    let json = args
        .json
        .then(|| Box::new(BufWriter::with_capacity(64 * 1024, io::stdout())) as Box<dyn Write + Send>);
    let start_line = start_line(&config, !args.no_store, args.json, duration);
    let options =
        CaptureOptions { config, store: !args.no_store, json, duration, live: None, open_flows: None };
    let started = Cell::new(None);
    let summary = run_service(options, Service::new(layers, logging), || {
        eprintln!("{start_line}");
        started.set(Some(Instant::now()));
    })?;
    eprintln!("{}", stop_line(&summary, started.get().map_or(Duration::ZERO, |t| t.elapsed())));
    Ok(ExitCode::SUCCESS)
}

/// `capturing TCP connections of the whole host into /var/lib/flowsql; Ctrl-C to stop`
fn start_line(config: &Config, store: bool, json: bool, duration: Option<Duration>) -> String {
    let watched = match &config.cgroup.value {
        Some(cgroup) => format!("cgroup {}", cgroup.display()),
        None => "the whole host".to_owned(),
    };
    let into = match (store, json, config.data_dir.value.as_ref()) {
        (true, true, Some(dir)) => format!("into {} and as JSON on stdout", dir.display()),
        (true, _, Some(dir)) => format!("into {}", dir.display()),
        (_, _, _) => "as JSON on stdout, storing nothing".to_owned(),
    };
    let until = match duration {
        Some(duration) => format!("for {}; Ctrl-C stops sooner", humantime::format_duration(duration)),
        None => "Ctrl-C to stop".to_owned(),
    };
    format!("capturing TCP connections of {watched} {into}; {until}")
}

/// `stopped after 12.3 s: 42 connection begins and ends, 42 rows stored, 0 lost`
fn stop_line(summary: &CaptureSummary, took: Duration) -> String {
    let stored = match summary.rows_stored {
        Some(rows) if summary.rows_not_stored > 0 => {
            format!(
                ", {} rows stored, {} could not be stored",
                grouped(rows),
                grouped(summary.rows_not_stored)
            )
        }
        Some(rows) => format!(", {} rows stored", grouped(rows)),
        None => String::new(),
    };
    format!(
        "stopped after {:.1} s: {} connection begins and ends{stored}, {} lost",
        took.as_secs_f64(),
        grouped(summary.events),
        grouped(summary.lost)
    )
}
