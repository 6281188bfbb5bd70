//! What a viewer's socket is asked, whoever writes to it ([`crate::viewers`]' own task, or a
//! hub's broadcaster, [`crate::broadcast`]): write all of a frame, has the viewer left; and
//! how a viewer's stream ended.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How a viewer's connection ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The feed ended (the node or edge stops).
    FeedDone,
    /// The server shuts down.
    Shutdown,
    /// The viewer closed its end, or sent bytes after its request.
    ClientLeft,
    /// A write failed (the stall guard's timeout, a reset).
    WriteFailed(#[allow(dead_code, reason = "read in the log, by `Debug`")] std::io::Error),
}

/// Writes all of `pending` and flushes; `Pending` while the socket would block (the stall
/// guard then times the wait).
pub(crate) fn poll_write_all<I: AsyncWrite + Unpin>(
    io: &mut I,
    cx: &mut Context<'_>,
    pending: &mut Bytes,
) -> Poll<std::io::Result<()>> {
    while !pending.is_empty() {
        match Pin::new(&mut *io).poll_write(cx, pending) {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(std::io::Error::from(std::io::ErrorKind::WriteZero)));
            }
            Poll::Ready(Ok(written)) => bytes::Buf::advance(pending, written),
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => return Poll::Pending,
        }
    }
    Pin::new(io).poll_flush(cx)
}

/// Ready when the viewer closes its end, its connection fails, or it sends anything (a viewer
/// sends nothing after its request).
pub(crate) fn poll_left<I: AsyncRead + Unpin>(io: &mut I, cx: &mut Context<'_>) -> Poll<()> {
    let mut scratch = [0u8; 1];
    let mut buf = ReadBuf::new(&mut scratch);
    Pin::new(io).poll_read(cx, &mut buf).map(|_| ())
}
