//! Voting clients for cluster tests, and the ledger of what was sent and acknowledged.
//!
//! A vote counts as acknowledged when a node answered it `counted` or `duplicate` (both mean
//! "durable here"); anything else (503, a dropped connection, a node killed mid-request) leaves
//! it sent but unacknowledged: it may or may not have landed, and the test resolves which by
//! sending it again later.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::http::Client;

/// The poll every cluster test votes in, and its options (the default config's).
pub(crate) const POLL_VOTES: &str = "/v1/polls/superbowl/votes";
/// Batch route of the same poll.
pub(crate) const POLL_BATCH: &str = "/v1/polls/superbowl/votes/batch";
/// The options, by index.
pub(crate) const OPTIONS: [&str; 2] = ["green", "blue"];

/// Votes per batch request the clients send.
const CLIENT_BATCH_VOTES: usize = 25;

/// Pause between a client's requests, so a debug-build cluster is loaded, not swamped.
const CLIENT_PAUSE: Duration = Duration::from_millis(2);

/// What was sent and what was acknowledged, by vote ID.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Every vote ID sent, with the option it was first sent with.
    pub(crate) sent: BTreeMap<String, usize>,
    /// Vote IDs some node answered `counted` or `duplicate`.
    pub(crate) acknowledged: BTreeSet<String>,
    /// Per node: vote IDs it acknowledged, in order (retries at other nodes pick from these).
    pub(crate) acknowledged_at: Vec<Vec<String>>,
    /// Vote IDs deliberately sent with two different options.
    pub(crate) conflicting: BTreeSet<String>,
    /// Answers no test should see (a 4xx, a malformed body).
    pub(crate) unexpected: Vec<String>,
}

impl Ledger {
    /// An empty ledger for `nodes` nodes.
    pub(crate) fn new(nodes: usize) -> Self {
        Self {
            acknowledged_at: vec![Vec::new(); nodes],
            ..Self::default()
        }
    }

    /// Notes that `id` is about to be sent with `option`.
    pub(crate) fn sending(&mut self, id: &str, option: usize) {
        self.sent.entry(id.to_owned()).or_insert(option);
    }

    /// Notes that `node` acknowledged `id`.
    pub(crate) fn acknowledge(&mut self, node: usize, id: &str) {
        self.acknowledged.insert(id.to_owned());
        self.acknowledged_at[node].push(id.to_owned());
    }
}

/// A shared ledger.
pub(crate) type SharedLedger = Arc<Mutex<Ledger>>;

/// How one vote was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// New here, durable.
    Counted,
    /// Seen before here, durable.
    Duplicate,
    /// Not acknowledged (shed, or the connection failed).
    Unacknowledged,
}

