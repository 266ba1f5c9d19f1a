//! HTTP/1.1 pieces both ends of the proxy read and write with: a connection's read buffer,
//! the chunked transfer coding (RFC 9112 section 7.1), and field lines. The client side
//! (`listen::h1`) and the upstream side (`upstream::wire`) each drive their own
//! connections with them.

use std::io;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue, InvalidHeaderName};

/// Header fields in a trailer section, at most.
pub const MAX_TRAILER_FIELDS: usize = 100;
/// A chunk-size line (with extensions) longer than this is refused.
pub const MAX_CHUNK_LINE: usize = 4 * 1024;
/// The most a trailer section may take.
pub const MAX_TRAILERS: usize = 64 * 1024;

/// Header maps kept, per thread, for the next heads this thread parses; more are dropped.
///
/// A request's map is in flight until its answer comes (the head is kept for a retry), so
/// a worker holds one per connection waiting upstream, and the answers' besides. With 64
/// kept, at 256 connections more than a map a request was made on malloc's slow path and
/// freed back to it (`bash benches/instructions.sh`, c=256, tracing off: 20,877 -> 19,959
/// instructions a request with 1024). At ~1.3 KB a map, a worker keeps at most ~1.3 MiB
/// after a peak of that many in flight.
pub const SPARE_MAPS: usize = 1024;
/// A map that grew past this many fields is not kept: a rare huge head does not pin its
/// memory for the thread's life.
const SPARE_MAX_CAPACITY: usize = 48;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<HeaderMap>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A header map with room for `fields`, one this thread let go of if it has one.
///
/// A head's map is ~1.3 KB (12 fields), above what glibc's per-thread cache serves: made
/// new for every request and response, it took the allocator's slow path twice per
/// request (~300 instructions each, callgrind), and as many again to free. A worker
/// serves heads in turn, so the maps of answered exchanges serve the next ones.
pub fn header_map(fields: usize) -> HeaderMap {
    // `try_with`: a map may be asked for or given back while the thread is ending.
    let spare = SPARE.try_with(|s| s.borrow_mut().pop()).ok().flatten();
    match spare {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Gives a head's map back for [`header_map`], emptied here: nothing of one exchange
/// reaches the next.
pub fn recycle(mut map: HeaderMap) {
    // An empty map that owns no memory (a response whose fields were kept raw) would come
    // back from `header_map` as one to allocate for, in place of one with room.
    if map.capacity() == 0 || map.capacity() > SPARE_MAX_CAPACITY {
        return;
    }
    map.clear();
    let _ = SPARE.try_with(|s| {
        let mut spare = s.borrow_mut();
        if spare.len() < SPARE_MAPS {
            spare.push(map);
        }
    });
}

/// A peer broke off a body, or sent one that cannot be read (the message says which).
#[derive(Debug)]
pub struct BodyError(pub String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

/// Bytes read from a connection, `buf[start..end]` not yet consumed. Always initialised
/// memory (no `unsafe` here): it grows by zeroed bytes.
pub struct Inbox {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Its size when created, and again once `idle`.
    base: usize,
}

impl Inbox {
    pub fn new(size: usize) -> Inbox {
        Inbox {
            buf: vec![0; size],
            start: 0,
            end: 0,
            base: size,
        }
    }

    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Takes `n` buffered bytes as their own `Bytes`.
    pub fn take(&mut self, n: usize) -> Bytes {
        let b = Bytes::copy_from_slice(&self.buf[self.start..self.start + n]);
        self.consume(n);
        b
    }

    /// Room to read into: what is buffered moves to the front, or the buffer doubles (up
    /// to `max`) when it is full. An error of kind `OutOfMemory` when `max` is reached.
    pub fn space(&mut self, max: usize, what: &str) -> io::Result<&mut [u8]> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < max {
                let grown = (self.buf.len() * 2).min(max);
                self.buf.resize(grown, 0);
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!("the {what} is larger than {} KiB", max / 1024),
                ));
            }
        }
        Ok(&mut self.buf[self.end..])
    }

    /// `n` bytes were read into `space`. A read that filled it means more is coming (a
    /// large body): the buffer doubles (up to `max`) so the next reads take more at a time.
    pub fn filled(&mut self, n: usize, max: usize) {
        self.end += n;
        if self.end == self.buf.len() && n > 0 && self.buf.len() < max {
            let grown = (self.buf.len() * 2).min(max);
            self.buf.resize(grown, 0);
        }
    }

    /// Between messages with nothing buffered: a buffer grown for a large body or head
    /// shrinks back.
    pub fn idle(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > self.base {
                self.buf = vec![0; self.base];
            }
        }
    }
}

