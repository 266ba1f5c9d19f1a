//! Real peers for integration tests, all on 127.0.0.1:0: an upstream that records what it
//! saw, OTLP receivers over gRPC (tonic) and HTTP/protobuf that decode what they get, HTTP/1.1
//! and h2c clients, and tracegate itself in-process.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types
)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracegate::config::{Env, load};
use tracegate::gateway::Gateway;

pub mod pki;

/// Upper bound for waiting on something that should happen; a failure, not a threshold.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body_len: u64,
}

/// Collects items and wakes waiters.
pub struct Log<T> {
    items: Mutex<Vec<T>>,
    notify: Notify,
}

impl<T> Default for Log<T> {
    fn default() -> Self {
        Log {
            items: Mutex::new(Vec::new()),
            notify: Notify::new(),
        }
    }
}

impl<T: Clone> Log<T> {
    pub fn push(&self, t: T) {
        self.items.lock().unwrap().push(t);
        self.notify.notify_waiters();
    }

    pub fn all(&self) -> Vec<T> {
        self.items.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.items.lock().unwrap().len()
    }

    /// Waits until at least `n` items arrived (panics after `PATIENCE`).
    pub async fn wait_for(&self, n: usize) -> Vec<T> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let notified = self.notify.notified();
            {
                let items = self.items.lock().unwrap();
                if items.len() >= n {
                    return items.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("waited {PATIENCE:?} for {n} items, have {}", self.len());
            }
        }
    }
}

/// A body of `left` bytes made of one repeated chunk, produced as it is read.
pub struct Repeat {
    pub chunk: Bytes,
    pub left: u64,
    /// Bytes produced so far, and bodies dropped before their end, when counted.
    counters: Option<(Arc<AtomicU64>, Arc<AtomicUsize>)>,
}

impl Repeat {
    pub fn new(total: u64) -> Self {
        Repeat {
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
            left: total,
            counters: None,
        }
    }
}

impl Drop for Repeat {
    fn drop(&mut self) {
        if let Some((_, cut)) = &self.counters
            && self.left > 0
        {
            cut.fetch_add(1, SeqCst);
        }
    }
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        if let Some((produced, _)) = &self.counters {
            produced.fetch_add(n as u64, SeqCst);
        }
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// A body that sends `first`, pauses, then sends `second` and ends.
pub struct Trickle {
    sent: u8,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.sent {
            0 => {
                self.sent = 1;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first ")))))
            }
            1 => {
                std::task::ready!(self.pause.as_mut().poll(cx));
                self.sent = 2;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"second")))))
            }
            _ => Poll::Ready(None),
        }
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn boxed<B: Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static>(b: B) -> BoxBody {
    BoxBody::new(b)
}

/// The test upstream. Paths: `/slow/{ms}`, `/bytes/{n}`, `/trickle/{ms}` (a chunk, a pause, a
/// chunk), `/status/{code}`; anything else
/// answers 200 `ok`. Every request's body is read to the end and counted.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Log<Seen>>,
    /// TCP connections accepted so far.
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    /// Requests whose body arrived complete: path and body length.
    pub bodies: Arc<Log<(String, u64)>>,
    /// Request bodies that ended in an error (the sender went away).
    pub broken_bodies: Arc<AtomicUsize>,
    /// `/bytes` bodies: bytes produced so far, and bodies dropped before their end.
    pub produced: Arc<AtomicU64>,
    pub cut_responses: Arc<AtomicUsize>,
}

/// What the upstream counts about bodies.
#[derive(Clone, Default)]
struct Counters {
    broken_bodies: Arc<AtomicUsize>,
    produced: Arc<AtomicU64>,
    cut_responses: Arc<AtomicUsize>,
}

