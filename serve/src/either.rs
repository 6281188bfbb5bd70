//! The future of a service that answers a request one of two ways ([`crate::cors`], and the
//! node's and the edge's fronts, which answer a single vote without axum's router): the two
//! futures' types, without boxing either.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::response::Response;

pin_project_lite::pin_project! {
    /// An answer coming one way or the other (`inner`: its future).
    #[project = EitherProjection]
    // pin_project_lite takes no doc comments on an enum variant's fields.
    #[allow(missing_docs)]
    pub enum Either<A, B> {
        /// The first way.
        First {
            #[pin]
            inner: A,
        },
        /// The second way.
        Second {
            #[pin]
            inner: B,
        },
    }
}

impl<A, B> Either<A, B> {
    /// The first way.
    pub fn first(inner: A) -> Self {
        Self::First { inner }
    }

    /// The second way.
    pub fn second(inner: B) -> Self {
        Self::Second { inner }
    }
}

impl<A, B> Future for Either<A, B>
where
    A: Future<Output = Result<Response, Infallible>>,
    B: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            EitherProjection::First { inner } => inner.poll(cx),
            EitherProjection::Second { inner } => inner.poll(cx),
        }
    }
}

/// A boxed answer (for a handler's future, whose type has no name).
pub type BoxedAnswer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;
