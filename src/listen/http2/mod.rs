//! tracegate's own HTTP/2 server, the default (`limits.http2_server: native`; `hyper`
//! brings back hyper's, through `hyper_util`'s `auto` builder).
//!
//! Why: with one stream a connection at 256 connections, hyper's HTTP/2 server costs ~48k
//! instructions a request against ~21k for our HTTP/1.1 path, nearly all of it inside
//! `h2` and `http` (HPACK, stream bookkeeping, header maps; benches/README.md, 2026-12-07).
//! Each piece is tested on its own and against the `h2` crate's client over a real socket
//! (tests/http2_codec.rs): HPACK ([`hpack`], [`huffman`]), frames ([`frame`]), a request's
//! fields made into `http` parts ([`request`]), the connection's state without I/O
//! ([`conn`]: streams, flow control both ways, settings, and the limits h2 enforces:
//! rapid resets, CONTINUATION floods, header list size, unread answers), request bodies
//! ([`body`]), and the I/O loop that runs `proxy::exchange` per stream in the
//! connection's task (`serve`).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// A connection's streams by id.
pub(crate) type StreamMap<V> = HashMap<u32, V, IdHash>;

/// Hashes a stream id mixed with a key drawn per connection: one multiply by the golden
/// ratio, its high half folded down. The default SipHash costs ~20 ns a lookup, and a
/// request looks its stream up a dozen times; the key keeps a client (which picks its ids)
/// from working out offline which ids share a bucket.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IdHash(u64);

impl IdHash {
    pub(crate) fn random() -> IdHash {
        IdHash(rand::random::<u64>())
    }

    pub(crate) fn map<V>() -> StreamMap<V> {
        HashMap::with_hasher(IdHash::random())
    }
}

impl BuildHasher for IdHash {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            key: self.0,
            hash: 0,
        }
    }
}

pub(crate) struct IdHasher {
    key: u64,
    hash: u64,
}

impl Hasher for IdHasher {
    fn write_u32(&mut self, id: u32) {
        let x = (u64::from(id) ^ self.key).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // The product's low half depends only on the low bits of the id: the high half,
        // which depends on all of them, is folded into the bits that pick a bucket.
        self.hash = x ^ (x >> 32);
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u32 keys are hashed here; any other input still hashes, byte by byte.
        for b in bytes {
            self.write_u32(u32::from(*b) ^ (self.hash as u32));
        }
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

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

#[cfg(test)]
mod id_hash_tests {
    use super::*;

    /// Ids a client could choose to share their low bits (all 1 mod 2^20) still spread
    /// over a table's buckets, under any key.
    #[test]
    fn ids_sharing_low_bits_spread_over_buckets() {
        for key in [0, 1, u64::MAX, 0x0123_4567_89ab_cdef, rand::random::<u64>()] {
            let h = IdHash(key);
            let buckets: std::collections::HashSet<u64> = (0..256u32)
                .map(|i| h.hash_one(1 + (i << 20)) & 511)
                .collect();
            assert!(
                buckets.len() > 128,
                "key {key:#x}: {} buckets",
                buckets.len()
            );
        }
        let mut m = IdHash::map();
        for id in (1..2000u32).step_by(2) {
            m.insert(id, id * 3);
        }
        assert!((1..2000u32).step_by(2).all(|id| m[&id] == id * 3));
        assert_eq!(m.get(&2), None);
    }
}
