//! Throughput of the replica's hot paths (issue 2): local accepts of new and duplicate vote
//! IDs with 1M and 10M IDs held, remote record applies, and the wire encoding of a record batch.
//!
//! Method. Every figure is per vote (criterion `Throughput::Elements`). A replica is filled
//! once per size, outside the timed loop, through the node's own path (accept, hand out for
//! logging, mark durable every 4,096 votes), and any growth of its dedupe index still under
//! way is finished. Benches that add IDs let the replica grow from N to at most 1.4 N held,
//! or until its index begins to grow, and then rebuild it, untimed: the figure stays "with N
//! held", and no growth work falls inside a measurement (the index begins to grow at ~1.49M
//! and ~11.9M IDs). The cost of growth is what `benches/index_growth.rs` and the fill rate of
//! `benches/memory.rs` print.
//!
//! Run: `cargo bench -p tally-core --bench replica` (settings below: 1 s warm-up, 3 s
//! measurement, 20 samples; criterion's command-line flags override them).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tally_core::{LocalVote, OptionIndex, PollId, RecordBatch, Replica, UnixMillis, VoteId, wire};

use common::{
    GROUP_COMMIT_VOTES, accept_range, actor, group_commit, new_replica, option_of, poll_id,
    random_u64, second_of, vote_id,
};

/// Records in one remote batch and in the wire batch.
const BATCH_RECORDS: u64 = 10_000;

/// First vote index of the peer's own (new) IDs: far from anything the replica holds.
const PEER_IDS_FROM: u64 = 1 << 40;

/// First vote index of the wire batch's IDs.
const WIRE_IDS_FROM: u64 = 1 << 41;

/// Sizes of the replica, in vote IDs held.
const HELD: [(u64, &str); 2] = [(1_000_000, "1M_held"), (10_000_000, "10M_held")];

/// A replica holding votes `0..held`, plus whatever a bench has added since it was built.
struct Fixture {
    held: u64,
    poll: PollId,
    replica: Replica,
    /// Next vote index for new local IDs.
    next_local: u64,
    /// Seq of the peer's next record (its records start at 1).
    next_peer_seq: u64,
}

impl Fixture {
    fn build(held: u64) -> Self {
        let poll = poll_id();
        let mut replica = new_replica();
        let counted = accept_range(&mut replica, &poll, 0..held);
        assert_eq!(counted, held, "the fill drew a repeated ID");
        replica.advance_index_growth(usize::MAX);
        Self {
            held,
            poll,
            replica,
            next_local: held,
            next_peer_seq: 1,
        }
    }

    /// Records added since the build: local IDs and peer records.
    fn grown(&self) -> u64 {
        (self.next_local - self.held) + (self.next_peer_seq - 1)
    }

    /// Rebuilds the replica once it has grown by 40%, or its index has begun to grow, so it
    /// stays "with `held` held".
    fn rebuild_if_grown(&mut self) {
        let growing = self
            .replica
            .state(&self.poll)
            .is_some_and(|s| s.index_growth().is_some());
        if growing || self.grown() * 10 >= self.held * 4 {
            // Free the old replica first: two 10M replicas at once double the footprint.
            self.replica = new_replica();
            *self = Self::build(self.held);
        }
    }

    /// The next vote's "now": the second the burst has reached.
    fn now(&self) -> UnixMillis {
        UnixMillis(u64::from(second_of(self.next_local)) * 1000)
    }
}

/// A [`Fixture`] built the first time a bench that the filter selected asks for it.
struct LazyFixture {
    held: u64,
    fixture: Option<Fixture>,
}

impl LazyFixture {
    fn new(held: u64) -> Self {
        Self {
            held,
            fixture: None,
        }
    }

    fn get(&mut self) -> &mut Fixture {
        self.fixture
            .get_or_insert_with(|| Fixture::build(self.held))
    }
}

/// The timing in these benches skips the untimed rebuilds, so it reads the clock itself. The
/// core bans clock reads (core/clippy.toml); a bench exists to read one.
#[allow(clippy::disallowed_methods)]
fn timed(work: impl FnOnce()) -> Duration {
    let start = Instant::now();
    work();
    start.elapsed()
}

/// Local accepts of IDs never seen, one group commit per 4,096 votes.
fn bench_accept_new(c: &mut Criterion, fixture: &mut LazyFixture, label: &str) {
    let mut group = c.benchmark_group("accept_local");
    group.throughput(Throughput::Elements(GROUP_COMMIT_VOTES));
    group.bench_function(BenchmarkId::new("new_ids", label), |b| {
        // Outside `iter_custom`: criterion's warm-up reads the wall time of that call.
        let fixture = fixture.get();
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                fixture.rebuild_if_grown();
                let from = fixture.next_local;
                let to = from + GROUP_COMMIT_VOTES;
                let (replica, poll) = (&mut fixture.replica, &fixture.poll);
                elapsed += timed(|| {
                    let counted = accept_range(replica, poll, from..to);
                    assert_eq!(counted, GROUP_COMMIT_VOTES);
                });
                fixture.next_local = to;
            }
            elapsed
        });
    });
    group.finish();
}

/// The votes `from..from + GROUP_COMMIT_VOTES` as a batch, as an edge aggregator posts them.
fn batch_of(from: u64) -> Vec<(OptionIndex, VoteId)> {
    (from..from + GROUP_COMMIT_VOTES)
        .map(|i| (option_of(i), vote_id(i)))
        .collect()
}

