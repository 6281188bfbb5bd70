//! The push journal (issue 26's follow-up): records a peer pushes are answered durable once
//! the journal has fsynced them, without waiting for the engine and its main log; a crash
//! before the engine logged them loses nothing (start-up replays the journal); the journal is
//! bounded (full: pushes are answered after the engine's log, as before); a damaged journal
//! stops the start with a clear error.
//!
//! Method: the journal's task runs over a memory disk against channels the test holds in
//! place of the engine: the test answers (or never answers) the engine's part of each push.
//! Memory storage keeps unsynced bytes; the loss of unsynced bytes at a crash is the
//! simulation's to check (its disk drops them, and its checker counts lost acknowledged votes).

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic loudly

use std::sync::Arc;
use std::time::Duration;

use tally_core::wire::PushAck;
use tally_core::{ActorId, NodeId, OptionIndex, PollId, RecordBatch, Replica, VoteId};
use tally_node::config::Config;
use tally_node::engine::{AckCommand, Command};
use tally_node::health::Health;
use tally_node::metrics::Metrics;
use tally_node::push_journal::recover::recover_journal;
use tally_node::push_journal::storage::JournalStorage;
use tally_node::push_journal::{JournalLimits, JournalPush, PushJournal};
use tally_node::storage::{MemoryStorage, Storage};
use tally_node::wal::startup::RecoveryError;
use tally_node::wal::{Wal, WalEntry, WalExecutor};
use tokio::sync::{mpsc, oneshot};

fn actor(node: &str) -> ActorId {
    ActorId {
        node: NodeId::new(node).unwrap(),
        incarnation: 1,
    }
}

fn poll() -> PollId {
    PollId::new("superbowl").unwrap()
}

/// Records `first..=last` of node `b`, each a distinct vote.
fn batch(first: u64, last: u64) -> RecordBatch {
    let mut batch = RecordBatch::new(poll(), actor("b"), first);
    for seq in first..=last {
        batch.push(VoteId(u128::from(seq)), OptionIndex(0), 1);
    }
    batch
}

/// Node `a`'s main log and replica as start-up leaves them: its identity and the poll.
fn main_log(disk: &MemoryStorage) -> (Replica, Wal<MemoryStorage>) {
    let spec = Config::default()
        .poll_specs(tally_core::UnixMillis(0))
        .unwrap()
        .remove(0);
    let mut replica = Replica::new(actor("a"), [1, 2, 3, 4]);
    let (mut wal, _) = Wal::open(disk.clone(), |entry| match entry {
        WalEntry::Poll(spec) => drop(replica.upsert_poll(spec)),
        WalEntry::Records(batch) => drop(replica.apply_records(&batch)),
        _ => {}
    })
    .unwrap();
    if replica.definition(&poll()).is_none() {
        replica.upsert_poll(spec.clone()).unwrap();
        wal.append(&[WalEntry::Identity(actor("a")), WalEntry::Poll(spec)])
            .unwrap();
        wal.sync().unwrap();
    }
    (replica, wal)
}

/// What the node at `disk` holds of `b`'s records after a restart: the main log replayed,
/// then the journal.
fn held_after_restart(disk: &MemoryStorage) -> u64 {
    let (mut replica, mut wal) = main_log(disk);
    recover_journal(disk, &mut replica, &mut wal, false).unwrap();
    replica.state(&poll()).unwrap().held(&actor("b"))
}

struct Running {
    journal: PushJournal,
    engine: mpsc::Receiver<Command>,
    metrics: Arc<Metrics>,
    definition: tally_core::DefinitionDigest,
}

/// Node `a` started on `disk`: its journal's task, with the test in the engine's place.
fn start(disk: &MemoryStorage, limits: JournalLimits) -> (Running, Wal<MemoryStorage>) {
    let (mut replica, mut wal) = main_log(disk);
    let (journal_log, _) = recover_journal(disk, &mut replica, &mut wal, false).unwrap();
    let (engine_tx, engine) = mpsc::channel(64);
    let metrics = Arc::new(Metrics::new());
    let (journal, _task, _writer) = PushJournal::start(
        journal_log,
        WalExecutor::Task,
        engine_tx.clone(),
        engine_tx,
        Arc::new(Health::new(&[])),
        metrics.clone(),
        limits,
    )
    .unwrap();
    let definition = replica.definition(&poll()).unwrap();
    let running = Running {
        journal,
        engine,
        metrics,
        definition,
    };
    (running, wal)
}

