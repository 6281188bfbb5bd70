//! Measures peer replication over QUIC on loopback (issue 4): how many records per second
//! one node replicates to a peer, the wire bytes per vote, how long a node that was down
//! takes to catch up, and how long a cut link takes to converge once healed.
//!
//! Method. Both nodes run in this process, on one tokio runtime, with the real peer stack
//! (`start_with_peers`: quinn, mutual TLS from `generate_dev_cluster`, the sync protocol).
//! Node A is MEMORY-ONLY (`MemoryStorage`: its log is never fsynced; it only sends). It is
//! loaded with VOTES votes through its router (postcard batches of 10,000). Then a fresh node
//! B with A as its only peer is started, and the clock runs from `start_with_peers` until B's
//! `tally_peer_records_received` for A reaches VOTES (and, separately, until B's results show
//! them). B runs twice: memory-only, and durable (`DirStorage`: every received record is
//! logged and fsynced, as in production). Three runs each; medians are printed.
//! Catch-up: durable B is stopped, A takes K more votes, B restarts on its directory; timed
//! until B holds them all (recovery of its log included, and shown apart). Heal: B reaches A
//! through a UDP proxy (`tests/kit/proxy.rs`) that is cut while A takes K votes and
//! healed after CUT_MS; timed from the heal until B holds them all.
//! Where the time goes: the same records, without the node around them, through each stage
//! alone — A's replica handing out missing records, wire encoding, decoding, B's replica
//! applying them, and the encoded frames over a bare QUIC connection with the peer settings.
//!
//! `cargo run --release -p tally --example replication_bench -- [VOTES] [K] [CUT_MS]`
//! (defaults 2,000,000, 200,000 and 5,000).

#[path = "../tests/kit/proxy.rs"]
mod proxy;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use tally::certs::{ClusterFiles, generate_dev_cluster};
use tally_core::wire::{self, PeerMessage};
use tally_core::{
    ActorId, NodeId, OptionIndex, OptionName, PollId, PollSpec, PollWindow, Replica, UnixMillis,
    VoteId,
};
use tally_node::config::{Config, PeerEntry, TlsFiles};
use tally_node::http::{BinaryBatch, BinaryVote, POSTCARD_MEDIA_TYPE};
use tally_node::metrics::PeerMetrics;
use tally_node::peer::transport::{PeerSocket, endpoint, read_frame, write_frame};
use tally_node::storage::{DirStorage, MemoryStorage, Storage};
use tally_node::{Started, SystemClock, WalExecutor};
use tower::ServiceExt;

type Error = Box<dyn std::error::Error>;
type SendError = Box<dyn std::error::Error + Send + Sync>;

/// Votes per request while loading node A.
const LOAD_BATCH_VOTES: usize = 10_000;
/// Runs per measurement; the median is reported.
const RUNS: usize = 3;
/// How often progress is polled.
const POLL: Duration = Duration::from_millis(1);
/// Longest any measured wait may take.
const WAIT_MAX: Duration = Duration::from_secs(120);
/// Records per sync round (the node's default `sync_records_per_round_max`).
const ROUND_RECORDS: usize = 65_536;

const A: &str = "node-a";
const B: &str = "node-b";

fn main() -> Result<(), Error> {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.replace('_', "").parse::<usize>());
    let votes = args.next().transpose()?.unwrap_or(2_000_000);
    let extra = args.next().transpose()?.unwrap_or(200_000);
    let cut_ms = args.next().transpose()?.unwrap_or(5_000) as u64;
    let runtime = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let certs = generate_dev_cluster(&dir.path().join("certs"), &[node(A), node(B)])?;
    println!(
        "replication bench: {votes} votes, K = {extra}, cut {cut_ms} ms; node A is MEMORY-ONLY"
    );
    runtime.block_on(async {
        let a_socket = UdpSocket::bind("127.0.0.1:0")?;
        let a_address = a_socket.local_addr()?;
        let a = start_node(&config_a(&certs, a_address), MemoryStorage::new(), a_socket)?;
        let mut ids = IdStream::default();
        load(&a, &mut ids, votes).await?;
        full_sync(&certs, a_address, votes, dir.path()).await?;
        catch_up(&a, &certs, a_address, &mut ids, votes, extra, dir.path()).await?;
        heal(
            &a,
            &certs,
            a_address,
            &mut ids,
            votes + RUNS * extra,
            extra,
            cut_ms,
        )
        .await?;
        a.stop().await?;
        Ok::<(), Error>(())
    })?;
    runtime.block_on(breakdown(&certs, votes))
}

fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("valid node name")
}

fn config_a(certs: &ClusterFiles, peer_listen: SocketAddr) -> Config {
    Config {
        node_id: A.into(),
        memory_only: true,
        peer_listen: Some(peer_listen),
        tls: Some(TlsFiles::in_dir(&certs.dir, A)),
        ..Config::default()
    }
}

fn config_b(certs: &ClusterFiles, peer_listen: SocketAddr, a: SocketAddr, data: &Path) -> Config {
    Config {
        node_id: B.into(),
        data_dir: data.to_owned(),
        peer_listen: Some(peer_listen),
        peers: vec![PeerEntry {
            id: A.into(),
            address: a.into(),
        }],
        tls: Some(TlsFiles::in_dir(&certs.dir, B)),
        catch_up_timeout_ms: WAIT_MAX.as_millis() as u64,
        ..Config::default()
    }
}

fn start_node<S: Storage + Clone + 'static>(
    config: &Config,
    storage: S,
    socket: UdpSocket,
) -> Result<Started, Error> {
    let seed = u64::from(config.node_id.len() as u32) ^ 0x5eed;
    Ok(tally_node::start_with_peers(
        config,
        storage,
        Arc::new(SystemClock),
        seed,
        WalExecutor::DedicatedThread,
        Some(PeerSocket::Udp(socket)),
        None,
    )?)
}

/// Random-looking distinct vote IDs (splitmix64 over a counter).
#[derive(Default)]
struct IdStream(u64);

