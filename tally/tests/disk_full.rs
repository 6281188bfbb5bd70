//! Disk full, on the real binary: `tally run` with its data directory on an 8 MiB tmpfs,
//! driven by `tally load` with postcard batches until the disk runs out (issue 28).
//!
//! - With a reserve, the node refuses votes (503) *before* the disk is full, turns not-ready
//!   and says why, shows exactly what it acknowledged, and serves votes again by itself once
//!   space is freed.
//! - Without a reserve (`disk_reserve_bytes = 0`), the load fills the disk and a write fails:
//!   the node turns unhealthy at once, hands every acknowledged vote to its peer, and exits
//!   non-zero; restarted with more room it holds every acknowledged vote, as does its peer.
//!
//! Method: each test mounts its own tmpfs (`mount -t tmpfs -o size=8m`), which needs root: as
//! a non-root user the tests say so and pass, unless `TALLY_REQUIRE_ROOT_TESTS` is set (CI
//! sets it: `.ci/run`), where they fail. The mount is unmounted when the test ends, however it
//! ends, after the nodes are killed. Nodes run from config files (`kit/node.rs`); votes
//! come from the `tally` binary's own `load` command, whose JSON report says what was
//! acknowledged.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic loudly

#[path = "kit/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "kit/load.rs"]
mod load;
#[path = "kit/node.rs"]
#[allow(dead_code)]
mod node;
#[path = "kit/process.rs"]
mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tally::certs::generate_dev_cluster;
use tally_core::NodeId;

use http::{metric, request_once};
use load::load;
use node::NodeSpec;
use process::{free_tcp_address, free_udp_address};

/// The tmpfs's size.
const TMPFS_BYTES: u64 = 8 << 20;
/// The reserve of the refusal test's node.
const RESERVE_BYTES: u64 = 1 << 20;
/// Longest wait for a node to become ready, or to exit.
const WAIT: Duration = Duration::from_secs(30);
/// Fast sync and results, so the tests see changes within a fraction of a second.
const FAST: &str = "sync_tick_ms = 50\nresults_tick_ms = 50\ncatch_up_timeout_ms = 2000\n";

/// A tmpfs mounted on a fresh directory; unmounted (lazily if busy) when dropped.
struct Tmpfs {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one, or returns `None` (after saying why) when not root and root is not
    /// required.
    fn mount(bytes: u64) -> Option<Tmpfs> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .expect("cannot run id");
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            assert!(
                std::env::var_os("TALLY_REQUIRE_ROOT_TESTS").is_none(),
                "TALLY_REQUIRE_ROOT_TESTS is set but the tests do not run as root: the \
                 disk-full tests need to mount a tmpfs"
            );
            eprintln!("SKIPPED: the disk-full tests mount a tmpfs and need root");
            return None;
        }
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("tmpfs");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("cannot run mount");
        assert!(status.success(), "mount -t tmpfs failed: {status}");
        Some(Tmpfs {
            path,
            _parent: parent,
        })
    }

    /// Free bytes for an unprivileged writer.
    fn free_bytes(&self) -> u64 {
        let stats = rustix::fs::statvfs(&self.path).unwrap();
        stats.f_bavail * stats.f_frsize
    }

    /// Writes a file of `bytes` zeros (or until the filesystem is full); returns its path.
    fn fill(&self, name: &str, bytes: u64) -> PathBuf {
        use std::io::Write;
        let path = self.path.join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        let mut written = 0u64;
        while written < bytes {
            let len = chunk.len().min((bytes - written) as usize);
            if file.write_all(&chunk[..len]).is_err() {
                break;
            }
            written += len as u64;
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Node `name` of a test, its config and log in `dir`; with `on`, its data directory is a
/// symbolic link to a directory on that tmpfs.
fn spec(
    name: &str,
    dir: &Path,
    certs: &tally::certs::ClusterFiles,
    on: Option<&Tmpfs>,
    extra: &str,
) -> NodeSpec {
    let files = certs.node(&NodeId::new(name).unwrap()).unwrap();
    let spec = NodeSpec {
        name: name.to_owned(),
        http: free_tcp_address(),
        peer_listen: free_udp_address(),
        peers: Vec::new(),
        dir: dir.join(name),
        ca: certs.ca_cert.clone(),
        cert: files.cert.clone(),
        key: files.key.clone(),
        extra: format!("{FAST}{extra}"),
    };
    if let Some(tmpfs) = on {
        let data = tmpfs.path.join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&spec.dir).unwrap();
        std::os::unix::fs::symlink(&data, spec.data_dir()).unwrap();
    }
    spec
}

fn total(address: SocketAddr) -> u64 {
    let results = http::get_json(address, "/v1/polls/superbowl/results").unwrap();
    results["total"].as_u64().unwrap()
}

/// Waits until `check` holds, or panics with `what` at the deadline.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_node_on_a_small_disk_refuses_before_the_disk_is_full_and_accepts_again_once_space_is_freed() {
    // Goal: refuse before the cliff, say why, show exactly what was acknowledged, come back
    // by itself. Method: an 8 MiB tmpfs holding 2 MiB of ballast and a node with a 1 MiB
    // reserve; 600,000 votes (~10 MB of log) until refusals start; then the ballast is
    // removed and 20,000 more votes are all counted, without a restart.
    let Some(tmpfs) = Tmpfs::mount(TMPFS_BYTES) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let certs =
        generate_dev_cluster(&dir.path().join("certs"), &[NodeId::new("a").unwrap()]).unwrap();
    let ballast = tmpfs.fill("ballast", 2 << 20);
    let reserve = format!("disk_reserve_bytes = {RESERVE_BYTES}\n");
    let a = spec("a", dir.path(), &certs, Some(&tmpfs), &reserve);
    let mut node = a.spawn();
    node.wait_ready(Instant::now() + WAIT);
    let address = a.http;

    let first = load(address, 600_000, "independent", 1);
    assert!(first.counted > 100_000, "only {} counted", first.counted);
    assert!(
        first.refused > 0 && first.status_503 > 0,
        "the disk never ran low: {} counted",
        first.counted
    );
    assert_eq!(
        first.check_passed,
        Some(true),
        "the node shows exactly what it acknowledged"
    );
    let free = tmpfs.free_bytes();
    assert!(
        free >= RESERVE_BYTES / 2,
        "refusals started only {free} bytes before the disk was full"
    );
    let (status, body) = request_once(address, "GET", "/readyz", "").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("disk_low: "), "{body}");
    let (status, _) = request_once(address, "GET", "/healthz", "").unwrap();
    assert_eq!(status, 200, "a node refusing for space is alive");
    let (_, metrics) = request_once(address, "GET", "/metrics", "").unwrap();
    assert_eq!(metric(&metrics, "tally_hold", "{hold=\"disk_low\"}"), 1.0);
    assert_eq!(
        metric(&metrics, "tally_disk_reserve_bytes", ""),
        RESERVE_BYTES as f64
    );
    let shown_free = metric(&metrics, "tally_disk_free_bytes", "");
    assert!(
        shown_free > 0.0 && shown_free < RESERVE_BYTES as f64,
        "{shown_free}"
    );
    assert!(
        node.log()
            .contains("less free space than disk_reserve_bytes")
    );

    std::fs::remove_file(ballast).unwrap();
    wait_until("ready again once space is freed", || {
        request_once(address, "GET", "/readyz", "").is_ok_and(|(status, _)| status == 200)
    });
    let second = load(address, 20_000, "independent", 2);
    assert_eq!((second.counted, second.refused), (20_000, 0));
    assert_eq!(second.check_passed, Some(true));
    assert_eq!(total(address), first.counted + second.counted);
    node.kill();
}

