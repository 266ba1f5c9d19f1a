//! Step 1 of the request path: accept TCP connections, terminate TLS where configured, and
//! serve HTTP/1.1 and HTTP/2 (h2c with prior knowledge, or ALPN `h2` over TLS) on each,
//! until told to stop; then let open connections finish their in-flight requests.
//! `Listeners` is the set of them a reload changes. HTTP/1.1 is served by `h1`, which
//! hands to hyper's server what it does not serve itself (HTTP/2 among it).

mod h1;
pub mod http2;
mod quiet;

pub use h1::ClientBody;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{LimitSettings, ListenerSettings, ServerTlsSettings};
use crate::gateway::stopped;
use crate::limits::{ConnState, DownstreamStats, OpenConnection, Rejection, Watched};
use crate::proxy::{self, ConnInfo, Shared};
use crate::tls::{self, TlsInfo};

/// Time a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS termination as a listener uses it now (swapped when certificates change).
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    record_subject: bool,
}

impl Tls {
    pub fn new(s: &ServerTlsSettings) -> Result<Tls, String> {
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(tls::server_config(s)?),
            record_subject: s.record_client_subject,
        })
    }
}

/// Serves `listener` until `stop` turns true, then waits for its connections to finish.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Arc<ArcSwapOption<Tls>>,
    mut stop: watch::Receiver<bool>,
) {
    // Every connection holds a receiver: it turns true when the listener stops, and the
    // listener is drained once all of them are dropped.
    let (drain, draining) = watch::channel(false);
    let Ok(local) = listener.local_addr() else {
        return;
    };
    let serve_one = |stream: TcpStream, peer| {
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(local);
        let limits = shared.runtime.load().limits;
        let tls = tls.load_full();
        let Some(open) = OpenConnection::try_open(&shared.downstream, limits.max_connections)
        else {
            if tls.is_none() {
                tokio::spawn(refuse(stream));
            }
            return;
        };
        let workers = &shared.workers;
        let (stop, shared) = (draining.clone(), shared.clone());
        match tls {
            None => {
                let conn = Arc::new(ConnInfo::new(peer, local, None));
                workers.serve(stream, move |stream| async move {
                    connection(stream, conn, shared, &limits, stop).await;
                    drop(open);
                });
            }
            Some(tls) => {
                workers.serve(stream, move |stream| async move {
                    let handshake = tls.acceptor.accept(stream);
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(s)) => s,
                        // Failed or too slow handshakes are the client's problem: counted,
                        // not logged per client.
                        _ => {
                            shared.downstream.reject(Rejection::TlsHandshake);
                            return;
                        }
                    };
                    let info = TlsInfo::of(stream.get_ref().1, tls.record_subject);
                    let conn = Arc::new(ConnInfo::new(peer, local, Some(Arc::new(info))));
                    connection(stream, conn, shared, &limits, stop).await;
                    drop(open);
                });
            }
        }
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
    drain.send_replace(true);
    drop(draining);
    drain.closed().await;
}

/// The HTTP server settings `limits` asks for.
fn builder(limits: &LimitSettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        // Header and idle timeouts are `limits::Watched`'s, which answers 408.
        .header_read_timeout(None)
        .max_buf_size(limits.max_request_header_bytes)
        .max_headers(limits.max_request_headers);
    b.http2()
        // WebSocket over HTTP/2 (RFC 8441).
        .enable_connect_protocol()
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX));
    b
}

/// One client connection, served until it ends (`stop`: the listener drains), with its
/// head and idle timeouts; what hyper rejected is counted.
async fn connection<I>(
    io: I,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    limits: &LimitSettings,
    stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::default());
    let stats: Arc<DownstreamStats> = shared.downstream.clone();
    let io = Watched::new(
        io,
        state.clone(),
        stats.clone(),
        limits.header_read_timeout,
        limits.idle_timeout,
    );
    if let Err(e) = h1::serve(io, conn, shared, state, limits, stop).await {
        stats.count_connection_error(&*e);
    }
}

/// The rest of a connection served by hyper (HTTP/1.1 or HTTP/2, detected from the first
/// bytes), until it ends or `stop` turns true (then gracefully: in-flight requests finish).
/// `http2`: the client sent HTTP/2's preface; `limits.idle_timeout` then ends the connection
/// here (`quiet`), as `Watched` does HTTP/1's.
async fn hyper_connection<I>(
    io: I,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    state: Arc<ConnState>,
    limits: &LimitSettings,
    http2: bool,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let idle_timeout = (http2 && !limits.idle_timeout.is_zero()).then_some(limits.idle_timeout);
    let (io, moves) = quiet::Counted::new(io);
    let (watched, stats) = (state.clone(), shared.downstream.clone());
    // Boxed where it is made: hyper moves a request's future into its HTTP/2 stream task,
    // and the task's spawn moves it again, each a copy of the whole future (the exchange's
    // state, kilobytes); a box moves as a pointer.
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        Box::pin(proxy::handle(
            shared.clone(),
            conn.clone(),
            state.dispatch(),
            req.map(ClientBody::Hyper),
        ))
    });
    let builder = builder(limits);
    let served = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(served);
    let idle = tokio::select! {
        result = served.as_mut() => return result,
        () = stopped(&mut stop) => None,
        q = quiet::quiet(&watched, &moves, idle_timeout) => match q {
            quiet::Quiet::Idle => idle_timeout,
            // A client that reads nothing: nothing more can reach it (not even a GOAWAY);
            // the connection is dropped, and its exchanges with it.
            quiet::Quiet::Stalled => {
                stats.reject(Rejection::SendTimeout);
                return Ok(());
            }
        },
    };
    served.as_mut().graceful_shutdown();
    match idle {
        // hyper's graceful GOAWAY waits for the client to answer a PING; a client that went
        // away never does, and the connection is dropped (closed) after one more timeout.
        Some(t) => tokio::time::timeout(t, served).await.unwrap_or(Ok(())),
        None => served.await,
    }
}

