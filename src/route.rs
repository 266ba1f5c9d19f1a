//! Step 2 of the request path: match (host, path, method, headers) to a route.
//!
//! Routes are tried in config order and the first whose conditions all hold wins. Matching
//! allocates nothing: hosts are compared case-insensitively in place, ports ignored.

use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::config::{HostMatch, PathMatch, RouteSettings};
use crate::sample::{Ratio, RoutePolicy, TailRule};

/// A route ready for matching.
#[derive(Debug)]
pub struct Route {
    /// `http.route`, shared with every span of this route.
    pub name: Arc<str>,
    /// Index of the upstream.
    pub upstream: usize,
    /// Sampling ratio and tail rule.
    pub policy: RoutePolicy,
    /// Never traced: trace headers pass through untouched.
    pub excluded: bool,
    /// Static span attributes: the process-wide ones, then this route's (which win).
    pub attributes: Arc<crate::span::Block>,
    /// This route's request-duration histograms, found once per label set.
    pub histograms: Arc<crate::metrics::RouteHistograms>,
    /// Its place in the router (`Router::route`).
    pub index: usize,
    path: PathMatch,
    host: Option<HostMatch>,
    methods: Vec<Method>,
    headers: Vec<(http::HeaderName, Option<http::HeaderValue>)>,
}

/// All routes of one config version.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(
        settings: &[RouteSettings],
        keep_errors: bool,
        global_attributes: &[(String, String)],
    ) -> Self {
        Router {
            routes: settings
                .iter()
                .enumerate()
                .map(|(index, r)| Route {
                    name: Arc::from(r.name.as_str()),
                    upstream: r.upstream,
                    policy: RoutePolicy {
                        ratio: Ratio::new(r.ratio),
                        tail: TailRule {
                            keep_errors,
                            slow: r.slow_threshold,
                        },
                    },
                    excluded: r.excluded,
                    attributes: merge(global_attributes, &r.attributes),
                    histograms: Arc::default(),
                    index,
                    path: r.path.clone(),
                    host: r.host.clone(),
                    methods: r.methods.clone(),
                    headers: r.headers.clone(),
                })
                .collect(),
        }
    }

    /// The route at `index` (`Route::index`).
    pub fn route(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    /// The first route whose conditions all hold.
    pub fn find(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.matches(host, path, method, headers))
    }
}

/// `base` overridden per key by `over`, as one shared block of span attributes.
pub fn merge(base: &[(String, String)], over: &[(String, String)]) -> Arc<crate::span::Block> {
    use crate::span::Fixed;
    use std::borrow::Cow;
    let attr =
        |(k, v): &(String, String)| (Cow::Owned(k.clone()), Fixed::Str(Cow::Owned(v.clone())));
    let mut out: Vec<_> = base
        .iter()
        .filter(|(k, _)| !over.iter().any(|(o, _)| o == k))
        .map(attr)
        .collect();
    out.extend(over.iter().map(attr));
    Arc::new(crate::span::Block::new(out))
}

/// The host without its port (IPv6 literals keep their brackets).
pub fn strip_port(host: &str) -> &str {
    split_port(host).0
}

/// The host and its port's digits (empty when there is no port, or it is not all digits).
/// IPv6 literals keep their brackets.
pub fn split_port(host: &str) -> (&str, &str) {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => {
                let port = host[i + 1..].strip_prefix(':').unwrap_or_default();
                let port = if port.bytes().all(|b| b.is_ascii_digit()) {
                    port
                } else {
                    ""
                };
                (&host[..=i], port)
            }
            None => (host, ""),
        };
    }
    // The digits at the end, then a colon before them: a port (`str::rfind` went through the
    // char searcher, ~160 instructions for `127.0.0.1:8080`).
    let digits = host.bytes().rev().take_while(u8::is_ascii_digit).count();
    match host.len().checked_sub(digits + 1) {
        Some(colon) if host.as_bytes()[colon] == b':' => (&host[..colon], &host[colon + 1..]),
        _ => (host, ""),
    }
}