pub async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Log<Seen>> = Arc::default();
    let accepted: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
    let bodies: Arc<Log<(String, u64)>> = Arc::default();
    let log = seen.clone();
    let done = bodies.clone();
    let count = accepted.clone();
    let counters = Counters::default();
    let c = counters.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (log, done, c) = (log.clone(), done.clone(), c.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (log, done, c) = (log.clone(), done.clone(), c.clone());
                    async move { Ok::<_, Infallible>(upstream_answer(req, &log, &done, &c).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        seen,
        accepted,
        bodies,
        broken_bodies: counters.broken_bodies,
        produced: counters.produced,
        cut_responses: counters.cut_responses,
    }
}

async fn upstream_answer(
    req: Request<Incoming>,
    log: &Log<Seen>,
    bodies: &Log<(String, u64)>,
    counters: &Counters,
) -> Response<BoxBody> {
    let (parts, mut body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let mut seen = Seen {
        method: parts.method.to_string(),
        path: path.clone(),
        headers: parts.headers,
        body_len: 0,
    };
    // Recorded before the body is read, so a test can act while a request is in flight.
    log.push(seen.clone());
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(d) = frame.data_ref() {
                    seen.body_len += d.len() as u64;
                }
            }
            Err(_) => {
                complete = false;
                counters.broken_bodies.fetch_add(1, SeqCst);
                break;
            }
        }
    }
    if complete {
        bodies.push((path.clone(), seen.body_len));
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["slow", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            Response::new(boxed(Full::new(Bytes::from_static(b"slow ok"))))
        }
        ["bytes", n] => {
            let mut body = Repeat::new(n.parse().unwrap_or(0));
            body.counters = Some((counters.produced.clone(), counters.cut_responses.clone()));
            Response::new(boxed(body))
        }
        ["trickle", ms] => Response::new(boxed(Trickle {
            sent: 0,
            pause: Box::pin(tokio::time::sleep(Duration::from_millis(
                ms.parse().unwrap_or(0),
            ))),
        })),
        ["status", code] => {
            let mut r = Response::new(boxed(Full::new(Bytes::from_static(b"status"))));
            *r.status_mut() = StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
            r
        }
        ["upload"] => Response::new(boxed(Full::new(Bytes::from(seen.body_len.to_string())))),
        _ => {
            let mut r = Response::new(boxed(Full::new(Bytes::from_static(b"ok"))));
            r.headers_mut()
                .insert("x-request-id", "upstream-overwrites".parse().unwrap());
            r
        }
    }
}

/// An address where nothing listens (connection refused).
pub async fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Accepts connections and closes each as soon as a request starts arriving.
pub async fn closing_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                drop(s);
            });
        }
    });
    addr
}

/// Accepts connections and never reads or answers (a black-holed collector).
pub async fn black_hole() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

/// One decoded span with its resource.
#[derive(Clone, Debug)]
pub struct Received {
    pub resource: Resource,
    pub span: Span,
}

impl Received {
    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
    pub fn resource_attr(&self, key: &str) -> Option<String> {
        attr(&self.resource.attributes, key)
    }
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    /// 2 = SERVER, 3 = CLIENT.
    pub fn kind(&self) -> i32 {
        self.span.kind
    }
    /// 0 unset, 1 ok, 2 error.
    pub fn status_code(&self) -> i32 {
        self.span.status.as_ref().map_or(0, |s| s.code)
    }
}

fn attr(list: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str) -> Option<String> {
    list.iter().find(|kv| kv.key == key).and_then(|kv| {
        kv.value.as_ref().and_then(|v| match v.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            any_value::Value::IntValue(i) => Some(i.to_string()),
            any_value::Value::BoolValue(b) => Some(b.to_string()),
            other => Some(format!("{other:?}")),
        })
    })
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn flatten(req: ExportTraceServiceRequest, log: &Log<Received>) {
    for rs in req.resource_spans {
        let resource = rs.resource.unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                log.push(Received {
                    resource: resource.clone(),
                    span,
                });
            }
        }
    }
}

/// An OTLP receiver; `spans` fills as export requests arrive.
pub struct Collector {
    pub addr: SocketAddr,
    pub spans: Arc<Log<Received>>,
    pub requests: Arc<Log<HeaderMap>>,
}

struct Grpc {
    spans: Arc<Log<Received>>,
    requests: Arc<Log<HeaderMap>>,
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.requests
            .push(request.metadata().clone().into_headers());
        flatten(request.into_inner(), &self.spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves `service` as an OTLP/gRPC receiver (tonic) on a port of its own, with
/// TCP_NODELAY like the Collector; returns its address.
pub async fn serve_trace_service<S: TraceService>(service: S) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = TraceServiceServer::new(service);
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await;
    });
    addr
}

