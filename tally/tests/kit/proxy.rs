//! A UDP proxy that the test can cut and heal: one node's QUIC traffic to one peer goes
//! through it, so a partition is "drop every datagram" and healing is "forward them again".
//!
//! One proxy carries one ordered pair (node → peer): it listens on its own port (the node's
//! `[[peers]]` address for that peer), forwards what arrives to the peer's real `peer_listen`
//! from one upstream socket of its own, and sends what comes back on that socket to the last
//! address that wrote to it, so replies route back. Bounded: two threads, one datagram
//! buffer each, no queue; it stops (and joins its threads) when dropped.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Largest datagram forwarded (QUIC's are at most ~1.5 KB; the UDP maximum is safe).
const DATAGRAM_BYTES_MAX: usize = 65_535;

/// How often the threads look at the stop flag while no datagram arrives.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

struct Shared {
    cut: AtomicBool,
    stop: AtomicBool,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    /// The node side's address: where replies go.
    client: Mutex<Option<SocketAddr>>,
}

/// A cuttable forwarder for one ordered pair of nodes.
pub(crate) struct UdpProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl UdpProxy {
    /// Listens on a fresh port of 127.0.0.1 and forwards to `target`.
    pub(crate) fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listen = UdpSocket::bind("127.0.0.1:0")?;
        let upstream = UdpSocket::bind("127.0.0.1:0")?;
        listen.set_read_timeout(Some(POLL_INTERVAL))?;
        upstream.set_read_timeout(Some(POLL_INTERVAL))?;
        let address = listen.local_addr()?;
        let shared = Arc::new(Shared {
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            client: Mutex::new(None),
        });
        let (listen_in, upstream_out) = (listen.try_clone()?, upstream.try_clone()?);
        let down = shared.clone();
        let towards_peer = std::thread::spawn(move || {
            relay(&listen_in, &down, |datagram, from| {
                *down.client.lock().expect("proxy lock") = Some(from);
                let _ = upstream_out.send_to(datagram, target);
            });
        });
        let up = shared.clone();
        let towards_node = std::thread::spawn(move || {
            relay(&upstream, &up, |datagram, from| {
                let client = *up.client.lock().expect("proxy lock");
                if let (true, Some(client)) = (from == target, client) {
                    let _ = listen.send_to(datagram, client);
                }
            });
        });
        Ok(Self {
            address,
            shared,
            threads: vec![towards_peer, towards_node],
        })
    }

    /// The address the node dials instead of the peer's.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Drops every datagram, both ways, until [`UdpProxy::heal`].
    pub(crate) fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
    }

    /// Forwards again.
    pub(crate) fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Datagrams forwarded and dropped so far (not every test binary reads them).
    #[allow(dead_code)]
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.shared.forwarded.load(Ordering::Relaxed),
            self.shared.dropped.load(Ordering::Relaxed),
        )
    }
}

/// Receives datagrams on `socket` until stopped, handing each to `forward` unless cut.
fn relay(socket: &UdpSocket, shared: &Shared, mut forward: impl FnMut(&[u8], SocketAddr)) {
    let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
    while !shared.stop.load(Ordering::Relaxed) {
        // Timeouts, and ICMP "port unreachable" reported while a node is down, are not fatal.
        let Ok((length, from)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        if shared.cut.load(Ordering::SeqCst) {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            shared.forwarded.fetch_add(1, Ordering::Relaxed);
            forward(&buffer[..length], from);
        }
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
