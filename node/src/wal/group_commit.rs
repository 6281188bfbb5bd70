//! The group-commit writer: one task owns the [`Wal`], takes every job already queued, appends
//! them all, and covers them with ONE fsync, so at peak one `fdatasync` acknowledges thousands
//! of votes (DESIGN.md §4).
//!
//! What it promises: jobs are written in the order they were submitted; a [`WalDone`] with
//! `result: Ok` means every job with a token up to `up_to_token` is durable; the first error is
//! reported in a [`WalDone`] and ends the writer (a failed fsync is never retried: after it the
//! kernel may have dropped the dirty pages, so "retry until it works" would acknowledge lost
//! votes — PostgreSQL's fsyncgate); before that report, the failed group's bytes are cut off
//! the segment ([`Wal::roll_back_to`]), so the next start replays none of its votes. The
//! replies a job carries ([`JobAnswers`]) are answered right before its group's report: `Ok`
//! only after the group's sync returned `Ok`, the failure otherwise. The
//! writer is an `async fn` that calls the synchronous storage directly: production runs it on
//! its own OS thread ([`spawn_writer_thread`]), the simulation spawns [`run_writer`] as an
//! ordinary task over its instant simulated disk.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::Instant;

use super::{WAL_ENTRY_BYTES_MAX, Wal, WalEntry, WalError};
pub use crate::engine::JobAnswers;
use crate::storage::Storage;

/// Most entries appended under one fsync. A single job larger than this is still taken whole.
pub const WAL_GROUP_ENTRIES_MAX: usize = 65_536;

/// Most frame bytes appended under one fsync (checked after each job, so a group may exceed
/// it by one job).
pub const WAL_GROUP_BYTES_MAX: u64 = 32 << 20;

/// Capacity of the writer's job queue and of its done queue, in jobs. The engine keeps at most
/// [`WAL_JOBS_IN_FLIGHT_MAX`] job in flight, so the queue only fills at shutdown; when it is
/// full, `submit.send` waits (the engine then stops taking votes: it answers 503) rather than
/// buffering without bound.
pub const WAL_JOBS_QUEUE_MAX: usize = 4;

/// Jobs the engine submits before it waits for a [`WalDone`] (`engine.rs`: one in flight at
/// a time, so everything that arrives meanwhile joins the next group).
pub const WAL_JOBS_IN_FLIGHT_MAX: usize = 1;

const _: () = assert!(WAL_ENTRY_BYTES_MAX as u64 <= WAL_GROUP_BYTES_MAX);
// Every job in flight fits the job queue, and its answer the done queue, so neither side ever
// waits for the other while serving.
const _: () = assert!(WAL_JOBS_IN_FLIGHT_MAX >= 1 && WAL_JOBS_IN_FLIGHT_MAX <= WAL_JOBS_QUEUE_MAX);

/// What a job asks of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalJobKind {
    /// Append the entries; they are durable when a [`WalDone`] covering the token says `Ok`.
    Append,
    /// The entries are the WHOLE state (every poll spec and record batch, including
    /// everything submitted before this job): write them as a snapshot and drop older
    /// segments. Never grouped with appends.
    Snapshot,
}

/// One unit of work for the writer. Tokens must increase from job to job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalJob {
    /// Chosen by the engine, increasing: a [`WalDone`] acknowledges every token up to its own.
    pub token: u64,
    /// Append or snapshot.
    pub kind: WalJobKind,
    /// The entries.
    pub entries: Vec<WalEntry>,
    /// Replies that wait for this job: the writer answers them once the group holding it is
    /// durable, before its report, or with the failure if it fails (empty for most callers;
    /// the engine's, under local acks: [`JobAnswers`]).
    pub answers: JobAnswers,
}

impl WalJob {
    /// A job that appends `entries`.
    pub fn append(token: u64, entries: Vec<WalEntry>) -> Self {
        Self {
            token,
            kind: WalJobKind::Append,
            entries,
            answers: JobAnswers::default(),
        }
    }

    /// A job that replaces the log with a snapshot of the whole state, `entries`.
    pub fn snapshot(token: u64, entries: Vec<WalEntry>) -> Self {
        Self {
            token,
            kind: WalJobKind::Snapshot,
            entries,
            answers: JobAnswers::default(),
        }
    }
}

