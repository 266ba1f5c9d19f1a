//! OTLP/protobuf encoding of spans, written straight from the exchange.
//!
//! Each span goes into one growing buffer as it is described ([`SpanSink`]), already in its
//! wire form: a `ScopeSpans.spans` field. A batch is a run of those bytes behind a short
//! head (the request's `ResourceSpans`, the resource and the scope, encoded once), so a
//! span costs one pass over its own fields and no allocation of its own. Field numbers are
//! those of `opentelemetry/proto/trace/v1/trace.proto` and `common/v1/common.proto`; the
//! tests decode the output with the generated `opentelemetry-proto` types.

use bytes::{BufMut, Bytes, BytesMut};

use crate::span::{Block, FixedAttr, FixedKey, Key, SpanHead, SpanSink, Val};

// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// Span flags (trace.proto `SpanFlags`): the W3C flags in the low byte, then whether the
/// parent's remoteness is known, and whether it is remote.
const CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
const CONTEXT_IS_REMOTE: u32 = 0x200;
const STATUS_ERROR: u64 = 2;

const fn tag(field: u32, wire: u32) -> u64 {
    (field << 3 | wire) as u64
}

fn varint_len(v: u64) -> usize {
    // 1 byte per started 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8(v as u8 | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// A length-delimited field's full size: its tag, its length and its content.
fn field_len(field: u32, content: usize) -> usize {
    varint_len(tag(field, LEN)) + varint_len(content as u64) + content
}

fn put_bytes(buf: &mut BytesMut, field: u32, v: &[u8]) {
    put_varint(buf, tag(field, LEN));
    put_varint(buf, v.len() as u64);
    buf.put_slice(v);
}

fn put_key(buf: &mut BytesMut, field: u32, k: Key<'_>) {
    put_varint(buf, tag(field, LEN));
    put_varint(buf, k.len() as u64);
    put_key_bytes(buf, k);
}

/// The key's text; most keys are one part (`Key::of`): no call for an empty copy.
fn put_key_bytes(buf: &mut BytesMut, k: Key<'_>) {
    for part in [k.0, k.1] {
        if !part.is_empty() {
            buf.put_slice(part.as_bytes());
        }
    }
}

/// A length-delimited field whose length is not known yet: where its length goes, and how
/// many bytes were kept for it.
#[derive(Clone, Copy, Debug, Default)]
struct Open {
    at: usize,
    room: usize,
}

/// Starts a length-delimited field, keeping `room` bytes for its length: 1 for small
/// messages, 2 for a span (128 B to 16 KiB, the usual size), so that [`close`] seldom has to
/// move the content. `field` is below 16 (a one-byte tag) and `room` 1 or 2.
fn open(buf: &mut BytesMut, field: u32, room: usize) -> Open {
    debug_assert!(field < 16 && (1..=2).contains(&room));
    buf.put_slice(&[tag(field, LEN) as u8, 0, 0][..1 + room]);
    Open {
        at: buf.len() - room,
        room,
    }
}

fn close(buf: &mut BytesMut, Open { at, room }: Open) {
    let end = buf.len();
    let len = end - at - room;
    // The usual case: the length fits the room kept for it.
    match (room, len) {
        (1, 0..128) => {
            buf[at] = len as u8;
            return;
        }
        (2, 128..16384) => {
            buf[at..at + 2].copy_from_slice(&[len as u8 | 0x80, (len >> 7) as u8]);
            return;
        }
        _ => {}
    }
    let n = varint_len(len as u64);
    if n > room {
        buf.put_bytes(0, n - room);
        buf.copy_within(at + room..end, at + n);
    } else if n < room {
        buf.copy_within(at + room..end, at + n);
        buf.truncate(end - (room - n));
    }
    let mut v = len as u64;
    for b in &mut buf[at..at + n] {
        *b = v as u8 & 0x7f | if v >= 0x80 { 0x80 } else { 0 };
        v >>= 7;
    }
}

/// `AnyValue` content for a scalar value, and its length.
fn any_len(v: &Val<'_>) -> usize {
    match v {
        Val::Str(s) => field_len(1, s.len()),
        Val::Ascii(b) => field_len(1, b.len()),
        Val::Parts(p) => field_len(1, p.iter().map(|s| s.len()).sum()),
        Val::Int(i) => 1 + varint_len(*i as u64),
        Val::Header(..) => 0,
    }
}

/// Writes a `KeyValue` as field `field` of the enclosing message.
fn put_attr(buf: &mut BytesMut, field: u32, key: Key<'_>, value: &Val<'_>) {
    if let Val::Header(all, name) = value {
        let kv = open(buf, field, 1);
        put_key(buf, 1, key);
        let any = open(buf, 2, 1);
        let array = open(buf, 5, 1);
        for v in Val::header_values(all, name) {
            let item = field_len(1, v.len());
            put_varint(buf, tag(1, LEN));
            put_varint(buf, item as u64);
            put_bytes(buf, 1, v.as_bytes());
        }
        close(buf, array);
        close(buf, any);
        close(buf, kv);
        return;
    }
    if put_short_attr(buf, field, key, value) {
        return;
    }
    let any = any_len(value);
    let kv = field_len(1, key.len()) + field_len(2, any);
    put_varint(buf, tag(field, LEN));
    put_varint(buf, kv as u64);
    put_key(buf, 1, key);
    put_varint(buf, tag(2, LEN));
    put_varint(buf, any as u64);
    match value {
        Val::Str(s) => put_bytes(buf, 1, s.as_bytes()),
        Val::Ascii(b) => put_bytes(buf, 1, b),
        Val::Parts(parts) => {
            put_varint(buf, tag(1, LEN));
            put_varint(buf, parts.iter().map(|s| s.len()).sum::<usize>() as u64);
            for p in *parts {
                buf.put_slice(p.as_bytes());
            }
        }
        Val::Int(i) => {
            put_varint(buf, tag(3, VARINT));
            put_varint(buf, *i as u64);
        }
        Val::Header(..) => {}
    }
}

/// The usual attribute: a scalar value whose `KeyValue` is under 128 bytes, so every length
/// is one byte and known up front. The value's length, and its `AnyValue`'s; `None` for a
/// header's values (a string array).
fn short_value(value: &Val<'_>) -> Option<(usize, usize)> {
    let vlen = match value {
        Val::Str(s) => s.len(),
        Val::Ascii(b) => b.len(),
        Val::Parts(p) => p.iter().map(|s| s.len()).sum(),
        Val::Int(_) => 0,
        Val::Header(..) => return None,
    };
    // AnyValue: a string (tag, length, bytes) or an int (tag, varint).
    let any = match value {
        Val::Int(i) => 1 + varint_len(*i as u64),
        _ => 2 + vlen,
    };
    Some((vlen, any))
}

/// [`put_attr`] for the usual attribute ([`short_value`]). The framing is written in two
/// pieces (before the key, before the value) instead of eight varints, each checking for
/// room: this was ~60% of encoding a span. Returns false, writing nothing, for the others.
fn put_short_attr(buf: &mut BytesMut, field: u32, key: Key<'_>, value: &Val<'_>) -> bool {
    let Some((vlen, any)) = short_value(value) else {
        return false;
    };
    let klen = key.len();
    // KeyValue: key (tag, length, bytes), value (tag, length, AnyValue).
    let kv = 2 + klen + 2 + any;
    if field >= 16 || kv >= 128 {
        return false;
    }
    buf.reserve(2 + kv);
    buf.put_slice(&[
        tag(field, LEN) as u8,
        kv as u8,
        tag(1, LEN) as u8,
        klen as u8,
    ]);
    put_key_bytes(buf, key);
    put_short_value(buf, value, vlen, any);
    true
}

/// The value part of a short attribute: its field in the `KeyValue`, then the `AnyValue`.
/// Inlined: a call of its own saved and restored ~18 instructions' worth of registers.
#[inline(always)]
fn put_short_value(buf: &mut BytesMut, value: &Val<'_>, vlen: usize, any: usize) {
    if let Val::Int(i) = value {
        buf.put_slice(&[tag(2, LEN) as u8, any as u8, tag(3, VARINT) as u8]);
        put_varint(buf, *i as u64);
        return;
    }
    buf.put_slice(&[tag(2, LEN) as u8, any as u8, tag(1, LEN) as u8, vlen as u8]);
    match value {
        Val::Str(s) => buf.put_slice(s.as_bytes()),
        Val::Ascii(b) => buf.put_slice(b),
        Val::Parts(parts) => parts.iter().for_each(|p| buf.put_slice(p.as_bytes())),
        Val::Int(_) | Val::Header(..) => {}
    }
}

/// `bytes` into `out` from `at`, at compile time.
const fn copy_const(out: &mut [u8], at: usize, bytes: &[u8]) {
    let mut i = 0;
    while i < bytes.len() {
        out[at + i] = bytes[i];
        i += 1;
    }
}

/// The size of [`fixed_key`]'s encoding of `key`.
pub const fn fixed_key_len(key: &str) -> usize {
    // Room for the shortest value (an int's AnyValue: 2 bytes, with its own 2) in one-byte
    // lengths.
    assert!(
        2 + key.len() + 4 < 128,
        "a fixed key leaves room for a value"
    );
    4 + key.len()
}

/// The start of a `Span.attributes` field whose key is `key`, encoded at compile time
/// ([`crate::span::fixed_key!`]): the field's tag, a zero where the `KeyValue`'s length
/// goes, then the key as [`put_attr`] writes it. [`Spans::keyed`] copies it and writes the
/// length and the value.
pub const fn fixed_key<const N: usize>(key: &str) -> [u8; N] {
    assert!(N == fixed_key_len(key));
    let k = key.as_bytes();
    let mut out = [0u8; N];
    out[0] = tag(9, LEN) as u8;
    out[2] = tag(1, LEN) as u8;
    out[3] = k.len() as u8;
    copy_const(&mut out, 4, k);
    out
}

/// The size of [`fixed_attr`]'s encoding of `key: value`.
pub const fn fixed_attr_len(key: &str, value: &str) -> usize {
    // KeyValue: key (tag, length, bytes), value (tag, length, AnyValue: tag, length, bytes).
    let kv = 2 + key.len() + 2 + 2 + value.len();
    assert!(kv < 128, "a fixed attribute has one-byte lengths");
    2 + kv
}

/// A string attribute as a `Span.attributes` field, encoded at compile time
/// ([`crate::span::fixed_attr!`]): the bytes [`put_attr`] writes for it, checked by the tests.
/// Writing it is one copy, where `put_attr` took ~140 instructions and a cache keyed by
/// the strings' addresses ~75.
pub const fn fixed_attr<const N: usize>(key: &str, value: &str) -> [u8; N] {
    assert!(N == fixed_attr_len(key, value));
    let (k, v) = (key.as_bytes(), value.as_bytes());
    let mut out = [0u8; N];
    out[0] = tag(9, LEN) as u8;
    out[1] = (N - 2) as u8;
    out[2] = tag(1, LEN) as u8;
    out[3] = k.len() as u8;
    copy_const(&mut out, 4, k);
    let at = 4 + k.len();
    out[at] = tag(2, LEN) as u8;
    out[at + 1] = (2 + v.len()) as u8;
    out[at + 2] = tag(1, LEN) as u8;
    out[at + 3] = v.len() as u8;
    copy_const(&mut out, at + 4, v);
    out
}

/// Encoded spans waiting to be sent, each a `ScopeSpans.spans` field.
#[derive(Default)]
pub struct Spans {
    buf: BytesMut,
    /// Where each span ends in `buf`.
    ends: std::collections::VecDeque<usize>,
    /// The length field of the span being described.
    open: Open,
}

impl Spans {
    /// Spans encoded and not yet taken.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Takes the first `n` spans' bytes (all of them when there are fewer).
    pub fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.ends.len());
        let Some(end) = n
            .checked_sub(1)
            .and_then(|last| self.ends.get(last).copied())
        else {
            return Bytes::new();
        };
        self.ends.drain(..n);
        for e in &mut self.ends {
            *e -= end;
        }
        self.buf.split_to(end).freeze()
    }

    /// Moves what is pending (a span or two) back to the start of the buffer once the
    /// batches taken from it are gone (sent and dropped): the next batch is written over
    /// the last one, in lines the caches may still hold, instead of after it until the
    /// buffer's end, where `BytesMut` had to move a part-written batch to the front or
    /// grow. A no-op while a batch taken still holds the buffer.
    pub fn rewind(&mut self) {
        if self.buf.len() <= REWIND_MAX {
            let spare = self.buf.capacity() - self.buf.len();
            // Asking for one byte more than the room after the pending bytes is what makes
            // `BytesMut` reclaim the space before them (it moves the pending bytes down).
            let _ = self.buf.try_reclaim(spare + 1);
        }
    }
}

