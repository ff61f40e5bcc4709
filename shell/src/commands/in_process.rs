//! A capture inside a command's own process (`shell --capture`, `serve
//! --capture`): attached before the command starts, its uncommitted rows
//! handed to the query session so that queries see flows at once.

use std::path::Path;
use std::sync::Arc;

use flowsql_capture::CaptureConfig;
use flowsql_query::LiveFlows;
use flowsql_store::LiveRows;

use super::capture::{BackgroundCapture, CaptureRun, StoreSettings, export_schedule};
use crate::config::Config;

/// A running in-process capture and the rows it has not committed yet.
pub struct InProcessCapture {
    pub capture: BackgroundCapture,
    pub live: Arc<dyn LiveFlows>,
}

impl std::fmt::Debug for InProcessCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessCapture").field("live", &self.live).finish_non_exhaustive()
    }
}

impl InProcessCapture {
    /// Attaches (or says why it cannot) and stores into `dir` like
    /// `flowsql capture`, with the configuration's capture settings.
    pub fn start(config: &Config, dir: &Path) -> anyhow::Result<InProcessCapture> {
        let live = LiveRows::new();
        let run = CaptureRun {
            config: CaptureConfig {
                cgroup: config.cgroup.value.clone(),
                ring_buffer_bytes: config.ring_buffer_bytes.value,
            },
            name_cache: config.name_cache(),
            duration: None,
            out: None,
            store: Some(StoreSettings { dir: dir.to_owned(), schedule: export_schedule(config) }),
            live: Some(Arc::clone(&live)),
            service: None,
        };
        let capture = BackgroundCapture::start(run)?;
        Ok(InProcessCapture { capture, live })
    }

    /// What is watched, for the banner.
    pub fn watched(config: &Config) -> String {
        config
            .cgroup
            .value
            .as_deref()
            .map_or_else(|| "the whole host".to_owned(), |c| c.display().to_string())
    }
}
