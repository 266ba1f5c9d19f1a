//! A request's decoded fields checked and turned into `http::request::Parts` (RFC 9113,
//! 8.2 and 8.3). A request that breaks a rule is malformed: the stream is reset with
//! PROTOCOL_ERROR, the connection goes on.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri, Version};

use super::hpack::Field;

/// Why a request is malformed (for logs and tests; the peer only sees PROTOCOL_ERROR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// What a request's head says beyond its parts.
#[derive(Debug)]
pub struct Head {
    pub parts: Parts,
    /// `content-length`, which the DATA frames must add up to.
    pub content_length: Option<u64>,
}

/// The `:authority` a connection's last request named, parsed. A client names the same
/// one request after request: the next that names the same bytes takes a clone instead of
/// parsing them again (`Authority::from_shared`, ~220 instructions a request). Kept as a
/// copy, so that it holds no header block (or read buffer) it was a slice of.
#[derive(Debug, Default)]
pub struct LastAuthority(Option<Authority>);

impl LastAuthority {
    fn parse(&mut self, a: &Bytes) -> Result<Authority, Malformed> {
        if let Some(last) = &self.0
            && last.as_str().as_bytes() == &a[..]
        {
            return Ok(last.clone());
        }
        let parsed = authority_of(Bytes::copy_from_slice(a))?;
        self.0 = Some(parsed.clone());
        Ok(parsed)
    }
}

/// A connection's first request (for the tests): [`parts_after`] with nothing seen before.
#[cfg(test)]
pub fn parts<I>(fields: I) -> Result<Head, Malformed>
where
    I: IntoIterator<Item = Field>,
    I::IntoIter: ExactSizeIterator,
{
    parts_after(fields, &mut LastAuthority::default())
}

