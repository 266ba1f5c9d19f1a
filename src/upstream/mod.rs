//! Step 5, the sending half: an upstream's endpoints and their connection pool, the TLS
//! connector, the timeouts of an exchange (connect, response headers, whole exchange, a
//! paused client body), and the background work that keeps endpoints current (DNS
//! refresh, active health checks). Which endpoint a request gets is `balance`'s choice.
//!
//! The connections (HTTP/1.1 ones of our own, `wire`; hyper's `client::conn` for HTTP/2
//! and upgrades; kept per endpoint: `conns`) stay behind this module.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use futures_util::future::Either;
use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;

use crate::balance::{Endpoint, Picked, Pool};
use crate::config::{
    Endpoint as ConfigEndpoint, HealthCheckSettings, RetryBudget, UpstreamProtocol,
    UpstreamSettings,
};
use crate::error::{Failure, ProxyError};
use crate::listen::ClientBody;
use crate::span::Target;

mod connect;
mod conns;
mod http1;
mod http2;
mod wire;
use connect::Connector;
pub use connect::{ConnCounts, ConnStats};
use conns::ConnSettings;
pub use conns::Conns;

/// The request body sent upstream: the client's body, streamed, telling `send` when its
/// last byte has gone out (the response timeout starts then, as Envoy's route timeout does).
pub struct RequestBody {
    /// `None`: a replayed request without a body.
    inner: Option<ClientBody>,
    sent: Option<tokio::sync::oneshot::Sender<()>>,
    /// Bytes sent so far, for the access log.
    counted: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The longest pause allowed between two pieces of the client's body, and its timer.
    pause: Option<std::time::Duration>,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Header fields for the request's head beyond its map: written by our HTTP/1.1
    /// connections, merged into the map before the request goes anywhere else.
    pub(crate) added: crate::forward::Added,
    /// An HTTP/1.1 response's fields may be kept as they come, not put in its map:
    /// nothing reads them before our HTTP/1.1 client connection writes them.
    raw_fields: bool,
}

impl RequestBody {
    /// No body: a health check, or a replayed request.
    fn empty() -> Self {
        RequestBody {
            inner: None,
            sent: None,
            counted: None,
            pause: None,
            timer: None,
            added: Default::default(),
            raw_fields: false,
        }
    }
}

/// Moves the fields the proxy added beside `req`'s map into it: for a request that goes
/// to hyper (HTTP/2, an upgrade) or back to the caller for a retry.
pub fn merge_added(req: &mut Request<RequestBody>) {
    let mut added = std::mem::take(&mut req.body_mut().added);
    added.merge_into(req.headers_mut());
}

/// Where a request without a body that failed leaves its head (method, URI, headers) for a
/// retry, instead of a copy made before every request: `None` when no retry is wanted.
/// Boxed: the slot is room in every request's future, the head only there on a failure.
pub type Keep<'a> = Option<&'a mut Option<Box<http::request::Parts>>>;

/// A response body from upstream: read by our own HTTP/1.1 connection, or by hyper's
/// (HTTP/2, upgrades).
pub enum UpstreamBody {
    Wire(wire::Body),
    Engine(Incoming),
}

impl UpstreamBody {
    /// The head's fields, when kept as they came (its map is empty then).
    pub fn raw_fields(&self) -> Option<&crate::http1::RawFields> {
        match self {
            UpstreamBody::Wire(b) => b.raw_fields(),
            UpstreamBody::Engine(_) => None,
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Wire(b) => std::pin::Pin::new(b).poll_frame(cx),
            UpstreamBody::Engine(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Wire(b) => b.is_end_stream(),
            UpstreamBody::Engine(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            UpstreamBody::Wire(b) => b.size_hint(),
            UpstreamBody::Engine(b) => b.size_hint(),
        }
    }
}

/// The client paused its request body for longer than `limits.request_body_timeout`.
#[derive(Debug)]
pub struct BodyPaused(pub std::time::Duration);

impl std::fmt::Display for BodyPaused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the client sent no request body data for {:?}", self.0)
    }
}

