//! Fuzz bodies that live in the library so the libFuzzer targets (`fuzz/`) and the stable
//! corpus replay and proptests call the very same function. Not part of the API.
//!
//! [`check_replica_ops`] reads a byte string as a sequence of operations on two replicas
//! (local votes one at a time and in batches, the durability handshake, records from three
//! remote actors delivered with overlaps and repeats, record sync and counter merges between
//! the two, a remote actor
//! superseded by a newer incarnation of its node) and checks every step
//! against a reference model that knows nothing of the core's data structures: a map from
//! (actor, seq) to record, the prefix of every actor's log each replica holds, and the winner
//! rule of DESIGN.md §2 computed by brute force.

use std::collections::{BTreeMap, BTreeSet};

use crate::OptionName;
use crate::ids::{ActorId, NodeId, OptionIndex, PollId, Second, Seq, UnixMillis};
use crate::poll::{PollSpec, PollWindow};
use crate::record_batch::RecordBatch;
use crate::replica::{LocalVote, Replica};
use crate::vote_id::VoteId;

/// Options of the fuzzed poll.
const FUZZ_OPTIONS_COUNT: usize = 3;
/// Distinct vote IDs the fuzzer draws from: few, so collisions (duplicates, retractions) abound.
const FUZZ_VOTE_IDS_COUNT: u8 = 24;
/// Remote actors whose logs the fuzzer writes directly.
const FUZZ_REMOTE_ACTORS_COUNT: usize = 3;
/// Operations read from one input at most (bounds the time one input takes).
const FUZZ_OPERATIONS_MAX: usize = 512;
/// Records asked for in one sync (more than any input can make).
const FUZZ_SYNC_RECORDS_MAX: usize = 1 << 16;

/// A record as the model keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ModelRecord {
    vote_id: u128,
    option: u8,
    second: Second,
}

/// The reference model: every record ever made, and which prefix of each log a replica holds.
#[derive(Debug, Default)]
struct Model {
    logs: BTreeMap<ActorId, Vec<ModelRecord>>,
    held: [BTreeMap<ActorId, Seq>; 2],
    /// Local votes accepted but not durable yet, per replica (in seq order), and how many of
    /// them were handed out for logging.
    in_flight: [Vec<(u128, Seq)>; 2],
    handed_out: [usize; 2],
}

impl Model {
    fn held_records(&self, replica: usize) -> impl Iterator<Item = (&ActorId, Seq, &ModelRecord)> {
        self.held[replica].iter().flat_map(move |(actor, &held)| {
            self.logs[actor]
                .iter()
                .take(held as usize)
                .enumerate()
                .map(move |(i, r)| (actor, i as Seq + 1, r))
        })
    }

    /// Winners by brute force: per vote ID, the record with the smallest (second, actor, seq).
    fn totals(&self, replica: usize) -> Vec<i64> {
        let mut winners: BTreeMap<u128, (Second, &ActorId, Seq, u8)> = BTreeMap::new();
        for (actor, seq, record) in self.held_records(replica) {
            let candidate = (record.second, actor, seq, record.option);
            let winner = winners.entry(record.vote_id).or_insert(candidate);
            if candidate < *winner {
                *winner = candidate;
            }
        }
        let mut totals = vec![0; FUZZ_OPTIONS_COUNT];
        for (_, _, _, option) in winners.values() {
            totals[*option as usize] += 1;
        }
        totals
    }

    fn knows(&self, replica: usize, vote_id: u128) -> bool {
        self.held_records(replica)
            .any(|(_, _, r)| r.vote_id == vote_id)
            || self.in_flight[replica].iter().any(|&(v, _)| v == vote_id)
    }
}

fn actor(name: &str) -> ActorId {
    ActorId {
        node: NodeId::new(name).unwrap_or_else(|_| unreachable!("a fixed valid name")),
        incarnation: 1,
    }
}

fn poll_spec() -> PollSpec {
    let poll = PollId::new("fuzz").unwrap_or_else(|_| unreachable!("a fixed valid name"));
    let options = ["a", "b", "c"]
        .map(|o| OptionName::new(o).unwrap_or_else(|_| unreachable!("a fixed valid name")))
        .to_vec();
    PollSpec::new(poll, options, PollWindow::open_from(UnixMillis(0)))
        .unwrap_or_else(|_| unreachable!("a fixed valid spec"))
}

/// The two replicas, the remote actors and the model.
struct Harness {
    poll: PollId,
    replicas: [Replica; 2],
    actors: [ActorId; 2],
    remotes: Vec<ActorId>,
    model: Model,
    now: UnixMillis,
}

impl Harness {
    fn new() -> Self {
        let spec = poll_spec();
        let actors = [actor("local-a"), actor("local-b")];
        let mut replicas = [
            Replica::new(actors[0].clone(), [1, 2, 3, 4]),
            Replica::new(actors[1].clone(), [5, 6, 7, 8]),
        ];
        for replica in &mut replicas {
            let added = replica.upsert_poll(spec.clone());
            assert_eq!(added, Ok(true), "a fresh replica takes the poll");
        }
        let remotes = (0..FUZZ_REMOTE_ACTORS_COUNT)
            .map(|i| actor(&format!("remote-{i}")))
            .collect::<Vec<_>>();
        let mut model = Model::default();
        for a in actors.iter().chain(&remotes) {
            model.logs.insert(a.clone(), Vec::new());
        }
        Self {
            poll: spec.id().clone(),
            replicas,
            actors,
            remotes,
            model,
            now: UnixMillis(0),
        }
    }

