//! HTTP/1.1 on a client connection of our own: request heads parsed with `httparse`, the
//! request handed to `proxy::handle` in this connection's own task, the response head and
//! body written back, the connection kept for the next request.
//!
//! Why not hyper's server for these: per request, its dispatcher moved the request through
//! a `Service` call, kept its 8 KiB read buffer while the request's headers pointed into
//! it (a new one allocated for the next request) and an 8 KiB write buffer per connection;
//! callgrind put ~10k of the proxy's ~38k instructions per request in it, heaptrack ~36
//! KiB per client connection. Here a connection holds a 4 KiB read buffer (grown for large
//! heads or bodies, shrunk back between requests) and the buffer its last response head
//! took.
//!
//! What this server does not serve itself it hands to hyper, with the bytes it has read,
//! for the rest of the connection: HTTP/2 (its preface), HTTP/1.0, `Upgrade` (WebSocket),
//! `Expect: 100-continue`, `CONNECT`, framing other than one `Content-Length` or
//! `Transfer-Encoding: chunked` alone, more fields than fit on the stack, and every head
//! that does not parse or is too large (hyper answers those with the 400 or 431 it always
//! has). Behaviour kept from hyper's server: the response's framing (its own length or
//! chunked coding, else a length when the body's size is known, else chunked; no body for
//! HEAD, 204, 304), a `Date` field when the response has none, `connection: close` when the
//! client asked for it, the connection closed when the client goes away mid-request (the
//! request is dropped: its span records `client_aborted`) or leaves a request body unread.

mod body;
pub(super) mod head;

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::header::{self, HeaderName};
use http::{Request, StatusCode};
use http_body::{Body as _, Frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

pub use body::ClientBody;
use body::{Body, Demand, Framing, Reader};
use head::{Out, Parsed};

use crate::body::ProxyBody;
use crate::config::LimitSettings;
use crate::http1::{
    BodyError, Decoded, Inbox, allowed_trailers, decode, put_chunk_size, put_field,
};
use crate::limits::{ConnState, Watched};
use crate::proxy::{self, ConnInfo, Shared};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The read buffer's size (and its size again between requests).
const READ_BUF: usize = 4 * 1024;
/// The most the read buffer grows to while a large request body streams through it.
const MAX_READ_BUF: usize = 64 * 1024;
/// Response body data up to this size is copied next to the head (or the chunk-size
/// line) and written with it in one call; larger pieces are written from where they are.
const COPY_MAX: usize = 16 * 1024;

/// Whether the stop signal's future needs polling while the connection waits for a request:
/// once to register this task, again when the task's waker changes, and otherwise only when
/// the watch holds a new value. (Polling the `changed()` future on every idle wait cost ~170
/// instructions a request.)
struct StopCheck {
    rx: watch::Receiver<bool>,
    waker: Option<std::task::Waker>,
}

impl StopCheck {
    fn due(&mut self, cx: &Context<'_>) -> bool {
        match &self.waker {
            Some(w) if w.will_wake(cx.waker()) => self.rx.has_changed().unwrap_or(true),
            _ => {
                self.waker = Some(cx.waker().clone());
                true
            }
        }
    }
}

/// A client connection being served.
struct Conn<I> {
    io: Watched<I>,
    inbox: Inbox,
    /// The next bytes to write: a response head, chunk framing, small body data.
    out: Vec<u8>,
    written: usize,
    /// Body data written from where it is, after `out`.
    data: Option<Bytes>,
    /// A chunk's CRLF, once `data` is written.
    crlf_after_data: bool,
    /// The client closed its side (or the connection failed).
    read_closed: bool,
    /// A request body could not be read to its end: no request follows on this connection.
    broken: bool,
    /// The framing of a request body the proxy dropped unread.
    unread: Option<Framing>,
    max_head: usize,
    max_fields: usize,
    /// The field names of the last request head.
    names: crate::http1::Names,
    /// No request has been read yet: the first bytes may be HTTP/2's preface.
    first: bool,
}

/// What the connection does next, once a head is awaited.
#[allow(
    clippy::large_enum_variant,
    reason = "the head is not boxed: see `head::Parsed`"
)]
enum Next {
    Head(head::Head),
    /// hyper serves the rest of the connection.
    HandOver,
    Close,
}

