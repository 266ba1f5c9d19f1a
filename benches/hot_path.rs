//! Criterion micro-benchmarks of the request path's own work, each with its allocations
//! per operation (a counting global allocator; printed before criterion's timings):
//! trace-context parse and format (W3C, B3 single and multi, Jaeger, baggage), route
//! matching on a realistic 50-route table, span recording (an exchange's fields, the
//! conversion to OTLP spans) and batch encoding (the OTLP protobuf of 512 spans).
//!
//!     cargo bench --bench hot_path
//!     cargo bench --bench hot_path -- route     (a subset, by name)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::trace::SpanData;
use prost::Message;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tracegate::config::{Env, load};
use tracegate::context::{self, Propagation, b3, baggage, jaeger, w3c};
use tracegate::route::Router;

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

fn span_benches(c: &mut Criterion) {
    let target = target();
    let scope = InstrumentationScope::builder("tracegate").build();
    bench(c, "span record (exchange fields)", || exchange(&target));
    let template = exchange(&target);
    let mut out: Vec<SpanData> = Vec::with_capacity(2);
    bench(c, "span convert (exchange -> 2 spans)", || {
        out.clear();
        template.clone().into_spans(&scope, &mut out);
        out.len()
    });

    // A batch of 512 spans encoded as the OTLP/gRPC exporter does: SDK spans to protobuf
    // messages grouped by resource and scope, then the wire bytes.
    let resource = tracegate::export::resource(
        &load(&route_table(), "bench.yaml", &Env::default())
            .unwrap()
            .tracing,
    );
    let attrs = opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema::from(
        &resource,
    );
    let mut batch = Vec::with_capacity(512);
    while batch.len() < 512 {
        exchange(&target).into_spans(&scope, &mut batch);
    }
    let mut buf = Vec::with_capacity(1 << 20);
    let mut encode = |batch: Vec<SpanData>| {
        let resource_spans =
            opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope(
                batch, &attrs,
            );
        let req = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
            resource_spans,
        };
        buf.clear();
        req.encode(&mut buf).unwrap();
        buf.len()
    };
    println!(
        "OTLP request for 512 spans: {} bytes",
        encode(batch.clone())
    );
    // Allocations of the encoding alone (the input is cloned outside the counted region).
    let (mut n, mut bytes) = (0, 0);
    for _ in 0..50 {
        let input = batch.clone();
        let region = Region::new(GLOBAL);
        black_box(encode(input));
        let s = region.change();
        (n, bytes) = (n + s.allocations, bytes + s.bytes_allocated);
    }
    println!(
        "allocs/op {:<40} {:>7.2} allocations {:>9.1} bytes",
        "batch encode (512 spans, OTLP protobuf)",
        n as f64 / 50.0,
        bytes as f64 / 50.0
    );
    let mut g = c.benchmark_group("batch");
    g.throughput(criterion::Throughput::Elements(512));
    g.bench_function("encode 512 spans", |b| {
        b.iter_batched(
            || batch.clone(),
            &mut encode,
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = context_benches, route_benches, span_benches
}
criterion_main!(benches);
