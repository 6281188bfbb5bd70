//! A node starting on a damaged or torn log (issue 29): what it keeps, whether it starts, and
//! as which actor. Method: crafted logs written through the log's own API into a
//! [`MemoryStorage`], damaged the way a disk does (a flipped byte, a cut tail), then the
//! node's start-up recovery (`tally_node::wal::startup::recover`) on them, alone, with peers, and
//! with the operator's `accept_log_damage`; and a restart after each.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic loudly

use std::net::SocketAddr;

use tally_core::{ActorId, NodeId, OptionIndex, PollId, RecordBatch, VoteId};
use tally_node::config::{Config, PeerEntry, TlsFiles};
use tally_node::storage::{MemoryStorage, Storage, StorageFile};
use tally_node::wal::startup::{NewIncarnation, Recovered, RecoveryError, recover};
use tally_node::wal::{WAL_FILE_HEADER_BYTES, Wal, WalEntry};
use tally_node::{Clock, SystemClock};

const SEGMENT: &str = "wal-00000000000000000001.log";

fn poll() -> PollId {
    PollId::new("superbowl").unwrap()
}

fn actor(incarnation: u64) -> ActorId {
    ActorId {
        node: NodeId::new("local").unwrap(),
        incarnation,
    }
}

/// Records `first..first + count` of `actor`, vote IDs derived from the seq and `salt`.
fn records(actor: &ActorId, first: u64, count: u64, salt: u128) -> WalEntry {
    let mut batch = RecordBatch::new(poll(), actor.clone(), first);
    for seq in first..first + count {
        batch.push(
            VoteId(salt << 64 | u128::from(seq)),
            OptionIndex((seq % 2) as u8),
            1,
        );
    }
    WalEntry::Records(batch)
}

fn spec() -> WalEntry {
    let config = Config::default();
    WalEntry::Poll(
        config
            .poll_specs(tally_core::UnixMillis(0))
            .unwrap()
            .remove(0),
    )
}

/// Writes `entries` one append each and returns each one's frame offset.
fn write_log(storage: &MemoryStorage, entries: &[WalEntry]) -> Vec<u64> {
    let (mut wal, _) = Wal::open(storage.clone(), |_| {}).unwrap();
    let mut offset = WAL_FILE_HEADER_BYTES as u64;
    let mut offsets = Vec::new();
    for entry in entries {
        offsets.push(offset);
        offset += wal.append(std::slice::from_ref(entry)).unwrap();
    }
    wal.sync().unwrap();
    offsets
}

/// A log of actor 5: its identity, the poll, and 300 records in three batches.
fn three_batches(storage: &MemoryStorage) -> Vec<u64> {
    let old = actor(5);
    write_log(
        storage,
        &[
            WalEntry::Identity(old.clone()),
            spec(),
            records(&old, 1, 100, 1),
            records(&old, 101, 100, 1),
            records(&old, 201, 100, 1),
        ],
    )
}

fn flip(storage: &MemoryStorage, offset: u64) {
    storage
        .with_file_bytes(SEGMENT, |bytes| bytes[offset as usize] ^= 0x40)
        .unwrap();
}

fn files(storage: &MemoryStorage) -> Vec<(String, Vec<u8>)> {
    storage
        .list()
        .unwrap()
        .into_iter()
        .map(|name| {
            let bytes = storage.with_file_bytes(&name, |b| b.clone()).unwrap();
            (name, bytes)
        })
        .collect()
}

fn alone() -> Config {
    Config::default()
}

fn with_peers() -> Config {
    Config {
        peer_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9000))),
        peers: vec![PeerEntry {
            id: "other".into(),
            address: SocketAddr::from(([127, 0, 0, 1], 9001)).into(),
        }],
        tls: Some(TlsFiles::in_dir(
            std::path::Path::new("/nonexistent"),
            "local",
        )),
        ..Config::default()
    }
}

fn start(
    config: &Config,
    storage: &MemoryStorage,
    seed: u64,
) -> Result<Recovered<MemoryStorage>, RecoveryError> {
    let validated = config.validate().unwrap();
    let clock: &dyn Clock = &SystemClock;
    recover(config, &validated, storage.clone(), clock, seed, None)
}

fn votes(recovered: &Recovered<MemoryStorage>) -> i64 {
    let state = recovered.replica.state(&poll()).unwrap();
    assert_eq!(
        state.totals(None),
        state.exact_totals(),
        "the fast path agrees with the records"
    );
    state.totals(None).iter().sum()
}

