//! Correlation id: reuse the caller's request id when it is sane, else generate a UUID v4.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use super::ids;

/// The longest inbound id that is reused as-is.
pub const MAX_LEN: usize = 128;

/// The id and the header name it travels under (upstream and back to the client).
#[derive(Clone, Debug)]
pub struct CorrelationId {
    pub header: HeaderName,
    pub value: IdValue,
}

impl CorrelationId {
    /// True when taken from the inbound request, false when generated.
    pub fn reused(&self) -> bool {
        matches!(self.value, IdValue::Reused(_))
    }
}

/// A correlation id's value: the caller's, as it came, or one tracegate made, kept as text.
/// A made id as a header value of its own was an allocation, a check of each of its bytes,
/// and reference counts raised and dropped by each of the places that hold it (the
/// upstream request, the exchange, the response): ~300 instructions a request. Our
/// HTTP/1.1 connections, the span and the access log read the text; it becomes a header
/// value only where a header map takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdValue {
    Reused(HeaderValue),
    /// A UUID v4.
    Made([u8; 36]),
}

impl IdValue {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            IdValue::Reused(v) => v.as_bytes(),
            IdValue::Made(text) => text,
        }
    }

    /// The id as text: visible ASCII, whether made or reused ([`is_sane`]).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// As a header value, never indexed by HPACK (`context::unique_value`).
    pub fn to_value(&self) -> Option<HeaderValue> {
        match self {
            IdValue::Reused(v) => Some(v.clone()),
            IdValue::Made(text) => super::unique_value(text),
        }
    }
}

/// A sane id: 1 to 128 visible ASCII characters (0x21-0x7E).
pub fn is_sane(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= MAX_LEN && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Takes the first configured header that is present, once, with a sane value; otherwise
/// generates a UUID v4 under the first configured header name. `None` when the list is empty.
pub fn resolve(headers: &HeaderMap, names: &[HeaderName]) -> Option<CorrelationId> {
    resolve_seen(headers, names, super::NameLengths::of(headers))
}

/// `resolve`, with the name lengths of `headers` already taken.
pub fn resolve_seen(
    headers: &HeaderMap,
    names: &[HeaderName],
    seen: super::NameLengths,
) -> Option<CorrelationId> {
    for name in names.iter().filter(|n| seen.may_have(n)) {
        let mut values = headers.get_all(name).iter();
        if let Some(v) = values.next() {
            if values.next().is_none() && is_sane(v.as_bytes()) {
                // Never indexed by HPACK, as the ids tracegate makes (`unique_value`).
                let mut value = v.clone();
                value.set_sensitive(true);
                return Some(CorrelationId {
                    header: name.clone(),
                    value: IdValue::Reused(value),
                });
            }
        }
    }
    let first = names.first()?;
    Some(CorrelationId {
        header: first.clone(),
        value: IdValue::Made(ids::uuid_v4()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<HeaderName> {
        vec![
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-correlation-id"),
        ]
    }

    #[test]
    fn first_present_header_in_list_order_is_reused() {
        let mut h = HeaderMap::new();
        h.insert("x-correlation-id", HeaderValue::from_static("corr-1"));
        h.insert("x-request-id", HeaderValue::from_static("req-1"));
        let c = resolve(&h, &names()).unwrap();
        assert_eq!(c.header, "x-request-id");
        assert_eq!(c.value.as_str(), "req-1");
        assert!(c.reused());
    }

    #[test]
    fn second_header_used_when_first_absent() {
        let mut h = HeaderMap::new();
        h.insert("x-correlation-id", HeaderValue::from_static("corr-1"));
        let c = resolve(&h, &names()).unwrap();
        assert_eq!(c.header, "x-correlation-id");
        assert!(c.reused());
    }

    #[test]
    fn insane_values_are_replaced_by_uuid() {
        for bad in ["", "has space", &"x".repeat(129)] {
            let mut h = HeaderMap::new();
            h.insert("x-request-id", HeaderValue::from_str(bad).unwrap());
            let c = resolve(&h, &names()).unwrap();
            assert!(!c.reused(), "{bad:?}");
            assert_eq!(c.value.as_bytes().len(), 36);
            assert!(is_sane(c.value.as_bytes()));
            assert_eq!(c.header, "x-request-id");
        }
    }

    #[test]
    fn non_ascii_value_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-request-id",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert!(!resolve(&h, &names()).unwrap().reused());
    }

    #[test]
    fn empty_list_disables_correlation() {
        assert!(resolve(&HeaderMap::new(), &[]).is_none());
    }
}
