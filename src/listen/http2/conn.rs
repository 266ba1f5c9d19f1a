//! An HTTP/2 server connection's state, without I/O: bytes the client sent go in
//! ([`Conn::recv`]), what the request side needs comes out as [`Event`]s, and the frames
//! to send (our SETTINGS, ACKs, WINDOW_UPDATEs, resets, GOAWAY, and the responses the
//! caller hands in) collect in [`Conn::out`] for the caller to write.
//!
//! It owns the rules that need the connection's state (RFC 9113): stream ids and states,
//! header blocks and their CONTINUATIONs, flow control both ways, settings, and the limits
//! that keep a client from making the server work for nothing: a header block no larger
//! than the header list we allow, at most [`MAX_CONTINUATIONS`] frames, resets of
//! unanswered streams paid for by answered ones (rapid reset), and at most
//! [`MAX_PENDING_OUT`] bytes of frames queued while the client does not read.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::frame::{self, Frame, FrameError, Reason};
use super::hpack::{self, Decoder, Encoder, Field};
use super::request::{self, Head};
use crate::forward::Stamp;
use crate::http1::Fields;

/// The client's first bytes (RFC 9113, 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The most frames one header block may take (HEADERS and its CONTINUATIONs). Empty
/// CONTINUATIONs cost nothing in bytes, so the size cap alone would not stop them.
pub const MAX_CONTINUATIONS: usize = 64;
/// The most bytes of frames that may wait to be written: a client that sends PINGs or
/// SETTINGS and reads no answers is cut off here.
pub const MAX_PENDING_OUT: usize = 1 << 20;
/// How many of our resets [`Conn`] remembers (see `reset_lately`).
const RESETS_REMEMBERED: usize = 32;
/// HTTP/2's initial window, before SETTINGS change it.
const DEFAULT_WINDOW: u32 = 65_535;

/// What this server announces and enforces.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub max_concurrent_streams: u32,
    /// Each stream's receive window (SETTINGS_INITIAL_WINDOW_SIZE).
    pub stream_window: u32,
    /// The connection's receive window.
    pub conn_window: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: decoded fields, 32 bytes each counted.
    pub max_header_list: u32,
    /// Resets of streams not yet answered that a client may run ahead of its answered
    /// streams before the connection ends with ENHANCE_YOUR_CALM.
    pub reset_budget: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_concurrent_streams: 100,
            stream_window: 1 << 20,
            conn_window: 1 << 20,
            max_header_list: 64 << 10,
            reset_budget: 100,
        }
    }
}

/// What the request side learns from the client.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a request's head is most events; boxed, it was an allocation and a free a \
              request to save copying ~200 bytes into the reused events Vec and out again"
)]
pub enum Event {
    /// A new request. `end_stream`: it has no body.
    Request {
        stream: u32,
        head: Head,
        end_stream: bool,
    },
    /// Request body data. The caller gives the bytes back with [`Conn::release`] once
    /// they are consumed, which reopens the window.
    Data {
        stream: u32,
        data: Bytes,
        end_stream: bool,
    },
    /// The request body's trailers; the body ends with them.
    Trailers { stream: u32, fields: HeaderMap },
    /// The stream ended early: reset by the client, or by us for breaking a rule (the
    /// RST_STREAM is queued already). Its request, if any, is to be dropped.
    Reset { stream: u32, reason: Reason },
    /// The client will open no more streams past `last_stream`.
    GoAway { last_stream: u32, reason: Reason },
}

/// The connection must end: a GOAWAY with the reason is queued in `out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnError {
    pub reason: Reason,
    pub why: &'static str,
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HTTP/2 connection error {}: {}",
            self.reason.name(),
            self.why
        )
    }
}

impl std::error::Error for ConnError {}

#[derive(Debug)]
struct Stream {
    /// The client may still send on it (not half-closed remote).
    recv_open: bool,
    /// We may still send on it (not half-closed local).
    send_open: bool,
    /// What the client may still send us on this stream.
    recv_window: i64,
    /// Consumed by the caller since our last WINDOW_UPDATE for the stream.
    released: u32,
    /// Delivered in [`Event::Data`] and not yet released: given back to the connection's
    /// window if the stream goes first.
    unreleased: u32,
    /// What we may still send on it.
    send_window: i64,
    /// `content-length`, and the DATA bytes so far.
    content_length: Option<u64>,
    received: u64,
}

