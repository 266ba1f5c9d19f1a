//! HTTP/1.1 on an upstream connection of our own: the request head and body written
//! (RFC 9112), the response head parsed with `httparse`, the response body read by the
//! body itself as the client side polls it.
//!
//! Why not hyper's `client::conn::http1`: each of its connections is a task of its own fed
//! by a channel, so a request is queued (a tokio `mpsc` block of 32 request slots, ~11 KB,
//! two per connection), the connection's task woken, the response sent back over a
//! oneshot; its 8 KiB header buffer and read buffer live as long as the connection, and
//! the read buffer is given up (a new 8 KiB one allocated) after every response whose
//! headers are still in use. Here the request's own future writes the request and reads
//! the response head; the response body owns the connection while it streams and puts it
//! back on the endpoint's idle list at its end. Per idle connection: the read buffer
//! (4 KiB, grown for large bodies and shrunk back) and the head buffer (grown to the
//! largest head written).
//!
//! Behaviour kept from hyper's client: the body's framing (`Content-Length` from the
//! body's exact size, `Transfer-Encoding: chunked` for a body of unknown length, none for
//! an empty body or a bodiless GET/HEAD/CONNECT; a `Content-Length` set by the caller is
//! respected); request trailers only when named by a `Trailer` header; interim (1xx)
//! responses skipped; the response's framing by RFC 9112 section 6.3 (no body for HEAD,
//! 204 and 304; chunked; `Content-Length`, every copy agreeing; else until the upstream
//! closes). A response that comes before the request body is all sent is returned, the
//! rest of the body is not sent and the connection is closed after the response (hyper
//! would go on sending it). Limits: a response head of at most 64 KiB (Envoy's default is
//! 60 KiB) and 100 header fields (hyper's and Envoy's default).

mod body;
mod head;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::HeaderName;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as _, Frame};
use hyper::rt::{Read, ReadBuf, Write};
use tokio::time::Instant;

use super::connect::Conn;
use super::http1::Http1List;
use super::{Due, RequestBody, UpstreamBody};
use crate::error::{Failure, ProxyError};
use crate::http1::{Inbox, Names, allowed_trailers, put_field};
use crate::timer::LazyTimer;
pub use body::Body;
use body::Incoming;
use head::{Framing, Head, encode_head, parse_head};

/// The read buffer's size, and its size again whenever the connection goes idle: a
/// response head rarely needs more, and a body that fills it doubles it (up to
/// `MAX_READ_BUF`). 4 KiB against hyper's 8: -1.1 MiB peak RSS at c=256.
pub(super) const READ_BUF: usize = 4 * 1024;
/// The most a response head may take (status line, fields, the empty line).
const MAX_HEAD: usize = 64 * 1024;
/// The most the read buffer grows to while a large body streams through it.
const MAX_READ_BUF: usize = 64 * 1024;
/// Header fields in a response head.
const MAX_FIELDS: usize = 100;
/// Request body bytes gathered before they are written.
const WRITE_BATCH: usize = 64 * 1024;

/// An HTTP/1.1 connection to an upstream, between requests or carrying one.
pub struct Connection {
    io: Conn,
    inbox: Inbox,
    /// The next bytes to write: a request head, then body data in its framing.
    out: Vec<u8>,
    written: usize,
    /// The field names of the last response head.
    names: Names,
    /// Times the wait for response headers (`send` with a `Due`; see `LazyTimer`): the
    /// exchanges on a kept connection end later and later, so it moves about once per
    /// `request_timeout`. Made at the first timed exchange.
    timer: Option<LazyTimer>,
}

impl Connection {
    pub fn new(io: Conn) -> Box<Connection> {
        Box::new(Connection {
            io,
            inbox: Inbox::new(READ_BUF),
            out: Vec::with_capacity(512),
            written: 0,
            names: Names::default(),
            timer: None,
        })
    }

    fn buffered(&self) -> &[u8] {
        self.inbox.buffered()
    }

    fn consume(&mut self, n: usize) {
        self.inbox.consume(n);
    }

    /// Reads what is there into the buffer, growing it up to `max` when it is full;
    /// `Ok(0)`: the end of the stream. An error of kind `OutOfMemory` when `max` is
    /// reached (a head too large to parse).
    fn poll_fill(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(self.inbox.space(max, "response head")?);
        ready!(Pin::new(&mut self.io).poll_read(cx, rb.unfilled()))?;
        let n = rb.filled().len();
        self.inbox.filled(n, max);
        Poll::Ready(Ok(n))
    }

