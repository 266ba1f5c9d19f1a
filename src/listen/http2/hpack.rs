//! HPACK (RFC 7541): the request side's decoder, with its dynamic table, and the response
//! side's encoder.
//!
//! The encoder never indexes: every field is a literal "without indexing" (or "never
//! indexed" for values made per request or sensitive), its name from the static table where
//! it is there, its value as raw bytes. It starts each connection by setting the peer's
//! dynamic table to size 0, so nothing has to be tracked on either side. That is what the
//! `h2` crate's encoder spends most of its time on: inserting and evicting entries, and
//! Huffman-coding every value, ~5,900 instructions a response in the profile in
//! benches/README.md (ours: ~30 ns, `cargo bench --bench hot_path -- hpack`). The bytes
//! that indexing and Huffman would save are a few dozen a response.

use bytes::Bytes;

use super::huffman;

/// RFC 7541 Appendix A: the static table, from index 1.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// What an entry costs in the dynamic table besides its bytes (RFC 7541, 4.1).
const ENTRY_OVERHEAD: usize = 32;

/// Why a header block was refused. Each one is a connection error of type
/// COMPRESSION_ERROR (RFC 9113, 4.3), except [`Error::TooLarge`], which the connection may
/// answer per stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The block ended inside a representation.
    Truncated,
    /// An integer past what this decoder takes (2^32 - 1).
    IntegerOverflow,
    /// Index 0, or past the end of both tables.
    BadIndex,
    /// A Huffman-coded string with EOS in it or bad padding.
    Huffman(huffman::HuffmanError),
    /// A table size update above the size we allowed, or after a field.
    BadSizeUpdate,
    /// The decoded fields, 32 bytes each counted, are over the list size we allow.
    TooLarge,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Truncated => f.write_str("header block ends inside a field"),
            Error::IntegerOverflow => f.write_str("integer too large in header block"),
            Error::BadIndex => f.write_str("header block refers to no table entry"),
            Error::Huffman(h) => write!(f, "bad Huffman string in header block ({h:?})"),
            Error::BadSizeUpdate => f.write_str("bad dynamic table size update"),
            Error::TooLarge => f.write_str("header list over the size allowed"),
        }
    }
}

impl std::error::Error for Error {}

/// One decoded field. Names are as they came: HTTP/2 requires them lowercase, and checking
/// that is the caller's job (a malformed request, not a compression error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Bytes,
    pub value: Bytes,
    /// Sent as "never indexed": re-encode it the same way.
    pub sensitive: bool,
}

/// The request side's HPACK state, one per connection.
#[derive(Debug)]
pub struct Decoder {
    /// Newest first.
    table: std::collections::VecDeque<(Bytes, Bytes)>,
    /// Bytes of the table, entries' overhead counted.
    size: usize,
    /// The size the peer's latest update set.
    max_size: usize,
    /// The most it may set: our SETTINGS_HEADER_TABLE_SIZE.
    allowed: usize,
    /// Our SETTINGS_MAX_HEADER_LIST_SIZE.
    max_list: usize,
    /// Reused for Huffman-coded strings.
    scratch: Vec<u8>,
}

impl Decoder {
    /// `table_size`: the SETTINGS_HEADER_TABLE_SIZE we announce (4096 is HTTP/2's default);
    /// `max_list`: the SETTINGS_MAX_HEADER_LIST_SIZE we enforce.
    pub fn new(table_size: usize, max_list: usize) -> Decoder {
        Decoder {
            table: std::collections::VecDeque::new(),
            size: 0,
            max_size: table_size,
            allowed: table_size,
            max_list,
            scratch: Vec::new(),
        }
    }

    /// The dynamic table's size, overhead counted (RFC 7541, 4.1).
    pub fn table_size(&self) -> usize {
        self.size
    }