    fn accept_local(&mut self, r: usize, option: u8, vote_id: u128) -> Result<(), String> {
        let answer = self.replicas[r]
            .accept_local(&self.poll, OptionIndex(option), VoteId(vote_id), self.now)
            .map_err(|e| format!("accept_local refused a valid vote: {e}"))?;
        self.check_local_answer(r, option, vote_id, answer)
    }

    /// Accepts `votes` in one `accept_local_batch` call: each answer must be what the model
    /// expects of that vote after the ones before it.
    fn accept_local_batch(&mut self, r: usize, votes: &[(u8, u128)]) -> Result<(), String> {
        let batch: Vec<(OptionIndex, VoteId)> = votes
            .iter()
            .map(|&(option, vote_id)| (OptionIndex(option), VoteId(vote_id)))
            .collect();
        let mut answers = Vec::new();
        self.replicas[r]
            .accept_local_batch(&self.poll, &batch, self.now, &mut answers)
            .map_err(|e| format!("accept_local_batch refused a valid batch: {e}"))?;
        if answers.len() != votes.len() {
            return Err(format!(
                "{} answers to {} votes",
                answers.len(),
                votes.len()
            ));
        }
        for (&(option, vote_id), answer) in votes.iter().zip(answers) {
            let answer = answer.map_err(|e| format!("a batch refused a valid vote: {e}"))?;
            self.check_local_answer(r, option, vote_id, answer)?;
        }
        Ok(())
    }

    /// Checks the answer to a local vote against the model, and records it there.
    fn check_local_answer(
        &mut self,
        r: usize,
        option: u8,
        vote_id: u128,
        answer: LocalVote,
    ) -> Result<(), String> {
        let known = self.model.knows(r, vote_id);
        match answer {
            LocalVote::Counted { seq, second } if !known => {
                let log = self
                    .model
                    .logs
                    .get_mut(&self.actors[r])
                    .ok_or("the model lost a log")?;
                let expected = log.len() as Seq + 1;
                if seq != expected {
                    return Err(format!(
                        "local vote got seq {seq}, the model expects {expected}"
                    ));
                }
                log.push(ModelRecord {
                    vote_id,
                    option,
                    second,
                });
                self.model.in_flight[r].push((vote_id, seq));
                Ok(())
            }
            LocalVote::Duplicate { .. } if known => Ok(()),
            other => Err(format!(
                "vote {vote_id} answered {other:?}, but the model says known={known}"
            )),
        }
    }

    fn make_durable(&mut self, r: usize, count: usize) {
        let handed = self.replicas[r].take_unlogged();
        let handed_records: usize = handed.iter().map(RecordBatch::len).sum();
        self.model.handed_out[r] += handed_records;
        let count = count.min(self.model.handed_out[r]);
        if count == 0 {
            return;
        }
        let (_, seq) = self.model.in_flight[r][count - 1];
        self.replicas[r].mark_durable(&self.poll, seq);
        self.model.in_flight[r].drain(..count);
        self.model.handed_out[r] -= count;
        self.model.held[r].insert(self.actors[r].clone(), seq);
    }

    /// Appends a record to a remote actor's log.
    fn write_remote(&mut self, remote: usize, record: ModelRecord) {
        let actor = &self.remotes[remote % self.remotes.len()];
        if let Some(log) = self.model.logs.get_mut(actor) {
            log.push(record);
        }
    }

    /// Delivers a remote actor's log from `from` (at most one past what `r` holds) to the end.
    fn deliver_remote(&mut self, r: usize, remote: usize, from: u8) -> Result<(), String> {
        let actor = self.remotes[remote % self.remotes.len()].clone();
        let log = &self.model.logs[&actor];
        let held = self.model.held[r].get(&actor).copied().unwrap_or(0);
        let first = (from as Seq % (held + 1)) + 1;
        if first > log.len() as Seq {
            return Ok(());
        }
        let mut batch = RecordBatch::new(self.poll.clone(), actor.clone(), first);
        for record in &log[(first - 1) as usize..] {
            batch.push(
                VoteId(record.vote_id),
                OptionIndex(record.option),
                record.second,
            );
        }
        let last = log.len() as Seq;
        self.replicas[r]
            .apply_records(&batch)
            .map_err(|e| format!("records {first}..={last} of {actor} refused: {e}"))?;
        self.model.held[r].insert(actor, last.max(held));
        Ok(())
    }

    /// Tells replica `r` that a remote actor's node has a newer incarnation: that actor's
    /// counters then count only its records (which `finish` still delivers whole, so the
    /// converged check must hold all the same).
    fn supersede(&mut self, r: usize, remote: usize) {
        let old = &self.remotes[remote % self.remotes.len()];
        let newer = ActorId {
            node: old.node.clone(),
            incarnation: old.incarnation ^ 1,
        };
        self.replicas[r].note_current_incarnation(&newer);
    }