    /// Writes `out` out, then flushes (TLS).
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        self.out.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Whether an idle connection can take a request: the upstream has neither closed it
    /// nor sent anything since. Costs no system call unless the socket became readable.
    pub fn alive(&mut self) -> bool {
        if !self.inbox.is_empty() {
            return false;
        }
        if let Some(quiet) = self.io.quiet() {
            return quiet;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // TLS: records that carry no data (session tickets) leave it pending.
        self.poll_fill(&mut cx, READ_BUF).is_pending()
    }

    /// Whether `at` has passed; else the task is woken by then (see `timer`).
    fn expired(&mut self, at: Instant, cx: &mut Context<'_>) -> bool {
        let timer = self.timer.get_or_insert_with(|| LazyTimer::new(at));
        timer.arm(at);
        timer.expired(at, std::time::Duration::MAX, cx)
    }

    /// Ready to go back on the idle list: a buffer grown for a large body shrinks back.
    fn idle(&mut self) {
        self.inbox.idle();
    }
}

/// Where a connection goes when its response is over.
pub struct Home {
    pub list: Arc<Http1List>,
    /// Connections are kept at all (`max_idle_per_endpoint` is not 0); how many stay idle
    /// is the list's reaper's business.
    pub keeps: bool,
}

/// Sends `req` on `conn` and reads the response head. The response body keeps the
/// connection and gives it to `home` when it is over, if it can carry another request.
/// `due`: the wait for the response headers, timed here from the moment the request body
/// has all been given out (at once without one); `None`: timed by the caller.
/// An `async` block, not an `async fn`: the fn would keep its arguments twice in the future
/// (as given, and as its locals) and copy them from one to the other, the request twice
/// (into the locals, then taken apart).
pub fn send<'a>(
    mut conn: Box<Connection>,
    req: Request<RequestBody>,
    home: Home,
    keep: super::Keep<'a>,
    due: Option<Due>,
) -> impl Future<Output = Result<Response<UpstreamBody>, Failure>> + use<'a> {
    let (mut parts, mut body) = req.into_parts();
    async move {
        let framing = encode_head(&parts, &body, &mut conn.out);
        // Written with the head; a head handed back for a retry gets them in its map.
        let mut added = std::mem::take(&mut body.added);
        let mut upload = Upload {
            left: match framing {
                Framing::Length(n) => n,
                Framing::Chunked => 0,
            },
            framing,
            trailers: match framing {
                Framing::Chunked => allowed_trailers(&parts.headers),
                Framing::Length(_) => Vec::new(),
            },
            body_done: framing == Framing::Length(0) || http_body::Body::is_end_stream(&body),
            finished: false,
            head_request: parts.method == Method::HEAD,
            raw_fields: body.raw_fields,
            write_error: None,
        };
        if upload.body_done {
            // Not sent: let go of it now (the wait for the response starts).
            body = RequestBody::empty();
        }
        // The head is written from `out` now; its fields are held on only for a caller that
        // wants it back (their values point into the client connection's read buffer). The
        // parts stay where they are: wrapping them for the two cases moved them twice.
        if keep.is_none() {
            crate::http1::recycle(std::mem::take(&mut parts.headers));
        }
        // When the response headers are due, once the request is sent.
        let mut answer_at = None;
        let head = match std::future::poll_fn(|cx| {
            let polled = poll_exchange(&mut conn, cx, &mut upload, &mut body);
            let Some(due) = due.filter(|_| polled.is_pending()) else {
                return polled;
            };
            if answer_at.is_none() && upload.body_done {
                answer_at = Some(due.answer_at(Instant::now()));
            }
            match answer_at.or(due.deadline()) {
                Some(at) if conn.expired(at, cx) => Poll::Ready(Err(due.expired(at))),
                _ => Poll::Pending,
            }
        })
        .await
        {
            Ok(head) => head,
            Err(failure) => {
                // Only borrowed to write the head: the caller gets it back for a retry.
                if let Some(keep) = keep {
                    added.merge_into(&mut parts.headers);
                    *keep = Some(Box::new(parts));
                }
                return Err(failure);
            }
        };
        if keep.is_some() {
            crate::http1::recycle(parts.headers);
        }
        // An answer before the whole request went out: the rest is not sent, and the upstream
        // may still be waiting for it: the connection is not used again.
        let keep = head.keep_alive && upload.finished && home.keeps;
        drop(body);
        let framing = head.body;
        let mut body = Body {
            conn: Some(conn),
            framing,
            ready: head.ready,
            keep: keep && framing != Incoming::Close,
            home: Some(home),
            fields: head.raw,
        };
        // A body that came whole with the head (or none at all) frees the connection now,
        // read or not.
        if let Incoming::Length(n) = body.framing {
            if body.ready.as_ref().map_or(0, Bytes::len) as u64 == n {
                body.finish();
            }
        }
        let mut resp = Response::new(UpstreamBody::Wire(body));
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        // The map `Response::new` made is empty (it owns no memory): forgotten, not dropped.
        // Its out-of-line drop cost ~60 instructions a request.
        let empty = std::mem::replace(resp.headers_mut(), head.headers);
        debug_assert!(empty.is_empty() && empty.capacity() == 0);
        std::mem::forget(empty);
        Ok(resp)
    }
}

