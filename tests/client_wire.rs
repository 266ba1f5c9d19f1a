//! HTTP/1.1 from clients on tracegate's own connections (src/listen/h1), spoken byte for
//! byte over a real socket: pipelined requests, chunked request bodies split anywhere,
//! request bodies the proxy leaves unread, the framing and `Date` of responses, HEAD,
//! `Connection: close`, and what goes to hyper instead (HTTP/1.0, `Expect`, bad heads),
//! also in the middle of a connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response as the client read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    version: String,
    /// Field lines, names lowercased.
    fields: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
}

impl Answer {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A client connection that reads responses off the socket itself.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// More bytes; false at the end of the stream.
    async fn more(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(PATIENCE, self.s.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf[..i].to_vec()).unwrap();
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(self.more().await, "closed mid-line: {:?}", self.buf);
        }
    }

    async fn exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.more().await, "closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one response; `head`: the request was HEAD (no body follows).
    async fn answer(&mut self, head: bool) -> Answer {
        let status_line = self.line().await;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap().to_string();
        let status: u16 = parts.next().unwrap().parse().unwrap();
        let mut fields = Vec::new();
        loop {
            let l = self.line().await;
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').unwrap();
            fields.push((n.to_ascii_lowercase(), v.trim().to_string()));
        }
        let mut a = Answer {
            status,
            version,
            fields,
            body: Vec::new(),
            chunked: false,
        };
        if head || status == 204 || status == 304 || status < 200 {
            return a;
        }
        if a.field("transfer-encoding") == Some("chunked") {
            a.chunked = true;
            loop {
                let size = usize::from_str_radix(&self.line().await, 16).unwrap();
                if size == 0 {
                    while !self.line().await.is_empty() {}
                    break;
                }
                let data = self.exact(size).await;
                a.body.extend_from_slice(&data);
                assert_eq!(self.line().await, "", "CRLF after a chunk");
            }
        } else if let Some(n) = a.field("content-length") {
            let n = n.parse().unwrap();
            a.body = self.exact(n).await;
        } else {
            while self.more().await {}
            a.body = std::mem::take(&mut self.buf);
        }
        a
    }

    /// The server closed the connection, nothing more was sent.
    async fn closed(&mut self) -> bool {
        !self.more().await && self.buf.is_empty()
    }
}

async fn setup() -> (Upstream, tracegate::gateway::Gateway, SocketAddr) {
    let up = upstream().await;
    let col = grpc_collector().await;
    let tg = tracegate(&config(up.addr, &grpc_export(col.addr))).await;
    let addr = tg.proxy_addrs[0];
    (up, tg, addr)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (up, _tg, addr) = setup().await;
    let mut c = Raw::connect(addr).await;
    // Three requests in one write: a GET, a POST with its body, a GET the upstream fails.
    c.send(
        b"GET /ok HTTP/1.1\r\nhost: app\r\n\r\nPOST /upload HTTP/1.1\r\nhost: app\r\ncontent-length: 5\r\n\r\nhelloGET /status/404 HTTP/1.1\r\nhost: app\r\n\r\n",
    )
    .await;
    let a = c.answer(false).await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"ok"[..]));
    assert_eq!(a.field("content-length"), Some("2"));
    assert!(a.field("x-trace-id").is_some(), "{a:?}");
    let a = c.answer(false).await;
    assert_eq!(
        (a.status, a.body.as_slice()),
        (200, &b"5"[..]),
        "the body went upstream"
    );
    let a = c.answer(false).await;
    assert_eq!(a.status, 404);
    // The connection is still there for a fourth.
    c.send(b"GET /ok HTTP/1.1\r\nhost: app\r\n\r\n").await;
    assert_eq!(c.answer(false).await.status, 200);
    let seen = up.seen.all();
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|s| s.headers.contains_key("traceparent")));
    assert_eq!(up.bodies.all()[1], ("/upload".to_string(), 5));
}

