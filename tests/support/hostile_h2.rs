//! A client sending frames, good and bad, over HTTP/2 (for property tests of our server:
//! tests/http2_codec.rs against the connection state machine, tests/http2_native.rs against
//! the server over a socket). Each run is a list of [`Step`]s; [`Client`] turns them into
//! bytes, keeping to the rules or not.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_types
)]

use std::collections::{HashMap, HashSet};

use bytes::BytesMut;
use proptest::prelude::*;
use tracegate::listen::http2::frame::{self, Frame};

/// Which stream a step's frame is on, resolved as the steps run: a new one (above every
/// id so far), one opened before (the k-th most recent), or any id at all.
#[derive(Clone, Copy, Debug)]
pub enum On {
    New,
    Opened(usize),
    Id(u32),
}

pub fn on() -> impl Strategy<Value = On> {
    prop_oneof![
        3 => Just(On::New),
        6 => (0usize..4).prop_map(On::Opened),
        1 => prop_oneof![Just(0u32), Just(2), 1u32..40, Just(0x7fff_ffff)].prop_map(On::Id),
    ]
}

/// One step of a hostile client, for `any_frames_leave_the_connection_sound`.
#[derive(Clone, Debug)]
pub enum Step {
    /// Any frame: a type (known or not), flags, a payload.
    Raw {
        kind: u8,
        flags: u8,
        on: On,
        payload: Vec<u8>,
    },
    /// A header block (literal fields, no table), whole or in two frames: a request's,
    /// or trailers on a stream opened before. Its fields are picked from good and bad ones.
    Headers {
        on: On,
        end_stream: bool,
        fields: Vec<u8>,
        continued: bool,
    },
    /// DATA, maybe padded.
    Data {
        on: On,
        end_stream: bool,
        len: usize,
        pad: Option<u8>,
    },
    WindowUpdate {
        on: On,
        increment: u32,
    },
    Settings(Vec<(u16, u32)>),
    Ping,
    Reset {
        on: On,
    },
    /// What the server's side does between reads: answer a request it holds (a head, then
    /// as much of a body as the windows allow), or consume the body bytes it was given.
    Answer {
        pick: usize,
        body: usize,
        end: bool,
    },
    Release {
        pick: usize,
    },
}

pub fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (0u8..12, any::<u8>(), on(), prop::collection::vec(any::<u8>(), 0..24))
            .prop_map(|(kind, flags, on, payload)| Step::Raw { kind, flags, on, payload }),
        5 => (
            prop_oneof![3 => Just(On::New), 2 => on()],
            any::<bool>(),
            // Mostly good fields (x-a, cookie, x-b), now and then any of them.
            prop::collection::vec(prop_oneof![2 => Just(10u8), 1 => Just(12), 1 => Just(13), 2 => 0u8..16], 0..5),
            any::<bool>(),
        )
            .prop_map(|(on, end_stream, fields, continued)| Step::Headers { on, end_stream, fields, continued }),
        5 => (on(), any::<bool>(), prop_oneof![0usize..20, Just(16_384), Just(40_000), Just(70_000)], prop::option::weighted(0.2, any::<u8>()))
            .prop_map(|(on, end_stream, len, pad)| Step::Data { on, end_stream, len, pad }),
        2 => (on(), prop_oneof![4 => 1u32..100_000, 1 => Just(0u32), 1 => Just(frame::MAX_WINDOW)])
            .prop_map(|(on, increment)| Step::WindowUpdate { on, increment }),
        1 => prop::collection::vec((1u16..10, prop_oneof![Just(0u32), Just(1), 0u32..70_000, Just(1 << 14), Just(frame::MAX_WINDOW), Just(u32::MAX)]), 0..3)
            .prop_map(Step::Settings),
        1 => Just(Step::Ping),
        1 => on().prop_map(|on| Step::Reset { on }),
        5 => (0usize..8, prop_oneof![Just(0usize), 1usize..100, Just(100_000)], any::<bool>())
            .prop_map(|(pick, body, end)| Step::Answer { pick, body, end }),
        4 => (0usize..8).prop_map(|pick| Step::Release { pick }),
    ]
}

/// An HPACK literal field without indexing, lengths under 127, no Huffman.
pub fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0x00);
    block.push(name.len() as u8);
    block.extend_from_slice(name.as_bytes());
    block.push(value.len() as u8);
    block.extend_from_slice(value.as_bytes());
}

