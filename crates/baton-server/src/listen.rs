//! The HTTP accept loop, with bounds on what a client can hold: at most
//! [`ServerConfig::max_connections`](crate::ServerConfig::max_connections) connections are
//! served at once (past it, accepting waits and new connections queue in the kernel's
//! backlog), and a client must send each request's head within
//! [`ServerConfig::header_read_timeout`](crate::ServerConfig::header_read_timeout), which
//! is also how long a keep-alive connection may sit idle between requests. So connections
//! that send nothing, or trickle a header byte by byte, cannot pile up: each goes after the
//! timeout, and no more than the bound are ever open.
//!
//! `axum::serve` has neither bound; this is its loop (hyper's HTTP/1 connection, graceful
//! shutdown) with the bounds added.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long a stop waits for requests in flight to finish.
pub const DRAIN: Duration = Duration::from_secs(5);

/// The bounds of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Connections served at once.
    pub max_connections: usize,
    /// A request's head must arrive within this; an idle connection is closed after it.
    pub header_read_timeout: Duration,
}

/// Serves `router` on `listener` within `bounds` until `stop` resolves, then lets the
/// requests in flight finish (at most [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    bounds: Bounds,
    stop: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(
        bounds.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
            () = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, say: back off rather than spin.
                    tracing::warn!("accepting a connection failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(bounds.header_read_timeout)
            .keep_alive(true);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::trace!("connection ended: {error}");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}
