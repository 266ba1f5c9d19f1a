//! Step 1 of the request path: accept TCP connections and serve HTTP/1.1 and HTTP/2
//! (cleartext, prior knowledge) on each, until told to stop; then let open connections
//! finish their in-flight requests.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::gateway::stopped;

use crate::proxy::{self, ConnInfo, Shared};

/// Serves `listener` until `stop` turns true, then waits for its connections to finish.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let Ok(local) = listener.local_addr() else {
        return;
    };
    let serve_one = |stream: tokio::net::TcpStream, peer| {
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo {
            peer,
            local: stream.local_addr().unwrap_or(local),
        };
        let open = shared
            .metrics
            .as_ref()
            .map(|m| ConnectionCount::new(m.active_connections.clone()));
        let shared = shared.clone();
        let svc = service_fn(move |req| proxy::handle(shared.clone(), conn, req));
        let c = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let c = graceful.watch(c);
        tokio::spawn(async move {
            let _ = c.await;
            drop(open);
        });
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => serve_one(stream, peer),
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    crate::log::warn(&format!("accept on {local} failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = stopped(&mut stop) => break,
        }
    }
    // Connections the kernel completed before we stopped are served, not reset by the close.
    while let Ok(Ok((stream, peer))) = tokio::time::timeout(Duration::ZERO, listener.accept()).await
    {
        serve_one(stream, peer);
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Counts an open connection until dropped.
struct ConnectionCount(Arc<std::sync::atomic::AtomicI64>);

impl ConnectionCount {
    fn new(gauge: Arc<std::sync::atomic::AtomicI64>) -> Self {
        gauge.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ConnectionCount(gauge)
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
