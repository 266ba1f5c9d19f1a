//! Exported exchanges come back to the request path and the next requests are recorded into
//! them (`span::spare`), each span carrying only its own request. One test in a binary of
//! its own: the spare list is the process's, and the gateway runs on this test's thread.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use support::*;
use tracegate::gateway::Gateway;
use tracegate::span::spare;

/// Requests a round: their 64 spans are one batch, sent the moment the last is queued (the
/// batch delay never passes during the test).
const ROUND: usize = 32;

/// Sends a round of requests, one after the other; returns each one's trace id and
/// correlation id.
async fn round(
    gw: &Gateway,
    name: &str,
    headers: impl Fn(usize) -> Vec<(String, String)>,
) -> Vec<(String, String)> {
    let client = h1_client();
    let mut ids = Vec::new();
    for i in 0..ROUND {
        let h = headers(i);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let url = format!("http://{}/api/{name}-{i}?n={i}", gw.proxy_addrs[0]);
        let r = get(&client, &url, &h).await;
        assert_eq!(r.status, 200);
        let header = |n: &str| r.headers[n].to_str().unwrap().to_string();
        ids.push((header("x-trace-id"), header("x-request-id")));
        if i == 0 && name == "second" {
            // The first request took what the export thread gave back.
            assert_eq!(spare::waiting(), 0, "the spares were not taken");
        }
    }
    ids
}

#[tokio::test]
async fn exported_exchanges_are_reused_and_carry_only_their_own_request() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\n  traces: 0\nupstreams:\n  - name: app\n    endpoints: [\"http://{}\"]\nroutes:\n  - name: api\n    match: {{ path_prefix: /api }}\n    upstream: app\nexport:\n  endpoint: \"http://{}\"\n  batch_size: {}\n  batch_delay: 60s\n",
        up.addr,
        col.addr,
        ROUND * 2
    );
    let gw = tracegate(&yaml).await;
    assert_eq!(spare::waiting(), 0);

    // The first round comes with a caller's context and correlation ids of its own.
    let first = round(&gw, "first", |i| {
        vec![
            (
                "traceparent".into(),
                format!("00-{:032x}-{:016x}-01", 0xabc0 + i, 0xdef0 + i),
            ),
            ("tracestate".into(), format!("vendor=first{i}")),
            ("x-request-id".into(), format!("first-{i}")),
        ]
    })
    .await;
    col.spans.wait_for(2 * ROUND).await;
    // All of them given back (the viewer is off: the export thread held the last
    // reference).
    assert_eq!(spare::waiting(), ROUND);

    // The second round, recorded into the first round's exchanges, comes with nothing.
    let second = round(&gw, "second", |_| Vec::new()).await;
    let spans = col.spans.wait_for(4 * ROUND).await;
    assert_eq!(spans.len(), 4 * ROUND);
    assert_eq!(spare::waiting(), ROUND);

    for (i, (trace_id, request_id)) in first.iter().enumerate() {
        assert_eq!(*trace_id, format!("{:032x}", 0xabc0 + i));
        assert_eq!(*request_id, format!("first-{i}"));
        let (server, client) = pair(&spans, trace_id);
        assert_eq!(server.span.trace_state, format!("vendor=first{i}"));
        assert_eq!(server.parent_id(), format!("{:016x}", 0xdef0 + i));
        assert_eq!(server.attr("url.path").unwrap(), format!("/api/first-{i}"));
        assert_eq!(client.unwrap().span.trace_state, format!("vendor=first{i}"));
    }
    for (i, (trace_id, request_id)) in second.iter().enumerate() {
        assert!(first.iter().all(|(t, _)| t != trace_id));
        assert!(!request_id.starts_with("first-"), "{request_id}");
        let (server, client) = pair(&spans, trace_id);
        let client = client.unwrap();
        assert_eq!(server.span.trace_state, "");
        assert_eq!(client.span.trace_state, "");
        assert_eq!(server.parent_id(), "", "a new trace has no parent");
        assert_eq!(client.parent_id(), server.span_id());
        assert_eq!(server.attr("url.path").unwrap(), format!("/api/second-{i}"));
        assert_eq!(server.attr("url.query").unwrap(), format!("n={i}"));
        assert_eq!(
            server.attr("tracegate.correlation_id").as_deref(),
            Some(request_id.as_str())
        );
    }
}
