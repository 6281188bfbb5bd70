//! The replica-level simulation: `tally-core` replicas under a lossy, reordering,
//! partitioning network, checked against DESIGN.md's invariants (`--scenario replicas`).
//!
//! This first level runs `tally-core` replicas directly: clients vote (and retry the same vote
//! ID, sometimes at another replica, sometimes with another option), replicas commit their
//! votes as group commits do, and sync through the node's own peer session
//! (`tally_core::session`: the hello and its checks, pull rounds with their records budget,
//! clock readings and definition agreement), its *encoded wire frames* carried over a
//! simulated network that drops, duplicates, delays, reorders and partitions. The network
//! carries streams, as QUIC does: a round's request, or its answer, is one message whose
//! frames stay in order; a message is lost, duplicated or reordered whole (within a stream
//! QUIC retransmits; a stream it cannot deliver is a round that times out). The hellos are
//! exchanged at the start, as the connection opens. After the faults stop, the network heals
//! and every check of DESIGN.md §2 runs: no acknowledged vote lost, fast path == exact tally,
//! all replicas equal.
//!
//! Every run is a pure function of its seed: the same seed gives the same trace hash, so any
//! failure replays exactly with `SIM_SEED=N` (or `--seed N`). [`crate::cluster`] runs the real
//! node under turmoil.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

use tally_core::session::{Answerer, Handshake, Puller, RoundApplied, Transmit};
use tally_core::wire::{Hello, PROTOCOL_VERSION};
use tally_core::{
    ActorId, LocalVote, NodeId, OptionIndex, OptionName, PollId, PollSpec, PollWindow, Replica,
    UnixMillis, VersionVector, VoteId, VoteIdKey,
};

/// Records per pull round the simulated peers send (small, so batching and partial syncs
/// happen).
pub const SIM_RECORDS_PER_SYNC_MAX: usize = 64;

/// How long a pull round waits for its answer before the puller may start another, in
/// simulated ms (a run's faults last about 15 simulated s).
pub const SIM_ROUND_TIMEOUT_MS: u64 = 200;

/// Messages in flight before the network drops new ones (bounded like a real queue).
pub const SIM_MESSAGES_IN_FLIGHT_MAX: usize = 10_000;

/// Rounds of full sync after healing before convergence is declared failed.
pub const SIM_HEAL_ROUNDS_MAX: usize = 50;

/// What one run does.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seeds every random choice.
    pub seed: u64,
    /// Number of replicas (regions).
    pub replicas: usize,
    /// Client vote attempts.
    pub votes: usize,
    /// Distinct vote IDs the attempts draw from (fewer than `votes` means retries).
    pub vote_ids: usize,
}

impl SimConfig {
    /// The default scenario for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            replicas: 3,
            votes: 3_000,
            vote_ids: 2_000,
        }
    }
}

/// Which faults a run sampled (swarm testing: each seed picks its own mix).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultMix {
    /// Probability a message is dropped.
    pub drop: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// Whether partitions happen.
    pub partitions: bool,
    /// Probability a vote is retried at another replica.
    pub cross_region_retry: f64,
    /// Probability a retry names the other option (a buggy client).
    pub conflicting_option: f64,
}

/// What a passing run observed.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Hash of every event in order: equal on replay.
    pub trace_hash: u64,
    /// The faults sampled.
    pub faults: FaultMix,
    /// Vote answers that acknowledged a vote (counted or duplicate, after commit).
    pub acknowledged: usize,
    /// Distinct vote IDs acknowledged.
    pub distinct_acknowledged: usize,
    /// Messages delivered, dropped and duplicated.
    pub messages: (u64, u64, u64),
    /// Full sync rounds needed after healing.
    pub heal_rounds: usize,
    /// Pull rounds whose answer was merged, and streams the sessions ignored as stale (a
    /// duplicate, or a round already given up or answered).
    pub rounds: (u64, u64),
    /// The converged totals per option (equal on every replica).
    pub totals: Vec<i64>,
}

/// A broken invariant, with the seed that replays it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimFailure {
    /// The seed.
    pub seed: u64,
    /// What broke.
    pub message: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {} (replay: SIM_SEED={} cargo run -p tally-sim)",
            self.seed, self.message, self.seed
        )
    }
}

