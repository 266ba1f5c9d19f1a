//! Step 6 of the request path: what one exchange records, and how it becomes OTLP spans.
//!
//! The request path fills an [`Exchange`]: plain fields, a few owned strings, no attribute
//! vectors. The exporter task turns it into a SERVER span and (by default) a CLIENT span with
//! the stable HTTP semantic conventions, off the request path.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::HeaderValue;
use http::{Method, Version};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, Key, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::capture::Headers;
use crate::context::{Format, TraceIds};
use crate::sample::{Reason, TailRule};

/// The upstream endpoint a call went to.
#[derive(Debug)]
pub struct Target {
    /// Upstream name (`tracegate.upstream`).
    pub upstream: Arc<str>,
    pub host: Arc<str>,
    /// The address connected to: the resolved IP, or `host` when resolved per connection.
    pub peer: Arc<str>,
    pub port: u16,
    /// `http://host:port` or `https://host:port`, the prefix of `url.full`.
    pub base_url: Arc<str>,
    /// `https://`.
    pub tls: bool,
}

/// The semantic conventions' Opt-In attributes of the SERVER span that tracegate can
/// record (`tracing.opt_in_attributes`). Opt-In attributes are off unless asked for: the
/// conventions say so, and every attribute costs export work per span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptIn(u8);

impl OptIn {
    pub const CLIENT_PORT: OptIn = OptIn(1);
    pub const LOCAL_ADDRESS: OptIn = OptIn(1 << 1);
    pub const LOCAL_PORT: OptIn = OptIn(1 << 2);
    pub const TRANSPORT: OptIn = OptIn(1 << 3);
    pub const REQUEST_BODY_SIZE: OptIn = OptIn(1 << 4);
    pub const RESPONSE_BODY_SIZE: OptIn = OptIn(1 << 5);

    /// The attribute names, as the configuration lists them.
    pub const ALL: [(&'static str, OptIn); 6] = [
        ("client.port", OptIn::CLIENT_PORT),
        ("network.local.address", OptIn::LOCAL_ADDRESS),
        ("network.local.port", OptIn::LOCAL_PORT),
        ("network.transport", OptIn::TRANSPORT),
        ("http.request.body.size", OptIn::REQUEST_BODY_SIZE),
        ("http.response.body.size", OptIn::RESPONSE_BODY_SIZE),
    ];

    /// The flag for an attribute name, `None` for a name outside [`OptIn::ALL`].
    pub fn parse(name: &str) -> Option<OptIn> {
        OptIn::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, flag)| *flag)
    }

    pub fn with(self, other: OptIn) -> OptIn {
        OptIn(self.0 | other.0)
    }

    pub fn has(self, other: OptIn) -> bool {
        self.0 & other.0 == other.0
    }

    /// The names set, in [`OptIn::ALL`]'s order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        OptIn::ALL
            .into_iter()
            .filter(move |(_, flag)| self.has(*flag))
            .map(|(n, _)| n)
    }
}

/// The CLIENT side of an exchange: one upstream attempt.
#[derive(Clone, Debug)]
pub struct ClientCall {
    /// Its id is the parent id the upstream sees.
    pub span_id: [u8; 8],
    /// Offsets from the exchange start.
    pub start: Duration,
    pub end: Option<Duration>,
    pub target: Arc<Target>,
    pub status: Option<u16>,
    pub error_type: Option<&'static str>,
    /// The underlying error's text, for the `exception` event.
    pub error_detail: Option<String>,
    /// 0 for the first attempt, n for the n-th retry (`http.request.resend_count`).
    pub resend_count: u32,
    /// Recorded as a CLIENT span (false: the id is still sent upstream, no span).
    pub recorded: bool,
}

/// A gRPC call (`content-type: application/grpc*`).
#[derive(Clone, Debug)]
pub struct Grpc {
    pub service: String,
    pub method: String,
    /// `grpc-status` from the trailers (or a trailers-only response's headers).
    pub status: Option<u32>,
}

impl Grpc {
    /// `/package.Service/Method`, for requests whose content type is gRPC.
    pub fn from_request(content_type: Option<&str>, path: &str) -> Option<Grpc> {
        if !content_type?.starts_with("application/grpc") {
            return None;
        }
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        Some(Grpc {
            service: service.to_string(),
            method: method.to_string(),
            status: None,
        })
    }

