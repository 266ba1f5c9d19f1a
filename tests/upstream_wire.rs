//! HTTP/1.1 to upstreams on tracegate's own connections (src/upstream/wire/), against a
//! scripted upstream on a real socket that writes its answers byte for byte: chunked
//! bodies split across writes with trailers, bodies until close, HEAD, interim (1xx)
//! responses, an answer before the request body is sent, an oversized head, chunked with a
//! Content-Length too, the framing of request bodies as the upstream receives them, a
//! request the upstream dropped unanswered sent again from the head the connection handed
//! back, and the response's fields passed through as bytes (hop-by-hop ones left out) the
//! same as through a header map but for the case of their names, and to HTTP/2 clients
//! encoded from those bytes, in lowercase.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted upstream saw of one request: its head and the body it decoded.
#[derive(Clone, Debug)]
struct Got {
    head: String,
    body: Vec<u8>,
}

struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    got: Arc<Mutex<Vec<Got>>>,
}

async fn scripted() -> Scripted {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let got = Arc::new(Mutex::new(Vec::new()));
    let (a, g) = (accepted.clone(), got.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            a.fetch_add(1, SeqCst);
            tokio::spawn(serve(s, g.clone()));
        }
    });
    Scripted {
        addr,
        accepted,
        got,
    }
}

/// Reads until `buf` holds `n` bytes; false at the end of the stream.
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> bool {
    let mut chunk = [0u8; 8192];
    while buf.len() < n {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    true
}

/// Reads until `buf` holds `pat`; its end, or `None` at the end of the stream.
async fn until(s: &mut TcpStream, buf: &mut Vec<u8>, pat: &[u8]) -> Option<usize> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(i) = buf.windows(pat.len()).position(|w| w == pat) {
            return Some(i + pat.len());
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

async fn serve(mut s: TcpStream, got: Arc<Mutex<Vec<Got>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = until(&mut s, &mut buf, b"\r\n\r\n").await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        buf.drain(..end);
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        if path == "/drop-first" && !DROPPED.swap(true, SeqCst) {
            // Reads the request, answers nothing, closes: a reset before any response.
            got.lock().unwrap().push(Got {
                head,
                body: Vec::new(),
            });
            return;
        }
        if path == "/early" {
            // Answers after the head, reads none of the body, closes.
            let _ = s
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo big!")
                .await;
            return;
        }
        // The request body, by its framing.
        let mut body = Vec::new();
        if head.contains("transfer-encoding: chunked") {
            loop {
                let Some(eol) = until(&mut s, &mut buf, b"\r\n").await else {
                    return;
                };
                let line = String::from_utf8_lossy(&buf[..eol - 2]).to_string();
                buf.drain(..eol);
                let size =
                    usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
                if size == 0 {
                    let Some(end) = until(&mut s, &mut buf, b"\r\n").await else {
                        return;
                    };
                    buf.drain(..end);
                    break;
                }
                if !fill(&mut s, &mut buf, size + 2).await {
                    return;
                }
                body.extend_from_slice(&buf[..size]);
                buf.drain(..size + 2);
            }
        } else if let Some(cl) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse::<usize>().unwrap())
        {
            if !fill(&mut s, &mut buf, cl).await {
                return;
            }
            body = buf.drain(..cl).collect();
        }
        got.lock().unwrap().push(Got {
            head: head.clone(),
            body: body.clone(),
        });
        let pause = || tokio::time::sleep(Duration::from_millis(5));
        let ok = match path.as_str() {
            "/chunked" => {
                // Split mid-size-line and mid-data, with an extension and a trailer.
                let parts: [&[u8]; 5] = [
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n5",
                    b"\r\nhel",
                    b"lo\r\n6;ext=1\r\n wor",
                    b"ld\r\n0\r\nx-sum: ",
                    b"11\r\n\r\n",
                ];
                let mut ok = true;
                for p in parts {
                    ok &= s.write_all(p).await.is_ok();
                    pause().await;
                }
                ok
            }
            "/close" => {
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nuntil ").await;
                pause().await;
                let _ = s.write_all(b"close").await;
                return;
            }
            "/both" => s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
                .await
                .is_ok(),
            "/big" => {
                let body: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG}\r\n\r\n");
                s.write_all(head.as_bytes()).await.is_ok() && s.write_all(&body).await.is_ok()
            }
            "/head" => s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")
                .await
                .is_ok(),
            "/interim" => s
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal")
                .await
                .is_ok(),
            "/fields" => s
                .write_all(b"HTTP/1.1 200 OK\r\nServer: legacy\r\nConnection: keep-alive, X-Hop\r\nx-hop: secret\r\nKeep-Alive: timeout=5\r\nX-Request-ID: from-upstream\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nContent-Length: 2\r\nSet-Cookie: a=b\r\n\r\nok")
                .await
                .is_ok(),
            "/fields-chunked" => s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\nTrailer: x-sum\r\nProxy-Connection: x\r\nUpgrade: h2c\r\nTE: trailers\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n")
                .await
                .is_ok(),
            "/fields-ws" => s
                .write_all(b"HTTP/1.1 200 OK\r\nX-Pad:   padded \t \r\nX-Empty:\r\nVary: a\r\nvary: b\r\nX-Trace-Id: upstreams\r\nAn-Unusually-Long-Field-Name-Here: long\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
                .await
                .is_ok(),
            "/fields-lf" => s
                .write_all(b"HTTP/1.1 201 Created\nX-A: 1\r\nLocation: /x\ncontent-length: 2\n\nok")
                .await
                .is_ok(),
            "/huge-head" => {
                let big = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n", "b".repeat(70 * 1024));
                s.write_all(big.as_bytes()).await.is_ok()
            }
            _ => {
                let framing = if head.contains("transfer-encoding: chunked") {
                    "chunked"
                } else {
                    "length"
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-framing: {framing}\r\n\r\n",
                    body.len()
                );
                s.write_all(reply.as_bytes()).await.is_ok() && s.write_all(&body).await.is_ok()
            }
        };
        if !ok {
            return;
        }
    }
}

