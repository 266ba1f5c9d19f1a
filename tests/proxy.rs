//! The core path through real sockets: client → tracegate → upstream, spans → OTLP receiver.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::sync::atomic::Ordering::Relaxed;

use support::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

fn traceparent_parts(v: &str) -> (String, String, String) {
    let p: Vec<&str> = v.split('-').collect();
    assert_eq!(p.len(), 4, "{v}");
    assert_eq!(p[0], "00");
    (p[1].to_string(), p[2].to_string(), p[3].to_string())
}

#[tokio::test]
async fn continues_caller_trace_end_to_end() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let gw = tracegate(&config(up.addr, &grpc_export(col.addr))).await;
    let url = format!("http://{}/api/42?q=1", gw.proxy_addrs[0]);
    let r = get(
        &h1_client(),
        &url,
        &[
            ("traceparent", &format!("00-{TRACE}-{CALLER}-01")),
            ("tracestate", "vendor=abc"),
            ("tracestate", "other=x"),
            ("user-agent", "itest/1.0"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-trace-id"], TRACE);

    let seen = up.seen.wait_for(1).await.remove(0);
    let tps: Vec<_> = seen.headers.get_all("traceparent").iter().collect();
    assert_eq!(tps.len(), 1, "exactly one traceparent upstream");
    let (tid, parent, flags) = traceparent_parts(tps[0].to_str().unwrap());
    assert_eq!(tid, TRACE, "same trace id");
    assert_ne!(parent, CALLER, "new parent id");
    assert_eq!(flags, "01", "sampled kept, random flag as received (unset)");
    let states: Vec<_> = seen.headers.get_all("tracestate").iter().collect();
    assert_eq!(states, ["vendor=abc,other=x"], "lines joined, one line out");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(
        seen.headers["host"],
        gw.proxy_addrs[0].to_string(),
        "Host kept"
    );

    // Correlation id: generated, same value upstream and back to the client.
    let rid = r.headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(rid.len(), 36);
    assert_eq!(seen.headers["x-request-id"], rid.as_str());
    // The upstream's own `x-request-id` ("upstream-overwrites") does not reach the client.
    assert_eq!(r.headers.get_all("x-request-id").iter().count(), 1);
    assert_eq!(r.headers.get_all("x-trace-id").iter().count(), 1);

    let spans = col.spans.wait_for(2).await;
    let (server, client) = pair(&spans, TRACE);
    let client = client.expect("client span");
    assert_eq!(
        client.span_id(),
        parent,
        "upstream's parent is the client span"
    );
    assert_eq!(
        client.parent_id(),
        server.span_id(),
        "client span's parent is the server span"
    );
    assert_eq!(
        server.parent_id(),
        CALLER,
        "server span's parent is the caller"
    );
    assert_eq!(server.span.name, "GET /api/{id}");
    assert_eq!(server.attr("http.route").as_deref(), Some("/api/{id}"));
    assert_eq!(server.attr("http.request.method").as_deref(), Some("GET"));
    assert_eq!(server.attr("url.path").as_deref(), Some("/api/42"));
    assert_eq!(server.attr("url.query").as_deref(), Some("q=1"));
    assert_eq!(server.attr("url.scheme").as_deref(), Some("http"));
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(server.attr("server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        server.attr("server.port"),
        Some(gw.proxy_addrs[0].port().to_string())
    );
    assert_eq!(server.attr("client.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        server.attr("network.peer.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        server.attr("network.protocol.version").as_deref(),
        Some("1.1")
    );
    assert_eq!(
        server.attr("user_agent.original").as_deref(),
        Some("itest/1.0")
    );
    assert_eq!(server.attr("tracegate.correlation_id"), Some(rid));
    assert_eq!(server.attr("error.type"), None);
    assert_eq!(server.status_code(), 0);
    assert_eq!(server.span.trace_state, "vendor=abc,other=x");
    assert_eq!(client.span.trace_state, "vendor=abc,other=x");
    assert_eq!(
        client.attr("url.full"),
        Some(format!("http://{}/api/42?q=1", up.addr))
    );
    assert_eq!(client.attr("server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(client.attr("server.port"), Some(up.addr.port().to_string()));
    assert_eq!(
        client.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        client.attr("network.protocol.version").as_deref(),
        Some("1.1"),
        "the version the upstream answered in"
    );
    assert!(server.span.end_time_unix_nano >= client.span.end_time_unix_nano);
    assert!(client.span.start_time_unix_nano >= server.span.start_time_unix_nano);
    assert_eq!(
        server.resource_attr("service.name").as_deref(),
        Some("test-svc")
    );
    assert_eq!(server.resource_attr("team").as_deref(), Some("tests"));
    assert!(server.resource_attr("service.version").is_some());
    assert_eq!(
        server.resource_attr("telemetry.sdk.language").as_deref(),
        Some("rust")
    );
}

#[tokio::test]
async fn starts_a_trace_without_traceparent_and_reuses_request_id() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let gw = tracegate(&config(up.addr, &grpc_export(col.addr))).await;
    let r = get(
        &h1_client(),
        &format!("http://{}/ok", gw.proxy_addrs[0]),
        &[("x-correlation-id", "corr-123")],
    )
    .await;
    assert_eq!(r.status, 200);
    // The upstream's own x-request-id is not what the client gets back: the used header is.
    assert_eq!(r.headers["x-correlation-id"], "corr-123");
    let trace = r.headers["x-trace-id"].to_str().unwrap().to_string();
    let seen = up.seen.wait_for(1).await.remove(0);
    assert_eq!(seen.headers["x-correlation-id"], "corr-123");
    assert!(seen.headers.get("tracestate").is_none());
    let (tid, _, flags) = traceparent_parts(seen.headers["traceparent"].to_str().unwrap());
    assert_eq!(tid, trace);
    assert_eq!(flags, "03", "sampled, and random for a new CSPRNG trace id");
    let spans = col.spans.wait_for(2).await;
    let (server, client) = pair(&spans, &trace);
    assert_eq!(server.parent_id(), "", "a root span");
    assert_eq!(
        server.attr("tracegate.correlation_id").as_deref(),
        Some("corr-123")
    );
    assert!(client.is_some());
}

#[tokio::test]
async fn every_malformed_traceparent_restarts_and_drops_tracestate() {
    let up = upstream().await;
    let gw = tracegate(&config(up.addr, "export:\n  protocol: none\n")).await;
    let url = format!("http://{}/ok", gw.proxy_addrs[0]);
    let good = format!("00-{TRACE}-{CALLER}-01");
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("too short", vec![format!("00-{}-{CALLER}-01", &TRACE[1..])]),
        ("too long", vec![format!("{good}-extra")]),
        ("non-hex", vec![format!("00-{}x-{CALLER}-01", &TRACE[1..])]),
        (
            "uppercase",
            vec![format!("00-{}-{CALLER}-01", TRACE.to_uppercase())],
        ),
        ("version ff", vec![format!("ff-{TRACE}-{CALLER}-01")]),
        (
            "zero trace id",
            vec![format!("00-{}-{CALLER}-01", "0".repeat(32))],
        ),
        (
            "zero parent id",
            vec![format!("00-{TRACE}-{}-01", "0".repeat(16))],
        ),
        ("two headers", vec![good.clone(), good.clone()]),
        ("comma joined", vec![format!("{good},{good}")]),
    ];
    let client = h1_client();
    for (i, (name, values)) in cases.iter().enumerate() {
        let mut headers: Vec<(&str, &str)> =
            values.iter().map(|v| ("traceparent", v.as_str())).collect();
        headers.push(("tracestate", "vendor=abc"));
        let r = get(&client, &url, &headers).await;
        assert_eq!(r.status, 200, "{name}");
        let seen = up.seen.wait_for(i + 1).await.remove(i);
        let tps: Vec<_> = seen.headers.get_all("traceparent").iter().collect();
        assert_eq!(tps.len(), 1, "{name}: exactly one traceparent upstream");
        let (tid, parent, _) = traceparent_parts(tps[0].to_str().unwrap());
        assert_ne!(tid, TRACE, "{name}: a new trace");
        assert_ne!(parent, CALLER, "{name}");
        assert_eq!(r.headers["x-trace-id"], tid.as_str(), "{name}");
        assert!(
            seen.headers.get("tracestate").is_none(),
            "{name}: tracestate dropped"
        );
    }
}

#[tokio::test]
async fn h2c_prior_knowledge_is_proxied_and_traced() {
    // Our HTTP/2 server (the default), and hyper's.
    for server in ["native", "hyper"] {
        h2c_prior_knowledge(server).await;
    }
}

async fn h2c_prior_knowledge(server: &str) {
    let up = upstream().await;
    let col = grpc_collector().await;
    let export = format!(
        "{}limits:\n  http2_server: {server}\n",
        grpc_export(col.addr)
    );
    let gw = tracegate(&config(up.addr, &export)).await;
    let client = h2c_client();
    let r = get(
        &client,
        &format!("http://{}/api/h2", gw.proxy_addrs[0]),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "ok");
    let trace = r.headers["x-trace-id"].to_str().unwrap().to_string();
    let seen = up.seen.wait_for(1).await.remove(0);
    assert_eq!(
        seen.headers["host"],
        gw.proxy_addrs[0].to_string(),
        ":authority becomes Host"
    );
    let spans = col.spans.wait_for(2).await;
    let (server, client) = pair(&spans, &trace);
    assert_eq!(
        server.attr("network.protocol.version").as_deref(),
        Some("2")
    );
    // Each span says its own leg's version: the upstream answered over HTTP/1.1.
    assert_eq!(
        client
            .expect("client span")
            .attr("network.protocol.version")
            .as_deref(),
        Some("1.1")
    );
}

#[tokio::test]
async fn a_connect_tunnel_is_refused_with_405_and_traced() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream().await;
    let col = grpc_collector().await;
    let gw = tracegate(&config(up.addr, &grpc_export(col.addr))).await;
    let mut s = tokio::net::TcpStream::connect(gw.proxy_addrs[0])
        .await
        .unwrap();
    s.write_all(b"CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "an answer before the connection closed");
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 405 "), "{head}");
    assert!(
        head.contains("\r\nallow: get, head, post, put, delete, options, trace, patch\r\n"),
        "{head}"
    );
    let trace = head
        .split("\r\nx-trace-id: ")
        .nth(1)
        .and_then(|rest| rest.split("\r\n").next())
        .unwrap_or_else(|| panic!("no x-trace-id: {head}"))
        .to_string();
    assert_eq!(up.seen.len(), 0, "nothing reached the upstream");
    refused_span(&col, &trace, "CONNECT", "method_not_allowed", "405").await;
}

/// The one span of a request tracegate answered itself with a 4xx: a SERVER span named
/// `name`, its `error.type` and status code, and no error status (4xx is the client's).
async fn refused_span(col: &Collector, trace: &str, name: &str, error_type: &str, status: &str) {
    let spans = col.spans.wait_for(1).await;
    let (server, client) = pair(&spans, trace);
    assert!(client.is_none());
    assert_eq!(server.span.name, name);
    assert_eq!(server.attr("error.type").as_deref(), Some(error_type));
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some(status)
    );
    assert_eq!(server.status_code(), 0, "4xx is not a server error");
}

#[tokio::test]
async fn no_route_is_404_with_json_trace_headers_and_error_span() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let gw = tracegate(&config(up.addr, &grpc_export(col.addr))).await;
    let r = get(
        &h1_client(),
        &format!("http://{}/nowhere", gw.proxy_addrs[0]),
        &[("x-request-id", "rid-404")],
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["x-request-id"], "rid-404");
    let trace = r.headers["x-trace-id"].to_str().unwrap().to_string();
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"], "route_not_found");
    assert_eq!(body["trace_id"], trace.as_str());
    assert_eq!(up.seen.len(), 0, "nothing reached the upstream");
    // No route: the name is the method alone.
    refused_span(&col, &trace, "GET", "route_not_found", "404").await;
}

async fn upstream_failure(
    endpoint: std::net::SocketAddr,
    path: &str,
    status: u16,
    error_type: &str,
    message_part: &str,
) {
    let col = grpc_collector().await;
    let gw = tracegate(&config(endpoint, &grpc_export(col.addr))).await;
    let r = get(
        &h1_client(),
        &format!("http://{}{path}", gw.proxy_addrs[0]),
        &[],
    )
    .await;
    assert_eq!(r.status, status, "{error_type}");
    assert!(r.headers.contains_key("x-request-id"));
    let trace = r.headers["x-trace-id"].to_str().unwrap().to_string();
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"], error_type);
    let spans = col.spans.wait_for(2).await;
    let (server, client) = pair(&spans, &trace);
    let client = client.expect("a client span for the failed attempt");
    assert_eq!(server.attr("error.type").as_deref(), Some(error_type));
    assert_eq!(server.status_code(), 2, "5xx is a server error");
    assert_eq!(
        server.attr("http.response.status_code"),
        Some(status.to_string())
    );
    assert_eq!(client.attr("error.type").as_deref(), Some(error_type));
    assert_eq!(client.status_code(), 2);
    assert_eq!(
        client.attr("http.response.status_code"),
        None,
        "no response was received"
    );
    assert_eq!(
        client.attr("network.protocol.version"),
        None,
        "no answer, so no version known"
    );
    // The failure's own words travel as an `exception` event on the CLIENT span.
    let event = client
        .span
        .events
        .iter()
        .find(|e| e.name == "exception")
        .expect("exception event");
    let attr = |k: &str| {
        event
            .attributes
            .iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.as_ref())
            .map(|v| format!("{:?}", v.value))
            .unwrap_or_default()
    };
    assert!(attr("exception.type").contains(error_type), "{event:?}");
    assert!(
        attr("exception.message").contains(message_part),
        "{event:?}"
    );
}

#[tokio::test]
async fn refused_upstream_is_502_with_error_spans() {
    upstream_failure(
        refused_addr().await,
        "/ok",
        502,
        "connection_refused",
        "refused",
    )
    .await;
}

#[tokio::test]
async fn upstream_closing_the_connection_is_502() {
    upstream_failure(
        closing_upstream().await,
        "/ok",
        502,
        "connection_reset",
        "closed",
    )
    .await;
}

#[tokio::test]
async fn slow_upstream_is_504_with_error_spans() {
    let up = upstream().await;
    // request_timeout is 1s in the test config; the upstream waits 5s.
    upstream_failure(
        up.addr,
        "/slow/5000",
        504,
        "timeout",
        "no response headers within",
    )
    .await;
}

/// The words of the `exception` event on `span`.
fn exception_message(span: &Received) -> String {
    span.span
        .events
        .iter()
        .find(|e| e.name == "exception")
        .and_then(|e| e.attributes.iter().find(|kv| kv.key == "exception.message"))
        .and_then(|kv| kv.value.as_ref())
        .map(|v| format!("{:?}", v.value))
        .unwrap_or_default()
}

/// A kept upstream connection times each exchange from that exchange's start: the timer
/// it set for an earlier exchange, running out in the middle of a later one, does not end
/// the later one, whose own time still runs out.
#[tokio::test]
async fn a_kept_connection_times_each_exchange_from_its_own_start() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let yaml = config(up.addr, &grpc_export(col.addr))
        .replace("request_timeout: 1s", "request_timeout: 2s");
    assert!(yaml.contains("request_timeout: 2s"));
    let gw = tracegate(&yaml).await;
    let base = format!("http://{}", gw.proxy_addrs[0]);
    let client = h1_client();
    // The first exchange opens the connection; the second, on it kept, sets its timer.
    for _ in 0..2 {
        assert_eq!(get(&client, &format!("{base}/ok"), &[]).await.status, 200);
    }
    // The second exchange's 2 s end 0.5 s into the next, which takes 1 s.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let r = get(&client, &format!("{base}/slow/1000"), &[]).await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let r = get(&client, &format!("{base}/slow/5000"), &[]).await;
    assert_eq!(r.status, 504);
    assert_eq!(
        up.accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the four exchanges went on one upstream connection"
    );
    let trace = r.headers["x-trace-id"].to_str().unwrap().to_string();
    let spans = col.spans.wait_for(8).await;
    let (server, client) = pair(&spans, &trace);
    assert_eq!(server.attr("error.type").as_deref(), Some("timeout"));
    let message = exception_message(&client.expect("a client span"));
    assert!(
        message.contains("no response headers within 2s"),
        "{message}"
    );
}