    /// Sends everything `from` holds and `to` lacks, and `from`'s counters.
    fn sync(&mut self, from: usize, to: usize, counters: bool) -> Result<(), String> {
        let theirs = self.replicas[to]
            .version_vector(&self.poll)
            .ok_or("the poll vanished")?;
        let batches =
            self.replicas[from].missing_records(&self.poll, &theirs, FUZZ_SYNC_RECORDS_MAX);
        for batch in &batches {
            self.replicas[to]
                .apply_records(batch)
                .map_err(|e| format!("synced records refused: {e}"))?;
        }
        let held_from = self.model.held[from].clone();
        for (actor, seq) in held_from {
            let held = self.model.held[to].entry(actor).or_insert(0);
            *held = (*held).max(seq);
        }
        if counters {
            let state = self.replicas[from]
                .counter_state(&self.poll)
                .ok_or("the poll vanished")?;
            self.replicas[to]
                .merge_counters(&state)
                .map_err(|e| format!("counters refused: {e}"))?;
        }
        Ok(())
    }

    fn check(&self, converged: bool) -> Result<(), String> {
        for r in 0..2 {
            let state = self.replicas[r]
                .state(&self.poll)
                .ok_or("the poll vanished")?;
            let expected = self.model.totals(r);
            let exact = state.exact_totals();
            if exact != expected {
                return Err(format!(
                    "replica {r}: exact tally {exact:?}, model {expected:?}"
                ));
            }
            let fast = state.totals(None);
            if converged && fast != expected {
                return Err(format!(
                    "replica {r}: converged counters {fast:?}, model {expected:?}"
                ));
            }
        }
        Ok(())
    }
}

/// Runs the operations `data` spells against two replicas and the reference model; `Err`
/// says where the core and the model disagree. Any byte string is a valid input.
pub fn check_replica_ops(data: &[u8]) -> Result<(), String> {
    let mut harness = Harness::new();
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    for _ in 0..FUZZ_OPERATIONS_MAX {
        let Some(op) = next() else { break };
        let r = usize::from(op & 0x80 != 0);
        match op & 0x07 {
            0 => {
                let (Some(option), Some(id)) = (next(), next()) else {
                    break;
                };
                let option = option % FUZZ_OPTIONS_COUNT as u8;
                harness.accept_local(r, option, u128::from(id % FUZZ_VOTE_IDS_COUNT))?;
            }
            1 => {
                let Some(count) = next() else { break };
                let mut votes = Vec::new();
                for _ in 0..=count % 8 {
                    let (Some(option), Some(id)) = (next(), next()) else {
                        break;
                    };
                    let option = option % FUZZ_OPTIONS_COUNT as u8;
                    votes.push((option, u128::from(id % FUZZ_VOTE_IDS_COUNT)));
                }
                harness.accept_local_batch(r, &votes)?;
            }
            2 => {
                let Some(count) = next() else { break };
                harness.make_durable(r, usize::from(count % 8) + 1);
            }
            3 => {
                let (Some(remote), Some(option), Some(id)) = (next(), next(), next()) else {
                    break;
                };
                let record = ModelRecord {
                    vote_id: u128::from(id % FUZZ_VOTE_IDS_COUNT),
                    option: option % FUZZ_OPTIONS_COUNT as u8,
                    second: Second::from(option >> 4),
                };
                harness.write_remote(usize::from(remote), record);
            }
            4 => {
                let (Some(remote), Some(from)) = (next(), next()) else {
                    break;
                };
                harness.deliver_remote(r, usize::from(remote), from)?;
            }
            5 => harness.sync(r, 1 - r, op & 0x40 != 0)?,
            6 => {
                let Some(step) = next() else { break };
                harness.now = UnixMillis(harness.now.0 + u64::from(step) * 40);
            }
            _ if op & 0x08 != 0 => {
                let Some(remote) = next() else { break };
                harness.supersede(r, usize::from(remote));
            }
            _ => harness.check(false)?,
        }
        harness.check(false)?;
    }
    finish(&mut harness)
}

/// Makes every local vote durable, delivers every remote log to both replicas, syncs both
/// ways (twice, so relayed records arrive), and checks the converged counters.
fn finish(harness: &mut Harness) -> Result<(), String> {
    for r in 0..2 {
        harness.make_durable(r, usize::MAX);
        for remote in 0..FUZZ_REMOTE_ACTORS_COUNT {
            harness.deliver_remote(r, remote, 0)?;
        }
    }
    for _ in 0..2 {
        harness.sync(0, 1, true)?;
        harness.sync(1, 0, true)?;
    }
    harness.check(true)?;
    let vote_ids: BTreeSet<u128> = harness
        .model
        .held_records(0)
        .map(|(_, _, r)| r.vote_id)
        .collect();
    let counted: i64 = harness.model.totals(0).iter().sum();
    if counted != vote_ids.len() as i64 {
        return Err(format!(
            "{counted} counted for {} distinct vote IDs",
            vote_ids.len()
        ));
    }
    Ok(())
}