/// `/drop-first` has been dropped once (one test uses it).
static DROPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The size of `/big`'s body.
const BIG: usize = 3 * 1024 * 1024 + 17;

fn wire_config(upstream: SocketAddr) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: \"off\"\nupstreams:\n  - name: app\n    endpoints: [\"http://{upstream}\"]\n    request_timeout: 10s\nroutes:\n  - upstream: app\nexport:\n  protocol: none\n"
    )
}

/// [`wire_config`] with the admin port on: every exchange is recorded (for the metrics),
/// so the client's HTTP/1.1 connection writes the trace id and correlation id itself and
/// the upstream's fields are kept as they came.
fn recorded_config(upstream: SocketAddr) -> String {
    wire_config(upstream).replace("address: \"off\"", "address: 127.0.0.1:0")
}

/// The scripted upstream, tracegate in front of it, and tracegate's base URL.
async fn setup() -> (Scripted, tracegate::gateway::Gateway, String) {
    let up = scripted().await;
    let gw = tracegate(&wire_config(up.addr)).await;
    let base = format!("http://{}", gw.proxy_addrs[0]);
    (up, gw, base)
}

#[tokio::test]
async fn chunked_responses_arrive_whole_with_their_trailers_on_one_kept_connection() {
    let (up, _gw, base) = setup().await;
    let url = format!("{base}/chunked");
    // HTTP/2 to tracegate: trailers reach the client whatever it asked for.
    let client = h2c_client();
    for _ in 0..3 {
        let req = Request::get(&url)
            .body(body_of(Full::new(Bytes::new())))
            .unwrap();
        let resp = tokio::time::timeout(PATIENCE, client.request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let all = resp.into_body().collect().await.unwrap();
        let trailers = all.trailers().cloned().expect("the trailer section");
        assert_eq!(trailers["x-sum"], "11");
        assert_eq!(all.to_bytes(), "hello world");
    }
    assert_eq!(up.accepted.load(SeqCst), 1, "one connection for three");
}

#[tokio::test]
async fn a_body_until_close_arrives_whole_and_its_connection_is_not_kept() {
    let (up, _gw, base) = setup().await;
    let client = h1_client();
    for _ in 0..2 {
        let r = get(&client, &format!("{base}/close"), &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "until close");
    }
    assert_eq!(up.accepted.load(SeqCst), 2, "a connection per response");
}

#[tokio::test]
async fn a_head_response_has_no_body_and_keeps_its_connection() {
    let (up, _gw, base) = setup().await;
    let client = h1_client();
    let req = Request::head(format!("{base}/head"))
        .body(body_of(Full::new(Bytes::new())))
        .unwrap();
    let r = send(&client, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-length"], "1234");
    assert!(r.body.is_empty());
    let r = get(&client, &format!("{base}/after"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        up.accepted.load(SeqCst),
        1,
        "the HEAD's connection carried the next"
    );
}

#[tokio::test]
async fn interim_responses_are_skipped_for_the_final_one() {
    let (_up, _gw, base) = setup().await;
    let r = get(&h1_client(), &format!("{base}/interim"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "final");
}

#[tokio::test]
async fn an_answer_before_the_request_body_is_sent_reaches_the_client() {
    let (up, gw, _) = setup().await;
    // Raw HTTP/1.1: the head and a first piece of a 1 MB body, then nothing more.
    let mut c = TcpStream::connect(gw.proxy_addrs[0]).await.unwrap();
    c.write_all(b"POST /early HTTP/1.1\r\nhost: app\r\ncontent-length: 1000000\r\n\r\n")
        .await
        .unwrap();
    c.write_all(&[b'x'; 1000]).await.unwrap();
    let mut buf = Vec::new();
    let found = tokio::time::timeout(PATIENCE, until(&mut c, &mut buf, b"too big!")).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    assert!(found.unwrap().is_some(), "the answer arrived: {text:?}");
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(up.got.lock().unwrap().len(), 0, "the upstream read no body");
}

#[tokio::test]
async fn a_response_head_over_64_kib_is_a_502() {
    let (_up, _gw, base) = setup().await;
    let r = get(&h1_client(), &format!("{base}/huge-head"), &[]).await;
    assert_eq!(r.status, 502);
}

#[tokio::test]
async fn request_bodies_keep_their_framing() {
    let (up, _gw, base) = setup().await;
    let client = h1_client();
    let url = format!("{base}/echo");
    // A body of known length: Content-Length.
    let req = Request::post(&url)
        .body(body_of(Full::new(Bytes::from_static(b"abc"))))
        .unwrap();
    let r = send(&client, req).await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"abc"[..]));
    assert_eq!(r.headers["x-framing"], "length");
    // A streamed body of unknown length (chunked from the client): chunked upstream, in
    // order, whatever the pieces.
    let pieces: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = (0..50)
        .map(|i| Ok(http_body::Frame::data(Bytes::from(format!("piece {i};")))))
        .collect();
    let expected: String = (0..50).map(|i| format!("piece {i};")).collect();
    let req = Request::post(&url)
        .body(body_of(StreamBody::new(futures_util::stream::iter(pieces))))
        .unwrap();
    let r = send(&client, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-framing"], "chunked");
    assert_eq!(r.body, expected);
    // An empty POST: no framing added, nothing sent after the head.
    let req = Request::post(&url)
        .body(body_of(Full::new(Bytes::new())))
        .unwrap();
    let r = send(&client, req).await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 0));
    let got = up.got.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    assert!(
        got[0].head.contains("content-length: 3\r\n"),
        "{}",
        got[0].head
    );
    assert!(!got[1].head.contains("content-length"), "{}", got[1].head);
    assert_eq!(got[1].body, expected.as_bytes());
    assert!(
        !got[2].head.contains("transfer-encoding"),
        "{}",
        got[2].head
    );
    assert_eq!(up.accepted.load(SeqCst), 1, "all three on one connection");
}

#[tokio::test]
async fn a_chunked_response_with_a_content_length_is_framed_by_its_chunks() {
    let (_up, _gw, base) = setup().await;
    let r = get(&h1_client(), &format!("{base}/both"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body, "hello",
        "the chunks, not the 3 bytes Content-Length claims"
    );
    assert_ne!(
        r.headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"3"[..])
    );
}

#[tokio::test]
async fn a_large_body_arrives_whole_and_its_connection_is_kept() {
    let (up, _gw, base) = setup().await;
    let client = h1_client();
    for _ in 0..2 {
        let r = get(&client, &format!("{base}/big"), &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), BIG);
        assert!(
            r.body
                .iter()
                .enumerate()
                .all(|(i, b)| *b == (i % 251) as u8)
        );
    }
    assert_eq!(up.accepted.load(SeqCst), 1, "one connection for both");
}

