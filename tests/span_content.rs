//! Span content through real sockets: header capture with redaction, query redaction, and
//! static attributes, checked on what the OTLP receiver decoded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use support::*;

#[tokio::test]
async fn secrets_never_reach_the_collector_even_when_all_headers_are_captured() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: \"off\"\nupstreams:\n  - name: app\n    endpoints: [\"http://{}\"]\nroutes:\n  - name: checkout\n    match: {{ path_prefix: /checkout }}\n    upstream: app\n    attributes: {{ team: payments, tier: gold }}\n  - upstream: app\ntracing:\n  capture:\n    request_headers: [\"*\"]\n    response_headers: [x-request-id, content-length]\n  attributes: {{ tier: bronze, deployment.environment.name: test }}\nexport:\n  endpoint: \"http://{}\"\n  batch_delay: 20ms\n",
        up.addr, col.addr
    );
    let gw = tracegate(&yaml).await;
    let r = get(
        &h1_client(),
        &format!(
            "http://{}/checkout/1?order=7&X-Goog-Signature=s3cr3tsig&sig=abc123",
            gw.proxy_addrs[0]
        ),
        &[
            ("authorization", "Bearer topsecret-token"),
            ("proxy-authorization", "Basic cHJveHk6cGFzcw=="),
            ("cookie", "session=cookie-secret"),
            ("x-tenant", "blue"),
            ("x-tenant", "green"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    // The upstream still gets everything: redaction is about telemetry only.
    let seen = up.seen.wait_for(1).await.remove(0);
    assert_eq!(seen.headers["authorization"], "Bearer topsecret-token");

    let spans = col.spans.wait_for(2).await;
    let everything = format!("{spans:?}");
    for secret in [
        "topsecret-token",
        "cHJveHk6cGFzcw==",
        "cookie-secret",
        "s3cr3tsig",
        "abc123",
    ] {
        assert!(
            !everything.contains(secret),
            "`{secret}` reached the collector"
        );
    }
    let (server, client) = pair(&spans, r.headers["x-trace-id"].to_str().unwrap());
    let client = client.unwrap();
    let array = |s: &Received, key: &str| -> Vec<String> {
        let kv = s
            .span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .unwrap_or_else(|| panic!("no {key}"));
        let Some(opentelemetry_proto::tonic::common::v1::any_value::Value::ArrayValue(a)) =
            kv.value.as_ref().unwrap().value.as_ref()
        else {
            panic!("{key} is not an array")
        };
        a.values
            .iter()
            .map(|v| match v.value.as_ref().unwrap() {
                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s) => {
                    s.clone()
                }
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(
        array(&server, "http.request.header.authorization"),
        ["REDACTED"]
    );
    assert_eq!(array(&server, "http.request.header.cookie"), ["REDACTED"]);
    assert_eq!(
        array(&server, "http.request.header.x-tenant"),
        ["blue", "green"]
    );
    assert_eq!(array(&server, "http.response.header.content-length"), ["2"]);
    assert_eq!(
        server.attr("url.query").as_deref(),
        Some("order=7&X-Goog-Signature=REDACTED&sig=REDACTED")
    );
    assert!(
        client
            .attr("url.full")
            .unwrap()
            .ends_with("/checkout/1?order=7&X-Goog-Signature=REDACTED&sig=REDACTED")
    );
    // Static attributes: the route's win over the process-wide ones, on both spans.
    for s in [&server, &client] {
        assert_eq!(s.attr("team").as_deref(), Some("payments"));
        assert_eq!(s.attr("tier").as_deref(), Some("gold"));
        assert_eq!(
            s.attr("deployment.environment.name").as_deref(),
            Some("test")
        );
    }
    // Another route gets only the process-wide ones.
    let r = get(
        &h1_client(),
        &format!("http://{}/other", gw.proxy_addrs[0]),
        &[],
    )
    .await;
    let spans = col.spans.wait_for(4).await;
    let (server, _) = pair(&spans, r.headers["x-trace-id"].to_str().unwrap());
    assert_eq!(server.attr("tier").as_deref(), Some("bronze"));
    assert_eq!(server.attr("team"), None);
    let mut response_keys: Vec<&str> = server
        .span
        .attributes
        .iter()
        .filter_map(|kv| kv.key.strip_prefix("http.response.header."))
        .collect();
    response_keys.sort_unstable();
    assert_eq!(
        response_keys,
        ["content-length", "x-request-id"],
        "only the listed response headers"
    );
}
