//! A broadcaster for live-stream viewers served below hyper ([`crate::viewers`]): each
//! publication is written to every viewer's socket by one loop, and a viewer's own task only
//! runs when its socket would block, when it leaves, or at shutdown.
//!
//! Why: with a task per viewer woken for every publication, an edge's broadcast to 15,000
//! viewers cost, per viewer, a wake-up, a poll of the task and its feed, a registration with
//! the feed's `watch` and the write system call (BENCHMARKS.md, "Where an edge's CPU goes per
//! broadcast"). Here a broadcast costs, per viewer, a lock nobody else holds, the choice of
//! bytes and the write.
//!
//! What it promises, the same as a viewer with its own feed: the head, then the current
//! publication's bytes at once, then every publication the viewer is awake for; a viewer that
//! has not sent the current results gets [`Current::catch_up`], one that has gets
//! [`Current::update`]. A viewer whose socket would block (a partial write, or none) is handed
//! to its task, which writes the rest under the write-stall guard ([`crate::stall_guard`]) and
//! then the latest publication (skipping those in between): one frame of shared bytes held,
//! never a queue. A viewer that closes its end or sends anything is dropped at once (its task
//! waits on the socket's read side), as at shutdown and when the publisher goes away.
//!
//! Each runtime worker gets a shard of the viewers and a broadcaster task of its own, so a
//! multi-threaded process writes on every core; each broadcaster lets other tasks run after
//! every [`BROADCAST_TURN_VIEWERS`] viewers.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, watch};

use crate::viewer_io::{Ended, poll_left, poll_write_all};

/// Viewers a broadcaster writes to before it lets other tasks run (the votes an edge answers
/// wait at most this many writes, ~2 ms here).
pub const BROADCAST_TURN_VIEWERS: usize = 256;

/// One publication, as its viewers are sent it.
#[derive(Debug, Clone, Default)]
pub struct Current {
    /// The generation of the results it carries (0: none).
    pub results_generation: u64,
    /// What it adds for a viewer that has sent these results.
    pub update: Bytes,
    /// What a viewer that has not gets (the results, and whatever else is current).
    pub catch_up: Bytes,
}

impl Current {
    /// The bytes for a viewer whose last frame carried `results_generation`.
    fn frame_for(&self, results_generation: u64) -> Bytes {
        if self.results_generation == results_generation {
            self.update.clone()
        } else {
            self.catch_up.clone()
        }
    }
}

/// The publication and its sequence number (0: nothing published yet).
type Sequenced = (u64, Arc<Current>);

struct Shard {
    viewers: Mutex<BTreeMap<u64, Arc<dyn Member>>>,
    published: Notify,
}

struct HubShared {
    current: Mutex<Sequenced>,
    shards: Vec<Shard>,
    next_id: AtomicU64,
    viewers: AtomicUsize,
    closed: AtomicBool,
}

/// Locks `mutex`; a poisoned lock is taken as it is (every change under these locks is one
/// assignment, insert or remove, whole either way).
fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl HubShared {
    fn current(&self) -> Sequenced {
        let current = lock(&self.current);
        (current.0, Arc::clone(&current.1))
    }
}

/// The viewers of one feed; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<HubShared>,
}

/// Publishes into a [`Hub`]; dropping it ends every viewer's stream (the feed is done).
pub struct Publisher {
    shared: Arc<HubShared>,
}

impl Hub {
    /// A hub and its publisher, with a broadcaster task per runtime worker (spawned here: call
    /// it within the runtime).
    pub fn new() -> (Publisher, Hub) {
        let shards = tokio::runtime::Handle::current()
            .metrics()
            .num_workers()
            .max(1);
        let shared = Arc::new(HubShared {
            current: Mutex::new((0, Arc::new(Current::default()))),
            shards: (0..shards)
                .map(|_| Shard {
                    viewers: Mutex::new(BTreeMap::new()),
                    published: Notify::new(),
                })
                .collect(),
            next_id: AtomicU64::new(0),
            viewers: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        });
        for shard in 0..shards {
            // Unconstrained: tokio's cooperative budget would make a socket look blocked after
            // 128 writes in one poll; the broadcaster yields on its own instead.
            tokio::spawn(tokio::task::unconstrained(broadcast(
                Arc::clone(&shared),
                shard,
            )));
        }
        (
            Publisher {
                shared: Arc::clone(&shared),
            },
            Hub { shared },
        )
    }

    /// Viewers now.
    pub fn viewers(&self) -> usize {
        self.shared.viewers.load(Ordering::Relaxed)
    }
}

impl Publisher {
    /// The hub's viewers now.
    pub fn viewers(&self) -> usize {
        self.shared.viewers.load(Ordering::Relaxed)
    }