impl Route {
    fn matches(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return false;
        }
        let path_ok = match &self.path {
            PathMatch::Any => true,
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
            }
            PathMatch::Regex(re) => re.is_match(path),
        };
        if !path_ok {
            return false;
        }
        if let Some(want) = &self.host {
            let Some(h) = host.map(strip_port) else {
                return false;
            };
            let ok = match want {
                HostMatch::Exact(w) => h.eq_ignore_ascii_case(w),
                HostMatch::Suffix(s) => {
                    h.len() > s.len()
                        && h.is_char_boundary(h.len() - s.len())
                        && h[h.len() - s.len()..].eq_ignore_ascii_case(s)
                }
            };
            if !ok {
                return false;
            }
        }
        self.headers.iter().all(|(name, value)| match value {
            None => headers.contains_key(name),
            Some(v) => headers.get_all(name).iter().any(|hv| hv == v),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Env, load};

    fn router(yaml: &str) -> Router {
        let s = load(yaml, "t.yaml", &Env::default()).unwrap();
        Router::new(&s.routes, true, &[])
    }

    const UP: &str = "upstreams:\n  - name: a\n    endpoints: [http://127.0.0.1:1]\n  - name: b\n    endpoints: [http://127.0.0.1:2]\n";

    fn find<'a>(
        r: &'a Router,
        host: Option<&str>,
        path: &str,
        method: Method,
        headers: &HeaderMap,
    ) -> Option<&'a str> {
        r.find(host, path, &method, headers).map(|r| &*r.name)
    }

    #[test]
    fn first_match_wins_in_config_order() {
        let r = router(&format!(
            "{UP}routes:\n  - name: api\n    match: {{path_prefix: /api}}\n    upstream: a\n  - name: all\n    upstream: b\n"
        ));
        let h = HeaderMap::new();
        assert_eq!(find(&r, None, "/api/x", Method::GET, &h), Some("api"));
        assert_eq!(find(&r, None, "/other", Method::GET, &h), Some("all"));
    }

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        let r = router(&format!(
            "{UP}routes:\n  - match: {{path_prefix: /api/}}\n    upstream: a\n"
        ));
        let h = HeaderMap::new();
        assert_eq!(find(&r, None, "/api", Method::GET, &h), Some("/api/*"));
        assert_eq!(find(&r, None, "/api/v1", Method::GET, &h), Some("/api/*"));
        assert_eq!(find(&r, None, "/apix", Method::GET, &h), None);
    }

    #[test]
    fn root_prefix_matches_everything() {
        let r = router(&format!(
            "{UP}routes:\n  - match: {{path_prefix: /}}\n    upstream: a\n"
        ));
        assert!(find(&r, None, "/anything", Method::GET, &HeaderMap::new()).is_some());
    }

    #[test]
    fn exact_path_and_regex() {
        let r = router(&format!(
            "{UP}routes:\n  - match: {{path: /login}}\n    upstream: a\n  - name: user\n    match: {{path_regex: '/users/[0-9]+'}}\n    upstream: b\n"
        ));
        let h = HeaderMap::new();
        assert_eq!(find(&r, None, "/login", Method::POST, &h), Some("/login"));
        assert_eq!(find(&r, None, "/login/x", Method::POST, &h), None);
        assert_eq!(find(&r, None, "/users/42", Method::GET, &h), Some("user"));
        assert_eq!(
            find(&r, None, "/users/42/x", Method::GET, &h),
            None,
            "regex is anchored"
        );
    }

    #[test]
    fn host_exact_wildcard_case_and_port() {
        let r = router(&format!(
            "{UP}routes:\n  - name: exact\n    match: {{host: Example.com}}\n    upstream: a\n  - name: wild\n    match: {{host: '*.example.org'}}\n    upstream: b\n"
        ));
        let h = HeaderMap::new();
        assert_eq!(
            find(&r, Some("EXAMPLE.com:8080"), "/", Method::GET, &h),
            Some("exact")
        );
        assert_eq!(
            find(&r, Some("api.example.org"), "/", Method::GET, &h),
            Some("wild")
        );
        assert_eq!(find(&r, Some("example.org"), "/", Method::GET, &h), None);
        assert_eq!(find(&r, None, "/", Method::GET, &h), None);
    }

    #[test]
    fn methods_and_headers() {
        let r = router(&format!(
            "{UP}routes:\n  - name: m\n    match:\n      methods: [post, PUT]\n      headers:\n        - name: X-Tenant\n          value: blue\n        - name: x-debug\n    upstream: a\n"
        ));
        let mut h = HeaderMap::new();
        h.insert("x-tenant", "blue".parse().unwrap());
        assert_eq!(
            find(&r, None, "/", Method::POST, &h),
            None,
            "x-debug missing"
        );
        h.insert("x-debug", "".parse().unwrap());
        assert_eq!(find(&r, None, "/", Method::POST, &h), Some("m"));
        assert_eq!(find(&r, None, "/", Method::GET, &h), None);
        h.insert("x-tenant", "green".parse().unwrap());
        assert_eq!(find(&r, None, "/", Method::PUT, &h), None);
    }

    #[test]
    fn strip_port_handles_ipv6() {
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("a.b:1"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        for (host, expected) in [
            ("127.0.0.1:8080", "127.0.0.1"),
            ("a.b:", "a.b"),
            (":80", ""),
            ("a:b:80", "a:b"),
            ("a.b:8x", "a.b:8x"),
            ("8080", "8080"),
            ("", ""),
            ("[::1]", "[::1]"),
            ("[::1", "[::1"),
            ("é:1", "é"),
        ] {
            assert_eq!(strip_port(host), expected, "{host}");
        }
        for (host, expected) in [
            ("127.0.0.1:8080", ("127.0.0.1", "8080")),
            ("a.b", ("a.b", "")),
            ("a.b:", ("a.b", "")),
            ("a.b:8x", ("a.b:8x", "")),
            ("[::1]:443", ("[::1]", "443")),
            ("[::1]", ("[::1]", "")),
            ("[::1]:x", ("[::1]", "")),
            ("[::1]x:80", ("[::1]", "")),
        ] {
            assert_eq!(split_port(host), expected, "{host}");
        }
    }
}
