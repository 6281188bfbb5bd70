//! Wire properties: every message round-trips, and no byte string makes decoding panic.
//!
//! Method: proptest generates messages and byte strings (random, and valid frames with bytes
//! flipped, cut or appended). Decoding must return `Ok` or `Err`; a decoded message must
//! re-encode to a frame that decodes to itself.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic loudly

use proptest::prelude::*;
use tally_core::wire::{
    self, ActorCounters, CounterEntry, CounterState, Hello, PeerMessage, WireError,
};
use tally_core::{
    ActorId, AgreementDigest, Declaration, DefinitionDigest, NodeId, OptionIndex, OptionName,
    PollId, PollSpec, PollWindow, RecordBatch, UnixMillis, VersionVector, VoteId, VoteIdKeyProof,
    limits,
};

fn actor() -> impl Strategy<Value = ActorId> {
    ("[a-z][a-z0-9-]{0,12}", any::<u64>()).prop_map(|(node, incarnation)| ActorId {
        node: NodeId::new(node).unwrap(),
        incarnation,
    })
}

fn poll_id() -> impl Strategy<Value = PollId> {
    "[a-z][a-z0-9_.-]{0,20}".prop_map(|p| PollId::new(p).unwrap())
}

fn batch() -> impl Strategy<Value = RecordBatch> {
    (
        poll_id(),
        actor(),
        1u64..1_000_000,
        prop::collection::vec((any::<u128>(), 0u8..16, 0u32..100), 0..50),
    )
        .prop_map(|(poll, actor, first_seq, records)| {
            let mut batch = RecordBatch::new(poll, actor, first_seq);
            for (id, option, second) in records {
                batch.push(VoteId(id), OptionIndex(option), second);
            }
            batch
        })
}

