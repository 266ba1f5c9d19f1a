//! The heads of an HTTP/1.1 exchange with a client: the request head parsed (what this
//! server serves itself, or `Unusual` for what it hands to hyper), and the response head
//! written with its body's framing, as hyper's server frames it.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

use super::body::Framing;
use crate::forward::Stamp;
use crate::http1::{Chunk, Fields, Names, parse_decimal, put_field};

/// Header fields a request's map has room for from the start, at least (and six beyond the
/// request's own). The maps come from and go back to the thread's spares
/// (`http1::header_map`), so one room for most requests lets any spare take the next
/// request without growing. Of what the proxy adds upstream only `Host` and `TE` can be new
/// entries now (the rest goes to `forward::Added`), but two beyond the request's own
/// measured no better: 31,212 against 31,306 instructions a request with a browser's head
/// at c=32 (`benches/instructions.sh`, 2026-12-06).
pub(crate) const MAP_ROOM: usize = 12;
/// Header fields parsed on the stack; a head with more goes to hyper (which applies
/// `limits.max_request_headers` above this).
pub(super) const STACK_FIELDS: usize = 100;

/// A request head this server serves itself.
pub(super) struct Head {
    pub(super) parts: http::request::Parts,
    /// `None`: no body.
    pub(super) body: Option<Framing>,
    /// The client wants the connection kept after this exchange.
    pub(super) keep_alive: bool,
}

#[allow(
    clippy::large_enum_variant,
    reason = "a head per request; boxed, its allocation and free cost more (~160 \
              instructions) than moving it twice (callgrind: 23,624 -> 23,546 a request)"
)]
pub(super) enum Parsed {
    /// The head and the bytes it took.
    Head(Head, usize),
    /// Incomplete: more bytes are needed.
    Partial,
    /// Valid or not, not for this server: HTTP/1.0, `Upgrade`, `Expect`, `CONNECT`,
    /// unusual framing, more fields than `max_fields`, bytes that do not parse. hyper
    /// serves it (and answers the invalid ones with the 400 or 431 it always has).
    Unusual,
}

/// Parses a request head from the front of `buf`, its field names taken from `names` where
/// the connection's last head had them.
pub(super) fn parse(buf: &[u8], max_fields: usize, names: &mut Names) -> Parsed {
    // Not zeroed first (3 KiB): httparse writes the fields it parses.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_FIELDS];
    let fields = &mut fields[..max_fields.min(STACK_FIELDS)];
    let mut req = httparse::Request::new(&mut []);
    let used = match req.parse_with_uninit_headers(buf, fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Unusual,
    };
    if req.version != Some(1) {
        return Parsed::Unusual;
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Parsed::Unusual;
    };
    let method = match method {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "CONNECT" => return Parsed::Unusual,
        other => match Method::from_bytes(other.as_bytes()) {
            Ok(m) => m,
            Err(_) => return Parsed::Unusual,
        },
    };
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut keep_alive = true;
    for f in req.headers.iter() {
        let name = f.name.as_bytes();
        // Only the names that matter here are looked at closely: by length first.
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => match parse_decimal(f.value) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return Parsed::Unusual,
            },
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                if chunked || !f.value.eq_ignore_ascii_case(b"chunked") {
                    return Parsed::Unusual;
                }
                chunked = true;
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for t in f.value.split(|b| *b == b',') {
                    let t = t.trim_ascii();
                    if t.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if t.eq_ignore_ascii_case(b"upgrade") {
                        return Parsed::Unusual;
                    }
                }
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => return Parsed::Unusual,
            6 if name.eq_ignore_ascii_case(b"expect") => return Parsed::Unusual,
            _ => {}
        }
    }
    let body = match (length, chunked) {
        // Both: a smuggling vector, refused (by the proxy, after hyper reads it).
        (Some(_), true) => return Parsed::Unusual,
        (None, true) => Some(Framing::Chunked(Chunk::Size)),
        (Some(n), false) if n > 0 => Some(Framing::Length(n)),
        _ => None,
    };
    // The head in one copy: the target and every value point into it.
    let all = crate::http1::shared_copy(&buf[..used]);
    let base = buf.as_ptr() as usize;
    let slice = |s: &[u8]| {
        let at = s.as_ptr() as usize - base;
        all.slice(at..at + s.len())
    };
    let Ok(uri) = Uri::from_maybe_shared(slice(target.as_bytes())) else {
        return Parsed::Unusual;
    };
    let mut headers = crate::http1::header_map((req.headers.len() + 6).max(MAP_ROOM));
    for (i, f) in req.headers.iter().enumerate() {
        let (Ok(name), Ok(value)) = (
            names.name(i, f.name.as_bytes()),
            HeaderValue::from_maybe_shared(slice(f.value)),
        ) else {
            return Parsed::Unusual;
        };
        headers.append(name, value);
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Parsed::Head(
        Head {
            parts,
            body,
            keep_alive,
        },
        used,
    )
}

