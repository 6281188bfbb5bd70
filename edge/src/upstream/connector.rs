//! How an edge reaches a node: the one piece of its upstream I/O that is passed in
//! (STYLE.md §2). `tally edge` connects over TCP ([`TcpConnector`]); the simulation hands in
//! a connector over turmoil's simulated TCP, so the same edge code runs on simulated hosts.

use std::future::Future;
use std::io;
use std::pin::Pin;

use tally_client::Endpoint;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to a node.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T> Io for T where T: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

/// A connection being opened.
pub type Connecting = Pin<Box<dyn Future<Output = io::Result<Box<dyn Io>>> + Send>>;

/// Opens byte streams to nodes.
pub trait Connector: Send + Sync + 'static {
    /// Opens a stream to `endpoint` (the caller bounds the wait).
    fn connect(&self, endpoint: &Endpoint) -> Connecting;
}

/// TCP, with Nagle's algorithm off (a batch is one write; its answer should not wait).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect(&self, endpoint: &Endpoint) -> Connecting {
        let authority = endpoint.authority.clone();
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&authority).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn Io>)
        })
    }
}
