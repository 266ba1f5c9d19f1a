//! HTTP/1.1 to upstreams on tracegate's own connections (src/upstream/wire.rs), against a
//! scripted upstream on a real socket that writes its answers byte for byte: chunked
//! bodies split across writes with trailers, bodies until close, HEAD, interim (1xx)
//! responses, an answer before the request body is sent, an oversized head, chunked with a
//! Content-Length too, the framing of request bodies as the upstream receives them, and a
//! request the upstream dropped unanswered sent again from the head the connection handed
//! back.

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
