//! The oracle: once the clients are done and the network is whole, checks DESIGN.md §2's
//! invariants against the history, through the nodes' public API only.
//!
//! 1. **Convergence**: every region reports the same per-option totals, stable over two
//!    reads, within [`converge_ms_max`]; then they hold the same records of every actor within
//!    [`RECORDS_MS_MAX`].
//! 2. **The probe**: every vote ID any client invoked is sent once more, in batches, to one
//!    region. `duplicate` means the cluster holds it; `counted` means it did not.
//!    - an acknowledged vote answered `counted` was **lost** (allowed only for a vote whose
//!      every acknowledgement came from one region that later lost its disk, the `local`
//!      ack mode's one exception, or whose record lay in a log frame that disk damage
//!      destroyed: no copy may remain; both are reported);
//!    - a vote no attempt could have reached answered `duplicate` is a **phantom**;
//!    - **fast path == exact**: the converged total before the probe must equal the
//!      number of `duplicate` answers (the displayed counters agree with the records held).
//! 3. **Exactly once**: after the probe every invoked vote ID is held, so once converged
//!    again every region's total per option must equal the vote IDs invoked with it.
//! 4. **Every vote under its option, on every node**: each region is asked (the admin vote
//!    lookup) which option every invoked vote ID counts for; it must hold it, under the name
//!    of the option it was cast for (a region may list the options in another order). Up to
//!    [`LOOKUP_VOTES_MAX`] votes, evenly spaced, at larger scales.
//! 5. **Clocks** ([`super::clocks`]): no vote stamped by a node outside the offset bound, no
//!    healthy node refusing votes because of another node's clock, and a window no clock
//!    moved.
//! 6. **No seq issued twice, no `counted` twice**: no two vote IDs got a `counted` receipt
//!    naming the same (actor, seq) (DESIGN.md §2: an actor never reuses a seq; a node that
//!    lost records of its log and went on under the same actor would), and no actor answered
//!    `counted` twice for one vote ID, directly or through an edge (invariant 5); every edge
//!    answer that a vote is durable named the node, and a `counted` one carried its receipt
//!    (an edge never acknowledges on its own).
//! 7. **Reads during the chaos** stayed within bounds: no more than the votes carried by the
//!    calls invoked before the answer arrived (each can add at most one record; a vote ID
//!    counted at two regions shows twice until the winner rule's retraction arrives, which
//!    DESIGN.md invariant 4 allows), plus the records a recovery from a damaged log may have
//!    recorded again under its new incarnation before then (each a second record of a vote
//!    no call carried again); no fewer than the single votes the serving actor itself
//!    had answered `counted` before the answer's capture time (votes also sent to another
//!    region are left out: the winner rule may rightly retract them).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use tally_node::http::{
    BatchResponse, BatchVoteStatus, BinaryBatch, BinaryLookup, BinaryLookupResponse, BinaryVote,
    LOOKUP_NOT_HELD, POSTCARD_MEDIA_TYPE,
};

use super::http::{Conn, Outcome};
use super::ledger::{Ledger, VoteEntry};
use super::net::now_ms;
use super::workload::{OPTION_NAMES, POLL, Plan, Results, Shared, lock, read_results};

/// Longest the regions' tallies may take to agree once healed, in simulated ms, before the
/// allowance for volume ([`converge_ms_max`]).
pub const CONVERGE_MS_BASE: u64 = 60_000;

/// Records per simulated second a region must at least catch up with after healing.
pub const CATCH_UP_RECORDS_PER_S_MIN: u64 = 200_000;

/// DESIGN.md invariant 3's bound for a run of `votes`: the base, plus the time to fetch every
/// vote's record at [`CATCH_UP_RECORDS_PER_S_MIN`]. Counters make tallies agree long before
/// records do, except for a superseded incarnation (a lost disk), whose counts are what its
/// records prove: a region back from a long partition must fetch them first. (60 s at 5,000
/// votes; 210 s at 30 million.)
pub fn converge_ms_max(votes: u64) -> u64 {
    CONVERGE_MS_BASE + votes * 1_000 / CATCH_UP_RECORDS_PER_S_MIN
}

