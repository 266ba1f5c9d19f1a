//! Propagation formats through real sockets: each format round-trips, a B3-only client and a
//! W3C-only upstream share one trace, and baggage is validated, passed on and recorded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::net::SocketAddr;

use support::*;

const T32: &str = "80f198ee56343ba864fe8b2a57d3eff7";
const T16: &str = "64fe8b2a57d3eff7";
const SPAN: &str = "e457b5a2e4d86bd1";

fn config(upstream: SocketAddr, collector: SocketAddr, tracing: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: \"off\"\nupstreams:\n  - name: app\n    endpoints: [\"http://{upstream}\"]\nroutes:\n  - upstream: app\ntracing:\n{tracing}export:\n  endpoint: \"http://{collector}\"\n  batch_delay: 20ms\n"
    )
}

/// (trace id, parent span id, sampled) the upstream received in `format`.
fn seen_as(seen: &Seen, format: &str) -> (String, String, bool) {
    let h = &seen.headers;
    let s = |n: &str| {
        h.get(n)
            .unwrap_or_else(|| panic!("{format}: no {n} upstream"))
            .to_str()
            .unwrap()
            .to_string()
    };
    match format {
        "tracecontext" => {
            let v = s("traceparent");
            (
                v[3..35].into(),
                v[36..52].into(),
                &v[53..55] == "01" || &v[53..55] == "03",
            )
        }
        "b3" => {
            let v = s("b3");
            let p: Vec<&str> = v.split('-').collect();
            (p[0].into(), p[1].into(), p[2] == "1")
        }
        "b3multi" => (
            s("x-b3-traceid"),
            s("x-b3-spanid"),
            s("x-b3-sampled") == "1",
        ),
        "jaeger" => {
            let v = s("uber-trace-id");
            let p: Vec<&str> = v.split(':').collect();
            (p[0].into(), p[1].into(), p[3] == "1")
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn each_format_round_trips_through_tracegate() {
    let cases: [(&str, Vec<(&str, String)>); 4] = [
        (
            "tracecontext",
            vec![("traceparent", format!("00-{T32}-{SPAN}-01"))],
        ),
        ("b3", vec![("b3", format!("{T32}-{SPAN}-1"))]),
        (
            "b3multi",
            vec![
                ("X-B3-TraceId", T32.into()),
                ("X-B3-SpanId", SPAN.into()),
                ("X-B3-Sampled", "1".into()),
            ],
        ),
        (
            "jaeger",
            vec![("uber-trace-id", format!("{T32}:{SPAN}:0:1"))],
        ),
    ];
    for (format, headers) in cases {
        let up = upstream().await;
        let col = grpc_collector().await;
        let gw = tracegate(&config(
            up.addr,
            col.addr,
            &format!("  propagation: [{format}]\n"),
        ))
        .await;
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = get(
            &h1_client(),
            &format!("http://{}/x", gw.proxy_addrs[0]),
            &hs,
        )
        .await;
        assert_eq!(r.headers["x-trace-id"], T32, "{format}");
        let seen = up.seen.wait_for(1).await.remove(0);
        let (trace, parent, sampled) = seen_as(&seen, format);
        assert_eq!(trace, T32, "{format}");
        assert!(sampled, "{format}");
        let spans = col.spans.wait_for(2).await;
        let (server, client) = pair(&spans, T32);
        assert_eq!(
            server.parent_id(),
            SPAN,
            "{format}: the caller's span is the parent"
        );
        assert_eq!(
            client.unwrap().span_id(),
            parent,
            "{format}: the upstream's parent is the client span"
        );
        assert_eq!(
            server.attr("tracegate.propagation.format").as_deref(),
            Some(format)
        );
    }
}

#[tokio::test]
async fn b3_only_client_and_w3c_only_upstream_share_one_trace() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let gw = tracegate(&config(
        up.addr,
        col.addr,
        "  propagation: [tracecontext, b3, b3multi]\n",
    ))
    .await;
    // A legacy client with a 64-bit B3 trace id.
    let r = get(
        &h1_client(),
        &format!("http://{}/x", gw.proxy_addrs[0]),
        &[("b3", &format!("{T16}-{SPAN}-1"))],
    )
    .await;
    let widened = format!("0000000000000000{T16}");
    assert_eq!(r.headers["x-trace-id"], widened.as_str());
    let seen = up.seen.wait_for(1).await.remove(0);
    let (w3c_trace, w3c_parent, sampled) = seen_as(&seen, "tracecontext");
    assert_eq!(
        (w3c_trace.as_str(), sampled),
        (widened.as_str(), true),
        "the W3C upstream continues the B3 trace"
    );
    // Every format injected says the same.
    for f in ["b3", "b3multi"] {
        assert_eq!(
            seen_as(&seen, f),
            (widened.clone(), w3c_parent.clone(), true),
            "{f}"
        );
    }
    let spans = col.spans.wait_for(2).await;
    let (server, client) = pair(&spans, &widened);
    assert_eq!(server.parent_id(), SPAN);
    assert_eq!(client.unwrap().span_id(), w3c_parent);
}

#[tokio::test]
async fn baggage_is_validated_passed_on_and_recorded() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let gw = tracegate(&config(
        up.addr,
        col.addr,
        "  baggage_attributes: [tenant, region]\n",
    ))
    .await;
    let r = get(
        &h1_client(),
        &format!("http://{}/x", gw.proxy_addrs[0]),
        &[
            ("baggage", "tenant = blue;prop, bad key=1"),
            ("baggage", "note=a%20b"),
        ],
    )
    .await;
    let seen = up.seen.wait_for(1).await.remove(0);
    assert_eq!(seen.headers.get_all("baggage").iter().count(), 1);
    assert_eq!(seen.headers["baggage"], "tenant=blue;prop,note=a%20b");
    let spans = col.spans.wait_for(2).await;
    let (server, _) = pair(&spans, r.headers["x-trace-id"].to_str().unwrap());
    assert_eq!(server.attr("baggage.tenant").as_deref(), Some("blue"));
    assert_eq!(server.attr("baggage.region"), None);
    assert_eq!(
        server.attr("baggage.note"),
        None,
        "only listed members are recorded"
    );
}

#[tokio::test]
async fn unconfigured_formats_pass_through_untouched() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let gw = tracegate(&config(up.addr, col.addr, "  client_spans: true\n")).await;
    let b3 = format!("{T32}-{SPAN}-1");
    get(
        &h1_client(),
        &format!("http://{}/x", gw.proxy_addrs[0]),
        &[("b3", &b3)],
    )
    .await;
    let seen = up.seen.wait_for(1).await.remove(0);
    assert_eq!(
        seen.headers["b3"],
        b3.as_str(),
        "b3 is not configured: not read, not rewritten"
    );
    assert_ne!(
        &seen.headers["traceparent"].to_str().unwrap()[3..35],
        T32,
        "so the W3C trace is a new one"
    );
}
