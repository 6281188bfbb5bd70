//! The peer transport: a quinn endpoint over a socket passed in (a real UDP socket, or the
//! simulation's), length-prefixed frames on QUIC streams, and the reconnect backoff.
//!
//! What this promises:
//! - [`endpoint`] uses only the socket and the RNG seed it is given: quinn's own random
//!   choices replay from the seed (STYLE.md §7); it serves [`ClusterTls::server_config`] and
//!   dials with [`ClusterTls::client_config`];
//! - every connection uses [`transport_config`]: keep-alive well under the idle timeout, so
//!   a live link never idles out and a partition longer than the idle timeout ends the
//!   connection (to be redialled with [`Backoff`]) instead of leaving it stuck; and windows
//!   bounded by named constants, so a peer can make us buffer at most so much;
//! - [`read_frame`] never allocates more than [`FRAME_BYTES_MAX`] for a frame, and refuses a
//!   longer length before allocating anything.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, RecvStream, SendStream, VarInt};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tally_core::limits::FRAME_BYTES_MAX;

use crate::peer::tls::ClusterTls;

/// How often an otherwise quiet connection sends a keep-alive (a QUIC PING), in milliseconds.
pub const KEEP_ALIVE_INTERVAL_MS: u64 = 5_000;

/// How long a connection may hear nothing from its peer before it is closed, in
/// milliseconds. Both sides offer the same value, so it is the negotiated one.
pub const IDLE_TIMEOUT_MS: u32 = 30_000;

// Several keep-alives fit in one idle timeout, so a few lost ones do not end a live link.
const _: () = assert!(KEEP_ALIVE_INTERVAL_MS < IDLE_TIMEOUT_MS as u64 / 3);

/// Bytes one stream may have in flight towards us before its sender waits: a whole largest
/// frame (with its length prefix) fits, so a sender never stalls in the middle of a frame for
/// want of window while the reader waits for the frame's end.
pub const STREAM_RECEIVE_WINDOW_BYTES: u32 = 8 << 20;

/// Bytes all streams of one connection together may have in flight towards us.
pub const CONNECTION_RECEIVE_WINDOW_BYTES: u32 = 32 << 20;

/// Bytes we buffer for sending on one connection before writes wait for the peer's acks.
pub const CONNECTION_SEND_WINDOW_BYTES: u64 = 32 << 20;

/// Bidirectional streams a peer may have open towards us at once; opening more waits.
pub const BIDI_STREAMS_MAX: u32 = 16;

/// Unidirectional streams a peer may have open towards us at once; opening more waits.
pub const UNI_STREAMS_MAX: u32 = 16;

/// Receive buffer asked for a peer socket (`SO_RCVBUF`). Linux's default (`net.core.
/// rmem_default`, 208 KiB) overflows when a flat-out peer's pushes and pulls arrive while the
/// runtime is busy: the kernel drops the datagrams (`RcvbufErrors` in `/proc/net/snmp`), and
/// QUIC resends them only after its loss detection, a round trip or more later, which a
/// replicated ack waits through. The kernel grants at most `net.core.rmem_max`
/// (OPERATIONS.md, "Peer sockets"); a smaller grant is logged at start-up.
pub const SOCKET_RECEIVE_BUFFER_BYTES: usize = 4 << 20;

/// Bytes of a frame's length prefix (a little-endian `u32`).
pub const FRAME_HEADER_BYTES: usize = 4;

const _: () = assert!(STREAM_RECEIVE_WINDOW_BYTES as usize >= FRAME_BYTES_MAX + FRAME_HEADER_BYTES);
const _: () = assert!(CONNECTION_RECEIVE_WINDOW_BYTES >= STREAM_RECEIVE_WINDOW_BYTES);
const _: () = assert!(CONNECTION_SEND_WINDOW_BYTES >= STREAM_RECEIVE_WINDOW_BYTES as u64);
const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);

/// First reconnect delay (before jitter), in milliseconds.
pub const RECONNECT_BACKOFF_BASE_MS: u64 = 100;

/// Longest reconnect delay, in milliseconds: a healed partition is noticed within this.
pub const RECONNECT_BACKOFF_CAP_MS: u64 = 5_000;

const _: () =
    assert!(0 < RECONNECT_BACKOFF_BASE_MS && RECONNECT_BACKOFF_BASE_MS <= RECONNECT_BACKOFF_CAP_MS);

