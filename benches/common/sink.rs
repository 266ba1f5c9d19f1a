//! The OTLP/gRPC receiver the benchmarks send to: a real tonic server that decodes every
//! export request and counts its spans.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

/// Spans and export requests received so far.
#[derive(Default)]
pub struct Counts {
    pub spans: AtomicU64,
    pub requests: AtomicU64,
}

struct Sink(Arc<Counts>);

#[tonic::async_trait]
impl TraceService for Sink {
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
        self.0.spans.fetch_add(spans as u64, Relaxed);
        self.0.requests.fetch_add(1, Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves until the process ends; gzip accepted. TCP_NODELAY like the Collector (Go sets it
/// on every connection): without it each answer waits for a delayed ACK and every export
/// call takes ~40 ms.
pub async fn serve(listener: tokio::net::TcpListener, counts: Arc<Counts>) {
    tonic::transport::Server::builder()
        .add_service(
            TraceServiceServer::new(Sink(counts))
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
        )
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await
        .expect("serve");
}
