//! `Conn` driven with frames as a client would send them, its events and the frames it
//! queues checked against RFC 9113.

use super::*;

/// A client's frames, built up.
#[derive(Default)]
struct Client {
    bytes: Vec<u8>,
    encoder: Encoder,
}

impl Client {
    fn block(&mut self, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        self.encoder.begin(&mut b);
        for (n, v) in [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "a.test"),
            (":path", path),
        ]
        .iter()
        .chain(extra)
        {
            self.encoder.field(n, v.as_bytes(), false, &mut b);
        }
        b
    }

    fn headers(
        &mut self,
        stream: u32,
        path: &str,
        extra: &[(&str, &str)],
        end_stream: bool,
    ) -> &mut Self {
        let b = self.block(path, extra);
        frame::put_headers(&mut self.bytes, stream, &b, end_stream, 1 << 14);
        self
    }

    fn raw(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> &mut Self {
        frame::put_head(&mut self.bytes, payload.len(), kind, flags, stream);
        self.bytes.extend_from_slice(payload);
        self
    }

    fn data(&mut self, stream: u32, data: &[u8], end_stream: bool) -> &mut Self {
        frame::put_data_head(&mut self.bytes, stream, data.len(), end_stream);
        self.bytes.extend_from_slice(data);
        self
    }

    fn take(&mut self) -> BytesMut {
        BytesMut::from(&std::mem::take(&mut self.bytes)[..])
    }
}

/// Feeds what the client built; returns the events and the frames queued.
fn feed(conn: &mut Conn, client: &mut Client) -> (Result<(), ConnError>, Vec<Event>, Vec<Frame>) {
    let mut buf = client.take();
    let mut events = Vec::new();
    let r = conn.recv(&mut buf, &mut events);
    (r, events, sent(conn))
}

/// The frames in `conn.out`, taken.
fn sent(conn: &mut Conn) -> Vec<Frame> {
    let mut buf = BytesMut::from(&std::mem::take(&mut conn.out)[..]);
    let mut frames = Vec::new();
    while let Some((h, p)) = frame::split(&mut buf, frame::MAX_MAX_FRAME_SIZE).unwrap() {
        frames.push(Frame::parse(h, p).unwrap());
    }
    assert!(buf.is_empty());
    frames
}

fn started(config: Config) -> Conn {
    let mut c = Conn::new(config);
    let first = sent(&mut c);
    assert!(matches!(first[0], Frame::Settings(_)));
    c
}

fn goaway(frames: &[Frame]) -> Option<Reason> {
    frames.iter().find_map(|f| match f {
        Frame::GoAway { reason, .. } => Some(*reason),
        _ => None,
    })
}

fn rst(frames: &[Frame], stream: u32) -> Option<Reason> {
    frames.iter().find_map(|f| match f {
        Frame::RstStream { stream: s, reason } if *s == stream => Some(*reason),
        _ => None,
    })
}

#[test]
fn preface_settings_and_ping() {
    let mut buf = BytesMut::from(&PREFACE[..10]);
    assert_eq!(Conn::preface(&mut buf), Ok(false));
    buf.extend_from_slice(&PREFACE[10..]);
    buf.extend_from_slice(b"rest");
    assert_eq!(Conn::preface(&mut buf), Ok(true));
    assert_eq!(&buf[..], b"rest");
    let mut bad = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
    assert!(Conn::preface(&mut bad).is_err());

    let mut c = Conn::new(Config::default());
    let first = sent(&mut c);
    assert_eq!(
        first[0],
        Frame::Settings(vec![
            (frame::SETTINGS_MAX_CONCURRENT_STREAMS, 100),
            (frame::SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20),
            (frame::SETTINGS_MAX_HEADER_LIST_SIZE, 64 << 10),
            (frame::SETTINGS_ENABLE_PUSH, 0),
            (frame::SETTINGS_ENABLE_CONNECT_PROTOCOL, 1),
        ])
    );
    assert_eq!(
        first[1],
        Frame::WindowUpdate {
            stream: 0,
            increment: (1 << 20) - 65_535
        }
    );
    let mut client = Client::default();
    client
        .raw(frame::SETTINGS, 0, 0, &[])
        .raw(frame::PING, 0, 0, b"pingpong");
    let (r, events, out) = feed(&mut c, &mut client);
    assert!(r.is_ok() && events.is_empty());
    assert_eq!(
        out,
        vec![
            Frame::SettingsAck,
            Frame::Ping {
                ack: true,
                data: *b"pingpong"
            }
        ]
    );
}