    /// Decodes one whole header block (the HEADERS frame's fragment and its CONTINUATIONs
    /// joined), calling `field` for each field in order. On an error the connection has
    /// to end: the table may be half updated.
    pub fn decode(&mut self, block: &Bytes, mut field: impl FnMut(Field)) -> Result<(), Error> {
        let mut at = 0;
        let mut list = 0usize;
        let mut first = true;
        while at < block.len() {
            let b = block[at];
            let (name, value, sensitive) = if b & 0x80 != 0 {
                let index = integer(block, &mut at, 7)?;
                let (name, value) = self.entry(index)?;
                (name, value, false)
            } else if b & 0x40 != 0 {
                let (name, value) = self.literal(block, &mut at, 6)?;
                self.insert(name.clone(), value.clone());
                (name, value, false)
            } else if b & 0x20 != 0 {
                // Only before the block's first field (RFC 7541, 4.2).
                if !first {
                    return Err(Error::BadSizeUpdate);
                }
                let size = integer(block, &mut at, 5)?;
                if size > self.allowed {
                    return Err(Error::BadSizeUpdate);
                }
                self.max_size = size;
                self.evict(0);
                continue;
            } else {
                let (name, value) = self.literal(block, &mut at, 4)?;
                (name, value, b & 0x10 != 0)
            };
            first = false;
            list += name.len() + value.len() + ENTRY_OVERHEAD;
            if list > self.max_list {
                return Err(Error::TooLarge);
            }
            field(Field {
                name,
                value,
                sensitive,
            });
        }
        Ok(())
    }

    /// The entry at `index`: the static table's, then the dynamic table's.
    fn entry(&self, index: usize) -> Result<(Bytes, Bytes), Error> {
        match index {
            0 => Err(Error::BadIndex),
            i if i <= STATIC.len() => {
                let (n, v) = STATIC[i - 1];
                Ok((
                    Bytes::from_static(n.as_bytes()),
                    Bytes::from_static(v.as_bytes()),
                ))
            }
            i => self
                .table
                .get(i - STATIC.len() - 1)
                .cloned()
                .ok_or(Error::BadIndex),
        }
    }

    /// A literal field whose first byte's low `prefix` bits index its name (0: a literal
    /// name follows).
    fn literal(
        &mut self,
        block: &Bytes,
        at: &mut usize,
        prefix: u8,
    ) -> Result<(Bytes, Bytes), Error> {
        let index = integer(block, at, prefix)?;
        let name = if index == 0 {
            self.string(block, at)?
        } else {
            self.entry(index)?.0
        };
        let value = self.string(block, at)?;
        Ok((name, value))
    }

    /// A string literal: a slice of the block, or decoded from Huffman.
    fn string(&mut self, block: &Bytes, at: &mut usize) -> Result<Bytes, Error> {
        let coded = *block.get(*at).ok_or(Error::Truncated)? & 0x80 != 0;
        let len = integer(block, at, 7)?;
        let end = at.checked_add(len).ok_or(Error::Truncated)?;
        if end > block.len() {
            return Err(Error::Truncated);
        }
        let raw = &block[*at..end];
        *at = end;
        if !coded {
            return Ok(block.slice(end - len..end));
        }
        self.scratch.clear();
        huffman::decode(raw, &mut self.scratch).map_err(Error::Huffman)?;
        Ok(Bytes::copy_from_slice(&self.scratch))
    }

    fn insert(&mut self, name: Bytes, value: Bytes) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            // Larger than the whole table: it empties the table and is not added.
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.table.push_front((name, value));
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + ENTRY_OVERHEAD,
                None => break,
            }
        }
    }
}

/// Reads an integer with an `prefix`-bit prefix at `*at` (RFC 7541, 5.1).
fn integer(block: &[u8], at: &mut usize, prefix: u8) -> Result<usize, Error> {
    let mask = (1u32 << prefix) - 1;
    let first = u32::from(*block.get(*at).ok_or(Error::Truncated)?) & mask;
    *at += 1;
    if first < mask {
        return Ok(first as usize);
    }
    let mut value = u64::from(mask);
    let mut shift = 0;
    loop {
        let b = *block.get(*at).ok_or(Error::Truncated)?;
        *at += 1;
        value += u64::from(b & 0x7f) << shift;
        if value > u64::from(u32::MAX) {
            return Err(Error::IntegerOverflow);
        }
        if b & 0x80 == 0 {
            return Ok(value as usize);
        }
        shift += 7;
        if shift > 28 {
            return Err(Error::IntegerOverflow);
        }
    }
}

/// Appends an integer with an `prefix`-bit prefix; `flags` are the first byte's high bits.
fn put_integer(out: &mut Vec<u8>, flags: u8, prefix: u8, value: usize) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// [`Encoder::field`] for a lowercase name given as bytes.
fn field_bytes(name: &[u8], value: &[u8], sensitive: bool, out: &mut Vec<u8>) {
    let flags = if sensitive { 0x10 } else { 0x00 };
    put_field(out, flags, static_name(name), name, false, value);
}

