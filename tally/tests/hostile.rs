//! Hostile input against the real binary: malformed, truncated and deeply nested JSON, wrong
//! content types, giant bodies, invalid UTF-8, absurd vote IDs, unknown polls and options,
//! slowloris clients, two thousand idle connections and SSE subscribers that never read; the
//! connection deadlines (slowloris, silent, idle and slow-body connections closed, SSE not) on
//! a node with short ones; then the abuse controls (per-IP and per-voter rate limits, signed
//! vote tokens) on further nodes.
//!
//! Method: spawn `tally run` on 127.0.0.1 with a config file, cast a few real votes, throw
//! every hostile request at it over raw TCP, and check that each gets a 4xx (or the connection
//! is closed), that a well-behaved client is served throughout, that the node's resident memory
//! stays under a generous bound, and that the counted total is exactly what the real votes
//! made. No assertion depends on timing: waits are bounded polls for a condition.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic loudly

#[path = "kit/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "kit/process.rs"]
mod process;
#[path = "kit/single.rs"]
mod single;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::Client;
use tally_core::PollId;
use tally_node::http::abuse::sign_hmac_token;

/// Idle connections held open at once (the machine allows 20,000 descriptors).
const IDLE_CONNECTIONS_COUNT: usize = 2_000;
/// Slowloris connections that send half a request and stall.
const SLOWLORIS_CONNECTIONS_COUNT: usize = 100;
/// SSE subscribers that never read.
const UNREAD_SSE_COUNT: usize = 50;
/// Growth of the node's resident memory the hostile clients may cause, in bytes.
const RSS_GROWTH_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// The HMAC key of the token tests, as configured (hex); [`token_key`] is the same as bytes.
const TOKEN_KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f";
/// The header-read and body deadlines of the connection-deadline test, in milliseconds.
const SHORT_TIMEOUT_MS: u64 = 500;
/// Longest wait for the node to close a connection it must close (many deadlines' worth).
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// Connections that connect and send nothing in the connection-deadline test.
const SILENT_CONNECTIONS_COUNT: usize = 200;
/// The route the vote tests post to.
const VOTES: &str = "/v1/polls/superbowl/votes";

use process::free_tcp_address as free_port;
use single::{Node, total};

/// A durable node in a fresh directory, with `extra_config` appended to its config file.
fn start_node(extra_config: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let address = free_port();
    let config = dir.path().join("tally.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{address}\"\ndata_dir = \"{}\"\nadmin_token = \"hostile-admin\"\n\
             results_tick_ms = 10\n{extra_config}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let args: [&std::ffi::OsStr; 3] = ["run".as_ref(), "--config".as_ref(), config.as_os_str()];
    Node::start(args, address, Some(dir), Duration::from_secs(30))
}

/// Sends raw bytes on a fresh connection and returns the status, or `None` if the node closed
/// the connection without an answer.
fn raw(address: SocketAddr, request: &[u8]) -> Option<u16> {
    let text = raw_head(address, request);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok())
}

/// Sends raw bytes on a fresh connection and returns the answer's status line and headers
/// (empty if the node closed the connection without an answer).
fn raw_head(address: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The node may answer and close before reading a giant body: a failed write is fine.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buffer[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&answer).to_ascii_lowercase()
}