#[test]
fn a_request_and_its_answer() {
    let mut c = started(Config::default());
    let mut client = Client::default();
    client.headers(1, "/a?b", &[("accept", "*/*")], true);
    let (r, events, out) = feed(&mut c, &mut client);
    assert!(r.is_ok() && out.is_empty());
    let [
        Event::Request {
            stream: 1,
            head,
            end_stream: true,
        },
    ] = &events[..]
    else {
        panic!("{events:?}")
    };
    assert_eq!(head.parts.uri, "http://a.test/a?b");
    assert_eq!(head.parts.headers["accept"], "*/*");
    assert_eq!(c.active(), 1);

    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("text/plain"));
    h.insert("connection", HeaderValue::from_static("close"));
    c.send_headers(1, 200, &h, false);
    assert_eq!(c.send_capacity(1), 16_384);
    c.send_data(1, b"hello", true);
    assert_eq!(c.active(), 0);
    let out = sent(&mut c);
    let Frame::Headers {
        stream: 1,
        end_stream: false,
        end_headers: true,
        fragment,
        ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    let mut fields = Vec::new();
    Decoder::new(4096, 1 << 16)
        .decode(fragment, |f| fields.push((f.name, f.value)))
        .unwrap();
    // `connection` is not carried by HTTP/2.
    assert_eq!(
        fields,
        vec![
            (Bytes::from(":status"), Bytes::from("200")),
            (Bytes::from("content-type"), Bytes::from("text/plain"))
        ]
    );
    assert_eq!(
        out[1],
        Frame::Data {
            stream: 1,
            end_stream: true,
            data: Bytes::from("hello"),
            flow_len: 5
        }
    );
}

#[test]
fn an_answer_from_raw_fields_and_a_stamp() {
    let mut c = started(Config::default());
    let mut client = Client::default();
    client.headers(1, "/", &[], true);
    let _ = feed(&mut c, &mut client);
    let raw = crate::http1::RawFields {
        lines: Bytes::from_static(
            b"Content-Type: text/plain\r\nX-Request-ID: upstream's\r\nX-Pad:  a b \t\r\n",
        ),
        length: None,
        date: false,
        names: [&b"content-type"[..], b"x-request-id", b"x-pad"]
            .iter()
            .fold(0, |n, name| n | crate::http1::name_bit(name)),
    };
    let (trace, rid) = (
        HeaderName::from_static("x-trace-id"),
        HeaderName::from_static("x-request-id"),
    );
    let id = crate::context::correlation::IdValue::Reused(HeaderValue::from_static("client-7"));
    let stamp = Stamp {
        trace: Some((&trace, &[0xab; 16])),
        correlation: Some((&rid, &id)),
    };
    c.send_answer(
        1,
        200,
        Fields::Raw(&raw),
        stamp,
        &[("date", b"today")],
        true,
    );
    let out = sent(&mut c);
    let Frame::Headers { fragment, .. } = &out[0] else {
        panic!("{out:?}")
    };
    let mut fields = Vec::new();
    Decoder::new(4096, 1 << 16)
        .decode(fragment, |f| {
            fields.push(format!(
                "{}: {}{}",
                String::from_utf8_lossy(&f.name),
                String::from_utf8_lossy(&f.value),
                if f.sensitive { " (never indexed)" } else { "" }
            ));
        })
        .unwrap();
    assert_eq!(
        fields,
        [
            ":status: 200",
            "date: today",
            "content-type: text/plain",
            "x-pad: a b",
            "x-trace-id: abababababababababababababababab (never indexed)",
            "x-request-id: client-7 (never indexed)",
        ],
        "names in lowercase, values trimmed, the upstream's id given way to the stamp's"
    );
}