impl std::error::Error for BodyPaused {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl http_body::Body for RequestBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        use std::future::Future;
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let frame = match std::pin::Pin::new(inner).poll_frame(cx) {
            std::task::Poll::Ready(frame) => {
                if let (Some(t), Some(pause)) = (&mut this.timer, this.pause) {
                    t.as_mut().reset(tokio::time::Instant::now() + pause);
                }
                frame
            }
            std::task::Poll::Pending => {
                if let Some(pause) = this.pause {
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
                    if timer.as_mut().poll(cx).is_ready() {
                        return std::task::Poll::Ready(Some(Err(Box::new(BodyPaused(pause)))));
                    }
                }
                return std::task::Poll::Pending;
            }
        };
        if let (Some(Ok(f)), Some(c)) = (&frame, &this.counted) {
            if let Some(d) = f.data_ref() {
                c.fetch_add(d.len() as u64, Relaxed);
            }
        }
        if frame.is_none() || this.inner.as_ref().is_none_or(|i| i.is_end_stream()) {
            if let Some(tx) = this.sent.take() {
                let _ = tx.send(());
            }
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|i| i.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |i| i.size_hint())
    }
}

/// One configured upstream: its endpoints, their balancing and health, a connection pool.
pub struct Upstream {
    pub name: Arc<str>,
    pool: Pool,
    request_timeout: std::time::Duration,
    /// Bound on the whole exchange (see `UpstreamSettings::total_timeout`).
    pub total_timeout: Option<std::time::Duration>,
    budget: RetryBudget,
    /// Requests in flight to this upstream, and retries among them.
    active: AtomicUsize,
    retrying: AtomicUsize,
    /// Retries the budget refused.
    pub budget_exhausted: AtomicU64,
    /// HTTP/1.1, or HTTP/2 for an h2c upstream.
    pub version: Version,
    /// Extra attempts for a request that can be sent again (see `ProxyError::retryable`).
    pub retries: u32,
    /// For the endpoints' connections.
    conns: ConnSettings,
    protocol: UpstreamProtocol,
}

/// Decrements its counter when dropped.
pub struct Active<'a>(&'a AtomicUsize);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// What spans say about an endpoint; `peer`: the resolved address, if any.
fn target(upstream: &Arc<str>, e: &ConfigEndpoint, peer: Option<std::net::IpAddr>) -> Arc<Target> {
    let peer = peer.map(|ip| ip.to_string());
    Arc::new(Target::new(
        upstream.clone(),
        &e.host,
        peer.as_deref(),
        e.port,
        &e.to_string(),
        e.tls,
    ))
}