    /// Reads `grpc-status` from headers or trailers.
    pub fn read_status(&mut self, headers: &http::HeaderMap) {
        if let Some(code) = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
        {
            self.status = Some(code);
        }
    }
}

/// gRPC codes that make a SERVER span an error (semantic conventions): UNKNOWN,
/// DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
fn grpc_server_error(code: u32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

impl ClientCall {
    /// A new attempt, started `start` after the exchange began; `resend_count` 0 for the first.
    pub fn begin(
        span_id: [u8; 8],
        start: Duration,
        target: Arc<Target>,
        resend_count: u32,
        recorded: bool,
    ) -> Self {
        ClientCall {
            span_id,
            start,
            end: None,
            target,
            status: None,
            error_type: None,
            error_detail: None,
            resend_count,
            recorded,
        }
    }
}

/// Everything recorded about one inbound request.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub ids: TraceIds,
    pub tracestate: Option<String>,
    pub start: SystemTime,
    pub started: Instant,
    pub duration: Duration,
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub route: Option<Arc<str>>,
    pub status: u16,
    pub server_address: Option<String>,
    pub server_port: Option<u16>,
    /// The client's TLS connection, if any.
    pub tls: Option<Arc<crate::tls::TlsInfo>>,
    /// The protocol the client asked to switch to (`Upgrade`), if any.
    pub upgrade: Option<String>,
    /// The client named by `X-Forwarded-For` when the peer is a trusted proxy.
    pub client_address: Option<std::net::IpAddr>,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub version: Version,
    pub user_agent: Option<String>,
    pub correlation_id: Option<HeaderValue>,
    pub error_type: Option<&'static str>,
    pub bytes_sent: u64,
    /// The last upstream attempt.
    pub client: Option<ClientCall>,
    /// Earlier attempts that failed and were retried, in order.
    pub retried: Vec<ClientCall>,
    /// Why it is recorded: the head reason, or `Error`/`Slow` when kept after the fact.
    pub sampling: Reason,
    /// What keeps it when the head sampler dropped it.
    pub tail: TailRule,
    /// The format the caller's context came in, if any.
    pub propagation_source: Option<Format>,
    /// `tracing.baggage_attributes` members found in the caller's baggage.
    pub baggage: Vec<(Arc<str>, String)>,
    /// Allow-listed headers (sensitive ones already `REDACTED`).
    pub request_headers: Headers,
    pub response_headers: Headers,
    /// Static attributes (process-wide and the route's).
    pub attributes: Arc<[(String, String)]>,
    pub grpc: Option<Grpc>,
    /// False for excluded requests: logged, never exported, no trace ids shown.
    pub traced: bool,
    /// Request body bytes sent upstream, when there was a body.
    pub bytes_in: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Opt-In attributes to record (`tracing.opt_in_attributes`).
    pub opt_in: OptIn,
}

impl Exchange {
    /// Spans this exchange exports.
    pub fn span_count(&self) -> usize {
        1 + self
            .retried
            .iter()
            .chain(self.client.as_ref())
            .filter(|c| c.recorded)
            .count()
    }