#[test]
fn request_bodies_flow_control_and_trailers() {
    let mut c = started(Config {
        stream_window: 100,
        conn_window: 65_535,
        ..Config::default()
    });
    let mut client = Client::default();
    client
        .headers(1, "/up", &[("content-length", "90")], false)
        .data(1, &[b'x'; 60], false)
        // Padded: 30 bytes of data, 9 of padding and the pad length byte.
        .raw(
            frame::DATA,
            frame::FLAG_PADDED,
            1,
            &[&[9u8][..], &[b'y'; 30], &[0; 9]].concat(),
        );
    let (r, events, out) = feed(&mut c, &mut client);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(events.len(), 3);
    assert!(out.is_empty());
    // 100 - 60 - 40 = 0 left; padding (10) is given back at once.
    c.release(1, 60);
    let out = sent(&mut c);
    assert_eq!(
        out,
        vec![Frame::WindowUpdate {
            stream: 1,
            increment: 70
        }]
    );
    // Trailers end the body; its length adds up.
    let mut t = Vec::new();
    client.encoder.begin(&mut t);
    client.encoder.field("x-checksum", b"abc", false, &mut t);
    frame::put_headers(&mut client.bytes, 1, &t, true, 1 << 14);
    let (r, events, _) = feed(&mut c, &mut client);
    assert!(r.is_ok());
    let [Event::Trailers { stream: 1, fields }] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(fields["x-checksum"], "abc");

    // Past the stream's window: that stream is reset, the connection goes on.
    client
        .headers(3, "/up", &[], false)
        .data(3, &[0; 101], false);
    let (r, events, out) = feed(&mut c, &mut client);
    assert!(r.is_ok());
    assert!(matches!(
        events[1],
        Event::Reset {
            stream: 3,
            reason: Reason::FLOW_CONTROL_ERROR
        }
    ));
    assert_eq!(rst(&out, 3), Some(Reason::FLOW_CONTROL_ERROR));

    // A body longer than its content-length, or shorter at its end.
    client
        .headers(5, "/up", &[("content-length", "3")], false)
        .data(5, b"abcd", false)
        .headers(7, "/up", &[("content-length", "3")], false)
        .data(7, b"ab", true);
    let (_, _, out) = feed(&mut c, &mut client);
    assert_eq!(rst(&out, 5), Some(Reason::PROTOCOL_ERROR));
    assert_eq!(rst(&out, 7), Some(Reason::PROTOCOL_ERROR));
    // Frames already in flight on streams we reset are ignored...
    client.data(5, b"late", false);
    let (r, events, _) = feed(&mut c, &mut client);
    assert!(r.is_ok() && events.is_empty());
    // ...but DATA after the client's own END_STREAM is an error.
    client.headers(9, "/", &[], true).data(9, b"more", false);
    let (r, _, out) = feed(&mut c, &mut client);
    assert!(r.is_ok());
    assert_eq!(rst(&out, 9), Some(Reason::STREAM_CLOSED));
}

#[test]
fn the_connection_window_is_the_connections() {
    let mut c = started(Config {
        stream_window: 70_000,
        conn_window: 65_535,
        ..Config::default()
    });
    let mut client = Client::default();
    client.headers(1, "/", &[], false);
    for _ in 0..3 {
        client.data(1, &[0; 16_384], false);
    }
    client.data(1, &[0; 16_383], false);
    let (r, _, _) = feed(&mut c, &mut client);
    assert!(r.is_ok());
    client.data(1, &[0], false);
    let (r, _, out) = feed(&mut c, &mut client);
    assert_eq!(r.unwrap_err().reason, Reason::FLOW_CONTROL_ERROR);
    assert_eq!(goaway(&out), Some(Reason::FLOW_CONTROL_ERROR));
}

