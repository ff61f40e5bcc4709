//! `flowsql shell`: the interactive SQL shell over a data directory; with
//! `--capture`, a capture runs beside it ([`BackgroundCapture`]) and its
//! uncommitted rows are part of `flows`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use flowsql_query::{LiveFlows, Session, SessionOptions};
use flowsql_service::{BackgroundCapture, CaptureOptions, Config};
use flowsql_store::LiveRows;

use crate::cli::ShellArgs;
use crate::repl::{self, ReplOptions};

pub fn run(args: ShellArgs, config: Config) -> anyhow::Result<ExitCode> {
    let dir = config.data_dir()?;
    let watched = config
        .cgroup
        .value
        .as_deref()
        .map_or_else(|| "the whole host".to_owned(), |c| c.display().to_string());
    // With --capture: attach first (and say why not, before any prompt),
    // then query the store and the capture's uncommitted rows together.
    let live = args.capture.then(LiveRows::new);
    let capture = match &live {
        Some(live) => Some(BackgroundCapture::start(CaptureOptions {
            config,
            store: true,
            json: None,
            duration: None,
            live: Some(Arc::clone(live)),
        })?),
        None => None,
    };
    let options = SessionOptions { live: live.map(|l| l as Arc<dyn LiveFlows>), ..SessionOptions::new(&dir) };
    let session = Session::open(options)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    if capture.is_some() {
        println!(
            "capturing TCP connection begins of {watched} into {}: flows appear in `flows` at once",
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
