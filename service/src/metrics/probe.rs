//! The store as the metrics see it, and the task that serves them: each
//! scrape asks the capture loop for its numbers and reads the store's
//! status on the blocking pool.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use flowsql_store::Store;
use tokio::sync::{mpsc, oneshot};

use super::{CaptureSnapshot, StoreSnapshot, http};

/// A request for the capture's numbers, answered by the capture loop.
pub type ScrapeRequest = oneshot::Sender<CaptureSnapshot>;

/// The store as the metrics see it: opened read-only on first use, and
/// opened again after a read fails.
#[derive(Debug)]
pub struct StoreProbe {
    dir: PathBuf,
    store: Mutex<Option<Store>>,
}

impl StoreProbe {
    pub fn new(dir: PathBuf) -> StoreProbe {
        StoreProbe { dir, store: Mutex::new(None) }
    }

    /// Rows, bytes and files per tier, and the last export; `None` when
    /// the store cannot be read now.
    pub fn read(&self) -> Option<StoreSnapshot> {
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        if store.is_none() {
            *store = Store::open_read_only(&self.dir)
                .inspect_err(|e| tracing::debug!(error = %e, "metrics: the store is not readable"))
                .ok();
        }
        let status = match store.as_ref()?.status() {
            Ok(status) => status,
            Err(error) => {
                tracing::debug!(%error, "metrics: cannot read the store's status");
                *store = None;
                return None;
            }
        };
        Some(StoreSnapshot::from_status(&status))
    }
}

/// Starts serving the metrics on `server`: each page asks `scrapes` (the
/// capture loop) for the capture's numbers and reads the store in
/// `store_dir`, if the capture stores.
pub fn serve(
    server: http::Server,
    scrapes: mpsc::Sender<ScrapeRequest>,
    store_dir: Option<PathBuf>,
) -> tokio::task::JoinHandle<()> {
    let probe = store_dir.map(|dir| Arc::new(StoreProbe::new(dir)));
    let start_time = flowsql_store::now_ns() as f64 / 1e9;
    if let Ok(addr) = server.local_addr() {
        tracing::info!(%addr, "serving metrics at http://{addr}/metrics");
    }
    let page = move || {
        let scrapes = scrapes.clone();
        let probe = probe.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            let capture = match scrapes.send(reply).await {
                Ok(()) => answer.await.unwrap_or_default(),
                Err(_) => CaptureSnapshot::default(),
            };
            let store = match probe {
                Some(probe) => tokio::task::spawn_blocking(move || probe.read()).await.ok().flatten(),
                None => None,
            };
            super::render(env!("CARGO_PKG_VERSION"), start_time, &capture, store.as_ref())
        }
    };
    tokio::spawn(server.serve(page))
}

#[cfg(test)]
mod tests {
    use flowsql_store::test_util::TempDir;
    use flowsql_store::{ExportOptions, Store, StoreWriter, WriterConfig};

    use super::*;

    #[test]
    fn the_probe_reads_both_tiers_and_the_last_export_through_the_store() {
        let dir = TempDir::new("probe");
        let data = dir.path().join("data");
        let probe = StoreProbe::new(data.clone());
        assert_eq!(probe.read(), None, "no store yet");
        let writer = StoreWriter::spawn(&data, WriterConfig::default()).expect("writer");
        for i in 0..10 {
            writer.send_blocking(flowsql_store::synthetic::indexed_flow(1, i));
        }
        writer.finish();
        let before = flowsql_store::now_ns();
        let mut store = Store::open(&data).expect("open");
        let cutoff = flowsql_store::synthetic::indexed_flow(1, 6).timestamp_ns;
        store.export(&ExportOptions::up_to(cutoff), &mut |_| {}).expect("export");
        let snapshot = probe.read().expect("readable");
        assert_eq!((snapshot.hot_rows, snapshot.cold_rows, snapshot.cold_files), (4, 6, 1));
        assert!(snapshot.hot_bytes > 0 && snapshot.cold_bytes > 0);
        assert!(!snapshot.last_export_failed);
        let last = snapshot.last_export_success.expect("an export succeeded");
        assert!(last >= before as f64 / 1e9 - 1.0, "{last}");
    }
}