#[test]
fn header_blocks_and_their_continuations() {
    let mut c = started(Config::default());
    let mut client = Client::default();
    let block = client.block("/long", &[("x-a", &"v".repeat(100))]);
    frame::put_headers(&mut client.bytes, 1, &block, true, 16);
    let (r, events, _) = feed(&mut c, &mut client);
    assert!(r.is_ok());
    assert!(matches!(&events[..], [Event::Request { stream: 1, .. }]));

    // Anything else inside a header block ends the connection.
    let block = client.block("/x", &[("x-a", &"v".repeat(100))]);
    client
        .raw(frame::HEADERS, 0, 3, &block[..10])
        .raw(frame::PING, 0, 0, b"12345678");
    let (r, _, out) = feed(&mut c, &mut client);
    assert_eq!(r.unwrap_err().reason, Reason::PROTOCOL_ERROR);
    assert_eq!(goaway(&out), Some(Reason::PROTOCOL_ERROR));

    // A flood of empty CONTINUATIONs.
    let mut c = started(Config::default());
    let mut client = Client::default();
    client.raw(frame::HEADERS, 0, 1, &[0x82]);
    for _ in 0..MAX_CONTINUATIONS {
        client.raw(frame::CONTINUATION, 0, 1, &[]);
    }
    let (r, _, out) = feed(&mut c, &mut client);
    assert_eq!(r.unwrap_err().reason, Reason::ENHANCE_YOUR_CALM);
    assert_eq!(goaway(&out), Some(Reason::ENHANCE_YOUR_CALM));

    // A block past the header list size.
    let mut c = started(Config {
        max_header_list: 1000,
        ..Config::default()
    });
    let mut client = Client::default();
    let block = client.block("/", &[("x-a", &"v".repeat(2000))]);
    frame::put_headers(&mut client.bytes, 1, &block, true, 500);
    let (r, _, _) = feed(&mut c, &mut client);
    assert_eq!(r.unwrap_err().reason, Reason::ENHANCE_YOUR_CALM);
    // A CONTINUATION with no HEADERS before it.
    let mut c = started(Config::default());
    client.raw(frame::CONTINUATION, frame::FLAG_END_HEADERS, 1, &[0x82]);
    let (r, _, _) = feed(&mut c, &mut client);
    assert_eq!(r.unwrap_err().reason, Reason::PROTOCOL_ERROR);
}

#[test]
fn stream_ids_limits_and_malformed_requests() {
    let mut c = started(Config {
        max_concurrent_streams: 2,
        ..Config::default()
    });
    let mut client = Client::default();
    client
        .headers(1, "/", &[], false)
        .headers(3, "/", &[], false)
        .headers(5, "/", &[], true)
        // Malformed (an uppercase name): reset, and HPACK stays in step for stream 9.
        .headers(7, "/", &[("X-Up", "1")], true);
    let (r, events, out) = feed(&mut c, &mut client);
    assert!(r.is_ok());
    assert_eq!(events.len(), 2);
    assert_eq!(rst(&out, 5), Some(Reason::REFUSED_STREAM));
    assert_eq!(rst(&out, 7), Some(Reason::REFUSED_STREAM));
    let mut events = Vec::new();
    c.reset(1, Reason::CANCEL, &mut events);
    c.reset(3, Reason::CANCEL, &mut events);
    let _ = sent(&mut c);
    client
        .headers(9, "/", &[("X-Up", "1")], true)
        .headers(11, "/ok", &[], true);
    let (r, events, out) = feed(&mut c, &mut client);
    assert!(r.is_ok());
    assert_eq!(rst(&out, 9), Some(Reason::PROTOCOL_ERROR));
    assert!(matches!(&events[..], [Event::Request { stream: 11, .. }]));

    // A stream depending on itself is refused after its block is decoded.
    client.raw(
        frame::HEADERS,
        frame::FLAG_PRIORITY | frame::FLAG_END_HEADERS | frame::FLAG_END_STREAM,
        13,
        &[&[0, 0, 0, 13, 16][..], &[0x82, 0x86, 0x84]].concat(),
    );
    let (r, _, out) = feed(&mut c, &mut client);
    assert!(r.is_ok());
    assert_eq!(rst(&out, 13), Some(Reason::PROTOCOL_ERROR));

    // Even ids, and ids going back, end the connection.
    let mut c2 = started(Config::default());
    client.headers(2, "/", &[], true);
    assert_eq!(
        feed(&mut c2, &mut client).0.unwrap_err().reason,
        Reason::PROTOCOL_ERROR
    );
    // Stream 11, answered and closed, again; and a new id lower than the last.
    c.send_headers(11, 204, &HeaderMap::new(), true);
    client.headers(11, "/", &[], true);
    assert_eq!(
        feed(&mut c, &mut client).0.unwrap_err().reason,
        Reason::PROTOCOL_ERROR
    );
    let mut c = started(Config::default());
    client.headers(5, "/", &[], true).headers(3, "/", &[], true);
    assert_eq!(
        feed(&mut c, &mut client).0.unwrap_err().reason,
        Reason::PROTOCOL_ERROR
    );
    // DATA on a stream the client ended and we answered.
    let mut c = started(Config::default());
    client.headers(1, "/", &[], true);
    let _ = feed(&mut c, &mut client);
    c.send_headers(1, 204, &HeaderMap::new(), true);
    client.data(1, b"x", true);
    assert_eq!(
        feed(&mut c, &mut client).0.unwrap_err().reason,
        Reason::STREAM_CLOSED
    );
    // Frames on idle streams.
    let mut c = started(Config::default());
    client.data(1, b"x", false);
    assert_eq!(
        feed(&mut c, &mut client).0.unwrap_err().reason,
        Reason::PROTOCOL_ERROR
    );
    let mut c = started(Config::default());
    client.raw(frame::RST_STREAM, 0, 1, &[0, 0, 0, 8]);
    assert_eq!(
        feed(&mut c, &mut client).0.unwrap_err().reason,
        Reason::PROTOCOL_ERROR
    );
    let mut c = started(Config::default());
    client.raw(frame::WINDOW_UPDATE, 0, 1, &[0, 0, 0, 1]);
    assert_eq!(
        feed(&mut c, &mut client).0.unwrap_err().reason,
        Reason::PROTOCOL_ERROR
    );
}

