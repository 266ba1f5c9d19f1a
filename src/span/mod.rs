//! Step 6 of the request path: what one exchange records, and what its spans contain.
//!
//! The request path fills an [`Exchange`]: plain fields, a few owned strings, no attribute
//! vectors. Off the request path, [`Exchange::write_spans`] describes its SERVER span and
//! (by default) a CLIENT span per upstream attempt with the stable HTTP semantic
//! conventions, to a [`SpanSink`]: the OTLP encoder or the trace viewer.

mod sink;
pub mod spare;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use http::header::HeaderName;
use http::{Method, Version};

pub use sink::{
    Block, Fixed, FixedAttr, FixedKey, IpText, Key, Kind, SpanHead, SpanSink, Val, nanos_of,
    unix_nanos,
};
pub(crate) use sink::{fixed_attr, fixed_key};

use crate::capture::Headers;
use crate::context::correlation::IdValue;
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
    /// What every CLIENT span to it says of it: `server.address`, `server.port`,
    /// `network.peer.address`, `network.peer.port` and `tracegate.upstream`.
    pub attrs: Block,
    /// What the SERVER span says of it: `tracegate.upstream`.
    pub upstream_attr: Block,
}

impl Target {
    pub fn new(
        upstream: Arc<str>,
        host: &str,
        peer: Option<&str>,
        port: u16,
        base_url: &str,
        tls: bool,
    ) -> Target {
        let peer = peer.unwrap_or(host);
        let text = |s: &str| Fixed::Str(Cow::Owned(s.to_string()));
        let attrs = Block::new(vec![
            ("server.address".into(), text(host)),
            ("server.port".into(), Fixed::Int(i64::from(port))),
            ("network.peer.address".into(), text(peer)),
            ("network.peer.port".into(), Fixed::Int(i64::from(port))),
            ("tracegate.upstream".into(), text(&upstream)),
        ]);
        let upstream_attr = Block::new(vec![("tracegate.upstream".into(), text(&upstream))]);
        Target {
            host: Arc::from(host),
            peer: Arc::from(peer),
            upstream,
            port,
            base_url: Arc::from(base_url),
            tls,
            attrs,
            upstream_attr,
        }
    }
}

/// What the SERVER span says of the connection a request came on: `client.address` (the
/// peer, unless a trusted proxy names another client), `network.peer.address`,
/// `network.peer.port`, `url.scheme` and the TLS session's `tls.*`. The same for every
/// request on the connection: made once per connection, and the OTLP encoder keeps their
/// encoding ([`Block`]) instead of writing four to seven attributes per span.
#[derive(Debug)]
pub struct ConnAttrs {
    /// With `client.address`, the peer.
    peer_client: Block,
    /// Without it, for requests whose client a trusted proxy names: made at the first one.
    other_client: OnceLock<Block>,
}

impl ConnAttrs {
    /// `peer_ip`: the peer's address as text ([`IpText`]), which the connection also needs
    /// for `X-Forwarded-For`.
    pub fn new(peer: SocketAddr, peer_ip: &str, tls: Option<&crate::tls::TlsInfo>) -> ConnAttrs {
        let text = |s: &str| Fixed::Str(Cow::Owned(s.to_string()));
        let fixed = |s: &'static str| Fixed::Str(Cow::Borrowed(s));
        let mut attrs = vec![
            ("client.address".into(), text(peer_ip)),
            ("network.peer.address".into(), text(peer_ip)),
            (
                "network.peer.port".into(),
                Fixed::Int(i64::from(peer.port())),
            ),
        ];
        match tls {
            None => attrs.push(("url.scheme".into(), fixed("http"))),
            Some(t) => {
                attrs.push(("url.scheme".into(), fixed("https")));
                attrs.push(("tls.protocol.name".into(), fixed("tls")));
                attrs.push(("tls.protocol.version".into(), fixed(t.version)));
                if let Some(s) = &t.client_subject {
                    attrs.push(("tls.client.subject".into(), text(s)));
                }
            }
        }
        ConnAttrs {
            peer_client: Block::new(attrs),
            other_client: OnceLock::new(),
        }
    }

