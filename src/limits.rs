//! Limits on downstream clients, applied around each connection (step 1 of the request
//! path): the connection count, the time to send a request's headers (slowloris: 408 and
//! close), the idle time of an HTTP/1 connection, and the counters of every rejection.
//! Header size and count, URI length and HTTP/2 stream limits are set on hyper (see
//! `listen`) or checked in `proxy`; the request body pause is timed in `forward`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::timer::LazyTimer;

/// Why a client was turned away; one label of `tracegate_downstream_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// `max_connections` reached: 503 (cleartext) and close.
    MaxConnections,
    /// Headers too many or too large: 431 (hyper answers).
    HeadersTooLarge,
    /// Request target longer than `max_uri_length`: 414.
    UriTooLong,
    /// Headers not complete within `header_read_timeout`: 408 and close.
    HeaderReadTimeout,
    /// The request body paused longer than `request_body_timeout`: 408.
    RequestBodyTimeout,
    /// Not valid HTTP (bad bytes, obs-fold, conflicting lengths...): 400 (hyper answers).
    Malformed,
    /// The TLS handshake failed or took longer than 10 s.
    TlsHandshake,
    /// An HTTP/2 client reset streams faster than it is served (rapid reset): GOAWAY.
    Http2Abuse,
    /// An HTTP/2 client (our server's) left its answers waiting for `idle_timeout`: it
    /// neither read them nor opened its windows. The connection is closed.
    SendTimeout,
}

impl Rejection {
    pub const ALL: [Rejection; 9] = [
        Rejection::MaxConnections,
        Rejection::HeadersTooLarge,
        Rejection::UriTooLong,
        Rejection::HeaderReadTimeout,
        Rejection::RequestBodyTimeout,
        Rejection::Malformed,
        Rejection::TlsHandshake,
        Rejection::Http2Abuse,
        Rejection::SendTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::MaxConnections => "max_connections",
            Rejection::HeadersTooLarge => "request_headers_too_large",
            Rejection::UriTooLong => "uri_too_long",
            Rejection::HeaderReadTimeout => "header_read_timeout",
            Rejection::RequestBodyTimeout => "request_body_timeout",
            Rejection::Malformed => "malformed_request",
            Rejection::TlsHandshake => "tls_handshake",
            Rejection::Http2Abuse => "http2_rapid_reset",
            Rejection::SendTimeout => "send_timeout",
        }
    }
}

/// Counters shared by every connection.
#[derive(Debug, Default)]
pub struct DownstreamStats {
    /// Open client connections (all listeners).
    pub open: AtomicUsize,
    rejected: [AtomicU64; Rejection::ALL.len()],
}

impl DownstreamStats {
    pub fn reject(&self, r: Rejection) {
        self.rejected[r as usize].fetch_add(1, Relaxed);
    }

    pub fn rejected(&self, r: Rejection) -> u64 {
        self.rejected[r as usize].load(Relaxed)
    }

