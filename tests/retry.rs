//! Retries through real sockets: a failed connection is retried on the next endpoint as its
//! own CLIENT span (`http.request.resend_count`), the upstream sees the new attempt's id as
//! parent, and requests that cannot be sent again are not retried.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;

fn two_endpoints(
    first: std::net::SocketAddr,
    second: std::net::SocketAddr,
    collector: std::net::SocketAddr,
) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: \"off\"\nupstreams:\n  - name: app\n    endpoints: [\"http://{first}\", \"http://{second}\"]\nroutes:\n  - upstream: app\nexport:\n  endpoint: \"http://{collector}\"\n  batch_delay: 20ms\n"
    )
}

/// The CLIENT spans of `trace`, in the order they started.
fn client_spans<'a>(spans: &'a [Received], trace: &str) -> Vec<&'a Received> {
    let mut clients: Vec<&Received> = spans
        .iter()
        .filter(|s| s.kind() == 3 && s.trace_id() == trace)
        .collect();
    clients.sort_by_key(|s| s.span.start_time_unix_nano);
    clients
}

#[tokio::test]
async fn refused_endpoint_is_retried_on_the_next_one_as_its_own_client_span() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let gw = tracegate(&two_endpoints(refused_addr().await, up.addr, col.addr)).await;
    let r = get(
        &h1_client(),
        &format!("http://{}/x", gw.proxy_addrs[0]),
        &[
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("tracestate", "vendor=abc"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "the retry reached the live endpoint");
    let trace = r.headers["x-trace-id"].to_str().unwrap().to_string();
    let spans = col.spans.wait_for(3).await;
    let clients = client_spans(&spans, &trace);
    assert_eq!(clients.len(), 2, "one CLIENT span per attempt");
    assert_eq!(
        clients[0].attr("error.type").as_deref(),
        Some("connection_refused")
    );
    assert_eq!(clients[0].attr("http.request.resend_count"), None);
    assert_eq!(
        clients[1].attr("http.request.resend_count").as_deref(),
        Some("1")
    );
    assert_eq!(
        clients[1].attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_ne!(clients[0].span_id(), clients[1].span_id());
    let seen = up.seen.wait_for(1).await.remove(0);
    assert_eq!(
        &seen.headers["traceparent"].to_str().unwrap()[36..52],
        clients[1].span_id(),
        "the upstream's parent is the retry"
    );
    // What the proxy added before the refused attempt goes out once on the retry.
    for name in ["x-forwarded-for", "x-forwarded-proto", "x-request-id"] {
        assert_eq!(seen.headers.get_all(name).iter().count(), 1, "{name}");
    }
    let (server, _) = pair(&spans, &trace);
    assert_eq!(server.status_code(), 0, "the exchange succeeded");
    for s in clients.iter().chain([&&server]) {
        assert_eq!(
            s.span.trace_state, "vendor=abc",
            "every span keeps the tracestate"
        );
    }
    let retry = server
        .span
        .events
        .iter()
        .find(|e| e.name == "retry")
        .expect("a retry event");
    assert!(format!("{retry:?}").contains("connection_refused"));
}

/// Over HTTP/2 to the upstream the request's head is copied before the first attempt
/// (hyper's client takes it), and the retry sends the copy: once, with what the proxy
/// added, the retry's own parent id, and both attempts as CLIENT spans.
#[tokio::test]
async fn a_refused_endpoint_is_retried_over_http2_from_the_copy() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let yaml = two_endpoints(refused_addr().await, up.addr, col.addr)
        .replace("\nroutes:", "\n    protocol: http2\nroutes:");
    assert!(yaml.contains("protocol: http2"));
    let gw = tracegate(&yaml).await;
    let r = get(
        &h1_client(),
        &format!("http://{}/over-h2?q=1", gw.proxy_addrs[0]),
        &[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )],
    )
    .await;
    assert_eq!(r.status, 200, "the retry reached the live endpoint");
    let trace = r.headers["x-trace-id"].to_str().unwrap().to_string();
    let spans = col.spans.wait_for(3).await;
    let clients = client_spans(&spans, &trace);
    assert_eq!(clients.len(), 2, "one CLIENT span per attempt");
    assert_eq!(
        clients[1].attr("http.request.resend_count").as_deref(),
        Some("1")
    );
    assert_eq!(
        clients[1].attr("network.protocol.version").as_deref(),
        Some("2")
    );
    let seen = up.seen.wait_for(1).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/over-h2");
    assert_eq!(
        &seen[0].headers["traceparent"].to_str().unwrap()[36..52],
        clients[1].span_id(),
        "the upstream's parent is the retry"
    );
    for name in ["x-forwarded-for", "x-forwarded-proto", "x-request-id"] {
        assert_eq!(seen[0].headers.get_all(name).iter().count(), 1, "{name}");
    }
}

#[tokio::test]
async fn requests_that_cannot_be_sent_again_are_not_retried() {
    let up = upstream().await;
    let col = grpc_collector().await;
    // A body cannot be replayed: the refused first endpoint answers 502, no second attempt.
    let gw = tracegate(&two_endpoints(refused_addr().await, up.addr, col.addr)).await;
    let req = Request::post(format!("http://{}/x", gw.proxy_addrs[0]))
        .body(body_of(Full::new(Bytes::from_static(b"data"))))
        .unwrap();
    let r = send(&h1_client(), req).await;
    assert_eq!(r.status, 502);
    assert_eq!(up.seen.len(), 0);
    // A POST reset before any response is not idempotent: not retried either.
    let col2 = grpc_collector().await;
    let gw = tracegate(&two_endpoints(closing_upstream().await, up.addr, col2.addr)).await;
    let req = Request::post(format!("http://{}/x", gw.proxy_addrs[0]))
        .body(body_of(Full::new(Bytes::new())))
        .unwrap();
    let r = send(&h1_client(), req).await;
    assert_eq!(r.status, 502);
    assert_eq!(up.seen.len(), 0, "the POST was not sent again");
    let spans = col2.spans.wait_for(2).await;
    assert_eq!(spans.iter().filter(|s| s.kind() == 3).count(), 1);
    // The same reset on a GET is retried and succeeds on the next endpoint.
    let r = get(
        &h1_client(),
        &format!("http://{}/x", gw.proxy_addrs[0]),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
}
