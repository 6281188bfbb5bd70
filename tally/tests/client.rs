//! The Rust client (`tally_client`) against a real `tally` node made to misbehave.
//!
//! Method: a real `tally run --memory-only` process, and in front of it a small HTTP fault
//! proxy on 127.0.0.1 that decides per connection (the client opens one per attempt) whether
//! to pass the request through, answer 503 itself, or pass it through and then drop the
//! connection before the answer (the vote reaches the node, the answer is lost). Every test
//! checks what the node counted against what the client reported: every vote exactly once, and
//! the error the client surfaces says truthfully whether a vote may have been counted.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic loudly

#[path = "kit/http.rs"]
#[allow(dead_code)] // this test uses a subset of the shared client
mod http;
#[path = "kit/process.rs"]
mod process;
#[path = "kit/single.rs"]
mod single;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tally_client::live::Via;
use tally_client::{ClientConfig, TallyClient, VoteError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const POLL: &str = "superbowl";
/// Longest wait for the node to start.
const READY_WAIT: Duration = Duration::from_secs(20);

use process::free_tcp_address as free_address;
use single::Node;

/// A `tally run --memory-only` process, killed when dropped.
fn start_node() -> Node {
    let address = free_address();
    Node::start(
        ["run", "--memory-only", "--listen", &address.to_string()],
        address,
        None,
        READY_WAIT,
    )
}

/// The node's total once its results snapshot (refreshed every 100 ms results tick) has
/// caught up: the first reading equal to `expected` is confirmed three ticks later (so a
/// late double count would still show), or whatever it shows after five seconds.
fn total(node: &Node, expected: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let total = single::total(node.address);
        if total == expected {
            std::thread::sleep(Duration::from_millis(300));
            return single::total(node.address);
        }
        if Instant::now() >= deadline {
            return total;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the proxy does with one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Pass the request to the node and its answer back.
    Pass,
    /// Answer `503` with `Retry-After: 1` without asking the node (Tally's own shedding).
    Shed,
    /// Pass the request to the node, read its answer, and close without sending it.
    LoseAnswer,
    /// Pass the request and the answer through for this long, then cut the connection (a
    /// long-lived stream broken mid-way).
    PassFor(Duration),
}

/// Chooses the fault of connection number `n` (from 0) whose request head (request line and
/// headers, as sent) is the second argument.
type Plan = Arc<dyn Fn(usize, &str) -> Fault + Send + Sync>;

/// The fault proxy: its address, and how many connections it has seen.
struct Proxy {
    url: String,
    connections: Arc<AtomicUsize>,
}

async fn start_proxy(node: SocketAddr, plan: Plan) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let plan = plan.clone();
            tokio::spawn(async move {
                let _ = handle(client, node, n, plan).await;
            });
        }
    });
    Proxy { url, connections }
}

/// Reads one HTTP/1.1 message (head and Content-Length body) from `stream`, at most 1 MiB.
async fn read_message(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap_or(0));
            if bytes.len() >= end + 4 + length {
                return Ok(bytes);
            }
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 || bytes.len() > 1 << 20 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        bytes.extend_from_slice(&chunk[..read]);
    }
}

async fn handle(
    mut client: TcpStream,
    node: SocketAddr,
    n: usize,
    plan: Plan,
) -> std::io::Result<()> {
    let request = read_message(&mut client).await?;
    let text = String::from_utf8_lossy(&request).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    match plan(n, head) {
        Fault::Shed => {
            let body = r#"{"error":"overloaded","message":"shedding load"}"#;
            let answer = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                 retry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            client.write_all(answer.as_bytes()).await
        }
        Fault::LoseAnswer => {
            let mut upstream = TcpStream::connect(node).await?;
            upstream.write_all(&request).await?;
            let _answer = read_message(&mut upstream).await?;
            Ok(()) // dropped: the vote is in, the answer is lost
        }
        Fault::Pass => {
            let mut upstream = TcpStream::connect(node).await?;
            upstream.write_all(&request).await?;
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
            Ok(())
        }
        Fault::PassFor(duration) => {
            let mut upstream = TcpStream::connect(node).await?;
            upstream.write_all(&request).await?;
            let _ = tokio::time::timeout(
                duration,
                tokio::io::copy_bidirectional(&mut client, &mut upstream),
            )
            .await;
            Ok(())
        }
    }
}

fn client(urls: &[&str], deadline: Duration) -> TallyClient {
    let mut config = ClientConfig::new(urls).unwrap();
    config.deadline = deadline;
    config.attempt_timeout = Duration::from_secs(2);
    config.rng_seed = Some(7);
    TallyClient::new(config)
}

#[tokio::test]
async fn a_vote_whose_answers_are_lost_is_retried_with_the_same_id_and_counts_once() {
    let node = start_node();
    let plan: Plan = Arc::new(|n, _| {
        if n < 2 {
            Fault::LoseAnswer
        } else {
            Fault::Pass
        }
    });
    let proxy = start_proxy(node.address, plan).await;
    let receipt = client(&[&proxy.url], Duration::from_secs(10))
        .vote(POLL, "green")
        .await
        .unwrap();
    assert_eq!(receipt.attempts, 3, "{receipt:?}");
    assert!(
        !receipt.counted,
        "the first attempt counted it, so the third must be told `duplicate`: {receipt:?}"
    );
    assert_eq!(total(&node, 1), 1, "one vote, counted once");
}