/// The QUIC settings of every peer connection (installed by [`ClusterTls::server_config`]
/// and [`ClusterTls::client_config`]). Worst-case buffering per connection is about
/// [`CONNECTION_RECEIVE_WINDOW_BYTES`] received plus [`CONNECTION_SEND_WINDOW_BYTES`] sent.
pub fn transport_config() -> quinn::TransportConfig {
    let mut config = quinn::TransportConfig::default();
    config
        .keep_alive_interval(Some(Duration::from_millis(KEEP_ALIVE_INTERVAL_MS)))
        .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(IDLE_TIMEOUT_MS))))
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW_BYTES))
        .receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW_BYTES))
        .send_window(CONNECTION_SEND_WINDOW_BYTES)
        .max_concurrent_bidi_streams(VarInt::from_u32(BIDI_STREAMS_MAX))
        .max_concurrent_uni_streams(VarInt::from_u32(UNI_STREAMS_MAX))
        // Peers talk in streams only; unreliable datagrams are refused.
        .datagram_receive_buffer_size(None);
    config
}

/// The socket a peer endpoint runs on.
#[derive(Debug)]
pub enum PeerSocket {
    /// A bound OS UDP socket (production). It is switched to non-blocking mode.
    Udp(std::net::UdpSocket),
    /// Any socket quinn can drive, such as the simulation's turmoil UDP adapter.
    Abstract(Arc<dyn quinn::AsyncUdpSocket>),
}

/// A quinn endpoint on `socket` that accepts peers with `tls`'s server config and dials
/// them with its client config (`endpoint.connect(address, peer_node_id.as_str())`). quinn's
/// own randomness is seeded from `rng_seed`. Runs on the current tokio runtime (quinn's
/// `TokioRuntime`): call it from within one.
///
/// Not covered by the seed: TLS key shares and randoms and connection IDs come from the OS
/// through ring and quinn-proto. They change bytes on the wire, not their sizes or timing
/// (certificates from `tally certs` use Ed25519, whose signatures have a fixed size).
pub fn endpoint(
    socket: PeerSocket,
    tls: &ClusterTls,
    rng_seed: u64,
) -> io::Result<quinn::Endpoint> {
    let mut config = quinn::EndpointConfig::new(tls.reset_key());
    let cid_key = tls.connection_id_key();
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    let mut seed = [0u8; 32];
    StdRng::seed_from_u64(rng_seed).fill_bytes(&mut seed);
    config.rng_seed(Some(seed));
    let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
    let server = Some(tls.server_config(Arc::new(transport_config())));
    let mut endpoint = match socket {
        PeerSocket::Udp(socket) => {
            widen_receive_buffer(&socket);
            socket.set_nonblocking(true)?;
            quinn::Endpoint::new(config, server, socket, runtime)?
        }
        PeerSocket::Abstract(socket) => {
            quinn::Endpoint::new_with_abstract_socket(config, server, socket, runtime)?
        }
    };
    endpoint.set_default_client_config(tls.client_config(Arc::new(transport_config())));
    Ok(endpoint)
}

/// Asks for [`SOCKET_RECEIVE_BUFFER_BYTES`] of receive buffer on `socket`; logs a warning
/// when the kernel grants less (or refuses), and goes on with what it has.
fn widen_receive_buffer(socket: &std::net::UdpSocket) {
    let asked =
        rustix::net::sockopt::set_socket_recv_buffer_size(socket, SOCKET_RECEIVE_BUFFER_BYTES);
    match asked
        .map_err(io::Error::from)
        .and_then(|()| receive_buffer_bytes(socket))
    {
        Ok(granted) if granted >= REPORTED_PER_BYTE_GRANTED * SOCKET_RECEIVE_BUFFER_BYTES => {}
        Ok(granted) => tracing::warn!(
            granted,
            asked = SOCKET_RECEIVE_BUFFER_BYTES,
            "the peer socket's receive buffer is smaller than asked (net.core.rmem_max): a \
             flat-out peer's datagrams may be dropped and resent late (OPERATIONS.md, \
             \"Peer sockets\")"
        ),
        Err(error) => tracing::warn!(
            %error,
            "could not set the peer socket's receive buffer; it keeps the system's default"
        ),
    }
}

/// What `SO_RCVBUF` reads per byte set: Linux reports twice what it grants (the other half
/// for its bookkeeping).
pub const REPORTED_PER_BYTE_GRANTED: usize = if cfg!(target_os = "linux") { 2 } else { 1 };

/// The receive buffer `socket` has (`SO_RCVBUF` as the kernel reports it).
pub fn receive_buffer_bytes(socket: &std::net::UdpSocket) -> io::Result<usize> {
    Ok(rustix::net::sockopt::socket_recv_buffer_size(socket)?)
}

