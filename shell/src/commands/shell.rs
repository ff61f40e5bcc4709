//! `flowsql shell`: the interactive SQL shell over a data directory.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use flowsql_query::{Session, SessionOptions};

use super::in_process::InProcessCapture;
use crate::cli::ShellArgs;
use crate::config::Config;
use crate::repl::{self, ReplOptions};

pub fn run(args: ShellArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let dir = config.data_dir()?;
    // With --capture: attach first (and say why not, before any prompt),
    // then query the store and the capture's uncommitted rows together.
    let capture = args.capture.then(|| InProcessCapture::start(config, &dir)).transpose()?;
    let options =
        SessionOptions { live: capture.as_ref().map(|c| Arc::clone(&c.live)), ..SessionOptions::new(&dir) };
    let session = Session::open(options)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    if capture.is_some() {
        println!(
            "capturing TCP connection begins of {} into {}: flows appear in `flows` at once",
            InProcessCapture::watched(config),
            dir.display()
        );
    }
    let result = runtime.block_on(repl::run(&session, ReplOptions::from_env()));
    if let Some(capture) = capture {
        capture.capture.stop().context("capture failed")?;
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Opens `dir` for queries. Cheap: no flow is read until a query runs.
pub fn open_session(dir: &Path) -> anyhow::Result<Session> {
    Ok(Session::open(SessionOptions::new(dir))?)
}
