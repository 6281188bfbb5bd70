//! Crash test of the real binary: SIGKILL `tally run` while clients are voting, restart it on
//! the same data directory, and check that every acknowledged vote is counted and none twice.
//!
//! Method: eight client threads post votes with unique IDs over keep-alive connections and
//! record which were acknowledged. After the node has acknowledged a few thousand votes it is
//! killed with SIGKILL (no shutdown path runs). After a restart, every ID ever sent is sent
//! again: each acknowledged one must answer `duplicate` (it survived), unacknowledged ones may
//! answer either. Then the displayed total must equal the number of distinct IDs sent: each
//! counted exactly once, whatever the crash interrupted.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic loudly

/// The cluster test's HTTP client, shared rather than copied (this test uses a subset of it).
#[path = "kit/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "kit/process.rs"]
mod process;
#[path = "kit/single.rs"]
mod single;

use std::collections::HashSet;
use std::net::SocketAddr;

use http::Client;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use process::free_tcp_address as free_port;
use single::{Node, total};

/// A durable node on `data_dir`; killed when the test ends, however it ends.
fn start_node(data_dir: &std::path::Path, address: SocketAddr) -> Node {
    let listen = address.to_string();
    let args: [&std::ffi::OsStr; 5] = [
        "run".as_ref(),
        "--listen".as_ref(),
        listen.as_ref(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
    ];
    Node::start(args, address, None, Duration::from_secs(20))
}

fn vote_body(id: &str) -> String {
    format!(r#"{{"option":"green","vote_id":"{id}"}}"#)
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_vote_and_counts_none_twice() {
    let data_dir = tempfile::tempdir().unwrap();
    let address = free_port();
    let mut node = start_node(data_dir.path(), address);

    let sent = Arc::new(Mutex::new(Vec::<String>::new()));
    let acknowledged = Arc::new(Mutex::new(HashSet::<String>::new()));
    let acknowledged_count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|thread| {
            let (sent, acknowledged, count, stop) = (
                sent.clone(),
                acknowledged.clone(),
                acknowledged_count.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let Ok(mut client) = Client::connect(address) else {
                    return;
                };
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let id = format!("crash-{thread}-{i}");
                    sent.lock().unwrap().push(id.clone());
                    match client.request("POST", "/v1/polls/superbowl/votes", &vote_body(&id)) {
                        Ok((200, _)) => {
                            acknowledged.lock().unwrap().insert(id);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok((status, body)) => panic!("unexpected {status}: {body}"),
                        Err(_) => return, // the node died under us
                    }
                }
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged_count.load(Ordering::Relaxed) < 3_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    node.process.child().kill().unwrap(); // SIGKILL: no shutdown path runs
    node.process.child().wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    drop(node);
    let acknowledged = acknowledged.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 3_000,
        "only {} acknowledged",
        acknowledged.len()
    );

    let node = start_node(data_dir.path(), address);
    let before_retries = total(address);
    assert!(
        before_retries >= acknowledged.len() as i64,
        "after restart the total {before_retries} is below the {} acknowledged votes",
        acknowledged.len()
    );
    let mut client = Client::connect(node.address).unwrap();
    let mut survived_unacknowledged = 0i64;
    for id in &sent {
        let (status, body) = client
            .request("POST", "/v1/polls/superbowl/votes", &vote_body(id))
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let duplicate = body.contains(r#""status":"duplicate""#);
        if acknowledged.contains(id) {
            assert!(duplicate, "acknowledged vote {id} was lost: {body}");
        } else if duplicate {
            survived_unacknowledged += 1;
        }
    }
    assert_eq!(
        before_retries,
        acknowledged.len() as i64 + survived_unacknowledged,
        "the recovered total counts some vote twice or a phantom"
    );
    // Results are refreshed every results tick; give it a few.
    let deadline = Instant::now() + Duration::from_secs(5);
    while total(address) != sent.len() as i64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        total(address),
        sent.len() as i64,
        "each distinct ID counts once"
    );
}

/// Votes `count` new IDs `{prefix}-{i}` at `address`; every one must be counted.
fn vote_new(address: SocketAddr, prefix: &str, count: usize) -> Vec<String> {
    let mut client = Client::connect(address).unwrap();
    (0..count)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            let (status, body) = client
                .request("POST", "/v1/polls/superbowl/votes", &vote_body(&id))
                .unwrap();
            assert_eq!(status, 200, "{body}");
            assert!(body.contains(r#""status":"counted""#), "{body}");
            id
        })
        .collect()
}

#[test]
fn a_second_process_on_a_held_data_directory_refuses_and_the_first_loses_nothing() {
    // Goal: one process per data directory (issue 30). Method: a node holds a directory and
    // acknowledges votes; a second `tally run` on the same directory must exit non-zero at
    // once, naming the directory and the holder's pid, while the first keeps serving; after
    // SIGKILL of the holder a new process takes the directory at once and holds every vote.
    let data_dir = tempfile::tempdir().unwrap();
    let first_address = free_port();
    let mut first = start_node(data_dir.path(), first_address);
    let mut acknowledged = vote_new(first_address, "before", 300);

    let second_address = free_port();
    let mut second = process::tally();
    second
        .args(["run", "--listen", &second_address.to_string(), "--data-dir"])
        .arg(data_dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut second = process::Process::spawn(&mut second, "the second process");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.child().try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the second process is still running on a held data directory"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.child().stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "the second process exited with {status}");
    let dir = data_dir.path().display().to_string();
    for expected in [
        dir.as_str(),
        "in use by another process",
        &format!("pid {}", first.process.id()),
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing from: {stderr}"
        );
    }

    acknowledged.extend(vote_new(first_address, "after", 300));
    assert_eq!(
        settled_total(first_address, acknowledged.len()),
        acknowledged.len() as i64
    );
    first.process.child().kill().unwrap(); // SIGKILL: the OS releases its lock
    first.process.child().wait().unwrap();
    drop(first);

    let third = start_node(data_dir.path(), second_address);
    let mut client = Client::connect(third.address).unwrap();
    for id in &acknowledged {
        let (status, body) = client
            .request("POST", "/v1/polls/superbowl/votes", &vote_body(id))
            .unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains(r#""status":"duplicate""#),
            "{id} was lost: {body}"
        );
    }
    assert_eq!(
        settled_total(third.address, acknowledged.len()),
        acknowledged.len() as i64
    );
}

/// The node's total once it shows `expected` (results refresh every tick), or after 5 s.
fn settled_total(address: SocketAddr, expected: usize) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    while total(address) != expected as i64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    total(address)
}
