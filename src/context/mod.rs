//! Step 3 of the request path: the inbound trace context and the correlation id.
//!
//! Decides "continue" (valid inbound `traceparent`: same trace id, our own span ids) or
//! "start" (absent or invalid: new trace id, inbound `tracestate` dropped).

pub mod b3;
pub mod baggage;
pub mod correlation;
pub mod ids;
pub mod jaeger;
pub mod w3c;

use http::HeaderMap;

pub use baggage::Baggage;
pub use w3c::{TraceParent, TraceState};

/// The lengths of the header names a map holds (one bit each, 63 for anything longer): a
/// lookup for a name whose length is not among them cannot find it and is skipped. One
/// pass over the names, a few instructions each, against a hash and a probe (~130
/// instructions) per lookup of a header most requests do not carry; two names of the
/// same length only cost that lookup.
#[derive(Clone, Copy, Debug)]
pub struct NameLengths(u64);

impl NameLengths {
    pub fn of(headers: &HeaderMap) -> Self {
        NameLengths(
            headers
                .keys()
                .fold(0, |bits, name| bits | Self::bit(name.as_str().len())),
        )
    }

    /// False when `headers` cannot hold `name`.
    pub fn may_have(self, name: &http::HeaderName) -> bool {
        self.0 & Self::bit(name.as_str().len()) != 0
    }

    /// `headers.get(name)`, skipped when no name of its length is there.
    pub fn get<'h>(
        self,
        headers: &'h HeaderMap,
        name: &http::HeaderName,
    ) -> Option<&'h http::HeaderValue> {
        self.may_have(name).then(|| headers.get(name)).flatten()
    }

    fn bit(len: usize) -> u64 {
        1 << len.min(63)
    }
}

/// A propagation format (`tracing.propagation`, `OTEL_PROPAGATORS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// W3C `traceparent` / `tracestate`.
    TraceContext,
    /// W3C `baggage`.
    Baggage,
    /// Zipkin `b3` single header.
    B3,
    /// Zipkin `X-B3-*` headers.
    B3Multi,
    /// Jaeger `uber-trace-id`.
    Jaeger,
}

impl Format {
    pub const NAMES: &'static str = "tracecontext, baggage, b3, b3multi, jaeger";
    pub const ALL: [Format; 5] = [
        Format::TraceContext,
        Format::Baggage,
        Format::B3,
        Format::B3Multi,
        Format::Jaeger,
    ];

    pub fn parse(name: &str) -> Option<Format> {
        Some(match name {
            "tracecontext" => Format::TraceContext,
            "baggage" => Format::Baggage,
            "b3" => Format::B3,
            "b3multi" => Format::B3Multi,
            "jaeger" => Format::Jaeger,
            _ => return None,
        })
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Format::TraceContext => "tracecontext",
            Format::Baggage => "baggage",
            Format::B3 => "b3",
            Format::B3Multi => "b3multi",
            Format::Jaeger => "jaeger",
        }
    }
}

/// The configured formats, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Propagation {
    formats: Vec<Format>,
}

impl Default for Propagation {
    /// `tracecontext, baggage`, as the OpenTelemetry default.
    fn default() -> Self {
        Propagation::new(vec![Format::TraceContext, Format::Baggage])
    }
}

/// What the caller sent, validated.
#[derive(Clone, Debug, Default)]
pub struct Inbound {
    /// The caller's context, from the format that won.
    pub parent: Option<TraceParent>,
    /// The format it came from.
    pub source: Option<Format>,
    /// Only kept with a valid W3C parent; otherwise dropped.
    pub tracestate: Option<TraceState>,
    /// Validated baggage (when `baggage` is a configured format).
    pub baggage: Option<Baggage>,
}

/// The context tracegate sends upstream: one trace id and one parent id in every format.
pub struct Outgoing<'a> {
    pub trace_id: &'a [u8; 16],
    /// The span the upstream sees as its parent (tracegate's CLIENT span).
    pub span_id: &'a [u8; 8],
    /// That span's own parent (tracegate's SERVER span), for B3's ParentSpanId.
    pub parent_id: &'a [u8; 8],
    pub flags: u8,
    pub tracestate: Option<&'a str>,
    pub baggage: Option<&'a Baggage>,
}