    /// Makes `current` the publication every viewer is sent next.
    pub fn publish(&self, current: Current) {
        {
            let mut slot = lock(&self.shared.current);
            *slot = (slot.0 + 1, Arc::new(current));
        }
        for shard in &self.shared.shards {
            // A permit is stored if the broadcaster is busy: it goes round once more.
            shard.published.notify_one();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        for shard in &self.shared.shards {
            shard.published.notify_one();
            let viewers: Vec<_> = lock(&shard.viewers).values().cloned().collect();
            for viewer in viewers {
                viewer.wake();
            }
        }
    }
}

/// One shard's broadcaster: on each publication, offers it to every viewer of the shard.
async fn broadcast(shared: Arc<HubShared>, shard: usize) {
    let shard_viewers = &shared.shards[shard];
    loop {
        shard_viewers.published.notified().await;
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        let (sequence, current) = shared.current();
        let mut next = 0;
        loop {
            let turn: Vec<Arc<dyn Member>> = {
                let viewers = lock(&shard_viewers.viewers);
                let turn: Vec<_> = viewers
                    .range(next..)
                    .take(BROADCAST_TURN_VIEWERS)
                    .map(|(id, viewer)| (*id, Arc::clone(viewer)))
                    .collect();
                match turn.last() {
                    Some((last, _)) => next = last + 1,
                    None => break,
                }
                turn.into_iter().map(|(_, viewer)| viewer).collect()
            };
            for viewer in &turn {
                viewer.offer(sequence, &current);
            }
            drop(turn);
            tokio::task::yield_now().await;
        }
    }
}

/// A viewer as its hub sees it.
trait Member: Send + Sync {
    /// Writes publication `sequence` if the hub writes for this viewer and it is behind;
    /// hands the viewer to its task if its socket would block or fails.
    fn offer(&self, sequence: u64, current: &Current);
    /// Wakes the viewer's task (the feed is done).
    fn wake(&self);
}

/// One viewer: its socket and where its stream stands.
struct Viewer<I> {
    state: Mutex<State<I>>,
}

struct State<I> {
    io: I,
    /// What the task still has to write (empty while the hub writes).
    pending: Bytes,
    /// The hub writes for this viewer (false: its task does, the head first).
    hub_writes: bool,
    /// The publication written last (or being written by the task).
    sequence: u64,
    /// The results generation of that publication.
    results_generation: u64,
    /// A write of the hub's that failed.
    failed: Option<io::Error>,
    /// The task, to wake when the hub hands the viewer back.
    waker: Option<Waker>,
}

impl<I: AsyncWrite + Unpin + Send> Member for Viewer<I> {
    fn offer(&self, sequence: u64, current: &Current) {
        let waker = {
            let mut state = lock(&self.state);
            if !state.hub_writes || state.sequence >= sequence {
                return;
            }
            let mut frame = current.frame_for(state.results_generation);
            state.sequence = sequence;
            state.results_generation = current.results_generation;
            // A socket that would block registers this no-op waker; the task registers its
            // own when it takes over.
            let mut cx = Context::from_waker(Waker::noop());
            match poll_write_all(&mut state.io, &mut cx, &mut frame) {
                Poll::Ready(Ok(())) => return,
                Poll::Ready(Err(error)) => state.failed = Some(error),
                Poll::Pending => state.pending = frame,
            }
            state.hub_writes = false;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn wake(&self) {
        let waker = lock(&self.state).waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Takes `id` out of its shard when the viewer's task ends, however it ends.
struct Membership {
    shared: Arc<HubShared>,
    id: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let shard = &self.shared.shards[self.id as usize % self.shared.shards.len()];
        lock(&shard.viewers).remove(&self.id);
        self.shared.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one viewer of `hub`: `head`, then the hub's publications, until one of [`Ended`].
/// `place` (the viewer's charge against its budget, its place in the counts) is held until
/// then.
pub(crate) async fn serve<I>(
    io: I,
    head: Bytes,
    hub: Hub,
    place: Box<dyn std::any::Any + Send>,
    mut shutdown: watch::Receiver<bool>,
) -> Ended
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let viewer = Arc::new(Viewer {
        state: Mutex::new(State {
            io,
            pending: head,
            hub_writes: false,
            sequence: 0,
            results_generation: 0,
            failed: None,
            waker: None,
        }),
    });
    let shared = Arc::clone(&hub.shared);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let shard = &shared.shards[id as usize % shared.shards.len()];
    lock(&shard.viewers).insert(id, Arc::clone(&viewer) as Arc<dyn Member>);
    shared.viewers.fetch_add(1, Ordering::Relaxed);
    let membership = Membership {
        shared: Arc::clone(&shared),
        id,
    };
    let stop = shutdown.wait_for(|stop| *stop);
    tokio::pin!(stop);
    let ended = std::future::poll_fn(|cx| {
        if stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ended::Shutdown);
        }
        let mut state = lock(&viewer.state);
        poll_viewer(&shared, &mut state, cx)
    })
    .await;
    // A broadcaster's turn may still hold the viewer: it must not write to it any more.
    lock(&viewer.state).hub_writes = false;
    drop(membership);
    // Best effort: the stall guard bounds it.
    let _ =
        std::future::poll_fn(|cx| Pin::new(&mut lock(&viewer.state).io).poll_shutdown(cx)).await;
    drop(place);
    ended
}

/// One wake-up of a viewer's task: has it left, or failed; is there something for the task
/// to write (the head, what the hub handed back, then the latest publication); else the hub
/// writes for it and the task waits.
fn poll_viewer<I>(shared: &HubShared, state: &mut State<I>, cx: &mut Context<'_>) -> Poll<Ended>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(error) = state.failed.take() {
        return Poll::Ready(Ended::WriteFailed(error));
    }
    if poll_left(&mut state.io, cx).is_ready() {
        return Poll::Ready(Ended::ClientLeft);
    }
    while !state.hub_writes {
        match poll_write_all(&mut state.io, cx, &mut state.pending) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(error)) => return Poll::Ready(Ended::WriteFailed(error)),
            Poll::Pending => return Poll::Pending,
        }
        let (sequence, current) = shared.current();
        if sequence > state.sequence {
            state.pending = current.frame_for(state.results_generation);
            state.sequence = sequence;
            state.results_generation = current.results_generation;
        } else {
            // Under the viewer's lock: a publication after `sequence` finds it the hub's.
            state.hub_writes = true;
        }
    }
    if shared.closed.load(Ordering::SeqCst) {
        return Poll::Ready(Ended::FeedDone);
    }
    match &mut state.waker {
        Some(waker) => waker.clone_from(cx.waker()),
        None => state.waker = Some(cx.waker().clone()),
    }
    Poll::Pending
}
