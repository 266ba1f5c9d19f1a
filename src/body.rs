//! The response body tracegate sends downstream. It streams the upstream body frame by frame
//! (or a small body tracegate generated) and ends the exchange's spans when the last frame
//! has been handed to the connection, when the stream fails, or when the client goes away.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use std::sync::Arc;

use crate::access_log::Entry;
use crate::balance::Picked;
use crate::error::ProxyError;
use crate::forward::Stamp;
use crate::limits::InFlight;
use crate::proxy::{Runtime, Shared};
use crate::span::Exchange;
use crate::upstream::UpstreamBody;

/// Owns the exchange until it ends, then submits it. Dropped without `finish` (the client
/// went away while tracegate waited for the upstream), it records `client_aborted`.
pub struct SpanGuard {
    /// On the heap from the start, in the `Arc` the viewer and the export queue share at the
    /// end: the guard travels in the request's future and in the response body, and an
    /// exchange inline (~740 bytes) was copied with every move of either. Nothing else holds
    /// it before `record`, so it is always unique (`Arc::get_mut`) until then. The `Arc` is
    /// an exported exchange's when one has come back ([`spare`](crate::span::spare)).
    exchange: Option<Arc<Exchange>>,
    /// Where a finished exchange goes: the access log, the metrics, the viewer and the
    /// sampling counters (`Shared`), the exporter and the route's histograms of the config
    /// version the request ran under (`Runtime`). Two references instead of a clone of
    /// each handle: those were ~11 atomic increments (and as many decrements) a request,
    /// and 112 bytes in every move of the response.
    shared: Arc<Shared>,
    rt: Arc<Runtime>,
    /// The matched route (its index in `rt`'s router).
    route: Option<usize>,
    /// Spans go to the exporter; otherwise the exchange is recorded for the access log,
    /// the metrics or the viewer only.
    export: bool,
}

impl SpanGuard {
    /// `exchange`: recorded by [`spare::fill`](crate::span::spare::fill), unique.
    pub fn new(
        exchange: Arc<Exchange>,
        shared: Arc<Shared>,
        rt: Arc<Runtime>,
        route: Option<usize>,
        export: bool,
    ) -> Self {
        SpanGuard {
            exchange: Some(exchange),
            shared,
            rt,
            route,
            export,
        }
    }

    /// The fields for the client the response carries (`forward::Stamp`): the trace id
    /// of a traced exchange, the correlation id.
    pub fn stamp(&self) -> Stamp<'_> {
        let e = self.exchange.as_deref();
        Stamp {
            trace: self
                .rt
                .trace_id_header
                .as_ref()
                .zip(e.filter(|e| e.traced).map(|e| &e.ids.trace_id)),
            correlation: e
                .and_then(|e| e.correlation_header.as_ref().zip(e.correlation_id.as_ref())),
        }
    }

    /// The exchange being recorded (always present until `finish` consumes the guard).
    pub fn exchange(&mut self) -> Option<&mut Exchange> {
        self.exchange.as_mut().and_then(Arc::get_mut)
    }

    pub fn finish(mut self, error: Option<&'static str>) {
        self.record(error);
    }

    /// Ends the exchange and exports it when the head sampler kept it, or when the tail
    /// rule keeps it now (5xx, failed, slow): then its spans are marked sampled and carry the
    /// reason, although the upstream was told "not sampled".
    fn record(&mut self, error: Option<&'static str>) {
        let Some(mut shared) = self.exchange.take() else {
            return;
        };
        // Unique: the viewer and the export queue get their clones below.
        let Some(e) = Arc::get_mut(&mut shared) else {
            return;
        };
        e.finish(error);
        let sink = &self.rt.export;
        let mut export = self.export && e.traced;
        if export && !e.ids.sampled() {
            // A 404 for no route or a 414 is the client's mistake (and scanners'): not kept
            // as an error.
            let failed = e.error_type.is_some_and(|t| {
                t != ProxyError::NoRoute.error_type()
                    && t != ProxyError::UriTooLong.error_type()
                    && t != ProxyError::Ambiguous.error_type()
            });
            match e.tail.keep(e.status, failed, e.duration) {
                Some(reason) => {
                    self.shared.sampling.count(true, reason);
                    e.sampling = reason;
                    e.ids.flags |= crate::context::w3c::FLAG_SAMPLED;
                }
                None => export = false,
            }
        }
        let e: &Exchange = e;
        let log = &self.shared.access_log;
        if log.enabled() {
            log.log(entry(e));
        }
        // Untraced requests (excluded paths and routes) stay out of the metrics and the
        // viewer.
        if let Some(m) = self.shared.metrics.as_ref().filter(|_| e.traced) {
            // The exemplar names a trace that exists in the backend: a sampled (or kept) one.
            let exemplar = (export && e.ids.sampled()).then_some(&e.ids.trace_id);
            m.observe(
                e.route.as_ref(),
                self.route
                    .and_then(|i| self.rt.router.route(i))
                    .map(|r| &*r.histograms),
                &e.method,
                e.status,
                e.duration,
                exemplar,
            );
            // Every failed attempt counts, the retried ones too.
            for c in e.retried.iter().chain(e.client.as_ref()) {
                if let Some(kind) = c.error_type {
                    m.upstream_error(&c.target.upstream, kind);
                }
            }
        }
        // Shared, not copied, between the viewer's store and the export queue.
        if let Some(v) = self.shared.viewer.as_ref().filter(|_| e.traced) {
            v.record(shared.clone());
        }
        if export {
            sink.submit(shared);
        }
    }
}

