//! `listen::http2::hpack` against a real HTTP/2 peer: the `h2` crate's client, over a real
//! socket, sends requests whose header blocks our decoder reads (Huffman strings, its
//! dynamic table filling and evicting), and reads the header blocks our encoder writes for
//! the answers. The server side here is raw frames over the socket, just enough of HTTP/2
//! for the exchange: the preface, SETTINGS and their ACK, HEADERS (+ CONTINUATION) in,
//! HEADERS out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracegate::listen::http2::hpack::{Decoder, Encoder, Field};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

async fn read_frame(s: &mut TcpStream) -> Option<(u8, u8, u32, Bytes)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = BytesMut::zeroed(len);
    s.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], stream, payload.freeze()))
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header block fragment without its padding and priority fields.
fn fragment(flags: u8, payload: &Bytes) -> Bytes {
    let mut start = 0;
    let mut end = payload.len();
    if flags & PADDED != 0 {
        end -= usize::from(payload[0]);
        start = 1;
    }
    if flags & PRIORITY != 0 {
        start += 5;
    }
    payload.slice(start..end)
}

/// Serves one connection: decodes each request's block with our decoder, answers with a
/// block from our encoder (status 200, the fields `answer` gives for the request's path).
/// Returns every request's fields.
async fn serve(
    mut s: TcpStream,
    answer: impl Fn(&str) -> Vec<(String, Vec<u8>, bool)>,
) -> Vec<Vec<Field>> {
    let mut preface = [0u8; 24];
    s.read_exact(&mut preface).await.unwrap();
    assert_eq!(&preface, PREFACE);
    s.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let mut decoder = Decoder::new(4096, 1 << 20);
    let mut encoder = Encoder::new();
    let mut requests = Vec::new();
    let mut block = BytesMut::new();
    while let Some((kind, flags, stream, payload)) = read_frame(&mut s).await {
        match kind {
            SETTINGS if flags & 0x1 == 0 => {
                s.write_all(&frame(SETTINGS, 0x1, 0, &[])).await.unwrap();
            }
            HEADERS | CONTINUATION => {
                if kind == HEADERS {
                    block.extend_from_slice(&fragment(flags, &payload));
                } else {
                    block.extend_from_slice(&payload);
                }
                if flags & END_HEADERS == 0 {
                    continue;
                }
                let mut fields = Vec::new();
                decoder
                    .decode(&block.split().freeze(), |f| fields.push(f))
                    .unwrap();
                let path = fields
                    .iter()
                    .find(|f| &f.name[..] == b":path")
                    .map(|f| String::from_utf8(f.value.to_vec()).unwrap())
                    .unwrap();
                let mut out = Vec::new();
                encoder.begin(&mut out);
                encoder.status(200, &mut out);
                for (name, value, sensitive) in answer(&path) {
                    encoder.field(&name, &value, sensitive, &mut out);
                }
                s.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, stream, &out))
                    .await
                    .unwrap();
                requests.push(fields);
            }
            _ => {}
        }
    }
    requests
}

fn text(f: &Field) -> (String, String, bool) {
    (
        String::from_utf8(f.name.to_vec()).unwrap(),
        String::from_utf8(f.value.to_vec()).unwrap(),
        f.sensitive,
    )
}

#[tokio::test]
async fn requests_from_the_h2_crate_decode_and_our_answers_decode_there() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        serve(s, |path| {
            vec![
                ("content-type".into(), b"application/json".to_vec(), false),
                ("x-trace-id".into(), path.as_bytes().to_vec(), true),
                ("x-long".into(), vec![b'z'; 5000], false),
                ("set-cookie".into(), b"a=b; Path=/".to_vec(), true),
            ]
        })
        .await
    });

    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    // 300 requests: the same fields again (indexed by h2's encoder after the first), and a
    // field unique to each, so that the 4 KiB table fills and evicts all along.
    let n = 300;
    for i in 0..n {
        let mut secret = HeaderValue::from_static("Bearer abc");
        secret.set_sensitive(true);
        let req = Request::builder()
            .uri(format!("http://example.test/r/{i}?q=%C3%BC%20x"))
            .header("user-agent", "interop-test/1.0")
            .header("x-unique", format!("{i:0>40}-{}", "v".repeat(i % 50)))
            .header("authorization", secret)
            .header("accept", "*/*")
            .body(())
            .unwrap();
        client = client.ready().await.unwrap();
        let (resp, _) = client.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let h = resp.headers();
        assert_eq!(h["content-type"], "application/json");
        let path = format!("/r/{i}?q=%C3%BC%20x");
        assert_eq!(h["x-trace-id"], path.as_str());
        assert_eq!(h["x-long"].len(), 5000);
        assert_eq!(h["set-cookie"], "a=b; Path=/");
    }
    drop(client);
    conn.await.unwrap().unwrap();

    let requests = server.await.unwrap();
    assert_eq!(requests.len(), n);
    for (i, fields) in requests.iter().enumerate() {
        let fields: Vec<_> = fields.iter().map(text).collect();
        let get = |name: &str| {
            fields
                .iter()
                .find(|f| f.0 == name)
                .unwrap_or_else(|| panic!("no {name} in {fields:?}"))
        };
        assert_eq!(get(":method").1, "GET");
        assert_eq!(get(":scheme").1, "http");
        assert_eq!(get(":authority").1, "example.test");
        assert_eq!(get(":path").1, format!("/r/{i}?q=%C3%BC%20x"));
        assert_eq!(get("user-agent").1, "interop-test/1.0");
        assert_eq!(
            get("x-unique").1,
            format!("{i:0>40}-{}", "v".repeat(i % 50))
        );
        assert_eq!(get("accept").1, "*/*");
        let auth = get("authorization");
        assert_eq!((auth.1.as_str(), auth.2), ("Bearer abc", true));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the bytes, the decoder answers with fields or an error, never a panic.
    #[test]
    fn any_bytes_decode_or_fail_cleanly(blocks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..6)) {
        let mut d = Decoder::new(256, 4096);
        for b in blocks {
            let _ = d.decode(&Bytes::from(b), |_| {});
            prop_assert!(d.table_size() <= 256);
        }
    }

    /// What the encoder writes decodes to the same fields, flags included.
    #[test]
    fn encoded_fields_decode_back(
        status in 100u16..600,
        fields in prop::collection::vec(("[a-z][a-z0-9-]{0,20}", prop::collection::vec(any::<u8>(), 0..200), any::<bool>()), 0..12),
    ) {
        let mut e = Encoder::new();
        let mut out = Vec::new();
        e.begin(&mut out);
        e.status(status, &mut out);
        for (n, v, s) in &fields {
            e.field(n, v, *s, &mut out);
        }
        let mut d = Decoder::new(4096, 1 << 20);
        let mut got = Vec::new();
        d.decode(&Bytes::from(out), |f| got.push(f)).unwrap();
        prop_assert_eq!(got.len(), fields.len() + 1);
        let code = status.to_string();
        prop_assert_eq!(&got[0].value[..], code.as_bytes());
        for (f, (n, v, s)) in got[1..].iter().zip(&fields) {
            prop_assert_eq!(&f.name[..], n.as_bytes());
            prop_assert_eq!(&f.value[..], &v[..]);
            prop_assert_eq!(f.sensitive, *s);
        }
    }
}
