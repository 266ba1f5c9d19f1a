//! The gRPC exporter's connection, with its writes gathered into one system call a burst.
//!
//! HTTP/2 (the `h2` crate) writes a DATA frame at a time, each at most the collector's
//! `SETTINGS_MAX_FRAME_SIZE` (16 KiB unless it asks for more; the OpenTelemetry Collector
//! does not), and flushes after each: a 220 KB batch left as 16 `writev` calls, each one a
//! trip through the loopback or network stack, on the core the proxy's workers run on
//! (`strace` of the export thread under load, benches/README.md). [`Gathered`] keeps what
//! HTTP/2 writes and writes it out when the connection is next polled: one call for the
//! whole burst, or one per [`LIMIT`] bytes. What it keeps is copied, except the bytes the
//! sender lent for the batch ([`Lent`]: the encoded spans), which it references: a batch
//! leaves from where the encoder wrote it, with only the frames' heads copied.
//!
//! The flush HTTP/2 asks for after new bytes is answered at once and the connection's task
//! is woken, so that it is polled again straight away; `h2` reads from the connection
//! first thing in every poll while it is open, and that read writes out what is gathered
//! before it reads. A shutdown writes it out first as well. Nothing gathered waits for
//! anything but the next turn of the export thread's runtime, or for room in the socket:
//! a flush with nothing new waits for that like any other write.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, ready};

use arc_swap::ArcSwapOption;
use bytes::{Buf as _, Bytes};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};

/// The most gathered before it is written out while HTTP/2 is still writing: above a
/// 512-span batch (~230 KB), so that a batch leaves in one call.
pub const LIMIT: usize = 256 * 1024;

/// The most pieces one write out hands the socket (a batch is ~30: each DATA frame's head
/// and its payload); the rest goes in the next call.
const MAX_SLICES: usize = 64;

/// Written bytes smaller than this are copied even when they are lent's: a reference
/// costs more than copying them.
const LEND_MIN: usize = 512;

/// The bytes a batch's sender lends the connection while the batch is being sent (the
/// encoded spans): what HTTP/2 writes from them is kept as a reference to them, not
/// copied, and goes to the socket from where the encoder wrote it. Only the frames' heads
/// and the request's own bytes are copied. Shared by the connector and each connection.
///
/// Copying a batch (~220 KB) was a stream of writes into a cold buffer, on the core the
/// workers run on: referencing it instead took the process's last-level cache misses
/// from 248 to 235 a request at 256 connections (the cache model of
/// `benches/instructions.sh`), the export thread's share of the CPU from 7.11% to 6.84%,
/// and 0.36 MiB of peak RSS, the copies' buffer (benches/README.md).
#[derive(Clone, Default)]
pub struct Lent {
    bytes: Arc<ArcSwapOption<Bytes>>,
    /// Bytes written out by reference (for tests and benchmarks).
    by_reference: Arc<AtomicU64>,
}

impl Lent {
    /// Lends `bytes` until the guard is dropped. One batch is lent at a time: with several
    /// export calls in flight the latest one's bytes are referenced, and what HTTP/2
    /// writes of the others is copied.
    pub fn lend(&self, bytes: &Bytes) -> Lending<'_> {
        let mine = Arc::new(bytes.clone());
        self.bytes.store(Some(mine.clone()));
        Lending(self, mine)
    }

    /// Bytes written out by reference so far.
    #[cfg(test)]
    pub fn by_reference(&self) -> u64 {
        self.by_reference.load(Relaxed)
    }
}

/// Lent bytes, taken back when dropped (the export is done, failed or cancelled), unless
/// a later call lent its own since. What a connection still holds of them stays valid: its
/// references count.
pub struct Lending<'a>(&'a Lent, Arc<Bytes>);

impl Drop for Lending<'_> {
    fn drop(&mut self) {
        let mine = Some(self.1.clone());
        self.0.bytes.compare_and_swap(&mine, None);
    }
}

/// A piece of what is gathered, in order.
enum Piece {
    /// Copied: a range of `Gathered::copied`.
    Copied(Range<usize>),
    /// Lent's bytes, referenced.
    Lent(Bytes),
}