/// A real OTLP/gRPC receiver (tonic, gzip accepted).
pub async fn grpc_collector() -> Collector {
    grpc_collector_with(None).await
}

/// A real OTLP/gRPC receiver over TLS with `leaf` as its certificate, requiring client
/// certificates signed by `client_ca` when given.
pub async fn grpc_collector_tls(
    leaf: &pki::Leaf,
    client_ca: Option<&std::path::Path>,
) -> Collector {
    grpc_collector_with(Some((leaf, client_ca))).await
}

async fn grpc_collector_with(tls: Option<(&pki::Leaf, Option<&std::path::Path>)>) -> Collector {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans: Arc<Log<Received>> = Arc::default();
    let requests: Arc<Log<HeaderMap>> = Arc::default();
    let svc = TraceServiceServer::new(Grpc {
        spans: spans.clone(),
        requests: requests.clone(),
    })
    .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    // TCP_NODELAY like the Collector: otherwise each answer waits for a delayed ACK.
    let mut server = tonic::transport::Server::builder();
    if let Some((leaf, client_ca)) = tls {
        let identity = tonic::transport::Identity::from_pem(
            std::fs::read(&leaf.cert).unwrap(),
            std::fs::read(&leaf.key).unwrap(),
        );
        let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = client_ca {
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(
                std::fs::read(ca).unwrap(),
            ));
        }
        server = server.tls_config(config).unwrap();
    }
    tokio::spawn(async move {
        let _ = server
            .add_service(svc)
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await;
    });
    Collector {
        addr,
        spans,
        requests,
    }
}

/// A real OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body, gzip accepted.
pub async fn http_collector() -> Collector {
    http_collector_with(None).await
}

/// A real OTLP/HTTP receiver over TLS with `leaf` as its certificate, requiring client
/// certificates signed by `client_ca` when given.
pub async fn http_collector_tls(
    leaf: &pki::Leaf,
    client_ca: Option<&std::path::Path>,
) -> Collector {
    http_collector_with(Some(Arc::new(pki::server_config(leaf, client_ca)))).await
}

