//! Random identifiers: trace ids, span ids and UUID v4 correlation ids.
//!
//! Ids come from the thread-local CSPRNG (`rand::rng()`, ChaCha12, reseeded), so a new
//! trace id qualifies for the W3C Level 2 `random` flag and never needs a lock.

use rand::RngCore;

/// A new random trace id, never all-zero.
pub fn trace_id() -> [u8; 16] {
    let mut rng = rand::rng();
    loop {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        if id != [0; 16] {
            return id;
        }
    }
}

/// A new random span id, never all-zero.
pub fn span_id() -> [u8; 8] {
    let mut rng = rand::rng();
    loop {
        let id = rng.next_u64().to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

/// A UUID v4 in its canonical lowercase text form (36 bytes).
pub fn uuid_v4() -> [u8; 36] {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[(byte >> 4) as usize];
        out[o + 1] = HEX[(byte & 0xf) as usize];
        o += 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_all_zero_and_differ() {
        assert_ne!(trace_id(), [0; 16]);
        assert_ne!(span_id(), [0; 8]);
        assert_ne!(trace_id(), trace_id());
    }

    #[test]
    fn uuid_v4_has_version_and_variant() {
        let u = uuid_v4();
        let s = std::str::from_utf8(&u).unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(s.matches('-').count(), 4);
    }
}