#[test]
fn priority_frames_on_idle_and_closed_streams() {
    let mut client = Client::default();
    // PRIORITY is allowed on an idle stream, and changes nothing: the stream opens later.
    let mut c = started(Config::default());
    client.raw(frame::PRIORITY, 0, 3, &[0, 0, 0, 1, 16]);
    let (r, events, out) = feed(&mut c, &mut client);
    assert!(r.is_ok());
    assert!(events.is_empty() && out.is_empty(), "{out:?}");
    client.headers(3, "/", &[], true);
    let (r, events, _) = feed(&mut c, &mut client);
    assert!(r.is_ok());
    assert!(matches!(&events[..], [Event::Request { stream: 3, .. }]));

    // In error on a stream the client has closed: a stream error, RST_STREAM on it, and the
    // connection goes on.
    c.send_headers(3, 204, &HeaderMap::new(), true);
    let _ = sent(&mut c);
    client.raw(frame::PRIORITY, 0, 3, &[0, 0, 0, 3, 16]);
    let (r, _, out) = feed(&mut c, &mut client);
    assert!(r.is_ok());
    assert_eq!(rst(&out, 3), Some(Reason::PROTOCOL_ERROR));
    assert_eq!(goaway(&out), None);
    client.raw(frame::PRIORITY, 0, 3, &[0, 0, 0, 1]);
    let (r, _, out) = feed(&mut c, &mut client);
    assert!(r.is_ok());
    assert_eq!(rst(&out, 3), Some(Reason::FRAME_SIZE_ERROR));

    // In error on an idle stream: RST_STREAM must not be sent there (RFC 9113, 5.1), so the
    // connection ends, and no RST_STREAM names the idle stream.
    for (payload, reason) in [
        (&[0, 0, 0, 5, 16][..], Reason::PROTOCOL_ERROR),
        (&[0, 0, 0, 1][..], Reason::FRAME_SIZE_ERROR),
    ] {
        let mut c = started(Config::default());
        client.headers(1, "/", &[], true);
        client.raw(frame::PRIORITY, 0, 5, payload);
        let (r, events, out) = feed(&mut c, &mut client);
        assert_eq!(r.unwrap_err().reason, reason);
        assert_eq!(events.len(), 1);
        assert_eq!(rst(&out, 5), None);
        assert_eq!(goaway(&out), Some(reason));
    }
    // A header block that does not decode.
    let mut c = started(Config::default());
    client.raw(frame::HEADERS, frame::FLAG_END_HEADERS, 1, &[0x80]);
    assert_eq!(
        feed(&mut c, &mut client).0.unwrap_err().reason,
        Reason::COMPRESSION_ERROR
    );
}

#[test]
fn rapid_resets_are_paid_for_by_answers() {
    let mut c = started(Config {
        reset_budget: 3,
        ..Config::default()
    });
    let mut client = Client::default();
    let mut id = 1;
    // Answered streams do not count; three resets of unanswered ones are allowed.
    for _ in 0..5 {
        client.headers(id, "/", &[], true);
        assert!(feed(&mut c, &mut client).0.is_ok());
        c.send_headers(id, 204, &HeaderMap::new(), true);
        id += 2;
    }
    for _ in 0..3 {
        client
            .headers(id, "/", &[], true)
            .raw(frame::RST_STREAM, 0, id, &[0, 0, 0, 8]);
        let (r, events, _) = feed(&mut c, &mut client);
        assert!(r.is_ok());
        assert!(matches!(
            events[1],
            Event::Reset {
                reason: Reason::CANCEL,
                ..
            }
        ));
        id += 2;
    }
    // One answer earns one more.
    client.headers(id, "/", &[], true);
    assert!(feed(&mut c, &mut client).0.is_ok());
    c.send_headers(id, 204, &HeaderMap::new(), true);
    id += 2;
    client
        .headers(id, "/", &[], true)
        .raw(frame::RST_STREAM, 0, id, &[0, 0, 0, 8]);
    assert!(feed(&mut c, &mut client).0.is_ok());
    id += 2;
    client
        .headers(id, "/", &[], true)
        .raw(frame::RST_STREAM, 0, id, &[0, 0, 0, 8]);
    let (r, _, out) = feed(&mut c, &mut client);
    assert_eq!(r.unwrap_err().reason, Reason::ENHANCE_YOUR_CALM);
    assert_eq!(goaway(&out), Some(Reason::ENHANCE_YOUR_CALM));
}