async fn http_collector_with(tls: Option<Arc<rustls::ServerConfig>>) -> Collector {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans: Arc<Log<Received>> = Arc::default();
    let requests: Arc<Log<HeaderMap>> = Arc::default();
    let (s, r) = (spans.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (s, r, tls) = (s.clone(), r.clone(), tls.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (s, r) = (s.clone(), r.clone());
                    async move {
                        let ok = req.uri().path() == "/v1/traces"
                            && req
                                .headers()
                                .get("content-type")
                                .is_some_and(|v| v == "application/x-protobuf");
                        r.push(req.headers().clone());
                        let gzip = req
                            .headers()
                            .get("content-encoding")
                            .is_some_and(|v| v == "gzip");
                        let mut body = req.into_body().collect().await.unwrap().to_bytes();
                        if gzip {
                            let mut plain = Vec::new();
                            std::io::Read::read_to_end(
                                &mut flate2::read::GzDecoder::new(&body[..]),
                                &mut plain,
                            )
                            .unwrap();
                            body = Bytes::from(plain);
                        }
                        let status = match (ok, ExportTraceServiceRequest::decode(body)) {
                            (true, Ok(decoded)) => {
                                flatten(decoded, &s);
                                StatusCode::OK
                            }
                            _ => StatusCode::BAD_REQUEST,
                        };
                        let mut resp = Response::new(Full::new(Bytes::from(
                            ExportTraceServiceResponse {
                                partial_success: None,
                            }
                            .encode_to_vec(),
                        )));
                        *resp.status_mut() = status;
                        resp.headers_mut()
                            .insert("content-type", "application/x-protobuf".parse().unwrap());
                        Ok::<_, Infallible>(resp)
                    }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(config) => {
                        let Ok(stream) =
                            tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                        else {
                            return;
                        };
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
    Collector {
        addr,
        spans,
        requests,
    }
}

/// tracegate started in-process from a YAML template. `{upstream}` and `{collector}` are
/// replaced; listeners and admin bind port 0.
pub async fn tracegate(yaml: &str) -> Gateway {
    let settings = load(yaml, "test.yaml", &Env::default()).unwrap_or_else(|e| panic!("{e}"));
    Gateway::start(settings).await.unwrap()
}

/// The usual test config: one upstream, catch-all plus an `/api` route, gRPC export.
pub fn config(upstream: SocketAddr, export: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstreams:\n  - name: app\n    endpoints: [\"http://{upstream}\"]\n    connect_timeout: 2s\n    request_timeout: 1s\nroutes:\n  - name: /api/{{id}}\n    match: {{ path_prefix: /api }}\n    upstream: app\n  - match: {{ path_prefix: /slow }}\n    upstream: app\n  - match: {{ path_prefix: /bytes }}\n    upstream: app\n  - match: {{ path_prefix: /trickle }}\n    upstream: app\n  - match: {{ path_prefix: /status }}\n    upstream: app\n  - match: {{ path: /upload }}\n    upstream: app\n  - match: {{ path: /ok }}\n    upstream: app\ntracing:\n  service_name: test-svc\n  resource_attributes: {{ team: tests }}\n{export}"
    )
}

/// gRPC export to `addr` with a short batch delay.
pub fn grpc_export(addr: SocketAddr) -> String {
    format!(
        "export:\n  protocol: grpc\n  endpoint: \"http://{addr}\"\n  batch_delay: 20ms\n  timeout: 2s\n"
    )
}

pub fn h1_client() -> Client<HttpConnector, BoxBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2c_client() -> Client<HttpConnector, BoxBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A finished response: status, headers, body.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A value on the admin port's `/metrics`: the line that starts with `series` (a name, with
/// its labels if it has any) and a space; `None` when there is none.
pub async fn metric(admin: impl std::fmt::Display, series: &str) -> Option<i64> {
    let r = get(&h1_client(), &format!("http://{admin}/metrics"), &[]).await;
    String::from_utf8_lossy(&r.body).lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Sends a request with the given headers and an empty body.
pub async fn get(
    client: &Client<HttpConnector, BoxBody>,
    url: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(client, b.body(boxed(Full::new(Bytes::new()))).unwrap()).await
}

pub async fn send(client: &Client<HttpConnector, BoxBody>, req: Request<BoxBody>) -> Reply {
    let resp = tokio::time::timeout(PATIENCE, client.request(req))
        .await
        .expect("response in time")
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub fn body_of(b: impl Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static) -> BoxBody {
    boxed(b)
}

/// The SERVER and CLIENT spans of one trace.
/// Waits for the SERVER span of `trace_id`.
pub async fn server_span(c: &Collector, trace_id: &str) -> Received {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(s) = c
            .spans
            .all()
            .into_iter()
            .find(|s| s.trace_id() == trace_id && s.kind() == 2)
        {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no span for {trace_id}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

pub fn pair(spans: &[Received], trace_id: &str) -> (Received, Option<Received>) {
    let server = spans
        .iter()
        .find(|s| s.trace_id() == trace_id && s.kind() == 2)
        .unwrap_or_else(|| panic!("no server span for {trace_id} in {} spans", spans.len()))
        .clone();
    let client = spans
        .iter()
        .find(|s| s.trace_id() == trace_id && s.kind() == 3)
        .cloned();
    (server, client)
}

/// The tracegate binary running as a child process.
pub struct Process {
    pub child: tokio::process::Child,
    pub proxy: String,
    /// `None` when the admin port is off.
    pub admin: Option<String>,
    /// Log lines after startup, collected as they come (so the pipe never fills).
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Starts the binary and waits for its "serving on" line, which gives the bound addresses.
pub fn spawn_tracegate(args: &[&str], envs: &[(&str, &str)]) -> Process {
    use std::io::BufRead;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tracegate"))
        .args(args)
        .envs(envs.iter().copied())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap().into_owned_fd().unwrap();
    let mut lines = std::io::BufReader::new(std::fs::File::from(stderr)).lines();
    let (proxy, admin) = loop {
        let line = lines.next().expect("tracegate exited early").unwrap();
        if let Some(rest) = line.split("serving on ").nth(1) {
            let proxy = rest.split([' ', ',']).next().unwrap().to_string();
            let admin = rest
                .split("(admin ")
                .nth(1)
                .unwrap()
                .split(')')
                .next()
                .unwrap()
                .to_string();
            break (proxy, (admin != "off").then_some(admin));
        }
    };
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let writer = log.clone();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            writer.lock().unwrap().push(l);
        }
    });
    Process {
        child,
        proxy,
        admin,
        log,
    }
}

/// A failing test shows what tracegate logged after startup.
impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(log) = self.log.lock()
        {
            eprintln!("--- tracegate's log ---\n{}", log.join("\n"));
        }
    }
}

impl Process {
    /// Sends a signal (`TERM`, `INT`, `HUP`) with kill(1).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args([&format!("-{name}"), &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// The runtime's alive tasks (`tracegate_runtime_alive_tasks` from /metrics) and the
    /// process's open file descriptors: what a leak would grow.
    pub async fn tasks_and_fds(&self) -> (u64, usize) {
        let admin = self.admin.clone().expect("an admin port");
        let m = get(&h1_client(), &format!("http://{admin}/metrics"), &[]).await;
        let text = String::from_utf8_lossy(&m.body).to_string();
        let tasks = text
            .lines()
            .find_map(|l| l.strip_prefix("tracegate_runtime_alive_tasks "))
            .expect("alive tasks gauge")
            .trim()
            .parse()
            .unwrap();
        let pid = self.child.id().unwrap();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count();
        (tasks, fds)
    }

    /// Waits for the exit (panics after `PATIENCE`).
    pub async fn exit(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("exit in time")
            .unwrap()
    }
}

/// Reads a response head from a raw socket; returns it and the body bytes read with it.
pub async fn read_head(s: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut chunk))
            .await
            .expect("a response head in time")
            .unwrap();
        assert!(n > 0, "closed before the head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return (String::from_utf8_lossy(&buf).to_string(), rest);
        }
    }
}