/// What the writer did with a group of jobs.
#[derive(Debug, Clone)]
pub struct WalDone {
    /// Every job with a token up to this one is covered by this report.
    pub up_to_token: u64,
    /// Append (a group of jobs) or snapshot (one job).
    pub kind: WalJobKind,
    /// Jobs in the group.
    pub jobs: usize,
    /// Entries in the group.
    pub entries: usize,
    /// Frame bytes written.
    pub bytes: u64,
    /// Time spent writing the group out and fsyncing it (for a snapshot: writing and syncing
    /// the whole snapshot and starting the new segment), on tokio's clock.
    pub fsync: Duration,
    /// The log's [`Wal::bytes_since_snapshot`] afterwards: the engine snapshots when it
    /// grows past its threshold.
    pub bytes_since_snapshot: u64,
    /// `Ok`: those jobs are durable. `Err`: they are not, and the writer has stopped; no job
    /// submitted after them will be written either.
    pub result: Result<(), WalError>,
}

/// The engine's ends of a writer running on its own thread.
#[derive(Debug)]
pub struct WalHandle<S: Storage> {
    /// Where jobs go (bounded).
    pub submit: mpsc::Sender<WalJob>,
    /// Where reports come back (bounded; the writer waits when it is full).
    pub done: mpsc::Receiver<WalDone>,
    /// The writer's thread: it ends when `submit` is dropped (returning the log) or after
    /// the first error.
    pub thread: std::thread::JoinHandle<Result<Wal<S>, WalError>>,
}

/// Runs [`run_writer`] on a new OS thread named `name` (what `top -H` and profiles show; Linux
/// keeps 15 bytes of it) with its own current-thread tokio runtime, with queues of `capacity`
/// jobs and reports.
pub fn spawn_writer_thread<S: Storage + 'static>(
    wal: Wal<S>,
    capacity: usize,
    name: &str,
) -> io::Result<WalHandle<S>> {
    assert!(capacity >= 1, "a writer queue needs room for one job");
    let (submit, jobs) = mpsc::channel(capacity);
    let (done_sender, done) = mpsc::channel(capacity);
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || runtime.block_on(run_writer(wal, jobs, done_sender)))?;
    Ok(WalHandle {
        submit,
        done,
        thread,
    })
}

/// The group-commit loop. Waits for a job, takes every job already queued (up to
/// [`WAL_GROUP_ENTRIES_MAX`] entries or [`WAL_GROUP_BYTES_MAX`] bytes, stopping before a
/// snapshot job), appends them, syncs once, and reports. Returns the log when `jobs` is closed
/// and drained (or `done` is dropped), or the first error after reporting it.
pub async fn run_writer<S: Storage>(
    wal: Wal<S>,
    jobs: mpsc::Receiver<WalJob>,
    done: mpsc::Sender<WalDone>,
) -> Result<Wal<S>, WalError> {
    run_writer_pausing(wal, jobs, done, None).await
}

/// [`run_writer`], awaiting `pause` (a simulated disk's fsync time) before each group's sync.
async fn run_writer_pausing<S: Storage>(
    mut wal: Wal<S>,
    mut jobs: mpsc::Receiver<WalJob>,
    done: mpsc::Sender<WalDone>,
    pause: Option<Arc<dyn SyncPause>>,
) -> Result<Wal<S>, WalError> {
    let mut last_token = None;
    let mut carried: Option<WalJob> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => {
                    check_token(&mut last_token, job.token);
                    job
                }
                None => return Ok(wal),
            },
        };
        let report = match first.kind {
            WalJobKind::Snapshot => write_snapshot(&mut wal, first),
            WalJobKind::Append => {
                let mut group = Group::start(first, &wal);
                let appended = group.append_queued(&mut wal, &mut jobs, &mut last_token);
                if let Some(pause) = &pause {
                    pause.pause().await;
                }
                carried = group.carried.take();
                group.finish(&mut wal, appended)
            }
        };
        let failed = report.result.clone().err();
        let appended = report.kind == WalJobKind::Append;
        if done.send(report).await.is_err() {
            // Nobody listens for acknowledgements any more: the node is shutting down.
            return Ok(wal);
        }
        if appended && failed.is_none() {
            // After the report, so no vote waits for it; the next group waits at most one
            // fill (`Wal::fill_ahead`).
            wal.fill_ahead();
        }
        if let Some(error) = failed {
            tracing::error!(%error, "the write-ahead log writer stopped");
            // The log, and with it the data directory's lock, is kept until the engine lets
            // go of the queue (the node stops): while this process still answers its peers
            // a second process must not open the directory and reissue its seqs. Nothing is
            // written any more; a job sent after the failure is dropped unanswered (the
            // failed engine sends none).
            while let Some(job) = jobs.recv().await {
                job.answers.failed();
            }
            return Err(error);
        }
    }
}

