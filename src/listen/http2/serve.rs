//! An HTTP/2 client connection served by our own code (`limits.http2_server: native`):
//! one task per connection reads frames into [`Conn`], runs each stream's
//! `proxy::exchange` in this same task (no task spawned per stream, no channel between a
//! stream and the connection), and writes the answers' frames as the client's windows
//! allow.
//!
//! An extended CONNECT (WebSocket over HTTP/2, RFC 8441) is served as any stream: once
//! the upstream switched protocols, its request body is the client's side of the tunnel
//! and its response body the upstream's (`crate::tunnel`).

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, header};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::body::{self, Feed};
use super::conn::{Config, Conn, ConnError, Event};
use super::frame::Reason;
use crate::body::ProxyBody;
use crate::config::LimitSettings;
use crate::http1::Fields;
use crate::limits::{ConnState, InFlight, Rejection};
use crate::listen::ClientBody;
use crate::proxy::{self, ConnInfo, Shared};
use crate::timer::LazyTimer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

thread_local! {
    /// Reads land here, then are copied into the connection's buffer: one zeroed buffer a
    /// worker thread rather than one a connection (8 KiB each, 2 MiB of RSS over 256
    /// clients). Nothing awaits while it is borrowed.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// What makes a stream's exchange: `proxy::exchange`, passed in so that its future's type
/// (which has no name) is the driver's `F`, and finished exchanges' boxes can be kept.
type MakeExchange<F> = fn(Arc<Shared>, Arc<ConnInfo>, Request<ClientBody>, bool, bool) -> F;

/// The most boxes of finished exchanges a connection keeps for its next streams
/// ([`Driver::spare`]).
const SPARE_EXCHANGES: usize = 4;

/// Read this much at a time (into the thread's zeroed [`SCRATCH`]).
const READ_CHUNK: usize = 8 * 1024;
/// The read buffer's first size; it grows for large frames.
const BUF_START: usize = 4 * 1024;
/// Past this much unwritten, answers wait for the socket.
const WRITE_HIGH: usize = 64 * 1024;

/// A stream's request being served.
#[allow(
    clippy::large_enum_variant,
    reason = "a stream spends most of its life sending its body; boxing it would cost an \
              allocation per response to save the exchange's short wait"
)]
enum Task<F> {
    Exchange(Pin<Box<F>>),
    /// The answer's head is sent; its body streams out.
    Body {
        body: ProxyBody,
        /// Data polled from the body that the windows have not let out yet.
        pending: Bytes,
    },
    /// A tunnel's answer is over (the upstream closed its side) while the client's side
    /// is open: its DATA still go to the tunnel until the client ends them (RFC 9113,
    /// 8.5: END_STREAM is a half-close).
    Receiving,
}

struct Stream<F> {
    task: Task<F>,
    /// A HEAD request: its answer's length is not the body's.
    head: bool,
    /// The request body's queue, while the client may still send on it.
    feed: Option<Feed>,
    /// An extended CONNECT (answered 2xx, once answered): its request body is a tunnel's
    /// bytes, not to be cut short.
    tunnel: bool,
    /// Counts the request in flight on its connection until the stream is done.
    _in_flight: InFlight,
}

struct Driver<I, F> {
    io: I,
    conn: Option<Conn>,
    buf: BytesMut,
    streams: super::StreamMap<Stream<F>>,
    make: MakeExchange<F>,
    /// Boxes of exchanges that have answered, each reused for a next stream's exchange
    /// (`Pin::set`) instead of a new one: the future is ~2.4 KB, past glibc's thread cache,
    /// and its allocation and free cost ~550 instructions a request at 256 connections
    /// (callgrind, benches/README.md 2026-12-07). At most [`SPARE_EXCHANGES`].
    spare: Vec<Pin<Box<F>>>,
    events: Vec<Event>,
    /// Written of `conn.out` so far.
    written: usize,
    read_closed: bool,
    /// GOAWAY sent: the connection ends when its streams are done.
    closing: bool,
    /// A connection error: end once `out` (its GOAWAY) is written.
    failed: Option<ConnError>,
    config: Config,
    info: Arc<ConnInfo>,
    shared: Arc<Shared>,
    state: Arc<ConnState>,
    /// `limits.idle_timeout` (`None`: off): how long the connection may be quiet.
    idle_timeout: Option<Duration>,
    /// Counts reads, writes and streams moving or waiting on their upstream: what keeps
    /// the connection from being quiet.
    activity: u64,
    /// Some stream waits on its upstream (its exchange, or its answer's body) on this pass.
    upstream_busy: bool,
    quiet: Option<Quiet>,
}

