//! tracegate's own HTTP/2 server (`limits.http2_server: native`) end to end, through real
//! sockets: hyper's and the h2 crate's clients, the test upstream, a gRPC collector.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use bytes::{Bytes, BytesMut};
use http::Request;
use http_body_util::StreamBody;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracegate::listen::http2::frame::{self, Frame, Reason};
use tracegate::listen::http2::hpack::Encoder;

#[path = "support/hostile_h2.rs"]
mod hostile_h2;

fn native(upstream: std::net::SocketAddr, export: &str) -> String {
    format!(
        "{}limits:\n  http2_server: native\n",
        config(upstream, export)
    )
}

#[tokio::test]
async fn requests_are_proxied_and_traced() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let gw = tracegate(&native(up.addr, &grpc_export(col.addr))).await;
    let client = h2c_client();
    let r = get(
        &client,
        &format!("http://{}/api/h2?x=1", gw.proxy_addrs[0]),
        &[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "ok");
    assert!(r.headers.contains_key("date"));
    assert_eq!(r.headers["x-trace-id"], "0af7651916cd43dd8448eb211c80319c");
    assert!(r.headers.contains_key("x-request-id"));
    let seen = up.seen.wait_for(1).await.remove(0);
    assert_eq!(
        seen.headers["host"],
        gw.proxy_addrs[0].to_string(),
        ":authority becomes Host"
    );
    let tp = seen.headers["traceparent"].to_str().unwrap().to_string();
    assert!(tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
    let spans = col.spans.wait_for(2).await;
    let (server, client_span) = pair(&spans, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(
        server.attr("network.protocol.version").as_deref(),
        Some("2")
    );
    assert_eq!(server.attr("http.request.method").as_deref(), Some("GET"));
    assert_eq!(server.attr("url.path").as_deref(), Some("/api/h2"));
    assert_eq!(server.attr("url.query").as_deref(), Some("x=1"));
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(server.parent_id(), "b7ad6b7169203331");
    let client_span = client_span.expect("client span");
    assert_eq!(tp.split('-').nth(2).unwrap(), client_span.span_id());
}

/// A stream's exchange runs in the box of one that has answered (`serve::Driver`'s spares):
/// streams one after another, then many at once finishing out of order, all on one
/// connection, each get their own answer, and the upstream sees each request once with
/// the `host` made from its `:authority`.
#[tokio::test]
async fn streams_in_reused_exchanges_get_their_own_answers() {
    let up = upstream().await;
    let gw = tracegate(&native(up.addr, "export:\n  protocol: none\n")).await;
    let client = h2c_client();
    let authority = gw.proxy_addrs[0].to_string();
    let trace = |i: usize| format!("{:032x}", 0xa000 + i);
    let ask = |i: usize, path: String| {
        let (client, url) = (client.clone(), format!("http://{authority}{path}"));
        let tp = format!("00-{}-b7ad6b7169203331-01", trace(i));
        async move { (i, get(&client, &url, &[("traceparent", &tp)]).await) }
    };
    for i in 0..8 {
        let (_, r) = ask(i, format!("/bytes/{}", i + 1)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), i + 1, "request {i}'s own body");
        assert_eq!(r.headers["x-trace-id"], trace(i).as_str());
    }
    // Started together, the first ones wait longest: they answer last.
    let mut all = tokio::task::JoinSet::new();
    for i in 8..24 {
        all.spawn(ask(i, format!("/slow/{}", (24 - i) * 5)));
    }
    let mut answered = 0;
    while let Some(done) = all.join_next().await {
        let (i, r) = done.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "slow ok");
        assert_eq!(
            r.headers["x-trace-id"],
            trace(i).as_str(),
            "request {i}'s own answer"
        );
        answered += 1;
    }
    assert_eq!(answered, 16);
    let seen = up.seen.wait_for(24).await;
    let mut paths: Vec<_> = seen.iter().map(|s| s.path.clone()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 24, "each request reached the upstream once");
    for s in &seen {
        assert_eq!(s.headers.get_all("host").iter().count(), 1);
        assert_eq!(s.headers["host"], authority.as_str());
        assert_eq!(s.headers["x-forwarded-host"], authority.as_str());
    }
}

