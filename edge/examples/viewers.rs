//! Opens many SSE viewers of one poll and reports when every one of them has seen each new
//! total: the client side of `scripts/bench-viewers.sh` (issue 23's viewers per edge).
//!
//! `viewers HOST:PORT POLL COUNT SOURCE_IP` opens COUNT connections to HOST:PORT from
//! SOURCE_IP (any address in 127.0.0.0/8, so several processes can each hold up to ~19,000
//! sockets without running out of ports or of open files), each `GET /v1/polls/POLL/stream`,
//! and keeps reading. It prints `open N` once N streams answered 200, then a line
//! `seen UNIX_MS TOTAL` whenever the lowest total any of its viewers has seen rises (so the
//! time the last viewer saw a vote's effect), and `lost N` if streams end. It exits after
//! `VIEWERS_SECONDS` (default 600), or when killed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connections being opened at once.
const CONNECTING_MAX: usize = 256;

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The last `"total":N` in `text`.
fn last_total(text: &str) -> Option<i64> {
    let at = text.rfind("\"total\":")?;
    let digits: String = text[at + 8..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}

async fn viewer(
    target: std::net::SocketAddr,
    source: std::net::IpAddr,
    request: Rc<String>,
    total: Rc<Cell<i64>>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), String> {
    let mut permit = Some(permit);
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(std::net::SocketAddr::new(source, 0))
        .map_err(|e| e.to_string())?;
    let mut stream = socket.connect(target).await.map_err(|e| e.to_string())?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buffer = vec![0u8; 4096];
    let mut carried = String::new();
    let mut answered = false;
    loop {
        let read = stream.read(&mut buffer).await.map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("closed".into());
        }
        carried.push_str(&String::from_utf8_lossy(&buffer[..read]));
        if !answered {
            if !carried.starts_with("HTTP/1.1 200") {
                return Err(carried.lines().next().unwrap_or("").to_owned());
            }
            answered = true;
            total.set(-1);
            // Answered: the next connection may open.
            permit.take();
        }
        if let Some(seen) = last_total(&carried) {
            total.set(seen);
        }
        // Keep only an unfinished tail.
        if let Some(end) = carried.rfind("\n\n") {
            carried.drain(..end + 2);
        }
    }
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let [_, target, poll, count, source] = args.as_slice() else {
        return Err("usage: viewers HOST:PORT POLL COUNT SOURCE_IP".into());
    };
    let target: std::net::SocketAddr = target.parse().map_err(|e| format!("{target}: {e}"))?;
    let source: std::net::IpAddr = source.parse().map_err(|e| format!("{source}: {e}"))?;
    let count: usize = count.parse().map_err(|e| format!("{count}: {e}"))?;
    let seconds: u64 = std::env::var("VIEWERS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let request = Rc::new(format!(
        "GET /v1/polls/{poll}/stream HTTP/1.1\r\nhost: {target}\r\naccept: text/event-stream\r\n\r\n"
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        // -2: not connected yet; -1: answered, no results yet; else the last total seen.
        let totals: Vec<Rc<Cell<i64>>> = (0..count).map(|_| Rc::new(Cell::new(-2))).collect();
        let lost = Rc::new(Cell::new(0usize));
        let connecting = std::sync::Arc::new(tokio::sync::Semaphore::new(CONNECTING_MAX));
        for total in &totals {
            let Ok(permit) = connecting.clone().acquire_owned().await else {
                break;
            };
            let (request, total, lost) = (request.clone(), total.clone(), lost.clone());
            tokio::task::spawn_local(async move {
                // The permit is held until the stream answers or fails.
                if let Err(why) = viewer(target, source, request, total.clone(), permit).await {
                    if lost.get() == 0 {
                        eprintln!("viewer ended: {why}");
                    }
                    lost.set(lost.get() + 1);
                    // Counted as lost, not as the slowest viewer.
                    total.set(i64::MAX);
                }
            });
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        let (mut said_open, mut said_min, mut said_lost) = (false, i64::MIN, 0);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            let open = totals
                .iter()
                .filter(|t| (-1..i64::MAX).contains(&t.get()))
                .count();
            if !said_open && open + lost.get() == count {
                println!("open {open}");
                said_open = true;
            }
            let min = totals.iter().map(|t| t.get()).min().unwrap_or(0);
            if said_open && min > said_min {
                println!("seen {} {min}", unix_ms());
                said_min = min;
            }
            if lost.get() != said_lost {
                said_lost = lost.get();
                println!("lost {said_lost}");
            }
        }
    });
    Ok(())
}
