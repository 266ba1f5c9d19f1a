//! Step 5 of the request path: rewrite the request for the upstream, send it over a pooled
//! keep-alive connection, and prepare the response headers for the client.
//!
//! The engine (hyper-util's pooled client) stays behind this module.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::balance::{Endpoint, Picked, Pool};
use crate::config::{
    Endpoint as ConfigEndpoint, HealthCheckSettings, RetryBudget, UpstreamProtocol,
    UpstreamSettings,
};
use crate::context::{Outgoing, Propagation, w3c};
use crate::error::{Failure, ProxyError};
use crate::span::Target;
use crate::tls;
use hyper_rustls::HttpsConnector;

/// The request body sent upstream: the client's body, streamed, telling `send` when its
/// last byte has gone out (the response timeout starts then, as Envoy's route timeout does).
pub struct RequestBody {
    /// `None`: a replayed request without a body.
    inner: Option<Incoming>,
    sent: Option<tokio::sync::oneshot::Sender<()>>,
    /// Bytes sent so far, for the access log.
    counted: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The longest pause allowed between two pieces of the client's body, and its timer.
    pause: Option<std::time::Duration>,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
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
                frame.map(|r| r.map_err(BoxError::from))
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
    client: Client<Connector, RequestBody>,
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
    Arc::new(Target {
        upstream: upstream.clone(),
        host: Arc::from(e.host.as_str()),
        peer: peer.map_or_else(
            || Arc::from(e.host.as_str()),
            |ip| Arc::from(ip.to_string().as_str()),
        ),
        port: e.port,
        base_url: Arc::from(e.to_string().as_str()),
        tls: e.tls,
    })
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
                                authority,
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
            let scheme = if e.target.tls { "https" } else { "http" };
            let Ok(uri) = format!("{scheme}://{}{}", e.authority, hc.path).parse::<Uri>() else {
                continue;
            };
            let mut req = Request::new(RequestBody {
                inner: None,
                sent: None,
                counted: None,
                pause: None,
                timer: None,
            });
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
                tokio::time::timeout(hc.timeout, u.client.request(req)).await,
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

/// TCP, then TLS for `https://` endpoints, within `connect_timeout` for both.
#[derive(Clone)]
pub struct Connector {
    inner: HttpsConnector<HttpConnector>,
    timeout: std::time::Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = <HttpsConnector<HttpConnector> as tower_service::Service<Uri>>::Response;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (connecting, timeout) = (self.inner.call(uri), self.timeout);
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(result) => result,
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connection (TCP and TLS) not established within {timeout:?}"),
                )) as Self::Error),
            }
        })
    }
}

impl Connector {
    fn new(s: &UpstreamSettings) -> Result<Connector, String> {
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
        })
    }
}

