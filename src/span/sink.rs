//! The one description of what an exchange's spans contain, handed piece by piece to a
//! [`SpanSink`]: the OTLP encoder on the export thread writes it straight into protobuf
//! bytes, the trace viewer into JSON. Everything is borrowed from the exchange, so describing
//! a span allocates nothing.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::SystemTime;

use http::header::HeaderName;

use crate::capture::Headers;

/// A span's kind, numbered as OTLP numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Server = 2,
    Client = 3,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Server => "SERVER",
            Kind::Client => "CLIENT",
        }
    }
}

/// The fixed parts of one span, given before its attributes.
#[derive(Clone, Copy, Debug)]
pub struct SpanHead<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The parent span's id, and whether it is remote (the caller's).
    pub parent: Option<([u8; 8], bool)>,
    /// W3C trace flags.
    pub flags: u8,
    /// The W3C `tracestate` value, empty when there is none.
    pub trace_state: &'a str,
    pub kind: Kind,
    /// The name: `.0`, then a space and `.1` when there is one (`GET /users/{id}`).
    pub name: (&'a str, Option<&'a str>),
    /// Start and end, nanoseconds since the Unix epoch (as OTLP has them).
    pub start: u64,
    pub end: u64,
}

/// Nanoseconds since the Unix epoch; 0 before it.
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `d` in nanoseconds, saturating.
pub fn nanos_of(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// An attribute key: a static prefix and the rest (`baggage.` + `tenant`). Most keys are
/// the prefix alone.
#[derive(Clone, Copy, Debug)]
pub struct Key<'a>(pub &'static str, pub &'a str);

impl Key<'static> {
    pub const fn of(key: &'static str) -> Key<'static> {
        Key(key, "")
    }
}

impl Key<'_> {
    pub fn len(&self) -> usize {
        self.0.len() + self.1.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An attribute value.
#[derive(Clone, Copy, Debug)]
pub enum Val<'a> {
    Str(&'a str),
    /// Text that is visible ASCII by construction (a correlation id, checked when it came
    /// or made by tracegate), as bytes: written as a string without a UTF-8 check of its
    /// own, which cost ~190 instructions a span for a 36-byte id.
    Ascii(&'a [u8]),
    /// A string made of these parts, in order (`url.full`).
    Parts(&'a [&'a str]),
    Int(i64),
    /// The values of one captured header, in arrival order: a string array.
    Header(&'a Headers, &'a HeaderName),
}

impl<'a> Val<'a> {
    /// The values of a `Header` array.
    pub fn header_values(
        all: &'a Headers,
        name: &'a HeaderName,
    ) -> impl Iterator<Item = &'a str> + 'a {
        all.iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A value fixed when a [`Block`] is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fixed {
    Str(Cow<'static, str>),
    Int(i64),
}

/// Attributes whose values many spans share: those of an upstream endpoint (every CLIENT
/// span to it), the static ones of a route. The OTLP encoder keeps its encoding of them,
/// made the first time a span carries them, and copies it into each span: one copy instead
/// of ~140 instructions per attribute.
#[derive(Debug, Default)]
pub struct Block {
    attrs: Vec<(Cow<'static, str>, Fixed)>,
    /// The OTLP encoder's bytes: each attribute as a `Span.attributes` field.
    otlp: OnceLock<Box<[u8]>>,
}

impl Block {
    /// `attrs`: in the order they are described, each key once.
    pub fn new(attrs: Vec<(Cow<'static, str>, Fixed)>) -> Block {
        Block {
            attrs,
            otlp: OnceLock::new(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Key<'_>, Val<'_>)> {
        self.attrs.iter().map(|(k, v)| {
            let value = match v {
                Fixed::Str(s) => Val::Str(s),
                Fixed::Int(i) => Val::Int(*i),
            };
            (Key("", k), value)
        })
    }

    pub fn len(&self) -> usize {
        self.attrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }

    /// The same attributes but `key`'s (its own encoding is made when first asked for).
    pub fn without(&self, key: &str) -> Block {
        Block::new(
            self.attrs
                .iter()
                .filter(|(k, _)| k != key)
                .cloned()
                .collect(),
        )
    }

    /// The value of `key`, if the block has it.
    pub fn get(&self, key: &str) -> Option<&Fixed> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The OTLP encoding, made by `encode` the first time it is asked for.
    pub fn otlp(&self, encode: impl FnOnce(&Block) -> Box<[u8]>) -> &[u8] {
        self.otlp.get_or_init(|| encode(self))
    }
}

/// A string attribute whose key and value are fixed text, with its encoding as a
/// `Span.attributes` field made at compile time by [`fixed_attr!`].
#[derive(Debug)]
pub struct FixedAttr {
    pub key: &'static str,
    pub value: &'static str,
    pub otlp: &'static [u8],
}

/// `fixed_attr!("url.scheme", "http")`: a `&'static` [`FixedAttr`]. Key and value are
/// constant expressions, together under 128 bytes (checked at compile time).
macro_rules! fixed_attr {
    ($key:expr, $value:expr) => {{
        // Names no caller's expression is likely to use: an item of the block would hide
        // one of the caller's.
        const FIXED_ATTR_KEY: &str = $key;
        const FIXED_ATTR_VALUE: &str = $value;
        const FIXED_ATTR_LEN: usize =
            $crate::export::otlp::fixed_attr_len(FIXED_ATTR_KEY, FIXED_ATTR_VALUE);
        const FIXED_ATTR_OTLP: [u8; FIXED_ATTR_LEN] =
            $crate::export::otlp::fixed_attr::<FIXED_ATTR_LEN>(FIXED_ATTR_KEY, FIXED_ATTR_VALUE);
        static FIXED_ATTR: $crate::span::FixedAttr = $crate::span::FixedAttr {
            key: FIXED_ATTR_KEY,
            value: FIXED_ATTR_VALUE,
            otlp: &FIXED_ATTR_OTLP,
        };
        &FIXED_ATTR
    }};
}
pub(crate) use fixed_attr;

/// An attribute key that is fixed text, with the start of its encoding as a
/// `Span.attributes` field made at compile time by [`fixed_key!`]: the value is the
/// request's, the key's framing and bytes are one copy.
#[derive(Debug)]
pub struct FixedKey {
    pub key: &'static str,
    pub otlp: &'static [u8],
}

/// `fixed_key!("url.path")`: a `&'static` [`FixedKey`]. The key is a constant expression
/// of at most 121 bytes, room left for a value in one-byte lengths (checked at compile
/// time).
macro_rules! fixed_key {
    ($key:expr) => {{
        const FIXED_KEY: &str = $key;
        const FIXED_KEY_LEN: usize = $crate::export::otlp::fixed_key_len(FIXED_KEY);
        const FIXED_KEY_OTLP: [u8; FIXED_KEY_LEN] =
            $crate::export::otlp::fixed_key::<FIXED_KEY_LEN>(FIXED_KEY);
        static FIXED_KEY_ATTR: $crate::span::FixedKey = $crate::span::FixedKey {
            key: FIXED_KEY,
            otlp: &FIXED_KEY_OTLP,
        };
        &FIXED_KEY_ATTR
    }};
}
pub(crate) use fixed_key;

/// Where span content goes, in this order for each span: `begin`, any `attr`s and
/// `event`s, `end`.
pub trait SpanSink {
    fn begin(&mut self, head: &SpanHead<'_>);
    fn attr(&mut self, key: Key<'_>, value: Val<'_>);
    /// An attribute whose key and value are both fixed text (`http.request.method: GET`),
    /// with its OTLP encoding made at compile time.
    fn fixed(&mut self, attr: &'static FixedAttr) {
        self.attr(Key::of(attr.key), Val::Str(attr.value));
    }
    /// An attribute whose key is fixed text (`url.path`), the start of its OTLP encoding
    /// made at compile time.
    fn keyed(&mut self, key: &'static FixedKey, value: Val<'_>) {
        self.attr(Key::of(key.key), value);
    }
    /// Every attribute of `block`, in its order.
    fn block(&mut self, block: &Block) {
        for (k, v) in block.iter() {
            self.attr(k, v);
        }
    }
    /// `at`: nanoseconds since the Unix epoch.
    fn event(&mut self, name: &str, at: u64, attrs: &[(&'static str, Val<'_>)]);
    /// Ends the span: `error` is the status description of a failed span; `None` leaves
    /// the status unset.
    fn end(&mut self, error: Option<&str>);
}

/// An IP address as text, formatted on the stack.
pub struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl IpText {
    pub fn new(ip: IpAddr) -> IpText {
        let mut buf = [0u8; 48];
        let len = match ip {
            // Every request formats its peer (a span attribute, `X-Forwarded-For`), most
            // often IPv4: digit by digit, without the formatting machinery.
            IpAddr::V4(v4) => {
                let mut n = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        buf[n] = b'.';
                        n += 1;
                    }
                    if octet >= 100 {
                        buf[n] = b'0' + octet / 100;
                        n += 1;
                    }
                    if octet >= 10 {
                        buf[n] = b'0' + octet / 10 % 10;
                        n += 1;
                    }
                    buf[n] = b'0' + octet % 10;
                    n += 1;
                }
                n
            }
            IpAddr::V6(_) => {
                use std::io::Write as _;
                let mut rest = &mut buf[..];
                // The longest address text is 45 bytes: it always fits.
                let _ = write!(rest, "{ip}");
                48 - rest.len()
            }
        };
        IpText { buf, len }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_formats_the_longest_addresses() {
        for ip in [
            "255.255.255.255",
            "0.0.0.0",
            "127.0.0.1",
            "10.9.100.199",
            "1.20.200.99",
            "100.0.10.5",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            "::ffff:10.0.0.1",
            "::1",
        ] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(parsed).as_str(), parsed.to_string());
        }
    }
}