#[tokio::test]
async fn bodies_stream_both_ways_through_the_windows() {
    let up = upstream().await;
    let gw = tracegate(&native(up.addr, "export:\n  protocol: none\n")).await;
    let client = h2c_client();
    let base = format!("http://{}", gw.proxy_addrs[0]);
    // 3 MB up, in pieces, past every window (ours are 1 MiB).
    let pieces: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = (0..48)
        .map(|i| Ok(http_body::Frame::data(Bytes::from(vec![i as u8; 65_536]))))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(pieces));
    let req = Request::post(format!("{base}/upload"))
        .body(body_of(body))
        .unwrap();
    let r = send(&client, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, (48 * 65_536).to_string());
    // 5 MB down, past the client's windows.
    let r = get(&client, &format!("{base}/bytes/5000000"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 5_000_000);
    // Fifty at once on the one connection.
    let mut all = Vec::new();
    for i in 0..50 {
        let client = client.clone();
        let url = format!("{base}/bytes/{}", 1000 + i);
        all.push(tokio::spawn(async move {
            get(&client, &url, &[]).await.body.len()
        }));
    }
    for (i, t) in all.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), 1000 + i);
    }
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_with_an_error_span() {
    let col = grpc_collector().await;
    let gw = tracegate(&native(refused_addr().await, &grpc_export(col.addr))).await;
    let r = get(
        &h2c_client(),
        &format!("http://{}/api/x", gw.proxy_addrs[0]),
        &[],
    )
    .await;
    assert_eq!(r.status, 502);
    let trace = r.headers["x-trace-id"].to_str().unwrap().to_string();
    let server = server_span(&col, &trace).await;
    assert_eq!(server.status_code(), 2, "error status");
    assert!(server.attr("error.type").is_some());
}

/// A raw connection to the gateway at `addr`, and the bytes that open it (the preface,
/// an empty SETTINGS) to write with the first frames.
async fn raw_connection(addr: std::net::SocketAddr) -> (TcpStream, Vec<u8>) {
    let s = TcpStream::connect(addr).await.unwrap();
    let mut out = tracegate::listen::http2::conn::PREFACE.to_vec();
    frame::put_settings(&mut out, &[]);
    (s, out)
}