/// Where a chunked decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: the trailer section.
    Trailers,
}

pub enum Decoded {
    Data(Bytes),
    /// The last chunk and the trailer section (if it had fields) are read.
    End(Option<HeaderMap>),
    /// More bytes are needed.
    More,
}

/// One step of the chunked decoder over what `inbox` holds; `what` names the message in
/// errors ("request", "response").
pub fn decode(inbox: &mut Inbox, state: &mut Chunk, what: &str) -> Result<Decoded, String> {
    loop {
        let buf = inbox.buffered();
        match *state {
            Chunk::Size => {
                let Some(eol) = memchr::memchr(b'\n', buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(format!("a chunk-size line of the {what} is too long"));
                    }
                    return Ok(Decoded::More);
                };
                let line = buf[..eol].strip_suffix(b"\r").unwrap_or(&buf[..eol]);
                let digits = line
                    .iter()
                    .position(|b| !b.is_ascii_hexdigit())
                    .unwrap_or(line.len());
                let rest = line[digits..].trim_ascii_start();
                if digits == 0 || digits > 16 || !(rest.is_empty() || rest[0] == b';') {
                    return Err(format!("invalid chunk size in the {what} body"));
                }
                let size = line[..digits].iter().fold(0u64, |n, d| {
                    n << 4 | u64::from((*d as char).to_digit(16).unwrap_or(0))
                });
                inbox.consume(eol + 1);
                *state = if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Data(n) => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                *state = if take as u64 == n {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(n - take as u64)
                };
                return Ok(Decoded::Data(inbox.take(take)));
            }
            Chunk::DataEnd => {
                if buf.is_empty() || buf == b"\r" {
                    return Ok(Decoded::More);
                }
                match buf {
                    [b'\r', b'\n', ..] => inbox.consume(2),
                    [b'\n', ..] => inbox.consume(1),
                    _ => return Err(format!("a chunk's data is not followed by CRLF ({what})")),
                }
                *state = Chunk::Size;
            }
            Chunk::Trailers => {
                let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
                return match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((used, fields))) => {
                        let mut trailers = HeaderMap::new();
                        for f in fields {
                            if let (Ok(name), Ok(value)) = (
                                HeaderName::from_bytes(f.name.as_bytes()),
                                HeaderValue::from_bytes(f.value),
                            ) {
                                trailers.append(name, value);
                            }
                        }
                        inbox.consume(used);
                        Ok(Decoded::End((!trailers.is_empty()).then_some(trailers)))
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => {
                        Err(format!("the {what}'s trailer section is too large"))
                    }
                    Ok(httparse::Status::Partial) => Ok(Decoded::More),
                    Err(e) => Err(format!("invalid trailer section in the {what}: {e}")),
                };
            }
        }
    }
}

/// The field names of the last head read on a connection, in order. A client or an
/// upstream on a kept-alive connection sends the same names in the same order head after
/// head: taking the name from here is a comparison, where `HeaderName::from_bytes` walks
/// its table of standard names and, for any other name (`x-request-id`, `sec-fetch-mode`),
/// allocates. A different name at a position replaces the one kept there.
#[derive(Default)]
pub struct Names(Vec<HeaderName>);

