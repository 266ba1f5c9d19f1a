//! Every trace-context header parser on the same bytes: traceparent, tracestate, baggage,
//! B3 single and multi, Jaeger, correlation ids. None may panic; what they accept must be
//! valid (non-zero ids, valid tracestate members).
#![no_main]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tracegate::context::{b3, baggage, correlation, jaeger, w3c};

fuzz_target!(|data: &[u8]| {
    if let Some(tp) = w3c::parse_traceparent(data) {
        assert!(tp.trace_id != [0; 16] && tp.parent_id != [0; 8]);
    }
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut h = HeaderMap::new();
    for name in [
        "traceparent",
        "tracestate",
        "baggage",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-sampled",
        "uber-trace-id",
        "x-request-id",
    ] {
        h.append(HeaderName::from_static(name), value.clone());
    }
    let _ = w3c::extract_traceparent(&h);
    if let Some(ts) = w3c::extract_tracestate(&h) {
        for (k, v) in ts.members() {
            assert!(w3c::valid_tracestate_key(k.as_bytes()));
            assert!(w3c::valid_tracestate_value(v.as_bytes()));
        }
    }
    if let Some(b) = baggage::extract(&h) {
        let mut out = HeaderMap::new();
        baggage::inject(&mut out, Some(&b));
    }
    for tp in [b3::extract_single(&h), b3::extract_multi(&h), jaeger::extract(&h)]
        .into_iter()
        .flatten()
    {
        assert!(tp.trace_id != [0; 16] && tp.parent_id != [0; 8]);
    }
    let names = [HeaderName::from_static("x-request-id")];
    if let Some(id) = correlation::resolve(&h, &names) {
        assert!(correlation::is_sane(id.value.as_bytes()));
    }
});
