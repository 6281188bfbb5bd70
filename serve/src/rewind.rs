//! A connection whose first bytes were already read: [`Rewind`] hands them out again before
//! reading on, so hyper parses a request head the accept loop has looked at
//! ([`crate::connections`]) as if it had read it itself (as hyper-util's and axum's `Rewind`
//! do). The bytes are let go as soon as they have been read again.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, with `prefix` read first.
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    /// `inner`, whose reads return `prefix` before anything else.
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Let the buffer go now, not when the connection closes.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_prefix_is_read_first_in_pieces_then_the_connection_and_writes_pass_through() {
        // Goal: a reader with a small buffer gets the prefix whole and in order, then the
        // connection's bytes; writes reach the other end. Method: a duplex pipe, 3-byte reads.
        let (near, mut far) = tokio::io::duplex(64);
        let mut rewound = Rewind::new(Bytes::from_static(b"GET / HTTP/1.1\r\n"), near);
        far.write_all(b"host: t\r\n\r\n").await.unwrap();
        let mut read = Vec::new();
        let mut piece = [0u8; 3];
        while read.len() < 27 {
            let n = rewound.read(&mut piece).await.unwrap();
            read.extend_from_slice(&piece[..n]);
        }
        assert_eq!(read, b"GET / HTTP/1.1\r\nhost: t\r\n\r\n");
        rewound.write_all(b"ok").await.unwrap();
        let mut answer = [0u8; 2];
        far.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"ok");
    }
}
