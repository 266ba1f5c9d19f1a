//! Step 3 of the request path: the inbound trace context and the correlation id.
//!
//! Decides "continue" (valid inbound `traceparent`: same trace id, our own span ids) or
//! "start" (absent or invalid: new trace id, inbound `tracestate` dropped).

pub mod correlation;
pub mod ids;
pub mod w3c;

use http::HeaderMap;

pub use w3c::{TraceParent, TraceState};

/// What the caller sent, validated.
#[derive(Clone, Debug, Default)]
pub struct Inbound {
    /// The caller's context when its `traceparent` is valid.
    pub parent: Option<TraceParent>,
    /// Only kept with a valid parent; otherwise dropped.
    pub tracestate: Option<TraceState>,
}

/// Extracts the caller's W3C context. `tracestate` is not even parsed without a valid parent.
pub fn extract(headers: &HeaderMap) -> Inbound {
    match w3c::extract_traceparent(headers) {
        Some(parent) => Inbound {
            parent: Some(parent),
            tracestate: w3c::extract_tracestate(headers),
        },
        None => Inbound::default(),
    }
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
