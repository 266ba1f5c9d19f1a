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
    let hex = super::w3c::trace_id_hex(&b);
    // 8-4-4-4-12 hex digits.
    let mut out = [b'-'; 36];
    out[..8].copy_from_slice(&hex[..8]);
    out[9..13].copy_from_slice(&hex[8..12]);
    out[14..18].copy_from_slice(&hex[12..16]);
    out[19..23].copy_from_slice(&hex[16..20]);
    out[24..].copy_from_slice(&hex[20..]);
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
        for (i, c) in s.bytes().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, b'-', "{s}");
            } else {
                assert!(matches!(c, b'0'..=b'9' | b'a'..=b'f'), "{s}");
            }
        }
    }
}