impl Upstream {
    /// Builds the upstream and starts its background tasks (DNS refresh, health checks),
    /// which end when it is dropped (a reload replaced it).
    pub fn new(s: &UpstreamSettings) -> Result<Arc<Self>, String> {
        let connector = Connector::new(s)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(s.idle_timeout)
            .pool_max_idle_per_host(s.max_idle_per_endpoint)
            .set_host(false)
            .http2_only(s.protocol == UpstreamProtocol::Http2)
            .build(connector);
        let name: Arc<str> = Arc::from(s.name.as_str());
        let endpoints = s
            .endpoints
            .iter()
            .map(|e| Arc::new(Endpoint::new(e.authority.clone(), target(&name, e, None))))
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
            client,
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

    /// Sends the prepared request; the error says what failed. `request_timeout` counts from
    /// the moment the whole request body has been sent (at once for a request without body).
    /// `pause`: the longest gap allowed in the client's body (zero: no limit).
    /// `deadline`: the end of the whole exchange (`total_timeout`), if bounded.
    pub async fn send(
        &self,
        req: Request<Incoming>,
        counted: Option<Arc<std::sync::atomic::AtomicU64>>,
        pause: std::time::Duration,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Response<Incoming>, Failure> {
        let (parts, inner) = req.into_parts();
        let (sent, body_sent) = if http_body::Body::is_end_stream(&inner) {
            (None, None)
        } else {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        };
        let call = self.client.request(Request::from_parts(
            parts,
            RequestBody {
                inner: Some(inner),
                sent,
                counted,
                pause: (!pause.is_zero()).then_some(pause),
                timer: None,
            },
        ));
        tokio::pin!(call);
        if let Some(body_sent) = body_sent {
            tokio::select! {
                result = &mut call => return map_result(result),
                // Sent, or the body ended in an error: either way the wait for the answer starts.
                _ = body_sent => {}
                () = until(deadline) => return Err(self.total_expired()),
            }
        }
        self.answer(call, deadline).await
    }

    /// Waits for the response headers within `request_timeout` and the exchange's deadline.
    async fn answer(
        &self,
        call: impl std::future::Future<
            Output = Result<Response<Incoming>, hyper_util::client::legacy::Error>,
        >,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Response<Incoming>, Failure> {
        let headers_due = tokio::time::Instant::now() + self.request_timeout;
        let due = deadline.map_or(headers_due, |d| d.min(headers_due));
        match tokio::time::timeout_at(due, call).await {
            Ok(result) => map_result(result),
            Err(_) if due < headers_due => Err(self.total_expired()),
            Err(_) => Err(Failure {
                kind: ProxyError::Timeout,
                detail: format!("no response headers within {:?}", self.request_timeout),
            }),
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

impl Upstream {
    /// Sends a rebuilt request without a body (a retry).
    pub async fn send_replay(
        &self,
        req: Request<Option<Incoming>>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Response<Incoming>, Failure> {
        let (parts, _) = req.into_parts();
        let call = self.client.request(Request::from_parts(
            parts,
            RequestBody {
                inner: None,
                sent: None,
                counted: None,
                pause: None,
                timer: None,
            },
        ));
        self.answer(call, deadline).await
    }
}

/// Resolves at `deadline`, or never.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn map_result(
    r: Result<Response<Incoming>, hyper_util::client::legacy::Error>,
) -> Result<Response<Incoming>, Failure> {
    r.map_err(|e| Failure::from_client_error(&e))
}

/// Headers that belong to one connection, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The original client when the peer is a trusted proxy: walking `X-Forwarded-For` from the
/// right, the first address that is not itself a trusted proxy. `None` when the peer is not
/// trusted (its headers are not believed) or names nobody usable.
pub fn forwarded_client(
    headers: &HeaderMap,
    peer: std::net::IpAddr,
    trusted: &[crate::config::IpNet],
) -> Option<std::net::IpAddr> {
    let is_trusted = |ip: std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if trusted.is_empty() || !is_trusted(peer) {
        return None;
    }
    let mut hops: Vec<&str> = Vec::new();
    for v in headers.get_all(&X_FORWARDED_FOR) {
        hops.extend(v.to_str().ok()?.split(','));
    }
    for hop in hops.iter().rev() {
        let ip: std::net::IpAddr = hop.trim().parse().ok()?;
        if !is_trusted(ip) {
            return Some(ip);
        }
    }
    None
}

/// Appends `value` to a comma-separated list header (one line out).
fn append_list(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    let mut joined = String::new();
    for v in headers.get_all(name) {
        if let Ok(s) = v.to_str() {
            if !joined.is_empty() {
                joined.push_str(", ");
            }
            joined.push_str(s);
        }
    }
    if !joined.is_empty() {
        joined.push_str(", ");
    }
    joined.push_str(value);
    if let Ok(v) = HeaderValue::from_str(&joined) {
        headers.insert(name, v);
    }
}

/// What the upstream request carries beyond the client's own headers.
pub struct Outbound<'a> {
    pub authority: &'a http::uri::Authority,
    /// The upstream's HTTP version.
    pub version: Version,
    /// The endpoint is `https://`.
    pub upstream_tls: bool,
    /// The client came over TLS (`X-Forwarded-Proto: https`).
    pub client_tls: bool,
    pub host: Option<&'a str>,
    pub peer: SocketAddr,
    /// The context to inject in every configured format; `None`: an excluded route, whose
    /// trace headers pass through untouched.
    pub trace: Option<(&'a Propagation, Outgoing<'a>)>,
    pub correlation: Option<(&'a HeaderName, &'a HeaderValue)>,
}

/// Rewrites the client's request in place for the upstream.
pub fn prepare_request(req: &mut Request<Incoming>, out: Outbound<'_>) {
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(if out.upstream_tls {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    });
    parts.authority = Some(out.authority.clone());
    parts.path_and_query = Some(path);
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = out.version;
    let h = req.headers_mut();
    // `TE: trailers` is hop-by-hop but says the client takes trailers, which gRPC requires
    // of every hop: it is kept (and only it).
    let te_trailers = h
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    remove_hop_by_hop(h);
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // `Host` is kept; an HTTP/2 request has only `:authority`, which becomes `Host`.
    if !h.contains_key(header::HOST) {
        if let Some(v) = out.host.and_then(|host| HeaderValue::from_str(host).ok()) {
            h.insert(header::HOST, v);
        }
    }
    append_list(h, &X_FORWARDED_FOR, &out.peer.ip().to_string());
    append_list(
        h,
        &X_FORWARDED_PROTO,
        if out.client_tls { "https" } else { "http" },
    );
    if let Some(host) = out.host {
        append_list(h, &X_FORWARDED_HOST, host);
    }
    // One copy of each configured format: inbound copies are replaced.
    if let Some((propagation, outgoing)) = &out.trace {
        propagation.inject(h, outgoing);
    }
    if let Some((name, value)) = out.correlation {
        h.insert(name, value.clone());
    }
}

/// A request to switch protocols: HTTP/1.1 `Upgrade`, or HTTP/2 extended CONNECT
/// (RFC 8441, `:protocol`), which goes to an HTTP/1.1 upstream as an `Upgrade`.
#[derive(Clone, Debug)]
pub struct Upgrade {
    pub protocol: String,
    pub extended_connect: bool,
}

/// The protocol a request asks to switch to, if any.
pub fn upgrade_request<B>(req: &Request<B>) -> Option<Upgrade> {
    if req.version() == Version::HTTP_2 {
        let p = req.extensions().get::<hyper::ext::Protocol>()?;
        return (req.method() == http::Method::CONNECT).then(|| Upgrade {
            protocol: p.as_str().to_string(),
            extended_connect: true,
        });
    }
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let h = req.headers();
    let asks = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| h.get(header::UPGRADE)?.to_str().ok().map(str::to_string))
        .flatten()
        .map(|protocol| Upgrade {
            protocol,
            extended_connect: false,
        })
}

/// An extended CONNECT becomes the HTTP/1.1 `GET` + `Upgrade` the upstream understands; a
/// WebSocket one gets the `Sec-WebSocket-Key` HTTP/2 does without (RFC 8441 section 5).
pub fn connect_to_upgrade<B>(req: &mut Request<B>, protocol: &str) {
    *req.method_mut() = http::Method::GET;
    req.extensions_mut().remove::<hyper::ext::Protocol>();
    let h = req.headers_mut();
    if protocol.eq_ignore_ascii_case("websocket") && !h.contains_key("sec-websocket-key") {
        let key: [u8; 16] = rand::random();
        if let Ok(v) = HeaderValue::from_str(&base64(&key)) {
            h.insert("sec-websocket-key", v);
        }
        h.entry("sec-websocket-version")
            .or_insert(HeaderValue::from_static("13"));
    }
}

/// The upstream's 101 as the HTTP/2 client expects it: a 200, without the HTTP/1.1
/// handshake's headers.
pub fn upgrade_to_connect(status: &mut http::StatusCode, h: &mut HeaderMap) {
    *status = http::StatusCode::OK;
    h.remove("sec-websocket-accept");
}

/// Standard base64 with padding (for a 16-byte WebSocket key).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Puts back the two hop-by-hop headers an upgrade needs on the next hop.
pub fn ask_upgrade(h: &mut HeaderMap, protocol: &str) {
    if let Ok(v) = HeaderValue::from_str(protocol) {
        h.insert(header::UPGRADE, v);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// A 101 for the client keeps `Upgrade` and `Connection: upgrade`.
pub fn keep_upgrade(h: &mut HeaderMap, protocol: Option<&str>) {
    if let Some(p) = protocol {
        ask_upgrade(h, p);
    }
}

/// Copies bytes both ways between the upgraded client and upstream connections until
/// either side closes.
pub async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (Ok(client), Ok(upstream)) = (client.await, upstream.await) else {
        return;
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    let mut upstream = hyper_util::rt::TokioIo::new(upstream);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Response headers for the client: hop-by-hop removed, trace id (`None` for an excluded
/// route) and correlation id added.
pub fn prepare_response(
    headers: &mut HeaderMap,
    trace_id_header: Option<&HeaderName>,
    trace_id: Option<&[u8; 16]>,
    correlation: Option<(&HeaderName, &HeaderValue)>,
) {
    remove_hop_by_hop(headers);
    if let (Some(name), Some(trace_id)) = (trace_id_header, trace_id) {
        let hex = w3c::trace_id_hex(trace_id);
        if let Ok(v) = HeaderValue::from_bytes(&hex) {
            headers.insert(name, v);
        }
    }
    if let Some((name, value)) = correlation {
        headers.insert(name, value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        use crate::config::IpNet;
        let trusted = [
            IpNet::parse("10.0.0.0/8").unwrap(),
            IpNet::parse("::1").unwrap(),
        ];
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.1, 203.0.113.7"),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("10.1.1.1"));
        let lb: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        // Rightmost untrusted hop: the proxies' own entries are skipped.
        assert_eq!(
            forwarded_client(&h, lb, &trusted),
            Some("203.0.113.7".parse().unwrap())
        );
        // An untrusted peer's header is not believed; nor anything without a list.
        assert_eq!(
            forwarded_client(&h, "192.0.2.9".parse().unwrap(), &trusted),
            None
        );
        assert_eq!(forwarded_client(&h, lb, &[]), None);
        // Garbage is not an address.
        let mut bad = HeaderMap::new();
        bad.append("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
        assert_eq!(forwarded_client(&bad, lb, &trusted), None);
        // IPv4-mapped IPv6 peers match IPv4 ranges.
        assert_eq!(
            forwarded_client(&h, "::ffff:10.0.0.2".parse().unwrap(), &trusted),
            Some("203.0.113.7".parse().unwrap())
        );
    }

    #[test]
    fn ip_ranges() {
        use crate::config::IpNet;
        let n = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.255.0.1".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            IpNet::parse("2001:db8::/32")
                .unwrap()
                .contains("2001:db8::1".parse().unwrap())
        );
        assert!(IpNet::parse("10.0.0.0/33").is_none());
        assert!(IpNet::parse("10.0.0/8").is_none());
    }

    #[test]
    fn base64_pads_like_rfc_4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff; 16]).len(), 24);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("trailer", HeaderValue::from_static("x-t"));
        h.insert("x-end-to-end", HeaderValue::from_static("kept"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-end-to-end"], "kept");
    }

    #[test]
    fn te_trailers_is_the_only_hop_by_hop_value_kept() {
        // Exercised through prepare_request in tests/grpc.rs; here the rule itself.
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("gzip, trailers"));
        remove_hop_by_hop(&mut h);
        assert!(
            h.get("te").is_none(),
            "removed with the other hop-by-hop headers first"
        );
    }

    #[test]
    fn list_headers_are_appended_to() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        append_list(&mut h, &X_FORWARDED_FOR, "3.3.3.3");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 3.3.3.3");
    }
}