/// A connection whose writes are gathered (see the module's comment).
pub struct Gathered<T> {
    inner: T,
    /// The copied pieces' bytes.
    copied: Vec<u8>,
    /// What is gathered and not written out yet, in order.
    pieces: VecDeque<Piece>,
    /// Bytes in `pieces`.
    gathered: usize,
    lent: Lent,
    /// Bytes were gathered since the last try to write out: a flush is answered at once.
    /// Otherwise a flush writes out, and waits for the socket when it is full.
    fresh: bool,
}

impl<T> Gathered<T> {
    /// A connection that copies everything it gathers.
    #[cfg(test)]
    pub fn new(inner: T) -> Self {
        Gathered::lent(inner, Lent::default())
    }

    /// A connection that references what `lent` lends instead of copying it.
    pub fn lent(inner: T, lent: Lent) -> Self {
        Gathered {
            inner,
            copied: Vec::new(),
            pieces: VecDeque::new(),
            gathered: 0,
            lent,
            fresh: false,
        }
    }

    /// Gathers `data`: referenced when it lies within `lent` (and is not small), else
    /// copied.
    fn gather(&mut self, data: &[u8], lent: Option<&Bytes>) {
        if data.is_empty() {
            return;
        }
        self.gathered += data.len();
        if let Some(lent) = lent.filter(|l| data.len() >= LEND_MIN && within(l, data)) {
            self.lent.by_reference.fetch_add(data.len() as u64, Relaxed);
            self.pieces.push_back(Piece::Lent(lent.slice_ref(data)));
            return;
        }
        let start = self.copied.len();
        self.copied.extend_from_slice(data);
        match self.pieces.back_mut() {
            Some(Piece::Copied(r)) if r.end == start => r.end = self.copied.len(),
            _ => self
                .pieces
                .push_back(Piece::Copied(start..self.copied.len())),
        }
    }
}

/// Whether `part` is a part of `whole`'s bytes (where they are in memory, not what they
/// hold).
fn within(whole: &Bytes, part: &[u8]) -> bool {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

impl<T: Write + Unpin> Gathered<T> {
    /// Writes out everything gathered; `Ready(Ok)` once all of it is written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.fresh = false;
        while !self.pieces.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (slot, piece) in slices.iter_mut().zip(&self.pieces) {
                *slot = IoSlice::new(match piece {
                    Piece::Copied(r) => &self.copied[r.clone()],
                    Piece::Lent(b) => b,
                });
                count += 1;
            }
            let written =
                ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &slices[..count]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.consume(written);
        }
        self.copied.clear();
        Poll::Ready(Ok(()))
    }

    /// Drops the first `n` gathered bytes (written out).
    fn consume(&mut self, mut n: usize) {
        self.gathered -= n;
        while n > 0 {
            let Some(front) = self.pieces.front_mut() else {
                return;
            };
            let len = match front {
                Piece::Copied(r) => r.len(),
                Piece::Lent(b) => b.len(),
            };
            if n < len {
                match front {
                    Piece::Copied(r) => r.start += n,
                    Piece::Lent(b) => b.advance(n),
                }
                return;
            }
            n -= len;
            self.pieces.pop_front();
        }
    }

    /// Makes room for `n` more bytes: writes out what is gathered when `n` more would pass
    /// [`LIMIT`]. `Ready(true)` when the caller should write its `n` bytes itself (nothing
    /// gathered, and they alone are [`LIMIT`] or more).
    fn poll_room(&mut self, cx: &mut Context<'_>, n: usize) -> Poll<io::Result<bool>> {
        if self.gathered + n > LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(n >= LIMIT))
    }
}