/// FNV-1a, a fixed hasher, so the trace hash is the same on every machine.
struct Trace(u64);

impl Trace {
    fn record(&mut self, event: &[u8]) {
        for byte in event {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// One stream's frames: a pull round's request (from the puller) or its answer.
#[derive(Clone)]
struct Message {
    from: usize,
    to: usize,
    answer: bool,
    round: u64,
    frames: Vec<Vec<u8>>,
}

/// One replica's session with one peer: its pull rounds and its answers to the peer's.
struct Link {
    puller: Puller,
    answerer: Answerer,
}

struct World {
    rng: StdRng,
    faults: FaultMix,
    replicas: Vec<Replica>,
    /// `links[a][b]`: replica `a`'s session with replica `b` (`None` for `a == b`).
    links: Vec<Vec<Option<Link>>>,
    network: VecDeque<Message>,
    cut: BTreeSet<(usize, usize)>,
    trace: Trace,
    now: u64,
    /// Vote IDs each replica has answered for, waiting for its next commit.
    uncommitted: Vec<Vec<VoteId>>,
    acknowledged: BTreeSet<VoteId>,
    acknowledgements: usize,
    delivered: u64,
    dropped: u64,
    duplicated: u64,
    rounds_merged: u64,
    stale: u64,
}

fn poll() -> PollId {
    // Infallible: a constant valid name.
    PollId::new("superbowl").unwrap_or_else(|_| unreachable!())
}

fn spec() -> PollSpec {
    let names = ["green", "blue"].map(|n| OptionName::new(n).unwrap_or_else(|_| unreachable!()));
    PollSpec::new(poll(), names.to_vec(), PollWindow::open_from(UnixMillis(0)))
        .unwrap_or_else(|_| unreachable!())
}

impl World {
    fn new(config: &SimConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let faults = FaultMix {
            drop: [0.0, 0.05, 0.3][rng.random_range(0..3)],
            duplicate: [0.0, 0.1][rng.random_range(0..2)],
            partitions: rng.random_bool(0.5),
            cross_region_retry: [0.0, 0.3][rng.random_range(0..2)],
            conflicting_option: [0.0, 0.05][rng.random_range(0..2)],
        };
        let replicas: Vec<Replica> = (0..config.replicas)
            .map(|i| {
                let actor = ActorId {
                    node: NodeId::new(format!("region-{i}")).unwrap_or_else(|_| unreachable!()),
                    incarnation: rng.random(),
                };
                let mut replica = Replica::new(actor, rng.random());
                let _ = replica.upsert_poll(spec());
                replica
            })
            .collect();
        let links = connect(&replicas);
        Self {
            rng,
            faults,
            replicas,
            links,
            network: VecDeque::new(),
            cut: BTreeSet::new(),
            trace: Trace(0xcbf2_9ce4_8422_2325),
            now: 0,
            uncommitted: vec![Vec::new(); config.replicas],
            acknowledged: BTreeSet::new(),
            acknowledgements: 0,
            delivered: 0,
            dropped: 0,
            duplicated: 0,
            rounds_merged: 0,
            stale: 0,
        }
    }

    fn vote(&mut self, config: &SimConfig) {
        let id = self.rng.random_range(0..config.vote_ids) as u128;
        let mut option = (id % 2) as u8;
        if self.rng.random_bool(self.faults.conflicting_option) {
            option = 1 - option;
        }
        let home = (id as usize) % self.replicas.len();
        let at = if self.rng.random_bool(self.faults.cross_region_retry) {
            self.rng.random_range(0..self.replicas.len())
        } else {
            home
        };
        let vote_id = VoteId(id.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
        let answer = self.replicas[at].accept_local(
            &poll(),
            OptionIndex(option),
            vote_id,
            UnixMillis(self.now),
        );
        let outcome = match answer {
            Ok(LocalVote::Counted { .. }) => 1,
            Ok(LocalVote::Duplicate { .. }) => 2,
            Err(_) => 3,
        };
        if outcome != 3 {
            // Acknowledged only once this replica's next commit covers it.
            self.uncommitted[at].push(vote_id);
        }
        self.trace.record(&[b'v', at as u8, option, outcome]);
        self.trace.record(&vote_id.to_bytes());
    }

    fn commit(&mut self, at: usize) {
        for batch in self.replicas[at].take_unlogged() {
            self.replicas[at].mark_durable(batch.poll(), batch.last_seq());
        }
        for vote_id in self.uncommitted[at].drain(..) {
            self.acknowledged.insert(vote_id);
            self.acknowledgements += 1;
        }
        self.trace.record(&[b'c', at as u8]);
    }

    /// Sends what `from`'s session with `to` has queued, one message per stream.
    fn flush(&mut self, from: usize, to: usize, answer: bool) {
        let mut frames = Vec::new();
        loop {
            let Some(link) = self.links[from][to].as_mut() else {
                return;
            };
            let transmit = if answer {
                link.answerer.poll_transmit()
            } else {
                link.puller.poll_transmit()
            };
            match transmit {
                None => return,
                Some(Transmit::Frame { frame, .. }) => frames.push(frame),
                Some(Transmit::Finish { round }) => {
                    let frames = std::mem::take(&mut frames);
                    self.send(Message {
                        from,
                        to,
                        answer,
                        round,
                        frames,
                    });
                }
            }
        }
    }

    fn send(&mut self, message: Message) {
        if self.network.len() >= SIM_MESSAGES_IN_FLIGHT_MAX {
            self.dropped += 1;
            return;
        }
        let bytes: usize = message.frames.iter().map(Vec::len).sum();
        let (from, to, answer) = (
            message.from as u8,
            message.to as u8,
            u8::from(message.answer),
        );
        self.trace.record(&[b's', from, to, answer]);
        self.trace.record(&(bytes as u64).to_le_bytes());
        self.network.push_back(message);
    }

    fn monotonic(&self) -> Duration {
        Duration::from_millis(self.now)
    }

    /// `to` pulls from `from`: a new round, unless one is still waiting for its answer (while
    /// `wait` holds; after healing, a round lost to the faults is given up at once).
    fn request_sync(&mut self, from: usize, to: usize, wait: bool) {
        let now = self.monotonic();
        let Some(link) = self.links[to][from].as_mut() else {
            return;
        };
        let timeout = Duration::from_millis(SIM_ROUND_TIMEOUT_MS);
        if wait && link.puller.round_in_flight(now, timeout) {
            self.trace.record(&[b'w', to as u8, from as u8]);
            return;
        }
        link.puller
            .start_round(self.replicas[to].pull_request(), now);
        link.puller
            .stamp_request(UnixMillis(self.now), self.now, now);
        self.flush(to, from, false);
    }

    fn deliver_one(&mut self, faulty: bool) -> Result<(), String> {
        if self.network.is_empty() {
            return Ok(());
        }
        let index = if faulty {
            self.rng.random_range(0..self.network.len())
        } else {
            0
        };
        let Some(message) = self.network.remove(index) else {
            return Ok(());
        };
        let cut = self.cut.contains(&(message.from, message.to));
        if faulty && (cut || self.rng.random_bool(self.faults.drop)) {
            self.dropped += 1;
            self.trace.record(b"x");
            return Ok(());
        }
        if faulty && self.rng.random_bool(self.faults.duplicate) {
            self.duplicated += 1;
            self.network.push_back(message.clone());
        }
        self.delivered += 1;
        self.trace
            .record(&[b'd', message.from as u8, message.to as u8]);
        if message.answer {
            self.take_answer(message)
        } else {
            self.answer_request(message)
        }
    }

    /// A pull request reached its answerer: the session reads it, the replica answers.
    fn answer_request(&mut self, message: Message) -> Result<(), String> {
        let (at, peer, round) = (message.to, message.from, message.round);
        let Some(link) = self.links[at][peer].as_mut() else {
            return Ok(());
        };
        for frame in &message.frames {
            link.answerer
                .handle_request_frame(round, frame)
                .map_err(|e| format!("replica {at} refused replica {peer}'s request: {e}"))?;
        }
        let Some(pull) = link.answerer.handle_request_end(round) else {
            self.trace.record(b"stale request");
            self.stale += 1;
            return Ok(());
        };
        if let Some(reading) = pull.clock {
            link.answerer
                .send_clock(round, reading, UnixMillis(self.now), self.now);
        }
        let answer = self.replicas[at].answer_pull(&pull.request, SIM_RECORDS_PER_SYNC_MAX);
        link.answerer.send_answer(round, answer);
        self.flush(at, peer, true);
        Ok(())
    }

    /// An answer reached its puller: the session reads it, the replica merges it, and a round
    /// cut short by the records budget is followed at once by the next (as the node does).
    fn take_answer(&mut self, message: Message) -> Result<(), String> {
        let (at, peer, round) = (message.to, message.from, message.round);
        let now = self.monotonic();
        let Some(link) = self.links[at][peer].as_mut() else {
            return Ok(());
        };
        for frame in &message.frames {
            link.puller
                .handle_answer_frame(round, frame, now)
                .map_err(|e| format!("replica {at} refused replica {peer}'s answer: {e}"))?;
        }
        let Some(answer) = link.puller.handle_answer_end(round) else {
            self.trace.record(b"stale answer");
            self.stale += 1;
            return Ok(());
        };
        let applied = self.replicas[at].apply_answer(answer);
        self.rounds_merged += 1;
        if let Some(refusal) = applied.refused.first() {
            return Err(format!(
                "replica {at} refused part of an answer: {}",
                refusal.message
            ));
        }
        self.trace
            .record(&(applied.records_added as u64).to_le_bytes());
        let outcome = link.puller.finish_round(RoundApplied {
            records_added: applied.records_added,
            shared: &applied.shared,
            records_deferred: 0,
        });
        match outcome {
            Some(Ok(outcome)) if outcome.ask_again_at_once => self.request_sync(peer, at, false),
            Some(Ok(_)) | None => {}
            Some(Err(refusal)) => return Err(format!("replica {at}: {refusal}")),
        }
        Ok(())
    }

    fn toggle_partition(&mut self) {
        if !self.cut.is_empty() {
            self.cut.clear();
            self.trace.record(b"heal");
            return;
        }
        let isolated = self.rng.random_range(0..self.replicas.len());
        for other in 0..self.replicas.len() {
            if other != isolated {
                self.cut.insert((isolated, other));
                if self.rng.random_bool(0.7) {
                    self.cut.insert((other, isolated)); // else a one-way cut
                }
            }
        }
        self.trace.record(&[b'p', isolated as u8]);
    }

    /// After the faults: deliver everything in order and sync all pairs until quiet.
    fn heal(&mut self) -> Result<usize, String> {
        self.cut.clear();
        for at in 0..self.replicas.len() {
            self.commit(at);
        }
        for round in 1..=SIM_HEAL_ROUNDS_MAX {
            for from in 0..self.replicas.len() {
                for to in 0..self.replicas.len() {
                    if from != to {
                        self.request_sync(from, to, false);
                    }
                }
            }
            while !self.network.is_empty() {
                self.deliver_one(false)?;
            }
            let vectors: Vec<VersionVector> = self
                .replicas
                .iter()
                .map(|r| r.version_vector(&poll()).unwrap_or_default())
                .collect();
            let first_totals = self.totals(0);
            let quiet = vectors.iter().all(|v| v == &vectors[0])
                && (0..self.replicas.len()).all(|i| self.totals(i) == first_totals);
            if quiet {
                return Ok(round);
            }
        }
        Err(format!(
            "no convergence after {SIM_HEAL_ROUNDS_MAX} full sync rounds"
        ))
    }

    fn totals(&self, at: usize) -> Vec<i64> {
        self.replicas[at]
            .state(&poll())
            .map(|s| s.totals(None))
            .unwrap_or_default()
    }

    fn check(&self) -> Result<(), String> {
        let reference = self.totals(0);
        for (at, replica) in self.replicas.iter().enumerate() {
            let Some(state) = replica.state(&poll()) else {
                return Err(format!("replica {at} lost the poll"));
            };
            for vote_id in &self.acknowledged {
                if !state.contains(*vote_id) {
                    return Err(format!("replica {at} lost acknowledged vote {vote_id}"));
                }
            }
            let fast = state.totals(None);
            let exact = state.exact_totals();
            if fast != exact {
                return Err(format!(
                    "replica {at}: fast path {fast:?} != exact {exact:?}"
                ));
            }
            let distinct = state.distinct_vote_ids() as i64;
            if fast.iter().sum::<i64>() != distinct {
                return Err(format!(
                    "replica {at}: total != {distinct} distinct vote IDs"
                ));
            }
            if fast != reference {
                return Err(format!(
                    "replica {at} shows {fast:?}, replica 0 {reference:?}"
                ));
            }
        }
        Ok(())
    }
}

/// Opens a session between every two replicas: each sends its hello and checks the other's
/// (one cluster, one vote ID key; the simulated "certificate" names the node the hello does).
fn connect(replicas: &[Replica]) -> Vec<Vec<Option<Link>>> {
    let key = VoteIdKey::new([7; 32]);
    let handshake = |replica: &Replica| {
        let hello = Hello {
            cluster_id: "sim".to_owned(),
            protocol_version: PROTOCOL_VERSION,
            actor: replica.actor().clone(),
            vote_id_key_proof: key.proof(),
        };
        Handshake::new(hello, key.clone())
    };
    let mut links = Vec::with_capacity(replicas.len());
    for (at, replica) in replicas.iter().enumerate() {
        let mut row = Vec::with_capacity(replicas.len());
        for (peer, other) in replicas.iter().enumerate() {
            if peer == at {
                row.push(None);
                continue;
            }
            let theirs = handshake(other).hello_frame();
            let dialled = (at < peer).then(|| other.actor().node.clone());
            let established = handshake(replica)
                .handle_hello(Some(&theirs), dialled.as_ref(), |_| Ok(()))
                .unwrap_or_else(|refusal| unreachable!("one cluster's hello refused: {refusal}"));
            let (puller, answerer) = established.split(SIM_RECORDS_PER_SYNC_MAX);
            row.push(Some(Link { puller, answerer }));
        }
        links.push(row);
    }
    links
}

/// Runs one seed: votes and syncs under faults, then heal and check.
pub fn run(config: &SimConfig) -> Result<SimReport, SimFailure> {
    let fail = |message: String| SimFailure {
        seed: config.seed,
        message,
    };
    let mut world = World::new(config);
    let mut votes_left = config.votes;
    while votes_left > 0 {
        world.now += world.rng.random_range(0..5);
        match world.rng.random_range(0..100) {
            0..60 => {
                world.vote(config);
                votes_left -= 1;
            }
            60..70 => {
                let at = world.rng.random_range(0..world.replicas.len());
                world.commit(at);
            }
            70..80 => {
                let from = world.rng.random_range(0..world.replicas.len());
                let to = world.rng.random_range(0..world.replicas.len());
                if from != to {
                    world.request_sync(from, to, true);
                }
            }
            80..81 if world.faults.partitions => world.toggle_partition(),
            _ => world.deliver_one(true).map_err(&fail)?,
        }
    }
    let heal_rounds = world.heal().map_err(&fail)?;
    world.check().map_err(&fail)?;
    Ok(SimReport {
        seed: config.seed,
        trace_hash: world.trace.0,
        faults: world.faults,
        acknowledged: world.acknowledgements,
        distinct_acknowledged: world.acknowledged.len(),
        messages: (world.delivered, world.dropped, world.duplicated),
        heal_rounds,
        rounds: (world.rounds_merged, world.stale),
        totals: world.totals(0),
    })
}

/// Runs seeds `first..first + count`, stopping at the first failure.
pub fn run_seeds(first: u64, count: u64) -> Result<Vec<SimReport>, SimFailure> {
    (first..first + count)
        .map(|seed| run(&SimConfig::new(seed)))
        .collect()
}

/// Counts over a set of runs: seeds, how many sampled each fault, acknowledged votes.
pub fn summarize(reports: &[SimReport]) -> BTreeMap<&'static str, u64> {
    let mut summary = BTreeMap::new();
    summary.insert("seeds", reports.len() as u64);
    summary.insert(
        "with partitions",
        reports.iter().filter(|r| r.faults.partitions).count() as u64,
    );
    summary.insert(
        "with drops",
        reports.iter().filter(|r| r.faults.drop > 0.0).count() as u64,
    );
    summary.insert(
        "with cross-region retries",
        reports
            .iter()
            .filter(|r| r.faults.cross_region_retry > 0.0)
            .count() as u64,
    );
    summary.insert(
        "acknowledged votes",
        reports.iter().map(|r| r.acknowledged as u64).sum(),
    );
    summary
}