/// Reads one response head (and a body of `content-length`) from `s`.
pub async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, s.read(&mut byte))
            .await
            .expect("a response in time")
            .unwrap();
        if n == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    head + &String::from_utf8_lossy(&body)
}

/// A GET's HEADERS frame (END_STREAM set) for raw HTTP/2 connections to the proxy: the
/// pseudo-headers for `path` on `t.test`, then `extra`, from tracegate's own encoder.
pub fn h2_request_frame(
    stream: u32,
    path: &str,
    extra: &[(&str, &str)],
    encoder: &mut tracegate::listen::http2::hpack::Encoder,
) -> Vec<u8> {
    h2_head_frame(stream, "GET", path, extra, true, encoder)
}

/// A request's HEADERS frame for raw HTTP/2 connections to the proxy: the pseudo-headers
/// for `method` and `path` on `t.test`, then `extra`; END_STREAM when `end_stream`.
pub fn h2_head_frame(
    stream: u32,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    end_stream: bool,
    encoder: &mut tracegate::listen::http2::hpack::Encoder,
) -> Vec<u8> {
    let mut block = Vec::new();
    encoder.begin(&mut block);
    for (n, v) in [
        (":method", method),
        (":scheme", "http"),
        (":authority", "t.test"),
        (":path", path),
    ]
    .iter()
    .chain(extra)
    {
        encoder.field(n, v.as_bytes(), false, &mut block);
    }
    let mut out = Vec::new();
    tracegate::listen::http2::frame::put_headers(&mut out, stream, &block, end_stream, 1 << 14);
    out
}

/// A GET over an `h2` crate client connection: its status and whole body (the body's
/// window given back as it is read).
pub async fn h2_get(client: &mut h2::client::SendRequest<Bytes>, url: &str) -> (u16, Vec<u8>) {
    let (resp, _) = client
        .send_request(Request::get(url).body(()).unwrap(), true)
        .unwrap();
    let resp = resp.await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    (status, got)
}