/// A field as a literal without indexing (`flags` 0x00) or never indexed (0x10): by the
/// static table's `index` of its name when there is one, else with the name, lowercased
/// on the way when `any_case`.
fn put_field(
    out: &mut Vec<u8>,
    flags: u8,
    index: Option<usize>,
    name: &[u8],
    any_case: bool,
    value: &[u8],
) {
    // The usual field: every integer fits its first byte (or, for a static name's index, a
    // second: they are all 15 or more), so the framing is known up front and goes in with
    // one check for room, not as a call and a `push` per integer (~25 instructions each,
    // ten an answer).
    let short = value.len() < 0x7f && name.len() < 0x7f;
    match index {
        Some(i) if short => {
            debug_assert!((15..15 + 0x7f).contains(&i));
            out.reserve(3 + value.len());
            out.extend_from_slice(&[flags | 0x0f, (i - 15) as u8]);
        }
        Some(i) => put_integer(out, flags, 4, i),
        None => {
            out.reserve(3 + name.len() + value.len());
            if short {
                out.extend_from_slice(&[flags, name.len() as u8]);
            } else {
                out.push(flags);
                put_integer(out, 0x00, 7, name.len());
            }
            if any_case {
                out.extend(name.iter().map(u8::to_ascii_lowercase));
            } else {
                out.extend_from_slice(name);
            }
        }
    }
    if short {
        out.push(value.len() as u8);
    } else {
        put_integer(out, 0x00, 7, value.len());
    }
    out.extend_from_slice(value);
}

/// The static table's names a response carries, with their indices. Only the names with
/// an empty value in the table can be looked up by name alone; `:status` is handled by
/// [`Encoder::status`].
const STATIC_NAMES: [(&[u8], u8); 27] = [
    (b"accept-ranges", 18),
    (b"access-control-allow-origin", 20),
    (b"age", 21),
    (b"allow", 22),
    (b"cache-control", 24),
    (b"content-disposition", 25),
    (b"content-encoding", 26),
    (b"content-language", 27),
    (b"content-length", 28),
    (b"content-location", 29),
    (b"content-range", 30),
    (b"content-type", 31),
    (b"date", 33),
    (b"etag", 34),
    (b"expires", 36),
    (b"last-modified", 44),
    (b"link", 45),
    (b"location", 46),
    (b"proxy-authenticate", 48),
    (b"refresh", 52),
    (b"retry-after", 53),
    (b"server", 54),
    (b"set-cookie", 55),
    (b"strict-transport-security", 56),
    (b"vary", 59),
    (b"via", 60),
    (b"www-authenticate", 61),
];

/// Where a name may sit in [`NAME_SLOTS`]: from its length and its first and last
/// letters, the same in any case. No two of [`STATIC_NAMES`] share a slot (checked when
/// the table is built, at compile time), so a lookup is one comparison: a `match` on the
/// names compared a name with each of its length in turn, ~60 instructions a field.
const fn name_slot(len: usize, first: u8, last: u8) -> usize {
    (5 * len + 12 * (first | 0x20) as usize + 6 * (last | 0x20) as usize) % 64
}

const NAME_SLOTS: [(&[u8], u8); 64] = {
    let mut slots: [(&[u8], u8); 64] = [(b"", 0); 64];
    let mut i = 0;
    while i < STATIC_NAMES.len() {
        let (name, index) = STATIC_NAMES[i];
        let slot = name_slot(name.len(), name[0], name[name.len() - 1]);
        assert!(slots[slot].0.is_empty(), "two static names share a slot");
        slots[slot] = (name, index);
        i += 1;
    }
    slots
};

/// The static name in `name`'s slot and its index, if the slot holds one.
fn slot_of(name: &[u8]) -> Option<(&'static [u8], u8)> {
    let [first, .., last] = name else {
        return None;
    };
    let (kept, index) = NAME_SLOTS[name_slot(name.len(), *first, *last)];
    (!kept.is_empty()).then_some((kept, index))
}

/// The static table's index of a lowercase name.
fn static_name(name: &[u8]) -> Option<usize> {
    slot_of(name).and_then(|(kept, index)| (kept == name).then_some(usize::from(index)))
}