impl Names {
    /// Positions kept per connection, at most (32 bytes each: 512 bytes for a connection
    /// whose heads have this many fields or more, held while it is open).
    const KEPT: usize = 16;

    /// The `i`-th field's name in this head, `raw` as it came.
    pub fn name(&mut self, i: usize, raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
        if let Some(kept) = self.0.get(i)
            && same_name(kept.as_str().as_bytes(), raw)
        {
            return Ok(kept.clone());
        }
        let name = HeaderName::from_bytes(raw)?;
        let kept = self.0.len();
        match self.0.get_mut(i) {
            Some(slot) => *slot = name.clone(),
            // Only the next position: a gap would leave an earlier one empty.
            None if i == kept && i < Self::KEPT => self.0.push(name.clone()),
            None => {}
        }
        Ok(name)
    }
}

/// `raw` is the name `kept` (lower case, as every valid `HeaderName`) but for the case of
/// its letters, so that it parses to `kept`. Byte for byte first (senders that write names
/// in lower case), then folding `raw`'s case without an early exit: the slice's own
/// `eq_ignore_ascii_case` folds both sides one byte at a time, ~13 instructions per byte.
pub fn same_name(kept: &[u8], raw: &[u8]) -> bool {
    kept == raw
        || (kept.len() == raw.len()
            && kept
                .iter()
                .zip(raw)
                .fold(0, |diff, (k, r)| diff | (k ^ r.to_ascii_lowercase()))
                == 0)
}

/// `bytes` copied into one new allocation that slices of it share (a head whose target and
/// values point into it; a header value tracegate makes). `Bytes::copy_from_slice` makes a
/// buffer that its first `slice` or clone moves behind a second, shared allocation: two per
/// head and request. Up to [`INLINE_MAX`] bytes go inline in the shared allocation, in the
/// smallest of four sizes that holds them (each within glibc's per-thread cache); larger
/// ones are rare and take the two.
pub fn shared_copy(bytes: &[u8]) -> Bytes {
    match bytes.len() {
        0..=64 => inline::<64>(bytes),
        65..=216 => inline::<216>(bytes),
        217..=472 => inline::<472>(bytes),
        473..=INLINE_MAX => inline::<INLINE_MAX>(bytes),
        _ => Bytes::copy_from_slice(bytes),
    }
}

/// The most bytes [`shared_copy`] keeps inline. With the length and the reference count
/// (16 bytes) the allocation stays under 1 KiB, the largest glibc's per-thread cache holds.
pub const INLINE_MAX: usize = 976;

fn inline<const N: usize>(bytes: &[u8]) -> Bytes {
    struct Inline<const N: usize> {
        buf: [u8; N],
        len: usize,
    }
    impl<const N: usize> AsRef<[u8]> for Inline<N> {
        fn as_ref(&self) -> &[u8] {
            &self.buf[..self.len]
        }
    }
    let mut buf = [0u8; N];
    buf[..bytes.len()].copy_from_slice(bytes);
    Bytes::from_owner(Inline {
        buf,
        len: bytes.len(),
    })
}

/// A response head's fields kept as the upstream wrote them, for an HTTP/1.1 client when
/// nothing on the way reads them: no `HeaderMap` is built (names looked up, each value
/// checked again) only to be written back out (`upstream::wire` keeps them, `listen::h1`
/// writes them). The hop-by-hop fields, those `Connection` names, and a `Content-Length`
/// beside a `Transfer-Encoding` are left out already.
pub struct RawFields {
    /// `name: value` lines, each ending in CRLF; names in the upstream's case.
    pub lines: Bytes,
    /// The `Content-Length` among them, parsed (every copy agreeing).
    pub length: Option<u64>,
    /// A `Date` is among them.
    pub date: bool,
    /// The [`name_bit`]s of their names: a name whose bit is not set is not among them,
    /// known without a look at the lines.
    pub names: u64,
}