#[tokio::test]
async fn a_request_the_upstream_dropped_unanswered_is_sent_again_whole() {
    let (up, _gw, base) = setup().await;
    let r = get(
        &h1_client(),
        &format!("{base}/drop-first"),
        &[
            ("x-keep", "me"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "the retry (retries: 1 by default) answered");
    let got = up.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "sent twice: {got:?}");
    assert_eq!(
        up.accepted.load(SeqCst),
        2,
        "the second time on a new connection"
    );
    for g in &got {
        assert!(
            g.head.starts_with("get /drop-first http/1.1\r\n"),
            "{}",
            g.head
        );
        assert!(g.head.contains("x-keep: me\r\n"), "{}", g.head);
        // The fields the proxy added to the first attempt go out once on the second too.
        for name in [
            "x-forwarded-for: ",
            "x-forwarded-proto: ",
            "x-forwarded-host: ",
            "x-request-id: ",
            "traceparent: ",
        ] {
            let n = g.head.lines().filter(|l| l.starts_with(name)).count();
            assert_eq!(n, 1, "{name}in {}", g.head);
        }
    }
    let id = |h: &str| {
        h.lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .unwrap()
            .to_string()
    };
    assert_eq!(id(&got[0].head), id(&got[1].head), "one correlation id");
    let parent = |h: &str| {
        h.lines()
            .find_map(|l| l.strip_prefix("traceparent: "))
            .unwrap()
            .to_string()
    };
    let (first, second) = (parent(&got[0].head), parent(&got[1].head));
    assert!(first.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
    assert!(second.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
    assert_ne!(first, second, "each attempt has its own span id");
}

/// Sends `request` on a new connection to `addr` and reads the response until tracegate
/// closes it (the request asks it to).
async fn exchange_raw(addr: SocketAddr, request: &str) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(PATIENCE, c.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8(buf).unwrap()
}

/// The response's status line, its fields with names in lower case, sorted, values of
/// `x-trace-id` and of a `date` tracegate added blanked, and what follows the head.
fn normalized(response: &str) -> (String, Vec<String>, String) {
    let (head, rest) = response.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_string();
    let mut fields: Vec<String> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            let n = n.to_ascii_lowercase();
            let v = match n.as_str() {
                "x-trace-id" => "<id>",
                "date" if !v.contains("2026 00:00:00") => "<now>",
                _ => v.trim(),
            };
            format!("{n}: {v}")
        })
        .collect();
    fields.sort();
    (status, fields, rest.to_string())
}

#[tokio::test]
async fn the_upstreams_fields_reach_the_client_as_it_wrote_them_without_the_hop_by_hop_ones() {
    // Two tracegates before one upstream: one that records every exchange (the client's
    // connection writes the stamp; the fields are kept as they came), one that records
    // none (the fields go through the map, and the stamp into it).
    let up = scripted().await;
    let recorded = tracegate(&recorded_config(up.addr)).await;
    let mapped = tracegate(&wire_config(up.addr)).await;
    let ask = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nhost: app\r\nx-request-id: client-7\r\nconnection: close\r\n\r\n"
        )
    };

    let raw = exchange_raw(recorded.proxy_addrs[0], &ask("/fields")).await;
    // Names in the upstream's case; its date kept, not a second one added.
    assert!(raw.contains("\r\nServer: legacy\r\n"), "{raw}");
    assert!(raw.contains("\r\nSet-Cookie: a=b\r\n"), "{raw}");
    assert!(raw.contains("\r\nContent-Length: 2\r\n"), "{raw}");
    assert_eq!(
        raw.to_ascii_lowercase().matches("\r\ndate:").count(),
        1,
        "{raw}"
    );
    assert!(
        raw.contains("\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\n"),
        "{raw}"
    );
    let (status, fields, body) = normalized(&raw);
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "ok"));
    assert_eq!(
        fields,
        [
            "connection: close",
            "content-length: 2",
            "date: Tue, 01 Dec 2026 00:00:00 GMT",
            "server: legacy",
            "set-cookie: a=b",
            "x-request-id: client-7",
            "x-trace-id: <id>",
        ],
        "the hop-by-hop fields and the one `Connection` names are gone, the correlation \
         id is the client's: {raw}"
    );

    // Every head, the same as through the map but for the case of the names.
    for path in ["/fields", "/fields-chunked", "/fields-lf", "/fields-ws"] {
        let raw = exchange_raw(recorded.proxy_addrs[0], &ask(path)).await;
        let map = exchange_raw(mapped.proxy_addrs[0], &ask(path)).await;
        assert_eq!(normalized(&raw), normalized(&map), "{path}:\n{raw}\n{map}");
    }
    let chunked = exchange_raw(recorded.proxy_addrs[0], &ask("/fields-chunked")).await;
    assert!(
        chunked.contains("\r\nContent-Type: text/plain\r\n"),
        "{chunked}"
    );
    assert!(
        chunked.contains("\r\ntransfer-encoding: chunked\r\n")
            && chunked.ends_with("5\r\nhello\r\n0\r\n\r\n"),
        "re-chunked, the length and the trailer left out: {chunked}"
    );
    let lf = exchange_raw(recorded.proxy_addrs[0], &ask("/fields-lf")).await;
    assert!(
        lf.starts_with("HTTP/1.1 201 Created\r\nX-A: 1\r\nLocation: /x\r\ncontent-length: 2\r\n"),
        "lines that ended in a bare LF end in CRLF: {lf}"
    );
}

