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
#[path = "cluster/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "cluster/single.rs"]
mod single;

use std::collections::HashSet;
use std::net::SocketAddr;

use http::Client;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use single::{Node, free_address as free_port, total};

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
    node.child.kill().unwrap(); // SIGKILL: no shutdown path runs
    node.child.wait().unwrap();
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