type Answer = oneshot::Receiver<Result<PushAck, tally_node::engine::EngineError>>;

impl Running {
    /// Pushes `batch` from `b`; returns the push's answer and the engine's reply channel.
    async fn push(
        &mut self,
        batch: RecordBatch,
    ) -> (
        Answer,
        oneshot::Sender<Result<PushAck, tally_node::engine::EngineError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let push = JournalPush {
            from: NodeId::new("b").unwrap(),
            definition: self.definition,
            batch: batch.clone(),
            reply,
        };
        self.journal.push(push).await.unwrap();
        match self.engine.recv().await.unwrap() {
            Command::Ack(AckCommand::PushedRecords {
                batch: handed,
                reply,
                ..
            }) => {
                assert_eq!(
                    handed, batch,
                    "the engine gets the pushed records as they are"
                );
                (answer, reply)
            }
            _ => panic!("the journal handed the engine something else than the push"),
        }
    }

    fn answered_on(&self, lane: &'static str) -> u64 {
        self.metrics
            .acks
            .pushes_answered
            .get_or_create(&vec![("lane", lane)])
            .get()
    }
}

/// The engine's answer: every record of `b` up to `through` is in the main log.
fn logged(reply: oneshot::Sender<Result<PushAck, tally_node::engine::EngineError>>, through: u64) {
    reply
        .send(Ok(PushAck {
            poll: poll(),
            actor: actor("b"),
            durable_through: through,
        }))
        .unwrap();
}

async fn answer_of(answer: Answer) -> u64 {
    tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("the push was answered")
        .unwrap()
        .unwrap()
        .durable_through
}

