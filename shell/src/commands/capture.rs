//! `flowsql capture`: attach the programs and record flows until told to
//! stop, as a service: the capture, its signals, reload, metrics,
//! privileges and systemd readiness are `flowsql_service`'s; this command
//! checks its own options and runs it.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::time::Duration;

use flowsql_service::logging::Logging;
use flowsql_service::{CaptureOptions, Config, Layers, Service, run_service};

use crate::cli::CaptureArgs;

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
    let options =
        CaptureOptions { config, store: !args.no_store, json, duration, live: None, open_flows: None };
    run_service(options, Service::new(layers, logging))?;
    Ok(ExitCode::SUCCESS)
}