#[test]
fn a_node_whose_disk_fills_exits_non_zero_after_its_peer_holds_every_acknowledged_vote() {
    // Goal: no zombie: when a write fails the node turns unhealthy at once, its peer gets
    // every vote it acknowledged before it exits non-zero, and a restart with more room holds
    // them all. Method: node a on an 8 MiB tmpfs with 4 MiB of ballast and no reserve,
    // peered with b on an ordinary directory; votes to a until it exits; a watcher reads a's
    // /healthz meanwhile; then b's total, and a's after a restart without the ballast.
    let Some(tmpfs) = Tmpfs::mount(TMPFS_BYTES) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ids = [NodeId::new("a").unwrap(), NodeId::new("b").unwrap()];
    let certs = generate_dev_cluster(&dir.path().join("certs"), &ids).unwrap();
    let ballast = tmpfs.fill("ballast", 4 << 20);
    let mut a = spec(
        "a",
        dir.path(),
        &certs,
        Some(&tmpfs),
        "disk_reserve_bytes = 0\n",
    );
    let mut b = spec("b", dir.path(), &certs, None, "");
    a.peers = vec![("b".to_owned(), b.peer_listen)];
    b.peers = vec![("a".to_owned(), a.peer_listen)];
    let mut node_b = b.spawn();
    let mut node_a = a.spawn();
    node_a.wait_ready(Instant::now() + WAIT);
    node_b.wait_ready(Instant::now() + WAIT);

    let saw_unhealthy = Arc::new(AtomicBool::new(false));
    let stop_watching = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (saw, stop, address) = (saw_unhealthy.clone(), stop_watching.clone(), a.http);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok((503, body)) = request_once(address, "GET", "/healthz", "") {
                    saw.store(body.contains("log_failed"), Ordering::Relaxed);
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let report = load(a.http, 1_000_000, "off", 3);
    let status = node_a.wait_exit(Instant::now() + WAIT);
    stop_watching.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(!status.success(), "a node whose log failed exits non-zero");
    assert!(report.counted > 10_000, "only {} counted", report.counted);
    let log = node_a.log();
    assert!(log.contains("No space left on device"), "{log}");
    assert!(
        log.contains("every peer holds every record this node acknowledged"),
        "the node did not wait for its peer"
    );
    // The failed node's own pulls are refused by its engine; they must not end the session,
    // or the connection its peer pulls the hand-over on closes with them (under load the
    // peer then never finished a pull in the 5 s).
    let failed_at = log
        .find("the write-ahead log failed")
        .expect("the failure is logged");
    let handed_over = log[failed_at..]
        .find("every peer holds every record")
        .map_or(log.len(), |at| failed_at + at);
    assert!(
        !log[failed_at..handed_over].contains("peer session ended"),
        "a peer session ended during the hand-over: {}",
        &log[failed_at..handed_over]
    );
    assert!(
        saw_unhealthy.load(Ordering::Relaxed),
        "/healthz never answered 503 log_failed before the exit"
    );
    // Every acknowledged vote, and none refused (the failed group was cut off the log);
    // votes left without an answer when a stopped may have been counted or not.
    let acknowledged = report.counted;
    let held = acknowledged..=acknowledged + report.unknown;
    wait_until("b shows every vote a acknowledged", || {
        held.contains(&total(b.http))
    });

    std::fs::remove_file(ballast).unwrap();
    let mut node_a = a.spawn();
    node_a.wait_ready(Instant::now() + WAIT);
    let restarted = total(a.http);
    assert!(
        held.contains(&restarted),
        "a holds {restarted}, acknowledged {acknowledged}"
    );
    assert_eq!(restarted, total(b.http), "a and b agree");
    node_a.kill();
    node_b.kill();
}
