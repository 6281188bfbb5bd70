//! What the benchmark's example servers share: the listen address from the first argument, a
//! multi-threaded tokio runtime with the default worker count (as `tally run` has), and
//! `axum::serve` until Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;

/// Serves `app` on the address given as the first argument (`default_listen` when none is),
/// reporting errors as `name: …`.
pub(crate) fn serve_main(name: &str, default_listen: &str, app: Router) -> ExitCode {
    let text = std::env::args()
        .nth(1)
        .unwrap_or_else(|| default_listen.to_owned());
    let listen: SocketAddr = match text.parse() {
        Ok(address) => address,
        Err(error) => {
            eprintln!("{name}: {text:?} is not an address such as {default_listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(name, listen, app)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(name: &str, listen: SocketAddr, app: Router) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("{name}: serving on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