/// After a group failed: cuts its bytes off the segment ([`Wal::roll_back_to`]), before the
/// failure is reported, so that no vote answered "not counted" comes back at the next start.
fn roll_back<S: Storage>(wal: &mut Wal<S>, durable_end: (u64, u64), cause: &WalError) {
    match wal.roll_back_to(durable_end, cause) {
        Ok(()) => tracing::warn!(
            segment = durable_end.0,
            bytes = durable_end.1,
            "the failed group's bytes were cut off the log: it ends where it was last durable"
        ),
        Err(error) => tracing::error!(
            %error,
            "could not cut the failed group's bytes off the log: the next start may replay \
             some of its votes (answered 503); retries with the same vote IDs count them once"
        ),
    }
}

/// Asserts the engine's promise that tokens increase.
fn check_token(last_token: &mut Option<u64>, token: u64) {
    if let Some(last) = *last_token {
        assert!(
            token > last,
            "write-ahead log job token {token} after {last}"
        );
    }
    *last_token = Some(token);
}

fn write_snapshot<S: Storage>(wal: &mut Wal<S>, job: WalJob) -> WalDone {
    let started = Instant::now();
    let count = job.entries.len();
    let result = wal.write_snapshot(job.entries);
    WalDone {
        up_to_token: job.token,
        kind: WalJobKind::Snapshot,
        jobs: 1,
        entries: count,
        bytes: result.as_ref().map_or(0, |written| written.bytes),
        fsync: started.elapsed(),
        bytes_since_snapshot: wal.bytes_since_snapshot(),
        result: result.map(drop),
    }
}

/// The append jobs gathered under one fsync.
struct Group {
    /// Where the log ended before the group: everything before it is durable (or the writer
    /// has stopped).
    durable_end: (u64, u64),
    first: Option<WalJob>,
    up_to_token: u64,
    jobs: usize,
    entries: usize,
    bytes: u64,
    /// A snapshot job met while gathering: it goes next, alone.
    carried: Option<WalJob>,
    /// The replies waiting for the group's jobs.
    answers: Vec<JobAnswers>,
}

impl Group {
    fn start<S: Storage>(first: WalJob, wal: &Wal<S>) -> Self {
        Self {
            durable_end: wal.end(),
            up_to_token: first.token,
            first: Some(first),
            jobs: 0,
            entries: 0,
            bytes: 0,
            carried: None,
            answers: Vec::new(),
        }
    }

    fn full(&self) -> bool {
        self.entries >= WAL_GROUP_ENTRIES_MAX || self.bytes >= WAL_GROUP_BYTES_MAX
    }

    fn append<S: Storage>(&mut self, wal: &mut Wal<S>, job: &WalJob) -> Result<(), WalError> {
        if !job.answers.is_empty() {
            self.answers.push(job.answers.clone());
        }
        self.up_to_token = job.token;
        self.jobs += 1;
        self.entries += job.entries.len();
        self.bytes += wal.append(&job.entries)?;
        Ok(())
    }

