//! What the benchmarks share: a realistic exchange (a continued trace, a route, one
//! upstream call), as the request path records it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};
use tracegate::context::{self, TraceIds, w3c};
use tracegate::sample::{Reason, TailRule};
use tracegate::span::{ClientCall, ConnAttrs, Exchange, OptIn, RequestText, Target};

pub const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
pub const TS: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,vendor3=a1b2c3,vendor4=opaque-value";

fn trace_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("traceparent", HeaderValue::from_static(TP));
    h.insert("tracestate", HeaderValue::from_static(TS));
    h
}

thread_local! {
    /// The connection the exchanges come on: made once, as the request path makes it once per
    /// connection.
    static CONN: Arc<ConnAttrs> =
        Arc::new(ConnAttrs::new("127.0.0.1:51234".parse().unwrap(), "127.0.0.1", None));
}

/// An exchange as the request path records it: continued trace, route, one upstream call.
pub fn exchange(target: &Arc<Target>) -> Exchange {
    let inbound = context::extract(&trace_headers());
    let mut ids = TraceIds::new(&inbound, true);
    ids.flags |= w3c::FLAG_SAMPLED;
    let peer: SocketAddr = "127.0.0.1:51234".parse().unwrap();
    let mut e = Exchange {
        ids,
        tracestate: Some(TS.to_string()),
        start: SystemTime::now(),
        started: Instant::now(),
        duration: Duration::ZERO,
        method: Method::GET,
        text: RequestText::new(
            "/api/orders/12345",
            Some("page=2"),
            Some("api.example.com"),
            Some("curl/8.5.0"),
        ),
        route: Some(Arc::from("/api/orders/{id}")),
        status: 200,
        server_port: Some(80),
        conn: CONN.with(Arc::clone),
        upgrade: None,
        client_address: None,
        local: "127.0.0.1:8080".parse().unwrap(),
        peer,
        version: Version::HTTP_11,
        correlation_id: Some(context::correlation::IdValue::Made(
            *b"5f2b6c1e-8d3a-4e0f-9b7c-2a1d3e4f5a6b",
        )),
        correlation_header: Some(HeaderName::from_static("x-request-id")),
        error_type: None,
        bytes_sent: 512,
        client: Some(ClientCall::begin(
            context::ids::span_id(),
            Duration::from_micros(40),
            target.clone(),
            0,
            true,
        )),
        retried: Vec::new(),
        sampling: Reason::Parent,
        tail: TailRule {
            keep_errors: true,
            slow: None,
        },
        propagation_source: inbound.source,
        baggage: Vec::new(),
        request_headers: Vec::new(),
        response_headers: Vec::new(),
        attributes: Arc::default(),
        grpc: None,
        traced: true,
        bytes_in: None,
        opt_in: OptIn::default(),
    };
    if let Some(c) = &mut e.client {
        c.status = Some(200);
    }
    e.finish(None);
    e
}

pub fn target() -> Arc<Target> {
    Arc::new(Target::new(
        Arc::from("app"),
        "127.0.0.1",
        None,
        3000,
        "http://127.0.0.1:3000",
        false,
    ))
}