/// The most pending bytes [`Spans::rewind`] moves.
const REWIND_MAX: usize = 4096;

impl SpanSink for Spans {
    fn begin(&mut self, h: &SpanHead<'_>) {
        let buf = &mut self.buf;
        // The fixed-size fields are put together on the stack and written in one piece
        // each side of the name: a `put` per field checked for room ~20 times a span.
        // First the span's own field (ScopeSpans.spans = 2) with two bytes kept for its
        // length ([`open`]), then the ids.
        let mut flags = u32::from(h.flags) | CONTEXT_HAS_IS_REMOTE;
        let mut ids = [0u8; 41];
        ids[..5].copy_from_slice(&[tag(2, LEN) as u8, 0, 0, tag(1, LEN) as u8, 16]);
        ids[5..21].copy_from_slice(&h.trace_id);
        ids[21..23].copy_from_slice(&[tag(2, LEN) as u8, 8]);
        ids[23..31].copy_from_slice(&h.span_id);
        let mut n = 31;
        if let Some((parent, remote)) = h.parent {
            if remote {
                flags |= CONTEXT_IS_REMOTE;
            }
            ids[31..33].copy_from_slice(&[tag(4, LEN) as u8, 8]);
            ids[33..41].copy_from_slice(&parent);
        }
        self.open = Open {
            at: buf.len() + 1,
            room: 2,
        };
        if h.trace_state.is_empty() {
            if h.parent.is_some() {
                n = 41;
            }
            buf.put_slice(&ids[..n]);
        } else {
            // trace_state = 3 goes between the span's id and its parent's.
            buf.put_slice(&ids[..31]);
            put_bytes(buf, 3, h.trace_state.as_bytes());
            if h.parent.is_some() {
                buf.put_slice(&ids[31..41]);
            }
        }
        let (first, second) = h.name;
        put_varint(buf, tag(5, LEN));
        put_varint(
            buf,
            (first.len() + second.map_or(0, |s| s.len() + 1)) as u64,
        );
        buf.put_slice(first.as_bytes());
        if let Some(s) = second {
            buf.put_u8(b' ');
            buf.put_slice(s.as_bytes());
        }
        // kind = 6, start = 7, end = 8, flags = 16 (a two-byte tag).
        let mut tail = [0u8; 26];
        tail[..2].copy_from_slice(&[tag(6, VARINT) as u8, h.kind as u8]);
        tail[2] = tag(7, FIXED64) as u8;
        tail[3..11].copy_from_slice(&h.start.to_le_bytes());
        tail[11] = tag(8, FIXED64) as u8;
        tail[12..20].copy_from_slice(&h.end.to_le_bytes());
        let flags_tag = tag(16, FIXED32);
        tail[20..22].copy_from_slice(&[flags_tag as u8 | 0x80, (flags_tag >> 7) as u8]);
        tail[22..26].copy_from_slice(&flags.to_le_bytes());
        buf.put_slice(&tail);
    }