    /// Appends the first job and every append job already queued, until the group is full,
    /// the queue is empty, or a snapshot job comes up.
    fn append_queued<S: Storage>(
        &mut self,
        wal: &mut Wal<S>,
        jobs: &mut mpsc::Receiver<WalJob>,
        last_token: &mut Option<u64>,
    ) -> Result<(), WalError> {
        if let Some(first) = self.first.take() {
            self.append(wal, &first)?;
        }
        while !self.full() {
            let job = match jobs.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            };
            check_token(last_token, job.token);
            if job.kind == WalJobKind::Snapshot {
                self.carried = Some(job);
                break;
            }
            self.append(wal, &job)?;
        }
        Ok(())
    }

    /// Syncs once (unless appending already failed); on a failure, cuts the group's bytes off
    /// the log. Then answers the replies waiting for the group's jobs (`Ok` if durable, the
    /// failure otherwise), before the report goes to the engine, so a vote's answer does not
    /// wait for the engine to wake; and returns the report.
    fn finish<S: Storage>(self, wal: &mut Wal<S>, appended: Result<(), WalError>) -> WalDone {
        let started = Instant::now();
        let result = appended.and_then(|()| wal.sync());
        let fsync = started.elapsed();
        if let Err(error) = &result {
            roll_back(wal, self.durable_end, error);
        }
        for job in &self.answers {
            if result.is_ok() {
                job.durable();
            } else {
                job.failed();
            }
        }
        WalDone {
            up_to_token: self.up_to_token,
            kind: WalJobKind::Append,
            jobs: self.jobs,
            entries: self.entries,
            bytes: self.bytes,
            fsync,
            bytes_since_snapshot: wal.bytes_since_snapshot(),
            result,
        }
    }
}

/// How the writer runs. Production: on its own OS thread, so an fsync never stalls request
/// handling. The simulation: as a task on the current runtime, where the disk is simulated and
/// everything must run on turmoil's one thread. A memory-only node (`--memory-only`, whose
/// storage never blocks) has no writer: the engine writes its log ([`WalExecutor::Inline`]).
#[derive(Clone)]
pub enum WalExecutor {
    /// On its own OS thread, so fsyncs never block the request runtime (production).
    DedicatedThread,
    /// As a task on the current runtime (tests on an instant disk, and memory-only nodes,
    /// whose storage never blocks).
    Task,
    /// As a task that awaits a simulated disk's fsync time between writing each group and
    /// syncing it (the simulation).
    PausingTask(Arc<dyn SyncPause>),
    /// No writer of its own: the engine appends and syncs each job itself, in the call that
    /// submits it ([`InlineWriter`]), so a group costs no hand-off to a writer and no wake-up
    /// back. Only for a storage whose writes and syncs never block: a memory-only node's.
    Inline,
}

impl std::fmt::Debug for WalExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::DedicatedThread => "DedicatedThread",
            Self::Task => "Task",
            Self::PausingTask(_) => "PausingTask",
            Self::Inline => "Inline",
        })
    }
}

/// The time a simulated disk's fsync takes, owned by the simulated disk: the writer awaits
/// [`SyncPause::pause`] between writing a group and syncing it, so a crash in between loses
/// the written bytes, as a real crash during a real fsync does. Real storage needs none: its
/// fsync takes real time by itself.
pub trait SyncPause: Send + Sync + 'static {
    /// Resolves when the simulated fsync has taken its time.
    fn pause(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Resolves when the writer has stopped (its job queue closed and drained, or it failed).
pub enum WriterDone {
    /// A writer on its own thread.
    Thread(std::thread::JoinHandle<()>),
    /// A writer task.
    Task(tokio::task::JoinHandle<()>),
    /// An inline writer ([`WalExecutor::Inline`]), until [`WriterDone::take_inline`] hands
    /// it to the engine, which then owns the log: it stops with the engine.
    Inline(Option<InlineWriter>),
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
            Self::Inline(_) => {}
        }
    }

    /// The inline writer, for the engine to run (`None` for a thread or a task, or once
    /// taken).
    pub fn take_inline(&mut self) -> Option<InlineWriter> {
        match self {
            Self::Inline(writer) => writer.take(),
            Self::Thread(_) | Self::Task(_) => None,
        }
    }
}

/// A writer the engine runs itself ([`WalExecutor::Inline`]): [`InlineWriter::write`] appends
/// and syncs one job and puts its [`WalDone`] on the done queue before it returns, as the
/// writer task would have after a hand-off, with the same promises (order, a failed group
/// cut off and reported, nothing written after a failure). The engine reads the report from
/// the queue as it reads any writer's, so everything after the write (answers, marks,
/// failure) takes the one path every executor shares.
pub struct InlineWriter {
    /// In a mutex only so that a node's handle stays `Sync` (tests share it between threads);
    /// [`InlineWriter::write`] takes `&mut self`, so it is never locked.
    write: std::sync::Mutex<Box<dyn FnMut(WalJob) + Send>>,
}