/// Resolves the `http://` endpoints named by DNS every `every`; each address becomes an
/// endpoint (keeping the health and load of those that stay). A failed lookup keeps the
/// previous addresses. Ends when the upstream is dropped.
async fn refresh_dns(
    upstream: Weak<Upstream>,
    configured: Vec<ConfigEndpoint>,
    every: std::time::Duration,
) {
    loop {
        let Some(u) = upstream.upgrade() else { return };
        let current = u.pool.endpoints();
        let mut next: Vec<Arc<Endpoint>> = Vec::new();
        for e in &configured {
            let from_this = |x: &&Arc<Endpoint>| x.target.base_url.as_ref() == e.to_string();
            if e.tls || e.host.parse::<std::net::IpAddr>().is_ok() {
                next.extend(current.iter().filter(from_this).cloned());
                continue;
            }
            let lookup = tokio::net::lookup_host((e.host.as_str(), e.port));
            match tokio::time::timeout(every.max(std::time::Duration::from_secs(1)), lookup).await {
                Ok(Ok(addrs)) => {
                    let mut ips: Vec<std::net::SocketAddr> = addrs.collect();
                    ips.sort();
                    ips.dedup();
                    for a in ips {
                        let Ok(authority) = a.to_string().parse::<http::uri::Authority>() else {
                            continue;
                        };
                        match current
                            .iter()
                            .find(|x| x.authority == authority && from_this(x))
                        {
                            Some(same) => next.push(same.clone()),
                            None => next.push(Arc::new(Endpoint::new(
                                authority.clone(),
                                Conns::new(&authority, e.tls, u.protocol, u.conns.workers),
                                target(&u.name, e, Some(a.ip())),
                            ))),
                        }
                    }
                }
                _ => next.extend(current.iter().filter(from_this).cloned()),
            }
        }
        let changed = next.len() != current.len()
            || next
                .iter()
                .zip(current.iter())
                .any(|(a, b)| !Arc::ptr_eq(a, b));
        if changed && !next.is_empty() {
            crate::log::info(&format!(
                "upstream `{}`: endpoints now {}",
                u.name,
                next.iter()
                    .map(|e| e.authority.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            u.pool.replace(next);
        }
        drop(u);
        tokio::time::sleep(every).await;
    }
}

/// Probes every endpoint with `GET path` each `interval`; 2xx within `timeout` passes.
/// Ends when the upstream is dropped.
async fn health_check(upstream: Weak<Upstream>, hc: HealthCheckSettings) {
    let mut tick = tokio::time::interval(hc.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(u) = upstream.upgrade() else { return };
        for e in u.pool.endpoints().iter() {
            let uri = crate::forward::upstream_uri(
                e.target.tls,
                e.uri_authority(),
                Some(hc.path.clone()),
            );
            let mut req = Request::new(RequestBody::empty());
            *req.uri_mut() = uri;
            *req.version_mut() = u.version;
            let host = format!("{}:{}", e.target.host, e.target.port);
            if let Ok(v) = HeaderValue::from_str(&host) {
                req.headers_mut().insert(header::HOST, v);
            }
            req.headers_mut().insert(
                header::USER_AGENT,
                HeaderValue::from_static(concat!(
                    "tracegate-health-check/",
                    env!("CARGO_PKG_VERSION")
                )),
            );
            let passed = matches!(
                tokio::time::timeout(hc.timeout, e.conns.send(&u.conns, req, None)).await,
                Ok(Ok(resp)) if resp.status().is_success()
            );
            if let Some(up) = e.probe(passed, hc.healthy_threshold, hc.unhealthy_threshold) {
                crate::log::warn(&format!(
                    "upstream `{}`: endpoint {} is {} (health check {})",
                    u.name,
                    e.authority,
                    if up { "healthy again" } else { "unhealthy" },
                    hc.path
                ));
            }
        }
    }
}

impl Upstream {
    /// Builds the upstream and starts its background tasks (DNS refresh, health checks),
    /// which end when it is dropped (a reload replaced it). `counts`: where its connections
    /// are counted (the same for every config version).
    /// `workers`: the workers sending on it (each has its own connections).
    pub fn new(
        s: &UpstreamSettings,
        counts: Arc<ConnCounts>,
        workers: usize,
    ) -> Result<Arc<Self>, String> {
        let connector = Connector::new(s, counts)?;
        let conns = ConnSettings {
            connector,
            max_idle: s.max_idle_per_endpoint,
            idle_timeout: s.idle_timeout,
            workers,
        };
        let name: Arc<str> = Arc::from(s.name.as_str());
        let endpoints = s
            .endpoints
            .iter()
            .map(|e| {
                Arc::new(Endpoint::new(
                    e.authority.clone(),
                    Conns::new(&e.authority, e.tls, s.protocol, workers),
                    target(&name, e, None),
                ))
            })
            .collect();
        let upstream = Arc::new(Upstream {
            pool: Pool::new(name.clone(), endpoints, s.balance, s.outlier),
            name,
            request_timeout: s.request_timeout,
            total_timeout: s.total_timeout,
            retries: s.retries,
            budget: s.retry_budget,
            active: AtomicUsize::new(0),
            retrying: AtomicUsize::new(0),
            budget_exhausted: AtomicU64::new(0),
            version: match s.protocol {
                UpstreamProtocol::Http1 | UpstreamProtocol::Auto => Version::HTTP_11,
                UpstreamProtocol::Http2 => Version::HTTP_2,
            },
            conns,
            protocol: s.protocol,
        });
        let resolvable: Vec<ConfigEndpoint> = s
            .endpoints
            .iter()
            .filter(|e| !e.tls && e.host.parse::<std::net::IpAddr>().is_err())
            .cloned()
            .collect();
        if !resolvable.is_empty() && !s.dns_refresh.is_zero() {
            tokio::spawn(refresh_dns(
                Arc::downgrade(&upstream),
                s.endpoints.clone(),
                s.dns_refresh,
            ));
        }
        if let Some(hc) = &s.health_check {
            tokio::spawn(health_check(Arc::downgrade(&upstream), hc.clone()));
        }
        tokio::spawn(reap_idle(Arc::downgrade(&upstream)));
        Ok(upstream)
    }

    /// An endpoint for the next attempt, avoiding the one that just failed when possible.
    pub fn pick(&self, avoid: Option<&Arc<Endpoint>>) -> Option<Picked> {
        self.pool.pick(avoid)
    }

    /// Passive health: what an attempt on `endpoint` came to.
    pub fn report(&self, endpoint: &Endpoint, ok: bool) {
        self.pool.report(endpoint, ok);
    }

    /// Counts a request in flight to this upstream (for the retry budget).
    pub fn begin(&self) -> Active<'_> {
        self.active.fetch_add(1, Relaxed);
        Active(&self.active)
    }

    /// A retry, if the budget allows one now: retries in flight stay under `percent` of
    /// the requests in flight, or `min_concurrency`.
    pub fn try_retry(&self) -> Option<Active<'_>> {
        let active = self.active.load(Relaxed);
        let allowed =
            (active * self.budget.percent as usize / 100).max(self.budget.min_concurrency as usize);
        if self.retrying.fetch_add(1, Relaxed) >= allowed {
            self.retrying.fetch_sub(1, Relaxed);
            self.budget_exhausted.fetch_add(1, Relaxed);
            return None;
        }
        Some(Active(&self.retrying))
    }

    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.pool.endpoints()
    }

    /// Sends the prepared request to `endpoint`; the error says what failed.
    /// `request_timeout` counts from the moment the whole request body has been sent (at
    /// once for a request without body). `pause`: the longest gap allowed in the client's
    /// body (zero: no limit). `deadline`: the end of the whole exchange (`total_timeout`),
    /// if bounded. `keep`: see [`Keep`]. `added`: fields for the head beyond its map
    /// (`forward::prepare_request`). `raw_fields`: see [`RequestBody`]'s.
    #[allow(
        clippy::too_many_arguments,
        reason = "each is its own input of the one call that sends a client's request"
    )]
    pub fn send<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        req: Request<ClientBody>,
        added: crate::forward::Added,
        counted: Option<Arc<std::sync::atomic::AtomicU64>>,
        pause: std::time::Duration,
        deadline: Option<tokio::time::Instant>,
        keep: Keep<'a>,
        raw_fields: bool,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, Failure>> + use<'a> {
        let (parts, inner) = req.into_parts();
        let body = RequestBody {
            inner: Some(inner),
            sent: None,
            counted,
            pause: (!pause.is_zero()).then_some(pause),
            timer: None,
            added,
            raw_fields,
        };
        self.exchange(endpoint, Request::from_parts(parts, body), deadline, keep)
    }

    /// Sends a rebuilt request without a body (a retry).
    pub fn send_replay<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        parts: http::request::Parts,
        deadline: Option<tokio::time::Instant>,
        keep: Keep<'a>,
        raw_fields: bool,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, Failure>> + use<'a> {
        let mut body = RequestBody::empty();
        body.raw_fields = raw_fields;
        let req = Request::from_parts(parts, body);
        self.exchange(endpoint, req, deadline, keep)
    }

    /// Sends `req` within the upstream's timeouts. On an idle HTTP/1.1 connection of our
    /// own, the connection times the wait with a timer it keeps (see `wire::send`); the
    /// other ways (a new connection, HTTP/2, an upgrade) are timed by [`Self::exchange_new`].
    /// A plain function: as an `async fn` it was one more level of future, which moved the
    /// request in and the response out once more (~100 instructions a request).
    fn exchange<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        mut req: Request<RequestBody>,
        deadline: Option<tokio::time::Instant>,
        keep: Keep<'a>,
    ) -> Either<
        impl Future<Output = Result<Response<UpstreamBody>, Failure>> + use<'a>,
        impl Future<Output = Result<Response<UpstreamBody>, Failure>> + use<'a>,
    > {
        let due = Due {
            request_timeout: self.request_timeout,
            total_timeout: self.total_timeout,
            deadline,
        };
        match endpoint.conns.idle_http1(&mut req) {
            Some(conn) => Either::Left(endpoint.conns.send_idle(&self.conns, conn, req, keep, due)),
            // Boxed: the cold way's future is ~2.8 KB, the idle connection's ~0.6 KB, and
            // an unboxed `Either` is as large as the larger, copied whole on every request.
            None => Either::Right(Box::pin(self.exchange_new(endpoint, req, due, keep))),
        }
    }

    /// [`Self::exchange`] on a new connection, HTTP/2 or an upgrade: timed here.
    async fn exchange_new(
        &self,
        endpoint: &Endpoint,
        mut req: Request<RequestBody>,
        due: Due,
        keep: Keep<'_>,
    ) -> Result<Response<UpstreamBody>, Failure> {
        let deadline = due.deadline();
        let body_sent = if http_body::Body::is_end_stream(req.body()) {
            None
        } else {
            let (tx, rx) = tokio::sync::oneshot::channel();
            req.body_mut().sent = Some(tx);
            Some(rx)
        };
        let call = endpoint.conns.send(&self.conns, req, keep);
        tokio::pin!(call);
        if let Some(body_sent) = body_sent {
            tokio::select! {
                result = &mut call => return result,
                // Sent, or the body ended in an error: either way the wait for the answer starts.
                _ = body_sent => {}
                () = until(deadline) => return Err(due.total_expired()),
            }
        }
        let at = due.answer_at(tokio::time::Instant::now());
        match tokio::time::timeout_at(at, call).await {
            Ok(result) => result,
            Err(_) => Err(due.expired(at)),
        }
    }
}

