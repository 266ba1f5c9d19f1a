//! gRPC through tracegate over h2c with a real tonic client and server: status codes from
//! trailers and from trailers-only responses end up on the spans.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use support::*;

/// Answers with the code the caller asks for in `x-want-code` (0: a normal response whose
/// status travels in the trailers; others: tonic's trailers-only error response).
struct Echoes;

#[tonic::async_trait]
impl TraceService for Echoes {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let code: i32 = request
            .metadata()
            .get("x-want-code")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        match code {
            0 => Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: None,
            })),
            c => Err(tonic::Status::new(tonic::Code::from(c), "as asked")),
        }
    }
}

#[tokio::test]
async fn grpc_status_codes_reach_the_spans() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Echoes))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let col = grpc_collector().await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: \"off\"\nupstreams:\n  - name: grpc\n    protocol: h2c\n    endpoints: [\"http://{grpc_addr}\"]\nroutes:\n  - name: otlp\n    upstream: grpc\nexport:\n  endpoint: \"http://{}\"\n  batch_delay: 20ms\n",
        col.addr
    );
    let gw = tracegate(&yaml).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", gw.proxy_addrs[0]))
        .await
        .unwrap();

    // (code, server span is an error per the conventions)
    let cases = [(0, false), (5, false), (14, true), (13, true)];
    let mut traces = Vec::new();
    for (code, _) in cases {
        let mut req = tonic::Request::new(ExportTraceServiceRequest::default());
        req.metadata_mut()
            .insert("x-want-code", code.to_string().parse().unwrap());
        let result = client.export(req).await;
        let trace = match &result {
            Ok(r) => r
                .metadata()
                .get("x-trace-id")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string(),
            Err(status) => {
                assert_eq!(
                    status.code() as i32,
                    code,
                    "the client gets the upstream's code"
                );
                status
                    .metadata()
                    .get("x-trace-id")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string()
            }
        };
        assert_eq!(result.is_ok(), code == 0);
        traces.push(trace);
    }
    let spans = col.spans.wait_for(8).await;
    for ((code, server_error), trace) in cases.iter().zip(&traces) {
        let (server, client) = pair(&spans, trace);
        let client = client.unwrap();
        for s in [&server, &client] {
            assert_eq!(s.attr("rpc.system").as_deref(), Some("grpc"));
            assert_eq!(
                s.attr("rpc.service").as_deref(),
                Some("opentelemetry.proto.collector.trace.v1.TraceService")
            );
            assert_eq!(s.attr("rpc.method").as_deref(), Some("Export"));
            assert_eq!(
                s.attr("rpc.grpc.status_code"),
                Some(code.to_string()),
                "code {code}"
            );
        }
        // Both legs are HTTP/2: the client's, and the h2c upstream's answer.
        for s in [&server, &client] {
            assert_eq!(s.attr("network.protocol.version").as_deref(), Some("2"));
        }
        assert_eq!(
            server.status_code() == 2,
            *server_error,
            "server span status for code {code}"
        );
        assert_eq!(
            client.status_code() == 2,
            *code != 0,
            "client span status for code {code}"
        );
    }
}
