//! Ctrl-C while a query runs, delivered by a thread of its own.
//!
//! Tokio hands a signal to its listeners when some runtime thread polls the
//! I/O driver; while a heavy query keeps every worker busy, that may not
//! happen for as long as the query runs. A small current-thread runtime on
//! its own thread listens for SIGINT instead and counts them in a watch
//! channel, which wakes the REPL at once whatever the workers are doing.

use std::sync::mpsc;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Counts SIGINTs.
#[derive(Debug)]
pub struct Interrupts {
    count: watch::Receiver<u64>,
}

impl Interrupts {
    /// Starts listening. From here on SIGINT no longer ends the process.
    pub fn listen() -> anyhow::Result<Interrupts> {
        let (sender, count) = watch::channel(0u64);
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("flowsql-ctrl-c".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let mut interrupts = match signal(SignalKind::interrupt()) {
                        Ok(interrupts) => interrupts,
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    while interrupts.recv().await.is_some() {
                        sender.send_modify(|n| *n += 1);
                    }
                });
            })
            .context("cannot start the Ctrl-C thread")?;
        ready_rx.recv().context("the Ctrl-C thread ended")?.context("cannot handle Ctrl-C")?;
        Ok(Interrupts { count })
    }

    /// Forgets the Ctrl-Cs so far: the next [`Interrupts::next`] waits for a new one.
    pub fn clear(&mut self) {
        self.count.borrow_and_update();
    }

    /// Waits for the next Ctrl-C (forever if the listening thread is gone).
    pub async fn next(&mut self) {
        if self.count.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