#[tokio::test(flavor = "current_thread")]
async fn a_push_answered_from_the_journal_survives_a_crash_before_the_engine_logged_it() {
    // Goal: the journal's whole point. A push answered durable while the engine never logged
    // it (it crashed first) is held after the restart. Method: the first push goes the `log`
    // lane (the test, as the engine, logs it in the main log and answers); the second is
    // answered by the journal while the engine never answers; then the node "crashes" (its
    // tasks dropped, nothing flushed) and restarts on the same disk. Without the journal's
    // replay (its files removed) the restart lacks the second push: the test can fail.
    let disk = MemoryStorage::new();
    let (mut node, mut main) = start(&disk, JournalLimits::default());
    let (answer, engine) = node.push(batch(1, 10)).await;
    main.append(&[WalEntry::Records(batch(1, 10))]).unwrap();
    main.sync().unwrap();
    logged(engine, 10);
    assert_eq!(answer_of(answer).await, 10);
    assert_eq!(node.answered_on("log"), 1);

    let (answer, _engine_never_answers) = node.push(batch(11, 20)).await;
    assert_eq!(
        answer_of(answer).await,
        20,
        "durable through the second push, from the journal alone"
    );
    assert_eq!(node.answered_on("journal"), 1);
    drop((node, main, _engine_never_answers));
    tokio::time::sleep(Duration::from_millis(20)).await;

    let without_journal = disk.clone();
    let journal_files = JournalStorage::new(without_journal.clone()).list().unwrap();
    assert!(!journal_files.is_empty());
    assert_eq!(
        held_after_restart(&disk),
        20,
        "the journal's records are back after the crash"
    );
    // The restart wrote them to the main log and emptied the journal: a second restart holds
    // them from the main log alone.
    let bare = MemoryStorage::new();
    for name in disk.list().unwrap() {
        if name.starts_with("push-journal-") {
            continue;
        }
        let bytes = disk.with_file_bytes(&name, |b| b.clone()).unwrap();
        let mut file = bare.create(&name).unwrap();
        tally_node::storage::StorageFile::write_all_at(&mut file, &bytes, 0).unwrap();
    }
    assert_eq!(
        held_after_restart(&bare),
        20,
        "in the main log after the restart"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn without_the_journal_replay_a_crash_loses_what_the_journal_answered() {
    // Goal: the control for the test above (it could fail): the same steps, and the journal's
    // files removed before the restart, lose the second push.
    let disk = MemoryStorage::new();
    let (mut node, mut main) = start(&disk, JournalLimits::default());
    let (answer, engine) = node.push(batch(1, 10)).await;
    main.append(&[WalEntry::Records(batch(1, 10))]).unwrap();
    main.sync().unwrap();
    logged(engine, 10);
    answer_of(answer).await;
    let (answer, _engine_never_answers) = node.push(batch(11, 20)).await;
    assert_eq!(answer_of(answer).await, 20);
    drop((node, main, _engine_never_answers));
    tokio::time::sleep(Duration::from_millis(20)).await;
    for name in JournalStorage::new(disk.clone()).list().unwrap() {
        disk.remove(&format!("push-journal-{name}")).unwrap();
    }
    assert_eq!(held_after_restart(&disk), 10);
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_journal_answers_after_the_engines_log_and_takes_pushes_again_once_it_caught_up() {
    // Goal: the bound. Method: a journal that holds at most 15 records the main log may lack.
    // After the first push (log lane), a push of 10 is journaled (10 held); the next push of
    // 10 would pass 15: it waits for the engine's answer (log lane, counted as full). Once the
    // engine answered both (the main log holds them), the journal takes pushes again.
    let disk = MemoryStorage::new();
    let limits = JournalLimits {
        records_max: 15,
        ..JournalLimits::default()
    };
    let (mut node, _main) = start(&disk, limits);
    let (answer, engine) = node.push(batch(1, 5)).await;
    logged(engine, 5);
    assert_eq!(answer_of(answer).await, 5);

    let (answer, engine_second) = node.push(batch(6, 15)).await;
    assert_eq!(answer_of(answer).await, 15, "journaled");
    let (mut answer, engine_third) = node.push(batch(16, 25)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        answer.try_recv().is_err(),
        "the full journal did not take the third push: it waits for the engine"
    );
    assert_eq!(node.metrics.acks.journal_full.get(), 1);
    assert_eq!(node.metrics.acks.journal_records.get(), 10);
    logged(engine_second, 15);
    logged(engine_third, 25);
    assert_eq!(answer_of(answer).await, 25);
    assert_eq!(node.answered_on("log"), 2);
    assert_eq!(
        node.metrics.acks.journal_records.get(),
        0,
        "all in the main log"
    );

    let (answer, _engine) = node.push(batch(26, 35)).await;
    assert_eq!(answer_of(answer).await, 35, "journaled again");
    assert_eq!(node.answered_on("journal"), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn a_push_that_does_not_follow_what_is_durable_waits_for_the_engine() {
    // Goal: the journal never answers past a gap. Method: after the first push (seqs 1..5,
    // logged), a push of 11..20 (6..10 never arrived) is journaled but not answered until the
    // engine answers, and then only up to what it holds (5).
    let disk = MemoryStorage::new();
    let (mut node, _main) = start(&disk, JournalLimits::default());
    let (answer, engine) = node.push(batch(1, 5)).await;
    logged(engine, 5);
    answer_of(answer).await;
    let (mut answer, engine) = node.push(batch(11, 20)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(answer.try_recv().is_err(), "not answered past the gap");
    logged(engine, 5);
    assert_eq!(answer_of(answer).await, 5);
    // The gap filled (a pull, then this push): everything journaled joins at once.
    let (answer, _engine) = node.push(batch(6, 10)).await;
    assert_eq!(answer_of(answer).await, 20);
}

#[tokio::test(flavor = "current_thread")]
async fn a_probe_is_answered_with_what_the_engine_holds() {
    // Goal: a push of records known durable already (a probe: the pusher asks what this
    // node holds, pulls included) is answered with the engine's answer, not with what the
    // journal knows. Method: after 1..5 (logged), probe record 3; the engine, which pulled
    // up to 40 meanwhile, answers 40.
    let disk = MemoryStorage::new();
    let (mut node, _main) = start(&disk, JournalLimits::default());
    let (answer, engine) = node.push(batch(1, 5)).await;
    logged(engine, 5);
    answer_of(answer).await;
    let (mut answer, engine) = node.push(batch(3, 3)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(answer.try_recv().is_err(), "the probe waits for the engine");
    logged(engine, 40);
    assert_eq!(answer_of(answer).await, 40);
    assert_eq!(node.answered_on("journal"), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn the_journal_is_rewritten_small_once_the_main_log_holds_its_records() {
    // Goal: the journal stays small. Method: a rotation threshold of one byte: every journal
    // job is followed by a rewrite holding only the batches the engine has not answered; once
    // it answered every push, the journal's files hold no record.
    let disk = MemoryStorage::new();
    let limits = JournalLimits {
        rotate_bytes: 1,
        ..JournalLimits::default()
    };
    let (mut node, _main) = start(&disk, limits);
    let (answer, engine) = node.push(batch(1, 5)).await;
    logged(engine, 5);
    answer_of(answer).await;
    let mut engines = Vec::new();
    for first in [6, 16, 26] {
        let (answer, engine) = node.push(batch(first, first + 9)).await;
        answer_of(answer).await;
        engines.push(engine);
    }
    for engine in engines {
        logged(engine, 35);
    }
    let (answer, engine) = node.push(batch(36, 36)).await;
    logged(engine, 36);
    answer_of(answer).await;
    let (answer, engine) = node.push(batch(37, 37)).await;
    logged(engine, 37);
    answer_of(answer).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut records = 0;
    let _read_only = Wal::recover(JournalStorage::new(disk.clone()), |entry| {
        if let WalEntry::Records(batch) = entry {
            records += batch.len();
        }
    })
    .unwrap();
    assert!(records <= 2, "{records} records left in the journal");
}

#[tokio::test(flavor = "current_thread")]
async fn a_damaged_journal_stops_the_start_with_a_clear_error_and_changes_nothing() {
    // Goal: damage inside the journal (not a torn tail) is refused like the main log's.
    // Method: journal three pushes, flip a byte inside the first's frame, restart.
    let disk = MemoryStorage::new();
    let (mut node, main) = start(&disk, JournalLimits::default());
    let (answer, engine) = node.push(batch(1, 5)).await;
    logged(engine, 5);
    answer_of(answer).await;
    let mut engines = Vec::new();
    for first in [6, 16, 26] {
        let (answer, engine) = node.push(batch(first, first + 9)).await;
        answer_of(answer).await;
        engines.push(engine);
    }
    drop((node, main, engines));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let segment = JournalStorage::new(disk.clone())
        .list()
        .unwrap()
        .into_iter()
        .find(|name| name.ends_with(".log"))
        .unwrap();
    let name = format!("push-journal-{segment}");
    disk.with_file_bytes(&name, |bytes| bytes[32 + 8 + 20] ^= 0x40)
        .unwrap();
    let before = disk.list().unwrap();
    let (mut replica, mut wal) = main_log(&disk);
    let error = recover_journal(&disk, &mut replica, &mut wal, false).unwrap_err();
    assert!(
        matches!(error, RecoveryError::JournalDamaged { .. }),
        "{error}"
    );
    let text = error.to_string();
    assert!(text.contains("push journal is damaged"), "{text}");
    assert!(text.contains("--accept-log-damage"), "{text}");
    assert_eq!(disk.list().unwrap(), before, "nothing changed on disk");
    drop((replica, wal));

    // Accepted: every valid record after the damage is replayed, the damaged file kept aside.
    let (mut replica, mut wal) = main_log(&disk);
    let (_, replayed) = recover_journal(&disk, &mut replica, &mut wal, true).unwrap();
    assert_eq!(replayed.batches, 2, "the two batches after the damaged one");
    assert!(
        disk.list()
            .unwrap()
            .iter()
            .any(|name| name.starts_with("push-journal-") && name.contains(".damaged-")),
        "the damaged file is kept aside"
    );
}
