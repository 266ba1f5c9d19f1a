//! The OTLP/gRPC receiver the benchmarks send to: a real tonic server that decodes every
//! export request and counts its spans.
//!
//! Two depths of decoding. `Decode::Full` turns each request into the generated
//! `opentelemetry-proto` messages, every attribute a `String` (~3.9 µs per span here).
//! `Decode::Spans` decodes the request down to its spans (ResourceSpans → ScopeSpans → one
//! length-delimited `Span` each, with prost, gzip and gRPC framing as usual) and counts them
//! without building their contents (~0.1 µs per span). The load benchmarks use `Spans`:
//! the sink shares its core with wrk and the echo upstream, and a full decode there made
//! the load side, not the proxy, what limited the rate of every proxy that exports spans. A
//! real collector runs elsewhere.

// Each bench includes this file and uses one of the two depths.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use bytes::Buf;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::encoding::{DecodeContext, WireType, check_wire_type, skip_field};
use prost::{DecodeError, Message};
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Spans and export requests received so far.
#[derive(Default)]
pub struct Counts {
    pub spans: AtomicU64,
    pub requests: AtomicU64,
}

impl Counts {
    fn add(&self, spans: usize) {
        self.spans.fetch_add(spans as u64, Relaxed);
        self.requests.fetch_add(1, Relaxed);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decode {
    /// Every span into the generated messages.
    Full,
    /// Down to the spans, counted, their contents left as bytes.
    Spans,
}

/// `.1`: how long each answer takes (a collector a round trip away), zero for at once.
struct FullSink(Arc<Counts>, std::time::Duration);

#[tonic::async_trait]
impl TraceService for FullSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        if !self.1.is_zero() {
            tokio::time::sleep(self.1).await;
        }
        self.0.add(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

// The request's structure down to the spans (field numbers of trace_service.proto and
// trace.proto); prost skips the fields not named here.
#[derive(Clone, PartialEq, Message)]
struct Request {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}
#[derive(Clone, PartialEq, Message)]
struct ResourceSpans {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}
/// A `ScopeSpans` read for its spans (field 2): each one's length is decoded and checked
/// against what is left, and the span is counted and stepped over. Kept as a count, not as
/// a `Bytes` a span: a reference count taken and dropped for each span was a tenth of the
/// sink's time (`perf record` on it under load), on the core wrk shares.
#[derive(Clone, Debug, Default, PartialEq)]
struct ScopeSpans {
    spans: usize,
}

impl Message for ScopeSpans {
    fn encode_raw(&self, _: &mut impl bytes::BufMut) {
        unreachable!("the sink only decodes")
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag == 2 {
            check_wire_type(WireType::LengthDelimited, wire_type)?;
            self.spans += 1;
        }
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        0
    }

    fn clear(&mut self) {
        self.spans = 0;
    }
}

/// Decodes a request into its span count; answers an empty `ExportTraceServiceResponse`.
#[derive(Clone, Copy, Default)]
struct CountingCodec;

impl Codec for CountingCodec {
    type Encode = ();
    type Decode = usize;
    type Encoder = CountingCodec;
    type Decoder = CountingCodec;
    fn encoder(&mut self) -> CountingCodec {
        CountingCodec
    }
    fn decoder(&mut self) -> CountingCodec {
        CountingCodec
    }
}

impl Encoder for CountingCodec {
    type Item = ();
    type Error = tonic::Status;
    fn encode(&mut self, (): (), _: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        Ok(())
    }
}

impl Decoder for CountingCodec {
    type Item = usize;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<usize>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        let req =
            Request::decode(bytes).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        Ok(Some(
            req.resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans)
                .sum(),
        ))
    }
}

/// `TraceService/Export` with the counting codec.
#[derive(Clone)]
struct CountingSink(Arc<Counts>);

impl tonic::server::NamedService for CountingSink {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl tonic::server::UnaryService<usize> for CountingSink {
    type Response = ();
    type Future = Ready<Result<tonic::Response<()>, tonic::Status>>;
    fn call(&mut self, request: tonic::Request<usize>) -> Self::Future {
        self.0.add(*request.get_ref());
        ready(Ok(tonic::Response::new(())))
    }
}

impl tower_service::Service<http::Request<tonic::body::Body>> for CountingSink {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let sink = self.clone();
        Box::pin(async move {
            if req.uri().path() != "/opentelemetry.proto.collector.trace.v1.TraceService/Export" {
                let mut r = http::Response::new(tonic::body::Body::default());
                r.headers_mut()
                    .insert("grpc-status", (tonic::Code::Unimplemented as i32).into());
                r.headers_mut()
                    .insert("content-type", "application/grpc".parse().unwrap());
                return Ok(r);
            }
            let mut grpc = tonic::server::Grpc::new(CountingCodec)
                .accept_compressed(CompressionEncoding::Gzip);
            Ok(grpc.unary(sink, req).await)
        })
    }
}

/// Serves until the process ends; gzip accepted. TCP_NODELAY like the Collector (Go sets it
/// on every connection): without it each answer waits for a delayed ACK and every export
/// call takes ~40 ms.
pub async fn serve(listener: tokio::net::TcpListener, counts: Arc<Counts>, decode: Decode) {
    serve_answering_after(listener, counts, decode, std::time::Duration::ZERO).await;
}

/// As [`serve`], each answer `delay` after its request (`Decode::Full` only): a collector
/// a round trip of `delay` away, or slow to answer.
pub async fn serve_answering_after(
    listener: tokio::net::TcpListener,
    counts: Arc<Counts>,
    decode: Decode,
    delay: std::time::Duration,
) {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut server = tonic::transport::Server::builder();
    let served = match decode {
        Decode::Full => {
            server
                .add_service(
                    TraceServiceServer::new(FullSink(counts, delay))
                        .accept_compressed(CompressionEncoding::Gzip),
                )
                .serve_with_incoming(incoming)
                .await
        }
        Decode::Spans => {
            server
                .add_service(CountingSink(counts))
                .serve_with_incoming(incoming)
                .await
        }
    };
    served.expect("serve");
}
