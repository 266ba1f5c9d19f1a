//! Zipkin B3 propagation: the single `b3` header and the multi-header form
//! (`X-B3-TraceId`, `X-B3-SpanId`, `X-B3-ParentSpanId`, `X-B3-Sampled`, `X-B3-Flags`).
//!
//! 64-bit trace ids are widened to 128 bits by left-padding with zeros. Parsers return
//! `Option`: anything malformed means "no B3 context".

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use super::w3c::{FLAG_SAMPLED, TraceParent, trace_id_hex};

pub static B3: HeaderName = HeaderName::from_static("b3");
pub static TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub static SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub static PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub static SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub static FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Lowercase hex of exactly `N` bytes, or 8 bytes widened to 16 when `widen` is set.
fn hex_id<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let d = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        out[i] = (d(pair[0])? << 4) | d(pair[1])?;
    }
    Some(out)
}

/// A 128-bit trace id from 32 hex, or a 64-bit one from 16 hex widened with zeros.
pub fn trace_id(s: &[u8]) -> Option<[u8; 16]> {
    let id = match s.len() {
        32 => hex_id::<16>(s)?,
        16 => {
            let low = hex_id::<8>(s)?;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            id
        }
        _ => return None,
    };
    (id != [0; 16]).then_some(id)
}

pub fn span_id(s: &[u8]) -> Option<[u8; 8]> {
    hex_id::<8>(s).filter(|id| *id != [0; 8])
}

/// `1`/`d` (debug) sampled, `0` not; `true`/`false` accepted in the multi form.
fn sampling_state(s: &[u8]) -> Option<bool> {
    match s {
        b"1" | b"d" | b"true" => Some(true),
        b"0" | b"false" => Some(false),
        _ => None,
    }
}

fn single_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a [u8]> {
    let mut all = headers.get_all(name).iter();
    let v = all.next()?;
    all.next().is_none().then(|| v.as_bytes().trim_ascii())
}

/// `b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`. A value with only a sampling
/// state (`b3: 0`) carries no ids: no context. An absent state means "deferred": not sampled.
pub fn extract_single(headers: &HeaderMap) -> Option<TraceParent> {
    let v = single_value(headers, &B3)?;
    let mut parts = v.split(|b| *b == b'-');
    let trace_id = trace_id(parts.next()?)?;
    let parent_id = span_id(parts.next()?)?;
    let sampled = match parts.next() {
        None => false,
        Some(s) => sampling_state(s)?,
    };
    if let Some(p) = parts.next() {
        span_id(p)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        flags: if sampled { FLAG_SAMPLED } else { 0 },
    })
}

/// The multi-header form. `X-B3-Flags: 1` (debug) means sampled.
pub fn extract_multi(headers: &HeaderMap) -> Option<TraceParent> {
    let trace_id = trace_id(single_value(headers, &TRACE_ID)?)?;
    let parent_id = span_id(single_value(headers, &SPAN_ID)?)?;
    let debug = single_value(headers, &FLAGS) == Some(b"1");
    let sampled = match single_value(headers, &SAMPLED) {
        None => false,
        Some(s) => sampling_state(s)?,
    };
    Some(TraceParent {
        trace_id,
        parent_id,
        flags: if sampled || debug { FLAG_SAMPLED } else { 0 },
    })
}

fn hex16(id: &[u8; 8]) -> [u8; 16] {
    let mut wide = [0u8; 16];
    wide[8..].copy_from_slice(id);
    let hex = trace_id_hex(&wide);
    let mut out = [0u8; 16];
    out.copy_from_slice(&hex[16..]);
    out
}

fn value(bytes: &[u8]) -> HeaderValue {
    super::unique_value(bytes).unwrap_or_else(|| HeaderValue::from_static(""))
}

/// Removes every B3 header (both forms).
pub fn remove_all(headers: &mut HeaderMap) {
    for name in [&B3, &TRACE_ID, &SPAN_ID, &PARENT_SPAN_ID, &SAMPLED, &FLAGS] {
        headers.remove(name);
    }
}

/// `b3: {trace32}-{span}-{0|1}-{parent}`.
pub fn inject_single(
    headers: &mut HeaderMap,
    trace_id: &[u8; 16],
    span: &[u8; 8],
    parent: &[u8; 8],
    sampled: bool,
) {
    let mut v = Vec::with_capacity(68);
    v.extend_from_slice(&trace_id_hex(trace_id));
    v.push(b'-');
    v.extend_from_slice(&hex16(span));
    v.extend_from_slice(if sampled { b"-1-" } else { b"-0-" });
    v.extend_from_slice(&hex16(parent));
    headers.insert(&B3, value(&v));
}

