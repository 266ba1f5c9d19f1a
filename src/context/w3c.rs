//! W3C Trace Context (Level 2): `traceparent` and `tracestate` parsing and formatting.
//!
//! Every rule of `shared/TRACE_CONTEXT_RULES.md` that concerns parsing or emitting lives here;
//! the unit tests at the bottom are named after those rules. Parsers take untrusted bytes and
//! return `Option`: an invalid header never fails a request, it only means "restart".

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// Header name, always emitted in lowercase. A `HeaderName` (not a `&str`): inserting a
/// string name builds a new name, an allocation per request.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Header name, always emitted in lowercase.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The `sampled` trace flag.
pub const FLAG_SAMPLED: u8 = 0x01;
/// The Level 2 `random` trace flag: the right-most 7 bytes of the trace id are random.
pub const FLAG_RANDOM: u8 = 0x02;
/// Flags this implementation understands; every other bit is zeroed on output.
const KNOWN_FLAGS: u8 = FLAG_SAMPLED | FLAG_RANDOM;

/// Length of a version-00 `traceparent` value.
pub const TRACEPARENT_LEN: usize = 55;
/// At most this many list members in a `tracestate`.
pub const TRACESTATE_MAX_MEMBERS: usize = 32;

/// A valid inbound `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// Reads the sampled bit by mask, never by comparing the whole byte.
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// Reads the Level 2 random bit by mask.
    pub fn random(&self) -> bool {
        self.flags & FLAG_RANDOM != 0
    }
}

/// Spaces and tabs (OWS) are not part of a header value.
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

fn lower_hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Decodes lowercase hex into `out`; `None` on any other character.
fn decode_lower_hex<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = (lower_hex_digit(pair[0])? << 4) | lower_hex_digit(pair[1])?;
    }
    Some(out)
}

/// Parses one `traceparent` value. `None` means invalid: the caller restarts the trace.
pub fn parse_traceparent(value: &[u8]) -> Option<TraceParent> {
    let v = trim_ows(value);
    // Version: two lowercase hex characters followed by '-'.
    if v.len() < 3 || v[2] != b'-' {
        return None;
    }
    let version = decode_lower_hex::<1>(&v[..2])?[0];
    if version == 0xff {
        return None;
    }
    if version == 0x00 {
        if v.len() != TRACEPARENT_LEN {
            return None;
        }
    } else {
        // A future version: at least the version-00 fields, then end-of-value or '-'.
        if v.len() < TRACEPARENT_LEN {
            return None;
        }
        if v.len() > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != b'-' {
            return None;
        }
    }
    if v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = decode_lower_hex::<16>(&v[3..35])?;
    let parent_id = decode_lower_hex::<8>(&v[36..52])?;
    let flags = decode_lower_hex::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        flags,
    })
}

/// Reads the inbound `traceparent`. Absent, invalid, or present more than once → `None`.
/// Header names are matched case-insensitively by `http`; look-alike names are other headers.
pub fn extract_traceparent(headers: &HeaderMap) -> Option<TraceParent> {
    let mut values = headers.get_all(&TRACEPARENT).iter();
    let first = values.next()?;
    if values.next().is_some() {
        // Several lines are not one valid value: restart, never pick the first.
        return None;
    }
    parse_traceparent(first.as_bytes())
}

/// Lowercase hex of 8 bytes (big-endian), all at once: every request formats ids (`traceparent`,
/// `X-Trace-Id`, the exemplar, the correlation id), and a table lookup per nibble cost ~8
/// instructions a byte.
pub fn hex_u64(v: u64) -> [u8; 16] {
    const fn every_byte(b: u8) -> u128 {
        u128::from_ne_bytes([b; 16])
    }
    // Spread the 16 nibbles one per byte, in order: halves of 64, 32, 16 and 8 bits move
    // apart until each nibble has a byte of its own.
    let mut x = u128::from(v);
    x = (x | x << 32) & 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
    x = (x | x << 16) & 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
    x = (x | x << 8) & 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    x = (x | x << 4) & every_byte(0x0f);
    // A nibble of 10 or more gets 'a' - '0' - 10 more than '0' + nibble. Adding 6 carries it
    // into bit 4; no byte overflows into the next.
    let letters = ((x + every_byte(6)) >> 4) & every_byte(1);
    (x + every_byte(b'0') + letters * u128::from(b'a' - b'0' - 10)).to_be_bytes()
}

