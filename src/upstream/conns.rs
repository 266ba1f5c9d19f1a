//! An endpoint's connections, all of them ours (no pool keyed by authority): idle HTTP/1.1
//! ones in a list ([`Http1List`], connections of our own: `wire`), and where HTTP/2 may be
//! spoken one shared HTTP/2 connection ([`Http2Slot`], hyper's `client::conn`). Which a
//! request takes:
//! - `protocol: http1`, or `auto` over cleartext: HTTP/1.1.
//! - `protocol: http2`: HTTP/2 (h2c with prior knowledge, or over TLS).
//! - `auto` over TLS: what the server chooses by ALPN on each new connection; once it has
//!   chosen HTTP/1.1, requests use (and add) HTTP/1.1 connections, and a new connection on
//!   which it chooses `h2` becomes the shared one again.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::{Duration, Instant};

use http::uri::{Authority, Uri};
use http::{Request, Response};
use hyper::client::conn::http2::SendRequest;

use super::connect::{Conn, Connector};
use super::http1::{Http1List, asks_upgrade};
use super::http2::Http2Slot;
use super::wire::Connection;
use super::{Due, Keep, RequestBody, UpstreamBody};
use crate::config::UpstreamProtocol;
use crate::error::Failure;
use crate::forward::upstream_uri;

/// Connection settings shared by an upstream's endpoints.
pub struct ConnSettings {
    pub connector: Connector,
    /// 0: a connection serves one request and closes.
    pub max_idle: usize,
    pub idle_timeout: Duration,
    /// Workers serving requests: each endpoint keeps a pool for each, and `max_idle` is
    /// per pool.
    pub workers: usize,
}

/// What sending on an existing connection came to: done (well or not), or the request
/// handed back unsent, for a new connection.
pub enum Unsent {
    Done(Result<Response<UpstreamBody>, Failure>),
    Back(Request<RequestBody>),
}

/// One endpoint's connections: a pool for each worker ([`crate::workers`]), so that the
/// connections a request uses are registered with its own thread's I/O driver.
pub struct Conns {
    /// What the connector connects to: `http[s]://authority/`.
    address: Uri,
    /// `auto` over TLS: HTTP/2 only when the server chooses it by ALPN.
    by_alpn: bool,
    /// By worker number; never empty.
    pools: Box<[Pool]>,
}

/// One worker's connections to the endpoint.
struct Pool {
    http1: Arc<Http1List>,
    /// Where HTTP/2 may be spoken (`http2`, `auto` over TLS).
    http2: Option<Http2Slot>,
    /// `auto` over TLS: the server chose HTTP/1.1 on the last new connection.
    chose_http1: AtomicBool,
}

impl Conns {
    /// `workers`: how many pools (at least one is made).
    pub fn new(
        authority: &Authority,
        tls: bool,
        protocol: UpstreamProtocol,
        workers: usize,
    ) -> Self {
        let scheme = if tls { "https" } else { "http" };
        let address = Uri::builder()
            .scheme(scheme)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_default();
        let (http2, by_alpn) = match protocol {
            UpstreamProtocol::Http1 => (false, false),
            UpstreamProtocol::Http2 => (true, false),
            UpstreamProtocol::Auto => (tls, tls),
        };
        let pools = (0..workers.max(1))
            .map(|_| Pool {
                http1: Arc::default(),
                http2: http2.then(Http2Slot::new),
                chose_http1: AtomicBool::new(false),
            })
            .collect();
        Conns {
            address,
            by_alpn,
            pools,
        }
    }

    /// The calling worker's pool.
    #[inline]
    fn pool(&self) -> &Pool {
        let k = crate::workers::index();
        self.pools.get(k).unwrap_or(&self.pools[0])
    }

    /// Whether requests to it carry an absolute URI (HTTP/2 takes `:scheme` and
    /// `:authority` from it); HTTP/1.1 requests go in origin-form.
    pub fn absolute_uri(&self) -> bool {
        self.pools[0].http2.is_some()
    }

    /// Sends `req` on a connection of the endpoint, or on a new one.
    /// `keep`: where a request without a body that failed leaves its head for a retry
    /// (HTTP/1.1 and failed connects; HTTP/2 takes the request).
    pub async fn send(
        &self,
        settings: &ConnSettings,
        mut req: Request<RequestBody>,
        keep: Keep<'_>,
    ) -> Result<Response<UpstreamBody>, Failure> {
        let pool = self.pool();
        if let Some(h2) = &pool.http2 {
            if let Some(sender) = h2.live() {
                match h2.send(sender, req).await {
                    Unsent::Done(result) => return result,
                    Unsent::Back(back) => req = back,
                }
            }
            if !pool.chose_http1.load(Relaxed) {
                // Boxed, as below: the ways to a new connection (TCP, TLS, a handshake)
                // are most of the future's size and rarely taken; the future of every
                // request in flight stays small.
                return Box::pin(self.send_expecting_h2(pool, h2, settings, req, keep)).await;
            }
            origin_form(&mut req);
        }
        // An idle connection, unless the request asks for an upgrade (a new connection of
        // its own, through hyper).
        let idle = if asks_upgrade(&req) {
            None
        } else {
            pool.http1.take_idle()
        };
        if let Some(conn) = idle {
            return pool.http1.send_on(settings, conn, req, keep, None).await;
        }
        Box::pin(self.send_new(pool, settings, req, keep)).await
    }

