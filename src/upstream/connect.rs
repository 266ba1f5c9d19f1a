//! Connecting to an endpoint: TCP, then TLS for `https://` endpoints, within
//! `connect_timeout` for both; whether the server chose HTTP/2 by ALPN. Each upstream
//! counts the connections it opened and those open now ([`ConnCounts`], read by
//! `/metrics`): a pool that connects for most requests shows there at once.

#![allow(clippy::disallowed_types)] // `ConnStats`' lock: see its comment.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use http::uri::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::TokioIo;

use crate::config::{UpstreamProtocol, UpstreamSettings};
use crate::tls;

/// TCP, then TLS for `https://` endpoints, within `connect_timeout` for both.
#[derive(Clone)]
pub struct Connector {
    inner: HttpsConnector<HttpConnector>,
    timeout: std::time::Duration,
    counts: Arc<ConnCounts>,
}

/// One upstream's connections: opened since the start, and open now (TCP connected, and
/// for TLS the handshake done; until the connection is dropped, whichever client spoke on
/// it). Kept across reloads by [`ConnStats`].
#[derive(Debug, Default)]
pub struct ConnCounts {
    pub opened: AtomicU64,
    closed: AtomicU64,
}

impl ConnCounts {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        // `closed` first: read the other way, a connection opened and closed between the
        // two loads could make closed exceed opened.
        let closed = self.closed.load(Relaxed);
        self.opened.load(Relaxed).saturating_sub(closed)
    }
}

/// The upstreams' [`ConnCounts`] by name, for as long as the process runs: an upstream a
/// reload rebuilds (or removes) keeps counting where it was, and its connections still open
/// stay counted. A std mutex, held to find or add a name (when a config version is built)
/// and to copy the list (a scrape); never on the request path, never across an `.await`.
#[derive(Debug, Default)]
pub struct ConnStats {
    by_upstream: Mutex<Vec<(Arc<str>, Arc<ConnCounts>)>>,
}

impl ConnStats {
    /// The counts of the upstream named `name`, added the first time.
    pub fn of(&self, name: &str) -> Arc<ConnCounts> {
        let mut all = self.lock();
        if let Some((_, c)) = all.iter().find(|(n, _)| &**n == name) {
            return c.clone();
        }
        let counts = Arc::<ConnCounts>::default();
        all.push((Arc::from(name), counts.clone()));
        counts
    }

    /// Every upstream's name with its counts, in the order they were first configured.
    pub fn snapshot(&self) -> Vec<(Arc<str>, Arc<ConnCounts>)> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Arc<str>, Arc<ConnCounts>)>> {
        self.by_upstream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts its connection closed when dropped.
struct Counted(Arc<ConnCounts>);

impl Counted {
    fn new(counts: &Arc<ConnCounts>) -> Self {
        counts.opened.fetch_add(1, Relaxed);
        Counted(counts.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.closed.fetch_add(1, Relaxed);
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (connecting, timeout) = (self.inner.call(uri), self.timeout);
        let counts = self.counts.clone();
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(result) => result.map(|io| Conn(io, Counted::new(&counts))),
                Err(_) => Err(Box::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connection (TCP and TLS) not established within {timeout:?}"),
                )) as Self::Error),
            }
        })
    }
}

impl Connector {
    /// `counts`: the upstream's, to count the connections it makes.
    pub fn new(s: &UpstreamSettings, counts: Arc<ConnCounts>) -> Result<Connector, String> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(s.connect_timeout));
        // The TLS layer checks the scheme.
        http.enforce_http(false);
        let config = match &s.tls {
            Some(t) => tls::client_config(t).map_err(|e| format!("upstream `{}`: {e}", s.name))?,
            // Never used for a handshake: the upstream has no https:// endpoint.
            None => tls::unused_client_config()?,
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http();
        let builder = match s.tls.as_ref().and_then(|t| t.server_name.as_deref()) {
            Some(name) => {
                let name = rustls::pki_types::ServerName::try_from(name.to_string())
                    .map_err(|e| format!("upstream `{}`: server_name: {e}", s.name))?;
                builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        // ALPN from the enabled versions: `h2`, or `h2` and `http/1.1`; none for http1
        // (the server's default, HTTP/1.1).
        let inner = match s.protocol {
            UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(http),
            UpstreamProtocol::Http2 => builder.enable_http2().wrap_connector(http),
            UpstreamProtocol::Auto => builder.enable_all_versions().wrap_connector(http),
        };
        Ok(Connector {
            inner,
            timeout: s.connect_timeout,
            counts,
        })
    }
}

/// An upstream connection, TCP or TLS over TCP, counted open until dropped.
pub struct Conn(
    MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>,
    #[allow(dead_code)] // Held for its `Drop`: the connection counted closed.
    Counted,
);

impl Conn {
    /// The server chose `h2` by ALPN (TLS only).
    pub fn negotiated_h2(&self) -> bool {
        self.0.connected().is_negotiated_h2()
    }

    /// For a cleartext connection, whether it is open with nothing to read, from tokio's
    /// readiness (no system call unless the socket became readable, no waker stored).
    /// `None` over TLS: records without data (session tickets) need the stream read.
    pub fn quiet(&self) -> Option<bool> {
        match &self.0 {
            MaybeHttpsStream::Http(io) => {
                let mut byte = [0u8; 1];
                // A byte (or the end) on an idle connection: it cannot take a request.
                Some(matches!(
                    io.inner().try_read(&mut byte),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock
                ))
            }
            MaybeHttpsStream::Https(_) => None,
        }
    }
}

impl Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