    fn attr(&mut self, key: Key<'_>, value: Val<'_>) {
        // Span.attributes = 9
        put_attr(&mut self.buf, 9, key, &value);
    }

    fn fixed(&mut self, attr: &'static FixedAttr) {
        self.buf.put_slice(attr.otlp);
    }

    /// Inlined where it is called (the span's `str` and `int` helpers and a few others):
    /// each copy knows its value's kind, and the call's register saves go. Encoding a
    /// request's two spans took ~390 instructions fewer (2,408 -> 2,015, c=8).
    #[inline(always)]
    fn keyed(&mut self, key: &'static FixedKey, value: Val<'_>) {
        let buf = &mut self.buf;
        // KeyValue: the key's part as encoded, less the field's tag and length (2 bytes),
        // then the value's: tag, length (2 bytes) and AnyValue.
        let short = short_value(&value).map(|(vlen, any)| (vlen, any, key.otlp.len() + any));
        match short {
            Some((vlen, any, kv)) if kv < 128 => {
                buf.reserve(2 + kv);
                let at = buf.len();
                buf.put_slice(key.otlp);
                buf[at + 1] = kv as u8;
                put_short_value(buf, &value, vlen, any);
            }
            _ => put_attr(buf, 9, Key::of(key.key), &value),
        }
    }