/// Lowercase hex of a 16-byte trace id, without allocating.
pub fn trace_id_hex(trace_id: &[u8; 16]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let id = u128::from_be_bytes(*trace_id);
    out[..16].copy_from_slice(&hex_u64((id >> 64) as u64));
    out[16..].copy_from_slice(&hex_u64(id as u64));
    out
}

/// Formats a version-00 `traceparent`. Unknown flag bits are zeroed.
pub fn format_traceparent(trace_id: &[u8; 16], parent_id: &[u8; 8], flags: u8) -> HeaderValue {
    let text = traceparent_text(trace_id, parent_id, flags);
    // Only hex digits and '-' were written, which are always valid header bytes.
    super::unique_value(&text).unwrap_or_else(|| HeaderValue::from_static(""))
}

/// [`format_traceparent`]'s text.
pub fn traceparent_text(
    trace_id: &[u8; 16],
    parent_id: &[u8; 8],
    flags: u8,
) -> [u8; TRACEPARENT_LEN] {
    let mut buf = [0u8; TRACEPARENT_LEN];
    buf[..3].copy_from_slice(b"00-");
    buf[3..35].copy_from_slice(&trace_id_hex(trace_id));
    buf[35] = b'-';
    buf[36..52].copy_from_slice(&hex_u64(u64::from_be_bytes(*parent_id)));
    buf[52] = b'-';
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let flags = flags & KNOWN_FLAGS;
    buf[53] = HEX[usize::from(flags >> 4)];
    buf[54] = HEX[usize::from(flags & 0x0f)];
    buf
}

/// A validated `tracestate`: the inbound lines joined in arrival order, members normalised
/// (OWS around members and empty members removed), ready to send as one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceState {
    value: String,
    members: usize,
}

impl TraceState {
    /// The single header line to send upstream.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// Number of list members.
    pub fn len(&self) -> usize {
        self.members
    }

    /// Always false: an empty list is represented as `None`, never sent.
    pub fn is_empty(&self) -> bool {
        self.members == 0
    }

    /// The (key, value) pairs, in order.
    pub fn members(&self) -> impl Iterator<Item = (&str, &str)> {
        self.value
            .split(',')
            .filter_map(|m| m.split_once('='))
            .filter(|(k, _)| !k.is_empty())
    }
}

/// Level 2 key: starts with `a-z` or `0-9`, then up to 255 of `a-z 0-9 _ - * / @`.
pub fn valid_tracestate_key(key: &[u8]) -> bool {
    match key.split_first() {
        Some((first, rest)) => {
            (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest.len() <= 255
                && rest.iter().all(|b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || matches!(b, b'_' | b'-' | b'*' | b'/' | b'@')
                })
        }
        None => false,
    }
}

/// Value: 0 to 256 printable ASCII (0x20-0x7E) except `,` and `=`, not ending in a space.
pub fn valid_tracestate_value(value: &[u8]) -> bool {
    value.len() <= 256
        && value
            .iter()
            .all(|b| (0x20..=0x7e).contains(b) && *b != b',' && *b != b'=')
        && value.last() != Some(&b' ')
}

