//! A capture on a thread of its own, for `flowsql shell --capture`: the
//! shell's queries run while it captures, and see its uncommitted rows
//! through [`CaptureOptions::live`].

use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::capture::{CaptureOptions, CaptureService};
use crate::error::error_chain;
use crate::{ServiceError, Supervision};

/// A capture running on its own thread, embedded (see
/// [`Supervision::Embedded`]). Dropping it stops the capture and commits
/// what it has.
#[derive(Debug)]
pub struct BackgroundCapture {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ServiceError>>>,
    /// What the capture cannot fill on this kernel (one line each).
    pub unavailable: Vec<String>,
}

impl BackgroundCapture {
    /// Starts capturing; returns once the programs are attached (or with the
    /// reason they could not be).
    pub fn start(options: CaptureOptions) -> Result<BackgroundCapture, ServiceError> {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Vec<String>, ServiceError>>();
        let thread = std::thread::Builder::new()
            .name("flowsql-capture".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|source| ServiceError::Start { what: "the capture's async runtime", source })?;
                runtime.block_on(async move {
                    let mut capture = match CaptureService::start(options, Supervision::Embedded).await {
                        Ok(capture) => {
                            let _ = ready_tx.send(Ok(capture.unavailable().to_vec()));
                            capture
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return Ok(());
                        }
                    };
                    capture
                        .run(async {
                            let _ = stop_rx.await;
                        })
                        .await?;
                    capture.shutdown().await.map(drop)
                })
            })
            .map_err(|source| ServiceError::Start { what: "the capture thread", source })?;
        match ready_rx.recv() {
            Ok(Ok(unavailable)) => {
                Ok(BackgroundCapture { stop: Some(stop_tx), thread: Some(thread), unavailable })
            }
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            // The thread ended without a word: its own error, or a panic.
            Err(_) => match thread.join() {
                Ok(Err(error)) => Err(error),
                Ok(Ok(())) => Err(ServiceError::ThreadEnded),
                Err(_) => Err(ServiceError::ThreadPanicked),
            },
        }
    }

    /// Stops capturing: detaches, commits what was captured.
    pub fn stop(mut self) -> Result<(), ServiceError> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> Result<(), ServiceError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ServiceError::ThreadPanicked),
            None => Ok(()),
        }
    }
}

impl Drop for BackgroundCapture {
    fn drop(&mut self) {
        if let Err(error) = self.stop_thread() {
            tracing::error!(error = %error_chain(&error), "capture stopped with an error");
        }
    }
}
