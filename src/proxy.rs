//! The request path, top to bottom: route → trace context → sample → forward → span.
//!
//! `handle` is called by the listener for every request. It reads like the steps in
//! `lib.rs`; each step lives in the module named after it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};

use crate::access_log::AccessLog;
use crate::balance::Picked;
use crate::body::{ProxyBody, SpanGuard};
use crate::capture::Capture;
use crate::config::{LimitSettings, Settings};
use crate::context::correlation::IdValue;
use crate::context::{
    Inbound, NameLengths, Outgoing, Propagation, TraceIds, correlation, ids, w3c,
};
use crate::error::{Failure, ProxyError};
use crate::export::ExportHandle;
use crate::forward::{self, Outbound};
use crate::limits::{DownstreamStats, InFlight, Rejection};
use crate::listen::ClientBody;
use crate::metrics::Metrics;
use crate::route::{self, Router};
use crate::sample::{Ratio, Reason, RoutePolicy, Sampler, SamplingStats, TailRule};
use crate::span::{ClientCall, Exchange, Grpc, OptIn, RequestText};
use crate::upstream::{ConnStats, Upstream, UpstreamBody};
use crate::viewer::Viewer;

/// Everything one config version needs to serve requests.
pub struct Runtime {
    pub router: Router,
    pub upstreams: Vec<Arc<Upstream>>,
    pub sampler: Sampler,
    pub trace_id_header: Option<HeaderName>,
    pub correlation_headers: Vec<HeaderName>,
    pub client_spans: bool,
    /// Paths never traced (exact match).
    pub exclude_paths: Vec<String>,
    pub propagation: Propagation,
    /// Baggage members recorded as `baggage.<key>` span attributes.
    pub baggage_attributes: Vec<Arc<str>>,
    /// Opt-In SERVER span attributes to record.
    pub opt_in: OptIn,
    /// Header capture and query redaction.
    pub capture: Capture,
    /// Static attributes for requests no route matches.
    pub default_attributes: Arc<crate::span::Block>,
    /// Sampling for requests no route matches.
    pub default_policy: RoutePolicy,
    /// The exporter this version's requests submit to; a reload that changes the export
    /// settings brings a new one.
    pub export: ExportHandle,
    pub limits: LimitSettings,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<crate::config::IpNet>,
}

impl Runtime {
    /// Fails when an upstream's TLS files cannot be loaded. `conns`: where the upstreams
    /// count their connections, by name.
    /// `workers`: how many workers send upstream (each has its own upstream connections).
    pub fn build(
        s: &Settings,
        export: ExportHandle,
        conns: &ConnStats,
        workers: usize,
    ) -> Result<Self, String> {
        let sampling = &s.tracing.sampling;
        Ok(Runtime {
            router: Router::new(&s.routes, sampling.keep_errors, &s.tracing.attributes),
            capture: Capture::new(s.tracing.capture.clone(), s.tracing.redact_query.clone()),
            default_attributes: route::merge(&s.tracing.attributes, &[]),
            exclude_paths: sampling.exclude_paths.clone(),
            propagation: s.tracing.propagation.clone(),
            baggage_attributes: s
                .tracing
                .baggage_attributes
                .iter()
                .map(|k| Arc::from(k.as_str()))
                .collect(),
            default_policy: RoutePolicy {
                ratio: Ratio::new(sampling.ratio),
                tail: TailRule {
                    keep_errors: sampling.keep_errors,
                    slow: sampling.slow_threshold,
                },
            },
            upstreams: s
                .upstreams
                .iter()
                .map(|u| Upstream::new(u, conns.of(&u.name), workers))
                .collect::<Result<_, _>>()?,
            sampler: Sampler::new(&s.tracing.sampling),
            trace_id_header: s.tracing.trace_id_header.clone(),
            correlation_headers: s.tracing.correlation_headers.clone(),
            client_spans: s.tracing.client_spans,
            opt_in: s.tracing.opt_in,
            export,
            limits: s.limits,
            trusted_proxies: s.tracing.trusted_proxies.clone(),
        })
    }
}