#[test]
fn send_windows_follow_the_client() {
    let mut c = started(Config::default());
    let mut client = Client::default();
    client.headers(1, "/", &[], true);
    let _ = feed(&mut c, &mut client);
    assert_eq!(c.send_capacity(1), 16_384);
    // A smaller initial window shrinks open streams' windows; WINDOW_UPDATEs grow them.
    client.raw(
        frame::SETTINGS,
        0,
        0,
        &[0, 4, 0, 0, 0, 10, 0, 5, 0, 0, 0x80, 0],
    );
    let (r, _, out) = feed(&mut c, &mut client);
    assert!(r.is_ok());
    assert_eq!(out, vec![Frame::SettingsAck]);
    assert_eq!(c.send_capacity(1), 10);
    c.send_data(1, &[1; 10], false);
    assert_eq!(c.send_capacity(1), 0);
    client.raw(frame::WINDOW_UPDATE, 0, 1, &[0, 1, 0, 0]);
    let _ = feed(&mut c, &mut client);
    // The connection window (65,535 - 10) and the peer's frame size (32 KiB) cap it.
    assert_eq!(c.send_capacity(1), 32_768);
    // A window past 2^31-1: the stream is reset; on the connection, the connection ends.
    client.raw(frame::WINDOW_UPDATE, 0, 1, &[0x7f, 0xff, 0xff, 0xff]);
    let (_, events, out) = feed(&mut c, &mut client);
    assert_eq!(rst(&out, 1), Some(Reason::FLOW_CONTROL_ERROR));
    assert!(matches!(events[..], [Event::Reset { stream: 1, .. }]));
    client.raw(frame::WINDOW_UPDATE, 0, 0, &[0x7f, 0xff, 0xff, 0xff]);
    assert_eq!(
        feed(&mut c, &mut client).0.unwrap_err().reason,
        Reason::FLOW_CONTROL_ERROR
    );
}

#[test]
fn answers_split_at_the_clients_frame_size_and_goaway() {
    let mut c = started(Config::default());
    let mut client = Client::default();
    client.headers(1, "/", &[], true);
    let _ = feed(&mut c, &mut client);
    let mut h = HeaderMap::new();
    h.insert("x-big", HeaderValue::from_str(&"b".repeat(40_000)).unwrap());
    c.send_headers(1, 200, &h, true);
    let out = sent(&mut c);
    assert_eq!(out.len(), 3);
    assert!(matches!(
        out[2],
        Frame::Continuation {
            end_headers: true,
            ..
        }
    ));

    // After our GOAWAY, new streams are refused; the client's GOAWAY is passed on.
    c.go_away(Reason::NO_ERROR);
    client
        .headers(3, "/", &[], true)
        .raw(frame::GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0]);
    let (r, events, out) = feed(&mut c, &mut client);
    assert!(r.is_ok());
    assert_eq!(goaway(&out), Some(Reason::NO_ERROR));
    assert_eq!(rst(&out, 3), Some(Reason::REFUSED_STREAM));
    assert!(matches!(events[..], [Event::GoAway { last_stream: 0, .. }]));
}

#[test]
fn a_client_that_reads_nothing_is_cut_off() {
    let mut c = started(Config::default());
    let mut client = Client::default();
    for _ in 0..(MAX_PENDING_OUT / 17 + 1) {
        client.raw(frame::PING, 0, 0, b"12345678");
    }
    let (r, _, _) = feed(&mut c, &mut client);
    assert_eq!(r.unwrap_err().reason, Reason::ENHANCE_YOUR_CALM);
}