/// The static table's index of a name in any case.
fn static_name_any_case(name: &[u8]) -> Option<usize> {
    slot_of(name)
        .and_then(|(kept, index)| crate::http1::same_name(kept, name).then_some(usize::from(index)))
}

/// The response side's HPACK state, one per connection: whether the peer's table has been
/// set to size 0 yet.
#[derive(Debug, Default)]
pub struct Encoder {
    emptied: bool,
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Starts a header block: the first one on the connection sets the peer's dynamic
    /// table to size 0 (RFC 7541, 6.3), since nothing will be indexed.
    pub fn begin(&mut self, out: &mut Vec<u8>) {
        if !self.emptied {
            put_integer(out, 0x20, 5, 0);
            self.emptied = true;
        }
    }

    /// The peer changed its SETTINGS_HEADER_TABLE_SIZE: say again that ours is 0 at the
    /// next block's start (RFC 7541, 4.2).
    pub fn table_size_changed(&mut self) {
        self.emptied = false;
    }

    /// `:status`: indexed when the static table has it, else a literal.
    pub fn status(&mut self, code: u16, out: &mut Vec<u8>) {
        let index = match code {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => 0,
        };
        if index != 0 {
            put_integer(out, 0x80, 7, index);
            return;
        }
        put_integer(out, 0x00, 4, 8);
        let digits = [
            b'0' + (code / 100 % 10) as u8,
            b'0' + (code / 10 % 10) as u8,
            b'0' + (code % 10) as u8,
        ];
        put_integer(out, 0x00, 7, 3);
        out.extend_from_slice(&digits);
    }

    /// A field as a literal without indexing, or never indexed when `sensitive`. `name`
    /// must be lowercase (as `http::HeaderName`s are).
    pub fn field(&mut self, name: &str, value: &[u8], sensitive: bool, out: &mut Vec<u8>) {
        field_bytes(name.as_bytes(), value, sensitive, out);
    }