/// Validates the joined `tracestate` lines. Returns `None` when the header is absent, empty,
/// or invalid (invalid is dropped whole, never forwarded unchanged).
pub fn extract_tracestate(headers: &HeaderMap) -> Option<TraceState> {
    let mut value = String::new();
    let mut members = 0usize;
    for line in headers.get_all(&TRACESTATE) {
        for member in line.as_bytes().split(|b| *b == b',') {
            let member = trim_ows(member);
            if member.is_empty() {
                continue;
            }
            let eq = member.iter().position(|b| *b == b'=')?;
            let (key, val) = (&member[..eq], &member[eq + 1..]);
            if !valid_tracestate_key(key) || !valid_tracestate_value(val) {
                return None;
            }
            members += 1;
            if members > TRACESTATE_MAX_MEMBERS {
                return None;
            }
            if !value.is_empty() {
                value.push(',');
            }
            // Validated above: printable ASCII only.
            value.push_str(std::str::from_utf8(member).ok()?);
        }
    }
    (members > 0).then_some(TraceState { value, members })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    #[test]
    fn hex_matches_formatting() {
        // Every nibble value in every position, the ends, and a spread of others.
        let mut values = vec![0, u64::MAX, 0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210];
        values.extend((0..16u64).flat_map(|n| (0..16).map(move |at| n << (at * 4))));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x);
        }
        for v in values {
            assert_eq!(hex_u64(v), *format!("{v:016x}").as_bytes(), "{v:#x}");
        }
        let id: [u8; 16] = std::array::from_fn(|i| (i * 17) as u8);
        let expected: String = id.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(trace_id_hex(&id), *expected.as_bytes());
        assert_eq!(
            format_traceparent(&id, &[0xff, 0, 1, 2, 3, 4, 5, 0xa0], 0xff).as_bytes(),
            b"00-00112233445566778899aabbccddeeff-ff000102030405a0-03"
        );
    }

    const TID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PID: &str = "00f067aa0ba902b7";

    fn tp(s: &str) -> Option<TraceParent> {
        parse_traceparent(s.as_bytes())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn version_00_valid_value_parses() {
        let p = tp(&format!("00-{TID}-{PID}-01")).unwrap();
        assert_eq!(trace_id_hex(&p.trace_id), TID.as_bytes());
        assert!(p.sampled());
        assert!(!p.random());
    }

    #[test]
    fn header_name_matched_case_insensitively() {
        let h = headers(&[("TraceParent", &format!("00-{TID}-{PID}-01"))]);
        assert!(extract_traceparent(&h).is_some());
    }

    #[test]
    fn look_alike_names_are_not_traceparent() {
        for name in ["trace-parent", "trace.parent", "traceparent-x"] {
            let h = headers(&[(name, &format!("00-{TID}-{PID}-01"))]);
            assert!(extract_traceparent(&h).is_none(), "{name}");
        }
    }

    #[test]
    fn surrounding_spaces_and_tabs_are_not_part_of_value() {
        assert!(tp(&format!(" \t00-{TID}-{PID}-01\t ")).is_some());
    }

    #[test]
    fn uppercase_hex_is_invalid() {
        assert!(tp(&format!("00-{}-{PID}-01", TID.to_uppercase())).is_none());
        assert!(tp(&format!("00-{TID}-{}-01", "00F067AA0BA902B7")).is_none());
        assert!(tp(&format!("00-{TID}-{PID}-0A")).is_none());
    }

    #[test]
    fn wrong_field_lengths_are_invalid() {
        assert!(tp(&format!("00-{}-{PID}-01", &TID[1..])).is_none());
        assert!(tp(&format!("00-{TID}0-{PID}-01")).is_none());
        assert!(tp(&format!("00-{TID}-{}-01", &PID[1..])).is_none());
        assert!(tp(&format!("00-{TID}-{PID}-1")).is_none());
        assert!(tp(&format!("0-{TID}-{PID}-01")).is_none());
    }

    #[test]
    fn non_hex_characters_are_invalid() {
        assert!(tp(&format!("00-{}g-{PID}-01", &TID[1..])).is_none());
        assert!(tp(&format!("00-{TID}-{}z-01", &PID[1..])).is_none());
        assert!(tp(&format!("0x-{TID}-{PID}-01")).is_none());
    }

    #[test]
    fn version_00_extra_characters_or_fields_are_invalid() {
        assert!(tp(&format!("00-{TID}-{PID}-01-extra")).is_none());
        assert!(tp(&format!("00-{TID}-{PID}-010")).is_none());
    }

    #[test]
    fn all_zero_trace_id_is_invalid() {
        assert!(tp(&format!("00-{}-{PID}-01", "0".repeat(32))).is_none());
    }

    #[test]
    fn all_zero_parent_id_is_invalid() {
        assert!(tp(&format!("00-{TID}-{}-01", "0".repeat(16))).is_none());
    }

    #[test]
    fn version_must_be_two_hex_followed_by_dash() {
        assert!(tp(&format!("000-{TID}-{PID}-01")).is_none());
        assert!(tp(&format!("00_{TID}-{PID}-01")).is_none());
        assert!(tp("").is_none());
        assert!(tp("00").is_none());
    }

    #[test]
    fn version_ff_is_forbidden() {
        assert!(tp(&format!("ff-{TID}-{PID}-01")).is_none());
    }

    #[test]
    fn future_version_is_parsed_at_version_00_positions() {
        let p = tp(&format!("cc-{TID}-{PID}-01-what-the-future-holds")).unwrap();
        assert_eq!(trace_id_hex(&p.trace_id), TID.as_bytes());
        assert!(tp(&format!("cc-{TID}-{PID}-01")).is_some());
    }

    #[test]
    fn future_version_shorter_than_55_restarts() {
        assert!(tp(&format!("cc-{TID}-{PID}-0")).is_none());
    }

    #[test]
    fn future_version_flags_must_end_value_or_be_followed_by_dash() {
        assert!(tp(&format!("cc-{TID}-{PID}-01.what")).is_none());
        assert!(tp(&format!("cc-{TID}-{PID}-01,00-{TID}-{PID}-01")).is_none());
    }

    #[test]
    fn future_version_still_checks_hex_and_dashes() {
        assert!(tp(&format!("cc-{TID}-{PID}x01-extra")).is_none());
        assert!(tp(&format!("cc-{}-{PID}-01-extra", TID.to_uppercase())).is_none());
    }

    #[test]
    fn two_traceparent_lines_are_invalid() {
        let v = format!("00-{TID}-{PID}-01");
        let h = headers(&[("traceparent", &v), ("traceparent", &v)]);
        assert!(extract_traceparent(&h).is_none());
    }

    #[test]
    fn comma_joined_traceparent_is_invalid() {
        let v = format!("00-{TID}-{PID}-01");
        assert!(tp(&format!("{v},{v}")).is_none());
    }

    #[test]
    fn flags_read_by_mask_unknown_bits_do_not_invalidate() {
        let p = tp(&format!("00-{TID}-{PID}-ff")).unwrap();
        assert!(p.sampled());
        assert!(p.random());
        let p = tp(&format!("00-{TID}-{PID}-fc")).unwrap();
        assert!(!p.sampled());
        assert!(!p.random());
    }

    #[test]
    fn unknown_flag_bits_are_zeroed_on_output() {
        let out = format_traceparent(&[1; 16], &[2; 8], 0xff);
        assert!(out.to_str().unwrap().ends_with("-03"));
    }

    #[test]
    fn emitted_traceparent_is_version_00_lowercase_and_reparses() {
        let out = format_traceparent(&[0xab; 16], &[0xcd; 8], FLAG_SAMPLED);
        let s = out.to_str().unwrap();
        assert_eq!(s.len(), 55);
        assert!(s.starts_with("00-abab"));
        assert_eq!(tp(s).unwrap().parent_id, [0xcd; 8]);
    }

    #[test]
    fn tracestate_lines_are_joined_in_arrival_order() {
        let h = headers(&[("tracestate", "a=1,b=2"), ("TraceState", "c=3")]);
        assert_eq!(extract_tracestate(&h).unwrap().as_str(), "a=1,b=2,c=3");
    }

    #[test]
    fn tracestate_look_alike_names_are_ignored() {
        let h = headers(&[("trace-state", "a=1")]);
        assert!(extract_tracestate(&h).is_none());
    }

    #[test]
    fn tracestate_empty_members_and_ows_are_accepted_and_removed() {
        let h = headers(&[("tracestate", " a=1 ,, \t ,b=2\t"), ("tracestate", "")]);
        let ts = extract_tracestate(&h).unwrap();
        assert_eq!(ts.as_str(), "a=1,b=2");
        assert_eq!(ts.len(), 2);
    }

    #[test]
    fn tracestate_empty_header_is_not_sent() {
        let h = headers(&[("tracestate", "")]);
        assert!(extract_tracestate(&h).is_none());
        let h = headers(&[("tracestate", " , ")]);
        assert!(extract_tracestate(&h).is_none());
    }

    #[test]
    fn tracestate_level2_keys() {
        for ok in ["foo", "0foo", "foo@", "foo@@bar", "a_b-c*d/e", "t@s"] {
            assert!(valid_tracestate_key(ok.as_bytes()), "{ok}");
        }
        for bad in ["@foo", "FOO", "foo.bar", "foo ", "", "_foo"] {
            assert!(!valid_tracestate_key(bad.as_bytes()), "{bad}");
        }
        assert!(valid_tracestate_key("a".repeat(256).as_bytes()));
        assert!(!valid_tracestate_key("a".repeat(257).as_bytes()));
    }

    #[test]
    fn tracestate_values() {
        assert!(valid_tracestate_value(b""));
        assert!(valid_tracestate_value(b" leading space kept"));
        assert!(!valid_tracestate_value(b"trailing "));
        assert!(!valid_tracestate_value(b"a,b"));
        assert!(!valid_tracestate_value(b"a=b"));
        assert!(!valid_tracestate_value(b"tab\there"));
        assert!(valid_tracestate_value("v".repeat(256).as_bytes()));
        assert!(!valid_tracestate_value("v".repeat(257).as_bytes()));
    }

    #[test]
    fn tracestate_leading_value_spaces_belong_to_value() {
        let h = headers(&[("tracestate", "a=  x")]);
        let ts = extract_tracestate(&h).unwrap();
        assert_eq!(ts.members().next(), Some(("a", "  x")));
    }

    #[test]
    fn tracestate_32_members_accepted_33_dropped_whole() {
        let list = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let h = headers(&[("tracestate", &list(32))]);
        assert_eq!(extract_tracestate(&h).unwrap().len(), 32);
        let h = headers(&[("tracestate", &list(33))]);
        assert!(extract_tracestate(&h).is_none());
    }

    #[test]
    fn invalid_tracestate_is_dropped_whole() {
        let h = headers(&[("tracestate", "@foo=1,bar=2")]);
        assert!(extract_tracestate(&h).is_none());
        let h = headers(&[("tracestate", "bar=2,novalue")]);
        assert!(extract_tracestate(&h).is_none());
    }

    #[test]
    fn tracestate_duplicate_keys_are_kept_and_output_reparses() {
        let h = headers(&[("tracestate", "a=1,a=2")]);
        let ts = extract_tracestate(&h).unwrap();
        assert_eq!(ts.as_str(), "a=1,a=2");
        let again = headers(&[("tracestate", ts.as_str())]);
        assert_eq!(extract_tracestate(&again).unwrap(), ts);
    }

    #[test]
    fn tracestate_long_combined_value_is_propagated_whole() {
        let v = (0..8)
            .map(|i| format!("k{i}={}", "x".repeat(120)))
            .collect::<Vec<_>>()
            .join(",");
        assert!(v.len() > 512);
        let h = headers(&[("tracestate", &v)]);
        assert_eq!(extract_tracestate(&h).unwrap().as_str(), v);
    }
}