    /// The attributes for a request whose client is the peer, or another (then without
    /// `client.address`, which the request has to say).
    pub fn block(&self, client_is_peer: bool) -> &Block {
        if client_is_peer {
            &self.peer_client
        } else {
            self.other_client
                .get_or_init(|| self.peer_client.without("client.address"))
        }
    }
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
    /// The HTTP version the upstream answered in (`network.protocol.version`); `None`
    /// without an answer.
    pub version: Option<Version>,
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
            version: None,
            error_type: None,
            error_detail: None,
            resend_count,
            recorded,
        }
    }
}

/// The request's path, query, `Host` name and `User-Agent` as recorded, in one allocation:
/// four `String`s were up to four allocations and four frees per request.
#[derive(Clone, Debug, Default)]
pub struct RequestText {
    text: String,
    /// Where each part ends in `text` (path, query, host, user agent); `None`: absent.
    ends: [Option<usize>; 4],
}

impl RequestText {
    pub fn new(
        path: &str,
        query: Option<&str>,
        server_address: Option<&str>,
        user_agent: Option<&str>,
    ) -> RequestText {
        let parts = [Some(path), query, server_address, user_agent];
        let mut text = String::with_capacity(parts.iter().flatten().map(|p| p.len()).sum());
        let ends = parts.map(|p| {
            p.map(|p| {
                text.push_str(p);
                text.len()
            })
        });
        RequestText { text, ends }
    }

    fn part(&self, i: usize) -> Option<&str> {
        let end = self.ends[i]?;
        let start = self.ends[..i].iter().rev().flatten().next().copied();
        Some(&self.text[start.unwrap_or(0)..end])
    }

    pub fn path(&self) -> &str {
        self.part(0).unwrap_or("")
    }

    pub fn query(&self) -> Option<&str> {
        self.part(1)
    }

    /// The `Host` header's name (without the port).
    pub fn server_address(&self) -> Option<&str> {
        self.part(2)
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.part(3)
    }

    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
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
    /// Path, query, `Host` name and `User-Agent`.
    pub text: RequestText,
    pub route: Option<Arc<str>>,
    pub status: u16,
    pub server_port: Option<u16>,
    /// What the connection it came on says (peer, scheme, TLS), shared by its requests.
    pub conn: Arc<ConnAttrs>,
    /// The protocol the client asked to switch to (`Upgrade`), if any.
    pub upgrade: Option<String>,
    /// The client named by `X-Forwarded-For` when the peer is a trusted proxy.
    pub client_address: Option<std::net::IpAddr>,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub version: Version,
    pub correlation_id: Option<IdValue>,
    /// The header the correlation id travels under (back to the client too).
    pub correlation_header: Option<HeaderName>,
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
    pub attributes: Arc<Block>,
    pub grpc: Option<Grpc>,
    /// False for excluded requests: logged, never exported, no trace ids shown.
    pub traced: bool,
    /// Request body bytes sent upstream, when there was a body.
    pub bytes_in: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Opt-In attributes to record (`tracing.opt_in_attributes`).
    pub opt_in: OptIn,
}

