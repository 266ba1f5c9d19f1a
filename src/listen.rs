//! Step 1 of the request path: accept TCP connections and serve HTTP/1.1 and HTTP/2
//! (cleartext, prior knowledge) on each, until told to stop; then let open connections
//! finish their in-flight requests. `Listeners` is the set of them a reload changes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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

/// One listener being served.
struct Serving {
    /// The address as configured (port 0 stays 0), to compare with a reloaded config.
    configured: SocketAddr,
    bound: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The proxy listeners. A reload binds the addresses it adds before anything changes (a
/// bind failure rejects the reload) and drains the ones it removes: they stop accepting,
/// and their connections finish what is in flight.
pub struct Listeners {
    shared: Arc<Shared>,
    inner: tokio::sync::Mutex<ListenersInner>,
}

#[derive(Default)]
struct ListenersInner {
    active: Vec<Serving>,
    /// Removed listeners still finishing their connections.
    draining: Vec<JoinHandle<()>>,
    /// Set by `stop`: nothing is bound after it.
    stopped: bool,
}

/// Listeners bound for a reload, not serving yet.
pub struct Bound(Vec<(SocketAddr, TcpListener)>);

pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot bind the {what} listener on {addr}: {e}"))
}

impl Listeners {
    /// Binds every address (in order) without serving yet.
    pub async fn bind(addrs: &[SocketAddr]) -> Result<Bound, String> {
        let mut out = Vec::with_capacity(addrs.len());
        for a in addrs {
            if !out.iter().any(|(c, _)| c == a) {
                out.push((*a, bind(*a, "proxy").await?));
            }
        }
        Ok(Bound(out))
    }

    /// Starts serving the bound listeners.
    pub fn serve(bound: Bound, shared: Arc<Shared>) -> Listeners {
        let mut inner = ListenersInner::default();
        start(&mut inner, bound, &shared);
        Listeners {
            shared,
            inner: tokio::sync::Mutex::new(inner),
        }
    }

    /// The addresses served now, in the order they were added.
    pub async fn addrs(&self) -> Vec<SocketAddr> {
        self.inner
            .lock()
            .await
            .active
            .iter()
            .map(|s| s.bound)
            .collect()
    }

    /// Binds the addresses of `next` not served yet. Nothing changes until `apply`.
    pub async fn prepare(&self, next: &[SocketAddr]) -> Result<Bound, String> {
        let served: Vec<SocketAddr> = (self.inner.lock().await.active.iter())
            .map(|s| s.configured)
            .collect();
        let new: Vec<SocketAddr> = next
            .iter()
            .filter(|a| !served.contains(a))
            .copied()
            .collect();
        Listeners::bind(&new)
            .await
            .map_err(|e| format!("{e} (the listeners keep serving on their current addresses)"))
    }

    /// Serves `bound` and drains the listeners whose address is not in `next`.
    /// Returns the bound addresses added and removed.
    pub async fn apply(
        &self,
        next: &[SocketAddr],
        bound: Bound,
    ) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let mut inner = self.inner.lock().await;
        let added_before = inner.active.len();
        start(&mut inner, bound, &self.shared);
        let added = inner.active[added_before.min(inner.active.len())..]
            .iter()
            .map(|s| s.bound)
            .collect();
        let (keep, gone): (Vec<Serving>, Vec<Serving>) = std::mem::take(&mut inner.active)
            .into_iter()
            .partition(|s| next.contains(&s.configured));
        inner.active = keep;
        inner.draining.retain(|t| !t.is_finished());
        let mut removed = Vec::new();
        for s in gone {
            s.stop.send_replace(true);
            removed.push(s.bound);
            inner.draining.push(s.task);
        }
        (added, removed)
    }

    /// Stops accepting everywhere; the returned tasks end when their connections have
    /// finished.
    pub async fn stop(&self) -> Vec<JoinHandle<()>> {
        let mut inner = self.inner.lock().await;
        inner.stopped = true;
        let mut tasks = std::mem::take(&mut inner.draining);
        for s in std::mem::take(&mut inner.active) {
            s.stop.send_replace(true);
            tasks.push(s.task);
        }
        tasks
    }
}

fn start(inner: &mut ListenersInner, bound: Bound, shared: &Arc<Shared>) {
    if inner.stopped {
        return;
    }
    for (configured, l) in bound.0 {
        let Ok(addr) = l.local_addr() else { continue };
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(serve(l, shared.clone(), rx));
        inner.active.push(Serving {
            configured,
            bound: addr,
            stop,
            task,
        });
    }
}