#[test]
fn a_damaged_log_alone_refuses_to_start_naming_the_missing_seqs_and_changes_nothing() {
    // Goal: a node with no peers to recover from never silently drops acknowledged votes:
    // it refuses, says which seqs are gone, and leaves every byte for the operator.
    let storage = MemoryStorage::new();
    let offsets = three_batches(&storage);
    flip(&storage, offsets[3] + 20);
    let before = files(&storage);
    let error = start(&alone(), &storage, 1).err().unwrap();
    let message = error.to_string();
    assert!(
        matches!(error, RecoveryError::DamagedAlone { .. }),
        "{message}"
    );
    assert!(
        message.contains("seqs 101..=200 (100 records)"),
        "{message}"
    );
    assert!(
        message.contains(&format!("{SEGMENT} bytes {}", offsets[3])),
        "{message}"
    );
    assert!(message.contains("--accept-log-damage"), "{message}");
    assert_eq!(files(&storage), before, "nothing changed on disk");
}

#[test]
fn an_accepted_damaged_log_keeps_every_readable_vote_as_a_new_incarnation() {
    // Goal: with the operator's consent, a lone node keeps the damaged file aside, counts
    // every vote the log still holds (those after the gap are recorded again by the new
    // actor), never reuses the old actor, and its next start replays a whole log. Method:
    // damage the middle batch of three, start with accept_log_damage, restart.
    let storage = MemoryStorage::new();
    let offsets = three_batches(&storage);
    flip(&storage, offsets[3] + 20);
    let damaged = storage.with_file_bytes(SEGMENT, |b| b.clone()).unwrap();
    let config = Config {
        accept_log_damage: true,
        ..alone()
    };
    let recovered = start(&config, &storage, 1).unwrap();
    assert_eq!(recovered.new_incarnation, Some(NewIncarnation::Damage));
    assert_eq!(recovered.report.retired, Some(actor(5)));
    assert_ne!(recovered.replica.actor(), &actor(5));
    assert_eq!(
        recovered.report.adopted, 100,
        "seqs 201..=300 recorded again"
    );
    assert_eq!(recovered.report.missing.len(), 1);
    assert_eq!(recovered.report.missing[0].ranges, vec![(101, 200)]);
    assert_eq!(votes(&recovered), 200);
    let state = recovered.replica.state(&poll()).unwrap();
    assert_eq!(
        state.held(&actor(5)),
        100,
        "the old actor's seqs stop at the gap"
    );
    assert_eq!(state.held(recovered.replica.actor()), 100);
    let new_actor = recovered.replica.actor().clone();
    drop(recovered);
    let names = storage.list().unwrap();
    let copy = format!("{SEGMENT}.damaged-1");
    assert!(names.contains(&copy), "{names:?}");
    assert_eq!(
        storage.with_file_bytes(&copy, |b| b.clone()).unwrap(),
        damaged
    );
    assert!(
        !names.contains(&SEGMENT.to_owned()),
        "retired by a snapshot: {names:?}"
    );

    let restarted = start(&alone(), &storage, 2).unwrap();
    assert_eq!(restarted.new_incarnation, None, "{}", restarted.report);
    assert_eq!(restarted.replica.actor(), &new_actor);
    assert!(restarted.report.wal.is_whole());
    assert_eq!(votes(&restarted), 200);
}

#[test]
fn a_damaged_log_with_peers_starts_as_a_new_incarnation_without_the_flag() {
    // Goal: a node with peers starts on damage by itself (its peers hold what it lost), as a
    // new incarnation, so the old actor's missing records come back from them.
    let storage = MemoryStorage::new();
    let offsets = three_batches(&storage);
    flip(&storage, offsets[3] + 20);
    let recovered = start(&with_peers(), &storage, 1).unwrap();
    assert_eq!(recovered.new_incarnation, Some(NewIncarnation::Damage));
    assert_eq!(votes(&recovered), 200);
    // What a peer holds of the old actor now joins as any actor's records.
    let mut recovered = recovered;
    let applied = recovered
        .replica
        .apply_records(&match records(&actor(5), 101, 100, 1) {
            WalEntry::Records(batch) => batch,
            _ => unreachable!(),
        })
        .unwrap();
    assert_eq!(
        applied.added, 200,
        "the gap and the records held back after it"
    );
    assert_eq!(
        votes(&recovered),
        300,
        "each vote once, the winner rule keeps one record"
    );
}

