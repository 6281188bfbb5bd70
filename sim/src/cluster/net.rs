//! The node's I/O over turmoil: an axum [`Listener`](axum::serve::Listener) on a simulated TCP
//! listener, a quinn [`AsyncUdpSocket`](quinn::AsyncUdpSocket) on a simulated UDP socket, and
//! a [`Clock`] reading simulated time.
//!
//! What this promises: the node sees nothing but turmoil here, so every byte it sends and
//! every instant it reads is the simulation's (DESIGN.md §5). The UDP adapter is the one
//! DESIGN.md describes: always writable, `try_send_to` to send, `try_recv_from` plus a boxed
//! `readable()` future to receive.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use tally_core::UnixMillis;
use tally_node::Clock;

/// A turmoil TCP listener serving the node's HTTP API.
pub struct SimListener(pub turmoil::net::TcpListener);

impl axum::serve::Listener for SimListener {
    type Io = turmoil::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                // As axum's TCP listener does: a failed accept is retried after a pause.
                Err(error) => {
                    tracing::debug!(%error, "simulated accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

type Readable = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// A turmoil UDP socket for quinn.
pub struct SimUdp {
    socket: Arc<turmoil::net::UdpSocket>,
    /// The pending `readable()` wait, kept across polls so its waker stays registered.
    readable: Mutex<Option<Readable>>,
}

impl SimUdp {
    /// Wraps a bound turmoil socket.
    pub fn new(socket: turmoil::net::UdpSocket) -> Self {
        Self {
            socket: Arc::new(socket),
            readable: Mutex::new(None),
        }
    }
}

impl fmt::Debug for SimUdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimUdp")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

/// Turmoil's UDP sockets never push back: sending is always possible.
#[derive(Debug)]
struct AlwaysWritable;

impl quinn::UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl quinn::AsyncUdpSocket for SimUdp {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        // A full or cut link drops the datagram, as a real network does; QUIC resends.
        match self
            .socket
            .try_send_to(transmit.contents, transmit.destination)
        {
            Ok(_) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Err(error),
            Err(error) => {
                tracing::trace!(%error, "simulated datagram not sent");
                Ok(())
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(slot)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        let mut readable = self.readable.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match self.socket.try_recv_from(buf) {
                Ok((len, addr)) => {
                    *slot = RecvMeta {
                        addr,
                        len,
                        stride: len,
                        ecn: None,
                        dst_ip: self.socket.local_addr().ok().map(|a| a.ip()),
                    };
                    return Poll::Ready(Ok(1));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
            let wait = readable.get_or_insert_with(|| {
                let socket = self.socket.clone();
                Box::pin(async move { socket.readable().await })
            });
            match wait.as_mut().poll(cx) {
                Poll::Ready(Ok(())) => *readable = None,
                Poll::Ready(Err(error)) => {
                    *readable = None;
                    return Poll::Ready(Err(error));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// A simulated host's wall clock: the simulation's epoch plus simulated time elapsed, plus the
/// host's offset (the driver sets it: a clock fault steps it). Only the wall clock is off:
/// timers and `tokio::time::Instant`, the node's monotonic clock, run true.
#[derive(Debug, Clone, Default)]
pub struct SimClock {
    offset_ms: Arc<AtomicI64>,
}

impl SimClock {
    /// A clock `offset_ms` ahead of true simulated time (negative: behind), read at each call.
    pub fn with_offset(offset_ms: Arc<AtomicI64>) -> Self {
        Self { offset_ms }
    }
}

impl Clock for SimClock {
    fn now(&self) -> UnixMillis {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        UnixMillis(now_ms().saturating_add_signed(offset))
    }
}

/// True simulated milliseconds since the Unix epoch (what clients and the checker read; a
/// node reads it through its host's [`SimClock`]).
pub fn now_ms() -> u64 {
    let since_epoch = turmoil::since_epoch().unwrap_or(Duration::ZERO);
    since_epoch.as_millis() as u64
}