pub fn inject_multi(
    headers: &mut HeaderMap,
    trace_id: &[u8; 16],
    span: &[u8; 8],
    parent: &[u8; 8],
    sampled: bool,
) {
    headers.insert(&TRACE_ID, value(&trace_id_hex(trace_id)));
    headers.insert(&SPAN_ID, value(&hex16(span)));
    headers.insert(&PARENT_SPAN_ID, value(&hex16(parent)));
    headers.insert(
        &SAMPLED,
        HeaderValue::from_static(if sampled { "1" } else { "0" }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const T32: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const T16: &str = "64fe8b2a57d3eff7";
    const S: &str = "e457b5a2e4d86bd1";
    const P: &str = "05e3ac9a4f6e3b90";

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn single_with_all_fields() {
        let p = extract_single(&h(&[("b3", &format!("{T32}-{S}-1-{P}"))])).unwrap();
        assert_eq!(trace_id_hex(&p.trace_id), T32.as_bytes());
        assert_eq!(hex16(&p.parent_id), S.as_bytes());
        assert!(p.sampled());
    }

    #[test]
    fn single_64_bit_trace_id_is_widened_with_zeros() {
        let p = extract_single(&h(&[("b3", &format!("{T16}-{S}-0"))])).unwrap();
        assert_eq!(
            trace_id_hex(&p.trace_id),
            format!("0000000000000000{T16}").as_bytes()
        );
        assert!(!p.sampled());
    }

    #[test]
    fn single_debug_means_sampled_and_absent_state_is_deferred() {
        assert!(
            extract_single(&h(&[("b3", &format!("{T32}-{S}-d"))]))
                .unwrap()
                .sampled()
        );
        assert!(
            !extract_single(&h(&[("b3", &format!("{T32}-{S}"))]))
                .unwrap()
                .sampled()
        );
    }

    #[test]
    fn single_sampling_only_or_malformed_is_no_context() {
        for bad in [
            "0",
            "1",
            "d",
            T32,
            &format!("{T32}-{S}-x"),
            &format!("{T32}-{S}-1-zz"),
            &format!("{T32}-{S}-1-{P}-extra"),
            &format!("{}-{S}-1", T32.to_uppercase()),
            &format!("{T32}-{}-1", "0".repeat(16)),
            &format!("{}-{S}-1", "0".repeat(32)),
            &format!("{}-{S}-1", &T32[1..]),
        ] {
            assert!(extract_single(&h(&[("b3", bad)])).is_none(), "{bad}");
        }
    }

    #[test]
    fn multi_headers_with_sampled_flag_and_debug() {
        let p = extract_multi(&h(&[
            ("X-B3-TraceId", T16),
            ("X-B3-SpanId", S),
            ("X-B3-Sampled", "1"),
        ]))
        .unwrap();
        assert_eq!(&trace_id_hex(&p.trace_id)[16..], T16.as_bytes());
        assert!(p.sampled());
        let p = extract_multi(&h(&[
            ("x-b3-traceid", T32),
            ("x-b3-spanid", S),
            ("x-b3-flags", "1"),
        ]))
        .unwrap();
        assert!(p.sampled(), "debug implies sampled");
        let p = extract_multi(&h(&[
            ("x-b3-traceid", T32),
            ("x-b3-spanid", S),
            ("x-b3-sampled", "false"),
        ]))
        .unwrap();
        assert!(!p.sampled());
    }

    #[test]
    fn multi_missing_or_bad_ids_are_no_context() {
        assert!(extract_multi(&h(&[("x-b3-traceid", T32)])).is_none());
        assert!(extract_multi(&h(&[("x-b3-traceid", T32), ("x-b3-spanid", "xyz")])).is_none());
        assert!(
            extract_multi(&h(&[
                ("x-b3-traceid", T32),
                ("x-b3-spanid", S),
                ("x-b3-sampled", "maybe")
            ]))
            .is_none()
        );
        assert!(
            extract_multi(&h(&[
                ("x-b3-traceid", T32),
                ("x-b3-traceid", T32),
                ("x-b3-spanid", S)
            ]))
            .is_none()
        );
    }

    #[test]
    fn injected_headers_round_trip() {
        let (t, s, p) = ([0xab; 16], [0xcd; 8], [0xef; 8]);
        let mut m = HeaderMap::new();
        inject_single(&mut m, &t, &s, &p, true);
        inject_multi(&mut m, &t, &s, &p, false);
        let single = extract_single(&m).unwrap();
        assert_eq!(
            (single.trace_id, single.parent_id, single.sampled()),
            (t, s, true)
        );
        let multi = extract_multi(&m).unwrap();
        assert_eq!(
            (multi.trace_id, multi.parent_id, multi.sampled()),
            (t, s, false)
        );
        remove_all(&mut m);
        assert!(m.is_empty());
    }
}
