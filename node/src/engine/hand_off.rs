//! The engine's hand-off: lets the tasks it has just woken run before it goes on.
//!
//! The engine is a task on the node's runtime, and its wake-ups can be long (indexing a group
//! commit's records, then up to [`super::COMMANDS_PER_WAKE_MAX`] more commands: tens of
//! milliseconds flat out). A task woken from a task goes into tokio's LIFO slot of the same
//! worker, which no other worker may take: it runs only once the engine returns to the
//! runtime. Under replicated acks three tasks on a vote's path are woken that way: the push
//! session that sends a durable group to the ack peer (the engine hands it the records before
//! it indexes them, so that the push overlaps that work), the HTTP task of a reply a peer's
//! confirmation has just answered, and on the ack peer the push journal's task, which the
//! engine's answers to pushes wake and which answers the pusher's next pushes. Measured on the
//! real binary, flat out on a busy host, the ack-peer wait (local fsync to the engine's answer)
//! fell from 27–30 ms to 12–14 ms once the engine handed off there (BENCHMARKS.md, "Where
//! replicated batches lose to local ones, and the engine's hand-off").

use std::future::poll_fn;
use std::task::Poll;

/// Returns to the runtime once, so that the tasks the engine has woken run first: the engine
/// wakes itself and returns pending, tokio puts it at the back of its worker's queue (where
/// an idle worker may take it) and runs the woken task from the LIFO slot first. Nothing of
/// the engine's state changes meanwhile: only the engine touches it.
pub(super) async fn hand_off() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::hand_off;

    /// Whether a task woken by another (as a push session by the engine's durable bump) has
    /// run by the time the waker, on the same single worker, goes on: with `hand_off` between
    /// the wake and the check, or without.
    fn woken_task_ran_first(with_hand_off: bool) -> bool {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("a one-worker runtime");
        runtime.block_on(async move {
            let (durable, mut session_view) = tokio::sync::watch::channel(0_u64);
            let ran = Arc::new(AtomicBool::new(false));
            let session_ran = ran.clone();
            let session = tokio::spawn(async move {
                session_view.changed().await.expect("the engine is alive");
                session_ran.store(true, Ordering::SeqCst);
            });
            let engine = tokio::spawn(async move {
                durable.send_modify(|n| *n += 1);
                if with_hand_off {
                    hand_off().await;
                }
                let ran_first = ran.load(Ordering::SeqCst);
                drop(durable);
                ran_first
            });
            let ran_first = engine.await.expect("the engine task ends");
            session.await.expect("the session task ends");
            ran_first
        })
    }

    /// Goal: the engine's hand-off lets a task it woke run before it goes on, where a woken
    /// task otherwise waits for the engine's wake-up to end. Method: one worker, a stand-in
    /// session waiting on a watch the stand-in engine bumps, checked right after the bump.
    #[test]
    fn a_task_the_engine_woke_runs_before_the_engine_goes_on() {
        assert!(woken_task_ran_first(true));
        assert!(!woken_task_ran_first(false));
    }
}