/// How a response body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Out {
    /// Nothing is written (HEAD, 204, 304): whatever the body holds is dropped.
    Nothing,
    /// This many bytes.
    Length(u64),
    Chunked,
}

/// Writes the status line and fields of a response to a `method` request into `out`, with
/// the framing its body takes (`exact`: the body's size when known): the response's own
/// `Content-Length` or `Transfer-Encoding` when it has one, else a length when the size is
/// known, else chunked. `close`: the connection ends after this response. `stamp`: fields
/// written after the response's, in place of the response's of the same names.
pub(super) fn encode(
    status: StatusCode,
    fields: Fields<'_>,
    stamp: Stamp<'_>,
    method: &Method,
    exact: Option<u64>,
    close: bool,
    out: &mut Vec<u8>,
) -> Out {
    out.clear();
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
        || status.is_informational();
    let (given_length, chunked_given) = match fields {
        Fields::Map(headers) => given_framing(headers),
        Fields::Raw(raw) => (raw.length, false),
    };
    let framing = if bodiless || *method == Method::HEAD {
        Out::Nothing
    } else if chunked_given {
        Out::Chunked
    } else if let Some(n) = given_length {
        Out::Length(n)
    } else if let Some(n) = exact {
        Out::Length(n)
    } else {
        Out::Chunked
    };
    let mut has_date = false;
    let mut has_close = false;
    match fields {
        Fields::Map(headers) => {
            for (name, value) in headers {
                if name == header::TRANSFER_ENCODING && framing != Out::Chunked {
                    continue;
                }
                if stamp.covers(name) {
                    continue;
                }
                has_date |= name == header::DATE;
                has_close |= name == header::CONNECTION;
                put_field(out, name, value);
            }
        }
        // As they came, in one copy unless a field may give way to the stamp.
        Fields::Raw(raw) if !stamp.may_cover(raw.names) => {
            out.extend_from_slice(&raw.lines);
            has_date = raw.date;
        }
        Fields::Raw(raw) => {
            for (name, line) in raw.fields() {
                if stamp.covers_raw(name) {
                    continue;
                }
                has_date |= name.eq_ignore_ascii_case(b"date");
                out.extend_from_slice(line);
            }
        }
    }
    stamp.put(out);
    match framing {
        Out::Length(n) if given_length.is_none() => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa(n, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        Out::Chunked if !chunked_given => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        _ => {}
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        DATE.with_borrow_mut(|d| out.extend_from_slice(d.now()));
        out.extend_from_slice(b"\r\n");
    }
    if close && !has_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// A map's `Content-Length` (the first) and whether its last `Transfer-Encoding` ends in
/// `chunked`, in one pass over the few fields of a response: two lookups hash each name
/// and probe the map.
fn given_framing(headers: &HeaderMap) -> (Option<u64>, bool) {
    let (mut first_length, mut last_te) = (None, None);
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            first_length.get_or_insert(value);
        } else if name == header::TRANSFER_ENCODING {
            last_te = Some(value);
        }
    }
    let given_length = first_length.and_then(|v| parse_decimal(v.as_bytes()));
    let chunked_given = last_te.is_some_and(|v| {
        v.as_bytes()
            .rsplit(|b| *b == b',')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
    });
    (given_length, chunked_given)
}

pub(in crate::listen) fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The `Date` value, formatted once a second per thread.
struct DateCache {
    second: u64,
    text: Vec<u8>,
}

impl DateCache {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now).into_bytes();
        }
        &self.text
    }
}

/// Calls `f` with the `Date` value for now (formatted once a second per thread).
pub(in crate::listen) fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    DATE.with_borrow_mut(|d| f(d.now()))
}