struct Upload {
    framing: Framing,
    /// `Length`: bytes still to send.
    left: u64,
    /// Trailer fields the request declared (`Trailer`), the only ones sent.
    trailers: Vec<HeaderName>,
    /// The request body has given its last frame.
    body_done: bool,
    /// Everything, head and body, is written.
    finished: bool,
    /// A HEAD request: its response has no body.
    head_request: bool,
    /// The response's fields are kept as they come (`RequestBody::raw_fields`).
    raw_fields: bool,
    /// Writing failed: nothing more is sent; the failure is the exchange's unless an
    /// answer is read.
    write_error: Option<io::Error>,
}

impl Upload {
    /// Adds a frame of the request body to `out`, in its framing.
    fn put(&mut self, frame: Frame<Bytes>, out: &mut Vec<u8>) -> io::Result<()> {
        match frame.into_data() {
            Ok(data) => {
                if data.is_empty() {
                    return Ok(());
                }
                match self.framing {
                    Framing::Length(_) => {
                        if data.len() as u64 > self.left {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidInput,
                                "the request body is longer than its Content-Length",
                            ));
                        }
                        self.left -= data.len() as u64;
                        out.extend_from_slice(&data);
                    }
                    Framing::Chunked => {
                        out.extend_from_slice(format!("{:X}\r\n", data.len()).as_bytes());
                        out.extend_from_slice(&data);
                        out.extend_from_slice(b"\r\n");
                    }
                }
            }
            Err(frame) => {
                if let (Ok(trailers), Framing::Chunked) = (frame.into_trailers(), self.framing) {
                    out.extend_from_slice(b"0\r\n");
                    for (name, value) in trailers.iter() {
                        if self.trailers.contains(name) {
                            put_field(out, name, value);
                        }
                    }
                    out.extend_from_slice(b"\r\n");
                    self.framing = Framing::Length(0);
                    self.body_done = true;
                }
            }
        }
        Ok(())
    }

    /// The request body ended: the last chunk, or a check that the length was met.
    fn end(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.body_done = true;
        match self.framing {
            Framing::Chunked => {
                out.extend_from_slice(b"0\r\n\r\n");
                self.framing = Framing::Length(0);
                Ok(())
            }
            Framing::Length(_) if self.left > 0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the request body ended before its Content-Length",
            )),
            Framing::Length(_) => Ok(()),
        }
    }
}