#[tokio::test]
async fn shed_votes_wait_for_retry_after_and_then_count() {
    let node = start_node();
    let plan: Plan = Arc::new(|n, _| if n < 2 { Fault::Shed } else { Fault::Pass });
    let proxy = start_proxy(node.address, plan).await;
    let started = Instant::now();
    let receipt = client(&[&proxy.url], Duration::from_secs(10))
        .vote(POLL, "blue")
        .await
        .unwrap();
    assert!(receipt.counted && receipt.attempts == 3, "{receipt:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "two `Retry-After: 1` answers were not waited out"
    );
    assert_eq!(total(&node, 1), 1);
}

#[tokio::test]
async fn a_region_down_fails_over_to_the_next_one() {
    let node = start_node();
    let down = format!("http://{}", free_address());
    let up = format!("http://{}", node.address);
    let receipt = client(&[&down, &up], Duration::from_secs(10))
        .vote(POLL, "green")
        .await
        .unwrap();
    assert!(receipt.counted, "{receipt:?}");
    assert_eq!(receipt.endpoint, up);
    assert_eq!(receipt.attempts, 2);
    assert_eq!(total(&node, 1), 1);
}

#[tokio::test]
async fn refusals_are_final_and_say_the_vote_was_not_counted() {
    let node = start_node();
    let up = format!("http://{}", node.address);
    let tally = client(&[&up], Duration::from_secs(10));
    let error = tally.vote(POLL, "purple").await.unwrap_err();
    match &error {
        VoteError::Refused { status, code, .. } => {
            assert_eq!((*status, code.as_str()), (422, "unknown_option"), "{error}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!error.may_have_been_counted());
    let error = tally.vote("no-such-poll", "green").await.unwrap_err();
    assert!(
        matches!(error, VoteError::Refused { status: 404, .. }),
        "{error:?}"
    );
    assert_eq!(total(&node, 0), 0);
}

#[tokio::test]
async fn a_region_that_sheds_load_does_not_hold_up_the_failover_to_the_next() {
    // Goal: `Retry-After` benches the region that sent it, not the whole call. Method: the
    // nearest region always sheds with `Retry-After: 1`, the deadline is shorter than that;
    // the vote must still be counted, at once, by the next region.
    let node = start_node();
    let shedding = start_proxy(node.address, Arc::new(|_, _| Fault::Shed)).await;
    let up = format!("http://{}", node.address);
    let receipt = client(&[&shedding.url, &up], Duration::from_millis(800))
        .vote(POLL, "green")
        .await
        .unwrap();
    assert!(receipt.counted, "{receipt:?}");
    assert_eq!(
        (receipt.endpoint.as_str(), receipt.attempts),
        (up.as_str(), 2)
    );
    assert_eq!(total(&node, 1), 1);
}

#[tokio::test]
async fn a_refusal_after_a_lost_answer_says_the_vote_may_have_been_counted() {
    // Goal: a refusal only speaks for its own attempt. An earlier attempt whose answer was
    // lost may have been counted (region A took it; region B, not yet synced, refuses the
    // retry because the poll closed meanwhile), so the error must not say "not counted".
    // Method: the first answer is lost, the retry is refused (an unknown option here, the
    // refusal a real node can be made to give on demand); the client cannot know the first
    // attempt's fate and must say so.
    let node = start_node();
    let plan: Plan = Arc::new(|n, _| {
        if n == 0 {
            Fault::LoseAnswer
        } else {
            Fault::Pass
        }
    });
    let proxy = start_proxy(node.address, plan).await;
    let error = client(&[&proxy.url], Duration::from_secs(10))
        .vote(POLL, "purple")
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            VoteError::Refused {
                status: 422,
                may_have_been_counted: true,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.may_have_been_counted());
}

#[tokio::test]
async fn giving_up_tells_whether_the_vote_may_have_been_counted() {
    let node = start_node();
    // Every region down: nothing can have been counted.
    let down = format!("http://{}", free_address());
    let error = client(&[&down], Duration::from_millis(800))
        .vote(POLL, "green")
        .await
        .unwrap_err();
    assert!(matches!(error, VoteError::NotCounted { .. }), "{error:?}");
    // Every answer lost: the vote may have been counted, and a later retry with its ID says so.
    let plan: Plan = Arc::new(|_, _| Fault::LoseAnswer);
    let proxy = start_proxy(node.address, plan).await;
    let error = client(&[&proxy.url], Duration::from_millis(1_500))
        .vote(POLL, "green")
        .await
        .unwrap_err();
    let VoteError::Unknown {
        vote_id, attempts, ..
    } = &error
    else {
        panic!("expected an unknown outcome, got {error:?}");
    };
    assert!(error.may_have_been_counted() && *attempts >= 1);
    let up = format!("http://{}", node.address);
    let receipt = client(&[&up], Duration::from_secs(10))
        .vote_with_id(POLL, "green", vote_id)
        .await
        .unwrap();
    assert!(
        !receipt.counted,
        "the lost attempt had counted it: {receipt:?}"
    );
    assert_eq!(total(&node, 1), 1);
}

#[tokio::test]
async fn many_votes_through_random_faults_each_count_exactly_once() {
    // Goal: exactly once under a mix of every fault. Method: a seeded random fault per
    // connection (a third lost answers, a sixth sheds), 40 votes; all must end in receipts and
    // the node must count exactly 40.
    let seed: u64 = std::env::var("CLIENT_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    println!("fault seed {seed} (CLIENT_FAULT_SEED={seed} replays it)");
    let node = start_node();
    let rng = Arc::new(std::sync::Mutex::new(StdRng::seed_from_u64(seed)));
    let plan: Plan = Arc::new(move |_, _| {
        let roll: f64 = rng.lock().unwrap().random();
        if roll < 0.33 {
            Fault::LoseAnswer
        } else if roll < 0.5 {
            Fault::Shed
        } else {
            Fault::Pass
        }
    });
    let proxy = start_proxy(node.address, plan).await;
    let up = format!("http://{}", node.address);
    let tally = client(&[&proxy.url, &up], Duration::from_secs(30));
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..40 {
        let option = if i % 3 == 0 { "blue" } else { "green" };
        let receipt = tally.vote(POLL, option).await.unwrap();
        ids.insert(receipt.vote_id);
    }
    assert_eq!(ids.len(), 40);
    assert_eq!(total(&node, 40), 40, "every vote once, none twice");
    assert!(proxy.connections.load(Ordering::SeqCst) > 0);
}

#[tokio::test]
async fn live_results_come_over_sse_and_fall_back_to_polling_when_sse_is_refused() {
    let node = start_node();
    let up = format!("http://{}", node.address);
    let tally = client(&[&up], Duration::from_secs(10));
    let mut live = tally.live(POLL);
    let first = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.via, Via::Sse);
    tally.vote(POLL, "green").await.unwrap();
    loop {
        let update = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("no update after a vote")
            .unwrap();
        if update.results.total == 1 {
            assert_eq!(update.via, Via::Sse);
            break;
        }
    }
    drop(live);

    // A proxy that refuses event streams (as some corporate proxies do) but passes the rest.
    let plan: Plan = Arc::new(|_, head| {
        if head.contains("/stream ") {
            Fault::Shed
        } else {
            Fault::Pass
        }
    });
    let proxy = start_proxy(node.address, plan).await;
    let mut live = client(&[&proxy.url], Duration::from_secs(10)).live(POLL);
    let update = tokio::time::timeout(Duration::from_secs(20), live.next())
        .await
        .expect("no update by polling")
        .unwrap();
    assert_eq!(update.via, Via::Polling, "{update:?}");
    assert_eq!(update.results.total, 1);
}

#[tokio::test]
async fn a_broken_event_stream_is_resumed_with_last_event_id() {
    // Goal: SSE reconnects say where they left off. Method: the proxy cuts the first event
    // stream after a second; the client must reconnect by itself, sending the ID of the last
    // event it saw, and keep delivering updates.
    let node = start_node();
    let heads = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = heads.clone();
    let plan: Plan = Arc::new(move |_, head| {
        let mut heads = seen.lock().unwrap();
        heads.push(head.to_ascii_lowercase());
        let streams = heads.iter().filter(|h| h.contains("/stream ")).count();
        if head.contains("/stream ") && streams == 1 {
            Fault::PassFor(Duration::from_secs(1))
        } else {
            Fault::Pass
        }
    });
    let proxy = start_proxy(node.address, plan).await;
    let tally = client(&[&proxy.url], Duration::from_secs(10));
    let mut live = tally.live(POLL);
    let first = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.via, first.results.total), (Via::Sse, 0));
    // After the cut: a vote must still reach us, over a second stream.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut voted = false;
    loop {
        let resumed = {
            let heads = heads.lock().unwrap();
            heads.iter().filter(|h| h.contains("/stream ")).count() >= 2
        };
        if resumed && !voted {
            let up = format!("http://{}", node.address);
            client(&[&up], Duration::from_secs(10))
                .vote(POLL, "green")
                .await
                .unwrap();
            voted = true;
        }
        assert!(
            Instant::now() < deadline,
            "no resumed stream delivered the vote"
        );
        let Ok(Some(update)) = tokio::time::timeout(Duration::from_millis(500), live.next()).await
        else {
            continue;
        };
        if voted && update.results.total == 1 {
            assert_eq!(update.via, Via::Sse);
            break;
        }
    }
    let heads = heads.lock().unwrap();
    let streams: Vec<&String> = heads.iter().filter(|h| h.contains("/stream ")).collect();
    assert!(!streams[0].contains("last-event-id"), "{}", streams[0]);
    assert!(
        streams[1].contains(&format!("last-event-id: {}", first.results.as_of_ms)),
        "the reconnect did not send the last event's ID: {}",
        streams[1]
    );
}