    /// Approximate bytes held while queued, for the exporter's byte bound.
    pub fn approx_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.path.len()
            + self.query.as_ref().map_or(0, String::len)
            + self.server_address.as_ref().map_or(0, String::len)
            + self.user_agent.as_ref().map_or(0, String::len)
            + self.tracestate.as_ref().map_or(0, String::len)
            + self.correlation_id.as_ref().map_or(0, HeaderValue::len)
            + if self.client.is_some() {
                std::mem::size_of::<ClientCall>()
            } else {
                0
            }
    }

    /// Marks the end of the exchange (the response body is done or failed).
    pub fn finish(&mut self, error: Option<&'static str>) {
        self.duration = self.started.elapsed();
        if let Some(c) = &mut self.client {
            c.end.get_or_insert(self.duration);
            if c.error_type.is_none() && c.status.is_some() {
                c.error_type = error;
            }
        }
        if self.error_type.is_none() {
            self.error_type = error;
        }
    }

    /// Converts into OTLP spans (SERVER first, then CLIENT).
    pub fn into_spans(self, scope: &InstrumentationScope, out: &mut Vec<SpanData>) {
        let trace_id = TraceId::from_bytes(self.ids.trace_id);
        let flags = TraceFlags::new(self.ids.flags);
        let mut trace_state = self
            .tracestate
            .as_deref()
            .and_then(|s| {
                TraceState::from_key_value(s.split(',').filter_map(|m| m.split_once('='))).ok()
            })
            .unwrap_or_default();
        let method = known_method(&self.method);
        let server_name: Cow<'static, str> = match (&self.route, method) {
            (Some(r), Some(m)) => format!("{m} {r}").into(),
            (None, Some(m)) => Cow::Borrowed(m),
            (Some(r), None) => format!("HTTP {r}").into(),
            (None, None) => Cow::Borrowed("HTTP"),
        };
        let end = self.start + self.duration;
        // Kept for the CLIENT spans' url.full before the path moves into the server span.
        let any_client = self.client.iter().chain(&self.retried).any(|c| c.recorded);
        let url_parts = any_client.then(|| (self.path.clone(), self.query.clone()));
        // Each retry is an event on the SERVER span.
        let mut server_events = SpanEvents::default();
        for c in &self.retried {
            server_events.events.push(opentelemetry::trace::Event::new(
                "retry",
                self.start + c.end.unwrap_or(self.duration),
                vec![
                    KeyValue::new(
                        Key::from_static_str("http.request.resend_count"),
                        i64::from(c.resend_count + 1),
                    ),
                    kv("error.type", c.error_type.unwrap_or("error")),
                    kv(
                        "exception.message",
                        c.error_detail.clone().unwrap_or_default(),
                    ),
                ],
                0,
            ));
        }
        let mut a = Vec::with_capacity(20);
        push_method(&mut a, &self.method);
        self.push_opt_in(&mut a);
        a.push(kv("url.path", self.path));
        if let Some(q) = self.query {
            a.push(kv("url.query", q));
        }
        if let Some(u) = &self.upgrade {
            a.push(kv("tracegate.upgrade", u.clone()));
        }
        match &self.tls {
            None => a.push(kv("url.scheme", "http")),
            Some(t) => {
                a.push(kv("url.scheme", "https"));
                a.push(kv("tls.protocol.name", "tls"));
                a.push(kv("tls.protocol.version", t.version));
                if let Some(s) = &t.client_subject {
                    a.push(kv("tls.client.subject", s.clone()));
                }
            }
        }
        if let Some(r) = &self.route {
            a.push(kv("http.route", shared(r)));
        }
        a.push(KeyValue::new(
            Key::from_static_str("http.response.status_code"),
            i64::from(self.status),
        ));
        if let Some(h) = self.server_address {
            a.push(kv("server.address", h));
        }
        if let Some(p) = self.server_port {
            a.push(KeyValue::new(
                Key::from_static_str("server.port"),
                i64::from(p),
            ));
        }
        a.push(kv(
            "client.address",
            ip_value(self.client_address.unwrap_or(self.peer.ip())),
        ));
        a.push(kv("network.peer.address", ip_value(self.peer.ip())));
        a.push(KeyValue::new(
            Key::from_static_str("network.peer.port"),
            i64::from(self.peer.port()),
        ));
        // `network.protocol.name` is only required when it is not `http`: it always is.
        a.push(kv(
            "network.protocol.version",
            protocol_version(self.version),
        ));
        if let Some(ua) = self.user_agent {
            a.push(kv("user_agent.original", ua));
        }
        if let Some(id) = self.correlation_id.as_ref().and_then(|v| v.to_str().ok()) {
            a.push(kv("tracegate.correlation_id", id.to_string()));
        }
        if let Some(c) = &self.client {
            a.push(kv("tracegate.upstream", shared(&c.target.upstream)));
        }
        a.push(kv("tracegate.sampling.reason", self.sampling.as_str()));
        if let Some(f) = self.propagation_source {
            a.push(kv("tracegate.propagation.format", f.as_str()));
        }
        for (k, v) in self.baggage {
            a.push(KeyValue::new(format!("baggage.{k}"), v));
        }
        push_headers(&mut a, "http.request.header.", self.request_headers);
        push_headers(&mut a, "http.response.header.", self.response_headers);
        for (k, v) in self.attributes.iter() {
            a.push(KeyValue::new(k.clone(), v.clone()));
        }
        // `error.type`: tracegate's own reason, else the status code of a 5xx.
        let server_error: Option<String> = self
            .error_type
            .map(str::to_string)
            .or_else(|| (self.status >= 500).then(|| self.status.to_string()));
        if let Some(e) = &server_error {
            a.push(kv("error.type", e.clone()));
        }
        let grpc_status = self.grpc.as_ref().and_then(|g| g.status);
        if let Some(g) = &self.grpc {
            push_grpc(&mut a, g);
        }
        // Server spans: 5xx or a failed exchange is an error, 4xx is not; for gRPC, the codes
        // the conventions name for servers.
        let status = if self.status >= 500 || (self.error_type.is_some() && self.status < 400) {
            Status::error(server_error.unwrap_or_else(|| "error".into()))
        } else if let Some(code) = grpc_status.filter(|c| grpc_server_error(*c)) {
            Status::error(format!("grpc status {code}"))
        } else {
            Status::Unset
        };
        let server_id = SpanId::from_bytes(self.ids.server_span);
        // The trace state is copied for every span but the last one, which takes it.
        let server_state = if any_client {
            trace_state.clone()
        } else {
            std::mem::take(&mut trace_state)
        };
        out.push(SpanData {
            span_context: SpanContext::new(trace_id, server_id, flags, false, server_state),
            parent_span_id: self
                .ids
                .remote_parent
                .map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: self.ids.remote_parent.is_some(),
            span_kind: SpanKind::Server,
            name: server_name,
            start_time: self.start,
            end_time: end,
            attributes: a,
            dropped_attributes_count: 0,
            events: server_events,
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        });

        let (path, query) = url_parts.unwrap_or_default();
        let mut calls = self
            .retried
            .into_iter()
            .chain(self.client)
            .filter(|c| c.recorded)
            .peekable();
        while let Some(c) = calls.next() {
            let state = if calls.peek().is_some() {
                trace_state.clone()
            } else {
                std::mem::take(&mut trace_state)
            };
            let mut u = String::with_capacity(
                c.target.base_url.len() + path.len() + query.as_ref().map_or(0, |q| q.len() + 1),
            );
            u.push_str(&c.target.base_url);
            u.push_str(&path);
            if let Some(q) = &query {
                u.push('?');
                u.push_str(q);
            }
            let mut a = Vec::with_capacity(10);
            push_method(&mut a, &self.method);
            a.push(kv("server.address", shared(&c.target.host)));
            a.push(KeyValue::new(
                Key::from_static_str("server.port"),
                i64::from(c.target.port),
            ));
            a.push(kv("network.peer.address", shared(&c.target.peer)));
            a.push(KeyValue::new(
                Key::from_static_str("network.peer.port"),
                i64::from(c.target.port),
            ));
            a.push(kv("url.full", u));
            if c.resend_count > 0 {
                a.push(KeyValue::new(
                    Key::from_static_str("http.request.resend_count"),
                    i64::from(c.resend_count),
                ));
            }
            a.push(kv("tracegate.upstream", shared(&c.target.upstream)));
            a.push(kv("tracegate.sampling.reason", self.sampling.as_str()));
            for (k, v) in self.attributes.iter() {
                a.push(KeyValue::new(k.clone(), v.clone()));
            }
            if let Some(g) = &self.grpc {
                push_grpc(&mut a, g);
            }
            if let Some(s) = c.status {
                a.push(KeyValue::new(
                    Key::from_static_str("http.response.status_code"),
                    i64::from(s),
                ));
            }
            // Client spans: 4xx and 5xx are errors, and so is a call with no response.
            let client_error: Option<String> = c
                .error_type
                .map(str::to_string)
                .or_else(|| c.status.filter(|s| *s >= 400).map(|s| s.to_string()));
            if let Some(e) = &client_error {
                a.push(kv("error.type", e.clone()));
            }
            // A failed call carries an `exception` event with what the connection said.
            let mut events = SpanEvents::default();
            if let (Some(kind), Some(detail)) = (c.error_type, c.error_detail) {
                events.events.push(opentelemetry::trace::Event::new(
                    "exception",
                    self.start + c.end.unwrap_or(self.duration),
                    vec![kv("exception.type", kind), kv("exception.message", detail)],
                    0,
                ));
            }
            out.push(SpanData {
                span_context: SpanContext::new(
                    trace_id,
                    SpanId::from_bytes(c.span_id),
                    flags,
                    false,
                    state,
                ),
                parent_span_id: server_id,
                parent_span_is_remote: false,
                span_kind: SpanKind::Client,
                name: Cow::Borrowed(method.unwrap_or("HTTP")),
                start_time: self.start + c.start,
                end_time: self.start + c.end.unwrap_or(self.duration),
                attributes: a,
                dropped_attributes_count: 0,
                events,
                links: SpanLinks::default(),
                // Client spans: any failure, and for gRPC any code but OK.
                status: match (client_error, grpc_status) {
                    (Some(e), _) => Status::error(e),
                    (None, Some(code)) if code != 0 => Status::error(format!("grpc status {code}")),
                    _ => Status::Unset,
                },
                instrumentation_scope: scope.clone(),
            });
        }
    }

    /// The Opt-In attributes `tracing.opt_in_attributes` asks for.
    fn push_opt_in(&self, a: &mut Vec<KeyValue>) {
        let o = self.opt_in;
        if o == OptIn::default() {
            return;
        }
        let int = |key: &'static str, v: u64| {
            KeyValue::new(
                Key::from_static_str(key),
                i64::try_from(v).unwrap_or(i64::MAX),
            )
        };
        if o.has(OptIn::CLIENT_PORT) {
            a.push(int("client.port", self.peer.port().into()));
        }
        if o.has(OptIn::LOCAL_ADDRESS) {
            a.push(kv("network.local.address", ip_value(self.local.ip())));
        }
        if o.has(OptIn::LOCAL_PORT) {
            a.push(int("network.local.port", self.local.port().into()));
        }
        if o.has(OptIn::TRANSPORT) {
            a.push(kv("network.transport", "tcp"));
        }
        if o.has(OptIn::REQUEST_BODY_SIZE) {
            let n = self
                .bytes_in
                .as_ref()
                .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed));
            a.push(int("http.request.body.size", n));
        }
        if o.has(OptIn::RESPONSE_BODY_SIZE) {
            a.push(int("http.response.body.size", self.bytes_sent));
        }
    }
}

