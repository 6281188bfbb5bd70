//! Where the write-ahead log writer runs: on its own OS thread in production (so an fsync
//! never stalls request handling), or as a task on the current runtime in the simulation
//! (where the disk is simulated and everything must run on turmoil's one thread).

use tokio::sync::mpsc;

use crate::WalExecutor;
use crate::storage::Storage;
use crate::wal::{Wal, WalDone, WalJob, run_writer, spawn_writer_thread};

/// Resolves when the writer has stopped (its job queue closed and drained, or it failed).
pub enum WriterDone {
    /// A writer on its own thread.
    Thread(std::thread::JoinHandle<()>),
    /// A writer task.
    Task(tokio::task::JoinHandle<()>),
}

impl WriterDone {
    /// Waits for the writer to stop.
    pub async fn wait(self) {
        match self {
            Self::Thread(thread) => {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
            Self::Task(task) => {
                let _ = task.await;
            }
        }
    }
}

/// Why the writer could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the log writer thread: {0}")]
pub struct StartError(#[from] std::io::Error);

/// Starts the writer; returns the engine's ends of its queues.
pub fn start<S: Storage + 'static>(
    wal: Wal<S>,
    executor: WalExecutor,
    capacity: usize,
) -> Result<(mpsc::Sender<WalJob>, mpsc::Receiver<WalDone>, WriterDone), StartError> {
    match executor {
        WalExecutor::DedicatedThread => {
            let handle = spawn_writer_thread(wal, capacity)?;
            let thread = handle.thread;
            let joined = std::thread::Builder::new()
                .name("tally-wal-join".to_owned())
                .spawn(move || {
                    if let Ok(Err(error)) = thread.join() {
                        tracing::error!(%error, "log writer stopped with an error");
                    }
                })?;
            Ok((handle.submit, handle.done, WriterDone::Thread(joined)))
        }
        WalExecutor::Task => {
            let (submit, jobs) = mpsc::channel(capacity);
            let (done_sender, done) = mpsc::channel(capacity);
            let task = tokio::spawn(async move {
                if let Err(error) = run_writer(wal, jobs, done_sender).await {
                    tracing::error!(%error, "log writer stopped with an error");
                }
            });
            Ok((submit, done, WriterDone::Task(task)))
        }
    }
}