/// The access log's view of a finished exchange.
fn entry(e: &Exchange) -> Entry {
    Entry {
        time: e.start,
        trace_id: e.traced.then_some(e.ids.trace_id),
        span_id: e.traced.then_some(e.ids.server_span),
        request_id: e.correlation_id.clone(),
        route: e.route.clone(),
        method: e.method.clone(),
        path: e.text.path().to_string(),
        query: e.text.query().map(str::to_string),
        status: e.status,
        duration: e.duration,
        bytes_in: e
            .bytes_in
            .as_ref()
            .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed)),
        bytes_out: e.bytes_sent,
        upstream: e.client.as_ref().map(|c| c.target.base_url.clone()),
        error_type: e.error_type,
        sampled: e.traced && e.ids.sampled(),
    }
}

impl Drop for SpanGuard {
    fn drop(&mut self) {
        self.record(Some("client_aborted"));
    }
}

enum Inner {
    Upstream(UpstreamBody),
    Local(Option<Bytes>),
    /// An upgraded upstream's bytes, for a tunnel on our HTTP/2 server's stream.
    Tunnel(crate::tunnel::Downstream),
}

pub struct ProxyBody {
    inner: Inner,
    guard: Option<SpanGuard>,
    /// Marks the request in flight on its connection until the body is dropped.
    in_flight: Option<InFlight>,
    /// Counts the request as outstanding on its upstream endpoint until the upstream's
    /// body is over (or this is dropped).
    endpoint: Option<Picked>,
    /// `total_timeout`: the response is cut short when it is not over by then.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The fields for the client (`forward::Stamp`) are not in the head's map: the writer
    /// adds them from the guard's exchange.
    stamp: bool,
}

/// The response body outlived the upstream's `total_timeout`.
#[derive(Debug)]
pub struct Expired;

impl std::fmt::Display for Expired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the response took longer than total_timeout")
    }
}

impl std::error::Error for Expired {}

impl ProxyBody {
    pub fn upstream(body: UpstreamBody, guard: Option<SpanGuard>) -> Self {
        ProxyBody {
            inner: Inner::Upstream(body),
            guard,
            in_flight: None,
            endpoint: None,
            deadline: None,
            stamp: false,
        }
    }

    /// The upstream's bytes after an upgrade, for a stream of our HTTP/2 server: the
    /// handshake is over, so the exchange's spans end now (as they do when hyper's server
    /// hands the connection over).
    pub fn tunnel(from: crate::tunnel::Downstream, guard: Option<SpanGuard>) -> Self {
        let mut body = ProxyBody::local(Bytes::new(), guard);
        body.finish(None);
        body.inner = Inner::Tunnel(from);
        body
    }