/// Reads frames until `want` says stop (or 10 s pass, which fails the test).
async fn read_until(s: &mut TcpStream, buf: &mut BytesMut, mut want: impl FnMut(&Frame) -> bool) {
    let read = async {
        loop {
            while let Some((h, p)) = frame::split(buf, frame::MAX_MAX_FRAME_SIZE).unwrap() {
                // PUSH_PROMISE is the one type a server-side parse refuses; none come.
                let f = Frame::parse(h, p).unwrap();
                if want(&f) {
                    return;
                }
            }
            assert!(s.read_buf(buf).await.unwrap() > 0, "connection closed");
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("the frame in time");
}

#[tokio::test]
async fn a_malformed_request_resets_its_stream_and_the_connection_goes_on() {
    let up = upstream().await;
    let gw = tracegate(&native(up.addr, "export:\n  protocol: none\n")).await;
    let (mut s, mut out) = raw_connection(gw.proxy_addrs[0]).await;
    let mut enc = Encoder::new();
    // A connection-specific field is malformed in HTTP/2.
    out.extend(h2_request_frame(
        1,
        "/ok",
        &[("connection", "close")],
        &mut enc,
    ));
    out.extend(h2_request_frame(3, "/ok", &[], &mut enc));
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let (mut reset, mut answered) = (None, false);
    read_until(&mut s, &mut buf, |f| {
        match f {
            Frame::RstStream { stream: 1, reason } => reset = Some(*reason),
            Frame::Headers { stream: 3, .. } => answered = true,
            _ => {}
        }
        reset.is_some() && answered
    })
    .await;
    assert_eq!(reset, Some(Reason::PROTOCOL_ERROR));
    assert_eq!(
        up.seen.wait_for(1).await.len(),
        1,
        "only stream 3 reached the upstream"
    );

    // A frame the rules refuse for the connection: GOAWAY with its reason.
    let mut out = Vec::new();
    frame::put_head(&mut out, 8, frame::PING, 0, 1);
    out.extend_from_slice(b"12345678");
    s.write_all(&out).await.unwrap();
    let mut goaway = None;
    read_until(&mut s, &mut buf, |f| {
        if let Frame::GoAway { reason, .. } = f {
            goaway = Some(*reason);
        }
        goaway.is_some()
    })
    .await;
    assert_eq!(goaway, Some(Reason::PROTOCOL_ERROR));
}

#[tokio::test]
async fn a_client_reset_cancels_the_exchange() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let gw = tracegate(&native(up.addr, &grpc_export(col.addr))).await;
    let tcp = TcpStream::connect(gw.proxy_addrs[0]).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://{}/slow/5000", gw.proxy_addrs[0]))
        .header(
            "traceparent",
            "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(())
        .unwrap();
    let (resp, mut stream) = client.send_request(req, true).unwrap();
    up.seen.wait_for(1).await;
    stream.send_reset(h2::Reason::CANCEL);
    assert!(resp.await.is_err());
    // The SERVER span ends as the client went away, long before the upstream's 5 s.
    let server = server_span(&col, "1af7651916cd43dd8448eb211c80319c").await;
    assert!(
        server.attr("error.type").is_some(),
        "{:?}",
        server.attr("error.type")
    );
    // The connection still serves.
    let mut client = client.ready().await.unwrap();
    let got = h2_get(&mut client, &format!("http://{}/ok", gw.proxy_addrs[0])).await;
    assert_eq!(got, (200, b"ok".to_vec()));
}

/// `expect: 100-continue`: the client holds its body back until the 100, which comes when
/// the request goes upstream (its body is read); a request answered without its body
/// (no route: 404) gets no 100, only its answer.
#[tokio::test]
async fn a_client_expecting_continue_gets_100_once_its_body_is_wanted() {
    use tracegate::listen::http2::hpack::Decoder;

    let up = upstream().await;
    let gw = tracegate(&native(up.addr, "export:\n  protocol: none\n")).await;
    let (mut s, mut out) = raw_connection(gw.proxy_addrs[0]).await;
    let mut enc = Encoder::new();
    // No END_STREAM: the body is to come.
    let head = |stream: u32, path: &str, enc: &mut Encoder| {
        let extra = [("expect", "100-continue"), ("content-length", "3")];
        h2_head_frame(stream, "POST", path, &extra, false, enc)
    };
    out.extend(head(1, "/upload", &mut enc));
    s.write_all(&out).await.unwrap();

    // Each answer head's :status, in order, per stream.
    let mut dec = Decoder::new(4096, 1 << 16);
    let mut statuses: Vec<(u32, String)> = Vec::new();
    let mut buf = BytesMut::new();
    let mut status_of = |f: &Frame, statuses: &mut Vec<(u32, String)>| {
        if let Frame::Headers {
            stream, fragment, ..
        } = f
        {
            let mut status = String::new();
            dec.decode(fragment, |field| {
                if &field.name[..] == b":status" {
                    status = String::from_utf8(field.value.to_vec()).unwrap();
                }
            })
            .unwrap();
            statuses.push((*stream, status));
        }
    };
    read_until(&mut s, &mut buf, |f| {
        status_of(f, &mut statuses);
        !statuses.is_empty()
    })
    .await;
    assert_eq!(statuses, [(1, "100".to_string())]);

    // The body, then the answer: the upstream got all of it.
    let mut data = Vec::new();
    frame::put_data_head(&mut data, 1, 3, true);
    data.extend_from_slice(b"abc");
    // A second request, to a path no route takes, expecting too.
    data.extend(head(3, "/nowhere", &mut enc));
    s.write_all(&data).await.unwrap();
    read_until(&mut s, &mut buf, |f| {
        status_of(f, &mut statuses);
        statuses.len() == 3
    })
    .await;
    statuses.sort();
    assert_eq!(
        statuses,
        [
            (1, "100".to_string()),
            (1, "200".to_string()),
            (3, "404".to_string())
        ]
    );
    // Only the routed request reached the upstream, with its whole body.
    assert_eq!(up.seen.all().len(), 1);
    assert_eq!(up.bodies.wait_for(1).await, [("/upload".to_string(), 3)]);
}

/// An extended CONNECT the upstream refuses (403) is no tunnel: after the answer the
/// stream is reset with NO_ERROR (the client need not send more), as for any answer that
/// comes before the request's body ends.
#[tokio::test]
async fn a_refused_extended_connect_ends_its_stream() {
    let up = upstream().await;
    let gw = tracegate(&native(up.addr, "export:\n  protocol: none\n")).await;
    let (mut s, mut out) = raw_connection(gw.proxy_addrs[0]).await;
    let mut enc = Encoder::new();
    let mut block = Vec::new();
    enc.begin(&mut block);
    for (n, v) in [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "http"),
        (":authority", "t.test"),
        (":path", "/status/403"),
        ("sec-websocket-version", "13"),
    ] {
        enc.field(n, v.as_bytes(), false, &mut block);
    }
    // No END_STREAM: a tunnel's stream stays open.
    frame::put_headers(&mut out, 1, &block, false, 1 << 14);
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let (mut answered, mut reset) = (false, None);
    read_until(&mut s, &mut buf, |f| {
        match f {
            Frame::Headers { stream: 1, .. } => answered = true,
            Frame::RstStream { stream: 1, reason } => reset = Some(*reason),
            _ => {}
        }
        reset.is_some()
    })
    .await;
    assert!(answered);
    assert_eq!(reset, Some(Reason::NO_ERROR));
}

/// Panics raised in tracegate's own code (`src/`), counted by the hook that
/// `hostile_clients_leave_the_server_serving` installs.
static PANICS_IN_SRC: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// 64 clients over real sockets, each sending a run of frames (tests/support/hostile_h2.rs:
/// 60% keep to the rules, the others send anything), then closing their side; the server
/// proxies what it can to the test upstream. Nothing in tracegate panics, the server ends
/// every connection, none stays counted as open, it answered many of the requests, and it
/// serves HTTP/2 and HTTP/1.1 clients as before.
#[tokio::test]
async fn hostile_clients_leave_the_server_serving() {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info
            .location()
            .is_some_and(|l| l.file().starts_with("src/"))
        {
            PANICS_IN_SRC.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        previous(info);
    }));
    let up = upstream().await;
    let col = grpc_collector().await;
    let gw = tracegate(&native(up.addr, &grpc_export(col.addr))).await;
    let addr = gw.proxy_addrs[0];
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let runs = (
        prop::bool::weighted(0.4),
        prop::collection::vec(hostile_h2::step(), 1..80),
    );
    let mut answered = 0;
    for i in 0..64 {
        let (hostile, steps) = runs.new_tree(&mut runner).unwrap().current();
        let (mut rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            // A reset after a GOAWAY ends it as well as a close.
            let _ = rd.read_to_end(&mut got).await;
            got
        });
        // The client assumes RFC 9113's default windows: it never learns ours.
        let mut client = hostile_h2::Client::new(hostile, 65_535);
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        for step in &steps {
            bytes.extend(client.bytes(step));
        }
        // Written in pieces of any size (a closed connection stops the writing).
        for piece in bytes.chunks(1 + i * 97 % 3000) {
            if wr.write_all(piece).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
        let got = tokio::time::timeout(std::time::Duration::from_secs(30), reader)
            .await
            .unwrap_or_else(|_| {
                panic!("run {i} (hostile: {hostile}): the connection stays open: {steps:?}")
            })
            .unwrap();
        let mut buf = BytesMut::from(&got[..]);
        while let Ok(Some((head, payload))) = frame::split(&mut buf, frame::MAX_MAX_FRAME_SIZE) {
            let f = Frame::parse(head, payload);
            assert!(
                f.is_ok(),
                "run {i}: the server wrote a frame that does not parse: {f:?}"
            );
            if matches!(f, Ok(Frame::Headers { .. })) {
                answered += 1;
            }
        }
    }
    assert_eq!(PANICS_IN_SRC.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(answered >= 32, "only {answered} answers over 64 runs");
    let admin = gw.admin_addr.unwrap();
    let mut open = metric(admin, "tracegate_active_connections")
        .await
        .unwrap_or(0);
    for _ in 0..100 {
        if open == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        open = metric(admin, "tracegate_active_connections")
            .await
            .unwrap_or(0);
    }
    assert_eq!(open, 0, "connections still counted as open");
    let r = get(&h2c_client(), &format!("http://{addr}/api/after"), &[]).await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"ok"[..]));
    let r = get(&h1_client(), &format!("http://{addr}/api/after"), &[]).await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"ok"[..]));
}