/// A header block being received: HEADERS without END_HEADERS, awaiting CONTINUATIONs.
#[derive(Debug)]
struct Partial {
    stream: u32,
    end_stream: bool,
    self_dependent: bool,
    block: BytesMut,
    frames: usize,
}

#[derive(Debug)]
pub struct Conn {
    config: Config,
    decoder: Decoder,
    encoder: Encoder,
    streams: super::StreamMap<Stream>,
    /// The highest stream id the client has opened.
    last_stream: u32,
    partial: Option<Partial>,
    recv_window: i64,
    /// Consumed since our last connection WINDOW_UPDATE.
    released: u32,
    send_window: i64,
    /// The client's settings.
    peer_stream_window: u32,
    peer_max_frame: u32,
    reset_budget: u32,
    /// We sent GOAWAY: streams past `last_stream` are refused.
    going_away: bool,
    /// The streams we reset last: frames the client sent before it saw the reset are
    /// ignored on these, an error on other closed streams.
    reset_lately: std::collections::VecDeque<u32>,
    /// A header block's decoded fields, kept between blocks (no allocation a request).
    fields: Vec<Field>,
    /// The `:authority` this connection's last request named, parsed.
    authority: request::LastAuthority,
    /// An answer's header block being encoded, kept between answers.
    block: Vec<u8>,
    pub out: Vec<u8>,
}

impl Conn {
    /// A connection whose preface has been read; our SETTINGS (and the connection window
    /// beyond the default) are queued.
    pub fn new(config: Config) -> Conn {
        let mut out = Vec::with_capacity(64);
        frame::put_settings(
            &mut out,
            &[
                (
                    frame::SETTINGS_MAX_CONCURRENT_STREAMS,
                    config.max_concurrent_streams,
                ),
                (frame::SETTINGS_INITIAL_WINDOW_SIZE, config.stream_window),
                (frame::SETTINGS_MAX_HEADER_LIST_SIZE, config.max_header_list),
                (frame::SETTINGS_ENABLE_PUSH, 0),
                // Extended CONNECT (RFC 8441): WebSocket over HTTP/2.
                (frame::SETTINGS_ENABLE_CONNECT_PROTOCOL, 1),
            ],
        );
        if config.conn_window > DEFAULT_WINDOW {
            frame::put_window_update(&mut out, 0, config.conn_window - DEFAULT_WINDOW);
        }
        Conn {
            decoder: Decoder::new(4096, config.max_header_list as usize),
            encoder: Encoder::new(),
            streams: super::IdHash::map(),
            last_stream: 0,
            partial: None,
            recv_window: i64::from(config.conn_window.max(DEFAULT_WINDOW)),
            released: 0,
            send_window: i64::from(DEFAULT_WINDOW),
            peer_stream_window: DEFAULT_WINDOW,
            peer_max_frame: frame::MIN_MAX_FRAME_SIZE,
            reset_budget: config.reset_budget,
            going_away: false,
            reset_lately: std::collections::VecDeque::new(),
            fields: Vec::new(),
            authority: request::LastAuthority::default(),
            block: Vec::new(),
            config,
            out,
        }
    }

    /// Checks the client's preface at the front of `buf` and takes it off: `Ok(false)`
    /// until all 24 bytes are there.
    pub fn preface(buf: &mut BytesMut) -> Result<bool, ConnError> {
        let n = buf.len().min(PREFACE.len());
        if buf[..n] != PREFACE[..n] {
            return Err(ConnError {
                reason: Reason::PROTOCOL_ERROR,
                why: "not the HTTP/2 preface",
            });
        }
        if n < PREFACE.len() {
            return Ok(false);
        }
        let _ = buf.split_to(PREFACE.len());
        Ok(true)
    }

