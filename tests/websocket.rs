//! WebSocket through tracegate with a real client and server (tungstenite): the handshake
//! is traced (one SERVER span, status 101, `tracegate.upgrade`), the upstream sees the trace
//! context, and frames flow both ways until a side closes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types,
    clippy::result_large_err
)]

mod support;

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// A WebSocket echo server; logs each handshake's `traceparent` and each close.
async fn echo_server() -> (std::net::SocketAddr, Arc<Log<String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Arc<Log<String>> = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let record = seen.clone();
                let callback = move |req: &Request, resp: Response| {
                    let tp = req
                        .headers()
                        .get("traceparent")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    record.push(format!("handshake {} traceparent={tp}", req.uri().path()));
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Close(_) => {
                            seen.push("closed by client".into());
                            break;
                        }
                        m @ (Message::Text(_) | Message::Binary(_)) => {
                            let sent = ws.send(m).await;
                            if sent.is_err() {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                // The connection is over (after a close, or without one).
                seen.push("ended".into());
            });
        }
    });
    (addr, log)
}

/// Frames through the echo: `first`, a 256 KiB binary one (past HTTP/2's stream windows
/// and TCP's buffers), then 50 small ones, each echoed back whole and in order.
async fn echoed_both_ways<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, first: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(first)).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(first));
    let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    for i in 0..50 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("m{i}"))
        );
    }
}

/// The upstream's close reaches the client, and the client's side ends after it.
async fn closed_by_the_upstream<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let next = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap();
    assert!(
        matches!(next, Some(Ok(Message::Close(_))) | None),
        "{next:?}"
    );
    let end = tokio::time::timeout(PATIENCE, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(
        end.is_ok(),
        "the client's side ends after the upstream's close"
    );
}

/// An upstream that accepts one WebSocket and closes it at once.
async fn closing_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frames_flow_both_ways_and_the_handshake_is_traced() {
    let (ws_addr, server_log) = echo_server().await;
    let collector = grpc_collector().await;
    let gw = tracegate(&config(ws_addr, &grpc_export(collector.addr))).await;
    let tcp = tokio::net::TcpStream::connect(gw.proxy_addrs[0])
        .await
        .unwrap();
    let url = format!("ws://{}/api/chat", gw.proxy_addrs[0]);
    let (mut ws, resp) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    assert_eq!(resp.status(), 101);
    let trace_id = resp.headers()["x-trace-id"].to_str().unwrap().to_string();

    echoed_both_ways(&mut ws, "hello").await;
    ws.close(None).await.unwrap();
    server_log.wait_for(2).await;
    let log = server_log.all();
    assert!(
        log[0].starts_with("handshake /api/chat traceparent=00-"),
        "{log:?}"
    );
    assert!(
        log[0].contains(&trace_id),
        "the upstream continues the trace: {log:?}"
    );
    assert_eq!(log[1], "closed by client");

    let spans = collector.spans.wait_for(2).await;
    let (server, client) = pair(&spans, &trace_id);
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some("101")
    );
    assert_eq!(
        server.attr("tracegate.upgrade").as_deref(),
        Some("websocket")
    );
    assert_eq!(server.attr("http.route").as_deref(), Some("/api/{id}"));
    assert_eq!(server.status_code(), 0, "a 101 is not an error");
    let client = client.unwrap();
    assert!(log[0].contains(&client.span_id()), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_closing_ends_the_tunnel() {
    let addr = closing_upstream().await;
    let gw = tracegate(&config(addr, "export:\n  protocol: none\n")).await;
    let tcp = tokio::net::TcpStream::connect(gw.proxy_addrs[0])
        .await
        .unwrap();
    let url = format!("ws://{}/ok", gw.proxy_addrs[0]);
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    closed_by_the_upstream(&mut ws).await;
}

type H2WebSocket =
    tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// A WebSocket over HTTP/2 (RFC 8441) through the gateway at `addr`, opened with hyper's
/// client; the response's status and `x-trace-id`.
async fn h2_websocket(addr: std::net::SocketAddr, path: &str) -> (H2WebSocket, u16, String) {
    use hyper_util::rt::TokioIo;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    let (upgraded, status, trace_id) = h2_connect(addr, path, "websocket").await;
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    (ws, status, trace_id)
}

type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// hyper's HTTP/2 client on a new connection to `addr`.
async fn h2_sender(addr: std::net::SocketAddr) -> H2Sender {
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// An extended CONNECT for `protocol` to `path` at `addr`.
fn connect_request(
    addr: std::net::SocketAddr,
    path: &str,
    protocol: &'static str,
) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{addr}{path}"))
        .version(http::Version::HTTP_2)
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static(protocol));
    req
}