impl Exchange {
    /// An exchange with nothing recorded yet, for a request to fill in ([`spare::fill`])
    /// when no spare one is at hand. `started`, `conn` and `attributes`: the request's own
    /// (no clock read, and no empty values that would allocate, only to be replaced).
    pub fn blank(started: Instant, conn: Arc<ConnAttrs>, attributes: Arc<Block>) -> Exchange {
        let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
        Exchange {
            ids: TraceIds {
                trace_id: [0; 16],
                remote_parent: None,
                server_span: [0; 8],
                flags: 0,
            },
            tracestate: None,
            start: SystemTime::UNIX_EPOCH,
            started,
            duration: Duration::ZERO,
            method: Method::GET,
            text: RequestText::default(),
            route: None,
            status: 0,
            server_port: None,
            conn,
            upgrade: None,
            client_address: None,
            local: nowhere,
            peer: nowhere,
            version: Version::HTTP_11,
            correlation_id: None,
            correlation_header: None,
            error_type: None,
            bytes_sent: 0,
            client: None,
            retried: Vec::new(),
            sampling: Reason::Ratio,
            tail: TailRule {
                keep_errors: false,
                slow: None,
            },
            propagation_source: None,
            baggage: Vec::new(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            attributes,
            grpc: None,
            traced: false,
            bytes_in: None,
            opt_in: OptIn::default(),
        }
    }

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
            + self.text.len()
            + self.tracestate.as_ref().map_or(0, String::len)
            + self
                .correlation_id
                .as_ref()
                .map_or(0, |v| v.as_bytes().len())
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

    /// Describes the exchange's spans to `out`: the SERVER span, then a CLIENT span per
    /// recorded upstream attempt, with the stable HTTP semantic conventions.
    pub fn write_spans(&self, out: &mut impl SpanSink) {
        let method = known_method(&self.method);
        let route = self.route.as_deref();
        let trace_state = self.tracestate.as_deref().unwrap_or("");
        // Times are offsets from the start: the clock is read once per exchange.
        let start = unix_nanos(self.start);
        out.begin(&SpanHead {
            trace_id: self.ids.trace_id,
            span_id: self.ids.server_span,
            parent: self.ids.remote_parent.map(|p| (p, true)),
            flags: self.ids.flags,
            trace_state,
            kind: Kind::Server,
            name: (method.unwrap_or("HTTP"), route),
            start,
            end: start.saturating_add(nanos_of(self.duration)),
        });
        self.server_attributes(out);
        // Each retry is an event on the SERVER span.
        for c in &self.retried {
            out.event(
                "retry",
                start.saturating_add(nanos_of(c.end.unwrap_or(self.duration))),
                &[
                    (
                        "http.request.resend_count",
                        Val::Int(i64::from(c.resend_count + 1)),
                    ),
                    ("error.type", Val::Str(c.error_type.unwrap_or("error"))),
                    (
                        "exception.message",
                        Val::Str(c.error_detail.as_deref().unwrap_or("")),
                    ),
                ],
            );
        }
        // Server spans: 5xx or a failed exchange is an error, 4xx is not; for gRPC, the codes
        // the conventions name for servers.
        let grpc_status = self.grpc.as_ref().and_then(|g| g.status);
        let server_error = self.server_error();
        if self.status >= 500 || (self.error_type.is_some() && self.status < 400) {
            out.end(Some(server_error.as_deref().unwrap_or("error")));
        } else if let Some(code) = grpc_status.filter(|c| grpc_server_error(*c)) {
            out.end(Some(&format!("grpc status {code}")));
        } else {
            out.end(None);
        }

        for c in self.retried.iter().chain(&self.client) {
            if c.recorded {
                self.write_client(c, trace_state, start, out);
            }
        }
    }

    /// `error.type` of the SERVER span: tracegate's own reason, else the status of a 5xx.
    fn server_error(&self) -> Option<Cow<'static, str>> {
        self.error_type
            .map(Cow::Borrowed)
            .or_else(|| (self.status >= 500).then(|| Cow::Owned(self.status.to_string())))
    }

    fn server_attributes(&self, out: &mut impl SpanSink) {
        write_method(out, &self.method);
        self.write_opt_in(out);
        str(out, fixed_key!("url.path"), self.text.path());
        if let Some(q) = self.text.query() {
            str(out, fixed_key!("url.query"), q);
        }
        if let Some(u) = &self.upgrade {
            str(out, fixed_key!("tracegate.upgrade"), u);
        }
        if let Some(r) = &self.route {
            str(out, fixed_key!("http.route"), r);
        }
        int(
            out,
            fixed_key!("http.response.status_code"),
            i64::from(self.status),
        );
        if let Some(h) = self.text.server_address() {
            str(out, fixed_key!("server.address"), h);
        }
        if let Some(p) = self.server_port {
            int(out, fixed_key!("server.port"), i64::from(p));
        }
        // `client.address`, `network.peer.*`, `url.scheme`, `tls.*`.
        if let Some(ip) = self.client_address {
            str(out, fixed_key!("client.address"), IpText::new(ip).as_str());
        }
        out.block(self.conn.block(self.client_address.is_none()));
        // `network.protocol.name` is only required when it is not `http`: it always is.
        out.fixed(protocol_version(self.version));
        if let Some(ua) = self.text.user_agent() {
            str(out, fixed_key!("user_agent.original"), ua);
        }
        if let Some(id) = &self.correlation_id {
            out.keyed(
                fixed_key!("tracegate.correlation_id"),
                Val::Ascii(id.as_bytes()),
            );
        }
        if let Some(c) = &self.client {
            out.block(&c.target.upstream_attr);
        }
        out.fixed(sampling_reason(self.sampling));
        if let Some(f) = self.propagation_source {
            out.fixed(propagation_format(f));
        }
        for (k, v) in &self.baggage {
            out.attr(Key("baggage.", k), Val::Str(v));
        }
        write_headers(out, "http.request.header.", &self.request_headers);
        write_headers(out, "http.response.header.", &self.response_headers);
        out.block(&self.attributes);
        if let Some(e) = self.server_error() {
            str(out, fixed_key!("error.type"), &e);
        }
        if let Some(g) = &self.grpc {
            write_grpc(out, g);
        }
    }