/// Serves `io` until the client or the server is done with it. `stop` turns true when the
/// listener drains: an idle connection closes at once, a busy one after its response.
pub(super) async fn serve<I>(
    io: Watched<I>,
    info: Arc<ConnInfo>,
    shared: Arc<Shared>,
    state: Arc<ConnState>,
    limits: &LimitSettings,
    stop: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut c = Conn {
        io,
        inbox: Inbox::new(READ_BUF),
        out: Vec::new(),
        written: 0,
        data: None,
        crlf_after_data: false,
        read_closed: false,
        broken: false,
        unread: None,
        max_head: limits.max_request_header_bytes.max(READ_BUF),
        max_fields: limits.max_request_headers,
        names: Default::default(),
        first: true,
    };
    let mut watch_stop = stop.clone();
    let mut stopping = pin!(async move { crate::gateway::stopped(&mut watch_stop).await });
    let mut stop_check = StopCheck {
        rx: stop.clone(),
        waker: None,
    };
    let mut stopped = false;
    // The head is taken apart in a block, and the ways out that await come after the loop:
    // a local that is borrowed, partly moved or matched on where an arm awaits is kept in
    // the connection's future until its scope ends, here through the whole exchange, and
    // the head was written there (cold at many connections) instead of on the stack.
    let hand_over = loop {
        let (req, method, mut reader, keep_alive) = {
            let next =
                poll_fn(|cx| c.poll_head(cx, stopping.as_mut(), &mut stop_check, &mut stopped))
                    .await;
            let head::Head {
                parts,
                body,
                keep_alive,
            } = match next {
                Next::Head(head) => head,
                Next::HandOver => break true,
                Next::Close => break false,
            };
            let method = parts.method.clone();
            let (body, reader) = match body {
                None => (Body::empty(), None),
                Some(framing) => {
                    let (body, reader) = Reader::new(framing);
                    (body, Some(reader))
                }
            };
            let req = Request::from_parts(parts, ClientBody::Own(body));
            (req, method, reader, keep_alive)
        };
        // `proxy::exchange`, not `proxy::handle`: what `handle` adds for hyper (the request
        // in flight until its body is dropped, `Connection: close` when draining or after a
        // 408) this loop does itself, and the response is not moved through one more future.
        let in_flight = state.dispatch();
        let mut handling = pin!(proxy::exchange(
            shared.clone(),
            info.clone(),
            req,
            in_flight.ambiguous(),
            true
        ));
        // The request runs in this task; the connection reads its body as it asks. The
        // response's parts land in `answer`: returned through `poll_fn`, unwrapped and then
        // taken apart, the response was moved four times (~185 instructions), now three
        // (~120).
        let (written, mut close) = {
            let mut answer = None;
            poll_fn(|cx| {
                // Polled first: the body asks for more from inside it.
                loop {
                    if let Poll::Ready(resp) = handling.as_mut().poll(cx) {
                        answer = Some(resp.into_parts());
                        return Poll::Ready(());
                    }
                    if !c.pump(cx, &mut reader) {
                        if reader.is_none() && c.poll_client_gone(cx) {
                            return Poll::Ready(());
                        }
                        return Poll::Pending;
                    }
                }
            })
            .await;
            let Some((parts, mut rbody)) = answer else {
                // The client went away: the request is dropped unanswered.
                return Ok(());
            };
            // A 408 leaves the client's body unread: the connection cannot be reused.
            let close = !keep_alive
                || stopped
                || shared.draining.load(Relaxed)
                || matches!(parts.status, StatusCode::REQUEST_TIMEOUT)
                || parts.status.is_informational();
            let exact = rbody.size_hint().exact();
            let fields = match rbody.raw_fields() {
                Some(raw) => crate::http1::Fields::Raw(raw),
                None => crate::http1::Fields::Map(&parts.headers),
            };
            let framing = head::encode(
                parts.status,
                fields,
                rbody.stamp().unwrap_or_default(),
                &method,
                exact,
                close,
                &mut c.out,
            );
            let trailers = match framing {
                Out::Chunked if parts.headers.contains_key(header::TRAILER) => {
                    allowed_trailers(&parts.headers)
                }
                _ => Vec::new(),
            };
            crate::http1::recycle(parts.headers);
            let mut writing = Writing {
                framing,
                left: match framing {
                    Out::Length(n) => n,
                    _ => 0,
                },
                trailers,
                done: false,
            };
            let written =
                poll_fn(|cx| c.poll_response(cx, &mut rbody, &mut writing, &mut reader)).await;
            (written, close)
        };
        // The response is over: the body was dropped in place at the block's end, which
        // ended its span; now the request is no longer in flight.
        drop(in_flight);
        match written {
            Ok(true) => {}
            Ok(false) => close = true,
            Err(_) => return Ok(()),
        }
        if let Some(framing) = reader.take().map(|r| r.framing).or(c.unread.take()) {
            // A request body the proxy did not read (an answer that came first): the
            // connection goes on only if its rest is here already.
            close |= !c.drain_buffered(framing);
        }
        if close || c.broken || c.read_closed {
            let _ = poll_fn(|cx| Pin::new(&mut c.io).poll_shutdown(cx)).await;
            return Ok(());
        }
        c.inbox.idle();
        if !c.inbox.buffered().is_empty() {
            // Pipelined: the next head began while this request was in flight.
            state.head_started();
        }
        if c.out.capacity() > COPY_MAX {
            c.out = Vec::new();
        }
    };
    if !hand_over {
        let _ = poll_fn(|cx| Pin::new(&mut c.io).poll_shutdown(cx)).await;
        return Ok(());
    }
    let io = c.into_prefixed();
    let http2 = io.prefix.len() >= 4
        && (io.prefix.starts_with(super::http2::conn::PREFACE)
            || super::http2::conn::PREFACE.starts_with(&io.prefix));
    if http2 && limits.http2_server == crate::config::Http2Server::Native {
        // Boxed for the same reason as hyper's, below.
        return Box::pin(super::http2::serve(
            io.inner, io.prefix, info, shared, state, limits, stop,
        ))
        .await;
    }
    state.hand_over(&io.prefix);
    // Boxed, once a connection: unboxed, hyper's connection future (~2.4 KB) would be room
    // in every connection's future beside the request's.
    Box::pin(super::hyper_connection(
        io, info, shared, state, limits, http2, stop,
    ))
    .await
}