impl<T: Write + Unpin> Write for Gathered<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if ready!(this.poll_room(cx, data.len()))? {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        let lent = this.lent.bytes.load_full();
        this.gather(data, lent.as_deref());
        this.fresh |= !data.is_empty();
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = data.iter().map(|s| s.len()).sum();
        if ready!(this.poll_room(cx, n))? {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, data);
        }
        let lent = this.lent.bytes.load_full();
        for s in data {
            this.gather(s, lent.as_deref());
        }
        this.fresh |= n > 0;
        Poll::Ready(Ok(n))
    }

    /// Vectored: `h2` then hands over a frame's head and its payload in one call.
    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Answered at once when bytes were gathered since the last try to write out: the
    /// task is woken so that its next poll (a read, see the module's comment) writes them
    /// out. Otherwise it writes out what is left, and waits for the socket when it is
    /// full: answering at once then would have the task poll itself again and again while
    /// the collector is slow to read.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.fresh {
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: Read + Write + Unpin> Read for Gathered<T> {
    /// Writes out what is gathered, then reads. A write that cannot go on now (the
    /// socket's buffer is full) leaves the rest gathered and the task woken when it can;
    /// the read goes on regardless.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: Connection> Connection for Gathered<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

/// A connector whose connections are [`Gathered`], referencing what `Lent` lends.
#[derive(Clone)]
pub struct Gather<C>(pub C, pub Lent);

impl<C> tower_service::Service<http::Uri> for Gather<C>
where
    C: tower_service::Service<http::Uri>,
    C::Future: Send + 'static,
{
    type Response = Gathered<C::Response>;
    type Error = C::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Gathered<C::Response>, C::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        let lent = self.1.clone();
        Box::pin(async move { connecting.await.map(|c| Gathered::lent(c, lent)) })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::{TcpSocket, TcpStream};

    use super::*;

    /// Counts the writes that reach the socket (those that wrote something), and the
    /// writes the socket could not take then (`Pending`).
    struct Counted<T> {
        inner: T,
        writes: Arc<AtomicUsize>,
        refused: Arc<AtomicUsize>,
    }

    impl<T> Counted<T> {
        fn count(&self, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
            match r {
                Poll::Ready(Ok(n)) if n > 0 => self.writes.fetch_add(1, Relaxed),
                Poll::Pending => self.refused.fetch_add(1, Relaxed),
                _ => 0,
            };
            r
        }
    }

    impl<T: Read + Unpin> Read for Counted<T> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: ReadBufCursor<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<T: Write + Unpin> Write for Counted<T> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let r = Pin::new(&mut self.inner).poll_write(cx, data);
            self.count(r)
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let r = Pin::new(&mut self.inner).poll_write_vectored(cx, data);
            self.count(r)
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

    /// A real HTTP/2 server (hyper, hyper's default windows) that answers each request
    /// with its body's length and a checksum of its bytes. `small_buffers`: the listening
    /// socket's receive buffer is made small, so that a big write cannot go at once.
    async fn server(small_buffers: bool) -> SocketAddr {
        let socket = TcpSocket::new_v4().unwrap();
        if small_buffers {
            socket.set_recv_buffer_size(4096).unwrap();
        }
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::from(summary(
                            &body,
                        )))))
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        addr
    }

    fn summary(body: &[u8]) -> String {
        let sum = body.iter().enumerate().fold(0u64, |s, (i, &b)| {
            s.wrapping_add((i as u64 + 1) * u64::from(b))
        });
        format!("{} {sum}", body.len())
    }

    fn body(len: usize) -> Bytes {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// The second request's trip: the server's summaries of both bodies, the writes the
    /// socket took and refused while the second was sent, and how many of its bytes went
    /// out by reference.
    struct Sent {
        answers: Vec<String>,
        writes: usize,
        refused: usize,
        by_reference: u64,
    }

    /// How the client's connection is wrapped.
    #[derive(Clone, Copy, PartialEq)]
    enum Wrap {
        Plain,
        Gathered,
        /// Gathered, each body lent while its request is sent.
        Lending,
    }

    /// Sends a small request (so that both sides' settings are exchanged), then `len`
    /// bytes, over one HTTP/2 connection.
    async fn send(addr: SocketAddr, wrap: Wrap, len: usize, small_buffers: bool) -> Sent {
        let socket = TcpSocket::new_v4().unwrap();
        if small_buffers {
            socket.set_send_buffer_size(4096).unwrap();
        }
        let tcp: TcpStream = socket.connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (writes, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let io = Counted {
            inner: TokioIo::new(tcp),
            writes: writes.clone(),
            refused: refused.clone(),
        };
        let lent = Lent::default();
        let mut sent = Sent {
            answers: Vec::new(),
            writes: 0,
            refused: 0,
            by_reference: 0,
        };
        macro_rules! exchange {
            ($io:expr) => {{
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), $io)
                        .await
                        .unwrap();
                tokio::spawn(conn);
                for b in [body(100), body(len)] {
                    let before = (
                        writes.load(Relaxed),
                        refused.load(Relaxed),
                        lent.by_reference(),
                    );
                    let lending = (wrap == Wrap::Lending).then(|| lent.lend(&b));
                    let req = http::Request::post("http://tracegate.test/")
                        .body(Full::new(b))
                        .unwrap();
                    let answer = sender.send_request(req).await.unwrap();
                    let text = answer.into_body().collect().await.unwrap().to_bytes();
                    drop(lending);
                    sent.answers.push(String::from_utf8(text.to_vec()).unwrap());
                    sent.writes = writes.load(Relaxed) - before.0;
                    sent.refused = refused.load(Relaxed) - before.1;
                    sent.by_reference = lent.by_reference() - before.2;
                }
            }};
        }
        match wrap {
            Wrap::Plain => exchange!(io),
            Wrap::Gathered => exchange!(Gathered::new(io)),
            Wrap::Lending => exchange!(Gathered::lent(io, lent.clone())),
        }
        sent
    }

    /// [`send`] to a server of its own, checking that both bodies arrived whole.
    async fn send_whole(wrap: Wrap, len: usize, small_buffers: bool) -> Sent {
        let sent = send(server(small_buffers).await, wrap, len, small_buffers).await;
        assert_eq!(sent.answers, [summary(&body(100)), summary(&body(len))]);
        sent
    }

    #[tokio::test]
    async fn a_batch_leaves_in_a_few_writes_and_arrives_whole() {
        let len = 220_000;
        // Without gathering, HTTP/2 writes each 16 KiB frame on its own: this is what the
        // count below is compared with.
        let plain = send_whole(Wrap::Plain, len, false).await.writes;
        assert!(plain >= len / 16_384, "{plain} writes without gathering");
        // The request's head and its body (the head goes before the body is polled).
        for wrap in [Wrap::Gathered, Wrap::Lending] {
            let gathered = send_whole(wrap, len, false).await.writes;
            assert!((1..=3).contains(&gathered), "{gathered} writes gathered");
        }
    }

    #[tokio::test]
    async fn lent_bytes_leave_by_reference_the_rest_is_copied() {
        let len: usize = 220_000;
        // Every DATA frame's payload (16 KiB, the last 7,008 bytes) is the lent body's,
        // except its first bytes: h2 puts those beside the frame's head in a buffer of its
        // own (256 bytes with the head), and those are copied.
        let frames = len.div_ceil(16_384);
        let by_reference = send_whole(Wrap::Lending, len, false).await.by_reference;
        assert!(
            (len - frames * 256..=len).contains(&(by_reference as usize)),
            "{by_reference} of {len} bytes by reference"
        );
        // Nothing lent: all of it copied.
        assert_eq!(send_whole(Wrap::Gathered, len, false).await.by_reference, 0);
    }

    #[test]
    fn a_part_is_within_bytes_by_where_it_is_not_what_it_holds() {
        let whole = body(2048);
        assert!(within(&whole, &whole));
        assert!(within(&whole, &whole[100..1100]));
        assert!(within(&whole, &whole[2047..]));
        let copy = whole.to_vec();
        assert!(!within(&whole, &copy));
        let other = body(4096);
        assert!(!within(&whole, &other[..2048]));
    }

    #[tokio::test]
    async fn more_than_the_limit_leaves_in_pieces_of_it() {
        for wrap in [Wrap::Gathered, Wrap::Lending] {
            let writes = send_whole(wrap, 3 * LIMIT + 1000, false).await.writes;
            // hyper's server opens a 1 MiB window: the body waits once for more.
            assert!((4..=10).contains(&writes), "{writes} writes");
        }
    }

    #[tokio::test]
    async fn writes_the_socket_cannot_take_at_once_arrive_whole_without_spinning() {
        for wrap in [Wrap::Gathered, Wrap::Lending] {
            let sent = send_whole(wrap, 2 * LIMIT + 12_345, true).await;
            // The small buffers took it in many partial writes (the rest waited, gathered;
            // a lent piece written in part goes on from where the write stopped).
            assert!(
                sent.writes > 10,
                "{} writes: the socket took it at once",
                sent.writes
            );
            // A refused write waits for the socket (or the peer's next frame) before the
            // next try: about two tries for each write taken (the one after it, and the
            // flush's). A connection that polled itself again while the socket was full
            // tried over and over (890 refused against 104 taken, on this single-threaded
            // runtime).
            assert!(
                sent.refused <= 3 * sent.writes + 20,
                "{} writes refused, {} taken",
                sent.refused,
                sent.writes
            );
        }
    }
}