    /// One CLIENT span: an upstream attempt, child of the SERVER span.
    /// `start`: the exchange's, in nanoseconds since the Unix epoch.
    fn write_client(&self, c: &ClientCall, trace_state: &str, start: u64, out: &mut impl SpanSink) {
        let end = start.saturating_add(nanos_of(c.end.unwrap_or(self.duration)));
        out.begin(&SpanHead {
            trace_id: self.ids.trace_id,
            span_id: c.span_id,
            parent: Some((self.ids.server_span, false)),
            flags: self.ids.flags,
            trace_state,
            kind: Kind::Client,
            name: (known_method(&self.method).unwrap_or("HTTP"), None),
            start: start.saturating_add(nanos_of(c.start)),
            end,
        });
        write_method(out, &self.method);
        // `server.*`, `network.peer.*` and `tracegate.upstream`.
        out.block(&c.target.attrs);
        let url: &[&str] = match self.text.query() {
            Some(q) => &[&c.target.base_url, self.text.path(), "?", q],
            None => &[&c.target.base_url, self.text.path()],
        };
        out.keyed(fixed_key!("url.full"), Val::Parts(url));
        if c.resend_count > 0 {
            int(
                out,
                fixed_key!("http.request.resend_count"),
                i64::from(c.resend_count),
            );
        }
        out.fixed(sampling_reason(self.sampling));
        out.block(&self.attributes);
        if let Some(g) = &self.grpc {
            write_grpc(out, g);
        }
        if let Some(s) = c.status {
            int(out, fixed_key!("http.response.status_code"), i64::from(s));
        }
        // The version spoken with the upstream (HTTP/2 over `h2c` or by ALPN); unknown
        // without an answer, and then left out.
        if let Some(v) = c.version {
            out.fixed(protocol_version(v));
        }
        // Client spans: 4xx and 5xx are errors, and so is a call with no response.
        let client_error: Option<Cow<'static, str>> =
            c.error_type.map(Cow::Borrowed).or_else(|| {
                c.status
                    .filter(|s| *s >= 400)
                    .map(|s| Cow::Owned(s.to_string()))
            });
        if let Some(e) = &client_error {
            str(out, fixed_key!("error.type"), e);
        }
        // A failed call carries an `exception` event with what the connection said.
        if let (Some(kind), Some(detail)) = (c.error_type, &c.error_detail) {
            out.event(
                "exception",
                end,
                &[
                    ("exception.type", Val::Str(kind)),
                    ("exception.message", Val::Str(detail)),
                ],
            );
        }
        // Client spans: any failure, and for gRPC any code but OK.
        match (client_error, self.grpc.as_ref().and_then(|g| g.status)) {
            (Some(e), _) => out.end(Some(&e)),
            (None, Some(code)) if code != 0 => out.end(Some(&format!("grpc status {code}"))),
            _ => out.end(None),
        }
    }