fn kv(key: &'static str, value: impl Into<Value>) -> KeyValue {
    KeyValue::new(Key::from_static_str(key), value)
}

/// Addresses kept formatted per exporting thread; past this many distinct ones the cache
/// starts over, so a flood of new client addresses costs formatting, never memory.
const IP_CACHE: usize = 4096;

/// An IP address as a span value. Peers and local addresses repeat from request to
/// request, so each is formatted once on the exporting thread and then shared, instead of a
/// new string per span.
fn ip_value(ip: IpAddr) -> Value {
    thread_local! {
        static IPS: RefCell<HashMap<IpAddr, Arc<str>>> = RefCell::new(HashMap::new());
    }
    IPS.with_borrow_mut(|ips| {
        if ips.len() >= IP_CACHE && !ips.contains_key(&ip) {
            ips.clear();
        }
        let s = ips.entry(ip).or_insert_with(|| ip.to_string().into());
        Value::String(opentelemetry::StringValue::from(s.clone()))
    })
}

/// A string the exchange shares with others (route names, upstream targets): the span
/// value points at it instead of copying it.
fn shared(s: &Arc<str>) -> Value {
    Value::String(opentelemetry::StringValue::from(s.clone()))
}

/// The method as the conventions name it, or `None` for a method outside the known set.
pub fn known_method(m: &Method) -> Option<&'static str> {
    Some(match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return None,
    })
}

