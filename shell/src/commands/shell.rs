//! `flowsql shell`: the interactive SQL shell over a data directory; with
//! `--capture`, a capture runs beside it ([`BackgroundCapture`]) and its
//! uncommitted rows are part of `flows`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use flowsql_query::{LiveFlows, OpenFlows, Session, SessionOptions};
use flowsql_service::{BackgroundCapture, CaptureOptions, Config};
use flowsql_store::LiveRows;

use crate::cli::ShellArgs;
use crate::repl::{self, ReplOptions};

pub fn run(args: ShellArgs, config: Config) -> anyhow::Result<ExitCode> {
    // A capture makes its data directory; a shell that only reads does not.
    let dir = if args.capture { config.data_dir()? } else { super::existing_store(&config)? };
    let watched = config
        .cgroup
        .value
        .as_deref()
        .map_or_else(|| "the whole host".to_owned(), |c| c.display().to_string());
    // With --capture: attach first (and say why not, before any prompt),
    // then query the store and the capture's uncommitted rows together.
    let live = args.capture.then(LiveRows::new);
    let mut open_flows: Option<Arc<dyn OpenFlows>> = None;
    let capture = match &live {
        Some(live) => {
            let (queries, requests) = flowsql_service::OpenFlows::channel();
            open_flows = Some(Arc::new(CaptureOpenFlows(queries)));
            Some(BackgroundCapture::start(CaptureOptions {
                config,
                store: true,
                json: None,
                duration: None,
                live: Some(Arc::clone(live)),
                open_flows: Some(requests),
            })?)
        }
        None => None,
    };
    let options = SessionOptions {
        live: live.map(|l| l as Arc<dyn LiveFlows>),
        open_flows,
        ..SessionOptions::new(&dir)
    };
    let session = Session::open(options)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    if let Some(capture) = &capture {
        for line in &capture.unavailable {
            println!("{line}");
        }
        println!(
            "capturing TCP connections of {watched} into {}: they appear in `flows` and `flow_ends` at once, open ones in `open_flows`",
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

/// `open_flows` of the capture running beside the shell.
#[derive(Debug)]
struct CaptureOpenFlows(flowsql_service::OpenFlows);

#[async_trait::async_trait]
impl OpenFlows for CaptureOpenFlows {
    async fn read(&self) -> Result<Vec<flowsql_store::RecordBatch>, String> {
        self.0.read().await
    }
}