#[tokio::test]
async fn a_chunked_request_body_split_anywhere_reaches_the_upstream_whole() {
    let (up, _tg, addr) = setup().await;
    let body: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut wire =
        b"POST /upload HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for piece in body.chunks(700) {
        wire.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
        wire.extend_from_slice(piece);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\nx-trailer: t\r\n\r\n");
    // The same request three times, cut into pieces of 1, 7 and 100 bytes.
    for (round, step) in [1usize, 7, 100].into_iter().enumerate() {
        let mut c = Raw::connect(addr).await;
        for part in wire.chunks(step) {
            c.send(part).await;
            if step == 1 {
                tokio::task::yield_now().await;
            }
        }
        let a = c.answer(false).await;
        assert_eq!(a.status, 200, "round {round}");
        assert_eq!(a.body, b"3000", "round {round}");
        c.send(b"GET /ok HTTP/1.1\r\nhost: app\r\n\r\n").await;
        assert_eq!(c.answer(false).await.status, 200, "kept after the body");
        assert_eq!(up.bodies.all()[2 * round], ("/upload".to_string(), 3000));
    }
    // A chunk size that is not hex: the upstream's body breaks off, the client gets an
    // error, and the connection is not used again.
    let mut c = Raw::connect(addr).await;
    c.send(b"POST /upload HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n")
        .await;
    let a = c.answer(false).await;
    assert!(a.status >= 400, "{a:?}");
    assert!(c.closed().await);
}