    fn block(&mut self, block: &Block) {
        let bytes = block.otlp(|b| {
            let mut buf = BytesMut::new();
            for (k, v) in b.iter() {
                put_attr(&mut buf, 9, k, &v);
            }
            buf.to_vec().into_boxed_slice()
        });
        self.buf.put_slice(bytes);
    }

    fn event(&mut self, name: &str, at: u64, attrs: &[(&'static str, Val<'_>)]) {
        let buf = &mut self.buf;
        // Span.events = 11: time 1, name 2, attributes 3.
        let event = open(buf, 11, 1);
        put_varint(buf, tag(1, FIXED64));
        buf.put_u64_le(at);
        put_bytes(buf, 2, name.as_bytes());
        for (k, v) in attrs {
            put_attr(buf, 3, Key::of(k), v);
        }
        close(buf, event);
    }

    fn end(&mut self, error: Option<&str>) {
        let buf = &mut self.buf;
        // Span.status = 15: message 2, code 3. An unset status is the absent one.
        match error {
            None => {}
            Some(message) => {
                let len = field_len(2, message.len()) + 1 + varint_len(STATUS_ERROR);
                put_varint(buf, tag(15, LEN));
                put_varint(buf, len as u64);
                put_bytes(buf, 2, message.as_bytes());
                put_varint(buf, tag(3, VARINT));
                put_varint(buf, STATUS_ERROR);
            }
        }
        close(buf, self.open);
        self.ends.push_back(self.buf.len());
    }
}

/// What every request of one exporter shares: the resource and the instrumentation scope,
/// encoded once.
#[derive(Clone, Debug)]
pub struct Preamble {
    /// `ResourceSpans.resource` (field 1), tag included.
    resource: Bytes,
    /// `ScopeSpans.scope` (field 1), tag included.
    scope: Bytes,
}

impl Preamble {
    /// `resource`: the resource's attributes, in order, each key once.
    pub fn new(resource: &[(String, String)], scope_name: &str, scope_version: &str) -> Self {
        let mut r = BytesMut::new();
        let at = open(&mut r, 1, 1);
        for (k, v) in resource {
            put_attr(&mut r, 1, Key("", k), &Val::Str(v));
        }
        close(&mut r, at);
        let mut s = BytesMut::new();
        let at = open(&mut s, 1, 1);
        put_bytes(&mut s, 1, scope_name.as_bytes());
        put_bytes(&mut s, 2, scope_version.as_bytes());
        close(&mut s, at);
        Preamble {
            resource: r.freeze(),
            scope: s.freeze(),
        }
    }