    /// An idle HTTP/1.1 connection for `req`, where that is the way it goes: no HTTP/2
    /// connection is live or expected, and it asks for no upgrade. Its URI is put in
    /// origin-form for it.
    pub fn idle_http1(&self, req: &mut Request<RequestBody>) -> Option<Box<Connection>> {
        let pool = self.pool();
        if let Some(h2) = &pool.http2 {
            if !pool.chose_http1.load(Relaxed) || h2.is_live() {
                return None;
            }
        }
        if asks_upgrade(req) {
            return None;
        }
        let conn = pool.http1.take_idle()?;
        if pool.http2.is_some() {
            origin_form(req);
        }
        Some(conn)
    }

    /// Sends `req` on `conn` from [`Self::idle_http1`], which times the wait for the
    /// response headers by `due` itself.
    pub fn send_idle<'a>(
        &self,
        settings: &ConnSettings,
        conn: Box<Connection>,
        req: Request<RequestBody>,
        keep: Keep<'a>,
        due: Due,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, Failure>> + use<'a> {
        self.pool()
            .http1
            .send_on(settings, conn, req, keep, Some(due))
    }

    /// Sends `req` on a new connection: HTTP/1.1, or HTTP/2 where the server chooses it
    /// again by ALPN.
    async fn send_new(
        &self,
        pool: &Pool,
        settings: &ConnSettings,
        req: Request<RequestBody>,
        keep: Keep<'_>,
    ) -> Result<Response<UpstreamBody>, Failure> {
        let io = match self.connect(settings).await {
            Ok(io) => io,
            Err(failure) => return Err(unsent(failure, req, keep)),
        };
        match &pool.http2 {
            Some(h2) if io.negotiated_h2() => {
                // The server chooses HTTP/2 again.
                pool.chose_http1.store(false, Relaxed);
                let sender = h2.handshake(settings, io).await?;
                let mut req = req;
                self.absolute_form(&mut req);
                send_fresh(h2, sender, req).await
            }
            _ => pool.http1.send_new(settings, io, req, keep).await,
        }
    }

    /// Where HTTP/2 is expected and there is no connection: one request at a time connects
    /// (the others wait for its connection, then share it; or fail as it failed).
    async fn send_expecting_h2(
        &self,
        pool: &Pool,
        h2: &Http2Slot,
        settings: &ConnSettings,
        mut req: Request<RequestBody>,
        keep: Keep<'_>,
    ) -> Result<Response<UpstreamBody>, Failure> {
        let before = h2.attempts.load(Acquire);
        let mut last = h2.gate.lock().await;
        let sender = match h2.live() {
            Some(sender) => {
                drop(last);
                sender
            }
            None => {
                if let Some(failed) = last
                    .as_ref()
                    .filter(|_| h2.attempts.load(Acquire) != before)
                {
                    return Err(unsent(failed.clone(), req, keep));
                }
                let attempt = self.connect_expecting_h2(pool, h2, settings).await;
                *last = attempt.as_ref().err().cloned();
                h2.attempts.fetch_add(1, Release);
                drop(last);
                match attempt {
                    Ok(Ok(sender)) => sender,
                    Ok(Err(io)) => {
                        origin_form(&mut req);
                        return pool.http1.send_new(settings, io, req, keep).await;
                    }
                    Err(failure) => return Err(unsent(failure, req, keep)),
                }
            }
        };
        send_fresh(h2, sender, req).await
    }

    /// A new connection: HTTP/2 (`Ok`), or by ALPN a connection to speak HTTP/1.1 on
    /// (`Err`).
    async fn connect_expecting_h2(
        &self,
        pool: &Pool,
        h2: &Http2Slot,
        settings: &ConnSettings,
    ) -> Result<Result<SendRequest<RequestBody>, Conn>, Failure> {
        let io = self.connect(settings).await?;
        if self.by_alpn && !io.negotiated_h2() {
            pool.chose_http1.store(true, Relaxed);
            return Ok(Err(io));
        }
        h2.handshake(settings, io).await.map(Ok)
    }

    async fn connect(&self, settings: &ConnSettings) -> Result<Conn, Failure> {
        use tower_service::Service;
        let mut connector = settings.connector.clone();
        connector
            .call(self.address.clone())
            .await
            .map_err(|e| Failure::new(&*e, true))
    }

    /// Puts back the scheme and authority `origin_form` took away.
    fn absolute_form(&self, req: &mut Request<RequestBody>) {
        let tls = self.address.scheme() == Some(&http::uri::Scheme::HTTPS);
        let path = req.uri().path_and_query().cloned();
        *req.uri_mut() = upstream_uri(tls, self.address.authority(), path);
    }

    /// Closes what has been idle too long (see `Http1List::reap`, `Http2Slot::reap`).
    pub fn reap(&self, settings: &ConnSettings, now: Instant) {
        for pool in &self.pools {
            pool.http1.reap(settings, now);
            if let Some(h2) = &pool.http2 {
                h2.reap(settings, now);
            }
        }
    }

    #[cfg(test)]
    pub fn http1(&self) -> &Http1List {
        &self.pool().http1
    }
}

