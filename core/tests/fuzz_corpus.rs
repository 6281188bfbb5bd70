//! Replays the committed fuzz corpus (`fuzz/corpus/wire_decode`, `fuzz/corpus/replica_ops`)
//! through the same checks the libFuzzer targets run, on the stable toolchain, so CI exercises every input the fuzzer ever kept.
//!
//! `TALLY_WRITE_SEEDS=1 cargo test -p tally-core --test fuzz_corpus` (re)writes the seed
//! frames (one valid frame per message kind) into `fuzz/corpus/wire_decode/`.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic loudly

#[path = "support/corpus.rs"]
mod support;

use support::{corpus, replay};
use tally_core::wire::{self, ActorCounters, CounterEntry, CounterState, Hello, PeerMessage};
use tally_core::{
    ActorId, AgreementDigest, Declaration, NodeId, OptionIndex, OptionName, PollId, PollSpec,
    PollWindow, RecordBatch, UnixMillis, VersionVector, VoteId, VoteIdKey,
};

fn seeds() -> Vec<(&'static str, PeerMessage)> {
    let poll = PollId::new("superbowl").unwrap();
    let actor = ActorId {
        node: NodeId::new("us-east").unwrap(),
        incarnation: 7,
    };
    let mut batch = RecordBatch::new(poll.clone(), actor.clone(), 1);
    for i in 0..20u128 {
        batch.push(
            VoteId(i * 0x9e37_79b9),
            OptionIndex((i % 2) as u8),
            (i / 7) as u32,
        );
    }
    let vector: VersionVector = [(actor.clone(), 20)].into_iter().collect();
    let options = ["green", "blue"]
        .map(|o| OptionName::new(o).unwrap())
        .to_vec();
    let spec = PollSpec::new(poll.clone(), options, PollWindow::open_from(UnixMillis(1))).unwrap();
    let definition = spec.definition();
    vec![
        (
            "hello",
            PeerMessage::Hello(Hello {
                cluster_id: "tally-dev".into(),
                protocol_version: wire::PROTOCOL_VERSION,
                actor: actor.clone(),
                vote_id_key_proof: VoteIdKey::new([7; 32]).proof(),
            }),
        ),
        (
            "agreement",
            PeerMessage::Agreement(AgreementDigest([3; 16])),
        ),
        (
            "poll-vector",
            PeerMessage::PollVector {
                poll: poll.clone(),
                definition,
                vector: vector.clone(),
            },
        ),
        (
            "declarations",
            PeerMessage::Declarations {
                poll: poll.clone(),
                entries: vec![Declaration {
                    node: actor.node.clone(),
                    version: 2,
                    definition,
                }],
            },
        ),
        (
            "version-vector",
            PeerMessage::VersionVector {
                poll: poll.clone(),
                vector,
            },
        ),
        ("records", PeerMessage::Records(batch.clone())),
        (
            "counters",
            PeerMessage::Counters(CounterState {
                poll: poll.clone(),
                actors: vec![ActorCounters {
                    actor: actor.clone(),
                    entries: vec![CounterEntry {
                        second: 3,
                        option: 1,
                        accepted: 5,
                        retracted: 1,
                    }],
                }],
            }),
        ),
        ("push", PeerMessage::Push { definition, batch }),
        (
            "push-ack",
            PeerMessage::PushAck(wire::PushAck {
                poll: poll.clone(),
                actor,
                durable_through: 20,
            }),
        ),
        (
            "reserve",
            PeerMessage::Reserve {
                poll,
                vote_ids: 30_000_000,
            },
        ),
        ("poll", PeerMessage::Poll(spec)),
        (
            "clock",
            PeerMessage::Clock(wire::ClockReading {
                sent_at: UnixMillis(1_800_000_000_000),
                answered_at: Some(UnixMillis(1_800_000_000_004)),
                stable_ms: 60_000,
            }),
        ),
    ]
}

#[test]
fn every_wire_decode_corpus_input_passes_the_fuzz_check() {
    let directory = corpus("wire_decode");
    if std::env::var_os("TALLY_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&directory).unwrap();
        for (name, message) in seeds() {
            std::fs::write(
                directory.join(format!("seed-{name}")),
                wire::encode(&message),
            )
            .unwrap();
        }
    }
    replay("wire_decode", seeds().len(), wire::check_frame);
}

#[test]
fn the_seed_frames_decode() {
    // Goal: the corpus starts from valid frames of every kind, so the fuzzer mutates real
    // structure, not noise.
    for (name, message) in seeds() {
        let frame = wire::encode(&message);
        assert_eq!(wire::decode(&frame), Ok(message), "{name}");
    }
}

#[test]
fn every_replica_ops_corpus_input_agrees_with_the_reference_model() {
    // Goal: every operation sequence the replica fuzzer kept replays on stable.
    replay("replica_ops", 1, tally_core::fuzzing::check_replica_ops);
}