/// Over `max_connections`: a cleartext client gets a 503 before the close.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 73\r\n\r\n{\"error\":\"max_connections\",\"message\":\"too many connections\",\"status\":503}";
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(BUSY).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// One listener being served.
struct Serving {
    settings: ListenerSettings,
    bound: SocketAddr,
    tls: Arc<ArcSwapOption<Tls>>,
    /// Modification stamps of the TLS files the current config was built from.
    stamps: Vec<Option<SystemTime>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The proxy listeners. A reload binds the addresses it adds (and builds their TLS) before
/// anything changes (a failure rejects the reload), swaps TLS settings of kept addresses,
/// and drains the removed ones: they stop accepting, and their connections finish what is
/// in flight.
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

/// Listeners bound (and TLS built) for a start or a reload, not serving yet.
pub struct Bound {
    new: Vec<(ListenerSettings, TcpListener, Option<Arc<Tls>>)>,
    /// Kept addresses whose TLS settings change.
    retls: Vec<(ListenerSettings, Option<Arc<Tls>>)>,
}

pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot bind the {what} listener on {addr}: {e}"))
}

fn build_tls(l: &ListenerSettings) -> Result<Option<Arc<Tls>>, String> {
    l.tls
        .as_ref()
        .map(|t| Tls::new(t).map(Arc::new))
        .transpose()
        .map_err(|e| format!("TLS of the listener on {}: {e}", l.address))
}

fn stamps(l: &ListenerSettings) -> Vec<Option<SystemTime>> {
    let files: Vec<PathBuf> = l.tls.as_ref().map(tls::server_files).unwrap_or_default();
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

impl Listeners {
    /// Binds every address (in order) and builds its TLS, without serving yet.
    pub async fn bind(listeners: &[ListenerSettings]) -> Result<Bound, String> {
        let mut new: Vec<(ListenerSettings, TcpListener, Option<Arc<Tls>>)> =
            Vec::with_capacity(listeners.len());
        for l in listeners {
            if l.address.port() != 0 && new.iter().any(|(c, _, _)| c.address == l.address) {
                continue;
            }
            let tls = build_tls(l)?;
            new.push((l.clone(), bind(l.address, "proxy").await?, tls));
        }
        Ok(Bound {
            new,
            retls: Vec::new(),
        })
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

    /// Binds the addresses of `next` not served yet and builds the TLS that changes.
    /// Nothing changes until `apply`.
    pub async fn prepare(&self, next: &[ListenerSettings]) -> Result<Bound, String> {
        let served: Vec<ListenerSettings> = (self.inner.lock().await.active.iter())
            .map(|s| s.settings.clone())
            .collect();
        let added: Vec<ListenerSettings> = next
            .iter()
            .filter(|l| !served.iter().any(|s| s.address == l.address))
            .cloned()
            .collect();
        let mut bound = Listeners::bind(&added)
            .await
            .map_err(|e| format!("{e} (the listeners keep serving on their current addresses)"))?;
        for l in next {
            if served
                .iter()
                .any(|s| s.address == l.address && s.tls != l.tls)
            {
                bound.retls.push((l.clone(), build_tls(l)?));
            }
        }
        Ok(bound)
    }

    /// Serves `bound`, swaps changed TLS settings, and drains the listeners whose address
    /// is not in `next`. Returns the bound addresses added and removed.
    pub async fn apply(
        &self,
        next: &[ListenerSettings],
        mut bound: Bound,
    ) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let mut inner = self.inner.lock().await;
        for (settings, tls) in std::mem::take(&mut bound.retls) {
            if let Some(s) = inner
                .active
                .iter_mut()
                .find(|s| s.settings.address == settings.address)
            {
                s.tls.store(tls);
                s.stamps = stamps(&settings);
                s.settings = settings;
            }
        }
        let added_before = inner.active.len();
        start(&mut inner, bound, &self.shared);
        let added = inner.active[added_before.min(inner.active.len())..]
            .iter()
            .map(|s| s.bound)
            .collect();
        let (keep, gone): (Vec<Serving>, Vec<Serving>) = std::mem::take(&mut inner.active)
            .into_iter()
            .partition(|s| next.iter().any(|l| l.address == s.settings.address));
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

    /// Rebuilds the TLS of listeners whose certificate, key or CA files changed. New
    /// handshakes use the new files; open connections keep theirs. A file that does not
    /// load is reported and the previous certificates stay.
    pub async fn refresh_certificates(&self) {
        let mut inner = self.inner.lock().await;
        for s in inner.active.iter_mut().filter(|s| s.settings.tls.is_some()) {
            let now = stamps(&s.settings);
            if now == s.stamps {
                continue;
            }
            s.stamps = now;
            match build_tls(&s.settings) {
                Ok(tls) => {
                    s.tls.store(tls);
                    crate::log::info(&format!(
                        "TLS certificates of the listener on {} reloaded",
                        s.bound
                    ));
                }
                Err(e) => crate::log::error(&format!(
                    "{e}; the listener keeps its previous certificates"
                )),
            }
        }
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
    for (settings, l, tls) in bound.new {
        let Ok(addr) = l.local_addr() else { continue };
        let (stop, rx) = watch::channel(false);
        let tls = Arc::new(ArcSwapOption::new(tls));
        let task = tokio::spawn(serve(l, shared.clone(), tls.clone(), rx));
        inner.active.push(Serving {
            stamps: stamps(&settings),
            settings,
            bound: addr,
            tls,
            stop,
            task,
        });
    }
}
