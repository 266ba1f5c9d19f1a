//! What of a request beyond the conventions' attributes becomes span content: allow-listed
//! headers (sensitive ones as `REDACTED` unless revealed) and query strings with secret
//! parameters redacted.

use std::borrow::Cow;

use http::HeaderMap;
use http::header::HeaderName;

use crate::config::{CaptureSettings, HeaderList, SENSITIVE_HEADERS};

pub const REDACTED: &str = "REDACTED";

/// Captured headers: (lowercase name, value) in arrival order.
pub type Headers = Vec<(HeaderName, String)>;

#[derive(Clone, Debug, Default)]
pub struct Capture {
    settings: CaptureSettings,
    redact_query: Vec<String>,
}

impl Capture {
    pub fn new(settings: CaptureSettings, redact_query: Vec<String>) -> Self {
        Capture {
            settings,
            redact_query,
        }
    }

    pub fn request(&self, headers: &HeaderMap) -> Headers {
        self.pick(&self.settings.request, headers)
    }

    /// Whether response headers are captured.
    pub fn of_responses(&self) -> bool {
        !matches!(self.settings.response, HeaderList::None)
    }

    pub fn response(&self, headers: &HeaderMap) -> Headers {
        self.pick(&self.settings.response, headers)
    }

    fn pick(&self, list: &HeaderList, headers: &HeaderMap) -> Headers {
        let keep = |name: &HeaderName| match list {
            HeaderList::None => false,
            HeaderList::All => true,
            HeaderList::Some(names) => names.contains(name),
        };
        if matches!(list, HeaderList::None) {
            return Vec::new();
        }
        headers
            .iter()
            .filter(|(name, _)| keep(name))
            .map(|(name, value)| {
                let shown = if SENSITIVE_HEADERS.contains(&name.as_str())
                    && !self.settings.reveal.contains(name)
                {
                    REDACTED.to_string()
                } else {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                };
                (name.clone(), shown)
            })
            .collect()
    }

    /// The query with the values of listed parameters replaced by `REDACTED`.
    pub fn query<'a>(&self, query: &'a str) -> Cow<'a, str> {
        redact_query(query, &self.redact_query)
    }
}

/// Replaces the value of every `name=value` pair whose name is listed (exact match).
pub fn redact_query<'a>(query: &'a str, names: &[String]) -> Cow<'a, str> {
    let secret = |pair: &str| {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        pair.contains('=') && names.iter().any(|n| n == name)
    };
    if !query.split('&').any(secret) {
        return Cow::Borrowed(query);
    }
    let parts: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if secret(pair) => Cow::Owned(format!("{name}={REDACTED}")),
            _ => Cow::Borrowed(pair),
        })
        .collect();
    Cow::Owned(parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn settings(request: HeaderList, reveal: &[&str]) -> CaptureSettings {
        CaptureSettings {
            request,
            response: HeaderList::None,
            reveal: reveal
                .iter()
                .map(|h| HeaderName::from_bytes(h.as_bytes()).unwrap())
                .collect(),
        }
    }

    fn headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer secret"));
        h.insert("cookie", HeaderValue::from_static("session=abc"));
        h.insert("x-tenant", HeaderValue::from_static("blue"));
        h.append("x-tenant", HeaderValue::from_static("green"));
        h
    }

    #[test]
    fn sensitive_headers_are_redacted_even_when_all_are_captured() {
        let c = Capture::new(settings(HeaderList::All, &[]), vec![]);
        let got = c.request(&headers());
        assert!(got.contains(&(HeaderName::from_static("authorization"), REDACTED.into())));
        assert!(got.contains(&(HeaderName::from_static("cookie"), REDACTED.into())));
        assert!(!format!("{got:?}").contains("secret") && !format!("{got:?}").contains("abc"));
        assert_eq!(
            got.iter().filter(|(n, _)| n == "x-tenant").count(),
            2,
            "every value of a repeated header"
        );
    }

    #[test]
    fn revealed_sensitive_header_is_recorded_as_is() {
        let c = Capture::new(settings(HeaderList::All, &["cookie"]), vec![]);
        assert!(
            c.request(&headers())
                .contains(&(HeaderName::from_static("cookie"), "session=abc".into()))
        );
    }

    #[test]
    fn allow_list_and_none() {
        let c = Capture::new(
            settings(
                HeaderList::Some(vec![HeaderName::from_static("x-tenant")]),
                &[],
            ),
            vec![],
        );
        assert_eq!(c.request(&headers()).len(), 2);
        let c = Capture::new(settings(HeaderList::None, &[]), vec![]);
        assert!(c.request(&headers()).is_empty());
    }

    #[test]
    fn query_values_are_redacted_by_name() {
        let names: Vec<String> = ["Signature", "sig"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            redact_query("a=1&Signature=xyz&sig=q&b=2", &names),
            "a=1&Signature=REDACTED&sig=REDACTED&b=2"
        );
        assert!(
            matches!(redact_query("a=1&b=2", &names), Cow::Borrowed(_)),
            "no allocation when nothing matches"
        );
        assert_eq!(
            redact_query("signature=x&sig", &names),
            "signature=x&sig",
            "exact names, valueless kept"
        );
    }
}