/// Our server with `limits.idle_timeout: 200ms`.
fn native_idle_200ms(upstream: std::net::SocketAddr) -> String {
    format!(
        "{}  idle_timeout: 200ms\n",
        native(upstream, "export:\n  protocol: none\n")
    )
}

/// Reads until the server closes the connection (10 s at most); returns the frames.
async fn frames_until_closed(s: &mut TcpStream, buf: &mut BytesMut) -> Vec<Frame> {
    let read = async {
        let mut frames = Vec::new();
        loop {
            while let Some((h, p)) = frame::split(buf, frame::MAX_MAX_FRAME_SIZE).unwrap() {
                frames.push(Frame::parse(h, p).unwrap());
            }
            if s.read_buf(buf).await.unwrap_or(0) == 0 {
                return frames;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("the server closes the connection")
}

/// With `limits.idle_timeout`, a connection with no stream open for that long gets GOAWAY
/// (NO_ERROR, naming the last stream served) and is closed, as nginx does with its
/// `keepalive_timeout`. A stream waiting on its upstream for longer keeps the connection:
/// that is not idle.
#[tokio::test]
async fn an_idle_connection_gets_goaway_and_is_closed() {
    let up = upstream().await;
    let gw = tracegate(&native_idle_200ms(up.addr)).await;
    let (mut s, mut out) = raw_connection(gw.proxy_addrs[0]).await;
    let mut enc = Encoder::new();
    // The upstream answers after 600 ms: three idle timeouts.
    out.extend(h2_request_frame(1, "/slow/600", &[], &mut enc));
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let frames = frames_until_closed(&mut s, &mut buf).await;
    let body: Vec<u8> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Data {
                stream: 1, data, ..
            } => Some(&data[..]),
            _ => None,
        })
        .flatten()
        .copied()
        .collect();
    assert_eq!(body, b"slow ok", "{frames:?}");
    let answered = frames.iter().position(|f| {
        matches!(
            f,
            Frame::Data {
                stream: 1,
                end_stream: true,
                ..
            }
        )
    });
    let goaway = frames.iter().position(|f| {
        matches!(f, Frame::GoAway { last_stream: 1, reason, .. } if *reason == Reason::NO_ERROR)
    });
    assert!(
        answered.is_some() && goaway > answered,
        "the answer, then GOAWAY: {frames:?}"
    );
}

/// A client that keeps its windows shut (SETTINGS_INITIAL_WINDOW_SIZE 0, no WINDOW_UPDATE)
/// while an answer's body waits for them: once nothing has been read or written for
/// `limits.idle_timeout`, the connection is closed (nginx's `send_timeout`), and counted
/// as `send_timeout`. The client's side stays open all along.
#[tokio::test]
async fn a_client_that_keeps_its_windows_shut_is_closed() {
    let up = upstream().await;
    let gw = tracegate(&native_idle_200ms(up.addr)).await;
    let mut s = TcpStream::connect(gw.proxy_addrs[0]).await.unwrap();
    let mut out = tracegate::listen::http2::conn::PREFACE.to_vec();
    frame::put_settings(&mut out, &[(frame::SETTINGS_INITIAL_WINDOW_SIZE, 0)]);
    let mut enc = Encoder::new();
    out.extend(h2_request_frame(1, "/bytes/1000", &[], &mut enc));
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let frames = frames_until_closed(&mut s, &mut buf).await;
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::Headers { stream: 1, .. })),
        "the answer's head went out: {frames:?}"
    );
    assert!(
        !frames
            .iter()
            .any(|f| matches!(f, Frame::Data { data, .. } if !data.is_empty())),
        "no data past a shut window: {frames:?}"
    );
    let admin = gw.admin_addr.unwrap();
    assert_eq!(
        metric(
            admin,
            "tracegate_downstream_rejected_total{reason=\"send_timeout\"}"
        )
        .await,
        Some(1)
    );
}
