//! HTTP/2 frames (RFC 9113, sections 4 and 6) as a server reads and writes them: the
//! frame head, each type's payload checked against the rules that do not need the
//! connection's state (sizes, stream 0 or not, padding, settings' ranges), and writers for
//! the frames a server sends. Sequencing (CONTINUATION after HEADERS, stream states, flow
//! control) is the connection's.

use bytes::{Buf, Bytes, BytesMut};

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_ACK: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

/// The frame head's size.
pub const HEAD_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value and its floor.
pub const MIN_MAX_FRAME_SIZE: u32 = 1 << 14;
/// SETTINGS_MAX_FRAME_SIZE's ceiling.
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest flow-control window.
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

/// Error codes (RFC 9113, 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reason(pub u32);

impl Reason {
    pub const NO_ERROR: Reason = Reason(0x0);
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub const SETTINGS_TIMEOUT: Reason = Reason(0x4);
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    pub const CANCEL: Reason = Reason(0x8);
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub const CONNECT_ERROR: Reason = Reason(0xa);
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);
    pub const INADEQUATE_SECURITY: Reason = Reason(0xc);
    pub const HTTP_1_1_REQUIRED: Reason = Reason(0xd);

    pub fn name(self) -> &'static str {
        match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => "unknown error code",
        }
    }
}

/// A frame the rules refuse: the whole connection ends (GOAWAY), or only the stream
/// (RST_STREAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    Connection(Reason, &'static str),
    Stream(u32, Reason, &'static str),
}

fn conn<T>(reason: Reason, why: &'static str) -> Result<T, FrameError> {
    Err(FrameError::Connection(reason, why))
}

/// A frame's head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    pub fn parse(b: &[u8; HEAD_LEN]) -> Head {
        Head {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            // The reserved bit is ignored on receipt.
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & MAX_WINDOW,
        }
    }
}

/// A stream's priority as HEADERS or PRIORITY give it. RFC 9113 deprecates the scheme;
/// it is parsed for its one rule (no stream depends on itself) and otherwise unused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priority {
    pub exclusive: bool,
    pub depends_on: u32,
    pub weight: u8,
}

/// SETTINGS parameters (RFC 9113, 6.5.2).
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;
pub const SETTINGS_ENABLE_CONNECT_PROTOCOL: u16 = 0x8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        end_stream: bool,
        /// Without the padding.
        data: Bytes,
        /// What the frame counts against flow control: the whole payload, padding included.
        flow_len: usize,
    },
    Headers {
        stream: u32,
        end_stream: bool,
        end_headers: bool,
        priority: Option<Priority>,
        /// The header block fragment, without padding or priority.
        fragment: Bytes,
    },
    Priority {
        stream: u32,
        priority: Priority,
    },
    RstStream {
        stream: u32,
        reason: Reason,
    },
    /// The parameters in order (a later one of an id overrides an earlier one).
    Settings(Vec<(u16, u32)>),
    SettingsAck,
    Ping {
        ack: bool,
        data: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        reason: Reason,
        debug: Bytes,
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        end_headers: bool,
        fragment: Bytes,
    },
    /// A type this server does not know: ignored (RFC 9113, 4.1), except inside a header
    /// block, which the connection checks.
    Unknown {
        kind: u8,
        stream: u32,
    },
}