    /// The Opt-In attributes `tracing.opt_in_attributes` asks for.
    fn write_opt_in(&self, out: &mut impl SpanSink) {
        let o = self.opt_in;
        if o == OptIn::default() {
            return;
        }
        // Counts and sizes are unsigned; OTLP integers are i64.
        let count = |out: &mut _, key, v: u64| int(out, key, i64::try_from(v).unwrap_or(i64::MAX));
        if o.has(OptIn::CLIENT_PORT) {
            count(out, fixed_key!("client.port"), self.peer.port().into());
        }
        if o.has(OptIn::LOCAL_ADDRESS) {
            let local = IpText::new(self.local.ip());
            str(out, fixed_key!("network.local.address"), local.as_str());
        }
        if o.has(OptIn::LOCAL_PORT) {
            count(
                out,
                fixed_key!("network.local.port"),
                self.local.port().into(),
            );
        }
        if o.has(OptIn::TRANSPORT) {
            out.fixed(fixed_attr!("network.transport", "tcp"));
        }
        if o.has(OptIn::REQUEST_BODY_SIZE) {
            let n = self
                .bytes_in
                .as_ref()
                .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed));
            count(out, fixed_key!("http.request.body.size"), n);
        }
        if o.has(OptIn::RESPONSE_BODY_SIZE) {
            count(out, fixed_key!("http.response.body.size"), self.bytes_sent);
        }
    }
}

/// The method as the conventions name it, or `None` for a method outside the known set.
pub fn known_method(m: &Method) -> Option<&'static str> {
    method_attr(m).map(|a| a.value)
}

/// `http.request.method` of a known method: the table [`known_method`] reads too.
fn method_attr(m: &Method) -> Option<&'static FixedAttr> {
    Some(match *m {
        Method::GET => fixed_attr!("http.request.method", "GET"),
        Method::POST => fixed_attr!("http.request.method", "POST"),
        Method::PUT => fixed_attr!("http.request.method", "PUT"),
        Method::DELETE => fixed_attr!("http.request.method", "DELETE"),
        Method::HEAD => fixed_attr!("http.request.method", "HEAD"),
        Method::OPTIONS => fixed_attr!("http.request.method", "OPTIONS"),
        Method::PATCH => fixed_attr!("http.request.method", "PATCH"),
        Method::CONNECT => fixed_attr!("http.request.method", "CONNECT"),
        Method::TRACE => fixed_attr!("http.request.method", "TRACE"),
        _ => return None,
    })
}

/// `http.request.method`, with `_OTHER` plus `http.request.method_original` for unknown ones.
fn write_method(out: &mut impl SpanSink, m: &Method) {
    match method_attr(m) {
        Some(attr) => out.fixed(attr),
        None => {
            str(out, fixed_key!("http.request.method"), "_OTHER");
            str(out, fixed_key!("http.request.method_original"), m.as_str());
        }
    }
}

/// `network.protocol.version`.
fn protocol_version(v: Version) -> &'static FixedAttr {
    match v {
        Version::HTTP_09 => fixed_attr!("network.protocol.version", "0.9"),
        Version::HTTP_10 => fixed_attr!("network.protocol.version", "1.0"),
        Version::HTTP_2 => fixed_attr!("network.protocol.version", "2"),
        Version::HTTP_3 => fixed_attr!("network.protocol.version", "3"),
        _ => fixed_attr!("network.protocol.version", "1.1"),
    }
}

/// A `match` of `value` giving, for each listed variant, the fixed attribute `key` with the
/// variant's `as_str()` for value.
macro_rules! named {
    ($value:expr, $key:literal, $($variant:path),+ $(,)?) => {
        match $value {
            $($variant => fixed_attr!($key, $variant.as_str()),)+
        }
    };
}

/// `tracegate.sampling.reason`.
fn sampling_reason(r: Reason) -> &'static FixedAttr {
    named!(
        r,
        "tracegate.sampling.reason",
        Reason::Parent,
        Reason::Ratio,
        Reason::RateLimited,
        Reason::Error,
        Reason::Slow,
    )
}

/// `tracegate.propagation.format`.
fn propagation_format(f: Format) -> &'static FixedAttr {
    named!(
        f,
        "tracegate.propagation.format",
        Format::TraceContext,
        Format::Baggage,
        Format::B3,
        Format::B3Multi,
        Format::Jaeger,
    )
}