/// The bounds on the wait for an exchange's response headers: `request_timeout` from the
/// moment the whole request has been sent, and the end of the whole exchange
/// (`total_timeout`), if bounded.
#[derive(Clone, Copy, Debug)]
pub struct Due {
    request_timeout: std::time::Duration,
    total_timeout: Option<std::time::Duration>,
    deadline: Option<tokio::time::Instant>,
}

impl Due {
    /// When the response headers are due, for a request sent whole at `sent`.
    pub fn answer_at(&self, sent: tokio::time::Instant) -> tokio::time::Instant {
        let headers = sent + self.request_timeout;
        self.deadline.map_or(headers, |d| d.min(headers))
    }

    /// The end of the whole exchange, if bounded.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline
    }

    /// The failure when the wait until `at` (from [`Self::answer_at`] or
    /// [`Self::deadline`]) ran out.
    pub fn expired(&self, at: tokio::time::Instant) -> Failure {
        if self.deadline == Some(at) {
            return self.total_expired();
        }
        Failure {
            kind: ProxyError::Timeout,
            detail: format!("no response headers within {:?}", self.request_timeout),
        }
    }

    fn total_expired(&self) -> Failure {
        Failure {
            kind: ProxyError::Timeout,
            detail: format!(
                "the exchange took longer than total_timeout ({:?})",
                self.total_timeout.unwrap_or_default()
            ),
        }
    }
}

/// Closes idle connections past `idle_timeout` or beyond `max_idle_per_endpoint`, on every
/// endpoint. Ends when the upstream is dropped.
async fn reap_idle(upstream: Weak<Upstream>) {
    let every = match upstream.upgrade() {
        Some(u) => (u.conns.idle_timeout / 2).clamp(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_secs(1),
        ),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(u) = upstream.upgrade() else { return };
        let now = std::time::Instant::now();
        for e in u.pool.endpoints().iter() {
            e.conns.reap(&u.conns, now);
        }
    }
}

/// Resolves at `deadline`, or never.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