/// `request_timeout` counts from the end of the request body: a body sent slowly, for
/// longer than the timeout in all, on a kept connection and on a new one, is answered.
#[tokio::test]
async fn request_timeout_counts_from_the_end_of_the_request_body() {
    let up = upstream().await;
    let gw = tracegate(&config(up.addr, "export:\n  protocol: none\n")).await;
    let url = format!("http://{}/upload", gw.proxy_addrs[0]);
    let client = h1_client();
    for round in 0..2 {
        // 1.5 s in all (request_timeout is 1s): a piece after each pause of 300 ms.
        let pieces = futures_util::stream::unfold(0, |i| async move {
            if i == 5 {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let piece = http_body::Frame::data(bytes::Bytes::from_static(b"0123456789"));
            Some((Ok::<_, std::convert::Infallible>(piece), i + 1))
        });
        let req = http::Request::post(&url)
            .body(http_body_util::combinators::BoxBody::new(
                http_body_util::StreamBody::new(pieces),
            ))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "round {round}");
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"50", "round {round}");
    }
    assert_eq!(
        up.accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the second upload went on the kept connection"
    );
}

#[tokio::test]
async fn upstream_5xx_is_passed_through_and_marks_spans() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let gw = tracegate(&config(up.addr, &grpc_export(col.addr))).await;
    let r = get(
        &h1_client(),
        &format!("http://{}/status/503", gw.proxy_addrs[0]),
        &[],
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "status");
    let trace = r.headers["x-trace-id"].to_str().unwrap().to_string();
    let spans = col.spans.wait_for(2).await;
    let (server, client) = pair(&spans, &trace);
    assert_eq!(server.attr("error.type").as_deref(), Some("503"));
    assert_eq!(server.status_code(), 2);
    assert_eq!(client.unwrap().attr("error.type").as_deref(), Some("503"));

    let r = get(
        &h1_client(),
        &format!("http://{}/status/404", gw.proxy_addrs[0]),
        &[],
    )
    .await;
    let trace = r.headers["x-trace-id"].to_str().unwrap().to_string();
    let spans = col.spans.wait_for(4).await;
    let (server, client) = pair(&spans, &trace);
    assert_eq!(server.status_code(), 0, "server: 4xx is not an error");
    assert_eq!(server.attr("error.type"), None);
    assert_eq!(client.unwrap().status_code(), 2, "client: 4xx is an error");
}