impl Frame {
    /// Checks `payload` (exactly `head.len` bytes) against the rules for its type, as a
    /// server receives it.
    pub fn parse(head: Head, mut payload: Bytes) -> Result<Frame, FrameError> {
        debug_assert_eq!(payload.len(), head.len);
        let stream = head.stream;
        let needs_stream = |what| {
            if stream == 0 {
                conn(Reason::PROTOCOL_ERROR, what)
            } else {
                Ok(())
            }
        };
        let no_stream = |what| {
            if stream != 0 {
                conn(Reason::PROTOCOL_ERROR, what)
            } else {
                Ok(())
            }
        };
        match head.kind {
            DATA => {
                needs_stream("DATA on stream 0")?;
                let flow_len = payload.len();
                let data = unpad(head.flags, payload)?;
                Ok(Frame::Data {
                    stream,
                    end_stream: head.flags & FLAG_END_STREAM != 0,
                    data,
                    flow_len,
                })
            }
            HEADERS => {
                needs_stream("HEADERS on stream 0")?;
                let mut pad = 0;
                if head.flags & FLAG_PADDED != 0 {
                    if payload.is_empty() {
                        return conn(
                            Reason::FRAME_SIZE_ERROR,
                            "PADDED frame without a pad length",
                        );
                    }
                    pad = usize::from(payload.get_u8());
                }
                let priority = if head.flags & FLAG_PRIORITY != 0 {
                    if payload.len() < 5 {
                        return conn(Reason::FRAME_SIZE_ERROR, "HEADERS too short for priority");
                    }
                    // A stream depending on itself is a stream error, left to the
                    // connection: the block must still be decoded to keep HPACK in step.
                    let p = priority(&payload[..5]);
                    payload.advance(5);
                    Some(p)
                } else {
                    None
                };
                if pad > payload.len() {
                    return conn(Reason::PROTOCOL_ERROR, "padding longer than the fragment");
                }
                payload.truncate(payload.len() - pad);
                Ok(Frame::Headers {
                    stream,
                    end_stream: head.flags & FLAG_END_STREAM != 0,
                    end_headers: head.flags & FLAG_END_HEADERS != 0,
                    priority,
                    fragment: payload,
                })
            }
            PRIORITY => {
                needs_stream("PRIORITY on stream 0")?;
                if payload.len() != 5 {
                    return Err(FrameError::Stream(
                        stream,
                        Reason::FRAME_SIZE_ERROR,
                        "PRIORITY not 5 bytes",
                    ));
                }
                let p = priority(&payload);
                if p.depends_on == stream {
                    return Err(FrameError::Stream(
                        stream,
                        Reason::PROTOCOL_ERROR,
                        "stream depends on itself",
                    ));
                }
                Ok(Frame::Priority {
                    stream,
                    priority: p,
                })
            }
            RST_STREAM => {
                needs_stream("RST_STREAM on stream 0")?;
                if payload.len() != 4 {
                    return conn(Reason::FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes");
                }
                Ok(Frame::RstStream {
                    stream,
                    reason: Reason(payload.get_u32()),
                })
            }
            SETTINGS => {
                no_stream("SETTINGS on a stream")?;
                if head.flags & FLAG_ACK != 0 {
                    if !payload.is_empty() {
                        return conn(Reason::FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
                    }
                    return Ok(Frame::SettingsAck);
                }
                if payload.len() % 6 != 0 {
                    return conn(Reason::FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6");
                }
                let mut params = Vec::with_capacity(payload.len() / 6);
                while payload.has_remaining() {
                    let (id, value) = (payload.get_u16(), payload.get_u32());
                    match id {
                        SETTINGS_ENABLE_PUSH | SETTINGS_ENABLE_CONNECT_PROTOCOL if value > 1 => {
                            return conn(Reason::PROTOCOL_ERROR, "SETTINGS flag not 0 or 1");
                        }
                        SETTINGS_INITIAL_WINDOW_SIZE if value > MAX_WINDOW => {
                            return conn(
                                Reason::FLOW_CONTROL_ERROR,
                                "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                            );
                        }
                        SETTINGS_MAX_FRAME_SIZE
                            if !(MIN_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) =>
                        {
                            return conn(
                                Reason::PROTOCOL_ERROR,
                                "SETTINGS_MAX_FRAME_SIZE out of range",
                            );
                        }
                        _ => params.push((id, value)),
                    }
                }
                Ok(Frame::Settings(params))
            }
            PUSH_PROMISE => conn(Reason::PROTOCOL_ERROR, "PUSH_PROMISE from a client"),
            PING => {
                no_stream("PING on a stream")?;
                if payload.len() != 8 {
                    return conn(Reason::FRAME_SIZE_ERROR, "PING not 8 bytes");
                }
                let mut data = [0u8; 8];
                data.copy_from_slice(&payload);
                Ok(Frame::Ping {
                    ack: head.flags & FLAG_ACK != 0,
                    data,
                })
            }
            GOAWAY => {
                no_stream("GOAWAY on a stream")?;
                if payload.len() < 8 {
                    return conn(Reason::FRAME_SIZE_ERROR, "GOAWAY under 8 bytes");
                }
                let last_stream = payload.get_u32() & MAX_WINDOW;
                let reason = Reason(payload.get_u32());
                Ok(Frame::GoAway {
                    last_stream,
                    reason,
                    debug: payload,
                })
            }
            WINDOW_UPDATE => {
                if payload.len() != 4 {
                    return conn(Reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes");
                }
                let increment = payload.get_u32() & MAX_WINDOW;
                if increment == 0 {
                    return if stream == 0 {
                        conn(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
                    } else {
                        Err(FrameError::Stream(
                            stream,
                            Reason::PROTOCOL_ERROR,
                            "WINDOW_UPDATE of 0",
                        ))
                    };
                }
                Ok(Frame::WindowUpdate { stream, increment })
            }
            CONTINUATION => {
                needs_stream("CONTINUATION on stream 0")?;
                Ok(Frame::Continuation {
                    stream,
                    end_headers: head.flags & FLAG_END_HEADERS != 0,
                    fragment: payload,
                })
            }
            kind => Ok(Frame::Unknown { kind, stream }),
        }
    }
}

fn priority(b: &[u8]) -> Priority {
    let dep = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Priority {
        exclusive: dep & 0x8000_0000 != 0,
        depends_on: dep & MAX_WINDOW,
        weight: b[4],
    }
}

/// The payload without its padding (when PADDED is set).
fn unpad(flags: u8, mut payload: Bytes) -> Result<Bytes, FrameError> {
    if flags & FLAG_PADDED == 0 {
        return Ok(payload);
    }
    if payload.is_empty() {
        return conn(
            Reason::FRAME_SIZE_ERROR,
            "PADDED frame without a pad length",
        );
    }
    let pad = usize::from(payload.get_u8());
    // The pad length byte plus the padding may not fill the whole payload.
    if pad > payload.len() {
        return conn(Reason::PROTOCOL_ERROR, "padding as long as the payload");
    }
    payload.truncate(payload.len() - pad);
    Ok(payload)
}

/// Takes one whole frame off the front of `buf`, or `None` until it has arrived. A head
/// announcing more than `max_len` (our SETTINGS_MAX_FRAME_SIZE) is refused at once, before
/// its payload is waited for.
pub fn split(buf: &mut BytesMut, max_len: u32) -> Result<Option<(Head, Bytes)>, FrameError> {
    if buf.len() < HEAD_LEN {
        return Ok(None);
    }
    let mut h = [0u8; HEAD_LEN];
    h.copy_from_slice(&buf[..HEAD_LEN]);
    let head = Head::parse(&h);
    if head.len > max_len as usize {
        return conn(
            Reason::FRAME_SIZE_ERROR,
            "frame larger than SETTINGS_MAX_FRAME_SIZE",
        );
    }
    if buf.len() < HEAD_LEN + head.len {
        return Ok(None);
    }
    buf.advance(HEAD_LEN);
    Ok(Some((head, buf.split_to(head.len).freeze())))
}

/// Appends a frame head.
pub fn put_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_MAX_FRAME_SIZE as usize);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

pub fn put_settings(out: &mut Vec<u8>, params: &[(u16, u32)]) {
    put_head(out, params.len() * 6, SETTINGS, 0, 0);
    for (id, value) in params {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

pub fn put_settings_ack(out: &mut Vec<u8>) {
    put_head(out, 0, SETTINGS, FLAG_ACK, 0);
}

pub fn put_ping_ack(out: &mut Vec<u8>, data: &[u8; 8]) {
    put_head(out, 8, PING, FLAG_ACK, 0);
    out.extend_from_slice(data);
}

pub fn put_goaway(out: &mut Vec<u8>, last_stream: u32, reason: Reason, debug: &[u8]) {
    put_head(out, 8 + debug.len(), GOAWAY, 0, 0);
    out.extend_from_slice(&(last_stream & MAX_WINDOW).to_be_bytes());
    out.extend_from_slice(&reason.0.to_be_bytes());
    out.extend_from_slice(debug);
}

pub fn put_rst_stream(out: &mut Vec<u8>, stream: u32, reason: Reason) {
    put_head(out, 4, RST_STREAM, 0, stream);
    out.extend_from_slice(&reason.0.to_be_bytes());
}

pub fn put_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    debug_assert!(increment > 0 && increment <= MAX_WINDOW);
    put_head(out, 4, WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&increment.to_be_bytes());
}

/// A header block as HEADERS and as many CONTINUATIONs as `max_frame` (the peer's
/// SETTINGS_MAX_FRAME_SIZE) needs.
pub fn put_headers(out: &mut Vec<u8>, stream: u32, block: &[u8], end_stream: bool, max_frame: u32) {
    let max = max_frame as usize;
    let mut chunks = block.chunks(max.max(1));
    let first = chunks.next().unwrap_or(&[]);
    let last = first.len() == block.len();
    let mut flags = if end_stream { FLAG_END_STREAM } else { 0 };
    if last {
        flags |= FLAG_END_HEADERS;
    }
    put_head(out, first.len(), HEADERS, flags, stream);
    out.extend_from_slice(first);
    let mut sent = first.len();
    for chunk in chunks {
        sent += chunk.len();
        let flags = if sent == block.len() {
            FLAG_END_HEADERS
        } else {
            0
        };
        put_head(out, chunk.len(), CONTINUATION, flags, stream);
        out.extend_from_slice(chunk);
    }
}

/// A DATA frame's head; its `len` bytes of data follow.
pub fn put_data_head(out: &mut Vec<u8>, stream: u32, len: usize, end_stream: bool) {
    let flags = if end_stream { FLAG_END_STREAM } else { 0 };
    put_head(out, len, DATA, flags, stream);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Result<Frame, FrameError> {
        let mut out = Vec::new();
        put_head(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        let mut buf = BytesMut::from(&out[..]);
        let (head, payload) = split(&mut buf, MIN_MAX_FRAME_SIZE).unwrap().unwrap();
        assert!(buf.is_empty());
        Frame::parse(head, payload)
    }

    fn conn_err(r: Result<Frame, FrameError>) -> Reason {
        match r {
            Err(FrameError::Connection(reason, _)) => reason,
            other => panic!("not a connection error: {other:?}"),
        }
    }

    fn stream_err(r: Result<Frame, FrameError>) -> (u32, Reason) {
        match r {
            Err(FrameError::Stream(s, reason, _)) => (s, reason),
            other => panic!("not a stream error: {other:?}"),
        }
    }

    #[test]
    fn heads_split_and_wait_for_whole_frames() {
        let mut out = Vec::new();
        put_head(&mut out, 3, DATA, FLAG_END_STREAM, 0x8000_0005);
        out.extend_from_slice(b"abc");
        put_ping_ack(&mut out, b"12345678");
        let mut buf = BytesMut::new();
        for (i, b) in out.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = split(&mut buf, MIN_MAX_FRAME_SIZE).unwrap();
            match i {
                11 => {
                    let (h, p) = got.unwrap();
                    // The reserved bit is dropped.
                    assert_eq!((h.len, h.kind, h.flags, h.stream), (3, DATA, 1, 5));
                    assert_eq!(&p[..], b"abc");
                }
                28 => assert_eq!(got.unwrap().0.kind, PING),
                _ => assert!(got.is_none(), "at {i}"),
            }
        }
        // Too large for our limit: refused from the head alone.
        let mut buf = BytesMut::new();
        let mut h = Vec::new();
        put_head(&mut h, 16385, DATA, 0, 1);
        buf.extend_from_slice(&h);
        assert!(matches!(
            split(&mut buf, MIN_MAX_FRAME_SIZE),
            Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR, _))
        ));
    }

    #[test]
    fn data_and_its_padding() {
        assert_eq!(
            frame(DATA, FLAG_END_STREAM, 1, b"hello"),
            Ok(Frame::Data {
                stream: 1,
                end_stream: true,
                data: Bytes::from_static(b"hello"),
                flow_len: 5
            })
        );
        // Pad length 2: "hi" and two bytes of padding; flow control counts all 5.
        assert_eq!(
            frame(DATA, FLAG_PADDED, 3, b"\x02hi\0\0"),
            Ok(Frame::Data {
                stream: 3,
                end_stream: false,
                data: Bytes::from_static(b"hi"),
                flow_len: 5
            })
        );
        // All padding is allowed; more padding than payload is not.
        assert!(frame(DATA, FLAG_PADDED, 3, b"\x02\0\0").is_ok());
        assert_eq!(
            conn_err(frame(DATA, FLAG_PADDED, 3, b"\x03\0\0")),
            Reason::PROTOCOL_ERROR
        );
        assert_eq!(
            conn_err(frame(DATA, FLAG_PADDED, 3, b"")),
            Reason::FRAME_SIZE_ERROR
        );
        assert_eq!(conn_err(frame(DATA, 0, 0, b"x")), Reason::PROTOCOL_ERROR);
    }

    #[test]
    fn headers_with_padding_and_priority() {
        let payload = b"\x01\x80\0\0\x07\x0fblk\0";
        assert_eq!(
            frame(
                HEADERS,
                FLAG_PADDED | FLAG_PRIORITY | FLAG_END_HEADERS,
                9,
                payload
            ),
            Ok(Frame::Headers {
                stream: 9,
                end_stream: false,
                end_headers: true,
                priority: Some(Priority {
                    exclusive: true,
                    depends_on: 7,
                    weight: 15
                }),
                fragment: Bytes::from_static(b"blk"),
            })
        );
        // Depending on itself: parsed, for the connection to refuse after decoding.
        assert!(matches!(
            frame(HEADERS, FLAG_PRIORITY, 9, b"\0\0\0\x09\x0f"),
            Ok(Frame::Headers {
                priority: Some(Priority { depends_on: 9, .. }),
                ..
            })
        ));
        assert_eq!(
            conn_err(frame(HEADERS, FLAG_PRIORITY, 9, b"\0\0")),
            Reason::FRAME_SIZE_ERROR
        );
        assert_eq!(conn_err(frame(HEADERS, 0, 0, b"x")), Reason::PROTOCOL_ERROR);
        // Padding that reaches into the priority fields.
        assert_eq!(
            conn_err(frame(
                HEADERS,
                FLAG_PADDED | FLAG_PRIORITY,
                9,
                b"\x02\0\0\0\x07\x0f\0"
            )),
            Reason::PROTOCOL_ERROR
        );
    }

    #[test]
    fn fixed_size_frames() {
        assert_eq!(
            stream_err(frame(PRIORITY, 0, 3, b"\0\0\0\x01")),
            (3, Reason::FRAME_SIZE_ERROR)
        );
        assert_eq!(
            stream_err(frame(PRIORITY, 0, 3, b"\0\0\0\x03\x10")),
            (3, Reason::PROTOCOL_ERROR)
        );
        assert!(matches!(
            frame(PRIORITY, 0, 3, b"\0\0\0\x01\x10"),
            Ok(Frame::Priority { stream: 3, .. })
        ));
        assert_eq!(
            frame(RST_STREAM, 0, 5, b"\0\0\0\x08"),
            Ok(Frame::RstStream {
                stream: 5,
                reason: Reason::CANCEL
            })
        );
        assert_eq!(
            conn_err(frame(RST_STREAM, 0, 5, b"\0\0\x08")),
            Reason::FRAME_SIZE_ERROR
        );
        assert_eq!(
            conn_err(frame(RST_STREAM, 0, 0, b"\0\0\0\x08")),
            Reason::PROTOCOL_ERROR
        );
        assert_eq!(
            frame(PING, 0, 0, b"abcdefgh"),
            Ok(Frame::Ping {
                ack: false,
                data: *b"abcdefgh"
            })
        );
        assert_eq!(
            conn_err(frame(PING, 0, 0, b"abcdefg")),
            Reason::FRAME_SIZE_ERROR
        );
        assert_eq!(
            conn_err(frame(PING, 0, 1, b"abcdefgh")),
            Reason::PROTOCOL_ERROR
        );
        assert_eq!(
            frame(WINDOW_UPDATE, 0, 0, b"\x80\0\x01\0"),
            Ok(Frame::WindowUpdate {
                stream: 0,
                increment: 256
            })
        );
        assert_eq!(
            conn_err(frame(WINDOW_UPDATE, 0, 0, b"\0\0\0\0")),
            Reason::PROTOCOL_ERROR
        );
        assert_eq!(
            stream_err(frame(WINDOW_UPDATE, 0, 7, b"\0\0\0\0")),
            (7, Reason::PROTOCOL_ERROR)
        );
        assert_eq!(
            conn_err(frame(WINDOW_UPDATE, 0, 7, b"\0\0\x01")),
            Reason::FRAME_SIZE_ERROR
        );
        assert_eq!(
            frame(GOAWAY, 0, 0, b"\0\0\0\x05\0\0\0\x0bcalm"),
            Ok(Frame::GoAway {
                last_stream: 5,
                reason: Reason::ENHANCE_YOUR_CALM,
                debug: Bytes::from_static(b"calm")
            })
        );
        assert_eq!(
            conn_err(frame(GOAWAY, 0, 0, b"\0\0\0\x05")),
            Reason::FRAME_SIZE_ERROR
        );
        assert_eq!(
            conn_err(frame(PUSH_PROMISE, 0, 1, b"\0\0\0\x02")),
            Reason::PROTOCOL_ERROR
        );
        assert_eq!(
            frame(CONTINUATION, FLAG_END_HEADERS, 1, b"x"),
            Ok(Frame::Continuation {
                stream: 1,
                end_headers: true,
                fragment: Bytes::from_static(b"x")
            })
        );
        assert_eq!(
            conn_err(frame(CONTINUATION, 0, 0, b"x")),
            Reason::PROTOCOL_ERROR
        );
        assert_eq!(
            frame(0xfa, 0, 1, b"?"),
            Ok(Frame::Unknown {
                kind: 0xfa,
                stream: 1
            })
        );
    }

    #[test]
    fn settings_and_their_ranges() {
        let mut out = Vec::new();
        put_settings(
            &mut out,
            &[(SETTINGS_MAX_CONCURRENT_STREAMS, 100), (0x99, 7)],
        );
        let mut buf = BytesMut::from(&out[..]);
        let (h, p) = split(&mut buf, MIN_MAX_FRAME_SIZE).unwrap().unwrap();
        assert_eq!(
            Frame::parse(h, p),
            Ok(Frame::Settings(vec![
                (SETTINGS_MAX_CONCURRENT_STREAMS, 100),
                (0x99, 7)
            ]))
        );
        assert_eq!(frame(SETTINGS, FLAG_ACK, 0, b""), Ok(Frame::SettingsAck));
        assert_eq!(
            conn_err(frame(SETTINGS, FLAG_ACK, 0, b"\0")),
            Reason::FRAME_SIZE_ERROR
        );
        assert_eq!(
            conn_err(frame(SETTINGS, 0, 0, b"\0\x02\0\0\0")),
            Reason::FRAME_SIZE_ERROR
        );
        assert_eq!(conn_err(frame(SETTINGS, 0, 1, b"")), Reason::PROTOCOL_ERROR);
        let one = |id: u16, v: u32| {
            let mut p = id.to_be_bytes().to_vec();
            p.extend_from_slice(&v.to_be_bytes());
            frame(SETTINGS, 0, 0, &p)
        };
        assert_eq!(
            conn_err(one(SETTINGS_ENABLE_PUSH, 2)),
            Reason::PROTOCOL_ERROR
        );
        assert_eq!(
            conn_err(one(SETTINGS_ENABLE_CONNECT_PROTOCOL, 2)),
            Reason::PROTOCOL_ERROR
        );
        assert_eq!(
            conn_err(one(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 31)),
            Reason::FLOW_CONTROL_ERROR
        );
        assert!(one(SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW).is_ok());
        assert_eq!(
            conn_err(one(SETTINGS_MAX_FRAME_SIZE, 16383)),
            Reason::PROTOCOL_ERROR
        );
        assert_eq!(
            conn_err(one(SETTINGS_MAX_FRAME_SIZE, 1 << 24)),
            Reason::PROTOCOL_ERROR
        );
        assert!(one(SETTINGS_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE).is_ok());
    }

    #[test]
    fn headers_split_into_continuations() {
        let block: Vec<u8> = (0..40u8).collect();
        let mut out = Vec::new();
        put_headers(&mut out, 3, &block, true, 16);
        let mut buf = BytesMut::from(&out[..]);
        let mut frames = Vec::new();
        while let Some((h, p)) = split(&mut buf, 1 << 14).unwrap() {
            frames.push(Frame::parse(h, p).unwrap());
        }
        let mut joined = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            match f {
                Frame::Headers {
                    end_stream,
                    end_headers,
                    fragment,
                    ..
                } => {
                    assert_eq!(i, 0);
                    assert!(*end_stream && !*end_headers);
                    joined.extend_from_slice(fragment);
                }
                Frame::Continuation {
                    end_headers,
                    fragment,
                    ..
                } => {
                    assert_eq!(*end_headers, i == 2);
                    joined.extend_from_slice(fragment);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((frames.len(), joined), (3, block));
        // A small block is one HEADERS with END_HEADERS.
        let mut out = Vec::new();
        put_headers(&mut out, 1, b"\x88", false, 1 << 14);
        assert_eq!(out, b"\0\0\x01\x01\x04\0\0\0\x01\x88");
    }
}
