//! The heads of an HTTP/1.1 exchange with an upstream: the request line and fields
//! written out, with the body's framing; the response head parsed, with its body's framing
//! and whether the connection persists (RFC 9112 sections 6 and 9.3).

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Version};

use super::body::Incoming;
use super::{MAX_FIELDS, RequestBody};
use crate::http1::{Chunk, Names, RawFields, parse_decimal, put_field};

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

/// A parsed response head.
pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    /// Empty when the fields were kept as they came (`raw`).
    pub(super) headers: HeaderMap,
    /// The fields as they came, when asked for (`parse_head`'s `raw`).
    pub(super) raw: Option<RawFields>,
    pub(super) keep_alive: bool,
    /// How the body is framed.
    pub(super) body: Incoming,
    /// Body bytes that came with the head, copied with it.
    pub(super) ready: Option<Bytes>,
}

/// `forward::HOP_BY_HOP`'s names, as bytes to compare raw names with.
const HOP_BY_HOP: [&[u8]; 7] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
];

/// What the fields say about framing, persistence and passing them on.
#[derive(Default)]
struct Seen<'a> {
    length: Option<u64>,
    bad_length: Option<&'static str>,
    /// The last `Transfer-Encoding`.
    te: Option<&'a [u8]>,
    close: bool,
    keep_alive: bool,
    /// A hop-by-hop field is among them.
    hop: bool,
    /// `Connection` names a field other than `close` and `keep-alive`.
    names_more: bool,
    date: bool,
    /// `RawFields::names` of them all.
    names: u64,
}

impl<'a> Seen<'a> {
    fn of(fields: &[httparse::Header<'a>]) -> Self {
        let mut s = Seen::default();
        for f in fields {
            let name = f.name.as_bytes();
            s.names |= crate::http1::name_bit(name);
            // By length first: most names are none of these, and fail at once.
            match name.len() {
                14 if name.eq_ignore_ascii_case(b"content-length") => {
                    for part in f.value.split(|b| *b == b',') {
                        match parse_decimal(part.trim_ascii()) {
                            None => s.bad_length = Some("invalid Content-Length in the response"),
                            Some(n) if s.length.is_some_and(|l| l != n) => {
                                s.bad_length =
                                    Some("conflicting Content-Length values in the response");
                            }
                            Some(n) => s.length = Some(n),
                        }
                    }
                }
                17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                    s.te = Some(f.value);
                    s.hop = true;
                }
                10 if name.eq_ignore_ascii_case(b"connection") => {
                    s.hop = true;
                    for t in f.value.split(|b| *b == b',') {
                        let t = t.trim_ascii();
                        if t.eq_ignore_ascii_case(b"close") {
                            s.close = true;
                        } else if t.eq_ignore_ascii_case(b"keep-alive") {
                            s.keep_alive = true;
                        } else if !t.is_empty() {
                            s.names_more = true;
                        }
                    }
                }
                4 if name.eq_ignore_ascii_case(b"date") => s.date = true,
                2 | 7 | 10 | 16 => {
                    s.hop |= HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h));
                }
                _ => {}
            }
        }
        s
    }
}

/// Whether a field named `name` goes on to the client with the fields kept raw: not
/// hop-by-hop, not named by `Connection`, not a `Content-Length` beside a
/// `Transfer-Encoding`.
fn passes(name: &[u8], fields: &[httparse::Header<'_>], seen: &Seen<'_>) -> bool {
    if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || (seen.te.is_some() && name.eq_ignore_ascii_case(b"content-length"))
    {
        return false;
    }
    !seen.names_more
        || !fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case("connection"))
            .flat_map(|f| f.value.split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(name))
}

