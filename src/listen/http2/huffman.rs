//! HPACK's Huffman code (RFC 7541, Appendix B).
//!
//! The code is canonical: codes of one length are consecutive and ordered by symbol, and
//! each length's first code follows the last code of the length before it, shifted left.
//! So the table is kept as each symbol's code length alone ([`LENGTHS`]); the codes, and
//! what decoding needs, are worked out from it at compile time.

/// Each symbol's code length in bits: the 256 octets, then EOS (256).
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

/// The longest code (EOS and a few control octets).
const MAX_LEN: usize = 30;

/// The symbols in code order: by length, then by symbol.
const SORTED: [u16; 257] = {
    let mut out = [0u16; 257];
    let mut n = 0;
    let mut len = 1;
    while len <= MAX_LEN {
        let mut sym = 0;
        while sym < 257 {
            if LENGTHS[sym] as usize == len {
                out[n] = sym as u16;
                n += 1;
            }
            sym += 1;
        }
        len += 1;
    }
    out
};

/// For each length: the first code of that length, one past its last (both as
/// `MAX_LEN`-bit numbers, left-aligned), and where its symbols start in [`SORTED`].
struct Lengths {
    first: [u32; MAX_LEN + 1],
    limit: [u32; MAX_LEN + 1],
    offset: [u16; MAX_LEN + 1],
}

const BY_LENGTH: Lengths = {
    let mut count = [0u32; MAX_LEN + 1];
    let mut sym = 0;
    while sym < 257 {
        count[LENGTHS[sym] as usize] += 1;
        sym += 1;
    }
    let mut first = [0u32; MAX_LEN + 1];
    let mut limit = [0u32; MAX_LEN + 1];
    let mut offset = [0u16; MAX_LEN + 1];
    let (mut code, mut at) = (0u32, 0u16);
    let mut len = 1;
    while len <= MAX_LEN {
        // `code` is the next free code of this length.
        first[len] = code << (MAX_LEN - len);
        limit[len] = (code + count[len]) << (MAX_LEN - len);
        offset[len] = at;
        at += count[len] as u16;
        code = (code + count[len]) << 1;
        len += 1;
    }
    Lengths {
        first,
        limit,
        offset,
    }
};

/// Each symbol's code, right-aligned.
const CODES: [u32; 257] = {
    let mut out = [0u32; 257];
    let mut len = 1;
    while len <= MAX_LEN {
        let base = BY_LENGTH.first[len] >> (MAX_LEN - len);
        let start = BY_LENGTH.offset[len] as usize;
        let end = if len < MAX_LEN {
            BY_LENGTH.offset[len + 1] as usize
        } else {
            257
        };
        let mut i = start;
        while i < end {
            out[SORTED[i] as usize] = base + (i - start) as u32;
            i += 1;
        }
        len += 1;
    }
    out
};

/// The length of `src` Huffman-coded, in bytes.
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src
        .iter()
        .map(|&b| usize::from(LENGTHS[usize::from(b)]))
        .sum();
    bits.div_ceil(8)
}

/// Appends `src` Huffman-coded to `dst`, padded with the most significant bits of EOS.
pub fn encode(src: &[u8], dst: &mut Vec<u8>) {
    dst.reserve(encoded_len(src));
    let (mut acc, mut bits) = (0u64, 0u32);
    for &b in src {
        let len = u32::from(LENGTHS[usize::from(b)]);
        acc = (acc << len) | u64::from(CODES[usize::from(b)]);
        bits += len;
        while bits >= 8 {
            bits -= 8;
            dst.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        let pad = 8 - bits;
        dst.push(((acc << pad) | ((1 << pad) - 1)) as u8);
    }
}

/// Why a Huffman-coded string was refused (RFC 7541, 5.2: each is a decoding error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HuffmanError {
    /// EOS inside the string.
    Eos,
    /// More than seven bits of padding, or padding that is not the start of EOS.
    Padding,
}