    /// [`Self::field`] for a valid name in any case (as an HTTP/1.1 upstream wrote it): it
    /// goes out in lowercase, as HTTP/2 requires.
    pub fn field_any_case(&mut self, name: &[u8], value: &[u8], out: &mut Vec<u8>) {
        // Looked up in any case: no lowercased copy of the name first (~90 instructions a
        // field), which only a name outside the static table needs, on its way out.
        put_field(out, 0x00, static_name_any_case(name), name, true, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::http2::hex;

    fn decode(d: &mut Decoder, block: &str) -> Result<Vec<(String, String)>, Error> {
        let mut out = Vec::new();
        d.decode(&hex(block), |f| {
            out.push((
                String::from_utf8(f.name.to_vec()).unwrap(),
                String::from_utf8(f.value.to_vec()).unwrap(),
            ))
        })?;
        Ok(out)
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn integers_as_in_rfc_c1() {
        for (value, prefix, bytes) in [
            (10usize, 5u8, vec![0x0a]),
            (1337, 5, vec![0x1f, 0x9a, 0x0a]),
            (42, 8, vec![0x2a]),
            (31, 5, vec![0x1f, 0x00]),
        ] {
            let mut out = Vec::new();
            put_integer(&mut out, 0, prefix, value);
            assert_eq!(out, bytes);
            let mut at = 0;
            assert_eq!(integer(&out, &mut at, prefix), Ok(value));
            assert_eq!(at, out.len());
        }
        // Past 2^32 - 1, and a continuation that never ends.
        let mut at = 0;
        assert_eq!(
            integer(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x0f], &mut at, 5),
            Err(Error::IntegerOverflow)
        );
        let mut at = 0;
        assert_eq!(
            integer(&[0x1f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01], &mut at, 5),
            Err(Error::IntegerOverflow)
        );
        let mut at = 0;
        assert_eq!(integer(&[0x1f, 0x80], &mut at, 5), Err(Error::Truncated));
    }

    // RFC 7541, C.2: one field each, from an empty table.
    #[test]
    fn single_fields_as_in_rfc_c2() {
        let mut d = Decoder::new(4096, 1 << 20);
        let f = decode(
            &mut d,
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        );
        assert_eq!(f, Ok(pairs(&[("custom-key", "custom-header")])));
        assert_eq!(d.table_size(), 55);

        let mut d = Decoder::new(4096, 1 << 20);
        let f = decode(&mut d, "040c 2f73 616d 706c 652f 7061 7468");
        assert_eq!(f, Ok(pairs(&[(":path", "/sample/path")])));
        assert_eq!(d.table_size(), 0);

        let mut d = Decoder::new(4096, 1 << 20);
        let mut sensitive = Vec::new();
        d.decode(&hex("1008 7061 7373 776f 7264 0673 6563 7265 74"), |f| {
            sensitive.push((f.name, f.value, f.sensitive))
        })
        .unwrap();
        assert_eq!(
            sensitive,
            vec![(Bytes::from("password"), Bytes::from("secret"), true)]
        );

        let mut d = Decoder::new(4096, 1 << 20);
        assert_eq!(decode(&mut d, "82"), Ok(pairs(&[(":method", "GET")])));
    }

    // RFC 7541, C.3 (raw strings) and C.4 (Huffman): three requests on one connection.
    #[test]
    fn requests_as_in_rfc_c3_and_c4() {
        for blocks in [
            [
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ],
            [
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
        ] {
            let mut d = Decoder::new(4096, 1 << 20);
            let common = [
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ];
            assert_eq!(decode(&mut d, blocks[0]), Ok(pairs(&common)));
            assert_eq!(d.table_size(), 57);
            let mut second = common.to_vec();
            second.push(("cache-control", "no-cache"));
            assert_eq!(decode(&mut d, blocks[1]), Ok(pairs(&second)));
            assert_eq!(d.table_size(), 110);
            let third = [
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ];
            assert_eq!(decode(&mut d, blocks[2]), Ok(pairs(&third)));
            assert_eq!(d.table_size(), 164);
        }
    }

    // RFC 7541, C.5 (raw) and C.6 (Huffman): three responses with a 256-byte table, so
    // that entries are evicted.
    #[test]
    fn responses_with_eviction_as_in_rfc_c5_and_c6() {
        let first = [
            (":status", "302"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com"),
        ];
        let second = [
            (":status", "307"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com"),
        ];
        let third = [
            (":status", "200"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
            ("location", "https://www.example.com"),
            ("content-encoding", "gzip"),
            (
                "set-cookie",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
        ];
        for blocks in [
            [
                "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230
                 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65
                 7861 6d70 6c65 2e63 6f6d",
                "4803 3330 37c1 c0bf",
                "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220
                 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157
                 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076
                 6572 7369 6f6e 3d31",
            ],
            [
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0
                 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                "4883 640e ffc1 c0bf",
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b
                 d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27
                 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ],
        ] {
            let mut d = Decoder::new(256, 1 << 20);
            assert_eq!(decode(&mut d, blocks[0]), Ok(pairs(&first)));
            assert_eq!(d.table_size(), 222);
            assert_eq!(decode(&mut d, blocks[1]), Ok(pairs(&second)));
            assert_eq!(d.table_size(), 222);
            assert_eq!(decode(&mut d, blocks[2]), Ok(pairs(&third)));
            assert_eq!(d.table_size(), 215);
        }
    }

    #[test]
    fn bad_blocks_are_refused() {
        let mut d = Decoder::new(4096, 1 << 20);
        // Index 0, and one past both tables.
        assert_eq!(decode(&mut d, "80"), Err(Error::BadIndex));
        assert_eq!(decode(&mut d, "be"), Err(Error::BadIndex));
        // A literal whose value is cut short.
        assert_eq!(decode(&mut d, "0405 2f61"), Err(Error::Truncated));
        // A string length past the end, and one that would overflow.
        assert_eq!(decode(&mut d, "047f ffff ff0f"), Err(Error::Truncated));
        // Huffman with a whole byte of padding.
        assert!(matches!(
            decode(&mut d, "0482 1fff"),
            Err(Error::Huffman(_))
        ));
        // A table size update above what we allowed, and one after a field.
        assert_eq!(decode(&mut d, "3fe2 1f"), Err(Error::BadSizeUpdate));
        assert_eq!(
            decode(&mut Decoder::new(4096, 1 << 20), "3fe1 1f"),
            Ok(vec![])
        );
        assert_eq!(decode(&mut d, "8220"), Err(Error::BadSizeUpdate));
        // Allowed at the start: the table shrinks to it.
        let mut d = Decoder::new(4096, 1 << 20);
        decode(&mut d, "4003 6162 6303 7879 7a").unwrap();
        assert_eq!(d.table_size(), 38);
        assert_eq!(decode(&mut d, "20 82"), Ok(pairs(&[(":method", "GET")])));
        assert_eq!(d.table_size(), 0);
        assert_eq!(decode(&mut d, "be"), Err(Error::BadIndex));
    }

    #[test]
    fn the_header_list_size_is_enforced() {
        // ":method: GET" counts 7 + 3 + 32 = 42.
        let mut d = Decoder::new(4096, 84);
        assert!(decode(&mut d, "8282").is_ok());
        assert_eq!(decode(&mut d, "828282"), Err(Error::TooLarge));
    }

    #[test]
    fn an_entry_larger_than_the_table_empties_it() {
        let mut d = Decoder::new(40, 1 << 20);
        decode(&mut d, "4001 6101 62").unwrap();
        assert_eq!(d.table_size(), 34);
        // 1 + 8 + 32 = 41 > 40: not added, and the table is emptied.
        decode(&mut d, "4001 6108 3132 3334 3536 3738").unwrap();
        assert_eq!(d.table_size(), 0);
        assert_eq!(decode(&mut d, "be"), Err(Error::BadIndex));
    }

    #[test]
    fn names_in_any_case_go_out_in_lowercase() {
        let mut e = Encoder::new();
        let (mut any, mut lower) = (Vec::new(), Vec::new());
        // Two names of the static table's (sent as their index), one of exactly the room's
        // 28 bytes, and one longer than the room (a literal, lowercased on its way out).
        for (name, value) in [
            ("Content-Type", "text/plain"),
            ("WWW-Authenticate", "Basic"),
            ("X-Twenty-Eight-Bytes-Long-Nm", "28"),
            ("An-Unusually-Long-Field-Name-Here", "long"),
        ] {
            e.field_any_case(name.as_bytes(), value.as_bytes(), &mut any);
            let name = name.to_ascii_lowercase();
            e.field(&name, value.as_bytes(), false, &mut lower);
        }
        assert_eq!(any, lower);
        assert_eq!(any[0], 0x0f, "content-type by its index (31)");
        let mut d = Decoder::new(4096, 1 << 20);
        let mut got = Vec::new();
        d.decode(&Bytes::from(any), |f| got.push(f)).unwrap();
        let names: Vec<_> = got.iter().map(|f| &f.name[..]).collect();
        assert_eq!(
            names,
            [
                &b"content-type"[..],
                b"www-authenticate",
                b"x-twenty-eight-bytes-long-nm",
                b"an-unusually-long-field-name-here"
            ]
        );
    }

    #[test]
    fn what_the_encoder_writes_decodes() {
        let mut e = Encoder::new();
        let mut out = Vec::new();
        e.begin(&mut out);
        e.status(200, &mut out);
        e.field("content-type", b"application/json", false, &mut out);
        e.field(
            "x-trace-id",
            b"0af7651916cd43dd8448eb211c80319c",
            true,
            &mut out,
        );
        e.field("content-length", b"436", false, &mut out);
        assert_eq!(&out[..3], &[0x20, 0x88, 0x0f]);
        let mut d = Decoder::new(4096, 1 << 20);
        let mut got = Vec::new();
        d.decode(&Bytes::from(out), |f| got.push(f)).unwrap();
        let fields: Vec<_> = got
            .iter()
            .map(|f| (&f.name[..], &f.value[..], f.sensitive))
            .collect();
        assert_eq!(
            fields,
            vec![
                (&b":status"[..], &b"200"[..], false),
                (b"content-type", b"application/json", false),
                (b"x-trace-id", b"0af7651916cd43dd8448eb211c80319c", true),
                (b"content-length", b"436", false),
            ]
        );
        // Nothing indexed: the table stays empty.
        assert_eq!(d.table_size(), 0);

        // Only the first block carries the size update; a status the table lacks is a
        // literal; a long value takes a multi-byte length.
        let mut out = Vec::new();
        e.begin(&mut out);
        e.status(503, &mut out);
        let long = vec![b'a'; 300];
        e.field("server", &long, false, &mut out);
        let mut got = Vec::new();
        d.decode(&Bytes::from(out.clone()), |f| got.push(f))
            .unwrap();
        assert_eq!(out[0], 0x08);
        assert_eq!(
            (&got[0].name[..], &got[0].value[..]),
            (&b":status"[..], &b"503"[..])
        );
        assert_eq!(
            (&got[1].name[..], got[1].value.len()),
            (&b"server"[..], 300)
        );

        e.table_size_changed();
        let mut out = Vec::new();
        e.begin(&mut out);
        assert_eq!(out, [0x20]);
    }

    /// Every name the encoder looks up is found at its index in RFC 7541's static table
    /// (Appendix A, as the decoder has it), in any case where asked; every other name of
    /// that table, and names sharing a slot's length and end letters, are not.
    #[test]
    fn static_names_are_found_at_their_rfc_7541_index_in_any_case() {
        for (name, index) in STATIC_NAMES {
            let index = usize::from(index);
            assert_eq!(STATIC[index - 1], (std::str::from_utf8(name).unwrap(), ""));
            assert_eq!(static_name(name), Some(index));
            assert_eq!(static_name_any_case(name), Some(index));
            let upper = name.to_ascii_uppercase();
            assert_eq!(static_name(&upper), None, "only lowercase");
            assert_eq!(static_name_any_case(&upper), Some(index));
            // The same length, first and last letter: the same slot, another name.
            let mut other = name.to_vec();
            if other.len() > 2 {
                let mid = other.len() / 2;
                other[mid] ^= 0x01;
                assert_eq!(static_name(&other), None);
                assert_eq!(static_name_any_case(&other), None);
            }
        }
        let kept: Vec<&[u8]> = STATIC_NAMES.iter().map(|(n, _)| *n).collect();
        for (name, _) in STATIC.iter().filter(|(n, _)| !kept.contains(&n.as_bytes())) {
            assert_eq!(static_name(name.as_bytes()), None, "{name}");
        }
        for name in [
            &b""[..],
            b"a",
            b"x-request-id",
            b"x-trace-id",
            b"dat",
            b"dates",
        ] {
            assert_eq!(static_name(name), None);
            assert_eq!(static_name_any_case(name), None);
        }
    }

    /// The short form writes what RFC 7541's integer rules (5.1, 6.2.2, 6.2.3) give, on
    /// both sides of where it stops: lengths of 126 fit a first byte, 127 takes two.
    #[test]
    fn fields_on_both_sides_of_one_byte_lengths_follow_rfc_7541() {
        let reference = |name: &[u8], value: &[u8], sensitive: bool| {
            let flags = if sensitive { 0x10 } else { 0x00 };
            let mut out = Vec::new();
            // The table searched in full, not through the slots under test.
            match STATIC_NAMES.iter().find(|(n, _)| *n == name) {
                Some((_, i)) => put_integer(&mut out, flags, 4, usize::from(*i)),
                None => {
                    out.push(flags);
                    put_integer(&mut out, 0x00, 7, name.len());
                    out.extend_from_slice(name);
                }
            }
            put_integer(&mut out, 0x00, 7, value.len());
            out.extend_from_slice(value);
            out
        };
        let names = [
            b"content-type".to_vec(),
            b"www-authenticate".to_vec(),
            b"x-request-id".to_vec(),
            vec![b'n'; 126],
            vec![b'n'; 127],
            vec![b'n'; 200],
        ];
        let mut d = Decoder::new(4096, 1 << 20);
        for name in &names {
            for len in [0, 1, 126, 127, 128, 300] {
                let value: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                for sensitive in [false, true] {
                    let mut out = vec![0xee];
                    field_bytes(name, &value, sensitive, &mut out);
                    assert_eq!(out[0], 0xee, "what was there before stays");
                    assert_eq!(out[1..], reference(name, &value, sensitive)[..]);
                    let mut got = Vec::new();
                    d.decode(&Bytes::copy_from_slice(&out[1..]), |f| got.push(f))
                        .unwrap();
                    assert_eq!(got.len(), 1);
                    assert_eq!(
                        (&got[0].name[..], &got[0].value[..], got[0].sensitive),
                        (&name[..], &value[..], sensitive)
                    );
                }
            }
        }
    }

    #[test]
    fn raw_strings_are_slices_of_the_block() {
        let block = hex("040c 2f73 616d 706c 652f 7061 7468");
        let mut d = Decoder::new(4096, 1 << 20);
        let mut value = Bytes::new();
        d.decode(&block, |f| value = f.value).unwrap();
        assert_eq!(value.as_ptr(), block[2..].as_ptr());
    }
}
