//! The heads of an HTTP/1.1 exchange with an upstream: the request line and fields
//! written out, with the body's framing; the response head parsed, with its body's framing
//! and whether the connection persists (RFC 9112 sections 6 and 9.3).

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Version};

use super::body::Incoming;
use super::{MAX_FIELDS, RequestBody};
use crate::http1::{Chunk, Names, parse_decimal, put_field};

/// The request body's framing on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// This many bytes, no more and no fewer.
    Length(u64),
    Chunked,
}

/// Writes the request line and fields into `out`; returns the body's framing, with the
/// `Content-Length` or `Transfer-Encoding` it takes (as hyper's client chooses them).
pub(super) fn encode_head(
    parts: &http::request::Parts,
    body: &RequestBody,
    out: &mut Vec<u8>,
) -> Framing {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let uri = &parts.uri;
    if uri.scheme().is_some() {
        out.extend_from_slice(uri.to_string().as_bytes());
    } else {
        match uri.path_and_query() {
            Some(pq) if !pq.as_str().is_empty() => out.extend_from_slice(pq.as_str().as_bytes()),
            _ => out.push(b'/'),
        }
    }
    let http10 = parts.version == Version::HTTP_10;
    out.extend_from_slice(if http10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    let h = &parts.headers;
    // (framing, write the caller's Transfer-Encoding, its Content-Length, a length to add,
    // add `chunked`). A request without a body (most of them) needs neither field looked up.
    let (framing, keep_te, keep_cl, add_length, add_chunked) =
        if http_body::Body::is_end_stream(body) {
            (Framing::Length(0), false, true, None, false)
        } else {
            body_framing(parts, http_body::Body::size_hint(body).exact(), http10)
        };
    for (name, value) in h.iter() {
        if (name == header::TRANSFER_ENCODING && !keep_te)
            || (name == header::CONTENT_LENGTH && !keep_cl)
        {
            continue;
        }
        put_field(out, name, value);
    }
    body.added.put(out);
    if let Some(n) = add_length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(n.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if add_chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// The framing of a request body that is not known to be empty: (framing, write the
/// caller's Transfer-Encoding, its Content-Length, a length to add, add `chunked`).
fn body_framing(
    parts: &http::request::Parts,
    exact: Option<u64>,
    http10: bool,
) -> (Framing, bool, bool, Option<u64>, bool) {
    let h = &parts.headers;
    let given_length = content_length(h);
    if http10 {
        // HTTP/1.0 has no chunked coding: without a length there is no body.
        return match (given_length, exact) {
            (Some(n), _) => (Framing::Length(n), false, true, None, false),
            (None, Some(n)) => (Framing::Length(n), false, false, Some(n), false),
            (None, None) => (Framing::Length(0), false, false, None, false),
        };
    }
    if h.contains_key(header::TRANSFER_ENCODING) {
        let chunked = h
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        (Framing::Chunked, true, false, None, !chunked)
    } else if let Some(n) = given_length {
        (Framing::Length(n), false, true, None, false)
    } else if let Some(n) = exact {
        (Framing::Length(n), false, false, Some(n), false)
    } else if matches!(parts.method, Method::GET | Method::HEAD | Method::CONNECT) {
        // These almost never have a body; an unknown one is not sent as chunks.
        (Framing::Length(0), false, true, None, false)
    } else {
        (Framing::Chunked, false, false, None, true)
    }
}

/// `Content-Length`, when every copy (and every comma-separated value) is the same number.
fn content_length(h: &HeaderMap) -> Option<u64> {
    let mut found = None;
    for v in h.get_all(header::CONTENT_LENGTH) {
        for part in v.to_str().ok()?.split(',') {
            let n = parse_decimal(part.trim().as_bytes())?;
            if found.is_some_and(|f| f != n) {
                return None;
            }
            found = Some(n);
        }
    }
    found
}

/// Header fields a response's map has room for from the start, at least. The proxy adds
/// two (`X-Trace-Id`, the correlation id), and hyper's server keeps the map of each
/// response it writes for the next request it reads on that connection, to which the proxy
/// adds up to six (`X-Forwarded-*`, trace context, correlation id): without the room, both
/// maps grew (a reallocation and a rehash each) on every request, ~1.8k instructions.
const MAP_ROOM: usize = 12;

/// A parsed response head.
pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    pub(super) keep_alive: bool,
    /// How the body is framed.
    pub(super) body: Incoming,
    /// Body bytes that came with the head, copied with it.
    pub(super) ready: Option<Bytes>,
}

/// Parses a response head from the front of `buf`: `None` while it is incomplete; with it,
/// the bytes it took (body bytes in `ready` come after those).
/// `bodiless`: the request was HEAD (its response has no body, whatever it says). Field names
/// come from `names` where the connection's last response had them.
pub(super) fn parse_head(
    buf: &[u8],
    bodiless: bool,
    names: &mut Names,
) -> Result<Option<(Head, usize)>, String> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Not zeroed first (3 KiB): httparse writes the fields it parses.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut res = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let used = match config.parse_response_with_uninit_headers(&mut res, buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(format!(
                "the response head has more than {MAX_FIELDS} header fields"
            ));
        }
        Err(e) => return Err(format!("invalid response head: {e}")),
    };
    let code = res.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| format!("invalid response status code {code}"))?;
    let version = if res.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Framing and persistence, from the raw fields.
    let mut length: Option<u64> = None;
    let mut bad_length: Option<&str> = None;
    let mut te: Option<&[u8]> = None;
    let (mut close, mut keep_alive) = (false, false);
    for f in res.headers.iter() {
        if f.name.eq_ignore_ascii_case("content-length") {
            for part in f.value.split(|b| *b == b',') {
                match parse_decimal(part.trim_ascii()) {
                    None => bad_length = Some("invalid Content-Length in the response"),
                    Some(n) if length.is_some_and(|l| l != n) => {
                        bad_length = Some("conflicting Content-Length values in the response");
                    }
                    Some(n) => length = Some(n),
                }
            }
        } else if f.name.eq_ignore_ascii_case("transfer-encoding") {
            te = Some(f.value);
        } else if f.name.eq_ignore_ascii_case("connection") {
            for t in f.value.split(|b| *b == b',') {
                let t = t.trim_ascii();
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    // Transfer-Encoding overrides Content-Length, which is not passed on (RFC 9112 6.3:
    // forwarded with it, the client would frame the body by the wrong length).
    if let (None, Some(bad)) = (te, bad_length) {
        return Err(bad.into());
    }
    let body = match (te, length) {
        // No body, whatever the fields say (RFC 9112 6.3, first rule).
        _ if bodiless
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED =>
        {
            Incoming::Length(0)
        }
        (Some(te), _) => {
            let last = te.rsplit(|b| *b == b',').next().unwrap_or_default();
            if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                Incoming::Chunked(Chunk::Size)
            } else {
                Incoming::Close
            }
        }
        (None, Some(n)) => Incoming::Length(n),
        (None, None) => Incoming::Close,
    };
    let keep_alive = match version {
        Version::HTTP_10 => keep_alive && !close,
        _ => !close,
    };
    // The head, and the body when it is all here, in one copy.
    let rest = buf.len() - used;
    let with = match body {
        Incoming::Length(n) => rest.min(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => 0,
    };
    let all = crate::http1::shared_copy(&buf[..used + with]);
    let base = buf.as_ptr() as usize;
    let mut headers = crate::http1::header_map((res.headers.len() + 2).max(MAP_ROOM));
    for (i, f) in res.headers.iter().enumerate() {
        if te.is_some() && f.name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        let name = names
            .name(i, f.name.as_bytes())
            .map_err(|_| format!("invalid header name {:?} in the response", f.name))?;
        let at = f.value.as_ptr() as usize - base;
        let value = HeaderValue::from_maybe_shared(all.slice(at..at + f.value.len()))
            .map_err(|_| format!("invalid value of {name} in the response"))?;
        headers.append(name, value);
    }
    let ready = (with > 0).then(|| all.slice(used..used + with));
    Ok(Some((
        Head {
            status,
            version,
            headers,
            keep_alive,
            body,
            ready,
        },
        used,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn head(text: &str) -> (Head, usize) {
        parse_head(text.as_bytes(), false, &mut Names::default())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn the_response_framing_follows_rfc_9112() {
        let (h, used) = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel");
        assert_eq!(h.body, Incoming::Length(5));
        assert_eq!(used, 38);
        assert_eq!(
            h.ready.as_deref(),
            Some(&b"hel"[..]),
            "body bytes come with the head"
        );
        assert!(h.keep_alive);
        let (h, _) = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.body, Incoming::Chunked(Chunk::Size));
        let (h, _) = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
        assert_eq!(
            h.body,
            Incoming::Close,
            "not chunked last: until the upstream closes"
        );
        let (h, _) = head("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        assert_eq!(h.body, Incoming::Close);
        assert!(!h.keep_alive);
        let (h, _) = head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert!(!h.keep_alive, "HTTP/1.0 closes unless asked to keep alive");
        assert_eq!(h.version, Version::HTTP_10);
        let (h, _) = head("HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n");
        assert!(h.keep_alive);
        let (h, _) = head("HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(
            h.body,
            Incoming::Length(3),
            "copies that agree are one length"
        );
        assert!(
            parse_head(
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
                false,
                &mut Names::default()
            )
            .is_err()
        );
        assert!(
            parse_head(
                b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
                false,
                &mut Names::default()
            )
            .is_err()
        );
        assert!(
            parse_head(
                b"HTTP/1.1 200 OK\r\ncontent-length: 3",
                false,
                &mut Names::default()
            )
            .unwrap()
            .is_none()
        );
        assert!(parse_head(b"NOT HTTP\r\n\r\n", false, &mut Names::default()).is_err());
        let (h, _) = head("HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nnext");
        assert_eq!(
            (h.body, h.ready),
            (Incoming::Length(0), None),
            "204 has no body"
        );
        let (h, _) = parse_head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n",
            true,
            &mut Names::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.body, Incoming::Length(0), "nor has the answer to HEAD");
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\ncontent-length: 99\r\ncontent-length: x\r\ntransfer-encoding: chunked\r\n\r\n",
        );
        assert_eq!(
            h.body,
            Incoming::Chunked(Chunk::Size),
            "chunked wins over a length"
        );
        assert!(
            !h.headers.contains_key("content-length"),
            "and the length is not passed on"
        );
        let many: String = (0..=MAX_FIELDS).map(|i| format!("x-{i}: y\r\n")).collect();
        assert!(
            parse_head(
                format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes(),
                false,
                &mut Names::default()
            )
            .is_err()
        );
    }

    #[test]
    fn header_values_share_one_copy_of_the_head() {
        let (h, _) = head("HTTP/1.1 404 Not Found\r\nx-a: 1\r\nx-a: 2\r\nserver: up\r\n\r\n");
        assert_eq!(h.status, 404);
        let a: Vec<_> = h.headers.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        assert_eq!(h.headers["server"], "up");
    }

    fn request(
        method: Method,
        headers: &[(&str, &str)],
        body: RequestBody,
    ) -> Request<RequestBody> {
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = "/p?q=1".parse().unwrap();
        for (k, v) in headers {
            req.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        req
    }

    fn encoded(req: Request<RequestBody>) -> (String, Framing) {
        let (parts, body) = req.into_parts();
        let mut out = Vec::new();
        let f = encode_head(&parts, &body, &mut out);
        (String::from_utf8(out).unwrap(), f)
    }

    #[test]
    fn an_empty_body_gets_no_framing_and_the_fields_go_as_they_are() {
        let (text, f) = encoded(request(
            Method::GET,
            &[("host", "app"), ("x-a", "1"), ("x-a", "2")],
            RequestBody::empty(),
        ));
        assert_eq!(
            text,
            "GET /p?q=1 HTTP/1.1\r\nhost: app\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
        assert_eq!(f, Framing::Length(0));
        let (text, f) = encoded(request(
            Method::POST,
            &[("content-length", "0")],
            RequestBody::empty(),
        ));
        assert_eq!(text, "POST /p?q=1 HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(f, Framing::Length(0));
    }
}