/// Why a frame could not be read or written. After any of these the stream is unusable;
/// whatever had been read of the frame is discarded (the caller's buffer holds no frame).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A frame's length prefix is over the limit; nothing was allocated for it. From a
    /// peer this is a protocol violation: close the connection.
    #[error("frame of {length} bytes refused: at most {FRAME_BYTES_MAX} are allowed")]
    TooLong {
        /// The length announced (or, when writing, asked for).
        length: u64,
    },
    /// The stream ended inside a frame's length prefix.
    #[error("stream ended inside a frame header ({received} of {FRAME_HEADER_BYTES} bytes)")]
    TruncatedHeader {
        /// Header bytes received.
        received: usize,
    },
    /// The stream ended inside a frame's body.
    #[error("stream ended inside a frame ({received} of {expected} bytes)")]
    TruncatedBody {
        /// Bytes the header announced.
        expected: usize,
        /// Bytes received.
        received: usize,
    },
    /// The stream or connection failed while reading.
    #[error("reading a frame failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// The stream or connection failed while writing.
    #[error("writing a frame failed: {0}")]
    Write(#[from] quinn::WriteError),
}

impl FrameError {
    /// The connection error behind this one, if the connection itself was lost or refused
    /// (see [`refusal_alert`](crate::peer::tls::refusal_alert) for refusals).
    pub fn connection_error(&self) -> Option<&quinn::ConnectionError> {
        match self {
            FrameError::Read(quinn::ReadError::ConnectionLost(error))
            | FrameError::Write(quinn::WriteError::ConnectionLost(error)) => Some(error),
            _ => None,
        }
    }
}

/// Writes `frame` as one length-prefixed frame: its length as a little-endian `u32`, then
/// its bytes. Waits while the peer's flow-control window is full. A frame over
/// [`FRAME_BYTES_MAX`] is refused before anything is written.
pub async fn write_frame(stream: &mut SendStream, frame: &[u8]) -> Result<(), FrameError> {
    if frame.len() > FRAME_BYTES_MAX {
        return Err(FrameError::TooLong {
            length: frame.len() as u64,
        });
    }
    // Lossless: the length is at most FRAME_BYTES_MAX, which fits in a u32 (asserted above).
    let length = frame.len() as u32;
    stream.write_all(&length.to_le_bytes()).await?;
    stream.write_all(frame).await?;
    Ok(())
}

/// Reads the next frame into `buffer` (replacing its contents, reusing its capacity).
/// `Ok(Some(()))`: a frame was read. `Ok(None)`: the stream ended cleanly between frames.
/// A length over [`FRAME_BYTES_MAX`] is refused before allocating.
pub async fn read_frame(
    stream: &mut RecvStream,
    buffer: &mut Vec<u8>,
) -> Result<Option<()>, FrameError> {
    buffer.clear();
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match stream.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(received)) => {
            return Err(FrameError::TruncatedHeader { received });
        }
        Err(quinn::ReadExactError::ReadError(error)) => return Err(error.into()),
    }
    let length = u32::from_le_bytes(header);
    let expected = usize::try_from(length)
        .ok()
        .filter(|&length| length <= FRAME_BYTES_MAX)
        .ok_or(FrameError::TooLong {
            length: u64::from(length),
        })?;
    buffer.resize(expected, 0);
    match stream.read_exact(buffer).await {
        Ok(()) => Ok(Some(())),
        Err(error) => {
            buffer.clear();
            match error {
                quinn::ReadExactError::FinishedEarly(received) => {
                    Err(FrameError::TruncatedBody { expected, received })
                }
                quinn::ReadExactError::ReadError(error) => Err(error.into()),
            }
        }
    }
}

/// Delays between reconnect attempts: exponential from [`RECONNECT_BACKOFF_BASE_MS`],
/// doubling per attempt up to [`RECONNECT_BACKOFF_CAP_MS`], with "equal jitter": each delay
/// is drawn uniformly from the upper half of its ceiling, so peers that lost each other at
/// the same moment do not redial in lockstep, and the delay still grows. The jitter comes
/// from an RNG seeded by the caller, so a seed replays the same delays.
#[derive(Debug, Clone)]
pub struct Backoff {
    rng: StdRng,
    attempt: u32,
}

impl Backoff {
    /// A backoff at its first attempt, with jitter drawn from `rng_seed`.
    pub fn new(rng_seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(rng_seed),
            attempt: 0,
        }
    }

    /// How long to wait before the next attempt; each call counts one attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling_ms = self.ceiling_ms();
        if ceiling_ms < RECONNECT_BACKOFF_CAP_MS {
            self.attempt += 1;
        }
        let half_ms = ceiling_ms / 2;
        let delay_ms = ceiling_ms - half_ms + self.rng.random_range(0..=half_ms);
        Duration::from_millis(delay_ms)
    }

    /// Starts over from the base delay (call once a connection is established and healthy).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The current attempt's largest delay, in milliseconds.
    fn ceiling_ms(&self) -> u64 {
        // The attempt stops growing once the cap is reached, so the shift stays small.
        let factor = 1u64 << self.attempt.min(32);
        RECONNECT_BACKOFF_BASE_MS
            .saturating_mul(factor)
            .min(RECONNECT_BACKOFF_CAP_MS)
    }
}