/// Every fixed attribute the spans carry, for the tests of their encoding.
#[cfg(test)]
pub fn fixed_attrs() -> Vec<&'static FixedAttr> {
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
        Method::CONNECT,
        Method::TRACE,
    ];
    let versions = [
        Version::HTTP_09,
        Version::HTTP_10,
        Version::HTTP_11,
        Version::HTTP_2,
        Version::HTTP_3,
    ];
    methods
        .iter()
        .filter_map(method_attr)
        .chain(versions.map(protocol_version))
        .chain(Reason::ALL.map(sampling_reason))
        .chain(Format::ALL.map(propagation_format))
        .chain([
            fixed_attr!("network.transport", "tcp"),
            fixed_attr!("rpc.system", "grpc"),
        ])
        .collect()
}

/// Headers as the conventions record them: one string-array attribute per lowercase name,
/// in the order the names first arrived.
fn write_headers(out: &mut impl SpanSink, prefix: &'static str, headers: &Headers) {
    for (i, (name, _)) in headers.iter().enumerate() {
        if headers[..i].iter().all(|(n, _)| n != name) {
            out.attr(Key(prefix, name.as_str()), Val::Header(headers, name));
        }
    }
}

fn str(out: &mut impl SpanSink, key: &'static FixedKey, v: &str) {
    out.keyed(key, Val::Str(v));
}

fn int(out: &mut impl SpanSink, key: &'static FixedKey, v: i64) {
    out.keyed(key, Val::Int(v));
}

fn write_grpc(out: &mut impl SpanSink, g: &Grpc) {
    out.fixed(fixed_attr!("rpc.system", "grpc"));
    str(out, fixed_key!("rpc.service"), &g.service);
    str(out, fixed_key!("rpc.method"), &g.method);
    if let Some(code) = g.status {
        int(out, fixed_key!("rpc.grpc.status_code"), i64::from(code));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_attributes_say_what_the_exchange_says() {
        for m in [
            "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
        ] {
            let m: Method = m.parse().unwrap();
            let a = method_attr(&m).unwrap();
            assert_eq!(
                (a.key, Some(a.value)),
                ("http.request.method", known_method(&m))
            );
        }
        assert!(method_attr(&Method::from_bytes(b"PURGE").unwrap()).is_none());
        for (v, text) in [
            (Version::HTTP_09, "0.9"),
            (Version::HTTP_10, "1.0"),
            (Version::HTTP_11, "1.1"),
            (Version::HTTP_2, "2"),
            (Version::HTTP_3, "3"),
        ] {
            let a = protocol_version(v);
            assert_eq!((a.key, a.value), ("network.protocol.version", text));
        }
        for r in Reason::ALL {
            let a = sampling_reason(r);
            assert_eq!((a.key, a.value), ("tracegate.sampling.reason", r.as_str()));
        }
        for f in Format::ALL {
            let a = propagation_format(f);
            assert_eq!(
                (a.key, a.value),
                ("tracegate.propagation.format", f.as_str())
            );
        }
    }

    #[test]
    fn request_text_gives_back_each_part_present_or_absent() {
        let all = RequestText::new("/api/x", Some("a=1"), Some("shop.example"), Some("curl/8"));
        assert_eq!(all.path(), "/api/x");
        assert_eq!(all.query(), Some("a=1"));
        assert_eq!(all.server_address(), Some("shop.example"));
        assert_eq!(all.user_agent(), Some("curl/8"));
        assert_eq!(all.len(), "/api/xa=1shop.examplecurl/8".len());

        let gaps = RequestText::new("/", None, Some("h"), None);
        assert_eq!((gaps.path(), gaps.query()), ("/", None));
        assert_eq!(
            (gaps.server_address(), gaps.user_agent()),
            (Some("h"), None)
        );

        // Empty parts stay present; a part after a gap starts where the last present one
        // ended.
        let empty = RequestText::new("", Some(""), None, Some("ua ünï"));
        assert_eq!((empty.path(), empty.query()), ("", Some("")));
        assert_eq!(
            (empty.server_address(), empty.user_agent()),
            (None, Some("ua ünï"))
        );

        let none = RequestText::default();
        assert_eq!(none.path(), "");
        assert!(none.query().is_none() && none.user_agent().is_none() && none.is_empty());
    }
}
