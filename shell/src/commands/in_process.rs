//! A capture inside a command's own process (`shell --capture`, `serve
//! --capture`): attached before the command starts, storing like `flowsql
//! capture`, its uncommitted rows and open connections handed to the query
//! session so that queries see flows at once.

use std::sync::Arc;

use flowsql_query::{LiveFlows, OpenFlows, SessionOptions};
use flowsql_service::{BackgroundCapture, CaptureOptions, Config};
use flowsql_store::LiveRows;

/// A running in-process capture, and what the query session reads of it.
#[derive(Debug)]
pub struct InProcessCapture {
    capture: BackgroundCapture,
    live: Arc<LiveRows>,
    open_flows: Arc<CaptureOpenFlows>,
    /// What is watched, for the banner: a cgroup or the whole host.
    pub watched: String,
}

impl InProcessCapture {
    /// Attaches (or says why it cannot) and stores into the configuration's
    /// data directory with its capture settings.
    pub fn start(config: Config) -> anyhow::Result<InProcessCapture> {
        let watched = config
            .cgroup
            .value
            .as_deref()
            .map_or_else(|| "the whole host".to_owned(), |c| c.display().to_string());
        let live = LiveRows::new();
        let (queries, requests) = flowsql_service::OpenFlows::channel();
        let capture = BackgroundCapture::start(CaptureOptions {
            config,
            store: true,
            json: None,
            duration: None,
            live: Some(Arc::clone(&live)),
            open_flows: Some(requests),
        })?;
        Ok(InProcessCapture { capture, live, open_flows: Arc::new(CaptureOpenFlows(queries)), watched })
    }

    /// `options` with this capture's live rows and open connections.
    pub fn session_options(&self, options: SessionOptions) -> SessionOptions {
        SessionOptions {
            live: Some(Arc::clone(&self.live) as Arc<dyn LiveFlows>),
            open_flows: Some(Arc::clone(&self.open_flows) as Arc<dyn OpenFlows>),
            ..options
        }
    }

    /// What the capture cannot fill on this kernel (one line each).
    pub fn unavailable(&self) -> &[String] {
        &self.capture.unavailable
    }

    /// Stops capturing: detaches, commits what was captured.
    pub fn stop(self) -> anyhow::Result<()> {
        Ok(self.capture.stop()?)
    }
}

/// `open_flows` of the capture: each scan asks the capture loop.
#[derive(Debug)]
struct CaptureOpenFlows(flowsql_service::OpenFlows);

#[async_trait::async_trait]
impl OpenFlows for CaptureOpenFlows {
    async fn read(&self) -> Result<Vec<flowsql_store::RecordBatch>, String> {
        self.0.read().await
    }
}