fn post(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-type: {content_type}\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Waits (bounded) until the results show `expected` votes, and returns what they show.
fn settled_total(address: SocketAddr, expected: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    while total(address) != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    total(address)
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn vote(client: &mut Client, id: &str) -> (u16, String) {
    let body = format!(r#"{{"option":"green","vote_id":"{id}"}}"#);
    client.request("POST", VOTES, &body).unwrap()
}

/// The token tests' HMAC key ([`TOKEN_KEY_HEX`]) as bytes.
fn token_key() -> Vec<u8> {
    (0u8..16).collect()
}

/// Milliseconds since the Unix epoch, as vote tokens state their expiry.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A token for `voter` on `superbowl`, signed with the configured key, valid for an hour.
fn valid_token(voter: &str) -> String {
    let poll = PollId::new("superbowl").unwrap();
    sign_hmac_token(&token_key(), &poll, voter, now_ms() + 3_600_000)
}

/// Waits until the node closes `stream` (panics naming `what` after [`CLOSE_WAIT`]), meanwhile
/// sending it one byte of `trickle` every 100 ms until the node answers, when given. Returns
/// what the node sent.
fn wait_closed(stream: &mut TcpStream, trickle: Option<u8>, what: &str) -> String {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + CLOSE_WAIT;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        assert!(
            Instant::now() < deadline,
            "{what}: still open after {CLOSE_WAIT:?}"
        );
        if let (Some(byte), true) = (trickle, received.is_empty()) {
            // A failed write means the node closed the connection: the read below sees it.
            let _ = stream.write_all(&[byte]);
        }
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break, // reset by the node: closed too
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// A hostile request: what it is, its bytes, and the statuses it may get (`None`: closed).
type Hostile = (&'static str, Vec<u8>, &'static [Option<u16>]);

/// Every hostile request of the list.
fn hostile_requests() -> Vec<Hostile> {
    let votes = VOTES;
    let batch = "/v1/polls/superbowl/votes/batch";
    let json = "application/json";
    let deep = format!("{}{}", "[".repeat(3_000), "]".repeat(3_000));
    let deep_batch = format!(r#"{{"votes":{deep}}}"#);
    let long_id = format!(r#"{{"option":"green","vote_id":"{}"}}"#, "x".repeat(200));
    let mut giant = format!(
        "POST {votes} HTTP/1.1\r\nhost: test\r\ncontent-type: {json}\r\n\
         content-length: 104857600\r\n\r\n"
    )
    .into_bytes();
    giant.extend_from_slice(&[b'{'; 64 * 1024]);
    vec![
        (
            "malformed JSON",
            post(votes, json, b"{option: green"),
            &[Some(400)],
        ),
        (
            "truncated JSON",
            post(votes, json, br#"{"option":"gre"#),
            &[Some(400)],
        ),
        (
            "wrong content type",
            post(votes, "text/plain", br#"{"option":"green","vote_id":"a"}"#),
            &[Some(415)],
        ),
        (
            "no content type",
            post(votes, "", br#"{"option":"green","vote_id":"a"}"#),
            &[Some(415)],
        ),
        ("giant declared body", giant, &[Some(413), None]),
        (
            "giant batch",
            post(batch, json, &vec![b' '; 3 * 1024 * 1024]),
            &[Some(413), None],
        ),
        (
            "deep nesting",
            post(votes, json, deep.as_bytes()),
            &[Some(400), Some(413)],
        ),
        (
            "deep nesting in a batch",
            post(batch, json, deep_batch.as_bytes()),
            &[Some(400)],
        ),
        (
            "invalid UTF-8",
            post(
                votes,
                json,
                b"{\"option\":\"gr\xff\xfeen\",\"vote_id\":\"a\"}",
            ),
            &[Some(400)],
        ),
        (
            "absurd vote ID",
            post(votes, json, long_id.as_bytes()),
            &[Some(422)],
        ),
        (
            "empty vote ID",
            post(votes, json, br#"{"option":"green","vote_id":""}"#),
            &[Some(422)],
        ),
        (
            "vote ID of the wrong type",
            post(votes, json, br#"{"option":"green","vote_id":7}"#),
            &[Some(400)],
        ),
        (
            "unknown poll",
            post(
                "/v1/polls/nope/votes",
                json,
                br#"{"option":"green","vote_id":"a"}"#,
            ),
            &[Some(404)],
        ),
        (
            "absurd poll name",
            post(
                &format!("/v1/polls/{}/votes", "p".repeat(5_000)),
                json,
                b"{}",
            ),
            &[Some(404), Some(414), Some(431), None],
        ),
        (
            "unknown option",
            post(votes, json, br#"{"option":"purple","vote_id":"a"}"#),
            &[Some(422)],
        ),
        (
            "garbage postcard batch",
            post(batch, "application/x-postcard", &[0xff; 64]),
            &[Some(400)],
        ),
        (
            "not HTTP",
            b"\x16\x03\x01\x00\xa5garbage\r\n\r\n".to_vec(),
            &[Some(400), None],
        ),
        (
            "admin without token",
            post(
                "/v1/admin/polls",
                json,
                br#"{"id":"x","options":["a","b"]}"#,
            ),
            &[Some(401)],
        ),
    ]
}

#[test]
fn hostile_clients_get_4xx_or_a_closed_connection_and_change_no_counted_vote() {
    // The longest header-read deadline: the slow and idle connections below must all still be
    // open while the node's memory is measured and the other clients are served (opening
    // thousands of them can take longer than the default 10 s on a loaded machine), and the
    // good client's keep-alive connection idles meanwhile. The deadlines themselves are tested
    // by `slowloris_silent_idle_and_slow_body_connections_are_closed_but_sse_streams_are_not`.
    let node = start_node("header_read_timeout_ms = 600000");
    let address = node.address;
    let mut good = Client::connect(address).unwrap();
    for i in 0..5 {
        assert_eq!(vote(&mut good, &format!("real-{i}")).0, 200);
    }
    assert_eq!(settled_total(address, 5), 5);
    let rss_before = rss_bytes(node.process.id());

    for (what, request, allowed) in hostile_requests() {
        let status = raw(address, &request);
        assert!(
            allowed.contains(&status),
            "{what}: got {status:?}, expected one of {allowed:?}"
        );
        assert_eq!(
            vote(&mut good, "real-0").0,
            200,
            "{what}: the good client is still served"
        );
    }

    // Slowloris: half a request each, never finished.
    let slow: Vec<TcpStream> = (0..SLOWLORIS_CONNECTIONS_COUNT)
        .map(|_| {
            let mut stream = TcpStream::connect(address).unwrap();
            stream
                .write_all(b"POST /v1/polls/superbowl/votes HTTP/1.1\r\nhost: slow\r\ncontent-le")
                .unwrap();
            stream
        })
        .collect();
    // Idle connections that never send a byte.
    let idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS_COUNT)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    // SSE subscribers that never read their stream.
    let unread: Vec<TcpStream> = (0..UNREAD_SSE_COUNT)
        .map(|_| {
            let mut stream = TcpStream::connect(address).unwrap();
            stream
                .write_all(b"GET /v1/polls/superbowl/stream HTTP/1.1\r\nhost: sse\r\n\r\n")
                .unwrap();
            stream
        })
        .collect();
    // While they all hang on, a new client is served, on a new connection too.
    let mut fresh = Client::connect(address).unwrap();
    for i in 5..10 {
        assert_eq!(vote(&mut fresh, &format!("real-{i}")).0, 200);
    }
    assert_eq!(vote(&mut good, "real-9").0, 200);
    let rss_during = rss_bytes(node.process.id());
    assert!(
        rss_during < rss_before + RSS_GROWTH_BYTES_MAX,
        "resident memory grew from {rss_before} to {rss_during} bytes"
    );
    drop((slow, idle, unread));

    assert_eq!(
        settled_total(address, 10),
        10,
        "exactly the ten real votes are counted: no hostile request counted or undid one"
    );
}

#[test]
fn slowloris_silent_idle_and_slow_body_connections_are_closed_but_sse_streams_are_not() {
    // Goal: the connection deadlines hold against the real binary: a client that trickles its
    // headers, hundreds that send nothing, a keep-alive connection left idle after an answer,
    // and a body that trickles in are each closed (the body with a 408 first), within a
    // bounded wait; an SSE stream open for several deadlines still flows; everyone else is
    // served meanwhile and only the real votes count. Method: 500 ms deadlines; each wait is
    // a bounded poll for the close, never a timing assertion.
    let node = start_node(&format!(
        "header_read_timeout_ms = {SHORT_TIMEOUT_MS}\nbody_read_timeout_ms = {SHORT_TIMEOUT_MS}\n\
         sse_tick_ms = 100"
    ));
    let address = node.address;
    let connect = || TcpStream::connect(address).unwrap();
    let mut slowloris = connect();
    slowloris
        .write_all(b"GET /v1/polls/superbowl/results HTTP/1.1\r\nhost: slow\r\nx-slow: ")
        .unwrap();
    let slowloris =
        std::thread::spawn(move || wait_closed(&mut slowloris, Some(b'a'), "slowloris"));
    let mut silent: Vec<TcpStream> = (0..SILENT_CONNECTIONS_COUNT).map(|_| connect()).collect();
    let mut idle = connect();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: idle\r\n\r\n")
        .unwrap();
    let mut slow_body = connect();
    slow_body
        .write_all(
            b"POST /v1/polls/superbowl/votes HTTP/1.1\r\nhost: slow\r\n\
              content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"option\":",
        )
        .unwrap();
    let slow_body =
        std::thread::spawn(move || wait_closed(&mut slow_body, Some(b' '), "slow body"));
    let mut sse = connect();
    sse.write_all(b"GET /v1/polls/superbowl/stream HTTP/1.1\r\nhost: sse\r\n\r\n")
        .unwrap();
    let sse_opened = Instant::now();
    assert_eq!(
        vote(&mut Client::connect(address).unwrap(), "during").0,
        200
    );

    let trickled = slowloris.join().unwrap();
    assert_eq!(trickled, "", "half a request head gets no answer");
    for (i, stream) in silent.iter_mut().enumerate() {
        assert_eq!(wait_closed(stream, None, &format!("silent #{i}")), "");
    }
    let answered = wait_closed(&mut idle, None, "idle keep-alive");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let refused = slow_body.join().unwrap();
    assert!(refused.starts_with("HTTP/1.1 408"), "{refused}");
    assert!(refused.contains("body_timeout"), "{refused}");

    // The stream has been open for several deadlines by now (each close above took one); it
    // must still be open and sending: drain what is buffered, then a fresh event must come.
    let deadlines = Duration::from_millis(4 * SHORT_TIMEOUT_MS);
    std::thread::sleep(deadlines.saturating_sub(sse_opened.elapsed()));
    sse.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buffer = [0u8; 64 * 1024];
    loop {
        match sse.read(&mut buffer) {
            Ok(0) => panic!("the SSE stream was closed"),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("the SSE stream failed: {e}"),
        }
    }
    sse.set_read_timeout(Some(CLOSE_WAIT)).unwrap();
    let fresh = sse.read(&mut buffer).unwrap();
    assert!(fresh > 0, "the SSE stream was closed");
    drop(sse);

    assert_eq!(vote(&mut Client::connect(address).unwrap(), "after").0, 200);
    assert_eq!(
        settled_total(address, 2),
        2,
        "only the two real votes count; the slow body counted nothing"
    );
}

#[test]
fn a_client_over_its_ip_rate_limit_gets_429_with_retry_after_and_counts_nothing() {
    // Goal: the per-IP limit refuses past its burst and the refused votes count nothing.
    // Method: one vote per second, burst 3; fire 30 distinct votes as fast as possible. Only
    // an upper bound that grows with the time actually taken is asserted.
    let node = start_node("rate_limit_per_ip_per_second = 1\nrate_limit_per_ip_burst = 3");
    let started = Instant::now();
    let mut client = Client::connect(node.address).unwrap();
    let (mut counted, mut limited) = (0i64, 0);
    for i in 0..30 {
        match vote(&mut client, &format!("limited-{i}")) {
            (200, _) => counted += 1,
            (429, body) => {
                assert!(body.contains("rate_limited"), "{body}");
                limited += 1;
            }
            (status, body) => panic!("unexpected {status}: {body}"),
        }
    }
    let elapsed_seconds = started.elapsed().as_secs() as i64;
    assert!(limited > 0, "no request was limited");
    let mut head = String::new();
    for i in 0..10 {
        let vote = format!(r#"{{"option":"green","vote_id":"head-{i}"}}"#);
        head = raw_head(
            node.address,
            &post(
                "/v1/polls/superbowl/votes",
                "application/json",
                vote.as_bytes(),
            ),
        );
        if head.starts_with("http/1.1 429") {
            break;
        }
        counted += 1;
    }
    assert!(
        head.contains("retry-after:"),
        "a 429 carries Retry-After: {head}"
    );
    assert!(
        counted <= 3 + elapsed_seconds + 1,
        "{counted} votes passed in {elapsed_seconds} s"
    );
    let response = raw(
        node.address,
        &post(
            "/v1/polls/superbowl/votes",
            "application/json",
            br#"{"option":"green","vote_id":"one-more"}"#,
        ),
    );
    assert!(matches!(response, Some(200 | 429)));
    let shown = settled_total(node.address, counted + i64::from(response == Some(200)));
    assert_eq!(
        shown,
        counted + i64::from(response == Some(200)),
        "limited votes counted nothing"
    );
}

#[test]
fn a_voter_over_its_rate_limit_gets_429_with_retry_after_and_other_voters_are_served() {
    // Goal: the per-voter limit, keyed by the token's voter, refuses past its burst with 429
    // and Retry-After and counts nothing, while another voter on the same connection (so the
    // same client IP) is served; the counted total is exactly the 200s that said `counted`.
    // Method: HMAC tokens, one vote per second per voter with a burst of 2, no per-IP limit;
    // alice sends 20 votes on one keep-alive connection as fast as it can, then bob votes.
    // Only an upper bound on alice's 200s that grows with the time taken is asserted.
    let node = start_node(&format!(
        "vote_token_hmac_key = \"{TOKEN_KEY_HEX}\"\n\
         rate_limit_per_voter_per_second = 1\nrate_limit_per_voter_burst = 2"
    ));
    let mut client = Client::connect(node.address).unwrap();
    let mut send = |voter: &str, vote_id: &str| {
        let token = format!("x-vote-token: {}\r\n", valid_token(voter));
        let body = format!(r#"{{"option":"blue","vote_id":"{vote_id}"}}"#);
        client
            .request_with_headers("POST", VOTES, &token, &body)
            .unwrap()
    };
    let started = Instant::now();
    let (mut passed, mut counted, mut limited) = (0i64, 0i64, 0);
    for i in 0..20 {
        match send("alice", &format!("alice-{i}")) {
            (200, _, body) => {
                passed += 1;
                counted += i64::from(body.contains(r#""status":"counted""#));
            }
            (429, head, body) => {
                assert!(
                    head.contains("retry-after:"),
                    "a 429 carries Retry-After: {head}"
                );
                assert!(body.contains("rate_limited"), "{body}");
                limited += 1;
            }
            (status, _, body) => panic!("unexpected {status}: {body}"),
        }
    }
    let elapsed_seconds = started.elapsed().as_secs() as i64;
    assert!(limited > 0, "alice was never limited");
    assert!(
        passed <= 2 + elapsed_seconds + 1,
        "{passed} of alice's votes passed in {elapsed_seconds} s"
    );
    assert_eq!(
        counted, 1,
        "alice is one voter: her first vote counts, the rest are duplicates"
    );
    let (status, _, body) = send("bob", "bob-0");
    assert_eq!(status, 200, "bob is not limited by alice: {body}");
    assert!(body.contains(r#""status":"counted""#), "{body}");
    counted += 1;
    assert_eq!(
        settled_total(node.address, counted),
        counted,
        "the counted total is what the 200s said; limited votes counted nothing"
    );
}

#[test]
fn with_signed_tokens_only_token_holders_vote_and_each_voter_counts_once() {
    // Goal: tokens are required and verified, and the voter, not the client's vote ID, is what
    // counts once. Method: an HMAC key in the config; tokens signed as the app's backend would.
    let node = start_node(&format!("vote_token_hmac_key = \"{TOKEN_KEY_HEX}\""));
    let key = token_key();
    let poll = PollId::new("superbowl").unwrap();
    let now_ms = now_ms();
    let hour_ms = 3_600_000;
    let send = |token: Option<&str>, vote_id: &str| {
        let body = format!(r#"{{"option":"blue","vote_id":"{vote_id}"}}"#);
        let token_header = token
            .map(|t| format!("x-vote-token: {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "POST /v1/polls/superbowl/votes HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\
             content-type: application/json\r\n{token_header}content-length: {}\r\n\r\n{body}",
            body.len()
        );
        raw(node.address, request.as_bytes())
    };
    let alice = valid_token("alice");
    let bob = valid_token("bob");
    let forged = sign_hmac_token(b"another key entirely", &poll, "mallory", now_ms + hour_ms);
    let expired = sign_hmac_token(&key, &poll, "carol", now_ms - hour_ms);
    let other_poll = sign_hmac_token(
        &key,
        &PollId::new("halftime").unwrap(),
        "dave",
        now_ms + hour_ms,
    );
    assert_eq!(send(None, "a"), Some(401), "no token");
    assert_eq!(send(Some(&forged), "b"), Some(401), "forged");
    assert_eq!(send(Some(&expired), "c"), Some(401), "expired");
    assert_eq!(
        send(Some(&other_poll), "d"),
        Some(401),
        "another poll's token"
    );
    assert_eq!(send(Some("garbage"), "e"), Some(401), "garbage");
    assert_eq!(send(Some(&alice), "f"), Some(200));
    assert_eq!(
        send(Some(&alice), "g"),
        Some(200),
        "answered, as a duplicate"
    );
    assert_eq!(send(Some(&bob), "f"), Some(200));
    let batch = post(
        "/v1/polls/superbowl/votes/batch",
        "application/json",
        br#"{"votes":[{"option":"green","vote_id":"x"}]}"#,
    );
    assert_eq!(
        raw(node.address, &batch),
        Some(401),
        "batches need the admin token"
    );
    assert_eq!(
        settled_total(node.address, 2),
        2,
        "alice and bob, once each"
    );
}

#[test]
fn with_ops_listen_metrics_and_admin_are_served_only_on_the_ops_address() {
    // Goal: `ops_listen` moves /metrics and /v1/admin/* off the public listener. Method: ask
    // both listeners for each kind of route.
    let ops = free_port();
    let node = start_node(&format!("ops_listen = \"{ops}\""));
    let get = |address, path: &str| {
        raw(
            address,
            format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").as_bytes(),
        )
    };
    let admin = |address| {
        let body = br#"{"id":"halftime","options":["a","b"]}"#;
        let mut request = post("/v1/admin/polls", "application/json", body);
        let at = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        request.splice(
            at..at,
            b"\r\nauthorization: Bearer hostile-admin".iter().copied(),
        );
        raw(address, &request)
    };
    assert_eq!(get(node.address, "/metrics"), Some(404));
    assert_eq!(admin(node.address), Some(404));
    assert_eq!(get(ops, "/metrics"), Some(200));
    assert_eq!(admin(ops), Some(201));
    assert_eq!(get(ops, "/v1/polls/superbowl/results"), Some(404));
    assert_eq!(get(node.address, "/v1/polls/superbowl/results"), Some(200));
    let vote = post(
        "/v1/polls/superbowl/votes",
        "application/json",
        br#"{"option":"green","vote_id":"o"}"#,
    );
    assert_eq!(raw(node.address, &vote), Some(200));
    assert_eq!(raw(ops, &vote), Some(404));
}