#[tokio::test]
async fn http_protobuf_export_with_gzip_and_headers() {
    let up = upstream().await;
    let col = http_collector().await;
    let export = format!(
        "export:\n  protocol: http/protobuf\n  endpoint: \"http://{}/v1/traces\"\n  compression: gzip\n  batch_delay: 20ms\n  headers:\n    x-api-key: k1\n",
        col.addr
    );
    let gw = tracegate(&config(up.addr, &export)).await;
    let r = get(
        &h1_client(),
        &format!("http://{}/api/1", gw.proxy_addrs[0]),
        &[],
    )
    .await;
    let trace = r.headers["x-trace-id"].to_str().unwrap().to_string();
    let spans = col.spans.wait_for(2).await;
    let (server, client) = pair(&spans, &trace);
    assert_eq!(server.span.name, "GET /api/{id}");
    assert!(client.is_some());
    let headers = col.requests.all().remove(0);
    assert_eq!(headers["x-api-key"], "k1");
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["content-type"], "application/x-protobuf");
    assert!(
        headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("tracegate/")
    );
}

#[tokio::test]
async fn grpc_export_with_gzip_and_metadata() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let export = format!(
        "export:\n  protocol: grpc\n  endpoint: \"http://{}\"\n  compression: gzip\n  batch_delay: 20ms\n  headers:\n    authorization: Bearer t0k\n",
        col.addr
    );
    let gw = tracegate(&config(up.addr, &export)).await;
    let r = get(
        &h1_client(),
        &format!("http://{}/ok", gw.proxy_addrs[0]),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    col.spans.wait_for(2).await;
    let md = col.requests.all().remove(0);
    assert_eq!(md["authorization"], "Bearer t0k");
    assert_eq!(md["grpc-encoding"], "gzip");
    // The OTLP exporter spec: a User-Agent naming the exporter.
    assert!(
        md["user-agent"].to_str().unwrap().starts_with("tracegate/"),
        "{:?}",
        md["user-agent"]
    );
}

