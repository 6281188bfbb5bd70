//! `tally-serve`: the HTTP/1.1 serving that Tally's node and its edge tier share, so the tier
//! that faces the crowd holds the same line against slow and silent clients as the node does.
//!
//! - [`connections`]: accept loop over any axum `Listener` (TCP, or the simulation's turmoil
//!   TCP), hyper's header-read deadline, graceful shutdown, the client's address for handlers;
//! - [`head`], [`rewind`], [`viewers`]: a connection's first request head read before hyper,
//!   live-stream viewers served below hyper from shared bytes, every other request replayed to
//!   hyper;
//! - [`broadcast`]: a hub that writes each publication to all its viewers' sockets in one loop,
//!   a viewer's own task running only when its socket would block;
//! - [`stall_guard`]: a connection whose client stops reading is dropped;
//! - [`body`]: a request body read whole within a deadline after its headers;
//! - [`caching`]: `Cache-Control`, strong `ETag`s and `304 Not Modified` of the read routes;
//! - [`config_file`]: the TOML configuration file and the error refusing a configuration;
//! - [`cors`]: CORS headers where a browser reads them;
//! - [`either`]: the future of a request answered one of two ways;
//! - [`error`]: the API's one error type, its codes, statuses and `Retry-After`;
//! - [`pages`]: the dashboard, the voting page and the browser client, embedded;
//! - [`votes`]: a single vote's request read the same way by both;
//! - [`vote_answer`]: a single vote's answer written the same way by both.
//!
//! What it promises: no connection holds the server's resources for longer than one of these
//! limits allows, whatever the client does; nothing here reads a clock but tokio's, so the
//! simulation's time drives it.

pub mod body;
pub mod broadcast;
pub mod caching;
pub mod config_file;
pub mod connections;
pub mod cors;
pub mod either;
pub mod error;
pub mod head;
pub mod pages;
pub mod rewind;
pub mod stall_guard;
mod viewer_io;
pub mod viewers;
pub mod vote_answer;
pub mod votes;