/// `http.request.method`, with `_OTHER` plus `http.request.method_original` for unknown ones.
fn push_method(a: &mut Vec<KeyValue>, m: &Method) {
    match known_method(m) {
        Some(name) => a.push(kv("http.request.method", name)),
        None => {
            a.push(kv("http.request.method", "_OTHER"));
            a.push(kv("http.request.method_original", m.as_str().to_string()));
        }
    }
}

fn protocol_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// Headers as the conventions record them: one string-array attribute per lowercase name.
fn push_headers(a: &mut Vec<KeyValue>, prefix: &str, headers: Headers) {
    let mut grouped: Vec<(http::HeaderName, Vec<opentelemetry::StringValue>)> = Vec::new();
    for (name, value) in headers {
        match grouped.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value.into()),
            None => grouped.push((name, vec![value.into()])),
        }
    }
    for (name, values) in grouped {
        a.push(KeyValue::new(
            format!("{prefix}{}", name.as_str()),
            Value::Array(opentelemetry::Array::String(values)),
        ));
    }
}

fn push_grpc(a: &mut Vec<KeyValue>, g: &Grpc) {
    a.push(kv("rpc.system", "grpc"));
    a.push(kv("rpc.service", g.service.clone()));
    a.push(kv("rpc.method", g.method.clone()));
    if let Some(code) = g.status {
        a.push(KeyValue::new(
            Key::from_static_str("rpc.grpc.status_code"),
            i64::from(code),
        ));
    }
}
