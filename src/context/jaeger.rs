//! Jaeger propagation: `uber-trace-id: {trace-id}:{span-id}:{parent-span-id}:{flags}`.
//! Ids are hex of up to 32 / 16 digits (shorter ones are left-padded); the value may arrive
//! URL-encoded (`%3A` for `:`). Flags: 0x01 sampled, 0x02 debug. `uberctx-*` baggage headers
//! are ordinary end-to-end headers and pass through as they are.

use http::HeaderMap;
use http::header::HeaderName;

use super::w3c::{FLAG_SAMPLED, TraceParent, trace_id_hex};

pub static UBER_TRACE_ID: HeaderName = HeaderName::from_static("uber-trace-id");

/// Hex of 1 to `2 * N` digits, left-padded to `N` bytes.
fn padded<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.is_empty() || s.len() > N * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    let digits: Vec<u8> = s
        .bytes()
        .map(|b| (b as char).to_digit(16).unwrap_or(0) as u8)
        .collect();
    // Fill from the right, two digits per byte.
    for (i, chunk) in digits.rchunks(2).enumerate() {
        let byte = match chunk {
            [hi, lo] => (hi << 4) | lo,
            [lo] => *lo,
            _ => 0,
        };
        out[N - 1 - i] = byte;
    }
    Some(out)
}

pub fn extract(headers: &HeaderMap) -> Option<TraceParent> {
    let mut all = headers.get_all(&UBER_TRACE_ID).iter();
    let raw = all.next()?.to_str().ok()?;
    if all.next().is_some() {
        return None;
    }
    let decoded = raw.trim().replace("%3A", ":").replace("%3a", ":");
    let mut parts = decoded.split(':');
    let trace_id = padded::<16>(parts.next()?)?;
    let span_id = padded::<8>(parts.next()?)?;
    let _parent = padded::<8>(parts.next()?)?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    if parts.next().is_some() || trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id: span_id,
        // Debug (0x02) implies sampled.
        flags: if flags & 0x03 != 0 { FLAG_SAMPLED } else { 0 },
    })
}

/// `uber-trace-id: {trace32}:{span16}:0:{01|00}` (the parent field is deprecated: 0).
pub fn inject(headers: &mut HeaderMap, trace_id: &[u8; 16], span: &[u8; 8], sampled: bool) {
    let mut v = Vec::with_capacity(55);
    v.extend_from_slice(&trace_id_hex(trace_id));
    v.push(b':');
    let mut wide = [0u8; 16];
    wide[8..].copy_from_slice(span);
    v.extend_from_slice(&trace_id_hex(&wide)[16..]);
    v.extend_from_slice(if sampled { b":0:1" } else { b":0:0" });
    if let Some(value) = super::unique_value(&v) {
        headers.insert(&UBER_TRACE_ID, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(&UBER_TRACE_ID, HeaderValue::from_str(v).unwrap());
        m
    }

    #[test]
    fn full_length_ids() {
        let p = extract(&h("80f198ee56343ba864fe8b2a57d3eff7:e457b5a2e4d86bd1:0:1")).unwrap();
        assert_eq!(
            trace_id_hex(&p.trace_id),
            *b"80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert_eq!(
            p.parent_id,
            [0xe4, 0x57, 0xb5, 0xa2, 0xe4, 0xd8, 0x6b, 0xd1]
        );
        assert!(p.sampled());
    }

    #[test]
    fn short_ids_are_left_padded() {
        let p = extract(&h("abc:1f:0:0")).unwrap();
        assert_eq!(&trace_id_hex(&p.trace_id)[26..], b"000abc");
        assert_eq!(p.parent_id, [0, 0, 0, 0, 0, 0, 0, 0x1f]);
        assert!(!p.sampled());
    }

    #[test]
    fn url_encoded_colons_and_debug_flag() {
        let p = extract(&h("abc%3A1f%3A0%3A2")).unwrap();
        assert!(p.sampled(), "debug implies sampled");
    }

    #[test]
    fn malformed_values_are_no_context() {
        for bad in [
            "abc:1f:0",
            "abc:1f:0:1:9",
            "xyz:1f:0:1",
            "0:1f:0:1",
            "abc:0:0:1",
            "abc:1f:0:zz",
            "123456789012345678901234567890123:1f:0:1",
            "abc:12345678901234567:0:1",
            "",
        ] {
            assert!(extract(&h(bad)).is_none(), "{bad}");
        }
    }

    #[test]
    fn injected_value_round_trips() {
        let mut m = HeaderMap::new();
        inject(&mut m, &[0x11; 16], &[0x22; 8], true);
        let p = extract(&m).unwrap();
        assert_eq!(
            (p.trace_id, p.parent_id, p.sampled()),
            ([0x11; 16], [0x22; 8], true)
        );
    }
}