/// State shared by every connection: the current config version, and what records.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub access_log: AccessLog,
    /// Request metrics (`None` without an admin port to read them).
    pub metrics: Option<Arc<Metrics>>,
    /// The trace viewer's store (`None` without an admin port or with `admin.traces: 0`).
    pub viewer: Option<Viewer>,
    /// Set when shutdown begins: HTTP/1 responses then carry `Connection: close`, so
    /// clients move off their keep-alive connections before the listener closes.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    pub sampling: Arc<SamplingStats>,
    /// Open connections and rejected clients.
    pub downstream: Arc<DownstreamStats>,
    /// The upstreams' connections, by upstream name (across config versions).
    pub upstream_conns: Arc<ConnStats>,
    /// Where accepted connections are served.
    pub workers: Arc<crate::workers::Workers>,
}

/// The connection a request arrived on. Shared by its requests behind one `Arc`: a clone
/// per request (two reference counts and ~120 bytes) cost ~130 instructions more.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// What the TLS handshake established; `None` for cleartext.
    pub tls: Option<Arc<crate::tls::TlsInfo>>,
    /// The peer's address as the `X-Forwarded-For` value: made once per connection, each
    /// request's copy shares it.
    pub peer_value: Option<HeaderValue>,
    /// What its requests' SERVER spans say of it.
    pub span_attrs: Arc<crate::span::ConnAttrs>,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, local: SocketAddr, tls: Option<Arc<crate::tls::TlsInfo>>) -> Self {
        let ip = crate::span::IpText::new(peer.ip());
        let peer_value = crate::context::shared_value(ip.as_str().as_bytes());
        ConnInfo {
            span_attrs: Arc::new(crate::span::ConnAttrs::new(
                peer,
                ip.as_str(),
                tls.as_deref(),
            )),
            peer,
            local,
            tls,
            peer_value,
        }
    }
}

/// The host the client addressed: the URI authority (HTTP/2, absolute-form) or `Host`.
/// Owned so it outlives the request's rewrite; for HTTP/1 the clone only bumps a refcount.
fn request_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    let field = req.headers().get(header::HOST);
    match req.uri().authority() {
        // An HTTP/2 request's `host` is made from its authority (`listen::http2`): shared,
        // not copied.
        Some(a) if field.is_some_and(|h| h.as_bytes() == a.as_str().as_bytes()) => field.cloned(),
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => field.cloned(),
    }
}

pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    in_flight: InFlight,
    req: Request<ClientBody>,
) -> Result<Response<ProxyBody>, Infallible> {
    let http1 = req.version() < http::Version::HTTP_2;
    let draining = shared.draining.clone();
    let ambiguous = in_flight.ambiguous();
    let mut resp = exchange(shared, conn, req, ambiguous, false).await;
    resp.body_mut().hold(in_flight);
    // A 408 leaves the client's body unread: the connection cannot be reused.
    if http1
        && (draining.load(std::sync::atomic::Ordering::Relaxed)
            || resp.status() == StatusCode::REQUEST_TIMEOUT)
    {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

/// One request through the steps of the path. Our HTTP/1.1 and HTTP/2 connections call it
/// directly; [`handle`] wraps it for hyper's connections. `writes_stamp`: the caller
/// writes the fields for the client the body holds (`ProxyBody::stamp`) itself, where
/// they are not in the response's map.
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps its arguments twice in its future: see the block below"
)]
pub fn exchange(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    mut req: Request<ClientBody>,
    ambiguous: bool,
    writes_stamp: bool,
) -> impl Future<Output = Response<ProxyBody>> {
    // An `async` block, not an `async fn`: the fn would keep its arguments twice in the
    // future (as given, and as its locals) and copy the request from one to the other on
    // every request. With `wire::send` the same way, the cold futures boxed and the head
    // scoped in `listen::h1::serve`, a connection's future went from 9,080 to 3,952 bytes,
    // and at 256 connections the data cache misses from 389 to 340 a request
    // (benches/README.md, 2026-12-06).
    async move {
        let started = Instant::now();
        let start = SystemTime::now();
        let rt = shared.runtime.load_full();

        // 2. route (a request target over the limit goes nowhere: 414)
        let uri_too_long = req
            .uri()
            .path_and_query()
            .is_some_and(|p| p.as_str().len() > rt.limits.max_uri_length);
        let host_value = request_host(&req);
        let host = host_value.as_ref().and_then(|h| h.to_str().ok());
        let route = rt
            .router
            .find(host, req.uri().path(), req.method(), req.headers());

        let policy = route.map_or(rt.default_policy, |r| r.policy);
        // Excluded routes and paths (health checks, scrapes): no span, no sampling decision, and
        // the caller's trace headers pass upstream untouched.
        let path = req.uri().path();
        let traced =
            !(route.is_some_and(|r| r.excluded) || rt.exclude_paths.iter().any(|p| p == path));

        // 3. trace context and correlation id
        // One pass over the names; lookups of headers the request cannot hold are skipped.
        let seen = NameLengths::of(req.headers());
        let inbound = if traced {
            rt.propagation.extract_seen(req.headers(), seen)
        } else {
            Inbound::default()
        };
        let mut ids = TraceIds::new(&inbound, false);
        // 4. sample
        let decision = traced.then(|| {
            let d = rt
                .sampler
                .decide(inbound.parent.as_ref(), &ids.trace_id, policy.ratio);
            shared.sampling.count(d.sampled, d.reason);
            d
        });
        if decision.is_some_and(|d| d.sampled) {
            ids.flags |= w3c::FLAG_SAMPLED;
        }
        let trace_id = traced.then_some(&ids.trace_id);
        let correlation = correlation::resolve_seen(req.headers(), &rt.correlation_headers, seen);
        let corr = correlation.as_ref().map(|c| (&c.header, &c.value));

        // Spans are recorded when sampled, or when the tail rule may still keep them (errors,
        // slow); the exchange is also recorded for the access log, traced or not.
        let export_spans = decision.is_some_and(|d| {
            rt.export.enabled()
                && (d.sampled || policy.tail.keep_errors || policy.tail.slow.is_some())
        });
        // Untraced requests stay out of the metrics and the viewer (`SpanGuard::record`).
        let record = export_spans
            || shared.access_log.enabled()
            || (traced && (shared.metrics.is_some() || shared.viewer.is_some()));
        let mut guard = record.then(|| {
            let (server_address, port) = host.map_or((None, ""), |h| {
                let (name, port) = route::split_port(h);
                (Some(name), port)
            });
            let server_port = port
                .parse()
                .ok()
                .or(Some(if conn.tls.is_some() { 443 } else { 80 }));
            let attributes = route.map_or(&rt.default_attributes, |r| &r.attributes);
            let exchange = crate::span::spare::fill(
                || Exchange::blank(started, conn.span_attrs.clone(), attributes.clone()),
                |e| {
                    // Every field, named so that one added to `Exchange` must be set here:
                    // a spare exchange holds its last request's values.
                    let Exchange {
                        ids: e_ids,
                        tracestate,
                        start: e_start,
                        started: e_started,
                        duration,
                        method,
                        text,
                        route: e_route,
                        status,
                        server_port: e_server_port,
                        conn: e_conn,
                        upgrade,
                        client_address,
                        local,
                        peer,
                        version,
                        correlation_id,
                        correlation_header,
                        error_type,
                        bytes_sent,
                        client,
                        retried,
                        sampling,
                        tail,
                        propagation_source,
                        baggage,
                        request_headers,
                        response_headers,
                        attributes: e_attributes,
                        grpc,
                        traced: e_traced,
                        bytes_in,
                        opt_in,
                    } = e;
                    *e_ids = ids;
                    *tracestate = inbound.tracestate.as_ref().map(|t| t.as_str().to_string());
                    *e_start = start;
                    *e_started = started;
                    *duration = Duration::ZERO;
                    *method = req.method().clone();
                    *text = RequestText::new(
                        req.uri().path(),
                        req.uri().query().map(|q| rt.capture.query(q)).as_deref(),
                        server_address,
                        seen.get(req.headers(), &header::USER_AGENT)
                            .and_then(|v| v.to_str().ok()),
                    );
                    *e_route = route.map(|r| r.name.clone());
                    *status = 0;
                    *e_server_port = server_port;
                    // Kept when the spare already holds them (a new exchange always does; a
                    // spare often, from the same connection or route): no reference count
                    // taken and dropped for nothing.
                    if !Arc::ptr_eq(e_conn, &conn.span_attrs) {
                        *e_conn = conn.span_attrs.clone();
                    }
                    *upgrade = None;
                    *client_address = forward::forwarded_client(
                        req.headers(),
                        conn.peer.ip(),
                        &rt.trusted_proxies,
                    );
                    *local = conn.local;
                    *peer = conn.peer;
                    *version = req.version();
                    *correlation_id = correlation.as_ref().map(|c| c.value.clone());
                    *correlation_header = correlation.as_ref().map(|c| c.header.clone());
                    *error_type = None;
                    *bytes_sent = 0;
                    *client = None;
                    retried.clear();
                    *sampling = decision.map_or(Reason::Ratio, |d| d.reason);
                    *e_traced = traced;
                    *bytes_in = None;
                    *opt_in = rt.opt_in;
                    *tail = policy.tail;
                    *propagation_source = inbound.source;
                    *request_headers = rt.capture.request(req.headers());
                    response_headers.clear();
                    if !Arc::ptr_eq(e_attributes, attributes) {
                        *e_attributes = attributes.clone();
                    }
                    *grpc = Grpc::from_request(
                        seen.get(req.headers(), &header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok()),
                        req.uri().path(),
                    );
                    baggage.clear();
                    if let Some(b) = &inbound.baggage {
                        baggage.extend(
                            rt.baggage_attributes
                                .iter()
                                .filter_map(|k| b.get(k).map(|v| (k.clone(), v))),
                        );
                    }
                },
            );
            SpanGuard::new(
                exchange,
                shared.clone(),
                rt.clone(),
                route.map(|r| r.index),
                export_spans,
            )
        });

        if uri_too_long {
            shared.downstream.reject(Rejection::UriTooLong);
            return local_error(ProxyError::UriTooLong, guard, &rt, trace_id, corr);
        }
        // RFC 9112 6.1: a message with both Content-Length and Transfer-Encoding is a
        // smuggling vector; hyper reads it by Transfer-Encoding and drops Content-Length (so the
        // headers no longer show it: `limits::Watched` saw the head). Refused before anything
        // is forwarded.
        if ambiguous
            || (seen.may_have(&header::TRANSFER_ENCODING)
                && req.headers().contains_key(header::TRANSFER_ENCODING)
                && req.headers().contains_key(header::CONTENT_LENGTH))
        {
            shared.downstream.reject(Rejection::Malformed);
            return local_error(ProxyError::Ambiguous, guard, &rt, trace_id, corr);
        }
        // A tunnel (`CONNECT host:port`) is not a request to forward; an HTTP/2 extended
        // CONNECT (`:protocol`, WebSocket over HTTP/2) is, as an upgrade below.
        if req.method() == http::Method::CONNECT
            && !forward::is_extended_connect(req.method(), req.extensions())
        {
            return local_error(ProxyError::Tunnel, guard, &rt, trace_id, corr);
        }
        let Some(route) = route else {
            return local_error(ProxyError::NoRoute, guard, &rt, trace_id, corr);
        };

        // 5. forward, with our CLIENT span as the parent the upstream sees
        let mut bytes_in = None;
        let upstream = &rt.upstreams[route.upstream];
        let _active = upstream.begin();
        let Some(mut picked) = upstream.pick(None) else {
            return local_error(ProxyError::ConnectFailed, guard, &rt, trace_id, corr);
        };
        let endpoint = picked.endpoint().clone();
        let (authority, target) = (endpoint.uri_authority(), &endpoint.target);
        // HTTP/1.1 `Upgrade` (WebSocket): the two hop-by-hop headers that ask for it go on to
        // the upstream, and the client's side of the tunnel is taken before the request is.
        let upgrade = forward::upgrade_request(&req, seen);
        let client_upgrade = upgrade
            .as_ref()
            .map(|_| crate::tunnel::ClientSide::take(&mut req));
        let client_span = if rt.client_spans {
            ids::span_id()
        } else {
            ids.server_span
        };
        let mut added = forward::prepare_request(
            &mut req,
            Outbound {
                authority,
                version: upstream.version,
                upstream_tls: target.tls,
                client_tls: conn.tls.is_some(),
                host: host_value.as_ref(),
                peer: conn.peer_value.as_ref(),
                trace: traced.then(|| {
                    (
                        &rt.propagation,
                        Outgoing {
                            trace_id: &ids.trace_id,
                            span_id: &client_span,
                            parent_id: &ids.server_span,
                            flags: ids.flags,
                            tracestate: inbound.tracestate.as_ref().map(|t| t.as_str()),
                            baggage: inbound.baggage.as_ref(),
                        },
                    )
                }),
                correlation: corr,
                seen,
            },
        );
        if let Some(u) = &upgrade {
            if u.extended_connect {
                forward::connect_to_upgrade(&mut req, &u.protocol);
            }
            forward::ask_upgrade(req.headers_mut(), &u.protocol);
            if let Some(e) = guard.as_mut().and_then(SpanGuard::exchange) {
                e.upgrade = Some(u.protocol.clone());
            }
        }
        if let Some(e) = guard.as_mut().and_then(SpanGuard::exchange) {
            e.client = Some(ClientCall::begin(
                client_span,
                started.elapsed(),
                target.clone(),
                0,
                rt.client_spans,
            ));
            // Request body bytes, counted as they stream upstream (only when there is a body).
            if !http_body::Body::is_end_stream(req.body()) {
                let counter = Arc::new(AtomicU64::new(0));
                e.bytes_in = Some(counter.clone());
                bytes_in = Some(counter);
            }
        }

        // A request without a body can be sent again. Over HTTP/1.1 a failed attempt hands its
        // head back (`upstream::Keep`); only where HTTP/2 may take the request is a copy made
        // before sending.
        let replayable = upstream.retries > 0 && http_body::Body::is_end_stream(req.body());
        // The request stays where it is on the usual way (a tuple of it and the copy moved it
        // twice, ~130 instructions).
        let mut copy = None;
        if replayable && endpoint.conns.absolute_uri() {
            let (mut parts, body) = req.into_parts();
            added.merge_into(&mut parts.headers);
            copy = Some(Box::new(parts.clone()));
            req = Request::from_parts(parts, body);
        }
        let mut kept = None;
        // The response's fields stay as the upstream wrote them (no map built only to be
        // written out again) when nothing reads them on the way: our own connection (HTTP/1.1
        // or HTTP/2) writes the stamp (`stamp_later` below), no response capture, no
        // upgrade, and not gRPC (its status is read from them).
        let raw_fields = writes_stamp
            && upgrade.is_none()
            && !rt.capture.of_responses()
            && guard
                .as_mut()
                .is_some_and(|g| g.exchange().is_none_or(|e| e.grpc.is_none()));
        let deadline = upstream
            .total_timeout
            .map(|t| tokio::time::Instant::from_std(started) + t);
        let first = upstream
            .send(
                picked.endpoint(),
                req,
                added,
                bytes_in,
                rt.limits.request_body_timeout,
                deadline,
                replayable.then_some(&mut kept),
                raw_fields,
            )
            .await;
        upstream.report(picked.endpoint(), upstream_ok(&first));
        // Most requests never retry: the retries' state (a second send's future and its
        // result) is boxed apart rather than room in every request's future. With the
        // heads kept for them boxed too, the future went from 2,448 to 1,760 bytes
        // (benches/README.md, 2026-12-07's fifth session).
        let mut result = if first.is_err() && (copy.is_some() || kept.is_some()) {
            let retry = Retry {
                upstream,
                rt: &rt,
                ids: &ids,
                inbound: &inbound,
                traced,
                started,
                deadline,
                replayable,
                raw_fields,
            };
            Box::pin(retry.run(&mut picked, &mut guard, copy, &mut kept, first)).await
        } else {
            first
        };

        // An extended CONNECT answered 2xx without a switch: to the HTTP/2 client a 2xx
        // means the tunnel is open, and it is not (the upstream ignored the `Upgrade`).
        if upgrade.as_ref().is_some_and(|u| u.extended_connect)
            && result.as_ref().is_ok_and(|r| r.status().is_success())
        {
            result = Err(Failure {
                kind: ProxyError::Protocol,
                detail: "the upstream answered the upgrade without switching protocols".into(),
            });
        }
        match result {
            Ok(mut resp) => {
                // 101: the upstream switched protocols; the bytes flow both ways from now on.
                let tunnel = (resp.status() == StatusCode::SWITCHING_PROTOCOLS)
                    .then(|| hyper::upgrade::on(&mut resp))
                    .zip(client_upgrade);
                let (mut parts, body) = resp.into_parts();
                let upstream_status = parts.status;
                if tunnel.is_some() && upgrade.as_ref().is_some_and(|u| u.extended_connect) {
                    forward::upgrade_to_connect(&mut parts.status, &mut parts.headers);
                }
                if let Some(e) = guard.as_mut().and_then(SpanGuard::exchange) {
                    e.status = parts.status.as_u16();
                    if let Some(c) = &mut e.client {
                        c.status = Some(upstream_status.as_u16());
                        c.version = Some(parts.version);
                    }
                }
                // The fields for the client go in the map unless the writer adds them, and
                // nothing reads the map before it is written but gRPC (its own fields).
                let stamp_later = writes_stamp
                    && guard.is_some()
                    && tunnel.is_none()
                    && !rt.capture.of_responses();
                if stamp_later {
                    forward::remove_hop_by_hop(&mut parts.headers);
                } else {
                    forward::prepare_response(
                        &mut parts.headers,
                        rt.trace_id_header.as_ref(),
                        trace_id,
                        corr,
                    );
                }
                if let Some(e) = guard.as_mut().and_then(SpanGuard::exchange) {
                    e.response_headers = rt.capture.response(&parts.headers);
                    // A trailers-only gRPC response carries its status in the headers.
                    if let Some(g) = &mut e.grpc {
                        g.read_status(&parts.headers);
                    }
                }
                let mut downstream = None;
                if let Some((upstream_side, client_side)) = tunnel {
                    if let Some(u) = upgrade.as_ref().filter(|u| !u.extended_connect) {
                        forward::keep_upgrade(&mut parts.headers, Some(&u.protocol));
                    }
                    downstream = crate::tunnel::start(client_side, upstream_side);
                }
                // A tunnel on our HTTP/2 server's stream: the upstream's bytes are the
                // response's body; the handshake, and its spans, are over.
                if let Some(from) = downstream {
                    return Response::from_parts(parts, ProxyBody::tunnel(from, guard));
                }
                // 6. the spans end with the body; the endpoint's request is outstanding until then
                let mut body = ProxyBody::upstream(body, guard);
                if stamp_later {
                    body.defer_stamp();
                }
                body.hold_endpoint(picked);
                if let Some(d) = deadline {
                    body.deadline(d);
                }
                Response::from_parts(parts, body)
            }
            Err(failure) => {
                if let Some(c) = guard
                    .as_mut()
                    .and_then(SpanGuard::exchange)
                    .and_then(|e| e.client.as_mut())
                {
                    c.end = Some(started.elapsed());
                    c.error_type = Some(failure.kind.error_type());
                    c.error_detail = Some(failure.detail);
                }
                if failure.kind == ProxyError::RequestBodyTimeout {
                    shared.downstream.reject(Rejection::RequestBodyTimeout);
                }
                local_error(failure.kind, guard, &rt, trace_id, corr)
            }
        }
    }
}

