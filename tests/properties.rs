//! Property tests for every parser of untrusted input: arbitrary bytes never panic, valid
//! input round-trips through format and parse, whatever is accepted is spec-valid, and
//! invalid input is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use tracegate::config::{Env, duration, load};
use tracegate::context::{b3, baggage, correlation, jaeger, w3c};
use tracegate::route::Router;

fn headers(name: &'static str, values: &[Vec<u8>]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        if let Ok(v) = HeaderValue::from_bytes(v) {
            h.append(HeaderName::from_static(name), v);
        }
    }
    h
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes that are mostly header-like: hex digits, separators, a little of everything.
fn headerish() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(b"0123456789abcdefABCDEF-,;=: \t".to_vec()),
            1 => any::<u8>(),
        ],
        0..120,
    )
}

proptest! {
    // Failures print their minimal input; regressions found become unit tests by hand.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn traceparent_never_panics_and_accepts_only_valid(value in headerish()) {
        if let Some(tp) = w3c::parse_traceparent(&value) {
            prop_assert!(tp.trace_id != [0; 16] && tp.parent_id != [0; 8]);
            // What was accepted is version-00 shaped lowercase hex, dashes in place.
            let text = String::from_utf8(value.clone()).unwrap();
            let t = text.trim_matches([' ', '\t']);
            prop_assert!(t.len() >= 55);
            prop_assert!(!t[..55].bytes().any(|b| b.is_ascii_uppercase()));
        }
    }

    #[test]
    fn traceparent_round_trips(trace in any::<[u8; 16]>(), parent in any::<[u8; 8]>(), flags in any::<u8>()) {
        prop_assume!(trace != [0; 16] && parent != [0; 8]);
        let formatted = w3c::format_traceparent(&trace, &parent, flags);
        prop_assert_eq!(formatted.len(), 55);
        let tp = w3c::parse_traceparent(formatted.as_bytes()).unwrap();
        prop_assert_eq!(tp.trace_id, trace);
        prop_assert_eq!(tp.parent_id, parent);
        prop_assert_eq!(tp.flags, flags & 0x03);
        // Uppercase is invalid; so are the all-zero ids and version ff.
        let upper = formatted.to_str().unwrap().to_uppercase();
        if upper.bytes().any(|b| b.is_ascii_uppercase()) {
            prop_assert!(w3c::parse_traceparent(upper.as_bytes()).is_none());
        }
        let zero = format!("00-{}-{}-01", "0".repeat(32), hex(&parent));
        prop_assert!(w3c::parse_traceparent(zero.as_bytes()).is_none());
        let ff = format!("ff-{}-{}-01", hex(&trace), hex(&parent));
        prop_assert!(w3c::parse_traceparent(ff.as_bytes()).is_none());
    }

    #[test]
    fn tracestate_output_is_always_valid(lines in prop::collection::vec(headerish(), 0..4)) {
        let h = headers("tracestate", &lines);
        if let Some(ts) = w3c::extract_tracestate(&h) {
            prop_assert!(!ts.is_empty() && ts.len() <= 32);
            let mut keys = std::collections::HashSet::new();
            for (k, v) in ts.members() {
                prop_assert!(w3c::valid_tracestate_key(k.as_bytes()), "key {:?}", k);
                prop_assert!(w3c::valid_tracestate_value(v.as_bytes()), "value {:?}", v);
                prop_assert!(keys.insert(k.to_string()), "duplicate key {:?}", k);
            }
        }
    }

    #[test]
    fn tracestate_round_trips(members in prop::collection::btree_map("[a-z][a-z0-9_*/-]{0,20}", "[!-+--<>-~]{1,30}", 1..32)) {
        let line = members.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        let h = headers("tracestate", &[line.clone().into_bytes()]);
        let ts = w3c::extract_tracestate(&h).unwrap();
        prop_assert_eq!(ts.as_str(), line.as_str());
    }

    #[test]
    fn baggage_output_is_valid_and_stable(lines in prop::collection::vec(headerish(), 0..4)) {
        let h = headers("baggage", &lines);
        if let Some(b) = baggage::extract(&h) {
            let mut out = HeaderMap::new();
            baggage::inject(&mut out, Some(&b));
            let again = baggage::extract(&out).unwrap();
            let (first, second) = (out.get("baggage").unwrap().clone(), {
                let mut o = HeaderMap::new();
                baggage::inject(&mut o, Some(&again));
                o.get("baggage").unwrap().clone()
            });
            prop_assert_eq!(first.clone(), second);
            prop_assert!(first.len() <= 8192);
            prop_assert!(first.to_str().unwrap().split(',').count() <= 180);
        }
    }

    #[test]
    fn baggage_keeps_valid_members(members in prop::collection::btree_map("[a-zA-Z0-9!#$&'*+.^_`|~-]{1,16}", "[a-zA-Z0-9%!#$&'()*+./:<=>?@_`{}|~-]{0,24}", 1..20)) {
        let line = members.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        let b = baggage::extract(&headers("baggage", &[line.into_bytes()])).unwrap();
        for k in members.keys() {
            prop_assert!(b.get(k).is_some(), "lost {:?}", k);
        }
    }

    #[test]
    fn b3_and_jaeger_never_panic(single in headerish(), ids in prop::collection::vec(headerish(), 5), uber in headerish()) {
        let _ = b3::extract_single(&headers("b3", &[single]));
        let mut h = HeaderMap::new();
        for (name, v) in ["x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"].iter().zip(ids) {
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                h.insert(*name, v);
            }
        }
        if let Some(tp) = b3::extract_multi(&h) {
            prop_assert!(tp.trace_id != [0; 16] && tp.parent_id != [0; 8]);
        }
        if let Some(tp) = jaeger::extract(&headers("uber-trace-id", &[uber])) {
            prop_assert!(tp.trace_id != [0; 16] && tp.parent_id != [0; 8]);
        }
    }

    #[test]
    fn b3_and_jaeger_round_trip(trace in any::<[u8; 16]>(), span in any::<[u8; 8]>(), parent in any::<[u8; 8]>(), sampled in any::<bool>()) {
        prop_assume!(trace != [0; 16] && span != [0; 8] && parent != [0; 8]);
        let mut h = HeaderMap::new();
        b3::inject_single(&mut h, &trace, &span, &parent, sampled);
        let tp = b3::extract_single(&h).unwrap();
        prop_assert_eq!((tp.trace_id, tp.parent_id, tp.sampled()), (trace, span, sampled));
        let mut h = HeaderMap::new();
        b3::inject_multi(&mut h, &trace, &span, &parent, sampled);
        let tp = b3::extract_multi(&h).unwrap();
        prop_assert_eq!((tp.trace_id, tp.parent_id, tp.sampled()), (trace, span, sampled));
        let mut h = HeaderMap::new();
        jaeger::inject(&mut h, &trace, &span, sampled);
        let tp = jaeger::extract(&h).unwrap();
        prop_assert_eq!((tp.trace_id, tp.parent_id, tp.sampled()), (trace, span, sampled));
    }

    #[test]
    fn correlation_ids_are_sane_or_generated(values in prop::collection::vec(headerish(), 0..3)) {
        let sent: Vec<Vec<u8>> = values.into_iter().filter(|v| HeaderValue::from_bytes(v).is_ok()).collect();
        let h = headers("x-request-id", &sent);
        let names = [HeaderName::from_static("x-request-id")];
        let id = correlation::resolve(&h, &names).unwrap();
        prop_assert!(correlation::is_sane(id.value.as_bytes()));
        if id.reused() {
            prop_assert_eq!(sent.len(), 1);
            prop_assert_eq!(id.value.as_bytes(), &sent[0][..]);
        } else if sent.len() == 1 {
            prop_assert!(!correlation::is_sane(&sent[0]));
        }
    }

    #[test]
    fn durations_never_panic_and_round_trip(text in "\\PC{0,12}", ms in 0u64..10_000_000) {
        let _ = duration::parse(&text);
        prop_assert_eq!(duration::parse(&format!("{ms}ms")).unwrap().as_millis() as u64, ms);
    }

    #[test]
    fn configs_never_panic(text in "([a-z_]{1,12}:( [\\[\\]{}a-z0-9:./\"-]{0,12})?\n( {2,4}- ?[a-z_]{0,10}:? ?[a-z0-9./:\"]{0,10}\n){0,3}){0,6}") {
        match load(&text, "prop.yaml", &Env::default()) {
            Ok(s) => prop_assert!(!s.listeners.is_empty()),
            Err(errors) => {
                prop_assert!(!errors.0.is_empty());
                for e in &errors.0 {
                    prop_assert!(!e.message.is_empty());
                }
            }
        }
    }

    #[test]
    fn route_matching_never_panics_and_prefixes_hold(
        path in "/[a-zA-Z0-9/._~%-]{0,40}",
        host in proptest::option::of("[a-zA-Z0-9.-]{1,20}(:[0-9]{1,5})?"),
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "BREW"]),
    ) {
        let yaml = "upstreams:\n  - name: a\n    endpoints: [http://h:1]\nroutes:\n  - match: { path_regex: \"/users/[0-9]+\", methods: [GET] }\n    upstream: a\n  - match: { host: \"*.example.com\", path_prefix: /api }\n    upstream: a\n  - match: { path_prefix: /static/ }\n    upstream: a\n  - match: { path: /exact }\n    upstream: a\n";
        let s = load(yaml, "r.yaml", &Env::default()).unwrap();
        let router = Router::new(&s.routes, true, &[]);
        let m = http::Method::from_bytes(method.as_bytes()).unwrap();
        let found = router.find(host.as_deref(), &path, &m, &HeaderMap::new()).map(|r| r.name.to_string());
        let under_static = path == "/static" || path.starts_with("/static/");
        if under_static && !(path.starts_with("/users/") && method == "GET") {
            prop_assert!(found.is_some(), "{} not routed", path);
        }
        if found.is_none() {
            prop_assert!(!under_static && path != "/exact");
        }
    }
}