#[tokio::test]
async fn over_http2_the_upstreams_fields_go_out_in_lowercase_the_same_as_through_a_map() {
    // As above, with an HTTP/2 client: our HTTP/2 server encodes the fields as the
    // upstream wrote them (names in lowercase, values without the whitespace around them)
    // and the stamp after them, for the recorded exchanges; through the map otherwise.
    let up = scripted().await;
    let recorded = tracegate(&recorded_config(up.addr)).await;
    let mapped = tracegate(&wire_config(up.addr)).await;
    let client = h2c_client();
    let ask = |gw: &tracegate::gateway::Gateway, path: &str| {
        let url = format!("http://{}{path}", gw.proxy_addrs[0]);
        let client = client.clone();
        async move { get(&client, &url, &[("x-request-id", "client-7")]).await }
    };
    // Name and value of each field in order; the trace id and a date tracegate added
    // blanked.
    let listed = |r: &Reply| -> Vec<String> {
        r.headers
            .iter()
            .map(|(n, v)| {
                let v = v.to_str().unwrap();
                let v = match n.as_str() {
                    "x-trace-id" if v != "upstreams" => "<id>",
                    "date" if !v.contains("2026 00:00:00") => "<now>",
                    _ => v,
                };
                format!("{n}: {v}")
            })
            .collect()
    };
    let sorted = |mut l: Vec<String>| {
        l.sort();
        l
    };

    for path in ["/fields", "/fields-chunked", "/fields-lf", "/fields-ws"] {
        let raw = ask(&recorded, path).await;
        let map = ask(&mapped, path).await;
        assert_eq!(
            (raw.status, sorted(listed(&raw)), &raw.body),
            (map.status, sorted(listed(&map)), &map.body),
            "{path}"
        );
        // The stamp comes last, after the upstream's fields: it was not merged into a map.
        let names = listed(&raw);
        assert_eq!(
            names[names.len() - 2..],
            ["x-trace-id: <id>", "x-request-id: client-7"],
            "{path}: {names:?}"
        );
    }
    let fields = listed(&ask(&recorded, "/fields").await);
    assert_eq!(
        fields,
        [
            "server: legacy",
            "date: Tue, 01 Dec 2026 00:00:00 GMT",
            "content-length: 2",
            "set-cookie: a=b",
            "x-trace-id: <id>",
            "x-request-id: client-7",
        ],
        "hop-by-hop fields and the one `Connection` names left out, the upstream's date \
         kept and no second one, the upstream's correlation id replaced"
    );
    let ws = listed(&ask(&recorded, "/fields-ws").await);
    assert_eq!(
        ws[1..],
        [
            "x-pad: padded",
            "x-empty: ",
            "vary: a",
            "vary: b",
            "an-unusually-long-field-name-here: long",
            "content-type: text/plain",
            "content-length: 2",
            "x-trace-id: <id>",
            "x-request-id: client-7",
        ],
        "a date first (the upstream sent none), the upstream's trace id replaced: {ws:?}"
    );
    assert!(ws[0].starts_with("date: "), "{ws:?}");
    let chunked = ask(&recorded, "/fields-chunked").await;
    assert_eq!(chunked.body, "hello");
    assert_eq!(
        sorted(listed(&chunked)),
        [
            "content-type: text/plain",
            "date: <now>",
            "x-request-id: client-7",
            "x-trace-id: <id>",
        ],
        "no length, no trailer field, nothing hop-by-hop"
    );
}
