//! Criterion micro-benchmarks of the request path's own work, each with its allocations
//! per operation (a counting global allocator; printed before criterion's timings):
//! trace-context parse and format (W3C, B3 single and multi, Jaeger, baggage), route
//! matching on a realistic 50-route table, endpoint picking (round robin, least request),
//! span recording (an exchange's fields, its encoding into OTLP protobuf spans) and batch
//! encoding (the OTLP request for 512 spans); HPACK (`listen::http2`, not yet serving):
//! a request's header block decoded, a response's encoded.
//!
//!     cargo bench --bench hot_path
//!     cargo bench --bench hot_path -- route     (a subset, by name)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use prost::Message;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tracegate::config::{Env, load};
use tracegate::context::{self, Propagation, b3, baggage, jaeger, w3c};
use tracegate::export::otlp::{Preamble, Spans};
use tracegate::listen::http2::hpack;
use tracegate::route::Router;
use tracegate::span::Exchange;

#[path = "common/mod.rs"]
mod common;
use common::{TP, TS, exchange, target};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Runs `f` many times under the counting allocator and prints allocations per call.
fn allocs<R>(name: &str, mut f: impl FnMut() -> R) {
    const N: usize = 1000;
    let region = Region::new(GLOBAL);
    for _ in 0..N {
        black_box(f());
    }
    let s = region.change();
    println!(
        "allocs/op {name:<40} {:>7.2} allocations {:>9.1} bytes",
        s.allocations as f64 / N as f64,
        s.bytes_allocated as f64 / N as f64
    );
}