#[tokio::test]
async fn a_request_body_left_unread_keeps_the_connection_only_when_it_all_came() {
    let (up, _tg, addr) = setup().await;
    // No route: 404 without reading the body. All 5 bytes are here: skipped, kept.
    let mut c = Raw::connect(addr).await;
    c.send(b"POST /nowhere HTTP/1.1\r\nhost: app\r\ncontent-length: 5\r\n\r\nhello")
        .await;
    assert_eq!(c.answer(false).await.status, 404);
    c.send(b"GET /ok HTTP/1.1\r\nhost: app\r\n\r\n").await;
    assert_eq!(c.answer(false).await.status, 200);
    // Chunked, all of it here: the same.
    c.send(b"POST /nowhere HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
        .await;
    assert_eq!(c.answer(false).await.status, 404);
    c.send(b"GET /ok HTTP/1.1\r\nhost: app\r\n\r\n").await;
    assert_eq!(c.answer(false).await.status, 200);
    // 10 of 100000 bytes: the rest would be read as the next request; the connection ends.
    c.send(b"POST /nowhere HTTP/1.1\r\nhost: app\r\ncontent-length: 100000\r\n\r\n0123456789")
        .await;
    assert_eq!(c.answer(false).await.status, 404);
    assert!(c.closed().await, "closed after the answer");
    assert_eq!(up.seen.len(), 2);
}

#[tokio::test]
async fn responses_are_framed_and_dated_as_before() {
    let (_up, _tg, addr) = setup().await;
    let mut c = Raw::connect(addr).await;
    c.send(b"GET /ok HTTP/1.1\r\nhost: app\r\n\r\n").await;
    let a = c.answer(false).await;
    assert_eq!(a.version, "HTTP/1.1");
    let date = a.field("date").expect("a Date field");
    assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
    // HEAD: the upstream's length, no body (the next answer parses from the next byte).
    c.send(b"HEAD /ok HTTP/1.1\r\nhost: app\r\n\r\n").await;
    let a = c.answer(true).await;
    assert_eq!((a.status, a.field("content-length")), (200, Some("2")));
    // A streamed body of unknown length: chunked.
    c.send(b"GET /trickle/10 HTTP/1.1\r\nhost: app\r\n\r\n")
        .await;
    let a = c.answer(false).await;
    assert!(a.chunked, "{a:?}");
    assert!(!a.body.is_empty());
    // A large body: by its length, in full.
    c.send(b"GET /bytes/300000 HTTP/1.1\r\nhost: app\r\n\r\n")
        .await;
    let a = c.answer(false).await;
    assert_eq!(a.body.len(), 300_000);
    // 204: no body, whatever follows is the next answer.
    c.send(b"GET /status/204 HTTP/1.1\r\nhost: app\r\n\r\nGET /ok HTTP/1.1\r\nhost: app\r\n\r\n")
        .await;
    assert_eq!(c.answer(false).await.status, 204);
    assert_eq!(c.answer(false).await.body, b"ok");
    // The client asks to close: said in the answer, and done.
    c.send(b"GET /ok HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n")
        .await;
    let a = c.answer(false).await;
    assert_eq!(a.field("connection"), Some("close"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn what_the_own_server_does_not_serve_goes_to_hyper_mid_connection_too() {
    let (up, _tg, addr) = setup().await;
    // HTTP/1.0 after an HTTP/1.1 request on the same connection.
    let mut c = Raw::connect(addr).await;
    c.send(b"GET /ok HTTP/1.1\r\nhost: app\r\n\r\nGET /ok HTTP/1.0\r\nhost: app\r\n\r\n")
        .await;
    assert_eq!(c.answer(false).await.version, "HTTP/1.1");
    let a = c.answer(false).await;
    assert_eq!((a.version.as_str(), a.status), ("HTTP/1.0", 200));
    assert!(c.closed().await, "HTTP/1.0 without keep-alive closes");
    // Expect: 100-continue: the interim answer, then the final one.
    let mut c = Raw::connect(addr).await;
    c.send(
        b"POST /upload HTTP/1.1\r\nhost: app\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n",
    )
    .await;
    assert_eq!(c.answer(false).await.status, 100);
    c.send(b"abc").await;
    let a = c.answer(false).await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"3"[..]));
    // hyper goes on serving that connection.
    c.send(b"GET /ok HTTP/1.1\r\nhost: app\r\n\r\n").await;
    assert_eq!(c.answer(false).await.status, 200);
    // A head that does not parse, after a good request: 400 and the end.
    let mut c = Raw::connect(addr).await;
    c.send(b"GET /ok HTTP/1.1\r\nhost: app\r\n\r\nGET /ok HTTP/1.1\r\nbad header line\r\n\r\n")
        .await;
    assert_eq!(c.answer(false).await.status, 200);
    assert_eq!(c.answer(false).await.status, 400);
    assert!(c.closed().await);
    // Both framings at once (a smuggling vector) are refused, never forwarded.
    let before = up.seen.len();
    let mut c = Raw::connect(addr).await;
    c.send(b"POST /upload HTTP/1.1\r\nhost: app\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")
        .await;
    assert_eq!(c.answer(false).await.status, 400);
    // HTTP/2 with prior knowledge.
    let r = get(&h2c_client(), &format!("http://{addr}/ok"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        up.seen.len(),
        before + 1,
        "only the HTTP/2 request went upstream"
    );
}

#[tokio::test]
async fn nothing_of_one_exchange_reaches_the_next_on_a_connection() {
    // Header maps are reused from one head to the next (src/http1.rs, `header_map`): a
    // request's fields must not reach the next request's upstream, nor a response's the
    // next response.
    let (up, _tg, addr) = setup().await;
    let mut fresh = Raw::connect(addr).await;
    fresh
        .send(b"GET /status/201 HTTP/1.1\r\nhost: app\r\n\r\n")
        .await;
    let alone = fresh.answer(false).await;
    assert_eq!(alone.status, 201);

    let mut c = Raw::connect(addr).await;
    c.send(b"GET /ok HTTP/1.1\r\nhost: app\r\nx-secret: one\r\ncookie: s=1\r\nx-request-id: first-id\r\n\r\n")
        .await;
    let first = c.answer(false).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.field("x-request-id"), Some("first-id"));
    c.send(b"GET /status/201 HTTP/1.1\r\nhost: app\r\n\r\n")
        .await;
    let second = c.answer(false).await;
    assert_eq!(second.status, 201);
    let names = |a: &Answer| {
        let mut n: Vec<String> = a.fields.iter().map(|(n, _)| n.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&second), names(&alone), "{second:?}");
    assert_ne!(second.field("x-request-id"), Some("first-id"));

    let seen = up.seen.all();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[1].headers.get("x-secret").unwrap(), "one");
    let next = &seen[2].headers;
    for name in ["x-secret", "cookie"] {
        assert!(
            !next.contains_key(name),
            "{name} reached the next request: {next:?}"
        );
    }
    assert_ne!(next.get("x-request-id").unwrap(), "first-id");
    let mut a: Vec<&str> = seen[0].headers.keys().map(|k| k.as_str()).collect();
    let mut b: Vec<&str> = next.keys().map(|k| k.as_str()).collect();
    a.sort();
    b.sort();
    assert_eq!(
        a, b,
        "the same fields as the same request on a fresh connection"
    );
}