/// What the retries after a failed first attempt read of the exchange.
struct Retry<'a> {
    upstream: &'a Upstream,
    rt: &'a Runtime,
    ids: &'a TraceIds,
    inbound: &'a Inbound,
    traced: bool,
    started: Instant,
    deadline: Option<tokio::time::Instant>,
    replayable: bool,
    raw_fields: bool,
}

impl Retry<'_> {
    /// Sends the request again, to another endpoint each time, while the failure allows it
    /// and the upstream's retries and retry budget do; the last result is the answer. The
    /// head is `copy` (made before the first attempt where HTTP/2 may take the request) or
    /// the one the failed attempt handed back in `kept`.
    async fn run(
        self,
        picked: &mut Picked,
        guard: &mut Option<SpanGuard>,
        copy: Option<Box<http::request::Parts>>,
        kept: &mut Option<Box<http::request::Parts>>,
        mut result: Result<Response<UpstreamBody>, Failure>,
    ) -> Result<Response<UpstreamBody>, Failure> {
        let mut attempt = 0;
        while let Err(failure) = &result {
            let mut again = match (&copy, kept.take()) {
                (Some(copy), _) => (**copy).clone(),
                (None, Some(head)) => *head,
                (None, None) => break,
            };
            if attempt >= self.upstream.retries || !failure.kind.retryable(&again.method) {
                break;
            }
            let Some(_retry) = self.upstream.try_retry() else {
                break;
            };
            let Some(next) = self.upstream.pick(Some(picked.endpoint())) else {
                break;
            };
            *picked = next;
            attempt += 1;
            // The failed attempt becomes a CLIENT span of its own; the next one gets a new id
            // (a new parent id for the upstream) and the next endpoint.
            let endpoint = picked.endpoint().clone();
            let (authority, target) = (endpoint.uri_authority(), &endpoint.target);
            let span = if self.rt.client_spans {
                ids::span_id()
            } else {
                self.ids.server_span
            };
            if let Some(e) = guard.as_mut().and_then(SpanGuard::exchange) {
                if let Some(mut failed) = e.client.take() {
                    failed.end = Some(self.started.elapsed());
                    failed.error_type = Some(failure.kind.error_type());
                    failed.error_detail = Some(failure.detail.clone());
                    e.retried.push(failed);
                }
                e.client = Some(ClientCall::begin(
                    span,
                    self.started.elapsed(),
                    target.clone(),
                    attempt,
                    self.rt.client_spans,
                ));
            }
            again.version = self.upstream.version;
            let path = again.uri.path_and_query().cloned();
            again.uri = forward::upstream_uri(target.tls, authority, path);
            if self.traced {
                self.rt.propagation.inject(
                    &mut again.headers,
                    None,
                    &Outgoing {
                        trace_id: &self.ids.trace_id,
                        span_id: &span,
                        parent_id: &self.ids.server_span,
                        flags: self.ids.flags,
                        tracestate: self.inbound.tracestate.as_ref().map(|t| t.as_str()),
                        baggage: self.inbound.baggage.as_ref(),
                    },
                );
            }
            result = self
                .upstream
                .send_replay(
                    picked.endpoint(),
                    again,
                    self.deadline,
                    self.replayable.then_some(&mut *kept),
                    self.raw_fields,
                )
                .await;
            self.upstream
                .report(picked.endpoint(), upstream_ok(&result));
        }
        result
    }
}