    /// The bytes of an `ExportTraceServiceRequest` that come before `spans` (taken from
    /// [`Spans::take`]): one `ResourceSpans` holding one `ScopeSpans`.
    pub fn head(&self, spans: &[u8]) -> Bytes {
        let scope_spans = self.scope.len() + spans.len();
        let resource_spans = self.resource.len() + field_len(2, scope_spans);
        let mut h = BytesMut::with_capacity(self.resource.len() + self.scope.len() + 16);
        // ExportTraceServiceRequest.resource_spans = 1
        put_varint(&mut h, tag(1, LEN));
        put_varint(&mut h, resource_spans as u64);
        h.put_slice(&self.resource);
        // ResourceSpans.scope_spans = 2
        put_varint(&mut h, tag(2, LEN));
        put_varint(&mut h, scope_spans as u64);
        h.put_slice(&self.scope);
        h.freeze()
    }
}

/// A few fields of a protobuf message, read without a schema: enough for the answers the
/// exporter looks at (partial success, retry delays).
pub struct Reader<'a>(&'a [u8]);

/// One field: its number and its value (a varint, or the bytes of a length-delimited one).
pub enum Field<'a> {
    Varint(u32, u64),
    Bytes(u32, &'a [u8]),
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Reader(b)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Field<'a>;

    /// The next varint or length-delimited field; fixed-width ones are skipped. Ends at the
    /// end of the message or at anything malformed.
    fn next(&mut self) -> Option<Field<'a>> {
        loop {
            let key = self.varint()?;
            let field = u32::try_from(key >> 3).ok()?;
            match (key & 7) as u32 {
                VARINT => return Some(Field::Varint(field, self.varint()?)),
                LEN => {
                    let len = usize::try_from(self.varint()?).ok()?;
                    if len > self.0.len() {
                        self.0 = &[];
                        return None;
                    }
                    let (v, rest) = self.0.split_at(len);
                    self.0 = rest;
                    return Some(Field::Bytes(field, v));
                }
                FIXED64 => self.0 = self.0.get(8..)?,
                FIXED32 => self.0 = self.0.get(4..)?,
                _ => {
                    self.0 = &[];
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};
    use prost::Message as _;

    use super::*;
    use crate::capture::Headers;
    use crate::span::Kind;

    /// `ms` milliseconds after the Unix epoch, in nanoseconds.
    fn at(ms: u64) -> u64 {
        ms * 1_000_000
    }

    fn decode(p: &Preamble, spans: &Bytes) -> ExportTraceServiceRequest {
        let bytes = [p.head(spans).as_ref(), spans.as_ref()].concat();
        ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap()
    }

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn head<'a>(
        span_id: u8,
        parent: Option<([u8; 8], bool)>,
        name: (&'a str, Option<&'a str>),
    ) -> SpanHead<'a> {
        SpanHead {
            trace_id: [7; 16],
            span_id: [span_id; 8],
            parent,
            flags: 0x03,
            trace_state: "",
            kind: Kind::Server,
            name,
            start: at(1_000),
            end: at(1_250),
        }
    }

    #[test]
    fn spans_decode_with_the_generated_otlp_types() {
        let p = Preamble::new(
            &[
                ("service.name".into(), "svc".into()),
                ("k".into(), "v".into()),
            ],
            "tracegate",
            "1.2.3",
        );
        let mut s = Spans::default();
        let mut h = head(1, Some(([9; 8], true)), ("GET", Some("/users/{id}")));
        h.trace_state = "vendor=abc,other=x";
        s.begin(&h);
        s.attr(Key::of("http.request.method"), Val::Str("GET"));
        s.attr(Key::of("http.response.status_code"), Val::Int(503));
        s.attr(Key::of("negative"), Val::Int(-5));
        s.attr(Key("baggage.", "tenant"), Val::Str("t1"));
        s.attr(
            Key::of("tracegate.correlation_id"),
            Val::Ascii(b"0f8fad5b-d9cb-469f-a165-70867728950e"),
        );
        s.attr(
            Key::of("url.full"),
            Val::Parts(&["http://a:1", "/p", "?", "q=1"]),
        );
        let headers: Headers = vec![
            ("accept".parse().unwrap(), "a".into()),
            ("x-other".parse().unwrap(), "o".into()),
            ("accept".parse().unwrap(), "b".into()),
        ];
        let accept: http::HeaderName = "accept".parse().unwrap();
        s.attr(
            Key("http.request.header.", "accept"),
            Val::Header(&headers, &accept),
        );
        s.event(
            "retry",
            at(1_100),
            &[
                ("http.request.resend_count", Val::Int(1)),
                ("error.type", Val::Str("connection_refused")),
            ],
        );
        s.end(Some("503"));
        let mut client = head(2, Some(([1; 8], false)), ("GET", None));
        client.kind = Kind::Client;
        s.begin(&client);
        s.end(None);
        let mut root = head(3, None, ("HTTP", None));
        root.flags = 0;
        s.begin(&root);
        s.end(None);
        assert_eq!(s.len(), 3);

        let req = decode(&p, &s.take(3));
        assert!(s.is_empty());
        let rs = &req.resource_spans[0];
        let res = rs.resource.as_ref().unwrap();
        let res_attrs: Vec<(&str, &AnyValue)> = res
            .attributes
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_ref().unwrap()))
            .collect();
        assert_eq!(res_attrs.len(), 2);
        assert_eq!(res_attrs[0].0, "service.name");
        assert_eq!(
            res_attrs[0].1.value,
            Some(any_value::Value::StringValue("svc".into()))
        );
        let ss = &rs.scope_spans[0];
        let scope = ss.scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("tracegate", "1.2.3")
        );

        let [server, client, root] = &ss.spans[..] else {
            panic!("{} spans", ss.spans.len())
        };
        assert_eq!(server.trace_id, vec![7; 16]);
        assert_eq!(server.span_id, vec![1; 8]);
        assert_eq!(server.parent_span_id, vec![9; 8]);
        assert_eq!(server.trace_state, "vendor=abc,other=x");
        assert_eq!(server.name, "GET /users/{id}");
        assert_eq!(server.kind, 2);
        assert_eq!(server.start_time_unix_nano, 1_000_000_000);
        assert_eq!(server.end_time_unix_nano, 1_250_000_000);
        // W3C flags, then "is-remote known" and "is remote".
        assert_eq!(server.flags, 0x303);
        assert_eq!(
            attr(server, "http.request.method"),
            Some(&any_value::Value::StringValue("GET".into()))
        );
        assert_eq!(
            attr(server, "http.response.status_code"),
            Some(&any_value::Value::IntValue(503))
        );
        assert_eq!(
            attr(server, "negative"),
            Some(&any_value::Value::IntValue(-5))
        );
        assert_eq!(
            attr(server, "baggage.tenant"),
            Some(&any_value::Value::StringValue("t1".into()))
        );
        assert_eq!(
            attr(server, "tracegate.correlation_id"),
            Some(&any_value::Value::StringValue(
                "0f8fad5b-d9cb-469f-a165-70867728950e".into()
            ))
        );
        assert_eq!(
            attr(server, "url.full"),
            Some(&any_value::Value::StringValue("http://a:1/p?q=1".into()))
        );
        let Some(any_value::Value::ArrayValue(arr)) = attr(server, "http.request.header.accept")
        else {
            panic!("header array")
        };
        let values: Vec<_> = arr.values.iter().map(|v| v.value.clone()).collect();
        assert_eq!(
            values,
            vec![
                Some(any_value::Value::StringValue("a".into())),
                Some(any_value::Value::StringValue("b".into()))
            ]
        );
        let e = &server.events[0];
        assert_eq!(
            (e.name.as_str(), e.time_unix_nano),
            ("retry", 1_100_000_000)
        );
        assert_eq!(e.attributes.len(), 2);
        let st = server.status.as_ref().unwrap();
        assert_eq!(
            (st.code, st.message.as_str()),
            (StatusCode::Error as i32, "503")
        );

        assert_eq!(client.kind, 3);
        assert_eq!(client.name, "GET");
        assert_eq!(client.parent_span_id, vec![1; 8]);
        assert_eq!(
            client.flags, 0x103,
            "a local parent: remoteness known, not remote"
        );
        assert!(client.status.is_none(), "an unset status is left out");
        assert!(client.trace_state.is_empty());

        assert!(root.parent_span_id.is_empty());
        assert_eq!(root.flags, 0x100);
    }

    #[test]
    fn long_fields_get_multi_byte_lengths() {
        // Lengths of 127, 128, 16383, 16384 and 70000 bytes: one, two and three byte varints.
        let p = Preamble::new(&[], "tracegate", "0");
        let mut s = Spans::default();
        let sizes = [0, 1, 127, 128, 300, 16_383, 16_384, 70_000];
        for (i, n) in sizes.iter().enumerate() {
            s.begin(&head(i as u8 + 1, None, ("GET", None)));
            let long = "x".repeat(*n);
            s.attr(Key::of("long"), Val::Str(&long));
            let headers: Headers = vec![("x-long".parse().unwrap(), long.clone())];
            let name: http::HeaderName = "x-long".parse().unwrap();
            s.attr(Key::of("header"), Val::Header(&headers, &name));
            s.event("e", at(1), &[("m", Val::Str(&long))]);
            s.end(Some(&long));
        }
        let req = decode(&p, &s.take(sizes.len()));
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), sizes.len());
        for (span, n) in spans.iter().zip(sizes) {
            let Some(any_value::Value::StringValue(v)) = attr(span, "long") else {
                panic!("long")
            };
            assert_eq!(v.len(), n);
            assert!(
                matches!(attr(span, "header"), Some(any_value::Value::ArrayValue(a)) if a.values.len() == 1)
            );
            assert_eq!(span.events[0].attributes.len(), 1);
            assert_eq!(span.status.as_ref().unwrap().message.len(), n);
        }
    }

    #[test]
    fn attributes_decode_on_both_sides_of_the_short_form() {
        // Every KeyValue size from 12 to ~260 bytes (one-byte lengths end at 127), two-part
        // keys, string, ASCII, parts and int values (a negative int is a 10-byte varint).
        let p = Preamble::new(&[], "tracegate", "0");
        let mut s = Spans::default();
        let mut expected = Vec::new();
        s.begin(&head(1, None, ("GET", None)));
        for klen in 10..=130 {
            for vlen in [0, 1, 10, 127, 128] {
                let key = |kind: &str| {
                    let k = format!("{kind}.{klen}.{vlen}.");
                    format!("{k}{}", "k".repeat(klen - k.len()))
                };
                let value = "v".repeat(vlen);
                s.attr(Key("", &key("s")), Val::Str(&value));
                expected.push((key("s"), any_value::Value::StringValue(value.clone())));
                s.attr(Key("", &key("a")), Val::Ascii(value.as_bytes()));
                expected.push((key("a"), any_value::Value::StringValue(value.clone())));
                let rest = key("p");
                let (a, b) = value.split_at(vlen / 2);
                s.attr(Key("x", &rest[1..]), Val::Parts(&[a, b]));
                expected.push((key("x"), any_value::Value::StringValue(value.clone())));
                for (n, i) in [0, 1, 300, -1, i64::MAX].into_iter().enumerate() {
                    let k = key(&format!("i{n}"));
                    s.attr(Key("", &k), Val::Int(i));
                    expected.push((k, any_value::Value::IntValue(i)));
                }
            }
        }
        s.end(None);
        let req = decode(&p, &s.take(1));
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.attributes.len(), expected.len());
        for (key, value) in &expected {
            assert_eq!(attr(span, key), Some(value), "{key}");
        }
    }

    #[test]
    fn take_splits_at_span_boundaries() {
        let p = Preamble::new(&[], "tracegate", "0");
        let mut s = Spans::default();
        for i in 1..=5u8 {
            s.begin(&head(i, None, ("GET", None)));
            s.end(None);
        }
        let ids = |req: ExportTraceServiceRequest| -> Vec<u8> {
            req.resource_spans[0].scope_spans[0]
                .spans
                .iter()
                .map(|s| s.span_id[0])
                .collect()
        };
        assert_eq!(ids(decode(&p, &s.take(2))), [1, 2]);
        assert_eq!(s.len(), 3);
        // More spans after a take land after the ones left.
        s.begin(&head(6, None, ("GET", None)));
        s.end(None);
        assert_eq!(ids(decode(&p, &s.take(10))), [3, 4, 5, 6]);
        assert!(s.take(1).is_empty());
    }

    #[test]
    fn rewind_writes_the_next_batch_where_the_last_one_was() {
        let p = Preamble::new(&[], "tracegate", "0");
        let mut s = Spans::default();
        s.buf.reserve(64 * 1024);
        let span = |s: &mut Spans, i: u8| {
            s.begin(&head(i, None, ("GET", None)));
            s.end(None);
        };
        for i in 1..=40 {
            span(&mut s, i);
        }
        let batch = s.take(39);
        span(&mut s, 41);
        let (start, room) = (batch.as_ptr(), s.buf.capacity());
        // The batch taken still holds the buffer: nothing moves.
        s.rewind();
        assert_eq!(s.buf.capacity(), room);
        assert_ne!(s.buf.as_ptr(), start);
        // Sent and dropped: the two pending spans move to the start, the room after them.
        drop(batch);
        s.rewind();
        assert_eq!(s.buf.as_ptr(), start);
        assert!(s.buf.capacity() > room + 1000);
        span(&mut s, 42);
        let ids: Vec<u8> = decode(&p, &s.take(10)).resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.span_id[0])
            .collect();
        assert_eq!(ids, [40, 41, 42]);
    }

    /// What `attr` writes for one string attribute.
    fn written_by_attr(key: Key<'_>, value: Val<'_>) -> Vec<u8> {
        let mut s = Spans::default();
        s.attr(key, value);
        s.buf.to_vec()
    }

    #[test]
    fn fixed_attributes_are_encoded_as_attr_writes_them() {
        let fixed = crate::span::fixed_attrs();
        assert!(fixed.len() > 20, "{}", fixed.len());
        // The longest: a KeyValue of 127 bytes (a key of 1, a value of 120).
        let longest = crate::span::fixed_attr!(
            "k",
            "a value as long as one-byte lengths allow: the KeyValue is 127 bytes, its key one, the rest its value and four lengths.."
        );
        assert_eq!(longest.otlp.len(), 2 + 127);
        for a in fixed.into_iter().chain([longest]) {
            let mut s = Spans::default();
            s.fixed(a);
            assert_eq!(
                s.buf[..],
                written_by_attr(Key::of(a.key), Val::Str(a.value)),
                "{}: {}",
                a.key,
                a.value
            );
        }
    }

    #[test]
    fn fixed_keys_are_encoded_as_attr_writes_them() {
        // The longest key allowed: 121 bytes, a KeyValue of 127 with the smallest int.
        let longest = crate::span::fixed_key!(
            "a.key.as.long.as.one.byte.lengths.allow.with.room.for.the.smallest.value.that.is.an.int.of.one.byte.and.its.two.framing.."
        );
        assert_eq!(longest.key.len(), 121);
        let keys = [
            crate::span::fixed_key!("url.path"),
            crate::span::fixed_key!("http.response.status_code"),
            crate::span::fixed_key!("k"),
            longest,
        ];
        let name = http::header::ACCEPT;
        let headers: crate::capture::Headers = vec![(name.clone(), "text/html".to_string())];
        for key in keys {
            let mut values = vec![
                Val::Int(0),
                Val::Int(300),
                Val::Int(-1),
                Val::Int(i64::MAX),
                Val::Ascii(b"4bf92f35-77b3-4da6"),
                Val::Parts(&["http://upstream:8080", "/users/7", "?", "a=1"]),
                Val::Header(&headers, &name),
            ];
            // Strings on both sides of the short form's limit for this key.
            let room = 128usize.saturating_sub(key.otlp.len() + 4);
            let text = "v".repeat(200);
            for n in [0, 1, room.saturating_sub(1), room, room + 1, 200] {
                values.push(Val::Str(&text[..n.min(200)]));
            }
            for v in values {
                let mut s = Spans::default();
                s.keyed(key, v);
                assert_eq!(
                    s.buf[..],
                    written_by_attr(Key::of(key.key), v),
                    "{}: {v:?}",
                    key.key
                );
            }
        }
    }

    #[test]
    fn a_block_is_written_as_its_attributes_are_each_time() {
        use crate::span::Fixed;
        let block = Block::new(vec![
            (
                "server.address".into(),
                Fixed::Str("api.example.com".into()),
            ),
            ("server.port".into(), Fixed::Int(443)),
            ("long".into(), Fixed::Str("x".repeat(300).into())),
        ]);
        let each: Vec<u8> = block
            .iter()
            .flat_map(|(k, v)| written_by_attr(k, v))
            .collect();
        let mut s = Spans::default();
        s.block(&block);
        s.block(&block);
        assert_eq!(s.buf[..], [each.as_slice(), each.as_slice()].concat());
        let mut none = Spans::default();
        none.block(&Block::default());
        assert!(none.buf.is_empty());
    }

    #[test]
    fn spans_survive_growth_between_takes() {
        // Enough spans, of varied sizes, to run out of room many times, with takes in between
        // that leave part of a batch behind (and the buffer shared with the bytes taken).
        let p = Preamble::new(&[("service.name".into(), "s".into())], "tracegate", "0");
        let mut s = Spans::default();
        let mut taken = Vec::new();
        let mut next = 0u32;
        for round in 0..40 {
            for _ in 0..(7 + round % 5) {
                next += 1;
                let mut h = head(next as u8, None, ("GET", Some("/r")));
                h.trace_id[..4].copy_from_slice(&next.to_le_bytes());
                s.begin(&h);
                let value = "v".repeat((next as usize * 37) % 3000);
                s.attr(Key::of("n"), Val::Int(i64::from(next)));
                s.attr(Key::of("value"), Val::Str(&value));
                s.end(None);
            }
            let bytes = s.take(5 + round % 4);
            taken.push(decode(&p, &bytes));
        }
        taken.push(decode(&p, &s.take(usize::MAX)));
        let mut seen = Vec::new();
        for req in &taken {
            for span in &req.resource_spans[0].scope_spans[0].spans {
                let n = u32::from_le_bytes(span.trace_id[..4].try_into().unwrap());
                assert_eq!(
                    attr(span, "n"),
                    Some(&any_value::Value::IntValue(i64::from(n)))
                );
                let Some(any_value::Value::StringValue(v)) = attr(span, "value") else {
                    panic!("value of span {n}")
                };
                assert_eq!(v.len(), (n as usize * 37) % 3000, "span {n}");
                seen.push(n);
            }
        }
        assert_eq!(seen, (1..=next).collect::<Vec<_>>());
    }

    #[test]
    fn reader_finds_fields_and_stops_at_garbage() {
        // partial_success { rejected_spans: 3, error_message: "no" }
        let mut b = BytesMut::new();
        let at = open(&mut b, 1, 1);
        put_varint(&mut b, tag(1, VARINT));
        put_varint(&mut b, 3);
        put_bytes(&mut b, 2, b"no");
        close(&mut b, at);
        let fields: Vec<u32> = Reader::new(&b)
            .map(|f| match f {
                Field::Varint(n, _) | Field::Bytes(n, _) => n,
            })
            .collect();
        assert_eq!(fields, [1]);
        // A length past the end, or a truncated varint, ends the reading.
        assert_eq!(Reader::new(&[0x0a, 0x05, 1]).count(), 0);
        assert_eq!(Reader::new(&[0x08, 0x80]).count(), 0);
    }
}
