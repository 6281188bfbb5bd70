//! Drops connections whose client stops reading.
//!
//! A subscriber that never reads its SSE stream (or any response) makes the socket's send
//! buffer fill and the server's writes pend. Nothing is queued for it in the node (streams are
//! pull-based), but the connection would stay open forever. [`StallGuardListener`] wraps every
//! accepted connection so that a write pending for longer than the stall limit fails with
//! `TimedOut`, and hyper closes the connection. Reads are not timed here: a client that is slow
//! to send its request is cut off by the header-read and body deadlines, which know where a
//! request begins and ends ([`crate::connections`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Default limit on how long one write may pend before the connection is dropped, in ms.
pub const WRITE_STALL_MS_DEFAULT: u64 = 10_000;

/// A listener whose connections time out stalled writes.
pub struct StallGuardListener<L> {
    inner: L,
    stall: Duration,
}

impl<L> StallGuardListener<L> {
    /// Wraps `inner`; writes pending longer than `stall` fail.
    pub fn new(inner: L, stall: Duration) -> Self {
        Self { inner, stall }
    }
}

impl<L> Listener for StallGuardListener<L>
where
    L: Listener,
    L::Io: Unpin,
{
    type Io = StallGuard<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, address) = self.inner.accept().await;
        (StallGuard::new(io, self.stall), address)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection whose writes fail after pending for longer than the stall limit.
pub struct StallGuard<T> {
    inner: T,
    stall: Duration,
    pending_since: Option<Pin<Box<Sleep>>>,
}

impl<T> StallGuard<T> {
    fn new(inner: T, stall: Duration) -> Self {
        Self {
            inner,
            stall,
            pending_since: None,
        }
    }

    /// Passes `Ready` through and clears the timer; on `Pending`, fails once the timer fires.
    fn guard<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.pending_since = None;
            return poll;
        }
        let stall = self.stall;
        let timer = self
            .pending_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.pending_since = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client stopped reading: write stalled",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

use std::future::Future as _;

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_that_stalls_past_the_limit_fails_with_timed_out() {
        // Goal: a peer that never reads makes the write fail after the limit, not hang.
        // Method: a duplex pipe with a tiny buffer nobody reads; paused time auto-advances.
        let (client, _server_end_never_read) = tokio::io::duplex(16);
        let mut guarded = StallGuard::new(client, Duration::from_secs(10));
        let error = guarded.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_that_make_progress_never_time_out() {
        let (client, mut server) = tokio::io::duplex(16);
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut server, &mut sink)
                .await
                .map(|_| sink.len())
        });
        let mut guarded = StallGuard::new(client, Duration::from_secs(10));
        guarded.write_all(&[1u8; 4096]).await.unwrap();
        guarded.shutdown().await.unwrap();
        drop(guarded);
        assert_eq!(reader.await.unwrap().unwrap(), 4096);
    }
}