/// Appends the Huffman-coded `src`, decoded, to `dst`.
pub fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), HuffmanError> {
    // Codes of five bits or more: the output is at most 8/5 of the input.
    dst.reserve(src.len() * 8 / 5);
    let mut input = src.iter();
    // `bits` unread bits, right-aligned in `acc`.
    let (mut acc, mut bits) = (0u64, 0usize);
    loop {
        while bits <= 56 {
            match input.next() {
                Some(&b) => {
                    acc = (acc << 8) | u64::from(b);
                    bits += 8;
                }
                None => break,
            }
        }
        if bits == 0 {
            return Ok(());
        }
        // The next MAX_LEN bits, zeros past the end.
        let window = if bits >= MAX_LEN {
            (acc >> (bits - MAX_LEN)) as u32
        } else {
            (acc << (MAX_LEN - bits)) as u32
        } & ((1 << MAX_LEN) - 1);
        let mut len = 5;
        while window >= BY_LENGTH.limit[len] {
            len += 1;
        }
        if len > bits {
            // What is left is not a whole code: it must be under a byte of EOS's ones.
            let rest = acc & ((1 << bits) - 1);
            return if bits < 8 && rest == (1 << bits) - 1 {
                Ok(())
            } else {
                Err(HuffmanError::Padding)
            };
        }
        let index =
            BY_LENGTH.offset[len] as u32 + ((window - BY_LENGTH.first[len]) >> (MAX_LEN - len));
        let sym = SORTED[index as usize];
        if sym == 256 {
            return Err(HuffmanError::Eos);
        }
        dst.push(sym as u8);
        bits -= len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::http2::hex;

    #[test]
    fn codes_are_the_rfcs() {
        // A few codes as RFC 7541 Appendix B lists them.
        assert_eq!((CODES[b'0' as usize], LENGTHS[b'0' as usize]), (0x0, 5));
        assert_eq!((CODES[b' ' as usize], LENGTHS[b' ' as usize]), (0x14, 6));
        assert_eq!((CODES[b':' as usize], LENGTHS[b':' as usize]), (0x5c, 7));
        assert_eq!((CODES[b'&' as usize], LENGTHS[b'&' as usize]), (0xf8, 8));
        assert_eq!((CODES[0], LENGTHS[0]), (0x1ff8, 13));
        assert_eq!((CODES[255], LENGTHS[255]), (0x3ffffee, 26));
        assert_eq!((CODES[256], LENGTHS[256]), (0x3fffffff, 30));
        // A prefix code: no two codes of one length are equal, and the last is all ones.
        let mut seen = std::collections::HashSet::new();
        for s in 0..257 {
            assert!(seen.insert((CODES[s], LENGTHS[s])));
        }
    }

    // RFC 7541, C.4 and C.6.
    #[test]
    fn rfc_examples() {
        for (text, coded) in [
            ("www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
            ("no-cache", "a8eb 1064 9cbf"),
            ("custom-key", "25a8 49e9 5ba9 7d7f"),
            ("custom-value", "25a8 49e9 5bb8 e8b4 bf"),
            ("302", "6402"),
            ("private", "aec3 771a 4b"),
            (
                "https://www.example.com",
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
            ),
        ] {
            let mut out = Vec::new();
            encode(text.as_bytes(), &mut out);
            assert_eq!(out, hex(coded), "{text}");
            assert_eq!(encoded_len(text.as_bytes()), out.len());
            let mut back = Vec::new();
            decode(&out, &mut back).unwrap();
            assert_eq!(back, text.as_bytes());
        }
    }

    #[test]
    fn every_octet_round_trips() {
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for n in [0, 1, 2, 7, 100, all.len()] {
            let mut coded = Vec::new();
            encode(&all[..n], &mut coded);
            let mut back = Vec::new();
            decode(&coded, &mut back).unwrap();
            assert_eq!(back, &all[..n]);
        }
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        let mut out = Vec::new();
        // "a" is 00011: three bits of padding, which must be ones.
        assert_eq!(decode(&[0b0001_1111], &mut out), Ok(()));
        assert_eq!(out, b"a");
        assert_eq!(decode(&[0b0001_1000], &mut out), Err(HuffmanError::Padding));
        assert_eq!(decode(&[0b0001_1011], &mut out), Err(HuffmanError::Padding));
        // A whole byte of ones is more padding than allowed.
        assert_eq!(
            decode(&[0b0001_1111, 0xff], &mut out),
            Err(HuffmanError::Padding)
        );
        // EOS itself (30 ones), then padding.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(HuffmanError::Eos)
        );
        // A lone 0xff: eight ones, a code cut short.
        assert_eq!(decode(&[0xff], &mut out), Err(HuffmanError::Padding));
        assert_eq!(decode(&[], &mut out), Ok(()));
    }
}