impl Propagation {
    pub fn new(mut formats: Vec<Format>) -> Self {
        let mut seen = Vec::with_capacity(formats.len());
        formats.retain(|f| {
            let first = !seen.contains(f);
            seen.push(*f);
            first
        });
        Propagation { formats }
    }

    pub fn formats(&self) -> &[Format] {
        &self.formats
    }

    fn has(&self, f: Format) -> bool {
        self.formats.contains(&f)
    }

    /// Tries the formats in configured order; the first valid context wins. When it is not
    /// W3C but a valid `traceparent` names the same trace, W3C wins (its flags and
    /// `tracestate` are richer). `tracestate` is only read with a winning W3C parent.
    pub fn extract(&self, headers: &HeaderMap) -> Inbound {
        self.extract_seen(headers, NameLengths::of(headers))
    }

    /// `extract`, with the name lengths of `headers` already taken.
    pub fn extract_seen(&self, headers: &HeaderMap, seen: NameLengths) -> Inbound {
        let w3c = (self.has(Format::TraceContext) && seen.may_have(&w3c::TRACEPARENT))
            .then(|| w3c::extract_traceparent(headers))
            .flatten();
        let mut won = self.formats.iter().find_map(|f| {
            let p = match f {
                Format::TraceContext => w3c,
                Format::B3 => b3::extract_single(headers),
                Format::B3Multi => b3::extract_multi(headers),
                Format::Jaeger => jaeger::extract(headers),
                Format::Baggage => None,
            }?;
            Some((*f, p))
        });
        if let (Some((f, p)), Some(w)) = (won, w3c) {
            if f != Format::TraceContext && p.trace_id == w.trace_id {
                won = Some((Format::TraceContext, w));
            }
        }
        Inbound {
            parent: won.map(|(_, p)| p),
            source: won.map(|(f, _)| f),
            tracestate: won
                .filter(|(f, _)| *f == Format::TraceContext)
                .and_then(|_| w3c::extract_tracestate(headers)),
            baggage: (self.has(Format::Baggage) && seen.may_have(&baggage::BAGGAGE))
                .then(|| baggage::extract(headers))
                .flatten(),
        }
    }

    /// Writes every configured format, each header's inbound copies removed first.
    /// `added`: where a `traceparent` the request does not carry goes (see
    /// [`crate::forward::Added`]); `None`: into `headers`.
    pub fn inject(
        &self,
        headers: &mut HeaderMap,
        added: Option<(&mut crate::forward::Added, NameLengths)>,
        out: &Outgoing<'_>,
    ) {
        let sampled = out.flags & w3c::FLAG_SAMPLED != 0;
        // What the request may carry already, for the removals below: the caller's
        // knowledge with `added`, else a look at the names.
        let (mut added, seen) = match added {
            Some((a, seen)) => (Some(a), seen),
            None => (None, NameLengths::of(headers)),
        };
        if self.has(Format::B3) || self.has(Format::B3Multi) {
            b3::remove_all(headers);
        }
        for f in &self.formats {
            match f {
                Format::TraceContext => {
                    let text = w3c::traceparent_text(out.trace_id, out.span_id, out.flags);
                    match added.as_deref_mut() {
                        Some(added) if !seen.may_have(&w3c::TRACEPARENT) => {
                            added.add_traceparent(text);
                        }
                        _ => {
                            if let Some(v) = unique_value(&text) {
                                headers.insert(&w3c::TRACEPARENT, v);
                            }
                        }
                    }
                    // `insert` replaces every inbound copy; without a tracestate of our
                    // own they go.
                    match out
                        .tracestate
                        .and_then(|ts| http::HeaderValue::from_str(ts).ok())
                    {
                        Some(ts) => drop(headers.insert(&w3c::TRACESTATE, ts)),
                        None if seen.may_have(&w3c::TRACESTATE) => {
                            drop(headers.remove(&w3c::TRACESTATE))
                        }
                        None => {}
                    }
                }
                Format::Baggage => {
                    if out.baggage.is_some() || seen.may_have(&baggage::BAGGAGE) {
                        baggage::inject(headers, out.baggage);
                    }
                }
                Format::B3 => {
                    b3::inject_single(headers, out.trace_id, out.span_id, out.parent_id, sampled)
                }
                Format::B3Multi => {
                    b3::inject_multi(headers, out.trace_id, out.span_id, out.parent_id, sampled)
                }
                Format::Jaeger => jaeger::inject(headers, out.trace_id, out.span_id, sampled),
            }
        }
    }
}