/// Times a quiet connection: nothing read or written, and no stream waiting on its
/// upstream. With no stream open it is idle (GOAWAY and close, as nginx's
/// `keepalive_timeout`); with streams, their answers wait on a client that neither reads
/// them nor opens its windows (closed, as nginx's `send_timeout`). A pass looks at whether
/// the timer fired (an atomic load); it is moved (a clock read) only when it fires on a
/// connection active since it was set: a connection is ended after one to two idle
/// timeouts of quiet.
struct Quiet {
    timer: LazyTimer,
    deadline: Instant,
    /// `activity` when the timer was set.
    set_at: u64,
}

/// Serves `io`, whose first bytes are `prefix` (the preface, read by the HTTP/1.1 server
/// that recognised it), until the client or the server is done with it. `stop` turns
/// true when the listener drains: GOAWAY, and the streams in flight finish.
pub(in crate::listen) async fn serve<I>(
    io: I,
    prefix: Bytes,
    info: Arc<ConnInfo>,
    shared: Arc<Shared>,
    state: Arc<ConnState>,
    limits: &LimitSettings,
    stop: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(BUF_START.max(prefix.len()));
    buf.extend_from_slice(&prefix);
    let mut d = Driver {
        io,
        conn: None,
        buf,
        streams: super::IdHash::map(),
        make: proxy::exchange,
        spare: Vec::new(),
        events: Vec::new(),
        written: 0,
        read_closed: false,
        closing: false,
        failed: None,
        config: Config {
            max_concurrent_streams: limits.http2_max_concurrent_streams,
            max_header_list: u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX),
            ..Config::default()
        },
        info,
        shared,
        state,
        idle_timeout: (!limits.idle_timeout.is_zero()).then_some(limits.idle_timeout),
        activity: 0,
        upstream_busy: false,
        quiet: None,
    };
    // The preface, and whatever followed it, came with the hand-over.
    d.take_input();
    let mut stop = stop;
    let mut stopping = pin!(async move { crate::gateway::stopped(&mut stop).await });
    poll_fn(|cx| {
        if !d.closing && stopping.as_mut().poll(cx).is_ready() {
            d.go_away();
        }
        d.poll(cx)
    })
    .await
}