thread_local! {
    static DATE: RefCell<DateCache> = const {
        RefCell::new(DateCache { second: 0, text: Vec::new() })
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::correlation::IdValue;
    use crate::http1::RawFields;

    fn head(text: &str) -> (Head, usize) {
        match parse(text.as_bytes(), 100, &mut Names::default()) {
            Parsed::Head(h, n) => (h, n),
            Parsed::Partial => panic!("partial: {text:?}"),
            Parsed::Unusual => panic!("unusual: {text:?}"),
        }
    }

    fn unusual(text: &str) -> bool {
        matches!(
            parse(text.as_bytes(), 100, &mut Names::default()),
            Parsed::Unusual
        )
    }

    #[test]
    fn a_plain_request_is_read_with_its_framing() {
        let (h, used) =
            head("GET /a?b=1 HTTP/1.1\r\nHost: app\r\nX-A: 1\r\nx-a: 2\r\n\r\nGET /next");
        assert_eq!(used, 50);
        assert_eq!(h.parts.method, Method::GET);
        assert_eq!(h.parts.uri, "/a?b=1");
        assert_eq!(h.parts.version, Version::HTTP_11);
        assert_eq!(h.parts.headers["host"], "app");
        let a: Vec<_> = h.parts.headers.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        assert_eq!(h.body, None);
        assert!(h.keep_alive);
        let (h, _) = head("POST / HTTP/1.1\r\ncontent-length: 5\r\nconnection: close\r\n\r\n");
        assert_eq!(h.body, Some(Framing::Length(5)));
        assert!(!h.keep_alive);
        let (h, _) = head("POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(h.body, None);
        let (h, _) = head("PUT / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.body, Some(Framing::Chunked(Chunk::Size)));
        let (h, _) = head("GET http://app:8080/x HTTP/1.1\r\n\r\n");
        assert_eq!(h.parts.uri.authority().unwrap(), "app:8080");
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nhost: a\r\n", 100, &mut Names::default()),
            Parsed::Partial
        ));
    }

    #[test]
    fn what_hyper_serves_is_left_to_it() {
        assert!(unusual("GET / HTTP/1.0\r\n\r\n"));
        assert!(unusual(
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(unusual("GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"));
        assert!(unusual(
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\ncontent-length: 1\r\n\r\n"
        ));
        assert!(unusual("CONNECT a:443 HTTP/1.1\r\n\r\n"));
        assert!(unusual(
            "POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n"
        ));
        assert!(unusual(
            "POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"
        ));
        assert!(unusual("POST / HTTP/1.1\r\ncontent-length: +1\r\n\r\n"));
        assert!(unusual(
            "POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n"
        ));
        assert!(unusual("GET / HTTP/1.1\r\nbad header\r\n\r\n"));
        assert!(unusual("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        let many: String = (0..3).map(|i| format!("x-{i}: y\r\n")).collect();
        assert!(matches!(
            parse(
                format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes(),
                2,
                &mut Names::default()
            ),
            Parsed::Unusual
        ));
        let (h, _) = head("POST / HTTP/1.1\r\ncontent-length: 7\r\ncontent-length: 7\r\n\r\n");
        assert_eq!(
            h.body,
            Some(Framing::Length(7)),
            "copies that agree are one length"
        );
    }

    fn encoded(
        status: u16,
        fields: &[(&str, &str)],
        method: Method,
        exact: Option<u64>,
        close: bool,
    ) -> (String, Out) {
        let mut h = HeaderMap::new();
        for (k, v) in fields {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut out = Vec::new();
        let framing = encode(
            StatusCode::from_u16(status).unwrap(),
            Fields::Map(&h),
            Stamp::default(),
            &method,
            exact,
            close,
            &mut out,
        );
        (String::from_utf8(out).unwrap(), framing)
    }

    /// What `encode` writes for a 200 with no body: `fields`, then `stamp`'s.
    fn stamped(fields: &HeaderMap, stamp: Stamp<'_>) -> String {
        let mut out = Vec::new();
        encode(
            StatusCode::OK,
            Fields::Map(fields),
            stamp,
            &Method::GET,
            Some(0),
            false,
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn stamped_fields_replace_the_upstreams_of_the_same_names() {
        let mut h = HeaderMap::new();
        h.append(
            "x-request-id",
            HeaderValue::from_static("upstream-overwrites"),
        );
        h.append("content-type", HeaderValue::from_static("text/plain"));
        h.append("x-trace-id", HeaderValue::from_static("the upstream's"));
        h.append(
            "date",
            HeaderValue::from_static("Wed, 02 Dec 2026 12:00:00 GMT"),
        );
        let (trace, corr) = (
            http::HeaderName::from_static("x-trace-id"),
            http::HeaderName::from_static("x-request-id"),
        );
        let id = IdValue::Reused(HeaderValue::from_static("req-7"));
        let stamp = Stamp {
            trace: Some((&trace, &[0xab; 16])),
            correlation: Some((&corr, &id)),
        };
        assert_eq!(
            stamped(&h, stamp),
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: Wed, 02 Dec 2026 12:00:00 GMT\r\n\
             x-trace-id: abababababababababababababababab\r\nx-request-id: req-7\r\n\
             content-length: 0\r\n\r\n"
        );
        // One name for both: the correlation id alone, as in a map.
        let both = Stamp {
            trace: Some((&corr, &[0xab; 16])),
            correlation: Some((&corr, &id)),
        };
        let text = stamped(&h, both);
        assert_eq!(text.matches("x-request-id").count(), 1, "{text}");
        assert!(text.contains("x-request-id: req-7\r\n"), "{text}");
        // Merged into a map (HTTP/2) instead, the same fields come out.
        crate::forward::prepare_response(
            &mut h,
            Some(&trace),
            Some(&[0xab; 16]),
            Some((&corr, &id)),
        );
        assert_eq!(
            h.get_all("x-request-id").iter().collect::<Vec<_>>(),
            ["req-7"]
        );
        assert_eq!(
            h.get_all("x-trace-id").iter().collect::<Vec<_>>(),
            ["abababababababababababababababab"]
        );
        // A made id: written as its text, merged as a value never indexed.
        let made = IdValue::Made(*b"0f8fad5b-d9cb-469f-a165-70867728950e");
        let stamp = Stamp {
            trace: None,
            correlation: Some((&corr, &made)),
        };
        let text = stamped(&h, stamp);
        assert_eq!(text.matches("x-request-id").count(), 1, "{text}");
        assert!(
            text.contains("x-request-id: 0f8fad5b-d9cb-469f-a165-70867728950e\r\n"),
            "{text}"
        );
        crate::forward::prepare_response(&mut h, None, None, Some((&corr, &made)));
        assert_eq!(h["x-request-id"], "0f8fad5b-d9cb-469f-a165-70867728950e");
        assert!(h["x-request-id"].is_sensitive());
    }

    /// What `encode` writes for a 200 to a GET with `lines` kept raw (`length`: their
    /// `Content-Length`), the body's size `exact`.
    fn raw_encoded(
        lines: &str,
        length: Option<u64>,
        stamp: Stamp<'_>,
        exact: Option<u64>,
    ) -> String {
        let raw = RawFields {
            lines: bytes::Bytes::copy_from_slice(lines.as_bytes()),
            length,
            date: lines.to_ascii_lowercase().contains("date:"),
            names: lines
                .split_terminator("\r\n")
                .map(|l| crate::http1::name_bit(l.split(':').next().unwrap().as_bytes()))
                .fold(0, |a, b| a | b),
        };
        let mut out = Vec::new();
        encode(
            StatusCode::OK,
            Fields::Raw(&raw),
            stamp,
            &Method::GET,
            exact,
            false,
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fields_kept_raw_are_written_as_they_came() {
        let trace = http::HeaderName::from_static("x-trace-id");
        let corr = http::HeaderName::from_static("x-request-id");
        let id = IdValue::Reused(HeaderValue::from_static("req-7"));
        let stamp = Stamp {
            trace: Some((&trace, &[0xab; 16])),
            correlation: Some((&corr, &id)),
        };
        // The upstream's date and length stay, in its case; none is added.
        let lines =
            "Server: legacy\r\nDATE: Wed, 02 Dec 2026 12:00:00 GMT\r\nContent-Length: 5\r\n";
        assert_eq!(
            raw_encoded(lines, Some(5), Stamp::default(), Some(5)),
            format!("HTTP/1.1 200 OK\r\n{lines}\r\n")
        );
        // The stamp's names give way in any case; the rest go as they came.
        let lines = "X-Request-ID: upstream\r\nServer: legacy\r\nx-TRACE-id: 1\r\nX-Request-IDs: 2\r\n\
                     X-Trace-Ix: 3\r\n";
        let text = raw_encoded(lines, None, stamp, Some(0));
        assert!(
            text.starts_with(
                "HTTP/1.1 200 OK\r\nServer: legacy\r\nX-Request-IDs: 2\r\nX-Trace-Ix: 3\r\n\
                 x-trace-id: abababababababababababababababab\r\nx-request-id: req-7\r\n\
                 content-length: 0\r\ndate: "
            ),
            "{text}"
        );
        assert_eq!(
            text.matches("upstream").count() + text.matches(": 1\r\n").count(),
            0
        );
        // No name with a bit of the stamp's names: the lines in one piece.
        let lines = "Server: legacy\r\nContent-Length: 0\r\n";
        let text = raw_encoded(lines, Some(0), stamp, Some(0));
        assert!(
            text.starts_with(&format!("HTTP/1.1 200 OK\r\n{lines}x-trace-id: ")),
            "{text}"
        );
        // No length among them and none known: chunked.
        let text = raw_encoded("Server: legacy\r\n", None, Stamp::default(), None);
        assert!(
            text.contains("Server: legacy\r\ntransfer-encoding: chunked\r\ndate: "),
            "{text}"
        );
    }

    #[test]
    fn a_response_is_framed_as_hyper_frames_it() {
        let date = "date: Wed, 02 Dec 2026 12:00:00 GMT";
        let (text, f) = encoded(200, &[("date", &date[6..])], Method::GET, Some(5), false);
        assert_eq!(
            text,
            format!("HTTP/1.1 200 OK\r\n{date}\r\ncontent-length: 5\r\n\r\n")
        );
        assert_eq!(f, Out::Length(5));
        let (text, f) = encoded(
            502,
            &[("date", &date[6..]), ("content-length", "3")],
            Method::GET,
            None,
            true,
        );
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 502 Bad Gateway\r\n{date}\r\ncontent-length: 3\r\nconnection: close\r\n\r\n"
            )
        );
        assert_eq!(f, Out::Length(3));
        let (text, f) = encoded(200, &[("date", &date[6..])], Method::GET, None, false);
        assert!(
            text.ends_with("transfer-encoding: chunked\r\n\r\n"),
            "{text}"
        );
        assert_eq!(f, Out::Chunked);
        let (text, f) = encoded(
            200,
            &[("content-length", "9")],
            Method::HEAD,
            Some(0),
            false,
        );
        assert!(
            text.contains("content-length: 9\r\n"),
            "kept for HEAD: {text}"
        );
        assert!(text.contains("\r\ndate: "), "a date is added: {text}");
        assert_eq!(f, Out::Nothing);
        let (text, f) = encoded(204, &[], Method::GET, Some(0), false);
        assert!(!text.contains("content-length"), "{text}");
        assert_eq!(f, Out::Nothing);
        let (text, _) = encoded(599, &[], Method::GET, Some(0), false);
        assert!(text.starts_with("HTTP/1.1 599 <none>\r\n"), "{text}");
    }

    #[test]
    fn the_first_length_and_the_last_coding_decide() {
        let date = ("date", "Wed, 02 Dec 2026 12:00:00 GMT");
        // The first Content-Length counts.
        let (text, f) = encoded(
            200,
            &[date, ("content-length", "7"), ("content-length", "9")],
            Method::GET,
            None,
            false,
        );
        assert_eq!(f, Out::Length(7), "{text}");
        // A Transfer-Encoding whose last field ends in `chunked`: chunked, not added again.
        let (text, f) = encoded(
            200,
            &[
                date,
                ("transfer-encoding", "gzip"),
                ("content-length", "5"),
                ("transfer-encoding", "chunked"),
            ],
            Method::GET,
            Some(5),
            false,
        );
        assert_eq!(f, Out::Chunked, "{text}");
        assert_eq!(text.matches("chunked").count(), 1, "{text}");
        assert!(text.contains("transfer-encoding: gzip\r\n"), "{text}");
        // The last field does not end in `chunked`: the given length frames it, and the
        // codings are not written.
        let (text, f) = encoded(
            200,
            &[
                date,
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "gzip"),
                ("content-length", "5"),
            ],
            Method::GET,
            None,
            false,
        );
        assert_eq!(f, Out::Length(5), "{text}");
        assert!(!text.contains("transfer-encoding"), "{text}");
    }
}