/// Sends `requests` requests (2 spans each) through a gateway exporting in batches of
/// `batch_size` with an hour-long delay, so that only the size trigger can send; returns
/// the gateway (still running: dropping it flushes the rest) and the collector once
/// `expect` spans arrived.
async fn size_triggered(
    batch_size: usize,
    requests: usize,
    expect: usize,
) -> (tracegate::gateway::Gateway, Collector, Vec<Received>) {
    let up = upstream().await;
    let col = grpc_collector().await;
    let export = format!(
        "export:\n  endpoint: \"http://{}\"\n  batch_size: {batch_size}\n  batch_delay: 1h\n",
        col.addr
    );
    let gw = tracegate(&config(up.addr, &export)).await;
    let client = h1_client();
    for _ in 0..requests {
        assert_eq!(
            get(&client, &format!("http://{}/ok", gw.proxy_addrs[0]), &[])
                .await
                .status,
            200
        );
    }
    let spans = col.spans.wait_for(expect).await;
    (gw, col, spans)
}

#[tokio::test]
async fn batches_are_sent_by_size() {
    let (_gw, col, spans) = size_triggered(4, 4, 8).await;
    assert_eq!(spans.len(), 8);
    assert_eq!(col.requests.len(), 2, "two full batches of 4 spans");
}