/// A header block: the four fields a GET needs (one left out now and then; none when
/// `picks` starts with 15, for trailers), then picks from good and bad fields.
pub fn header_block(picks: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    let first = picks.first().copied().unwrap_or(0);
    if first != 15 {
        let required = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/api/p"),
            (":authority", "a.test"),
        ];
        for (i, (n, v)) in required.into_iter().enumerate() {
            if usize::from(first) != i + 11 {
                literal(&mut b, n, v);
            }
        }
    }
    for p in picks {
        let (n, v) = match p {
            0 => ("content-length", "0"),
            1 => ("content-length", "5"),
            2 => ("content-length", "x"),
            3 => ("te", "trailers"),
            4 => ("connection", "close"),
            5 => ("Upper", "case"),
            6 => (":method", "POST"),
            7 => (":protocol", "websocket"),
            8 => (":method", "CONNECT"),
            9 => ("host", "b.test"),
            10 => ("x-a", "1"),
            11 => (":status", "200"),
            12 => ("cookie", "a=1"),
            _ => ("x-b", "2"),
        };
        literal(&mut b, n, v);
    }
    b
}

pub fn put_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    frame::put_head(out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
}

/// The client's side of a run: the ids it opened (newest last), those it may no longer
/// send on, and the room our windows leave it. A well-behaved client (`hostile` false)
/// keeps to the rules: no frames on streams it ended or saw reset, DATA within the
/// windows, settings in range; a hostile one sends whatever the step says.
pub struct Client {
    pub hostile: bool,
    opened: Vec<u32>,
    closed: HashSet<u32>,
    pub conn_window: i64,
    pub windows: HashMap<u32, i64>,
    stream_window: i64,
}

impl Client {
    pub fn new(hostile: bool, stream_window: i64) -> Client {
        Client {
            hostile,
            opened: Vec::new(),
            closed: Default::default(),
            conn_window: 65_535,
            windows: HashMap::new(),
            stream_window,
        }
    }

    /// The stream a step's frame goes on. A well-behaved client opens streams only with
    /// HEADERS (`opens`), and sends other frames only on streams it may still send on
    /// (`None`: it has none).
    fn id(&mut self, on: On, opens: bool) -> Option<u32> {
        let new = |c: &mut Client| {
            let id = c.opened.last().map_or(1, |l| l + 2);
            c.opened.push(id);
            Some(id)
        };
        // The k-th newest of `ids`, if any.
        let pick =
            |ids: &[u32], k: usize| (!ids.is_empty()).then(|| ids[ids.len() - 1 - k % ids.len()]);
        if self.hostile {
            return match on {
                On::New => new(self),
                On::Id(id) => Some(id),
                On::Opened(k) => pick(&self.opened, k).or(Some(1)),
            };
        }
        let open: Vec<u32> = self
            .opened
            .iter()
            .copied()
            .filter(|id| !self.closed.contains(id))
            .collect();
        match on {
            On::New if opens => new(self),
            On::Opened(k) => pick(&open, k).or_else(|| if opens { new(self) } else { None }),
            _ => pick(&open, 0).or_else(|| if opens { new(self) } else { None }),
        }
    }

    /// A DATA frame's payload, `n` bytes on `id`: flow control counts all of it, padding
    /// too, against the stream's window and the connection's.
    fn spend(&mut self, id: u32, n: usize) {
        self.conn_window -= n as i64;
        *self.windows.entry(id).or_insert(self.stream_window) -= n as i64;
    }

    fn window(&self, id: u32) -> i64 {
        self.windows
            .get(&id)
            .copied()
            .unwrap_or(self.stream_window)
            .min(self.conn_window)
    }