    /// Cuts the response short at `at` (`total_timeout`).
    pub fn deadline(&mut self, at: tokio::time::Instant) {
        self.deadline = Some(Box::pin(tokio::time::sleep_until(at)));
    }

    pub fn local(bytes: Bytes, guard: Option<SpanGuard>) -> Self {
        ProxyBody {
            inner: Inner::Local((!bytes.is_empty()).then_some(bytes)),
            guard,
            in_flight: None,
            endpoint: None,
            deadline: None,
            stamp: false,
        }
    }

    /// Leaves the fields for the client to the writer, which asks [`Self::stamp`] for
    /// them (the guard's exchange holds them).
    pub fn defer_stamp(&mut self) {
        self.stamp = self.guard.is_some();
    }

    /// The response head's fields as the upstream wrote them, when they were kept so (the
    /// head's map is empty then).
    pub fn raw_fields(&self) -> Option<&crate::http1::RawFields> {
        match &self.inner {
            Inner::Upstream(b) => b.raw_fields(),
            Inner::Local(_) | Inner::Tunnel(_) => None,
        }
    }

    /// The fields for the client the writer adds, if they were left to it.
    pub fn stamp(&self) -> Option<Stamp<'_>> {
        self.guard
            .as_ref()
            .filter(|_| self.stamp)
            .map(SpanGuard::stamp)
    }

    /// Keeps the upstream endpoint's request outstanding until this body is done with.
    pub fn hold_endpoint(&mut self, picked: Picked) {
        self.endpoint = Some(picked);
    }

    /// Keeps the request counted as in flight until this body is done with.
    pub fn hold(&mut self, in_flight: InFlight) {
        self.in_flight = Some(in_flight);
    }

    /// The upstream's part is over: its span ends and its endpoint is no longer busy, even
    /// while the last bytes are still being written to the client.
    fn finish(&mut self, error: Option<&'static str>) {
        self.endpoint = None;
        if let Some(g) = self.guard.take() {
            g.finish(error);
        }
    }

    fn count(&mut self, n: usize) {
        if let Some(e) = self.guard.as_mut().and_then(SpanGuard::exchange) {
            e.bytes_sent += n as u64;
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match &mut this.inner {
            Inner::Upstream(body) => {
                let frame = match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        if let Some(d) = &mut this.deadline {
                            if d.as_mut().poll(cx).is_ready() {
                                this.deadline = None;
                                this.finish(Some(crate::error::ProxyError::Timeout.error_type()));
                                return Poll::Ready(Some(Err(Box::new(Expired))));
                            }
                        }
                        return Poll::Pending;
                    }
                };
                let ended = body.is_end_stream();
                match frame {
                    Some(Ok(frame)) => {
                        if let Some(d) = frame.data_ref() {
                            let n = d.len();
                            this.count(n);
                        } else if let Some(trailers) = frame.trailers_ref() {
                            if let Some(g) = this
                                .guard
                                .as_mut()
                                .and_then(SpanGuard::exchange)
                                .and_then(|e| e.grpc.as_mut())
                            {
                                g.read_status(trailers);
                            }
                        }
                        if ended {
                            this.finish(None);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(e)) => {
                        this.finish(Some("upstream_body_error"));
                        Poll::Ready(Some(Err(e)))
                    }
                    None => {
                        this.finish(None);
                        Poll::Ready(None)
                    }
                }
            }
            Inner::Local(bytes) => match bytes.take() {
                Some(b) => {
                    this.count(b.len());
                    this.finish(None);
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                None => {
                    this.finish(None);
                    Poll::Ready(None)
                }
            },
            Inner::Tunnel(from) => match from.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Local(b) => b.is_none(),
            Inner::Tunnel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Local(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Tunnel(_) => SizeHint::default(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if self.guard.is_some() {
            // Dropped before the end: fine if nothing was left to send (empty or HEAD
            // bodies are never polled), otherwise the client went away mid-response.
            let error = (!self.is_end_stream()).then_some("response_aborted");
            self.finish(error);
        }
    }
}