impl IdStream {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_id(&mut self) -> u128 {
        (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
    }
}

/// Casts `votes` new votes at `node` through its router.
async fn load(node: &Started, ids: &mut IdStream, votes: usize) -> Result<(), Error> {
    let started = Instant::now();
    for batch_start in (0..votes).step_by(LOAD_BATCH_VOTES) {
        let count = LOAD_BATCH_VOTES.min(votes - batch_start);
        let batch = BinaryBatch {
            votes: (0..count)
                .map(|i| BinaryVote {
                    option: (i % 2) as u8,
                    vote_id: ids.next_id().to_be_bytes(),
                })
                .collect(),
        };
        let request = Request::post("/v1/polls/superbowl/votes/batch")
            .header("content-type", POSTCARD_MEDIA_TYPE)
            .body(Body::from(postcard::to_allocvec(&batch)?))?;
        let response = node.router.clone().oneshot(request).await?;
        if !response.status().is_success() {
            return Err(format!("batch refused: {}", response.status()).into());
        }
    }
    println!(
        "  A took {votes} votes in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Records B holds from A, and frame bytes B received from A.
fn received_from_a(b: &Started) -> (u64, u64) {
    let labels = PeerMetrics::labels(A);
    let peers = &b.handle.metrics.peers;
    (
        peers.records_received.get_or_create(&labels).get(),
        peers.bytes_received.get_or_create(&labels).get(),
    )
}

/// The displayed total: the counter fast path, which a peer's counter push raises before
/// the records themselves arrive.
fn results_total(node: &Started) -> i64 {
    let results = node.handle.results.borrow().clone();
    results.polls.values().map(|p| p.results.total).sum()
}

/// Records held, every actor's, as of the last results snapshot.
fn records_held(node: &Started) -> u64 {
    let results = node.handle.results.borrow().clone();
    results
        .polls
        .values()
        .flat_map(|p| p.results.includes.iter().map(|i| i.records))
        .sum()
}

/// Waits until B has received `records` records from A (in total, since it started).
async fn until_received(b: &Started, records: u64) -> Result<(), Error> {
    let started = Instant::now();
    while received_from_a(b).0 < records {
        if started.elapsed() > WAIT_MAX {
            return Err(format!("B holds {:?} of {records} records", received_from_a(b)).into());
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One full sync of a fresh B: (seconds until it holds every record, until its displayed
/// total shows them, wire bytes per record).
async fn one_full_sync<S: Storage + Clone + 'static>(
    certs: &ClusterFiles,
    a: SocketAddr,
    votes: usize,
    storage: S,
    data: &Path,
) -> Result<(f64, f64, f64), Error> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let config = config_b(certs, socket.local_addr()?, a, data);
    let started = Instant::now();
    let b = start_node(&config, storage, socket)?;
    let mut visible = None;
    while received_from_a(&b).0 < votes as u64 {
        if visible.is_none() && results_total(&b) >= votes as i64 {
            visible = Some(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > WAIT_MAX {
            return Err(format!("B holds {:?} of {votes} records", received_from_a(&b)).into());
        }
        tokio::time::sleep(POLL).await;
    }
    let held = started.elapsed().as_secs_f64();
    let visible = visible.unwrap_or(held);
    let bytes = received_from_a(&b).1 as f64 / votes as f64;
    b.stop().await?;
    Ok((held, visible, bytes))
}

async fn full_sync(
    certs: &ClusterFiles,
    a: SocketAddr,
    votes: usize,
    dir: &Path,
) -> Result<(), Error> {
    for durable in [false, true] {
        let mut runs = Vec::new();
        for run in 0..RUNS {
            let data = dir.join(format!("b-full-{durable}-{run}"));
            let result = if durable {
                one_full_sync(certs, a, votes, DirStorage::open(&data)?, &data).await?
            } else {
                one_full_sync(certs, a, votes, MemoryStorage::new(), &data).await?
            };
            println!(
                "  run {run}: B ({}) held {votes} records after {:.3} s ({:.0} records/s), its displayed total after {:.3} s, {:.2} wire bytes/record",
                if durable { "durable" } else { "memory-only" },
                result.0,
                votes as f64 / result.0,
                result.1,
                result.2
            );
            runs.push(result);
        }
        let held = median(runs.iter().map(|r| r.0).collect());
        println!(
            "full sync, B {}: median {:.3} s = {:.0} records/s (target 1,000,000: {:.2}x); its displayed total (counter push) reached them after {:.3} s; {:.2} wire bytes/vote",
            if durable {
                "durable (DirStorage, fsync)"
            } else {
                "memory-only"
            },
            held,
            votes as f64 / held,
            votes as f64 / held / 1e6,
            median(runs.iter().map(|r| r.1).collect()),
            median(runs.iter().map(|r| r.2).collect()),
        );
    }
    Ok(())
}

/// Durable B syncs everything, stops; A takes `extra` votes; B restarts on its directory.
async fn catch_up(
    a: &Started,
    certs: &ClusterFiles,
    a_address: SocketAddr,
    ids: &mut IdStream,
    votes: usize,
    extra: usize,
    dir: &Path,
) -> Result<(), Error> {
    let data = dir.join("b-catch-up");
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let b_address = socket.local_addr()?;
    let config = config_b(certs, b_address, a_address, &data);
    let b = start_node(&config, DirStorage::open(&data)?, socket)?;
    until_received(&b, votes as u64).await?;
    b.stop().await?;
    let mut held_total = votes;
    let (mut recoveries, mut catch_ups) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        load(a, ids, extra).await?;
        held_total += extra;
        let socket = rebind(b_address).await?;
        let started = Instant::now();
        let b = start_node(&config, DirStorage::open(&data)?, socket)?;
        let recovered = started.elapsed().as_secs_f64();
        let held_at_start = records_held(&b);
        if held_at_start != (held_total - extra) as u64 {
            return Err(format!(
                "B recovered {held_at_start} of {} votes",
                held_total - extra
            )
            .into());
        }
        until_received(&b, extra as u64).await?;
        let caught_up = started.elapsed().as_secs_f64();
        println!(
            "  run {run}: B restarted holding {} records: log recovered in {recovered:.3} s, the {extra} it missed held {caught_up:.3} s after the restart",
            held_total - extra
        );
        recoveries.push(recovered);
        catch_ups.push(caught_up);
        b.stop().await?;
    }
    println!(
        "catch-up of a durable node that was down while {extra} votes arrived: median {:.3} s from restart to holding them (log recovery {:.3} s of it)",
        median(catch_ups),
        median(recoveries)
    );
    Ok(())
}

/// Binds `address` again once the stopped node's endpoint has let it go (quinn holds the
/// socket until its closed connections have drained).
async fn rebind(address: SocketAddr) -> Result<UdpSocket, Error> {
    let started = Instant::now();
    loop {
        match UdpSocket::bind(address) {
            Ok(socket) => return Ok(socket),
            Err(error) if started.elapsed() > WAIT_MAX => return Err(error.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// B (memory-only) reaches A through a proxy; the proxy is cut while A takes `extra` votes,
/// and healed `cut_ms` after the cut.
async fn heal(
    a: &Started,
    certs: &ClusterFiles,
    a_address: SocketAddr,
    ids: &mut IdStream,
    held: usize,
    extra: usize,
    cut_ms: u64,
) -> Result<(), Error> {
    let proxy = proxy::UdpProxy::start(a_address)?;
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let config = config_b(
        certs,
        socket.local_addr()?,
        proxy.address(),
        Path::new("unused"),
    );
    let b = start_node(&config, MemoryStorage::new(), socket)?;
    until_received(&b, held as u64).await?;
    let mut heals = Vec::new();
    for run in 0..RUNS {
        let before = received_from_a(&b).0;
        proxy.cut();
        let cut_at = Instant::now();
        load(a, ids, extra).await?;
        tokio::time::sleep(Duration::from_millis(cut_ms).saturating_sub(cut_at.elapsed())).await;
        proxy.heal();
        let healed_at = Instant::now();
        until_received(&b, before + extra as u64).await?;
        let converged = healed_at.elapsed().as_secs_f64();
        println!(
            "  run {run}: cut {cut_ms} ms while A took {extra} votes; B held them {converged:.3} s after the heal (proxy dropped {} datagrams so far)",
            proxy.counts().1
        );
        heals.push(converged);
    }
    println!(
        "convergence after a {cut_ms} ms cut during which A took {extra} votes: median {:.3} s from the heal",
        median(heals)
    );
    b.stop().await?;
    Ok(())
}

// ---------------------------------------------------------------- where the time goes

fn poll_spec() -> Result<PollSpec, Error> {
    let options = vec![OptionName::new("green")?, OptionName::new("blue")?];
    Ok(PollSpec::new(
        PollId::new("superbowl")?,
        options,
        PollWindow::open_from(UnixMillis(0)),
    )?)
}

/// A replica of actor `name` holding the poll and `votes` of its own votes (30 seconds' worth).
fn source_replica(votes: usize) -> Result<Replica, Error> {
    let mut replica = Replica::new(
        ActorId {
            node: node(A),
            incarnation: 1,
        },
        [1, 2, 3, 4],
    );
    replica.upsert_poll(poll_spec()?)?;
    let poll = PollId::new("superbowl")?;
    let mut ids = IdStream::default();
    for i in 0..votes {
        let now = UnixMillis((i * 30_000 / votes.max(1)) as u64);
        replica.accept_local(
            &poll,
            OptionIndex((i % 2) as u8),
            VoteId(ids.next_id()),
            now,
        )?;
        if i % 4_096 == 4_095 || i + 1 == votes {
            for batch in replica.take_unlogged() {
                replica.mark_durable(batch.poll(), batch.last_seq());
            }
        }
    }
    Ok(replica)
}

/// Seconds spent per stage, for `votes` records.
#[derive(Default)]
struct Stages {
    hand_out: f64,
    encode: f64,
    decode: f64,
    apply: f64,
    frames: Vec<Vec<Vec<u8>>>,
}

/// Runs the records through the sync stages without a node: A hands out what B lacks (by
/// B's vector, a round at a time), encodes; B decodes and applies.
fn stages(source: &Replica, votes: usize) -> Result<Stages, Error> {
    let poll = PollId::new("superbowl")?;
    let mut sink = Replica::new(
        ActorId {
            node: node(B),
            incarnation: 1,
        },
        [5, 6, 7, 8],
    );
    sink.upsert_poll(poll_spec()?)?;
    let mut stages = Stages::default();
    loop {
        let theirs = sink.version_vector(&poll).unwrap_or_default();
        let clock = Instant::now();
        let batches = source.missing_records(&poll, &theirs, ROUND_RECORDS);
        stages.hand_out += clock.elapsed().as_secs_f64();
        if batches.is_empty() {
            break;
        }
        let clock = Instant::now();
        let frames: Vec<Vec<u8>> = batches
            .into_iter()
            .map(|b| wire::encode(&PeerMessage::Records(b)))
            .collect();
        stages.encode += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        let decoded: Vec<PeerMessage> = frames
            .iter()
            .map(|f| wire::decode(f))
            .collect::<Result<_, _>>()?;
        stages.decode += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        for message in decoded {
            if let PeerMessage::Records(batch) = message {
                sink.apply_records(&batch)?;
            }
        }
        stages.apply += clock.elapsed().as_secs_f64();
        stages.frames.push(frames);
    }
    let held = sink.version_vector(&poll).map_or(0, |v| v.total());
    if held != votes as u64 {
        return Err(format!("the sink holds {held} of {votes} records").into());
    }
    Ok(stages)
}

/// Sends `rounds` of frames over a bare QUIC connection with the peer settings, one
/// bidirectional stream per round as the protocol does; returns (seconds, UDP payload bytes
/// the receiving side got: QUIC packet overhead included).
async fn quic_transfer(certs: &ClusterFiles, rounds: &[Vec<Vec<u8>>]) -> Result<(f64, u64), Error> {
    let server = endpoint(
        PeerSocket::Udp(UdpSocket::bind("127.0.0.1:0")?),
        &certs.tls(&node(A))?,
        1,
    )?;
    let client = endpoint(
        PeerSocket::Udp(UdpSocket::bind("127.0.0.1:0")?),
        &certs.tls(&node(B))?,
        2,
    )?;
    let address = server.local_addr()?;
    let serving = tokio::spawn({
        let rounds = rounds.to_vec();
        async move {
            let connection = server.accept().await.ok_or("no connection")?.await?;
            for frames in &rounds {
                let (mut send, mut recv) = connection.accept_bi().await?;
                let mut request = Vec::new();
                while read_frame(&mut recv, &mut request).await?.is_some() {}
                for frame in frames {
                    write_frame(&mut send, frame).await?;
                }
                send.finish()?;
            }
            connection.closed().await;
            Ok::<(), SendError>(())
        }
    });
    let connection = client.connect(address, A)?.await?;
    let started = Instant::now();
    let mut buffer = Vec::new();
    for _ in rounds {
        let (mut send, mut recv) = connection.open_bi().await?;
        write_frame(&mut send, b"vector").await?;
        send.finish()?;
        while read_frame(&mut recv, &mut buffer).await?.is_some() {}
    }
    let elapsed = started.elapsed().as_secs_f64();
    let udp_bytes = connection.stats().udp_rx.bytes;
    connection.close(0u32.into(), b"done");
    let _ = serving.await;
    Ok((elapsed, udp_bytes))
}

async fn breakdown(certs: &ClusterFiles, votes: usize) -> Result<(), Error> {
    println!(
        "where the time goes, {votes} records in rounds of {ROUND_RECORDS} (no node around them):"
    );
    let source = source_replica(votes)?;
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let stages = stages(&source, votes)?;
        let quic = quic_transfer(certs, &stages.frames).await?;
        runs.push((stages, quic));
    }
    let bytes: usize = runs[0].0.frames.iter().flatten().map(Vec::len).sum();
    let per_second = |seconds: f64| votes as f64 / seconds;
    let rows: [(&str, Vec<f64>); 5] = [
        (
            "A hands out missing records",
            runs.iter().map(|r| r.0.hand_out).collect(),
        ),
        ("wire encode", runs.iter().map(|r| r.0.encode).collect()),
        (
            "QUIC transfer of the frames (one stream per round)",
            runs.iter().map(|r| r.1.0).collect(),
        ),
        ("wire decode", runs.iter().map(|r| r.0.decode).collect()),
        (
            "B applies the records",
            runs.iter().map(|r| r.0.apply).collect(),
        ),
    ];
    let mut sum = 0.0;
    for (name, seconds) in rows {
        let seconds = median(seconds);
        sum += seconds;
        println!(
            "  {name:<52} {seconds:>7.3} s  {:>12.0} records/s",
            per_second(seconds)
        );
    }
    println!(
        "  {:<52} {sum:>7.3} s  {:>12.0} records/s",
        "sum (the protocol runs these one after another)",
        per_second(sum),
    );
    println!(
        "  {:.2} frame bytes/record; {:.2} UDP payload bytes/record with QUIC's packet overhead",
        bytes as f64 / votes as f64,
        runs[0].1.1 as f64 / votes as f64
    );
    Ok(())
}