/// Longest the regions may take to hold the same records once their tallies agree, in
/// simulated ms. Counters travel ahead of records (DESIGN.md §3), so a region back from a
/// long partition at the peak shows the right totals long before it has fetched the
/// millions of records it missed; the probe needs the records.
pub const RECORDS_MS_MAX: u64 = 600_000;

/// Vote IDs per probe batch.
pub const PROBE_BATCH_VOTES: usize = 5_000;

/// The admin token of every simulated node (the checker's vote lookups need it).
pub const ADMIN_TOKEN: &str = "sim-admin-token";

/// Vote IDs per lookup request (the route's limit).
pub const LOOKUP_BATCH_VOTES: usize = 10_000;

/// Most votes looked up per region: all of them up to this, evenly spaced beyond (the full
/// scenario's 30 million would cost each region 3,000 requests of 160 KB).
pub const LOOKUP_VOTES_MAX: usize = 1_000_000;

/// What the checks found (all passed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Simulated ms from healing until every region showed the same tallies.
    pub converge_ms: u64,
    /// Simulated ms from healing until every region also held the same records.
    pub records_ms: u64,
    /// Simulated ms the second convergence took (after the probe).
    pub reconverge_ms: u64,
    /// Vote IDs invoked.
    pub invoked: u64,
    /// Vote IDs acknowledged.
    pub acknowledged: u64,
    /// Vote IDs the cluster held before the probe (its converged total).
    pub held: u64,
    /// Acknowledged votes lost with a lost disk (allowed under `local` acks).
    pub lost_with_disk: u64,
    /// Acknowledged votes lost because disk damage destroyed the log frame holding their
    /// only record.
    pub lost_with_damage: u64,
    /// `counted` receipts checked for a seq issued twice.
    pub receipts: u64,
    /// Reads checked against their bounds.
    pub reads: u64,
    /// Votes whose option every region was asked (each must name the option cast).
    pub options_checked: u64,
    /// Single votes' stamps checked against true time.
    pub stamps: u64,
    /// Votes or batches refused for a clock hold (each one excused).
    pub clock_refusals: u64,
    /// The final totals per option.
    pub totals: Vec<i64>,
}

pub use super::Violation;

