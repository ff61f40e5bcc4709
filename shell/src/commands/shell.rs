//! `flowsql shell`: the interactive SQL shell over a data directory; with
//! `--capture`, a capture runs beside it ([`InProcessCapture`]) and its
//! uncommitted rows are part of `flows` and `flow_ends`.

use std::process::ExitCode;

use anyhow::Context as _;
use flowsql_query::{Session, SessionOptions};
use flowsql_service::Config;

use super::in_process::InProcessCapture;
use crate::cli::ShellArgs;
use crate::repl::{self, ReplOptions};

pub fn run(args: ShellArgs, config: Config) -> anyhow::Result<ExitCode> {
    let dir = config.data_dir()?;
    // With --capture: attach first (and say why not, before any prompt),
    // then query the store and the capture's uncommitted rows together.
    if args.source.is_some() && args.capture {
        anyhow::bail!("--source queries the fleet's uploaded files: it cannot be combined with --capture");
    }
    let fleet_config = config.clone();
    let capture = args.capture.then(|| InProcessCapture::start(config)).transpose()?;
    let mut options = SessionOptions::new(&dir);
    if let Some(capture) = &capture {
        options = capture.session_options(options);
    }
    let session = match &args.source {
        Some(url) => super::fleet::open(url, &fleet_config)?,
        None => Session::open(options)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    if let Some(capture) = &capture {
        for line in capture.unavailable() {
            println!("{line}");
        }
        println!(
            "capturing TCP connections of {} into {}: they appear in `flows` and `flow_ends` at once, open ones in `open_flows`",
            capture.watched,
            dir.display()
        );
    }
    let result = runtime.block_on(repl::run(&session, ReplOptions::from_env()));
    if let Some(capture) = capture {
        capture.stop().context("capture failed")?;
    }
    result?;
    Ok(ExitCode::SUCCESS)
}
