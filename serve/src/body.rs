//! Request bodies read against a deadline and a size limit. The header-read deadline
//! ([`crate::connections`]) ends once a request's head is in; a client could then send its
//! body a byte at a time and hold the connection for hours while staying under the body's size
//! limit. A handler splits its request with [`split`] and reads the body with
//! [`UnreadBody::read`]: whole within the deadline of the handler starting (the head is in by
//! then), or refused ([`BodyFailure`]); at most the route's limit, or refused. A refused body
//! changes nothing, and hyper closes the connection, as the rest of the body was never read.
//!
//! Cheap on the single vote's path, which node and edge share: the limit is the handler's, not
//! a layer's (a layer on a route, or axum's `DefaultBodyLimit` extension, costs every request a
//! boxed service or an extension); the request is split before anything is awaited, and the
//! timer is boxed only on the slow path, so the future axum boxes for each vote holds the
//! headers and the body being read, not the whole request several times over (a node's vote
//! future was 1,728 bytes, over glibc's per-thread cache of small blocks, so every vote took
//! malloc's slow path; BENCHMARKS.md, "Single votes against durable Redis").

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::HeaderMap;
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::Sleep;

/// Default limit on how long a request body may take to arrive after its headers, in ms.
pub const BODY_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyFailure {
    /// Over the route's limit (`limit`, in bytes).
    TooLarge {
        /// The route's limit, in bytes.
        limit: usize,
    },
    /// The connection failed while the body was read.
    Broken(axum::BoxError),
    /// Not all there when the deadline passed.
    TimedOut(Duration),
}

/// `request`'s headers, moved out rather than cloned as the `HeaderMap` extractor would, and
/// its body, still to be read within `deadline` and at most `limit` bytes. Nothing is awaited
/// here, so the caller's future need not hold the request.
pub fn split(request: Request, limit: usize, deadline: Duration) -> (HeaderMap, UnreadBody) {
    let (parts, body) = request.into_parts();
    (parts.headers, UnreadBody::new(body, limit, deadline))
}

/// A request's body, not read yet.
pub struct UnreadBody {
    body: Body,
    limit: usize,
    deadline: Duration,
}

impl UnreadBody {
    /// `body`, to be read within `deadline` and at most `limit` bytes.
    pub fn new(body: Body, limit: usize, deadline: Duration) -> Self {
        Self {
            body,
            limit,
            deadline,
        }
    }

    /// Reads the body within the deadline and the size limit.
    pub fn read(self) -> ReadBody {
        ReadBody {
            collect: Limited::new(self.body, self.limit).collect(),
            limit: self.limit,
            deadline: self.deadline,
            timer: None,
        }
    }
}

/// Reading a body: a body already whole when first polled (a small vote usually arrives with
/// its head) sets no timer; a body still arriving arms one (boxed, so the common case does not
/// carry its room).
pub struct ReadBody {
    collect: Collect<Limited<Body>>,
    limit: usize,
    deadline: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Future for ReadBody {
    type Output = Result<Bytes, BodyFailure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // `Collect` is `Unpin` (its body is boxed), so `ReadBody` is too.
        let this = &mut *self;
        let failure = match Pin::new(&mut this.collect).poll(cx) {
            Poll::Ready(Ok(collected)) => return Poll::Ready(Ok(collected.to_bytes())),
            Poll::Ready(Err(error)) if error.is::<LengthLimitError>() => {
                BodyFailure::TooLarge { limit: this.limit }
            }
            Poll::Ready(Err(error)) => BodyFailure::Broken(error),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => BodyFailure::TimedOut(deadline),
                    Poll::Pending => return Poll::Pending,
                }
            }
        };
        Poll::Ready(Err(failure))
    }
}