/// Local accepts of IDs never seen, 4,096 per `accept_local_batch` call (one edge batch) and
/// one group commit after each; building the batch is untimed.
fn bench_accept_batch_new(c: &mut Criterion, fixture: &mut LazyFixture, label: &str) {
    let mut group = c.benchmark_group("accept_local_batch");
    group.throughput(Throughput::Elements(GROUP_COMMIT_VOTES));
    group.bench_function(BenchmarkId::new("new_ids", label), |b| {
        let fixture = fixture.get();
        let mut answers = Vec::with_capacity(GROUP_COMMIT_VOTES as usize);
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                fixture.rebuild_if_grown();
                let from = fixture.next_local;
                let votes = batch_of(from);
                let now = fixture.now();
                let (replica, poll) = (&mut fixture.replica, &fixture.poll);
                answers.clear();
                elapsed += timed(|| {
                    let accepted = replica.accept_local_batch(poll, &votes, now, &mut answers);
                    group_commit(replica);
                    assert_eq!(accepted, Ok(()));
                });
                assert!(
                    answers
                        .iter()
                        .all(|a| matches!(a, Ok(LocalVote::Counted { .. })))
                );
                fixture.next_local = from + GROUP_COMMIT_VOTES;
            }
            elapsed
        });
    });
    group.finish();
}

/// Local accepts of IDs already held (retries), drawn at random from the held ones.
fn bench_accept_duplicate(c: &mut Criterion, fixture: &mut LazyFixture, label: &str) {
    let mut group = c.benchmark_group("accept_local");
    group.throughput(Throughput::Elements(GROUP_COMMIT_VOTES));
    let mut draw = 0u64;
    group.bench_function(BenchmarkId::new("duplicate_ids", label), |b| {
        let fixture = fixture.get();
        b.iter(|| {
            for _ in 0..GROUP_COMMIT_VOTES {
                let i = random_u64(0xd0d0, draw) % fixture.held;
                draw += 1;
                let now = fixture.now();
                let answer =
                    fixture
                        .replica
                        .accept_local(&fixture.poll, option_of(i), vote_id(i), now);
                assert_eq!(answer, Ok(LocalVote::Duplicate { wait_for: None }));
            }
            group_commit(&mut fixture.replica);
        });
    });
    group.finish();
}

/// The peer's next batch of `BATCH_RECORDS` records. `of_held` picks IDs the replica already
/// holds (a retry that reached two regions) instead of new ones.
fn peer_batch(fixture: &Fixture, of_held: bool) -> RecordBatch {
    let first_seq = fixture.next_peer_seq;
    let mut batch = RecordBatch::new(fixture.poll.clone(), actor("peer"), first_seq);
    for k in first_seq..first_seq + BATCH_RECORDS {
        let i = if of_held {
            random_u64(0xbeef, k) % fixture.held
        } else {
            PEER_IDS_FROM + k
        };
        // The peer's clock runs in step with the local one: same burst, same seconds.
        batch.push(vote_id(i), option_of(i), second_of(k % fixture.held));
    }
    batch
}

/// Remote applies of batches of 10,000 records from another actor, in seq order, into a
/// replica holding `held` IDs.
fn bench_apply(c: &mut Criterion, held: u64, label: &str) {
    let mut group = c.benchmark_group("apply_records");
    group.throughput(Throughput::Elements(BATCH_RECORDS));
    for (name, of_held) in [("new_ids", false), ("held_ids", true)] {
        // Each variant starts from a fresh replica, without the other's peer records.
        let mut fixture = LazyFixture::new(held);
        group.bench_function(BenchmarkId::new(name, label), |b| {
            let fixture = fixture.get();
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    fixture.rebuild_if_grown();
                    let batch = peer_batch(fixture, of_held);
                    let replica = &mut fixture.replica;
                    elapsed += timed(|| {
                        let applied = replica.apply_records(black_box(&batch));
                        assert_eq!(applied.map(|a| a.added), Ok(BATCH_RECORDS as usize));
                    });
                    fixture.next_peer_seq += BATCH_RECORDS;
                }
                elapsed
            });
        });
    }
    group.finish();
}

fn wire_batch() -> wire::PeerMessage {
    let mut batch = RecordBatch::new(poll_id(), actor("peer"), 1_000_001);
    // Votes 495,000..505,000 of the burst: seconds 15 to 15.3, as a peer sends them.
    for k in 495_000..495_000 + BATCH_RECORDS {
        batch.push(vote_id(WIRE_IDS_FROM + k), option_of(k), second_of(k));
    }
    wire::PeerMessage::Records(batch)
}

/// Encoding and decoding a `Records` frame of 10,000 records; prints the bytes per record.
fn bench_wire(c: &mut Criterion) {
    let message = wire_batch();
    let frame = wire::encode(&message);
    println!(
        "wire: Records frame of {BATCH_RECORDS} records = {} bytes = {:.3} bytes per record \
         (target <= 20)",
        frame.len(),
        frame.len() as f64 / BATCH_RECORDS as f64
    );
    assert_eq!(wire::decode(&frame).as_ref(), Ok(&message));
    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Elements(BATCH_RECORDS));
    group.bench_function("encode_records_10k", |b| {
        b.iter(|| wire::encode(black_box(&message)))
    });
    group.bench_function("decode_records_10k", |b| {
        b.iter(|| wire::decode(black_box(&frame)))
    });
    group.finish();
}

/// One replica per size, built once (on first use, so a filtered run skips the fill) and
/// shared by the accept benches at that size.
fn bench_replica(c: &mut Criterion) {
    for (held, label) in HELD {
        let mut fixture = LazyFixture::new(held);
        bench_accept_duplicate(c, &mut fixture, label);
        bench_accept_new(c, &mut fixture, label);
        bench_accept_batch_new(c, &mut fixture, label);
        drop(fixture);
        if held == 1_000_000 {
            bench_apply(c, held, label);
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = bench_wire, bench_replica
}
criterion_main!(benches);
