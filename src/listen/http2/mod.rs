//! An HTTP/2 server of our own, in progress; hyper's (through `hyper_util`'s `auto`
//! builder) serves HTTP/2 until it is done.
//!
//! Why: with one stream a connection at 256 connections, hyper's HTTP/2 server costs ~48k
//! instructions a request against ~21k for our HTTP/1.1 path, nearly all of it inside
//! `h2` and `http` (HPACK, stream bookkeeping, header maps; benches/README.md, 2026-12-07).
//! The pieces land one at a time, each tested on its own and against the `h2` crate's
//! client over a real socket (tests/http2_codec.rs): HPACK ([`hpack`], [`huffman`]),
//! frames ([`frame`]), a request's fields made into `http` parts ([`request`]) and the
//! connection's state without I/O ([`conn`]: streams, flow control both ways, settings,
//! and the limits h2 enforces today: rapid resets, CONTINUATION floods, header list size,
//! unread answers). Next: the I/O loop that runs `proxy::exchange` per stream and streams
//! its body out, behind a listener setting until it can be the default.

/// Hex (spaces and line breaks allowed) to bytes: the RFC 7541 examples in the tests.
#[cfg(test)]
fn hex(s: &str) -> bytes::Bytes {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

pub mod body;
pub mod conn;
pub mod frame;
pub mod hpack;
pub mod huffman;
pub mod request;
mod serve;

pub(super) use serve::serve;