/// Passive health's view of an attempt: connection failures, timeouts and 502/503/504
/// count against the endpoint; a client that paused its body does not.
fn upstream_ok(result: &Result<Response<UpstreamBody>, Failure>) -> bool {
    match result {
        Ok(r) => !matches!(r.status().as_u16(), 502..=504),
        Err(f) => f.kind == ProxyError::RequestBodyTimeout,
    }
}

/// A response tracegate writes itself (404, 502, 504): JSON body, trace headers included.
fn local_error(
    err: ProxyError,
    mut guard: Option<SpanGuard>,
    rt: &Runtime,
    trace_id: Option<&[u8; 16]>,
    corr: Option<(&HeaderName, &IdValue)>,
) -> Response<ProxyBody> {
    let status: StatusCode = err.status();
    if let Some(e) = guard.as_mut().and_then(SpanGuard::exchange) {
        e.status = status.as_u16();
        e.error_type = Some(err.error_type());
    }
    let trace_hex = trace_id.map(w3c::trace_id_hex);
    let body = serde_json::json!({
        "error": err.error_type(),
        "message": err.message(),
        "status": status.as_u16(),
        "trace_id": trace_hex.as_ref().and_then(|h| std::str::from_utf8(h).ok()),
    })
    .to_string();
    let mut resp = Response::new(ProxyBody::local(Bytes::from(body), guard));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if err == ProxyError::Tunnel {
        // RFC 9110 15.5.6: a 405 names the methods that are allowed.
        h.insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH"),
        );
    }
    forward::prepare_response(h, rt.trace_id_header.as_ref(), trace_id, corr);
    resp
}