/// A header value tracegate makes (a `traceparent`, a generated correlation id, the peer's
/// address), held in one allocation that its clones share (`http1::shared_copy`):
/// `HeaderValue::from_bytes` copies into a buffer that the first clone (the retry snapshot,
/// the exchange, the response) has to move to a shared one, a second allocation per value
/// and request. `None` for bytes that are not a valid header value.
pub fn shared_value(bytes: &[u8]) -> Option<http::HeaderValue> {
    http::HeaderValue::from_maybe_shared(crate::http1::shared_copy(bytes)).ok()
}

/// A header value made for one request (a `traceparent`, a span or correlation id), as
/// `shared_value`, marked never to be indexed by HPACK. Such a value never repeats, so over
/// HTTP/2 an indexed one would only push the values that do repeat (`user-agent`, the
/// authority, `baggage`) out of the peer's header table, and cost the encoder a table
/// insertion and eviction per request. HTTP/1.1 ignores the mark.
pub fn unique_value(bytes: &[u8]) -> Option<http::HeaderValue> {
    let mut v = shared_value(bytes)?;
    v.set_sensitive(true);
    Some(v)
}

/// Extracts the caller's W3C context (the default propagation).
pub fn extract(headers: &HeaderMap) -> Inbound {
    Propagation::default().extract(headers)
}

/// The ids of one traced exchange.
#[derive(Clone, Copy, Debug)]
pub struct TraceIds {
    pub trace_id: [u8; 16],
    /// The caller's span (the server span's parent), when continuing.
    pub remote_parent: Option<[u8; 8]>,
    /// tracegate's SERVER span.
    pub server_span: [u8; 8],
    /// Flags sent upstream and recorded: our sampled decision plus the random bit.
    pub flags: u8,
}

impl TraceIds {
    /// Continue the caller's trace or start a new one; `sampled` is the sampler's decision.
    pub fn new(inbound: &Inbound, sampled: bool) -> Self {
        let sampled_bit = if sampled { w3c::FLAG_SAMPLED } else { 0 };
        match &inbound.parent {
            Some(p) => TraceIds {
                trace_id: p.trace_id,
                remote_parent: Some(p.parent_id),
                server_span: ids::span_id(),
                // Level 2: the random flag is passed on as received, set or unset.
                flags: sampled_bit | (p.flags & w3c::FLAG_RANDOM),
            },
            None => TraceIds {
                trace_id: ids::trace_id(),
                remote_parent: None,
                server_span: ids::span_id(),
                // A CSPRNG trace id is random in its right-most 7 bytes: set the random flag.
                flags: sampled_bit | w3c::FLAG_RANDOM,
            },
        }
    }