/// A name's bit in [`RawFields::names`], the same in any case: from its length and its
/// first and last letters (`content-type` and `x-request-id`, both 12 bytes, differ).
pub fn name_bit(name: &[u8]) -> u64 {
    let (first, last) = match name {
        [] => (0, 0),
        [f, .., l] => (*f, *l),
        [f] => (*f, *f),
    };
    let mix = name.len() + 3 * usize::from(first | 0x20) + 5 * usize::from(last | 0x20);
    1 << (mix % 64)
}

impl RawFields {
    /// Each field line (CRLF included), with its name.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        // Line ends and colons found with `memchr`: a byte-at-a-time scan cost ~380
        // instructions an answer for an HTTP/2 client's three usual fields.
        let mut rest: &[u8] = &self.lines;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
            let (line, after) = rest.split_at(end);
            rest = after;
            let name = memchr::memchr(b':', line).map_or(&line[..0], |colon| &line[..colon]);
            Some((name, line))
        })
    }

    /// Each field's name (in the upstream's case) and value, without the whitespace
    /// around it (for HTTP/2, where a value may not start or end with any).
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields().map(|(name, line)| {
            (
                name,
                line[name.len()..].get(1..).unwrap_or(&[]).trim_ascii(),
            )
        })
    }
}

/// A response's fields: in its map, or as the upstream wrote them.
#[derive(Clone, Copy)]
pub enum Fields<'a> {
    Map(&'a HeaderMap),
    /// Without hop-by-hop fields (`Transfer-Encoding` among them).
    Raw(&'a RawFields),
}

/// One field line.
pub fn put_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    put_raw_field(out, name.as_str().as_bytes(), value.as_bytes());
}

