//! `flowsql shell`: the interactive SQL shell over a data directory.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use flowsql_capture::CaptureConfig;
use flowsql_query::{LiveFlows, OpenFlows, Session, SessionOptions};
use flowsql_store::LiveRows;

use super::capture::{BackgroundCapture, CaptureOpenFlows, CaptureRun, StoreSettings, export_schedule};
use crate::cli::ShellArgs;
use crate::config::Config;
use crate::repl::{self, ReplOptions};

pub fn run(args: ShellArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let dir = config.data_dir()?;
    // With --capture: attach first (and say why not, before any prompt),
    // then query the store and the capture's uncommitted rows together.
    let live = args.capture.then(LiveRows::new);
    let mut open_flows: Option<Arc<dyn OpenFlows>> = None;
    let capture = match &live {
        Some(live) => {
            let (queries, requests) = CaptureOpenFlows::channel();
            open_flows = Some(Arc::new(queries));
            let run = CaptureRun {
                config: CaptureConfig {
                    cgroup: config.cgroup.value.clone(),
                    ring_buffer_bytes: config.ring_buffer_bytes.value,
                    ..CaptureConfig::default()
                },
                name_cache: config.name_cache(),
                duration: None,
                out: None,
                store: Some(StoreSettings { dir: dir.clone(), schedule: export_schedule(config) }),
                live: Some(Arc::clone(live)),
                open_flows: Some(requests),
                service: None,
            };
            Some(BackgroundCapture::start(run)?)
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
        let watched = config
            .cgroup
            .value
            .as_deref()
            .map_or_else(|| "the whole host".to_owned(), |c| c.display().to_string());
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

/// Opens `dir` for queries. Cheap: no flow is read until a query runs.
pub fn open_session(dir: &Path) -> anyhow::Result<Session> {
    Ok(Session::open(SessionOptions::new(dir))?)
}