impl<I, F> Driver<I, F>
where
    I: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Response<ProxyBody>>,
{
    fn go_away(&mut self) {
        if let Some(c) = &mut self.conn {
            c.go_away(Reason::NO_ERROR);
        }
        self.closing = true;
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            let mut progress = false;
            if !self.read_closed && self.failed.is_none() {
                match self.poll_read(cx) {
                    Poll::Ready(Ok(())) => progress = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => {}
                }
            }
            if self.conn.is_some() && self.failed.is_none() {
                self.handle_events(cx);
                progress |= self.poll_streams(cx);
            }
            match self.poll_write(cx) {
                Poll::Ready(Ok(wrote)) => progress |= wrote,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => {}
            }
            let out_empty = self.conn.as_ref().is_none_or(|c| c.out.is_empty());
            if out_empty
                && (self.failed.is_some()
                    || (self.read_closed && self.streams.is_empty())
                    || (self.closing && self.streams.is_empty()))
            {
                return match Pin::new(&mut self.io).poll_shutdown(cx) {
                    Poll::Pending => Poll::Pending,
                    // A connection error is returned for `count_connection_error`.
                    Poll::Ready(_) => Poll::Ready(match self.failed.take() {
                        Some(e) => Err(Box::new(e)),
                        None => Ok(()),
                    }),
                };
            }
            if !progress {
                if !self.quiet_expired(cx) {
                    return Poll::Pending;
                }
                if self.streams.is_empty() && !self.closing {
                    // Idle: GOAWAY, written on the next pass, then the connection ends.
                    self.go_away();
                    continue;
                }
                self.shared.downstream.reject(Rejection::SendTimeout);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "HTTP/2 client neither read its answers nor opened its windows",
                )
                .into()));
            }
        }
    }

    /// Whether the connection has been quiet for the idle timeout (one to two of them, see
    /// [`Quiet`]); else the task is woken by the timer.
    fn quiet_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(after) = self.idle_timeout else {
            return false;
        };
        if self.upstream_busy {
            self.activity += 1;
        }
        let Some(q) = &mut self.quiet else {
            let deadline = Instant::now() + after;
            let mut timer = LazyTimer::new(deadline);
            // Polled once to be registered: it wakes the task when it fires.
            let fired = timer.expired(deadline, after, cx);
            self.quiet = Some(Quiet {
                timer,
                deadline,
                set_at: self.activity,
            });
            return fired;
        };
        // Registered with this task's waker: it wakes the task when it fires.
        if !q.timer.fired() {
            return false;
        }
        if q.set_at != self.activity {
            // Active since it was set: quiet from the last pass at the latest.
            q.set_at = self.activity;
            q.deadline = Instant::now() + after;
            q.timer.set(q.deadline);
            return q.timer.expired(q.deadline, after, cx);
        }
        true
    }

    /// Reads what the socket has and hands it to the connection.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing more is read while answers wait for a client that does not read them.
        if self.conn.as_ref().is_some_and(|c| c.out.len() > WRITE_HIGH) {
            return Poll::Pending;
        }
        // Copied out of the zeroed scratch buffer: no `unsafe` to read straight into the
        // `BytesMut`'s spare room.
        let n = ready!(SCRATCH.with(|scratch| {
            let mut own;
            let mut shared = scratch.try_borrow_mut();
            // Borrowed already only if a read re-entered this one (no `io` here does).
            let space: &mut [u8] = match &mut shared {
                Ok(s) => s,
                Err(_) => {
                    own = [0u8; READ_CHUNK];
                    &mut own
                }
            };
            let mut rb = tokio::io::ReadBuf::new(space);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            self.buf.extend_from_slice(rb.filled());
            Poll::Ready(Ok::<_, io::Error>(rb.filled().len()))
        }))?;
        self.activity += 1;
        if n == 0 {
            self.read_closed = true;
            // No more DATA can come: bodies still open fail (a tunnel's ends), and the
            // answers already on their way are still written.
            for s in self.streams.values_mut() {
                s.feed = None;
            }
            return Poll::Ready(Ok(()));
        }
        self.take_input();
        Poll::Ready(Ok(()))
    }

    /// Hands what is buffered to the connection (made once the preface is complete).
    fn take_input(&mut self) {
        if self.conn.is_none() {
            match Conn::preface(&mut self.buf) {
                Ok(true) => self.conn = Some(Conn::new(self.config)),
                Ok(false) => return,
                Err(e) => {
                    self.failed = Some(e);
                    return;
                }
            }
        }
        if let Some(conn) = &mut self.conn
            && let Err(e) = conn.recv(&mut self.buf, &mut self.events)
        {
            self.failed = Some(e);
        }
    }

    fn handle_events(&mut self, cx: &mut Context<'_>) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        for e in self.events.drain(..) {
            match e {
                Event::Request {
                    stream,
                    head,
                    end_stream,
                } => {
                    let is_head = head.parts.method == http::Method::HEAD;
                    let tunnel = crate::forward::is_extended_connect(
                        &head.parts.method,
                        &head.parts.extensions,
                    );
                    let (body, feed) = if end_stream {
                        (ClientBody::Http2(body::empty()), None)
                    } else {
                        let (b, f) = body::channel(head.content_length, cx.waker().clone());
                        if expects_continue(&head.parts.headers) {
                            f.expect_continue();
                        }
                        (ClientBody::Http2(b), Some(f))
                    };
                    let req = Request::from_parts(head.parts, body);
                    let in_flight = self.state.dispatch();
                    let ambiguous = in_flight.ambiguous();
                    let exchange =
                        (self.make)(self.shared.clone(), self.info.clone(), req, ambiguous, true);
                    // Boxed as it is: an `async` block that awaited it to hold `in_flight`
                    // in the answer's body kept the future twice (captured, and moved into
                    // the await's own slot), 4,912 bytes to allocate and copy instead of
                    // 2,448. The stream holds `in_flight` instead.
                    let boxed = match self.spare.pop() {
                        Some(mut b) => {
                            b.set(exchange);
                            b
                        }
                        None => Box::pin(exchange),
                    };
                    self.streams.insert(
                        stream,
                        Stream {
                            task: Task::Exchange(boxed),
                            head: is_head,
                            feed,
                            tunnel,
                            _in_flight: in_flight,
                        },
                    );
                }
                Event::Data {
                    stream,
                    data,
                    end_stream,
                } => {
                    let n = data.len();
                    let kept = self
                        .streams
                        .get(&stream)
                        .and_then(|s| s.feed.as_ref())
                        .is_some_and(|f| f.push(data, end_stream));
                    if !kept {
                        conn.release(stream, n);
                    }
                    if end_stream && let Some(s) = self.streams.get_mut(&stream) {
                        s.feed = None;
                    }
                }
                Event::Trailers { stream, fields } => {
                    if let Some(s) = self.streams.get_mut(&stream)
                        && let Some(f) = s.feed.take()
                    {
                        f.trailers(fields);
                    }
                }
                Event::Reset { stream, .. } => {
                    if let Some(s) = self.streams.remove(&stream)
                        && let Some(f) = &s.feed
                    {
                        f.reset();
                    }
                }
                Event::GoAway { .. } => {
                    conn.go_away(Reason::NO_ERROR);
                    self.closing = true;
                }
            }
        }
    }

    /// Polls each stream: its exchange, then its answer's body as the windows allow.
    /// Returns whether anything moved.
    fn poll_streams(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let mut progress = false;
        let mut done = Vec::new();
        let mut upstream_busy = false;
        // No WINDOW_UPDATE can come any more.
        let read_closed = self.read_closed;
        for (&id, s) in self.streams.iter_mut() {
            // Request body bytes the exchange took: the client may send them again.
            if let Some(f) = &s.feed {
                let (n, continue_due) = f.collect();
                if n > 0 {
                    conn.release(id, n);
                }
                // The exchange reads a body the client holds back: 100 Continue.
                if continue_due && matches!(s.task, Task::Exchange(_)) {
                    conn.send_headers(id, 100, std::iter::empty(), false);
                    progress = true;
                }
            }
            if let Task::Receiving = s.task {
                if s.feed.is_none() {
                    done.push(id);
                }
                continue;
            }
            if conn.out.len() > WRITE_HIGH {
                continue;
            }
            if let Task::Exchange(fut) = &mut s.task {
                let Poll::Ready(resp) = fut.as_mut().poll(cx) else {
                    upstream_busy = true;
                    continue;
                };
                progress = true;
                let (parts, body) = resp.into_parts();
                // Refused (not 2xx): no tunnel, the request body is over as for any
                // answer that came before it ended.
                s.tunnel &= parts.status.is_success();
                let end = body.is_end_stream();
                let length = body.size_hint().exact().filter(|_| !s.head);
                let mut len_buf = [0u8; 20];
                // The upstream's fields as it wrote them when they were kept so, and the
                // trace and correlation ids from the body: no map built for them.
                let fields = match body.raw_fields() {
                    Some(raw) => Fields::Raw(raw),
                    None => Fields::Map(&parts.headers),
                };
                let stamp = body.stamp().unwrap_or_default();
                with_head_extras(fields, length, &mut len_buf, |extra| {
                    conn.send_answer(id, parts.status.as_u16(), fields, stamp, extra, end);
                });
                // Encoded: the map goes back to the thread's spares (`http1::header_map`).
                crate::http1::recycle(parts.headers);
                let answered = std::mem::replace(
                    &mut s.task,
                    Task::Body {
                        body,
                        pending: Bytes::new(),
                    },
                );
                if let Task::Exchange(b) = answered
                    && self.spare.len() < SPARE_EXCHANGES
                {
                    self.spare.push(b);
                }
                if end {
                    done.push(id);
                    continue;
                }
            }
            let Task::Body { body, pending } = &mut s.task else {
                continue;
            };
            loop {
                if !pending.is_empty() {
                    let n = conn.send_capacity(id).min(pending.len());
                    if n == 0 {
                        if read_closed {
                            // Its windows shut, and the client can no longer open them:
                            // the answer can never be sent.
                            conn.reset(id, Reason::CANCEL, &mut Vec::new());
                            s.feed = None;
                            done.push(id);
                            progress = true;
                        }
                        break;
                    }
                    let chunk = pending.split_to(n);
                    conn.send_data(id, &chunk, false);
                    progress = true;
                    if conn.out.len() > WRITE_HIGH {
                        break;
                    }
                    continue;
                }
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => {
                        upstream_busy = true;
                        break;
                    }
                    Poll::Ready(None) => {
                        conn.send_data(id, &[], true);
                        done.push(id);
                        progress = true;
                        break;
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        progress = true;
                        match frame.into_data() {
                            Ok(data) => *pending = data,
                            Err(frame) => {
                                if let Ok(t) = frame.into_trailers() {
                                    conn.send_trailers(id, &t);
                                    done.push(id);
                                    break;
                                }
                            }
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        // The upstream's body failed midway: the client sees the stream
                        // reset, as with hyper's server.
                        let mut ignored = Vec::new();
                        conn.reset(id, Reason::INTERNAL_ERROR, &mut ignored);
                        // The stream is over both ways (a tunnel's too).
                        s.feed = None;
                        done.push(id);
                        progress = true;
                        break;
                    }
                }
            }
        }
        self.upstream_busy = upstream_busy;
        for id in done {
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            if s.feed.is_none() {
                self.streams.remove(&id);
            } else if s.tunnel && !matches!(s.task, Task::Receiving) {
                s.task = Task::Receiving;
            } else {
                // Answered before the request's body ended: the client is told to stop
                // sending it (RFC 9113, 8.1).
                self.streams.remove(&id);
                conn.reset(id, Reason::NO_ERROR, &mut Vec::new());
            }
        }
        progress
    }

    /// Writes what the connection queued. `Ok(true)`: something was written.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        let mut wrote = false;
        while self.written < conn.out.len() {
            match Pin::new(&mut self.io).poll_write(cx, &conn.out[self.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    self.activity += 1;
                    wrote = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    return if wrote {
                        Poll::Ready(Ok(true))
                    } else {
                        Poll::Pending
                    };
                }
            }
        }
        conn.out.clear();
        self.written = 0;
        // A buffer grown for a large answer is not kept for the connection's life.
        if conn.out.capacity() > 4 * WRITE_HIGH {
            conn.out = Vec::new();
        }
        Poll::Ready(Ok(wrote))
    }
}

/// `expect: 100-continue` (RFC 9110, 10.1.1; case-insensitive).
fn expects_continue(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The fields an answer gets besides its own: `date` when it has none, and
/// `content-length` when the body's length is known and it has none (as hyper's server
/// adds them).
fn with_head_extras(
    fields: Fields<'_>,
    length: Option<u64>,
    len_buf: &mut [u8; 20],
    f: impl FnOnce(&[(&str, &[u8])]),
) {
    let (has_length, date) = match fields {
        // The map is asked about a length only when there is one to add.
        Fields::Map(headers) => (
            length.is_some() && headers.contains_key(header::CONTENT_LENGTH),
            !headers.contains_key(header::DATE),
        ),
        Fields::Raw(raw) => (raw.length.is_some(), !raw.date),
    };
    let length = length
        .filter(|_| !has_length)
        .map(|n| crate::listen::h1::head::itoa(n, len_buf));
    crate::listen::h1::head::with_date(|now| match (date, length) {
        (true, Some(l)) => f(&[("date", now), ("content-length", l)]),
        (true, None) => f(&[("date", now)]),
        (false, Some(l)) => f(&[("content-length", l)]),
        (false, None) => f(&[]),
    });
}