/// Drives one exchange until the response head is in: writes the head and the body,
/// and reads at the same time (an upstream may answer before the body is all sent).
fn poll_exchange(
    conn: &mut Connection,
    cx: &mut Context<'_>,
    up: &mut Upload,
    body: &mut RequestBody,
) -> Poll<Result<Head, Failure>> {
    // Once a read is pending, the waker is registered: reading again before this poll
    // returns would only find the same nothing (after a write, the loop goes round again).
    let mut read_pending = false;
    loop {
        let mut progress = false;
        if !up.finished && up.write_error.is_none() {
            if !conn.out.is_empty() {
                match conn.poll_flush_out(cx) {
                    Poll::Ready(Ok(())) => progress = true,
                    // The upstream may have answered and closed (a 413 before the body):
                    // the answer, if it is there, is what the client gets.
                    Poll::Ready(Err(e)) => {
                        up.write_error = Some(e);
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if conn.out.is_empty() {
                if up.body_done {
                    up.finished = true;
                } else {
                    // Gathers what the body has ready, up to a batch, for one write.
                    while !up.body_done && conn.out.len() < WRITE_BATCH {
                        let step = match Pin::new(&mut *body).poll_frame(cx) {
                            Poll::Ready(Some(Ok(frame))) => up.put(frame, &mut conn.out),
                            Poll::Ready(Some(Err(e))) => {
                                return Poll::Ready(Err(Failure::new(&*e, false)));
                            }
                            Poll::Ready(None) => up.end(&mut conn.out),
                            Poll::Pending => break,
                        };
                        if let Err(e) = step {
                            return Poll::Ready(Err(Failure {
                                kind: ProxyError::Protocol,
                                detail: e.to_string(),
                            }));
                        }
                        progress = true;
                    }
                }
            }
        }
        loop {
            match parse_head(
                conn.inbox.buffered(),
                up.head_request,
                up.raw_fields,
                &mut conn.names,
            ) {
                Ok(Some((head, used))) => {
                    let ready = head.ready.as_ref().map_or(0, Bytes::len);
                    conn.consume(used + ready);
                    if head.status.is_informational() {
                        if head.status == StatusCode::SWITCHING_PROTOCOLS {
                            return Poll::Ready(Err(Failure {
                                kind: ProxyError::Protocol,
                                detail: "the upstream switched protocols unasked".into(),
                            }));
                        }
                        // 100 Continue, 103 Early Hints: the final response follows.
                        continue;
                    }
                    return Poll::Ready(Ok(head));
                }
                Ok(None) => break,
                Err(detail) => {
                    return Poll::Ready(Err(Failure {
                        kind: ProxyError::Protocol,
                        detail,
                    }));
                }
            }
        }
        let read = if read_pending {
            Poll::Pending
        } else {
            conn.poll_fill(cx, MAX_HEAD)
        };
        match read {
            Poll::Ready(Ok(0) | Err(_)) if up.write_error.is_some() => {
                let e = up
                    .write_error
                    .take()
                    .unwrap_or_else(|| io::ErrorKind::Other.into());
                return Poll::Ready(Err(io_failure(&e)));
            }
            Poll::Ready(Ok(0)) => {
                let detail = if conn.buffered().is_empty() {
                    "the upstream closed the connection before responding"
                } else {
                    "the upstream closed the connection in the middle of the response head"
                };
                return Poll::Ready(Err(Failure {
                    kind: ProxyError::ConnectionReset,
                    detail: detail.into(),
                }));
            }
            Poll::Ready(Ok(_)) => progress = true,
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::OutOfMemory => {
                return Poll::Ready(Err(Failure {
                    kind: ProxyError::Protocol,
                    detail: e.to_string(),
                }));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(io_failure(&e))),
            Poll::Pending => read_pending = true,
        }
        if !progress {
            return Poll::Pending;
        }
    }
}

fn io_failure(e: &io::Error) -> Failure {
    Failure::new(e, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use http::header::HeaderValue;

    #[test]
    fn chunked_data_and_trailers_are_framed() {
        let mut up = Upload {
            framing: Framing::Chunked,
            left: 0,
            trailers: vec![HeaderName::from_static("grpc-status")],
            body_done: false,
            finished: false,
            head_request: false,
            raw_fields: false,
            write_error: None,
        };
        let mut out = Vec::new();
        up.put(
            Frame::data(Bytes::from_static(b"hello world, 26 bytes long")),
            &mut out,
        )
        .unwrap();
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        t.insert("x-undeclared", HeaderValue::from_static("1"));
        up.put(Frame::trailers(t), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1A\r\nhello world, 26 bytes long\r\n0\r\ngrpc-status: 0\r\n\r\n"
        );
        assert!(up.body_done);
        let mut up = Upload {
            framing: Framing::Length(3),
            left: 3,
            trailers: Vec::new(),
            body_done: false,
            finished: false,
            head_request: false,
            raw_fields: false,
            write_error: None,
        };
        let mut out = Vec::new();
        assert!(
            up.put(Frame::data(Bytes::from_static(b"four")), &mut out)
                .is_err()
        );
        up.put(Frame::data(Bytes::from_static(b"ab")), &mut out)
            .unwrap();
        assert!(up.end(&mut out).is_err(), "shorter than its Content-Length");
    }
}