/// A response body on its way out.
struct Writing {
    framing: Out,
    /// `Length`: bytes still to write.
    left: u64,
    /// The trailer fields the response declared (chunked only).
    trailers: Vec<HeaderName>,
    /// The body's last frame is in `out`/`data`.
    done: bool,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Conn<I> {
    /// The connection for hyper, the bytes read so far first; the rest is dropped here.
    /// When `serve` moved the socket out of the state itself, the rest (the read buffer, 4
    /// KiB or more, the write buffer, the names) stayed in the connection's future as long
    /// as hyper served it: 1 MiB over 256 HTTP/2 clients.
    fn into_prefixed(self) -> Prefixed<Watched<I>> {
        Prefixed {
            prefix: Bytes::copy_from_slice(self.inbox.buffered()),
            inner: self.io,
        }
    }

    /// Reads into the buffer; `Ok(0)`: the client closed its side.
    fn poll_fill(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<usize>> {
        let space = self.inbox.space(max, "request head")?;
        let mut rb = tokio::io::ReadBuf::new(space);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        self.inbox.filled(n, max);
        Poll::Ready(Ok(n))
    }

    /// The next request head, or what to do instead.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        mut stopping: Pin<&mut impl Future<Output = ()>>,
        stop_check: &mut StopCheck,
        stopped: &mut bool,
    ) -> Poll<Next> {
        loop {
            let buf = self.inbox.buffered();
            if !buf.is_empty() {
                const PREFACE: &[u8] = b"PRI ";
                let n = buf.len().min(PREFACE.len());
                if self.first && buf[..n] == PREFACE[..n] {
                    if n == PREFACE.len() {
                        return Poll::Ready(Next::HandOver);
                    }
                } else {
                    self.first = false;
                    match head::parse(buf, self.max_fields, &mut self.names) {
                        Parsed::Head(h, used) => {
                            self.inbox.consume(used);
                            return Poll::Ready(Next::Head(h));
                        }
                        Parsed::Unusual => return Poll::Ready(Next::HandOver),
                        Parsed::Partial => {}
                    }
                }
            }
            if *stopped && self.inbox.is_empty() {
                return Poll::Ready(Next::Close);
            }
            match self.poll_fill(cx, self.max_head) {
                Poll::Ready(Ok(0)) if self.inbox.is_empty() => return Poll::Ready(Next::Close),
                // A head cut short, or one over the size limit: hyper answers as it always has.
                Poll::Ready(Ok(0)) => return Poll::Ready(Next::HandOver),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::OutOfMemory => {
                    return Poll::Ready(Next::HandOver);
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Next::Close),
                Poll::Pending => {
                    if !*stopped && stop_check.due(cx) && stopping.as_mut().poll(cx).is_ready() {
                        *stopped = true;
                        if self.inbox.is_empty() {
                            return Poll::Ready(Next::Close);
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Reads a piece of the request body when the body asks for one; true when one was
    /// handed over. Sets `reader` to `None` once the body is over (read, failed, dropped).
    fn pump(&mut self, cx: &mut Context<'_>, reader: &mut Option<Reader>) -> bool {
        let Some(r) = reader.as_mut() else {
            return false;
        };
        match r.demand(cx) {
            Demand::Wait => return false,
            Demand::Abandoned => {
                // Left for `drain_buffered` at the end of the exchange.
                self.unread = Some(r.framing);
                *reader = None;
                return false;
            }
            Demand::Piece => {}
        }
        loop {
            let step = match &mut r.framing {
                Framing::Length(0) => Some(Ok(None)),
                Framing::Length(n) if !self.inbox.is_empty() => {
                    let take = self
                        .inbox
                        .buffered()
                        .len()
                        .min(usize::try_from(*n).unwrap_or(usize::MAX));
                    *n -= take as u64;
                    let data = self.inbox.take(take);
                    Some(Ok(Some((Frame::data(data), *n == 0))))
                }
                Framing::Length(_) => None,
                Framing::Chunked(state) => match decode(&mut self.inbox, state, "request") {
                    Ok(Decoded::Data(data)) => Some(Ok(Some((Frame::data(data), false)))),
                    Ok(Decoded::End(Some(t))) => Some(Ok(Some((Frame::trailers(t), true)))),
                    Ok(Decoded::End(None)) => Some(Ok(None)),
                    Ok(Decoded::More) => None,
                    Err(e) => Some(Err(e)),
                },
            };
            match step {
                Some(Ok(Some((frame, last)))) => {
                    r.put(Ok(frame), last);
                    if last {
                        *reader = None;
                    }
                    return true;
                }
                Some(Ok(None)) => {
                    r.end();
                    *reader = None;
                    return true;
                }
                Some(Err(e)) => {
                    r.put(Err(BodyError(e)), true);
                    // Unreadable: nothing after it on this connection can be trusted.
                    self.broken = true;
                    *reader = None;
                    return true;
                }
                None => {}
            }
            let error = match self.poll_fill(cx, MAX_READ_BUF) {
                Poll::Pending => return false,
                Poll::Ready(Ok(0)) => {
                    "the client closed the connection before the request body ended".to_string()
                }
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => format!("reading the request body: {e}"),
            };
            self.read_closed = true;
            self.broken = true;
            r.put(Err(BodyError(error)), true);
            *reader = None;
            return true;
        }
    }

    /// While a request is served and nothing of its body is to be read: whether the
    /// client has closed the connection (bytes of a next request are kept).
    fn poll_client_gone(&mut self, cx: &mut Context<'_>) -> bool {
        while !self.read_closed && self.inbox.buffered().len() < self.max_head {
            match self.poll_fill(cx, self.max_head) {
                Poll::Ready(Ok(0) | Err(_)) => self.read_closed = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return false,
            }
        }
        self.read_closed && self.inbox.is_empty()
    }

    /// Writes `out`, then `data` (in one call when both are there).
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let head = &self.out[self.written..];
            let n = match (&self.data, head.is_empty()) {
                (None, true) => {
                    self.out.clear();
                    self.written = 0;
                    return Poll::Ready(Ok(()));
                }
                (None, false) => ready!(Pin::new(&mut self.io).poll_write(cx, head))?,
                (Some(d), true) => ready!(Pin::new(&mut self.io).poll_write(cx, d))?,
                (Some(d), false) => {
                    let bufs = [io::IoSlice::new(head), io::IoSlice::new(d)];
                    ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &bufs))?
                }
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let from_out = n.min(head.len());
            self.written += from_out;
            if let Some(d) = &mut self.data {
                d.advance(n - from_out);
                if d.is_empty() {
                    self.data = None;
                    if self.written == self.out.len() {
                        self.out.clear();
                        self.written = 0;
                    }
                    if std::mem::take(&mut self.crlf_after_data) {
                        self.out.extend_from_slice(b"\r\n");
                    }
                }
            }
        }
    }

    /// Writes the response body (the head is in `out`), reading the request body on as it
    /// asks. `Ok(true)`: all written and the connection can go on; `Ok(false)`: written,
    /// but the framing was not kept (the body broke off or outgrew its length): close.
    fn poll_response(
        &mut self,
        cx: &mut Context<'_>,
        body: &mut ProxyBody,
        w: &mut Writing,
        reader: &mut Option<Reader>,
    ) -> Poll<io::Result<bool>> {
        loop {
            let mut progress = self.pump(cx, reader);
            // Gathers what the body has ready, up to a batch, for one write.
            while !w.done && self.data.is_none() && self.out.len() < COPY_MAX {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        progress = true;
                        match frame.into_data() {
                            Ok(data) => {
                                if !self.put_data(w, data) {
                                    // Longer than its Content-Length: what fits is written.
                                    w.done = true;
                                    ready!(self.poll_write(cx))?;
                                    return Poll::Ready(Ok(false));
                                }
                            }
                            Err(frame) => {
                                if let (Ok(t), Out::Chunked) = (frame.into_trailers(), w.framing) {
                                    self.out.extend_from_slice(b"0\r\n");
                                    for (name, value) in t.iter() {
                                        if w.trailers.contains(name) {
                                            put_field(&mut self.out, name, value);
                                        }
                                    }
                                    self.out.extend_from_slice(b"\r\n");
                                    w.framing = Out::Nothing;
                                }
                            }
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        // The upstream broke off: the client sees the response cut short.
                        return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                    }
                    Poll::Ready(None) => {
                        w.done = true;
                        progress = true;
                        match w.framing {
                            Out::Chunked => self.out.extend_from_slice(b"0\r\n\r\n"),
                            Out::Length(_) if w.left > 0 => {
                                ready!(self.poll_write(cx))?;
                                return Poll::Ready(Ok(false));
                            }
                            _ => {}
                        }
                    }
                    Poll::Pending => break,
                }
            }
            let pending = !self.out.is_empty() || self.data.is_some();
            match self.poll_write(cx) {
                Poll::Ready(Ok(())) => {
                    if w.done {
                        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
                        return Poll::Ready(Ok(true));
                    }
                    progress |= pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
            if !progress {
                // The body is waiting on the upstream: a client that goes away meanwhile
                // ends the exchange.
                if reader.is_none() && self.poll_client_gone(cx) {
                    return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
                }
                return Poll::Pending;
            }
        }
    }

    /// Adds body data in the response's framing; false when it is longer than its length.
    fn put_data(&mut self, w: &mut Writing, mut data: Bytes) -> bool {
        if data.is_empty() {
            return true;
        }
        let mut fits = true;
        match w.framing {
            Out::Nothing => return true,
            Out::Length(_) => {
                if data.len() as u64 > w.left {
                    data.truncate(usize::try_from(w.left).unwrap_or(usize::MAX));
                    fits = false;
                }
                w.left -= data.len() as u64;
            }
            Out::Chunked => put_chunk_size(&mut self.out, data.len()),
        }
        let chunked = w.framing == Out::Chunked;
        if self.out.len() + data.len() <= COPY_MAX {
            self.out.extend_from_slice(&data);
            if chunked {
                self.out.extend_from_slice(b"\r\n");
            }
        } else {
            self.data = Some(data);
            self.crlf_after_data = chunked;
        }
        fits
    }

    /// Skips the rest of an unread request body if it is all buffered already.
    fn drain_buffered(&mut self, framing: Framing) -> bool {
        if self.read_closed {
            return false;
        }
        match framing {
            Framing::Length(n) => {
                let have = self.inbox.buffered().len() as u64;
                if have < n {
                    return false;
                }
                self.inbox.consume(usize::try_from(n).unwrap_or(usize::MAX));
                true
            }
            Framing::Chunked(mut state) => loop {
                match decode(&mut self.inbox, &mut state, "request") {
                    Ok(Decoded::Data(_)) => {}
                    Ok(Decoded::End(_)) => return true,
                    Ok(Decoded::More) | Err(_) => return false,
                }
            },
        }
    }
}

/// A connection handed to hyper: the bytes read so far come first.
pub(super) struct Prefixed<I> {
    pub(super) prefix: Bytes,
    pub(super) inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