/// Builds a connection's next request from its fields, in the order they came; `last` is
/// the connection's. Its map is one of the thread's spares (`http1::header_map`, as for
/// HTTP/1.1 heads), given back once the request has gone upstream.
pub fn parts_after<I>(fields: I, last: &mut LastAuthority) -> Result<Head, Malformed>
where
    I: IntoIterator<Item = Field>,
    I::IntoIter: ExactSizeIterator,
{
    let fields = fields.into_iter();
    let (mut method, mut scheme, mut authority, mut path) = (None, None, None, None);
    let mut protocol = None;
    let mut headers = crate::http1::header_map(fields.len().max(crate::listen::h1::head::MAP_ROOM));
    let mut regular = false;
    let mut cookies: Option<BytesMut> = None;
    let mut content_length = None;
    // The first `host` field's value, kept as the loop passes it: two lookups in the map
    // after it (is there one, and what is it) cost ~210 instructions a request.
    let mut host_field: Option<Bytes> = None;
    for Field { name, value, .. } in fields {
        if let Some(pseudo) = name.strip_prefix(b":") {
            if regular {
                return Err(Malformed("pseudo-header after a regular field"));
            }
            let slot = match pseudo {
                b"method" => &mut method,
                b"scheme" => &mut scheme,
                b"authority" => &mut authority,
                b"path" => &mut path,
                // Extended CONNECT (RFC 8441, 4), announced in our SETTINGS.
                b"protocol" => &mut protocol,
                _ => return Err(Malformed("unknown or response pseudo-header")),
            };
            if slot.replace(value).is_some() {
                return Err(Malformed("pseudo-header repeated"));
            }
            continue;
        }
        regular = true;
        if name.iter().any(u8::is_ascii_uppercase) {
            return Err(Malformed("uppercase field name"));
        }
        let name = HeaderName::from_bytes(&name).map_err(|_| Malformed("bad field name"))?;
        if is_connection_specific(&name) {
            return Err(Malformed("connection-specific field"));
        }
        if name == header::TE && value.as_ref() != b"trailers" {
            return Err(Malformed("te other than trailers"));
        }
        if value
            .first()
            .into_iter()
            .chain(value.last())
            .any(|b| *b == b' ' || *b == b'\t')
        {
            return Err(Malformed("field value with leading or trailing whitespace"));
        }
        if name == header::CONTENT_LENGTH {
            let n = std::str::from_utf8(&value)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(Malformed("bad content-length"))?;
            if content_length.is_some_and(|m| m != n) {
                return Err(Malformed("conflicting content-length"));
            }
            content_length = Some(n);
        }
        if name == header::HOST && host_field.is_none() {
            host_field = Some(value.clone());
        }
        if name == header::COOKIE {
            // Crumbs go upstream as one field (RFC 9113, 8.2.3).
            match &mut cookies {
                Some(all) => {
                    all.extend_from_slice(b"; ");
                    all.extend_from_slice(&value);
                }
                None => cookies = Some(BytesMut::from(&value[..])),
            }
            continue;
        }
        let value =
            HeaderValue::from_maybe_shared(value).map_err(|_| Malformed("bad field value"))?;
        headers.append(name, value);
    }
    if let Some(c) = cookies {
        let value =
            HeaderValue::from_maybe_shared(c.freeze()).map_err(|_| Malformed("bad field value"))?;
        headers.append(header::COOKIE, value);
    }

    let method = method.ok_or(Malformed("no :method"))?;
    let method = Method::from_bytes(&method).map_err(|_| Malformed("bad :method"))?;
    // The target's parts, checked together by `Uri::from_parts` (what `Uri::builder` does,
    // without moving the parts through a `Result` at each step).
    let mut target = http::uri::Parts::default();
    // The `host` field the request goes upstream with, from `:authority` when it has none.
    let mut host = None;
    let protocol = match protocol {
        None => None,
        Some(_) if method != Method::CONNECT => {
            return Err(Malformed(":protocol without CONNECT"));
        }
        Some(p) => {
            let p = std::str::from_utf8(&p)
                .ok()
                .filter(|p| !p.is_empty() && p.bytes().all(is_token_byte))
                .ok_or(Malformed("bad :protocol"))?;
            Some(hyper::ext::Protocol::from(p))
        }
    };
    // An extended CONNECT names a resource like any request: :scheme, :path and
    // :authority (RFC 8441, 4), checked below as for the other methods.
    if method == Method::CONNECT && protocol.is_none() {
        // Host and port only (RFC 9113, 8.5).
        if scheme.is_some() || path.is_some() {
            return Err(Malformed("CONNECT with :scheme or :path"));
        }
        let authority = authority.ok_or(Malformed("CONNECT without :authority"))?;
        target.authority = Some(last.parse(&authority)?);
    } else {
        if method == Method::CONNECT && authority.is_none() {
            return Err(Malformed("CONNECT without :authority"));
        }
        let scheme = scheme.ok_or(Malformed("no :scheme"))?;
        let path = path.ok_or(Malformed("no :path"))?;
        let scheme = Scheme::try_from(&scheme[..]).map_err(|_| Malformed("bad :scheme"))?;
        let http = scheme == Scheme::HTTP || scheme == Scheme::HTTPS;
        if path.is_empty()
            || (http && path[0] != b'/' && !(&path[..] == b"*" && method == Method::OPTIONS))
        {
            return Err(Malformed("bad :path"));
        }
        // Without :authority (the host then comes in `host`, if at all) the target is
        // the path alone: `http::Uri` has no form for a scheme without an authority.
        if let Some(a) = authority {
            target.scheme = Some(scheme);
            target.authority = Some(last.parse(&a)?);
            host = Some(a);
        }
        let path = PathAndQuery::from_maybe_shared(path).map_err(|_| Malformed("bad :path"))?;
        target.path_and_query = Some(path);
    }
    let uri = Uri::from_parts(target).map_err(|_| Malformed("bad request target"))?;
    // Two names for the target: routing by one while the upstream reads the other is a
    // confusion a client could use (RFC 9113, 8.3.1: SHOULD be malformed).
    if let (Some(a), Some(h)) = (uri.authority(), &host_field)
        && !h.eq_ignore_ascii_case(a.as_str().as_bytes())
    {
        return Err(Malformed("host differs from :authority"));
    }
    // An intermediary forwarding over HTTP/1.1 must make `host` from `:authority` (RFC
    // 9113, 8.3.1), and one forwarding over HTTP/2 may send it. Made here, where the
    // authority's bytes are at hand, it shares them: made later from the `Uri`, it was a
    // copy, and the two clones `proxy::forward` takes (`host`, `x-forwarded-host`) then
    // allocated again to share it (~400 instructions of malloc and free a request,
    // benches/README.md 2026-12-07).
    if let Some(a) = host
        && host_field.is_none()
    {
        let value = HeaderValue::from_maybe_shared(a).map_err(|_| Malformed("bad :authority"))?;
        headers.insert(header::HOST, value);
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_2;
    parts.headers = headers;
    if let Some(p) = protocol {
        parts.extensions.insert(p);
    }
    Ok(Head {
        parts,
        content_length,
    })
}

fn authority_of(a: Bytes) -> Result<Authority, Malformed> {
    // No userinfo in HTTP/2's :authority (RFC 9113, 8.3.1).
    if a.contains(&b'@') {
        return Err(Malformed(":authority with userinfo"));
    }
    Authority::from_maybe_shared(a).map_err(|_| Malformed("bad :authority"))
}

/// A byte of an HTTP token (RFC 9110, 5.6.2): what a `:protocol` value is made of, as
/// `Upgrade` protocol names are.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The fields HTTP/2 forbids (RFC 9113, 8.2.2).
pub(super) fn is_connection_specific(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &'static str, value: &'static str) -> Field {
        Field {
            name: Bytes::from_static(name.as_bytes()),
            value: Bytes::from_static(value.as_bytes()),
            sensitive: false,
        }
    }

    fn get() -> Vec<Field> {
        vec![
            f(":method", "GET"),
            f(":scheme", "https"),
            f(":authority", "example.test:8443"),
            f(":path", "/a/b?c=d"),
        ]
    }

    fn with(mut fields: Vec<Field>, more: &[(&'static str, &'static str)]) -> Vec<Field> {
        fields.extend(more.iter().map(|(n, v)| f(n, v)));
        fields
    }

    #[test]
    fn a_host_that_names_the_authority_is_kept() {
        let h = parts(with(get(), &[("host", "Example.test:8443")])).unwrap();
        assert_eq!(h.parts.headers["host"], "Example.test:8443");
    }

    #[test]
    fn a_connection_parses_an_authority_it_named_before_once() {
        let mut last = LastAuthority::default();
        let first = parts_after(get(), &mut last).unwrap();
        let again = parts_after(get(), &mut last).unwrap();
        assert_eq!(again.parts.uri, "https://example.test:8443/a/b?c=d");
        assert_eq!(again.parts.uri, first.parts.uri);
        assert_eq!(again.parts.headers["host"], "example.test:8443");
        // Another authority is parsed (and checked) as it comes.
        let other = |a: &'static str| {
            let mut fields = get();
            fields[2] = f(":authority", a);
            fields
        };
        let h = parts_after(other("other.test"), &mut last).unwrap();
        assert_eq!(h.parts.uri, "https://other.test/a/b?c=d");
        assert_eq!(h.parts.headers["host"], "other.test");
        assert_eq!(
            parts_after(other("u@other.test"), &mut last).unwrap_err(),
            Malformed(":authority with userinfo")
        );
        assert_eq!(
            parts_after(other("bad authority"), &mut last).unwrap_err(),
            Malformed("bad :authority")
        );
        let h = parts_after(other("other.test"), &mut last).unwrap();
        assert_eq!(h.parts.uri.authority().unwrap(), "other.test");
    }

    #[test]
    fn a_plain_request() {
        let h = parts(with(get(), &[("accept", "*/*"), ("te", "trailers")])).unwrap();
        assert_eq!(h.parts.method, Method::GET);
        assert_eq!(h.parts.uri, "https://example.test:8443/a/b?c=d");
        assert_eq!(h.parts.version, Version::HTTP_2);
        assert_eq!(h.parts.headers["accept"], "*/*");
        assert_eq!(h.parts.headers["te"], "trailers");
        // `host` made from `:authority`, after the request's own fields.
        assert_eq!(h.parts.headers["host"], "example.test:8443");
        let names: Vec<_> = h.parts.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept", "te", "host"]);
        assert_eq!(h.content_length, None);
    }

    #[test]
    fn cookies_are_joined_and_lengths_read() {
        let h = parts(with(
            get(),
            &[
                ("cookie", "a=1"),
                ("content-length", "12"),
                ("cookie", "b=2"),
                ("content-length", "12"),
            ],
        ))
        .unwrap();
        assert_eq!(h.parts.headers.get_all("cookie").iter().count(), 1);
        assert_eq!(h.parts.headers["cookie"], "a=1; b=2");
        assert_eq!(h.content_length, Some(12));
    }

    /// An extended CONNECT's pseudo-headers but `:protocol`, and `more` after them.
    fn extended(more: &[(&'static str, &'static str)]) -> Vec<Field> {
        let mut fields = vec![
            f(":method", "CONNECT"),
            f(":scheme", "https"),
            f(":authority", "chat.test"),
            f(":path", "/ws?room=1"),
        ];
        fields.extend(more.iter().map(|(n, v)| f(n, v)));
        fields
    }

    #[test]
    fn an_extended_connect_names_its_protocol_and_resource() {
        let h = parts(extended(&[
            (":protocol", "websocket"),
            ("sec-websocket-version", "13"),
        ]))
        .unwrap();
        assert_eq!(h.parts.method, Method::CONNECT);
        assert_eq!(h.parts.uri, "https://chat.test/ws?room=1");
        let p = h.parts.extensions.get::<hyper::ext::Protocol>().unwrap();
        assert_eq!(p.as_str(), "websocket");
        assert_eq!(h.parts.headers["sec-websocket-version"], "13");
        // A plain CONNECT carries no protocol.
        let h = parts(vec![f(":method", "CONNECT"), f(":authority", "db:5432")]).unwrap();
        assert!(h.parts.extensions.get::<hyper::ext::Protocol>().is_none());
    }

    #[test]
    fn connect_and_options_star() {
        let h = parts(vec![f(":method", "CONNECT"), f(":authority", "db:5432")]).unwrap();
        assert_eq!(h.parts.uri.authority().unwrap(), "db:5432");
        let h = parts(vec![
            f(":method", "OPTIONS"),
            f(":scheme", "http"),
            f(":path", "*"),
        ])
        .unwrap();
        assert_eq!(h.parts.uri, "*");
        let h = parts(vec![
            f(":method", "GET"),
            f(":scheme", "http"),
            f(":path", "/x"),
            f("host", "h.test"),
        ])
        .unwrap();
        assert_eq!(h.parts.uri, "/x");
        assert_eq!(h.parts.headers["host"], "h.test");
    }

    #[test]
    fn malformed_requests() {
        let cases: Vec<(Vec<Field>, &str)> = vec![
            (vec![f(":scheme", "http"), f(":path", "/")], "no :method"),
            (vec![f(":method", "GET"), f(":path", "/")], "no :scheme"),
            (vec![f(":method", "GET"), f(":scheme", "http")], "no :path"),
            (
                with(get(), &[(":path", "/again")]),
                "pseudo-header repeated",
            ),
            (
                with(get(), &[(":status", "200")]),
                "unknown or response pseudo-header",
            ),
            (
                vec![
                    f(":method", "GET"),
                    f("accept", "*/*"),
                    f(":scheme", "http"),
                    f(":path", "/"),
                ],
                "pseudo-header after a regular field",
            ),
            (with(get(), &[("Accept", "*/*")]), "uppercase field name"),
            (
                with(get(), &[("connection", "keep-alive")]),
                "connection-specific field",
            ),
            (
                with(get(), &[("keep-alive", "5")]),
                "connection-specific field",
            ),
            (
                with(get(), &[("proxy-connection", "x")]),
                "connection-specific field",
            ),
            (
                with(get(), &[("transfer-encoding", "chunked")]),
                "connection-specific field",
            ),
            (
                with(get(), &[("upgrade", "websocket")]),
                "connection-specific field",
            ),
            (with(get(), &[("te", "gzip")]), "te other than trailers"),
            (
                with(get(), &[("x-a", " padded")]),
                "field value with leading or trailing whitespace",
            ),
            (with(get(), &[("x-a", "b\r\nc")]), "bad field value"),
            (
                with(get(), &[("content-length", "1x")]),
                "bad content-length",
            ),
            (
                with(get(), &[("content-length", "1"), ("content-length", "2")]),
                "conflicting content-length",
            ),
            (
                vec![f(":method", "GET"), f(":scheme", "http"), f(":path", "")],
                "bad :path",
            ),
            (
                vec![f(":method", "GET"), f(":scheme", "http"), f(":path", "a")],
                "bad :path",
            ),
            (
                vec![f(":method", "GET"), f(":scheme", "http"), f(":path", "*")],
                "bad :path",
            ),
            (
                vec![
                    f(":method", "CONNECT"),
                    f(":authority", "a:1"),
                    f(":path", "/"),
                ],
                "CONNECT with :scheme or :path",
            ),
            (vec![f(":method", "CONNECT")], "CONNECT without :authority"),
            (
                vec![
                    f(":method", "GET"),
                    f(":scheme", "http"),
                    f(":authority", "u@h"),
                    f(":path", "/"),
                ],
                ":authority with userinfo",
            ),
            (
                vec![f(":method", "G T"), f(":scheme", "http"), f(":path", "/")],
                "bad :method",
            ),
            (
                with(get(), &[(":protocol", "websocket")]),
                ":protocol without CONNECT",
            ),
            (extended(&[(":protocol", "web socket")]), "bad :protocol"),
            (extended(&[(":protocol", "")]), "bad :protocol"),
            (
                vec![
                    f(":method", "CONNECT"),
                    f(":protocol", "websocket"),
                    f(":scheme", "https"),
                    f(":authority", "chat.test"),
                ],
                "no :path",
            ),
            (
                vec![
                    f(":method", "CONNECT"),
                    f(":protocol", "websocket"),
                    f(":authority", "chat.test"),
                    f(":path", "/ws"),
                ],
                "no :scheme",
            ),
            (
                vec![
                    f(":method", "CONNECT"),
                    f(":protocol", "websocket"),
                    f(":scheme", "https"),
                    f(":path", "/ws"),
                ],
                "CONNECT without :authority",
            ),
            (
                extended(&[(":protocol", "websocket"), (":protocol", "websocket")]),
                "pseudo-header repeated",
            ),
            (
                with(get(), &[("host", "other.test")]),
                "host differs from :authority",
            ),
        ];
        for (fields, why) in cases {
            assert_eq!(parts(fields).map(|_| ()), Err(Malformed(why)), "{why}");
        }
    }
}