/// Waits for the clients and the heal, then runs every check; the verdict goes to `verdict`.
pub async fn checker(
    plan: Arc<Plan>,
    shared: Shared,
    verdict: Arc<std::sync::Mutex<Option<Result<Checked, Violation>>>>,
) -> turmoil::Result {
    loop {
        {
            let ledger = lock(&shared);
            if ledger.clients_done && ledger.healed {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let result = check(&plan, &shared).await;
    if let Ok(mut slot) = verdict.lock() {
        *slot = Some(result);
    }
    Ok(())
}

async fn check(plan: &Plan, shared: &Shared) -> Result<Checked, Violation> {
    let mut conns: Vec<Conn> = plan.regions.iter().map(|r| Conn::new(r)).collect();
    check_reads(&lock(shared))?;
    let receipts = check_receipts(&lock(shared))?;
    let healed_at = now_ms();
    converge(
        plan,
        &mut conns,
        Agreement::Tallies,
        converge_ms_max(plan.votes),
    )
    .await?;
    let converge_ms = now_ms() - healed_at;
    let before = converge(plan, &mut conns, Agreement::Records, RECORDS_MS_MAX).await?;
    let records_ms = now_ms() - healed_at;
    let opens_at_ms = read_opens_at(&mut conns[0]).await?;
    super::clocks::check_clocks(&lock(shared), opens_at_ms)?;
    let (invoked, answers) = probe(plan, shared, &mut conns).await?;
    let mut checked = judge_probe(&lock(shared), &invoked, &answers, &before)?;
    checked.receipts = receipts;
    checked.converge_ms = converge_ms;
    checked.records_ms = records_ms;
    let probed_at = now_ms();
    let after = converge(plan, &mut conns, Agreement::Records, RECORDS_MS_MAX).await?;
    checked.reconverge_ms = now_ms() - probed_at;
    check_exactly_once(&lock(shared), &after)?;
    checked.totals = after.votes;
    {
        let ledger = lock(shared);
        checked.reads = ledger.reads.len() as u64;
        checked.stamps = ledger.stamps.len() as u64;
        checked.clock_refusals = ledger.clock_refusals.len() as u64;
    }
    checked.options_checked = check_options(plan, shared).await?;
    Ok(checked)
}

/// After the probe every invoked vote ID is held: each option's total must equal the vote IDs
/// invoked with it.
fn check_exactly_once(ledger: &Ledger, after: &Results) -> Result<(), Violation> {
    let mut expected = vec![0i64; after.votes.len()];
    for v in ledger.votes.iter().filter(|v| v.invoked_ms != 0) {
        if let Some(slot) = expected.get_mut(v.option as usize) {
            *slot += 1;
        }
    }
    if after.votes != expected {
        return Err(format!(
            "exactly once: after the probe every region shows {:?} per option, but {:?} \
             distinct vote IDs were invoked per option",
            after.votes, expected
        ));
    }
    Ok(())
}

/// Asks every region which option every invoked vote ID counts for (a sample beyond
/// [`LOOKUP_VOTES_MAX`]): each must be held, under the name of the option it was cast for.
/// Returns how many votes were checked.
async fn check_options(plan: &Plan, shared: &Shared) -> Result<u64, Violation> {
    let sample: Vec<u32> = {
        let ledger = lock(shared);
        let invoked = ledger.votes.iter().filter(|v| v.invoked_ms != 0).count();
        let stride = invoked.div_ceil(LOOKUP_VOTES_MAX).max(1);
        (0u32..)
            .zip(&ledger.votes)
            .filter(|(_, vote)| vote.invoked_ms != 0)
            .map(|(number, _)| number)
            .step_by(stride)
            .collect()
    };
    for name in &plan.regions {
        let mut conn = Conn::with_bearer(name, ADMIN_TOKEN);
        let results = read_results(&mut conn, Duration::from_millis(10_000))
            .await
            .ok_or_else(|| format!("every vote under its option: {name} gave no results"))?;
        for chunk in sample.chunks(LOOKUP_BATCH_VOTES) {
            let vote_ids = {
                let ledger = lock(shared);
                chunk.iter().map(|&v| ledger.votes[v as usize].id).collect()
            };
            let options = lookup(&mut conn, name, vote_ids).await?;
            let ledger = lock(shared);
            for (&v, &held) in chunk.iter().zip(&options) {
                let vote = &ledger.votes[v as usize];
                let cast = OPTION_NAMES[usize::from(vote.option)];
                let shown = results.names.get(usize::from(held)).map(String::as_str);
                if held == LOOKUP_NOT_HELD || shown != Some(cast) {
                    return Err(format!(
                        "every vote under its option: {name} counts vote #{v} {} (cast for \
                         {cast}) as {}",
                        uuid::Uuid::from_bytes(vote.id),
                        shown.unwrap_or("nothing"),
                    ));
                }
            }
        }
    }
    Ok(sample.len() as u64)
}

/// One lookup request: the option index each vote ID counts for at `name`.
async fn lookup(
    conn: &mut Conn,
    name: &str,
    vote_ids: Vec<[u8; 16]>,
) -> Result<Vec<u8>, Violation> {
    let count = vote_ids.len();
    let body = postcard::to_allocvec(&BinaryLookup { vote_ids })
        .map_err(|e| format!("lookup: cannot encode a request: {e}"))?;
    for _ in 0..10 {
        let outcome = conn
            .call(
                Method::POST,
                &format!("/v1/admin/polls/{POLL}/lookup"),
                Some(POSTCARD_MEDIA_TYPE),
                Bytes::from(body.clone()),
                Duration::from_millis(10_000),
            )
            .await;
        match outcome {
            Outcome::Answered(200, answer) => {
                let answer: BinaryLookupResponse = postcard::from_bytes(&answer)
                    .map_err(|e| format!("lookup: unreadable answer from {name}: {e}"))?;
                if answer.options.len() != count {
                    return Err(format!(
                        "lookup: {name} answered {} options for {count} votes",
                        answer.options.len()
                    ));
                }
                return Ok(answer.options);
            }
            // Read-only: asking again is always safe.
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    Err(format!("lookup: {name} did not answer after healing"))
}

/// The poll's `opens_at` as a region lists it (after convergence, every region's).
async fn read_opens_at(conn: &mut Conn) -> Result<u64, Violation> {
    for _ in 0..10 {
        let outcome = conn
            .call(
                Method::GET,
                "/v1/polls",
                None,
                Bytes::new(),
                Duration::from_millis(1_000),
            )
            .await;
        if let Outcome::Answered(200, body) = outcome {
            let polls: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| format!("the poll list does not parse: {e}"))?;
            let poll = polls
                .as_array()
                .and_then(|all| all.iter().find(|p| p["id"] == POLL));
            return poll
                .and_then(|p| p["opens_at_ms"].as_u64())
                .ok_or_else(|| format!("{POLL} is not open after healing: {polls}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err("the poll list was not answered after healing".to_owned())
}

/// What the regions must agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Agreement {
    /// The displayed totals per option.
    Tallies,
    /// The totals and every actor's records held.
    Records,
}

/// Reads every region until all agree, twice in a row, within `within_ms`.
async fn converge(
    plan: &Plan,
    conns: &mut [Conn],
    agreement: Agreement,
    within_ms: u64,
) -> Result<Results, Violation> {
    let deadline = now_ms() + within_ms;
    let same = |a: &Results, b: &Results| {
        a.votes == b.votes && (agreement == Agreement::Tallies || a.records == b.records)
    };
    let mut previous: Option<Vec<Results>> = None;
    let mut last_seen = Vec::new();
    while now_ms() < deadline {
        let mut round = Vec::new();
        for conn in conns.iter_mut() {
            match read_results(conn, Duration::from_millis(1_000)).await {
                Some(results) => round.push(results),
                None => break,
            }
        }
        if round.len() == plan.regions.len() {
            let agree = round.windows(2).all(|w| same(&w[0], &w[1]));
            let stable = previous
                .as_ref()
                .is_some_and(|p| p.iter().zip(&round).all(|(a, b)| same(a, b)));
            if agree && stable {
                return Ok(round.swap_remove(0));
            }
            previous = agree.then(|| round.clone());
        }
        last_seen = round;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let shown: Vec<String> = last_seen
        .iter()
        .zip(&plan.regions)
        .map(|(r, name)| {
            let records: u64 = r.records.iter().map(|(_, n)| n).sum();
            format!("{name}: {:?}, {records} records", r.votes)
        })
        .collect();
    Err(format!(
        "convergence: the regions' {} did not agree within {within_ms} simulated ms; last \
         seen: {}",
        match agreement {
            Agreement::Tallies => "tallies",
            Agreement::Records => "records",
        },
        shown.join("; ")
    ))
}

/// Sends every invoked vote ID once more to one region; returns the vote numbers probed and
/// whether each was already held (`duplicate`).
async fn probe(
    plan: &Plan,
    shared: &Shared,
    conns: &mut [Conn],
) -> Result<(Vec<u32>, Vec<bool>), Violation> {
    // The numbers of the invoked votes, sized up front (the ledger counts them): at full
    // scale 30 million, and a vector grown by doubling (or a second one of the votes
    // themselves) would fault in and zero gigabytes of fresh pages; `u32` numbers halve it
    // again. Each batch's votes are read from the ledger as it goes.
    let invoked: Vec<u32> = {
        let ledger = lock(shared);
        assert!(
            u32::try_from(ledger.votes.len()).is_ok(),
            "a run's votes are numbered in u32"
        );
        let mut invoked = Vec::with_capacity(usize::try_from(ledger.invoked).unwrap_or(0));
        invoked.extend(
            (0u32..)
                .zip(&ledger.votes)
                .filter(|(_, vote)| vote.invoked_ms != 0)
                .map(|(number, _)| number),
        );
        invoked
    };
    let region = (plan.seed % plan.regions.len() as u64) as usize;
    let mut answers = Vec::with_capacity(invoked.len());
    for chunk in invoked.chunks(PROBE_BATCH_VOTES) {
        let votes = {
            let ledger = lock(shared);
            chunk
                .iter()
                .map(|&number| {
                    let vote = &ledger.votes[number as usize];
                    BinaryVote {
                        option: vote.option,
                        vote_id: vote.id,
                    }
                })
                .collect()
        };
        let body = postcard::to_allocvec(&BinaryBatch { votes })
            .map_err(|e| format!("probe: cannot encode a batch: {e}"))?;
        let mut statuses = None;
        for _ in 0..10 {
            let outcome = conns[region]
                .call(
                    Method::POST,
                    &format!("/v1/polls/{POLL}/votes/batch"),
                    Some(POSTCARD_MEDIA_TYPE),
                    Bytes::from(body.clone()),
                    Duration::from_millis(10_000),
                )
                .await;
            match outcome {
                Outcome::Answered(200, body) => {
                    statuses = Some(parse_statuses(&body)?);
                    break;
                }
                // An unanswered probe batch may have counted some of its votes: probing
                // again would misreport them as held. The network is whole now, so this
                // is a failure of its own.
                Outcome::Lost => {
                    return Err(format!(
                        "probe: {} gave no answer to a probe batch after healing",
                        plan.regions[region]
                    ));
                }
                Outcome::NotSent | Outcome::Answered(..) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let statuses = statuses.ok_or_else(|| {
            format!(
                "probe: {} refused the probe batches after healing",
                plan.regions[region]
            )
        })?;
        if statuses.len() != chunk.len() {
            return Err(format!(
                "probe: {} answered {} statuses for {} votes",
                plan.regions[region],
                statuses.len(),
                chunk.len()
            ));
        }
        answers.extend(statuses);
    }
    Ok((invoked, answers))
}

fn parse_statuses(body: &[u8]) -> Result<Vec<bool>, Violation> {
    let parsed: BatchResponse =
        postcard::from_bytes(body).map_err(|e| format!("probe: unreadable batch answer: {e}"))?;
    parsed
        .statuses
        .iter()
        .map(|s| match s {
            BatchVoteStatus::Duplicate => Ok(true),
            BatchVoteStatus::Counted => Ok(false),
            other => Err(format!(
                "probe: a probe vote was answered {:?}",
                other.as_str()
            )),
        })
        .collect()
}

fn judge_probe(
    ledger: &Ledger,
    invoked: &[u32],
    held: &[bool],
    before: &Results,
) -> Result<Checked, Violation> {
    let mut checked = Checked {
        invoked: invoked.len() as u64,
        ..Checked::default()
    };
    let mut lost = Vec::new();
    let mut phantoms = Vec::new();
    for (&v, &was_held) in invoked.iter().zip(held) {
        let entry: &VoteEntry = &ledger.votes[v as usize];
        if entry.acked() {
            checked.acknowledged += 1;
        }
        if was_held {
            checked.held += 1;
            if !entry.maybe_counted() {
                phantoms.push(v);
            }
        } else if entry.acked() {
            if ledger.loss_allowed(entry) {
                checked.lost_with_disk += 1;
            } else if ledger.destroyed_by_damage(entry) {
                checked.lost_with_damage += 1;
            } else {
                lost.push(v);
            }
        }
    }
    if let Some(&v) = lost.first() {
        let e = &ledger.votes[v as usize];
        return Err(format!(
            "no acknowledged vote lost: {} acknowledged vote IDs are missing after healing \
             (first: vote #{v} {}, acknowledged by regions {:#07b} at {} ms)",
            lost.len(),
            uuid::Uuid::from_bytes(e.id),
            e.acked_mask,
            e.last_ack_ms
        ));
    }
    if let Some(&v) = phantoms.first() {
        return Err(format!(
            "no phantom votes: {} vote IDs are held that no attempt could have delivered \
             (first: vote #{v} {})",
            phantoms.len(),
            uuid::Uuid::from_bytes(ledger.votes[v as usize].id)
        ));
    }
    if before.total != checked.held as i64 {
        return Err(format!(
            "fast path == exact: the converged total was {} but the cluster held {} distinct \
             vote IDs",
            before.total, checked.held
        ));
    }
    Ok(checked)
}

/// Checks that no (actor, seq) was receipted for two vote IDs, that no actor answered
/// `counted` twice for one vote ID (directly or through an edge), and that no edge said a
/// vote was durable without naming the node and its receipt; returns the receipts checked.
fn check_receipts(ledger: &Ledger) -> Result<u64, Violation> {
    if ledger.unproven_edge_answers > 0 {
        return Err(format!(
            "edges answer only from a node's durable status: {} answers said a vote was \
             durable without naming the node (or, for `counted`, its receipt)",
            ledger.unproven_edge_answers
        ));
    }
    let mut by_vote: Vec<(u32, u32, u64)> = ledger
        .receipts
        .iter()
        .map(|&(actor, seq, vote)| (actor, vote, seq))
        .collect();
    by_vote.sort_unstable();
    // The same receipt twice is one fact told twice; two seqs are two counts.
    by_vote.dedup();
    for pair in by_vote.windows(2) {
        let ((actor, vote, seq), (other_actor, other_vote, other_seq)) = (pair[0], pair[1]);
        if (actor, vote) == (other_actor, other_vote) {
            return Err(format!(
                "consistent answers: {} answered `counted` twice for vote #{vote} {} (seq \
                 {seq} and seq {other_seq})",
                ledger.actors[actor as usize],
                uuid::Uuid::from_bytes(ledger.votes[vote as usize].id)
            ));
        }
    }
    let mut receipts = ledger.receipts.clone();
    receipts.sort_unstable();
    receipts.dedup();
    for pair in receipts.windows(2) {
        let ((actor, seq, first), (other_actor, other_seq, second)) = (pair[0], pair[1]);
        if (actor, seq) == (other_actor, other_seq) {
            let id = |v: u32| uuid::Uuid::from_bytes(ledger.votes[v as usize].id);
            return Err(format!(
                "no seq issued twice: {} seq {seq} was the receipt of vote #{first} {} and of \
                 vote #{second} {}",
                ledger.actors[actor as usize],
                id(first),
                id(second)
            ));
        }
    }
    Ok(receipts.len() as u64)
}

/// Checks every read made during the chaos against its bounds.
fn check_reads(ledger: &Ledger) -> Result<(), Violation> {
    // Votes sent by calls invoked up to each instant, cumulatively.
    let mut attempts = ledger.attempts.clone();
    attempts.sort_unstable();
    let mut sent_by = Vec::with_capacity(attempts.len());
    let mut sum = 0i64;
    for &(at, votes) in &attempts {
        sum += i64::from(votes);
        sent_by.push((at, sum));
    }
    // Single votes answered `counted` by one actor, at one region only: (actor, answer time).
    let mut receipts: Vec<(u32, u64)> = ledger
        .votes
        .iter()
        .filter(|v| v.sent_mask.count_ones() == 1)
        .filter_map(VoteEntry::receipt)
        .collect();
    receipts.sort_unstable();
    for read in &ledger.reads {
        let sent = sent_by.partition_point(|&(t, _)| t <= read.completed_ms);
        // A recovery from a damaged log records votes again under its new incarnation:
        // records no call carried, shown twice until the winner rule retracts one.
        let adopted: u64 = ledger
            .adoptable
            .iter()
            .filter(|&&(at, _)| at <= read.completed_ms)
            .map(|&(_, records)| records)
            .sum();
        let at_most = sent.checked_sub(1).map_or(0, |i| sent_by[i].1) + adopted as i64;
        if read.total > at_most {
            return Err(format!(
                "reads within bounds: region #{} showed {} votes at {} ms, but the calls \
                 invoked by then carried only {} votes (with {adopted} a damaged log's \
                 recovery may have recorded again)",
                read.region, read.total, read.completed_ms, at_most
            ));
        }
        let Some(actor) = read.local_actor else {
            continue;
        };
        let from = receipts.partition_point(|&(a, _)| a < actor);
        let to = receipts.partition_point(|&(a, t)| (a, t) < (actor, read.as_of_ms));
        let at_least = (to - from) as i64;
        if read.total < at_least {
            return Err(format!(
                "reads within bounds: {} showed {} votes as of {} ms, but had itself \
                 answered {} single votes `counted` before then",
                ledger.actors[actor as usize], read.total, read.as_of_ms, at_least
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ledger::Read;

    #[test]
    fn an_actor_counting_one_vote_id_twice_or_an_edge_answer_without_a_node_is_a_violation() {
        // Goal: invariant 5 as the checker sees it: one actor's two `counted` receipts for one
        // vote ID fail the run, two actors' (two regions during a partition) do not; an edge
        // answer that names no node fails it. Method: hand-made ledgers.
        let mut ledger = Ledger::new((0u8..2).map(|i| VoteEntry::new([i; 16], 0)).collect());
        let east = ledger.actor_index("us-east#0000000000000001");
        let west = ledger.actor_index("us-west#0000000000000001");
        ledger.receipts = vec![(east, 1, 0), (west, 1, 0), (east, 2, 1)];
        assert_eq!(check_receipts(&ledger), Ok(3));
        ledger.receipts.push((east, 3, 0));
        let violation = check_receipts(&ledger).unwrap_err();
        assert!(violation.starts_with("consistent answers"), "{violation}");
        ledger.receipts.pop();
        ledger.unproven_edge_answers = 1;
        let violation = check_receipts(&ledger).unwrap_err();
        assert!(violation.starts_with("edges answer only"), "{violation}");
    }

    #[test]
    fn a_read_above_the_votes_sent_fails_unless_a_damaged_log_was_recorded_again() {
        // Goal: the upper read bound can fail, and allows exactly the second records a
        // recovery from a damaged log adopts (seed 9012 at 300,000 votes: us-east, restarted,
        // showed eu-west's new incarnation's 37,748 adopted records ahead of their records,
        // beside its own records of the same votes). Method: hand-made ledgers: 100 votes
        // sent by 1 s, a read of 130 at 2 s; then a damaged start at 1.5 s that may adopt
        // 40 records, and one at 2.5 s (after the read) that may not excuse it.
        let mut ledger = Ledger::new(Vec::new());
        ledger.attempts = vec![(1_000, 60), (1_000, 40)];
        ledger.reads = vec![Read {
            region: 0,
            completed_ms: 2_000,
            as_of_ms: 2_000,
            total: 130,
            local_actor: None,
        }];
        let violation = check_reads(&ledger).unwrap_err();
        assert!(violation.starts_with("reads within bounds"), "{violation}");
        ledger.adoptable = vec![(2_500, 40)];
        assert!(check_reads(&ledger).is_err(), "adopted after the read");
        ledger.adoptable = vec![(1_500, 20)];
        assert!(check_reads(&ledger).is_err(), "more than it may adopt");
        ledger.adoptable.push((1_800, 10));
        assert_eq!(check_reads(&ledger), Ok(()));
    }

    #[test]
    fn a_seq_receipted_for_two_vote_ids_is_a_violation() {
        // Goal: the "no seq issued twice" check fails exactly when two different votes got a
        // `counted` receipt naming one (actor, seq). Method: a ledger of three votes and their
        // receipts; the same receipt twice for one vote is fine.
        let mut ledger = Ledger::new((0u8..3).map(|i| VoteEntry::new([i; 16], 0)).collect());
        let actor = ledger.actor_index("us-east#0000000000000001");
        let other = ledger.actor_index("us-east#0000000000000002");
        ledger.receipts = vec![(actor, 1, 0), (actor, 2, 1), (other, 1, 2), (actor, 1, 0)];
        assert_eq!(check_receipts(&ledger), Ok(3));
        ledger.receipts.push((actor, 2, 2));
        let violation = check_receipts(&ledger).unwrap_err();
        assert!(violation.starts_with("no seq issued twice"), "{violation}");
        assert!(
            violation.contains("us-east#0000000000000001 seq 2"),
            "{violation}"
        );
    }
}