fn message() -> impl Strategy<Value = PeerMessage> {
    prop_oneof![
        ("[a-z]{1,20}", any::<u16>(), actor(), any::<[u8; 16]>()).prop_map(
            |(cluster_id, protocol_version, actor, proof)| {
                PeerMessage::Hello(Hello {
                    cluster_id,
                    protocol_version,
                    actor,
                    vote_id_key_proof: VoteIdKeyProof(proof),
                })
            }
        ),
        any::<[u8; 16]>().prop_map(|digest| PeerMessage::Agreement(AgreementDigest(digest))),
        (
            poll_id(),
            any::<[u8; 16]>(),
            prop::collection::vec((actor(), any::<u64>()), 0..5)
        )
            .prop_map(|(poll, definition, entries)| PeerMessage::PollVector {
                poll,
                definition: DefinitionDigest(definition),
                vector: entries.into_iter().collect::<VersionVector>(),
            }),
        (
            poll_id(),
            prop::collection::vec((actor(), any::<u64>(), any::<[u8; 16]>()), 0..5)
        )
            .prop_map(|(poll, entries)| PeerMessage::Declarations {
                poll,
                entries: entries
                    .into_iter()
                    .map(|(actor, version, definition)| Declaration {
                        node: actor.node,
                        version,
                        definition: DefinitionDigest(definition),
                    })
                    .collect(),
            }),
        (
            poll_id(),
            prop::collection::vec((actor(), any::<u64>()), 0..5)
        )
            .prop_map(|(poll, entries)| PeerMessage::VersionVector {
                poll,
                vector: entries.into_iter().collect::<VersionVector>(),
            }),
        batch().prop_map(PeerMessage::Records),
        (
            poll_id(),
            prop::collection::vec(
                (
                    actor(),
                    prop::collection::vec((0u32..1000, 0u8..16, 0u64..100), 0..5)
                ),
                0..4
            )
        )
            .prop_map(|(poll, actors)| PeerMessage::Counters(CounterState {
                poll,
                actors: actors
                    .into_iter()
                    .map(|(actor, entries)| ActorCounters {
                        actor,
                        entries: entries
                            .into_iter()
                            .map(|(second, option, accepted)| CounterEntry {
                                second,
                                option,
                                accepted,
                                retracted: accepted / 3,
                            })
                            .collect(),
                    })
                    .collect(),
            })),
        (poll_id(), 2usize..=16, proptest::option::of(any::<u64>())).prop_map(
            |(poll, count, opens)| {
                let options = (0..count)
                    .map(|i| OptionName::new(format!("o{i}")).unwrap())
                    .collect();
                let window = PollWindow {
                    opens_at: opens.map(UnixMillis),
                    closes_at: None,
                };
                PeerMessage::Poll(PollSpec::new(poll, options, window).unwrap())
            }
        ),
        (
            any::<u64>(),
            proptest::option::of(any::<u64>()),
            any::<u64>()
        )
            .prop_map(|(sent, answered, stable_ms)| {
                PeerMessage::Clock(wire::ClockReading {
                    sent_at: UnixMillis(sent),
                    answered_at: answered.map(UnixMillis),
                    stable_ms,
                })
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_message_round_trips(message in message()) {
        let frame = wire::encode(&message);
        prop_assert_eq!(wire::decode(&frame), Ok(message));
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = wire::decode(&bytes);
        let mut versioned = vec![wire::FRAME_FORMAT_VERSION];
        versioned.extend_from_slice(&bytes);
        if let Ok(message) = wire::decode(&versioned) {
            prop_assert_eq!(wire::decode(&wire::encode(&message)), Ok(message));
        }
    }

    #[test]
    fn damaged_frames_never_panic(
        message in message(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let frame = wire::encode(&message);
        let mut damaged = frame.clone();
        for (index, byte) in flips {
            let i = index.index(damaged.len());
            damaged[i] ^= byte | 1;
        }
        if let Ok(decoded) = wire::decode(&damaged) {
            prop_assert_eq!(wire::decode(&wire::encode(&decoded)), Ok(decoded));
        }
        let _ = wire::decode(&frame[..cut.index(frame.len())]);
    }
}

#[test]
fn frames_over_the_limit_are_refused_before_parsing() {
    let frame = vec![wire::FRAME_FORMAT_VERSION; limits::FRAME_BYTES_MAX + 1];
    assert_eq!(
        wire::decode(&frame),
        Err(WireError::TooLong {
            length: limits::FRAME_BYTES_MAX + 1
        })
    );
    assert_eq!(wire::decode(&[]), Err(WireError::Empty));
    assert_eq!(wire::decode(&[9, 0]), Err(WireError::UnknownVersion(9)));
}

#[test]
fn a_full_batch_costs_at_most_twenty_bytes_a_record() {
    // Goal: 10,000 random IDs in one batch encode to ≤ 20 bytes a record (target from issue 2).
    let mut batch = RecordBatch::new(
        PollId::new("superbowl").unwrap(),
        ActorId {
            node: NodeId::new("us-east").unwrap(),
            incarnation: 1,
        },
        1,
    );
    let mut x: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834;
    for i in 0..10_000u32 {
        x = x
            .wrapping_mul(0x2360_ed05_1fc6_5da4_4385_df64_9fcc_f645)
            .wrapping_add(1);
        batch.push(VoteId(x), OptionIndex((i % 2) as u8), i / 400);
    }
    let frame = wire::encode(&PeerMessage::Records(batch));
    let per_record = frame.len() as f64 / 10_000.0;
    assert!(per_record <= 20.0, "{per_record} bytes per record");
}

#[test]
fn inconsistent_batches_and_counters_are_refused() {
    // Goal: hand-made frames that break a field's rule decode to Err, not to a bad value.
    let counters = PeerMessage::Counters(CounterState {
        poll: PollId::new("p").unwrap(),
        actors: vec![ActorCounters {
            actor: ActorId {
                node: NodeId::new("n").unwrap(),
                incarnation: 0,
            },
            entries: vec![CounterEntry {
                second: 1,
                option: 16,
                accepted: 1,
                retracted: 0,
            }],
        }],
    });
    assert!(matches!(
        wire::decode(&wire::encode(&counters)),
        Err(WireError::OutOfRange(_))
    ));
    // A reservation past the largest index any node may build; the largest is fine.
    let reserve = |vote_ids| PeerMessage::Reserve {
        poll: PollId::new("p").unwrap(),
        vote_ids,
    };
    let largest = tally_core::limits::RESERVED_VOTE_IDS_MAX as u64;
    assert!(wire::decode(&wire::encode(&reserve(largest))).is_ok());
    assert!(matches!(
        wire::decode(&wire::encode(&reserve(largest + 1))),
        Err(WireError::OutOfRange(_))
    ));
    // A batch whose ID column is one byte short: change the length prefix of the options column.
    let mut batch = RecordBatch::new(
        PollId::new("p").unwrap(),
        ActorId {
            node: NodeId::new("n").unwrap(),
            incarnation: 0,
        },
        1,
    );
    batch.push(VoteId(1), OptionIndex(0), 0);
    batch.push(VoteId(2), OptionIndex(0), 0);
    let frame = wire::encode(&PeerMessage::Records(batch));
    // The options column is "02 00 00" right before the single second run "01 02 00".
    let at = frame.len() - 6;
    assert_eq!(&frame[at..at + 3], &[2, 0, 0]);
    let mut bad = frame.clone();
    bad[at] = 1;
    bad.remove(at + 2);
    assert!(matches!(wire::decode(&bad), Err(WireError::Malformed(_))));
}