    /// The client's bytes for a step.
    pub fn bytes(&mut self, step: &Step) -> Vec<u8> {
        let mut out = Vec::new();
        match *step {
            Step::Raw {
                kind,
                flags,
                on,
                ref payload,
            } => {
                if self.hostile {
                    let id = self.id(on, true).unwrap_or(1);
                    if kind == frame::DATA {
                        // On any stream, open or not (RFC 9113 §6.9), and we give it back.
                        self.spend(id, payload.len());
                    }
                    put_frame(&mut out, kind, flags, id, payload);
                }
            }
            Step::Headers {
                on,
                end_stream,
                ref fields,
                continued,
            } => {
                let Some(id) = self.id(on, true) else {
                    return out;
                };
                // Trailers end the stream: a well-behaved client sends them with END_STREAM.
                let end_stream = end_stream || (!self.hostile && self.opened.last() != Some(&id));
                let block = header_block(fields);
                let end = if end_stream {
                    frame::FLAG_END_STREAM
                } else {
                    0
                };
                if continued {
                    let (a, b) = block.split_at(block.len() / 2);
                    put_frame(&mut out, frame::HEADERS, end, id, a);
                    put_frame(
                        &mut out,
                        frame::CONTINUATION,
                        frame::FLAG_END_HEADERS,
                        id,
                        b,
                    );
                } else {
                    put_frame(
                        &mut out,
                        frame::HEADERS,
                        end | frame::FLAG_END_HEADERS,
                        id,
                        &block,
                    );
                }
                if end_stream {
                    self.closed.insert(id);
                }
            }
            Step::Data {
                on,
                end_stream,
                len,
                pad,
            } => {
                let Some(id) = self.id(on, false) else {
                    return out;
                };
                let mut pad = pad.map(|p| if self.hostile { p } else { p % 64 });
                let mut len = len;
                if !self.hostile {
                    let room = self.window(id).max(0) as usize;
                    if pad.is_some_and(|p| usize::from(p) + 1 > room) {
                        pad = None;
                    }
                    len = len.min(room - pad.map_or(0, |p| usize::from(p) + 1));
                }
                // Frames of at most 16,000 bytes (our SETTINGS_MAX_FRAME_SIZE is 16 KiB).
                let mut left = len;
                loop {
                    let n = left.min(16_000);
                    left -= n;
                    let mut payload = Vec::new();
                    let mut flags = if end_stream && left == 0 {
                        frame::FLAG_END_STREAM
                    } else {
                        0
                    };
                    if let Some(p) = pad {
                        flags |= frame::FLAG_PADDED;
                        payload.push(p);
                    }
                    payload.resize(payload.len() + n, b'd');
                    // The padding as announced; a hostile client's is short now and then.
                    payload.resize(payload.len() + usize::from(pad.unwrap_or(0)) % 64, 0);
                    self.spend(id, payload.len());
                    put_frame(&mut out, frame::DATA, flags, id, &payload);
                    // Padding goes with the first frame only.
                    pad = None;
                    if left == 0 {
                        break;
                    }
                }
                if end_stream {
                    self.closed.insert(id);
                }
            }
            Step::WindowUpdate { on, increment } => {
                let (id, increment) = if self.hostile {
                    (self.id(on, false).unwrap_or(0), increment)
                } else if matches!(on, On::Id(_)) {
                    (0, increment.clamp(1, 100_000))
                } else {
                    let Some(id) = self.id(on, false) else {
                        return out;
                    };
                    (id, increment.clamp(1, 100_000))
                };
                put_frame(
                    &mut out,
                    frame::WINDOW_UPDATE,
                    0,
                    id,
                    &increment.to_be_bytes(),
                );
            }
            Step::Settings(ref params) => {
                let mut payload = Vec::new();
                for &(id, value) in params {
                    let value = match id {
                        _ if self.hostile => value,
                        frame::SETTINGS_ENABLE_PUSH | frame::SETTINGS_ENABLE_CONNECT_PROTOCOL => {
                            value % 2
                        }
                        frame::SETTINGS_INITIAL_WINDOW_SIZE => value % (1 << 20),
                        frame::SETTINGS_MAX_FRAME_SIZE => (1 << 14) + value % (1 << 20),
                        _ => value,
                    };
                    payload.extend_from_slice(&id.to_be_bytes());
                    payload.extend_from_slice(&value.to_be_bytes());
                }
                put_frame(&mut out, frame::SETTINGS, 0, 0, &payload);
            }
            Step::Ping => put_frame(&mut out, frame::PING, 0, 0, &[7; 8]),
            Step::Reset { on } => {
                if let Some(id) = self.id(on, false) {
                    put_frame(&mut out, frame::RST_STREAM, 0, id, &8u32.to_be_bytes());
                    self.closed.insert(id);
                }
            }
            Step::Answer { .. } | Step::Release { .. } => {}
        }
        out
    }

    /// Reads our frames in `out`: each must parse; WINDOW_UPDATEs give the client room,
    /// RST_STREAMs close streams for it. Returns the last frame.
    pub fn read_ours(&mut self, out: &[u8]) -> Option<Frame> {
        let mut buf = BytesMut::from(out);
        let mut last = None;
        while !buf.is_empty() {
            let (head, payload) = frame::split(&mut buf, frame::MAX_MAX_FRAME_SIZE)
                .expect("our frame's head")
                .expect("our frame whole");
            let f = Frame::parse(head, payload).expect("our frame parses");
            match f {
                Frame::WindowUpdate {
                    stream: 0,
                    increment,
                } => self.conn_window += i64::from(increment),
                Frame::WindowUpdate { stream, increment } => {
                    *self.windows.entry(stream).or_insert(self.stream_window) +=
                        i64::from(increment);
                }
                Frame::RstStream { stream, .. } => {
                    self.closed.insert(stream);
                }
                _ => {}
            }
            last = Some(f);
        }
        last
    }
}