    /// Counts what a finished connection's error says hyper rejected: HTTP/1 parse errors,
    /// and HTTP/2 connections ended with a protocol error or for rapid resets.
    pub fn count_connection_error(&self, e: &(dyn std::error::Error + 'static)) {
        use crate::listen::http2::frame::Reason;
        if let Some(c) = e.downcast_ref::<crate::listen::http2::conn::ConnError>() {
            match c.reason {
                Reason::ENHANCE_YOUR_CALM => self.reject(Rejection::Http2Abuse),
                Reason::PROTOCOL_ERROR | Reason::FRAME_SIZE_ERROR | Reason::COMPRESSION_ERROR => {
                    self.reject(Rejection::Malformed)
                }
                _ => {}
            }
            return;
        }
        let Some(h) = e.downcast_ref::<hyper::Error>() else {
            return;
        };
        if h.is_parse_too_large() {
            self.reject(Rejection::HeadersTooLarge);
        } else if h.is_parse() {
            self.reject(Rejection::Malformed);
        } else {
            let mut source = std::error::Error::source(h);
            while let Some(s) = source {
                if let Some(h2) = s.downcast_ref::<h2::Error>() {
                    match h2.reason() {
                        Some(h2::Reason::ENHANCE_YOUR_CALM) => self.reject(Rejection::Http2Abuse),
                        Some(
                            h2::Reason::PROTOCOL_ERROR
                            | h2::Reason::FRAME_SIZE_ERROR
                            | h2::Reason::COMPRESSION_ERROR,
                        ) if !h2.is_remote() => self.reject(Rejection::Malformed),
                        _ => {}
                    }
                    return;
                }
                source = s.source();
            }
        }
    }
}

/// An open connection, counted until dropped.
pub struct OpenConnection(Arc<DownstreamStats>);

impl OpenConnection {
    /// Counts the connection unless `max` (0: no limit) are open already.
    pub fn try_open(stats: &Arc<DownstreamStats>, max: usize) -> Option<OpenConnection> {
        let before = stats.open.fetch_add(1, Relaxed);
        if max > 0 && before >= max {
            stats.open.fetch_sub(1, Relaxed);
            stats.reject(Rejection::MaxConnections);
            return None;
        }
        Some(OpenConnection(stats.clone()))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// Per connection: what the service tells the IO wrapper.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Requests whose response has not finished.
    in_flight: AtomicUsize,
    /// Requests dispatched so far.
    dispatched: AtomicU64,
    /// The HTTP/1 head being dispatched had both `Content-Length` and `Transfer-Encoding`
    /// (hyper reads such a request by `Transfer-Encoding` and drops the other; we refuse it).
    ambiguous: std::sync::atomic::AtomicBool,
    /// hyper serves the connection: heads are scanned for `ambiguous` as they are read
    /// (`listen::h1` parses its own and hands such heads over).
    scan_heads: std::sync::atomic::AtomicBool,
    /// The next head has begun arriving while the last request was in flight (pipelined
    /// bytes `listen::h1` holds): its header timeout starts when the connection waits
    /// for the rest, not the idle timeout.
    head_started: std::sync::atomic::AtomicBool,
}

impl ConnState {
    /// hyper serves the connection from now on, starting with the bytes in `read` (read
    /// already): the head among them is scanned now, the next ones as they come.
    pub fn hand_over(&self, read: &[u8]) {
        if let Some((ambiguous, _)) = HeadScan::default().feed(read) {
            self.ambiguous.store(ambiguous, Relaxed);
        }
        self.scan_heads.store(true, Relaxed);
    }

    /// Requests whose response has not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// The connection waits for the rest of a head whose first bytes it holds already.
    pub fn head_started(&self) {
        self.head_started.store(true, Relaxed);
    }

    /// A request's headers are complete; the returned guard lives until its response ends.
    pub fn dispatch(self: &Arc<Self>) -> InFlight {
        // A pipelined head that was all there is not waited for.
        self.head_started.store(false, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
        self.dispatched.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }
}

/// A request in flight on its connection.
pub struct InFlight(Arc<ConnState>);

impl InFlight {
    /// Whether the request's head carried both `Content-Length` and `Transfer-Encoding`.
    pub fn ambiguous(&self) -> bool {
        self.0.ambiguous.swap(false, Relaxed)
    }
}

/// Reads an HTTP/1 request head as it streams past, noting which framing headers it has.
#[derive(Debug, Default)]
struct HeadScan {
    /// The current line's start, lowercased (a header name fits; longer ones never match).
    name: [u8; 20],
    len: usize,
    /// Past the line's first `:`.
    in_value: bool,
    content_length: bool,
    transfer_encoding: bool,
}

impl HeadScan {
    /// Feeds bytes; returns `Some(ambiguous)` when the head ended.
    fn feed(&mut self, bytes: &[u8]) -> Option<(bool, usize)> {
        let mut i = 0;
        while i < bytes.len() {
            if self.in_value {
                // Only names and line ends matter: a value (most of a head: cookies, tokens,
                // user agents) is skipped in one search, not looked at byte by byte.
                i += memchr::memchr(b'\n', &bytes[i..])?;
                self.in_value = false;
                self.len = 0;
                i += 1;
                continue;
            }
            // A name, the request line, or the blank line that ends the head: up to the
            // first `:` or the line's end.
            let rest = &bytes[i..];
            let Some(n) = memchr::memchr2(b':', b'\n', rest) else {
                self.keep(rest);
                return None;
            };
            let (part, at) = (&rest[..n], rest[n]);
            if at == b':' {
                if self.len == 0 {
                    // The whole name is in this read: compared where it lies.
                    self.named(part);
                } else {
                    self.keep(part);
                    let kept = self.name;
                    self.named(&kept[..self.len.min(kept.len())]);
                }
                self.in_value = true;
            } else {
                self.keep(part);
                if self.len == 0 {
                    return Some((self.content_length && self.transfer_encoding, i + n + 1));
                }
                self.len = 0;
            }
            i += n + 1;
        }
        None
    }