impl std::fmt::Debug for InlineWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InlineWriter")
    }
}

impl InlineWriter {
    fn new<S: Storage + 'static>(
        mut wal: Wal<S>,
        mut jobs: mpsc::Receiver<WalJob>,
        done: mpsc::Sender<WalDone>,
    ) -> Self {
        let mut last_token = None;
        let mut failed = false;
        let write = move |job: WalJob| {
            if failed {
                // As the writer after a failure: nothing is written any more, the job is
                // dropped (the failed engine sends none; its replies get the failure). The log, and the data
                // directory's lock, stay held until the engine drops this writer.
                job.answers.failed();
                return;
            }
            check_token(&mut last_token, job.token);
            let report = match job.kind {
                WalJobKind::Snapshot => write_snapshot(&mut wal, job),
                WalJobKind::Append => {
                    let mut group = Group::start(job, &wal);
                    // `jobs` stays empty (nobody sends to it): the group is this one job.
                    let appended = group.append_queued(&mut wal, &mut jobs, &mut last_token);
                    group.finish(&mut wal, appended)
                }
            };
            let failure = report.result.as_ref().err().map(ToString::to_string);
            failed = failure.is_some();
            let appended = report.kind == WalJobKind::Append;
            // The engine reads each report before it writes the next job (at most
            // WAL_JOBS_IN_FLIGHT_MAX unread, fewer than the queue holds), so the queue has
            // room; closed means the engine is gone, and nobody waits for the report.
            if let Err(mpsc::error::TrySendError::Full(_)) = done.try_send(report) {
                unreachable!("an inline log writer's report queue is full");
            }
            if appended && !failed {
                wal.fill_ahead();
            }
            if let Some(error) = failure {
                tracing::error!(%error, "the write-ahead log writer stopped");
            }
        };
        Self {
            write: std::sync::Mutex::new(Box::new(write)),
        }
    }

    /// Appends and syncs `job` (or writes it as a snapshot), and queues its report.
    pub fn write(&mut self, job: WalJob) {
        let write = self
            .write
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        write(job);
    }
}

/// Why the writer could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the log writer thread: {0}")]
pub struct StartError(#[from] std::io::Error);

/// Starts the writer (on a thread named `name` when the executor gives it one); returns the
/// engine's ends of its queues.
pub fn start<S: Storage + 'static>(
    wal: Wal<S>,
    executor: WalExecutor,
    name: &str,
) -> Result<(mpsc::Sender<WalJob>, mpsc::Receiver<WalDone>, WriterDone), StartError> {
    match executor {
        WalExecutor::DedicatedThread => {
            let handle = spawn_writer_thread(wal, WAL_JOBS_QUEUE_MAX, name)?;
            let thread = handle.thread;
            let joined = std::thread::Builder::new()
                .name(format!("{name}-join"))
                .spawn(move || {
                    if let Ok(Err(error)) = thread.join() {
                        tracing::error!(%error, "log writer stopped with an error");
                    }
                })?;
            Ok((handle.submit, handle.done, WriterDone::Thread(joined)))
        }
        WalExecutor::Inline => {
            let (submit, jobs) = mpsc::channel(WAL_JOBS_QUEUE_MAX);
            let (done_sender, done) = mpsc::channel(WAL_JOBS_QUEUE_MAX);
            let writer = InlineWriter::new(wal, jobs, done_sender);
            Ok((submit, done, WriterDone::Inline(Some(writer))))
        }
        WalExecutor::Task | WalExecutor::PausingTask(_) => {
            let pause = match executor {
                WalExecutor::PausingTask(pause) => Some(pause),
                _ => None,
            };
            let (submit, jobs) = mpsc::channel(WAL_JOBS_QUEUE_MAX);
            let (done_sender, done) = mpsc::channel(WAL_JOBS_QUEUE_MAX);
            let task = tokio::spawn(async move {
                if let Err(error) = run_writer_pausing(wal, jobs, done_sender, pause).await {
                    tracing::error!(%error, "log writer stopped with an error");
                }
            });
            Ok((submit, done, WriterDone::Task(task)))
        }
    }
}