thread_local! {
    /// Where the fields kept raw are gathered when some are left out.
    static GATHER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The fields kept raw, and the body bytes that came with the head, in one copy.
/// `used`: the head's length; `with`: the body bytes after it to keep.
fn raw_fields(
    buf: &[u8],
    fields: &[httparse::Header<'_>],
    seen: &Seen<'_>,
    used: usize,
    with: usize,
) -> (RawFields, Option<Bytes>) {
    let base = buf.as_ptr() as usize;
    let at = |f: &httparse::Header<'_>| f.name.as_ptr() as usize - base;
    let crlf = |i: usize| i >= 2 && &buf[i - 2..i] == b"\r\n";
    let length = if seen.te.is_some() { None } else { seen.length };
    // The lines as they came when all of them pass and each ends in CRLF (httparse takes a
    // bare LF too): the head's copy starts at the first field.
    let start = fields.first().map_or(used - 2, at);
    if !seen.hop && crlf(used) && crlf(used - 2) && fields.iter().all(|f| crlf(at(f))) {
        let all = crate::http1::shared_copy(&buf[start..used + with]);
        let lines = all.slice(..used - 2 - start);
        let ready = (with > 0).then(|| all.slice(used - start..));
        let raw = RawFields {
            lines,
            length,
            date: seen.date,
            names: seen.names,
        };
        return (raw, ready);
    }
    GATHER.with_borrow_mut(|out| {
        out.clear();
        let mut date = false;
        for f in fields {
            let name = f.name.as_bytes();
            if passes(name, fields, seen) {
                date |= name.eq_ignore_ascii_case(b"date");
                crate::http1::put_raw_field(out, name, f.value);
            }
        }
        let n = out.len();
        out.extend_from_slice(&buf[used..used + with]);
        let all = crate::http1::shared_copy(out);
        let raw = RawFields {
            lines: all.slice(..n),
            length,
            date,
            // Of the names left out too: a bit too many only costs a look.
            names: seen.names,
        };
        (raw, (with > 0).then(|| all.slice(n..)))
    })
}

/// Parses a response head from the front of `buf`: `None` while it is incomplete; with it,
/// the bytes it took (body bytes in `ready` come after those).
/// `bodiless`: the request was HEAD (its response has no body, whatever it says). `raw`:
/// keep the fields as they came, without the hop-by-hop ones, instead of in a map. Field
/// names come from `names` where the connection's last response had them.
pub(super) fn parse_head(
    buf: &[u8],
    bodiless: bool,
    raw: bool,
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
    let seen = Seen::of(res.headers);
    let te = seen.te;
    // Transfer-Encoding overrides Content-Length, which is not passed on (RFC 9112 6.3:
    // forwarded with it, the client would frame the body by the wrong length).
    if let (None, Some(bad)) = (te, seen.bad_length) {
        return Err(bad.into());
    }
    let body = match (te, seen.length) {
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
        Version::HTTP_10 => seen.keep_alive && !seen.close,
        _ => !seen.close,
    };
    // The head, and the body when it is all here, in one copy.
    let rest = buf.len() - used;
    let with = match body {
        Incoming::Length(n) => rest.min(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => 0,
    };
    if raw {
        let (fields, ready) = raw_fields(buf, res.headers, &seen, used, with);
        let head = Head {
            status,
            version,
            headers: HeaderMap::new(),
            raw: Some(fields),
            keep_alive,
            body,
            ready,
        };
        return Ok(Some((head, used)));
    }
    let all = crate::http1::shared_copy(&buf[..used + with]);
    let base = buf.as_ptr() as usize;
    // Room for the fields and the two the proxy may add (`X-Trace-Id`, the correlation id),
    // no more. Such a map goes mostly to hyper's HTTP/2 server, which frees it (else to
    // hyper's HTTP/1 server for HTTP/1.0 clients and upgrades, or to `listen::h1` when
    // response headers are captured), and the spare it is taken from is most often the
    // map of a request that came over HTTP/2, sized by h2 for that request. Asking for
    // more grew that map (a reallocation and a rehash) on every request.
    let mut headers = crate::http1::header_map(res.headers.len() + 2);
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
            raw: None,
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
        parse_head(text.as_bytes(), false, false, &mut Names::default())
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
                false,
                &mut Names::default()
            )
            .is_err()
        );
        assert!(
            parse_head(
                b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
                false,
                false,
                &mut Names::default()
            )
            .is_err()
        );
        assert!(
            parse_head(
                b"HTTP/1.1 200 OK\r\ncontent-length: 3",
                false,
                false,
                &mut Names::default()
            )
            .unwrap()
            .is_none()
        );
        assert!(parse_head(b"NOT HTTP\r\n\r\n", false, false, &mut Names::default()).is_err());
        let (h, _) = head("HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nnext");
        assert_eq!(
            (h.body, h.ready),
            (Incoming::Length(0), None),
            "204 has no body"
        );
        let (h, _) = parse_head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n",
            true,
            false,
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

    fn raw(text: &str) -> (Head, usize) {
        parse_head(text.as_bytes(), false, true, &mut Names::default())
            .unwrap()
            .unwrap()
    }

    fn lines(h: &Head) -> &str {
        std::str::from_utf8(&h.raw.as_ref().unwrap().lines).unwrap()
    }

    #[test]
    fn fields_kept_raw_are_the_lines_as_they_came() {
        let text = "HTTP/1.1 200 OK\r\nX-Mixed-Case:  Value \r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\ncontent-length: 5\r\n\r\nhello, and the next";
        let (h, used) = raw(text);
        assert_eq!(used, text.find("hello").unwrap());
        assert!(h.headers.is_empty(), "no map");
        assert_eq!(
            lines(&h),
            "X-Mixed-Case:  Value \r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\ncontent-length: 5\r\n"
        );
        let r = h.raw.as_ref().unwrap();
        assert_eq!((r.length, r.date), (Some(5), true));
        assert_eq!(h.ready.as_deref(), Some(&b"hello"[..]));
        assert_eq!((h.body, h.keep_alive), (Incoming::Length(5), true));
        let names: Vec<_> = r.fields().map(|(n, _)| n.to_vec()).collect();
        assert_eq!(names, [&b"X-Mixed-Case"[..], b"Date", b"content-length"]);

        // No fields at all; a body that is not all here yet.
        let (h, _) = raw("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!((lines(&h), h.raw.as_ref().unwrap().date), ("", false));
        let (h, _) = raw("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal");
        assert_eq!(lines(&h), "Content-Length: 10\r\n");
        assert_eq!(h.ready.as_deref(), Some(&b"hal"[..]));
    }

    #[test]
    fn fields_kept_raw_leave_out_what_is_hop_by_hop() {
        // `Connection`, the field it names (in another case), the other hop-by-hop names,
        // and the length beside chunked; what is left is rewritten one CRLF line each.
        let (h, _) = raw(
            "HTTP/1.1 200 OK\r\nServer: legacy\r\nConnection: keep-alive, X-Hop\r\nx-hop: secret\r\n\
             Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: trailers\r\nTrailer: x-sum\r\n\
             Upgrade: h2c\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\nx-hopper: kept\r\n\r\n5",
        );
        assert_eq!(lines(&h), "Server: legacy\r\nx-hopper: kept\r\n");
        let r = h.raw.as_ref().unwrap();
        assert_eq!(
            (r.length, r.date),
            (None, false),
            "the length went with chunked"
        );
        assert_eq!(h.body, Incoming::Chunked(Chunk::Size));
        assert_eq!(h.ready, None, "a chunked body is read by the body");

        // A bare LF ends a line for httparse: the lines are written anew, with CRLF.
        let (h, _) = raw("HTTP/1.1 200 OK\nX-A: 1\r\nDate: x\ncontent-length: 2\n\nok");
        assert_eq!(lines(&h), "X-A: 1\r\nDate: x\r\ncontent-length: 2\r\n");
        let r = h.raw.as_ref().unwrap();
        assert_eq!((r.length, r.date), (Some(2), true));
        assert_eq!(h.ready.as_deref(), Some(&b"ok"[..]));

        // `Connection: close` is read (and left out) as in a map.
        let (h, _) = raw("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
        assert_eq!((lines(&h), h.keep_alive), ("content-length: 0\r\n", false));
    }

    #[test]
    fn the_raw_hop_by_hop_names_are_the_maps() {
        let map: Vec<String> = crate::forward::HOP_BY_HOP
            .iter()
            .map(|n| n.to_string())
            .collect();
        let raw: Vec<String> = HOP_BY_HOP
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        assert_eq!(map, raw);
    }

    #[test]
    fn fields_kept_raw_are_the_maps_fields_but_for_case() {
        // Whatever the head, the lines hold what the map would after the hop-by-hop filter
        // (`forward::remove_hop_by_hop`), names in the upstream's case (the map puts a
        // name's values together: compared sorted).
        let heads = [
            "HTTP/1.1 200 OK\r\nA: 1\r\nb: 2\r\nA: 3\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\nConnection: X-A, close\r\nX-a: 1\r\nX-B: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\nVary: *\r\n\r\n",
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1, 1\r\n\r\nx",
            "HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\nKeep-Alive: 1\r\n\r\n",
        ];
        for text in heads {
            let (mut map, _) = head(text);
            crate::forward::remove_hop_by_hop(&mut map.headers);
            let from_map: Vec<String> = map
                .headers
                .iter()
                .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
                .collect();
            let (r, _) = raw(text);
            let from_raw: Vec<String> = r
                .raw
                .as_ref()
                .unwrap()
                .fields()
                .map(|(_, line)| {
                    let line = std::str::from_utf8(line).unwrap().trim_end();
                    let (n, v) = line.split_once(':').unwrap();
                    format!("{}: {}", n.to_ascii_lowercase(), v.trim())
                })
                .collect();
            let mut sorted = from_map.clone();
            sorted.sort();
            let mut raw_sorted = from_raw.clone();
            raw_sorted.sort();
            assert_eq!(raw_sorted, sorted, "{text:?}");
            assert_eq!(
                (r.status, r.keep_alive, r.body, r.ready),
                (map.status, map.keep_alive, map.body, map.ready),
                "{text:?}"
            );
        }
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