#[test]
fn a_torn_tail_is_cut_and_the_node_continues_as_a_new_incarnation() {
    // Goal: a cut tail may have held durable records a peer took (a torn append and a rotten
    // last frame look the same), so the node never issues their seqs again; a torn tail is
    // no damage, so a lone node starts without the flag. Method: cut the last batch in half.
    let storage = MemoryStorage::new();
    let offsets = three_batches(&storage);
    storage
        .with_file_bytes(SEGMENT, |bytes| bytes.truncate(offsets[4] as usize + 50))
        .unwrap();
    let recovered = start(&alone(), &storage, 1).unwrap();
    assert_eq!(recovered.new_incarnation, Some(NewIncarnation::TailCut));
    assert_eq!(votes(&recovered), 200);
    let new_actor = recovered.replica.actor().clone();
    assert_ne!(new_actor, actor(5));
    drop(recovered);
    assert_eq!(
        storage.list().unwrap(),
        vec![SEGMENT.to_owned()],
        "no copy, no snapshot"
    );
    let restarted = start(&alone(), &storage, 2).unwrap();
    assert_eq!(restarted.new_incarnation, None);
    assert_eq!(restarted.replica.actor(), &new_actor);
    assert_eq!(votes(&restarted), 200);
}

#[test]
fn records_a_switch_voided_are_left_out_of_replay() {
    // Goal: a node that moved to a new incarnation while a log job held records of its old
    // actor (never durable in its state, never acknowledged) does not bring them back at
    // its next start: they would clash with the records peers hold at those seqs. Method: a
    // log with actor 5's seqs 1..=10, then 11..=15 (void), the switch to actor 6 naming 10
    // as durable, actor 6's records, and actor 5's real 11..=20 taken from a peer.
    let storage = MemoryStorage::new();
    let (old, new) = (actor(5), actor(6));
    write_log(
        &storage,
        &[
            WalEntry::Identity(old.clone()),
            spec(),
            records(&old, 1, 10, 1),
            records(&old, 11, 5, 99),
            WalEntry::Incarnation {
                actor: new.clone(),
                retired: old.clone(),
                durable_through: vec![(poll(), 10)],
            },
            records(&new, 1, 5, 2),
            records(&old, 11, 10, 1),
        ],
    );
    let recovered = start(&alone(), &storage, 1).unwrap();
    assert_eq!(recovered.new_incarnation, None, "{}", recovered.report);
    assert_eq!(recovered.replica.actor(), &new);
    assert_eq!(recovered.report.unapplied_entries, 0);
    let state = recovered.replica.state(&poll()).unwrap();
    assert_eq!(state.held(&old), 20);
    assert_eq!(state.held(&new), 5);
    assert!(!state.contains(VoteId(99 << 64 | 11)), "a void record");
    assert!(
        state.contains(VoteId(1 << 64 | 11)),
        "the peer's record at that seq"
    );
    assert_eq!(votes(&recovered), 25);
}

#[test]
fn a_log_whose_identity_entry_is_damaged_starts_a_new_incarnation_with_its_records() {
    // Goal: damage to the very first entry (the identity) loses no vote: the records replay
    // as another actor's, the node takes a fresh incarnation and logs it in a snapshot.
    let storage = MemoryStorage::new();
    let offsets = three_batches(&storage);
    flip(&storage, offsets[0] + 10);
    let config = Config {
        accept_log_damage: true,
        ..alone()
    };
    let recovered = start(&config, &storage, 1).unwrap();
    assert_eq!(recovered.new_incarnation, Some(NewIncarnation::NoLog));
    assert_eq!(votes(&recovered), 300);
    let new_actor = recovered.replica.actor().clone();
    drop(recovered);
    let restarted = start(&alone(), &storage, 2).unwrap();
    assert_eq!(restarted.replica.actor(), &new_actor);
    assert_eq!(restarted.new_incarnation, None);
    assert_eq!(votes(&restarted), 300);
}

#[test]
fn the_empty_storage_starts_a_new_incarnation_and_a_clean_restart_keeps_it() {
    // Goal: the ordinary paths are unchanged: an empty disk draws a new actor, a whole log
    // keeps it.
    let storage = MemoryStorage::new();
    let first = start(&alone(), &storage, 1).unwrap();
    assert_eq!(first.new_incarnation, Some(NewIncarnation::NoLog));
    let actor = first.replica.actor().clone();
    drop(first);
    let again = start(&alone(), &storage, 2).unwrap();
    assert_eq!(again.new_incarnation, None);
    assert_eq!(again.replica.actor(), &actor);
    let file = storage.open(SEGMENT).unwrap();
    assert!(file.len().unwrap() > WAL_FILE_HEADER_BYTES as u64);
}