/// Sends `req` on an HTTP/2 connection just made (or just waited for): there is no
/// other to hand it to if this one closed at once.
async fn send_fresh(
    h2: &Http2Slot,
    sender: SendRequest<RequestBody>,
    req: Request<RequestBody>,
) -> Result<Response<UpstreamBody>, Failure> {
    match h2.send(sender, req).await {
        Unsent::Done(result) => result,
        Unsent::Back(_) => Err(Failure {
            kind: crate::error::ProxyError::ConnectionReset,
            detail: "the new upstream connection closed before taking the request".into(),
        }),
    }
}

/// A failure before `req` went anywhere: its head goes to `keep` for a retry.
fn unsent(failure: Failure, mut req: Request<RequestBody>, keep: Keep<'_>) -> Failure {
    if let Some(keep) = keep {
        super::merge_added(&mut req);
        *keep = Some(Box::new(req.into_parts().0));
    }
    failure
}

/// The request target HTTP/1.1 sends: the path and query.
fn origin_form(req: &mut Request<RequestBody>) {
    if req.uri().scheme().is_some() {
        let path = req.uri().path_and_query().cloned();
        *req.uri_mut() = upstream_uri(false, None, path);
    }
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns")
            .field("address", &self.address)
            .field("http2", &self.absolute_uri())
            .field("pools", &self.pools.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn request(path: &str) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::empty());
        *req.uri_mut() = path.parse().unwrap();
        req.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("app"));
        req
    }

    /// Reads one request head from `s` and answers it with a keep-alive 200.
    async fn answer(s: &mut TcpStream) {
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request arrived");
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
    }

    /// A kept connection the upstream closed while it was idle is not used: the request
    /// goes out on a new one (the readiness look in `Connection::alive` sees the end of
    /// the stream), and the closed one leaves the list.
    #[tokio::test(flavor = "current_thread")]
    async fn a_kept_connection_the_upstream_closed_is_not_used() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let yaml = format!(
            "upstreams:\n  - name: app\n    endpoints: [\"http://{addr}\"]\nroutes:\n  - upstream: app\n"
        );
        let s = crate::config::load(&yaml, "t.yaml", &crate::config::Env::default()).unwrap();
        let counts = Arc::<crate::upstream::ConnCounts>::default();
        let settings = ConnSettings {
            connector: Connector::new(&s.upstreams[0], counts.clone()).unwrap(),
            max_idle: 8,
            idle_timeout: Duration::from_secs(90),
            workers: 1,
        };
        let conns = Conns::new(
            &addr.to_string().parse().unwrap(),
            false,
            UpstreamProtocol::Http1,
            1,
        );

        let (first, mut kept) = tokio::join!(conns.send(&settings, request("/1"), None), async {
            let (mut s, _) = l.accept().await.unwrap();
            answer(&mut s).await;
            s
        });
        let body = http_body_util::BodyExt::collect(first.unwrap().into_body());
        assert_eq!(body.await.unwrap().to_bytes(), "ok");
        assert_eq!(
            conns.http1().idle(),
            1,
            "the body's end put the connection back"
        );
        // The end of the stream and a byte on another socket, sent after it, reach the
        // I/O driver in the same pass: once that byte is seen, so is the end.
        let (mut wake, woken) = tokio::net::UnixStream::pair().unwrap();
        kept.shutdown().await.unwrap();
        drop(kept);
        wake.write_all(b"x").await.unwrap();
        woken.readable().await.unwrap();
        // The new connection's server side, answered on a task of its own so a failed
        // send ends the test instead of leaving it waiting on `accept`.
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            answer(&mut s).await;
            s
        });
        let second = conns.send(&settings, request("/2"), None).await;
        assert_eq!(second.unwrap().status(), 200, "the request went out again");
        let mut open = server.await.unwrap();
        let (first_again, _) = tokio::join!(conns.send(&settings, request("/3"), None), async {
            answer(&mut open).await;
        });
        assert_eq!(first_again.unwrap().status(), 200);
        conns.reap(&settings, Instant::now());
        assert_eq!(
            conns.http1().idle(),
            1,
            "one connection, the new one, is kept"
        );
        assert_eq!(counts.opened.load(Relaxed), 2, "two connections opened");
        assert_eq!(counts.open(), 1, "the closed one is no longer counted open");
    }
}