/// An extended CONNECT for `protocol` through the gateway at `addr`: the stream, once
/// answered; the status and `x-trace-id`.
async fn h2_connect(
    addr: std::net::SocketAddr,
    path: &str,
    protocol: &'static str,
) -> (hyper::upgrade::Upgraded, u16, String) {
    let mut send = h2_sender(addr).await;
    // The server's SETTINGS (with ENABLE_CONNECT_PROTOCOL) arrive right after the handshake.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let resp = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no extended CONNECT"
        );
        match send
            .send_request(connect_request(addr, path, protocol))
            .await
        {
            Ok(r) => break r,
            Err(e) => {
                assert!(
                    e.to_string().contains("connect") || e.to_string().contains("protocol"),
                    "{e}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    };
    let status = resp.status().as_u16();
    let trace_id = resp.headers()["x-trace-id"].to_str().unwrap().to_string();
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    (upgraded, status, trace_id)
}

/// Our own HTTP/2 server (the default), said outright.
const NATIVE: &str = "limits:\n  http2_server: native\n";
/// hyper's HTTP/2 server instead of ours.
const HYPER: &str = "limits:\n  http2_server: hyper\n";

/// Extended CONNECT on either HTTP/2 server (`server`: extra config) reaches an HTTP/1.1
/// upstream as an `Upgrade`: frames flow both ways (a 256 KiB one past the stream's
/// windows, and 50 small ones), and the handshake is traced.
async fn extended_connect_reaches_an_http1_upstream(server: &str) {
    let (ws_addr, server_log) = echo_server().await;
    let collector = grpc_collector().await;
    let export = format!("{}{server}", grpc_export(collector.addr));
    let gw = tracegate(&config(ws_addr, &export)).await;
    let (mut ws, status, trace_id) = h2_websocket(gw.proxy_addrs[0], "/api/chat").await;
    assert_eq!(status, 200);
    echoed_both_ways(&mut ws, "over h2").await;
    ws.close(None).await.unwrap();
    server_log.wait_for(3).await;
    let log = server_log.all();
    assert!(log[0].contains(&trace_id), "{log:?}");
    assert_eq!(log[1..], ["closed by client", "ended"], "{log:?}");

    let spans = collector.spans.wait_for(2).await;
    let (server, client) = pair(&spans, &trace_id);
    assert_eq!(
        server.attr("http.request.method").as_deref(),
        Some("CONNECT")
    );
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        server.attr("tracegate.upgrade").as_deref(),
        Some("websocket")
    );
    assert_eq!(
        client.unwrap().attr("http.response.status_code").as_deref(),
        Some("101")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_hypers_http2_server_reaches_an_http1_upstream() {
    extended_connect_reaches_an_http1_upstream(HYPER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_our_own_http2_server_reaches_an_http1_upstream() {
    extended_connect_reaches_an_http1_upstream(NATIVE).await;
}

/// A WebSocket over our HTTP/2 server with nothing to say for five of
/// `limits.idle_timeout` is not an idle connection (its stream waits on the upstream): it
/// is kept, and frames still flow both ways after the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_tunnel_outlives_the_idle_timeout() {
    let (ws_addr, _log) = echo_server().await;
    let export = format!("export:\n  protocol: none\n{NATIVE}  idle_timeout: 100ms\n");
    let gw = tracegate(&config(ws_addr, &export)).await;
    let (mut ws, status, _) = h2_websocket(gw.proxy_addrs[0], "/api/chat").await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    echoed_both_ways(&mut ws, "after a pause").await;
}

/// On our HTTP/2 server: an upstream that closes the WebSocket ends the client's stream,
/// and a client that drops its stream (a reset), or its whole connection, ends the
/// upstream's connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_http2_server_ends_a_tunnel_from_either_side() {
    let closing = closing_upstream().await;
    let gw = tracegate(&config(
        closing,
        &format!("export:\n  protocol: none\n{NATIVE}"),
    ))
    .await;
    let (mut ws, status, _) = h2_websocket(gw.proxy_addrs[0], "/ok").await;
    assert_eq!(status, 200);
    closed_by_the_upstream(&mut ws).await;

    // The client goes away without a close: the upstream's connection ends.
    let (ws_addr, server_log) = echo_server().await;
    let gw = tracegate(&config(
        ws_addr,
        &format!("export:\n  protocol: none\n{NATIVE}"),
    ))
    .await;
    let (mut ws, _, _) = h2_websocket(gw.proxy_addrs[0], "/ok").await;
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ping"));
    drop(ws);
    let log = server_log.wait_for(2).await;
    assert_eq!(log[1], "ended", "{log:?}");
    // The whole connection goes away (through a relay, cut): the upstream's connection
    // ends too.
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let to = gw.proxy_addrs[0];
    let relaying = tokio::spawn(async move {
        let (mut client, _) = relay.accept().await.unwrap();
        let mut gateway = tokio::net::TcpStream::connect(to).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut gateway).await;
    });
    let (mut ws, status, _) = h2_websocket(relay_addr, "/ok").await;
    assert_eq!(status, 200);
    ws.send(Message::text("again")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("again"));
    relaying.abort();
    let log = server_log.wait_for(4).await;
    assert_eq!(log[3], "ended", "{log:?}");
    drop(ws);
}

/// An upgrade the upstream refuses (403) or ignores (200, no switch) opens no tunnel, on
/// either server: the client gets the 403, or a 502 where a 2xx would tell it the tunnel
/// is open, and the connection goes on serving. (Our server's reset of a refused
/// tunnel's stream: `tests/http2_native.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_ignored_extended_connect_opens_no_tunnel() {
    for server in [NATIVE, HYPER] {
        let up = upstream().await;
        let export = format!("export:\n  protocol: none\n{server}");
        let gw = tracegate(&config(up.addr, &export)).await;
        let addr = gw.proxy_addrs[0];
        let mut send = h2_sender(addr).await;
        let mut statuses = Vec::new();
        for path in ["/status/403", "/ok"] {
            let resp = tokio::time::timeout(PATIENCE, async {
                loop {
                    send.ready().await.unwrap();
                    let req = connect_request(addr, path, "websocket");
                    match send.send_request(req).await {
                        Ok(r) => break r,
                        // Before the server's SETTINGS, or while the last stream closes.
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{server}: no answer for {path}"));
            statuses.push(resp.status().as_u16());
        }
        assert_eq!(statuses, [403, 502], "{server}");
        let resp = tokio::time::timeout(PATIENCE, async {
            loop {
                send.ready().await.unwrap();
                let get = http::Request::get(format!("http://{addr}/ok"))
                    .version(http::Version::HTTP_2)
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                match send.send_request(get).await {
                    Ok(r) => break r,
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{server}: no answer after the refusals"));
        assert_eq!(resp.status(), 200, "{server}");
    }
}

/// A tunnel is a pair of half-closes (RFC 9113, 8.5): on our HTTP/2 server, an upstream
/// that shuts its sending side ends the client's stream (END_STREAM) while the client's
/// bytes still reach it, and the client's END_STREAM shuts the upstream's reading side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_http2_server_keeps_a_tunnel_half_open() {
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // An upstream that switches protocols by hand, says "hello", shuts its sending side,
    // then reads to the end.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(tcp.read(&mut b).await.unwrap(), 1);
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        assert!(head.contains("upgrade: half-open"), "{head}");
        tcp.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: half-open\r\nConnection: upgrade\r\n\r\nhello",
        )
        .await
        .unwrap();
        tcp.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest).await.unwrap();
        let _ = got_tx.send(rest);
    });
    let gw = tracegate(&config(
        addr,
        &format!("export:\n  protocol: none\n{NATIVE}"),
    ))
    .await;
    let (upgraded, status, _) = h2_connect(gw.proxy_addrs[0], "/ok", "half-open").await;
    assert_eq!(status, 200);
    let mut io = TokioIo::new(upgraded);
    let mut from_upstream = Vec::new();
    tokio::time::timeout(PATIENCE, io.read_to_end(&mut from_upstream))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from_upstream, b"hello", "the upstream's side ended");
    // Our side is still open: these bytes, then our end, reach the upstream.
    io.write_all(b"after the upstream's end").await.unwrap();
    io.shutdown().await.unwrap();
    let got = tokio::time::timeout(PATIENCE, got_rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"after the upstream's end");
}

/// `Upgrade` counts only when `Connection` names it: without `Connection` the request is a
/// plain one (answered 200, no upgrade header reaches the upstream, no `tracegate.upgrade`);
/// with `Connection: keep-alive, Upgrade` (a list, any case) the handshake goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_counts_only_when_connection_names_it() {
    use tokio::io::AsyncWriteExt;

    let up = upstream().await;
    let collector = grpc_collector().await;
    let gw = tracegate(&config(up.addr, &grpc_export(collector.addr))).await;
    let mut s = tokio::net::TcpStream::connect(gw.proxy_addrs[0])
        .await
        .unwrap();
    s.write_all(
        b"GET /ok HTTP/1.1\r\nhost: example.test\r\nupgrade: websocket\r\n\
          sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let trace_id = head
        .lines()
        .find_map(|l| l.strip_prefix("x-trace-id: "))
        .unwrap()
        .to_string();
    let seen = up.seen.wait_for(1).await;
    assert_eq!(seen[0].path, "/ok");
    assert!(
        seen[0].headers.get("upgrade").is_none(),
        "{:?}",
        seen[0].headers
    );
    let spans = collector.spans.wait_for(2).await;
    let (server, _) = pair(&spans, &trace_id);
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(server.attr("tracegate.upgrade"), None);

    // A request whose `Connection` names the upgrade in a list, beside `keep-alive`:
    // the echo server answers 101.
    let (ws_addr, server_log) = echo_server().await;
    let gw = tracegate(&config(ws_addr, "export:\n  protocol: none\n")).await;
    let mut s = tokio::net::TcpStream::connect(gw.proxy_addrs[0])
        .await
        .unwrap();
    s.write_all(
        b"GET /api/chat HTTP/1.1\r\nhost: example.test\r\nconnection: keep-alive, Upgrade\r\n\
          upgrade: websocket\r\nsec-websocket-version: 13\r\n\
          sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let (head, _) = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        server_log.wait_for(1).await[0].starts_with("handshake /api/chat"),
        "{:?}",
        server_log.all()
    );
}