/// `allocs`, then a criterion timing of the same closure.
fn bench<R>(c: &mut Criterion, name: &str, mut f: impl FnMut() -> R) {
    allocs(name, &mut f);
    c.bench_function(name, |b| b.iter(&mut f));
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

const BAGGAGE: &str = "userId=alice,serverNode=DF%2028,isProduction=false;ttl=60,tenant=acme";

fn context_benches(c: &mut Criterion) {
    let trace_id: [u8; 16] = *b"\x4b\xf9\x2f\x35\x77\xb3\x4d\xa6\xa3\xce\x92\x9d\x0e\x0e\x47\x36";
    let span: [u8; 8] = *b"\x00\xf0\x67\xaa\x0b\xa9\x02\xb7";
    bench(c, "traceparent parse", || {
        w3c::parse_traceparent(black_box(TP.as_bytes()))
    });
    bench(c, "traceparent format", || {
        w3c::format_traceparent(black_box(&trace_id), black_box(&span), 1)
    });
    let peer: std::net::IpAddr = "192.168.10.7".parse().unwrap();
    bench(c, "peer address text (IPv4)", || {
        tracegate::span::IpText::new(black_box(peer)).as_str().len()
    });
    // The request path clones it (the retry snapshot): the clones share the one allocation.
    bench(c, "traceparent format + 2 clones", || {
        let v = w3c::format_traceparent(black_box(&trace_id), black_box(&span), 1);
        (v.clone(), v.clone(), v)
    });
    let h = headers(&[("traceparent", TP), ("tracestate", TS)]);
    bench(c, "tracestate extract (4 members)", || {
        w3c::extract_tracestate(black_box(&h))
    });
    let h = headers(&[("baggage", BAGGAGE)]);
    bench(c, "baggage extract (4 members)", || {
        baggage::extract(black_box(&h))
    });
    let parsed = baggage::extract(&h);
    bench(c, "baggage inject", || {
        let mut out = HeaderMap::new();
        baggage::inject(&mut out, parsed.as_ref());
        out
    });
    let h = headers(&[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1")]);
    bench(c, "b3 single extract", || b3::extract_single(black_box(&h)));
    let h = headers(&[
        ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("x-b3-spanid", "00f067aa0ba902b7"),
        ("x-b3-sampled", "1"),
    ]);
    bench(c, "b3 multi extract", || b3::extract_multi(black_box(&h)));
    bench(c, "b3 single inject", || {
        let mut out = HeaderMap::new();
        b3::inject_single(&mut out, &trace_id, &span, &span, true);
        out
    });
    let h = headers(&[(
        "uber-trace-id",
        "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
    )]);
    bench(c, "jaeger extract", || jaeger::extract(black_box(&h)));
    // What every request does: extract all configured formats from a realistic header set.
    let h = headers(&[
        ("host", "api.example.com"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("traceparent", TP),
        ("tracestate", TS),
        ("baggage", BAGGAGE),
        ("x-request-id", "5f2b6c1e-8d3a-4e0f-9b7c-2a1d3e4f5a6b"),
    ]);
    let all = Propagation::new(vec![
        context::Format::TraceContext,
        context::Format::Baggage,
        context::Format::B3,
        context::Format::Jaeger,
    ]);
    bench(c, "inbound extract (all formats)", || {
        all.extract(black_box(&h))
    });
}

/// 50 routes like a real edge config: hosts, exact paths, prefixes with parameters,
/// regexes, methods and headers; the default route last.
fn route_table() -> String {
    let mut y = String::from(
        "upstreams:\n  - name: app\n    endpoints: [\"http://127.0.0.1:9\"]\nroutes:\n",
    );
    for i in 0..12 {
        y += &format!(
            "  - name: /v1/svc{i}/{{id}}\n    match: {{ path_prefix: /v1/svc{i} }}\n    upstream: app\n"
        );
    }
    for i in 0..10 {
        y += &format!(
            "  - match: {{ host: \"api{i}.example.com\", path_prefix: /api }}\n    upstream: app\n"
        );
    }
    for i in 0..10 {
        y += &format!(
            "  - name: /orders{i}/{{id}}/items\n    match: {{ path_regex: \"^/orders{i}/[0-9]+/items$\" }}\n    upstream: app\n"
        );
    }
    for i in 0..8 {
        y += &format!(
            "  - match: {{ path: /exact/{i}, methods: [POST, PUT] }}\n    upstream: app\n"
        );
    }
    for i in 0..9 {
        y += &format!(
            "  - match: {{ path_prefix: /tenant, headers: [{{ name: x-tenant, value: \"t{i}\" }}] }}\n    upstream: app\n"
        );
    }
    y += "  - upstream: app\n";
    y
}

fn route_benches(c: &mut Criterion) {
    let settings = load(&route_table(), "bench.yaml", &Env::default()).unwrap();
    assert_eq!(settings.routes.len(), 50);
    let router = Router::new(&settings.routes, true, &[]);
    let empty = HeaderMap::new();
    let tenant = headers(&[("x-tenant", "t8")]);
    let cases: [(&str, Option<&str>, &str, &HeaderMap); 4] = [
        ("route first prefix", None, "/v1/svc0/42", &empty),
        ("route host", Some("api9.example.com"), "/api/x", &empty),
        ("route regex", None, "/orders9/1234/items", &empty),
        ("route header (49th)", None, "/tenant/a", &tenant),
    ];
    for (name, host, path, h) in cases {
        assert!(router.find(host, path, &Method::GET, h).is_some());
        bench(c, name, || {
            router.find(black_box(host), black_box(path), &Method::GET, h)
        });
    }
    bench(c, "route default (50th)", || {
        router.find(None, black_box("/nothing/else"), &Method::GET, &empty)
    });
}

/// Picking an endpoint of four, each way of balancing, one of them ejected by passive
/// health (the clock is read only for it).
fn balance_benches(c: &mut Criterion) {
    use std::sync::Arc;
    use tracegate::balance::{Endpoint, Pool};
    use tracegate::config::{Balance, OutlierSettings, UpstreamProtocol};
    use tracegate::upstream::Conns;
    for (name, balance) in [
        (
            "balance pick (round_robin, 4 endpoints)",
            Balance::RoundRobin,
        ),
        (
            "balance pick (least_request, 4 endpoints)",
            Balance::LeastRequest,
        ),
    ] {
        let endpoints = (1..=4u16)
            .map(|port| {
                let authority: http::uri::Authority = format!("127.0.0.1:{port}").parse().unwrap();
                let conns = Conns::new(&authority, false, UpstreamProtocol::Http1, 1);
                Arc::new(Endpoint::new(authority, conns, target()))
            })
            .collect();
        let outlier = OutlierSettings {
            consecutive_failures: 1,
            ejection_time: Duration::from_secs(600),
            max_ejected_percent: 50,
        };
        let pool = Pool::new(Arc::from("app"), endpoints, balance, outlier);
        pool.report(&pool.endpoints()[0], false);
        bench(c, name, || pool.pick(None));
    }
}

fn span_benches(c: &mut Criterion) {
    let target = target();
    bench(c, "span record (exchange fields)", || exchange(&target));
    let template = exchange(&target);
    let mut spans = Spans::default();
    bench(c, "span encode (exchange -> 2 OTLP spans)", || {
        template.write_spans(&mut spans);
        spans.take(2).len()
    });

    // A batch of 512 spans as the exporter sends it: 256 exchanges encoded into protobuf,
    // then the request's head (resource, scope) in front of them.
    let tracing = load(&route_table(), "bench.yaml", &Env::default())
        .unwrap()
        .tracing;
    let preamble = Preamble::new(&tracegate::export::resource(&tracing), "tracegate", "0.1.0");
    let batch: Vec<Exchange> = (0..256).map(|_| exchange(&target)).collect();
    let mut encode = |batch: &[Exchange]| {
        for e in batch {
            e.write_spans(&mut spans);
        }
        let s = spans.take(512);
        (preamble.head(&s), s)
    };
    let (head, body) = encode(&batch);
    let request = [head.as_ref(), body.as_ref()].concat();
    let decoded =
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
            request.as_slice(),
        )
        .unwrap();
    assert_eq!(decoded.resource_spans[0].scope_spans[0].spans.len(), 512);
    println!("OTLP request for 512 spans: {} bytes", request.len());
    allocs("batch encode (512 spans, OTLP protobuf)", || {
        encode(&batch).1.len()
    });
    let mut g = c.benchmark_group("batch");
    g.throughput(criterion::Throughput::Elements(512));
    g.bench_function("encode 512 spans", |b| b.iter(|| encode(&batch).1.len()));
    g.finish();
}

/// Hex to bytes (the RFC 7541 examples).
fn hex(s: &str) -> bytes::Bytes {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

fn hpack_benches(c: &mut Criterion) {
    // RFC 7541 C.4.1: a connection's first request, `:authority` Huffman-coded and indexed.
    let first = hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff");
    // The same request again: four indexed fields, one from the dynamic table.
    let again = hex("8286 84be");
    bench(c, "hpack decode first request (Huffman)", || {
        let mut d = hpack::Decoder::new(4096, 16 << 10);
        let mut n = 0;
        d.decode(&first, |f| n += f.value.len()).unwrap();
        n
    });
    let mut d = hpack::Decoder::new(4096, 16 << 10);
    d.decode(&first, |_| {}).unwrap();
    bench(c, "hpack decode request (indexed)", || {
        let mut n = 0;
        d.decode(&again, |f| n += f.value.len()).unwrap();
        n
    });
    // One request through the connection's state (`listen::http2::conn`, no I/O): its
    // HEADERS frame in (the block indexed, as h2load's after its first), the request's
    // `http` parts out, and the answer's HEADERS and a 436-byte DATA frame queued.
    {
        use tracegate::listen::http2::conn::{Config, Conn, Event};
        use tracegate::listen::http2::frame;
        let mut conn = Conn::new(Config::default());
        conn.out.clear();
        let mut stream = 1u32;
        let mut wire = bytes::BytesMut::new();
        let mut events = Vec::new();
        let put = |stream: u32, block: &[u8], wire: &mut bytes::BytesMut| {
            let mut f = Vec::new();
            frame::put_headers(&mut f, stream, block, true, 1 << 14);
            wire.extend_from_slice(&f);
        };
        put(stream, &first, &mut wire);
        conn.recv(&mut wire, &mut events).unwrap();
        conn.send_headers(stream, 204, &HeaderMap::new(), true);
        events.clear();
        let mut answer = HeaderMap::new();
        for (k, v) in [
            ("content-type", "application/json"),
            ("content-length", "436"),
            ("date", "Mon, 07 Dec 2026 01:41:44 GMT"),
            ("x-trace-id", "cb62d4954f795527bc8f2c2bb9dfe912"),
            ("x-request-id", "eeef4c2f-141c-4b19-b700-4e96de15e9af"),
        ] {
            answer.insert(k, HeaderValue::from_static(v));
        }
        let body = [b'x'; 436];
        bench(c, "http2 conn: request in, answer queued", || {
            stream += 2;
            put(stream, &again, &mut wire);
            conn.recv(&mut wire, &mut events).unwrap();
            let n = events.len();
            for e in events.drain(..) {
                if let Event::Request { stream, head, .. } = e {
                    conn.send_headers(stream, 200, &answer, false);
                    conn.send_data(stream, &body, true);
                    // Its map goes back to the thread's spares once the request went
                    // upstream (`upstream::wire`), as here.
                    tracegate::http1::recycle(head.parts.headers);
                }
            }
            conn.out.clear();
            n
        });
    }
    // What tracegate answers through the benchmark's echo upstream.
    let mut e = hpack::Encoder::new();
    let mut out = Vec::with_capacity(256);
    e.begin(&mut out);
    bench(c, "hpack encode response (status + 5 fields)", || {
        out.clear();
        e.begin(&mut out);
        e.status(200, &mut out);
        e.field("content-type", b"application/json", false, &mut out);
        e.field("content-length", b"436", false, &mut out);
        e.field("date", b"Mon, 07 Dec 2026 01:41:44 GMT", false, &mut out);
        e.field(
            "x-trace-id",
            b"cb62d4954f795527bc8f2c2bb9dfe912",
            true,
            &mut out,
        );
        e.field(
            "x-request-id",
            b"eeef4c2f-141c-4b19-b700-4e96de15e9af",
            true,
            &mut out,
        );
        out.len()
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = context_benches, route_benches, balance_benches, span_benches, hpack_benches
}
criterion_main!(benches);