/// The batcher is woken every 64 spans to encode; a batch size that is not a multiple of
/// 64 still sends the moment it is full.
#[tokio::test]
async fn batches_larger_than_the_encode_step_are_sent_by_size() {
    // 60 requests are one full batch of 100 and 20 spans left over.
    let (_gw, col, spans) = size_triggered(100, 60, 100).await;
    assert_eq!(spans.len(), 100);
    assert_eq!(col.requests.len(), 1, "one full batch of 100 spans");
    // The 20 left wait for the (hour-long) tick, well past this test.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(col.spans.len(), 100);
}

async fn dead_collector(addr: std::net::SocketAddr) {
    let up = upstream().await;
    let export = format!(
        "export:\n  endpoint: \"http://{addr}\"\n  batch_delay: 10ms\n  batch_size: 8\n  timeout: 300ms\n  queue_limit: 16\n"
    );
    let gw = tracegate(&config(up.addr, &export)).await;
    let client = h1_client();
    for _ in 0..200 {
        let r = get(&client, &format!("http://{}/ok", gw.proxy_addrs[0]), &[]).await;
        assert_eq!(r.status, 200);
    }
    // Every span is accounted for: exported (none), dropped, or still queued / in flight.
    let stats = gw.export_stats.clone();
    assert_eq!(stats.produced.load(Relaxed), 400);
    assert_eq!(stats.exported.load(Relaxed), 0);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while stats.dropped() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "drops never counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        stats.dropped_queue_full.load(Relaxed) > 0,
        "a full queue drops instead of waiting"
    );
    // The queue never holds more than `queue_limit` exchanges.
    let queued = stats.queue_len.load(Relaxed);
    assert!(queued <= 16, "{queued} exchanges queued, the limit is 16");
    let admin = gw.admin_addr.unwrap();
    let metrics = get(&client, &format!("http://{admin}/metrics"), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        text.contains("tracegate_spans_dropped_total{reason=\"queue_full\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn refused_collector_costs_dropped_spans_not_requests() {
    dead_collector(refused_addr().await).await;
}

#[tokio::test]
async fn black_holed_collector_costs_dropped_spans_not_requests() {
    dead_collector(black_hole().await).await;
}

#[tokio::test]
async fn unsampled_caller_is_passed_on_unsampled_and_not_exported() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let gw = tracegate(&config(up.addr, &grpc_export(col.addr))).await;
    let client = h1_client();
    let r = get(
        &client,
        &format!("http://{}/ok", gw.proxy_addrs[0]),
        &[("traceparent", &format!("00-{TRACE}-{CALLER}-02"))],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = up.seen.wait_for(1).await.remove(0);
    let (tid, _, flags) = traceparent_parts(seen.headers["traceparent"].to_str().unwrap());
    assert_eq!(
        (tid.as_str(), flags.as_str()),
        (TRACE, "02"),
        "unsampled, random kept"
    );
    // A sampled request afterwards is exported; the unsampled one never is.
    let r = get(&client, &format!("http://{}/ok", gw.proxy_addrs[0]), &[]).await;
    let trace = r.headers["x-trace-id"].to_str().unwrap().to_string();
    let spans = col.spans.wait_for(2).await;
    assert!(
        spans.iter().all(|s| s.trace_id() == trace),
        "only the sampled trace"
    );
}

#[tokio::test]
async fn trace_id_header_can_be_renamed_or_turned_off() {
    let up = upstream().await;
    let base = config(up.addr, "export:\n  protocol: none\n");
    let gw = tracegate(&base.replace(
        "tracing:\n",
        "tracing:\n  trace_id_header: X-B3-Whatever\n  correlation_headers: []\n",
    ))
    .await;
    let r = get(
        &h1_client(),
        &format!("http://{}/ok", gw.proxy_addrs[0]),
        &[],
    )
    .await;
    assert_eq!(r.headers["x-b3-whatever"].len(), 32);
    assert!(r.headers.get("x-trace-id").is_none());
    assert_eq!(
        r.headers["x-request-id"], "upstream-overwrites",
        "correlation off: upstream's own header passes"
    );
    let gw = tracegate(&base.replace("tracing:\n", "tracing:\n  trace_id_header: \"off\"\n")).await;
    let r = get(
        &h1_client(),
        &format!("http://{}/ok", gw.proxy_addrs[0]),
        &[],
    )
    .await;
    assert!(r.headers.get("x-trace-id").is_none());
}

#[tokio::test]
async fn round_robin_over_endpoints() {
    let a = upstream().await;
    let b = upstream().await;
    let yaml = config(a.addr, "export:\n  protocol: none\n").replace(
        &format!("endpoints: [\"http://{}\"]", a.addr),
        &format!("endpoints: [\"http://{}\", \"http://{}\"]", a.addr, b.addr),
    );
    let gw = tracegate(&yaml).await;
    let client = h1_client();
    for _ in 0..6 {
        get(&client, &format!("http://{}/ok", gw.proxy_addrs[0]), &[]).await;
    }
    assert_eq!((a.seen.len(), b.seen.len()), (3, 3));
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let up = upstream().await;
    let gw = tracegate(&config(up.addr, "export:\n  protocol: none\n")).await;
    get(
        &h1_client(),
        &format!("http://{}/ok", gw.proxy_addrs[0]),
        &[
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=1"),
            ("x-end", "2"),
            ("x-forwarded-for", "10.0.0.1"),
        ],
    )
    .await;
    let seen = up.seen.wait_for(1).await.remove(0);
    assert!(seen.headers.get("x-hop").is_none());
    assert!(seen.headers.get("keep-alive").is_none());
    assert_eq!(seen.headers["x-end"], "2");
    assert_eq!(seen.headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
}

#[tokio::test]
async fn admin_health_readiness_and_config() {
    let up = upstream().await;
    let gw = tracegate(&config(
        up.addr,
        "export:\n  protocol: grpc\n  headers:\n    authorization: secret-token\n",
    ))
    .await;
    let admin = gw.admin_addr.unwrap();
    let c = h1_client();
    assert_eq!(
        get(&c, &format!("http://{admin}/healthz"), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&c, &format!("http://{admin}/readyz"), &[]).await.status,
        200
    );
    let cfg = get(&c, &format!("http://{admin}/config"), &[]).await;
    let text = String::from_utf8_lossy(&cfg.body);
    assert!(
        text.contains("REDACTED") && !text.contains("secret-token"),
        "{text}"
    );
    gw.shutdown();
    gw.wait().await;
}

#[tokio::test]
async fn demo_echo_shows_the_traceparent_tracegate_sent() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(tracegate::demo::serve_echo(echo, false));
    let env = tracegate::config::Env::default();
    let settings =
        tracegate::demo::settings("127.0.0.1:0", "127.0.0.1:0", echo_addr, &env).unwrap();
    assert!(
        matches!(settings.export, tracegate::config::ExportSettings::Disabled),
        "no collector needed"
    );
    let gw = tracegate::gateway::Gateway::start(settings).await.unwrap();
    let r = get(
        &h1_client(),
        &format!("http://{}/api/hello", gw.proxy_addrs[0]),
        &[("cookie", "secret=1")],
    )
    .await;
    assert_eq!(r.status, 200);
    let echoed: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let tp = echoed["headers"]["traceparent"].as_str().unwrap();
    assert_eq!(&tp[3..35], r.headers["x-trace-id"].to_str().unwrap());
    assert_eq!(echoed["headers"]["cookie"], "REDACTED");
    assert_eq!(echoed["path"], "/api/hello");
    // With OTEL_EXPORTER_OTLP_ENDPOINT set, the demo exports.
    let env = tracegate::config::Env::from_pairs([(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "http://127.0.0.1:4317",
    )]);
    let s = tracegate::demo::settings("127.0.0.1:0", "127.0.0.1:0", echo_addr, &env).unwrap();
    assert!(matches!(
        s.export,
        tracegate::config::ExportSettings::Otlp(_)
    ));
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_reused() {
    let up = upstream().await;
    let gw = tracegate(&config(up.addr, "export:\n  protocol: none\n")).await;
    // Sequential requests on fresh client connections each time: only tracegate's pool
    // can explain a single upstream connection.
    for _ in 0..20 {
        let r = get(
            &h1_client(),
            &format!("http://{}/ok", gw.proxy_addrs[0]),
            &[("connection", "close")],
        )
        .await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(up.seen.len(), 20);
    // A connection goes back to the pool asynchronously after its response ends, so a second
    // one may open now and then; without pooling there would be 20.
    let accepted = up.accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        accepted <= 2,
        "{accepted} upstream connections for 20 sequential requests"
    );
}

/// The fields the proxy adds reach the upstream once each, over our HTTP/1.1 connections
/// (which write them after the client's own) and over hyper's HTTP/2 (which takes them in
/// the map); a request that carries some of them has them joined or kept, not doubled.
#[tokio::test]
async fn added_fields_reach_http1_and_h2c_upstreams_once_each() {
    // With retries, a request without a body going to HTTP/2 is copied for a replay first
    // (with the fields); without, it goes to hyper as it is.
    for (protocol, retries) in [("http1", 0), ("http1", 1), ("h2c", 0), ("h2c", 1)] {
        let protocol = format!("{protocol} (retries {retries})");
        let up = upstream().await;
        let gw = tracegate(&format!(
            "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: \"off\"\nupstreams:\n  - name: app\n    protocol: {}\n    retries: {retries}\n    endpoints: [\"http://{}\"]\nroutes:\n  - upstream: app\n",
            protocol.split(' ').next().unwrap(),
            up.addr
        ))
        .await;
        let url = format!("http://{}/added", gw.proxy_addrs[0]);
        let host = gw.proxy_addrs[0].to_string();
        let once = |seen: &Seen, name: &str| -> String {
            let all: Vec<_> = seen.headers.get_all(name).iter().collect();
            assert_eq!(all.len(), 1, "{protocol}: one {name}: {all:?}");
            all[0].to_str().unwrap().to_string()
        };

        // The client gets the trace id and the correlation id once, on HTTP/1.1 (written
        // by tracegate) and HTTP/2 (by hyper, from the map).
        let reply_once = |r: &Reply| {
            for name in ["x-trace-id", "x-request-id"] {
                assert_eq!(
                    r.headers.get_all(name).iter().count(),
                    1,
                    "{protocol}: {name}"
                );
            }
        };
        for client in [h1_client(), h2c_client()] {
            reply_once(&get(&client, &url, &[]).await);
        }
        // The upstream has seen those two; the next are the third and fourth.
        up.seen.wait_for(2).await;

        // None of them on the request: all added.
        let r = get(&h1_client(), &url, &[]).await;
        assert_eq!(r.status, 200, "{protocol}");
        reply_once(&r);
        let seen = up.seen.wait_for(3).await.remove(2);
        let (tid, _, _) = traceparent_parts(&once(&seen, "traceparent"));
        assert_eq!(tid, r.headers["x-trace-id"].to_str().unwrap(), "{protocol}");
        assert_eq!(once(&seen, "x-forwarded-for"), "127.0.0.1", "{protocol}");
        assert_eq!(once(&seen, "x-forwarded-proto"), "http", "{protocol}");
        assert_eq!(once(&seen, "x-forwarded-host"), host, "{protocol}");
        assert_eq!(
            once(&seen, "x-request-id"),
            r.headers["x-request-id"].to_str().unwrap(),
            "{protocol}"
        );

        // Some of them on the request: joined, kept or replaced, each still once.
        let r = get(
            &h1_client(),
            &url,
            &[
                ("x-forwarded-for", "10.0.0.1"),
                ("x-request-id", "req-7"),
                ("traceparent", &format!("00-{TRACE}-{CALLER}-01")),
                ("te", "trailers"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{protocol}");
        reply_once(&r);
        let seen = up.seen.wait_for(4).await.remove(3);
        let (tid, parent, _) = traceparent_parts(&once(&seen, "traceparent"));
        assert_eq!(
            (tid.as_str(), parent == CALLER),
            (TRACE, false),
            "{protocol}"
        );
        assert_eq!(
            once(&seen, "x-forwarded-for"),
            "10.0.0.1, 127.0.0.1",
            "{protocol}"
        );
        assert_eq!(once(&seen, "x-forwarded-proto"), "http", "{protocol}");
        assert_eq!(once(&seen, "x-request-id"), "req-7", "{protocol}");
        assert_eq!(
            once(&seen, "te"),
            "trailers",
            "{protocol}: the one hop-by-hop kept"
        );
        assert_eq!(r.headers["x-request-id"], "req-7", "{protocol}");
    }
}
