//! The framework's ceiling for `scripts/bench-node.sh`: a minimal axum server whose
//! `POST /v1/polls/{poll}/votes` reads the body and answers a small JSON 200
//! (`{"status":"counted"}`) without parsing, deduplicating, counting or storing anything.
//!
//! It is built with the same axum, hyper and tokio (multi-threaded runtime, default worker
//! count) as `tally run`, so `tally load --check off` against it measures what HTTP alone
//! costs on this machine. Usage: `cargo run --release -p tally-node --example hello_server --
//! 127.0.0.1:8081` (the address defaults to that).

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;

/// The address served when none is given.
const DEFAULT_LISTEN: &str = "127.0.0.1:8081";

/// The whole answer: as small as Tally's, but fixed.
const ANSWER: &str = r#"{"status":"counted"}"#;

async fn vote(_body: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], ANSWER)
}

fn main() -> ExitCode {
    let text = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen: SocketAddr = match text.parse() {
        Ok(address) => address,
        Err(error) => {
            eprintln!("hello_server: {text:?} is not an address such as {DEFAULT_LISTEN}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hello_server: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hello_server: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let app = Router::new().route("/v1/polls/{poll}/votes", post(vote));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("hello_server: serving on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
