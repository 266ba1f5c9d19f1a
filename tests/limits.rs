//! Hostile and oversized input through raw sockets: each limit answers with its status
//! (431, 414, 408, 503) and is counted; smuggling attempts and malformed requests get 400
//! and never reach the upstream; nothing crashes, and the next request is served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn with_limits(upstream: std::net::SocketAddr, limits: &str) -> String {
    format!(
        "{}limits:\n{limits}",
        config(upstream, "export:\n  protocol: none\n")
    )
}

/// Sends `raw` and reads until the server closes or `PATIENCE` passes.
async fn exchange_raw(addr: &str, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    read_all(&mut s).await
}

async fn read_all(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// The proxy answers a plain request after whatever the test threw at it.
async fn still_serves(addr: &impl std::fmt::Display) {
    let r = get(&h1_client(), &format!("http://{addr}/ok"), &[]).await;
    assert_eq!(r.status, 200, "tracegate stopped serving");
}

async fn rejected(admin: &str, reason: &str) -> u64 {
    let series = format!("tracegate_downstream_rejected_total{{reason=\"{reason}\"}}");
    let n = metric(admin, &series).await;
    n.unwrap_or_else(|| panic!("no {series} in /metrics")) as u64
}

/// Waits until `/metrics` counts `n` rejections for `reason`: a connection that hyper
/// rejected is counted when its task ends, which can be just after the client has read the
/// answer.
async fn rejected_reaches(admin: &str, reason: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = rejected(admin, reason).await;
        assert!(now <= n, "{now} rejections for {reason}, expected {n}");
        if now == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{now} rejections for {reason}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_get_431_and_414() {
    let app = upstream().await;
    let gw = tracegate(&with_limits(
        app.addr,
        "  max_request_headers: 20\n  max_request_header_bytes: 16384\n  max_uri_length: 1024\n",
    ))
    .await;
    let addr = gw.proxy_addrs[0].to_string();
    let admin = gw.admin_addr.unwrap().to_string();

    let big = format!(
        "GET /ok HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let r = exchange_raw(&addr, big.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");

    let mut many = String::from("GET /ok HTTP/1.1\r\nhost: x\r\n");
    for i in 0..30 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let r = exchange_raw(&addr, many.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    rejected_reaches(&admin, "request_headers_too_large", 2).await;

    let long = format!("/api/{}", "x".repeat(2000));
    let r = get(&h1_client(), &format!("http://{addr}{long}"), &[]).await;
    assert_eq!(r.status, 414);
    let body = String::from_utf8_lossy(&r.body).to_string();
    assert!(body.contains("uri_too_long"), "{body}");
    assert!(r.headers.contains_key("x-trace-id"));
    rejected_reaches(&admin, "uri_too_long", 1).await;

    assert!(
        app.seen.all().is_empty(),
        "nothing oversized reached the upstream"
    );
    still_serves(&addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_get_408_and_idle_connections_close() {
    let app = upstream().await;
    let gw = tracegate(&with_limits(
        app.addr,
        "  header_read_timeout: 300ms\n  idle_timeout: 600ms\n",
    ))
    .await;
    let addr = gw.proxy_addrs[0].to_string();
    let admin = gw.admin_addr.unwrap().to_string();

    // Slowloris: a head that never ends.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if s.write_all(b"x-a: b\r\n").await.is_err() {
            break;
        }
    }
    let r = read_all(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");

    // The same on a keep-alive connection, for its second request.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    s.write_all(b"GET /ok HTTP/1.1\r\nho").await.unwrap();
    let r = read_all(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    rejected_reaches(&admin, "header_read_timeout", 2).await;

    // An idle connection is closed without an answer.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    let rest = read_all(&mut s).await;
    assert_eq!(rest, "", "an idle connection is closed silently");
    assert_eq!(rejected(&admin, "header_read_timeout").await, 2);

    // A slow upstream is not a slow client: no 408 while the response is awaited.
    let r = get(&h1_client(), &format!("http://{addr}/slow/900"), &[]).await;
    assert_eq!(r.status, 200);

    // The timer armed for a head is not taken for the idle timeout's end: idle for three
    // header timeouts (well within the idle one), the connection still serves.
    let gw = tracegate(&with_limits(
        app.addr,
        "  header_read_timeout: 200ms\n  idle_timeout: 30s\n",
    ))
    .await;
    let mut s = TcpStream::connect(gw.proxy_addrs[0]).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(600)).await;
    }

    // A head that began behind a pipelined request has the header timeout too (not the
    // idle one, 30 s: longer than `read_all` waits).
    let mut s = TcpStream::connect(gw.proxy_addrs[0]).await.unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\nGET /ok HTTP/1.1\r\nho")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    let r = read_all(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r:?}");

    // Two whole pipelined requests: nothing is left waiting, so the quiet after them is
    // idle time (three header timeouts, well within the idle one), not a late head.
    let mut s = TcpStream::connect(gw.proxy_addrs[0]).await.unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\nGET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..2 {
        assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_request_body_gets_408() {
    let app = upstream().await;
    let collector = grpc_collector().await;
    let yaml = format!(
        "{}limits:\n  request_body_timeout: 300ms\n",
        config(app.addr, &grpc_export(collector.addr))
    );
    let gw = tracegate(&yaml).await;
    let addr = gw.proxy_addrs[0].to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
    assert!(r.contains("request_body_timeout"), "{r}");
    let trace_id = r
        .lines()
        .find_map(|l| l.strip_prefix("x-trace-id: "))
        .unwrap()
        .trim()
        .to_string();
    let spans = collector.spans.wait_for(1).await;
    let mut spans = spans;
    while !spans
        .iter()
        .any(|s| s.trace_id() == trace_id && s.kind() == 2)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        spans = collector.spans.all();
    }
    let (server, _) = pair(&spans, &trace_id);
    assert_eq!(
        server.attr("error.type").as_deref(),
        Some("request_body_timeout")
    );
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some("408")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_get_503() {
    let app = upstream().await;
    let gw = tracegate(&with_limits(app.addr, "  max_connections: 2\n")).await;
    let addr = gw.proxy_addrs[0].to_string();
    let admin = gw.admin_addr.unwrap().to_string();
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
        open.push(s);
    }
    let r = exchange_raw(&addr, b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.contains("max_connections"), "{r}");
    rejected_reaches(&admin, "max_connections", 1).await;

    // One closes: a new client gets in (once the server has seen the close).
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = exchange_raw(
            &addr,
            b"GET /ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        if r.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_and_malformed_requests_get_400_and_go_nowhere() {
    let app = upstream().await;
    let gw = tracegate(&config(app.addr, "export:\n  protocol: none\n")).await;
    let addr = gw.proxy_addrs[0].to_string();
    let admin = gw.admin_addr.unwrap().to_string();
    let attempts: [(&str, &[u8]); 11] = [
        ("request line without a target", b"GET\r\n\r\n"),
        ("unknown HTTP version", b"GET /ok HTTP/9.9\r\nhost: x\r\n\r\n"),
        ("NUL in the method", b"G\x00T /ok HTTP/1.1\r\nhost: x\r\n\r\n"),
        ("space in the target", b"GET /o k HTTP/1.1\r\nhost: x\r\n\r\n"),
        (
            "content-length and transfer-encoding",
            b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n",
        ),
        (
            "two different content-lengths",
            b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ncontent-length: 40\r\n\r\nabcd",
        ),
        (
            "transfer-encoding not ending in chunked",
            b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
        (
            "obs-fold",
            b"GET /ok HTTP/1.1\r\nhost: x\r\nx-folded: a\r\n b\r\n\r\n",
        ),
        (
            "control byte in a header value",
            b"GET /ok HTTP/1.1\r\nhost: x\r\nx-bad: a\x01b\r\n\r\n",
        ),
        (
            "space before the colon",
            b"GET /ok HTTP/1.1\r\nhost: x\r\ncontent-length : 5\r\n\r\nhello",
        ),
        ("not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"),
    ];
    for (what, raw) in attempts {
        let r = exchange_raw(&addr, raw).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{what}: {r:?}");
    }
    assert!(
        app.seen.all().is_empty(),
        "nothing reached the upstream: {:?}",
        app.seen
            .all()
            .iter()
            .map(|s| s.path.clone())
            .collect::<Vec<_>>()
    );
    rejected_reaches(&admin, "malformed_request", attempts.len() as u64).await;
    still_serves(&addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_timeout_bounds_the_whole_exchange() {
    let app = upstream().await;
    let collector = grpc_collector().await;
    let yaml = config(app.addr, &grpc_export(collector.addr)).replace(
        "    request_timeout: 1s\n",
        "    request_timeout: 5s\n    total_timeout: 400ms\n",
    );
    assert!(yaml.contains("total_timeout"));
    let gw = tracegate(&yaml).await;
    let base = format!("http://{}", gw.proxy_addrs[0]);
    let client = h1_client();

    // Headers later than the total: 504, although request_timeout (5s) is not reached.
    let r = get(&client, &format!("{base}/slow/1500"), &[]).await;
    assert_eq!(r.status, 504);
    assert!(String::from_utf8_lossy(&r.body).contains("\"timeout\""));

    // Headers in time, body too late: the response is cut short and the span says so.
    let url = format!("{base}/trickle/1500");
    let req = http::Request::get(&url)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>()
        .request(req)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let trace_id = resp.headers()["x-trace-id"].to_str().unwrap().to_string();
    let body = http_body_util::BodyExt::collect(resp.into_body()).await;
    assert!(body.is_err(), "the body was cut short");
    let server = server_span(&collector, &trace_id).await;
    assert_eq!(server.attr("error.type").as_deref(), Some("timeout"));

    // Quick exchanges are untouched.
    assert_eq!(get(&client, &format!("{base}/ok"), &[]).await.status, 200);

    // On the upstream connection that exchange left idle (which times the wait itself),
    // the total bounds it too.
    let connections = app.accepted.load(std::sync::atomic::Ordering::SeqCst);
    let r = get(&client, &format!("{base}/slow/1500"), &[]).await;
    assert_eq!(r.status, 504);
    assert_eq!(
        app.accepted.load(std::sync::atomic::Ordering::SeqCst),
        connections,
        "it went on the kept connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_are_bounded_and_rapid_resets_end_the_connection() {
    streams_bounded_and_rapid_resets("native").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypers_http2_server_bounds_streams_and_ends_rapid_resets() {
    streams_bounded_and_rapid_resets("hyper").await;
}

/// On either HTTP/2 server (`server`: `limits.http2_server`).
async fn streams_bounded_and_rapid_resets(server: &str) {
    let app = upstream().await;
    let gw = tracegate(&with_limits(
        app.addr,
        &format!("  http2_max_concurrent_streams: 2\n  http2_server: {server}\n"),
    ))
    .await;
    let addr = gw.proxy_addrs[0];

    // The SETTINGS the client gets: 2 streams at a time, extended CONNECT on.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while client.current_max_send_streams() != 2 {
        assert!(tokio::time::Instant::now() < deadline, "no SETTINGS");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(client.is_extended_connect_protocol_enabled());
    let (resp, _) = client
        .send_request(
            http::Request::get(format!("http://{addr}/ok"))
                .body(())
                .unwrap(),
            true,
        )
        .unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);

    // Rapid reset (CVE-2023-44487): streams opened and cancelled at once, in bulk. The
    // server ends the connection (GOAWAY) instead of working on them forever.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let mut ended = false;
    for _ in 0..5000 {
        client = match client.ready().await {
            Ok(c) => c,
            Err(_) => {
                ended = true;
                break;
            }
        };
        match client.send_request(
            http::Request::get(format!("http://{addr}/slow/1000"))
                .body(())
                .unwrap(),
            false,
        ) {
            Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(_) => {
                ended = true;
                break;
            }
        }
    }
    let closed = tokio::time::timeout(PATIENCE, conn).await.is_ok();
    assert!(ended || closed, "the rapid-reset connection was not ended");
    let admin = gw.admin_addr.unwrap().to_string();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while rejected(&admin, "http2_rapid_reset").await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And the proxy still serves.
    still_serves(&addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_chunked_bodies_never_reach_the_upstream_whole() {
    let app = upstream().await;
    let gw = tracegate(&config(app.addr, "export:\n  protocol: none\n")).await;
    let addr = gw.proxy_addrs[0].to_string();
    for (what, raw) in [
        (
            "bad chunk size",
            &b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"[..],
        ),
        (
            "chunk longer than announced",
            &b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n"[..],
        ),
    ] {
        let r = exchange_raw(&addr, raw).await;
        assert!(!r.starts_with("HTTP/1.1 200"), "{what}: {r}");
    }
    // Truncated: the client goes away in the middle of a chunk.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel")
        .await
        .unwrap();
    drop(s);
    // Whatever reached the upstream ended without a complete body (given time to settle:
    // a forwarded body would be complete by then).
    tokio::time::sleep(Duration::from_millis(300)).await;
    still_serves(&addr).await;
    let uploads: Vec<_> = app
        .bodies
        .all()
        .into_iter()
        .filter(|(p, _)| p == "/upload")
        .collect();
    assert!(uploads.is_empty(), "{uploads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_protocol_errors_end_the_connection_and_are_counted() {
    protocol_errors("native").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypers_http2_server_counts_protocol_errors_too() {
    protocol_errors("hyper").await;
}

/// A DATA frame on stream 0, on either HTTP/2 server (`server`: `limits.http2_server`).
async fn protocol_errors(server: &str) {
    let app = upstream().await;
    let gw = tracegate(&config(
        app.addr,
        &format!("export:\n  protocol: none\nlimits:\n  http2_server: {server}\n"),
    ))
    .await;
    let addr = gw.proxy_addrs[0].to_string();
    let admin = gw.admin_addr.unwrap().to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // An empty SETTINGS, then a DATA frame on stream 0 (a connection error).
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    s.write_all(&[0, 0, 0, 0, 0, 0, 0, 0, 0]).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut got)).await;
    // The server's GOAWAY: a frame header with type 7.
    assert!(got.windows(4).any(|w| w[3] == 7), "no GOAWAY in {got:?}");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while rejected(&admin, "malformed_request").await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(app.seen.all().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_end_on_our_server() {
    idle_http2_connections_end("native").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_end_on_hypers_server_too() {
    idle_http2_connections_end("hyper").await;
}

/// `limits.idle_timeout` on either HTTP/2 server, with a real HTTP/2 client (one that
/// answers PINGs, as hyper's graceful GOAWAY asks): a request in flight for three timeouts
/// keeps the connection and gets its answer; once nothing is in flight or moving, the
/// server ends the connection gracefully (GOAWAY, NO_ERROR, then the close).
async fn idle_http2_connections_end(server: &str) {
    let app = upstream().await;
    let gw = tracegate(&with_limits(
        app.addr,
        &format!("  idle_timeout: 200ms\n  http2_server: {server}\n"),
    ))
    .await;
    let addr = gw.proxy_addrs[0];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let got = h2_get(&mut client, &format!("http://{addr}/slow/600")).await;
    assert_eq!(got, (200, b"slow ok".to_vec()));
    // Nothing more is asked: the server ends the connection, without an error.
    let ended = tokio::time::timeout(PATIENCE, conn)
        .await
        .expect("the idle connection is ended");
    assert!(ended.unwrap().is_ok(), "a graceful end ({server})");
    // A request now would need a new connection.
    assert!(client.ready().await.is_err());
    let admin = gw.admin_addr.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while metric(admin, "tracegate_active_connections").await != Some(0) {
        assert!(tokio::time::Instant::now() < deadline, "still counted open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// hyper's graceful GOAWAY waits for the client to answer its PING. A client that answers
/// nothing (here: not even our SETTINGS) is closed all the same, one timeout later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_client_that_answers_nothing_is_closed_on_hypers_server() {
    use tracegate::listen::http2::frame::{self, Frame, Reason};
    let app = upstream().await;
    let gw = tracegate(&with_limits(
        app.addr,
        "  idle_timeout: 200ms\n  http2_server: hyper\n",
    ))
    .await;
    let mut s = TcpStream::connect(gw.proxy_addrs[0]).await.unwrap();
    let mut out = tracegate::listen::http2::conn::PREFACE.to_vec();
    frame::put_settings(&mut out, &[]);
    s.write_all(&out).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let read = async {
        let mut frames = Vec::new();
        loop {
            while let Some((h, p)) = frame::split(&mut buf, frame::MAX_MAX_FRAME_SIZE).unwrap() {
                frames.push(Frame::parse(h, p).unwrap());
            }
            if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return frames;
            }
        }
    };
    let frames = tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the server closes the connection");
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::GoAway { reason, .. } if *reason == Reason::NO_ERROR)),
        "{frames:?}"
    );
}

/// A client that reads nothing while its answer's body is written: hyper's writes wait on a
/// full socket. Once one has waited a whole `limits.idle_timeout` with nothing written, the
/// connection is closed and counted as `send_timeout` (nginx's), and the upstream's body
/// is let go of. The windows are wide open: only the socket holds the answer back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_reads_nothing_is_closed_on_hypers_server() {
    use tracegate::listen::http2::frame;
    use tracegate::listen::http2::hpack::Encoder;
    let app = upstream().await;
    let gw = tracegate(&with_limits(
        app.addr,
        "  idle_timeout: 200ms\n  http2_server: hyper\n",
    ))
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(gw.proxy_addrs[0]).await.unwrap();
    let mut out = tracegate::listen::http2::conn::PREFACE.to_vec();
    let wide = (1u32 << 31) - 1;
    frame::put_settings(&mut out, &[(frame::SETTINGS_INITIAL_WINDOW_SIZE, wide)]);
    frame::put_window_update(&mut out, 0, wide - 65_535);
    out.extend(h2_request_frame(
        1,
        "/bytes/1000000000",
        &[],
        &mut Encoder::new(),
    ));
    s.write_all(&out).await.unwrap();

    // Nothing read until the server has given up on the client.
    let admin = gw.admin_addr.unwrap();
    let series = "tracegate_downstream_rejected_total{reason=\"send_timeout\"}";
    let counted = async {
        while metric(admin, series).await != Some(1) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(PATIENCE, counted)
        .await
        .expect("counted as send_timeout");
    // What the socket held is all there is: then the end.
    let mut sink = Vec::new();
    let end = tokio::time::timeout(PATIENCE, s.read_to_end(&mut sink)).await;
    assert!(
        matches!(end, Ok(Ok(_)) | Ok(Err(_))),
        "the connection ends (closed or reset)"
    );
    assert!(
        (sink.len() as u64) < 1_000_000_000,
        "not the whole body: {}",
        sink.len()
    );
    let cut = async {
        while app.cut_responses.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, cut)
        .await
        .expect("the upstream's body is let go of before its end");
}