fn vote_body(id: &str, option: usize) -> String {
    format!(r#"{{"option":"{}","vote_id":"{id}"}}"#, OPTIONS[option])
}

fn batch_body(votes: &[(String, usize)]) -> String {
    let votes: Vec<String> = votes
        .iter()
        .map(|(id, option)| vote_body(id, *option))
        .collect();
    format!(r#"{{"votes":[{}]}}"#, votes.join(","))
}

/// Sends one vote on `client`; `Err` when the connection failed (reconnect).
pub(crate) fn send_vote(
    client: &mut Client,
    id: &str,
    option: usize,
    unexpected: &mut Vec<String>,
) -> Result<Answer, std::io::Error> {
    let (status, body) = client.request("POST", POLL_VOTES, &vote_body(id, option))?;
    Ok(match status {
        200 if body.contains(r#""status":"counted""#) => Answer::Counted,
        200 if body.contains(r#""status":"duplicate""#) => Answer::Duplicate,
        429 | 503 => Answer::Unacknowledged,
        _ => {
            unexpected.push(format!("vote {id}: {status} {body}"));
            Answer::Unacknowledged
        }
    })
}

/// Sends a batch on `client`: one answer per vote, in order.
pub(crate) fn send_batch(
    client: &mut Client,
    votes: &[(String, usize)],
    unexpected: &mut Vec<String>,
) -> Result<Vec<Answer>, std::io::Error> {
    let (status, body) = client.request("POST", POLL_BATCH, &batch_body(votes))?;
    if status == 429 || status == 503 {
        return Ok(vec![Answer::Unacknowledged; votes.len()]);
    }
    let statuses = (status == 200)
        .then(|| serde_json::from_str::<serde_json::Value>(&body).ok())
        .flatten()
        .and_then(|json| json["statuses"].as_array().cloned())
        .filter(|statuses| statuses.len() == votes.len());
    let Some(statuses) = statuses else {
        unexpected.push(format!("batch of {}: {status} {body}", votes.len()));
        return Ok(vec![Answer::Unacknowledged; votes.len()]);
    };
    Ok(statuses
        .iter()
        .map(|status| match status.as_str() {
            Some("counted") => Answer::Counted,
            Some("duplicate") => Answer::Duplicate,
            Some("overloaded") => Answer::Unacknowledged,
            other => {
                unexpected.push(format!("batch vote status {other:?}"));
                Answer::Unacknowledged
            }
        })
        .collect())
}

/// A client thread's plan: which node it votes at, and what its vote IDs start with.
pub(crate) struct ClientPlan {
    /// The node's index (for the ledger).
    pub(crate) node: usize,
    /// Its HTTP address.
    pub(crate) address: SocketAddr,
    /// Prefix of the IDs it makes, ending in `-vote`: its IDs are `{prefix}-{n}`, which
    /// [`CLIENT_ID_MARK`] recognises.
    pub(crate) prefix: String,
}

/// Votes at one node until `stop`: mostly single votes, every fifth request a batch, every
/// seventh a retry of a vote another node acknowledged (same ID, same option). Survives the
/// node being killed: it reconnects until the node is back.
pub(crate) fn run_client(plan: &ClientPlan, ledger: &SharedLedger, stop: &AtomicBool) {
    let mut next_id = 0usize;
    let mut fresh = |count: usize| -> Vec<(String, usize)> {
        (0..count)
            .map(|_| {
                next_id += 1;
                (format!("{}-{next_id}", plan.prefix), next_id % 2)
            })
            .collect()
    };
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut client) = Client::connect(plan.address) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            round += 1;
            let votes = if round % 5 == 0 {
                fresh(CLIENT_BATCH_VOTES)
            } else if round % 7 == 3 {
                retry_candidate(plan.node, round, ledger).map_or_else(|| fresh(1), |v| vec![v])
            } else {
                fresh(1)
            };
            if send_and_record(&mut client, plan.node, &votes, ledger).is_err() {
                break; // the connection failed: reconnect
            }
            std::thread::sleep(CLIENT_PAUSE);
        }
    }
}

/// A client's vote some other node acknowledged, to retry here with its original option. Only
/// client votes (IDs with a client prefix): the test's own probes must reach a node only when
/// the test sends them, or a retry at the cut-off node would look like a vote crossing the cut.
fn retry_candidate(node: usize, round: usize, ledger: &SharedLedger) -> Option<(String, usize)> {
    let ledger = ledger.lock().expect("ledger lock");
    let others = ledger.acknowledged_at.len();
    let other = (node + 1 + round % (others - 1)) % others;
    let id = ledger.acknowledged_at[other]
        .iter()
        .rev()
        .find(|id| id.contains(CLIENT_ID_MARK))?;
    Some((id.clone(), ledger.sent[id]))
}

/// What every client-made vote ID contains (see [`ClientPlan::prefix`]).
const CLIENT_ID_MARK: &str = "-vote-";

/// Sends `votes` (one as a single vote, several as a batch) and records the answers.
pub(crate) fn send_and_record(
    client: &mut Client,
    node: usize,
    votes: &[(String, usize)],
    ledger: &SharedLedger,
) -> Result<Vec<Answer>, std::io::Error> {
    {
        let mut ledger = ledger.lock().expect("ledger lock");
        for (id, option) in votes {
            ledger.sending(id, *option);
        }
    }
    let mut unexpected = Vec::new();
    let answers = match votes {
        [(id, option)] => send_vote(client, id, *option, &mut unexpected).map(|a| vec![a]),
        _ => send_batch(client, votes, &mut unexpected),
    };
    let mut ledger = ledger.lock().expect("ledger lock");
    ledger.unexpected.extend(unexpected);
    let answers = answers?;
    for ((id, _), answer) in votes.iter().zip(&answers) {
        if *answer != Answer::Unacknowledged {
            ledger.acknowledge(node, id);
        }
    }
    Ok(answers)
}