    /// Streams open in either direction.
    pub fn active(&self) -> usize {
        self.streams.len()
    }

    /// Processes every whole frame in `buf`. On an error the connection must end once
    /// `out` (which holds the GOAWAY) is written.
    pub fn recv(&mut self, buf: &mut BytesMut, events: &mut Vec<Event>) -> Result<(), ConnError> {
        loop {
            let (head, payload) = match frame::split(buf, frame::MIN_MAX_FRAME_SIZE) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                // `split` refuses only whole frames too large for the connection (it
                // consumes nothing then): the connection ends.
                Err(FrameError::Connection(reason, why) | FrameError::Stream(_, reason, why)) => {
                    return Err(self.fail(reason, why));
                }
            };
            match Frame::parse(head, payload) {
                Ok(f) => {
                    if let Err(e) = self.frame(f, events) {
                        return Err(self.fail(e.reason, e.why));
                    }
                }
                Err(FrameError::Connection(reason, why)) => return Err(self.fail(reason, why)),
                Err(FrameError::Stream(stream, reason, why)) => {
                    if self.partial.is_some() {
                        return Err(self.fail(Reason::PROTOCOL_ERROR, why));
                    }
                    // A stream the client has not opened is idle, and RST_STREAM must not
                    // be sent on an idle stream (RFC 9113, 5.1): a PRIORITY in error there
                    // (its length, or the stream depending on itself) ends the connection,
                    // as nghttp2 does, like any other frame's error on such a stream.
                    if stream > self.last_stream {
                        return Err(self.fail(reason, why));
                    }
                    self.reset(stream, reason, events);
                }
            }
            if self.out.len() > MAX_PENDING_OUT {
                return Err(self.fail(Reason::ENHANCE_YOUR_CALM, "answers not read"));
            }
        }
    }

    /// Queues GOAWAY for a connection error.
    fn fail(&mut self, reason: Reason, why: &'static str) -> ConnError {
        frame::put_goaway(&mut self.out, self.last_stream, reason, why.as_bytes());
        self.going_away = true;
        ConnError { reason, why }
    }

    fn frame(&mut self, frame: Frame, events: &mut Vec<Event>) -> Result<(), ConnError> {
        let err = |reason, why| Err(ConnError { reason, why });
        // Inside a header block only its CONTINUATIONs may come (RFC 9113, 6.10).
        if let Some(p) = &self.partial
            && !matches!(frame, Frame::Continuation { stream, .. } if stream == p.stream)
        {
            return err(Reason::PROTOCOL_ERROR, "frame inside a header block");
        }
        match frame {
            Frame::Headers {
                stream,
                end_stream,
                end_headers,
                priority,
                fragment,
            } => {
                if fragment.len() > self.config.max_header_list as usize {
                    return err(Reason::ENHANCE_YOUR_CALM, "header block too large");
                }
                let self_dependent = priority.is_some_and(|p| p.depends_on == stream);
                if !end_headers {
                    let mut block = BytesMut::with_capacity(fragment.len() * 2);
                    block.extend_from_slice(&fragment);
                    self.partial = Some(Partial {
                        stream,
                        end_stream,
                        self_dependent,
                        block,
                        frames: 1,
                    });
                    return Ok(());
                }
                self.header_block(stream, end_stream, self_dependent, fragment, events)
            }
            Frame::Continuation {
                end_headers,
                fragment,
                ..
            } => {
                let Some(p) = self.partial.as_mut() else {
                    return err(Reason::PROTOCOL_ERROR, "CONTINUATION without HEADERS");
                };
                p.frames += 1;
                p.block.extend_from_slice(&fragment);
                if p.frames > MAX_CONTINUATIONS
                    || p.block.len() > self.config.max_header_list as usize
                {
                    return err(Reason::ENHANCE_YOUR_CALM, "header block too large");
                }
                if !end_headers {
                    return Ok(());
                }
                let Some(p) = self.partial.take() else {
                    return Ok(());
                };
                self.header_block(
                    p.stream,
                    p.end_stream,
                    p.self_dependent,
                    p.block.freeze(),
                    events,
                )
            }
            Frame::Data {
                stream,
                end_stream,
                data,
                flow_len,
            } => self.data(stream, end_stream, data, flow_len, events),
            Frame::Priority { .. } | Frame::Unknown { .. } => Ok(()),
            Frame::RstStream { stream, reason } => {
                if stream > self.last_stream {
                    return err(Reason::PROTOCOL_ERROR, "RST_STREAM on an idle stream");
                }
                let Some(s) = self.streams.remove(&stream) else {
                    return Ok(());
                };
                self.give_back(i64::from(s.unreleased));
                events.push(Event::Reset { stream, reason });
                if s.send_open {
                    // Reset before its answer was done: paid for from the budget.
                    if self.reset_budget == 0 {
                        return err(Reason::ENHANCE_YOUR_CALM, "too many streams reset");
                    }
                    self.reset_budget -= 1;
                }
                Ok(())
            }
            Frame::Settings(params) => {
                for (id, value) in params {
                    match id {
                        frame::SETTINGS_HEADER_TABLE_SIZE => self.encoder.table_size_changed(),
                        frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                            let delta = i64::from(value) - i64::from(self.peer_stream_window);
                            for s in self.streams.values_mut() {
                                s.send_window += delta;
                                if s.send_window > i64::from(frame::MAX_WINDOW) {
                                    return err(Reason::FLOW_CONTROL_ERROR, "window past 2^31-1");
                                }
                            }
                            self.peer_stream_window = value;
                        }
                        frame::SETTINGS_MAX_FRAME_SIZE => self.peer_max_frame = value,
                        _ => {}
                    }
                }
                frame::put_settings_ack(&mut self.out);
                Ok(())
            }
            Frame::SettingsAck => Ok(()),
            Frame::Ping { ack, data } => {
                if !ack {
                    frame::put_ping_ack(&mut self.out, &data);
                }
                Ok(())
            }
            Frame::GoAway {
                last_stream,
                reason,
                ..
            } => {
                events.push(Event::GoAway {
                    last_stream,
                    reason,
                });
                Ok(())
            }
            Frame::WindowUpdate { stream, increment } => {
                let inc = i64::from(increment);
                if stream == 0 {
                    self.send_window += inc;
                    if self.send_window > i64::from(frame::MAX_WINDOW) {
                        return err(Reason::FLOW_CONTROL_ERROR, "window past 2^31-1");
                    }
                    return Ok(());
                }
                if stream > self.last_stream {
                    return err(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream");
                }
                let overflow = self.streams.get_mut(&stream).is_some_and(|s| {
                    s.send_window += inc;
                    s.send_window > i64::from(frame::MAX_WINDOW)
                });
                if overflow {
                    self.reset(stream, Reason::FLOW_CONTROL_ERROR, events);
                }
                Ok(())
            }
        }
    }

    /// A whole header block: a new request, or a request's trailers. The block is decoded
    /// whatever becomes of the stream, to keep HPACK's table in step with the client's.
    fn header_block(
        &mut self,
        stream: u32,
        end_stream: bool,
        self_dependent: bool,
        block: Bytes,
        events: &mut Vec<Event>,
    ) -> Result<(), ConnError> {
        let fields = &mut self.fields;
        fields.clear();
        let too_large = match self.decoder.decode(&block, |f| fields.push(f)) {
            Ok(()) => false,
            // Over the list size: the table is intact, only this stream is refused.
            Err(hpack::Error::TooLarge) => true,
            Err(_) => {
                return Err(ConnError {
                    reason: Reason::COMPRESSION_ERROR,
                    why: "header block does not decode",
                });
            }
        };
        if stream <= self.last_stream {
            return self.trailers(stream, end_stream, too_large, events);
        }
        if stream % 2 == 0 {
            return Err(ConnError {
                reason: Reason::PROTOCOL_ERROR,
                why: "even stream id from a client",
            });
        }
        self.last_stream = stream;
        let refused = if self.going_away
            || self.streams.len() >= self.config.max_concurrent_streams as usize
        {
            Some(Reason::REFUSED_STREAM)
        } else if too_large || self_dependent {
            Some(Reason::PROTOCOL_ERROR)
        } else {
            None
        };
        let head = match refused {
            Some(reason) => Err(reason),
            None => match request::parts_after(self.fields.drain(..), &mut self.authority) {
                Ok(h) if end_stream && h.content_length.is_some_and(|n| n != 0) => {
                    Err(Reason::PROTOCOL_ERROR)
                }
                Ok(h) => Ok(h),
                Err(_) => Err(Reason::PROTOCOL_ERROR),
            },
        };
        let head = match head {
            Ok(h) => h,
            Err(reason) => {
                frame::put_rst_stream(&mut self.out, stream, reason);
                self.note_reset(stream);
                return Ok(());
            }
        };
        self.streams.insert(
            stream,
            Stream {
                recv_open: !end_stream,
                send_open: true,
                recv_window: i64::from(self.config.stream_window),
                released: 0,
                unreleased: 0,
                send_window: i64::from(self.peer_stream_window),
                content_length: head.content_length,
                received: 0,
            },
        );
        events.push(Event::Request {
            stream,
            head,
            end_stream,
        });
        Ok(())
    }

    /// A header block on a stream already open: its request's trailers.
    fn trailers(
        &mut self,
        stream: u32,
        end_stream: bool,
        too_large: bool,
        events: &mut Vec<Event>,
    ) -> Result<(), ConnError> {
        let Some(s) = self.streams.get_mut(&stream) else {
            // A new stream's id must be above every earlier one (RFC 9113, 5.1.1).
            return self.on_closed(stream, Reason::PROTOCOL_ERROR, "HEADERS on a closed stream");
        };
        if !s.recv_open {
            self.reset(stream, Reason::STREAM_CLOSED, events);
            return Ok(());
        }
        s.recv_open = false;
        let length_ok = s.content_length.is_none_or(|n| n == s.received);
        match trailer_map(self.fields.drain(..)) {
            Some(fields) if end_stream && length_ok && !too_large => {
                events.push(Event::Trailers { stream, fields });
                self.close_if_done(stream);
            }
            _ => self.reset(stream, Reason::PROTOCOL_ERROR, events),
        }
        Ok(())
    }

    fn data(
        &mut self,
        stream: u32,
        end_stream: bool,
        data: Bytes,
        flow_len: usize,
        events: &mut Vec<Event>,
    ) -> Result<(), ConnError> {
        let flow = flow_len as i64;
        self.recv_window -= flow;
        if self.recv_window < 0 {
            return Err(ConnError {
                reason: Reason::FLOW_CONTROL_ERROR,
                why: "DATA past the connection window",
            });
        }
        if stream > self.last_stream {
            return Err(ConnError {
                reason: Reason::PROTOCOL_ERROR,
                why: "DATA on an idle stream",
            });
        }
        // Padding is nobody's to consume: given back at once.
        let padding = (flow_len - data.len()) as i64;
        let broken = match self.streams.get_mut(&stream) {
            // Closed: only the connection window counts.
            None => {
                self.give_back(flow);
                return self.on_closed(stream, Reason::STREAM_CLOSED, "DATA on a closed stream");
            }
            Some(s) if !s.recv_open => Some((Reason::STREAM_CLOSED, flow)),
            Some(s) => {
                s.recv_window -= flow;
                s.received += data.len() as u64;
                s.unreleased += data.len() as u32;
                // Broken now: this data is in `unreleased`, which the reset gives back.
                if s.recv_window < 0 {
                    Some((Reason::FLOW_CONTROL_ERROR, padding))
                } else if s
                    .content_length
                    .is_some_and(|n| s.received > n || (end_stream && s.received != n))
                {
                    Some((Reason::PROTOCOL_ERROR, padding))
                } else {
                    s.recv_open = !end_stream;
                    None
                }
            }
        };
        if let Some((reason, give)) = broken {
            self.give_back(give);
            self.reset(stream, reason, events);
            return Ok(());
        }
        if padding > 0 {
            self.credit(stream, padding as u32);
        }
        events.push(Event::Data {
            stream,
            data,
            end_stream,
        });
        self.close_if_done(stream);
        Ok(())
    }

    /// `n` bytes of a stream's request body were consumed: the client may send them
    /// again. WINDOW_UPDATEs go out once half a window is consumed. Bytes of a stream that
    /// is gone were given back when it went.
    pub fn release(&mut self, stream: u32, n: usize) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        let n = (n as u32).min(s.unreleased);
        s.unreleased -= n;
        self.credit(stream, n);
    }

    /// Gives `n` bytes back to the stream's window (while it still receives) and the
    /// connection's, announcing them once half a window has built up.
    fn credit(&mut self, stream: u32, n: u32) {
        let half = self.config.stream_window / 2;
        let mut update = None;
        if let Some(s) = self.streams.get_mut(&stream)
            && s.recv_open
        {
            s.recv_window += i64::from(n);
            s.released += n;
            if s.released >= half {
                update = Some(s.released);
                s.released = 0;
            }
        }
        if let Some(inc) = update {
            frame::put_window_update(&mut self.out, stream, inc);
        }
        self.give_back(i64::from(n));
    }

    /// Connection window given back.
    fn give_back(&mut self, n: i64) {
        if n <= 0 {
            return;
        }
        self.recv_window += n;
        self.released += n as u32;
        if self.released >= self.config.conn_window.max(DEFAULT_WINDOW) / 2 {
            frame::put_window_update(&mut self.out, 0, self.released);
            self.released = 0;
        }
    }

    /// Resets a stream (queues RST_STREAM) and tells the request side.
    pub fn reset(&mut self, stream: u32, reason: Reason, events: &mut Vec<Event>) {
        frame::put_rst_stream(&mut self.out, stream, reason);
        self.note_reset(stream);
        if let Some(s) = self.streams.remove(&stream) {
            self.give_back(i64::from(s.unreleased));
            events.push(Event::Reset { stream, reason });
        }
    }

    fn note_reset(&mut self, stream: u32) {
        if self.reset_lately.len() == RESETS_REMEMBERED {
            self.reset_lately.pop_front();
        }
        self.reset_lately.push_back(stream);
    }

    /// A frame on a stream no longer open: ignored if we reset it lately (it was in flight),
    /// else the client broke the rules (RFC 9113, 5.1).
    fn on_closed(&self, stream: u32, reason: Reason, what: &'static str) -> Result<(), ConnError> {
        if self.reset_lately.contains(&stream) {
            Ok(())
        } else {
            Err(ConnError { reason, why: what })
        }
    }

    /// Stops taking new streams: GOAWAY with the last stream we will serve.
    pub fn go_away(&mut self, reason: Reason) {
        if !self.going_away {
            frame::put_goaway(&mut self.out, self.last_stream, reason, b"");
            self.going_away = true;
        }
    }

    /// The response's head: `:status` and the fields (connection-specific ones left out,
    /// as HTTP/2 forbids them).
    pub fn send_headers<'a>(
        &mut self,
        stream: u32,
        status: u16,
        fields: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
        end_stream: bool,
    ) {
        let mut block = self.begin_block(status);
        self.put_map(fields, Stamp::default(), &mut block);
        self.end_block(stream, block, end_stream);
    }

    /// An answer's head: `:status`, `extra` (`date`, a length), the answer's fields (in
    /// its map, or as an HTTP/1.1 upstream wrote them, hop-by-hop ones left out), and the
    /// `stamp`'s in place of any of the same names.
    pub fn send_answer(
        &mut self,
        stream: u32,
        status: u16,
        fields: Fields<'_>,
        stamp: Stamp<'_>,
        extra: &[(&str, &[u8])],
        end_stream: bool,
    ) {
        let mut block = self.begin_block(status);
        for (name, value) in extra {
            self.encoder.field(name, value, false, &mut block);
        }
        match fields {
            Fields::Map(map) => self.put_map(map, stamp, &mut block),
            Fields::Raw(raw) => {
                let covers = stamp.may_cover(raw.names);
                for (name, value) in raw.pairs() {
                    let covered = covers && stamp.covers_raw(name);
                    if !name.is_empty() && !covered {
                        self.encoder.field_any_case(name, value, &mut block);
                    }
                }
            }
        }
        // Never indexed, as the map's values of them were (`context::unique_value`): a
        // value that never repeats has no place in any peer's table on the way.
        stamp.each(|name, value| self.encoder.field(name.as_str(), value, true, &mut block));
        self.end_block(stream, block, end_stream);
    }

    fn begin_block(&mut self, status: u16) -> Vec<u8> {
        let mut block = std::mem::take(&mut self.block);
        block.clear();
        self.encoder.begin(&mut block);
        self.encoder.status(status, &mut block);
        block
    }

    /// A map's fields but the connection-specific ones and those `stamp` covers.
    fn put_map<'a>(
        &mut self,
        fields: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
        stamp: Stamp<'_>,
        block: &mut Vec<u8>,
    ) {
        for (name, value) in fields {
            if request::is_connection_specific(name) || stamp.covers(name) {
                continue;
            }
            self.encoder
                .field(name.as_str(), value.as_bytes(), value.is_sensitive(), block);
        }
    }

    fn end_block(&mut self, stream: u32, block: Vec<u8>, end_stream: bool) {
        frame::put_headers(
            &mut self.out,
            stream,
            &block,
            end_stream,
            self.peer_max_frame,
        );
        // Kept for the next answer unless a rare huge one grew it.
        if block.capacity() <= 4096 {
            self.block = block;
        }
        if end_stream {
            self.end_sent(stream);
        }
    }

    /// Trailers end the response.
    pub fn send_trailers<'a>(
        &mut self,
        stream: u32,
        fields: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    ) {
        let mut block = Vec::with_capacity(64);
        self.encoder.begin(&mut block);
        for (name, value) in fields {
            if !request::is_connection_specific(name) {
                self.encoder.field(
                    name.as_str(),
                    value.as_bytes(),
                    value.is_sensitive(),
                    &mut block,
                );
            }
        }
        frame::put_headers(&mut self.out, stream, &block, true, self.peer_max_frame);
        self.end_sent(stream);
    }

    /// How much response data may go out on `stream` now, in one frame.
    pub fn send_capacity(&self, stream: u32) -> usize {
        match self.streams.get(&stream) {
            Some(s) if s.send_open => s
                .send_window
                .min(self.send_window)
                .min(i64::from(self.peer_max_frame))
                .max(0) as usize,
            _ => 0,
        }
    }

    /// Queues one DATA frame of at most [`Self::send_capacity`] bytes.
    pub fn send_data(&mut self, stream: u32, data: &[u8], end_stream: bool) {
        debug_assert!(data.len() <= self.send_capacity(stream) || data.is_empty());
        frame::put_data_head(&mut self.out, stream, data.len(), end_stream);
        self.out.extend_from_slice(data);
        let n = data.len() as i64;
        self.send_window -= n;
        if let Some(s) = self.streams.get_mut(&stream) {
            s.send_window -= n;
        }
        if end_stream {
            self.end_sent(stream);
        }
    }

    fn end_sent(&mut self, stream: u32) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.send_open = false;
            // An answered stream earns back a reset.
            self.reset_budget = (self.reset_budget + 1).min(self.config.reset_budget);
        }
        self.close_if_done(stream);
    }

    fn close_if_done(&mut self, stream: u32) {
        if self
            .streams
            .get(&stream)
            .is_some_and(|s| !s.recv_open && !s.send_open)
        {
            self.streams.remove(&stream);
        }
    }
}

/// Trailers: no pseudo-headers, lowercase names, no connection-specific fields.
fn trailer_map(fields: std::vec::Drain<'_, Field>) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields {
        if f.name.first() == Some(&b':') || f.name.iter().any(u8::is_ascii_uppercase) {
            return None;
        }
        let name = HeaderName::from_bytes(&f.name).ok()?;
        if request::is_connection_specific(&name) {
            return None;
        }
        map.append(name, HeaderValue::from_maybe_shared(f.value).ok()?);
    }
    Some(map)
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