/// One field line from a valid name and value that are not a `HeaderName`/`HeaderValue`
/// (ids written as text).
pub fn put_raw_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A chunk's size line: hexadecimal, then CRLF.
pub fn put_chunk_size(out: &mut Vec<u8>, n: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b"0123456789ABCDEF"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// A decimal `Content-Length` value (no sign, no spaces, at most 19 digits).
pub fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The trailer fields a message declares (`Trailer`), the only ones sent after it.
pub fn allowed_trailers(h: &HeaderMap) -> Vec<HeaderName> {
    h.get_all(header::TRAILER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn raw_fields_split_into_lines_names_and_trimmed_values() {
        let raw = |lines: &'static [u8]| RawFields {
            lines: Bytes::from_static(lines),
            length: None,
            date: false,
            names: 0,
        };
        let r = raw(b"Content-Type: application/json\r\nX-Empty:\r\nDate: \t Mon, 07 Dec \t\r\nX-Colons: a:b:c\r\n");
        let fields: Vec<(&[u8], &[u8])> = r.fields().collect();
        assert_eq!(
            fields,
            [
                (
                    &b"Content-Type"[..],
                    &b"Content-Type: application/json\r\n"[..]
                ),
                (b"X-Empty", b"X-Empty:\r\n"),
                (b"Date", b"Date: \t Mon, 07 Dec \t\r\n"),
                (b"X-Colons", b"X-Colons: a:b:c\r\n"),
            ]
        );
        let pairs: Vec<(&[u8], &[u8])> = r.pairs().collect();
        assert_eq!(
            pairs,
            [
                (&b"Content-Type"[..], &b"application/json"[..]),
                (b"X-Empty", b""),
                (b"Date", b"Mon, 07 Dec"),
                (b"X-Colons", b"a:b:c"),
            ]
        );
        // The lines joined again are the block; a last line without its end and one
        // without a colon (neither made by `upstream::wire`) are still lines.
        let r = raw(b"a: 1\nno colon\r\nb:2");
        let fields: Vec<(&[u8], &[u8])> = r.fields().collect();
        assert_eq!(
            fields,
            [
                (&b"a"[..], &b"a: 1\n"[..]),
                (b"", b"no colon\r\n"),
                (b"b", b"b:2"),
            ]
        );
        let joined: Vec<u8> = fields
            .iter()
            .flat_map(|(_, line)| line.iter().copied())
            .collect();
        assert_eq!(joined, b"a: 1\nno colon\r\nb:2");
        assert_eq!(raw(b"").fields().count(), 0);
        assert_eq!(raw(b"\n\n").fields().count(), 2);
    }

    #[test]
    fn a_name_has_one_bit_in_any_case_and_the_usual_ones_differ_from_the_stamps() {
        assert_eq!(name_bit(b"X-Request-ID"), name_bit(b"x-request-id"));
        assert_eq!(name_bit(b"x").count_ones() + name_bit(b"").count_ones(), 2);
        // A response's usual fields never make the writer look for the stamp's names.
        let stamp =
            name_bit(b"x-trace-id") | name_bit(b"x-request-id") | name_bit(b"x-correlation-id");
        for usual in [
            "content-type",
            "content-length",
            "date",
            "server",
            "cache-control",
            "etag",
            "vary",
            "set-cookie",
            "last-modified",
            "content-encoding",
        ] {
            assert_eq!(name_bit(usual.as_bytes()) & stamp, 0, "{usual}");
        }
    }

    use super::*;

    #[test]
    fn names_come_back_from_the_last_head_where_they_repeat() {
        let mut names = Names::default();
        let first = names.name(0, b"X-Request-Id").unwrap();
        assert_eq!(first.as_str(), "x-request-id");
        assert_eq!(names.name(1, b"host").unwrap(), header::HOST);
        // The next head: the same name, in another case, is the kept one (the same bytes,
        // not a new parse).
        let again = names.name(0, b"x-REQUEST-id").unwrap();
        assert_eq!(again, first);
        assert_eq!(again.as_str().as_ptr(), first.as_str().as_ptr());
        // Another name at that position is parsed, and kept in its place.
        let other = names.name(0, b"X-Correlation-Id").unwrap();
        assert_eq!(other.as_str(), "x-correlation-id");
        assert_ne!(other.as_str().as_ptr(), first.as_str().as_ptr());
        assert_eq!(
            names
                .name(0, b"x-correlation-id")
                .unwrap()
                .as_str()
                .as_ptr(),
            other.as_str().as_ptr()
        );
        // Invalid names are refused wherever they come, kept names or not.
        assert!(names.name(0, b"x-correlation id").is_err());
        assert!(names.name(1, b"ho st").is_err());
        assert!(names.name(7, b"").is_err());
        // Past what is kept, and after a gap, names still parse.
        assert_eq!(names.name(7, b"Accept").unwrap(), header::ACCEPT);
        for i in 0..Names::KEPT + 4 {
            let raw = format!("x-field-{i}");
            assert_eq!(names.name(i, raw.as_bytes()).unwrap().as_str(), raw);
            assert_eq!(names.name(i, raw.as_bytes()).unwrap().as_str(), raw);
        }
        assert_eq!(names.0.len(), Names::KEPT);
    }

    #[test]
    fn a_shared_copy_holds_the_bytes_at_every_size_boundary() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let edges = [0, 1, 64, 65, 216, 217, 472, 473, INLINE_MAX];
        for n in edges.into_iter().chain([INLINE_MAX + 1, 3000]) {
            let b = shared_copy(&data[..n]);
            assert_eq!(&b[..], &data[..n], "{n} bytes");
            // Slices and clones see the same bytes, and outlive the original.
            let tail = b.slice(n / 2..);
            let whole = b.clone();
            drop(b);
            assert_eq!(&tail[..], &data[n / 2..n], "{n} bytes, the tail");
            assert_eq!(&whole[..], &data[..n], "{n} bytes, a clone");
        }
    }

    #[test]
    fn a_recycled_header_map_comes_back_empty_with_its_room() {
        // A thread of its own: the pool is per thread.
        std::thread::spawn(|| {
            let mut m = header_map(12);
            m.insert(header::COOKIE, HeaderValue::from_static("session=secret"));
            m.append(header::ACCEPT, HeaderValue::from_static("a"));
            m.append(header::ACCEPT, HeaderValue::from_static("b"));
            let room = m.capacity();
            recycle(m);
            let again = header_map(4);
            assert!(again.is_empty());
            assert_eq!(again.keys_len(), 0);
            assert!(again.get(header::COOKIE).is_none());
            assert_eq!(again.capacity(), room, "the same map, not a new one");
            // The pool is empty again: a new map.
            assert_eq!(
                header_map(4).capacity(),
                HeaderMap::<HeaderValue>::with_capacity(4).capacity()
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_pool_keeps_neither_huge_maps_nor_more_than_its_bound() {
        std::thread::spawn(|| {
            let mut big = HeaderMap::with_capacity(200);
            big.insert(header::HOST, HeaderValue::from_static("x"));
            recycle(big);
            assert!(header_map(1).capacity() < 200, "a huge map is not kept");
            for _ in 0..SPARE_MAPS + 10 {
                recycle(HeaderMap::<HeaderValue>::with_capacity(12));
            }
            assert_eq!(SPARE.with(|s| s.borrow().len()), SPARE_MAPS);
        })
        .join()
        .unwrap();
    }

    fn decode_all(wire: &[u8], splits: usize) -> Result<(Vec<u8>, Option<HeaderMap>), String> {
        let mut inbox = Inbox::new(8);
        let mut state = Chunk::Size;
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match decode(&mut inbox, &mut state, "request")? {
                Decoded::Data(b) => out.extend_from_slice(&b),
                Decoded::End(t) => return Ok((out, t)),
                Decoded::More => {
                    if fed == wire.len() {
                        return Err("ended early".into());
                    }
                    let space = inbox.space(1024, "test").map_err(|e| e.to_string())?;
                    let n = space.len().min(splits).min(wire.len() - fed);
                    space[..n].copy_from_slice(&wire[fed..fed + n]);
                    fed += n;
                    inbox.filled(n, 1024);
                }
            }
        }
    }

    #[test]
    fn chunks_and_trailers_decode_however_they_arrive() {
        let wire =
            b"5;ext=1\r\nhello\r\n1A\r\nhello world, 26 bytes long\r\n0\r\ngrpc-status: 0\r\n\r\n";
        for split in 1..wire.len() {
            let (body, trailers) = decode_all(wire, split).unwrap();
            assert_eq!(body, b"hellohello world, 26 bytes long", "split {split}");
            assert_eq!(trailers.unwrap()["grpc-status"], "0");
        }
        assert!(decode_all(b"x\r\n", 64).is_err());
        assert!(
            decode_all(b"2\r\nabX", 64).is_err(),
            "data not ended by CRLF"
        );
        assert_eq!(decode_all(b"0\r\n\r\n", 64).unwrap(), (Vec::new(), None));
    }

    #[test]
    fn chunk_sizes_are_written_in_hex() {
        let mut out = Vec::new();
        for n in [0, 9, 10, 26, 4096, usize::MAX] {
            out.clear();
            put_chunk_size(&mut out, n);
            assert_eq!(out, format!("{n:X}\r\n").into_bytes());
        }
    }

    #[test]
    fn the_inbox_grows_when_full_and_shrinks_when_idle() {
        let mut inbox = Inbox::new(4);
        let n = inbox.space(16, "head").unwrap().len();
        assert_eq!(n, 4);
        inbox.filled(4, 16);
        assert_eq!(inbox.space(16, "head").unwrap().len(), 4, "doubled");
        inbox.filled(4, 16);
        inbox.space(16, "head").unwrap();
        inbox.filled(8, 16);
        let e = inbox.space(16, "head").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::OutOfMemory);
        inbox.consume(16);
        inbox.idle();
        assert_eq!(inbox.space(16, "head").unwrap().len(), 4);
    }
}
