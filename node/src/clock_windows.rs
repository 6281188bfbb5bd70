//! The clock watch's task ([`crate::clock_watch`]): a look every [`CLOCK_CHECK_INTERVAL`],
//! and each poll's start-up window proposed to the engine once the clock may be trusted.

use std::sync::Arc;

use tally_core::{PollId, PollWindow};
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock_watch::{CLOCK_CHECK_INTERVAL, ClockWatch};
use crate::engine::Command;

/// Runs the watch until `stopping`: a look every [`CLOCK_CHECK_INTERVAL`], and the
/// start-up windows proposed to the engine once the clock may be trusted.
pub async fn run(
    clock_watch: Arc<ClockWatch>,
    engine: mpsc::Sender<Command>,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        let (_, windows) = clock_watch.check();
        for (poll, window) in windows {
            propose(&engine, poll, window).await;
        }
        tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(CLOCK_CHECK_INTERVAL) => {}
        }
    }
}

/// Proposes a start-up window; a refusal (the engine stopping, a poll gone) is logged.
async fn propose(engine: &mpsc::Sender<Command>, poll: PollId, window: PollWindow) {
    let (reply, answer) = oneshot::channel();
    let command = Command::MergeWindow {
        poll: poll.clone(),
        window,
        reply,
    };
    if engine.send(command).await.is_err() {
        return;
    }
    match answer.await {
        Ok(Ok(changed)) => {
            tracing::info!(%poll, ?window, changed, "start-up window proposed at the checked clock")
        }
        Ok(Err(error)) => tracing::warn!(%poll, %error, "start-up window not proposed"),
        Err(_) => {}
    }
}