    pub fn sampled(&self) -> bool {
        self.flags & w3c::FLAG_SAMPLED != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn every_format_is_named_and_listed() {
        let named: Vec<Format> = Format::NAMES
            .split(", ")
            .map(|n| Format::parse(n).unwrap())
            .collect();
        assert_eq!(named, Format::ALL);
        for f in Format::ALL {
            assert_eq!(Format::parse(f.as_str()), Some(f));
        }
    }

    #[test]
    fn shared_value_keeps_the_bytes_and_refuses_what_a_header_cannot_carry() {
        for len in [0, 1, 45, 64, 65, 300] {
            let text = "a".repeat(len);
            let v = shared_value(text.as_bytes()).unwrap();
            assert_eq!(v.as_bytes(), text.as_bytes());
            // A clone sees the same bytes (and, within 64 bytes, the same buffer).
            let c = v.clone();
            assert_eq!(c, v);
            if len > 0 && len <= 64 {
                assert_eq!(c.as_bytes().as_ptr(), v.as_bytes().as_ptr());
            }
        }
        let ip = shared_value(b"ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255").unwrap();
        assert_eq!(ip, "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255");
        assert!(shared_value(b"bad\r\nheader").is_none());
        assert!(shared_value(b"nul\0").is_none());
    }

    #[test]
    fn name_lengths_never_rule_out_a_name_the_map_holds() {
        let mut h = HeaderMap::new();
        h.insert(http::header::HOST, HeaderValue::from_static("a"));
        h.insert("x-request-id", HeaderValue::from_static("r"));
        h.insert(
            "a-header-name-longer-than-sixty-three-bytes-is-counted-with-the-longest-ones",
            HeaderValue::from_static("v"),
        );
        let seen = NameLengths::of(&h);
        for name in h.keys() {
            assert!(seen.may_have(name), "{name}");
        }
        // Same length as a name present: looked up (and not found), never skipped wrongly.
        assert!(seen.may_have(&http::HeaderName::from_static("x-b3-traceid")));
        assert!(!seen.may_have(&w3c::TRACEPARENT));
        assert!(!seen.may_have(&baggage::BAGGAGE));
        assert!(seen.may_have(&http::HeaderName::from_static(
            "another-name-longer-than-sixty-three-bytes-shares-the-last-bit-with-them"
        )));
        assert!(!NameLengths::of(&HeaderMap::new()).may_have(&http::header::HOST));
        // Lookups gated on it find what they found before: a baggage line among names
        // of other lengths, and none when only a same-length name is present.
        h.insert("baggage", HeaderValue::from_static("k=v"));
        assert_eq!(extract(&h).baggage.unwrap().value, "k=v");
        let mut only_referer = HeaderMap::new();
        only_referer.insert(http::header::REFERER, HeaderValue::from_static("x"));
        assert!(extract(&only_referer).baggage.is_none());
    }

    #[test]
    fn valid_parent_continues_with_same_trace_id_and_new_span_id() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static(TP));
        let inbound = extract(&h);
        let ids = TraceIds::new(&inbound, true);
        let p = inbound.parent.unwrap();
        assert_eq!(ids.trace_id, p.trace_id);
        assert_eq!(ids.remote_parent, Some(p.parent_id));
        assert_ne!(ids.server_span, p.parent_id);
    }

    #[test]
    fn random_flag_is_kept_as_received_when_continuing() {
        for (flags, random) in [("01", false), ("03", true), ("02", true), ("00", false)] {
            let mut h = HeaderMap::new();
            h.insert(
                "traceparent",
                HeaderValue::from_str(&TP.replace("-01", &format!("-{flags}"))).unwrap(),
            );
            let ids = TraceIds::new(&extract(&h), true);
            assert_eq!(ids.flags & w3c::FLAG_RANDOM != 0, random, "{flags}");
        }
    }

    #[test]
    fn random_flag_is_set_when_starting() {
        let ids = TraceIds::new(&Inbound::default(), false);
        assert_eq!(ids.flags, w3c::FLAG_RANDOM);
        assert!(ids.remote_parent.is_none());
    }

    #[test]
    fn invalid_traceparent_drops_tracestate() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-zz-00f067aa0ba902b7-01"),
        );
        h.insert("tracestate", HeaderValue::from_static("a=1"));
        let inbound = extract(&h);
        assert!(inbound.parent.is_none());
        assert!(inbound.tracestate.is_none());
    }

    fn all() -> Propagation {
        Propagation::new(vec![
            Format::TraceContext,
            Format::Baggage,
            Format::B3,
            Format::B3Multi,
            Format::Jaeger,
        ])
    }

    #[test]
    fn formats_are_tried_in_configured_order() {
        let mut h = HeaderMap::new();
        h.insert(
            "b3",
            HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        );
        h.insert("uber-trace-id", HeaderValue::from_static("abc:1f:0:1"));
        let b3_first = Propagation::new(vec![Format::B3, Format::Jaeger]).extract(&h);
        assert_eq!(b3_first.source, Some(Format::B3));
        let jaeger_first = Propagation::new(vec![Format::Jaeger, Format::B3]).extract(&h);
        assert_eq!(jaeger_first.source, Some(Format::Jaeger));
    }

    #[test]
    fn w3c_wins_when_formats_agree_first_valid_wins_when_they_disagree() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static(TP));
        h.insert("tracestate", HeaderValue::from_static("k=v"));
        h.insert(
            "b3",
            HeaderValue::from_static("4bf92f3577b34da6a3ce929d0e0e4736-e457b5a2e4d86bd1-1"),
        );
        let b3_first = Propagation::new(vec![Format::B3, Format::TraceContext]);
        let agree = b3_first.extract(&h);
        assert_eq!(agree.source, Some(Format::TraceContext));
        assert_eq!(agree.tracestate.unwrap().as_str(), "k=v");
        h.insert(
            "b3",
            HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        );
        let disagree = b3_first.extract(&h);
        assert_eq!(disagree.source, Some(Format::B3));
        assert!(
            disagree.tracestate.is_none(),
            "tracestate only travels with a W3C parent"
        );
    }

    #[test]
    fn unconfigured_formats_are_ignored() {
        let mut h = HeaderMap::new();
        h.insert(
            "b3",
            HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        );
        h.insert("baggage", HeaderValue::from_static("a=1"));
        let inbound = extract(&h);
        assert!(inbound.parent.is_none());
        assert_eq!(inbound.baggage.unwrap().value, "a=1");
    }

    #[test]
    fn every_configured_format_is_injected_consistently_and_replaces_copies() {
        let mut h = HeaderMap::new();
        h.append("traceparent", HeaderValue::from_static(TP));
        h.append("traceparent", HeaderValue::from_static(TP));
        h.insert(
            "x-b3-traceid",
            HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7"),
        );
        h.insert("x-b3-flags", HeaderValue::from_static("1"));
        let (t, s, p) = ([0x12; 16], [0x34; 8], [0x56; 8]);
        let bag = baggage::extract(&{
            let mut b = HeaderMap::new();
            b.insert("baggage", HeaderValue::from_static("k=v"));
            b
        });
        all().inject(
            &mut h,
            None,
            &Outgoing {
                trace_id: &t,
                span_id: &s,
                parent_id: &p,
                flags: w3c::FLAG_SAMPLED,
                tracestate: None,
                baggage: bag.as_ref(),
            },
        );
        assert_eq!(h.get_all("traceparent").iter().count(), 1);
        assert!(h.get("x-b3-flags").is_none(), "inbound B3 copies removed");
        for f in [
            Format::TraceContext,
            Format::B3,
            Format::B3Multi,
            Format::Jaeger,
        ] {
            let got = Propagation::new(vec![f]).extract(&h);
            let parent = got.parent.unwrap_or_else(|| panic!("{f:?} not injected"));
            assert_eq!(
                (parent.trace_id, parent.parent_id, parent.sampled()),
                (t, s, true),
                "{f:?}"
            );
        }
        assert_eq!(h["baggage"], "k=v");
        assert_eq!(h["x-b3-parentspanid"], "5656565656565656");
        // The ids made for this request are never to be indexed by HPACK; what repeats
        // across requests (baggage) may be.
        for name in [
            "traceparent",
            "b3",
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-parentspanid",
            "uber-trace-id",
        ] {
            assert!(h[name].is_sensitive(), "{name}");
        }
        assert!(!h["baggage"].is_sensitive());
    }

    #[test]
    fn correlation_ids_are_never_indexed_whether_made_or_reused() {
        let names = [http::HeaderName::from_static("x-request-id")];
        let made = correlation::resolve(&HeaderMap::new(), &names).unwrap();
        assert!(!made.reused() && made.value.to_value().unwrap().is_sensitive());
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("rid-1"));
        let reused = correlation::resolve(&h, &names).unwrap();
        assert!(reused.reused() && reused.value.to_value().unwrap().is_sensitive());
        assert_eq!(reused.value.as_str(), "rid-1");
        assert!(
            !h["x-request-id"].is_sensitive(),
            "the inbound value is untouched"
        );
    }

    #[test]
    fn duplicate_formats_are_kept_once() {
        let p = Propagation::new(vec![Format::B3, Format::B3, Format::Jaeger]);
        assert_eq!(p.formats(), [Format::B3, Format::Jaeger]);
    }

    #[test]
    fn bad_tracestate_does_not_affect_traceparent() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static(TP));
        h.insert("tracestate", HeaderValue::from_static("@bad=1"));
        let inbound = extract(&h);
        assert!(inbound.parent.is_some());
        assert!(inbound.tracestate.is_none());
    }
}