    /// Keeps the start of a line split across reads (a header name fits; longer ones never
    /// match), lowercased, without `\r`.
    fn keep(&mut self, part: &[u8]) {
        for &b in part.iter().filter(|&&b| b != b'\r') {
            if let Some(slot) = self.name.get_mut(self.len) {
                *slot = b.to_ascii_lowercase();
            }
            self.len += 1;
            if self.len > self.name.len() {
                // Longer than any name looked for: only "not empty" matters now (a request
                // line with a long URI stops here).
                return;
            }
        }
    }

    fn named(&mut self, name: &[u8]) {
        self.content_length |= name.eq_ignore_ascii_case(b"content-length");
        self.transfer_encoding |= name.eq_ignore_ascii_case(b"transfer-encoding");
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Armed {
    Off,
    /// A request has begun arriving (after `dispatched` requests) and its headers are due.
    Head {
        after: u64,
    },
    /// Nothing in flight, nothing arriving.
    Idle,
}

/// The client's side of a connection, timing HTTP/1 request heads and idle periods.
/// HTTP/2 connections (seen by their preface) pass through untouched: our HTTP/2 server
/// times its quiet connections itself (`listen::http2::serve`), and hyper's are timed around
/// it (`listen::quiet`).
pub struct Watched<I> {
    inner: I,
    state: Arc<ConnState>,
    stats: Arc<DownstreamStats>,
    header_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    /// Fires no later than `deadline` (see `LazyTimer`).
    timer: LazyTimer,
    /// When the armed timeout expires.
    deadline: Instant,
    /// The shorter timeout: an early timer is re-registered at most this far ahead, so a
    /// new head's deadline is rarely earlier than it.
    step: Duration,
    armed: Armed,
    /// `None` until the first bytes tell HTTP/2 (its preface) from HTTP/1.
    h2: Option<bool>,
    /// Bytes of the 408 answer written so far, once the head timed out.
    rejecting: Option<usize>,
    /// The HTTP/1 head being read, while it is.
    scan: Option<HeadScan>,
    closed: bool,
}

impl<I> Watched<I> {
    pub fn new(
        inner: I,
        state: Arc<ConnState>,
        stats: Arc<DownstreamStats>,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Watched {
            inner,
            state,
            stats,
            header_timeout: (!header_timeout.is_zero()).then_some(header_timeout),
            idle_timeout: (!idle_timeout.is_zero()).then_some(idle_timeout),
            timer: LazyTimer::new(Instant::now()),
            deadline: Instant::now(),
            step: [header_timeout, idle_timeout]
                .into_iter()
                .filter(|d| !d.is_zero())
                .min()
                .unwrap_or(Duration::MAX),
            armed: Armed::Off,
            h2: None,
            rejecting: None,
            scan: None,
            closed: false,
        }
    }

    fn arm(&mut self, armed: Armed, after: Option<Duration>) {
        match after {
            Some(d) => {
                self.armed = armed;
                self.deadline = Instant::now() + d;
                self.timer.arm(self.deadline);
            }
            None => self.armed = Armed::Off,
        }
    }

    /// Whether the armed timeout has expired (else the timer wakes the task later).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.timer.expired(self.deadline, self.step, cx)
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> Watched<I> {
    /// Writes the 408 answer, then reports end of input (hyper closes the connection).
    fn poll_reject(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(done) = self.rejecting {
            if done == REQUEST_TIMEOUT.len() {
                let _ = ready!(Pin::new(&mut self.inner).poll_flush(cx));
                self.rejecting = None;
                self.closed = true;
                break;
            }
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &REQUEST_TIMEOUT[done..])) {
                Ok(0) | Err(_) => {
                    self.rejecting = None;
                    self.closed = true;
                }
                Ok(n) => self.rejecting = Some(done + n),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.rejecting.is_some() {
            return this.poll_reject(cx);
        }
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if !got.is_empty() {
                    if this.h2.is_none() {
                        const PREFACE: &[u8] = b"PRI ";
                        let n = got.len().min(PREFACE.len());
                        if got[..n] != PREFACE[..n] {
                            this.h2 = Some(false);
                        } else if n == PREFACE.len() {
                            this.h2 = Some(true);
                        }
                    }
                    if this.h2 == Some(false)
                        && this.state.in_flight.load(Relaxed) == 0
                        && !matches!(this.armed, Armed::Head { .. })
                    {
                        let after = this.state.dispatched.load(Relaxed);
                        let timeout = this.header_timeout;
                        this.arm(Armed::Head { after }, timeout);
                        if this.state.scan_heads.load(Relaxed) {
                            this.scan = Some(HeadScan::default());
                        }
                    }
                    if let Some(scan) = &mut this.scan {
                        if let Some((ambiguous, _)) = scan.feed(got) {
                            this.state.ambiguous.store(ambiguous, Relaxed);
                            this.scan = None;
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.h2 == Some(true) {
                    return Poll::Pending;
                }
                let in_flight = this.state.in_flight.load(Relaxed);
                match this.armed {
                    Armed::Head { after }
                        if in_flight > 0 || this.state.dispatched.load(Relaxed) != after =>
                    {
                        this.armed = Armed::Off;
                    }
                    Armed::Idle if in_flight > 0 => this.armed = Armed::Off,
                    _ => {}
                }
                // Nothing in flight and nothing arriving (a connection that has sent nothing
                // yet included): idle.
                if this.armed == Armed::Off && in_flight == 0 {
                    if this.state.head_started.swap(false, Relaxed) {
                        let after = this.state.dispatched.load(Relaxed);
                        let timeout = this.header_timeout;
                        this.arm(Armed::Head { after }, timeout);
                    } else {
                        let timeout = this.idle_timeout;
                        this.arm(Armed::Idle, timeout);
                    }
                }
                if this.armed != Armed::Off && this.expired(cx) {
                    match this.armed {
                        Armed::Head { .. } => {
                            this.stats.reject(Rejection::HeaderReadTimeout);
                            this.rejecting = Some(0);
                            return this.poll_reject(cx);
                        }
                        _ => {
                            this.closed = true;
                            return Poll::Ready(Ok(()));
                        }
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(parts: &[&[u8]]) -> Option<(bool, usize)> {
        let mut s = HeadScan::default();
        parts.iter().find_map(|p| s.feed(p))
    }

    #[test]
    fn head_scan_finds_both_framing_headers_across_reads() {
        let head: &[u8] =
            b"POST http://a:80/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTRANSFER-encoding: chunked\r\n\r\nbody";
        assert_eq!(scan(&[head]), Some((true, head.len() - 4)));
        for split in 1..head.len() - 4 {
            let (a, b) = head.split_at(split);
            assert_eq!(scan(&[a, b]).map(|r| r.0), Some(true), "split at {split}");
        }
    }

    #[test]
    fn head_scan_reads_a_browser_head_split_anywhere() {
        let head: &[u8] = b"POST /cart?id=7 HTTP/1.1\r\nHost: shop\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nCookie: a=1; b=content-length: 2\r\nTransfer-Encoding: chunked\r\nAccept: */*\r\nCONTENT-LENGTH: 4\r\nAn-Unusually-Long-Header-Name: x\r\n\r\nbody";
        let end = head.len() - 4;
        assert_eq!(scan(&[head]), Some((true, end)));
        for split in 1..end {
            let (a, b) = head.split_at(split);
            let mut s = HeadScan::default();
            let got = s
                .feed(a)
                .or_else(|| s.feed(b).map(|(amb, n)| (amb, split + n)));
            assert_eq!(got, Some((true, end)), "split at {split}");
        }
        // Without Content-Length the same head is not ambiguous, however it arrives.
        let plain: &[u8] = b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Long-Name-Over-Twenty-Bytes-content-length: 1\r\n\r\n";
        for split in 1..plain.len() {
            let (a, b) = plain.split_at(split);
            assert_eq!(scan(&[a, b]).map(|r| r.0), Some(false), "split at {split}");
        }
    }

    #[test]
    fn head_scan_is_not_fooled_by_values_or_lookalikes() {
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\r\nx-note: content-length: 1\r\nx-transfer-encoding: chunked\r\n\r\n"])
                .map(|r| r.0),
            Some(false)
        );
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\ncontent-length: 1\r\n\r\n"]).map(|r| r.0),
            Some(false)
        );
        // Not finished yet.
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nhost: a\r\n"]), None);
    }
}