#[test]
fn a_zeroed_sector_starts_a_new_incarnation_that_keeps_every_vote_outside_it() {
    // Goal: a 512-byte sector read back as zeros (a disk's usual loss) in the middle batch is
    // damage like a flipped byte: the batches before and after it count, under a new actor.
    let storage = MemoryStorage::new();
    let offsets = three_batches(&storage);
    let sector = (offsets[3] + 600) / 512 * 512;
    storage
        .with_file_bytes(SEGMENT, |bytes| {
            bytes[sector as usize..sector as usize + 512].fill(0)
        })
        .unwrap();
    let recovered = start(&with_peers(), &storage, 1).unwrap();
    assert_eq!(recovered.new_incarnation, Some(NewIncarnation::Damage));
    assert_eq!(votes(&recovered), 200, "{}", recovered.report);
    assert_eq!(recovered.report.missing[0].ranges, vec![(101, 200)]);
}

#[test]
fn a_missing_segment_starts_a_new_incarnation_with_the_votes_of_the_others() {
    // Goal: a segment missing from the sequence is damage: the snapshot before it and the
    // segment after it count, the lost seqs are named, and the node starts as a new actor.
    // Method: snapshot 2 (seqs 1..=100) + segment 2 (101..=200), snapshot 3 + segment 3
    // (201..=300); then snapshot 3 and segment 2 are gone, snapshot 2 is back.
    let storage = MemoryStorage::new();
    let old = actor(5);
    let first = [
        WalEntry::Identity(old.clone()),
        spec(),
        records(&old, 1, 100, 1),
    ];
    let (mut wal, _) = Wal::open(storage.clone(), |_| {}).unwrap();
    wal.append(&first).unwrap();
    wal.write_snapshot(first.clone()).unwrap();
    let snapshot_2 = "snapshot-00000000000000000002.snap";
    let kept = storage.with_file_bytes(snapshot_2, |b| b.clone()).unwrap();
    wal.append(&[records(&old, 101, 100, 1)]).unwrap();
    let mut all = first.to_vec();
    all.push(records(&old, 101, 100, 1));
    wal.write_snapshot(all).unwrap();
    wal.append(&[records(&old, 201, 100, 1)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    storage
        .remove("snapshot-00000000000000000003.snap")
        .unwrap();
    let mut file = storage.create(snapshot_2).unwrap();
    file.write_all_at(&kept, 0).unwrap();
    let recovered = start(&with_peers(), &storage, 1).unwrap();
    assert_eq!(recovered.new_incarnation, Some(NewIncarnation::Damage));
    assert_eq!(recovered.report.wal.missing_segments, vec![(2, 2)]);
    assert_eq!(recovered.report.missing[0].ranges, vec![(101, 200)]);
    assert_eq!(votes(&recovered), 200, "{}", recovered.report);
}

#[test]
fn votes_adopted_after_damage_keep_their_option_across_a_redefinition_in_the_log() {
    // Goal: the votes a damaged log cut off from their actor's seqs are recorded again under
    // the option they were cast for, even when a later entry of the log reordered the poll's
    // options (a configuration fixed and restarted, issue 31). Method: actor 5's seqs 1..=300
    // under [green, blue] (even seqs green), the middle batch damaged, then the poll redefined
    // as [blue, green]; start with that configuration and accept_log_damage: every readable
    // vote names the option it was cast for.
    let storage = MemoryStorage::new();
    let old = actor(5);
    let WalEntry::Poll(logged) = spec() else {
        unreachable!()
    };
    let mut reversed_options = logged.options().to_vec();
    reversed_options.reverse();
    let reversed = tally_core::PollSpec::new(poll(), reversed_options, logged.window).unwrap();
    let offsets = write_log(
        &storage,
        &[
            WalEntry::Identity(old.clone()),
            WalEntry::Poll(logged.clone()),
            records(&old, 1, 100, 1),
            records(&old, 101, 100, 1),
            records(&old, 201, 100, 1),
            WalEntry::Poll(reversed.clone()),
        ],
    );
    flip(&storage, offsets[3] + 20);
    let mut config = Config {
        accept_log_damage: true,
        ..alone()
    };
    config.polls[0].options.reverse();
    let recovered = start(&config, &storage, 1).unwrap();
    assert_eq!(recovered.report.adopted, 100, "{}", recovered.report);
    assert_eq!(
        recovered.replica.poll_spec(&poll()).unwrap().options(),
        reversed.options()
    );
    let state = recovered.replica.state(&poll()).unwrap();
    for seq in (1..=100u64).chain(201..=300) {
        let cast = logged.options()[(seq % 2) as usize].as_str();
        let held = state
            .winner_option(VoteId(1 << 64 | u128::from(seq)))
            .unwrap_or_else(|| panic!("seq {seq} not held"));
        assert_eq!(reversed.options()[held.get()].as_str(), cast, "seq {seq}");
    }
    assert_eq!(votes(&recovered), 200);
}
